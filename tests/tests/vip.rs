//! A virtual IP moved by goose (with `--vip`, and with `--on-goose`/`--on-duck` hooks that
//! run `ip addr` and `arping`, by hand) and by keepalived, on three node namespaces and a
//! client probing the address every millisecond (`flock_tests::vip`): the short version of
//! `bench_vip`. The runs take turns ([`TURN`]): each needs the probes' millisecond.
//!
//! For `goose --vip` it asserts the feature's promise: after a link cut, an election cut, a
//! SIGTERM or a `ctl transfer` of the holder, no two nodes ever hold the address, not for a
//! millisecond (the node removes it when its lease lapses, before another node can be
//! elected, and before TimeoutNow at a handoff); the client's answers come from exactly one
//! node at a time, from the new goose within the failover bound plus the announcement. After
//! a SIGKILL under the systemd unit's stop logic (its `ExecStopPost`, run as systemd runs it)
//! the address is gone before the new goose claims it; without that stop logic it stays until
//! the node is restarted, which removes it before anything else. A node without the
//! capabilities `--vip` needs refuses to start, saying which.
//!
//! "No two holders" is checked twice, so that neither a late watcher nor a lucky one decides
//! it: the watchers' *definite* overlap (time two nodes were certainly holding, a lower bound
//! that a watcher's scheduling delay cannot inflate; `flock_tests::vip::analysis`) is zero,
//! and the client never had a probe answered by the old holder after an earlier-sent probe
//! was answered by a new one. The *possible* overlap (the upper bound, inflated by every late
//! sample) is printed. Each fault must also have moved the address: another node answered,
//! and its watcher saw it holding.
//!
//! For goose it asserts what must hold: after a link cut, an election cut or a SIGTERM of
//! the holder, the client's answers come from exactly one node at a time, from the new goose
//! within the failover bound plus the announcement; no two nodes hold the address at once
//! (definitely) after a cut (the lease lapses, and the duck hook runs, before another node
//! can be elected) or a SIGTERM (the handoff waits for the duck hook to end). The window
//! the hooks cannot close is shown: after a SIGKILL the dead goose's address stays while
//! the new goose claims it (until someone removes it). For keepalived it asserts that the harness sees
//! VRRP's split brain when only VRRP is cut, which is what shows that the same checks would
//! catch one in goose.
//!
//! Needs root (network namespaces, `ip`, `nft`, `arping`, `keepalived`) and fails, never
//! skips, without it.

use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use flock_tests::procs::{goose_binary, TempDir};
use flock_tests::vip::analysis::{ms, TwoHolders};
use flock_tests::vip::contender::Kind;
use flock_tests::vip::scenario::{self, Outcome, Plan};
use flock_tests::vip::{tables, watch::Micros};

/// From the new goose's election to the client's first answer from it: the `--on-goose`
/// hook starts (a fork), `ip` adds the address, `arping` announces it, the client's
/// neighbour entry changes and its next probe goes there. A few milliseconds on a quiet
/// machine; this allows for a loaded one.
const ANNOUNCEMENT_ALLOWANCE: Duration = Duration::from_millis(200);

/// One run at a time: a run's client probes every millisecond, and two runs side by side
/// on two cores would measure each other.
static TURN: Mutex<()> = Mutex::new(());

/// From the new goose's election to the client's first answer from it with `--vip`: one
/// netlink request, the announcements, the client's neighbour entry, its next probe. Under a
/// millisecond on a quiet machine; this allows for a loaded one.
const VIP_ANNOUNCEMENT_ALLOWANCE: Duration = Duration::from_millis(100);
/// How long a restarted node may take to remove the address a killed run of it left: it
/// does so before it opens its socket, a few milliseconds after exec.
const STALE_REMOVED_WITHIN: Duration = Duration::from_secs(1);
/// The kernel's numbers of the two capabilities `--vip` needs (linux/capability.h).
const CAP_NET_ADMIN: libc::c_ulong = 12;
const CAP_NET_RAW: libc::c_ulong = 13;

fn plan() -> Plan {
    Plan {
        link_cuts: 3,
        election_cuts: 2,
        election_cut_for: Duration::from_secs(2),
        stops: 2,
        transfers: 0,
        kills: 1,
    }
}

fn run(kind: Kind) -> Outcome {
    run_plan(kind, &plan())
}

fn run_plan(kind: Kind, plan: &Plan) -> Outcome {
    let outcome = scenario::run(kind, plan, goose_binary())
        .unwrap_or_else(|error| panic!("{}: harness: {error}", kind.label()));
    assert!(
        !outcome.truncated,
        "{}: the record was truncated",
        kind.label()
    );
    outcome
}

fn micros(duration: Duration) -> Micros {
    Micros::try_from(duration.as_micros()).unwrap_or(Micros::MAX)
}

#[test]
fn the_vip_follows_the_goose_and_keepalived_splits() {
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let goose = run(Kind::GooseHooks);
    let keepalived = run(Kind::Keepalived { advert_cs: 10 });
    println!("{}", tables(&plan(), &[goose.clone(), keepalived.clone()]));

    let bound = micros(Kind::GooseHooks.failover_expected_max() + ANNOUNCEMENT_ALLOWANCE);
    for (index, cut) in goose.link_cuts.iter().enumerate() {
        let failover = cut
            .failover
            .unwrap_or_else(|| panic!("link cut {index}: no other node answered: {cut:?}"));
        assert!(
            failover <= bound,
            "link cut {index}: the new goose answered after {} ms, bound {} ms: {cut:?}",
            ms(failover),
            ms(bound)
        );
        assert_eq!(
            cut.two_holders.definite.total, 0,
            "link cut {index}: two nodes held the address: {cut:?}"
        );
        assert_eq!(
            cut.strays, 0,
            "link cut {index}: answers from two nodes, interleaved: {cut:?}"
        );
        assert_eq!(
            cut.stale, 0,
            "link cut {index}: the old goose answered a probe sent after the new one's: {cut:?}"
        );
    }
    for (index, cut) in goose.election_cuts.iter().enumerate() {
        assert_eq!(
            cut.two_holders.definite.total, 0,
            "election cut {index}: two nodes held the address: {cut:?}"
        );
        let failover = cut
            .failover
            .unwrap_or_else(|| panic!("election cut {index}: no other node answered: {cut:?}"));
        assert!(
            failover <= bound,
            "election cut {index}: the new goose answered after {} ms, bound {} ms: {cut:?}",
            ms(failover),
            ms(bound)
        );
        // Old holder until its lease lapsed, then the new goose, then nobody else.
        assert_eq!(
            cut.switches, 1,
            "election cut {index}: the answering node changed more than once: {cut:?}"
        );
        assert!(
            cut.settled_after.is_some(),
            "election cut {index}: never settled after the heal: {cut:?}"
        );
    }
    for (index, stop) in goose.stops.iter().enumerate() {
        // A handoff: TimeoutNow leaves only once the duck hook has ended.
        let failover = stop
            .failover
            .unwrap_or_else(|| panic!("stop {index}: no other node answered: {stop:?}"));
        assert!(
            failover <= bound,
            "stop {index}: the new goose answered after {} ms, bound {} ms: {stop:?}",
            ms(failover),
            ms(bound)
        );
        // The handoff is held until the duck hook has ended, so the new goose's hook
        // never runs while the old one's address is still there.
        assert_eq!(
            stop.two_holders.definite.total, 0,
            "stop {index}: two nodes held the address: {stop:?}"
        );
        assert_eq!(
            stop.stale, 0,
            "stop {index}: the old goose answered a probe sent after the new one's: {stop:?}"
        );
        assert_eq!(
            stop.strays, 0,
            "stop {index}: answers from two nodes, interleaved: {stop:?}"
        );
    }
    for (index, kill) in goose.kills.iter().enumerate() {
        let failover = kill
            .failover
            .unwrap_or_else(|| panic!("kill {index}: no other node answered: {kill:?}"));
        assert!(
            failover <= bound,
            "kill {index}: the new goose answered after {} ms, bound {} ms: {kill:?}",
            ms(failover),
            ms(bound)
        );
        // The window hooks cannot close: nothing ran on the dead node, so its address
        // stayed while the new goose claimed it. The harness must see that, or it would
        // not see it anywhere. (What happens after the restart depends on the election
        // that follows: a restarted node that is goose a moment, then duck again, runs its
        // duck hook and removes the address; one that stays a duck runs none.)
        assert!(
            kill.held_when_replaced,
            "kill {index}: the killed hook-based goose's address was not seen staying: {kill:?}"
        );
        println!(
            "goose with hooks, kill -9: two holders for {} ms (possibly {} ms), until the \
             harness removed it",
            ms(kill.two_holders.definite.longest),
            ms(kill.two_holders.possible.longest)
        );
    }

    // keepalived: VRRP has no quorum, so cutting VRRP alone makes two masters for nearly
    // the whole cut. A harness that did not see this would not see two geese either: the
    // definite measure, which the goose --vip test requires to be zero, sees it.
    for (index, cut) in keepalived.election_cuts.iter().enumerate() {
        assert!(
            cut.two_holders.definite.total >= cut.length / 2,
            "keepalived election cut {index}: the harness saw two holders for only {} ms of a \
             {} ms VRRP cut: {cut:?}",
            ms(cut.two_holders.definite.total),
            ms(cut.length)
        );
    }
    assert!(
        keepalived
            .link_cuts
            .iter()
            .all(|cut| cut.failover.is_some()),
        "keepalived never failed over: {:?}",
        keepalived.link_cuts
    );

    assert_no_leftovers();
}

/// Everything the runs of this process made is gone.
fn assert_no_leftovers() {
    let leftovers: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&format!("ddgvip-{}-", std::process::id())))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "namespaces left behind: {leftovers:?}"
    );
}

#[test]
fn goose_vip_is_held_by_one_node_at_a_time_and_cleaned_up_after_a_kill() {
    let _turn = TURN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let plan = Plan {
        link_cuts: 3,
        election_cuts: 1,
        election_cut_for: Duration::from_secs(2),
        stops: 2,
        transfers: 2,
        kills: 2,
    };
    let kind = Kind::GooseVip { unit: true };
    let vip = run_plan(kind, &plan);
    let kills_only = Plan {
        link_cuts: 0,
        election_cuts: 0,
        stops: 0,
        transfers: 0,
        kills: 1,
        ..plan
    };
    let bare = run_plan(Kind::GooseVip { unit: false }, &kills_only);
    println!("{}", tables(&plan, std::slice::from_ref(&vip)));
    println!("{}", tables(&kills_only, std::slice::from_ref(&bare)));

    let bound = micros(kind.failover_expected_max() + VIP_ANNOUNCEMENT_ALLOWANCE);
    let within = |what: &str, failover: Option<Micros>, detail: &dyn std::fmt::Debug| {
        let failover =
            failover.unwrap_or_else(|| panic!("{what}: no other node answered: {detail:?}"));
        assert!(
            failover <= bound,
            "{what}: the new goose answered after {} ms, bound {} ms: {detail:?}",
            ms(failover),
            ms(bound)
        );
    };
    // Every fault: never two holders, by the watchers' lower bound (a late sample inflates
    // only the upper bound, printed for information), and by the client's view: no answer
    // from the old holder to a probe sent after one the new holder answered. And a fault
    // that moved nothing proves nothing: the client reached another node, and that node's
    // watcher saw it hold the address.
    let one_at_a_time = |what: &str,
                         owner: u16,
                         two_holders: TwoHolders,
                         stale: usize,
                         holders: &[u16],
                         detail: &dyn std::fmt::Debug| {
        assert_eq!(
            two_holders.definite.total, 0,
            "{what}: two nodes held the address: {detail:?}"
        );
        assert_eq!(
            stale, 0,
            "{what}: the old goose answered a probe sent after one the new goose answered: \
             {detail:?}"
        );
        assert!(
            holders.iter().any(|&node| node != owner),
            "{what}: no other node was seen holding the address: {detail:?}"
        );
        println!(
            "goose --vip, {what}: two holders 0 ms for certain, at most {} ms by the samples",
            ms(two_holders.possible.total)
        );
    };
    for (index, cut) in vip.link_cuts.iter().enumerate() {
        let what = format!("link cut {index}");
        within(&what, cut.failover, cut);
        one_at_a_time(
            &what,
            cut.owner,
            cut.two_holders,
            cut.stale,
            &cut.holders,
            cut,
        );
        assert_eq!(cut.strays, 0, "{what}: answers interleaved: {cut:?}");
    }
    for (index, cut) in vip.election_cuts.iter().enumerate() {
        let what = format!("election cut {index}");
        within(&what, cut.failover, cut);
        one_at_a_time(
            &what,
            cut.owner,
            cut.two_holders,
            cut.stale,
            &cut.holders,
            cut,
        );
        assert_eq!(
            cut.switches, 1,
            "{what}: answers from more than two nodes in turn: {cut:?}"
        );
        assert!(
            cut.settled_after.is_some(),
            "{what}: never settled: {cut:?}"
        );
    }
    // A handoff: the address is removed before TimeoutNow leaves, so before the target can
    // be elected: not even the hooks' few milliseconds of overlap.
    for (what, handoffs) in [("stop", &vip.stops), ("transfer", &vip.transfers)] {
        assert!(!handoffs.is_empty(), "no {what} ran");
        for (index, handoff) in handoffs.iter().enumerate() {
            let what = format!("{what} {index}");
            assert!(handoff.exited, "{what}: not done as asked: {handoff:?}");
            within(&what, handoff.failover, handoff);
            one_at_a_time(
                &what,
                handoff.owner,
                handoff.two_holders,
                handoff.stale,
                &handoff.holders,
                handoff,
            );
            assert_eq!(
                handoff.strays, 0,
                "{what}: answers interleaved: {handoff:?}"
            );
        }
    }
    // kill -9 under the unit: its ExecStopPost removed the address before another node
    // could be elected.
    assert!(!vip.kills.is_empty(), "no kill ran");
    for (index, kill) in vip.kills.iter().enumerate() {
        let what = format!("kill {index} (unit)");
        within(&what, kill.failover, kill);
        assert!(
            !kill.held_when_replaced,
            "{what}: the address outlived the kill: {kill:?}"
        );
        one_at_a_time(
            &what,
            kill.owner,
            kill.two_holders,
            kill.stale,
            &kill.holders,
            kill,
        );
    }
    // kill -9 without it: the address stays while the new goose claims it, until the
    // restarted node removes it, first thing.
    for (index, kill) in bare.kills.iter().enumerate() {
        let what = format!("kill {index} (no unit)");
        within(&what, kill.failover, kill);
        assert!(
            kill.held_when_replaced,
            "{what}: a killed node's address was not seen staying: {kill:?}"
        );
        let removed = kill
            .released_after_restart
            .unwrap_or_else(|| panic!("{what}: the restarted node did not remove it: {kill:?}"));
        assert!(
            removed <= micros(STALE_REMOVED_WITHIN),
            "{what}: removed {} ms after the restart: {kill:?}",
            ms(removed)
        );
        println!(
            "goose --vip, kill -9 without the unit: two holders for {} ms (possibly {} ms), \
             until the restart",
            ms(kill.two_holders.definite.longest),
            ms(kill.two_holders.possible.longest)
        );
    }
    assert_no_leftovers();
}

#[test]
fn goose_vip_without_its_capabilities_refuses_to_start_and_says_which() {
    let folder = TempDir::new("vipcaps");
    let data_dir = folder.path().join("data");
    let mut command = Command::new(goose_binary());
    command.args([
        "node",
        "--id",
        "1",
        "--single",
        "--listen",
        "127.0.0.1:9",
        "--data-dir",
    ]);
    command.arg(&data_dir);
    command.args(["--vip", "10.77.0.200/24", "--vip-dev", "lo"]);
    // SAFETY: only prctl runs between fork and exec. Dropping both from the bounding set
    // leaves root without them after exec, as a unit without the grant would.
    unsafe {
        command.pre_exec(|| {
            for capability in [CAP_NET_ADMIN, CAP_NET_RAW] {
                if libc::prctl(libc::PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let output = command.output().expect("run goose");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    for said in ["CAP_NET_ADMIN and CAP_NET_RAW", "AmbientCapabilities="] {
        assert!(stderr.contains(said), "{said:?} not in: {stderr}");
    }
    assert!(!data_dir.exists(), "refused before it made its data dir");
}
