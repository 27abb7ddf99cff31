//! Per-source rate limits on text replies (probes and `ctl`), so a flood of probes can
//! neither eat the event loop's time that peer traffic needs nor turn a node into an
//! amplifier aimed at a spoofed source.
//!
//! A [`RateLimiter`] is three kinds of token bucket, all refilled continuously from `now`:
//!
//! - one per source IP address, for up to `N` sources (a table of fixed size: no
//!   allocation, whatever the number of sources);
//! - one shared **overflow** bucket, charged for every source that finds the table full
//!   of active sources: a thousand spoofed addresses together get what one source gets,
//!   and they cannot evict the sources already in the table;
//! - one **global** bucket that caps the node's text replies per second, whatever their
//!   sources.
//!
//! A reply is allowed only if both its source's bucket (or the overflow bucket) and the
//! global bucket hold a token; only then are both charged, so a refused reply costs no
//! bucket anything. Sources are keyed by IP address, never by port: an attacker picks ports
//! freely, a legitimate client behind one address is one client.
//!
//! A table entry is reused for a new source only once its bucket has refilled to full
//! (the source has been idle for at least `burst / per_source_per_s`): forgetting such a
//! source loses nothing, since it would start full again anyway. The table is scanned
//! linearly; `N` is small (see [`RATE_SOURCES_MAX`]), and the scan is cheaper than the
//! reply it guards (`bench_core` prints the figure).
//!
//! Tokens are counted in micro-tokens: a rate of `r` replies per second refills `r`
//! micro-tokens per microsecond of [`Instant`], so the arithmetic is integer and exact.
//! `now` should not go backwards; if it does, no time has passed (nothing is refilled and
//! no bucket's clock moves back).
//!
//! The limiter counts nothing itself: the caller counts refused replies (`ctl status`'s
//! `drop_rate_limited`).

use core::net::IpAddr;

use heapless::Vec;

use crate::time::{Duration, Instant};

/// Source buckets of a desktop node's limiter. 64 entries of 40 bytes (2.5 KiB) hold every
/// monitoring client, script and operator a flock realistically has, with room for the
/// flock's own members probing each other; more sources at once share the overflow
/// bucket.
pub const RATE_SOURCES_MAX: usize = 64;

/// Source buckets of a board's limiter (320 bytes): a board answers a handful of clients.
pub const EMBEDDED_RATE_SOURCES_MAX: usize = 8;

/// Default replies per second to one source address: 1,000. A client that probes every
/// millisecond (`bench_flock --probe-ms 1`, the finest failover figure) is never refused,
/// while one source can never draw more than 1,000 replies (about 30 KB/s) from a node.
pub const REPLY_RATE_PER_SOURCE_DEFAULT: u32 = 1_000;

/// Default replies one source may draw at once before the rate applies: 200, the rate's
/// first 200 ms. Clients behind one address (a NAT) that all probe at the same moment are
/// answered; a spoofed victim receives at most 200 replies (about 6 KB) in one go.
pub const REPLY_BURST_DEFAULT: u32 = 200;

/// Default replies per second of a node, all sources together: 20,000. A reply costs a
/// desktop node about 5 µs (format, `sendto`), so replies take at most a tenth of a core;
/// a probe reply is about 30 bytes, so a node sends at most about 600 KB/s of them, however
/// many addresses an attacker spoofs.
pub const REPLY_RATE_GLOBAL_DEFAULT: u32 = 20_000;

/// The global bucket holds this much of the global rate (20,000 replies/s: 2,000 at once),
/// so the cap holds over any window longer than this.
pub const GLOBAL_BURST_WINDOW: Duration = Duration::from_millis(100);

/// Micro-tokens in one token (one reply).
const MICROS_PER_TOKEN: u64 = 1_000_000;

const _: () = assert!(EMBEDDED_RATE_SOURCES_MAX <= RATE_SOURCES_MAX);
const _: () = assert!(REPLY_BURST_DEFAULT <= REPLY_RATE_PER_SOURCE_DEFAULT);
const _: () = assert!(REPLY_RATE_PER_SOURCE_DEFAULT <= REPLY_RATE_GLOBAL_DEFAULT);
// The largest bucket (u32::MAX tokens) fits in a u64 of micro-tokens.
const _: () = assert!((u32::MAX as u64).checked_mul(MICROS_PER_TOKEN).is_some());
const _: () = assert!(size_of::<RateLimiter<EMBEDDED_RATE_SOURCES_MAX>>() <= 512);

/// How fast a node may answer text: replies per second per source, the burst one source
/// may draw at once, and replies per second for all sources together.
///
/// A rate of 0 means **unlimited**: `per_source_per_s: 0` turns the per-source buckets off
/// (the table is then never used), `global_per_s: 0` turns the global cap off. A `burst` of
/// 0 is taken as 1 (a bucket that can never hold a token would refuse everything; to refuse
/// everything, do not answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Replies per second to one source address (and to all overflow sources together);
    /// 0: unlimited.
    pub per_source_per_s: u32,
    /// Replies one source may draw at once: the size of its bucket.
    pub burst: u32,
    /// Replies per second, all sources together; 0: unlimited. The global bucket holds
    /// [`GLOBAL_BURST_WINDOW`] of it (at least one reply).
    pub global_per_s: u32,
}

impl RateLimit {
    /// The defaults: [`REPLY_RATE_PER_SOURCE_DEFAULT`], [`REPLY_BURST_DEFAULT`],
    /// [`REPLY_RATE_GLOBAL_DEFAULT`].
    pub const DEFAULT: Self = Self {
        per_source_per_s: REPLY_RATE_PER_SOURCE_DEFAULT,
        burst: REPLY_BURST_DEFAULT,
        global_per_s: REPLY_RATE_GLOBAL_DEFAULT,
    };

    /// No limit at all: every reply is allowed.
    pub const UNLIMITED: Self = Self {
        per_source_per_s: 0,
        burst: 0,
        global_per_s: 0,
    };
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What [`RateLimiter::check`] decided about one reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send it; the buckets were charged.
    Allow,
    /// Its source's bucket is empty.
    RefuseSource,
    /// The table is full of active sources and the shared overflow bucket is empty.
    RefuseOverflow,
    /// The node's global bucket is empty.
    RefuseGlobal,
}

/// A token bucket: micro-tokens held at `updated`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    micro_tokens: u64,
    updated: Instant,
}

impl Bucket {
    /// A full bucket of `capacity` micro-tokens.
    const fn full(capacity: u64) -> Self {
        Self {
            micro_tokens: capacity,
            updated: Instant::ZERO,
        }
    }

    /// Micro-tokens it holds at `now`, refilled at `rate` tokens per second (micro-tokens
    /// per microsecond) up to `capacity`; nothing refills if `now` is before `updated`.
    fn level(&self, now: Instant, rate: u32, capacity: u64) -> u64 {
        let elapsed = now.saturating_since(self.updated).micros();
        let refill = elapsed.saturating_mul(u64::from(rate));
        self.micro_tokens.saturating_add(refill).min(capacity)
    }

    /// Sets it to `level` at `now` (its clock never moves back).
    fn set(&mut self, now: Instant, level: u64) {
        self.micro_tokens = level;
        self.updated = self.updated.max(now);
    }
}

/// One source address and its bucket.
#[derive(Clone, Copy, Debug)]
struct Source {
    addr: IpAddr,
    bucket: Bucket,
}

/// Which bucket a source is charged to.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// No per-source limit.
    Unlimited,
    /// Entry `index` of the table.
    Table(usize),
    /// A source not in the table, the table being full of active sources.
    Overflow,
    /// A new source to add to the table (it starts with a full bucket).
    New,
}

/// Token buckets for up to `N` source addresses, one shared overflow bucket and one global
/// bucket; see the [module docs](self). Nothing allocates: the whole state is in the value.
#[derive(Clone, Debug)]
pub struct RateLimiter<const N: usize> {
    limit: RateLimit,
    /// Capacity of a source's (and the overflow) bucket, in micro-tokens.
    source_capacity: u64,
    /// Capacity of the global bucket, in micro-tokens.
    global_capacity: u64,
    sources: Vec<Source, N>,
    overflow: Bucket,
    global: Bucket,
}

impl<const N: usize> RateLimiter<N> {
    /// A limiter with every bucket full.
    pub const fn new(limit: RateLimit) -> Self {
        let burst = if limit.burst == 0 { 1 } else { limit.burst };
        let source_capacity = burst as u64 * MICROS_PER_TOKEN;
        // Micro-tokens of GLOBAL_BURST_WINDOW at the global rate, at least one token.
        let window = (limit.global_per_s as u64).saturating_mul(GLOBAL_BURST_WINDOW.micros());
        let global_capacity = if window > MICROS_PER_TOKEN {
            window
        } else {
            MICROS_PER_TOKEN
        };
        Self {
            limit,
            source_capacity,
            global_capacity,
            sources: Vec::new(),
            overflow: Bucket::full(source_capacity),
            global: Bucket::full(global_capacity),
        }
    }

    /// The limits it enforces.
    pub const fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Sources it holds a bucket for (at most `N`).
    pub fn sources_count(&self) -> usize {
        self.sources.len()
    }

    /// Whether a text reply to `source` may be sent at `now`; if so, its buckets are
    /// charged for it. Counts nothing itself.
    pub fn allow(&mut self, now: Instant, source: IpAddr) -> bool {
        self.check(now, source) == Verdict::Allow
    }

    /// [`RateLimiter::allow`], saying which bucket refused.
    pub fn check(&mut self, now: Instant, source: IpAddr) -> Verdict {
        let slot = self.slot(now, source);
        let rate = self.limit.per_source_per_s;
        let source_level = match slot {
            Slot::Unlimited => None,
            Slot::Table(index) => Some(self.sources[index].bucket.level(
                now,
                rate,
                self.source_capacity,
            )),
            Slot::Overflow => Some(self.overflow.level(now, rate, self.source_capacity)),
            Slot::New => Some(self.source_capacity),
        };
        if source_level.is_some_and(|level| level < MICROS_PER_TOKEN) {
            return match slot {
                Slot::Overflow => Verdict::RefuseOverflow,
                _ => Verdict::RefuseSource,
            };
        }
        let global_level = if self.limit.global_per_s == 0 {
            None
        } else {
            let level = self
                .global
                .level(now, self.limit.global_per_s, self.global_capacity);
            if level < MICROS_PER_TOKEN {
                return Verdict::RefuseGlobal;
            }
            Some(level)
        };
        // Both hold a token: charge both.
        if let Some(level) = global_level {
            self.global.set(now, level - MICROS_PER_TOKEN);
        }
        if let Some(level) = source_level {
            let bucket = Bucket {
                micro_tokens: level - MICROS_PER_TOKEN,
                updated: now,
            };
            match slot {
                Slot::Unlimited => {}
                Slot::Table(index) => self.sources[index].bucket.set(now, bucket.micro_tokens),
                Slot::Overflow => self.overflow.set(now, bucket.micro_tokens),
                Slot::New => self.insert(now, source, bucket),
            }
        }
        Verdict::Allow
    }

    /// Where `source` is charged: its entry, a new entry (the table has room or an idle
    /// entry to reuse), or the overflow bucket.
    fn slot(&self, now: Instant, source: IpAddr) -> Slot {
        if self.limit.per_source_per_s == 0 {
            return Slot::Unlimited;
        }
        if let Some(index) = self.sources.iter().position(|s| s.addr == source) {
            return Slot::Table(index);
        }
        if !self.sources.is_full() || self.idle_entry(now).is_some() {
            return Slot::New;
        }
        Slot::Overflow
    }

    /// The entry idle longest among those whose bucket has refilled to full at `now`.
    fn idle_entry(&self, now: Instant) -> Option<usize> {
        let rate = self.limit.per_source_per_s;
        self.sources
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.bucket.level(now, rate, self.source_capacity) == self.source_capacity
            })
            .min_by_key(|(_, s)| s.bucket.updated)
            .map(|(index, _)| index)
    }

    /// Adds `source` with `bucket`, in a free entry or in place of the idlest full one.
    fn insert(&mut self, now: Instant, source: IpAddr, bucket: Bucket) {
        let entry = Source {
            addr: source,
            bucket,
        };
        if let Err(entry) = self.sources.push(entry) {
            // `slot` said New with a full table: an idle entry exists at this `now`.
            if let Some(index) = self.idle_entry(now) {
                self.sources[index] = entry;
            }
        }
        debug_assert!(self.sources.iter().any(|s| s.addr == source));
    }
}

#[cfg(test)]
mod tests {
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    fn at_ms(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    /// Calls `allow` `count` times for `source` at `now`; returns how many were allowed.
    fn allowed<const N: usize>(
        limiter: &mut RateLimiter<N>,
        now: Instant,
        source: IpAddr,
        count: u32,
    ) -> u32 {
        (0..count)
            .map(|_| u32::from(limiter.allow(now, source)))
            .sum()
    }

    const SMALL: RateLimit = RateLimit {
        per_source_per_s: 100,
        burst: 10,
        global_per_s: 0,
    };

    // -----------------------------------------------------------------------------------
    // One source
    // -----------------------------------------------------------------------------------

    #[test]
    fn burst_then_refill_rate() {
        let mut limiter = RateLimiter::<4>::new(SMALL);
        let start = at_ms(1_000);
        assert_eq!(allowed(&mut limiter, start, ip(1), 50), 10, "the burst");
        assert!(!limiter.allow(start, ip(1)));
        // 100/s: one token per 10 ms, none before.
        assert!(!limiter.allow(start + Duration::from_micros(9_999), ip(1)));
        assert!(limiter.allow(at_ms(1_010), ip(1)));
        assert!(!limiter.allow(at_ms(1_010), ip(1)));
        // A second later, the bucket is full again (10), not 100.
        assert_eq!(allowed(&mut limiter, at_ms(2_010), ip(1), 50), 10);
        // Steady state: one second of 1 ms steps allows the rate (plus nothing else).
        let mut sent = 0;
        for step in 1..=1_000 {
            sent += allowed(&mut limiter, at_ms(2_010 + step), ip(1), 5);
        }
        assert_eq!(sent, 100);
    }

    #[test]
    fn fractional_refill_is_kept() {
        // 3/s: a token every 333,333.3 µs; partial refills add up exactly (the bucket,
        // emptied first, never reaches its cap, which would lose the fractions).
        let limit = RateLimit {
            per_source_per_s: 3,
            burst: 10,
            global_per_s: 0,
        };
        let mut limiter = RateLimiter::<2>::new(limit);
        assert_eq!(allowed(&mut limiter, Instant::ZERO, ip(1), 20), 10);
        let mut sent = 0;
        for step in 1..=10_000u64 {
            sent += allowed(&mut limiter, Instant::from_micros(step * 1_000), ip(1), 1);
        }
        assert_eq!(sent, 30, "10 s at 3/s");
    }

    #[test]
    fn ports_do_not_matter_but_addresses_do() {
        let mut limiter = RateLimiter::<4>::new(SMALL);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(allowed(&mut limiter, at_ms(0), ip(1), 20), 10);
        assert_eq!(allowed(&mut limiter, at_ms(0), v6, 20), 10);
        // The caller canonicalises mapped addresses if it wants them to be one source.
        assert_eq!(allowed(&mut limiter, at_ms(0), mapped, 20), 10);
        assert_eq!(limiter.sources_count(), 3);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut limiter = RateLimiter::<2>::new(SMALL);
        assert_eq!(allowed(&mut limiter, at_ms(5_000), ip(1), 10), 10);
        // Earlier instants: no refill, and the bucket's clock stays at 5 s.
        assert!(!limiter.allow(at_ms(1_000), ip(1)));
        assert!(!limiter.allow(Instant::ZERO, ip(1)));
        assert!(!limiter.allow(at_ms(5_009), ip(1)));
        assert!(limiter.allow(at_ms(5_010), ip(1)));
        // The far future saturates instead of overflowing.
        let end = Instant::from_micros(u64::MAX);
        assert_eq!(allowed(&mut limiter, end, ip(1), 20), 10);
        assert_eq!(allowed(&mut limiter, end, ip(2), 20), 10);
    }

    // -----------------------------------------------------------------------------------
    // Many sources
    // -----------------------------------------------------------------------------------

    #[test]
    fn sources_are_independent() {
        let mut limiter = RateLimiter::<4>::new(SMALL);
        assert_eq!(allowed(&mut limiter, at_ms(0), ip(1), 1_000), 10);
        for source in 2..=4 {
            assert_eq!(allowed(&mut limiter, at_ms(0), ip(source), 3), 3);
        }
        assert_eq!(allowed(&mut limiter, at_ms(0), ip(2), 100), 7);
        assert!(!limiter.allow(at_ms(0), ip(1)));
        assert_eq!(limiter.sources_count(), 4);
    }

    #[test]
    fn full_table_charges_the_overflow_bucket() {
        let mut limiter = RateLimiter::<4>::new(SMALL);
        // Four active sources fill the table.
        for source in 1..=4 {
            assert!(limiter.allow(at_ms(0), ip(source)));
        }
        // Sixteen more share one bucket of 10, and evict nobody.
        let mut sent = 0;
        for source in 5..=20 {
            for _ in 0..5 {
                match limiter.check(at_ms(0), ip(source)) {
                    Verdict::Allow => sent += 1,
                    verdict => assert_eq!(verdict, Verdict::RefuseOverflow),
                }
            }
        }
        assert_eq!(sent, 10);
        assert_eq!(limiter.sources_count(), 4);
        // The sources in the table still have their own buckets.
        for source in 1..=4 {
            assert_eq!(allowed(&mut limiter, at_ms(0), ip(source), 20), 9);
        }
        // The overflow bucket refills at the per-source rate.
        assert!(limiter.allow(at_ms(10), ip(99)));
        assert!(!limiter.allow(at_ms(10), ip(98)));
    }

    #[test]
    fn idle_sources_are_evicted_oldest_first() {
        let mut limiter = RateLimiter::<3>::new(SMALL);
        assert!(limiter.allow(at_ms(0), ip(1)));
        assert!(limiter.allow(at_ms(5), ip(2)));
        assert!(limiter.allow(at_ms(10), ip(3)));
        // At 10 ms, ip(1) has refilled to full (one token per 10 ms): it is reused.
        assert_eq!(limiter.check(at_ms(10), ip(4)), Verdict::Allow);
        assert_eq!(limiter.sources_count(), 3);
        assert!(limiter.sources.iter().all(|s| s.addr != ip(1)));
        // ip(5) finds ip(2) full at 15 ms, not before.
        assert_eq!(limiter.check(at_ms(14), ip(5)), Verdict::Allow, "overflow");
        assert!(limiter.sources.iter().all(|s| s.addr != ip(5)));
        assert_eq!(limiter.check(at_ms(15), ip(5)), Verdict::Allow);
        assert!(limiter.sources.iter().any(|s| s.addr == ip(5)));
        assert!(limiter.sources.iter().all(|s| s.addr != ip(2)));
        // A reused entry starts full: ip(1), back, draws a whole burst.
        assert_eq!(allowed(&mut limiter, at_ms(1_000), ip(1), 20), 10);
    }

    #[test]
    fn an_active_attacker_cannot_evict_a_busy_source() {
        let mut limiter = RateLimiter::<2>::new(SMALL);
        // ip(1) draws a token every 5 ms: never full again; ip(2) likewise.
        let mut attacker = 0;
        for ms in 0..1_000 {
            let _ = limiter.allow(at_ms(ms), ip(1));
            let _ = limiter.allow(at_ms(ms), ip(2));
            for source in 10..60 {
                attacker += u32::from(limiter.allow(at_ms(ms), ip(source)));
            }
        }
        let kept: u32 = [1, 2]
            .iter()
            .map(|&s| u32::from(limiter.sources.iter().any(|e| e.addr == ip(s))))
            .sum();
        assert_eq!(kept, 2);
        // 50 attacking sources drew one source's share: burst + 1 s at 100/s.
        assert!(attacker <= 10 + 100, "{attacker}");
    }

    // -----------------------------------------------------------------------------------
    // The global cap
    // -----------------------------------------------------------------------------------

    #[test]
    fn global_cap_binds_many_sources() {
        let limit = RateLimit {
            per_source_per_s: 1_000,
            burst: 200,
            global_per_s: 2_000,
        };
        let mut limiter = RateLimiter::<64>::new(limit);
        // The global bucket holds 100 ms of 2,000/s: 200.
        let mut sent = 0;
        let mut refused_global = 0;
        for source in 0..40 {
            for _ in 0..10 {
                match limiter.check(at_ms(0), ip(source)) {
                    Verdict::Allow => sent += 1,
                    Verdict::RefuseGlobal => refused_global += 1,
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(sent, 200);
        assert_eq!(refused_global, 200);
        // Over one more second, 40 sources × 1,000/s offered: 2,000 allowed.
        let mut sent = 0;
        for step in 1..=1_000 {
            for source in 0..40 {
                sent += allowed(&mut limiter, at_ms(step), ip(source), 1);
            }
        }
        assert_eq!(sent, 2_000);
    }

    #[test]
    fn a_refusal_charges_no_bucket() {
        let limit = RateLimit {
            per_source_per_s: 100,
            burst: 10,
            global_per_s: 10,
        };
        let mut limiter = RateLimiter::<4>::new(limit);
        // Global holds one token (10/s × 100 ms): ip(1) takes it, ip(2) is refused
        // globally, which must not cost ip(2)'s bucket anything.
        assert!(limiter.allow(at_ms(0), ip(1)));
        for _ in 0..100 {
            assert_eq!(limiter.check(at_ms(0), ip(2)), Verdict::RefuseGlobal);
        }
        // 100 ms later the global bucket holds one token; ip(2)'s bucket was untouched.
        assert!(limiter.allow(at_ms(100), ip(2)));
        let entry = limiter.sources.iter().find(|s| s.addr == ip(2));
        assert_eq!(
            entry.map(|s| s.bucket.micro_tokens),
            Some(9 * MICROS_PER_TOKEN)
        );
    }

    #[test]
    fn zero_means_unlimited() {
        let mut limiter = RateLimiter::<2>::new(RateLimit::UNLIMITED);
        for source in 0..10 {
            assert_eq!(allowed(&mut limiter, at_ms(0), ip(source), 1_000), 1_000);
        }
        assert_eq!(
            limiter.sources_count(),
            0,
            "no table without a per-source limit"
        );
        // Only a global cap.
        let limit = RateLimit {
            per_source_per_s: 0,
            burst: 0,
            global_per_s: 100,
        };
        let mut limiter = RateLimiter::<2>::new(limit);
        assert_eq!(allowed(&mut limiter, at_ms(0), ip(1), 100), 10);
        // A burst of 0 is a burst of 1.
        let limit = RateLimit {
            per_source_per_s: 100,
            burst: 0,
            global_per_s: 0,
        };
        let mut limiter = RateLimiter::<2>::new(limit);
        assert_eq!(allowed(&mut limiter, at_ms(0), ip(1), 100), 1);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let limiter = RateLimiter::<RATE_SOURCES_MAX>::new(RateLimit::default());
        assert_eq!(limiter.limit(), RateLimit::DEFAULT);
        assert_eq!(limiter.source_capacity, 200 * MICROS_PER_TOKEN);
        assert_eq!(limiter.global_capacity, 2_000 * MICROS_PER_TOKEN);
        assert!(size_of::<RateLimiter<RATE_SOURCES_MAX>>() <= 3 * 1024);
    }
}
