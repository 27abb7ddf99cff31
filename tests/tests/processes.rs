//! Real `goose` processes on 127.0.0.1: what the desktop node promises, each proved on the
//! built binary.
//!
//! Each test starts its own flock on free ports ([`flock_tests::procs`]); every probe round
//! checks that no two nodes answer `goose` at once, that no node's term goes backwards and
//! that no term has two geese, and panics otherwise. Children are killed by pid when a flock
//! is dropped, also on panic. Every wait is bounded.
//!
//! The flock tests take [`one_flock_at_a_time`]: on a 2-core machine, five flocks of five
//! nodes plus their probes would compete for the CPU and turn timing bounds into noise.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use flock_tests::procs::{self, free_ports, node_args, run_goose, Flock, Probe, TempDir, Timing};
use goose_core::rand::Rand;
use goose_core::wire::VERSION;

/// The bound on cold start.
const COLD_START_WITHIN: Duration = Duration::from_secs(2);
/// A new goose is due within 1 s of a failure; the tests allow twice that so a
/// loaded machine does not fail them (`bench_flock` measures the real figure).
const FAILOVER_WITHIN: Duration = Duration::from_secs(2);
/// How long a flock gets to settle again after a restart, a heal or a restart of nodes.
const SETTLE_WITHIN: Duration = Duration::from_secs(3);
/// Time for a probe to travel and be answered, added to lease bounds.
const PROBE_SLACK: Duration = Duration::from_millis(25);

fn one_flock_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn others(flock: &Flock, except: &[usize]) -> Vec<usize> {
    flock
        .all()
        .into_iter()
        .filter(|i| !except.contains(i))
        .collect()
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// Runs `program args`, waits at most `within`; returns (exit code, stdout, stderr).
fn run_bounded(program: &Path, args: &[String], within: Duration) -> (Option<i32>, String, String) {
    let folder = TempDir::new("cmd");
    let (out, err) = (folder.path().join("out"), folder.path().join("err"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).expect("stdout file"))
        .stderr(fs::File::create(&err).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    let deadline = Instant::now() + within;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} still running after {within:?}",
                program.display()
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    let read = |path: &Path| fs::read_to_string(path).unwrap_or_default();
    (code, read(&out), read(&err))
}

/// Sends `text` from a fresh socket to node `index` and returns the reply, if any within
/// `timeout`.
fn send(flock: &Flock, index: usize, text: &[u8], timeout: Duration) -> Option<String> {
    procs::request(flock.port(index), text, timeout)
        .map(|reply| String::from_utf8_lossy(&reply).into_owned())
}

fn counter(status: &BTreeMap<String, String>, name: &str) -> u64 {
    status
        .get(name)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("ctl status has no counter {name}: {status:?}"))
}

// ---------------------------------------------------------------------------------------
// Elections
// ---------------------------------------------------------------------------------------

#[test]
fn cold_start_elects_exactly_one_goose_within_2_s_and_every_node_agrees() {
    let _serial = one_flock_at_a_time();
    let flock = Flock::start(5, Timing::DEFAULT);
    let all = flock.all();
    let left = COLD_START_WITHIN.saturating_sub(flock.started.elapsed());
    let (goose, term) = flock.wait_agreed(&all, left);
    let elapsed = flock.started.elapsed();
    assert!(elapsed <= COLD_START_WITHIN, "one goose after {elapsed:?}");
    // Every node's own status agrees with the probes.
    let goose_id = flock.nodes[goose].id.to_string();
    for index in all {
        let status = flock.status(index);
        assert_eq!(status["goose"], goose_id, "node {}: {status:?}", index + 1);
        assert_eq!(
            status["term"],
            term.to_string(),
            "node {}: {status:?}",
            index + 1
        );
        let role = if index == goose { "goose" } else { "duck" };
        assert_eq!(status["role"], role, "node {}: {status:?}", index + 1);
    }
    println!(
        "goose {goose_id} in term {term} after {elapsed:?}; {:?}",
        flock.watch().rounds
    );
}

/// Voluntary context switches of `pid` so far: how often it went to sleep to wait.
fn wake_ups(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|line| line.starts_with("voluntary_ctxt_switches:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn an_idle_goose_wakes_for_its_heartbeats_not_for_each_acknowledgement() {
    // A goose of five at the default timing sends a round every 50 ms and gets four
    // acknowledgements back for each. Quiescent (everything committed and held by every
    // peer), it reads them when it next wakes for its heartbeat: about 20 wake-ups a
    // second. Reading each as it came took 40 to 55.
    let _serial = one_flock_at_a_time();
    let flock = Flock::start(5, Timing::DEFAULT);
    let all = flock.all();
    let (goose, term) = flock
        .wait_stable(Duration::from_secs(10))
        .expect("a stable goose");
    let pid = flock.pid(goose).expect("running");
    let window = Duration::from_secs(3);
    let before = wake_ups(pid).expect("its /proc status");
    thread::sleep(window);
    let woke = wake_ups(pid).expect("its /proc status") - before;
    let per_second = woke as f64 / window.as_secs_f64();
    assert!(
        per_second <= 30.0,
        "the idle goose woke {per_second:.1} times a second"
    );
    // Still the goose, in the same term, every node agreeing.
    assert_eq!(
        flock.wait_agreed(&all, Duration::from_secs(2)),
        (goose, term)
    );
}

#[test]
fn kill_9_the_goose_another_takes_over_and_the_restarted_one_is_a_duck() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start(5, Timing::DEFAULT);
    let (goose, term) = flock.wait_agreed(&flock.all(), COLD_START_WITHIN);
    let survivors = others(&flock, &[goose]);
    let killed = flock.kill9(goose);
    let taken_over = flock
        .wait_until(
            &survivors,
            FAILOVER_WITHIN,
            Duration::from_millis(5),
            |round| round.geese().len() == 1,
        )
        .unwrap_or_else(|last| panic!("no new goose within {FAILOVER_WITHIN:?}: {last}"));
    let new_goose = taken_over.geese()[0];
    let (probe, at) = taken_over.replies[new_goose].clone().expect("answered");
    println!("node {} goose after {:?}", probe.id, at - killed);
    assert!(
        probe.term > term,
        "new goose in term {} after {term}",
        probe.term
    );

    flock.restart(goose);
    let first = flock
        .wait_until(
            &[goose],
            SETTLE_WITHIN,
            Duration::from_millis(10),
            |round| round.reply(goose).is_some(),
        )
        .unwrap_or_else(|last| panic!("restarted node never answered: {last}"));
    let first = first.reply(goose).expect("answered");
    assert!(
        !first.goose,
        "restarted node's first answer: {}",
        first.line
    );
    assert!(
        first.term >= term,
        "restarted node forgot its term {term}: {}",
        first.line
    );
    let (settled, _) = flock.wait_agreed(&flock.all(), SETTLE_WITHIN);
    println!("settled on node {}", settled + 1);
}

#[test]
fn sigstop_the_goose_for_2_s_another_takes_over_and_it_resumes_as_a_duck() {
    let _serial = one_flock_at_a_time();
    let flock = Flock::start(5, Timing::DEFAULT);
    let all = flock.all();
    let (goose, term) = flock.wait_agreed(&all, COLD_START_WITHIN);

    flock.signal(goose, libc::SIGSTOP);
    let stopped = Instant::now();
    // Queued while it is frozen: the first probe it handles when it resumes.
    let early = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("socket");
    early.connect(flock.addr(goose)).expect("connect");
    early.send(b"whois-goose").expect("send");

    let mut new_goose = None;
    while stopped.elapsed() < Duration::from_secs(2) {
        let round = flock.probe_round(&all, Duration::from_millis(30));
        assert!(
            round.reply(goose).is_none(),
            "a frozen node answered: {round}"
        );
        if new_goose.is_none() {
            new_goose = round
                .geese()
                .first()
                .map(|&index| (index, stopped.elapsed()));
        }
        thread::sleep(Duration::from_millis(10));
    }
    let (new_goose, after) = new_goose.expect("no other node became goose in 2 s");
    assert_ne!(new_goose, goose);
    println!("node {} goose {after:?} after SIGSTOP", new_goose + 1);

    flock.signal(goose, libc::SIGCONT);
    let reply = procs::receive(&early, Instant::now() + Duration::from_secs(1))
        .expect("the resumed node answered its queued probe");
    let reply = Probe::parse(&reply).expect("a probe reply");
    assert!(
        !reply.goose,
        "the resumed node's first answer: {}",
        reply.line
    );
    let round = flock.probe_round(&all, Duration::from_millis(200));
    let again = round.reply(goose).expect("the resumed node answers");
    assert!(!again.goose, "resumed node after SIGCONT: {round}");

    let (settled, settled_term) = flock.wait_agreed(&all, SETTLE_WITHIN);
    assert!(settled_term > term, "term {settled_term} after {term}");
    println!("settled on node {} in term {settled_term}", settled + 1);
}

#[test]
fn partition_2_3_leaves_the_2_side_without_a_goose_and_heal_gives_one() {
    let _serial = one_flock_at_a_time();
    let flock = Flock::start(5, Timing::DEFAULT);
    let all = flock.all();
    let (goose, _) = flock.wait_agreed(&all, COLD_START_WITHIN);
    // The goose on the small side: it must give up its lease.
    let minority = vec![goose, (goose + 1) % 5];
    let majority = others(&flock, &minority);
    // One side names the other by id, the other side by address: both forms are contract.
    let majority_ids: Vec<String> = majority.iter().map(|&i| (i + 1).to_string()).collect();
    let minority_addrs: Vec<String> = minority
        .iter()
        .map(|&i| flock.addr(i).to_string())
        .collect();
    for &index in &minority {
        let reply = flock.ctl(index, &format!("partition {}", majority_ids.join(",")));
        assert_eq!(reply.as_deref(), Some("ok"), "node {}", index + 1);
    }
    for &index in &majority {
        let reply = flock.ctl(index, &format!("partition {}", minority_addrs.join(",")));
        assert_eq!(reply.as_deref(), Some("ok"), "node {}", index + 1);
    }
    let cut = Instant::now();
    let lease_over = flock.timing.lease() + PROBE_SLACK;

    let (mut majority_goose, mut minority_seen) = (None, 0);
    while cut.elapsed() < FAILOVER_WITHIN {
        let round = flock.probe_round(&all, Duration::from_millis(30));
        if cut.elapsed() > lease_over {
            for &index in &minority {
                if let Some(probe) = round.reply(index) {
                    minority_seen += 1;
                    let after = cut.elapsed();
                    assert!(
                        !probe.goose,
                        "2-side goose {after:?} after the cut: {round}"
                    );
                }
            }
        }
        let geese = round.geese();
        if majority_goose.is_none() && geese.len() == 1 && majority.contains(&geese[0]) {
            majority_goose = Some((geese[0], cut.elapsed()));
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(minority_seen > 10, "the 2-side hardly answered probes");
    let (majority_goose, after) = majority_goose.expect("the 3-side elected no goose");
    println!("3-side goose node {} after {after:?}", majority_goose + 1);
    // Both sides drop, so most frames never leave their sender.
    let status = flock.status(goose);
    let dropped = counter(&status, "drop_partition_in") + counter(&status, "drop_partition_out");
    assert!(dropped > 0, "the partition dropped nothing: {status:?}");

    for &index in &all {
        assert_eq!(flock.ctl(index, "heal").as_deref(), Some("ok"));
    }
    flock.wait_agreed(&all, SETTLE_WITHIN);
}

#[test]
fn demo_startstop_script_stops_two_geese_then_3_of_5_stopped_have_none() {
    let _serial = one_flock_at_a_time();
    let flock = Flock::start(5, Timing::DEFAULT);
    let all = flock.all();
    let ports: Vec<String> = all.iter().map(|&i| flock.port(i).to_string()).collect();
    let script = |name: &str, args: &[String]| {
        run_bounded(&scripts_dir().join(name), args, Duration::from_secs(10))
    };
    let find_goose = || -> Vec<usize> {
        let (code, stdout, stderr) = script("find_goose.sh", &ports);
        assert_eq!(code, Some(0), "find_goose.sh: {stdout}{stderr}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(
            lines.len(),
            5,
            "find_goose.sh prints one line per port: {stdout}"
        );
        lines
            .iter()
            .enumerate()
            .filter(|(index, line)| {
                assert!(
                    line.starts_with(&format!("{}: ", ports[*index])),
                    "{stdout}"
                );
                line.ends_with(": goose")
            })
            .map(|(index, _)| index)
            .collect()
    };
    let startstop = |index: usize, what: &str| {
        let (code, stdout, stderr) = script("startstop.sh", &[ports[index].clone(), what.into()]);
        assert_eq!(
            code,
            Some(0),
            "startstop.sh {} {what}: {stdout}{stderr}",
            ports[index]
        );
        assert_eq!(stdout.trim_end(), format!("{}: ok", ports[index]));
    };

    flock.wait_agreed(&all, COLD_START_WITHIN);
    let mut stopped = Vec::new();
    for _ in 0..2 {
        // A fresh goose may need a moment to show up in the script's ~1 s round.
        let mut geese = find_goose();
        if geese.len() != 1 {
            flock.wait_agreed(&others(&flock, &stopped), SETTLE_WITHIN);
            geese = find_goose();
        }
        let [goose] = geese[..] else {
            panic!("find_goose.sh shows geese {geese:?}");
        };
        startstop(goose, "stop");
        stopped.push(goose);
        let running = others(&flock, &stopped);
        flock
            .wait_until(
                &running,
                FAILOVER_WITHIN,
                Duration::from_millis(10),
                |round| round.agreed(&running).is_some(),
            )
            .unwrap_or_else(|last| panic!("no goose after stopping {stopped:?}: {last}"));
        let round = flock.probe_round(&stopped, Duration::from_millis(500));
        for &index in &stopped {
            let probe = round.reply(index).expect("a stopped node answers probes");
            assert!(
                !probe.goose && probe.stopped,
                "stopped node: {}",
                probe.line
            );
            assert_eq!(probe.leader, None, "stopped node: {}", probe.line);
        }
    }

    // A third: only 2 of 5 run, so nobody may be goose once the lease is over.
    let duck = others(&flock, &stopped)[0];
    startstop(duck, "stop");
    stopped.push(duck);
    let cut = Instant::now();
    let lease_over = flock.timing.lease() + PROBE_SLACK;
    while cut.elapsed() < Duration::from_millis(1500) {
        let round = flock.probe_round(&all, Duration::from_millis(30));
        if cut.elapsed() > lease_over {
            assert!(
                round.geese().is_empty(),
                "goose with 3 of 5 stopped: {round}"
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        find_goose(),
        Vec::<usize>::new(),
        "find_goose.sh with 3 of 5 stopped"
    );

    for &index in &stopped {
        startstop(index, "start");
    }
    flock.wait_agreed(&all, SETTLE_WITHIN);
    assert_eq!(
        find_goose().len(),
        1,
        "find_goose.sh after starting them again"
    );
}

#[test]
fn netcat_probe_gets_the_one_line_reply() {
    let _serial = one_flock_at_a_time();
    let flock = Flock::start(5, Timing::DEFAULT);
    let all = flock.all();
    let (mut goose, mut term) = flock.wait_agreed(&all, COLD_START_WITHIN);
    let nc = |text: &str, port: u16| {
        let line = format!("printf '{text}' | nc -u -w1 127.0.0.1 {port}");
        thread::spawn(move || {
            run_bounded(
                Path::new("/bin/sh"),
                &["-c".into(), line],
                Duration::from_secs(5),
            )
        })
    };
    // What nc shows must be what the Rust probes showed. A machine starved of CPU may let
    // the goose's lease lapse for a moment (it then says `duck … goose=none`): every round
    // must be safe, and one of up to three must match exactly.
    let mut exact = false;
    for _ in 0..3 {
        let goose_id = flock.nodes[goose].id;
        // All at once: each nc waits a second for more.
        let probes: Vec<_> = all
            .iter()
            .map(|&i| nc("whois-goose", flock.port(i)))
            .collect();
        let crlf = nc("whois-goose  \\r\\n", flock.port(goose));
        let status = nc("ctl status", flock.port(goose));
        let mut matches = true;
        let mut geese = 0;
        for (index, probe) in probes.into_iter().enumerate() {
            let (code, stdout, stderr) = probe.join().expect("nc thread");
            assert_eq!(code, Some(0), "nc (netcat-openbsd is required): {stderr}");
            let probe = Probe::parse(stdout.as_bytes()).unwrap_or_else(|e| panic!("nc: {e}"));
            assert_eq!(probe.id, flock.nodes[index].id, "{}", probe.line);
            assert!(probe.term >= term, "{}", probe.line);
            if probe.goose {
                geese += 1;
            }
            matches &= probe.goose == (index == goose)
                && probe.term == term
                && probe.leader == Some(goose_id);
        }
        assert!(geese <= 1, "two geese answered nc");
        let (_, crlf, _) = crlf.join().expect("nc thread");
        let crlf = Probe::parse(crlf.as_bytes()).unwrap_or_else(|e| panic!("nc \\r\\n: {e}"));
        assert_eq!(crlf.id, goose_id, "trailing spaces and \\r\\n are ignored");
        matches &= crlf.goose;
        let (_, status, _) = status.join().expect("nc thread");
        assert!(
            status.starts_with("ok role="),
            "ctl status over nc: {status:?}"
        );
        assert!(
            status.ends_with('\n') && status.lines().count() == 1,
            "{status:?}"
        );
        matches &= status.starts_with("ok role=goose ");
        if matches {
            exact = true;
            break;
        }
        (goose, term) = flock.wait_agreed(&all, SETTLE_WITHIN);
    }
    assert!(exact, "nc never saw what the Rust probes saw");
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

/// Sends every datagram to node `index` from one socket, quickly; returns how many were sent.
fn spray(flock: &Flock, index: usize, datagrams: &[Vec<u8>]) {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("socket");
    for datagram in datagrams {
        socket
            .send_to(datagram, flock.addr(index))
            .expect("send junk");
    }
}

/// A peer frame header: magic, version, source and target ids (little-endian).
fn header(magic: u8, version: u8, source: u16, target: u16) -> Vec<u8> {
    let mut frame = vec![magic, version];
    frame.extend(source.to_le_bytes());
    frame.extend(target.to_le_bytes());
    frame
}

#[test]
fn bad_input_is_dropped_and_counted_and_the_goose_keeps_its_role_and_term() {
    let _serial = one_flock_at_a_time();
    let flock = flock_tests::procs::Flock::start_with(
        5,
        Timing::DEFAULT,
        &["--control-token", "sesame"],
        procs::OnViolation::Panic,
    );
    let all = flock.all();
    let (goose, term) = flock.wait_agreed(&all, COLD_START_WITHIN);
    let goose_id = flock.nodes[goose].id;
    let peer_id = flock.nodes[(goose + 1) % 5].id;
    let before = flock.status(goose);

    // Random bytes: binary ones (first byte >= 0x80) are counted by the core, text ones get
    // `err unknown-command` or nothing. Seeded, so a failure replays.
    let mut rand = Rand::new(0x0060_05e5_eed5);
    let random: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            let size = rand.range_inclusive(1, 700) as usize;
            (0..size).map(|_| rand.next_u64() as u8).collect()
        })
        .collect();
    let random_binary = random.iter().filter(|d| d[0] >= 0x80).count() as u64;
    spray(&flock, goose, &random);

    let mut oversized = header(0xD9, VERSION, peer_id, goose_id);
    oversized.resize(509, 0);
    let mut far_oversized = header(0xD9, VERSION, peer_id, goose_id);
    far_oversized.resize(1400, 0xAA);
    let mut garbage_body = header(0xD9, VERSION, peer_id, goose_id);
    garbage_body.extend([0xFF; 40]);
    let mut bad_magic = header(0x80, VERSION, peer_id, goose_id);
    bad_magic.extend([0; 8]);
    let mut bad_version = header(0xD9, VERSION + 1, peer_id, goose_id);
    bad_version.extend([0; 8]);
    let frames = vec![
        vec![0xD9],
        vec![0xD9, VERSION],
        vec![0xD9, VERSION, 0x02, 0x00, 0x01],
        oversized,
        far_oversized,
        header(0xD9, VERSION, peer_id, goose_id),
        garbage_body,
        bad_magic,
        bad_version,
    ];
    spray(&flock, goose, &frames);

    let quiet = Duration::from_millis(300);
    for text in ["hello", "whois-goose please", "WHOIS-GOOSE", "\u{1}\u{2}"] {
        let reply = send(&flock, goose, text.as_bytes(), Duration::from_secs(1));
        assert_eq!(reply.as_deref(), Some("err unknown-command\n"), "{text:?}");
    }
    let reply = send(
        &flock,
        goose,
        b"hi \xc3\x28 not utf-8",
        Duration::from_secs(1),
    );
    assert_eq!(
        reply.as_deref(),
        Some("err unknown-command\n"),
        "invalid UTF-8 text"
    );
    // Text that is itself a reply gets nothing, so two nodes can never bounce replies.
    for text in [
        "goose id=9 term=99 goose=9\n",
        "duck id=1 term=1 goose=none",
        "ok",
        "err x",
    ] {
        assert_eq!(
            send(&flock, goose, text.as_bytes(), quiet),
            None,
            "{text:?}"
        );
    }
    let reply = send(&flock, goose, b"ctl frobnicate", Duration::from_secs(1));
    assert!(
        reply.as_deref().is_some_and(|r| r.starts_with("err ")),
        "{reply:?}"
    );
    // Loopback never needs the token, so a wrong one from loopback is no reason to refuse
    // (a non-loopback source cannot be tested here: this machine may only send to
    // loopback; node-std's unit tests cover `err forbidden`).
    for token in ["wrong", "sesame"] {
        let reply = send(
            &flock,
            goose,
            format!("ctl token={token} status").as_bytes(),
            quiet,
        );
        assert!(
            reply.as_deref().is_some_and(|r| r.starts_with("ok ")),
            "{token}: {reply:?}"
        );
    }

    // Still up, still goose, same term, and the flock never noticed.
    thread::sleep(Duration::from_millis(100));
    let mut flock = flock;
    for index in flock.all() {
        assert!(
            flock.running(index),
            "node {} died:\n{}",
            index + 1,
            flock.log_tail(index)
        );
    }
    assert_eq!(
        flock.wait_agreed(&all, Duration::from_secs(1)),
        (goose, term)
    );
    let after = flock.status(goose);
    let delta = |name: &str| counter(&after, name) - counter(&before, name);
    assert!(delta("drop_long") >= 2, "drop_long {}", delta("drop_long"));
    assert!(
        delta("drop_short") >= 3,
        "drop_short {}",
        delta("drop_short")
    );
    assert!(
        delta("drop_magic") >= 1,
        "drop_magic {}",
        delta("drop_magic")
    );
    assert!(
        delta("drop_version") >= 1,
        "drop_version {}",
        delta("drop_version")
    );
    assert!(
        delta("drop_undecodable") >= 2,
        "drop_undecodable {}",
        delta("drop_undecodable")
    );
    assert!(
        delta("text_unknown") >= 5,
        "text_unknown {}",
        delta("text_unknown")
    );
    let core_drops: u64 = [
        "drop_short",
        "drop_long",
        "drop_magic",
        "drop_version",
        "drop_undecodable",
        "drop_invalid",
        "drop_unknown_node",
        "drop_wrong_target",
    ]
    .iter()
    .map(|name| delta(name))
    .sum();
    assert!(
        core_drops >= random_binary + frames.len() as u64,
        "{core_drops} binary drops counted for {} sent",
        random_binary + frames.len() as u64
    );
    assert_eq!(delta("text_forbidden"), 0, "loopback control was refused");
}

// ---------------------------------------------------------------------------------------
// Start-up errors
// ---------------------------------------------------------------------------------------

fn run(args: &[String], within: Duration) -> procs::Outcome {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_goose(&args, within)
}

#[test]
fn bad_flags_exit_2_with_a_one_line_error_and_the_usage() {
    let folder = TempDir::new("flags");
    let port = free_ports(1)[0];
    let listen = format!("127.0.0.1:{port}");
    let dir = folder.path().join("1").display().to_string();
    let node = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["node", "--id", "1", "--listen", &listen, "--data-dir", &dir];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect()
    };
    let mut cases = vec![
        vec![
            "node".into(),
            "--id".into(),
            "0".into(),
            "--listen".into(),
            listen.clone(),
        ],
        vec![
            "node".into(),
            "--id".into(),
            "1".into(),
            "--listen".into(),
            "nowhere".into(),
        ],
        vec![
            "node".into(),
            "--id".into(),
            "65536".into(),
            "--listen".into(),
            listen.clone(),
        ],
        node(&["--peer", "x"]),
        node(&["--peer", "2=127.0.0.1"]),
        node(&["--peer", "2:127.0.0.1:9000"]),
        node(&["--peer", "0=127.0.0.1:9000"]),
        node(&["--election-timeout-ms", "300-150"]),
        node(&["--election-timeout-ms", "fast"]),
        node(&["--heartbeat-ms", "0"]),
        // At or above the lease: the goose would lose its lease between heartbeats.
        node(&["--heartbeat-ms", "200"]),
        node(&["--no-such-flag"]),
        vec!["whois".into(), "nowhere".into()],
        vec!["ctl".into(), "nowhere".into(), "status".into()],
    ];
    cases.push(vec!["cluster".into(), "--nodes".into(), "0".into()]);
    for args in cases {
        let outcome = run(&args, Duration::from_secs(5));
        assert_eq!(outcome.code(), Some(2), "{args:?}: {outcome:?}");
        let first = outcome.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: "),
            "{args:?}: one-line error first: {outcome:?}"
        );
        assert!(
            outcome.stderr.contains("Usage: goose"),
            "{args:?}: usage: {outcome:?}"
        );
    }
    assert!(
        !folder.path().join("1").join("lock").exists(),
        "a refused node touched its dir"
    );
}

#[test]
fn port_in_use_exits_1_with_a_clear_error() {
    let folder = TempDir::new("port");
    let port = free_ports(1)[0];
    let _taken = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("take the port");
    let mut args = node_args(1, port, &folder.path().join("1"));
    args.push("--single".into());
    let outcome = run(&args, Duration::from_secs(5));
    assert_eq!(outcome.code(), Some(1), "{outcome:?}");
    let message = outcome.stderr.to_lowercase();
    assert!(message.contains("in use"), "{outcome:?}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "names the address: {outcome:?}"
    );
}

#[test]
fn corrupt_state_file_is_refused_with_a_message_naming_it() {
    let folder = TempDir::new("corrupt");
    let dir = folder.path().join("1");
    let port = free_ports(1)[0];
    let mut args = node_args(1, port, &dir);
    args.push("--single".into());
    // A one-node flock elects itself and saves its term; the run ends in a kill -9.
    let first = run(&args, Duration::from_millis(1500));
    assert_eq!(
        first.status, None,
        "the first run should still be running: {first:?}"
    );
    let files: Vec<PathBuf> = fs::read_dir(&dir)
        .expect("data dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.is_file() && path.file_name().is_some_and(|n| n != "lock"))
        .filter(|path| fs::metadata(path).is_ok_and(|m| m.len() > 0))
        .collect();
    assert!(
        !files.is_empty(),
        "the node saved nothing in {}",
        dir.display()
    );
    let good: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).expect("read")).collect();

    type Corruption = fn(&mut Vec<u8>);
    let corruptions: [(&str, Corruption); 3] = [
        // A file is two slots, each with its header first: one slot's bad checksum is what
        // a save cut short leaves, and the node starts from the other (the storage's unit
        // tests cut a save at every byte). With both slots bad, nothing is left to trust.
        ("a flipped byte in each slot's header", |bytes| {
            let half = bytes.len() / 2;
            bytes[8] ^= 0x5A;
            bytes[half + 8] ^= 0x5A;
        }),
        ("truncated", |bytes| bytes.truncate(bytes.len() / 2)),
        ("text", |bytes| *bytes = b"term=7 vote=2\n".to_vec()),
    ];
    for (what, corrupt) in corruptions {
        for (file, bytes) in files.iter().zip(&good) {
            let mut bytes = bytes.clone();
            corrupt(&mut bytes);
            fs::write(file, bytes).expect("write");
        }
        let outcome = run(&args, Duration::from_secs(5));
        assert_eq!(outcome.code(), Some(1), "{what}: {outcome:?}");
        let named = files
            .iter()
            .any(|f| outcome.stderr.contains(&f.display().to_string()));
        assert!(named, "{what}: the message names the file: {outcome:?}");
        for (file, bytes) in files.iter().zip(&good) {
            assert_ne!(
                &fs::read(file).expect("read"),
                bytes,
                "{what}: the file was reset"
            );
        }
    }
}

#[test]
fn locked_data_dir_refuses_a_second_process() {
    let _serial = one_flock_at_a_time();
    let flock = Flock::start(1, Timing::DEFAULT);
    let (goose, term) = flock.wait_agreed(&[0], COLD_START_WITHIN);
    let port = free_ports(1)[0];
    let outcome = run(
        &node_args(2, port, &flock.nodes[0].data_dir),
        Duration::from_secs(5),
    );
    assert_eq!(outcome.code(), Some(1), "{outcome:?}");
    let message = outcome.stderr.to_lowercase();
    assert!(
        message.contains("lock") || message.contains("in use"),
        "{outcome:?}"
    );
    assert!(
        message.contains(&flock.nodes[0].data_dir.display().to_string()),
        "{outcome:?}"
    );
    assert_eq!(
        flock.wait_agreed(&[0], Duration::from_secs(1)),
        (goose, term)
    );
}
