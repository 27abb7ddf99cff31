//! Seeded swarm runs (TigerBeetle's VOPR): the seed chooses the fault mix and the
//! schedule; a safety phase full of faults, then a liveness phase that must produce a goose.

use std::fmt;

use flock_sim::{id, ms, Flock, FlockConfig, NetConfig, Violation, TIMINGS};
use goose_core::rand::Rand;
use goose_core::Config;

/// How long the faulty phase lasts, µs of simulated time.
pub const SAFETY_PHASE: u64 = ms(8_000);
/// The liveness bound: after every fault heals, a goose must appear within this, µs.
/// Election timeouts are ≤ 300 ms; PreVote rounds and split votes take a few of them.
pub const LIVENESS_BOUND: u64 = ms(5_000);

/// What went wrong in a seed.
#[derive(Debug)]
pub enum Failure {
    /// A safety invariant broke.
    Safety(Violation),
    /// No goose within [`LIVENESS_BOUND`] after healing; each node's state at the end.
    NoGoose(String),
    /// A goose, but a running member of its membership still followed no one or another
    /// node [`LIVENESS_BOUND`] later (one that missed the changes that made the goose a
    /// member could not follow it); each node's state at the end.
    Straggler(String),
    /// The run panicked (an assertion in the core or the checker).
    Panic,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Safety(v) => write!(f, "{v}"),
            Self::NoGoose(nodes) => write!(
                f,
                "no goose within {} ms after healing:\n{nodes}",
                LIVENESS_BOUND / 1000
            ),
            Self::Straggler(nodes) => write!(
                f,
                "a member still not following the goose {} ms after it was found:\n{nodes}",
                LIVENESS_BOUND / 1000
            ),
            Self::Panic => write!(f, "panicked (message above)"),
        }
    }
}

/// What a passing seed did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Summary {
    /// Events processed.
    pub events: u64,
    /// Faults injected.
    pub faults: u64,
    /// Distinct terms that had a leader.
    pub leaders: usize,
    /// Simulated µs from healing to the first goose.
    pub goose_after_heal: u64,
}

/// The fault mix a seed draws.
#[derive(Debug, Clone)]
pub struct Swarm {
    /// The flock.
    pub flock: FlockConfig,
    /// The timings nodes are drawn from, at the start and at restarts: one for a flock of
    /// uniform timing, several for a flock whose operators change timing one restart at a
    /// time (the lease must hold in any mix).
    pub timings: Vec<Config>,
    /// Mean µs between faults.
    pub fault_interval: u64,
    /// Relative weights of crash, pause, partition, heal, membership change, leadership
    /// transfer (plain or held, with a health check flip), network change, cutting off
    /// leaders right after their election, adding a removed node back.
    pub weights: [u64; FAULT_KINDS],
}

/// How many kinds of fault a swarm draws weights for.
pub const FAULT_KINDS: usize = 9;

impl Swarm {
    /// Draws a swarm from `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut rand = Rand::new(seed);
        let voters = [3, 5, 5, 5, 7][rand.range_inclusive(0, 4) as usize];
        // Two spare nodes start empty and join when a leader adds them.
        let mut flock = FlockConfig::new(voters + 2, seed);
        flock.bootstrap = voters;
        let mut timings = match rand.range_inclusive(0, 5) {
            // The fast timing of the failover benchmark: 12–24 ms, heartbeat 3 ms.
            0 => vec![flock_sim::timing(1)],
            // Mixed: two to four of the palette.
            1 | 2 => {
                let count = rand.range_inclusive(2, TIMINGS.len() as u64) as usize;
                let first = rand.range_inclusive(0, TIMINGS.len() as u64 - 1) as usize;
                (0..count).map(|i| flock_sim::timing(first + i)).collect()
            }
            _ => vec![flock_sim::timing(0)],
        };
        let drift = [1_000, 10_000, 50_000][rand.range_inclusive(0, 2) as usize];
        for timing in &mut timings {
            timing.max_drift_ppm = drift;
            timing.voters_target = voters;
        }
        flock.timing = timings[0];
        flock.drift_ppm = u64::from(drift);
        // The network is as fast as the fastest timing needs.
        let timeout_min = timings
            .iter()
            .map(|t| t.election_timeout_min.micros())
            .min()
            .unwrap_or(0);
        let delay_max = rand.range_inclusive(timeout_min / 100, timeout_min / 3);
        flock.net = NetConfig {
            delay_min: rand.range_inclusive(0, delay_max / 4),
            delay_max,
            loss_ppm: rand.range_inclusive(0, 300_000),
            duplicate_ppm: rand.range_inclusive(0, 100_000),
        };
        let weights = core::array::from_fn(|_| rand.range_inclusive(0, 10));
        flock.quiet_goose = rand.range_inclusive(0, 1) == 1;
        Self {
            flock,
            timings,
            fault_interval: rand.range_inclusive(timeout_min / 2, timeout_min * 4),
            weights,
        }
    }

    /// A timing for a node's next start, drawn from [`Swarm::timings`].
    fn draw_timing(&self, flock: &mut Flock) -> Config {
        let pick = flock
            .rand()
            .range_inclusive(0, self.timings.len() as u64 - 1);
        self.timings[pick as usize]
    }
}

/// Proposes one membership change on whichever node leads: add a spare node, or remove a
/// member while at least three voters would remain. A removed node is added back only by
/// [`add_back`], once it reported its removal: until then the checker requires that it is
/// never goose again.
fn change_membership(flock: &mut Flock, retired: &mut std::collections::BTreeSet<u16>) {
    let Some(leader) = leader_of(flock) else {
        return;
    };
    let members: Vec<goose_core::Member> = flock
        .node(leader)
        .map(|n| n.members().to_vec())
        .unwrap_or_default();
    let spare = (1..=flock.config.nodes)
        .find(|n| !retired.contains(n) && !members.iter().any(|m| m.id.get() == *n));
    let voters = members.iter().filter(|m| m.voter).count();
    let payload = match spare {
        Some(n) if flock.rand().range_inclusive(0, 1) == 0 => goose_core::Payload::AddLearner {
            id: id(n),
            addr: flock_sim::addr(n),
        },
        _ => {
            let victim =
                members[flock.rand().range_inclusive(0, members.len() as u64 - 1) as usize];
            if victim.voter && voters <= 3 {
                return;
            }
            goose_core::Payload::Remove { id: victim.id }
        }
    };
    // Busy or not leader any more: the swarm simply tries again later.
    if flock.propose(leader, payload).is_ok() {
        if let goose_core::Payload::Remove { id } = payload {
            retired.insert(id.get());
        }
    }
}

/// A node in the leader role, if any (there may be several, of different terms).
fn leader_of(flock: &Flock) -> Option<u16> {
    (1..=flock.config.nodes).find(|n| {
        flock.node(*n).is_some_and(|node| {
            node.status(flock.local_now(*n)).raft == goose_core::RaftRole::Leader
        })
    })
}

/// Adds back a node that reported its removal: it is restarted on its data (as an operator
/// would, with `goose node --data-dir`) and added again; it must not take the old removal
/// for the last word (it keeps running) and may be goose again.
fn add_back(flock: &mut Flock, retired: &mut std::collections::BTreeSet<u16>) {
    let Some(n) = flock.removed.iter().next().copied() else {
        return;
    };
    let Some(leader) = leader_of(flock) else {
        return;
    };
    if flock.node(n).is_some() {
        flock.crash(n);
    }
    flock.start(n);
    let payload = goose_core::Payload::AddLearner {
        id: id(n),
        addr: flock_sim::addr(n),
    };
    if flock.propose(leader, payload).is_ok() {
        retired.remove(&n);
        flock.removed.remove(&n);
    }
}

/// The highest term in which any node is leader now.
fn leader_term(flock: &Flock) -> Option<goose_core::Term> {
    leader_of(flock).and_then(|n| flock.node(n).map(|node| node.term()))
}

/// Runs one seed: faults for [`SAFETY_PHASE`], then heal and require a goose.
pub fn run(seed: u64) -> Result<Summary, Failure> {
    let swarm = Swarm::from_seed(seed);
    let mut flock = Flock::new(swarm.flock);
    let nodes = swarm.flock.nodes;
    for n in 1..=nodes {
        if swarm.timings.len() > 1 {
            let timing = swarm.draw_timing(&mut flock);
            flock.crash(n);
            flock.set_timing(n, timing);
            flock.start(n);
        }
    }
    let mut faults = 0;
    let mut retired = std::collections::BTreeSet::new();
    // Leaders still to cut off right after their election, and the last one cut off.
    let mut chase = 0u64;
    let mut chased = goose_core::Term(0);
    // A leader whose transfer waits for the program (its job, its duck hook) to release it.
    let mut held: Option<u16> = None;
    let total: u64 = swarm.weights.iter().sum::<u64>().max(1);
    while flock.now < SAFETY_PHASE {
        let gap = flock.rand().range_inclusive(1, 2 * swarm.fault_interval);
        if chase > 0 {
            let elected = flock
                .try_run_until_condition(gap, |f| leader_term(f).is_some_and(|t| t > chased))
                .map_err(Failure::Safety)?;
            if elected {
                if let Some(leader) = leader_of(&flock) {
                    chased = leader_term(&flock).unwrap_or(chased);
                    flock.heal();
                    flock.isolate(leader);
                    chase -= 1;
                    faults += 1;
                }
                continue;
            }
        } else {
            flock
                .try_run_until(flock.now + gap)
                .map_err(Failure::Safety)?;
        }
        let mut pick = flock.rand().range_inclusive(0, total - 1);
        let kind = swarm.weights.iter().position(|w| {
            if pick < *w {
                true
            } else {
                pick -= w;
                false
            }
        });
        let n = flock.rand().range_inclusive(1, u64::from(nodes)) as u16;
        let timeout_max = swarm.flock.timing.election_timeout_max.micros();
        faults += 1;
        // The program releases a held transfer at some later fault, or never: then the
        // hold's deadline steps the leader down.
        if let Some(leader) = held.take() {
            if flock.rand().range_inclusive(0, 1) == 0 {
                flock.release_transfer(leader);
            } else {
                held = Some(leader);
            }
        }
        match kind {
            Some(0) => {
                if flock.node(n).is_some() {
                    flock.crash(n);
                } else {
                    // Operators change timing one restart at a time.
                    if swarm.timings.len() > 1 {
                        let timing = swarm.draw_timing(&mut flock);
                        flock.set_timing(n, timing);
                    }
                    flock.start(n);
                }
            }
            Some(1) => {
                let pause = flock.rand().range_inclusive(1, 4 * timeout_max);
                flock.pause(n, pause);
            }
            Some(2) => {
                let one_way = flock.rand().range_inclusive(0, 1) == 0;
                let cut = flock.rand().range_inclusive(1, u64::from(nodes) - 1);
                let mut side = Vec::new();
                for candidate in 1..=nodes {
                    if flock.rand().range_inclusive(0, u64::from(nodes)) < cut {
                        side.push(candidate);
                    }
                }
                for a in 1..=nodes {
                    for b in 1..=nodes {
                        if side.contains(&a) && !side.contains(&b) {
                            flock.blocked.insert((a, b));
                            if !one_way {
                                flock.blocked.insert((b, a));
                            }
                        }
                    }
                }
            }
            Some(3) => flock.heal(),
            Some(4) => change_membership(&mut flock, &mut retired),
            Some(5) => {
                if let Some(leader) = leader_of(&flock) {
                    let target = flock.rand().range_inclusive(0, u64::from(nodes)) as u16;
                    let to = (target != 0).then_some(target);
                    // Refusals (no such voter, busy, unhealthy) are part of the test too.
                    if flock.rand().range_inclusive(0, 2) == 0 {
                        let hold = flock.rand().range_inclusive(1, 2 * timeout_max);
                        if flock.transfer_held(leader, to, hold).is_ok() {
                            held = Some(leader);
                        }
                    } else {
                        let _ = flock.transfer(leader, to);
                    }
                }
                // A health check that fails, or passes again: an unhealthy voter neither
                // campaigns nor takes a transfer.
                let sick = flock.rand().range_inclusive(0, 3) == 0;
                if let Some(node) = flock.node_mut(n) {
                    node.set_healthy(!sick);
                }
            }
            Some(6) => {
                let loss = flock.rand().range_inclusive(0, 500_000);
                flock.net.loss_ppm = loss;
            }
            Some(7) => {
                // Failed leaderships one after another: each new leader is cut off from
                // everyone as soon as it is elected.
                chase = flock.rand().range_inclusive(1, 20);
                chased = leader_term(&flock).unwrap_or_default();
            }
            _ => add_back(&mut flock, &mut retired),
        }
    }
    // Liveness: heal everything, restart the crashed, let the paused resume, make every
    // node healthy.
    flock.heal();
    for n in 1..=nodes {
        if let Some(node) = flock.node_mut(n) {
            node.set_healthy(true);
        }
    }
    flock.net = NetConfig {
        loss_ppm: 0,
        duplicate_ppm: 0,
        ..swarm.flock.net
    };
    for n in 1..=nodes {
        if flock.node(n).is_none() && !flock.removed.contains(&n) {
            flock.start(n);
        }
    }
    let healed_at = flock.now;
    let pauses_end = flock
        .processes
        .iter()
        .filter_map(|p| p.paused_until)
        .max()
        .unwrap_or(healed_at);
    let mut violation = None;
    let found = flock.run_until_condition(pauses_end - healed_at + LIVENESS_BOUND, |f| {
        f.goose().is_some() && f.processes.iter().all(|p| p.paused_until.is_none())
    });
    if let Err(v) = flock.try_run_until(flock.now) {
        violation = Some(v);
    }
    if let Some(v) = violation {
        return Err(Failure::Safety(v));
    }
    if !found {
        return Err(Failure::NoGoose(describe(&flock)));
    }
    let goose_after_heal = flock.now - healed_at;
    // Every running member the goose knows follows it: a voter that was down while the
    // goose was added knew neither the goose nor its address.
    if !flock.run_until_condition(LIVENESS_BOUND, all_follow_the_goose) {
        return Err(Failure::Straggler(describe(&flock)));
    }
    flock.try_run_until(flock.now).map_err(Failure::Safety)?;
    Ok(Summary {
        events: flock.events(),
        faults,
        leaders: flock.checker.leaders().len(),
        goose_after_heal,
    })
}

/// Whether there is a goose and every running member of its latest membership names it as
/// leader.
fn all_follow_the_goose(flock: &Flock) -> bool {
    let Some(goose) = flock.goose() else {
        return false;
    };
    let Some(members) = flock.node(goose).map(|node| node.members()) else {
        return false;
    };
    members.iter().all(|member| {
        let n = member.id.get();
        n == goose
            || flock.node(n).is_none_or(|node| {
                node.status(flock.local_now(n)).leader.map(|l| l.get()) == Some(goose)
            })
    })
}

/// Each running node's status and voters, for a failure message.
fn describe(flock: &Flock) -> String {
    let mut nodes = String::new();
    for n in 1..=flock.config.nodes {
        if let Some(node) = flock.node(n) {
            let voters: Vec<u16> = node
                .members()
                .iter()
                .filter(|m| m.voter)
                .map(|m| m.id.get())
                .collect();
            let status = node.status(flock.local_now(n));
            nodes += &format!("  node {n}: {status:?} voters {voters:?}\n");
        }
    }
    nodes
}
