//! The mixed flock end to end: three desktop `goose node` processes and two boards, each the
//! firmware in `qemu-system-arm` started with `goose board`, on 127.0.0.1. And a keyed one
//! (two desktops and a board sharing a `--cluster-key-file`): the board's sealed frames are
//! accepted, its control is signed, it becomes goose, and after its QEMU is killed it comes
//! back with the next boot epoch. And a goose board whose emulator is frozen or starved
//! (SIGSTOP on its QEMU) while cut off: its clock must count the time it was stopped, so
//! it never answers `goose` once a desktop is goose in a higher term. And the board's peak
//! stack, which the firmware built with its `report` feature measures itself, within its
//! budget.
//!
//! Needs `qemu-system-arm` (the test fails, never skips, without it) and the firmware
//! (built with `cargo build --release` in node-embedded/firmware if its ELF is missing).
//! Every probe round checks that no two members answer `goose` at once, that no term goes
//! back and that no term has two geese ([`flock_tests::procs`]). Bounds are generous: QEMU
//! shares two cores with whatever else runs. The tests take [`one_flock_at_a_time`].

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use flock_tests::procs::{report_firmware, Flock, OnViolation, Probe, Timing};

/// Desktop nodes: ids 1-3 (indices 0-2).
const DESKTOPS: usize = 3;
/// Boards: ids 4-5 (indices 3-4).
const BOARDS: usize = 2;
/// How long any election or recovery may take (a few election timeouts would do).
const SETTLE: Duration = Duration::from_secs(30);
/// Tries at reading an exact `nc` reply (a busy machine may delay one past `-w1`).
const NC_TRIES: usize = 10;
/// How long a frozen board stays frozen: longer than a wrap of SysTick's 24-bit counter at
/// 12.5 MHz (1.34 s), which a clock reading only that register could not tell apart.
const FREEZE: Duration = Duration::from_secs(3);
/// How long a resumed (or starved) board is probed once a desktop is goose in a higher
/// term: several of its leases (133.5 ms), even at a fraction of real speed.
const PROBE_SPAN: Duration = Duration::from_millis(1500);
/// A starved board's QEMU is stopped this long of every [`STARVE_PERIOD`].
const STARVE_STOPPED: Duration = Duration::from_millis(12);
/// See [`STARVE_STOPPED`].
const STARVE_PERIOD: Duration = Duration::from_millis(20);
/// Tries at catching the board goose just after it is cut off (its lease has at most one
/// heartbeat round to run by then; a busy machine may let it run out first).
const CUT_OFF_TRIES: usize = 5;

/// The board's peak stack, the 8,936-byte board included (the firmware keeps it in `main`'s
/// frame): 19,268 bytes measured when this was set, rounded up to the KiB. With the statics
/// `scripts/ci/firmware_size.sh` holds to 12 KiB, the QEMU firmware stays within 32 KiB of
/// RAM (node-embedded/README.md, "Footprint").
const BOARD_STACK_MAX: usize = 19 * 1024;

/// One QEMU flock at a time: on a 2-core machine, two mixed flocks would compete for the
/// CPU and turn timing bounds into noise.
fn one_flock_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn is_board(index: usize) -> bool {
    index >= DESKTOPS
}

/// `printf whois-goose | nc -u -w1 127.0.0.1 <port>`, as the contract shows it.
fn nc_probe(port: u16) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("printf whois-goose | nc -u -w1 127.0.0.1 {port}"))
        .output()
        .expect("sh and nc (netcat-openbsd) run");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asks `ctl transfer <to>` of the goose at `from` until it is answered `ok to=<to>`.
fn transfer(flock: &Flock, from: usize, to: usize) {
    let target = flock.nodes[to].id;
    let mut last = None;
    for _ in 0..NC_TRIES {
        last = flock.ctl(from, &format!("transfer {target}"));
        if last.as_deref() == Some(&format!("ok to={target}")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "transfer {target} on node {}: {last:?}",
        flock.nodes[from].id
    );
}

#[test]
fn mixed_flock_desktops_and_boards_in_qemu() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start_mixed(DESKTOPS, BOARDS, Timing::DEFAULT, OnViolation::Panic);
    let all = flock.all();

    // One goose, every member agreeing on it and its term.
    let (first, first_term) = flock.wait_agreed(&all, SETTLE);

    // Kill whichever is goose (a board's QEMU, or a desktop process): a new one.
    flock.kill_member(first);
    let others: Vec<usize> = all.iter().copied().filter(|&i| i != first).collect();
    let (second, second_term) = flock.wait_agreed(&others, SETTLE);
    assert_ne!(second, first);
    assert!(second_term > first_term);
    flock.restart(first);
    flock.wait_agreed(&all, SETTLE);

    // Kill a board's QEMU (one that is not goose, if one is not): the rest go on.
    let (goose, _) = flock.wait_agreed(&all, SETTLE);
    let board = if goose == DESKTOPS {
        DESKTOPS + 1
    } else {
        DESKTOPS
    };
    flock.kill_member(board);
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != board).collect();
    flock.wait_agreed(&rest, SETTLE);
    flock.restart(board);
    let (mut goose, _) = flock.wait_agreed(&all, SETTLE);

    // Stop the desktop goose and one desktop duck: a board becomes goose.
    if is_board(goose) {
        // Make a desktop node goose first, so there is a desktop goose to stop.
        transfer(&flock, goose, 0);
        goose = flock.wait_agreed(&all, SETTLE).0;
        assert_eq!(goose, 0);
    }
    let duck = (0..DESKTOPS).find(|&i| i != goose).expect("three desktops");
    for index in [goose, duck] {
        assert_eq!(flock.ctl(index, "stop").as_deref(), Some("ok"));
    }
    let left: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| i != goose && i != duck)
        .collect();
    let (mut goose, _) = flock.wait_agreed(&left, SETTLE);
    if !is_board(goose) {
        // The remaining desktop node won the election by chance (each of the three is as
        // likely): hand the goose to a board, which is what this step is about.
        transfer(&flock, goose, DESKTOPS);
        goose = flock.wait_agreed(&left, SETTLE).0;
    }
    assert!(is_board(goose), "a board is goose: node {}", goose + 1);

    // The board answers netcat per the contract.
    let (id, port) = (flock.nodes[goose].id, flock.port(goose));
    let term = flock.wait_agreed(&left, SETTLE).1;
    // The goose adds the lease it has left: `goose id=… term=… goose=… lease_ms=<n>\n`.
    let expected = format!("goose id={id} term={term} goose={id} lease_ms=");
    let answered = |reply: &str| {
        reply.strip_prefix(&expected).is_some_and(|rest| {
            rest.strip_suffix('\n')
                .is_some_and(|lease| lease.parse::<u64>().is_ok())
        })
    };
    let mut reply = String::new();
    for _ in 0..NC_TRIES {
        reply = nc_probe(port);
        if answered(&reply) {
            break;
        }
    }
    assert!(
        answered(&reply),
        "nc to the goose board on port {port}: {reply:?}, expected {expected}<ms>"
    );
    let other = if goose == DESKTOPS {
        DESKTOPS + 1
    } else {
        DESKTOPS
    };
    let duck_reply = nc_probe(flock.port(other));
    let probe = Probe::parse(duck_reply.as_bytes()).expect("a contract reply");
    assert_eq!(
        (probe.goose, probe.leader),
        (false, Some(id)),
        "{duck_reply:?}"
    );

    // A board restarted on its storage keeps its term. Alone (everyone else killed), it
    // can only pre-vote, which never raises its term: what it answers after the restart is
    // what it had saved.
    let board = other;
    let term = flock.wait_agreed(&left, SETTLE).1;
    for index in all.iter().copied().filter(|&i| i != board) {
        if flock.running(index) {
            flock.kill_member(index);
        }
    }
    flock.kill_member(board);
    flock.restart(board);
    let round = flock
        .wait_until(&[board], SETTLE, Duration::from_millis(50), |round| {
            round.reply(board).is_some()
        })
        .unwrap_or_else(|last| panic!("the restarted board did not answer: {last}"));
    let restarted = round.reply(board).expect("answered");
    assert_eq!(restarted.term, term, "{}", restarted.line);
    assert!(!restarted.goose);
    // And it still has it a few election timeouts later.
    std::thread::sleep(Duration::from_secs(1));
    let status = flock.status(board);
    assert_eq!(status.get("term"), Some(&term.to_string()), "{status:?}");
}

/// A counter of a `ctl status` reply, as a number.
fn counter(status: &std::collections::BTreeMap<String, String>, name: &str) -> u64 {
    let value = status
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {status:?}"));
    value.parse().expect("a number")
}

/// The peer frames a node refused for their authentication: none in a flock sharing a key.
fn auth_drops(status: &std::collections::BTreeMap<String, String>) -> [(&'static str, u64); 3] {
    ["drop_bad_mac", "drop_unsealed", "drop_replay"].map(|name| (name, counter(status, name)))
}

#[test]
fn keyed_mixed_flock_seals_board_frames_and_a_board_becomes_goose() {
    let _serial = one_flock_at_a_time();
    let folder = flock_tests::procs::TempDir::new("qemu-key");
    let key = flock_tests::procs::new_key_file(folder.path(), "cluster.key");
    let mut flock = Flock::start_mixed_keyed(2, 1, Timing::DEFAULT, &key);
    let all = flock.all();
    let board = 2;
    let none = [
        ("drop_bad_mac", 0),
        ("drop_unsealed", 0),
        ("drop_replay", 0),
    ];

    // One goose, every member agreeing: the board's sealed frames are accepted.
    let (goose, _) = flock.wait_agreed(&all, SETTLE);
    // Control is signed (goose ctl --cluster-key-file), on the board as on the desktops.
    let plain =
        flock_tests::procs::request(flock.port(board), b"ctl status", Duration::from_secs(1));
    assert_eq!(plain.as_deref(), Some(&b"err forbidden\n"[..]));
    for index in all.iter().copied() {
        assert_eq!(auth_drops(&flock.status(index)), none, "node {}", index + 1);
    }

    // The board becomes goose, by a signed handoff.
    if goose != board {
        transfer(&flock, goose, board);
    }
    let (goose, term) = flock.wait_agreed(&all, SETTLE);
    assert_eq!(goose, board, "the board is goose");
    let log = std::fs::read_to_string(flock.root().join("node-3.log")).unwrap_or_default();
    assert!(
        log.contains("sealed with the cluster key, boot epoch 1"),
        "{}",
        flock.log_tail(board)
    );

    // The board's QEMU killed and restarted: it comes back with the next boot epoch, and
    // its frames are accepted again (a reused epoch would be dropped as replays).
    flock.kill_member(board);
    let desktops = [0, 1];
    let (after, after_term) = flock.wait_agreed(&desktops, SETTLE);
    assert!(after_term > term && after != board);
    flock.restart(board);
    flock.wait_agreed(&all, SETTLE);
    transfer(&flock, after, board);
    assert_eq!(flock.wait_agreed(&all, SETTLE).0, board);
    let log = std::fs::read_to_string(flock.root().join("node-3.log")).unwrap_or_default();
    assert!(
        log.contains("sealed with the cluster key, boot epoch 2"),
        "{}",
        flock.log_tail(board)
    );
    for index in desktops {
        assert_eq!(auth_drops(&flock.status(index)), none, "node {}", index + 1);
    }
}

// ---------------------------------------------------------------------------------------
// A board's clock counts the time its emulator was stopped
// ---------------------------------------------------------------------------------------

/// The board of [`stalled_flock`]: ids 1-3 are desktops, 4 the board.
const STALLED_BOARD: usize = DESKTOPS;

/// Three desktops and one board, the board goose in an agreed term (returned).
fn stalled_flock() -> (Flock, u64) {
    let flock = Flock::start_mixed(DESKTOPS, 1, Timing::DEFAULT, OnViolation::Panic);
    let term = make_board_goose(&flock);
    (flock, term)
}

/// Hands the goose to [`STALLED_BOARD`] until every member agrees it is; returns its term.
fn make_board_goose(flock: &Flock) -> u64 {
    let all = flock.all();
    for _ in 0..NC_TRIES {
        let (goose, term) = flock.wait_agreed(&all, SETTLE);
        if goose == STALLED_BOARD {
            return term;
        }
        transfer(flock, goose, STALLED_BOARD);
    }
    panic!("the board never became goose");
}

/// `ctl partition <addresses of others>` on `index`.
fn cut(flock: &Flock, index: usize, others: &[usize]) {
    let addrs: Vec<String> = others.iter().map(|&i| flock.addr(i).to_string()).collect();
    let reply = flock.ctl(index, &format!("partition {}", addrs.join(",")));
    assert_eq!(
        reply.as_deref(),
        Some("ok"),
        "partition on node {}",
        index + 1
    );
}

/// Cuts the goose board off from its peers, and calls `stall` the moment it has answered
/// `goose` in `term` after its own cut (so its lease still holds when `stall` stops its
/// QEMU); then cuts the desktops' side too. Retries from a healed flock if the board's lease
/// ran out before it could answer. Returns `stall`'s value.
fn cut_off_goose_board<T>(flock: &Flock, mut term: u64, mut stall: impl FnMut() -> T) -> T {
    let desktops: Vec<usize> = (0..DESKTOPS).collect();
    for _ in 0..CUT_OFF_TRIES {
        cut(flock, STALLED_BOARD, &desktops);
        let reply = flock_tests::procs::request(
            flock.port(STALLED_BOARD),
            b"whois-goose",
            Duration::from_millis(50),
        );
        let goose = reply
            .as_deref()
            .and_then(|reply| Probe::parse(reply).ok())
            .filter(|probe| probe.goose && probe.term == term);
        if goose.is_some() {
            let stalled = stall();
            for &desktop in &desktops {
                cut(flock, desktop, &[STALLED_BOARD]);
            }
            return stalled;
        }
        assert_eq!(flock.ctl(STALLED_BOARD, "heal").as_deref(), Some("ok"));
        term = make_board_goose(flock);
    }
    panic!("the cut-off board never answered goose before its lease ran out");
}

/// Probes the desktops until one answers `goose` in a term above `term`; returns when that
/// answer arrived and its line.
fn wait_higher_goose(flock: &Flock, term: u64) -> (Instant, String) {
    let desktops: Vec<usize> = (0..DESKTOPS).collect();
    let round = flock
        .wait_until(&desktops, SETTLE, Duration::from_millis(5), |round| {
            round
                .answers()
                .any(|(_, probe)| probe.goose && probe.term > term)
        })
        .unwrap_or_else(|last| panic!("no desktop became goose above term {term}: {last}"));
    let (index, _) = round
        .answers()
        .find(|(_, probe)| probe.goose && probe.term > term)
        .expect("accepted");
    let (probe, at) = round.replies[index].clone().expect("answered");
    (at, probe.line)
}

/// A socket that probes the board, connected to its port.
fn board_socket(flock: &Flock) -> UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("probe socket");
    socket
        .connect(flock.addr(STALLED_BOARD))
        .expect("connect to the board");
    socket
}

/// Probes the board from `socket` every millisecond for `span`, then waits 200 ms for late
/// answers; returns every answer (including those to probes sent earlier on `socket`) with
/// its arrival.
fn probe_board(socket: &UdpSocket, span: Duration) -> Vec<(Probe, Instant)> {
    let start = Instant::now();
    let mut answers = Vec::new();
    let mut buffer = [0; 512];
    let mut next = start;
    let end = start + span;
    let drained = end + Duration::from_millis(200);
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("read timeout");
    while Instant::now() < drained {
        if Instant::now() >= next && Instant::now() < end {
            let _ = socket.send(b"whois-goose");
            next += Duration::from_millis(1);
        }
        if let Ok(size) = socket.recv(&mut buffer) {
            let probe = Probe::parse(&buffer[..size]).expect("a contract reply");
            answers.push((probe, Instant::now()));
        }
    }
    answers
}

/// Fails if the board answered `goose` to any probe on `answers` (all sent after the
/// higher-term goose had answered at `higher`), with how many and when.
fn assert_no_stale_goose(answers: &[(Probe, Instant)], higher: Instant, line: &str, what: &str) {
    assert!(!answers.is_empty(), "{what}: the board never answered");
    let geese: Vec<&(Probe, Instant)> = answers.iter().filter(|(probe, _)| probe.goose).collect();
    println!(
        "{what}: {} answers, {} goose, after `{line}`",
        answers.len(),
        geese.len()
    );
    if let (Some((first, first_at)), Some((_, last_at))) = (geese.first(), geese.last()) {
        panic!(
            "{what}: the board answered goose {} times to probes sent after `{line}` had \
             arrived, over {:?} (from {:?} to {:?} after it; first `{}`): its clock did not \
             count the time its QEMU was stopped",
            geese.len(),
            last_at.duration_since(*first_at),
            first_at.duration_since(higher),
            last_at.duration_since(higher),
            first.line
        );
    }
}

/// Heals every member and waits until all agree again: the resumed board rejoins.
fn heal_all(flock: &Flock) {
    for index in flock.all() {
        assert_eq!(flock.ctl(index, "heal").as_deref(), Some("ok"));
    }
    flock.wait_agreed(&flock.all(), SETTLE);
}

#[test]
fn frozen_goose_board_resumes_past_its_lease() {
    let _serial = one_flock_at_a_time();
    let (flock, term) = stalled_flock();
    let stopped = cut_off_goose_board(&flock, term, || {
        flock.signal_qemu(STALLED_BOARD, libc::SIGSTOP);
        Instant::now()
    });
    let (higher, line) = wait_higher_goose(&flock, term);
    println!(
        "frozen: `{line}` {:?} after the board's QEMU stopped",
        higher.duration_since(stopped)
    );
    // Probes queued while it is frozen are the first it handles when it resumes.
    let socket = board_socket(&flock);
    for _ in 0..5 {
        socket.send(b"whois-goose").expect("probe the frozen board");
    }
    thread::sleep(FREEZE.saturating_sub(stopped.elapsed()));
    flock.signal_qemu(STALLED_BOARD, libc::SIGCONT);
    let resumed = Instant::now();
    let answers = probe_board(&socket, PROBE_SPAN);
    if let Some((first, at)) = answers.first() {
        println!(
            "frozen {:?}: first answer {:?} after SIGCONT: `{}`",
            resumed.duration_since(stopped),
            at.duration_since(resumed),
            first.line
        );
    }
    assert_no_stale_goose(&answers, higher, &line, "frozen board");
    heal_all(&flock);
}

#[test]
fn starved_goose_board_does_not_outlive_its_lease() {
    let _serial = one_flock_at_a_time();
    let (flock, term) = stalled_flock();
    let starving = cut_off_goose_board(&flock, term, || {
        flock.starve_qemu(STALLED_BOARD, STARVE_STOPPED, STARVE_PERIOD)
    });
    let started = Instant::now();
    let (higher, line) = wait_higher_goose(&flock, term);
    println!(
        "starved: `{line}` {:?} after the starving began",
        higher.duration_since(started)
    );
    let socket = board_socket(&flock);
    let answers = probe_board(&socket, PROBE_SPAN);
    let stops = starving.end();
    println!("starved: QEMU stopped {stops} times ({STARVE_STOPPED:?} of every {STARVE_PERIOD:?})");
    assert_no_stale_goose(&answers, higher, &line, "starved board");
    heal_all(&flock);
}

/// The stack a board ever used, from the firmware's own `report` lines (`node <id>: stack
/// used at most <n> bytes…`), one per start-up and one every 10 s after.
fn stack_reports(log: &str) -> Vec<usize> {
    log.lines()
        .filter_map(|line| {
            let rest = line.split_once("stack used at most ")?.1;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

/// Waits until board `index` has logged `count` stack reports (one at each start-up, one
/// every 10 s).
fn wait_stack_reports(flock: &Flock, index: usize, count: usize) {
    let deadline = Instant::now() + SETTLE;
    while stack_reports(&flock.log(index)).len() < count {
        assert!(
            Instant::now() < deadline,
            "fewer than {count} stack reports from the board within {SETTLE:?}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn board_peak_stack_stays_within_its_budget() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start_mixed_with(2, 1, Timing::DEFAULT, report_firmware());
    let all = flock.all();
    let board = 2;
    let ok = |reply: Option<String>| assert_eq!(reply.as_deref(), Some("ok"));

    // A start-up with no state, elections, then control of every kind on the board.
    flock.wait_agreed(&all, SETTLE);
    ok(flock.ctl(board, "stop"));
    assert!(flock
        .ctl(board, "status")
        .is_some_and(|s| s.starts_with("ok ")));
    ok(flock.ctl(board, "start"));
    flock.wait_agreed(&all, SETTLE);
    ok(flock.ctl(board, &format!("partition 1,{}", flock.addr(0))));
    ok(flock.ctl(board, "heal"));
    let (goose, _) = flock.wait_agreed(&all, SETTLE);
    if goose != board {
        transfer(&flock, goose, board);
    }
    flock.wait_agreed(&all, SETTLE);
    let add = flock.ctl_until_not_busy(board, "add 9 127.0.0.1:1", SETTLE);
    assert_eq!(add, "ok");
    let remove = flock.ctl_until_not_busy(board, "remove 9", SETTLE);
    assert_eq!(remove, "ok");
    transfer(&flock, board, 0);
    for _ in 0..200 {
        assert!(flock_tests::procs::request(flock.port(board), b"whois-goose", SETTLE).is_some());
    }
    // The high-water mark since boot, reported within 10 s: before this boot ends.
    wait_stack_reports(&flock, board, 2);
    // A start-up from the saved state (entries in its log), and a `ctl start` from it.
    flock.kill_member(board);
    flock.restart(board);
    flock.wait_agreed(&all, SETTLE);
    ok(flock.ctl(board, "stop"));
    ok(flock.ctl(board, "start"));
    flock.wait_agreed(&all, SETTLE);
    wait_stack_reports(&flock, board, 4);

    let reports = stack_reports(&flock.log(board));
    let peak = reports.iter().copied().max().unwrap_or(0);
    // The figure node-embedded/README.md's "Footprint" table quotes (`--nocapture`).
    eprintln!("board peak stack: {peak} bytes (reports: {reports:?})");
    assert!(
        peak <= BOARD_STACK_MAX,
        "the board's peak stack is {peak} bytes, over its budget of {BOARD_STACK_MAX} \
         (reports: {reports:?})"
    );
    assert!(
        peak > BOARD_STACK_MAX / 2,
        "an implausible peak stack: {reports:?}"
    );
}
