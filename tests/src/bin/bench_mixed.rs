//! `bench_mixed`: failover in a mixed flock, three desktop `goose node` processes and two
//! boards (`goose board`, the firmware in QEMU) on 127.0.0.1, printed as a markdown table.
//!
//! ```text
//! cargo run --release -p flock-tests --bin bench_mixed -- [--kills 20] [--probe-ms 5]
//! ```
//!
//! `kills` times: wait until the flock is stable (every member agrees on one goose and its
//! term for an election timeout), wait a random part of a heartbeat, kill the goose with
//! SIGKILL (a desktop node's process, or a board's QEMU), probe the four others every 5 ms
//! (`--probe-ms`) and take the time from the kill to the first `goose` answer; restart the
//! victim on its data dir (a board on its state file). The figure is quantised to the probe
//! period. Needs `qemu-system-arm`; builds the firmware if its ELF is missing.
//!
//! Every probe round also counts double-goose observations (two members answering `goose`
//! in one round), term regressions and terms with two geese: all must be zero, else the
//! exit code is 1.

use std::process::ExitCode;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flock_tests::procs::{load_average, percentile, Flock, OnViolation, Timing};
use goose_core::rand::Rand;

/// Desktop nodes (ids 1-3).
const DESKTOPS: usize = 3;
/// Boards (ids 4-5).
const BOARDS: usize = 2;
/// How often the survivors are probed after a kill, by default.
const PROBE_EVERY_MS: u64 = 5;
/// A failover not seen within this is counted as missed.
const FAILOVER_WITHIN: Duration = Duration::from_secs(10);
/// How long the flock gets to become stable before a kill (a restarted board boots first).
const STABLE_WITHIN: Duration = Duration::from_secs(30);
/// The most kills one run takes (each costs a few seconds).
const KILLS_MAX: usize = 1_000;

const USAGE: &str = "usage: bench_mixed [--kills N] [--probe-ms N]";

struct Args {
    kills: usize,
    probe_every: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        kills: 20,
        probe_every: Duration::from_millis(PROBE_EVERY_MS),
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let mut value = || words.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--kills" => {
                args.kills = value()?.parse().map_err(|e| format!("--kills: {e}"))?;
                if args.kills == 0 || args.kills > KILLS_MAX {
                    return Err(format!("--kills must be 1..={KILLS_MAX}"));
                }
            }
            "--probe-ms" => {
                let ms: u64 = value()?.parse().map_err(|e| format!("--probe-ms: {e}"))?;
                if ms == 0 {
                    return Err("--probe-ms must be at least 1".into());
                }
                args.probe_every = Duration::from_millis(ms);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// One kill and what followed.
struct Kill {
    victim: usize,
    term: u64,
    /// The new goose, its term and how long after the kill it answered.
    next: Option<(usize, u64, Duration)>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("bench_mixed: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let load_before = load_average();
    let timing = Timing::DEFAULT;
    let mut flock = Flock::start_mixed(DESKTOPS, BOARDS, timing, OnViolation::Count);
    let mut rand = Rand::new(seed());
    let mut kills = Vec::with_capacity(args.kills);
    let mut unstable = 0;
    for run in 0..args.kills {
        let Some((goose, term)) = flock.wait_stable(STABLE_WITHIN) else {
            unstable += 1;
            eprintln!(
                "kill {}: flock not stable within {STABLE_WITHIN:?}",
                run + 1
            );
            continue;
        };
        // Kill at a random phase of the heartbeat.
        thread::sleep(Duration::from_micros(
            rand.range_inclusive(0, timing.heartbeat_ms * 1000),
        ));
        let killed = flock.kill_member(goose);
        let survivors: Vec<usize> = flock.all().into_iter().filter(|&i| i != goose).collect();
        let next = flock.first_goose(&survivors, killed, args.probe_every, FAILOVER_WITHIN);
        let kill = Kill {
            victim: goose,
            term,
            next,
        };
        eprintln!("kill {}: {}", run + 1, describe(&flock, &kill));
        kills.push(kill);
        flock.restart(goose);
    }
    let load_after = load_average();
    print_report(&flock, &kills, unstable, &args, &load_before, &load_after);
    let watch = flock.watch();
    let safe = watch.double_geese == 0
        && watch.term_regressions == 0
        && watch.two_geese_in_a_term == 0
        && watch.malformed == 0;
    if safe {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench_mixed: a safety promise was broken (see the table)");
        ExitCode::FAILURE
    }
}

fn label(flock: &Flock, index: usize) -> String {
    let node = &flock.nodes[index];
    let kind = if node.board { "board" } else { "desktop" };
    format!("{kind} {}", node.id)
}

fn describe(flock: &Flock, kill: &Kill) -> String {
    let victim = label(flock, kill.victim);
    match kill.next {
        Some((next, term, after)) => format!(
            "{victim} (term {}) -> {} (term {term}) in {:.1} ms",
            kill.term,
            label(flock, next),
            after.as_secs_f64() * 1e3
        ),
        None => format!(
            "{victim} (term {}) -> no goose within {FAILOVER_WITHIN:?}",
            kill.term
        ),
    }
}

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

fn fmt_ms(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.1} ms"))
}

fn print_report(
    flock: &Flock,
    kills: &[Kill],
    unstable: usize,
    args: &Args,
    before: &str,
    after: &str,
) {
    let mut ms: Vec<f64> = kills
        .iter()
        .filter_map(|kill| kill.next.map(|(_, _, after)| after.as_secs_f64() * 1e3))
        .collect();
    ms.sort_by(f64::total_cmp);
    let missed = kills.iter().filter(|kill| kill.next.is_none()).count();
    let count = |board: bool, pick: &dyn Fn(&Kill) -> Option<usize>| {
        kills
            .iter()
            .filter_map(pick)
            .filter(|&index| flock.nodes[index].board == board)
            .count()
    };
    let boards_killed = count(true, &|kill| Some(kill.victim));
    let boards_elected = count(true, &|kill| kill.next.map(|(next, _, _)| next));
    let watch = flock.watch();
    println!("\n## bench_mixed\n");
    println!(
        "{DESKTOPS} `goose node` processes and {BOARDS} `goose board`s (QEMU lm3s6965evb) on \
         127.0.0.1, timing {}; {} kills of the goose with SIGKILL (a board's QEMU or a \
         desktop process), survivors probed every {} ms; {} cores; load average {before} \
         before, {after} after.\n",
        flock.timing,
        kills.len(),
        args.probe_every.as_millis(),
        thread::available_parallelism().map_or(0, usize::from),
    );
    println!("| kill | goose killed | new goose | failover |");
    println!("| ---: | --- | --- | ---: |");
    for (number, kill) in kills.iter().enumerate() {
        let (next, took) = match kill.next {
            Some((next, term, after)) => (
                format!("{} (term {term})", label(flock, next)),
                format!("{:.1} ms", after.as_secs_f64() * 1e3),
            ),
            None => ("none".into(), "missed".into()),
        };
        println!(
            "| {} | {} (term {}) | {next} | {took} |",
            number + 1,
            label(flock, kill.victim),
            kill.term
        );
    }
    println!("\n| measurement | value |");
    println!("| --- | ---: |");
    println!("| failover p50 | {} |", fmt_ms(percentile(&ms, 50.0)));
    println!("| failover p90 | {} |", fmt_ms(percentile(&ms, 90.0)));
    println!("| failover max | {} |", fmt_ms(ms.last().copied()));
    println!("| failover min | {} |", fmt_ms(ms.first().copied()));
    println!(
        "| lease (counted from the killed goose's last heartbeat round; none is goose before it ends) | {:.1} ms |",
        flock.timing.lease().as_secs_f64() * 1e3
    );
    println!(
        "| boards killed as goose | {boards_killed} of {} |",
        kills.len()
    );
    println!(
        "| boards that became goose | {boards_elected} of {} |",
        kills.len()
    );
    println!("| missed failovers (> {FAILOVER_WITHIN:?}) | {missed} |");
    println!("| flock not stable before a kill | {unstable} |");
    println!("| probe rounds | {} |", watch.rounds);
    println!("| rounds with two geese | {} |", watch.double_geese);
    println!("| term regressions | {} |", watch.term_regressions);
    println!("| terms with two geese | {} |", watch.two_geese_in_a_term);
    println!("| malformed replies | {} |", watch.malformed);
}
