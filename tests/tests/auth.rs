//! The authenticated flock with real `goose` processes on 127.0.0.1 (`--cluster-key-file`):
//! a keyed flock elects one goose and takes only signed control; a node with another key,
//! or none, cannot take part, and the flock counts its frames as drops; a keyed node killed
//! with `kill -9` comes back with a higher boot epoch and is heard again; a frame recorded
//! on a duck's port and sent twice is dropped as a replay; a keyed node joins with a signed
//! `ctl add`; a corrupt epoch file is refused; `goose keygen` and bad key files.
//!
//! Every node is a child process killed by pid when its flock drops; every wait is bounded;
//! every probe round is checked for two geese. The tests run one at a time (a lock), so one
//! flock's load does not slow another's elections on a small machine.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use flock_tests::procs::{
    self, free_ports, new_key_file, request, run_goose, signed_ctl, Flock, TempDir, Timing,
};

/// A cold start elects a goose within a few election timeouts; generous for a loaded
/// machine.
const SETTLE: Duration = Duration::from_secs(10);
/// How long an outsider (another key, or none) runs beside the flock: many election
/// timeouts (150–300 ms), so it would have disturbed the flock many times over if it could.
const OUTSIDER_RUNS: Duration = Duration::from_secs(3);
/// How long a one-shot `goose` run may take before it is killed.
const RUN_WITHIN: Duration = Duration::from_secs(10);
/// Replays a restarted sender may leave behind: frames of its previous boot still in
/// flight when it died (none on loopback, in practice).
const REPLAYS_AFTER_RESTART_MAX: u64 = 4;
/// The epoch file's name in a node's data dir, and its size (two slots).
const EPOCH_FILE: &str = "epoch";
const EPOCH_FILE_SIZE: usize = 8192;

fn one_flock_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn counter(status: &BTreeMap<String, String>, name: &str) -> u64 {
    status
        .get(name)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("status without a numeric {name}: {status:?}"))
}

fn term_in(status: &BTreeMap<String, String>) -> u64 {
    counter(status, "term")
}

/// The boot epoch in a node's data dir: the file is two slots of 4096 bytes, each a
/// 24-byte header (magic, version, length, sequence number at 12..20, checksum) and the
/// epoch; the slot with the higher sequence number holds the latest.
fn epoch(data_dir: &Path) -> u32 {
    let bytes = fs::read(data_dir.join(EPOCH_FILE)).expect("epoch file");
    assert_eq!(bytes.len(), EPOCH_FILE_SIZE, "epoch file size");
    let sequence = |slot: &[u8]| u64::from_le_bytes(slot[12..20].try_into().unwrap_or_default());
    let newest = bytes
        .chunks_exact(EPOCH_FILE_SIZE / 2)
        .filter(|slot| slot.starts_with(b"GEPOCH"))
        .max_by_key(|slot| sequence(slot))
        .expect("epoch file magic");
    u32::from_le_bytes([newest[24], newest[25], newest[26], newest[27]])
}

/// Sets the value after `flag` in `args` (adding both if missing), or removes both (`None`).
fn set_flag(args: &mut Vec<String>, flag: &str, value: Option<&str>) {
    if let Some(at) = args.iter().position(|arg| arg == flag) {
        args.drain(at..at + 2);
    }
    if let Some(value) = value {
        args.extend([flag.to_owned(), value.to_owned()]);
    }
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

/// Waits until `condition` holds, checking every 50 ms (a signed `ctl` is a `goose ctl`
/// child) for at most `within`.
fn eventually(within: Duration, condition: impl FnMut() -> bool) -> bool {
    procs::eventually(within, Duration::from_millis(50), condition)
}

/// A keyed flock of three, settled: its key folder (keep it alive), the flock, and the
/// goose's index and term.
fn keyed_flock() -> (TempDir, PathBuf, Flock, usize, u64) {
    let keys = TempDir::new("keys");
    let key = new_key_file(keys.path(), "flock.key");
    let flock = Flock::start_keyed(3, Timing::DEFAULT, &key);
    let (goose, term) = flock.wait_agreed(&flock.all(), SETTLE);
    (keys, key, flock, goose, term)
}

#[test]
fn keyed_flock_elects_one_goose_and_takes_only_signed_control() {
    let _serial = one_flock_at_a_time();
    let (_keys, key, flock, goose, term) = keyed_flock();
    for index in flock.all() {
        assert_eq!(epoch(&flock.nodes[index].data_dir), 1, "first boot");
        let status = flock.status(index);
        assert_eq!(term_in(&status), term, "node {}", index + 1);
        assert_eq!(status["goose"], flock.nodes[goose].id.to_string());
        for drop in ["drop_unsealed", "drop_bad_mac", "drop_senders"] {
            assert_eq!(counter(&status, drop), 0, "{drop}: {status:?}");
        }
    }
    // `goose ctl --cluster-key-file` straight from the binary, to a duck.
    let duck = (goose + 1) % flock.len();
    let reply = signed_ctl(&key, flock.addr(duck), "status").expect("a reply");
    assert!(reply.starts_with("ok role=duck "), "{reply}");
    // Unsigned control from loopback is refused, and a probe still answers.
    for index in flock.all() {
        let reply = request(flock.port(index), b"ctl status", Duration::from_secs(1));
        assert_eq!(reply.as_deref(), Some(&b"err forbidden\n"[..]));
        let reply = request(flock.port(index), b"ctl stop", Duration::from_secs(1));
        assert_eq!(reply.as_deref(), Some(&b"err forbidden\n"[..]));
    }
    let status = flock.status(duck);
    assert_eq!(counter(&status, "text_forbidden"), 2, "{status:?}");
    assert_eq!(status["state"], "running", "the unsigned stop did nothing");
    // A nonce is issued to anyone; it is good once.
    let nonce = request(flock.port(duck), b"ctl nonce", Duration::from_secs(1));
    let nonce = String::from_utf8(nonce.expect("a nonce")).expect("text");
    assert!(
        nonce.starts_with("ok nonce=") && nonce.len() == 26,
        "{nonce:?}"
    );
    // Signed `transfer` on a duck: followed to the goose, which hands off.
    let reply = signed_ctl(&key, flock.addr(duck), "transfer").expect("a reply");
    assert!(reply.starts_with("ok to="), "{reply}");
    let (_, after) = flock.wait_agreed(&flock.all(), SETTLE);
    assert!(after > term, "a handoff takes a new term");
}

/// Replaces a duck with a node started by `change` (same id, port and data dir) and
/// checks, while it runs, that the others keep their goose and term and count its frames
/// under `drop`.
fn outsider_cannot_take_part(drop: &str, change: impl FnOnce(&mut Vec<String>)) {
    let _serial = one_flock_at_a_time();
    let (_keys, _key, mut flock, goose, term) = keyed_flock();
    let outsider = (goose + 1) % 3;
    let others: Vec<usize> = flock.all().into_iter().filter(|&i| i != outsider).collect();
    flock.kill9(outsider);
    change(flock.args_mut(outsider));
    flock.restart(outsider);
    let started = Instant::now();
    let counted = eventually(OUTSIDER_RUNS, || {
        others
            .iter()
            .all(|&other| counter(&flock.status(other), drop) > 0)
    });
    assert!(counted, "the others never counted {drop}");
    thread::sleep(OUTSIDER_RUNS.saturating_sub(started.elapsed()));
    assert!(flock.running(outsider), "the outsider still runs");
    for &other in &others {
        let status = flock.status(other);
        assert_eq!(term_in(&status), term, "node {}: {status:?}", other + 1);
        assert_eq!(status["goose"], flock.nodes[goose].id.to_string());
        assert!(counter(&status, drop) > 0, "{drop}: {status:?}");
    }
    let round = flock.probe_round(&flock.all(), Duration::from_millis(200));
    assert_eq!(round.geese(), [goose], "{round}");
    let outsider_probe = round.reply(outsider).expect("the outsider answers probes");
    assert_eq!(outsider_probe.leader, None, "it follows nobody: {round}");
}

#[test]
fn a_node_with_another_key_cannot_take_part() {
    let keys = TempDir::new("other-key");
    let other = path_text(&new_key_file(keys.path(), "other.key"));
    outsider_cannot_take_part("drop_bad_mac", |args| {
        set_flag(args, "--cluster-key-file", Some(&other));
    });
}

#[test]
fn a_node_without_a_key_cannot_take_part() {
    outsider_cannot_take_part("drop_unsealed", |args| {
        set_flag(args, "--cluster-key-file", None);
    });
}

#[test]
fn keyed_node_killed_and_restarted_takes_a_higher_epoch_and_is_heard_again() {
    let _serial = one_flock_at_a_time();
    let (_keys, _key, mut flock, goose, _) = keyed_flock();
    // The goose: the others must elect another, then hear the old goose's new boot.
    let others: Vec<usize> = flock.all().into_iter().filter(|&i| i != goose).collect();
    let before = epoch(&flock.nodes[goose].data_dir);
    flock.kill9(goose);
    let (new_goose, _) = flock.wait_agreed(&others, SETTLE);
    flock.restart(goose);
    let (agreed, term) = flock.wait_agreed(&flock.all(), SETTLE);
    assert_eq!(agreed, new_goose, "the restarted node is a duck");
    assert_eq!(epoch(&flock.nodes[goose].data_dir), before + 1);
    // Its frames are accepted: the goose can hand off to it (only to a caught-up voter,
    // which acknowledged its appends), and it wins the votes of the others.
    let id = flock.nodes[goose].id;
    let reply = flock.ctl(new_goose, &format!("transfer {id}"));
    assert_eq!(reply, Some(format!("ok to={id}")));
    let (handed, after) = flock.wait_agreed(&flock.all(), SETTLE);
    assert_eq!(handed, goose, "the restarted node is goose");
    assert!(after > term);
    // No replays keep coming: a second window counts none.
    let replays = |flock: &Flock| -> u64 {
        flock
            .all()
            .iter()
            .map(|&i| counter(&flock.status(i), "drop_replay"))
            .sum()
    };
    let first = replays(&flock);
    assert!(first <= REPLAYS_AFTER_RESTART_MAX, "{first} replays");
    thread::sleep(Duration::from_secs(1));
    assert_eq!(replays(&flock), first, "replays keep coming");
    for index in flock.all() {
        let status = flock.status(index);
        assert_eq!(counter(&status, "drop_bad_mac"), 0, "{status:?}");
    }
}

#[test]
fn a_recorded_frame_is_dropped_as_a_replay() {
    let _serial = one_flock_at_a_time();
    let (_keys, _key, mut flock, goose, term) = keyed_flock();
    // Stand in for a duck on its port and record what the goose sends it.
    let duck = (goose + 1) % 3;
    flock.kill9(duck);
    let recorder = UdpSocket::bind(flock.addr(duck)).expect("the duck's port");
    let deadline = Instant::now() + Duration::from_secs(2);
    let frame = loop {
        let datagram = procs::receive(&recorder, deadline).expect("a frame from the goose");
        if datagram.first().is_some_and(|&byte| byte >= 0x80) {
            break datagram;
        }
    };
    drop(recorder);
    flock.restart(duck);
    flock.wait_agreed(&flock.all(), SETTLE);
    let before = counter(&flock.status(duck), "drop_replay");
    // Sent twice: at most the first can be taken (a frame the duck never saw, within its
    // window), never the second.
    let injector = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("socket");
    for _ in 0..2 {
        injector.send_to(&frame, flock.addr(duck)).expect("send");
    }
    let counted = eventually(Duration::from_secs(2), || {
        counter(&flock.status(duck), "drop_replay") > before
    });
    assert!(counted, "the replayed frame was not dropped as a replay");
    let (_, after) = flock.wait_agreed(&flock.all(), SETTLE);
    assert_eq!(after, term, "the replay changed nothing");
}

#[test]
fn keyed_node_joins_with_a_signed_request() {
    let _serial = one_flock_at_a_time();
    let (_keys, key, mut flock, goose, _) = keyed_flock();
    let duck = (goose + 1) % 3;
    let port = free_ports(1)[0];
    // Through a duck: it redirects to the goose, which gets a signed `ctl add`.
    let args = [
        "--join".to_owned(),
        flock.addr(duck).to_string(),
        "--cluster-key-file".to_owned(),
        path_text(&key),
    ];
    let joiner = flock.spawn_node(4, port, &args);
    let joined = eventually(SETTLE, || {
        flock
            .ctl(goose, "status")
            .is_some_and(|status| status.contains(" members=1,2,3,4 "))
    });
    assert!(joined, "node 4 never joined:\n{}", flock.log_tail(joiner));
    flock.wait_agreed(&flock.all(), SETTLE);
}

#[test]
fn corrupt_epoch_file_is_refused_and_left_as_it_is() {
    let folder = TempDir::new("epoch");
    let dir = folder.path().join("1");
    let port = free_ports(1)[0];
    let args: Vec<String> = [
        "node",
        "--id",
        "1",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &path_text(&dir),
        "--single",
    ]
    .map(str::to_owned)
    .to_vec();
    let run = |within| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_goose(&args, within)
    };
    // Without a key too: the epoch is bumped at every start.
    let first = run(Duration::from_millis(1500));
    assert_eq!(first.status, None, "still running: {first:?}");
    assert_eq!(epoch(&dir), 1);
    let path = dir.join(EPOCH_FILE);
    let good = fs::read(&path).expect("epoch file");
    let mut flipped = good.clone();
    flipped[17] ^= 0x01;
    for bad in [flipped, good[..10].to_vec(), b"2\n".to_vec(), Vec::new()] {
        fs::write(&path, &bad).expect("write");
        let outcome = run(RUN_WITHIN);
        assert_eq!(outcome.code(), Some(1), "{outcome:?}");
        assert!(
            outcome.stderr.contains(&path_text(&path)),
            "names the file: {outcome:?}"
        );
        assert!(outcome.stderr.contains("epoch"), "{outcome:?}");
        assert_eq!(fs::read(&path).expect("read"), bad, "left as it was");
    }
    fs::write(&path, &good).expect("write");
    let again = run(Duration::from_millis(1000));
    assert_eq!(again.status, None, "starts again: {again:?}");
    assert_eq!(epoch(&dir), 2);
}

#[test]
fn keygen_makes_distinct_keys_and_bad_key_files_are_refused() {
    let keys: Vec<String> = (0..2)
        .map(|_| {
            let outcome = run_goose(&["keygen"], RUN_WITHIN);
            assert_eq!(outcome.code(), Some(0), "{outcome:?}");
            outcome.stdout
        })
        .collect();
    for key in &keys {
        assert_eq!(key.len(), 65, "{key:?}");
        assert!(key.ends_with('\n'));
        assert!(key[..64]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }
    assert_ne!(keys[0], keys[1]);

    let folder = TempDir::new("keygen");
    let out = new_key_file(folder.path(), "flock.key");
    let mode = fs::metadata(&out).expect("key file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let written = fs::read(&out).expect("key file");
    let again = run_goose(&["keygen", "--out", &path_text(&out)], RUN_WITHIN);
    assert_eq!(again.code(), Some(1), "{again:?}");
    assert!(again.stderr.contains("exists"), "{again:?}");
    assert_eq!(
        fs::read(&out).expect("key file"),
        written,
        "not overwritten"
    );

    let help = run_goose(&["keygen", "--help"], RUN_WITHIN);
    assert!(help.stdout.contains("goose keygen > flock.key"), "{help:?}");
    assert!(help.stdout.contains("--cluster-key-file flock.key"));

    let bad = folder.path().join("bad.key");
    let missing = path_text(&folder.path().join("missing.key"));
    let port = free_ports(1)[0];
    let listen = format!("127.0.0.1:{port}");
    let data_dir = path_text(&folder.path().join("1"));
    for content in [&b"not a key\n"[..], &keys[0].as_bytes()[..40], &[0xFF; 31]] {
        fs::write(&bad, content).expect("write");
        let bad_text = path_text(&bad);
        for (file, what) in [(&bad_text, "malformed"), (&missing, "missing")] {
            let node = [
                "node",
                "--id",
                "1",
                "--listen",
                &listen,
                "--data-dir",
                &data_dir,
                "--cluster-key-file",
                file,
            ];
            let ctl = ["ctl", "--cluster-key-file", file, &listen, "status"];
            for args in [&node[..], &ctl[..]] {
                let outcome = run_goose(args, RUN_WITHIN);
                assert_eq!(outcome.code(), Some(2), "{what} {args:?}: {outcome:?}");
                let error = outcome
                    .stderr
                    .lines()
                    .find(|line| line.starts_with("error:"))
                    .unwrap_or_else(|| panic!("no error line: {outcome:?}"));
                assert!(error.contains(file.as_str()), "names the file: {error}");
            }
        }
    }
    assert!(
        !Path::new(&data_dir).exists(),
        "a node refused for its key touches no data dir"
    );
}
