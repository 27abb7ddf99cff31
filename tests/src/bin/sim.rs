//! The swarm runner: `sim --seed N` replays one seed; `sim --seeds COUNT [--from S]` runs
//! many and prints the replay command of the first failure.

use std::process::ExitCode;

use flock_tests::swarm;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| -> Option<u64> {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1)?.parse().ok()
    };
    let (from, count) = match (value("--seed"), value("--seeds")) {
        (Some(seed), _) => (seed, 1),
        (None, Some(count)) => (value("--from").unwrap_or(0), count),
        (None, None) => {
            eprintln!("usage: sim --seed N | sim --seeds COUNT [--from S]");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    for seed in from..from.saturating_add(count) {
        // A panic inside the core or the checker is a failure of this seed too.
        let outcome =
            std::panic::catch_unwind(|| swarm::run(seed)).unwrap_or(Err(swarm::Failure::Panic));
        match outcome {
            Ok(summary) if count == 1 => println!("seed {seed}: ok {summary:?}"),
            Ok(_) => {}
            Err(failure) => {
                println!("seed {seed}: FAILED: {failure}");
                println!("replay: cargo run --release -p flock-tests --bin sim -- --seed {seed}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{count} seeds passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    ExitCode::SUCCESS
}
