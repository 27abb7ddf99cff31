//! The `node_frames` target: one node fed arbitrary, well-formed messages from any peer (a
//! Byzantine or forging network, as a flock without a cluster key has), raw bytes, time
//! jumps, proposals, transfers, failed saves and restarts.
//!
//! Raft's safety does not survive a lying peer, so the flock invariants do not apply here.
//! What must hold for any input is the node's own contract:
//!
//! - nothing a peer sends makes it panic (debug assertions included);
//! - its term never goes back, nor its commit index while it runs (the commit index is
//!   saved with the next save, not on its own, so a restart may resume from an older one);
//! - every state it saves decodes, and it restarts from it with the same term and vote;
//! - every frame it sends decodes, names it as the source and the transmit's target, and
//!   fits a datagram;
//! - it is goose only as leader.
//!
//! Messages are built with terms and indexes relative to the node's own (a `term` of 0 is
//! its current term, −1 the one before), so that the fuzzer reaches every role quickly.

use arbitrary::{Arbitrary, Unstructured};
use goose_core::limits::{ENTRIES_PER_MESSAGE_MAX, FRAME_SIZE_MAX, MEMBERS_PER_SNAPSHOT_CHUNK};
use goose_core::wire::{self, AppendResult, Body, Message, MessageOwned, MessageRef};
use goose_core::{
    Config, Duration, Entry, EntryId, Instant, LogIndex, LogView, Member, NodeId, Payload,
    RaftRole, SavedState, Stats, Status, Term,
};

use crate::flock::{Bytes, Encode};
use flock_sim::{SimNode, SimStorage, SIM_LOG, SIM_MEMBERS};

/// Operations decoded from one input at most.
pub const OPS_MAX: usize = 128;

/// One step.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// A well-formed frame from peer `from` (taken modulo 6: 0 and 1, the node itself, are
    /// dropped; 4 and 5 are not members until added). `to` picks the node (most values) or
    /// a wrong target.
    Frame {
        from: u8,
        to: u8,
        term: i8,
        body: ArbBody,
    },
    /// Arbitrary bytes as a frame.
    Raw { bytes: Bytes },
    /// Let `micros` pass.
    Advance { micros: u32 },
    /// Jump to the node's next deadline and fire its timers.
    Timeout,
    /// Propose a change with id `id % 6` (0: a no-op).
    Propose { kind: u8, id: u8 },
    /// Start a transfer.
    Transfer { to: Option<u8> },
    /// Crash and restart from the saved bytes.
    Restart,
    /// The next save fails.
    FailStorage,
}

/// A message body; terms and indexes are relative to the node's current term and last
/// index (a vote request's log term to the node's own log term, an Append's `last` to the
/// end of its entries), times relative to its clock.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum ArbBody {
    PreVote {
        log: ArbLog,
    },
    PreVoteResponse {
        granted: bool,
    },
    Vote {
        log: ArbLog,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    Append {
        prev: ArbId,
        commit: i8,
        /// The leader's last index, relative to the end of the entries sent: 0 is a whole
        /// log (the follower takes the leader's term as its log term), above 0 a leader
        /// with more to send, below 0 a frame the validator refuses.
        last: i8,
        stick: Stick,
        sent_at: i32,
        entries: Few<ArbEntry>,
    },
    AppendResponse {
        sent_at: i32,
        accepted: bool,
        /// For an accepted one: whether the follower's log term is the message's term.
        confirmed: bool,
        /// Whether the follower says its health check passes.
        healthy: bool,
        index: i8,
        hint: ArbId,
    },
    Snapshot {
        last: ArbId,
        stick: Stick,
        sent_at: i32,
        offset: u8,
        members: Few<ArbMember>,
        done: bool,
    },
    SnapshotResponse {
        sent_at: i32,
        last: ArbId,
        received: u8,
    },
    TimeoutNow,
}

#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArbId {
    pub term: i8,
    pub index: i8,
}

/// Where a vote request's log stands: `term` relative to the node's own log term, `last`
/// to its last index, so that the fuzzer reaches both sides of "ranks at least as high".
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArbLog {
    pub term: i8,
    pub last: i8,
}

/// A leader's loyalty window in milliseconds: 0, an ordinary window (150 ms is
/// `Config::new`'s `election_timeout_min`), `LOYALTY_WINDOW_MAX` itself (60,000) and above
/// it (the validator refuses those) are all in range.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stick {
    pub millis: u16,
}

impl Stick {
    /// No window beyond the follower's own.
    pub const ZERO: Self = Self { millis: 0 };
    /// The window of a leader with `Config::new`'s timing.
    pub const ORDINARY: Self = Self { millis: 150 };
    /// `LOYALTY_WINDOW_MAX`, the longest a node accepts.
    pub const LIMIT: Self = Self { millis: 60_000 };
    /// One millisecond more: refused as invalid.
    pub const OVER: Self = Self { millis: 60_001 };

    fn duration(self) -> Duration {
        Duration::from_millis(u64::from(self.millis))
    }
}

#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArbEntry {
    pub term: i8,
    pub kind: u8,
    pub id: u8,
}

#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArbMember {
    pub id: u8,
    pub voter: bool,
}

/// Up to 8 values, with a length byte in front (taken modulo 9).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Few<T>(pub Vec<T>);

impl<'a, T: Arbitrary<'a>> Arbitrary<'a> for Few<T> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = usize::from(u8::arbitrary(u)? % 9);
        (0..len)
            .map(|_| T::arbitrary(u))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

// --- Encoding ops to bytes, the inverse of the derived decoders (for seeds) --------------

fn variant(out: &mut Vec<u8>, index: u64, count: u64) {
    let tag = ((index << 32).div_ceil(count)) as u32;
    out.extend_from_slice(&tag.to_le_bytes());
}

impl Encode for ArbId {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.term as u8, self.index as u8]);
    }
}

impl Encode for ArbLog {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.term as u8, self.last as u8]);
    }
}

impl Encode for Stick {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.millis.to_le_bytes());
    }
}

impl Encode for ArbEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.term as u8, self.kind, self.id]);
    }
}

impl Encode for ArbMember {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.id, u8::from(self.voter)]);
    }
}

impl<T: Encode> Encode for Few<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.0.len() as u8);
        for item in &self.0 {
            item.encode(out);
        }
    }
}

impl Encode for ArbBody {
    fn encode(&self, out: &mut Vec<u8>) {
        const COUNT: u64 = 9;
        match self {
            Self::PreVote { log } => {
                variant(out, 0, COUNT);
                log.encode(out);
            }
            Self::PreVoteResponse { granted } => {
                variant(out, 1, COUNT);
                out.push(u8::from(*granted));
            }
            Self::Vote { log, transfer } => {
                variant(out, 2, COUNT);
                log.encode(out);
                out.push(u8::from(*transfer));
            }
            Self::VoteResponse { granted } => {
                variant(out, 3, COUNT);
                out.push(u8::from(*granted));
            }
            Self::Append {
                prev,
                commit,
                last,
                stick,
                sent_at,
                entries,
            } => {
                variant(out, 4, COUNT);
                prev.encode(out);
                out.extend_from_slice(&[*commit as u8, *last as u8]);
                stick.encode(out);
                out.extend_from_slice(&sent_at.to_le_bytes());
                entries.encode(out);
            }
            Self::AppendResponse {
                sent_at,
                accepted,
                confirmed,
                healthy,
                index,
                hint,
            } => {
                variant(out, 5, COUNT);
                out.extend_from_slice(&sent_at.to_le_bytes());
                out.extend_from_slice(&[
                    u8::from(*accepted),
                    u8::from(*confirmed),
                    u8::from(*healthy),
                    *index as u8,
                ]);
                hint.encode(out);
            }
            Self::Snapshot {
                last,
                stick,
                sent_at,
                offset,
                members,
                done,
            } => {
                variant(out, 6, COUNT);
                last.encode(out);
                stick.encode(out);
                out.extend_from_slice(&sent_at.to_le_bytes());
                out.push(*offset);
                members.encode(out);
                out.push(u8::from(*done));
            }
            Self::SnapshotResponse {
                sent_at,
                last,
                received,
            } => {
                variant(out, 7, COUNT);
                out.extend_from_slice(&sent_at.to_le_bytes());
                last.encode(out);
                out.push(*received);
            }
            Self::TimeoutNow => variant(out, 8, COUNT),
        }
    }
}

impl Encode for Op {
    fn encode(&self, out: &mut Vec<u8>) {
        const COUNT: u64 = 8;
        match self {
            Self::Frame {
                from,
                to,
                term,
                body,
            } => {
                variant(out, 0, COUNT);
                out.extend_from_slice(&[*from, *to, *term as u8]);
                body.encode(out);
            }
            Self::Raw { bytes } => {
                variant(out, 1, COUNT);
                out.push(bytes.0.len() as u8);
                out.extend_from_slice(&bytes.0);
            }
            Self::Advance { micros } => {
                variant(out, 2, COUNT);
                out.extend_from_slice(&micros.to_le_bytes());
            }
            Self::Timeout => variant(out, 3, COUNT),
            Self::Propose { kind, id } => {
                variant(out, 4, COUNT);
                out.extend_from_slice(&[*kind, *id]);
            }
            Self::Transfer { to } => {
                variant(out, 5, COUNT);
                match to {
                    Some(to) => out.extend_from_slice(&[1, *to]),
                    None => out.push(0),
                }
            }
            Self::Restart => variant(out, 6, COUNT),
            Self::FailStorage => variant(out, 7, COUNT),
        }
    }
}

fn id(n: u16) -> NodeId {
    NodeId::new(n).expect("ids start at 1")
}

fn member(n: u16, voter: bool) -> Member {
    Member {
        id: id(n),
        addr: ([127, 0, 0, 1], 9000 + n).into(),
        voter,
    }
}

fn payload(kind: u8, who: u8) -> Payload {
    let who = id(u16::from(who) % 5 + 1);
    match kind % 4 {
        0 => Payload::Noop,
        1 => Payload::AddLearner {
            id: who,
            addr: member(who.get(), false).addr,
        },
        2 => Payload::Promote { id: who },
        _ => Payload::Remove { id: who },
    }
}

struct Harness {
    node: SimNode,
    storage: SimStorage,
    now: Instant,
    term: Term,
    /// The log term last seen: it never goes back, not even across a restart.
    log_term: Term,
    commit: LogIndex,
    starts: u64,
    /// What the node sent during the current op, when tracing.
    sent: Option<Vec<(u16, MessageOwned)>>,
}

fn bootstrap() -> [Member; 3] {
    [member(1, true), member(2, true), member(3, true)]
}

fn start(storage: &SimStorage, now: Instant, starts: u64) -> SimNode {
    let saved = storage.disk().borrow().durable.clone();
    match SimNode::new(
        &Config::new(id(1)),
        storage.clone(),
        saved.as_deref(),
        &bootstrap(),
        starts,
        now,
    ) {
        Ok(node) => node,
        Err(error) => panic!("the node refused the state it saved: {error}"),
    }
}

impl Harness {
    fn term_of(&self, delta: i8) -> Term {
        Term(self.node.term().0.saturating_add_signed(i64::from(delta)))
    }

    fn index_of(&self, delta: i8) -> LogIndex {
        let last = self.node.snapshot().index.0 + self.node.entries().len() as u64;
        LogIndex(last.saturating_add_signed(i64::from(delta)))
    }

    fn entry_id(&self, arb: ArbId) -> EntryId {
        EntryId {
            term: self.term_of(arb.term),
            index: self.index_of(arb.index),
        }
    }

    fn log_view(&self, arb: ArbLog) -> LogView {
        LogView {
            term: Term(
                self.node
                    .log_term()
                    .0
                    .saturating_add_signed(i64::from(arb.term)),
            ),
            last: self.index_of(arb.last),
        }
    }

    fn time(&self, delta: i32) -> Instant {
        Instant::from_micros(self.now.micros().saturating_add_signed(i64::from(delta)))
    }

    fn frame(&mut self, from: u8, to: u8, term: i8, body: &ArbBody) {
        let from = u16::from(from) % 6;
        let to = if to % 8 == 7 { 2 } else { 1 };
        let term = self.term_of(term);
        let entries: Vec<Entry>;
        let members: Vec<Member>;
        let body: Body<&[Entry], &[Member]> = match *body {
            ArbBody::PreVote { log } => Body::PreVote {
                log: self.log_view(log),
            },
            ArbBody::PreVoteResponse { granted } => Body::PreVoteResponse { granted },
            ArbBody::Vote { log, transfer } => Body::Vote {
                log: self.log_view(log),
                transfer,
            },
            ArbBody::VoteResponse { granted } => Body::VoteResponse { granted },
            ArbBody::Append {
                prev,
                commit,
                last,
                stick,
                sent_at,
                entries: ref arb,
            } => {
                entries = arb
                    .0
                    .iter()
                    .take(ENTRIES_PER_MESSAGE_MAX)
                    .map(|e| Entry {
                        term: self.term_of(e.term),
                        payload: payload(e.kind, e.id),
                    })
                    .collect();
                let prev = self.entry_id(prev);
                let end = prev.index.0.saturating_add(entries.len() as u64);
                Body::Append {
                    prev,
                    commit: self.index_of(commit),
                    last: LogIndex(end.saturating_add_signed(i64::from(last))),
                    stick: stick.duration(),
                    sent_at: self.time(sent_at),
                    entries: &entries,
                }
            }
            ArbBody::AppendResponse {
                sent_at,
                accepted,
                confirmed,
                healthy,
                index,
                hint,
            } => Body::AppendResponse {
                healthy,
                sent_at: self.time(sent_at),
                result: if accepted {
                    AppendResult::Accepted {
                        match_index: self.index_of(index),
                        confirmed,
                    }
                } else {
                    AppendResult::Rejected {
                        rejected: self.index_of(index),
                        hint: self.entry_id(hint),
                    }
                },
            },
            ArbBody::Snapshot {
                last,
                stick,
                sent_at,
                offset,
                members: ref arb,
                done,
            } => {
                members = arb
                    .0
                    .iter()
                    .take(MEMBERS_PER_SNAPSHOT_CHUNK)
                    .map(|m| member(u16::from(m.id) % 5 + 1, m.voter))
                    .collect();
                Body::Snapshot {
                    last: self.entry_id(last),
                    stick: stick.duration(),
                    sent_at: self.time(sent_at),
                    offset: u16::from(offset % 4),
                    members: &members,
                    done,
                }
            }
            ArbBody::SnapshotResponse {
                sent_at,
                last,
                received,
            } => Body::SnapshotResponse {
                sent_at: self.time(sent_at),
                last: self.entry_id(last),
                received: u16::from(received % 8),
            },
            ArbBody::TimeoutNow => Body::TimeoutNow,
        };
        let message: MessageRef<'_> = Message { term, body };
        let mut buffer = [0; FRAME_SIZE_MAX];
        let source = NodeId::new(from).unwrap_or(id(1));
        let Ok(size) = wire::encode(source, id(to), &message, &mut buffer) else {
            return;
        };
        if from == 0 {
            buffer[2..4].fill(0);
        }
        self.deliver(&buffer[..size]);
    }

    fn deliver(&mut self, frame: &[u8]) {
        self.node.handle_frame(self.now, frame);
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Frame {
                from,
                to,
                term,
                ref body,
            } => self.frame(from, to, term, body),
            Op::Raw { ref bytes } => self.deliver(&bytes.0),
            Op::Advance { micros } => {
                self.now = self.now + Duration::from_micros(u64::from(micros));
                self.node.handle_timeout(self.now);
            }
            Op::Timeout => {
                if let Some(deadline) = self.node.poll_timeout() {
                    self.now = self.now.max(deadline);
                }
                self.node.handle_timeout(self.now);
            }
            Op::Propose { kind, id: who } => {
                let _ = self.node.propose(self.now, payload(kind, who));
            }
            Op::Transfer { to } => {
                let _ = self
                    .node
                    .transfer(self.now, to.map(|to| id(u16::from(to) % 5 + 1)));
            }
            Op::Restart => {
                self.storage.disk().borrow_mut().fail_next = false;
                self.starts += 1;
                self.node = start(&self.storage, self.now, self.starts);
                self.commit = self.node.commit();
                let saved = self.storage.disk().borrow().durable.clone();
                if let Some(saved) = saved {
                    let state =
                        SavedState::<SIM_MEMBERS, SIM_LOG>::decode(&saved).expect("decodes");
                    assert_eq!(self.node.term(), state.term);
                    assert_eq!(self.node.voted_for(), state.voted_for);
                    assert_eq!(self.node.log_term(), state.log_term);
                }
                self.log_term = self.log_term.min(self.node.log_term());
            }
            Op::FailStorage => self.storage.disk().borrow_mut().fail_next = true,
        }
        self.drain();
        self.check();
    }

    fn drain(&mut self) {
        let mut buffer = [0; FRAME_SIZE_MAX];
        while let Some(transmit) = self.node.poll_transmit(self.now, &mut buffer) {
            assert!(transmit.size <= FRAME_SIZE_MAX);
            let frame = &buffer[..transmit.size];
            let (header, message) = wire::decode(frame).unwrap_or_else(|error| {
                panic!("the node sent an invalid frame ({error}): {frame:02x?}")
            });
            assert_eq!(header.source, 1, "source of a sent frame");
            assert_eq!(
                header.target,
                transmit.target.get(),
                "target of a sent frame"
            );
            assert_ne!(header.target, 1, "a frame to itself");
            if let Some(sent) = &mut self.sent {
                sent.push((header.target, message));
            }
        }
        while self.node.poll_event().is_some() {}
    }

    fn check(&mut self) {
        let status = self.node.status(self.now);
        assert!(
            !status.goose || status.raft == RaftRole::Leader,
            "goose as {:?}",
            status.raft
        );
        if status.failed {
            self.check_failed();
            return;
        }
        assert!(
            status.term >= self.term,
            "term went back: {} to {}",
            self.term,
            status.term
        );
        let log_term = self.node.log_term();
        assert!(
            log_term >= self.log_term,
            "log term went back: {} to {log_term}",
            self.log_term
        );
        assert!(
            log_term <= status.term,
            "log term {log_term} above the term {}",
            status.term
        );
        self.log_term = log_term;
        assert!(
            status.commit >= self.commit,
            "commit went back: {} to {}",
            self.commit,
            status.commit
        );
        self.term = status.term;
        self.commit = status.commit;
        if let Some(saved) = self.storage.disk().borrow().durable.as_deref() {
            if let Err(error) = SavedState::<SIM_MEMBERS, SIM_LOG>::decode(saved) {
                panic!("the node saved a state it cannot read back: {error:?}");
            }
        }
    }
}

impl Harness {
    /// A node whose save failed reports only what storage confirmed last: the term, vote,
    /// log term and commit index of the last state saved (or of the bootstrap, if none was),
    /// so that no reply shows a term a restart would take back.
    fn check_failed(&self) {
        let disk = self.storage.disk().borrow();
        let (term, vote, log_term, commit) = match disk.durable.as_deref() {
            Some(saved) => {
                let state =
                    SavedState::<SIM_MEMBERS, SIM_LOG>::decode(saved).unwrap_or_else(|error| {
                        panic!("the node saved a state it cannot read back: {error:?}")
                    });
                (state.term, state.voted_for, state.log_term, state.commit)
            }
            None => (Term(0), None, Term(0), LogIndex(0)),
        };
        let node = &self.node;
        assert_eq!(
            (
                node.term(),
                node.voted_for(),
                node.log_term(),
                node.commit()
            ),
            (term, vote, log_term, commit),
            "a failed node reports (term, vote, log term, commit) other than it saved"
        );
        assert!(node.is_failed());
    }
}

/// Decodes the ops as the target does.
pub fn decode_ops(data: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < OPS_MAX {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Runs a whole fuzz input.
pub fn run(data: &[u8]) {
    final_status(data);
}

/// Runs a whole fuzz input and returns the node's final status.
pub fn final_status(data: &[u8]) -> Status {
    let mut harness = Harness::new(false);
    for op in decode_ops(data) {
        harness.apply(&op);
    }
    harness.node.status(harness.now)
}

/// The node after one op of a traced run: what tests and the replay example look at to
/// tell which path an input took.
#[derive(Clone, Debug)]
pub struct Step {
    pub op: Op,
    pub status: Status,
    pub log_term: Term,
    /// The membership in force (the latest in the log).
    pub members: Vec<Member>,
    /// The drop counters, cumulative (reset by a restart).
    pub stats: Stats,
    /// The frames the node sent in answer, with their targets.
    pub sent: Vec<(u16, MessageOwned)>,
}

/// Runs a whole fuzz input with every check, recording the node after each op.
pub fn trace(data: &[u8]) -> Vec<Step> {
    let mut harness = Harness::new(true);
    decode_ops(data)
        .into_iter()
        .map(|op| {
            harness.apply(&op);
            Step {
                status: harness.node.status(harness.now),
                log_term: harness.node.log_term(),
                members: harness.node.members().to_vec(),
                stats: *harness.node.stats(),
                sent: harness.sent.replace(Vec::new()).unwrap_or_default(),
                op,
            }
        })
        .collect()
}

impl Harness {
    fn new(trace: bool) -> Self {
        let storage = SimStorage::default();
        Self {
            node: start(&storage, Instant::ZERO, 0),
            storage,
            now: Instant::ZERO,
            term: Term(0),
            log_term: Term(0),
            commit: LogIndex(0),
            starts: 0,
            sent: trace.then(Vec::new),
        }
    }
}
