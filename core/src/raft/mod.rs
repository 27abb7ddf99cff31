//! The Raft node: election, replication, membership in the log, and the goose lease.
//!
//! # Driving a node
//!
//! A [`Node`] never reads a clock, a socket or a file. The caller:
//!
//! 1. hands it inputs: [`Node::handle_frame`] for every datagram that looks like a peer
//!    frame, [`Node::handle_timeout`] when [`Node::poll_timeout`]'s deadline has passed
//!    (early or spurious calls are harmless);
//! 2. then drains its outputs, in this order: [`Node::poll_transmit`] until `None`,
//!    [`Node::poll_event`] until `None`, and [`Node::poll_timeout`] for the next wake-up.
//!
//! `now` must never decrease between calls (asserted). Every state change is saved to the
//! [`Storage`] before the input's `handle_*` returns, and outputs only become visible after
//! that, so no message ever depends on state a crash could lose.
//!
//! # The goose lease
//!
//! [`Node::is_goose`] holds only while the node is leader, a majority confirmed its whole
//! log in its term, and a majority acknowledged a heartbeat round it sent less than its
//! loyalty window (shortened by the drift bound and a margin) ago; every voter that heard
//! the leader refuses every vote for that window. So no other node can be elected while
//! the lease holds, whatever the mix of timing flags in the flock: the argument, with the
//! cases that break the naive one (restarts, changed timing, a frozen leader, stale
//! acknowledgements), is written beside the code in [`lease`].
//!
//! # Elections append nothing: the log term
//!
//! A new leader appends no no-op: each node keeps a durable log term (the latest term whose
//! leader's whole log it held), elections rank logs by log term then length, and a leader
//! commits every earlier entry once a majority confirmed its whole log in its term. So no
//! run of failed leaderships can fill a bounded log with entries nobody can commit. The
//! rules and the proof that committed entries survive (Leader Completeness) are written
//! beside the whole-log rule, in [`follower`]; the commit rule is the leader's
//! `maybe_commit`.
//!
//! # Removal
//!
//! A node not in its latest membership never campaigns ([`Node`] checks `can_campaign`, and
//! the simulator's checker asserts it after every event): a node being removed would only
//! disturb the flock it leaves. That this cannot stall a flock: once the leader that
//! appended a removal has gone, a node lacking the entry needs a majority of the old
//! membership, a node holding it one of the new. If the removed node is that leader's own
//! and a majority of the old membership lacks the entry, the others still make a majority
//! of the old membership without the removed node as long as at least two voters remain,
//! and elect one of them; the entry is then overwritten. With two voters, the other one
//! alone is no majority of the old pair: so a leader of two voters never removes itself
//! ([`ProposeError::RemovesLeaderOfTwo`]: hand over first).
//!
//! A removed node learns of its removal from its own log: it reports [`Event::Removed`] once
//! it holds a whole leader log (so no later entry it has not seen adds it back) whose
//! committed and latest memberships both lack it. The leader keeps sending to a member whose
//! removal committed until it has acknowledged a frame that carried that commit and its
//! whole log, however many changes follow the removal.
//!
//! # Fail-stop
//!
//! A save that fails puts the node in a terminal state: it sends nothing, votes for no one,
//! is never goose again, and reports only what storage confirmed last (term, vote, log
//! term, commit index), so that no reply or status shows a term that a restart would take
//! back. The service answers nothing once its node failed; the desktop node exits and a
//! board halts.

pub mod election;
pub mod follower;
pub mod lease;
mod log;
mod outbox;
pub mod step;

use core::net::SocketAddr;

use heapless::{Deque, Vec};

use crate::config::{Config, ConfigError};
use crate::limits::{
    ENTRIES_PER_MESSAGE_MAX, EVENTS_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX, MEMBERS_PER_SNAPSHOT_CHUNK,
    UNCOMMITTED_ENTRIES_MAX,
};
use crate::quorum::{majority, quorum_value};
use crate::rand::Rand;
use crate::stats::{bump, Stats};
use crate::storage::{PersistentState, SavedState, StateError, Storage};
use crate::time::{Duration, Instant};
use crate::types::{Entry, EntryId, LogIndex, Member, NodeId, Payload, Term};
use crate::wire::{self, AppendResult, Body, Message, MessageRef, MessageShort, WireError};

use self::election::Votes;
use self::follower::SnapshotReceive;
use self::log::{AppendError, Log};
use self::outbox::Outbox;

/// The Raft role, as `ctl status` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftRole {
    /// Follows a leader (or waits for one); a voter.
    Follower,
    /// Asking for pre-votes; its term has not changed yet.
    PreCandidate,
    /// Asking for votes in a new term.
    Candidate,
    /// Raft's leader. Goose only with a committed entry of its term and a lease.
    Leader,
    /// A non-voting member (or a node not in the membership): follows, never campaigns.
    Learner,
}

impl RaftRole {
    /// The word `ctl status` uses; a pre-candidate reports `candidate`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Follower => "follower",
            Self::PreCandidate | Self::Candidate => "candidate",
            Self::Leader => "leader",
            Self::Learner => "learner",
        }
    }
}

/// A change in what the node is, for logs, the live view and role-change hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The role, goose status, term or known leader changed; this is the new state.
    Changed(Observed),
    /// Storage failed: the node has fail-stopped and will do nothing more.
    Failed,
    /// A leadership transfer sent TimeoutNow to this voter (dissertation §3.10).
    TransferSent {
        /// The voter asked to campaign.
        to: NodeId,
    },
    /// A leadership transfer found no voter caught up within an election timeout; this
    /// node leads on.
    TransferFailed,
    /// This node's removal from the membership has committed: it should shut down.
    Removed,
}

/// What an [`Event::Changed`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The Raft role.
    pub raft: RaftRole,
    /// Whether the node is goose.
    pub goose: bool,
    /// The current term.
    pub term: Term,
    /// The leader this node knows of (itself, as leader).
    pub leader: Option<NodeId>,
}

/// A frame written by [`Node::poll_transmit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Transmit {
    /// The peer it is for.
    pub target: NodeId,
    /// The peer's address from the membership.
    pub addr: SocketAddr,
    /// The frame's length at the start of the caller's buffer.
    pub size: usize,
}

/// A snapshot of the node for `ctl status` and probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its Raft role.
    pub raft: RaftRole,
    /// Whether it is goose at the `now` given.
    pub goose: bool,
    /// Its current term.
    pub term: Term,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: LogIndex,
    /// Its last log entry.
    pub last: EntryId,
    /// Lease left (zero unless goose).
    pub lease_remaining: Duration,
    /// Whether storage failed and the node stopped for good.
    pub failed: bool,
}

/// Why [`Node::new`] refused to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// The saved state is corrupt or inconsistent.
    State(StateError),
    /// The bootstrap membership, or the saved one, does not fit this build's capacity.
    MembersOverCapacity,
    /// The saved state belongs to another node id.
    WrongNode,
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "invalid configuration: {e}"),
            Self::State(e) => write!(f, "saved state refused: {e}"),
            Self::MembersOverCapacity => f.write_str("membership over this build's capacity"),
            Self::WrongNode => f.write_str("saved state belongs to another node id"),
        }
    }
}

impl core::error::Error for StartError {}

/// Why a membership change was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader accepts changes.
    NotLeader,
    /// A majority has not confirmed the leader's log in its term yet, or a change is in flight
    /// (one change at a time, dissertation §4.1), or too many entries are uncommitted.
    Busy,
    /// The change names an unknown member, or would add one beyond capacity.
    Invalid,
    /// The log is full of uncommitted entries.
    LogFull,
    /// The leader was asked to remove itself from a flock of two voters. It would lead a
    /// flock of one that does not include it, and if it lost leadership before the removal
    /// committed, the other voter could never be elected (it would need this node's vote,
    /// and this node, no longer a voter of its own latest membership, never campaigns).
    /// Hand over first (`transfer`), then remove it on the new leader.
    RemovesLeaderOfTwo,
}

impl core::fmt::Display for ProposeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotLeader => "not the leader",
            Self::Busy => "busy: a change is in flight or this leader's log is not confirmed yet",
            Self::Invalid => "invalid change: unknown member, last voter, or over capacity",
            Self::LogFull => "log full of uncommitted entries",
            Self::RemovesLeaderOfTwo => {
                "the leader of two voters cannot remove itself: transfer first"
            }
        })
    }
}

impl core::error::Error for ProposeError {}

/// Why a leadership transfer could not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferError {
    /// Only the leader can hand leadership over.
    NotLeader,
    /// The target is not a voter (or is this node).
    UnknownNode,
    /// There is no other voter to hand over to.
    NoTarget,
    /// A transfer is already under way.
    Busy,
}

impl core::fmt::Display for TransferError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotLeader => "not the leader",
            Self::UnknownNode => "not a voter of this flock",
            Self::NoTarget => "no other voter",
            Self::Busy => "a transfer is already under way",
        })
    }
}

impl core::error::Error for TransferError {}

#[derive(Clone, Copy, Debug)]
struct Progress {
    id: NodeId,
    /// Where the peer listens; kept here so a member being removed still hears the entry
    /// that removes it.
    addr: SocketAddr,
    /// The next index to send.
    next: LogIndex,
    /// The highest index known to match.
    matched: LogIndex,
    /// The highest index the peer acknowledged while its log term was this leader's term:
    /// what counts towards the commit index.
    confirmed: Option<LogIndex>,
    /// Set once the peer's removal has committed: it keeps its progress until it has
    /// acknowledged a frame that told it so.
    leaving: Option<Leaving>,
    /// The latest `sent_at` this peer acknowledged in this leadership.
    acked_sent_at: Option<Instant>,
    /// Heard from since the last CheckQuorum.
    active: bool,
    /// A replication message is due, stamped with the time it was decided.
    send: Option<Instant>,
    /// Members of the current snapshot the peer has received (while `next` is inside the
    /// snapshot).
    snapshot_received: u16,
}

/// A member whose removal has committed, still sent heartbeats until it knows: otherwise a
/// later change would drop it first and it would never learn it was removed.
#[derive(Clone, Copy, Debug)]
struct Leaving {
    /// The index of the entry that removed it.
    removal: LogIndex,
    /// When this leader's commit index first covered the removal: every frame sent since
    /// carries it.
    told_from: Instant,
}

#[derive(Clone, Debug)]
struct LeaderState<const M: usize> {
    progress: Vec<Progress, M>,
    /// When this node became leader: acknowledgements of earlier sends are stale.
    since: Instant,
    /// The last index of this leader's log when it was elected.
    election_last: LogIndex,
    /// A majority confirmed this leader's whole log as of its election in its term: every
    /// entry it holds from earlier terms is committed, and it may be goose.
    log_confirmed: bool,
    /// The send time of the latest round: the leader's own acknowledgement.
    round_sent_at: Instant,
    lease_end: Option<Instant>,
    heartbeat_deadline: Instant,
    quorum_check_deadline: Instant,
    transfer: Option<Transfer>,
}

/// A leadership transfer under way. While it lasts the leader is not goose; once TimeoutNow
/// is sent it is never goose again in this term, because the voters it asked may ignore
/// stickiness for the target.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    /// The voter asked for, or `None` for the most up-to-date one.
    target: Option<NodeId>,
    /// When the transfer gives up (before TimeoutNow) or the leader steps down (after).
    deadline: Instant,
    /// Whether TimeoutNow was sent.
    sent: bool,
}

#[derive(Clone, Debug)]
enum Role<const M: usize> {
    Follower,
    PreCandidate(Votes<M>),
    Candidate(Votes<M>),
    Leader(LeaderState<M>),
}

/// A leader's progress of `from`, once an answer to a send at `sent_at` arrived: the peer
/// counts as active for CheckQuorum, and the send time as acknowledged for the lease (unless
/// it predates this leadership). `None` if this node is not leader or `from` is no peer.
fn acknowledged<const M: usize>(
    role: &mut Role<M>,
    from: NodeId,
    sent_at: Instant,
) -> Option<&mut Progress> {
    let Role::Leader(state) = role else {
        return None;
    };
    let progress = state.progress.iter_mut().find(|p| p.id == from)?;
    progress.active = true;
    if sent_at >= state.since {
        progress.acked_sent_at = progress.acked_sent_at.max(Some(sent_at));
    }
    Some(progress)
}

/// The observable state storage confirmed last.
#[derive(Clone, Copy, Debug)]
struct Saved {
    term: Term,
    voted_for: Option<NodeId>,
    log_term: Term,
    commit: LogIndex,
}

/// A Raft node with room for `M` members and `L` log entries. See the [module docs](self)
/// for how to drive it, and [`lease`] for the lease's safety argument.
pub struct Node<S: Storage, const M: usize = MEMBERS_MAX, const L: usize = LOG_ENTRIES_MAX> {
    config: Config,
    storage: S,
    rand: Rand,
    term: Term,
    voted_for: Option<NodeId>,
    log: Log<M, L>,
    commit: LogIndex,
    role: Role<M>,
    leader: Option<NodeId>,
    election_deadline: Instant,
    /// The latest term whose leader confirmed this node's whole log (persisted).
    log_term: Term,
    /// The loyalty window of the leader last followed (persisted).
    stick: Duration,
    /// Leader stickiness: until then this node refuses every vote and does not campaign,
    /// because a leader it heard (or an acknowledgement it sent before a restart) may be
    /// the basis of a lease.
    sticky_until: Instant,
    /// What storage last confirmed, which is all a failed node reports.
    saved: Saved,
    /// The input being handled brought this node's log level with a leader's whole log.
    whole_log: bool,
    snapshot_receive: Option<SnapshotReceive<M>>,
    outbox: Outbox<M>,
    events: Deque<Event, EVENTS_MAX>,
    observed: Option<Observed>,
    stats: Stats,
    last_now: Instant,
    dirty: bool,
    failed: bool,
    /// Whether this node has been a member since it started (a joining node has not, nor
    /// has a node that started with its own removal in its log).
    was_member: bool,
    /// Whether [`Event::Removed`] was reported.
    removed: bool,
    /// The commit index, last entry and snapshot when the committed membership was last
    /// looked at for this node's removal.
    membership_checked: Option<(LogIndex, EntryId, EntryId)>,
}

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// Starts a node: from `saved` (the bytes last saved through [`Storage`]), or, if there
    /// are none, from `bootstrap` as the membership at index 0 (every node of a new flock
    /// must be given the same bootstrap). `seed` drives the election-timeout jitter and
    /// should differ between nodes.
    ///
    /// The node grants no vote and does not campaign for `election_timeout_min`, or the
    /// saved loyalty window if longer, after `now` (see [`lease`]).
    pub fn new(
        config: &Config,
        storage: S,
        saved: Option<&[u8]>,
        bootstrap: &[Member],
        seed: u64,
        now: Instant,
    ) -> Result<Self, StartError> {
        config.validate().map_err(StartError::Config)?;
        let state = match saved {
            Some(bytes) => SavedState::<M, L>::decode(bytes).map_err(StartError::State)?,
            None => {
                let mut members: Vec<Member, M> =
                    Vec::from_slice(bootstrap).map_err(|()| StartError::MembersOverCapacity)?;
                // Every node must start from the same membership: make the order canonical.
                members.sort_unstable_by_key(|m| m.id);
                SavedState {
                    id: config.id,
                    term: Term(0),
                    voted_for: None,
                    log_term: Term(0),
                    stick: Duration::ZERO,
                    commit: LogIndex(0),
                    snapshot: EntryId::default(),
                    snapshot_members: members,
                    entries: Vec::new(),
                }
            }
        };
        if state.id != config.id {
            return Err(StartError::WrongNode);
        }
        let commit = state.commit;
        let saved = Saved {
            term: state.term,
            voted_for: state.voted_for,
            log_term: state.log_term,
            commit,
        };
        let log = Log::new(state.snapshot, state.snapshot_members, state.entries)
            .map_err(|_| StartError::MembersOverCapacity)?;
        let mut node = Self {
            config: *config,
            storage,
            rand: Rand::new(seed ^ u64::from(config.id.get()).rotate_left(32)),
            term: state.term,
            voted_for: state.voted_for,
            log,
            commit,
            role: Role::Follower,
            leader: None,
            election_deadline: now,
            log_term: state.log_term,
            stick: state.stick,
            // A restart forgets whom it acknowledged: loyal to all of them for the longest
            // window it may have promised (the lease module).
            sticky_until: now + config.election_timeout_min.max(state.stick),
            saved,
            whole_log: false,
            snapshot_receive: None,
            outbox: Outbox::new(),
            events: Deque::new(),
            observed: None,
            stats: Stats::default(),
            last_now: now,
            dirty: false,
            failed: false,
            was_member: false,
            removed: false,
            membership_checked: None,
        };
        // A node whose own log already removes it (restarted after its removal, perhaps to
        // be added again) takes that removal for old news: it reports only a removal that
        // happens after it is a member again.
        node.was_member = node.log.committed_member(config.id, node.commit).is_some()
            && node.log.member(config.id).is_some();
        node.reset_election_timer(now);
        node.observe(now);
        Ok(node)
    }

    // --- Getters -------------------------------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether this node is goose at `now`: leader, its whole log as of its election
    /// confirmed by a majority in its term, and `now` inside the lease. See [`lease`] for
    /// why two nodes never are at once.
    pub fn is_goose(&self, now: Instant) -> bool {
        self.lease_end(now).is_some()
    }

    /// The node's state for probes and `ctl status`.
    pub fn status(&self, now: Instant) -> Status {
        let lease_end = self.lease_end(now);
        Status {
            id: self.config.id,
            raft: self.raft_role(),
            goose: lease_end.is_some(),
            term: self.term,
            leader: self.leader,
            commit: self.commit,
            last: self.log.last_id(),
            lease_remaining: lease_end.map_or(Duration::ZERO, |end| end.saturating_since(now)),
            failed: self.failed,
        }
    }

    /// The current term (once failed: the last one storage confirmed).
    pub fn term(&self) -> Term {
        self.term
    }

    /// Whom this node voted for in the current term.
    pub fn voted_for(&self) -> Option<NodeId> {
        self.voted_for
    }

    /// The log term: the latest term whose leader confirmed this node's whole log.
    pub fn log_term(&self) -> Term {
        self.log_term
    }

    /// The commit index.
    pub fn commit(&self) -> LogIndex {
        self.commit
    }

    /// Whether storage failed and the node stopped for good (fail-stop).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The membership in force (the latest in the log, committed or not).
    pub fn members(&self) -> &[Member] {
        self.log.members()
    }

    /// Member `id` as the committed membership knows it: a member being removed by an
    /// uncommitted entry is still one, and still heard.
    pub fn committed_member(&self, id: NodeId) -> Option<Member> {
        self.log.committed_member(id, self.commit)
    }

    /// The snapshot's last entry: entries up to it are no longer in [`Node::entries`].
    pub fn snapshot(&self) -> EntryId {
        self.log.snapshot()
    }

    /// The log after the snapshot; `entries()[i]` has index `snapshot().index + 1 + i`.
    pub fn entries(&self) -> &[Entry] {
        self.log.entries()
    }

    /// The drop counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The storage, for callers that keep statistics in it.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    fn raft_role(&self) -> RaftRole {
        match self.role {
            Role::Leader(_) => RaftRole::Leader,
            Role::Candidate(_) => RaftRole::Candidate,
            Role::PreCandidate(_) => RaftRole::PreCandidate,
            Role::Follower if self.log.is_voter(self.config.id) => RaftRole::Follower,
            Role::Follower => RaftRole::Learner,
        }
    }

    // --- Inputs --------------------------------------------------------------------------

    /// Handles one datagram that starts with a byte ≥ 0x80. Bad frames are counted and
    /// dropped; nothing a peer sends can make this panic.
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        self.advance_clock(now);
        if self.failed {
            return;
        }
        match wire::decode(frame) {
            Ok((header, message)) => {
                if header.target != self.config.id.get() {
                    bump(&mut self.stats.wrong_target);
                } else if let Some(from) = NodeId::new(header.source).filter(|id| {
                    *id != self.config.id
                        && (self.log.known_member(*id, self.commit).is_some()
                            || self.is_leaving_peer(*id)
                            || (self.is_joining() && matches!(message.body, Body::Snapshot { .. })))
                }) {
                    self.step(now, from, message);
                } else {
                    bump(&mut self.stats.unknown_node);
                }
            }
            Err(error) => bump(match error {
                WireError::TooShort => &mut self.stats.too_short,
                WireError::TooLong => &mut self.stats.too_long,
                WireError::BadMagic => &mut self.stats.bad_magic,
                WireError::BadVersion => &mut self.stats.bad_version,
                WireError::Invalid => &mut self.stats.invalid,
                WireError::Undecodable | WireError::BufferTooSmall => &mut self.stats.undecodable,
            }),
        }
        self.finish(now);
    }

    /// Fires whatever timers are due at `now`; harmless when none is.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        if self.failed {
            return;
        }
        if matches!(self.role, Role::Leader(_)) {
            self.tick_leader(now);
        } else if now >= self.election_deadline {
            self.tick_election(now);
        }
        self.finish(now);
    }

    /// Proposes a membership change. Only the goose's leader role accepts, one change at
    /// a time, and only once a majority confirmed its log in its term (the role the
    /// committed no-op plays in the fix Ongaro gave for the single-server change bug,
    /// raft-dev 2015: no configuration from an earlier term can commit after that).
    pub fn propose(&mut self, now: Instant, payload: Payload) -> Result<LogIndex, ProposeError> {
        self.advance_clock(now);
        let (transferring, confirmed) = match &self.role {
            Role::Leader(state) if !self.failed => (state.transfer.is_some(), state.log_confirmed),
            _ => return Err(ProposeError::NotLeader),
        };
        let uncommitted = self.log.last_index().0 - self.commit.0;
        let change_in_flight = self
            .log
            .entries_from(self.commit.next(), L)
            .iter()
            .any(|e| e.payload.is_membership_change());
        if !confirmed
            || transferring
            || change_in_flight
            || uncommitted >= UNCOMMITTED_ENTRIES_MAX as u64
        {
            return Err(ProposeError::Busy);
        }
        let valid = match payload {
            Payload::Noop => true,
            Payload::AddLearner { id, .. } => id.is_valid(),
            Payload::Promote { id } => self.log.member(id).is_some_and(|m| !m.voter),
            // Removing the last voter would leave a flock that can never commit again.
            Payload::Remove { id } => {
                if id == self.config.id && self.log.voter_count() == 2 {
                    return Err(ProposeError::RemovesLeaderOfTwo);
                }
                self.log.member(id).is_some_and(|m| !m.voter) || self.log.voter_count() > 1
            }
        };
        if !valid {
            return Err(ProposeError::Invalid);
        }
        let index = self.append_as_leader(now, payload)?;
        // Replicate now rather than at the next heartbeat.
        self.broadcast_append(now);
        self.finish(now);
        if self.failed {
            // Storage refused the entry: it was never appended as far as anyone can know.
            return Err(ProposeError::NotLeader);
        }
        Ok(index)
    }

    /// Hands leadership to `target`, or to the most up-to-date voter (dissertation §3.10):
    /// this node stops being goose at once, brings the target's log level with its own,
    /// then sends it TimeoutNow, on which the target campaigns without waiting and voters
    /// grant it their vote despite leader stickiness. Reported by [`Event::TransferSent`]
    /// or, if no voter caught up within `election_timeout_min`, [`Event::TransferFailed`].
    pub fn transfer(&mut self, now: Instant, target: Option<NodeId>) -> Result<(), TransferError> {
        self.advance_clock(now);
        let Role::Leader(state) = &mut self.role else {
            return Err(TransferError::NotLeader);
        };
        if self.failed {
            return Err(TransferError::NotLeader);
        }
        if state.transfer.is_some() {
            return Err(TransferError::Busy);
        }
        if let Some(id) = target {
            if id == self.config.id || !self.log.is_voter(id) {
                return Err(TransferError::UnknownNode);
            }
        } else if !state.progress.iter().any(|p| self.log.is_voter(p.id)) {
            return Err(TransferError::NoTarget);
        }
        state.transfer = Some(Transfer {
            target,
            deadline: now + self.config.election_timeout_min,
            sent: false,
        });
        self.maybe_send_timeout_now(now);
        self.finish(now);
        if self.failed {
            return Err(TransferError::NotLeader);
        }
        Ok(())
    }

    // --- Outputs -------------------------------------------------------------------------

    /// Writes the next frame to send into `buffer` (give it [`crate::limits::FRAME_SIZE_MAX`]
    /// bytes). Call until `None` after every input.
    pub fn poll_transmit(&mut self, now: Instant, buffer: &mut [u8]) -> Option<Transmit> {
        self.advance_clock(now);
        if self.failed {
            return None;
        }
        while let Some((to, message)) = self.outbox.pop() {
            let Some(message) = message.as_ref() else {
                continue;
            };
            if let Some(transmit) = self.encode(to, &message, buffer) {
                return Some(transmit);
            }
        }
        self.poll_replication(buffer)
    }

    /// The next instant `handle_timeout` has work, or `None` once the node has failed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.failed {
            return None;
        }
        match &self.role {
            Role::Leader(state) => {
                let mut next = state.heartbeat_deadline.min(state.quorum_check_deadline);
                if let Some(transfer) = state.transfer {
                    next = next.min(transfer.deadline);
                }
                // Wake at the lease's end too, so its lapse is reported as an event.
                Some(match self.lease_end(self.last_now) {
                    Some(end) => next.min(end),
                    None => next,
                })
            }
            _ => Some(self.election_deadline),
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // --- Term handling, then dispatch by role (etcd's Step) ------------------------------

    /// Whether this node may stand for election: only as a voter of its latest membership.
    /// A node being removed, even by an entry not yet committed, never campaigns: it would
    /// only disturb the flock it is leaving. That this cannot stall a flock is argued in the
    /// module docs (removal of a leader).
    fn can_campaign(&self) -> bool {
        self.log.is_voter(self.config.id)
    }

    /// Whether `id` is a removed member this leader is still telling of its removal: its
    /// acknowledgements are what end the telling.
    fn is_leaving_peer(&self, id: NodeId) -> bool {
        let Role::Leader(state) = &self.role else {
            return false;
        };
        state
            .progress
            .iter()
            .any(|p| p.id == id && p.leaving.is_some())
    }

    /// Whether this node has not been a member since it started: it then accepts a leader's
    /// snapshot from a sender it does not know yet, to learn the membership.
    fn is_joining(&self) -> bool {
        !self.was_member && self.log.member(self.config.id).is_none()
    }

    // --- Leader side ---------------------------------------------------------------------

    /// The leader's timers: a transfer's deadline, CheckQuorum, the heartbeat.
    fn tick_leader(&mut self, now: Instant) {
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        if let Some(transfer) = state.transfer.filter(|t| now >= t.deadline) {
            if transfer.sent {
                // The target did not take over: step down so an ordinary election
                // follows, rather than lead on without ever being goose.
                self.become_follower(now, self.term, None);
                return;
            }
            state.transfer = None;
            self.push_event(Event::TransferFailed);
        }
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        if now >= state.quorum_check_deadline {
            state.quorum_check_deadline = now + self.config.election_timeout_min;
            if !Self::quorum_active(&self.log, state, self.config.id) {
                // CheckQuorum: a leader cut off from its majority steps down, so a
                // minority side has no leader at all (its lease ended long before).
                self.become_follower(now, self.term, None);
                return;
            }
        }
        if now >= state.heartbeat_deadline {
            self.broadcast_append(now);
            self.maybe_promote(now);
        }
    }

    fn new_progress(member: &Member, next: LogIndex) -> Progress {
        Progress {
            id: member.id,
            addr: member.addr,
            next,
            matched: LogIndex(0),
            confirmed: None,
            leaving: None,
            acked_sent_at: None,
            active: false,
            send: None,
            snapshot_received: 0,
        }
    }

    // --- Replication: follower side ------------------------------------------------------

    // --- Replication: leader side --------------------------------------------------------

    fn append_as_leader(
        &mut self,
        now: Instant,
        payload: Payload,
    ) -> Result<LogIndex, ProposeError> {
        self.log
            .append(
                Entry {
                    term: self.term,
                    payload,
                },
                self.commit,
            )
            .map_err(|error| match error {
                AppendError::LogFull => ProposeError::LogFull,
                AppendError::MembersFull => ProposeError::Invalid,
            })?;
        self.dirty = true;
        if payload.is_membership_change() {
            // A new member starts from a snapshot: fold what is committed into it first,
            // so the snapshot names every member a joining node must be able to answer,
            // including a leader that was itself added after the bootstrap.
            self.log.compact(self.commit);
        }
        self.sync_progress();
        self.maybe_commit(now);
        Ok(self.log.last_index())
    }

    /// Keeps one progress per member other than this node, after a membership change. A
    /// removed member keeps its progress until it knows of its removal: while the removal
    /// is uncommitted, and after, until it acknowledged a frame that carried the commit
    /// ([`Leaving`]); otherwise it would never learn it, and wait forever. A new member
    /// starts from the snapshot, which carries the membership a joining node needs before
    /// it can even reply.
    fn sync_progress(&mut self) {
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        let members = self.log.members();
        let uncommitted = self.log.entries_from(self.commit.next(), L);
        state.progress.retain(|p| {
            members.iter().any(|m| m.id == p.id)
                || p.leaving.is_some()
                || uncommitted
                    .iter()
                    .any(|e| e.payload == Payload::Remove { id: p.id })
        });
        for member in members {
            if member.id == self.config.id {
                continue;
            }
            if let Some(progress) = state.progress.iter_mut().find(|p| p.id == member.id) {
                progress.addr = member.addr;
                // Added again before it heard of its removal: a member like any other.
                progress.leaving = None;
                continue;
            }
            if state.progress.is_full() {
                // Room for a member before a removed peer still being told: that one will
                // learn of its removal from its own log once it is up to date, or not at
                // all if it is gone for good. Members fit: the log holds at most M.
                if let Some(i) = state.progress.iter().position(|p| p.leaving.is_some()) {
                    state.progress.swap_remove(i);
                }
            }
            let next = self.log.snapshot().index;
            let pushed = state.progress.push(Self::new_progress(member, next));
            assert!(pushed.is_ok(), "a member's progress always fits");
        }
    }

    /// Marks the peers whose removal the commit index now covers as [`Leaving`], from
    /// `now`: they keep their progress until they acknowledge a frame sent since.
    fn mark_leaving(&mut self, now: Instant, from: LogIndex) {
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        for (i, entry) in self.log.entries_from(from.next(), L).iter().enumerate() {
            let index = LogIndex(from.0 + 1 + i as u64);
            if index > self.commit {
                break;
            }
            if let Payload::Remove { id } = entry.payload {
                if let Some(progress) = state.progress.iter_mut().find(|p| p.id == id) {
                    progress.leaving = Some(Leaving {
                        removal: index,
                        told_from: now,
                    });
                }
            }
        }
    }

    /// Promotes a caught-up learner while voters are fewer than the target
    /// (`Config::voters_target`), one change at a time.
    fn maybe_promote(&mut self, now: Instant) {
        let Role::Leader(state) = &self.role else {
            return;
        };
        if self.log.voter_count() >= usize::from(self.config.voters_target) {
            return;
        }
        let caught_up = state.progress.iter().find(|p| {
            p.active && p.matched >= self.commit && self.log.member(p.id).is_some_and(|m| !m.voter)
        });
        if let Some(id) = caught_up.map(|p| p.id) {
            // Busy (a change in flight, or this leader's log not yet confirmed) just
            // means: try again at the next heartbeat.
            let _ = self.propose(now, Payload::Promote { id });
        }
    }

    /// Sends TimeoutNow once the transfer's target has every entry this leader has.
    fn maybe_send_timeout_now(&mut self, now: Instant) {
        let last_index = self.log.last_index();
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        let Some(transfer) = state.transfer.filter(|t| !t.sent) else {
            return;
        };
        let mut voters = state
            .progress
            .iter_mut()
            .filter(|p| self.log.is_voter(p.id));
        let target = match transfer.target {
            Some(id) => voters.find(|p| p.id == id),
            None => voters.max_by_key(|p| (p.confirmed, p.matched)),
        };
        let Some(progress) = target else {
            return;
        };
        // The target must have confirmed the whole log in this term: then its log ranks
        // first, and every voter can grant it the vote.
        if progress.confirmed < Some(last_index) {
            progress.send = Some(now);
            return;
        }
        let to = progress.id;
        let deadline = now + self.config.election_timeout_max;
        state.transfer = Some(Transfer {
            target: Some(to),
            deadline,
            sent: true,
        });
        let message = MessageShort {
            term: self.term,
            body: Body::TimeoutNow,
        };
        if !self.outbox.push_request(to, message) {
            bump(&mut self.stats.outbox_full);
        }
        self.push_event(Event::TransferSent { to });
    }

    fn broadcast_append(&mut self, now: Instant) {
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        state.round_sent_at = now;
        state.heartbeat_deadline = now + self.config.heartbeat_interval;
        for progress in &mut state.progress {
            progress.send = Some(now);
        }
        self.maybe_extend_lease();
    }

    fn handle_append_response(
        &mut self,
        now: Instant,
        from: NodeId,
        sent_at: Instant,
        result: AppendResult,
    ) {
        let last_index = self.log.last_index();
        let Some(progress) = acknowledged(&mut self.role, from, sent_at) else {
            return;
        };
        match result {
            AppendResult::Accepted {
                match_index,
                confirmed,
            } => {
                if match_index > last_index {
                    bump(&mut self.stats.invalid);
                    return;
                }
                progress.matched = progress.matched.max(match_index);
                if confirmed {
                    progress.confirmed = progress.confirmed.max(Some(match_index));
                }
                progress.next = progress.next.max(match_index.next());
                if progress.next <= last_index {
                    progress.send = Some(now);
                }
                // A removed peer that holds this whole log, sent after the commit index
                // covered its removal, knows it was removed: it reports it and leaves.
                let told = progress.leaving.is_some_and(|leaving| {
                    sent_at >= leaving.told_from
                        && match_index == last_index
                        && match_index >= leaving.removal
                });
                if told {
                    if let Role::Leader(state) = &mut self.role {
                        state.progress.retain(|p| p.id != from);
                    }
                }
            }
            AppendResult::Rejected { rejected, hint } => {
                if rejected < progress.matched || rejected.next() != progress.next {
                    // Stale: answers a probe older than the current one.
                } else {
                    let hint = self.log.find_conflict_by_term(hint.index, hint.term);
                    progress.next = rejected.min(hint.index.next()).max(progress.matched.next());
                    progress.snapshot_received = 0;
                    progress.send = Some(now);
                }
            }
        }
        self.maybe_commit(now);
        self.maybe_extend_lease();
        self.maybe_send_timeout_now(now);
    }

    fn handle_snapshot_response(
        &mut self,
        now: Instant,
        from: NodeId,
        sent_at: Instant,
        last: EntryId,
        received: u16,
    ) {
        let snapshot = self.log.snapshot();
        let Some(progress) = acknowledged(&mut self.role, from, sent_at) else {
            return;
        };
        if last == snapshot && progress.next <= snapshot.index {
            progress.snapshot_received = received;
            progress.send = Some(now);
        }
        self.maybe_extend_lease();
    }

    /// Commits the highest index that a majority of voters confirmed in this term (their
    /// log term is this term, so their logs are prefixes of this one at least as long as
    /// it was at the election), whatever the term of the entry there: that is what makes
    /// elections append nothing (see the module docs). Once the confirmed index reaches
    /// the election's last index, the leader's log is confirmed and it may be goose.
    fn maybe_commit(&mut self, now: Instant) {
        let Role::Leader(state) = &mut self.role else {
            return;
        };
        let mut indexes: Vec<LogIndex, M> = Vec::new();
        if self.log.is_voter(self.config.id) {
            // The leader's own log term is this term, saved before anything it sent.
            push_bounded(&mut indexes, self.log.last_index());
        }
        for progress in &state.progress {
            if let (true, Some(confirmed)) = (self.log.is_voter(progress.id), progress.confirmed) {
                push_bounded(&mut indexes, confirmed);
            }
        }
        let Some(index) = quorum_value(&mut indexes, self.log.voter_count()) else {
            return;
        };
        if index >= state.election_last {
            state.log_confirmed = true;
        }
        if index > self.commit {
            let before = self.commit;
            // Saved with the next save, as in advance_commit.
            self.commit = index;
            self.mark_leaving(now, before);
            self.step_down_if_removed();
        }
    }

    /// A leader whose removal has committed steps down (dissertation §4.2.2).
    fn step_down_if_removed(&mut self) {
        if self.log.member(self.config.id).is_none() || !self.log.is_voter(self.config.id) {
            let now = self.last_now;
            self.become_follower(now, self.term, None);
            // Its own log is the whole log: the removal it committed is the last word.
            self.whole_log = true;
        }
    }

    fn quorum_active(log: &Log<M, L>, state: &mut LeaderState<M>, id: NodeId) -> bool {
        let mut active = usize::from(log.is_voter(id));
        for progress in &mut state.progress {
            if progress.active && log.is_voter(progress.id) {
                active += 1;
            }
            progress.active = false;
        }
        active >= majority(log.voter_count())
    }

    /// Builds the next replication frame from the log. A peer behind the snapshot gets the
    /// whole snapshot streamed, one chunk per call, so that even a joining node that cannot
    /// reply yet receives all of it.
    fn poll_replication(&mut self, buffer: &mut [u8]) -> Option<Transmit> {
        let Role::Leader(state) = &mut self.role else {
            return None;
        };
        // Bounded: each pass clears one peer's mark or advances its snapshot offset.
        let passes_max = state.progress.len() * (self.log.snapshot_members().len() + 1) + 1;
        for _ in 0..passes_max {
            let progress = state.progress.iter_mut().find(|p| p.send.is_some())?;
            let sent_at = progress.send.take()?;
            let (target, addr) = (progress.id, progress.addr);
            let snapshot = self.log.snapshot();
            let body = if progress.next <= snapshot.index {
                let members = self.log.snapshot_members();
                let offset = usize::from(progress.snapshot_received).min(members.len());
                let end = members.len().min(offset + MEMBERS_PER_SNAPSHOT_CHUNK);
                let done = end == members.len();
                progress.snapshot_received = if done {
                    0
                } else {
                    u16::try_from(end).unwrap_or(u16::MAX)
                };
                if !done {
                    progress.send = Some(sent_at);
                }
                Body::Snapshot {
                    last: snapshot,
                    stick: self.config.election_timeout_min,
                    sent_at,
                    offset: u16::try_from(offset).unwrap_or(u16::MAX),
                    members: &members[offset..end],
                    done,
                }
            } else {
                let prev_index = progress.next.prev();
                let prev = EntryId {
                    index: prev_index,
                    term: self.log.term_at(prev_index).unwrap_or_default(),
                };
                Body::Append {
                    prev,
                    commit: self.commit,
                    last: self.log.last_index(),
                    stick: self.config.election_timeout_min,
                    sent_at,
                    entries: self
                        .log
                        .entries_from(progress.next, ENTRIES_PER_MESSAGE_MAX),
                }
            };
            let message = Message {
                term: self.term,
                body,
            };
            if let Some(transmit) = encode_to(
                self.config.id,
                &mut self.stats,
                target,
                addr,
                &message,
                buffer,
            ) {
                return Some(transmit);
            }
        }
        None
    }

    // --- Plumbing ------------------------------------------------------------------------

    fn respond(&mut self, to: NodeId, body: Body<(), ()>) {
        self.respond_in(to, self.term, body);
    }

    fn respond_in(&mut self, to: NodeId, term: Term, body: Body<(), ()>) {
        if !self.outbox.push_response(to, MessageShort { term, body }) {
            bump(&mut self.stats.outbox_full);
        }
    }

    fn encode(
        &mut self,
        target: NodeId,
        message: &MessageRef<'_>,
        buffer: &mut [u8],
    ) -> Option<Transmit> {
        let addr = self.log.known_member(target, self.commit)?.addr;
        encode_to(
            self.config.id,
            &mut self.stats,
            target,
            addr,
            message,
            buffer,
        )
    }

    fn advance_clock(&mut self, now: Instant) {
        // The lease is only safe on a clock that never goes back: a caller bug, not input.
        assert!(now >= self.last_now, "clock went backwards");
        self.last_now = now;
    }

    /// Ends every input: persist before anything becomes visible, then report changes.
    fn finish(&mut self, now: Instant) {
        if self.dirty {
            self.dirty = false;
            let state = PersistentState {
                id: self.config.id,
                term: self.term,
                voted_for: self.voted_for,
                log_term: self.log_term,
                stick: self.stick,
                commit: self.commit,
                snapshot: self.log.snapshot(),
                snapshot_members: self.log.snapshot_members(),
                entries: self.log.entries(),
            };
            if self.storage.save(&state).is_err() {
                self.fail_stop();
                return;
            }
            self.saved = Saved {
                term: self.term,
                voted_for: self.voted_for,
                log_term: self.log_term,
                commit: self.commit,
            };
        }
        self.maybe_report_removed();
        self.whole_log = false;
        self.observe(now);
    }

    /// Storage failed: nothing that depended on the lost write may leave, and nothing this
    /// node reports from now on (probes, status, the checker) may show state storage did
    /// not confirm: a term seen before a restart and gone after it would be a term that
    /// went backwards to whoever saw it.
    fn fail_stop(&mut self) {
        self.failed = true;
        self.outbox.clear();
        self.role = Role::Follower;
        self.leader = None;
        self.term = self.saved.term;
        self.voted_for = self.saved.voted_for;
        self.log_term = self.saved.log_term;
        self.commit = self.saved.commit;
        self.whole_log = false;
        self.push_event(Event::Failed);
    }

    /// Reports [`Event::Removed`] once this node's removal is committed and is the last
    /// word on it: it was in the committed membership and no longer is, and it is not in
    /// the latest membership of a log it knows to be some leader's whole log (a node
    /// removed, restarted and added again meanwhile learns of the removal from entries it
    /// receives before those that add it back: only a whole log tells the end). An
    /// addition that never committed and was overwritten is not a removal: the node stays,
    /// to be added again.
    fn maybe_report_removed(&mut self) {
        if self.removed {
            return;
        }
        let latest = self.log.member(self.config.id).is_some();
        if !self.was_member {
            // A member once in both memberships. The committed one costs a pass over the
            // log, and only changes with the commit index or the log.
            let checked = (self.commit, self.log.last_id(), self.log.snapshot());
            if latest && self.membership_checked != Some(checked) {
                self.membership_checked = Some(checked);
                self.was_member = self
                    .log
                    .committed_member(self.config.id, self.commit)
                    .is_some();
            }
            return;
        }
        let whole = self.whole_log || matches!(self.role, Role::Leader(_));
        if !latest
            && whole
            && self
                .log
                .committed_member(self.config.id, self.commit)
                .is_none()
        {
            self.removed = true;
            self.push_event(Event::Removed);
        }
    }

    fn observe(&mut self, now: Instant) {
        let observed = Observed {
            raft: self.raft_role(),
            goose: self.is_goose(now),
            term: self.term,
            leader: self.leader,
        };
        if self.observed != Some(observed) {
            self.observed = Some(observed);
            self.push_event(Event::Changed(observed));
        }
    }

    fn push_event(&mut self, event: Event) {
        if self.events.is_full() {
            self.events.pop_front();
            bump(&mut self.stats.events_dropped);
        }
        let _ = self.events.push_back(event);
    }
}

/// Pushes one value per voter: voters are members, and a node holds at most `M` of them.
fn push_bounded<T, const M: usize>(values: &mut Vec<T, M>, value: T) {
    let pushed = values.push(value);
    assert!(pushed.is_ok(), "one value per voter fits M");
}

fn encode_to(
    source: NodeId,
    stats: &mut Stats,
    target: NodeId,
    addr: SocketAddr,
    message: &MessageRef<'_>,
    buffer: &mut [u8],
) -> Option<Transmit> {
    match wire::encode(source, target, message, buffer) {
        Ok(size) => Some(Transmit { target, addr, size }),
        Err(_) => {
            // Only a caller buffer below FRAME_SIZE_MAX gets here.
            bump(&mut stats.outbox_full);
            None
        }
    }
}
