//! The faults, run against one contender on a fresh fabric, and their figures.
//!
//! - **Link cut**: the holder's bridge port goes down (the machine vanishes), until another
//!   node answers for the address, then comes back.
//! - **Election cut**: only the holder's election traffic (goose's peer frames, VRRP) is
//!   dropped, both ways, for a while; its link, ARP and the client's probes go on.
//! - **Stop**: the holder's service is stopped as a service manager does (SIGTERM: a goose
//!   hands off, keepalived advertises priority 0), and started again once another node
//!   answers.
//! - **Transfer** (goose only): `ctl transfer` on the holder, a planned handoff.
//! - **Kill -9**: everything the contender runs on the holder dies at once; a second later
//!   it is started again, as a service manager would.
//!
//! Between faults the driver waits until the flock has *settled*: exactly one node holds the
//! address and the client's answers come from it.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use super::analysis::{
    answers_in, certain_holders, first_answer_from_other, held_at, longest_silence, per_node,
    released_after, stale_answers, switches, timeline, two_holders, TwoHolders,
};
use super::contender::{Contender, Kind, FILTER_TABLE};
use super::watch::{Answer, Clock, Micros, Observers, Record};
use super::{NODES, VIP, VIP_DEV, VIP_PREFIX};
use crate::netns::{self, Fabric};
use crate::procs::TempDir;

/// Settled means one holder and answers from it, for this long without a break.
pub const SETTLE_FOR: Duration = Duration::from_millis(500);
/// The longest wait for the flock to settle (keepalived after a heal waits for the
/// client's ARP entry to fail, several seconds).
pub const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// The longest wait for another node to answer after a link cut or a kill.
pub const FAILOVER_WITHIN: Duration = Duration::from_secs(15);
/// How long a cut link stays down after another node has answered.
pub const CUT_AFTER_FAILOVER: Duration = Duration::from_millis(300);
/// How long a killed process stays dead after another node has answered.
pub const DEAD_AFTER_FAILOVER: Duration = Duration::from_secs(1);
/// How long the driver waits, after restarting a killed process, for its node to drop the
/// address it still holds; then the harness removes it by hand.
pub const RELEASE_WITHIN: Duration = Duration::from_secs(3);
/// The last answer must be at most this old for the client to count as answered.
const ANSWERED_WITHIN: Micros = 20_000;
/// The driver's polling interval while it waits.
const POLL: Duration = Duration::from_millis(2);

/// What to run against each contender.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Link cuts.
    pub link_cuts: usize,
    /// Election cuts.
    pub election_cuts: usize,
    /// How long each election cut lasts.
    pub election_cut_for: Duration,
    /// Graceful stops (SIGTERM) and restarts.
    pub stops: usize,
    /// Planned handoffs (`ctl transfer`), for contenders that have them.
    pub transfers: usize,
    /// Kills.
    pub kills: usize,
}

/// One link cut's figures.
#[derive(Clone, Debug)]
pub struct LinkCut {
    /// The node cut off.
    pub owner: u16,
    /// The node that answered next, if any did within [`FAILOVER_WITHIN`].
    pub new: Option<u16>,
    /// From the cut to that node's first answer.
    pub failover: Option<Micros>,
    /// Two nodes holding the address, from the cut until settled after the link came back
    /// (the cut-off node counts: it cannot know it was cut off rather than the others).
    pub two_holders: TwoHolders,
    /// Answers from any node but the new one after the new one's first.
    pub strays: usize,
    /// The longest stretch without answers after the link came back.
    pub silence_after_restore: Micros,
    /// Answers from the old holder to probes sent after another node's first answered one
    /// ([`stale_answers`]).
    pub stale: usize,
    /// The nodes the watchers saw certainly holding the address in the window
    /// ([`certain_holders`]): the old holder's successor among them shows the window held a
    /// handover to measure.
    pub holders: Vec<u16>,
    /// What happened, from the cut until settled ([`timeline`]).
    pub timeline: String,
}

/// One election cut's figures.
#[derive(Clone, Debug)]
pub struct ElectionCut {
    /// The node whose election traffic was cut.
    pub owner: u16,
    /// How long the cut lasted.
    pub length: Micros,
    /// Two nodes holding the address, from the cut until settled after the heal.
    pub two_holders: TwoHolders,
    /// From the cut to the first answer from another node, if one answered.
    pub failover: Option<Micros>,
    /// Answers per node while cut.
    pub during: BTreeMap<u16, usize>,
    /// Answers per node from the heal until settled.
    pub after: BTreeMap<u16, usize>,
    /// Changes of the answering node, from the cut until settled.
    pub switches: usize,
    /// The longest stretch without answers while cut.
    pub silence_during: Micros,
    /// The longest stretch without answers from the heal until settled.
    pub silence_after: Micros,
    /// From the heal until settled, if it settled.
    pub settled_after: Option<Micros>,
    /// Answers from the old holder to probes sent after another node's first answered one
    /// ([`stale_answers`]).
    pub stale: usize,
    /// The nodes the watchers saw certainly holding the address in the window
    /// ([`certain_holders`]): the old holder's successor among them shows the window held a
    /// handover to measure.
    pub holders: Vec<u16>,
    /// What happened, from the cut until settled ([`timeline`]).
    pub timeline: String,
}

/// One graceful stop's figures, or one planned handoff's.
#[derive(Clone, Debug)]
pub struct Stop {
    /// The node whose service was stopped, or that handed off.
    pub owner: u16,
    /// Whether it did as asked: exited within the grace period (else it was killed), or
    /// answered the transfer `ok`.
    pub exited: bool,
    /// From the SIGTERM (or the transfer) to another node's first answer.
    pub failover: Option<Micros>,
    /// Two nodes holding the address, from the SIGTERM until settled after the restart.
    pub two_holders: TwoHolders,
    /// Answers from any node but the new one after the new one's first.
    pub strays: usize,
    /// The longest stretch without answers, from the SIGTERM until settled.
    pub silence: Micros,
    /// Answers from the old holder to probes sent after another node's first answered one
    /// ([`stale_answers`]).
    pub stale: usize,
    /// The nodes the watchers saw certainly holding the address in the window
    /// ([`certain_holders`]): the old holder's successor among them shows the window held a
    /// handover to measure.
    pub holders: Vec<u16>,
    /// What happened, from the SIGTERM until settled ([`timeline`]).
    pub timeline: String,
}

/// One kill's figures.
#[derive(Clone, Debug)]
pub struct Kill {
    /// The node whose processes were killed.
    pub owner: u16,
    /// From the kill to another node's first answer.
    pub failover: Option<Micros>,
    /// Two nodes holding the address, from the kill until the stale address was gone
    /// (removed by the restarted process, or by the harness after [`RELEASE_WITHIN`]).
    pub two_holders: TwoHolders,
    /// From the restart until the restarted node had dropped the address, if it did.
    pub released_after_restart: Option<Micros>,
    /// Whether the killed node still held the address when it was killed plus failover
    /// (if not, there was nothing stale to remove).
    pub held_when_replaced: bool,
    /// Answers from the old holder to probes sent after another node's first answered one
    /// ([`stale_answers`]).
    pub stale: usize,
    /// The nodes the watchers saw certainly holding the address in the window
    /// ([`certain_holders`]): the old holder's successor among them shows the window held a
    /// handover to measure.
    pub holders: Vec<u16>,
    /// What happened, from the kill until the stale address was gone ([`timeline`]).
    pub timeline: String,
}

/// Everything one contender did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Which contender.
    pub kind: Kind,
    /// From its start to the first settled holder.
    pub startup: Micros,
    /// Per link cut.
    pub link_cuts: Vec<LinkCut>,
    /// Per election cut.
    pub election_cuts: Vec<ElectionCut>,
    /// Per graceful stop.
    pub stops: Vec<Stop>,
    /// Per planned handoff.
    pub transfers: Vec<Stop>,
    /// Per kill.
    pub kills: Vec<Kill>,
    /// The observers hit a bound: figures after it are incomplete.
    pub truncated: bool,
}

/// Runs `plan` against `kind` on a fresh fabric (three nodes and a client), with `goose`
/// as the goose binary, and returns the figures.
///
/// # Errors
///
/// A harness failure (not root, a namespace, process or filter that could not be made, a
/// flock that never settled), with the contender's log tails.
pub fn run(kind: Kind, plan: &Plan, goose: &std::path::Path) -> Result<Outcome, String> {
    netns::require_root("virtual IP")?;
    let swept = Fabric::sweep_stale();
    if !swept.is_empty() {
        eprintln!("vip: removed stale namespaces of dead runs: {swept:?}");
    }
    let ids: Vec<u16> = (1..=NODES).collect();
    let fabric = Fabric::new("vip", &ids)?;
    let folder = TempDir::new("vip");
    let clock = Clock::start();
    let namespaces: Vec<_> = ids
        .iter()
        .map(|&id| Fabric::ns_path(&fabric.node_ns(id)))
        .collect();
    let observers = Observers::start(
        clock,
        &namespaces,
        Fabric::ns_path(&fabric.client_ns()),
        VIP,
    )?;
    let contender = Contender::start(kind, &fabric, folder.path(), goose)?;
    let mut driver = Driver {
        fabric: &fabric,
        clock,
        observers: &observers,
        contender,
    };
    let steps = driver.run(plan);
    let logs = driver.log_tails();
    drop(driver); // kills the contender's processes before the observers stop
    let record = observers.finish();
    let steps = steps.map_err(|error| format!("{error}\n{logs}"))?;
    let record = record?;
    Ok(steps.figures(kind, &record))
}

/// What the driver did, with times, for the figures.
#[derive(Debug, Default)]
struct Steps {
    settled: Micros,
    link_cuts: Vec<LinkCutSteps>,
    election_cuts: Vec<ElectionCutSteps>,
    stops: Vec<StopSteps>,
    transfers: Vec<StopSteps>,
    kills: Vec<KillSteps>,
}

#[derive(Debug)]
struct StopSteps {
    owner: u16,
    exited: bool,
    stop: Micros,
    settled: Micros,
}

#[derive(Debug)]
struct LinkCutSteps {
    owner: u16,
    cut: Micros,
    restore: Micros,
    settled: Micros,
}

#[derive(Debug)]
struct ElectionCutSteps {
    owner: u16,
    cut: Micros,
    heal: Micros,
    settled: Option<Micros>,
    end: Micros,
}

#[derive(Debug)]
struct KillSteps {
    owner: u16,
    kill: Micros,
    replaced: Option<Micros>,
    restart: Micros,
    gone: Micros,
}

struct Driver<'a> {
    fabric: &'a Fabric,
    clock: Clock,
    observers: &'a Observers,
    contender: Contender,
}

impl Driver<'_> {
    fn run(&mut self, plan: &Plan) -> Result<Steps, String> {
        let mut steps = Steps {
            settled: self.settle()?.1,
            ..Steps::default()
        };
        for _ in 0..plan.link_cuts {
            let (owner, _) = self.settle()?;
            let cut = self.clock.now();
            self.fabric.cut(owner)?;
            let _ = self.wait_answer_from_other(owner, cut, FAILOVER_WITHIN);
            thread::sleep(CUT_AFTER_FAILOVER);
            let restore = self.clock.now();
            self.fabric.restore(owner)?;
            let (_, settled) = self.settle()?;
            steps.link_cuts.push(LinkCutSteps {
                owner,
                cut,
                restore,
                settled,
            });
        }
        for _ in 0..plan.election_cuts {
            let (owner, _) = self.settle()?;
            let cut = self.clock.now();
            self.fabric
                .filter(owner, &self.contender.kind().election_cut())?;
            thread::sleep(plan.election_cut_for);
            let heal = self.clock.now();
            self.fabric.unfilter(owner, FILTER_TABLE)?;
            let settled = self.settle().ok().map(|(_, at)| at);
            steps.election_cuts.push(ElectionCutSteps {
                owner,
                cut,
                heal,
                settled,
                end: self.clock.now(),
            });
        }
        for _ in 0..plan.stops {
            let (owner, _) = self.settle()?;
            let stop = self.clock.now();
            let exited = self.contender.stop(owner)?;
            let _ = self.wait_answer_from_other(owner, stop, FAILOVER_WITHIN);
            thread::sleep(CUT_AFTER_FAILOVER);
            self.contender.restart(owner)?;
            let (_, settled) = self.settle()?;
            steps.stops.push(StopSteps {
                owner,
                exited,
                stop,
                settled,
            });
        }
        let transfers = if self.contender.kind().transfers() {
            plan.transfers
        } else {
            0
        };
        for _ in 0..transfers {
            let (owner, _) = self.settle()?;
            let stop = self.clock.now();
            let exited = self.contender.transfer(self.fabric, owner)?;
            let _ = self.wait_answer_from_other(owner, stop, FAILOVER_WITHIN);
            let (_, settled) = self.settle()?;
            steps.transfers.push(StopSteps {
                owner,
                exited,
                stop,
                settled,
            });
        }
        for _ in 0..plan.kills {
            let (owner, _) = self.settle()?;
            let kill = self.clock.now();
            self.contender.kill9(owner)?;
            let replaced = self.wait_answer_from_other(owner, kill, FAILOVER_WITHIN);
            thread::sleep(DEAD_AFTER_FAILOVER);
            let restart = self.clock.now();
            self.contender.restart(owner)?;
            let deadline = Instant::now() + RELEASE_WITHIN;
            while self.observers.live().holders().contains(&owner) && Instant::now() < deadline {
                thread::sleep(POLL);
            }
            if self.observers.live().holders().contains(&owner) {
                // What the restarted process did not remove, the harness removes by hand,
                // so that the next fault starts from one holder.
                netns::run_in(
                    &self.fabric.node_ns(owner),
                    "ip",
                    &[
                        "addr",
                        "del",
                        &format!("{VIP}/{VIP_PREFIX}"),
                        "dev",
                        VIP_DEV,
                    ],
                    None,
                )?;
            }
            let gone = self.clock.now();
            steps.kills.push(KillSteps {
                owner,
                kill,
                replaced,
                restart,
                gone,
            });
        }
        self.settle()?;
        Ok(steps)
    }

    /// Waits until exactly one node holds the address and the client's answers have come
    /// from it for [`SETTLE_FOR`]; returns that node and the time it was settled.
    fn settle(&self) -> Result<(u16, Micros), String> {
        let deadline = Instant::now() + SETTLE_WITHIN;
        let mut since: Option<(u16, Instant)> = None;
        loop {
            let now = Instant::now();
            let holders = self.observers.live().holders();
            let answer = self.observers.live().last_answer();
            let steady = match (holders.as_slice(), answer) {
                ([holder], Some((node, at)))
                    if node == *holder
                        && self.clock.now().saturating_sub(at) <= ANSWERED_WITHIN =>
                {
                    Some(*holder)
                }
                _ => None,
            };
            since = match (since, steady) {
                (Some((node, from)), Some(holder)) if node == holder => Some((node, from)),
                (_, Some(holder)) => Some((holder, now)),
                (_, None) => None,
            };
            if let Some((node, from)) = since {
                if now.duration_since(from) >= SETTLE_FOR {
                    return Ok((node, self.clock.now()));
                }
            }
            if now >= deadline {
                return Err(format!(
                    "no single holder answering for {SETTLE_FOR:?} within {SETTLE_WITHIN:?} \
                     (holders {holders:?}, last answer {answer:?})"
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// Waits until an answer from a node other than `owner` arrives after `since`; returns
    /// when it did (`None` if none did within `within`).
    fn wait_answer_from_other(
        &self,
        owner: u16,
        since: Micros,
        within: Duration,
    ) -> Option<Micros> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some((node, at)) = self.observers.live().last_answer() {
                if node != owner && at >= since {
                    return Some(at);
                }
            }
            thread::sleep(POLL);
        }
        None
    }

    fn log_tails(&self) -> String {
        (1..=NODES)
            .map(|id| format!("--- node {id} ---\n{}\n", self.contender.log_tail(id, 15)))
            .collect()
    }
}

/// Answers from any node but `first`'s, from `first` until `until`.
fn strays(record: &Record, first: Answer, until: Micros) -> usize {
    answers_in(record, first.at, until)
        .iter()
        .filter(|answer| answer.node != first.node)
        .count()
}

impl Steps {
    fn figures(&self, kind: Kind, record: &Record) -> Outcome {
        let link_cuts = self
            .link_cuts
            .iter()
            .map(|step| {
                let first = first_answer_from_other(record, step.cut, step.owner);
                let strays = first.map_or(0, |first| strays(record, first, step.settled));
                LinkCut {
                    owner: step.owner,
                    new: first.map(|answer| answer.node),
                    failover: first.map(|answer| answer.at - step.cut),
                    two_holders: two_holders(record, step.cut, step.settled),
                    strays,
                    stale: stale_answers(record, step.cut, step.settled, step.owner),
                    holders: certain_holders(record, step.cut, step.settled),
                    silence_after_restore: longest_silence(record, step.restore, step.settled),
                    timeline: timeline(record, step.cut, step.settled),
                }
            })
            .collect();
        let election_cuts = self
            .election_cuts
            .iter()
            .map(|step| {
                let end = step.settled.unwrap_or(step.end);
                ElectionCut {
                    owner: step.owner,
                    length: step.heal - step.cut,
                    two_holders: two_holders(record, step.cut, end),
                    failover: first_answer_from_other(record, step.cut, step.owner)
                        .filter(|answer| answer.at < end)
                        .map(|answer| answer.at - step.cut),
                    during: per_node(answers_in(record, step.cut, step.heal)),
                    after: per_node(answers_in(record, step.heal, end)),
                    switches: switches(answers_in(record, step.cut, end)),
                    silence_during: longest_silence(record, step.cut, step.heal),
                    silence_after: longest_silence(record, step.heal, end),
                    settled_after: step.settled.map(|at| at - step.heal),
                    stale: stale_answers(record, step.cut, end, step.owner),
                    holders: certain_holders(record, step.cut, end),
                    timeline: timeline(record, step.cut, end),
                }
            })
            .collect();
        let stop = |step: &StopSteps| {
            let first = first_answer_from_other(record, step.stop, step.owner)
                .filter(|answer| answer.at < step.settled);
            Stop {
                owner: step.owner,
                exited: step.exited,
                failover: first.map(|answer| answer.at - step.stop),
                two_holders: two_holders(record, step.stop, step.settled),
                strays: first.map_or(0, |first| strays(record, first, step.settled)),
                silence: longest_silence(record, step.stop, step.settled),
                stale: stale_answers(record, step.stop, step.settled, step.owner),
                holders: certain_holders(record, step.stop, step.settled),
                timeline: timeline(record, step.stop, step.settled),
            }
        };
        let kills = self
            .kills
            .iter()
            .map(|step| {
                let released =
                    released_after(record, step.owner, step.restart).filter(|&at| at < step.gone);
                Kill {
                    owner: step.owner,
                    failover: step.replaced.map(|at| at - step.kill),
                    two_holders: two_holders(record, step.kill, step.gone),
                    released_after_restart: released.map(|at| at - step.restart),
                    held_when_replaced: step
                        .replaced
                        .is_some_and(|at| held_at(record, step.owner, at)),
                    stale: stale_answers(record, step.kill, step.gone, step.owner),
                    holders: certain_holders(record, step.kill, step.gone),
                    timeline: timeline(record, step.kill, step.gone),
                }
            })
            .collect();
        Outcome {
            kind,
            startup: self.settled,
            link_cuts,
            election_cuts,
            stops: self.stops.iter().map(stop).collect(),
            transfers: self.transfers.iter().map(stop).collect(),
            kills,
            truncated: record.truncated,
        }
    }
}
