//! Membership changes, learners and leadership transfer (dissertation chapters 3.10 and 4),
//! in the deterministic simulator with every invariant checked after every event.

use flock_sim::{addr, id, ms, Flock, FlockConfig};
use goose_core::wire::{Body, Message};
use goose_core::{Event, Payload, ProposeError, RaftRole, Term, TransferError};

const ELECTION_BOUND: u64 = ms(3_000);

fn flock_with(nodes: u16, bootstrap: u16, seed: u64, voters_target: u16) -> Flock {
    let mut config = FlockConfig::new(nodes, seed);
    config.bootstrap = bootstrap;
    config.timing.voters_target = voters_target;
    Flock::new(config)
}

/// Runs until there is a goose that accepts changes (a majority confirmed its log).
fn elect(flock: &mut Flock) -> u16 {
    assert!(
        flock.run_until_condition(ELECTION_BOUND, |f| f.confirmed_goose().is_some()),
        "no goose"
    );
    flock.confirmed_goose().expect("checked above")
}

fn voters(flock: &Flock, n: u16) -> Vec<u16> {
    let node = flock.node(n).expect("up");
    node.members()
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id.get())
        .collect()
}

fn add(flock: &mut Flock, goose: u16, n: u16) {
    flock
        .propose(
            goose,
            Payload::AddLearner {
                id: id(n),
                addr: addr(n),
            },
        )
        .expect("accepted");
}

#[test]
fn membership_joining_node_learns_the_flock_and_is_promoted_once_caught_up() {
    // §4.1 and §4.2.1: a new node joins as a learner (non-voting) and becomes a voter once
    // it has caught up, while voters are fewer than the target.
    let mut flock = flock_with(4, 3, 20, 5);
    let goose = elect(&mut flock);
    assert!(
        flock.node(4).unwrap().members().is_empty(),
        "node 4 starts empty"
    );
    add(&mut flock, goose, 4);
    assert!(
        flock.run_until_condition(ms(2_000), |f| voters(f, goose).contains(&4)),
        "promoted"
    );
    flock.run_for(ms(500));
    assert_eq!(
        voters(&flock, 4),
        vec![1, 2, 3, 4],
        "the new node knows the flock"
    );
    assert_eq!(flock.goose(), Some(goose));
}

#[test]
fn membership_beyond_the_voter_target_nodes_stay_learners() {
    let mut flock = flock_with(5, 3, 21, 3);
    let goose = elect(&mut flock);
    add(&mut flock, goose, 4);
    flock.run_for(ms(500));
    add(&mut flock, goose, 5);
    flock.run_for(ms(1_000));
    assert_eq!(voters(&flock, goose), vec![1, 2, 3]);
    for learner in [4, 5] {
        let status = flock
            .node(learner)
            .unwrap()
            .status(flock.local_now(learner));
        assert_eq!(status.raft, RaftRole::Learner);
        assert_eq!(
            status.leader.map(|l| l.get()),
            Some(goose),
            "a learner knows the goose"
        );
    }
    // Learners never campaign: cut the goose off from the voters only.
    let others: Vec<u16> = (1..=3).filter(|n| *n != goose).collect();
    flock.partition(&[&[goose, 4, 5], &others]);
    assert!(flock.run_until_condition(ELECTION_BOUND, |f| f
        .goose()
        .is_some_and(|g| others.contains(&g))));
}

#[test]
fn membership_one_change_at_a_time_and_only_after_the_leaders_noop_commits() {
    // Ongaro, raft-dev 2015: a leader must commit an entry of its own term before it
    // accepts a membership change, or two disjoint majorities can form.
    let mut flock = flock_with(3, 3, 22, 5);
    let a = elect(&mut flock);
    let b = (1..=3).find(|n| *n != a).unwrap();
    flock.partition(&[&[1], &[2], &[3]]);
    assert!(flock.run_until_condition(ELECTION_BOUND, |f| {
        f.node(a).unwrap().status(f.local_now(a)).raft == RaftRole::PreCandidate
    }));
    // Hand node `a` a new term's leadership while its no-op cannot commit.
    let term = Term(flock.node(a).unwrap().term().0 + 1);
    flock.inject(
        b,
        a,
        &Message {
            term,
            body: Body::PreVoteResponse { granted: true },
        },
    );
    flock.inject(
        b,
        a,
        &Message {
            term,
            body: Body::VoteResponse { granted: true },
        },
    );
    assert_eq!(
        flock.node(a).unwrap().status(flock.local_now(a)).raft,
        RaftRole::Leader
    );
    let change = Payload::AddLearner {
        id: id(9),
        addr: addr(9),
    };
    assert_eq!(flock.propose(a, change), Err(ProposeError::Busy));
    // On a stable flock: one change accepted, a second refused until the first commits.
    let mut flock = flock_with(3, 3, 23, 5);
    let goose = elect(&mut flock);
    add(&mut flock, goose, 9);
    assert_eq!(
        flock.propose(goose, Payload::Remove { id: id(9) }),
        Err(ProposeError::Busy)
    );
    flock.run_for(ms(200));
    flock
        .propose(goose, Payload::Remove { id: id(9) })
        .expect("the first change committed");
}

#[test]
fn membership_removed_goose_steps_down_and_never_becomes_goose_again() {
    // §4.2.2: a leader removed from the configuration steps down once the removal commits.
    let mut flock = flock_with(5, 5, 24, 5);
    let goose = elect(&mut flock);
    flock
        .propose(goose, Payload::Remove { id: id(goose) })
        .expect("accepted");
    assert!(flock.run_until_condition(ELECTION_BOUND, |f| f.goose().is_some_and(|g| g != goose)));
    assert!(
        flock.removed.contains(&goose),
        "the removed node reported Event::Removed: {:?} {:?} {:?}",
        flock.notable_events,
        flock.node(goose).unwrap().status(flock.local_now(goose)),
        flock.node(goose).unwrap().entries()
    );
    // The checker fails the run if a removed node is ever goose; give it every chance.
    for _ in 0..3 {
        let current = flock.goose().unwrap();
        flock.crash(current);
        flock.run_for(ms(2_000));
        flock.start(current);
    }
    assert_eq!(
        flock
            .node(goose)
            .unwrap()
            .status(flock.local_now(goose))
            .raft,
        RaftRole::Learner
    );
}

#[test]
fn transfer_hands_over_to_the_most_up_to_date_voter_which_wins_at_once() {
    // Dissertation §3.10: the leader brings the target level, sends TimeoutNow, and the
    // target wins its election without waiting for a timeout.
    for seed in 0..10 {
        let mut flock = flock_with(5, 5, 30 + seed, 5);
        let old = elect(&mut flock);
        flock.run_for(ms(300));
        flock.transfer(old, None).expect("leader");
        assert!(
            !flock.node(old).unwrap().is_goose(flock.local_now(old)),
            "duck before handing off"
        );
        let started = flock.now;
        assert!(flock.run_until_condition(ms(1_000), |f| f.goose().is_some_and(|g| g != old)));
        let new = flock.goose().unwrap();
        // Far below an election timeout (150 ms): a round trip to catch up, one to vote,
        // one to commit the no-op, each at most 1 ms in the simulated LAN.
        assert!(
            flock.now - started < ms(20),
            "seed {seed}: handoff took {} µs",
            flock.now - started
        );
        let sent = flock.notable_events.iter().find_map(|(_, n, e)| match e {
            Event::TransferSent { to } if *n == old => Some(to.get()),
            _ => None,
        });
        assert_eq!(sent, Some(new), "seed {seed}");
    }
}

#[test]
fn transfer_to_a_named_voter_or_refused() {
    let mut flock = flock_with(4, 3, 40, 3);
    let goose = elect(&mut flock);
    add(&mut flock, goose, 4);
    flock.run_for(ms(500));
    assert_eq!(
        flock.transfer(goose, Some(4)),
        Err(TransferError::UnknownNode),
        "a learner"
    );
    assert_eq!(
        flock.transfer(goose, Some(goose)),
        Err(TransferError::UnknownNode)
    );
    assert_eq!(
        flock.transfer(goose, Some(99)),
        Err(TransferError::UnknownNode)
    );
    let other = (1..=3).find(|n| *n != goose).unwrap();
    assert_eq!(flock.transfer(other, None), Err(TransferError::NotLeader));
    let target = (1..=3).rev().find(|n| *n != goose).unwrap();
    flock.transfer(goose, Some(target)).expect("a voter");
    assert_eq!(flock.transfer(goose, None), Err(TransferError::Busy));
    assert!(flock.run_until_condition(ms(500), |f| f.goose() == Some(target)));
}

#[test]
fn transfer_without_a_caught_up_voter_fails_and_the_leader_resumes() {
    let mut flock = flock_with(3, 3, 41, 5);
    let goose = elect(&mut flock);
    let target = (1..=3).find(|n| *n != goose).unwrap();
    flock.blocked.insert((goose, target));
    // Something the target lacks, so it cannot be level.
    flock.propose(goose, Payload::Noop).expect("accepted");
    flock.transfer(goose, Some(target)).expect("a voter");
    flock.run_for(ms(300));
    assert!(flock
        .notable_events
        .iter()
        .any(|(_, n, e)| *n == goose && *e == Event::TransferFailed));
    assert_eq!(
        flock.goose(),
        Some(goose),
        "the leader leads on, and is goose again"
    );
}

#[test]
fn membership_node_joins_through_a_goose_that_was_itself_added_later() {
    // The joiner learns the flock from the goose's snapshot; that snapshot must name the
    // goose even when the goose joined after the bootstrap, or the joiner can never reply.
    let mut flock = flock_with(5, 3, 50, 5);
    let first = elect(&mut flock);
    add(&mut flock, first, 4);
    assert!(flock.run_until_condition(ms(2_000), |f| voters(f, first).contains(&4)));
    flock.transfer(first, Some(4)).expect("4 is a voter");
    assert!(flock.run_until_condition(ms(1_000), |f| f.goose() == Some(4)));
    add(&mut flock, 4, 5);
    assert!(
        flock.run_until_condition(ms(2_000), |f| voters(f, 4).contains(&5)),
        "5 promoted"
    );
    flock.run_for(ms(500));
    assert_eq!(voters(&flock, 5), vec![1, 2, 3, 4, 5]);
    assert_eq!(
        flock.node(5).unwrap().commit(),
        flock.node(4).unwrap().commit()
    );
}

#[test]
fn membership_the_last_voter_cannot_be_removed() {
    let mut flock = flock_with(1, 1, 51, 5);
    let goose = elect(&mut flock);
    assert_eq!(
        flock.propose(goose, Payload::Remove { id: id(goose) }),
        Err(ProposeError::Invalid)
    );
    assert_eq!(flock.goose(), Some(goose));
}

#[test]
fn membership_a_member_added_while_down_joins_after_a_change_of_goose() {
    // A node is added while its process is down, the goose changes, then the node starts
    // with an empty data dir (`goose node --join`). The new goose's progress for it starts
    // optimistic, at its own last index, and a joining node drops Appends from senders it
    // does not know: the goose must fall back to streaming the snapshot.
    for seed in 0..20 {
        let mut flock = flock_with(4, 3, seed, 5);
        flock.crash(4);
        let first = elect(&mut flock);
        add(&mut flock, first, 4);
        assert!(
            flock.run_until_condition(ms(1_000), |f| {
                (1..=3).all(|n| {
                    f.node(n).is_some_and(|node| {
                        node.commit() >= node.snapshot().index
                            && node.members().iter().any(|m| m.id.get() == 4)
                    })
                })
            }),
            "seed {seed}: every member knows node 4"
        );
        flock.crash(first);
        let second = elect(&mut flock);
        assert_ne!(second, first);
        flock.start(first);
        flock.start(4);
        assert!(
            flock.run_until_condition(ms(2_000), |f| {
                f.node(4)
                    .is_some_and(|node| node.members().iter().any(|m| m.id.get() == 4))
            }),
            "seed {seed}: node 4 never learned the flock from goose {second}"
        );
    }
}

#[test]
fn membership_a_voter_down_while_the_goose_was_added_follows_it() {
    // A voter is down while a new node is added, promoted and handed leadership; it comes
    // back on its saved state, whose membership names neither that node nor its address.
    // It must follow the new goose: the goose's Appends come from a sender it does not
    // know, so only the snapshot the goose sends to the silent tells it the flock.
    for seed in 0..20 {
        let mut flock = flock_with(4, 3, 300 + seed, 5);
        let first = elect(&mut flock);
        let down = (1..=3).find(|n| *n != first).expect("three voters");
        flock.crash(down);
        add(&mut flock, first, 4);
        assert!(
            flock.run_until_condition(ms(2_000), |f| voters(f, first).contains(&4)),
            "seed {seed}: node 4 promoted"
        );
        flock.transfer(first, Some(4)).expect("node 4 is a voter");
        assert!(
            flock.run_until_condition(ms(2_000), |f| f.confirmed_goose() == Some(4)),
            "seed {seed}: node 4 goose"
        );
        flock.start(down);
        assert!(
            flock.run_until_condition(ms(2_000), |f| {
                f.node(down).is_some_and(|node| {
                    let status = node.status(f.local_now(down));
                    status.leader.map(|l| l.get()) == Some(4) && voters(f, down).contains(&4)
                })
            }),
            "seed {seed}: node {down} never followed goose 4: {:?}",
            flock.node(down).map(|n| n.status(flock.local_now(down)))
        );
        // And it counts again: with node 4's old goose gone, the flock still has a
        // majority of its four voters.
        flock.crash(first);
        assert!(
            flock.run_until_condition(ELECTION_BOUND, |f| f.confirmed_goose().is_some()),
            "seed {seed}: no goose among the three voters left"
        );
    }
}

// --- Held transfers and health -----------------------------------------------------------

fn transfer_sent(flock: &Flock, from: u16) -> Option<u16> {
    flock.notable_events.iter().find_map(|(_, n, e)| match e {
        Event::TransferSent { to } if *n == from => Some(to.get()),
        _ => None,
    })
}

#[test]
fn transfer_held_sends_timeout_now_only_once_released_and_nobody_is_goose_meanwhile() {
    // What the program stops before releasing (a job, a duck hook) is stopped before any
    // other node can be goose: the leader keeps its voters loyal and sends no TimeoutNow.
    for seed in 0..10 {
        let mut flock = flock_with(5, 5, 60 + seed, 5);
        let old = elect(&mut flock);
        flock.run_for(ms(300));
        flock.transfer_held(old, None, ms(2_000)).expect("leader");
        assert!(flock.node(old).unwrap().is_transfer_held());
        // Far past every election timeout (300 ms): no goose anywhere, still one leader.
        assert!(!flock.run_until_condition(ms(1_000), |f| f.goose().is_some()));
        assert_eq!(transfer_sent(&flock, old), None, "seed {seed}");
        let status = flock.node(old).unwrap().status(flock.local_now(old));
        assert_eq!(status.raft, RaftRole::Leader, "seed {seed}");
        let released = flock.now;
        assert!(flock.release_transfer(old));
        assert!(!flock.node(old).unwrap().is_transfer_held());
        assert!(flock.run_until_condition(ms(1_000), |f| f.goose().is_some_and(|g| g != old)));
        assert!(flock.now - released < ms(20), "seed {seed}");
        assert_eq!(transfer_sent(&flock, old), flock.goose(), "seed {seed}");
    }
}

#[test]
fn transfer_held_past_its_deadline_steps_down_without_timeout_now() {
    for seed in 0..10 {
        let mut flock = flock_with(3, 3, 70 + seed, 5);
        let old = elect(&mut flock);
        flock.run_for(ms(300));
        let started = flock.now;
        flock.transfer_held(old, None, ms(400)).expect("leader");
        assert!(flock.run_until_condition(ms(1_000), |f| {
            f.node(old)
                .is_some_and(|n| n.status(f.local_now(old)).raft != RaftRole::Leader)
        }));
        // The hold is on the node's clock, which may run up to 1% fast.
        assert!(
            flock.now - started >= ms(396),
            "seed {seed}: stepped down early"
        );
        assert!(!flock.release_transfer(old), "nothing left to release");
        assert!(flock.run_until_condition(ELECTION_BOUND, |f| f.goose().is_some()));
        assert_eq!(transfer_sent(&flock, old), None, "seed {seed}");
    }
}

#[test]
fn health_an_unhealthy_voter_never_campaigns_and_is_never_a_transfer_target() {
    for seed in 0..10 {
        let mut flock = flock_with(3, 3, 80 + seed, 5);
        let goose = elect(&mut flock);
        let others: Vec<u16> = (1..=3).filter(|n| *n != goose).collect();
        let (sick, well) = (others[0], others[1]);
        flock.node_mut(sick).unwrap().set_healthy(false);
        assert!(
            !flock
                .node(sick)
                .unwrap()
                .status(flock.local_now(sick))
                .healthy
        );
        // The goose hears it in the next acknowledgements.
        flock.run_for(ms(200));
        assert_eq!(
            flock.transfer(goose, Some(sick)),
            Err(TransferError::Unhealthy),
            "seed {seed}"
        );
        flock.transfer(goose, None).expect("one healthy voter");
        assert!(flock.run_until_condition(ms(1_000), |f| f.goose() == Some(well)));
        assert_eq!(transfer_sent(&flock, goose), Some(well), "seed {seed}");
        // With the new goose gone, the old one wins: the unhealthy one votes but never
        // stands, not even as a pre-candidate.
        flock.crash(well);
        let standing = |f: &Flock| {
            let role = f.node(sick).unwrap().status(f.local_now(sick)).raft;
            matches!(
                role,
                RaftRole::PreCandidate | RaftRole::Candidate | RaftRole::Leader
            )
        };
        let mut stood = false;
        assert!(flock.run_until_condition(ELECTION_BOUND, |f| {
            stood |= standing(f);
            f.goose().is_some()
        }));
        assert_eq!(flock.goose(), Some(goose), "seed {seed}");
        // Alone with a dead goose, it still never stands; healthy again, it does.
        flock.crash(goose);
        assert!(!flock.run_until_condition(ms(2_000), |f| {
            stood |= standing(f);
            false
        }));
        assert!(!stood, "seed {seed}: the unhealthy voter campaigned");
        flock.node_mut(sick).unwrap().set_healthy(true);
        assert!(
            flock.run_until_condition(ms(2_000), standing),
            "seed {seed}: healthy again, it stands"
        );
    }
}

#[test]
fn health_with_no_healthy_voter_left_a_transfer_has_no_target() {
    let mut flock = flock_with(3, 3, 90, 5);
    let goose = elect(&mut flock);
    for n in (1..=3).filter(|n| *n != goose) {
        flock.node_mut(n).unwrap().set_healthy(false);
    }
    flock.run_for(ms(200));
    assert_eq!(flock.transfer(goose, None), Err(TransferError::NoTarget));
    assert_eq!(flock.goose(), Some(goose), "it leads on");
}

/// Delivers every frame in flight, oldest first, each carrying the saves on the causal
/// chain that sent it (an input after which its node had saved adds one), until `done`
/// holds after an input; returns the saves on that input's chain.
fn saves_on_the_path(flock: &mut Flock, done: impl Fn(&Flock) -> bool) -> Option<u64> {
    let saves = |flock: &Flock, n: u16| flock.process(n).storage.disk().borrow().saves;
    let mut queue: std::collections::VecDeque<_> =
        flock.take_frames().into_iter().map(|p| (p, 0)).collect();
    for _ in 0..flock_sim::HELD_STEPS_MAX {
        let (packet, depth) = queue.pop_front()?;
        let before = saves(flock, packet.to);
        flock.deliver(&packet);
        let depth = depth + u64::from(saves(flock, packet.to) > before);
        if done(flock) {
            return Some(depth);
        }
        queue.extend(flock.take_frames().into_iter().map(|p| (p, depth)));
    }
    None
}

#[test]
fn transfer_the_new_goose_waits_for_two_saves_the_votes() {
    // The saves a handoff waits for, one after another: the candidate's vote for itself,
    // then its voters' (in parallel). Neither the new leader's log term nor its followers'
    // are saved on the way: a leader whose commit index covers its log needs no
    // confirmation to be goose, and log terms are saved after the acknowledgements have
    // left (the log term, in `core/src/raft/follower.rs`). It used to be four.
    let config = flock_sim::FlockConfig {
        drift_ppm: 0,
        ..FlockConfig::new(5, 50)
    };
    let mut flock = Flock::held(config, 1_024);
    for n in 1..=5 {
        flock.start(n);
    }
    let goose = flock.settle_held();
    // A few heartbeat rounds: every entry committed and known so, every log term saved.
    for _ in 0..4 {
        flock.now = flock.deadline(goose).expect("a leader's timer");
        for n in 1..=5 {
            if flock.deadline(n).is_some_and(|at| at <= flock.now) {
                flock.fire(n);
            }
        }
        flock.deliver_all();
    }
    assert_eq!(flock.goose(), Some(goose));
    let target = (1..=5).find(|&n| n != goose).unwrap();
    flock.transfer(goose, Some(target)).expect("a voter");
    let saves = saves_on_the_path(&mut flock, |f| f.goose() == Some(target));
    assert_eq!(saves, Some(2), "saves before node {target} was goose");
    assert!(flock.violation().is_none());
    // Its followers then save their log terms and confirm: it accepts changes.
    flock.deliver_all();
    for n in 1..=5 {
        flock.fire(n);
    }
    flock.deliver_all();
    assert_eq!(flock.confirmed_goose(), Some(target));
}

/// A flock whose hosts read a quiescent leader's peer frames only at its timers, as the
/// desktop node does.
fn quiet_flock(nodes: u16, seed: u64) -> Flock {
    let mut config = FlockConfig::new(nodes, seed);
    config.quiet_goose = true;
    Flock::new(config)
}

#[test]
fn quiet_a_settled_goose_is_quiescent_and_a_change_or_a_transfer_ends_it() {
    for seed in 0..10 {
        let mut flock = quiet_flock(5, 600 + seed);
        let goose = elect(&mut flock);
        flock.run_for(ms(300));
        let quiescent = |f: &Flock, n: u16| f.node(n).is_some_and(|node| node.is_quiescent());
        assert!(quiescent(&flock, goose), "seed {seed}: settled");
        assert!(
            (1..=5)
                .filter(|&n| n != goose)
                .all(|n| !quiescent(&flock, n)),
            "seed {seed}: only a leader is"
        );
        // A change: not quiescent until every peer holds it and it is committed.
        let voter = (1..=5).find(|&n| n != goose).unwrap();
        flock
            .propose(goose, Payload::Remove { id: id(voter) })
            .expect("accepted");
        assert!(!quiescent(&flock, goose), "seed {seed}: an entry in flight");
        assert!(
            flock.run_until_condition(ms(1_000), |f| quiescent(f, goose)),
            "seed {seed}: quiescent again once the removal is everywhere"
        );
        // A transfer: the handoff is as fast as with every acknowledgement read at once.
        let target = (1..=5).find(|&n| n != goose && n != voter).unwrap();
        flock.transfer(goose, Some(target)).expect("a voter");
        assert!(
            !quiescent(&flock, goose),
            "seed {seed}: a transfer under way"
        );
        let started = flock.now;
        assert!(flock.run_until_condition(ms(1_000), |f| f.goose() == Some(target)));
        assert!(
            flock.now - started < ms(20),
            "seed {seed}: handoff took {} µs",
            flock.now - started
        );
        assert!(flock.violation().is_none(), "seed {seed}");
    }
}

#[test]
fn quiet_a_crashed_follower_catches_up_and_a_cut_goose_steps_down() {
    for seed in 0..10 {
        let mut flock = quiet_flock(5, 700 + seed);
        let goose = elect(&mut flock);
        flock.run_for(ms(300));
        // A follower down while an entry commits, then back: caught up within a few
        // heartbeats, the goose's acknowledgements read a heartbeat late at most.
        let follower = (1..=5).find(|&n| n != goose).unwrap();
        flock.crash(follower);
        add(&mut flock, goose, 6);
        flock.run_for(ms(300));
        flock.start(follower);
        let last = flock.node(goose).unwrap().commit();
        assert!(
            flock.run_until_condition(ms(500), |f| {
                f.node(follower).is_some_and(|node| node.commit() >= last)
            }),
            "seed {seed}: node {follower} caught up"
        );
        // Cut off from everyone: it reads nothing, so only its timers can end it, and
        // CheckQuorum does within two election timeouts.
        flock.isolate(goose);
        assert!(
            flock.run_until_condition(ms(700), |f| {
                f.node(goose)
                    .is_some_and(|node| node.status(f.local_now(goose)).raft != RaftRole::Leader)
            }),
            "seed {seed}: the cut-off goose stepped down"
        );
        assert!(flock.violation().is_none(), "seed {seed}");
    }
}

#[test]
fn membership_a_voter_removed_while_down_learns_it_from_the_snapshot() {
    // A goose folds what is committed into its snapshot while a peer is silent in its
    // leadership (so that a voter that missed the goose's addition can learn the flock): the
    // removal of a voter that is down is folded too, and that voter must still learn of it
    // when back.
    for seed in 0..20 {
        let mut flock = flock_with(4, 4, 900 + seed, 4);
        let goose = elect(&mut flock);
        let victim = (1..=4).find(|n| *n != goose).expect("four voters");
        flock.crash(victim);
        let removal = flock
            .propose(goose, Payload::Remove { id: id(victim) })
            .expect("accepted");
        // A new goose, to whom the victim has answered nothing: silent in its leadership.
        let next = (1..=4)
            .find(|n| *n != goose && *n != victim)
            .expect("a voter");
        assert!(
            flock.run_until_condition(ms(1_000), |f| {
                f.node(next).is_some_and(|n| n.commit() >= removal)
            }),
            "seed {seed}: the removal committed on node {next}"
        );
        flock.transfer(goose, Some(next)).expect("a voter");
        assert!(
            flock.run_until_condition(ms(2_000), |f| {
                f.goose() == Some(next)
                    && f.node(next).is_some_and(|n| n.snapshot().index >= removal)
            }),
            "seed {seed}: the removal was never folded into goose {next}'s snapshot"
        );
        flock.start(victim);
        assert!(
            flock.run_until_condition(ms(3_000), |f| f.removed.contains(&victim)),
            "seed {seed}: node {victim} never learned its removal: {:?}",
            flock
                .node(victim)
                .map(|n| n.status(flock.local_now(victim)))
        );
    }
}
