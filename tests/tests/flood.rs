//! A short `whois-goose` flood against a real 5-node flock: the term must not
//! change, and once the node limits its text replies (`ctl status` reports
//! `drop_rate_limited`), the flooders must get no more replies than the default limits
//! allow. `bin/bench_flood.rs` measures the full figure (200,000 probes/s and more); this
//! test keeps its bounds generous so a loaded 2-core machine passes it.
//!
//! The flood and the watch are [`flock_tests::flood`]; the flock is killed by pid when
//! dropped, also on panic; every wait is bounded.

use std::time::Duration;

use flock_tests::flood::{self, FloodConfig, Flooder, Watcher};
use flock_tests::procs::{Flock, Timing};
use goose_core::ratelimit::RateLimit;

/// How long the flock gets to agree on a goose, before and after the flood.
const AGREE_WITHIN: Duration = Duration::from_secs(10);
/// How long the flood lasts.
const FLOOD_FOR: Duration = Duration::from_secs(3);
/// Probes per second offered: half of the 200,000/s `bench_flood` holds the node to, so the
/// test measures the node and
/// not a CPU shared with other builds; `bench_flood` goes further.
const FLOOD_RATE: u64 = 100_000;
/// The flood must reach at least this rate for the test to mean anything.
const FLOOD_RATE_MIN: f64 = 20_000.0;
/// Source addresses of the flood.
const SOURCES: usize = 4;
/// Slack on the replies the limits allow (timing of the buckets' refill against the
/// flood's own clock).
const REPLY_SLACK: f64 = 1.5;
/// Watched after the flood, for a late term change.
const AFTER_FOR: Duration = Duration::from_secs(1);

#[test]
fn a_probe_flood_from_several_sources_changes_no_term() {
    let flock = Flock::start(5, Timing::DEFAULT);
    let all = flock.all();
    let (goose, term) = flock.wait_agreed(&all, AGREE_WITHIN);
    let mut watcher = Watcher::new(&flock);
    watcher.sample_once();
    let config = FloodConfig {
        sources: SOURCES,
        threads: 1,
        duration: FLOOD_FOR,
        rate: Some(FLOOD_RATE),
        batch: 64,
        nice: 0,
    };
    // Aimed at the goose: the node whose lost acknowledgements cost the most.
    let targets = flood::targets(&flock, &[goose]);
    let flooder = Flooder::start(&targets, &config).expect("flood sockets on 127.0.0.10..");
    watcher.watch(FLOOD_FOR);
    let report = flooder.finish(false).expect("flood threads");
    watcher.watch(AFTER_FOR);
    let watched = watcher.watched();
    eprintln!(
        "flood: {:.0} probes/s sent, {:.0} replies/s ({} in all), terms seen {:?}, \
         geese {:?}, {} samples without a goose",
        report.sent_per_s(),
        report.replies_per_s(),
        report.replies,
        watched.terms,
        watched.geese,
        watched.gooseless
    );
    assert!(
        report.sent_per_s() >= FLOOD_RATE_MIN,
        "the flood reached only {:.0}/s",
        report.sent_per_s()
    );
    assert_eq!(
        watched.terms,
        vec![term],
        "the term changed under the flood"
    );
    assert_eq!(watched.double_geese, 0, "two nodes said role=goose at once");
    let (goose_after, term_after) = flock.wait_agreed(&all, AGREE_WITHIN);
    assert_eq!(term_after, term, "the term changed under the flood");
    assert_eq!(goose_after, goose, "the goose changed under the flood");

    if !watched.has("drop_rate_limited") {
        eprintln!("flood: no drop_rate_limited in ctl status: reply limits not checked");
        return;
    }
    let limit = RateLimit::DEFAULT;
    let seconds = report.elapsed.as_secs_f64();
    let sources = SOURCES as f64;
    let per_sources =
        sources * (f64::from(limit.per_source_per_s) * seconds) + sources * f64::from(limit.burst);
    let global = f64::from(limit.global_per_s) * (seconds + 0.1);
    let allowed = per_sources.min(global) * REPLY_SLACK;
    assert!(
        report.replies as f64 <= allowed,
        "{} replies in {seconds:.1} s from {SOURCES} sources: more than the limits allow \
         ({allowed:.0} with slack)",
        report.replies
    );
    let limited = watched.delta(goose, "drop_rate_limited").unwrap_or(0);
    assert!(limited > 0, "the goose counted no rate-limited probe");
}
