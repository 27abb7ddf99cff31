//! A three-node flock of the simulator (`flock_sim`, held: the fuzzer is the network and
//! the clock) driven by a sequence of actions decoded from the fuzzer's bytes, with the
//! simulator's safety checker after every input to a node.
//!
//! The network is a bag of frames in flight: the fuzzer delivers, drops, duplicates and
//! tampers with them in any order, cuts and heals links, advances time, crashes and
//! restarts nodes from their saved bytes, fails their storage, and asks for membership
//! changes and transfers. Clocks run at rates within the configured drift bound of one
//! another (each node's clock is a fixed linear function of one global clock), so "two
//! geese at once" is decided by evaluating every node's `is_goose` at the same global
//! instant.
//!
//! The invariants are the checker's (`flock_sim::checker`): one leader per term, one goose
//! at any global instant and only a leader, term, vote and log term never going back
//! across restarts, campaigns only by voters of their latest membership, committed entries
//! never changing, log matching, leader completeness, a failed node reporting only what it
//! saved, a restart from the saved bytes. A violation panics with the action trace and
//! every node's status.
//!
//! Frames the fuzzer forges or tampers with are delivered only if the node must drop them
//! (undecodable, wrong target, unknown or own sender): a well-formed frame from a member is
//! a Byzantine peer, which Raft does not tolerate and these invariants do not cover.

use std::fmt::Write as _;

use arbitrary::{Arbitrary, Unstructured};
use flock_sim::{addr, id, Clock, Flock, FlockConfig};
use goose_core::wire;
use goose_core::{Config, Duration, Payload};

pub use flock_sim::Packet;

/// Nodes that run.
pub const NODES: usize = 3;
/// Ids that actions may name: the running nodes and one (4) that is never started, so that
/// adding and promoting it makes a member that never answers.
pub const IDS: u16 = 4;
/// Actions decoded from one input at most: keeps every execution well under a millisecond.
pub const ACTIONS_MAX: usize = 192;
/// Frames in flight at most; the oldest is lost when a new one does not fit. (Node capacity
/// is the simulator's: 8 members, a 16-entry log, so that compaction and snapshots happen
/// within a few elections.)
pub const IN_FLIGHT_MAX: usize = 48;
/// A node's clock rate differs from the global clock's by at most this (parts per
/// million), so that any two stay within the configured 1% (`Config::max_drift_ppm`):
/// (1 − 0.005) / (1 + 0.005) ≥ 0.99.
pub const DRIFT_PPM_MAX: i64 = 5_000;
/// `Action::Advance` moves the clock by its `ticks` times this many microseconds.
pub const TICK_MICROS: u64 = 100;
/// `Action::Tick` never moves the clock further than this at once.
pub const TICK_LIMIT_MICROS: u64 = 10_000_000;

/// What the fuzzer's bytes start with: each node's clock.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// Clock rate offsets, reduced into ±[`DRIFT_PPM_MAX`].
    pub drift: [i16; NODES],
    /// Clock epochs: instants are not comparable between nodes.
    pub epoch: [u32; NODES],
    /// Mixed into each node's election-timeout seed.
    pub seed: u16,
    /// Every node's `lease_margin`, in µs, reduced to at most its timing's default (10% of
    /// `election_timeout_min`: 15 ms for the contract's timing). The margin covers real
    /// processing delays, which the simulation has none of: the lease must be safe down to
    /// a margin of zero.
    pub margin: u16,
    /// Each node's timing at its first start: an index into the swarm's palette
    /// (`flock_sim::TIMINGS`, taken modulo its length).
    pub timing: [u8; NODES],
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
    /// Start node `node` from its saved bytes (crashing it first if it runs), with timing
    /// `timing` of the palette (as [`Setup::timing`]): operators change timing one restart
    /// at a time, and the lease must hold in any mix.
    Restart { node: u8, timing: u8 },
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
        out.extend_from_slice(&self.timing);
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
            Self::Restart { node, timing } => {
                variant(out, 9, COUNT);
                out.extend_from_slice(&[*node, *timing]);
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
        timing: [0; NODES],
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

// --- The driver -----------------------------------------------------------------------

/// The simulator's id of node number `node` (taken modulo [`NODES`]).
fn node_id(node: u8) -> u16 {
    (usize::from(node) % NODES) as u16 + 1
}

/// Timing `index` of the palette with `margin` (µs) as its lease margin, reduced to at most
/// the palette's own (see [`Setup::margin`]).
fn timing(index: u8, margin: u16) -> Config {
    let timing = flock_sim::timing(usize::from(index));
    let margin_max = timing.lease_margin.micros();
    Config {
        lease_margin: Duration::from_micros(u64::from(margin) % (margin_max + 1)),
        ..timing
    }
}

/// Runs a whole fuzz input.
pub fn run(data: &[u8]) {
    let (setup, actions) = decode_script(data);
    let mut driver = Driver::new(&setup);
    for action in &actions {
        driver.apply(action);
    }
}

/// The flock and the actions applied so far, with the global time of each, for the
/// violation report.
pub struct Driver {
    flock: Flock,
    /// The setup's lease margin, which every timing a restart picks gets too.
    margin: u16,
    trace: Vec<(u64, Action)>,
}

impl Driver {
    /// Three nodes started from nothing with the clocks and timings `setup` describes.
    pub fn new(setup: &Setup) -> Self {
        let config = FlockConfig::new(NODES as u16, u64::from(setup.seed));
        let mut flock = Flock::held(config, IN_FLIGHT_MAX);
        for (i, n) in (1..=NODES as u16).enumerate() {
            let clock = Clock {
                offset: u64::from(setup.epoch[i]),
                rate_ppm: i64::from(setup.drift[i]) % (DRIFT_PPM_MAX + 1),
            };
            flock.set_clock(n, clock);
            flock.set_timing(n, timing(setup.timing[i], setup.margin));
        }
        for n in 1..=NODES as u16 {
            flock.start(n);
        }
        let driver = Self {
            flock,
            margin: setup.margin,
            trace: Vec::new(),
        };
        driver.check();
        driver
    }

    /// The simulated flock.
    pub fn flock(&self) -> &Flock {
        &self.flock
    }

    /// The simulated flock, to record what it sends ([`Flock::sent`]).
    pub fn flock_mut(&mut self) -> &mut Flock {
        &mut self.flock
    }

    /// Applies one action; panics with the report on the first broken invariant.
    pub fn apply(&mut self, action: &Action) {
        self.trace.push((self.flock.now, action.clone()));
        match *action {
            Action::Deliver { frame } => {
                if let Some(packet) = self.pick(frame).and_then(|i| self.flock.take_frame(i)) {
                    self.deliver(&packet);
                }
            }
            Action::DeliverAll => {
                for packet in self.flock.take_frames() {
                    self.deliver(&packet);
                }
            }
            Action::Drop { frame } => {
                if let Some(i) = self.pick(frame) {
                    self.flock.take_frame(i);
                }
            }
            Action::Duplicate { frame } => {
                if let Some(i) = self.pick(frame) {
                    let packet = self.flock.in_flight()[i].clone();
                    self.flock.hold(packet);
                }
            }
            Action::Tick { node } => {
                let n = node_id(node);
                if let Some(at) = self.flock.deadline(n) {
                    let now = self.flock.now;
                    self.flock.now = now.max(at.min(now + TICK_LIMIT_MICROS));
                }
                self.flock.fire(n);
            }
            Action::Advance { node, ticks } => {
                self.flock.now += u64::from(ticks) * TICK_MICROS;
                self.flock.fire(node_id(node));
            }
            Action::Inject { node, ref bytes } => self.deliver_forged(node_id(node), &bytes.0),
            Action::Tamper { frame, at, xor } => {
                if let Some(i) = self.pick(frame) {
                    let mut packet = self.flock.in_flight()[i].clone();
                    let at = usize::from(at) % packet.bytes.len().max(1);
                    if let Some(byte) = packet.bytes.get_mut(at) {
                        *byte ^= xor.max(1);
                    }
                    self.deliver_forged(packet.to, &packet.bytes);
                }
            }
            Action::Crash { node } => self.flock.crash(node_id(node)),
            Action::Restart {
                node,
                timing: index,
            } => {
                let n = node_id(node);
                self.flock.crash(n);
                self.flock.set_timing(n, timing(index, self.margin));
                self.flock.start(n);
            }
            Action::FailStorage { node } => self.flock.fail_next_save(node_id(node)),
            Action::Propose { node, ref change } => {
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
                // Refusals (not leader, busy) are part of the test too.
                let _ = self.flock.propose(node_id(node), payload);
            }
            Action::Transfer { node, to } => {
                let to = to.map(|to| u16::from(to) % IDS + 1);
                let _ = self.flock.transfer(node_id(node), to);
            }
            Action::Cut { a, b } => {
                let (a, b) = (node_id(a), node_id(b));
                for other in 1..=NODES as u16 {
                    if other != a && (a == b || other == b) {
                        self.flock.blocked.insert((a, other));
                        self.flock.blocked.insert((other, a));
                    }
                }
            }
            Action::Heal => self.flock.heal(),
        }
        self.check();
    }

    fn pick(&self, frame: u8) -> Option<usize> {
        let in_flight = self.flock.in_flight().len();
        (in_flight > 0).then(|| usize::from(frame) % in_flight)
    }

    /// Delivers `packet` unless its link is cut (a cut link loses what reaches it), then
    /// checks: after every input, not only every action, since within one `DeliverAll` a
    /// node can become goose before another learns it must step down.
    fn deliver(&mut self, packet: &Packet) {
        if !self.flock.blocked.contains(&(packet.from, packet.to)) {
            self.flock.deliver(packet);
        }
        self.check();
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

    fn check(&self) {
        if let Some(violation) = self.flock.violation() {
            self.report(&violation.to_string());
        }
    }

    fn report(&self, what: &str) -> ! {
        let mut report = String::new();
        for (now, action) in &self.trace {
            let _ = writeln!(report, "  t={now}µs {action:?}");
        }
        for n in 1..=NODES as u16 {
            match self.flock.node(n) {
                Some(node) => {
                    let status = node.status(self.flock.local_now(n));
                    let _ = writeln!(report, "  node {n}: {status:?}");
                }
                None => {
                    let _ = writeln!(report, "  node {n}: down");
                }
            }
        }
        panic!("{what}\nactions and final state:\n{report}");
    }
}
