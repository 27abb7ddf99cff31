//! `bench_exec`: how long a flock runs no `--exec` child when the goose changes, from the
//! children's own timestamps.
//!
//! ```text
//! cargo run --release -p flock-tests --bin bench_exec -- [--runs N] [--goose <path>]
//! ```
//!
//! A flock of 3 at the default timing, every node with `--exec` [`procs::exec_ticker`] (a
//! line with its node, term and time every ~5 ms). `--runs` times (default 30) each:
//!
//! - **transfer**: `ctl transfer` to the goose; the gap is from the old child's last line
//!   to the new child's first;
//! - **kill -9 failover**: `kill -9` of the goose (restarted as a duck afterwards); the
//!   same gap.
//!
//! The gap includes up to one line's period (~5–10 ms: a `date` and a `sleep` per line) of
//! the old child's life after its last line. Any overlap of two children ends the bench
//! with an error, and so does a broken probe-round promise.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use flock_tests::procs::{self, exec_gaps, exec_runs, exec_ticker, Flock, OnViolation, TempDir};

/// Generous bound for a flock to settle on a goose whose child runs.
const SETTLE: Duration = Duration::from_secs(30);
/// The pause between two polls of a wait.
const POLL: Duration = Duration::from_millis(2);

fn parse_args() -> Result<usize, String> {
    let mut runs = 30;
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => runs = value.parse().map_err(|_| format!("--runs {value}"))?,
            "--goose" => procs::use_goose_binary(&PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(runs)
}

/// Waits for a goose among `among` whose child has written a line; returns the goose.
fn goose_with_child(
    flock: &Flock,
    among: &[usize],
    file: &std::path::Path,
) -> Result<usize, String> {
    let (goose, term) = flock.wait_agreed(among, SETTLE);
    let id = flock.nodes[goose].id;
    let running = procs::eventually(SETTLE, POLL, || {
        exec_runs(file)
            .iter()
            .any(|run| run.id == id && run.term == term)
    });
    if !running {
        return Err(format!("goose {id} of term {term} started no child"));
    }
    Ok(goose)
}

/// The gap before the newest run, in ms, checking that no two runs overlapped.
fn last_gap(file: &std::path::Path) -> Result<f64, String> {
    let runs = exec_runs(file);
    let gaps = exec_gaps(&runs).map_err(|(a, b)| format!("two children at once: {a:?} {b:?}"))?;
    gaps.last()
        .copied()
        .ok_or_else(|| "no handoff seen".to_owned())
}

fn summary(name: &str, gaps: &mut [f64]) {
    gaps.sort_by(f64::total_cmp);
    let p50 = procs::percentile(gaps, 50.0).unwrap_or(f64::NAN);
    let max = gaps.last().copied().unwrap_or(f64::NAN);
    let min = gaps.first().copied().unwrap_or(f64::NAN);
    println!(
        "| {name} | {} | {min:.1} | {p50:.1} | {max:.1} |",
        gaps.len()
    );
}

fn run(runs: usize) -> Result<(), String> {
    let folder = TempDir::new("bench-exec");
    let file = folder.path().join("ticks");
    let script = exec_ticker(&file);
    let flags = ["--exec", script.as_str()];
    let timing = procs::Timing::DEFAULT;
    let mut flock = Flock::start_with(3, timing, &flags, OnViolation::Panic);
    let all = flock.all();
    let mut goose = goose_with_child(&flock, &all, &file)?;
    let (mut transfers, mut failovers) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let reply = flock.ctl(goose, "transfer").unwrap_or_default();
        if !reply.starts_with("ok to=") {
            return Err(format!("transfer: {reply}"));
        }
        let before = goose;
        goose = goose_with_child(&flock, &all, &file)?;
        if goose == before {
            return Err("the goose did not change".to_owned());
        }
        transfers.push(last_gap(&file)?);
    }
    for _ in 0..runs {
        let killed = goose;
        flock.kill9(killed);
        let rest: Vec<usize> = all.iter().copied().filter(|&i| i != killed).collect();
        goose = goose_with_child(&flock, &rest, &file)?;
        failovers.push(last_gap(&file)?);
        flock.restart(killed);
        flock.wait_listening(&[killed]);
        flock.wait_agreed(&all, SETTLE);
    }
    println!("exec handoff gap, ms (old child's last line to the new child's first), {timing}:\n");
    println!("| handoff | runs | min | p50 | max |\n| --- | ---: | ---: | ---: | ---: |");
    summary("`ctl transfer`", &mut transfers);
    summary("`kill -9` of the goose", &mut failovers);
    Ok(())
}

fn main() -> ExitCode {
    let runs = match parse_args() {
        Ok(runs) => runs,
        Err(error) => {
            eprintln!("bench_exec: {error}\nusage: bench_exec [--runs N] [--goose <path>]");
            return ExitCode::from(2);
        }
    };
    match run(runs) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench_exec: {error}");
            ExitCode::FAILURE
        }
    }
}
