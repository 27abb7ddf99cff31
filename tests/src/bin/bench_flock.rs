//! `bench_flock`: failover, cold start, probe throughput and idle cost, measured on real `goose` processes on
//! 127.0.0.1, printed as a markdown table, with the failover CDF drawn in the style of the
//! Raft paper's Figure 16.
//!
//! ```text
//! cargo run --release -p flock-tests --bin bench_flock -- \
//!     [--runs 100] [--timing default|fast|both] [--cold-runs 10] [--probe-ms 5] \
//!     [--plot docs/failover-cdf.svg]
//! ```
//!
//! - **failover**: a 5-node flock; `runs` times: wait until it is stable (every node agrees
//!   on one goose and its term for an election timeout), wait a random part of a heartbeat,
//!   `kill -9` the goose, probe the four others every 5 ms (`--probe-ms`) and take the time
//!   from the kill to the first `goose` answer; restart the killed node on its data dir.
//!   The figure is quantised to the probe period: with 12–24 ms timeouts, 5 ms is coarse,
//!   so `--timing fast --probe-ms 1` gives the finer curve.
//! - **cold start**: spawn of the first node to the first `goose` answer, fresh data dirs.
//! - **whois throughput**: load threads that each keep 64 probes in flight
//!   ([`flock_tests::load`]: `sendmmsg`/`recvmmsg` batches) against the goose for 3 s,
//!   while the flock is watched for a term change; then the same threads against a minimal
//!   echo server with the node's batching, written in the bench, in the same run: this
//!   machine's limit, which the node's figure is a fraction of (target ≥ 0.9). Clients that
//!   wait for each answer before the next probe measure round trips, not the node: they
//!   bounded the figure this bench used to print (112,000/s with 8 of them).
//! - **idle CPU and RSS** per node: `/proc/<pid>/stat` utime + stime and
//!   `/proc/<pid>/schedstat` run time over 10 s without probes; `VmRSS` of
//!   `/proc/<pid>/status`. Over the same 10 s, a [`HeartbeatFloor`] sends a goose's
//!   heartbeats with nothing else, to followers in processes of their own (this binary
//!   run again): the least an idle goose can cost on this machine.
//!
//! Every probe round also counts double-goose observations (two nodes answering `goose`
//! in one round), term regressions and terms with two geese: all must be zero.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flock_tests::load::{self, EchoServer, HeartbeatFloor};
use flock_tests::procs::{self, load_average, percentile, Flock, OnViolation, Timing, Watch};
use goose_core::rand::Rand;
use plotters::prelude::*;

/// Nodes in the benchmarked flock.
const NODES: usize = 5;
/// How often the survivors are probed after a kill, by default. The measured
/// failover is quantised to it: a goose that appears between two probes is seen at the next.
const PROBE_EVERY_MS: u64 = 5;
/// A failover not seen within this is counted as missed.
const FAILOVER_WITHIN: Duration = Duration::from_secs(5);
/// How long a flock gets to become stable before a kill.
const STABLE_WITHIN: Duration = Duration::from_secs(10);
/// How long the load threads probe the goose, and the echo server, each.
const FLOOD_FOR: Duration = Duration::from_secs(3);
/// Rounds that time is cut into, alternating between the goose and the echo server.
const LOAD_ROUNDS: u32 = 5;
/// Load thread counts tried for the throughput figure.
const LOAD_THREADS: [usize; 2] = [1, 2];
/// The node's answers as a fraction of the echo server's at least.
const THROUGHPUT_RATIO_MIN: f64 = 0.9;
/// How long idle CPU is sampled. Longer than a node takes to give back what its last
/// change of role ran (5 s after it), so the RSS read at the end is the settled one.
const IDLE_FOR: Duration = Duration::from_secs(10);

struct Args {
    runs: usize,
    cold_runs: usize,
    timings: Vec<(&'static str, Timing)>,
    plot: PathBuf,
    probe_every: Duration,
}

const USAGE: &str = "usage: bench_flock [--runs N] [--cold-runs N] \
                     [--timing default|fast|both] [--probe-ms N] [--plot FILE.svg]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        runs: 100,
        cold_runs: 10,
        timings: vec![("default", Timing::DEFAULT), ("fast", Timing::FAST)],
        plot: Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/failover-cdf.svg"),
        probe_every: Duration::from_millis(PROBE_EVERY_MS),
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let mut value = || words.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--cold-runs" => {
                args.cold_runs = value()?.parse().map_err(|e| format!("--cold-runs: {e}"))?;
            }
            "--timing" => {
                args.timings = match value()?.as_str() {
                    "default" => vec![("default", Timing::DEFAULT)],
                    "fast" => vec![("fast", Timing::FAST)],
                    "both" => vec![("default", Timing::DEFAULT), ("fast", Timing::FAST)],
                    other => return Err(format!("--timing {other}: default, fast or both")),
                }
            }
            "--plot" => args.plot = PathBuf::from(value()?),
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

fn main() -> ExitCode {
    if std::env::var_os(FOLLOWER).is_some() {
        return match load::follow_heartbeats() {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("bench_flock: heartbeat follower: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("bench_flock: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let load_before = load_average();
    let mut results = Vec::new();
    for &(name, timing) in &args.timings {
        eprintln!("== {name} timing ({timing})");
        results.push(bench_timing(name, timing, &args));
    }
    let load_after = load_average();
    print_report(&results, &args, &load_before, &load_after);
    if let Err(error) = plot(&results, args.probe_every, &args.plot) {
        eprintln!("bench_flock: plot {}: {error}", args.plot.display());
        return ExitCode::FAILURE;
    }
    println!("\nplot: {}", args.plot.display());
    let safe = results.iter().all(|r| r.watch_clean());
    if safe {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench_flock: a safety promise was broken (see the table)");
        ExitCode::FAILURE
    }
}

/// Everything measured for one timing.
struct TimingResult {
    name: &'static str,
    timing: Timing,
    cold_starts: Vec<Duration>,
    failovers: Vec<Duration>,
    missed_failovers: usize,
    unstable: usize,
    idle: Vec<Idle>,
    /// The [`HeartbeatFloor`]'s CPU %, measured beside `idle`.
    idle_floor: Option<f64>,
    /// Throughput per load thread count.
    flood: Vec<Throughput>,
    watch: Watch,
}

impl TimingResult {
    fn watch_clean(&self) -> bool {
        self.watch.double_geese == 0
            && self.watch.term_regressions == 0
            && self.watch.two_geese_in_a_term == 0
            && self.watch.malformed == 0
            && self.flood.iter().all(|t| !t.changed)
    }
}

/// Flags that turn the nodes' reply rate limits off: these figures are of the node's path
/// (load from one address would otherwise be held to the per-source limit; `bench_flood`
/// measures the limits).
const UNLIMITED: [&str; 4] = ["--reply-rate", "0", "--reply-rate-total", "0"];

fn bench_timing(name: &'static str, timing: Timing, args: &Args) -> TimingResult {
    let mut watch = Watch::default();
    let mut cold_starts = Vec::new();
    for run in 0..args.cold_runs {
        let flock = Flock::start_with(NODES, timing, &UNLIMITED, OnViolation::Count);
        let all = flock.all();
        match flock.first_goose(&all, flock.started, args.probe_every, FAILOVER_WITHIN) {
            Some((_, _, after)) => cold_starts.push(after),
            None => eprintln!("cold start {run}: no goose within {FAILOVER_WITHIN:?}"),
        }
        add_watch(&mut watch, &flock.watch());
    }
    eprintln!("cold start: {}", summary(&cold_starts));

    let mut flock = Flock::start_with(NODES, timing, &UNLIMITED, OnViolation::Count);
    let mut rand = Rand::new(seed());
    let (mut failovers, mut missed, mut unstable) = (Vec::new(), 0, 0);
    for run in 0..args.runs {
        let Some((goose, _)) = flock.wait_stable(STABLE_WITHIN) else {
            unstable += 1;
            eprintln!("run {run}: flock not stable within {STABLE_WITHIN:?}");
            continue;
        };
        // Kill at a random phase of the heartbeat.
        let jitter = rand.range_inclusive(0, timing.heartbeat_ms * 1000);
        thread::sleep(Duration::from_micros(jitter));
        let killed = flock.kill9(goose);
        let survivors: Vec<usize> = flock.all().into_iter().filter(|&i| i != goose).collect();
        match flock.first_goose(&survivors, killed, args.probe_every, FAILOVER_WITHIN) {
            Some((_, _, after)) => failovers.push(after),
            None => missed += 1,
        }
        flock.restart(goose);
        if (run + 1) % 10 == 0 {
            eprintln!("{} kills: {}", run + 1, summary(&failovers));
        }
    }
    let (idle, idle_floor) = match flock.wait_stable(STABLE_WITHIN) {
        Some((goose, _)) => measure_idle(&flock, goose, timing),
        None => (Vec::new(), None),
    };
    let flood = if timing == Timing::DEFAULT {
        LOAD_THREADS
            .iter()
            .filter_map(|&threads| throughput(&flock, threads))
            .collect()
    } else {
        Vec::new()
    };
    add_watch(&mut watch, &flock.watch());
    TimingResult {
        name,
        timing,
        cold_starts,
        failovers,
        missed_failovers: missed,
        unstable,
        idle,
        idle_floor,
        flood,
        watch,
    }
}

fn add_watch(total: &mut Watch, more: &Watch) {
    total.rounds += more.rounds;
    total.double_geese += more.double_geese;
    total.term_regressions += more.term_regressions;
    total.two_geese_in_a_term += more.two_geese_in_a_term;
    total.malformed += more.malformed;
}

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// The goose's answers per second to `threads` load threads, and the echo server's.
struct Throughput {
    threads: usize,
    /// The goose's answers per second.
    node: f64,
    /// Its probes without a `goose` answer.
    lost: u64,
    /// Whether the term or the goose changed meanwhile.
    changed: bool,
    /// The echo server's answers per second to the same load.
    echo: f64,
}

impl Throughput {
    fn ratio(&self) -> f64 {
        if self.echo > 0.0 {
            self.node / self.echo
        } else {
            0.0
        }
    }
}

/// The goose's answers and the echo server's to `threads` load threads, measured in
/// [`LOAD_ROUNDS`] alternating rounds of each, so that a change of the machine's load
/// during the measurement weighs on both; each figure is the median round.
fn throughput(flock: &Flock, threads: usize) -> Option<Throughput> {
    let (goose, _) = flock.wait_stable(STABLE_WITHIN)?;
    let all = flock.all();
    let before = flock
        .probe_round(&all, Duration::from_millis(50))
        .agreed(&all)?;
    let port = flock.port(goose);
    let echo_server = match EchoServer::start() {
        Ok(echo) => echo,
        Err(error) => {
            eprintln!("echo server: {error}");
            return None;
        }
    };
    let round_for = FLOOD_FOR / LOAD_ROUNDS;
    let (mut nodes, mut echoes, mut lost, mut changed) = (Vec::new(), Vec::new(), 0, false);
    for _ in 0..LOAD_ROUNDS {
        let started = Instant::now();
        let load = thread::spawn(move || load::windowed_clients(port, threads, round_for));
        while started.elapsed() < round_for {
            // Replies may be slow under the load: a missing one is not a change, another
            // goose or term is.
            let round = flock.probe_round(&all, Duration::from_millis(100));
            if round.geese().iter().any(|&g| g != goose)
                || round.answers().any(|(_, probe)| probe.term != before.1)
            {
                changed = true;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let (counts, elapsed) = match load.join() {
            Ok(Ok(measured)) => measured,
            Ok(Err(error)) => {
                eprintln!("load threads: {error}");
                return None;
            }
            Err(_) => {
                eprintln!("a load thread panicked");
                return None;
            }
        };
        lost += counts.lost;
        nodes.push(counts.answers as f64 / elapsed.as_secs_f64());
        match load::windowed_clients(echo_server.port(), threads, round_for) {
            Ok((counts, elapsed)) => echoes.push(counts.answers as f64 / elapsed.as_secs_f64()),
            Err(error) => eprintln!("echo server: {error}"),
        }
    }
    let after = flock
        .probe_round(&all, Duration::from_millis(200))
        .agreed(&all);
    changed |= after != Some(before);
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(0.0)
    };
    let (node, echo) = (median(&mut nodes), median(&mut echoes));
    let measured = Throughput {
        threads,
        node,
        lost,
        changed,
        echo,
    };
    eprintln!(
        "whois load, {threads} thread(s) × {} in flight: goose {node:.0}/s ({lost} lost, \
         changed: {changed}), echo server {echo:.0}/s, ratio {:.2}",
        load::WINDOW,
        measured.ratio()
    );
    Some(measured)
}

// ---------------------------------------------------------------------------------------
// Idle CPU and memory
// ---------------------------------------------------------------------------------------

/// One node's idle figures.
struct Idle {
    goose: bool,
    /// CPU % from utime + stime (clock-tick resolution).
    cpu_ticks_percent: f64,
    /// CPU % from schedstat's run time (nanosecond resolution).
    cpu_percent: f64,
    rss_kib: u64,
}

fn run_nanos(pid: u32) -> Option<u64> {
    let schedstat = fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    schedstat.split(' ').next()?.parse().ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Set in the environment of the [`HeartbeatFloor`]'s followers: this binary run again.
const FOLLOWER: &str = "BENCH_FLOCK_HEARTBEAT_FOLLOWER";

/// The [`HeartbeatFloor`]'s followers, one process each, and their ports; killed by pid
/// when dropped.
struct Followers(Vec<(std::process::Child, u16)>);

impl Followers {
    fn start(count: usize) -> Option<Self> {
        let mut followers = Self(Vec::new());
        for _ in 0..count {
            let mut child = std::process::Command::new(std::env::current_exe().ok()?)
                .env(FOLLOWER, "1")
                .stdout(std::process::Stdio::piped())
                .spawn()
                .ok()?;
            let mut line = String::new();
            let stdout = child.stdout.take()?;
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).ok()?;
            let port = line.trim().parse().ok();
            followers.0.push((child, port.unwrap_or(0)));
            port?;
        }
        Some(followers)
    }

    fn ports(&self) -> Vec<u16> {
        self.0.iter().map(|(_, port)| *port).collect()
    }
}

impl Drop for Followers {
    fn drop(&mut self) {
        for (child, _) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The nodes' idle figures, and the [`HeartbeatFloor`]'s CPU % over the same window: the
/// heartbeats of a goose of as many nodes at the same interval, with nothing else.
fn measure_idle(flock: &Flock, goose: usize, timing: Timing) -> (Vec<Idle>, Option<f64>) {
    let ticks_per_second = procs::clock_ticks_per_second() as f64;
    let pids: Vec<u32> = flock.all().iter().filter_map(|&i| flock.pid(i)).collect();
    let followers = Followers::start(NODES - 1);
    let floor = followers.as_ref().and_then(|followers| {
        let interval = Duration::from_millis(timing.heartbeat_ms);
        HeartbeatFloor::start(interval, &followers.ports()).ok()
    });
    let floor_start = floor.as_ref().and_then(HeartbeatFloor::run_nanos);
    let start: Vec<_> = pids
        .iter()
        .map(|&p| (procs::cpu_ticks(p), run_nanos(p)))
        .collect();
    let started = Instant::now();
    thread::sleep(IDLE_FOR);
    let seconds = started.elapsed().as_secs_f64();
    let floor_percent = floor
        .as_ref()
        .and_then(HeartbeatFloor::run_nanos)
        .zip(floor_start)
        .map(|(end, start)| end.saturating_sub(start) as f64 / 1e9 / seconds * 100.0);
    drop(floor);
    drop(followers);
    let idle = pids
        .iter()
        .zip(start)
        .enumerate()
        .filter_map(|(index, (&pid, (ticks, nanos)))| {
            let ticks = procs::cpu_ticks(pid)? - ticks?;
            let nanos = run_nanos(pid)? - nanos?;
            Some(Idle {
                goose: index == goose,
                cpu_ticks_percent: ticks as f64 / ticks_per_second / seconds * 100.0,
                cpu_percent: nanos as f64 / 1e9 / seconds * 100.0,
                rss_kib: rss_kib(pid)?,
            })
        })
        .collect();
    (idle, floor_percent)
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn sorted_ms(samples: &[Duration]) -> Vec<f64> {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

fn fmt_ms(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.1} ms"))
}

fn summary(samples: &[Duration]) -> String {
    let ms = sorted_ms(samples);
    format!(
        "n={} p50 {} p90 {} p99 {} max {}",
        ms.len(),
        fmt_ms(percentile(&ms, 50.0)),
        fmt_ms(percentile(&ms, 90.0)),
        fmt_ms(percentile(&ms, 99.0)),
        fmt_ms(ms.last().copied())
    )
}

fn print_report(results: &[TimingResult], args: &Args, before: &str, after: &str) {
    println!("\n## bench_flock\n");
    println!(
        "{NODES} `goose node` processes on 127.0.0.1, {} kills per timing, {} cold starts, \
         probes every {} ms; {} cores; load average {before} before, {after} after.\n",
        args.runs,
        args.cold_runs,
        args.probe_every.as_millis(),
        thread::available_parallelism().map_or(0, |n| n.get())
    );
    let header: Vec<String> = results
        .iter()
        .map(|r| format!("{} ({})", r.name, r.timing))
        .collect();
    println!("| figure | {} | target |", header.join(" | "));
    println!("| --- |{} --- |", " --- |".repeat(results.len()));
    let row = |figure: &str, cell: &dyn Fn(&TimingResult) -> String, target: &str| {
        let cells: Vec<String> = results.iter().map(cell).collect();
        println!("| {figure} | {} | {target} |", cells.join(" | "));
    };
    let failover = |p: f64| move |r: &TimingResult| fmt_ms(percentile(&sorted_ms(&r.failovers), p));
    row(
        "failover p50",
        &failover(50.0),
        "≤ 250 ms (default), ≤ 40 ms (fast)",
    );
    row("failover p90", &failover(90.0), "");
    row("failover p99", &failover(99.0), "≤ 450 ms (default)");
    row(
        "failover max",
        &|r| fmt_ms(sorted_ms(&r.failovers).last().copied()),
        "",
    );
    row(
        "kills measured / missed / not stable",
        &|r| {
            format!(
                "{} / {} / {}",
                r.failovers.len(),
                r.missed_failovers,
                r.unstable
            )
        },
        "all / 0 / 0",
    );
    row(
        "cold start to first goose (median, min–max)",
        &|r| {
            let ms = sorted_ms(&r.cold_starts);
            format!(
                "{} ({}–{})",
                fmt_ms(percentile(&ms, 50.0)),
                fmt_ms(ms.first().copied()),
                fmt_ms(ms.last().copied())
            )
        },
        "",
    );
    let per_threads = |r: &TimingResult, cell: &dyn Fn(&Throughput) -> String| {
        let cells: Vec<String> = r.flood.iter().map(cell).collect();
        if cells.is_empty() {
            "–".to_owned()
        } else {
            cells.join(" / ")
        }
    };
    row(
        &format!(
            "whois answers/s of the goose, load threads of {} probes in flight ({} threads)",
            load::WINDOW,
            LOAD_THREADS.map(|t| t.to_string()).join(" / ")
        ),
        &|r| {
            per_threads(r, &|t| {
                let term = if t.changed { ", term CHANGED" } else { "" };
                format!("{:.0}{term}", t.node)
            })
        },
        "no term change",
    );
    row(
        "the same load against a minimal batched echo server (this machine's limit)",
        &|r| per_threads(r, &|t| format!("{:.0}", t.echo)),
        "",
    );
    row(
        "goose / echo server",
        &|r| per_threads(r, &|t| format!("{:.2}", t.ratio())),
        &format!("≥ {THROUGHPUT_RATIO_MIN}"),
    );
    row(
        "idle CPU per node (max; goose)",
        &|r| {
            let max = r.idle.iter().map(|i| i.cpu_percent).fold(0.0, f64::max);
            let goose = r
                .idle
                .iter()
                .find(|i| i.goose)
                .map_or(0.0, |i| i.cpu_percent);
            let ticks = r
                .idle
                .iter()
                .map(|i| i.cpu_ticks_percent)
                .fold(0.0, f64::max);
            format!("{max:.2} %; {goose:.2} % (stat: ≤ {ticks:.1} %)")
        },
        "< 1 %",
    );
    row(
        "idle CPU of the heartbeats alone: a minimal loop, same interval and peers (this \
         machine's floor)",
        &|r| {
            r.idle_floor
                .map_or("–".into(), |floor| format!("{floor:.2} %"))
        },
        "",
    );
    row(
        "RSS per node (max)",
        &|r| {
            let max = r.idle.iter().map(|i| i.rss_kib).max().unwrap_or(0);
            format!("{:.2} MiB", max as f64 / 1024.0)
        },
        "< 4 MiB",
    );
    row(
        "probe rounds / double-goose rounds",
        &|r| format!("{} / {}", r.watch.rounds, r.watch.double_geese),
        "– / 0",
    );
    row(
        "term regressions / terms with two geese",
        &|r| {
            format!(
                "{} / {}",
                r.watch.term_regressions, r.watch.two_geese_in_a_term
            )
        },
        "0 / 0",
    );
    for r in results.iter().filter(|r| !r.flood.is_empty()) {
        println!("\nwhois load on the goose ({}):\n", r.name);
        println!(
            "| load threads | goose answers/s | lost | term or goose changed | echo server \
             answers/s | ratio |"
        );
        println!("| --- | ---: | ---: | --- | ---: | ---: |");
        for t in &r.flood {
            println!(
                "| {} | {:.0} | {} | {} | {:.0} | {:.2} |",
                t.threads,
                t.node,
                t.lost,
                t.changed,
                t.echo,
                t.ratio()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Plot
// ---------------------------------------------------------------------------------------

/// The CDF of each timing's failovers, one panel per timing, as in the Raft paper's
/// Figure 16 (x: time without a goose, y: cumulative percent of kills).
fn plot(
    results: &[TimingResult],
    probe_every: Duration,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder)?;
    }
    let panels_count = results.len().max(1);
    let root = SVGBackend::new(path, (760, 300 * panels_count as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((panels_count, 1));
    let colors = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];
    for ((panel, result), color) in panels.iter().zip(results).zip(colors.iter().cycle()) {
        let ms = sorted_ms(&result.failovers);
        let x_max = ms.last().copied().unwrap_or(1.0) * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "kill -9 the goose of 5: election timeout {}–{} ms, heartbeat {} ms, \
                     probes every {} ms",
                    result.timing.election_timeout_ms_min,
                    result.timing.election_timeout_ms_max,
                    result.timing.heartbeat_ms,
                    probe_every.as_millis()
                ),
                ("sans-serif", 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..x_max, 0.0..100.0)?;
        chart
            .configure_mesh()
            .x_desc("time without a goose (ms)")
            .y_desc("cumulative %")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        // A step line: up by 100/n at each sample.
        let n = ms.len() as f64;
        let mut points = vec![(0.0, 0.0)];
        for (index, &x) in ms.iter().enumerate() {
            points.push((x, index as f64 / n * 100.0));
            points.push((x, (index + 1) as f64 / n * 100.0));
        }
        let label = format!(
            "{} kills: p50 {} p99 {}",
            ms.len(),
            fmt_ms(percentile(&ms, 50.0)),
            fmt_ms(percentile(&ms, 99.0))
        );
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
