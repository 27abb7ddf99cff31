//! The postcard body of a peer frame: what one node says to another.
//!
//! [`Body`] is generic over how entries and members are held, so one definition serves
//! both directions: the encoder borrows slices of the log ([`MessageRef`]), the decoder fills
//! fixed-capacity vectors ([`MessageOwned`]), and the outbox holds only the small variants
//! ([`MessageShort`]). serde encodes a slice and a `heapless::Vec` identically.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::limits::{ENTRIES_PER_MESSAGE_MAX, MEMBERS_PER_SNAPSHOT_CHUNK};
use crate::time::{Duration, Instant};
use crate::types::{Entry, EntryId, LogIndex, LogView, Member, Term};

/// One message between peers: the sender's term and what it says.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message<E, M> {
    /// The sender's current term (for a PreVote, the term it would campaign in).
    pub term: Term,
    /// What it says.
    pub body: Body<E, M>,
}

/// A message as the encoder builds it, borrowing from the log.
pub type MessageRef<'a> = Message<&'a [Entry], &'a [Member]>;
/// A message as the decoder returns it.
pub type MessageOwned =
    Message<Vec<Entry, ENTRIES_PER_MESSAGE_MAX>, Vec<Member, MEMBERS_PER_SNAPSHOT_CHUNK>>;
/// A message without entries or members: what the outbox stores.
pub type MessageShort = Message<(), ()>;

/// The message kinds, after the Raft paper and dissertation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body<E, M> {
    /// "Would you vote for me in `term`?" (dissertation §9.6); changes no state anywhere.
    PreVote {
        /// Where the would-be candidate's log stands.
        log: LogView,
    },
    /// The answer to a PreVote.
    PreVoteResponse {
        /// Whether the vote would be granted.
        granted: bool,
    },
    /// RequestVote (§5.2).
    Vote {
        /// Where the candidate's log stands.
        log: LogView,
        /// Set when the leader asked for this election (TimeoutNow, §3.10): voters then
        /// ignore leader stickiness, because that leader has already given up its lease.
        transfer: bool,
    },
    /// The answer to a Vote.
    VoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// AppendEntries (§5.3); with no entries, a heartbeat.
    Append {
        /// The entry just before `entries`.
        prev: EntryId,
        /// The leader's commit index.
        commit: LogIndex,
        /// The leader's last index when it sent this: a follower whose log then ends here
        /// holds the leader's whole log and takes the leader's term as its log term.
        last: LogIndex,
        /// The leader's election timeout minimum: the window in which a follower that
        /// heard it refuses every vote, on which the leader's lease relies. Carried in
        /// every leader frame so that nodes with shorter timing stay loyal long enough.
        stick: Duration,
        /// When the leader created this message, on the leader's clock; echoed back so
        /// the leader can start its lease at the send time of an acknowledged round.
        sent_at: Instant,
        /// The entries, in order, following `prev`.
        entries: E,
    },
    /// The answer to an Append.
    AppendResponse {
        /// The `sent_at` of the Append answered.
        sent_at: Instant,
        /// Whether the entries were accepted.
        result: AppendResult,
        /// Whether the sender's health check passes (`--check`; always true without one).
        /// A leader never hands leadership to a voter that said it is not healthy.
        healthy: bool,
    },
    /// InstallSnapshot (§7), one chunk of members at a time.
    Snapshot {
        /// The last entry the snapshot covers.
        last: EntryId,
        /// As in Append.
        stick: Duration,
        /// As in Append.
        sent_at: Instant,
        /// The position of the first member of this chunk in the snapshot's membership.
        offset: u16,
        /// A run of the membership.
        members: M,
        /// Whether this chunk ends the membership.
        done: bool,
    },
    /// The answer to a snapshot chunk that did not complete the snapshot (a completed one
    /// is answered with an accepting AppendResponse).
    SnapshotResponse {
        /// As in AppendResponse.
        sent_at: Instant,
        /// The snapshot being received.
        last: EntryId,
        /// The members received so far: the offset of the next chunk wanted.
        received: u16,
    },
    /// "Start an election now" (dissertation §3.10, leadership transfer).
    TimeoutNow,
}

/// The outcome of an Append.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's up to `match_index`.
    Accepted {
        /// The last index known to match.
        match_index: LogIndex,
        /// Whether the follower's log term is the message's term: its whole log is a
        /// prefix of this leader's, at least as long as the leader's log at its election.
        /// Only such acknowledgements commit (see [`crate::raft`]).
        confirmed: bool,
    },
    /// The consistency check failed at `rejected` (the Append's `prev.index`).
    Rejected {
        /// The index of the Append's `prev`.
        rejected: LogIndex,
        /// The follower's best guess at a matching entry: the last entry at or below
        /// `rejected` whose term is at most the Append's `prev.term` (etcd's
        /// `findConflictByTerm`), so the leader skips a whole term per round trip.
        hint: EntryId,
    },
}

impl MessageShort {
    /// The same message in the form the encoder takes. Short messages have no entries or
    /// members; the `Append` and `Snapshot` variants are never stored short.
    pub fn as_ref<'a>(&self) -> Option<MessageRef<'a>> {
        let body = match self.body {
            Body::PreVote { log } => Body::PreVote { log },
            Body::PreVoteResponse { granted } => Body::PreVoteResponse { granted },
            Body::Vote { log, transfer } => Body::Vote { log, transfer },
            Body::VoteResponse { granted } => Body::VoteResponse { granted },
            Body::AppendResponse {
                sent_at,
                result,
                healthy,
            } => Body::AppendResponse {
                sent_at,
                result,
                healthy,
            },
            Body::SnapshotResponse {
                sent_at,
                last,
                received,
            } => Body::SnapshotResponse {
                sent_at,
                last,
                received,
            },
            Body::TimeoutNow => Body::TimeoutNow,
            Body::Append { .. } | Body::Snapshot { .. } => return None,
        };
        Some(Message {
            term: self.term,
            body,
        })
    }
}

impl MessageOwned {
    /// The same message in the form the encoder takes, borrowing its entries and members
    /// rather than copying them: `wire::encode(source, target, &message.as_ref(), buffer)`
    /// encodes a decoded message again.
    pub fn as_ref(&self) -> MessageRef<'_> {
        let body = match &self.body {
            Body::PreVote { log } => Body::PreVote { log: *log },
            Body::PreVoteResponse { granted } => Body::PreVoteResponse { granted: *granted },
            Body::Vote { log, transfer } => Body::Vote {
                log: *log,
                transfer: *transfer,
            },
            Body::VoteResponse { granted } => Body::VoteResponse { granted: *granted },
            Body::Append {
                prev,
                commit,
                last,
                stick,
                sent_at,
                entries,
            } => Body::Append {
                prev: *prev,
                commit: *commit,
                last: *last,
                stick: *stick,
                sent_at: *sent_at,
                entries: entries.as_slice(),
            },
            Body::AppendResponse {
                sent_at,
                result,
                healthy,
            } => Body::AppendResponse {
                sent_at: *sent_at,
                result: *result,
                healthy: *healthy,
            },
            Body::Snapshot {
                last,
                stick,
                sent_at,
                offset,
                members,
                done,
            } => Body::Snapshot {
                last: *last,
                stick: *stick,
                sent_at: *sent_at,
                offset: *offset,
                members: members.as_slice(),
                done: *done,
            },
            Body::SnapshotResponse {
                sent_at,
                last,
                received,
            } => Body::SnapshotResponse {
                sent_at: *sent_at,
                last: *last,
                received: *received,
            },
            Body::TimeoutNow => Body::TimeoutNow,
        };
        Message {
            term: self.term,
            body,
        }
    }
}

impl<E, M> Body<E, M> {
    /// Whether this asks for a vote (PreVote or Vote).
    pub const fn is_vote_request(&self) -> bool {
        matches!(self, Self::PreVote { .. } | Self::Vote { .. })
    }

    /// Whether only a leader sends this (Append, Snapshot, TimeoutNow).
    pub const fn is_from_leader(&self) -> bool {
        matches!(
            self,
            Self::Append { .. } | Self::Snapshot { .. } | Self::TimeoutNow
        )
    }
}
