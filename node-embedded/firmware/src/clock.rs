//! The board's clock: the host's monotonic clock, read through semihosting's `SYS_ELAPSED`
//! at every reading. SysTick still interrupts every millisecond, but only to wake the loop
//! from WFI: it counts nothing.
//!
//! The goose's lease is safe only if a leader's clock counts every moment it was stalled:
//! after a pause, `now` must be past `lease_end` (the core's `raft::lease` docs). Under QEMU
//! a stall is the emulator stopped (SIGSTOP) or starved of CPU, and no emulated counter of
//! this board keeps counting through it at a useful resolution (QEMU 7.2, measured and read
//! in its source):
//!
//! - SysTick schedules its periods on QEMU's virtual clock, which does count host time, but
//!   the periods a stall left overdue expire together and the core sees one pending
//!   interrupt: a tick count kept by the interrupt loses the stall (3 s stopped advanced it
//!   by 1 ms, measured), and every period the host delays the emulator by more than a
//!   period. Its current-value register reads 0 while a period is overdue, and its 24 bits
//!   wrap every 1.34 s at 12.5 MHz, so wraps could not be counted through a longer stall.
//! - The GPTMs' value registers (TAR, TBR) are not modelled (they read 0), except TAR in
//!   RTC mode, which counts whole seconds.
//! - `SYS_CLOCK` is QEMU's CPU time (`clock()`), which stops with the process.
//!
//! `SYS_ELAPSED` is QEMU's `get_clock()`: the host's `CLOCK_MONOTONIC` in nanoseconds since
//! QEMU started, 64 bits (584 years), read at the call, so it counts every stall of any
//! length and gains nothing a desktop node's clock would not (a `goose node`'s `Instant` is
//! the same clock). A read is one semihosting trap: about 0.2 µs of host time under QEMU.
//! It exists only under QEMU or a debugger; on silicon without one the trap halts the core.
//! A real board reads a 32-bit hardware timer that keeps counting through flash stalls and
//! masked interrupts, extended to 64 bits in software at each reading, at least once per
//! wrap period (see node-embedded/README.md, "Porting to a real board").
//!
//! The host's clock never goes back, and a monotonic guard makes sure of it (the core
//! asserts it). A failed read stops the board (exit 1): a clock it cannot read cannot bound
//! a lease, and a stopped board is only a lost member.

use core::cell::Cell;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use goose_core::Instant;
use goose_embedded::Clock;
use semihosting::sys::arm_compat::{sys_elapsed, sys_tickfreq};

/// The core clock QEMU gives the lm3s6965evb (and the real chip's PLL default with its
/// 8 MHz crystal is different: set this from the board's clock tree when porting).
const CORE_CLOCK_HZ: u32 = 12_500_000;

/// SysTick wake-ups per second: how often an idle loop looks at its timers.
const WAKES_PER_SECOND: u32 = 1_000;

/// SysTick counts from this down to 0, then interrupts: one wake-up period.
const RELOAD: u32 = CORE_CLOCK_HZ / WAKES_PER_SECOND - 1;

const MICROS_PER_SECOND: u64 = 1_000_000;

const _: () = assert!(RELOAD == 12_499);
const _: () = assert!(RELOAD < 1 << 24, "SysTick is a 24-bit counter");

/// Only wakes the core from WFI; time comes from the host (module docs).
#[exception]
fn SysTick() {}

/// Microseconds since QEMU started, from the host's monotonic clock (module docs).
pub(crate) struct HostClock {
    /// `SYS_ELAPSED` ticks per second (`SYS_TICKFREQ`; QEMU: 10^9).
    ticks_per_second: u64,
    /// The last reading returned (the monotonic guard).
    last: Cell<u64>,
}

impl HostClock {
    /// Starts SysTick's wake-ups (core clock, 1 ms, interrupt on) and checks that the host
    /// answers `SYS_TICKFREQ` and `SYS_ELAPSED`; `None` if it does not (not QEMU, or a
    /// debugger without them).
    pub(crate) fn start(mut syst: SYST) -> Option<Self> {
        let ticks_per_second = sys_tickfreq().ok().filter(|&hz| hz > 0)?;
        let clock = Self {
            ticks_per_second: u64::try_from(ticks_per_second).ok()?,
            last: Cell::new(0),
        };
        sys_elapsed().ok()?;
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Some(clock)
    }
}

impl Clock for HostClock {
    fn now(&self) -> Instant {
        let ticks = match sys_elapsed() {
            Ok(ticks) => ticks,
            Err(error) => {
                // Sign and magnitude, by the log line's digit writer.
                let code = error.raw_os_error().unwrap_or(0);
                crate::Line::new("goose-firmware: the host clock (SYS_ELAPSED) failed: error ")
                    .str(if code < 0 { "-" } else { "" })
                    .number(u64::from(code.unsigned_abs()))
                    .fail(1)
            }
        };
        // Whole seconds, then the rest: no 128-bit arithmetic, and no overflow for any
        // frequency that fits the call's 32-bit answer.
        let (seconds, rest) = (ticks / self.ticks_per_second, ticks % self.ticks_per_second);
        let micros = seconds
            .saturating_mul(MICROS_PER_SECOND)
            .saturating_add(rest * MICROS_PER_SECOND / self.ticks_per_second);
        let micros = micros.max(self.last.get());
        self.last.set(micros);
        Instant::from_micros(micros)
    }
}
