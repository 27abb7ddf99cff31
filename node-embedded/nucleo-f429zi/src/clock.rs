//! The board's clock: TIM2, a 32-bit timer counting microseconds, extended to 64 bits.
//!
//! The goose's lease is safe only if the clock counts every moment the core was stalled
//! (the core's `raft::lease`). TIM2 is clocked from APB1, not from the core: it keeps
//! counting while the core waits on a flash erase or write, sleeps in WFI, runs with
//! interrupts masked, or is halted by a debugger (its `DBGMCU` freeze bit is left clear).
//! Nothing counts in an interrupt, where a late or masked one would merge ticks.
//!
//! The extension: each reading compares the counter with the last one; a smaller value is
//! one wrap more. That is right only if readings are less than a wrap apart: 2^32 µs,
//! 71.6 minutes. The loop reads the clock at least once a turn, and feeds the independent
//! watchdog only right after a turn; the watchdog resets a board whose turn takes longer
//! than `WATCHDOG` (8 s; the longest legitimate stall, erasing a 128 KiB flash sector,
//! takes at most 4 s), so two readings are never more than 8 s apart, far inside a wrap. A
//! reset board is safe: it restarts from its flash and, like any restarted node, grants no
//! vote and does not campaign for an election timeout.

use core::cell::Cell;

use goose_core::Instant;
use goose_embedded::Clock;
use stm32f4xx_hal::pac::TIM2;
use stm32f4xx_hal::rcc::{BusTimerClock, Clocks, Enable, Reset};

/// Counts per second: one per microsecond.
const TICKS_PER_SECOND: u32 = 1_000_000;

/// Microseconds since the timer started, from TIM2 (module docs).
pub(crate) struct TimerClock {
    timer: TIM2,
    /// The counter at the last reading.
    last: Cell<u32>,
    /// Wraps counted so far (the high 32 bits).
    wraps: Cell<u32>,
}

impl TimerClock {
    /// Starts TIM2 free-running at 1 MHz from its bus clock (`None` if that clock is not a
    /// whole number of MHz, which would make the count drift).
    pub(crate) fn start(timer: TIM2, clocks: &Clocks) -> Option<Self> {
        let input = TIM2::timer_clock(clocks).raw();
        if input % TICKS_PER_SECOND != 0 {
            return None;
        }
        let prescaler = u16::try_from(input / TICKS_PER_SECOND - 1).ok()?;
        // SAFETY: enables and resets TIM2's clock in RCC, a read-modify-write of bits that
        // belong to TIM2 alone, before anything else uses the timer; no interrupt touches RCC.
        unsafe {
            TIM2::enable_unchecked();
            TIM2::reset_unchecked();
        }
        timer.psc.write(|w| w.psc().bits(prescaler));
        timer.arr.write(|w| w.arr().bits(u32::MAX));
        // Load the prescaler now, not at the first overflow.
        timer.egr.write(|w| w.ug().set_bit());
        timer.cnt.write(|w| w.cnt().bits(0));
        timer.cr1.modify(|_, w| w.cen().set_bit());
        Some(Self {
            timer,
            last: Cell::new(0),
            wraps: Cell::new(0),
        })
    }
}

impl Clock for TimerClock {
    fn now(&self) -> Instant {
        let count = self.timer.cnt.read().cnt().bits();
        if count < self.last.get() {
            self.wraps.set(self.wraps.get().wrapping_add(1));
        }
        self.last.set(count);
        Instant::from_micros(u64::from(self.wraps.get()) << 32 | u64::from(count))
    }
}
