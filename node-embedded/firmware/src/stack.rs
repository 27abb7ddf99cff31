//! Stack high-water mark, for measuring the firmware's RAM (feature `stack-report`): the
//! free RAM between the statics and the stack is filled with a pattern at boot, and
//! [`used`] finds the lowest word the stack has overwritten since.

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
pub(crate) fn paint() {
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

/// Bytes of stack used at most since [`paint`].
pub(crate) fn used() -> usize {
    let (bottom, top) = bounds();
    let mut at = bottom;
    // SAFETY: reads words of RAM between the statics and the stack top, all mapped and
    // aligned; the stack below the current pointer is not in use, so reading races nothing.
    while at < top && unsafe { (at as *const u32).read_volatile() } == PAINT {
        at += 4;
    }
    top - at
}
