//! The mixed flock end to end: three desktop `goose node` processes and two boards, each the
//! firmware in `qemu-system-arm` started with `goose board`, on 127.0.0.1. And a keyed one
//! (two desktops and a board sharing a `--cluster-key-file`): the board's sealed frames are
//! accepted, its control is signed, it becomes goose, and after its QEMU is killed it comes
//! back with the next boot epoch.
//!
//! Needs `qemu-system-arm` (the test fails, never skips, without it) and the firmware
//! (built with `cargo build --release` in node-embedded/firmware if its ELF is missing).
//! Every probe round checks that no two members answer `goose` at once, that no term goes
//! back and that no term has two geese ([`flock_tests::procs`]). Bounds are generous: QEMU
//! shares two cores with whatever else runs.

use std::process::Command;
use std::time::Duration;

use flock_tests::procs::{Flock, OnViolation, Probe, Timing};

/// Desktop nodes: ids 1-3 (indices 0-2).
const DESKTOPS: usize = 3;
/// Boards: ids 4-5 (indices 3-4).
const BOARDS: usize = 2;
/// How long any election or recovery may take (a few election timeouts would do).
const SETTLE: Duration = Duration::from_secs(30);
/// Tries at reading an exact `nc` reply (a busy machine may delay one past `-w1`).
const NC_TRIES: usize = 10;

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
    let expected = format!("goose id={id} term={term} goose={id}\n");
    let mut reply = String::new();
    for _ in 0..NC_TRIES {
        reply = nc_probe(port);
        if reply == expected {
            break;
        }
    }
    assert_eq!(reply, expected, "nc to the goose board on port {port}");
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
