//! The elastic flock with real `goose` processes on 127.0.0.1: membership changes while the
//! goose is killed, 5 voters with 40 learners, `--join`, restarts from the data dir alone,
//! rolling restarts, graceful handoff (`ctl transfer`, SIGTERM) and role-change hooks.
//!
//! Every node is a child process killed by pid when its flock drops; every wait is
//! bounded; every probe round is checked for two geese, for a term going back and for two
//! geese in one term ([`procs`], the harness of every process test). The tests run one at
//! a time (a lock), so one flock's load does not slow another's elections on a small
//! machine.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use flock_tests::procs::{self, Cluster, Flock, OnViolation, Timing};

const GOOSE: &str = env!("CARGO_BIN_EXE_goose");
/// Fast enough for short tests, slow enough for a loaded 2-core machine.
const QUICK: Timing = Timing {
    heartbeat_ms: 20,
    election_timeout_ms_min: 100,
    election_timeout_ms_max: 200,
};
/// Elections slower than any handoff: a new goose sooner than `HANDOFF_BOUND` after the old
/// one stepped aside can only come from TimeoutNow (an election waits ≥ 1 s).
const SLOW: Timing = Timing {
    heartbeat_ms: 50,
    election_timeout_ms_min: 1_000,
    election_timeout_ms_max: 2_000,
};
/// What a handoff may take on a loaded machine; elections under [`SLOW`] take ≥ 1 s.
const HANDOFF_BOUND: Duration = Duration::from_millis(600);
/// Generous bound for an election or a membership change to show.
const SETTLE: Duration = Duration::from_secs(15);
/// The pause between two polls of a waiting test.
const POLL: Duration = Duration::from_millis(10);

/// Takes the lock that runs the tests one at a time, and points the harness at the binary
/// cargo built for these tests.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    procs::use_goose_binary(Path::new(GOOSE));
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A flock of `count` nodes (ids 1..=count) with `timing` and `extra` flags, every one
/// answering; a broken safety promise in any probe round panics.
fn start(count: usize, timing: Timing, extra: &[&str]) -> (Flock, Vec<usize>) {
    let flock = Flock::start_with(count, timing, extra, OnViolation::Panic);
    let all = flock.all();
    (flock, all)
}

/// The ids of status list `key`, sorted (empty if the status lacks it).
fn sorted_ids(status: &procs::Status, key: &str) -> Vec<u16> {
    let mut ids = procs::ids(status, key).unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Waits until node `index` reports `voters` and `learners` (as sets).
fn wait_membership(flock: &Flock, index: usize, voters: &[u16], learners: &[u16]) {
    let mut last = BTreeMap::new();
    let ok = procs::eventually(SETTLE, POLL, || {
        last = flock.try_status(index).unwrap_or_default();
        let (v, l) = (sorted_ids(&last, "voters"), sorted_ids(&last, "learners"));
        let members = sorted_ids(&last, "members");
        let mut all: Vec<u16> = voters.iter().chain(learners).copied().collect();
        all.sort_unstable();
        v == voters && l == learners && members == all
    });
    assert!(
        ok,
        "node {} never reported voters {voters:?} learners {learners:?}: {last:?}\n{}",
        flock.nodes[index].id,
        flock.log_tail(index)
    );
}

fn exits_zero(flock: &mut Flock, index: usize, within: Duration) {
    let status = flock.wait_exit(index, within);
    assert!(
        status.is_some_and(|s| s.success()),
        "node {} did not exit 0 ({status:?}):\n{}",
        flock.nodes[index].id,
        flock.log_tail(index)
    );
}

#[test]
fn grow_three_to_five_and_shrink_back_while_the_goose_is_killed() {
    let _serial = serial();
    let (mut flock, mut live) = start(3, QUICK, &[]);
    let (goose, _) = flock.wait_agreed(&live, SETTLE);
    let duck = live.iter().copied().find(|&i| i != goose).expect("a duck");

    // Node 4 by `ctl add` (a duck redirects), then started with --join.
    let port4 = procs::free_ports(1)[0];
    let add4 = format!("add 4 127.0.0.1:{port4}");
    let redirect = flock.ctl(duck, &add4).expect("a reply");
    assert_eq!(
        redirect,
        format!(
            "err not-goose goose={} addr={}",
            flock.nodes[goose].id,
            flock.addr(goose)
        )
    );
    assert_eq!(flock.ctl_until_not_busy(goose, &add4, SETTLE), "ok");
    let node4 = flock.spawn_joiner(4, port4, duck, &[]);
    flock.wait_listening(&[node4]);
    live.push(node4);
    wait_membership(&flock, goose, &[1, 2, 3, 4], &[]);

    // Kill the goose; a new one is elected among the rest; the old restarts from its dir.
    flock.kill9(goose);
    let others: Vec<usize> = live.iter().copied().filter(|&i| i != goose).collect();
    let (goose2, _) = flock.wait_agreed(&others, SETTLE);
    flock.restart_from_data_dir(goose, &[]);
    flock.wait_listening(&[goose]);

    // Node 5 by --join alone, through a goose that itself joined after the bootstrap
    // (node 4): the joiner learns the flock from that goose's snapshot, which must name it.
    let goose2 = if flock.nodes[goose2].id == 4 {
        goose2
    } else {
        let target = live
            .iter()
            .copied()
            .find(|&i| flock.nodes[i].id == 4)
            .expect("node 4 is live");
        assert_eq!(flock.ctl(goose2, "transfer 4"), Some("ok to=4".to_string()));
        let (goose, _) = flock.wait_agreed(&live, SETTLE);
        assert_eq!(goose, target, "node 4 took over");
        goose
    };
    let node5 = flock.spawn_joiner(5, procs::free_ports(1)[0], goose2, &[]);
    flock.wait_listening(&[node5]);
    live.push(node5);
    wait_membership(&flock, goose2, &[1, 2, 3, 4, 5], &[]);
    let (goose, _) = flock.wait_agreed(&live, SETTLE);
    for &index in &live {
        wait_membership(&flock, index, &[1, 2, 3, 4, 5], &[]);
    }

    // Shrink: remove a duck; it exits 0 once its removal commits.
    let victim = live.iter().copied().find(|&i| i != goose).expect("a duck");
    let command = format!("remove {}", flock.nodes[victim].id);
    assert_eq!(flock.ctl_until_not_busy(goose, &command, SETTLE), "ok");
    exits_zero(&mut flock, victim, SETTLE);
    live.retain(|&i| i != victim);
    let remaining: Vec<u16> = live.iter().map(|&i| flock.nodes[i].id).collect();
    let mut voters = remaining.clone();
    voters.sort_unstable();
    wait_membership(&flock, goose, &voters, &[]);

    // Kill the goose again, and bring it back.
    flock.kill9(goose);
    let others: Vec<usize> = live.iter().copied().filter(|&i| i != goose).collect();
    flock.wait_agreed(&others, SETTLE);
    flock.restart_from_data_dir(goose, &[]);
    flock.wait_listening(&[goose]);
    let (goose, _) = flock.wait_agreed(&live, SETTLE);

    // Remove the goose itself: it steps down and exits 0; the other three elect a goose.
    let command = format!("remove {}", flock.nodes[goose].id);
    assert_eq!(flock.ctl_until_not_busy(goose, &command, SETTLE), "ok");
    exits_zero(&mut flock, goose, SETTLE);
    live.retain(|&i| i != goose);
    let (goose, _) = flock.wait_agreed(&live, SETTLE);
    let mut voters: Vec<u16> = live.iter().map(|&i| flock.nodes[i].id).collect();
    voters.sort_unstable();
    assert_eq!(voters.len(), 3);
    for &index in &live {
        wait_membership(&flock, index, &voters, &[]);
    }
    assert_eq!(
        flock.status(goose).get("role").map(String::as_str),
        Some("goose")
    );
}

#[test]
fn five_voters_and_forty_learners_keep_electing_and_answering() {
    let _serial = serial();
    let started = Instant::now();
    let (mut flock, voters) = start(5, QUICK, &[]);
    flock.wait_agreed(&voters, SETTLE);
    // All 40 at once: the goose takes one change at a time, the rest hear `err busy`
    // and retry with their backoff.
    for id in 6..=45 {
        let via = voters[usize::from(id) % voters.len()];
        flock.spawn_joiner(id, procs::free_ports(1)[0], via, &[]);
    }
    let all = flock.all();
    flock.wait_listening(&all);
    let (goose, _) = flock.wait_agreed(&voters, SETTLE);
    let learner_ids: Vec<u16> = (6..=45).collect();
    wait_membership(&flock, goose, &[1, 2, 3, 4, 5], &learner_ids);
    let joined = started.elapsed();
    let (goose, term) = flock.wait_agreed(&all, SETTLE);
    // A learner hears the last additions a heartbeat after the goose commits them.
    let last = all[all.len() - 1];
    wait_membership(&flock, last, &[1, 2, 3, 4, 5], &learner_ids);
    let learner = flock.status(last);
    assert_eq!(learner.get("raft").map(String::as_str), Some("learner"));
    assert_eq!(sorted_ids(&learner, "learners").len(), 40);

    // Kill the goose twice: a voter takes over each time, and all 44 then 43 follow it.
    let (mut goose, mut term) = (goose, term);
    let mut live = all.clone();
    for _ in 0..2 {
        let killed = Instant::now();
        flock.kill9(goose);
        live.retain(|&i| i != goose);
        let (next, next_term) = flock.wait_agreed(&live, SETTLE);
        assert!(flock.nodes[next].id <= 5, "a learner became goose");
        eprintln!(
            "45 nodes: goose {} → {} (term {term} → {next_term}) in {} ms",
            flock.nodes[goose].id,
            flock.nodes[next].id,
            killed.elapsed().as_millis()
        );
        (goose, term) = (next, next_term);
    }
    eprintln!("45 nodes: 40 joined in {} ms", joined.as_millis());
}

#[test]
fn join_from_an_empty_data_dir_then_restart_from_the_data_dir_alone() {
    let _serial = serial();
    let (mut flock, live) = start(3, QUICK, &["--voters", "4"]);
    let (goose, _) = flock.wait_agreed(&live, SETTLE);
    let duck = live.iter().copied().find(|&i| i != goose).expect("a duck");

    // Node 4 asks a duck, which redirects to the goose; it is promoted (target 4).
    let node4 = flock.spawn_joiner(4, procs::free_ports(1)[0], duck, &["--voters", "4"]);
    flock.wait_listening(&[node4]);
    wait_membership(&flock, goose, &[1, 2, 3, 4], &[]);
    assert!(flock.log(node4).contains("joined the flock"));
    // Node 5 joins beyond the voter target: it stays a learner and follows the goose.
    let node5 = flock.spawn_joiner(5, procs::free_ports(1)[0], goose, &["--voters", "4"]);
    flock.wait_listening(&[node5]);
    wait_membership(&flock, goose, &[1, 2, 3, 4], &[5]);
    wait_membership(&flock, node5, &[1, 2, 3, 4], &[5]);
    let all = [live[0], live[1], live[2], node4, node5];
    let (goose, _) = flock.wait_agreed(&all, SETTLE);
    assert_eq!(
        flock.status(node5).get("raft").map(String::as_str),
        Some("learner")
    );
    assert_eq!(
        flock.ctl(goose, "transfer 5").as_deref(),
        Some("err unknown-node")
    );

    // Both restart from their data dirs alone (id, address, membership from the state);
    // stray --peer flags are ignored with a warning.
    for index in [node4, node5] {
        flock.kill9(index);
    }
    flock.restart_from_data_dir(node4, &["--voters", "4"]);
    flock.restart_from_data_dir(node5, &["--voters", "4", "--peer", "9=127.0.0.1:9"]);
    flock.wait_listening(&[node4, node5]);
    let (goose, _) = flock.wait_agreed(&all, SETTLE);
    wait_membership(&flock, node5, &[1, 2, 3, 4], &[5]);
    assert!(flock.log(node5).contains("ignoring --peer"));
    // The restarted voter can lead: hand over to it.
    if goose != node4 {
        assert_eq!(flock.ctl(goose, "transfer 4").as_deref(), Some("ok to=4"));
        let (next, _) = flock.wait_agreed(&all, SETTLE);
        assert_eq!(next, node4);
    }
}

#[test]
fn rolling_restart_keeps_at_most_one_goose_and_reports_the_gap() {
    let _serial = serial();
    let root = procs::TempDir::new("rolling");
    let mut cluster = Cluster::start(5, QUICK, root.path(), &[]);
    let ports = cluster.ports.clone();
    let mut seen = Vec::new();
    assert!(
        procs::eventually(SETTLE, POLL, || {
            procs::probe(&ports, Duration::from_millis(100))
                .geese()
                .len()
                == 1
        }),
        "no goose"
    );
    signal(&cluster, libc::SIGHUP);
    let started = Instant::now();
    let (mut rounds, mut two_geese) = (0u64, Vec::new());
    // A gap runs from the last round that saw a goose to the next one that does, counted
    // only when a round in between saw none (so an upper bound, by a round's length).
    let (mut last_goose, mut in_gap) = (started, false);
    let (mut gap_max, mut gap_total) = (Duration::ZERO, Duration::ZERO);
    let mut done = None;
    while done.is_none() && started.elapsed() < Duration::from_secs(60) {
        let now = Instant::now();
        let round = procs::probe(&ports, Duration::from_millis(10));
        rounds += 1;
        let geese = round.geese();
        if geese.len() > 1 {
            two_geese.push(round.to_string());
        }
        if geese.is_empty() {
            in_gap = true;
        } else {
            if in_gap {
                let gap = now.saturating_duration_since(last_goose);
                gap_total += gap;
                gap_max = gap_max.max(gap);
                in_gap = false;
            }
            last_goose = Instant::now();
        }
        while let Ok(line) = cluster.lines().try_recv() {
            if line.contains("rolling restart done") || line.contains("rolling restart stopped") {
                done = Some(line.clone());
            }
            seen.push(line);
        }
        thread::sleep(Duration::from_millis(2));
    }
    let done = done.unwrap_or_else(|| panic!("no end of the rolling restart: {seen:#?}"));
    assert!(done.contains("done"), "{done}: {seen:#?}");
    assert!(two_geese.is_empty(), "two geese: {two_geese:?}");
    let respawned = seen.iter().filter(|l| l.starts_with("node ")).count();
    assert_eq!(
        respawned, 10,
        "5 started, then every node restarted once: {seen:#?}"
    );
    eprintln!(
        "rolling restart of 5: {} probe rounds, longest goose gap {} ms, total {} ms; {done}",
        rounds,
        gap_max.as_millis(),
        gap_total.as_millis()
    );
    assert!(gap_max < Duration::from_secs(2), "goose gap {gap_max:?}");
    // Every node came back and one of them is goose.
    assert!(procs::eventually(SETTLE, POLL, || one_goose(&ports)));
    stop(&mut cluster);
    let round = procs::probe(&ports, Duration::from_millis(200));
    assert_eq!(round.answers().count(), 0, "nodes left: {round}");
}

#[test]
fn keyed_cluster_passes_its_key_to_every_node_also_at_a_rolling_restart() {
    let _serial = serial();
    let root = procs::TempDir::new("keyed-rolling");
    let key = root.path().join("flock.key");
    let made = Command::new(GOOSE)
        .arg("keygen")
        .arg("--out")
        .arg(&key)
        .status()
        .expect("goose keygen");
    assert!(made.success(), "goose keygen: {made}");
    let key_flag = [OsStr::new("--cluster-key-file"), key.as_os_str()];
    let mut cluster = Cluster::start(3, QUICK, &root.path().join("data"), &key_flag);
    let ports = cluster.ports.clone();
    assert!(
        procs::eventually(SETTLE, POLL, || one_goose(&ports)),
        "no goose"
    );
    signal(&cluster, libc::SIGHUP);
    let mut seen = Vec::new();
    let end = |line: &String| {
        line.contains("rolling restart done") || line.contains("rolling restart stopped")
    };
    let ended = procs::eventually(Duration::from_secs(60), POLL, || {
        seen.extend(cluster.lines().try_iter());
        seen.iter().any(end)
    });
    assert!(ended, "no end of the rolling restart: {seen:#?}");
    let done = seen.iter().find(|line| end(line));
    assert!(
        done.is_some_and(|line| line.contains("done")),
        "{done:?}: {seen:#?}"
    );
    assert!(
        procs::eventually(SETTLE, POLL, || one_goose(&ports)),
        "no goose after the restart"
    );
    for (index, &port) in ports.iter().enumerate() {
        // Restarted with the key: a signed status works, an unsigned one is refused, and
        // its second boot sealed with epoch 2.
        let signed = Command::new(GOOSE)
            .arg("ctl")
            .arg("--cluster-key-file")
            .arg(&key)
            .arg(format!("127.0.0.1:{port}"))
            .arg("status")
            .stderr(Stdio::null())
            .output()
            .expect("goose ctl");
        let reply = String::from_utf8_lossy(&signed.stdout);
        assert!(reply.starts_with("ok role="), "node {}: {reply}", index + 1);
        assert!(reply.contains(" drop_bad_mac=0 "), "{reply}");
        assert!(reply.contains(" drop_unsealed=0 "), "{reply}");
        assert_eq!(procs::ctl(port, "status").as_deref(), Some("err forbidden"));
        let epoch = std::fs::read(root.path().join(format!("data/{}/epoch", index + 1)));
        let epoch = epoch.expect("epoch file");
        // Two slots of 4096 bytes, each a 24-byte header and the epoch: the second boot's
        // is in the second slot.
        assert_eq!(
            epoch.get(4096 + 24..4096 + 28),
            Some(&2u32.to_le_bytes()[..]),
            "node {}",
            index + 1
        );
    }
    stop(&mut cluster);
}

/// Whether every one of `ports` answers a probe and exactly one answers goose.
fn one_goose(ports: &[u16]) -> bool {
    let round = procs::probe(ports, Duration::from_millis(100));
    round.answers().count() == ports.len() && round.geese().len() == 1
}

/// Sends `signal` to the `goose cluster` launcher.
fn signal(cluster: &Cluster, signal: libc::c_int) {
    let sent = cluster.signal(signal);
    sent.unwrap_or_else(|e| panic!("signal {signal} to goose cluster: {e}"));
}

/// SIGTERM stops the flock: the launcher must exit 0 within [`SETTLE`].
fn stop(cluster: &mut Cluster) {
    let status = cluster.stop(SETTLE);
    assert!(
        status.is_some_and(|status| status.success()),
        "goose cluster did not exit 0 within {SETTLE:?}: {status:?}"
    );
}

/// One hook line: `<role> <id> <term> start|end`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HookLine {
    role: String,
    id: u16,
    term: u64,
    start: bool,
}

fn hook_lines(path: &Path) -> Vec<HookLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_ascii_whitespace().collect();
            match words.as_slice() {
                [role, id, term, edge] => Some(HookLine {
                    role: (*role).to_owned(),
                    id: id.parse().ok()?,
                    term: term.parse().ok()?,
                    start: *edge == "start",
                }),
                _ => None,
            }
        })
        .collect()
}

fn has_line(path: &Path, role: &str, id: u16, term: Option<u64>) -> bool {
    hook_lines(path)
        .iter()
        .any(|l| !l.start && l.role == role && l.id == id && term.is_none_or(|t| l.term == t))
}

#[test]
fn hooks_tell_who_became_goose_in_which_term_and_duck_follows_goose() {
    let _serial = serial();
    let folder = procs::TempDir::new("hooks");
    let file = folder.path().join("hooks.log");
    let hook = format!(
        "echo \"$GOOSE_ROLE $GOOSE_ID $GOOSE_TERM start\" >> {0}; sleep 0.05; \
         echo \"$GOOSE_ROLE $GOOSE_ID $GOOSE_TERM end\" >> {0}",
        file.display()
    );
    let flags = ["--on-goose", hook.as_str(), "--on-duck", hook.as_str()];
    let (flock, live) = start(3, SLOW, &flags);
    let (first, term1) = flock.wait_agreed(&live, SETTLE);
    let id1 = flock.nodes[first].id;
    assert!(procs::eventually(SETTLE, POLL, || has_line(
        &file,
        "goose",
        id1,
        Some(term1)
    )));

    // A handoff: the old goose's duck hook, the new goose's goose hook in a later term.
    let reply = flock.ctl(first, "transfer").expect("a reply");
    let (second, term2) = flock.wait_agreed(&live, SETTLE);
    let id2 = flock.nodes[second].id;
    assert_eq!(reply, format!("ok to={id2}"));
    assert!(term2 > term1);
    assert!(procs::eventually(SETTLE, POLL, || has_line(
        &file,
        "duck",
        id1,
        Some(term1)
    )));
    assert!(procs::eventually(SETTLE, POLL, || has_line(
        &file,
        "goose",
        id2,
        Some(term2)
    )));

    // A lease lapse: cut the goose off; it runs its duck hook while the other two elect.
    let others: Vec<usize> = live.iter().copied().filter(|&i| i != second).collect();
    let other_ids: Vec<String> = others
        .iter()
        .map(|&i| flock.nodes[i].id.to_string())
        .collect();
    assert_eq!(
        flock
            .ctl(second, &format!("partition {}", other_ids.join(",")))
            .as_deref(),
        Some("ok")
    );
    for &other in &others {
        assert_eq!(
            flock.ctl(other, &format!("partition {id2}")).as_deref(),
            Some("ok")
        );
    }
    assert!(procs::eventually(SETTLE, POLL, || has_line(
        &file,
        "duck",
        id2,
        Some(term2)
    )));
    let (third, term3) = flock.wait_agreed(&others, SETTLE);
    let id3 = flock.nodes[third].id;
    assert!(procs::eventually(SETTLE, POLL, || has_line(
        &file,
        "goose",
        id3,
        Some(term3)
    )));
    for &index in &live {
        assert_eq!(flock.ctl(index, "heal").as_deref(), Some("ok"));
    }
    flock.wait_agreed(&live, SETTLE);
    // Let any last hook finish before reading the whole file.
    thread::sleep(Duration::from_millis(300));

    let lines = hook_lines(&file);
    let mut per_node: BTreeMap<u16, Vec<&HookLine>> = BTreeMap::new();
    for line in &lines {
        per_node.entry(line.id).or_default().push(line);
    }
    for (id, lines) in &per_node {
        // Never two at once: start, end, start, end… each end matching its start.
        for pair in lines.chunks(2) {
            assert!(
                pair.len() == 2 && pair[0].start && !pair[1].start && pair[0].role == pair[1].role,
                "node {id}: overlapping or unfinished hooks: {lines:#?}"
            );
        }
        // Roles alternate from the duck hook every node runs at start (it may have died as
        // goose), and each follows the one before in the same or a later term.
        let runs: Vec<&HookLine> = lines.iter().copied().filter(|l| l.start).collect();
        for (i, run) in runs.iter().enumerate() {
            let expected = if i % 2 == 0 { "duck" } else { "goose" };
            assert_eq!(run.role, expected, "node {id}: {runs:#?}");
            if i > 0 {
                assert!(run.term >= runs[i - 1].term, "node {id}: {runs:#?}");
            }
        }
    }
    // One goose per term, across nodes.
    let mut geese: BTreeMap<u64, u16> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.start && l.role == "goose") {
        let previous = geese.insert(line.term, line.id);
        assert!(
            previous.is_none_or(|p| p == line.id),
            "two geese in term {}: {lines:#?}",
            line.term
        );
    }
    eprintln!("hook lines: {lines:?}");
}

#[test]
fn a_hung_hook_is_killed_after_its_timeout() {
    let _serial = serial();
    let flags = ["--on-goose", "sleep 30", "--hook-timeout-ms", "300"];
    let (flock, live) = start(1, QUICK, &flags);
    flock.wait_agreed(&live, SETTLE);
    assert!(
        procs::eventually(SETTLE, POLL, || flock
            .log(live[0])
            .contains("hook ended after its timeout")),
        "{}",
        flock.log_tail(live[0])
    );
    assert!(flock.log(live[0]).contains("still running after 300 ms"));
    // The node answered all along.
    let round = flock.probe_round(&live, Duration::from_millis(200));
    assert!(round.reply(live[0]).is_some_and(|p| p.goose), "{round}");
}

#[test]
fn transfer_answers_ok_to_the_new_goose_and_refuses_what_it_must() {
    let _serial = serial();
    let (flock, live) = start(3, SLOW, &[]);
    let (goose, _) = flock.wait_agreed(&live, SETTLE);
    let duck = live.iter().copied().find(|&i| i != goose).expect("a duck");
    let goose_id = flock.nodes[goose].id;
    assert_eq!(
        flock.ctl(goose, "transfer 99").as_deref(),
        Some("err unknown-node")
    );
    let own = format!("transfer {goose_id}");
    assert_eq!(flock.ctl(goose, &own).as_deref(), Some("err unknown-node"));
    assert_eq!(
        flock.ctl(duck, "transfer").unwrap_or_default(),
        format!("err not-goose goose={goose_id} addr={}", flock.addr(goose))
    );
    assert_eq!(
        flock.ctl(goose, "remove 99").as_deref(),
        Some("err unknown-node")
    );

    // To the most up-to-date voter, then to a named one; each well under an election.
    let asked = Instant::now();
    let reply = flock.ctl(goose, "transfer").expect("a reply");
    let (next, _) = flock.wait_agreed(&live, SETTLE);
    let took = asked.elapsed();
    assert_ne!(next, goose);
    assert_eq!(reply, format!("ok to={}", flock.nodes[next].id));
    assert!(took < HANDOFF_BOUND, "handoff took {took:?}");
    let named = live
        .iter()
        .copied()
        .find(|&i| i != next)
        .expect("another voter");
    let named_id = flock.nodes[named].id;
    let reply = flock.ctl(next, &format!("transfer {named_id}"));
    assert_eq!(reply, Some(format!("ok to={named_id}")));
    let (now_goose, _) = flock.wait_agreed(&live, SETTLE);
    assert_eq!(now_goose, named);

    // One change at a time: with the goose cut off (its lease still holds for a while),
    // a first change is appended but cannot commit, so the next is refused. A new goose
    // accepts changes once its followers have confirmed its log (a save each, after it
    // became goose): a few heartbeats are plenty.
    thread::sleep(Duration::from_millis(200));
    let goose = now_goose;
    let others: Vec<String> = live
        .iter()
        .filter(|&&i| i != goose)
        .map(|&i| flock.nodes[i].id.to_string())
        .collect();
    assert_eq!(
        flock
            .ctl(goose, &format!("partition {}", others.join(",")))
            .as_deref(),
        Some("ok")
    );
    assert_eq!(flock.ctl(goose, "add 9 127.0.0.1:9").as_deref(), Some("ok"));
    assert_eq!(
        flock.ctl(goose, "add 10 127.0.0.1:10").as_deref(),
        Some("err busy")
    );
    assert_eq!(flock.ctl(goose, "remove 9").as_deref(), Some("err busy"));
    assert_eq!(flock.ctl(goose, "heal").as_deref(), Some("ok"));
    // Healed in time, the same goose commits the change; or a new one does. Either way
    // node 9 ends up a learner, and can be removed.
    let (goose, _) = flock.wait_agreed(&live, SETTLE);
    wait_membership(&flock, goose, &[1, 2, 3], &[9]);
    assert_eq!(flock.ctl_until_not_busy(goose, "remove 9", SETTLE), "ok");
    wait_membership(&flock, goose, &[1, 2, 3], &[]);
}

#[test]
fn sigterm_on_the_goose_hands_off_at_once_and_a_duck_just_exits() {
    let _serial = serial();
    let (mut flock, live) = start(3, SLOW, &[]);
    let (goose, _) = flock.wait_agreed(&live, SETTLE);
    let others: Vec<usize> = live.iter().copied().filter(|&i| i != goose).collect();
    let signalled = Instant::now();
    flock.signal(goose, libc::SIGTERM);
    let (next, _) = flock.wait_agreed(&others, SETTLE);
    let took = signalled.elapsed();
    exits_zero(&mut flock, goose, SETTLE);
    assert!(took < HANDOFF_BOUND, "SIGTERM handoff took {took:?}");
    assert!(flock.log(goose).contains("handed leadership to"));

    // A duck exits 0 at once; the goose stays.
    let duck = others.iter().copied().find(|&i| i != next).expect("a duck");
    flock.signal(duck, libc::SIGTERM);
    exits_zero(&mut flock, duck, Duration::from_secs(2));
    // Both come back from their data dirs alone, as ducks following the goose.
    flock.restart_from_data_dir(goose, &[]);
    flock.restart_from_data_dir(duck, &[]);
    flock.wait_listening(&[goose, duck]);
    let (still, _) = flock.wait_agreed(&live, SETTLE);
    assert_eq!(still, next);
    eprintln!("SIGTERM handoff: {} ms", took.as_millis());
}
