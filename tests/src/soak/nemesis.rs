//! The nemesis: for a set duration, injects random, bounded, overlapping faults into a
//! running flock, logging each with its time; between bursts it heals everything and waits
//! (bounded) for a goose.
//!
//! Faults, each lasting a random bounded time:
//!
//! | kind | how | ends with |
//! | --- | --- | --- |
//! | kill | SIGKILL by pid, reaped | a restart on the same data dir |
//! | pause | SIGSTOP | SIGCONT |
//! | ctl-stop | `ctl stop` | `ctl start` |
//! | partition | `ctl partition <ids>` to every node: each drops the peers outside its group | `ctl heal` |
//! | link-cut | the node's bridge port set down | set up |
//! | isolated-pause | a partition of the node alone, then SIGSTOP | SIGCONT, then `ctl heal` 50–500 ms later |
//!
//! The isolated pause is the one that tests the lease itself: a goose paused while nothing
//! from the new goose can reach it wakes up with probes queued and no higher term in sight
//! (CheckQuorum has not run yet: the event loop reads its socket before its timers), so
//! only the lapsed lease keeps it from answering `goose`. (A plain pause is caught earlier
//! by the new leader's frames queued ahead of the probes.) Its parts are also counted as a
//! pause and a partition.
//!
//! A node carries at most one process fault (kill, pause, ctl-stop) and one link cut at a
//! time; at most one partition is in force; at most `faults_active_max` faults overlap.
//! Faults pick the goose the probers saw last half of the time, so the interesting
//! transitions (a paused goose waking up, a cut goose) happen often.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use goose_core::rand::Rand;

use super::history::{Event, EventKind, Micros};
use super::prober::{micros_since, Sightings};
use crate::netns::process::NodeProcess;
use crate::netns::Fabric;

/// How long a `ctl` command waits for its reply.
const CTL_TIMEOUT: Duration = Duration::from_millis(200);
/// Attempts at `ctl start`/`ctl heal` per node during a full heal.
const HEAL_ATTEMPTS: u32 = 25;
/// Nemesis steps at most (a bound on its loop; one step sleeps ≥ 20 ms).
pub const STEPS_MAX: u64 = 10_000_000;
/// Log lines kept of a node that exited on its own.
const EXIT_LOG_LINES: usize = 30;

/// The kinds of fault, as counted in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// SIGKILL, then restart.
    Kill,
    /// SIGSTOP, then SIGCONT.
    Pause,
    /// `ctl stop`, then `ctl start`.
    CtlStop,
    /// `ctl partition`, then `ctl heal`.
    Partition,
    /// Bridge port down, then up.
    LinkCut,
    /// A partition of one node, then SIGSTOP; SIGCONT, then heal.
    IsolatedPause,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [Self; 6] = [
        Self::Kill,
        Self::Pause,
        Self::CtlStop,
        Self::Partition,
        Self::LinkCut,
        Self::IsolatedPause,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kill => "kill-9",
            Self::Pause => "pause",
            Self::CtlStop => "ctl-stop",
            Self::Partition => "partition",
            Self::LinkCut => "link-cut",
            Self::IsolatedPause => "isolated-pause",
        }
    }

    /// Which kind an event starts, if it starts one.
    pub fn of(kind: &EventKind) -> Option<Self> {
        match kind {
            EventKind::Killed { .. } => Some(Self::Kill),
            EventKind::Paused { .. } => Some(Self::Pause),
            EventKind::CtlStopped { .. } => Some(Self::CtlStop),
            EventKind::Partitioned { .. } => Some(Self::Partition),
            EventKind::LinkCut { .. } => Some(Self::LinkCut),
            EventKind::IsolatedPause { .. } => Some(Self::IsolatedPause),
            _ => None,
        }
    }

    /// Its duration range in milliseconds.
    fn duration_ms(self) -> (u64, u64) {
        match self {
            Self::Kill => (0, 2_000),
            Self::Pause => (50, 2_500),
            Self::CtlStop => (100, 2_000),
            Self::Partition => (300, 3_000),
            Self::LinkCut => (100, 3_000),
            Self::IsolatedPause => (200, 2_500),
        }
    }
}

/// The nemesis's knobs.
#[derive(Clone, Copy, Debug)]
pub struct NemesisConfig {
    /// Faults in force at once, at most.
    pub faults_active_max: usize,
    /// A burst of faults lasts this long, at most (at least a quarter of it).
    pub burst_max: Duration,
    /// After a heal, how long a goose may take.
    pub liveness_bound: Duration,
}

/// The nemesis and the nodes it torments (index `i` is node `i + 1`).
pub struct Nemesis<'a> {
    fabric: &'a Fabric,
    nodes: Vec<NodeProcess>,
    addrs: Vec<SocketAddr>,
    token: String,
    config: NemesisConfig,
    start: Instant,
    rand: Rand,
    sightings: &'a Sightings,
    /// What was done, in time order.
    pub events: Vec<Event>,
    /// Exits nobody asked for, with the node's log tail.
    pub unexpected_exits: Vec<String>,
    process_fault: Vec<Option<(FaultKind, Instant)>>,
    link_cut_until: Vec<Option<Instant>>,
    partition_until: Option<Instant>,
    /// `ctl stop` was sent and no `ctl start` acknowledged since.
    maybe_stopped: Vec<bool>,
    /// `ctl partition` was sent and no `ctl heal` acknowledged since.
    maybe_partitioned: Vec<bool>,
}

impl<'a> Nemesis<'a> {
    /// A nemesis for `nodes` (not yet started) reachable at `addrs` with control token
    /// `token`. Must be used from a thread in the client namespace: the children's
    /// PDEATHSIG is tied to it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        fabric: &'a Fabric,
        nodes: Vec<NodeProcess>,
        addrs: Vec<SocketAddr>,
        token: String,
        config: NemesisConfig,
        start: Instant,
        seed: u64,
        sightings: &'a Sightings,
    ) -> Self {
        let count = nodes.len();
        Self {
            fabric,
            nodes,
            addrs,
            token,
            config,
            start,
            rand: Rand::new(seed),
            sightings,
            events: Vec::new(),
            unexpected_exits: Vec::new(),
            process_fault: vec![None; count],
            link_cut_until: vec![None; count],
            partition_until: None,
            maybe_stopped: vec![false; count],
            maybe_partitioned: vec![false; count],
        }
    }

    fn now(&self) -> Micros {
        micros_since(self.start)
    }

    fn log(&mut self, kind: EventKind) {
        let at = self.now();
        self.events.push(Event { at, kind });
    }

    fn id(index: usize) -> u16 {
        u16::try_from(index + 1).unwrap_or(u16::MAX)
    }

    /// Starts every node and logs a heal (the first election is held to the same bound).
    ///
    /// # Errors
    ///
    /// If a node cannot be spawned.
    pub fn start_all(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            let pid = self.nodes[index].spawn()?;
            self.log(EventKind::Started {
                node: Self::id(index),
                pid,
            });
        }
        self.log(EventKind::AllHealed);
        self.wait_for_goose();
        Ok(())
    }

    /// Runs bursts of faults until `until`, each followed by a full heal and a wait for a
    /// goose, then heals for the last time.
    ///
    /// # Errors
    ///
    /// A harness failure (a signal, `ip` command or spawn that failed).
    pub fn run_until(&mut self, until: Instant) -> Result<(), String> {
        let mut steps = 0u64;
        while Instant::now() < until && steps < STEPS_MAX {
            let burst_ms = u64::try_from(self.config.burst_max.as_millis()).unwrap_or(u64::MAX);
            let burst = Duration::from_millis(self.rand.range_inclusive(burst_ms / 4, burst_ms));
            let burst_end = (Instant::now() + burst).min(until);
            while Instant::now() < burst_end && steps < STEPS_MAX {
                steps += 1;
                self.step()?;
                let pause = self.rand.range_inclusive(20, 400);
                thread::sleep(Duration::from_millis(pause));
            }
            self.heal_all()?;
            self.wait_for_goose();
            let settle = self.rand.range_inclusive(0, 1_000);
            thread::sleep(Duration::from_millis(settle));
        }
        self.heal_all()?;
        self.wait_for_goose();
        Ok(())
    }

    /// Ends the faults whose time has come, notices nodes that exited on their own, and
    /// maybe starts a new fault.
    fn step(&mut self) -> Result<(), String> {
        let now = Instant::now();
        for index in 0..self.nodes.len() {
            if self.process_fault[index].is_some_and(|(_, until)| until <= now) {
                self.end_process_fault(index)?;
            }
            if self.link_cut_until[index].is_some_and(|until| until <= now) {
                self.end_link_cut(index)?;
            }
        }
        if self.partition_until.is_some_and(|until| until <= now) {
            self.end_partition();
        }
        self.notice_exits()?;
        let active = self.process_fault.iter().flatten().count()
            + self.link_cut_until.iter().flatten().count()
            + usize::from(self.partition_until.is_some());
        if active >= self.config.faults_active_max || self.rand.range_inclusive(0, 1) == 0 {
            return Ok(());
        }
        let kind = FaultKind::ALL[self.pick(FaultKind::ALL.len())];
        let index = self.target();
        let (low, high) = kind.duration_ms();
        let until = Instant::now() + Duration::from_millis(self.rand.range_inclusive(low, high));
        self.start_fault(kind, index, until)
    }

    fn pick(&mut self, count: usize) -> usize {
        let last = u64::try_from(count.saturating_sub(1)).unwrap_or(0);
        usize::try_from(self.rand.range_inclusive(0, last)).unwrap_or(0)
    }

    /// Half of the time the goose seen last, else any node.
    fn target(&mut self) -> usize {
        let goose = self.sightings.goose_node.load(Ordering::Relaxed);
        let goose = usize::try_from(goose).unwrap_or(0);
        if goose >= 1 && goose <= self.nodes.len() && self.rand.range_inclusive(0, 1) == 0 {
            goose - 1
        } else {
            self.pick(self.nodes.len())
        }
    }

    fn start_fault(&mut self, kind: FaultKind, index: usize, until: Instant) -> Result<(), String> {
        let node = Self::id(index);
        match kind {
            FaultKind::Kill | FaultKind::Pause | FaultKind::CtlStop => {
                if self.process_fault[index].is_some() {
                    return Ok(());
                }
                match kind {
                    FaultKind::Kill => {
                        self.nodes[index].kill9()?;
                        self.log(EventKind::Killed { node });
                    }
                    FaultKind::Pause => {
                        self.nodes[index].signal(libc::SIGSTOP)?;
                        self.log(EventKind::Paused { node });
                    }
                    _ => {
                        self.maybe_stopped[index] = true;
                        let acked = self.ctl_ok(index, "stop");
                        self.log(EventKind::CtlStopped { node, acked });
                    }
                }
                self.process_fault[index] = Some((kind, until));
            }
            FaultKind::LinkCut => {
                if self.link_cut_until[index].is_some() {
                    return Ok(());
                }
                self.fabric.cut(node)?;
                self.log(EventKind::LinkCut { node });
                self.link_cut_until[index] = Some(until);
            }
            FaultKind::Partition => {
                if self.partition_until.is_some() {
                    return Ok(());
                }
                let groups = self.draw_groups(index);
                self.apply_partition(groups, until);
            }
            FaultKind::IsolatedPause => {
                if self.partition_until.is_some() || self.process_fault[index].is_some() {
                    return Ok(());
                }
                self.log(EventKind::IsolatedPause { node });
                let rest = (0..self.nodes.len())
                    .map(Self::id)
                    .filter(|&id| id != node)
                    .collect();
                let heal_after = Duration::from_millis(self.rand.range_inclusive(50, 500));
                self.apply_partition(vec![vec![node], rest], until + heal_after);
                self.start_fault(FaultKind::Pause, index, until)?;
            }
        }
        Ok(())
    }

    /// Tells every node to drop the peers outside its group, until `until`.
    fn apply_partition(&mut self, groups: Vec<Vec<u16>>, until: Instant) {
        let mut acked = Vec::new();
        for (member, group) in self.group_of(&groups).into_iter().enumerate() {
            let others: Vec<String> = (0..self.nodes.len())
                .filter(|&other| {
                    groups
                        .get(group)
                        .is_none_or(|group| !group.contains(&Self::id(other)))
                })
                .map(|other| Self::id(other).to_string())
                .collect();
            if others.is_empty() {
                continue;
            }
            self.maybe_partitioned[member] = true;
            if self.ctl_ok(member, &format!("partition {}", others.join(","))) {
                acked.push(Self::id(member));
            }
        }
        self.log(EventKind::Partitioned { groups, acked });
        self.partition_until = Some(until);
    }

    /// Half of the time node `index` alone (or with one more) against the rest, else a
    /// random split into two or three groups (possibly with no majority anywhere).
    fn draw_groups(&mut self, index: usize) -> Vec<Vec<u16>> {
        let count = self.nodes.len();
        let mut groups: Vec<Vec<u16>>;
        if self.rand.range_inclusive(0, 1) == 0 {
            let mut small = vec![Self::id(index)];
            let second = self.pick(count);
            if second != index && self.rand.range_inclusive(0, 1) == 0 {
                small.push(Self::id(second));
            }
            let rest = (0..count)
                .map(Self::id)
                .filter(|id| !small.contains(id))
                .collect();
            groups = vec![small, rest];
        } else {
            let group_count = usize::try_from(self.rand.range_inclusive(2, 3)).unwrap_or(2);
            groups = vec![Vec::new(); group_count];
            for member in 0..count {
                let group = self.pick(group_count);
                groups[group].push(Self::id(member));
            }
        }
        groups.retain(|group| !group.is_empty());
        groups
    }

    /// Each node's group index in `groups` (a node in none gets a group of its own, past
    /// the end; it then drops everyone).
    fn group_of(&self, groups: &[Vec<u16>]) -> Vec<usize> {
        (0..self.nodes.len())
            .map(|index| {
                groups
                    .iter()
                    .position(|group| group.contains(&Self::id(index)))
                    .unwrap_or(groups.len())
            })
            .collect()
    }

    fn end_process_fault(&mut self, index: usize) -> Result<(), String> {
        let Some((kind, _)) = self.process_fault[index].take() else {
            return Ok(());
        };
        let node = Self::id(index);
        match kind {
            FaultKind::Kill => {
                let pid = self.nodes[index].spawn()?;
                self.log(EventKind::Restarted { node, pid });
            }
            FaultKind::Pause => {
                self.nodes[index].signal(libc::SIGCONT)?;
                self.log(EventKind::Resumed { node });
            }
            _ => {
                let acked = self.ctl_ok(index, "start");
                if acked {
                    self.maybe_stopped[index] = false;
                }
                self.log(EventKind::CtlStarted { node, acked });
            }
        }
        Ok(())
    }

    fn end_link_cut(&mut self, index: usize) -> Result<(), String> {
        if self.link_cut_until[index].take().is_some() {
            let node = Self::id(index);
            self.fabric.restore(node)?;
            self.log(EventKind::LinkRestored { node });
        }
        Ok(())
    }

    fn end_partition(&mut self) {
        self.partition_until = None;
        let mut acked = Vec::new();
        for index in 0..self.nodes.len() {
            if self.maybe_partitioned[index] && self.ctl_ok(index, "heal") {
                self.maybe_partitioned[index] = false;
                acked.push(Self::id(index));
            }
        }
        self.log(EventKind::PartitionHealed { acked });
    }

    /// Restarts, with an event, every node whose process exited although no kill was in
    /// force; keeps its log tail for the report.
    fn notice_exits(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            let killed = matches!(self.process_fault[index], Some((FaultKind::Kill, _)));
            if killed {
                continue;
            }
            let Some(status) = self.nodes[index].exited() else {
                continue;
            };
            let node = Self::id(index);
            let tail = self.nodes[index].log_tail(EXIT_LOG_LINES);
            self.unexpected_exits
                .push(format!("node {node} exited ({status}); log tail:\n{tail}"));
            self.log(EventKind::Exited {
                node,
                status: status.to_string(),
            });
            if matches!(self.process_fault[index], Some((FaultKind::Pause, _))) {
                self.process_fault[index] = None;
            }
            let pid = self.nodes[index].spawn()?;
            self.log(EventKind::Restarted { node, pid });
        }
        Ok(())
    }

    /// Ends every fault: links up, paused nodes resumed, killed ones restarted, stopped ones
    /// started, partitions healed (each acknowledged, with bounded retries); then logs
    /// [`EventKind::AllHealed`].
    ///
    /// # Errors
    ///
    /// A harness failure, or a node that never acknowledged `ctl start`/`ctl heal`.
    pub fn heal_all(&mut self) -> Result<(), String> {
        for index in 0..self.nodes.len() {
            self.end_link_cut(index)?;
        }
        for index in 0..self.nodes.len() {
            self.end_process_fault(index)?;
        }
        self.notice_exits()?;
        if self.partition_until.take().is_some() || self.maybe_partitioned.contains(&true) {
            let mut acked = Vec::new();
            for index in 0..self.nodes.len() {
                if self.maybe_partitioned[index] {
                    self.ctl_until_ok(index, "heal")?;
                    self.maybe_partitioned[index] = false;
                    acked.push(Self::id(index));
                }
            }
            self.log(EventKind::PartitionHealed { acked });
        }
        for index in 0..self.nodes.len() {
            if self.maybe_stopped[index] {
                self.ctl_until_ok(index, "start")?;
                self.maybe_stopped[index] = false;
                let node = Self::id(index);
                self.log(EventKind::CtlStarted { node, acked: true });
            }
        }
        self.log(EventKind::AllHealed);
        Ok(())
    }

    fn ctl_until_ok(&mut self, index: usize, command: &str) -> Result<(), String> {
        for _ in 0..HEAL_ATTEMPTS {
            if self.ctl_ok(index, command) {
                return Ok(());
            }
            self.notice_exits()?;
        }
        Err(format!(
            "node {} did not acknowledge `ctl {command}` in {HEAL_ATTEMPTS} attempts",
            Self::id(index)
        ))
    }

    /// Waits until a probe sent after the last event was answered `goose`, at most the
    /// liveness bound (the checker judges; this only keeps the next burst from starting
    /// before the flock had its chance).
    fn wait_for_goose(&self) {
        let since = self.events.last().map_or(0, |event| event.at);
        let deadline = Instant::now() + self.config.liveness_bound + Duration::from_millis(100);
        while Instant::now() < deadline {
            if self.sightings.goose_sent.load(Ordering::Relaxed) >= since {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Sends `ctl token=<T> <command>` to node `index` from a fresh socket; whether it
    /// answered `ok…` within [`CTL_TIMEOUT`].
    fn ctl_ok(&self, index: usize, command: &str) -> bool {
        ctl(self.addrs[index], &self.token, command).is_some_and(|reply| reply.starts_with("ok"))
    }

    /// The nodes, to be dropped (killed) by the caller when done.
    pub fn into_nodes(self) -> Vec<NodeProcess> {
        self.nodes
    }
}

/// Sends `ctl token=<token> <command>` to `addr` from a fresh socket (in the calling
/// thread's namespace) and returns the reply line, if one came within [`CTL_TIMEOUT`].
pub fn ctl(addr: SocketAddr, token: &str, command: &str) -> Option<String> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect(addr).ok()?;
    socket.set_read_timeout(Some(CTL_TIMEOUT)).ok()?;
    socket
        .send(format!("ctl token={token} {command}").as_bytes())
        .ok()?;
    let mut buffer = [0u8; 4096];
    let size = socket.recv(&mut buffer).ok()?;
    let text = String::from_utf8_lossy(&buffer[..size]);
    Some(text.trim_end().to_owned())
}
