//! The lease's assumptions, broken on purpose with real `goose` processes on 127.0.0.1 (the
//! simulator's versions are in `tests/assumptions.rs`). Each test asserts a figure the
//! node broke before the core enforced that assumption:
//!
//! - **Mixed timing**: a goose with a longer election timeout than its ducks, cut off from
//!   them, answers `goose` to no probe sent after another node answered `goose` in a higher
//!   term (the ducks stay loyal for the goose's window, not their own shorter one); and a
//!   duck with a much shorter timeout stays loyal to a goose cut off from the other duck.
//! - **Removal with a learner waiting**: a removed voter exits 0 and never campaigns, even
//!   while a learner is promoted into its place.
//! - **Remove, restart, add again**: a node removed, restarted on its data dir and added
//!   back keeps running as a voter, and does not report its removal a second time.
//! - **Fail-stop**: a node whose storage fails answers nothing more (no `ok` for a change
//!   it could not save, no probe showing a term it could not save) and exits non-zero.
//! - **`ctl partition` and an uncommitted removal**: a goose still drops the frames of a
//!   member whose removal it appended but could not commit.
//!
//! Every probe round also checks the harness's promises (never two geese in a round, no
//! term going back, one goose per term). Flocks run one at a time ([`one_flock_at_a_time`]):
//! the timing figures mean little on two shared cores otherwise. Every wait is bounded;
//! every child is killed by pid when its flock is dropped, also on panic.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use flock_tests::procs::{self, free_ports, Flock, OnViolation, Round, Timing};

/// How long a flock gets to agree on one goose after a start, restart, heal or handoff.
const SETTLE_WITHIN: Duration = Duration::from_secs(5);
/// How long the nodes left with a majority get to elect a goose after a cut.
const ELECT_WITHIN: Duration = Duration::from_secs(4);
/// The pace of the probes around a cut: every node, every millisecond.
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// How long one probe round waits for the replies of nodes that may be silent.
const PROBE_WINDOW: Duration = Duration::from_millis(20);
/// A goose with twice the default window: its ducks must stay loyal 300 ms, not 150.
const LONG: Timing = Timing {
    heartbeat_ms: 50,
    election_timeout_ms_min: 300,
    election_timeout_ms_max: 600,
};
/// A duck whose own window (30 ms) is shorter than the default goose's heartbeat interval.
const SHORT: Timing = Timing {
    heartbeat_ms: 10,
    election_timeout_ms_min: 30,
    election_timeout_ms_max: 60,
};
/// Cuts of a long-timing goose.
const LONG_GOOSE_TRIALS: usize = 5;
/// Removals of a duck voter while a learner waits.
const REMOVAL_TRIALS: u16 = 10;
/// The bound on a removed node's exit after `ctl remove`.
const REMOVED_EXIT_WITHIN: Duration = Duration::from_secs(3);
/// Frames from non-members a goose may count around a removal: the few a removed node had
/// in flight, or sent between its removal committing and it hearing so.
const UNKNOWN_FRAMES_MAX: u64 = 5;
/// The bound on a node's exit after its storage failed.
const FAILED_EXIT_WITHIN: Duration = Duration::from_secs(2);
/// How long a re-added node must keep running.
const KEEPS_RUNNING_FOR: Duration = Duration::from_secs(2);
/// What a node logs when it learns it was removed (node-std's event loop).
const REMOVED_LOG: &str = "removed from the flock";

fn one_flock_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn id(flock: &Flock, index: usize) -> u16 {
    flock.nodes[index].id
}

fn index_of(flock: &Flock, id: u16) -> usize {
    flock
        .nodes
        .iter()
        .position(|node| node.id == id)
        .unwrap_or_else(|| panic!("no node {id} in the flock"))
}

/// A number of a `ctl status` (`term`, a counter).
fn number(status: &BTreeMap<String, String>, name: &str) -> u64 {
    status
        .get(name)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("ctl status has no number {name}=: {status:?}"))
}

/// The ids of a `ctl status` list (`voters=1,2,3`; empty when none).
fn ids(status: &BTreeMap<String, String>, name: &str) -> Vec<u16> {
    procs::ids(status, name)
        .unwrap_or_else(|| panic!("ctl status has no list of ids {name}=: {status:?}"))
}

/// Node `index`'s `ctl status` pairs from one datagram, waiting at most `timeout`; `None`
/// if it did not answer `ok …` (it may be exiting). Unlike [`Flock::status`] it never waits
/// the full control timeout, so a node can be polled every few milliseconds.
fn quick_status(
    flock: &Flock,
    index: usize,
    timeout: Duration,
) -> Option<BTreeMap<String, String>> {
    let reply = procs::request(flock.port(index), b"ctl status", timeout)?;
    procs::parse_status(&String::from_utf8_lossy(&reply))
}

/// Polls node `index`'s status every 10 ms until `done` accepts it; panics after `within`.
fn wait_status(
    flock: &Flock,
    index: usize,
    within: Duration,
    what: &str,
    mut done: impl FnMut(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(status) = quick_status(flock, index, Duration::from_millis(100)) {
            if done(&status) {
                return status;
            }
            last = Some(status);
        }
        thread::sleep(Duration::from_millis(10));
    }
    panic!(
        "node {}: not {what} within {within:?}; last status {last:?}",
        id(flock, index)
    );
}

/// Sends a membership change (`add …`, `remove …`) to node `index` and expects `ok`; waits
/// out `err busy`, the answer while the previous change (a join, say) is uncommitted.
fn change(flock: &Flock, index: usize, command: &str) {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let reply = flock.ctl(index, command);
        if reply.as_deref() != Some("err busy") || Instant::now() >= deadline {
            ok(reply, command);
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn ok(reply: Option<String>, what: &str) {
    assert_eq!(reply.as_deref(), Some("ok"), "{what}");
}

// ---------------------------------------------------------------------------------------
// Probing around a cut
// ---------------------------------------------------------------------------------------

/// One `goose` answer: who, in which term, when its probe left and when the answer came.
#[derive(Clone, Copy, Debug)]
struct GooseAnswer {
    index: usize,
    term: u64,
    sent: Instant,
    received: Instant,
}

/// Probes `indices` every [`PROBE_EVERY`] until `stop` accepts the goose answers so far
/// (checked after each round) or `within` has passed; returns every `goose` answer.
fn probe_geese(
    flock: &Flock,
    indices: &[usize],
    within: Duration,
    mut stop: impl FnMut(&[GooseAnswer]) -> bool,
) -> Vec<GooseAnswer> {
    let started = Instant::now();
    let mut answers = Vec::new();
    while started.elapsed() < within {
        let round_start = Instant::now();
        let round = flock.probe_round(indices, PROBE_WINDOW);
        record_geese(&round, &mut answers);
        if stop(&answers) {
            break;
        }
        if let Some(rest) = PROBE_EVERY.checked_sub(round_start.elapsed()) {
            thread::sleep(rest);
        }
    }
    answers
}

fn record_geese(round: &Round, answers: &mut Vec<GooseAnswer>) {
    for (index, reply) in round.replies.iter().enumerate() {
        if let Some((probe, received)) = reply {
            if probe.goose {
                answers.push(GooseAnswer {
                    index,
                    term: probe.term,
                    sent: round.sent,
                    received: *received,
                });
            }
        }
    }
}

/// The goose answers that break linearizability: a `goose` answer to a probe sent after
/// another `goose` answer of a higher term was received. A client that saw the newer goose
/// and then asked again must never be told the older one still holds.
fn stale_geese(flock: &Flock, answers: &[GooseAnswer], origin: Instant) -> Vec<String> {
    let at = |instant: Instant| instant.saturating_duration_since(origin).as_micros() as f64 / 1e3;
    let mut stale = Vec::new();
    for old in answers {
        let newer = answers
            .iter()
            .filter(|newer| newer.term > old.term && newer.received < old.sent)
            .min_by_key(|newer| newer.received);
        if let Some(newer) = newer {
            stale.push(format!(
                "node {} answered goose (term {}) to a probe sent at +{:.1} ms, after node {} \
                 had answered goose in term {} at +{:.1} ms",
                id(flock, old.index),
                old.term,
                at(old.sent),
                id(flock, newer.index),
                newer.term,
                at(newer.received)
            ));
        }
    }
    stale
}

/// Makes node `target` the goose with `ctl transfer <id>`, and waits until every node in
/// `among` follows it.
fn make_goose(flock: &Flock, among: &[usize], target: usize) -> u64 {
    for _ in 0..5 {
        let (goose, term) = flock.wait_agreed(among, SETTLE_WITHIN);
        if goose == target {
            return term;
        }
        let reply = flock.ctl(goose, &format!("transfer {}", id(flock, target)));
        // Anything but `ok to=…` (the goose lost its lease meanwhile, the target was not
        // caught up yet): the next turn asks whoever is goose then.
        if reply
            .as_deref()
            .is_some_and(|reply| reply.starts_with("ok"))
        {
            let waited = flock.wait_until(among, SETTLE_WITHIN, Duration::from_millis(5), |r| {
                r.agreed(among).is_some_and(|(goose, _)| goose == target)
            });
            if let Ok(round) = waited {
                return round.agreed(among).map_or(0, |(_, term)| term);
            }
        }
    }
    panic!("node {} did not become goose", id(flock, target));
}

fn partition(flock: &Flock, index: usize, peers: &[usize]) {
    let named: Vec<String> = peers.iter().map(|&p| id(flock, p).to_string()).collect();
    let reply = flock.ctl(index, &format!("partition {}", named.join(",")));
    ok(reply, &format!("partition on node {}", id(flock, index)));
}

fn heal(flock: &Flock, indices: &[usize]) {
    for &index in indices {
        ok(flock.ctl(index, "heal"), "heal");
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1e3
}

// ---------------------------------------------------------------------------------------
// (a) Mixed timing
// ---------------------------------------------------------------------------------------

/// A 3-node flock at default timing (150–300 ms); one duck restarted with 300–600 ms is
/// made goose and cut off from the other two, five times. Its lease (267 ms) relies on the
/// others staying loyal 300 ms after its last heartbeat, its window, not their own 150 ms.
/// Before the core carried the goose's window in its frames, the others elected a goose
/// 155–250 ms after the cut while the cut-off one still answered goose up to 265 ms after
/// it, every time.
#[test]
fn a_cut_off_goose_with_longer_timing_is_never_goose_after_a_newer_one() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start(3, Timing::DEFAULT);
    let all = flock.all();
    let (goose, _) = flock.wait_agreed(&all, SETTLE_WITHIN);
    let long = (goose + 1) % 3;
    flock.kill9(long);
    flock.set_timing(long, LONG);
    flock.restart(long);
    flock.wait_agreed(&all, SETTLE_WITHIN);
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != long).collect();

    for trial in 1..=LONG_GOOSE_TRIALS {
        let term = make_goose(&flock, &all, long);
        let cut = Instant::now();
        partition(&flock, long, &rest);
        for &index in &rest {
            partition(&flock, index, &[long]);
        }
        // Until the others have had a goose for longer than the cut-off one's lease could
        // last, and the old lease is over anyway.
        let long_lease = LONG.lease() + Duration::from_millis(100);
        let answers = probe_geese(&flock, &all, ELECT_WITHIN, |answers| {
            let first_new = answers
                .iter()
                .find(|a| a.index != long && a.term > term)
                .map(|a| a.received);
            first_new.is_some_and(|at| at.elapsed() > long_lease && cut.elapsed() > long_lease)
        });
        let stale = stale_geese(&flock, &answers, cut);
        assert!(
            stale.is_empty(),
            "trial {trial}: the cut-off goose (node {}, {LONG}) answered goose after a newer \
             goose:\n{}",
            id(&flock, long),
            stale.join("\n")
        );
        let last_old = answers
            .iter()
            .filter(|a| a.index == long)
            .map(|a| a.received)
            .max();
        let first_new = answers
            .iter()
            .find(|a| a.index != long && a.term > term)
            .unwrap_or_else(|| {
                panic!(
                    "trial {trial}: nodes {:?} elected no goose within {ELECT_WITHIN:?} of \
                     the cut",
                    rest.iter().map(|&i| id(&flock, i)).collect::<Vec<_>>()
                )
            });
        println!(
            "trial {trial}: cut-off goose last answered goose at +{:.1} ms; node {} goose \
             (term {}) from +{:.1} ms; {} goose answers",
            last_old.map_or(f64::NAN, |at| ms(at.saturating_duration_since(cut))),
            id(&flock, first_new.index),
            first_new.term,
            ms(first_new.received.saturating_duration_since(cut)),
            answers.len()
        );
        heal(&flock, &all);
        flock.wait_agreed(&all, SETTLE_WITHIN);
    }
}

/// The symmetric case: a duck restarted with 30–60 ms (heartbeat 10 ms) sits between the
/// default goose and the other duck, which are cut from each other. The goose heartbeats
/// every 50 ms, longer than the short duck's own window: before the core carried the
/// goose's window, the short duck was free to vote for the other duck between heartbeats
/// while the goose's lease, which counted on its acknowledgement, still held.
#[test]
fn a_short_timing_duck_between_a_goose_and_a_cut_off_duck_keeps_one_goose() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start(3, Timing::DEFAULT);
    let all = flock.all();
    let (goose, _) = flock.wait_agreed(&all, SETTLE_WITHIN);
    let short = (goose + 1) % 3;
    flock.kill9(short);
    flock.set_timing(short, SHORT);
    flock.restart(short);
    let (goose, term) = flock.wait_agreed(&all, SETTLE_WITHIN);
    let (goose, term) = if goose == short {
        // The restart cost the goose its place: hand it to a default-timing node.
        let target = (short + 1) % 3;
        (target, make_goose(&flock, &all, target))
    } else {
        (goose, term)
    };
    let other = all
        .iter()
        .copied()
        .find(|&i| i != goose && i != short)
        .expect("three nodes");

    let cut = Instant::now();
    partition(&flock, goose, &[other]);
    partition(&flock, other, &[goose]);
    let answers = probe_geese(&flock, &all, Duration::from_secs(2), |_| false);
    let stale = stale_geese(&flock, &answers, cut);
    assert!(
        stale.is_empty(),
        "the goose (node {}) answered goose after a newer goose:\n{}",
        id(&flock, goose),
        stale.join("\n")
    );
    // The goose reaches a majority (itself and the short duck) every heartbeat, 50 ms, well
    // within the 150 ms the short duck owes it: nobody may be elected meanwhile.
    let terms: std::collections::BTreeSet<u64> = answers.iter().map(|a| a.term).collect();
    let geese: std::collections::BTreeSet<u16> =
        answers.iter().map(|a| id(&flock, a.index)).collect();
    let statuses: Vec<(u16, u64)> = all
        .iter()
        .map(|&index| (id(&flock, index), number(&flock.status(index), "term")))
        .collect();
    assert!(
        geese == [id(&flock, goose)].into()
            && terms == [term].into()
            && statuses.iter().all(|&(_, t)| t == term),
        "node {} ({SHORT}) let the goose (node {}, term {term}) be deposed while it heard \
         it every 50 ms: goose answers from nodes {geese:?} in terms {terms:?}; terms now \
         {statuses:?}",
        id(&flock, short),
        id(&flock, goose)
    );
    println!(
        "goose node {} (term {term}) cut from node {}; node {} at {SHORT}: {} goose answers \
         over 2 s, all from the goose in its term",
        id(&flock, goose),
        id(&flock, other),
        id(&flock, short),
        answers.len()
    );
    heal(&flock, &all);
    flock.wait_agreed(&all, SETTLE_WITHIN);
}

// ---------------------------------------------------------------------------------------
// (b) Removal with a learner waiting
// ---------------------------------------------------------------------------------------

/// Five voters (`--voters 5`) and a sixth node joined as a learner, waiting to be promoted
/// should the voters fall below five; `ctl remove` of a duck voter, ten times (a new
/// learner joins before each). The removed node must exit 0 within 3 s and never show
/// `raft=candidate` meanwhile, and the goose must count next to no frames from a
/// non-member. Before only voters of their latest membership campaigned, the removed node
/// showed `raft=learner` for ~200 ms and then `raft=candidate` for good, every time.
#[test]
fn a_removed_voter_exits_0_and_never_campaigns_while_a_learner_is_promoted() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start_with(5, Timing::DEFAULT, &["--voters", "5"], OnViolation::Panic);
    let mut running = flock.all();
    for trial in 0..REMOVAL_TRIALS {
        let (goose, _) = flock.wait_agreed(&running, SETTLE_WITHIN);
        let learner_id = 6 + trial;
        let port = free_ports(1)[0];
        let mut args = vec![
            "--join".to_owned(),
            flock.addr(goose).to_string(),
            "--voters".to_owned(),
            "5".to_owned(),
        ];
        args.extend(Timing::DEFAULT.flags());
        let learner = flock.spawn_node(learner_id, port, &args);
        let status = wait_status(&flock, goose, SETTLE_WITHIN, "listing the learner", |s| {
            ids(s, "learners").contains(&learner_id)
        });
        running.push(learner);
        let voters = ids(&status, "voters");
        assert_eq!(
            voters.len(),
            5,
            "trial {trial}: voters before removal: {status:?}"
        );
        assert_eq!(ids(&status, "learners"), [learner_id], "trial {trial}");
        let goose_id = id(&flock, goose);
        let victim_id = *voters
            .iter()
            .find(|&&v| v != goose_id)
            .expect("a duck voter");
        let victim = index_of(&flock, victim_id);
        let unknown_before = number(&status, "drop_unknown_node");

        change(&flock, goose, &format!("remove {victim_id}"));
        let removed = Instant::now();
        let mut polls = 0;
        let mut roles = std::collections::BTreeSet::new();
        let exit = loop {
            if let Some(exit) = flock.exit_status(victim) {
                break exit;
            }
            assert!(
                removed.elapsed() < REMOVED_EXIT_WITHIN,
                "trial {trial}: removed node {victim_id} still runs {:?} after `ctl remove` \
                 (roles seen: {roles:?}):\n{}",
                removed.elapsed(),
                flock.log_tail(victim)
            );
            if let Some(status) = quick_status(&flock, victim, Duration::from_millis(50)) {
                polls += 1;
                let raft = status.get("raft").cloned().unwrap_or_default();
                assert_ne!(
                    raft,
                    "candidate",
                    "trial {trial}: removed node {victim_id} campaigns {:?} after `ctl \
                     remove`: {status:?}",
                    removed.elapsed()
                );
                roles.insert(raft);
            }
            thread::sleep(Duration::from_millis(10));
        };
        let exited_after = removed.elapsed();
        assert_eq!(
            exit.code(),
            Some(0),
            "trial {trial}: removed node {victim_id} exit: {exit}\n{}",
            flock.log_tail(victim)
        );
        running.retain(|&i| i != victim);

        // The learner takes the free voter place.
        let status = wait_status(&flock, goose, SETTLE_WITHIN, "promoting the learner", |s| {
            ids(s, "voters").len() == 5 && ids(s, "voters").contains(&learner_id)
        });
        let unknown = number(&status, "drop_unknown_node") - unknown_before;
        assert!(
            unknown <= UNKNOWN_FRAMES_MAX,
            "trial {trial}: the goose dropped {unknown} frames from non-members after \
             removing node {victim_id}"
        );
        println!(
            "trial {trial}: node {victim_id} exited 0 after {:.1} ms ({polls} statuses, roles \
             {roles:?}); goose dropped {unknown} frames from non-members",
            ms(exited_after)
        );
    }
    flock.wait_agreed(&running, SETTLE_WITHIN);
}

// ---------------------------------------------------------------------------------------
// (c) Remove, restart, add again
// ---------------------------------------------------------------------------------------

/// A duck of three is removed (it exits 0), restarted with `goose node --data-dir <dir>
/// --listen <its addr>` and added back with `ctl add`. With two voters left and a target of five, it is
/// promoted: it must end a voter, still run 2 s later, and have logged its removal once.
/// Before a node reported its removal only from a whole leader log, it read the old
/// removal in its own log again once added, reported it a second time and exited.
#[test]
fn a_removed_node_restarted_and_added_again_keeps_running_as_a_voter() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start(3, Timing::DEFAULT);
    let all = flock.all();
    let (goose, _) = flock.wait_agreed(&all, SETTLE_WITHIN);
    let duck = (goose + 1) % 3;
    let duck_id = id(&flock, duck);
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != duck).collect();

    change(&flock, goose, &format!("remove {duck_id}"));
    let exit = flock
        .wait_exit(duck, REMOVED_EXIT_WITHIN)
        .unwrap_or_else(|| {
            panic!(
                "removed node {duck_id} still runs\n{}",
                flock.log_tail(duck)
            )
        });
    assert_eq!(exit.code(), Some(0), "removed node {duck_id}: {exit}");
    assert_eq!(flock.log(duck).matches(REMOVED_LOG).count(), 1);

    // Its data dir holds its id, term and log, but no address: the membership it stored
    // no longer has it, so the node asks for `--listen` (and would refuse to start without).
    let data_dir = flock.nodes[duck].data_dir.display().to_string();
    *flock.args_mut(duck) = vec![
        "node".into(),
        "--data-dir".into(),
        data_dir,
        "--listen".into(),
        flock.addr(duck).to_string(),
    ];
    flock.restart(duck);
    flock
        .wait_until(&[duck], SETTLE_WITHIN, Duration::from_millis(10), |round| {
            round.reply(duck).is_some()
        })
        .unwrap_or_else(|last| panic!("restarted node {duck_id} does not answer: {last}"));
    let (goose, _) = flock.wait_agreed(&rest, SETTLE_WITHIN);
    let addr = flock.addr(duck);
    change(&flock, goose, &format!("add {duck_id} {addr}"));
    let added = Instant::now();
    while added.elapsed() < KEEPS_RUNNING_FOR {
        assert!(
            flock.running(duck),
            "node {duck_id} exited {:?} after it was added back:\n{}",
            added.elapsed(),
            flock.log_tail(duck)
        );
        assert_eq!(
            flock.log(duck).matches(REMOVED_LOG).count(),
            1,
            "node {duck_id} reported its removal again {:?} after it was added back:\n{}",
            added.elapsed(),
            flock.log_tail(duck)
        );
        flock.probe_round(&all, PROBE_WINDOW);
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        flock.running(duck),
        "node {duck_id} exited after it was added back"
    );
    // Two voters, a target of five: the learner was promoted as soon as it caught up.
    wait_status(
        &flock,
        goose,
        SETTLE_WITHIN,
        "promoting the node added back",
        |s| ids(s, "voters").contains(&duck_id),
    );
    let (goose, term) = flock.wait_agreed(&all, SETTLE_WITHIN);
    let own = flock.status(duck);
    assert_eq!(
        own.get("raft").map(String::as_str),
        Some("follower"),
        "{own:?}"
    );
    assert_eq!(ids(&own, "voters").len(), 3, "{own:?}");
    assert!(ids(&own, "voters").contains(&duck_id), "{own:?}");
    assert_eq!(
        flock.log(duck).matches(REMOVED_LOG).count(),
        1,
        "node {duck_id} reported its removal again:\n{}",
        flock.log_tail(duck)
    );
    println!(
        "node {duck_id} added back: voter, running, goose node {} term {term}",
        id(&flock, goose)
    );
}

/// A duck of three is killed; a fourth node joins (`--join`), is promoted (`--voters 4`) and
/// handed the goose. The duck comes back on its data dir, whose membership names neither
/// node 4 nor its address: it must follow goose 4 and count as a voter again. Before the
/// goose sent its membership to the silent, the duck dropped every frame of the goose as
/// from a non-member and stayed a pre-candidate naming no goose.
#[test]
fn a_voter_down_while_the_goose_was_added_follows_it_when_back() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start_with(3, Timing::DEFAULT, &["--voters", "4"], OnViolation::Panic);
    let bootstrap = flock.all();
    let (goose, _) = flock.wait_agreed(&bootstrap, SETTLE_WITHIN);
    let down = *bootstrap
        .iter()
        .find(|&&i| i != goose)
        .expect("three nodes");
    let down_id = id(&flock, down);
    flock.kill_member(down);
    let mut args = vec![
        "--join".to_owned(),
        flock.addr(goose).to_string(),
        "--voters".to_owned(),
        "4".to_owned(),
    ];
    args.extend(Timing::DEFAULT.flags());
    let added = flock.spawn_node(4, free_ports(1)[0], &args);
    wait_status(&flock, goose, SETTLE_WITHIN, "promoting node 4", |s| {
        ids(s, "voters").contains(&4)
    });
    let up: Vec<usize> = flock.all().into_iter().filter(|&i| i != down).collect();
    make_goose(&flock, &up, added);

    flock.restart(down);
    let status = wait_status(&flock, down, SETTLE_WITHIN, "following goose 4", |s| {
        s.get("goose").map(String::as_str) == Some("4") && ids(s, "voters").contains(&4)
    });
    let all = flock.all();
    let (goose, term) = flock.wait_agreed(&all, SETTLE_WITHIN);
    assert_eq!(id(&flock, goose), 4, "{status:?}");
    // It counts: with the goose's old peer killed, node 4 keeps a majority of its four
    // voters only with the node that came back.
    let other = *up
        .iter()
        .find(|&&i| i != added && i != goose)
        .expect("two bootstrap nodes up");
    flock.kill_member(other);
    let left: Vec<usize> = all.into_iter().filter(|&i| i != other).collect();
    let (goose, _) = flock.wait_agreed(&left, SETTLE_WITHIN);
    println!(
        "node {down_id} back on its data dir followed goose 4 (term {term}); with node {} \
         killed, node {} is goose",
        id(&flock, other),
        id(&flock, goose)
    );
}

// ---------------------------------------------------------------------------------------
// (d) Fail-stop
// ---------------------------------------------------------------------------------------

/// The inode flag that makes a directory refuse new entries, even to root (`chattr +i`):
/// linux/fs.h's `FS_IMMUTABLE_FL`, which the libc crate does not export.
const FS_IMMUTABLE_FL: libc::c_int = 0x0000_0010;

/// A data dir made immutable, and its state file too, so the node's next save fails: at
/// writing into the state file (a save writes a slot of it in place), or at creating the
/// file if there is none yet. Cleared again when dropped (also on panic), so the flock's
/// folder can be removed. As root, permission bits stop no write: this flag does.
struct FailingStorage {
    /// The folder first, then the state file if there is one.
    immutable: Vec<(File, PathBuf)>,
}

impl FailingStorage {
    /// # Errors
    ///
    /// Why the flag could not be set, or why writes still succeed with it.
    fn new(path: &Path) -> Result<Self, String> {
        let mut guard = Self {
            immutable: Vec::new(),
        };
        let state = path.join("state");
        for target in [path.to_path_buf(), state.clone()] {
            if target != path && !target.exists() {
                continue;
            }
            let file =
                File::open(&target).map_err(|e| format!("open {}: {e}", target.display()))?;
            let flags = get_flags(&file)?;
            set_flags(&file, flags | FS_IMMUTABLE_FL)?;
            guard.immutable.push((file, target));
        }
        let probe = path.join("writable");
        if File::create(&probe).is_ok() {
            let _ = std::fs::remove_file(&probe);
            return Err(format!("{} is still writable", path.display()));
        }
        if state.exists() && std::fs::OpenOptions::new().write(true).open(&state).is_ok() {
            return Err(format!("{} is still writable", state.display()));
        }
        Ok(guard)
    }
}

impl Drop for FailingStorage {
    fn drop(&mut self) {
        for (file, path) in &self.immutable {
            if let Ok(flags) = get_flags(file) {
                if let Err(e) = set_flags(file, flags & !FS_IMMUTABLE_FL) {
                    eprintln!("could not clear {}'s immutable flag: {e}", path.display());
                }
            }
        }
    }
}

fn get_flags(file: &File) -> Result<libc::c_int, String> {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int through the pointer, which points at one; the
    // descriptor is open for the whole call.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    if result != 0 {
        return Err(format!(
            "FS_IOC_GETFLAGS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(flags)
}

fn set_flags(file: &File, flags: libc::c_int) -> Result<(), String> {
    // SAFETY: FS_IOC_SETFLAGS reads one int through the pointer, which points at one; the
    // descriptor is open for the whole call.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
    if result != 0 {
        return Err(format!(
            "FS_IOC_SETFLAGS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn fail_storage(flock: &Flock, index: usize) -> FailingStorage {
    let dir = &flock.nodes[index].data_dir;
    FailingStorage::new(dir).unwrap_or_else(|why| {
        panic!(
            "cannot make node {}'s storage fail ({why}): this test needs root (or \
             CAP_LINUX_IMMUTABLE) and a temporary folder on a filesystem with the immutable \
             flag (ext4, xfs, btrfs; tmpfs from Linux 6.0). It fails rather than pass without \
             testing fail-stop.",
            id(flock, index)
        )
    })
}

/// What [`watch_failing`] saw of a node whose storage failed.
struct Failing {
    /// The highest term it answered a probe with.
    highest: u64,
    /// Its exit status, if it exited in time.
    exit: Option<ExitStatus>,
    /// When it was seen exited, from the start of the watch.
    exited_after: Duration,
    /// Every datagram the watch's `socket` received (replies to what was sent from it).
    replies: Vec<String>,
}

/// Probes `indices` every [`PROBE_EVERY`] until node `watched` exited (and 100 ms more) or
/// `within` has passed, and collects what `socket` (non-blocking) receives meanwhile.
fn watch_failing(
    flock: &mut Flock,
    indices: &[usize],
    watched: usize,
    socket: &UdpSocket,
    within: Duration,
) -> Failing {
    let started = Instant::now();
    let mut seen = Failing {
        highest: 0,
        exit: None,
        exited_after: Duration::ZERO,
        replies: Vec::new(),
    };
    let mut buffer = [0; 4096];
    while started.elapsed() < within {
        let round = flock.probe_round(indices, Duration::from_millis(5));
        if let Some(probe) = round.reply(watched) {
            seen.highest = seen.highest.max(probe.term);
        }
        // A refused connection (the node is gone) is an error too: nothing to collect.
        while let Ok(size) = socket.recv(&mut buffer) {
            let reply = String::from_utf8_lossy(&buffer[..size]);
            seen.replies.push(reply.trim_end().to_owned());
        }
        if seen.exit.is_none() {
            seen.exit = flock.exit_status(watched);
            seen.exited_after = started.elapsed();
        } else if started.elapsed() > seen.exited_after + Duration::from_millis(100) {
            break;
        }
        thread::sleep(PROBE_EVERY);
    }
    seen
}

fn socket_to(flock: &Flock, index: usize) -> UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a socket");
    socket
        .connect(flock.addr(index))
        .expect("connect the socket");
    socket
        .set_nonblocking(true)
        .expect("make the socket non-blocking");
    socket
}

/// A goose whose storage fails is a goose no more: before it exits 1 it stops its `--exec`
/// child (the whole process group) and runs its duck hook, best effort, so that whatever
/// its goose hook set up goes. Before, it exited at once, its duck hook never run.
#[test]
fn a_goose_whose_storage_fails_stops_its_exec_child_and_runs_its_duck_hook() {
    let _serial = one_flock_at_a_time();
    let folder = procs::TempDir::new("failstop");
    let marks = folder.path().join("marks");
    let on_duck = format!("echo \"duck $GOOSE_ID $GOOSE_TERM\" >> {}", marks.display());
    let flags = ["--on-duck", on_duck.as_str(), "--exec", "sleep 600"];
    let mut flock = Flock::start_with(3, Timing::DEFAULT, &flags, OnViolation::Panic);
    let all = flock.all();
    let (goose, term) = flock.wait_agreed(&all, SETTLE_WITHIN);
    let goose_id = id(&flock, goose);
    let guard = procs::eventually(SETTLE_WITHIN, PROBE_WINDOW, || {
        flock.log(goose).contains("exec child started (pid ")
    });
    assert!(guard, "{}", flock.log_tail(goose));
    let log = flock.log(goose);
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("exec child started (pid "));
    let guard: u32 = line
        .and_then(|l| l.split_once("(pid "))
        .and_then(|(_, pid)| pid.trim_end_matches(')').parse().ok())
        .expect("the guard's pid");
    assert!(!procs::group_members(guard).is_empty(), "the child runs");

    let failing = fail_storage(&flock, goose);
    let control = socket_to(&flock, goose);
    let spare = free_ports(1)[0];
    control
        .send(format!("ctl add 9 127.0.0.1:{spare}").as_bytes())
        .expect("send ctl add");
    let seen = watch_failing(&mut flock, &all, goose, &control, FAILED_EXIT_WITHIN);
    drop(failing);
    let exit = seen.exit.unwrap_or_else(|| {
        panic!(
            "node {goose_id} still runs {FAILED_EXIT_WITHIN:?} after its storage failed:\n{}",
            flock.log_tail(goose)
        )
    });
    assert_eq!(exit.code(), Some(1), "{}", flock.log_tail(goose));
    let marked = std::fs::read_to_string(&marks).unwrap_or_default();
    assert!(
        marked.contains(&format!("duck {goose_id} {term}")),
        "node {goose_id} ran no duck hook as goose of term {term}: {marked:?}"
    );
    assert!(
        procs::group_members(guard).is_empty(),
        "left behind: {:?}",
        procs::group_members(guard)
    );
}

/// The goose's data dir stops taking writes; `ctl add` makes it append a membership entry
/// it cannot save. It must not answer `ok` (it answers nothing once failed), must exit
/// non-zero within 2 s, and no probe may show a term above the one it had. The other two
/// then elect a goose. Before, it answered `ok` to the change it had not saved.
#[test]
fn a_goose_whose_storage_fails_answers_nothing_and_exits_non_zero() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start(3, Timing::DEFAULT);
    let all = flock.all();
    let (goose, term) = flock.wait_agreed(&all, SETTLE_WITHIN);
    let goose_id = id(&flock, goose);
    let failing = fail_storage(&flock, goose);

    let control = socket_to(&flock, goose);
    let spare = free_ports(1)[0];
    control
        .send(format!("ctl add 9 127.0.0.1:{spare}").as_bytes())
        .expect("send ctl add");
    let seen = watch_failing(&mut flock, &all, goose, &control, FAILED_EXIT_WITHIN);
    drop(failing);
    assert!(
        seen.replies.is_empty(),
        "node {goose_id} answered a change it could not save: {:?}",
        seen.replies
    );
    let exit = seen.exit.unwrap_or_else(|| {
        panic!(
            "node {goose_id} still runs {FAILED_EXIT_WITHIN:?} after its storage failed:\n{}",
            flock.log_tail(goose)
        )
    });
    assert!(
        !exit.success(),
        "node {goose_id} exited {exit} after its storage failed"
    );
    assert!(
        seen.highest <= term,
        "node {goose_id} answered term {} (saved: {term}) after its storage failed",
        seen.highest
    );
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != goose).collect();
    let (new_goose, new_term) = flock.wait_agreed(&rest, SETTLE_WITHIN);
    println!(
        "node {goose_id} (goose, term {term}) exited {exit} {:.1} ms after `ctl add`; node {} \
         goose in term {new_term}",
        ms(seen.exited_after),
        id(&flock, new_goose)
    );
}

/// Probes queued behind the frame whose save fails.
const QUEUED_PROBES: usize = 20;

/// A duck's data dir stops taking writes and the duck is stopped (SIGSTOP); `ctl transfer`
/// to the other duck elects it in a higher term, whose frames queue on the stopped duck's
/// socket, and [`QUEUED_PROBES`] probes queue behind them. Resumed, the duck reads them all
/// in one go: the first frame of the new term fails its save, and it must answer none of
/// the probes after it (certainly none with the term it could not save: a restart would
/// take it back), and exit non-zero within 2 s. Before, it answered them with the unsaved
/// term.
#[test]
fn a_duck_whose_storage_fails_never_shows_the_term_it_could_not_save() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start(3, Timing::DEFAULT);
    let all = flock.all();
    let (goose, term) = flock.wait_agreed(&all, SETTLE_WITHIN);
    let duck = (goose + 1) % 3;
    let target = (goose + 2) % 3;
    let duck_id = id(&flock, duck);
    let failing = fail_storage(&flock, duck);

    flock.signal(duck, libc::SIGSTOP);
    let reply = flock.ctl(goose, &format!("transfer {}", id(&flock, target)));
    let handed = reply.as_deref().is_some_and(|r| r.starts_with("ok to="));
    if !handed {
        flock.signal(duck, libc::SIGCONT);
        panic!("`ctl transfer` answered {reply:?}");
    }
    let (new_goose, new_term) = flock.wait_agreed(&[goose, target], SETTLE_WITHIN);
    assert!(new_term > term, "the transfer changed no term");
    let probes = socket_to(&flock, duck);
    for _ in 0..QUEUED_PROBES {
        probes.send(b"whois-goose").expect("queue a probe");
    }
    flock.signal(duck, libc::SIGCONT);
    let seen = watch_failing(&mut flock, &all, duck, &probes, FAILED_EXIT_WITHIN);
    drop(failing);
    let queued_terms: Vec<u64> = seen
        .replies
        .iter()
        .filter_map(|reply| procs::Probe::parse(format!("{reply}\n").as_bytes()).ok())
        .map(|probe| probe.term)
        .collect();
    assert!(
        queued_terms.iter().all(|&t| t <= term) && seen.highest <= term,
        "node {duck_id} answered a term it could not save (saved: {term}; new goose's: \
         {new_term}): probes queued behind the new term got {:?}, later probes up to term {}",
        seen.replies,
        seen.highest
    );
    assert!(
        seen.replies.is_empty(),
        "node {duck_id} answered probes after its storage failed: {:?}",
        seen.replies
    );
    let exit = seen.exit.unwrap_or_else(|| {
        panic!(
            "node {duck_id} still runs {FAILED_EXIT_WITHIN:?} after its storage failed:\n{}",
            flock.log_tail(duck)
        )
    });
    assert!(
        !exit.success(),
        "node {duck_id} exited {exit} after its storage failed"
    );
    println!(
        "node {duck_id} (duck, term {term}) exited {exit} {:.1} ms after it resumed; node {} \
         goose in term {new_term}",
        ms(seen.exited_after),
        id(&flock, new_goose)
    );
}

// ---------------------------------------------------------------------------------------
// (e) ctl partition and an uncommitted removal
// ---------------------------------------------------------------------------------------

/// A flock of three where duck A cuts itself off from both others (so the goose never
/// hears from it), and the goose cuts duck B by address; the goose, its lease still
/// running, appends B's removal, which can never commit (the new membership needs A). `ctl
/// partition <B's id>` on the goose must still drop B's frames: B, cut off from everyone,
/// keeps asking for pre-votes, and the goose counts them in `drop_partition_in` and never
/// takes a term from B. Before, the goose looked a partitioned peer up in its latest
/// membership only, where B no longer is, and let its frames through.
#[test]
fn a_partition_still_cuts_a_member_whose_removal_is_uncommitted() {
    let _serial = one_flock_at_a_time();
    let mut flock = Flock::start(3, Timing::DEFAULT);
    let all = flock.all();
    for attempt in 1..=5 {
        let (goose, term) = flock.wait_agreed(&all, SETTLE_WITHIN);
        let (a, b) = ((goose + 1) % 3, (goose + 2) % 3);
        let (goose_id, a_id, b_id) = (id(&flock, goose), id(&flock, a), id(&flock, b));
        // A drops every frame to and from both: whatever the goose drops on arrival comes
        // from B, and no leader can be elected while the partitions hold.
        partition(&flock, a, &[goose, b]);
        let reply = flock.ctl(goose, &format!("partition {}", flock.addr(b)));
        ok(reply, "partition B by address on the goose");
        // The goose still holds its lease (up to 133 ms from its last acknowledged round),
        // so it takes the change; on a machine slow enough to let the lease lapse between
        // two datagrams, heal and try again.
        let reply = flock.ctl(goose, &format!("remove {b_id}"));
        if reply.as_deref() != Some("ok") {
            println!("attempt {attempt}: `remove {b_id}` answered {reply:?}; again");
            heal(&flock, &all);
            continue;
        }
        let status = flock.status(goose);
        assert!(
            !ids(&status, "members").contains(&b_id),
            "the goose's latest membership still has node {b_id}: {status:?}"
        );
        for index in [a, b] {
            let other = flock.status(index);
            assert!(
                ids(&other, "members").contains(&b_id),
                "node {} got the removal: {other:?}",
                id(&flock, index)
            );
        }
        ok(
            flock.ctl(goose, &format!("partition {b_id}")),
            "partition the removed member by id",
        );
        let before = number(&flock.status(goose), "drop_partition_in");
        // B's election timer (150-300 ms) fires again and again: a few of its pre-votes.
        let status = wait_status(&flock, goose, ELECT_WITHIN, "dropping B's frames", |s| {
            number(s, "drop_partition_in") >= before + 3
        });
        assert_eq!(
            number(&status, "term"),
            term,
            "node {goose_id} heard node {b_id}, which it partitioned: {status:?}"
        );
        println!(
            "attempt {attempt}: goose {goose_id} dropped {} frames from node {b_id}, whose \
             removal it holds uncommitted; its term stayed {term}; node {a_id} cut itself off",
            number(&status, "drop_partition_in") - before
        );
        heal(&flock, &all);
        // Whoever wins next decides whether B's removal commits (B then exits 0) or is
        // dropped (B stays, and may be the winner: its log lacks only the uncommitted
        // removal): the nodes still running agree on one goose.
        let mut live = all.clone();
        let settled = procs::eventually(SETTLE_WITHIN, Duration::from_millis(50), || {
            live.retain(|&index| index != b || flock.exit_status(b).is_none());
            let round = flock.wait_until(&live, Duration::from_millis(200), PROBE_EVERY, |r| {
                r.agreed(&live).is_some()
            });
            round.is_ok()
        });
        let last = flock.wait_until(&all, Duration::ZERO, PROBE_EVERY, |_| true);
        assert!(
            settled,
            "the running nodes {live:?} never agreed on one goose: {last:?}"
        );
        return;
    }
    panic!("the goose never took the removal while cut off");
}
