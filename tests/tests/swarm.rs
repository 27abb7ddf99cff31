//! The seeded swarm: `SIM_SEEDS` seeds (default 30,000) from `SIM_FROM` (default 0), spread
//! over the machine's cores. A failure prints the one command that replays it. For a long
//! soak: `SIM_SEEDS=1000000 cargo test --release -p flock-tests --test swarm`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use flock_tests::swarm;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Threads the seeds are spread over: one per core, at most this many.
const THREADS_MAX: usize = 16;

#[test]
fn swarm_seeds_keep_every_invariant_and_elect_after_healing() {
    let (from, count) = (env("SIM_FROM", 0), env("SIM_SEEDS", 30_000));
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(THREADS_MAX);
    let next = AtomicU64::new(from);
    let (events, faults, slowest) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    // The lowest failing seed, so that a failure names the same seed whatever the threads.
    let failed: Mutex<Option<(u64, String)>> = Mutex::new(None);
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= from + count {
                    break;
                }
                match swarm::run(seed) {
                    Ok(summary) => {
                        events.fetch_add(summary.events, Ordering::Relaxed);
                        faults.fetch_add(summary.faults, Ordering::Relaxed);
                        slowest.fetch_max(summary.goose_after_heal, Ordering::Relaxed);
                    }
                    Err(failure) => {
                        let mut failed = failed.lock().unwrap_or_else(|e| e.into_inner());
                        if failed.as_ref().is_none_or(|(s, _)| seed < *s) {
                            *failed = Some((seed, failure.to_string()));
                        }
                    }
                }
            });
        }
    });
    if let Some((seed, failure)) = failed.into_inner().unwrap_or_else(|e| e.into_inner()) {
        panic!(
            "seed {seed}: {failure}\nreplay: cargo run --release -p flock-tests --bin sim -- --seed {seed}"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    let faults = faults.into_inner();
    println!(
        "{count} seeds on {threads} threads in {secs:.1} s ({:.0} seeds/s), {} events, {faults} \
         faults; slowest goose after heal {} ms",
        count as f64 / secs,
        events.into_inner(),
        slowest.into_inner() / 1000
    );
    assert!(faults > count, "the swarm injected faults");
}
