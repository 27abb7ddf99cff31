//! The seeded swarm: `SIM_SEEDS` seeds (default 10,000) from `SIM_FROM` (default 0). A
//! failure prints the one command that replays it. For a long soak:
//! `SIM_SEEDS=1000000 cargo test --release -p flock-tests --test swarm`.

use flock_tests::swarm;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn swarm_seeds_keep_every_invariant_and_elect_after_healing() {
    let (from, count) = (env("SIM_FROM", 0), env("SIM_SEEDS", 10_000));
    let mut events = 0;
    let mut faults = 0;
    let mut slowest = 0;
    for seed in from..from + count {
        match swarm::run(seed) {
            Ok(summary) => {
                events += summary.events;
                faults += summary.faults;
                slowest = slowest.max(summary.goose_after_heal);
            }
            Err(failure) => panic!(
                "seed {seed}: {failure}\nreplay: cargo run --release -p flock-tests --bin sim -- --seed {seed}"
            ),
        }
    }
    println!(
        "{count} seeds, {events} events, {faults} faults; slowest goose after heal {} ms",
        slowest / 1000
    );
    assert!(faults > count, "the swarm injected faults");
}
