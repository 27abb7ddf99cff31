//! `bench_flood`: a `whois-goose` flood from several source addresses against a real
//! 5-node flock on 127.0.0.1, and what it does to the flock: a flood of at least 200,000
//! probes/s from several sources must not change the term.
//!
//! ```text
//! cargo run --release -p flock-tests --bin bench_flood -- \
//!     [--secs 10] [--runs 1] [--hog] [--aim goose|all] [--sources 8] [--threads 2] \
//!     [--rate 0] [--batch 64] [--nice 0] [--timing default|fast]
//! ```
//!
//! It starts the flock, waits until it agrees on a goose, watches it for
//! [`BASELINE_FOR`] without a flood (the peer traffic's normal rate), then floods for
//! `--secs` from 127.0.0.10, .11, … (`--sources`, dealt out among `--threads` sending
//! threads, `sendmmsg` batches of `--batch`; `--rate` datagrams/s in all, 0 for as fast as
//! they can; `--nice` lowers the senders' priority) at the goose or at every node
//! (`--aim`), while every node's `ctl status` is sampled from 127.0.0.1 every 100 ms; then
//! it watches [`AFTER_FOR`] more for a late term change. `--runs` floods that many times
//! in a row on the same flock; `--hog` runs one busy process per core, at the bench's own
//! priority, during every flood: the machine loaded beyond its cores, so that the nodes
//! are descheduled for whole time slices while the flood goes on.
//!
//! It prints the offered rate, the replies the flooders got (per second and bytes out per
//! byte in), term and goose changes, samples without a goose (a goose whose lease lapsed
//! because acknowledgements were lost), and per node: datagrams its socket dropped with a
//! full receive buffer (`/proc/net/udp`), peer frames received per second before and
//! during the flood, its CPU, and `drop_rate_limited` if `ctl status` has it; and per run,
//! what the goose's own sockets dropped (`socket_drops_peer`, `socket_drops_text` of its
//! `ctl status`: peer frames must never be among them). It exits 1 on a term change.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use flock_tests::flood::{
    self, per_second, socket_drops, Aim, FloodConfig, FloodReport, Flooder, Watched, Watcher,
};
use flock_tests::procs::{self, Flock, OnViolation, Timing};

/// Nodes in the flock.
const NODES: usize = 5;
/// How long the flock gets to agree on a goose.
const AGREE_WITHIN: Duration = Duration::from_secs(10);
/// Watched without a flood, for the peer traffic's normal rate.
const BASELINE_FOR: Duration = Duration::from_secs(2);
/// Watched after the flood, for a late term change.
const AFTER_FOR: Duration = Duration::from_secs(2);
/// Log lines about terms printed per node when the term changed.
const LOG_LINES: usize = 8;

const USAGE: &str = "usage: bench_flood [--secs N] [--runs N] [--hog] [--aim goose|all] \
                     [--sources N] [--threads N] [--rate N] [--batch N] [--nice N] \
                     [--timing default|fast]";
/// The most runs one bench makes.
const RUNS_MAX: usize = 100;

struct Args {
    aim: Aim,
    timing: Timing,
    config: FloodConfig,
    runs: usize,
    hog: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        aim: Aim::Goose,
        timing: Timing::DEFAULT,
        config: FloodConfig {
            sources: 8,
            threads: 2,
            duration: Duration::from_secs(10),
            rate: None,
            batch: 64,
            nice: 0,
        },
        runs: 1,
        hog: false,
    };
    let mut words = std::env::args().skip(1);
    // Bounded by the argument list.
    while let Some(flag) = words.next() {
        let mut value = || words.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| -> Result<u64, String> {
            text.parse().map_err(|e| format!("{flag}: {e}"))
        };
        let config = &mut args.config;
        match flag.as_str() {
            "--secs" => config.duration = Duration::from_secs(number(value()?)?),
            "--runs" => args.runs = to_usize(number(value()?)?)?,
            "--hog" => args.hog = true,
            "--aim" => {
                args.aim = match value()?.as_str() {
                    "goose" => Aim::Goose,
                    "all" => Aim::All,
                    other => return Err(format!("--aim {other}: goose or all")),
                }
            }
            "--sources" => config.sources = to_usize(number(value()?)?)?,
            "--threads" => config.threads = to_usize(number(value()?)?)?,
            "--rate" => config.rate = Some(number(value()?)?).filter(|&rate| rate > 0),
            "--batch" => config.batch = to_usize(number(value()?)?)?,
            "--nice" => config.nice = value()?.parse().map_err(|e| format!("--nice: {e}"))?,
            "--timing" => {
                args.timing = match value()?.as_str() {
                    "default" => Timing::DEFAULT,
                    "fast" => Timing::FAST,
                    other => return Err(format!("--timing {other}: default or fast")),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let config = &args.config;
    if !(1..=flood::SOURCES_MAX).contains(&config.sources) {
        return Err(format!("--sources: 1..={}", flood::SOURCES_MAX));
    }
    if !(1..=config.sources).contains(&config.threads) {
        return Err("--threads: 1..=sources".into());
    }
    if !(1..=flood::BATCH_MAX).contains(&config.batch) {
        return Err(format!("--batch: 1..={}", flood::BATCH_MAX));
    }
    if !(1..=RUNS_MAX).contains(&args.runs) {
        return Err(format!("--runs: 1..={RUNS_MAX}"));
    }
    Ok(args)
}

fn to_usize(value: u64) -> Result<usize, String> {
    usize::try_from(value).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("bench_flood: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let flock = Flock::start_with(NODES, args.timing, &[], OnViolation::Count);
    let all = flock.all();
    let goose = match flock.wait_until(&all, AGREE_WITHIN, Duration::from_millis(10), |round| {
        round.agreed(&all).is_some()
    }) {
        Ok(round) => round.agreed(&all).map_or(0, |(goose, _)| goose),
        Err(last) => {
            eprintln!("bench_flood: no agreed goose within {AGREE_WITHIN:?}: {last}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("goose: node {}; baseline for {BASELINE_FOR:?}", goose + 1);
    let mut watcher = Watcher::new(&flock);
    watcher.watch(BASELINE_FOR);
    let baseline = watcher.watched().clone();
    let baseline_elapsed = BASELINE_FOR;

    let mut runs = Vec::with_capacity(args.runs);
    let mut last = None;
    for run in 0..args.runs {
        let term_changes_before = watcher.watched().term_changes();
        // The goose of this run: a term change in an earlier one may have moved it.
        let goose = flock
            .probe_round(&all, Duration::from_millis(100))
            .agreed(&all)
            .map_or(goose, |(goose, _)| goose);
        let aimed: Vec<usize> = match args.aim {
            Aim::Goose => vec![goose],
            Aim::All => all.clone(),
        };
        let targets = flood::targets(&flock, &aimed);
        let drops_before: Vec<Option<u64>> =
            all.iter().map(|&i| socket_drops(flock.port(i))).collect();
        let cpu_before: Vec<Option<u64>> = all.iter().map(|&i| cpu_ticks(&flock, i)).collect();
        let own_cpu_before = procs::cpu_ticks(std::process::id());
        watcher.restart_counters();
        let hog = args.hog.then(Hog::start);
        eprintln!(
            "run {}: flooding {:?} for {:?}{}",
            run + 1,
            args.aim,
            args.config.duration,
            if hog.is_some() { ", CPU hog on" } else { "" }
        );
        let flooding = Instant::now();
        let flooder = match Flooder::start(&targets, &args.config) {
            Ok(flooder) => flooder,
            Err(error) => {
                eprintln!("bench_flood: flood sockets: {error}");
                return ExitCode::FAILURE;
            }
        };
        watcher.watch(args.config.duration);
        let report = match flooder.finish(false) {
            Ok(report) => report,
            Err(error) => {
                eprintln!("bench_flood: flood: {error}");
                return ExitCode::FAILURE;
            }
        };
        let flood_elapsed = flooding.elapsed();
        drop(hog);
        let during = watcher.watched().clone();
        let nodes: Vec<NodeFigures> = all
            .iter()
            .map(|&i| NodeFigures {
                goose: i == goose,
                drops: socket_drops(flock.port(i))
                    .zip(drops_before[i])
                    .map(|(after, before)| after.saturating_sub(before)),
                cpu_percent: cpu_ticks(&flock, i)
                    .zip(cpu_before[i])
                    .map(|(after, before)| percent(after.saturating_sub(before), flood_elapsed)),
            })
            .collect();
        let own_cpu = procs::cpu_ticks(std::process::id())
            .zip(own_cpu_before)
            .map(|(after, before)| percent(after.saturating_sub(before), flood_elapsed));
        watcher.watch(AFTER_FOR);
        let after = watcher.watched().clone();
        runs.push(RunFigures {
            offered: report.sent_per_s(),
            replies: report.replies_per_s(),
            term_changes: after.term_changes() - term_changes_before,
            peer_drops: after.delta(goose, "socket_drops_peer"),
            text_drops: after.delta(goose, "socket_drops_text"),
            peer_frames: during
                .delta(goose, "peer_frames_in")
                .map(|frames| per_second(frames, flood_elapsed)),
        });
        last = Some((report, during, flood_elapsed, after, nodes, own_cpu));
    }
    let Some((report, during, flood_elapsed, after, nodes, own_cpu)) = last else {
        return ExitCode::FAILURE;
    };
    print_runs(&runs, args.hog);
    print_report(&Report {
        args: &args,
        flood: &report,
        baseline: &baseline,
        baseline_elapsed,
        during: &during,
        flood_elapsed,
        after: &after,
        nodes: &nodes,
        own_cpu,
    });
    if runs.iter().any(|run| run.term_changes > 0) {
        // Why: each node's log lines about terms and roles.
        for index in flock.all() {
            let tail = flock.log_tail(index);
            let lines: Vec<&str> = tail.lines().filter(|line| line.contains("term")).collect();
            eprintln!(
                "--- node {} log (term lines) ---\n{}",
                index + 1,
                lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
            );
        }
    }
    let watch = flock.watch();
    let safe = watch.double_geese == 0
        && watch.two_geese_in_a_term == 0
        && watch.term_regressions == 0
        && after.double_geese == 0;
    let term_changes: usize = runs.iter().map(|run| run.term_changes).sum();
    if term_changes == 0 && safe {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench_flood: the term changed or a safety promise broke (see above)");
        ExitCode::FAILURE
    }
}

/// One run's figures, for the table of runs.
struct RunFigures {
    /// Datagrams sent per second.
    offered: f64,
    /// Replies received per second.
    replies: f64,
    /// Term changes seen during the run and the watch after it.
    term_changes: usize,
    /// Datagrams the goose's peer socket dropped (its `ctl status`).
    peer_drops: Option<u64>,
    /// Datagrams the goose's text socket dropped.
    text_drops: Option<u64>,
    /// Peer frames the goose received per second during the flood.
    peer_frames: Option<f64>,
}

/// One row per run.
fn print_runs(runs: &[RunFigures], hog: bool) {
    println!(
        "{} run(s){}:\n",
        runs.len(),
        if hog {
            ", a CPU hog (one busy process per core) running during each flood"
        } else {
            ""
        }
    );
    println!(
        "| run | offered/s | replies/s | term changes | goose socket drops, peer / text | \
         goose peer frames in/s |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let show = |value: Option<u64>| value.map_or("-".to_owned(), |v| v.to_string());
    for (index, run) in runs.iter().enumerate() {
        println!(
            "| {} | {:.0} | {:.0} | {} | {} / {} | {} |",
            index + 1,
            run.offered,
            run.replies,
            run.term_changes,
            show(run.peer_drops),
            show(run.text_drops),
            run.peer_frames
                .map_or("-".to_owned(), |frames| format!("{frames:.0}"))
        );
    }
    println!();
}

/// One busy process per core, at the bench's own priority, until dropped (then killed by
/// pid and reaped).
struct Hog {
    children: Vec<std::process::Child>,
}

impl Hog {
    fn start() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let children = (0..cores)
            .filter_map(|_| {
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .spawn()
                    .map_err(|error| eprintln!("bench_flood: hog: {error}"))
                    .ok()
            })
            .collect();
        Self { children }
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Per-node figures taken around the flood.
struct NodeFigures {
    goose: bool,
    /// Datagrams its socket dropped with a full receive buffer during the flood.
    drops: Option<u64>,
    cpu_percent: Option<f64>,
}

struct Report<'a> {
    args: &'a Args,
    flood: &'a FloodReport,
    baseline: &'a Watched,
    baseline_elapsed: Duration,
    during: &'a Watched,
    flood_elapsed: Duration,
    after: &'a Watched,
    nodes: &'a [NodeFigures],
    own_cpu: Option<f64>,
}

fn print_report(report: &Report<'_>) {
    let (config, flood) = (&report.args.config, report.flood);
    println!(
        "whois-goose flood, {NODES}-node flock ({}), aimed at {:?}: {} sources \
         (127.0.0.10..) on {} threads, batches of {}, rate {}, nice {}, {:.1} s",
        report.args.timing,
        report.args.aim,
        config.sources,
        config.threads,
        config.batch,
        config
            .rate
            .map_or("as fast as possible".to_owned(), |r| format!("{r}/s")),
        config.nice,
        flood.elapsed.as_secs_f64()
    );
    println!();
    println!("| figure | value |");
    println!("| --- | ---: |");
    println!("| offered (sent) | {:.0} datagrams/s |", flood.sent_per_s());
    println!("| sendmmsg errors | {} |", flood.send_errors);
    println!(
        "| replies received | {:.0}/s ({} in all) |",
        flood.replies_per_s(),
        flood.replies
    );
    println!(
        "| bytes out / bytes in (amplification) | {:.3} |",
        flood.amplification()
    );
    let (min, max) = min_max(&flood.replies_per_source);
    println!("| replies per source, min – max | {min} – {max} |");
    println!(
        "| term changes (during + {:?} after) | {} (terms seen: {:?}) |",
        AFTER_FOR,
        report.after.term_changes(),
        report.after.terms
    );
    println!(
        "| goose changes | {} (geese seen: {:?}) |",
        report.after.goose_changes(),
        report.after.geese
    );
    let during = report.during;
    let flood_samples = during.samples.saturating_sub(report.baseline.samples);
    println!(
        "| status samples during the flood | {flood_samples} ({} node replies missing, \
         {} without a goose) |",
        during.missing.saturating_sub(report.baseline.missing),
        during.gooseless.saturating_sub(report.baseline.gooseless)
    );
    if let Some(cpu) = report.own_cpu {
        println!("| bench process CPU (flooders, watcher) | {cpu:.0} % |");
    }
    println!();
    let limited = during.has("drop_rate_limited");
    println!(
        "| node | role | socket drops (buffer full) | peer frames in/s before | \
         during | CPU % | drop_rate_limited |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for (index, node) in report.nodes.iter().enumerate() {
        let rate = |watched: &Watched, elapsed: Duration| {
            watched
                .delta(index, "peer_frames_in")
                .map_or("-".to_owned(), |frames| {
                    format!("{:.0}", per_second(frames, elapsed))
                })
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            index + 1,
            if node.goose { "goose" } else { "duck" },
            node.drops.map_or("-".to_owned(), |d| d.to_string()),
            rate(report.baseline, report.baseline_elapsed),
            rate(during, report.flood_elapsed),
            node.cpu_percent
                .map_or("-".to_owned(), |c| format!("{c:.0}")),
            if limited {
                during
                    .delta(index, "drop_rate_limited")
                    .map_or("-".to_owned(), |d| d.to_string())
            } else {
                "(absent)".to_owned()
            },
        );
    }
}

fn min_max(values: &[u64]) -> (u64, u64) {
    let min = values.iter().copied().min().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    (min, max)
}

/// `ticks` of CPU over `elapsed`, in percent of one core.
fn percent(ticks: u64, elapsed: Duration) -> f64 {
    let ticks_per_second = procs::clock_ticks_per_second() as f64;
    100.0 * ticks as f64 / ticks_per_second / elapsed.as_secs_f64().max(1e-9)
}

/// The CPU ticks node `index` has used so far.
fn cpu_ticks(flock: &Flock, index: usize) -> Option<u64> {
    procs::cpu_ticks(flock.pid(index)?)
}
