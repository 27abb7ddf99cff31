//! A deterministic flock simulator for `goose-core`, and the safety checker that runs after
//! every input to a node ([`checker`]): the one simulation library of the swarm, the
//! scenario tests, the `node_sequences` fuzz target and the benches.
//!
//! Many [`Node`]s run on one simulated global clock (microseconds). Each node reads its own
//! local clock, which drifts from global time within the configured bound; nodes crash
//! (keeping only what their storage made durable), restart, possibly with other timing, and
//! pause (a paused node's clock keeps running, so it resumes with a jumped clock). The same
//! seed always gives the same run.
//!
//! A flock runs one of two ways:
//!
//! - **timed** ([`Flock::new`], [`Flock::with_log`]): the network delays, drops, duplicates
//!   and reorders frames, and can be partitioned in one or both directions; timers fire on
//!   their own; `run_*` moves global time event by event. The swarm and the scenario tests.
//! - **held** ([`Flock::held`]): every frame a node sends waits in flight until the driver
//!   delivers, drops or duplicates it ([`Flock::take_frame`], [`Flock::deliver`],
//!   [`Flock::hold`]), and a node's timers fire when the driver says ([`Flock::fire`]); the
//!   driver moves [`Flock::now`] itself. The fuzz target and `bench_core`.
//!
//! Either way the [`Checker`] sees every input a node handles, and the flock checks after
//! each that at most one node is goose; the first broken invariant is kept
//! ([`Flock::violation`]) and every `run_*` returns or panics with it.

pub mod checker;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use goose_core::limits::{FRAME_SIZE_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX};
use goose_core::rand::Rand;
use goose_core::storage::state_size_max;
use goose_core::{
    Config, Duration, Instant, Member, Node, NodeId, PersistentState, RaftRole, Storage,
    StorageError,
};

pub use checker::{Checker, Violation};

/// Member capacity of simulated nodes: the small embedded configuration's order of size,
/// large enough for the 7-node flocks the swarm draws.
pub const SIM_MEMBERS: usize = 8;
/// Log capacity of simulated nodes: a quarter of the desktop's, so that compaction,
/// snapshots and joining through a snapshot happen in almost every swarm seed.
pub const SIM_LOG: usize = 16;
/// Events one run may process before it is declared stuck (a bound on every run).
pub const EVENTS_MAX: u64 = 5_000_000;
/// Steps a held flock takes at most to settle ([`Flock::settle_held`]), and rounds of
/// deliveries in one step ([`Flock::deliver_all`]).
pub const HELD_STEPS_MAX: usize = 10_000;

/// The node type the simulator drives, with room for `M` members and `L` log entries.
pub type SimNode<const M: usize = SIM_MEMBERS, const L: usize = SIM_LOG> = Node<SimStorage, M, L>;

/// The largest state a simulated node saves: the desktop's capacities, so a disk serves a
/// node of any `M` and `L`.
const STATE_SIZE_MAX: usize = state_size_max(MEMBERS_MAX, LOG_ENTRIES_MAX);

/// The timings a flock of mixed timing draws from (heartbeat, election timeout min, max, in
/// ms): the contract's default, the failover benchmark's fast one, a short one and a long
/// one. Operators change timing one restart at a time, and the lease must hold in any mix.
pub const TIMINGS: [(u64, u64, u64); 4] =
    [(50, 150, 300), (3, 12, 24), (10, 30, 60), (50, 300, 600)];

/// The node configuration of `TIMINGS[index]` (taken modulo their number), for node 1: the
/// flock sets each node's id.
pub fn timing(index: usize) -> Config {
    let (heartbeat, min, max) = TIMINGS[index % TIMINGS.len()];
    Config::with_timing(
        id(1),
        Duration::from_millis(heartbeat),
        Duration::from_millis(min),
        Duration::from_millis(max),
    )
}

/// Storage whose `save` is durable at once, and can be told to fail.
#[derive(Clone, Default)]
pub struct SimStorage {
    disk: Rc<RefCell<Disk>>,
}

impl SimStorage {
    /// The disk it saves to, which outlives the node: a restart reads it back.
    pub fn disk(&self) -> &RefCell<Disk> {
        &self.disk
    }
}

/// What a simulated disk holds: the last state saved, and whether it refuses writes.
#[derive(Default)]
pub struct Disk {
    /// The bytes of the last successful save.
    pub durable: Option<Vec<u8>>,
    /// While set, every save fails.
    pub broken: bool,
    /// When set, the next save fails (then this clears); a crash forgets it with the
    /// process.
    pub fail_next: bool,
    /// Saves done.
    pub saves: u64,
    /// Where a save is encoded, kept between saves so that saving allocates nothing.
    scratch: Vec<u8>,
}

impl Storage for SimStorage {
    fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError> {
        let mut disk = self.disk.borrow_mut();
        if disk.broken {
            return Err(StorageError::Io);
        }
        if disk.fail_next {
            disk.fail_next = false;
            return Err(StorageError::Io);
        }
        let Disk {
            durable,
            saves,
            scratch,
            ..
        } = &mut *disk;
        if scratch.is_empty() {
            scratch.resize(STATE_SIZE_MAX, 0);
        }
        let bytes = state.encode(scratch)?;
        let durable = durable.get_or_insert_with(Vec::new);
        durable.clear();
        durable.extend_from_slice(bytes);
        *saves += 1;
        Ok(())
    }
}

/// A node's local clock: `local = offset + global × (1 + rate_ppm / 10⁶)`.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// Local reading at global time 0.
    pub offset: u64,
    /// Rate error in parts per million (negative: slow).
    pub rate_ppm: i64,
}

impl Clock {
    /// The local reading at global time `global`. In 64-bit arithmetic: the simulator asks
    /// this after every event, and a 128-bit division cost a fifth of its time. Exact while
    /// `global × |rate_ppm|` fits an `i64` (years of simulated time at any drift a node
    /// accepts).
    pub fn local(&self, global: u64) -> Instant {
        let global = i64::try_from(global).unwrap_or(i64::MAX);
        let drift = global.saturating_mul(self.rate_ppm) / 1_000_000;
        Instant::from_micros(self.offset + (global + drift) as u64)
    }

    /// The first global time at which the local clock reads at least `local`.
    pub fn global_at(&self, local: Instant) -> u64 {
        let local = local.micros().saturating_sub(self.offset);
        let mut global =
            (u128::from(local) * 1_000_000 / (1_000_000 + self.rate_ppm) as u128) as u64;
        // Correct the rounding, in a bounded number of steps.
        for _ in 0..4 {
            if self.local(global).micros() - self.offset >= local {
                break;
            }
            global += 1;
        }
        global
    }
}

/// Network behaviour, changeable while the flock runs.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// Minimum one-way delay, µs.
    pub delay_min: u64,
    /// Maximum one-way delay, µs; delays are uniform in between, so frames reorder.
    pub delay_max: u64,
    /// Drop probability, per million frames.
    pub loss_ppm: u64,
    /// Duplication probability, per million frames.
    pub duplicate_ppm: u64,
}

impl NetConfig {
    /// A clean LAN: 0.1–1 ms, no loss, no duplicates.
    pub const fn clean() -> Self {
        Self {
            delay_min: 100,
            delay_max: 1_000,
            loss_ppm: 0,
            duplicate_ppm: 0,
        }
    }
}

/// How a flock is built.
#[derive(Clone, Copy, Debug)]
pub struct FlockConfig {
    /// Number of processes (ids 1..=n).
    pub nodes: u16,
    /// Nodes `1..=bootstrap` start as the voters of the flock; the rest start empty, as
    /// nodes that will join (`goose node --join`) once a leader adds them.
    pub bootstrap: u16,
    /// The seed of everything random in the run.
    pub seed: u64,
    /// Node timing (the id is set per node).
    pub timing: Config,
    /// Each node's clock rate error is drawn from ±`drift_ppm / 2`, so any two clocks
    /// differ by at most about `drift_ppm`; must not exceed `timing.max_drift_ppm`.
    pub drift_ppm: u64,
    /// The network.
    pub net: NetConfig,
    /// Hosts as the desktop node's: a quiescent leader ([`goose_core::Node::is_quiescent`])
    /// reads peer frames only when it wakes for its timer, just before it fires, so its
    /// acknowledgements arrive up to a heartbeat late.
    pub quiet_goose: bool,
}

impl FlockConfig {
    /// `nodes` nodes with the contract's default timing, full allowed drift, clean network.
    pub fn new(nodes: u16, seed: u64) -> Self {
        let timing = Config::new(id(1));
        Self {
            nodes,
            bootstrap: nodes,
            seed,
            drift_ppm: u64::from(timing.max_drift_ppm),
            timing,
            net: NetConfig::clean(),
            quiet_goose: false,
        }
    }
}

/// The node id `n`; panics on 0 (test helper).
pub fn id(n: u16) -> NodeId {
    NodeId::new(n).expect("node ids start at 1")
}

/// The simulated address of node `n`.
pub fn addr(n: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9900 + n))
}

/// One simulated process.
pub struct Process<const M: usize = SIM_MEMBERS, const L: usize = SIM_LOG> {
    /// The running node; `None` while crashed.
    pub node: Option<SimNode<M, L>>,
    /// The timing it starts with at its next (re)start: operators change timing one
    /// restart at a time, so nodes of one flock may differ.
    pub timing: Config,
    /// Its disk, which survives crashes.
    pub storage: SimStorage,
    /// Its clock.
    pub clock: Clock,
    /// While set, the process handles nothing until this global time.
    pub paused_until: Option<u64>,
    timer_generation: u64,
    boots: u64,
}

/// A frame a node sent, in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// The sender's id (0 for bytes no node sent).
    pub from: u16,
    /// The target's id.
    pub to: u16,
    /// The frame.
    pub bytes: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    Deliver { to: u16, frame: Vec<u8> },
    Timer { node: u16, generation: u64 },
    Resume { node: u16 },
}

/// A held flock's network: the frames in flight, for the driver to deliver.
struct Held {
    in_flight: Vec<Packet>,
    /// Frames in flight at most; the oldest is lost when a new one does not fit.
    in_flight_max: usize,
}

impl Held {
    fn push(&mut self, packet: Packet) {
        if self.in_flight.len() >= self.in_flight_max {
            self.in_flight.remove(0);
        }
        self.in_flight.push(packet);
    }
}

/// The simulated flock, its nodes holding `M` members and `L` log entries.
pub struct Flock<const M: usize = SIM_MEMBERS, const L: usize = SIM_LOG> {
    /// Its configuration.
    pub config: FlockConfig,
    /// The processes, index `id − 1`.
    pub processes: Vec<Process<M, L>>,
    /// The invariant checker, run after every input to a node.
    pub checker: Checker,
    /// Current global time, µs. A held flock's driver moves it (forward only).
    pub now: u64,
    /// The network's current behaviour (timed).
    pub net: NetConfig,
    /// Directed links that drop everything: (from, to). A timed flock drops a frame on a
    /// blocked link when it is sent; a held flock leaves that to its driver.
    pub blocked: BTreeSet<(u16, u16)>,
    /// Nodes that reported their removal committed ([`goose_core::Event::Removed`]): none
    /// may be goose until its own latest membership names it again.
    pub removed: BTreeSet<u16>,
    /// Every event other than role changes, with global time and node: transfers and
    /// removals.
    pub notable_events: Vec<(u64, u16, goose_core::Event)>,
    /// Every frame any node sent, while set (a seed generator's frame source).
    pub sent: Option<Vec<Packet>>,
    queue: BinaryHeap<Reverse<(u64, u64, Action)>>,
    held: Option<Held>,
    sequence: u64,
    rand: Rand,
    events: u64,
    bootstrap: Vec<Member>,
    violation: Option<Violation>,
    trace: bool,
}

impl Flock {
    /// Builds and starts a timed flock whose nodes hold [`SIM_MEMBERS`] members and
    /// [`SIM_LOG`] entries.
    pub fn new(config: FlockConfig) -> Self {
        Self::with_log(config)
    }
}

impl<const M: usize, const L: usize> Flock<M, L> {
    /// Builds and starts a timed flock whose nodes hold `M` members and `L` log entries.
    pub fn with_log(config: FlockConfig) -> Self {
        let mut flock = Self::build(config, None);
        for n in 1..=config.nodes {
            flock.start(n);
        }
        flock
    }

    /// Builds a held flock (module docs) with at most `in_flight_max` frames in flight. No
    /// node runs yet: the driver may first give each its clock ([`Flock::set_clock`]) and
    /// timing ([`Flock::set_timing`]), then [`Flock::start`]s them.
    ///
    /// # Panics
    ///
    /// If `in_flight_max` is 0.
    pub fn held(config: FlockConfig, in_flight_max: usize) -> Self {
        assert!(in_flight_max > 0, "a held network holds at least one frame");
        let held = Held {
            in_flight: Vec::with_capacity(in_flight_max),
            in_flight_max,
        };
        Self::build(config, Some(held))
    }

    fn build(config: FlockConfig, held: Option<Held>) -> Self {
        let mut rand = Rand::new(config.seed);
        let bootstrap: Vec<Member> = (1..=config.bootstrap)
            .map(|n| Member {
                id: id(n),
                addr: addr(n),
                voter: true,
            })
            .collect();
        let half = config.drift_ppm / 2;
        let processes = (1..=config.nodes)
            .map(|n| Process {
                node: None,
                timing: Config {
                    id: id(n),
                    ..config.timing
                },
                storage: SimStorage::default(),
                clock: Clock {
                    offset: rand.range_inclusive(0, 1_000_000_000),
                    rate_ppm: rand.range_inclusive(0, 2 * half) as i64 - half as i64,
                },
                paused_until: None,
                timer_generation: 0,
                boots: 0,
            })
            .collect();
        Self {
            net: config.net,
            config,
            processes,
            checker: Checker::new(usize::from(config.nodes)),
            now: 0,
            blocked: BTreeSet::new(),
            removed: BTreeSet::new(),
            notable_events: Vec::new(),
            sent: None,
            queue: BinaryHeap::new(),
            held,
            sequence: 0,
            rand,
            events: 0,
            bootstrap,
            violation: None,
            trace: std::env::var_os("SIM_TRACE").is_some(),
        }
    }

    /// The process of node `n`.
    pub fn process(&self, n: u16) -> &Process<M, L> {
        &self.processes[usize::from(n) - 1]
    }

    /// The running node `n`, if it is up.
    pub fn node(&self, n: u16) -> Option<&SimNode<M, L>> {
        self.process(n).node.as_ref()
    }

    /// The running node `n`, to call directly: what it sends stays in its outbox and
    /// nothing is checked. For benchmarks that time the node's own calls.
    pub fn node_mut(&mut self, n: u16) -> Option<&mut SimNode<M, L>> {
        self.processes[usize::from(n) - 1].node.as_mut()
    }

    /// Node `n`'s local clock now.
    pub fn local_now(&self, n: u16) -> Instant {
        self.process(n).clock.local(self.now)
    }

    /// The global time at which node `n`'s next timer is due, if it runs and has one.
    pub fn deadline(&self, n: u16) -> Option<u64> {
        let local = self.node(n)?.poll_timeout()?;
        Some(self.process(n).clock.global_at(local))
    }

    /// The ids of every node that is goose at this instant (at most one, or the checker
    /// has already failed the run).
    pub fn geese(&self) -> Vec<u16> {
        (1..=self.config.nodes)
            .filter(|n| {
                self.node(*n)
                    .is_some_and(|node| node.is_goose(self.local_now(*n)))
            })
            .collect()
    }

    /// The goose, if there is exactly one.
    pub fn goose(&self) -> Option<u16> {
        match self.geese().as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    }

    /// The goose, if there is exactly one and a majority has confirmed its log (it accepts
    /// membership changes: a new goose whose log was committed already is goose first).
    pub fn confirmed_goose(&self) -> Option<u16> {
        self.goose()
            .filter(|&goose| self.node(goose).is_some_and(|node| node.is_log_confirmed()))
    }

    /// The first invariant broken so far, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Turns the event trace on stderr on or off (it starts on with `SIM_TRACE` set), to
    /// trace only the part of a scenario being debugged.
    pub fn set_trace(&mut self, trace: bool) {
        self.trace = trace;
    }

    /// Sets the timing node `n` uses from its next start on (its id is kept).
    pub fn set_timing(&mut self, n: u16, timing: Config) {
        self.processes[usize::from(n) - 1].timing = Config {
            id: id(n),
            ..timing
        };
    }

    /// Gives node `n` `clock` in place of the one drawn from the seed.
    ///
    /// # Panics
    ///
    /// If the node has ever started: its clock would jump.
    pub fn set_clock(&mut self, n: u16, clock: Clock) {
        let process = &mut self.processes[usize::from(n) - 1];
        assert_eq!(process.boots, 0, "node {n} has started: its clock is set");
        process.clock = clock;
    }

    /// Starts (or restarts) node `n` from what its disk holds, with its timing.
    pub fn start(&mut self, n: u16) {
        let now = self.local_now(n);
        let seed = self.rand.next_u64();
        let process = &mut self.processes[usize::from(n) - 1];
        let timing = process.timing;
        let saved = process.storage.disk.borrow().durable.clone();
        let bootstrap = if n <= self.config.bootstrap {
            &self.bootstrap[..]
        } else {
            &[]
        };
        let started = Node::new(
            &timing,
            process.storage.clone(),
            saved.as_deref(),
            bootstrap,
            seed,
            now,
        );
        match started {
            Ok(node) => {
                process.node = Some(node);
                process.boots += 1;
            }
            Err(error) => {
                let error = error.to_string();
                self.fail(Violation::RestartRefused { node: n, error });
                return;
            }
        }
        if let Some(node) = self.processes[usize::from(n) - 1].node.as_ref() {
            if let Err(violation) = self.checker.on_start(n, node) {
                self.fail(violation);
            }
        }
        self.after_input(n);
    }

    /// Crashes node `n`: it loses everything not on its disk, and a save it was told to
    /// fail ([`Disk::fail_next`]) is forgotten with it.
    pub fn crash(&mut self, n: u16) {
        let process = &mut self.processes[usize::from(n) - 1];
        process.node = None;
        process.paused_until = None;
        process.timer_generation += 1;
        process.storage.disk.borrow_mut().fail_next = false;
    }

    /// Pauses node `n` for `duration` µs of global time (SIGSTOP, a long GC pause).
    pub fn pause(&mut self, n: u16, duration: u64) {
        let until = self.now + duration;
        let process = &mut self.processes[usize::from(n) - 1];
        if process.node.is_some() {
            process.paused_until = Some(until);
            self.schedule(until, Action::Resume { node: n });
        }
    }

    /// Makes node `n`'s storage fail (or work again).
    pub fn break_storage(&mut self, n: u16, broken: bool) {
        self.processes[usize::from(n) - 1]
            .storage
            .disk
            .borrow_mut()
            .broken = broken;
    }

    /// Makes node `n`'s next save fail: the node fail-stops until restarted.
    pub fn fail_next_save(&mut self, n: u16) {
        self.processes[usize::from(n) - 1]
            .storage
            .disk
            .borrow_mut()
            .fail_next = true;
    }

    /// Splits the flock: nodes in different groups cannot talk (both directions).
    pub fn partition(&mut self, groups: &[&[u16]]) {
        self.blocked.clear();
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in *a {
                    for &y in *b {
                        self.blocked.insert((x, y));
                        self.blocked.insert((y, x));
                    }
                }
            }
        }
    }

    /// Cuts node `n` off from everyone.
    pub fn isolate(&mut self, n: u16) {
        for other in 1..=self.config.nodes {
            if other != n {
                self.blocked.insert((n, other));
                self.blocked.insert((other, n));
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Runs until global time `until` (µs). Panics with the violation if an invariant
    /// breaks.
    pub fn run_until(&mut self, until: u64) {
        if let Err(violation) = self.try_run_until(until) {
            panic!("{violation}");
        }
    }

    /// Runs for `duration` µs of global time.
    pub fn run_for(&mut self, duration: u64) {
        self.run_until(self.now + duration);
    }

    /// Runs until `condition` holds or `duration` µs pass; returns whether it held. Panics
    /// with the violation if an invariant breaks.
    pub fn run_until_condition(
        &mut self,
        duration: u64,
        condition: impl FnMut(&Self) -> bool,
    ) -> bool {
        match self.try_run_until_condition(duration, condition) {
            Ok(held) => held,
            Err(violation) => panic!("{violation}"),
        }
    }

    /// Runs until `condition` holds or `duration` µs pass; returns whether it held, or the
    /// first violated invariant. The condition is checked after every instant with events.
    pub fn try_run_until_condition(
        &mut self,
        duration: u64,
        mut condition: impl FnMut(&Self) -> bool,
    ) -> Result<bool, Violation> {
        let end = self.now + duration;
        while self.now < end {
            if condition(self) {
                return Ok(true);
            }
            let step = self
                .queue
                .peek()
                .map_or(end, |Reverse((at, _, _))| (*at).min(end));
            self.try_run_until(step.max(self.now + 1).min(end))?;
        }
        Ok(condition(self))
    }

    /// Runs until `until`, returning the first violated invariant (also one found before
    /// the run, at a start or a proposal).
    pub fn try_run_until(&mut self, until: u64) -> Result<(), Violation> {
        self.outcome()?;
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, _, action))) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.events += 1;
            assert!(self.events < EVENTS_MAX, "run exceeded {EVENTS_MAX} events");
            if self.trace {
                self.trace_action(&action);
            }
            if !self.apply(action) {
                // Nothing handled it, but time moved: a goose's lease may not outlive it.
                self.check_geese();
            }
            self.outcome()?;
        }
        self.now = self.now.max(until);
        self.check_geese();
        self.outcome()
    }

    fn outcome(&self) -> Result<(), Violation> {
        match &self.violation {
            Some(violation) => Err(violation.clone()),
            None => Ok(()),
        }
    }

    /// Keeps the first violation.
    fn fail(&mut self, violation: Violation) {
        if self.violation.is_none() {
            self.violation = Some(violation);
        }
    }

    /// After an input to node `n`: the checker's rules for it, then one goose at most.
    fn check_node(&mut self, n: u16) {
        if self.violation.is_some() {
            return;
        }
        let now = self.local_now(n);
        let Some(node) = self.processes[usize::from(n) - 1].node.as_ref() else {
            return;
        };
        if let Err(violation) = self.checker.on_event(n, node, now) {
            self.violation = Some(violation);
        }
        // Added back after its removal: it may lead again.
        if self.removed.contains(&n) && node.members().iter().any(|m| m.id.get() == n) {
            self.removed.remove(&n);
        }
    }

    fn check_geese(&mut self) {
        if self.violation.is_some() {
            return;
        }
        // After every event: build no list unless something is wrong.
        let is_goose = |n: &u16| {
            self.node(*n)
                .is_some_and(|node| node.is_goose(self.local_now(*n)))
        };
        let mut geese = (1..=self.config.nodes).filter(is_goose);
        let Some(goose) = geese.next() else {
            return;
        };
        if geese.next().is_some() {
            self.violation = Some(Violation::TwoGeese {
                at: self.now,
                geese: self.geese(),
            });
        } else if self.removed.contains(&goose) {
            self.violation = Some(Violation::RemovedGoose {
                at: self.now,
                node: goose,
            });
        }
    }

    /// Applies a timed event; whether a node handled it.
    fn apply(&mut self, action: Action) -> bool {
        match action {
            Action::Deliver { to, frame } => {
                let process = &self.processes[usize::from(to) - 1];
                if let Some(until) = process.paused_until {
                    // A stopped process's socket buffers the frame until it resumes.
                    self.schedule(until, Action::Deliver { to, frame });
                    return false;
                }
                if let Some(wake) = self.quiet_wake(to) {
                    self.schedule(wake, Action::Deliver { to, frame });
                    return false;
                }
                self.deliver_bytes(to, &frame)
            }
            Action::Timer {
                node: n,
                generation,
            } => {
                if self.processes[usize::from(n) - 1].timer_generation != generation {
                    return false;
                }
                self.fire(n)
            }
            Action::Resume { node: n } => {
                let process = &mut self.processes[usize::from(n) - 1];
                if process.paused_until.is_some_and(|until| until <= self.now) {
                    process.paused_until = None;
                    return self.fire(n);
                }
                false
            }
        }
    }

    /// With [`FlockConfig::quiet_goose`], when a frame for node `to` is read if `to` is a
    /// quiescent leader: a microsecond before its timer fires (the desktop node reads its
    /// peer socket, then fires its timers). `None`: now.
    fn quiet_wake(&self, to: u16) -> Option<u64> {
        if !self.config.quiet_goose || !self.node(to)?.is_quiescent() {
            return None;
        }
        let wake = self.deadline(to)?.checked_sub(1)?;
        (wake > self.now).then_some(wake)
    }

    /// Hands `packet` to its target now, if it runs and is not paused; whether it did. In a
    /// held flock, links, loss and delay are the driver's to decide before this.
    pub fn deliver(&mut self, packet: &Packet) -> bool {
        if packet.to == 0 || packet.to > self.config.nodes {
            return false;
        }
        let paused = self.process(packet.to).paused_until.is_some();
        !paused && self.deliver_bytes(packet.to, &packet.bytes)
    }

    fn deliver_bytes(&mut self, to: u16, frame: &[u8]) -> bool {
        let now = self.local_now(to);
        let Some(node) = self.processes[usize::from(to) - 1].node.as_mut() else {
            return false;
        };
        node.handle_frame(now, frame);
        self.after_input(to);
        true
    }

    /// Fires node `n`'s timers now (`handle_timeout`), if it runs and is not paused;
    /// whether it did.
    pub fn fire(&mut self, n: u16) -> bool {
        let now = self.local_now(n);
        let process = &mut self.processes[usize::from(n) - 1];
        if process.paused_until.is_some() {
            return false;
        }
        let Some(node) = process.node.as_mut() else {
            return false;
        };
        node.handle_timeout(now);
        self.after_input(n);
        true
    }

    /// Drains a node's outputs after an input (frames onto the network, a new timer), then
    /// checks the invariants.
    fn after_input(&mut self, n: u16) {
        let now = self.local_now(n);
        let mut frames = Vec::new();
        let index = usize::from(n) - 1;
        let Some(node) = self.processes[index].node.as_mut() else {
            return;
        };
        let mut buffer = [0u8; FRAME_SIZE_MAX];
        // Bounded: the outbox holds at most 2 × members messages plus one per peer.
        for _ in 0..(4 * M) {
            let Some(transmit) = node.poll_transmit(now, &mut buffer) else {
                break;
            };
            frames.push((transmit.target.get(), buffer[..transmit.size].to_vec()));
        }
        let mut notable = Vec::new();
        while let Some(event) = node.poll_event() {
            if !matches!(event, goose_core::Event::Changed(_)) {
                notable.push(event);
            }
        }
        for event in notable {
            if event == goose_core::Event::Removed {
                self.removed.insert(n);
            }
            if self.trace {
                eprintln!("{:>10} event {n}: {event:?}", self.now);
            }
            self.notable_events.push((self.now, n, event));
        }
        let deadline = node.poll_timeout();
        for (to, frame) in frames {
            self.send(n, to, frame);
        }
        let process = &mut self.processes[index];
        process.timer_generation += 1;
        let generation = process.timer_generation;
        if let (Some(deadline), None) = (deadline, &self.held) {
            let at = process.clock.global_at(deadline).max(self.now + 1);
            self.schedule(
                at,
                Action::Timer {
                    node: n,
                    generation,
                },
            );
        }
        self.check_node(n);
        self.check_geese();
    }

    fn send(&mut self, from: u16, to: u16, frame: Vec<u8>) {
        if let Some(sent) = &mut self.sent {
            sent.push(Packet {
                from,
                to,
                bytes: frame.clone(),
            });
        }
        // Members without a simulated process (learners added by a test) get nothing.
        if to == 0 || to > self.config.nodes {
            return;
        }
        if let Some(held) = &mut self.held {
            held.push(Packet {
                from,
                to,
                bytes: frame,
            });
            return;
        }
        if self.blocked.contains(&(from, to)) || self.chance(self.net.loss_ppm) {
            return;
        }
        let copies = if self.chance(self.net.duplicate_ppm) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self
                .rand
                .range_inclusive(self.net.delay_min, self.net.delay_max);
            self.schedule(
                self.now + delay,
                Action::Deliver {
                    to,
                    frame: frame.clone(),
                },
            );
        }
    }

    fn chance(&mut self, ppm: u64) -> bool {
        ppm > 0 && self.rand.range_inclusive(0, 999_999) < ppm
    }

    fn schedule(&mut self, at: u64, action: Action) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, action)));
    }

    fn trace_action(&self, action: &Action) {
        let describe = |n: u16| match self.node(n) {
            Some(node) => format!("{:?}", node.status(self.local_now(n))),
            None => "down".to_string(),
        };
        match action {
            Action::Deliver { to, frame } => {
                let decoded =
                    goose_core::wire::decode(frame).map(|(h, m)| (h.source, m.term, m.body));
                eprintln!(
                    "{:>10} deliver to {to}: {decoded:?}\n           {}",
                    self.now,
                    describe(*to)
                );
            }
            Action::Timer { node, .. } => {
                eprintln!("{:>10} timer {node}: {}", self.now, describe(*node))
            }
            Action::Resume { node } => eprintln!("{:>10} resume {node}", self.now),
        }
    }

    /// The frames in flight of a held flock (none in a timed one), oldest first.
    pub fn in_flight(&self) -> &[Packet] {
        self.held.as_ref().map_or(&[], |held| &held.in_flight)
    }

    /// Takes frame `index` out of flight (held), to deliver or lose.
    pub fn take_frame(&mut self, index: usize) -> Option<Packet> {
        let held = self.held.as_mut()?;
        (index < held.in_flight.len()).then(|| held.in_flight.remove(index))
    }

    /// Delivers frames (held) until none is in flight.
    ///
    /// # Panics
    ///
    /// If frames are still in flight after [`HELD_STEPS_MAX`] rounds.
    pub fn deliver_all(&mut self) {
        for _ in 0..HELD_STEPS_MAX {
            let frames = self.take_frames();
            if frames.is_empty() {
                return;
            }
            for packet in &frames {
                self.deliver(packet);
            }
        }
        panic!("the flock does not settle");
    }

    /// Runs a held flock, firing every timer when due and delivering every frame, until one
    /// node is goose and every other running node follows it; returns the goose.
    ///
    /// # Panics
    ///
    /// On a broken invariant, or without such a goose after [`HELD_STEPS_MAX`] steps.
    pub fn settle_held(&mut self) -> u16 {
        let nodes = self.config.nodes;
        for _ in 0..HELD_STEPS_MAX {
            // Advance to the earliest deadline and fire every timer due.
            let next = (1..=nodes).filter_map(|n| self.deadline(n)).min();
            self.now = next.expect("a running node").max(self.now);
            for n in 1..=nodes {
                if self.deadline(n).is_some_and(|at| at <= self.now) {
                    self.fire(n);
                }
            }
            self.deliver_all();
            if let Some(violation) = self.violation() {
                panic!("{violation}");
            }
            if let Some(goose) = self.goose() {
                let followed = (1..=nodes).filter(|&n| n != goose).all(|n| {
                    self.node(n).is_none_or(|node| {
                        let status = node.status(self.local_now(n));
                        status.raft == RaftRole::Follower && status.leader == Some(id(goose))
                    })
                });
                if followed {
                    return goose;
                }
            }
        }
        panic!("no goose after {HELD_STEPS_MAX} steps");
    }

    /// Takes every frame out of flight (held), oldest first.
    pub fn take_frames(&mut self) -> Vec<Packet> {
        self.held
            .as_mut()
            .map(|held| std::mem::take(&mut held.in_flight))
            .unwrap_or_default()
    }

    /// Puts `packet` in flight (held; a timed flock ignores it): a duplicate, say. The
    /// oldest frame is lost if the flight is full.
    pub fn hold(&mut self, packet: Packet) {
        if let Some(held) = &mut self.held {
            held.push(packet);
        }
    }

    /// Delivers `message` from node `from` to node `to` at once, bypassing the network, as
    /// a faulty or malicious peer could; returns whether `to` was up to handle it.
    pub fn inject(
        &mut self,
        from: u16,
        to: u16,
        message: &goose_core::wire::MessageRef<'_>,
    ) -> bool {
        let mut buffer = [0u8; FRAME_SIZE_MAX];
        let size = goose_core::wire::encode(id(from), id(to), message, &mut buffer)
            .expect("message fits a frame");
        self.deliver_bytes(to, &buffer[..size])
    }

    /// Proposes a log entry on node `n` (must be leader).
    pub fn propose(
        &mut self,
        n: u16,
        payload: goose_core::Payload,
    ) -> Result<goose_core::LogIndex, goose_core::ProposeError> {
        let now = self.local_now(n);
        let node = self.processes[usize::from(n) - 1]
            .node
            .as_mut()
            .ok_or(goose_core::ProposeError::NotLeader)?;
        let result = node.propose(now, payload);
        self.after_input(n);
        result
    }

    /// Asks node `n` (the leader) to hand leadership over.
    pub fn transfer(
        &mut self,
        n: u16,
        target: Option<u16>,
    ) -> Result<(), goose_core::TransferError> {
        let now = self.local_now(n);
        let node = self.processes[usize::from(n) - 1]
            .node
            .as_mut()
            .ok_or(goose_core::TransferError::NotLeader)?;
        let result = node.transfer(now, target.map(id));
        self.after_input(n);
        result
    }

    /// Asks node `n` (the leader) to hand leadership over, holding TimeoutNow until
    /// [`Flock::release_transfer`] or for `hold` at most.
    pub fn transfer_held(
        &mut self,
        n: u16,
        target: Option<u16>,
        hold: u64,
    ) -> Result<(), goose_core::TransferError> {
        let now = self.local_now(n);
        let node = self.processes[usize::from(n) - 1]
            .node
            .as_mut()
            .ok_or(goose_core::TransferError::NotLeader)?;
        let result = node.transfer_held(now, target.map(id), now + Duration::from_micros(hold));
        self.after_input(n);
        result
    }

    /// Lets node `n`'s held transfer go on; returns whether one was held.
    pub fn release_transfer(&mut self, n: u16) -> bool {
        let now = self.local_now(n);
        let Some(node) = self.processes[usize::from(n) - 1].node.as_mut() else {
            return false;
        };
        let released = node.release_transfer(now);
        self.after_input(n);
        released
    }

    /// The flock's random source, for fault schedules.
    pub fn rand(&mut self) -> &mut Rand {
        &mut self.rand
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }
}

/// Milliseconds to simulator microseconds.
pub const fn ms(millis: u64) -> u64 {
    millis * 1000
}
