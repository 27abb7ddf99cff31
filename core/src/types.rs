//! Domain newtypes: node ids, terms, log indexes, entries and the membership they build.
//!
//! Bare integers for everything invite swapped arguments; these types keep a term from
//! being passed where an index is expected. Their invariants are stated on each type and
//! checked once, where bytes from outside become these types ([`crate::wire`]).

use core::fmt;
use core::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A node's identity in the flock: `1..=65535` (0 is never a valid id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(u16);

impl NodeId {
    /// Id 0, which is never valid: a state's id before it is decoded over.
    pub(crate) const PLACEHOLDER: Self = Self(0);

    /// The id `value`, or `None` for 0.
    pub const fn new(value: u16) -> Option<Self> {
        if value == 0 {
            None
        } else {
            Some(Self(value))
        }
    }

    /// The id as a number, never 0.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Whether this id is valid: only ids from [`NodeId::new`] are, but a decoded one may
    /// not be (0 from the wire), so the gateway checks this.
    pub const fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // As a u32, which a board formats anyway: the same digits, and no u16 formatter.
        fmt::Display::fmt(&u32::from(self.0), f)
    }
}

/// A Raft term: a logical clock that only moves forward, and the goose's fencing token.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Term(pub u64);

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A position in the log; the first entry has index 1, index 0 is "before the log".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogIndex(pub u64);

impl LogIndex {
    /// The index after this one.
    pub const fn next(self) -> Self {
        Self(self.0.saturating_add(1))
    }

    /// The index before this one (0 stays 0).
    pub const fn prev(self) -> Self {
        Self(self.0.saturating_sub(1))
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An entry's identity: two logs holding an entry with the same id hold the same entries up
/// to it (Raft's Log Matching Property, §5.3).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EntryId {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
}

/// Where a log stands in elections: the term of the latest leader whose whole log it held
/// (its *log term*, Viewstamped Replication's log view) and its last index. Votes go only
/// to a candidate whose log ranks at least as high as the voter's: a higher log term, or the
/// same log term and a last index at least as high. The argument for why this keeps every
/// committed entry is in [`crate::raft`].
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogView {
    /// The log term: the latest term whose leader confirmed this log whole.
    pub term: Term,
    /// The index of the last entry.
    pub last: LogIndex,
}

impl LogView {
    /// Whether a log standing at `self` ranks at least as high as one at `other`.
    pub fn is_up_to_date_with(self, other: Self) -> bool {
        (self.term, self.last) >= (other.term, other.last)
    }
}

/// One member of the flock: its id, where to reach it, and whether it votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id.
    pub id: NodeId,
    /// Its UDP address.
    pub addr: SocketAddr,
    /// A voter counts in elections, commits and the lease; a learner only follows.
    pub voter: bool,
}

/// What a log entry does. Every payload is small and bounded, so an entry fits many times
/// in a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// An entry that changes nothing. Leaders of wire version 1 appended one at every
    /// election (§8); leaders now append none (elections rank logs by their log term, see
    /// [`crate::raft`]), but a log written then may still hold them.
    Noop,
    /// Adds a node as a learner, or changes the address of a member.
    AddLearner {
        /// The node added.
        id: NodeId,
        /// Where it listens.
        addr: SocketAddr,
    },
    /// Makes a learner a voter.
    Promote {
        /// The learner promoted.
        id: NodeId,
    },
    /// Removes a member, voter or learner.
    Remove {
        /// The member removed.
        id: NodeId,
    },
}

impl Payload {
    /// Whether this entry changes the membership. Membership entries take effect as soon as
    /// they are appended (dissertation §4.1), committed or not.
    pub const fn is_membership_change(&self) -> bool {
        !matches!(self, Self::Noop)
    }
}

/// A log entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created it.
    pub term: Term,
    /// What it does.
    pub payload: Payload,
}
