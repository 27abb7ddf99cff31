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
//! # Where things are
//!
//! Each file holds one part of the protocol, with the written argument for it beside the
//! code it argues about:
//!
//! - this module: the [`Node`] type and its public API (getters, `handle_*`, `poll_*`),
//!   the gateway for peer frames, and `finish`, which saves before anything is sent
//!   ([fail-stop](#fail-stop));
//! - [`step`]: term handling and leader stickiness, then dispatch (etcd's `Step`);
//! - [`election`]: pre-vote, vote, candidacy, the election timer, and the role changes;
//! - [`follower`]: Append and Snapshot, the whole-log rule, and the log-term argument;
//! - [`leader`]: progress, replication, commit by confirmation, CheckQuorum;
//! - [`lease`]: the goose lease and the voters' loyalty window, and why at most one node
//!   is goose;
//! - [`membership`]: changes in the log, leaving peers, and the removal argument;
//! - [`transfer`]: leadership transfer and TimeoutNow;
//! - `log` and `outbox` (private): the fixed-capacity log with its snapshot and
//!   membership, and the bounded queue of short messages.
//!
//! # The goose lease
//!
//! [`Node::is_goose`] holds only while the node is leader, a majority holds its whole log
//! (its commit index covers it, or a majority confirmed it in its term), and a majority
//! acknowledged a heartbeat round it sent less than its
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
//! A node not in its latest membership never campaigns, a leader of two voters never removes
//! itself ([`ProposeError::RemovesLeaderOfTwo`]), and a removed node learns of its removal
//! from its own log ([`Event::Removed`]). Why this cannot stall a flock, and when a removed
//! node may take its removal for the last word, is argued in [`membership`].
//!
//! # Fail-stop
//!
//! A save that fails puts the node in a terminal state: it sends nothing, votes for no one,
//! is never goose again, and reports only what storage confirmed last (term, vote, log
//! term, commit index), so that no reply or status shows a term that a restart would take
//! back. The service answers nothing once its node failed; the desktop node exits and a
//! board halts.

pub mod cause;
pub mod election;
pub mod follower;
pub mod leader;
pub mod lease;
mod log;
pub mod membership;
mod outbox;
pub mod step;
pub mod transfer;

use core::net::SocketAddr;

use heapless::{Deque, Vec};

use crate::config::{Config, ConfigError};
use crate::limits::{EVENTS_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX};
use crate::rand::Rand;
use crate::stats::{bump, Stats};
use crate::storage::{PersistentState, SavedState, StateError, Storage};
use crate::time::{Duration, Instant};
use crate::types::{Entry, EntryId, LogIndex, Member, NodeId, Payload, Term};
use crate::wire::{self, Body, MessageOwned, MessageRef, MessageShort, WireError};

pub use self::cause::Cause;
use self::election::Votes;
use self::follower::{PendingLogTerm, SnapshotReceive};
use self::leader::LeaderState;
use self::log::Log;
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
    /// Why it changed.
    pub cause: Cause,
}

impl Observed {
    /// Whether `other` describes the same state, whatever the cause.
    fn same_state(&self, other: &Self) -> bool {
        (self.raft, self.goose, self.term, self.leader)
            == (other.raft, other.goose, other.term, other.leader)
    }
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
    /// Whether its health check passes ([`Node::set_healthy`]).
    pub healthy: bool,
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
    /// The target said its health check fails: it would not take over.
    Unhealthy,
}

impl core::fmt::Display for TransferError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotLeader => "not the leader",
            Self::UnknownNode => "not a voter of this flock",
            Self::NoTarget => "no other voter",
            Self::Busy => "a transfer is already under way",
            Self::Unhealthy => "the target's health check fails",
        })
    }
}

impl core::error::Error for TransferError {}

#[derive(Clone, Debug)]
enum Role<const M: usize> {
    Follower,
    PreCandidate(Votes<M>),
    Candidate(Votes<M>),
    Leader(LeaderState<M>),
}

impl<const M: usize> Role<M> {
    /// The leader's state, if this node leads. The one way leader-side code reaches it:
    /// borrowing only the role, it leaves the log, the configuration and the rest of the
    /// node free to use beside it.
    fn leader(&self) -> Option<&LeaderState<M>> {
        match self {
            Self::Leader(state) => Some(state),
            _ => None,
        }
    }

    /// As [`Role::leader`], to change it.
    fn leader_mut(&mut self) -> Option<&mut LeaderState<M>> {
        match self {
            Self::Leader(state) => Some(state),
            _ => None,
        }
    }

    fn is_leader(&self) -> bool {
        self.leader().is_some()
    }
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
    /// A log term this node holds a whole log for but has not saved yet ([`follower`]).
    log_term_pending: Option<PendingLogTerm>,
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
    /// Why the role is changing during the input being handled ([`cause`]).
    cause: Option<Cause>,
    /// When the last [`Event::Changed`] was reported, and why.
    changed: (Instant, Cause),
    stats: Stats,
    last_now: Instant,
    dirty: bool,
    failed: bool,
    /// Whether this node has been a member since it started (a joining node has not, nor
    /// has a node that started with its own removal in its log).
    was_member: bool,
    /// Whether [`Event::Removed`] was reported.
    removed: bool,
    /// Whether the program's health check passes: an unhealthy voter does not campaign
    /// and tells its leader so, which then never hands leadership to it.
    healthy: bool,
    /// The commit index, last entry and snapshot when the committed membership was last
    /// looked at for this node's removal.
    membership_checked: Option<(LogIndex, EntryId, EntryId)>,
}

/// A configuration and a state that [`Node::check`] accepted, for [`Node::start`].
#[derive(Debug)]
pub struct Checked<const M: usize, const L: usize> {
    config: Config,
    state: SavedState<M, L>,
    /// The membership after the state's log.
    members: Vec<Member, M>,
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
        let checked = Self::check::<StartError>(config, saved, bootstrap)?;
        Ok(Self::start(storage, &checked, seed, now))
    }

    /// [`Node::new`]'s first half: everything that can refuse a start (the configuration,
    /// the saved state, the membership's capacity), with no node built yet.
    /// [`Node::start`] builds the node from what it returns. A caller with a small stack
    /// (a board) builds the node right where it keeps it that way: taking it out of a
    /// `Result` would copy it, 4 KiB at the board's capacities. The refusal comes as any
    /// error type `E` a [`StartError`] converts into, so a caller's own `Result` holds the
    /// checked state with no copy to convert it (2 KiB at a board's capacities).
    ///
    /// # Errors
    /// As [`Node::new`].
    #[inline(never)]
    pub fn check<E: From<StartError>>(
        config: &Config,
        saved: Option<&[u8]>,
        bootstrap: &[Member],
    ) -> Result<Checked<M, L>, E> {
        config.validate().map_err(StartError::Config)?;
        // Filled in place: a board's stack holds one state, not a copy per step.
        let mut checked = Checked {
            config: *config,
            state: SavedState::empty(config.id),
            members: Vec::new(),
        };
        let state = &mut checked.state;
        match saved {
            Some(bytes) => state.decode_into(bytes, false).map_err(StartError::State)?,
            None => {
                let members = &mut state.snapshot_members;
                members
                    .extend_from_slice(bootstrap)
                    .map_err(|()| StartError::MembersOverCapacity)?;
                // Every node must start from the same membership: make the order canonical.
                // Insertion sort: a membership is a handful of members, and core's sort
                // costs a board 1.7 KB of flash.
                for i in 1..members.len() {
                    let mut j = i;
                    while j > 0 && members[j - 1].id > members[j].id {
                        members.swap(j - 1, j);
                        j -= 1;
                    }
                }
            }
        }
        if state.id != config.id {
            return Err(StartError::WrongNode.into());
        }
        checked.members = Log::<M, L>::replay(&state.snapshot_members, &state.entries)
            .map_err(|_| StartError::MembersOverCapacity)?;
        Ok(checked)
    }

    /// [`Node::new`]'s second half: the node from what [`Node::check`] accepted, on
    /// `storage`, with `seed` and at `now` as [`Node::new`] takes them. It cannot fail, so
    /// it returns the node itself, which a caller can have built in place: in a field of
    /// the value it builds around it ([`crate::service::Service::starting`]).
    #[inline(never)]
    pub fn start(storage: S, checked: &Checked<M, L>, seed: u64, now: Instant) -> Self {
        let mut node = Self {
            // Every field but `storage` is set again by `reset`: these are placeholders.
            config: checked.config,
            storage,
            rand: Rand::new(seed),
            term: Term(0),
            voted_for: None,
            log: Log::empty(),
            commit: LogIndex(0),
            role: Role::Follower,
            leader: None,
            election_deadline: now,
            log_term: Term(0),
            stick: Duration::ZERO,
            log_term_pending: None,
            sticky_until: now,
            saved: Saved {
                term: Term(0),
                voted_for: None,
                log_term: Term(0),
                commit: LogIndex(0),
            },
            whole_log: false,
            snapshot_receive: None,
            outbox: Outbox::new(),
            events: Deque::new(),
            observed: None,
            cause: None,
            changed: (now, Cause::Started),
            stats: Stats::default(),
            last_now: now,
            dirty: false,
            failed: false,
            was_member: false,
            removed: false,
            healthy: true,
            membership_checked: None,
        };
        node.reset(checked, seed, now);
        node
    }

    /// [`Node::start`] over this node, in place, on `storage`: what a node restarted from
    /// storage is (`ctl start`), without a second node on the stack (4 KiB at a board's
    /// capacities).
    #[inline(never)]
    pub fn restart(&mut self, storage: S, checked: &Checked<M, L>, seed: u64, now: Instant) {
        self.storage = storage;
        self.reset(checked, seed, now);
    }

    /// Sets every field but `storage` as a node starting from `checked` has it. Each field
    /// is named (the compiler refuses a field left out, and warns of one named but not set).
    fn reset(&mut self, checked: &Checked<M, L>, seed: u64, now: Instant) {
        let Checked {
            config: checked_config,
            state,
            members,
        } = checked;
        let Self {
            config,
            storage: _,
            rand,
            term,
            voted_for,
            log,
            commit,
            role,
            leader,
            election_deadline,
            log_term,
            stick,
            log_term_pending,
            sticky_until,
            saved,
            whole_log,
            snapshot_receive,
            outbox,
            events,
            observed,
            cause,
            changed,
            stats,
            last_now,
            dirty,
            failed,
            was_member,
            removed,
            healthy,
            membership_checked,
        } = self;
        *config = *checked_config;
        *rand = Rand::new(seed ^ u64::from(config.id.get()).rotate_left(32));
        *term = state.term;
        *voted_for = state.voted_for;
        log.load(
            state.snapshot,
            &state.snapshot_members,
            &state.entries,
            members,
        );
        *commit = state.commit;
        *role = Role::Follower;
        *leader = None;
        *election_deadline = now;
        *log_term = state.log_term;
        *stick = state.stick;
        *log_term_pending = None;
        // A restart forgets whom it acknowledged: loyal to all of them for the longest
        // window it may have promised (the lease module).
        *sticky_until = now + config.election_timeout_min.max(state.stick);
        *saved = Saved {
            term: state.term,
            voted_for: state.voted_for,
            log_term: state.log_term,
            commit: state.commit,
        };
        *whole_log = false;
        *snapshot_receive = None;
        outbox.clear();
        events.clear();
        *observed = None;
        *cause = Some(Cause::Started);
        *changed = (now, Cause::Started);
        *stats = Stats::default();
        *last_now = now;
        *dirty = false;
        *failed = false;
        // A node whose own log already removes it (restarted after its removal, perhaps to
        // be added again) takes that removal for old news: it reports only a removal that
        // happens after it is a member again.
        *was_member =
            log.committed_member(config.id, *commit).is_some() && log.member(config.id).is_some();
        *removed = false;
        *healthy = true;
        *membership_checked = None;
        self.reset_election_timer(now);
        self.observe(now);
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

    /// Whether this node is goose at `now`: leader, its whole log as of its election held
    /// by a majority (committed, or confirmed in its term), and `now` inside the lease. See
    /// [`lease`] for why two nodes never are at once.
    pub fn is_goose(&self, now: Instant) -> bool {
        self.lease_end(now).is_some()
    }

    /// Whether this node leads and a majority has confirmed its log in its term: it accepts
    /// membership changes ([`Node::propose`]). A new goose whose log was committed already
    /// is goose a save before this (the log term, in [`follower`]).
    pub fn is_log_confirmed(&self) -> bool {
        self.role.leader().is_some_and(|state| state.log_confirmed)
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
            healthy: self.healthy,
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

    /// When the role, goose status, term or leader last changed, and why.
    pub fn last_change(&self) -> (Instant, Cause) {
        self.changed
    }

    /// As leader, the highest log index peer `id` is known to hold (its match index);
    /// `None` on any other node, or for an id that is no peer.
    pub fn peer_match(&self, id: NodeId) -> Option<LogIndex> {
        let state = self.role.leader()?;
        let progress = state.progress.iter().find(|p| p.id == id)?;
        Some(progress.matched)
    }

    /// Whether this node leads and waits on no peer: its log confirmed in its term and
    /// committed, every peer holding all of it in this term, no transfer under way. Its
    /// peers' answers then only extend the lease and feed CheckQuorum, and both take
    /// the send time of what was answered, not the time the answer is read: a host may
    /// read peer frames only when it wakes for another reason (its timers, a probe) and
    /// every decision sees the same lease as if it had read each at once. What a peer
    /// frame could still change (a higher term, a peer that fell behind) waits at most
    /// until the next heartbeat.
    pub fn is_quiescent(&self) -> bool {
        let Some(state) = self.role.leader() else {
            return false;
        };
        let last = self.log.last_index();
        state.log_confirmed
            && state.transfer.is_none()
            && self.commit == last
            && state
                .progress
                .iter()
                .all(|progress| progress.leaving.is_none() && progress.confirmed == Some(last))
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
                            || self.takes_snapshot_from_stranger(&message))
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

    /// Whether a Snapshot from a sender this node does not know is for it: a joining node
    /// knows nobody yet, and a voter that was down while members were added may not know
    /// the leader. Why that is safe: [`membership`], "A member that missed changes".
    fn takes_snapshot_from_stranger(&self, message: &MessageOwned) -> bool {
        matches!(message.body, Body::Snapshot { .. })
            && (self.is_joining() || message.term >= self.term)
    }

    /// Fires whatever timers are due at `now`; harmless when none is.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
        if self.failed {
            return;
        }
        if self.role.is_leader() {
            self.tick_leader(now);
        } else {
            // A follower's log term, due at once (`poll_timeout`).
            self.take_pending_log_term();
            if now >= self.election_deadline {
                self.tick_election(now);
            }
        }
        self.finish(now);
    }

    /// Proposes a membership change. Only the goose's leader role accepts, one change at
    /// a time, and only once a majority confirmed its log in its term (the role the
    /// committed no-op plays in the fix Ongaro gave for the single-server change bug,
    /// raft-dev 2015: no configuration from an earlier term can commit after that).
    pub fn propose(&mut self, now: Instant, payload: Payload) -> Result<LogIndex, ProposeError> {
        self.advance_clock(now);
        self.check_proposal(payload)?;
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
        self.start_transfer(now, target, None)?;
        self.finish(now);
        if self.failed {
            return Err(TransferError::NotLeader);
        }
        Ok(())
    }

    /// As [`Node::transfer`], but TimeoutNow waits for [`Node::release_transfer`]: the
    /// program stops first whatever only the goose may run. If it has not released the
    /// transfer by `hold_until`, this node steps down without sending TimeoutNow. Why
    /// nobody else can be goose meanwhile: [`transfer`].
    pub fn transfer_held(
        &mut self,
        now: Instant,
        target: Option<NodeId>,
        hold_until: Instant,
    ) -> Result<(), TransferError> {
        self.advance_clock(now);
        self.start_transfer(now, target, Some(hold_until))?;
        self.finish(now);
        if self.failed {
            return Err(TransferError::NotLeader);
        }
        Ok(())
    }

    /// Lets a held transfer go on: TimeoutNow leaves once the target has caught up, within
    /// `election_timeout_min` (else [`Event::TransferFailed`]). Returns whether a held
    /// transfer was released.
    pub fn release_transfer(&mut self, now: Instant) -> bool {
        self.advance_clock(now);
        if self.failed {
            return false;
        }
        let released = self.release_held_transfer(now);
        self.finish(now);
        released
    }

    /// Whether a transfer started with [`Node::transfer_held`] waits for
    /// [`Node::release_transfer`].
    pub fn is_transfer_held(&self) -> bool {
        self.holds_transfer()
    }

    /// Stops leading, if it leads: the program could not keep running what only the goose
    /// may run (its lease lapsed), and the flock is better served by an ordinary election
    /// than by a leader whose lease comes and goes. Voters still honour this leader's
    /// loyalty window, so the election comes no earlier than after a crash.
    pub fn step_down(&mut self, now: Instant) {
        self.advance_clock(now);
        if self.failed || !self.role.is_leader() {
            return;
        }
        self.become_follower(now, self.term, None);
        self.finish(now);
    }

    /// Sets whether this node's health check passes (true from the start). An unhealthy
    /// voter does not campaign, nor take over on TimeoutNow, but still votes; it says so in
    /// its acknowledgements, and a leader never chooses it as a transfer target. An
    /// unhealthy leader goes on leading: handing off is the program's decision.
    pub fn set_healthy(&mut self, healthy: bool) {
        self.healthy = healthy;
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
        match self.role.leader() {
            Some(state) => {
                // CheckQuorum runs with the first heartbeat round at or after its deadline
                // (`tick_leader`), at most a heartbeat late: a timer of its own would wake
                // an idle leader several more times a second for nothing.
                let mut next = state.heartbeat_deadline;
                if let Some(transfer) = state.transfer {
                    next = next.min(transfer.deadline);
                }
                // Wake at the lease's end too, so its lapse is reported as an event.
                Some(match self.lease_end(self.last_now) {
                    Some(end) => next.min(end),
                    None => next,
                })
            }
            // A follower's unsaved log term is due at once: its acknowledgement has left.
            None if self.log_term_pending.is_some() => Some(self.last_now),
            None => Some(self.election_deadline),
        }
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
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

    /// Ends every input: persist before anything becomes visible, then report changes. A
    /// save that fails stops the node for good (Fail-stop, in the module docs).
    fn finish(&mut self, now: Instant) {
        if self.dirty {
            // A log term not saved yet rides along with a save made anyway.
            self.take_pending_log_term();
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
        self.log_term_pending = None;
        self.push_event(Event::Failed);
    }

    fn observe(&mut self, now: Instant) {
        let mut observed = Observed {
            raft: self.raft_role(),
            goose: self.is_goose(now),
            term: self.term,
            leader: self.leader,
            cause: Cause::Started,
        };
        if self
            .observed
            .is_some_and(|shown| shown.same_state(&observed))
        {
            self.cause = None;
            return;
        }
        let before = self.observed;
        observed.cause = self.take_cause(before.as_ref(), &observed);
        self.observed = Some(observed);
        self.changed = (now, observed.cause);
        self.push_event(Event::Changed(observed));
    }

    fn push_event(&mut self, event: Event) {
        if self.events.is_full() {
            self.events.pop_front();
            bump(&mut self.stats.events_dropped);
        }
        // Room was just made if there was none (EVENTS_MAX > 0).
        let pushed = self.events.push_back(event);
        assert!(pushed.is_ok(), "no room for an event");
    }
}

const _: () = assert!(EVENTS_MAX > 0);

/// Pushes into a vector that holds at most one value per member (a peer's progress, a
/// vote, an acknowledgement): the membership never holds more than `M`, so it always fits,
/// and a failure is a core bug.
fn push_bounded<T, const M: usize>(values: &mut Vec<T, M>, value: T) {
    let pushed = values.push(value);
    assert!(pushed.is_ok(), "one value per member fits M");
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
