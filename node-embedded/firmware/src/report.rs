//! What the firmware measures about itself (feature `report`): the stack's high-water mark,
//! for the RAM figure, and the longest turn of the loop, both logged every
//! [`REPORT_EVERY`] and both since boot.
//!
//! The stack: the free RAM between the statics and the stack is filled with a pattern at
//! boot, and the lowest word the stack has overwritten since is found by scanning.
//!
//! The loop: a turn is one `Board::step` (every frame waiting, timers, sends, events and
//! their log lines), timed with the board's own clock: under QEMU, host time, so it counts
//! the emulator's translation and any time the host did not run it, as a stall would.

use goose_core::{Duration, Instant, NodeId};

/// How often the figures are logged.
const REPORT_EVERY: Duration = Duration::from_millis(10_000);

/// What unused stack holds.
const PAINT: u32 = 0xC0DE_CAFE;

/// Bytes left unpainted below the stack pointer at boot, for the painting's own frame.
const MARGIN: usize = 256;

extern "C" {
    /// The end of the statics (cortex-m-rt's link.x).
    static _stack_end: u32;
    /// The top of RAM, where the stack starts (cortex-m-rt's link.x).
    static _stack_start: u32;
}

fn bounds() -> (usize, usize) {
    // Only the symbols' addresses are taken (safe since Rust 1.82); they are never read.
    (
        core::ptr::addr_of!(_stack_end) as usize,
        core::ptr::addr_of!(_stack_start) as usize,
    )
}

/// Fills the unused stack with the pattern. Call first thing in `main`.
pub(crate) fn paint_stack() {
    let (bottom, _) = bounds();
    let top = cortex_m::register::msp::read() as usize - MARGIN;
    let mut at = bottom;
    while at < top {
        // SAFETY: RAM between the end of the statics and below the current stack pointer
        // (less a margin for this frame) belongs to no object: nothing else runs yet, and
        // the stack has never reached it. Word-aligned (`_stack_end` is 4-aligned).
        unsafe { (at as *mut u32).write_volatile(PAINT) };
        at += 4;
    }
}

/// Bytes of stack used at most since [`paint_stack`].
fn stack_used() -> usize {
    let (bottom, top) = bounds();
    let mut at = bottom;
    // SAFETY: reads words of RAM between the statics and the stack top, all mapped and
    // aligned; the stack below the current pointer is not in use, so reading races nothing.
    while at < top && unsafe { (at as *const u32).read_volatile() } == PAINT {
        at += 4;
    }
    top - at
}

/// The longest loop turn so far, and when to log next.
pub(crate) struct Report {
    next: Instant,
    longest: Duration,
}

impl Report {
    /// Logs the stack start-up took (the node's decoding and the board's assembly), apart
    /// from the figures since boot that follow, so the two are told apart.
    pub(crate) fn new(now: Instant, id: NodeId) -> Self {
        crate::Line::node(id)
            .str("stack used at most ")
            .number(stack_used() as u64)
            .str(" bytes by start-up")
            .log();
        Self {
            next: now + REPORT_EVERY,
            longest: Duration::ZERO,
        }
    }

    /// Counts a turn from `start` to `end`; logs the figures when they are due.
    pub(crate) fn turn(&mut self, start: Instant, end: Instant, id: NodeId) {
        self.longest = self.longest.max(end.saturating_since(start));
        if end >= self.next {
            self.next = end + REPORT_EVERY;
            crate::Line::node(id)
                .str("stack used at most ")
                .number(stack_used() as u64)
                .str(" bytes; longest loop turn ")
                .number(self.longest.micros())
                .str(" us")
                .log();
        }
    }
}
