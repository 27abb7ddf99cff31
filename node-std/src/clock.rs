//! The node's clock: `CLOCK_BOOTTIME` converted to the core's [`Instant`].
//!
//! Why `CLOCK_BOOTTIME`: the goose lease is measured on the goose's own clock, and is only
//! safe if that clock counts *all* real time (see `goose_core::raft`'s lease section). A
//! process stopped with SIGSTOP, or a laptop suspended, must come back to a clock that has
//! moved on by the time it was away, so that its lease has visibly lapsed.
//! `CLOCK_BOOTTIME` counts suspend and stopped time; `CLOCK_MONOTONIC` does not count
//! suspend, and `CLOCK_REALTIME` can jump backwards (NTP, the administrator).
//!
//! Panics if the kernel ever reports the clock going backwards: the lease would no longer
//! be safe, so crashing (fail-stop) is the only honest answer (TigerBeetle's
//! `monotonic_guard`).

use goose_core::Instant;

/// A monotonic clock that counts suspend and stopped time, and asserts it never goes back.
#[derive(Debug)]
pub(crate) struct Clock {
    last: Instant,
}

impl Clock {
    /// A clock; its readings are microseconds since boot.
    pub(crate) fn new() -> Self {
        Self {
            last: Instant::ZERO,
        }
    }

    /// Reads the clock.
    ///
    /// # Panics
    ///
    /// If `clock_gettime` fails (it cannot for `CLOCK_BOOTTIME` on Linux ≥ 2.6.39) or
    /// returns a time earlier than the previous reading.
    pub(crate) fn now(&mut self) -> Instant {
        let now = Instant::from_micros(boottime_micros());
        assert!(now >= self.last, "CLOCK_BOOTTIME went backwards");
        self.last = now;
        now
    }
}

fn boottime_micros() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid, writable timespec owned by this frame, and CLOCK_BOOTTIME
    // is a clock id every supported Linux kernel knows; clock_gettime writes only `time`.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut time) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
    let seconds = u64::try_from(time.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(time.tv_nsec).unwrap_or(0);
    seconds
        .saturating_mul(1_000_000)
        .saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn never_goes_back_and_advances() {
        let mut clock = Clock::new();
        let first = clock.now();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = clock.now();
        assert!(second.micros() >= first.micros() + 2_000);
    }
}
