//! The board's clock: SysTick interrupts every millisecond count ticks; a reading adds the
//! microseconds elapsed in the current tick from SysTick's current-value register.
//!
//! QEMU runs this core at 12.5 MHz with no reference clock (EMBEDDED-NOTES.md), so SysTick
//! runs on the core clock with reload 12 499. A 1 ms tick loses about 0.1 % against host
//! time; the core's default `max_drift` (1 %) covers it with margin.
//!
//! The tick counter is 32 bits (49 days) and extended to 64 in [`SysTickClock::now`], which
//! the loop calls at least every millisecond. A reading taken just as the counter reloads,
//! before the interrupt has counted the tick, would look 1 ms early: a monotonic guard
//! returns the previous reading instead, so time never goes backwards (the core asserts it).

use core::cell::Cell;
use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::SYST;
use cortex_m_rt::exception;
use goose_core::Instant;
use goose_embedded::Clock;

/// The core clock QEMU gives the lm3s6965evb (and the real chip's PLL default with its
/// 8 MHz crystal is different: set this from the board's clock tree when porting).
pub(crate) const CORE_CLOCK_HZ: u32 = 12_500_000;

/// Ticks per second.
pub(crate) const TICKS_PER_SECOND: u32 = 1_000;

/// SysTick counts from this down to 0, then interrupts: one tick.
const RELOAD: u32 = CORE_CLOCK_HZ / TICKS_PER_SECOND - 1;

const MICROS_PER_TICK: u64 = 1_000_000 / TICKS_PER_SECOND as u64;

const _: () = assert!(RELOAD == 12_499);
const _: () = assert!(RELOAD < 1 << 24, "SysTick is a 24-bit counter");

/// Ticks since [`SysTickClock::start`]; only the SysTick handler writes it.
static TICKS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    TICKS.fetch_add(1, Ordering::Release);
}

/// Microseconds since start, from SysTick.
pub(crate) struct SysTickClock {
    /// The last tick count seen, to notice the 32-bit counter wrapping.
    last_ticks: Cell<u32>,
    /// Ticks before the last wrap, in units of 2^32.
    wraps: Cell<u64>,
    /// The last reading returned (the monotonic guard).
    last: Cell<u64>,
}

impl SysTickClock {
    /// Starts SysTick: core clock, 1 ms period, interrupt on.
    pub(crate) fn start(mut syst: SYST) -> Self {
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Self {
            last_ticks: Cell::new(0),
            wraps: Cell::new(0),
            last: Cell::new(0),
        }
    }
}

impl Clock for SysTickClock {
    fn now(&self) -> Instant {
        // Read the counter between two reads of the tick count that agree, so both belong
        // to the same tick (the interrupt runs at once in thread mode). Bounded: a tick is
        // 12 500 cycles and the loop takes a few.
        let (ticks, current) = loop {
            let before = TICKS.load(Ordering::Acquire);
            let current = SYST::get_current();
            if TICKS.load(Ordering::Acquire) == before {
                break (before, current);
            }
        };
        if ticks < self.last_ticks.get() {
            self.wraps.set(self.wraps.get() + 1);
        }
        self.last_ticks.set(ticks);
        let ticks = (self.wraps.get() << 32) | u64::from(ticks);
        let elapsed = u64::from(RELOAD.saturating_sub(current));
        let micros = ticks * MICROS_PER_TICK + elapsed * 1_000_000 / u64::from(CORE_CLOCK_HZ);
        let micros = micros.max(self.last.get());
        self.last.set(micros);
        Instant::from_micros(micros)
    }
}
