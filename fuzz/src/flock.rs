//! A three-node flock driven by a sequence of actions decoded from the fuzzer's bytes, with
//! the safety invariants asserted after every action.
//!
//! The network is a bag of frames in flight: the fuzzer delivers, drops, duplicates and
//! tampers with them in any order, cuts and heals links, advances time, crashes and restarts nodes from their
//! saved bytes, fails their storage, and asks for membership changes and transfers. Clocks
//! run at rates within the configured drift bound of one another (each node's clock is a
//! fixed linear function of one global clock), so "two geese at once" is decided by
//! evaluating every node's `is_goose` at the same global instant.
//!
//! Invariants (after every input to a node; a violation panics with the action trace):
//!
//! - at most one leader per term;
//! - at most one goose at any global instant, and a goose is a leader;
//! - a node's term never goes back and its vote in a term never changes, across restarts;
//! - a node's log term never goes back, across restarts too, and never exceeds its term;
//! - a node campaigns (is pre-candidate or candidate) only as a voter of its latest
//!   membership;
//! - a node whose save failed reports only what it saved: its term, vote and log term are
//!   held to the rules above, and it is never goose;
//! - a committed entry never changes on any node (compared by index against the first
//!   sighting), and a new leader holds every entry known committed (Leader Completeness);
//! - a node always restarts from the bytes it saved.
//!
//! Frames the fuzzer forges or tampers with are delivered only if the node must drop them
//! (undecodable, wrong target, unknown or own sender): a well-formed frame from a member is
//! a Byzantine peer, which Raft does not tolerate and these invariants do not cover.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use arbitrary::{Arbitrary, Unstructured};
use goose_core::limits::FRAME_SIZE_MAX;
use goose_core::storage::state_size_max;
use goose_core::wire;
use goose_core::{
    Config, Duration, Entry, Instant, LogIndex, Member, Node, NodeId, Payload, PersistentState,
    RaftRole, Storage, StorageError, Term,
};

/// Nodes that run.
pub const NODES: usize = 3;
/// Ids that actions may name: the running nodes and one (4) that is never started, so that
/// adding and promoting it makes a member that never answers.
pub const IDS: u16 = 4;
/// Member capacity of the fuzzed nodes.
pub const MEMBERS: usize = 8;
/// Log capacity: small, so that compaction and snapshots happen within a few elections.
pub const LOG: usize = 16;
/// Actions decoded from one input at most: keeps every execution well under a millisecond.
pub const ACTIONS_MAX: usize = 192;
/// Frames in flight at most; the oldest is lost when a new one does not fit.
pub const IN_FLIGHT_MAX: usize = 48;
/// A node's clock rate differs from the global clock's by at most this (parts per
/// million), so that any two stay within the configured 1% (`Config::max_drift_ppm`):
/// (1 − 0.005) / (1 + 0.005) ≥ 0.99.
pub const DRIFT_PPM_MAX: i64 = 5_000;
/// The largest `lease_margin` a setup picks, in µs: the default's.
pub const MARGIN_MAX_MICROS: u64 = 15_000;
/// `Action::Advance` moves the clock by its `ticks` times this many microseconds.
pub const TICK_MICROS: u64 = 100;
/// `Action::Tick` never moves the clock further than this at once.
pub const TICK_LIMIT_MICROS: u64 = 10_000_000;

/// A fuzzed node.
pub type FuzzNode = Node<MemStorage, MEMBERS, LOG>;

/// What the fuzzer's bytes start with: each node's clock.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Clock rate offsets, reduced into ±[`DRIFT_PPM_MAX`].
    pub drift: [i16; NODES],
    /// Clock epochs: instants are not comparable between nodes.
    pub epoch: [u32; NODES],
    /// Mixed into each node's election-timeout seed.
    pub seed: u16,
    /// Every node's `lease_margin`, in µs, reduced to at most the default (15 ms). The
    /// margin covers real processing delays, which the simulation has none of: the lease
    /// must be safe down to a margin of zero.
    pub margin: u16,
}

/// One step of the fuzzer's script. Node and frame numbers are taken modulo what exists.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Deliver frame `frame` in flight to its target.
    Deliver { frame: u8 },
    /// Deliver every frame now in flight, oldest first (their answers stay in flight).
    DeliverAll,
    /// Lose frame `frame`.
    Drop { frame: u8 },
    /// Put a copy of frame `frame` in flight.
    Duplicate { frame: u8 },
    /// Move the clock to node `node`'s next deadline and fire its timers.
    Tick { node: u8 },
    /// Move the clock by `ticks × TICK_MICROS` and fire node `node`'s timers.
    Advance { node: u8, ticks: u16 },
    /// Hand node `node` arbitrary bytes as a frame.
    Inject { node: u8, bytes: Bytes },
    /// Flip bits of a copy of frame `frame` and deliver it.
    Tamper { frame: u8, at: u8, xor: u8 },
    /// Stop node `node` (its saved bytes survive); a stopped node loses what it is sent.
    Crash { node: u8 },
    /// Start node `node` from its saved bytes (crashing it first if it runs).
    Restart { node: u8 },
    /// Make node `node`'s next save fail: it fail-stops until restarted.
    FailStorage { node: u8 },
    /// Ask node `node` to propose a membership change.
    Propose { node: u8, change: Change },
    /// Ask node `node` to hand leadership over (to `to`, or to the best voter).
    Transfer { node: u8, to: Option<u8> },
    /// Cut the link between nodes `a` and `b` both ways (`a == b`: cut node `a` off from
    /// both others); frames on a cut link are lost when delivered.
    Cut { a: u8, b: u8 },
    /// Restore every link.
    Heal,
}

/// A membership change; ids are taken modulo [`IDS`].
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Change {
    AddLearner { id: u8, port: u8 },
    Promote { id: u8 },
    Remove { id: u8 },
    Noop,
}

/// Up to 255 arbitrary bytes: a length byte, then that many bytes (fewer at the end of the
/// input). Hand-rolled so the seed generator can encode it exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl<'a> Arbitrary<'a> for Bytes {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = usize::from(u8::arbitrary(u)?).min(u.len());
        Ok(Self(u.bytes(len)?.to_vec()))
    }
}

// --- Encoding actions to bytes, the inverse of the derived decoders (for seeds) ----------

/// Writes the bytes that `arbitrary` decodes back into the same value. Checked by the
/// corpus test, which decodes every seed and compares.
pub trait Encode {
    fn encode(&self, out: &mut Vec<u8>);
}

/// The `u32` tag from which the derive picks variant `index` of `count`:
/// `(tag × count) >> 32 == index`.
fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
    let tag = ((index << 32).div_ceil(count)) as u32;
    out.extend_from_slice(&tag.to_le_bytes());
}

impl Encode for Setup {
    fn encode(&self, out: &mut Vec<u8>) {
        for drift in self.drift {
            out.extend_from_slice(&drift.to_le_bytes());
        }
        for epoch in self.epoch {
            out.extend_from_slice(&epoch.to_le_bytes());
        }
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.extend_from_slice(&self.margin.to_le_bytes());
    }
}

impl Encode for Action {
    fn encode(&self, out: &mut Vec<u8>) {
        const COUNT: u64 = 15;
        match self {
            Self::Deliver { frame } => {
                variant(out, 0, COUNT);
                out.push(*frame);
            }
            Self::DeliverAll => variant(out, 1, COUNT),
            Self::Drop { frame } => {
                variant(out, 2, COUNT);
                out.push(*frame);
            }
            Self::Duplicate { frame } => {
                variant(out, 3, COUNT);
                out.push(*frame);
            }
            Self::Tick { node } => {
                variant(out, 4, COUNT);
                out.push(*node);
            }
            Self::Advance { node, ticks } => {
                variant(out, 5, COUNT);
                out.push(*node);
                out.extend_from_slice(&ticks.to_le_bytes());
            }
            Self::Inject { node, bytes } => {
                variant(out, 6, COUNT);
                out.push(*node);
                out.push(bytes.0.len() as u8);
                out.extend_from_slice(&bytes.0);
            }
            Self::Tamper { frame, at, xor } => {
                variant(out, 7, COUNT);
                out.extend_from_slice(&[*frame, *at, *xor]);
            }
            Self::Crash { node } => {
                variant(out, 8, COUNT);
                out.push(*node);
            }
            Self::Restart { node } => {
                variant(out, 9, COUNT);
                out.push(*node);
            }
            Self::FailStorage { node } => {
                variant(out, 10, COUNT);
                out.push(*node);
            }
            Self::Propose { node, change } => {
                variant(out, 11, COUNT);
                out.push(*node);
                const CHANGES: u64 = 4;
                match change {
                    Change::AddLearner { id, port } => {
                        variant(out, 0, CHANGES);
                        out.extend_from_slice(&[*id, *port]);
                    }
                    Change::Promote { id } => {
                        variant(out, 1, CHANGES);
                        out.push(*id);
                    }
                    Change::Remove { id } => {
                        variant(out, 2, CHANGES);
                        out.push(*id);
                    }
                    Change::Noop => variant(out, 3, CHANGES),
                }
            }
            Self::Transfer { node, to } => {
                variant(out, 12, COUNT);
                out.push(*node);
                match to {
                    Some(to) => out.extend_from_slice(&[1, *to]),
                    None => out.push(0),
                }
            }
            Self::Cut { a, b } => {
                variant(out, 13, COUNT);
                out.extend_from_slice(&[*a, *b]);
            }
            Self::Heal => variant(out, 14, COUNT),
        }
    }
}

/// Encodes a whole script: the setup, then the actions.
pub fn encode_script(setup: &Setup, actions: &[Action]) -> Vec<u8> {
    let mut out = Vec::new();
    setup.encode(&mut out);
    for action in actions {
        action.encode(&mut out);
    }
    out
}

/// Decodes a script as the target does: the setup, then actions until the input or the
/// action budget runs out.
pub fn decode_script(data: &[u8]) -> (Setup, Vec<Action>) {
    let mut u = Unstructured::new(data);
    // Setup is all integers: it decodes from any input (zeros past the end).
    let setup = Setup::arbitrary(&mut u).unwrap_or(Setup {
        drift: [0; NODES],
        epoch: [0; NODES],
        seed: 0,
        margin: 0,
    });
    let mut actions = Vec::new();
    while !u.is_empty() && actions.len() < ACTIONS_MAX {
        match Action::arbitrary(&mut u) {
            Ok(action) => actions.push(action),
            Err(_) => break,
        }
    }
    (setup, actions)
}

// --- Storage --------------------------------------------------------------------------

/// What survives a crash: the bytes of the last successful save.
#[derive(Debug, Default)]
pub struct Disk {
    pub saved: Option<Vec<u8>>,
    /// The next save fails (then this clears).
    pub fail_next: bool,
}

/// In-memory storage shared with the harness, which reads it back at restart.
pub struct MemStorage(Rc<RefCell<Disk>>);

impl MemStorage {
    /// Storage that saves to `disk`.
    pub fn new(disk: Rc<RefCell<Disk>>) -> Self {
        Self(disk)
    }
}

impl Storage for MemStorage {
    fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError> {
        let mut disk = self.0.borrow_mut();
        if disk.fail_next {
            disk.fail_next = false;
            return Err(StorageError::Io);
        }
        let mut buffer = [0; state_size_max(MEMBERS, LOG)];
        disk.saved = Some(state.encode(&mut buffer)?.to_vec());
        Ok(())
    }
}

// --- The flock ------------------------------------------------------------------------

/// A node's clock: `epoch + global × (1 + drift)`.
#[derive(Clone, Copy, Debug)]
struct Clock {
    epoch: u64,
    drift_ppm: i64,
}

impl Clock {
    fn local(&self, global: u64) -> Instant {
        let scaled = u128::from(global) * (1_000_000 + self.drift_ppm) as u128 / 1_000_000;
        Instant::from_micros(self.epoch + scaled as u64)
    }

    /// The first global instant at which this clock reads at least `local`.
    fn global_at(&self, local: Instant) -> u64 {
        let since = local.micros().saturating_sub(self.epoch);
        let mut global =
            (u128::from(since) * 1_000_000 / (1_000_000 + self.drift_ppm) as u128) as u64;
        while self.local(global) < local {
            global += 1;
        }
        while global > 0 && self.local(global - 1) >= local {
            global -= 1;
        }
        global
    }
}

struct Process {
    config: Config,
    node: Option<FuzzNode>,
    disk: Rc<RefCell<Disk>>,
    clock: Clock,
    seed: u64,
    starts: u64,
}

/// A frame in flight.
#[derive(Clone, Debug)]
pub struct Packet {
    pub from: u16,
    pub to: u16,
    pub bytes: Vec<u8>,
}

/// The flock, its network and its checker.
pub struct Flock {
    now: u64,
    processes: Vec<Process>,
    in_flight: Vec<Packet>,
    /// `cut[a][b]`: frames from node index `a` to `b` are lost.
    cut: [[bool; NODES]; NODES],
    checker: Checker,
    /// Every frame any node sent, when recording (the seed generator's frame source).
    pub sent: Option<Vec<Packet>>,
    /// The actions applied so far and the global time of each, for the violation report.
    trace: Vec<(u64, Action)>,
}

fn id(n: u16) -> NodeId {
    NodeId::new(n).expect("ids start at 1")
}

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9000 + n))
}

fn bootstrap() -> [Member; NODES] {
    core::array::from_fn(|i| Member {
        id: id(i as u16 + 1),
        addr: addr(i as u16 + 1),
        voter: true,
    })
}

impl Flock {
    /// Three nodes started from nothing with the clocks `setup` describes.
    pub fn new(setup: &Setup) -> Self {
        let processes = (0..NODES)
            .map(|i| Process {
                config: Config {
                    lease_margin: Duration::from_micros(
                        u64::from(setup.margin) % (MARGIN_MAX_MICROS + 1),
                    ),
                    ..Config::new(id(i as u16 + 1))
                },
                node: None,
                disk: Rc::default(),
                clock: Clock {
                    epoch: u64::from(setup.epoch[i]),
                    drift_ppm: i64::from(setup.drift[i]) % (DRIFT_PPM_MAX + 1),
                },
                seed: u64::from(setup.seed) << 8 | i as u64,
                starts: 0,
            })
            .collect();
        let mut flock = Self {
            now: 0,
            processes,
            in_flight: Vec::new(),
            cut: [[false; NODES]; NODES],
            checker: Checker::default(),
            sent: None,
            trace: Vec::new(),
        };
        for n in 0..NODES {
            flock.start(n);
        }
        flock
    }

    /// Runs a whole fuzz input.
    pub fn run(data: &[u8]) {
        let (setup, actions) = decode_script(data);
        let mut flock = Self::new(&setup);
        for action in &actions {
            flock.apply(action);
        }
    }

    /// The node with index `n` (id `n + 1`), if it runs.
    pub fn node(&self, n: usize) -> Option<&FuzzNode> {
        self.processes[n].node.as_ref()
    }

    /// Node `n`'s clock reading now.
    pub fn local_now(&self, n: usize) -> Instant {
        self.processes[n].clock.local(self.now)
    }

    /// Frames in flight.
    pub fn in_flight(&self) -> &[Packet] {
        &self.in_flight
    }

    /// Indexes of the nodes that are goose now.
    pub fn geese(&self) -> Vec<usize> {
        (0..NODES)
            .filter(|&n| {
                self.node(n)
                    .is_some_and(|node| node.is_goose(self.local_now(n)))
            })
            .collect()
    }

    /// Applies one action, then checks every invariant.
    pub fn apply(&mut self, action: &Action) {
        self.trace.push((self.now, action.clone()));
        match *action {
            Action::Deliver { frame } => {
                if let Some(i) = self.pick(frame) {
                    let packet = self.in_flight.remove(i);
                    self.deliver(&packet);
                }
            }
            Action::DeliverAll => {
                for packet in std::mem::take(&mut self.in_flight) {
                    self.deliver(&packet);
                }
            }
            Action::Drop { frame } => {
                if let Some(i) = self.pick(frame) {
                    self.in_flight.remove(i);
                }
            }
            Action::Duplicate { frame } => {
                if let Some(i) = self.pick(frame) {
                    let packet = self.in_flight[i].clone();
                    self.send(packet);
                }
            }
            Action::Tick { node } => {
                let n = usize::from(node) % NODES;
                if let Some(deadline) = self.node(n).and_then(|node| node.poll_timeout()) {
                    let at = self.processes[n].clock.global_at(deadline);
                    self.now = self.now.max(at.min(self.now + TICK_LIMIT_MICROS));
                }
                self.fire(n);
            }
            Action::Advance { node, ticks } => {
                self.now += u64::from(ticks) * TICK_MICROS;
                self.fire(usize::from(node) % NODES);
            }
            Action::Inject { node, ref bytes } => {
                let to = (usize::from(node) % NODES) as u16 + 1;
                self.deliver_forged(to, &bytes.0);
            }
            Action::Tamper { frame, at, xor } => {
                if let Some(i) = self.pick(frame) {
                    let mut packet = self.in_flight[i].clone();
                    let at = usize::from(at) % packet.bytes.len().max(1);
                    if let Some(byte) = packet.bytes.get_mut(at) {
                        *byte ^= xor.max(1);
                    }
                    self.deliver_forged(packet.to, &packet.bytes);
                }
            }
            Action::Crash { node } => self.crash(usize::from(node) % NODES),
            Action::Restart { node } => {
                let n = usize::from(node) % NODES;
                self.crash(n);
                self.start(n);
            }
            Action::FailStorage { node } => {
                self.processes[usize::from(node) % NODES]
                    .disk
                    .borrow_mut()
                    .fail_next = true;
            }
            Action::Propose { node, ref change } => {
                let n = usize::from(node) % NODES;
                let payload = match *change {
                    Change::AddLearner { id: who, port } => {
                        let who = u16::from(who) % IDS + 1;
                        let mut at = addr(who);
                        at.set_port(at.port() + 100 * u16::from(port % 2));
                        Payload::AddLearner {
                            id: id(who),
                            addr: at,
                        }
                    }
                    Change::Promote { id: who } => Payload::Promote {
                        id: id(u16::from(who) % IDS + 1),
                    },
                    Change::Remove { id: who } => Payload::Remove {
                        id: id(u16::from(who) % IDS + 1),
                    },
                    Change::Noop => Payload::Noop,
                };
                let now = self.local_now(n);
                if let Some(node) = self.processes[n].node.as_mut() {
                    let _ = node.propose(now, payload);
                    self.drain(n);
                }
            }
            Action::Transfer { node, to } => {
                let n = usize::from(node) % NODES;
                let to = to.map(|to| id(u16::from(to) % IDS + 1));
                let now = self.local_now(n);
                if let Some(node) = self.processes[n].node.as_mut() {
                    let _ = node.transfer(now, to);
                    self.drain(n);
                }
            }
            Action::Cut { a, b } => {
                let (a, b) = (usize::from(a) % NODES, usize::from(b) % NODES);
                for other in 0..NODES {
                    if other != a && (a == b || other == b) {
                        self.cut[a][other] = true;
                        self.cut[other][a] = true;
                    }
                }
            }
            Action::Heal => self.cut = [[false; NODES]; NODES],
        }
        self.check();
    }

    fn pick(&self, frame: u8) -> Option<usize> {
        (!self.in_flight.is_empty()).then(|| usize::from(frame) % self.in_flight.len())
    }

    fn start(&mut self, n: usize) {
        let now = self.local_now(n);
        let process = &mut self.processes[n];
        process.starts += 1;
        let saved = process.disk.borrow().saved.clone();
        let config = process.config;
        let storage = MemStorage(Rc::clone(&process.disk));
        let seed = process.seed ^ process.starts.rotate_left(40);
        let node = match FuzzNode::new(&config, storage, saved.as_deref(), &bootstrap(), seed, now)
        {
            Ok(node) => node,
            Err(error) => self.violation(&format!(
                "node {} refused its own saved state: {error}",
                n + 1
            )),
        };
        if let Err(violation) = self.checker.on_start(n, &node) {
            self.violation(&violation);
        }
        self.processes[n].node = Some(node);
        self.drain(n);
    }

    fn crash(&mut self, n: usize) {
        self.processes[n].node = None;
        // A crash loses nothing saved, and a failed save is forgotten with the process.
        self.processes[n].disk.borrow_mut().fail_next = false;
    }

    fn fire(&mut self, n: usize) {
        let now = self.local_now(n);
        if let Some(node) = self.processes[n].node.as_mut() {
            node.handle_timeout(now);
            self.drain(n);
        }
    }

    fn deliver(&mut self, packet: &Packet) {
        let n = usize::from(packet.to) - 1;
        let from = usize::from(packet.from).wrapping_sub(1);
        if n >= NODES || (from < NODES && self.cut[from][n]) {
            return;
        }
        let now = self.local_now(n);
        if let Some(node) = self.processes[n].node.as_mut() {
            node.handle_frame(now, &packet.bytes);
            self.drain(n);
        }
    }

    /// Delivers bytes not sent by a node, if the node must drop them (see the module docs).
    fn deliver_forged(&mut self, to: u16, bytes: &[u8]) {
        let dropped = match wire::decode(bytes) {
            Err(_) => true,
            Ok((header, _)) => header.target != to || header.source == to || header.source > IDS,
        };
        if dropped {
            self.deliver(&Packet {
                from: 0,
                to,
                bytes: bytes.to_vec(),
            });
        }
    }

    fn send(&mut self, packet: Packet) {
        if self.in_flight.len() >= IN_FLIGHT_MAX {
            self.in_flight.remove(0);
        }
        self.in_flight.push(packet);
    }

    /// Collects node `n`'s output after an input.
    fn drain(&mut self, n: usize) {
        let now = self.local_now(n);
        let from = n as u16 + 1;
        let mut buffer = [0; FRAME_SIZE_MAX];
        let Some(node) = self.processes[n].node.as_mut() else {
            return;
        };
        let mut frames = Vec::new();
        while let Some(transmit) = node.poll_transmit(now, &mut buffer) {
            assert!(transmit.size <= FRAME_SIZE_MAX);
            frames.push(Packet {
                from,
                to: transmit.target.get(),
                bytes: buffer[..transmit.size].to_vec(),
            });
        }
        while node.poll_event().is_some() {}
        for packet in frames {
            if let Some(sent) = &mut self.sent {
                sent.push(packet.clone());
            }
            self.send(packet);
        }
        // After every input, not only every action: within one `DeliverAll` a node can
        // become goose before another learns it must step down.
        self.check();
    }

    fn check(&mut self) {
        let mut geese = Vec::new();
        for n in 0..NODES {
            let now = self.local_now(n);
            let Some(node) = self.processes[n].node.as_ref() else {
                continue;
            };
            if let Err(violation) = self.checker.on_step(n, node, now) {
                self.violation(&violation);
            }
            if node.is_goose(now) {
                geese.push(n + 1);
            }
        }
        if geese.len() > 1 {
            self.violation(&format!(
                "two geese at global time {}µs: {geese:?}",
                self.now
            ));
        }
    }

    fn violation(&self, what: &str) -> ! {
        let mut report = String::new();
        for (now, action) in &self.trace {
            let _ = writeln!(report, "  t={now}µs {action:?}");
        }
        for (n, process) in self.processes.iter().enumerate() {
            match &process.node {
                Some(node) => {
                    let _ = writeln!(
                        report,
                        "  node {}: {:?}",
                        n + 1,
                        node.status(self.local_now(n))
                    );
                }
                None => {
                    let _ = writeln!(report, "  node {}: down", n + 1);
                }
            }
        }
        panic!("invariant violated: {what}\nactions and final state:\n{report}");
    }
}

// --- The checker ----------------------------------------------------------------------

/// What the checker knows of one committed index.
#[derive(Clone, Copy, Debug)]
struct Committed {
    term: Term,
    entry: Option<Entry>,
    /// The lowest current term of a node seen holding it committed: the entry was committed
    /// in this term or an earlier one. Leader Completeness requires it of the leaders of
    /// later terms only (a delayed vote can make a leader of an earlier term after a later
    /// term has committed more).
    by_term: Term,
}

/// A node's durable state as last seen: what a restart must not take back.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    term: Term,
    vote: Option<NodeId>,
    log_term: Term,
}

/// What the checker remembers between actions.
#[derive(Default)]
struct Checker {
    /// The leader seen in each term.
    leaders: BTreeMap<Term, usize>,
    /// The term, vote and log term last seen on each node, kept across its restarts.
    terms: [Seen; NODES],
    /// Every index seen committed: its term, the entry if it was seen in a log (not only as
    /// a snapshot's last index), and a bound on the term it was committed in.
    committed: BTreeMap<LogIndex, Committed>,
}

impl Checker {
    fn on_start(&mut self, n: usize, node: &FuzzNode) -> Result<(), String> {
        self.check_durable(n, node)
    }

    fn on_step(&mut self, n: usize, node: &FuzzNode, now: Instant) -> Result<(), String> {
        let status = node.status(now);
        if status.failed {
            // A node whose save failed has fail-stopped and reports only what storage
            // confirmed last (term, vote, log term, commit): those are its history and
            // must obey the same rules. Its log may hold entries it never persisted, so
            // its log and commit index are not compared (a lone voter's "commit" of an
            // entry it could not save is no commit at all). It must never be goose again.
            if status.goose {
                return Err(format!("node {} is goose after its storage failed", n + 1));
            }
            return self.check_durable(n, node);
        }
        self.check_durable(n, node)?;
        if status.goose && status.raft != RaftRole::Leader {
            return Err(format!("node {} is goose as {:?}", n + 1, status.raft));
        }
        if matches!(status.raft, RaftRole::PreCandidate | RaftRole::Candidate)
            && !node.members().iter().any(|m| m.id == node.id() && m.voter)
        {
            // A node being removed, even by an entry not yet committed, would only disturb
            // the flock it leaves; the core's argument that removal cannot stall a flock
            // relies on it never standing.
            return Err(format!(
                "node {} campaigns as {:?} outside its latest membership (voters: {:?})",
                n + 1,
                status.raft,
                node.members()
                    .iter()
                    .filter(|m| m.voter)
                    .map(|m| m.id.get())
                    .collect::<Vec<_>>()
            ));
        }
        self.check_committed(n, node)?;
        if status.raft == RaftRole::Leader {
            match self.leaders.get(&status.term) {
                Some(&other) if other != n => {
                    return Err(format!(
                        "two leaders in term {}: nodes {} and {}",
                        status.term,
                        other + 1,
                        n + 1
                    ));
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(status.term, n);
                    self.check_leader_complete(n, node)?;
                }
            }
        }
        Ok(())
    }

    fn check_durable(&mut self, n: usize, node: &FuzzNode) -> Result<(), String> {
        let (term, vote, log_term) = (node.term(), node.voted_for(), node.log_term());
        let Seen {
            term: seen_term,
            vote: seen_vote,
            log_term: seen_log_term,
        } = self.terms[n];
        if log_term < seen_log_term {
            // The log term ranks this node's log in elections: lowering it would let a
            // shorter log outrank one holding a committed entry.
            return Err(format!(
                "node {}: log term went back from {seen_log_term} to {log_term}",
                n + 1
            ));
        }
        if log_term > term {
            return Err(format!(
                "node {}: log term {log_term} above its term {term}",
                n + 1
            ));
        }
        if term < seen_term {
            return Err(format!(
                "node {}: term went back from {seen_term} to {term}",
                n + 1
            ));
        }
        if term == seen_term && seen_vote.is_some() && vote != seen_vote {
            return Err(format!(
                "node {}: vote in term {term} changed from {seen_vote:?} to {vote:?}",
                n + 1
            ));
        }
        self.terms[n] = Seen {
            term,
            vote,
            log_term,
        };
        Ok(())
    }

    fn check_committed(&mut self, n: usize, node: &FuzzNode) -> Result<(), String> {
        let snapshot = node.snapshot();
        if snapshot.index.0 > 0 {
            self.agree(n, snapshot.index, (snapshot.term, None), node.term())?;
        }
        let first = snapshot.index.0 + 1;
        for index in first..=node.commit().0 {
            let Some(entry) = node.entries().get((index - first) as usize) else {
                return Err(format!(
                    "node {}: commit index {} beyond its last entry",
                    n + 1,
                    node.commit()
                ));
            };
            self.agree(n, LogIndex(index), (entry.term, Some(*entry)), node.term())?;
        }
        Ok(())
    }

    fn agree(
        &mut self,
        n: usize,
        index: LogIndex,
        (term, entry): (Term, Option<Entry>),
        node_term: Term,
    ) -> Result<(), String> {
        let known = self.committed.entry(index).or_insert(Committed {
            term,
            entry,
            by_term: node_term,
        });
        let differs = matches!((known.entry, entry), (Some(a), Some(b)) if a != b);
        if known.term != term || differs {
            return Err(format!(
                "node {}: committed entry {index} changed from {:?} to {:?}",
                n + 1,
                (known.term, known.entry),
                (term, entry)
            ));
        }
        known.entry = known.entry.or(entry);
        known.by_term = known.by_term.min(node_term);
        Ok(())
    }

    fn check_leader_complete(&self, n: usize, node: &FuzzNode) -> Result<(), String> {
        let snapshot = node.snapshot();
        let leader_term = node.term();
        for (&index, &Committed { term, by_term, .. }) in &self.committed {
            let held = if by_term >= leader_term {
                // Maybe committed in this term or a later one: not required.
                true
            } else if index < snapshot.index {
                // Folded into the snapshot: only its last entry's term is kept.
                true
            } else if index == snapshot.index {
                snapshot.term == term
            } else {
                let position = (index.0 - snapshot.index.0 - 1) as usize;
                node.entries().get(position).is_some_and(|e| e.term == term)
            };
            if !held {
                return Err(format!(
                    "new leader {} of term {} lacks committed entry {index}",
                    n + 1,
                    node.term()
                ));
            }
        }
        Ok(())
    }
}
