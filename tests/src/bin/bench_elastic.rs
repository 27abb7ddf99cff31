//! `bench_elastic`: the elastic flock's figures (handoffs, rolling restarts, heartbeat
//! traffic) on real `goose` processes over loopback, as
//! a markdown table.
//!
//! ```text
//! cargo run --release -p flock-tests --bin bench_elastic -- [--handoffs N] [--rolling N]
//!     [--learners N] [--measure-secs S] [--goose <path>]
//! ```
//!
//! - raw `fdatasync`: what one state save costs on the folder the flocks keep their data
//!   dirs in (`$TMPDIR`, else `/tmp`): a 4 KiB `pwrite` into a file of two slots, then
//!   `fdatasync`, as the node saves, [`SYNC_SAMPLES`] times before the handoffs and as
//!   many after, in the same run, so the handoff figures can be read against it;
//! - planned handoff: from sending `ctl transfer` to the goose (or SIGTERM to it) to the
//!   first `goose` answer from another node, probed every [`PROBE_PERIOD`]; p50, p99, max
//!   over `--handoffs` handoffs (default 100) on a flock of 5 at the default timing, and
//!   the target: a `ctl transfer` handoff waits for two saves, one after the other, so
//!   p50 ≤ 2 × the `fdatasync` p50 + 1 ms (at most 2 ms on tmpfs);
//! - goose gap over a full rolling restart of 5 nodes (`goose cluster` + SIGHUP), probed
//!   every [`PROBE_PERIOD`]: the longest and the total time between two goose answers
//!   from different nodes, or from one node that answered duck in between, per restart;
//!   and, as the soak checks it, goose answers that break linearizability: to a probe
//!   sent after a goose of a higher term had answered, or from two nodes in one term;
//! - heartbeat traffic and CPU of the goose: 5 voters, then 5 voters + `--learners`
//!   learners (default 40), over `--measure-secs` seconds (default 10) each: datagrams/s
//!   and bytes/s out of the goose (its `ctl status` counters) and its CPU % (/proc).
//!
//! It runs the `goose` binary next to itself (building it if missing, as every process test
//! does: [`procs::goose_binary`]) unless `--goose` names another. Every probe round of the
//! flocks it starts is checked as in the tests, and a broken promise ends the bench.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::ptr;
use std::thread;
use std::time::{Duration, Instant};

use flock_tests::procs::{self, Cluster, Flock, OnViolation, Probe, Timing};

/// The period of probe batches (one `whois-goose` to every node) while timing: the
/// resolution of every figure below.
const PROBE_PERIOD: Duration = Duration::from_micros(250);
/// The longest a single handoff may take before the bench gives up on it.
const HANDOFF_MAX: Duration = Duration::from_secs(5);
/// The longest a rolling restart of 5 may take.
const ROLLING_MAX: Duration = Duration::from_secs(60);
/// Generous bound for a flock to settle (a goose every node follows).
const SETTLE: Duration = Duration::from_secs(30);
/// The pause between two polls of a wait.
const POLL: Duration = Duration::from_millis(10);
/// Largest reply read.
const REPLY_SIZE_MAX: usize = 4096;
/// Loopback addresses the prober sends from, one per round in turn: each node then gets
/// 4,000 / 8 = 500 probes/s from each, under its default limit of 1,000 answers/s per
/// address.
const PROBE_SOURCES: u8 = 8;
/// The first of them: 127.0.0.20.
const PROBE_SOURCE_FIRST: u8 = 20;
/// Probes remembered per socket and node while unanswered (a node down for the 8 ms
/// since only makes the send times the prober assumes earlier, never later).
const UNANSWERED_MAX: usize = 32;
/// `fdatasync` samples taken before the handoffs, and again after.
const SYNC_SAMPLES: usize = 200;
/// Bytes of one slot of a state file, as the node writes it.
const SLOT_SIZE: usize = 4096;
/// What the network and the processes may add to the two saves of a handoff.
const HANDOFF_SLACK: Duration = Duration::from_millis(1);
/// The `ctl transfer` handoff p50 on tmpfs, where a sync costs next to nothing.
const HANDOFF_TMPFS_P50_MAX: Duration = Duration::from_millis(2);

struct Args {
    handoffs: usize,
    rolling: usize,
    learners: u16,
    measure: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        handoffs: 100,
        rolling: 3,
        learners: 40,
        measure: Duration::from_secs(10),
    };
    let mut words = std::env::args().skip(1);
    while let Some(flag) = words.next() {
        let value = words
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} {value}: not a number"))
        };
        match flag.as_str() {
            "--handoffs" => {
                args.handoffs = usize::try_from(number()?).map_err(|e| e.to_string())?
            }
            "--rolling" => args.rolling = usize::try_from(number()?).map_err(|e| e.to_string())?,
            "--learners" => args.learners = u16::try_from(number()?).map_err(|e| e.to_string())?,
            "--measure-secs" => args.measure = Duration::from_secs(number()?),
            "--goose" => {
                let goose = PathBuf::from(value);
                if !goose.is_file() {
                    return Err(format!("--goose {}: no such file", goose.display()));
                }
                procs::use_goose_binary(&goose);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if args.learners > 59 {
        return Err("--learners: at most 59 (64 members)".to_owned());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("bench_elastic: {error}");
            return ExitCode::from(2);
        }
    };
    let mut rows = Vec::new();
    let mut syncs = sync_latencies(SYNC_SAMPLES);
    let (ctl_rows, ctl_p50) = handoffs(&args, Trigger::Ctl);
    let (sigterm_rows, _) = handoffs(&args, Trigger::Sigterm);
    syncs.extend(sync_latencies(SYNC_SAMPLES));
    syncs.sort_unstable();
    let sync_p50 = percentile(&syncs, 50.0);
    rows.push((
        format!(
            "raw `fdatasync` of a 4 KiB slot in {} (n={}, before and after the handoffs): \
             p50 / p99",
            std::env::temp_dir().display(),
            syncs.len()
        ),
        format!(
            "{} / {}",
            millis(sync_p50),
            millis(percentile(&syncs, 99.0))
        ),
    ));
    rows.extend(ctl_rows);
    let bound = (2 * sync_p50 + HANDOFF_SLACK).min(if on_tmpfs() {
        HANDOFF_TMPFS_P50_MAX
    } else {
        Duration::MAX
    });
    rows.push((
        "`ctl transfer` handoff p50 target: 2 × `fdatasync` p50 + 1 ms (tmpfs: at most 2 ms)"
            .to_owned(),
        format!(
            "{} ≤ {}: {}",
            millis(ctl_p50),
            millis(bound),
            if ctl_p50 <= bound { "met" } else { "MISSED" }
        ),
    ));
    rows.extend(sigterm_rows);
    rows.extend(rolling(&args));
    rows.extend(traffic(&args));
    println!();
    println!("| measurement | value |");
    println!("| --- | ---: |");
    for (what, value) in rows {
        println!("| {what} | {value} |");
    }
    ExitCode::SUCCESS
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Ctl,
    Sigterm,
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// The nearest-rank percentile `p` of sorted `durations`.
fn percentile(durations: &[Duration], p: f64) -> Duration {
    let ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    procs::percentile(&ms, p).map_or(Duration::ZERO, |ms| Duration::from_secs_f64(ms / 1000.0))
}

/// A flock of 5 at the default timing; a broken safety promise in a probe round panics.
fn five() -> Flock {
    Flock::start_with(5, Timing::DEFAULT, &[], OnViolation::Panic)
}

/// Whether the temporary folder the flocks use is on tmpfs (`/proc/mounts`).
fn on_tmpfs() -> bool {
    let folder = std::env::temp_dir();
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    // The longest mount point that holds the folder is the one it is on.
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            folder
                .starts_with(point)
                .then_some((point.len(), kind == "tmpfs"))
        })
        .max()
        .is_some_and(|(_, tmpfs)| tmpfs)
}

/// `samples` timings of one state save's storage cost in the temporary folder: a 4 KiB
/// `pwrite` into alternate halves of an 8 KiB file, then `fdatasync`, as the node saves.
fn sync_latencies(samples: usize) -> Vec<Duration> {
    use std::os::unix::fs::FileExt;
    let folder = procs::TempDir::new("bench-sync");
    let path = folder.path().join("state");
    let file = std::fs::File::create(&path).expect("sync bench file");
    file.write_all_at(&[0; 2 * SLOT_SIZE], 0).expect("write");
    file.sync_all().expect("sync");
    let slot = [0x5A; SLOT_SIZE];
    (0..samples)
        .map(|index| {
            let offset = u64::try_from((index % 2) * SLOT_SIZE).unwrap_or(0);
            let started = Instant::now();
            file.write_all_at(&slot, offset).expect("pwrite");
            file.sync_data().expect("fdatasync");
            started.elapsed()
        })
        .collect()
}

/// Times `args.handoffs` handoffs on a flock of 5 at the default timing: the rows, and
/// the p50.
fn handoffs(args: &Args, trigger: Trigger) -> (Vec<(String, String)>, Duration) {
    let mut flock = five();
    let all = flock.all();
    let mut times = Vec::with_capacity(args.handoffs);
    let label = match trigger {
        Trigger::Ctl => "`ctl transfer`",
        Trigger::Sigterm => "SIGTERM",
    };
    for round in 0..args.handoffs {
        let (goose, _) = flock.wait_agreed(&all, SETTLE);
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != goose).collect();
        let ports = flock.ports(&others);
        let control = UdpSocket::bind("127.0.0.1:0").expect("control socket");
        let started = Instant::now();
        match trigger {
            Trigger::Ctl => {
                let _ = control.send_to(b"ctl transfer", flock.addr(goose));
            }
            Trigger::Sigterm => flock.signal(goose, libc::SIGTERM),
        }
        let Some(took) = first_goose_answer(&ports, started) else {
            eprintln!("{label} handoff {round}: no new goose within {HANDOFF_MAX:?}");
            continue;
        };
        times.push(took);
        if trigger == Trigger::Sigterm {
            let _ = flock.wait_exit(goose, SETTLE);
            flock.restart_from_data_dir(goose, &[]);
            flock.wait_listening(&[goose]);
        }
    }
    times.sort_unstable();
    eprintln!("{label}: {} handoffs timed", times.len());
    let p50 = percentile(&times, 50.0);
    let rows = vec![
        (
            format!(
                "handoff from {label} to the new goose's first goose answer, p50 (n={})",
                times.len()
            ),
            millis(p50),
        ),
        (
            format!("handoff from {label}, p99"),
            millis(percentile(&times, 99.0)),
        ),
        (
            format!("handoff from {label}, max"),
            millis(times.last().copied().unwrap_or_default()),
        ),
    ];
    (rows, p50)
}

/// Probes `ports` until one answers goose; the time since `started` of that answer.
fn first_goose_answer(ports: &[u16], started: Instant) -> Option<Duration> {
    let mut answered = None;
    probe_stream(ports, PROBE_PERIOD, HANDOFF_MAX, |_, at, probe| {
        if probe.goose {
            answered = Some(at.saturating_duration_since(started));
        }
        probe.goose
    });
    answered
}

/// Sends `whois-goose` to every port each `period`, and hands every reply to `on_reply`
/// with the time its probe was sent (at the latest: the oldest probe to that node from that
/// socket still unanswered; a node answers in order, and a probe it never answered only
/// makes the time earlier) and its arrival time, until `on_reply` returns `true` (then
/// `true`) or `max` passes (then `false`).
///
/// Each round goes out from the next of [`PROBE_SOURCES`] sockets on as many loopback
/// addresses, so that no node sees more than its default per-address reply limit from one
/// address (a node answers 1,000 probes/s per address: at 250 µs, one address would be
/// refused three probes in four). Between rounds the prober waits in `ppoll`, whose
/// timeout is exact to microseconds (a socket's receive timeout is rounded up to the
/// kernel's tick, milliseconds), and reads replies as they come, so a node that does not
/// answer delays nothing and the prober sleeps between datagrams.
fn probe_stream(
    ports: &[u16],
    period: Duration,
    max: Duration,
    mut on_reply: impl FnMut(Instant, Instant, &Probe) -> bool,
) -> bool {
    // Per socket and port, the send times of the probes not answered yet, oldest first.
    let mut unanswered: Vec<Vec<VecDeque<Instant>>> =
        vec![vec![VecDeque::new(); ports.len()]; usize::from(PROBE_SOURCES)];
    let sockets: Vec<UdpSocket> = (0..PROBE_SOURCES)
        .map(|index| {
            let address = Ipv4Addr::new(127, 0, 0, PROBE_SOURCE_FIRST + index);
            let socket = UdpSocket::bind((address, 0)).expect("probe socket");
            socket.set_nonblocking(true).expect("non-blocking");
            socket
        })
        .collect();
    let mut polled: Vec<libc::pollfd> = sockets
        .iter()
        .map(|socket| libc::pollfd {
            fd: socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let started = Instant::now();
    let mut next_send = started;
    let mut round = 0;
    let mut buffer = [0u8; REPLY_SIZE_MAX];
    while started.elapsed() < max {
        let now = Instant::now();
        if now >= next_send {
            let index = round % sockets.len();
            round += 1;
            for (sent, &port) in unanswered[index].iter_mut().zip(ports) {
                let _ = sockets[index].send_to(b"whois-goose", (Ipv4Addr::LOCALHOST, port));
                if sent.len() == UNANSWERED_MAX {
                    sent.pop_front();
                }
                sent.push_back(now);
            }
            // Never more than one batch behind: a stalled prober does not burst.
            next_send = (next_send + period).max(now);
            continue;
        }
        let wait = next_send.saturating_duration_since(now);
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::c_long::try_from(wait.as_nanos()).unwrap_or(0),
        };
        let count = libc::nfds_t::try_from(polled.len()).unwrap_or(0);
        // SAFETY: ppoll reads `count` pollfds from a live vector it may write revents
        // into, and a live timespec; no signal mask is passed.
        let ready = unsafe { libc::ppoll(polled.as_mut_ptr(), count, &timeout, ptr::null()) };
        if ready <= 0 {
            continue;
        }
        for (socket, unanswered) in sockets.iter().zip(&mut unanswered) {
            // Bounded: a socket holds what the nodes sent since the last look.
            while let Ok((size, from)) = socket.recv_from(&mut buffer) {
                let arrived = Instant::now();
                let probe = Probe::parse(&buffer[..size]).unwrap_or_else(|error| panic!("{error}"));
                let sent = ports
                    .iter()
                    .position(|&port| port == from.port())
                    .and_then(|node| unanswered[node].pop_front())
                    .unwrap_or(started);
                if on_reply(sent, arrived, &probe) {
                    return true;
                }
            }
        }
    }
    false
}

/// Rolling restarts of a 5-node `goose cluster`, each triggered by SIGHUP.
fn rolling(args: &Args) -> Vec<(String, String)> {
    let root = procs::TempDir::new("bench-rolling");
    let mut cluster = Cluster::start(5, Timing::DEFAULT, root.path(), &[]);
    let ports = cluster.ports.clone();
    let mut rows = Vec::new();
    let (mut gaps_max, mut gaps_total, mut durations) = (Vec::new(), Vec::new(), Vec::new());
    // The goose answer of the highest term so far: (term, node, arrival).
    let mut newest_goose: Option<(u64, u16, Instant)> = None;
    let mut broken = 0u64;
    for run in 0..args.rolling {
        if !wait_one_goose(&ports) {
            eprintln!("rolling restart {run}: no goose to start from");
            break;
        }
        while cluster.lines().try_recv().is_ok() {}
        if let Err(error) = cluster.signal(libc::SIGHUP) {
            eprintln!("rolling restart {run}: SIGHUP to the launcher: {error}");
            break;
        }
        let started = Instant::now();
        // (when, who) of the latest goose answer, and whether that node has answered duck
        // since: a gap is the stretch between two goose answers that either come from
        // different nodes or have the same node's duck answer between them (a stretch
        // without any answer is just a node not scheduled, on a loaded machine).
        let mut last_goose: Option<(Instant, u16)> = None;
        let mut lapsed = false;
        let (mut gap_max, mut gap_total) = (Duration::ZERO, Duration::ZERO);
        // The launcher may report the end (the last node back, following the new leader)
        // before the new leader's lease holds: probe on until a goose answers.
        let mut ended = false;
        let done = probe_stream(&ports, PROBE_PERIOD, ROLLING_MAX, |sent, at, probe| {
            match (probe.goose, last_goose) {
                (true, Some((since, id))) if id != probe.id || lapsed => {
                    let gap = at.saturating_duration_since(since);
                    gap_max = gap_max.max(gap);
                    gap_total += gap;
                }
                (false, Some((_, id))) if id == probe.id => lapsed = true,
                _ => {}
            }
            if probe.goose {
                // Linearizability, as the soak checks it: no goose of a lower term answers
                // a probe sent after a higher term's goose answered, and no term has two.
                match newest_goose {
                    Some((term, _, answered)) if probe.term < term && sent > answered => {
                        broken += 1;
                    }
                    Some((term, id, _)) if probe.term == term && probe.id != id => broken += 1,
                    _ => {}
                }
                if newest_goose.is_none_or(|(term, _, _)| probe.term > term) {
                    newest_goose = Some((probe.term, probe.id, at));
                }
                last_goose = Some((at, probe.id));
                lapsed = false;
            }
            while let Ok(line) = cluster.lines().try_recv() {
                if line.contains("rolling restart done") || line.contains("rolling restart stopped")
                {
                    eprintln!("rolling restart {run}: {line}");
                    ended = true;
                }
            }
            ended && probe.goose
        });
        if !done {
            eprintln!("rolling restart {run}: no end within {ROLLING_MAX:?}");
        }
        durations.push(started.elapsed());
        gaps_max.push(gap_max);
        gaps_total.push(gap_total);
    }
    if cluster.stop(SETTLE).is_none() {
        eprintln!("rolling restart: goose cluster did not stop within {SETTLE:?}");
    }
    let list = |values: &[Duration]| {
        values
            .iter()
            .map(|d| millis(*d))
            .collect::<Vec<_>>()
            .join(", ")
    };
    rows.push((
        format!(
            "rolling restart of 5 (`goose cluster` + SIGHUP): longest goose gap, per run (n={})",
            gaps_max.len()
        ),
        list(&gaps_max),
    ));
    rows.push((
        "rolling restart of 5: total time without a goose, per run".to_owned(),
        list(&gaps_total),
    ));
    rows.push((
        "rolling restart of 5: from SIGHUP to its end, per run".to_owned(),
        list(&durations),
    ));
    rows.push((
        "rolling restart of 5: goose answers to a probe sent after a higher term's goose \
         answered, or from two nodes in one term"
            .to_owned(),
        broken.to_string(),
    ));
    rows
}

fn wait_one_goose(ports: &[u16]) -> bool {
    procs::eventually(SETTLE, POLL, || {
        let round = procs::probe(ports, Duration::from_millis(50));
        round.answers().count() == ports.len() && round.geese().len() == 1
    })
}

/// Heartbeat traffic and CPU of the goose, 5 voters alone and with learners.
fn traffic(args: &Args) -> Vec<(String, String)> {
    let mut flock = five();
    let voters = flock.all();
    let (goose, _) = flock.wait_agreed(&voters, SETTLE);
    let mut rows = measure(&flock, goose, args.measure, "5 voters");
    let started = Instant::now();
    for id in 6..6 + args.learners {
        let via = voters[usize::from(id) % voters.len()];
        flock.spawn_joiner(id, procs::free_ports(1)[0], via, &[]);
    }
    let all = flock.all();
    flock.wait_listening(&all);
    let learners = usize::from(args.learners);
    let joined = procs::eventually(Duration::from_secs(120), POLL, || {
        let (goose, _) = flock.wait_agreed(&voters, SETTLE);
        let status = flock.try_status(goose).unwrap_or_default();
        procs::ids(&status, "learners").is_some_and(|ids| ids.len() == learners)
    });
    if !joined {
        eprintln!("traffic: the learners did not all join");
        return rows;
    }
    rows.push((
        format!("{learners} nodes joining at once (`--join`), until all are learners"),
        format!("{:.1} s", started.elapsed().as_secs_f64()),
    ));
    let (goose, _) = flock.wait_agreed(&all, SETTLE);
    rows.extend(measure(
        &flock,
        goose,
        args.measure,
        &format!("5 voters + {learners} learners"),
    ));
    rows
}

fn measure(flock: &Flock, goose: usize, window: Duration, label: &str) -> Vec<(String, String)> {
    let counters = |index: usize| {
        let status = flock.try_status(index).unwrap_or_default();
        let value = |key: &str| {
            status
                .get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (value("peer_frames_out"), value("peer_bytes_out"))
    };
    let pid = flock.pid(goose).unwrap_or(0);
    let (frames_0, bytes_0) = counters(goose);
    let cpu_0 = procs::cpu_ticks(pid).unwrap_or_default();
    let started = Instant::now();
    thread::sleep(window);
    let (frames_1, bytes_1) = counters(goose);
    let cpu_1 = procs::cpu_ticks(pid).unwrap_or_default();
    let elapsed = started.elapsed().as_secs_f64();
    let per_second = |n: u64| n as f64 / elapsed;
    let cpu_seconds = cpu_1.saturating_sub(cpu_0) as f64 / procs::clock_ticks_per_second() as f64;
    let cpu = cpu_seconds / elapsed * 100.0;
    vec![
        (
            format!("{label}: datagrams/s out of the goose"),
            format!("{:.0}", per_second(frames_1.saturating_sub(frames_0))),
        ),
        (
            format!("{label}: bytes/s out of the goose (UDP payload)"),
            format!("{:.0}", per_second(bytes_1.saturating_sub(bytes_0))),
        ),
        (format!("{label}: goose CPU"), format!("{cpu:.2} %")),
    ]
}
