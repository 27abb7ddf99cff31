//! One test per claim of the Raft paper (Ongaro & Ousterhout 2014) or Ongaro's dissertation
//! (2014) that leader election and the goose lease depend on, in the spirit of etcd's
//! `raft_paper_test.go`. Each runs the deterministic simulator; the invariant checker runs
//! after every event in all of them.

use flock_sim::{ms, Flock, FlockConfig};
use goose_core::wire::{AppendResult, Body, Message};
use goose_core::{Instant, LogIndex, Payload, RaftRole, Term};

/// Generous bound for an election on a clean network: several 150–300 ms timeouts.
const ELECTION_BOUND: u64 = ms(3_000);

fn flock(nodes: u16, seed: u64) -> Flock {
    Flock::new(FlockConfig::new(nodes, seed))
}

/// Runs until there is a goose that accepts changes (a majority confirmed its log).
fn elect(flock: &mut Flock) -> u16 {
    assert!(
        flock.run_until_condition(ELECTION_BOUND, |f| f.confirmed_goose().is_some()),
        "no goose elected"
    );
    flock.confirmed_goose().expect("checked above")
}

fn term_of(flock: &Flock, n: u16) -> Term {
    flock.node(n).expect("node is up").term()
}

#[test]
fn election_initial_election_elects_one_goose_all_agree() {
    // §5.2: a flock starts with followers; one times out, wins, and all follow it.
    for seed in 0..20 {
        let mut flock = flock(5, seed);
        let goose = elect(&mut flock);
        flock.run_for(ms(500));
        assert_eq!(flock.goose(), Some(goose), "seed {seed}: the goose stays");
        let term = term_of(&flock, goose);
        for n in 1..=5 {
            let status = flock.node(n).unwrap().status(flock.local_now(n));
            assert_eq!(status.term, term, "seed {seed}: node {n} term");
            assert_eq!(
                status.leader.map(|l| l.get()),
                Some(goose),
                "seed {seed}: node {n} leader"
            );
        }
    }
}

#[test]
fn election_reelection_after_goose_crash() {
    // §5.2: followers that stop hearing from the leader elect a new one.
    let mut flock = flock(5, 1);
    let first = elect(&mut flock);
    let first_term = term_of(&flock, first);
    flock.crash(first);
    let second = elect(&mut flock);
    assert_ne!(second, first);
    assert!(term_of(&flock, second) > first_term);
}

#[test]
fn lease_no_goose_in_a_minority() {
    // Contract: a goose cut off from its majority stops being goose before anyone else can
    // be; the minority side never has one.
    let mut flock = flock(5, 2);
    let goose = elect(&mut flock);
    let others: Vec<u16> = (1..=5).filter(|n| *n != goose).collect();
    let minority = [goose, others[0]];
    let majority = [others[1], others[2], others[3]];
    flock.partition(&[&minority, &majority]);
    let lease = flock.config.timing.lease_duration().micros();
    flock.run_for(lease + ms(1));
    assert!(
        !flock.geese().iter().any(|g| minority.contains(g)),
        "minority still has a goose"
    );
    assert!(flock.run_until_condition(ELECTION_BOUND, |f| f.goose().is_some()));
    assert!(majority.contains(&flock.goose().unwrap()));
    // And it stays that way: the minority never gets one.
    flock.run_for(ms(3_000));
    assert!(!flock.geese().iter().any(|g| minority.contains(g)));
}

#[test]
fn lease_old_goose_rejoins_as_a_duck() {
    // §5.1: a leader that learns of a higher term becomes a follower.
    let mut flock = flock(5, 3);
    let old = elect(&mut flock);
    flock.isolate(old);
    assert!(flock.run_until_condition(ELECTION_BOUND, |f| f.goose().is_some_and(|g| g != old)));
    let new = flock.goose().unwrap();
    flock.heal();
    flock.run_for(ms(1_000));
    assert_eq!(flock.goose(), Some(new), "the new goose keeps its place");
    let status = flock.node(old).unwrap().status(flock.local_now(old));
    assert_eq!(status.raft, RaftRole::Follower);
    assert_eq!(status.leader.map(|l| l.get()), Some(new));
    assert_eq!(status.term, term_of(&flock, new));
}

#[test]
fn election_stale_leader_steps_down_on_higher_term() {
    // §5.1: a message with a higher term makes a leader step down at once.
    let mut flock = flock(3, 4);
    let leader = elect(&mut flock);
    let other = (1..=3).find(|n| *n != leader).unwrap();
    let higher = Term(term_of(&flock, leader).0 + 5);
    let response = Message {
        term: higher,
        body: Body::AppendResponse {
            sent_at: Instant::ZERO,
            result: AppendResult::Accepted {
                match_index: LogIndex(0),
                confirmed: false,
            },
            healthy: true,
        },
    };
    assert!(flock.inject(other, leader, &response));
    let status = flock.node(leader).unwrap().status(flock.local_now(leader));
    assert_eq!(status.raft, RaftRole::Follower);
    assert_eq!(status.term, higher);
    assert!(!status.goose);
}

#[test]
fn lease_restarted_follower_does_not_help_elect_a_second_goose() {
    // Lease, restart case: a follower that acknowledged the goose and restarted at once has
    // forgotten the contact; it must still refuse votes for a minimum election timeout
    // after starting, or its vote would elect a second goose inside the first one's lease.
    for seed in 0..40 {
        let mut flock = flock(3, 100 + seed);
        let goose = elect(&mut flock);
        let mut rest = (1..=3).filter(|n| *n != goose);
        let (helper, candidate) = (rest.next().unwrap(), rest.next().unwrap());
        // The candidate stops hearing the goose; the helper still hears it and acks.
        flock.blocked.insert((goose, candidate));
        flock.blocked.insert((candidate, goose));
        let wait = flock.rand().range_inclusive(0, ms(300));
        flock.run_for(ms(300) + wait);
        assert_eq!(
            flock.goose(),
            Some(goose),
            "seed {seed}: the helper keeps the goose's lease"
        );
        // The helper restarts at once and hears the goose no more; the goose's lease
        // still stands on the helper's acknowledgements from before the crash.
        flock.crash(helper);
        flock.start(helper);
        flock.blocked.insert((goose, helper));
        // The checker fails the run if the candidate becomes goose inside that lease.
        flock.run_for(ms(2_000));
        let winner = flock.goose();
        assert!(
            winner == Some(candidate) || winner == Some(helper),
            "seed {seed}: a new goose once the lease is over"
        );
    }
}

#[test]
fn election_split_votes_resolve() {
    // §5.2: randomized timeouts make split votes rare and short. Even with every node
    // starting its clock at the same instant, 50 flocks all elect within the bound.
    for seed in 0..50 {
        let mut flock = flock(4, 1_000 + seed);
        elect(&mut flock);
    }
}

#[test]
fn persistence_votes_and_terms_survive_restart() {
    // Figure 2: currentTerm and votedFor are persisted before responding. The checker fails
    // the run on any restart whose term or vote went back; here we also look directly.
    let mut flock = flock(3, 5);
    let goose = elect(&mut flock);
    for n in 1..=3 {
        let (term, vote) = (term_of(&flock, n), flock.node(n).unwrap().voted_for());
        flock.crash(n);
        flock.start(n);
        assert_eq!(term_of(&flock, n), term);
        assert_eq!(flock.node(n).unwrap().voted_for(), vote);
        assert!(
            vote.is_some() || n == goose,
            "every voter voted in the election"
        );
    }
    elect(&mut flock);
}

#[test]
fn commit_figure8_earlier_terms_commit_only_by_confirmation_in_the_current_term() {
    // §5.4.2 and Figure 8: a leader must not commit an earlier term's entry by counting the
    // replicas that hold it. Here, instead of committing a no-op of its own, a leader
    // commits once a majority confirmed its whole log in its term (their log term is its
    // term, Viewstamped Replication's log view). Node 1 holds an uncommitted entry of its
    // old term; re-elected (with votes we hand it), it is told a peer holds that entry
    // without confirming: it must not commit. Told the peer confirmed, it commits the old
    // entry, having appended nothing. (The leader counts its own confirmation once its log
    // term is saved, with its first heartbeat after the election: the log term, in
    // `follower`.)
    let mut flock = flock(3, 6);
    let a = elect(&mut flock);
    let (b, _) = ((1..=3).find(|n| *n != a).unwrap(), ());
    flock.partition(&[&[1], &[2], &[3]]);
    let old = flock.propose(a, Payload::Noop).expect("still leader");
    assert!(flock.run_until_condition(ELECTION_BOUND, |f| {
        f.node(a).unwrap().status(f.local_now(a)).raft == RaftRole::PreCandidate
    }));
    let term = term_of(&flock, a);
    let granted = |body| Message {
        term: Term(term.0 + 1),
        body,
    };
    flock.inject(b, a, &granted(Body::PreVoteResponse { granted: true }));
    flock.inject(b, a, &granted(Body::VoteResponse { granted: true }));
    let leader = flock.node(a).unwrap();
    assert_eq!(leader.status(flock.local_now(a)).raft, RaftRole::Leader);
    assert_eq!(
        leader.status(flock.local_now(a)).last.index,
        old,
        "appended nothing"
    );
    let commit = leader.commit();
    assert!(commit < old, "the old entry is uncommitted");
    let ack = |confirmed| Message {
        term: Term(term.0 + 1),
        body: Body::AppendResponse {
            sent_at: Instant::ZERO,
            result: AppendResult::Accepted {
                match_index: old,
                confirmed,
            },
            healthy: true,
        },
    };
    flock.inject(b, a, &ack(false));
    // Past the first heartbeat: the leader confirms its own log.
    flock.run_for(ms(60));
    assert_eq!(flock.node(a).unwrap().log_term(), Term(term.0 + 1));
    assert_eq!(
        flock.node(a).unwrap().commit(),
        commit,
        "committed an earlier term's entry by counting"
    );
    flock.inject(b, a, &ack(true));
    assert_eq!(flock.node(a).unwrap().commit(), old);
}

#[test]
fn prevote_partitioned_node_rejoining_does_not_disrupt_a_stable_leader() {
    // Dissertation §9.6: an isolated node's pre-votes fail, so its term does not grow, and
    // when it rejoins it does not depose the leader.
    let mut flock = flock(5, 7);
    let goose = elect(&mut flock);
    let term = term_of(&flock, goose);
    let loner = (1..=5).find(|n| *n != goose).unwrap();
    flock.isolate(loner);
    flock.run_for(ms(5_000));
    assert_eq!(
        term_of(&flock, loner),
        term,
        "pre-votes do not raise the term"
    );
    flock.heal();
    flock.run_for(ms(2_000));
    assert_eq!(flock.goose(), Some(goose));
    assert_eq!(term_of(&flock, goose), term);
}

#[test]
fn lease_paused_goose_resuming_does_not_answer_goose() {
    // A goose frozen for 2 s (SIGSTOP, a long pause) resumes with a jumped clock; by then a
    // new goose exists, and the old one must not be goose at any instant after resuming.
    let mut flock = flock(5, 8);
    let old = elect(&mut flock);
    flock.pause(old, ms(2_000));
    assert!(flock.run_until_condition(ELECTION_BOUND, |f| f.goose().is_some_and(|g| g != old)));
    let new = flock.goose().unwrap();
    // Run through the resume: the checker looks at every event, including the first
    // ones the old goose handles with its stale state.
    let resume_at = flock.process(old).paused_until.expect("still paused");
    flock.run_until(resume_at + 1);
    assert!(!flock.node(old).unwrap().is_goose(flock.local_now(old)));
    flock.run_for(ms(1_000));
    assert_eq!(flock.goose(), Some(new));
}

#[test]
fn log_follower_far_behind_receives_a_snapshot() {
    // §7: once the leader has compacted entries a follower lacks, it sends a snapshot.
    let mut flock = flock(3, 9);
    let goose = elect(&mut flock);
    let lagging = (1..=3).find(|n| *n != goose).unwrap();
    flock.crash(lagging);
    for _ in 0..(2 * flock_sim::SIM_LOG) {
        flock.propose(goose, Payload::Noop).expect("leader accepts");
        flock.run_for(ms(20));
    }
    let leader = flock.node(goose).unwrap();
    assert!(leader.snapshot().index.0 > 0, "the leader compacted");
    flock.start(lagging);
    flock.run_for(ms(2_000));
    let node = flock.node(lagging).unwrap();
    assert!(
        node.snapshot().index.0 > 0,
        "the follower installed a snapshot"
    );
    assert_eq!(node.commit(), flock.node(goose).unwrap().commit());
    assert_eq!(node.members().len(), 3);
}

#[test]
fn membership_changes_apply_when_appended_on_every_node() {
    // Dissertation §4.1: a configuration entry takes effect on each server as soon as it
    // is appended. One change at a time; a leader must commit its own entry first.
    let mut flock = flock(3, 10);
    let goose = elect(&mut flock);
    let learner = goose_core::NodeId::new(9).unwrap();
    let addr = flock_sim::addr(9);
    flock
        .propose(goose, Payload::AddLearner { id: learner, addr })
        .expect("accepted");
    assert_eq!(
        flock.propose(goose, Payload::Remove { id: learner }),
        Err(goose_core::ProposeError::Busy)
    );
    flock.run_for(ms(500));
    for n in 1..=3 {
        let members = flock.node(n).unwrap().members();
        assert!(
            members.iter().any(|m| m.id == learner && !m.voter),
            "node {n}"
        );
    }
    // A learner does not count: the goose keeps its lease with the same voters.
    assert_eq!(flock.goose(), Some(goose));
}

#[test]
fn storage_error_fail_stops_the_node() {
    // Persist before you speak: a node whose storage fails says nothing more.
    let mut flock = flock(3, 11);
    let goose = elect(&mut flock);
    let broken = (1..=3).find(|n| *n != goose).unwrap();
    flock.break_storage(broken, true);
    flock.crash(goose);
    flock.run_for(ms(3_000));
    let status = flock.node(broken).unwrap().status(flock.local_now(broken));
    assert!(status.failed, "a vote or term change needed storage");
    assert!(!status.goose);
    // Without the broken node and the crashed goose, one node is left: no goose.
    assert_eq!(flock.goose(), None);
}
