//! Running in production, on the built binary: the `--exec` child never runs on two nodes at
//! once and never outlives its node, hooks never overlap across a handoff, `--check` moves
//! the goose off an unhealthy node, and the rails against the easy mistakes (a new node
//! without peers, a wildcard `--listen`, two nodes with one id, a member without the key, a
//! `--join` nobody answers, a config file) refuse or warn as documented.
//!
//! Every assertion about order reads the children's own timestamps (`date +%s%N` on this
//! one machine), not the node's logs. Tests take [`one_flock_at_a_time`], as the other
//! process tests do.

use std::fs;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use flock_tests::procs::{
    self, exec_gaps, exec_runs, exec_ticker, free_ports, group_members, new_key_file, run_goose,
    ExecRun, Flock, OnViolation, TempDir, Timing,
};

/// How long a flock gets to agree on a goose after a change.
const SETTLE: Duration = Duration::from_secs(5);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(10);

fn one_flock_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn others(flock: &Flock, except: usize) -> Vec<usize> {
    flock.all().into_iter().filter(|&i| i != except).collect()
}

/// Asserts that no two runs overlap in time; returns the gaps between them in ms.
fn assert_one_at_a_time(runs: &[ExecRun]) -> Vec<f64> {
    match exec_gaps(runs) {
        Ok(gaps) => gaps,
        Err((before, after)) => {
            panic!("two exec children at once: {before:?} and {after:?} (all: {runs:#?})")
        }
    }
}

fn has_run(file: &Path, id: u16, term: u64) -> bool {
    exec_runs(file)
        .iter()
        .any(|run| run.id == id && run.term == term)
}

/// The pid of the latest exec guard node `index` started, from its log.
fn guard_pid(flock: &Flock, index: usize) -> Option<u32> {
    let log = flock.log(index);
    let line = log
        .lines()
        .rev()
        .find(|line| line.contains("exec child started (pid "))?;
    let (_, rest) = line.split_once("(pid ")?;
    rest.trim_end_matches(')').parse().ok()
}

/// Waits for a goose among `among` and for its child's first line.
fn next_goose(flock: &Flock, among: &[usize], file: &Path) -> (usize, u64) {
    let (goose, term) = flock.wait_agreed(among, SETTLE);
    let id = flock.nodes[goose].id;
    assert!(
        procs::eventually(SETTLE, POLL, || has_run(file, id, term)),
        "goose {id} of term {term} runs no child:\n{}",
        flock.log_tail(goose)
    );
    (goose, term)
}

fn partition(flock: &Flock, index: usize) {
    let id = flock.nodes[index].id;
    let rest = others(flock, index);
    let ids: Vec<String> = rest
        .iter()
        .map(|&i| flock.nodes[i].id.to_string())
        .collect();
    let cut = format!("partition {}", ids.join(","));
    assert_eq!(flock.ctl(index, &cut).as_deref(), Some("ok"));
    for other in rest {
        let cut = format!("partition {id}");
        assert_eq!(flock.ctl(other, &cut).as_deref(), Some("ok"));
    }
}

#[test]
fn exec_child_runs_on_one_node_at_a_time_across_transfers_sigterm_partition_and_kill_9() {
    let _serial = one_flock_at_a_time();
    let folder = TempDir::new("exec");
    let file = folder.path().join("ticks");
    let script = exec_ticker(&file);
    let flags = ["--exec", script.as_str()];
    let mut flock = Flock::start_with(3, Timing::DEFAULT, &flags, OnViolation::Panic);
    let all = flock.all();
    let (mut goose, _) = next_goose(&flock, &all, &file);

    // Planned handoffs: the child is stopped before TimeoutNow leaves.
    for _ in 0..2 {
        let reply = flock.ctl(goose, "transfer").unwrap_or_default();
        assert!(reply.starts_with("ok to="), "{reply}");
        let before = goose;
        (goose, _) = next_goose(&flock, &all, &file);
        assert_ne!(goose, before);
    }

    // SIGTERM: a handoff, then the node exits 0; it comes back as a duck.
    flock.signal(goose, libc::SIGTERM);
    let leaving = goose;
    (goose, _) = next_goose(&flock, &others(&flock, leaving), &file);
    let mut status = None;
    procs::eventually(SETTLE, POLL, || {
        status = flock.exit_status(leaving);
        status.is_some()
    });
    let code = status.and_then(|status| status.code());
    assert_eq!(code, Some(0), "{}", flock.log_tail(leaving));
    flock.restart(leaving);
    flock.wait_listening(&[leaving]);

    // A partition: the cut-off goose's lease lapses; its child is gone before the others
    // elect, and it steps down.
    partition(&flock, goose);
    let cut = goose;
    next_goose(&flock, &others(&flock, cut), &file);
    assert!(
        flock.log(cut).contains("below the grace: letting go"),
        "{}",
        flock.log_tail(cut)
    );
    for index in flock.all() {
        assert_eq!(flock.ctl(index, "heal").as_deref(), Some("ok"));
    }
    flock.wait_agreed(&all, SETTLE);
    (goose, _) = next_goose(&flock, &all, &file);

    // kill -9: the node's guard kills the child's whole group, at once.
    let guard = guard_pid(&flock, goose).expect("the goose started a child");
    assert!(!group_members(guard).is_empty(), "the child runs");
    let killed = goose;
    flock.kill9(killed);
    let gone = procs::eventually(Duration::from_secs(2), POLL, || {
        group_members(guard).is_empty()
    });
    assert!(gone, "left behind: {:?}", group_members(guard));
    next_goose(&flock, &others(&flock, killed), &file);

    let runs = exec_runs(&file);
    let gaps = assert_one_at_a_time(&runs);
    assert!(runs.len() >= 6, "{runs:#?}");
    eprintln!("exec runs: {runs:?}\ngaps (ms): {gaps:?}");
}

#[test]
fn a_kill_9_node_leaves_no_exec_child_even_one_started_in_the_background() {
    let _serial = one_flock_at_a_time();
    let script = "sleep 600 & sleep 600";
    let mut flock = Flock::start_with(1, Timing::DEFAULT, &["--exec", script], OnViolation::Panic);
    flock.wait_agreed(&[0], SETTLE);
    assert!(procs::eventually(SETTLE, POLL, || guard_pid(&flock, 0).is_some()));
    let guard = guard_pid(&flock, 0).expect("checked above");
    // The guard, sh and its two sleeps.
    assert!(
        procs::eventually(SETTLE, POLL, || group_members(guard).len() == 4),
        "{:?}",
        group_members(guard)
    );
    flock.kill9(0);
    let gone = procs::eventually(Duration::from_secs(2), POLL, || {
        group_members(guard).is_empty()
    });
    assert!(gone, "left behind: {:?}", group_members(guard));
}

/// `<edge> <id> <term> <ns>` lines of the hooks.
fn hook_events(file: &Path) -> Vec<(String, u16, u64, u128)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let [edge, id, term, at] = words.as_slice() else {
                return None;
            };
            Some((
                (*edge).to_owned(),
                id.parse().ok()?,
                term.parse().ok()?,
                at.parse().ok()?,
            ))
        })
        .collect()
}

fn hook_at(file: &Path, edge: &str, id: u16, term: u64) -> Option<u128> {
    hook_events(file)
        .into_iter()
        .find(|(e, i, t, _)| e == edge && *i == id && *t == term)
        .map(|(_, _, _, at)| at)
}

#[test]
fn a_handoff_ends_the_old_duck_hook_before_the_new_goose_hook_starts() {
    let _serial = one_flock_at_a_time();
    let folder = TempDir::new("hooks");
    let file = folder.path().join("hooks");
    let stamp = |edge: &str| {
        format!(
            "echo \"{edge} $GOOSE_ID $GOOSE_TERM $(date +%s%N)\" >> {}",
            file.display()
        )
    };
    // A duck hook that takes 300 ms: long enough to overlap if the handoff did not wait.
    let on_duck = format!("{}; sleep 0.3; {}", stamp("duck-start"), stamp("duck-end"));
    let on_goose = stamp("goose-start");
    let flags = [
        "--on-duck",
        on_duck.as_str(),
        "--on-goose",
        on_goose.as_str(),
    ];
    let flock = Flock::start_with(3, Timing::DEFAULT, &flags, OnViolation::Panic);
    let all = flock.all();
    let (mut goose, mut term) = flock.wait_agreed(&all, SETTLE);
    for step in ["transfer", "sigterm"] {
        let old = (flock.nodes[goose].id, term);
        match step {
            "transfer" => {
                let reply = flock.ctl(goose, "transfer").unwrap_or_default();
                assert!(reply.starts_with("ok to="), "{reply}");
            }
            _ => flock.signal(goose, libc::SIGTERM),
        }
        let leaving = goose;
        (goose, term) = flock.wait_agreed(&others(&flock, leaving), SETTLE);
        let new = flock.nodes[goose].id;
        let started = procs::eventually(SETTLE, POLL, || {
            hook_at(&file, "goose-start", new, term).is_some()
        });
        assert!(started, "{:?}", hook_events(&file));
        let duck_end = hook_at(&file, "duck-end", old.0, old.1);
        let goose_start = hook_at(&file, "goose-start", new, term);
        assert!(
            duck_end.is_some() && duck_end < goose_start,
            "{step}: node {}'s duck hook must end before node {new}'s goose hook starts: {:?}",
            old.0,
            hook_events(&file)
        );
    }
    // Every node ran its duck hook first, at start (it may have died as goose).
    for node in &flock.nodes {
        let first = hook_events(&file)
            .into_iter()
            .find(|(_, id, _, _)| *id == node.id);
        assert!(
            first
                .as_ref()
                .is_some_and(|(edge, ..)| edge == "duck-start"),
            "node {}: {first:?}",
            node.id
        );
    }
}

#[test]
fn an_unhealthy_goose_hands_off_and_an_unhealthy_voter_never_stands() {
    let _serial = one_flock_at_a_time();
    let folder = TempDir::new("check");
    let sick = |id: u16| folder.path().join(format!("sick-{id}"));
    let check = format!("test ! -e {}/sick-$GOOSE_ID", folder.path().display());
    let flags = [
        "--check",
        check.as_str(),
        "--check-interval-ms",
        "50",
        "--check-fails",
        "2",
    ];
    let mut flock = Flock::start_with(3, Timing::DEFAULT, &flags, OnViolation::Panic);
    let all = flock.all();
    let (first, _) = flock.wait_agreed(&all, SETTLE);
    assert_eq!(
        flock.status(first).get("healthy").map(String::as_str),
        Some("yes")
    );

    // The goose turns unhealthy: it hands off on its own.
    let first_id = flock.nodes[first].id;
    fs::write(sick(first_id), b"").expect("mark sick");
    let (second, _) = flock.wait_agreed(&others(&flock, first), SETTLE);
    let healthy_no = procs::eventually(SETTLE, POLL, || {
        flock.status(first).get("healthy").map(String::as_str) == Some("no")
    });
    assert!(healthy_no, "{}", flock.log_tail(first));
    assert!(flock.log(first).contains("unhealthy goose: handing off"));

    // The third node turns unhealthy too: not a transfer target.
    let third = others(&flock, first)
        .into_iter()
        .find(|&i| i != second)
        .expect("three nodes");
    let third_id = flock.nodes[third].id;
    fs::write(sick(third_id), b"").expect("mark sick");
    let refused = procs::eventually(SETTLE, Duration::from_millis(50), || {
        flock
            .ctl(second, &format!("transfer {third_id}"))
            .as_deref()
            == Some("err unhealthy")
    });
    assert!(refused, "{}", flock.log_tail(second));

    // With the healthy goose gone, the two unhealthy voters elect nobody.
    flock.kill9(second);
    let rest = others(&flock, second);
    thread::sleep(Duration::from_millis(1_500));
    let round = flock.probe_round(&rest, Duration::from_millis(100));
    assert!(round.geese().is_empty(), "{round}");
    for &index in &rest {
        let raft = flock.status(index).get("raft").cloned().unwrap_or_default();
        assert_eq!(raft, "follower", "node {}", flock.nodes[index].id);
    }
    // Healthy again, one of them stands and wins.
    fs::remove_file(sick(third_id)).expect("heal");
    let (goose, _) = flock.wait_agreed(&rest, SETTLE);
    assert_eq!(goose, third);
}

#[test]
fn a_new_node_needs_peers_or_join_or_single_and_a_wildcard_listen_needs_advertise() {
    let folder = TempDir::new("rails");
    let port = free_ports(1)[0];
    let dir = folder.path().join("1").display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let node = |extra: &[&str]| {
        let mut args = vec!["node", "--id", "1", "--data-dir", dir.as_str()];
        args.extend_from_slice(extra);
        run_goose(&args, Duration::from_secs(3))
    };
    let alone = node(&["--listen", &listen]);
    assert_eq!(alone.code(), Some(2), "{alone:?}");
    assert!(alone.stderr.contains("--single"), "{alone:?}");
    let wildcard = format!("0.0.0.0:{port}");
    let everywhere = node(&["--listen", &wildcard, "--single"]);
    assert_eq!(everywhere.code(), Some(2), "{everywhere:?}");
    assert!(everywhere.stderr.contains("--advertise"), "{everywhere:?}");
    let grace = node(&[
        "--listen",
        &listen,
        "--single",
        "--exec",
        "true",
        "--exec-grace-ms",
        "500",
    ]);
    assert_eq!(grace.code(), Some(2), "{grace:?}");
    assert!(
        grace.stderr.contains("--election-timeout-ms 675-1350"),
        "{grace:?}"
    );
    // A host name is resolved at start; --single makes a flock of one.
    let named = format!("localhost:{port}");
    let single = node(&["--listen", &named, "--single"]);
    assert_eq!(single.status, None, "still running: {single:?}");
    assert!(
        single
            .stderr
            .contains(&format!("listening on 127.0.0.1:{port}")),
        "{single:?}"
    );
}

#[test]
fn two_nodes_with_one_id_are_told_apart_counted_and_named_on_both_sides() {
    let _serial = one_flock_at_a_time();
    let flock = Flock::start(3, Timing::DEFAULT);
    let all = flock.all();
    flock.wait_agreed(&all, SETTLE);
    // A second node 2, at another address, with the same peers.
    let folder = TempDir::new("dup");
    let port = free_ports(1)[0];
    let dir = folder.path().join("2").display().to_string();
    let listen = format!("127.0.0.1:{port}");
    let peer1 = format!("1={}", flock.addr(0));
    let peer3 = format!("3={}", flock.addr(2));
    let args = [
        "node",
        "--id",
        "2",
        "--listen",
        &listen,
        "--data-dir",
        &dir,
        "--peer",
        &peer1,
        "--peer",
        &peer3,
    ];
    let impostor = run_goose(&args, Duration::from_secs(2));
    assert!(
        impostor.stderr.contains("another node also uses id 2"),
        "{}",
        impostor.stderr
    );
    let counted = flock.status(0)["drop_duplicate_id"]
        .parse::<u64>()
        .unwrap_or(0)
        + flock.status(2)["drop_duplicate_id"]
            .parse::<u64>()
            .unwrap_or(0);
    assert!(counted > 0, "{:?}", flock.status(0));
    let logged = flock.log(0) + &flock.log(2);
    assert!(logged.contains("two nodes have id 2"), "{logged}");
    // The flock kept its goose throughout (every probe round checks one at a time).
    flock.wait_agreed(&all, SETTLE);
}

#[test]
fn a_member_without_the_key_or_with_another_and_a_join_nobody_answers_are_named() {
    let _serial = one_flock_at_a_time();
    let keys = TempDir::new("keys");
    let key = new_key_file(keys.path(), "flock.key");
    let other = new_key_file(keys.path(), "other.key");
    let mut flock = Flock::start_keyed(3, Timing::DEFAULT, &key);
    let all = flock.all();
    flock.wait_agreed(&all, SETTLE);
    // Node 3 restarts with another key, node 2 with none.
    flock.kill9(2);
    for arg in flock.args_mut(2).iter_mut() {
        if *arg == key.display().to_string() {
            *arg = other.display().to_string();
        }
    }
    flock.restart(2);
    flock.kill9(1);
    let args = flock.args_mut(1);
    if let Some(at) = args.iter().position(|arg| arg == "--cluster-key-file") {
        args.drain(at..at + 2);
    }
    flock.restart(1);
    let named = procs::eventually(SETTLE, POLL, || {
        let log = flock.log(0);
        log.contains("fail the cluster key's check")
            && log.contains("carry no authentication trailer")
    });
    assert!(named, "{}", flock.log_tail(0));

    // A join with the wrong key is refused, and says why; one to a port where nothing
    // listens says so after 2 s.
    let folder = TempDir::new("join");
    let ports = free_ports(2);
    let dir = folder.path().join("9").display().to_string();
    let listen = format!("127.0.0.1:{}", ports[0]);
    let member = flock.addr(0).to_string();
    let other = other.display().to_string();
    let args = [
        "node",
        "--id",
        "9",
        "--listen",
        &listen,
        "--data-dir",
        &dir,
        "--join",
        &member,
        "--cluster-key-file",
        &other,
    ];
    let refused = run_goose(&args, Duration::from_secs(2));
    assert!(
        refused.stderr.contains("err forbidden"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--cluster-key-file"),
        "{}",
        refused.stderr
    );
    let nowhere = format!("127.0.0.1:{}", ports[1]);
    let dir = folder.path().join("10").display().to_string();
    let args = [
        "node",
        "--id",
        "10",
        "--listen",
        &listen,
        "--data-dir",
        &dir,
        "--join",
        &nowhere,
    ];
    let silent = run_goose(&args, Duration::from_secs(5));
    assert!(
        silent.stderr.contains("no answer to the join request"),
        "{}",
        silent.stderr
    );
}

#[test]
fn a_config_file_starts_a_node_flags_override_it_and_sighup_reloads_it() {
    let _serial = one_flock_at_a_time();
    let folder = TempDir::new("config");
    let port = free_ports(1)[0];
    let config = folder.path().join("goose.toml");
    let marks = folder.path().join("marks");
    let write = |hook: &str| {
        let text = format!(
            "id = 1\nlisten = \"localhost:{port}\"\nsingle = true\ndata-dir = \"{}\"\n\
             voters = 5\nheartbeat-ms = 20\non-goose = \"echo {hook} >> {}; exit 3\"\n",
            folder.path().join("1").display(),
            marks.display()
        );
        fs::write(&config, text).expect("config");
    };
    write("first");
    let config_path = config.display().to_string();
    // The command line overrides the file: a heartbeat of 50 ms, not 20.
    let args = [
        "node",
        "--config",
        config_path.as_str(),
        "--heartbeat-ms",
        "50",
    ];
    let mut child = std::process::Command::new(procs::goose_binary())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(fs::File::create(folder.path().join("log")).expect("log"))
        .spawn()
        .expect("spawn");
    let log = || fs::read_to_string(folder.path().join("log")).unwrap_or_default();
    let marked = |word: &str| {
        fs::read_to_string(&marks)
            .unwrap_or_default()
            .contains(word)
    };
    let outcome = (|| {
        if !procs::eventually(SETTLE, POLL, || marked("first")) {
            return Err(format!("no goose hook ran:\n{}", log()));
        }
        // A failing goose hook is an error, with its status.
        if !procs::eventually(SETTLE, POLL, || log().contains("ERROR")) {
            return Err(format!("a failing goose hook is no error:\n{}", log()));
        }
        let status = procs::ctl(port, "status").unwrap_or_default();
        if !status.contains("role=goose") {
            return Err(format!("not goose: {status}"));
        }
        // SIGHUP: the new goose hook, and a warning that the timing takes a restart.
        write("second");
        let text = fs::read_to_string(&config).unwrap_or_default();
        fs::write(&config, text.replace("voters = 5", "voters = 3")).map_err(|e| e.to_string())?;
        procs::send_signal(child.id(), libc::SIGHUP).map_err(|e| e.to_string())?;
        if !procs::eventually(SETTLE, POLL, || log().contains("SIGHUP: reloaded")) {
            return Err(format!("no reload:\n{}", log()));
        }
        let warned = || log().contains("voters changed; that takes a restart");
        if !procs::eventually(SETTLE, POLL, warned) {
            return Err(format!("no restart warning:\n{}", log()));
        }
        // The new hook runs at the next goose: stop and start the node.
        for command in ["stop", "start"] {
            procs::ctl(port, command);
        }
        if !procs::eventually(SETTLE, POLL, || marked("second")) {
            return Err(format!("the reloaded hook did not run:\n{}", log()));
        }
        Ok(())
    })();
    let alive = child.try_wait().ok().flatten().is_none();
    let _ = child.kill();
    let _ = child.wait();
    if let Err(error) = outcome {
        panic!("{error}");
    }
    assert!(alive, "SIGHUP must not kill the node:\n{}", log());
}
