//! One goose under every assumption the lease argument states, each broken on purpose:
//! nodes with different timing, changed one restart at a time; leaderships that fail one
//! after another; removals racing promotions, or committed by a later leadership; a
//! removed node restarted and added again. Each runs the deterministic simulator with the invariant checker after every event, over
//! many seeds, and reports how many seeds failed before asserting that none did.

use flock_sim::{ms, Flock, FlockConfig, SIM_MEMBERS};
use goose_core::{Config, Duration, Event, Payload, RaftRole};

/// Generous bound for an election on a clean network.
const ELECTION_BOUND: u64 = ms(3_000);

fn timing(heartbeat: u64, min: u64, max: u64) -> Config {
    Config::with_timing(
        flock_sim::id(1),
        Duration::from_millis(heartbeat),
        Duration::from_millis(min),
        Duration::from_millis(max),
    )
}

fn elect<const M: usize, const L: usize>(flock: &mut Flock<M, L>) -> Option<u16> {
    flock.run_until_condition(ELECTION_BOUND, |f| f.goose().is_some());
    flock.goose()
}

fn leader<const M: usize, const L: usize>(flock: &Flock<M, L>) -> Option<u16> {
    (1..=flock.config.nodes).find(|n| {
        flock
            .node(*n)
            .is_some_and(|node| node.status(flock.local_now(*n)).raft == RaftRole::Leader)
    })
}

/// Runs `scenario` for every seed and fails listing the seeds whose run broke an invariant
/// (the simulator panics on any) or returned an error.
fn every_seed(seeds: std::ops::Range<u64>, scenario: impl Fn(u64) -> Result<(), String>) {
    let count = seeds.end - seeds.start;
    let mut failed = Vec::new();
    for seed in seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(seed)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(why)) => failed.push(format!("seed {seed}: {why}")),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                failed.push(format!("seed {seed}: {why}"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {count} seeds failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// A duck restarted with much shorter timing (10 ms heartbeat, 30–60 ms election timeout)
/// stays the goose's majority while the goose and the other duck are cut from each other:
/// the duck must stay loyal for the goose's window, not its own.
#[test]
fn a_duck_restarted_with_short_timing_never_lets_a_second_goose_in() {
    every_seed(0..20, |seed| {
        let mut flock = Flock::new(FlockConfig::new(3, seed));
        let goose = elect(&mut flock).ok_or("no first goose")?;
        let mut ducks = (1..=3).filter(|n| *n != goose);
        let (short, other) = (ducks.next().unwrap_or(0), ducks.next().unwrap_or(0));
        flock.crash(short);
        flock.set_timing(short, timing(10, 30, 60));
        flock.start(short);
        flock.run_for(ms(1_000));
        flock.blocked.insert((goose, other));
        flock.blocked.insert((other, goose));
        flock.run_for(ms(3_000));
        Ok(())
    });
}

/// A duck restarted with much longer timing (50 ms heartbeat, 300–600 ms) is made goose by
/// a transfer, then cut off: its lease is long, so the others must wait out its window.
#[test]
fn a_goose_with_long_timing_cut_off_is_outlived_by_its_voters_loyalty() {
    every_seed(0..20, |seed| {
        let mut flock = Flock::new(FlockConfig::new(3, seed));
        let goose = elect(&mut flock).ok_or("no first goose")?;
        let long = (1..=3).find(|n| *n != goose).unwrap_or(0);
        flock.crash(long);
        flock.set_timing(long, timing(50, 300, 600));
        flock.start(long);
        flock.run_for(ms(1_500));
        let current = flock.goose().ok_or("no goose after the restart")?;
        if current != long {
            flock
                .transfer(current, Some(long))
                .map_err(|e| format!("transfer: {e}"))?;
        }
        let became = flock.run_until_condition(ELECTION_BOUND, |f| f.goose() == Some(long));
        if !became {
            return Err("the long-timing node never became goose".into());
        }
        flock.isolate(long);
        flock.run_for(ms(3_000));
        if flock.goose().is_none() {
            return Err("the other two never elected a goose".into());
        }
        Ok(())
    });
}

/// Timing drawn per node and changed at every restart, in any order: a restart loop over
/// the flock with random partitions in between.
#[test]
fn timing_changed_one_restart_at_a_time_in_any_order_keeps_one_goose() {
    let timings = [
        timing(50, 150, 300),
        timing(10, 30, 60),
        timing(50, 300, 600),
        timing(3, 12, 24),
        timing(100, 500, 1_000),
    ];
    every_seed(0..20, |seed| {
        let mut flock = Flock::new(FlockConfig::new(5, seed));
        for round in 0..20 {
            let n = flock.rand().range_inclusive(1, 5) as u16;
            let pick = flock.rand().range_inclusive(0, timings.len() as u64 - 1) as usize;
            flock.crash(n);
            flock.set_timing(n, timings[pick]);
            flock.start(n);
            if round % 3 == 0 {
                let cut = flock.rand().range_inclusive(1, 5) as u16;
                flock.isolate(cut);
            } else {
                flock.heal();
            }
            let pause = flock.rand().range_inclusive(ms(50), ms(800));
            flock.run_for(pause);
        }
        flock.heal();
        elect(&mut flock).ok_or("no goose after healing")?;
        Ok(())
    });
}

/// Sixteen leaders in a row, each cut off right after its election, on logs of 4 entries:
/// elections must not fill the log, and a goose follows within 2 s of the heal.
#[test]
fn failed_leaderships_never_fill_a_four_entry_log() {
    every_seed(0..20, |seed| {
        let mut flock: Flock<SIM_MEMBERS, 4> = Flock::with_log(FlockConfig::new(5, seed));
        let mut last_term = goose_core::Term(0);
        for _ in 0..16 {
            let elected = flock.run_until_condition(ELECTION_BOUND, |f| {
                leader(f).is_some_and(|n| f.node(n).is_some_and(|node| node.term() > last_term))
            });
            let n = leader(&flock)
                .filter(|_| elected)
                .ok_or("no leader to cut off")?;
            last_term = flock.node(n).map(|node| node.term()).unwrap_or_default();
            flock.heal();
            flock.isolate(n);
        }
        flock.heal();
        let healed = flock.now;
        let found = flock.run_until_condition(ms(2_000), |f| f.goose().is_some());
        if !found {
            return Err(format!(
                "no goose {} ms after the heal (term {last_term})",
                (flock.now - healed) / 1000
            ));
        }
        Ok(())
    });
}

/// Proposes `payload` on whichever node is goose until one accepts it (busy while a
/// change or a new leader's log is unconfirmed).
fn propose_until_accepted(flock: &mut Flock, payload: Payload) -> Result<u16, String> {
    for _ in 0..30 {
        if let Some(goose) = elect(flock) {
            if flock.propose(goose, payload).is_ok() {
                return Ok(goose);
            }
        }
        flock.run_for(ms(100));
    }
    Err(format!("no goose accepted {payload:?}"))
}

fn add_learner(flock: &mut Flock, n: u16) -> Result<(), String> {
    let goose = propose_until_accepted(
        flock,
        Payload::AddLearner {
            id: flock_sim::id(n),
            addr: flock_sim::addr(n),
        },
    )?;
    let caught_up = flock.run_until_condition(ELECTION_BOUND, |f| {
        let goose_commit = f.node(goose).map(|node| node.commit());
        f.node(n).is_some_and(|node| {
            node.members().iter().any(|m| m.id.get() == n) && Some(node.commit()) >= goose_commit
        })
    });
    if !caught_up {
        return Err(format!("learner {n} never caught up"));
    }
    Ok(())
}

/// Removes a duck voter once a goose accepts it, and runs until the duck reports its
/// removal; returns the duck.
fn remove_a_duck(flock: &mut Flock) -> Result<u16, String> {
    let goose = elect(flock).ok_or("no goose")?;
    let victim = (1..=5).find(|n| *n != goose).unwrap_or(0);
    propose_until_accepted(
        flock,
        Payload::Remove {
            id: flock_sim::id(victim),
        },
    )?;
    if !flock.run_until_condition(ms(2_000), |f| f.removed.contains(&victim)) {
        let status = flock
            .node(victim)
            .map(|node| format!("{:?}", node.status(flock.local_now(victim))));
        return Err(format!(
            "node {victim} never reported its removal: {status:?}"
        ));
    }
    Ok(victim)
}

/// Five voters and a learner waiting for promotion; a duck voter is removed. The promotion
/// that follows must not strand the removed node: it learns its removal and reports it
/// (the desktop node then exits), and never campaigns (the checker asserts that no node
/// stands for election outside its latest membership).
#[test]
fn a_removed_duck_always_learns_it_even_when_a_promotion_follows() {
    every_seed(0..50, |seed| {
        let mut config = FlockConfig::new(6, seed);
        config.bootstrap = 5;
        let mut flock = Flock::new(config);
        add_learner(&mut flock, 6)?;
        let victim = remove_a_duck(&mut flock)?;
        flock.crash(victim);
        flock.run_for(ms(500));
        Ok(())
    });
}

/// A removed node, restarted on its data and added again, keeps running: only a removal
/// that is the latest word on it ends it.
#[test]
fn a_node_removed_restarted_and_added_again_keeps_running() {
    every_seed(0..20, |seed| {
        let mut config = FlockConfig::new(5, seed);
        config.timing.voters_target = 5;
        let mut flock = Flock::new(config);
        let victim = remove_a_duck(&mut flock)?;
        flock.crash(victim);
        flock.run_for(ms(300));
        flock.start(victim);
        flock.run_for(ms(300));
        // Added again: it may be goose again one day, legitimately.
        flock.removed.remove(&victim);
        propose_until_accepted(
            &mut flock,
            Payload::AddLearner {
                id: flock_sim::id(victim),
                addr: flock_sim::addr(victim),
            },
        )?;
        let promoted = flock.run_until_condition(ms(3_000), |f| {
            f.node(victim).is_some_and(|node| {
                node.members()
                    .iter()
                    .any(|m| m.id.get() == victim && m.voter)
            })
        });
        let removals = flock
            .notable_events
            .iter()
            .filter(|(_, n, e)| *n == victim && *e == Event::Removed)
            .count();
        if removals != 1 {
            return Err(format!(
                "node {victim} reported its removal {removals} times"
            ));
        }
        if !promoted {
            return Err(format!("node {victim} was not promoted again"));
        }
        Ok(())
    });
}

/// A removal the goose appended while cut off, then committed by a later leadership (the
/// same node, restarted and elected again with the removal still uncommitted in its log):
/// the removed node must still be told, and report its removal, once it can be reached. A
/// new leader builds its replication from its latest membership, which no longer names the
/// removed node; without more, nothing ever tells it, and it lingers as a duck.
#[test]
fn a_removal_committed_by_a_later_leadership_still_reaches_the_removed_node() {
    every_seed(0..30, |seed| {
        let mut config = FlockConfig::new(3, seed);
        config.timing.voters_target = 3;
        let mut flock = Flock::new(config);
        let goose = elect(&mut flock).ok_or("no goose")?;
        flock.run_for(ms(200)); // its log confirmed: it takes proposals
        let goose = flock.goose().unwrap_or(goose);
        let others: Vec<u16> = (1..=3).filter(|n| *n != goose).collect();
        let (kept, victim) = (others[0], others[1]);
        flock.isolate(goose);
        let removal = Payload::Remove {
            id: flock_sim::id(victim),
        };
        flock
            .propose(goose, removal)
            .map_err(|e| format!("goose {goose} refused the removal: {e:?}"))?;
        // Restarted, its log (with the removal) outranks the kept node's, and the victim is
        // cut off: only the old goose can be elected, with the removal uncommitted.
        flock.crash(goose);
        flock.start(goose);
        flock.partition(&[&[goose, kept], &[victim]]);
        let committed = flock.run_until_condition(ms(3_000), |f| {
            f.node(goose).is_some_and(|node| {
                let status = node.status(f.local_now(goose));
                status.raft == RaftRole::Leader
                    && !node.members().iter().any(|m| m.id.get() == victim)
                    && node.commit() >= status.last.index
            })
        });
        if !committed {
            return Err(format!("node {goose} never committed the removal again"));
        }
        flock.heal();
        if !flock.run_until_condition(ms(2_000), |f| f.removed.contains(&victim)) {
            return Err(format!("node {victim} never learnt its removal"));
        }
        Ok(())
    });
}

/// A member removed while it was down, its removal committed, then a leader change before
/// it restarts: the new leader must still tell it, though its own latest membership no
/// longer names it and the removal is old news to every member.
#[test]
fn a_member_removed_while_down_learns_it_from_the_next_leader() {
    every_seed(0..30, |seed| {
        let mut config = FlockConfig::new(5, seed);
        config.timing.voters_target = 5;
        let mut flock = Flock::new(config);
        let goose = elect(&mut flock).ok_or("no goose")?;
        let victim = (1..=5).find(|n| *n != goose).unwrap_or(0);
        flock.crash(victim);
        let removal = Payload::Remove {
            id: flock_sim::id(victim),
        };
        let proposer = propose_until_accepted(&mut flock, removal)?;
        let committed = flock.run_until_condition(ms(2_000), |f| {
            (1..=5).filter(|n| *n != victim).all(|n| {
                f.node(n)
                    .is_none_or(|node| !node.members().iter().any(|m| m.id.get() == victim))
            }) && f
                .node(proposer)
                .is_some_and(|node| node.commit() >= node.status(f.local_now(proposer)).last.index)
        });
        if !committed {
            return Err(format!("the removal of node {victim} never committed"));
        }
        // Heartbeats carry the commit to every member: the removal is old news to them all.
        flock.run_for(ms(300));
        flock.crash(proposer);
        let next =
            flock.run_until_condition(ELECTION_BOUND, |f| f.goose().is_some_and(|g| g != proposer));
        if !next {
            return Err(format!("no goose after node {proposer} crashed"));
        }
        flock.start(victim);
        if !flock.run_until_condition(ms(2_000), |f| f.removed.contains(&victim)) {
            return Err(format!("node {victim} never learnt its removal"));
        }
        Ok(())
    });
}
