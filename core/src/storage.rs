//! What a node must make durable, and the trait that makes it so.
//!
//! The node calls [`Storage::save`] with its whole persistent state (term, vote, snapshot,
//! log) at the end of every input that changed it, and releases no message until `save`
//! returns `Ok` (persist before you speak, etcd's `Ready` ordering). A `save` error puts
//! the node into a terminal fail-stop state: it sends nothing, votes for no one, and is
//! never goose again. The state is small (a few KiB at most), so whole-state writes keep
//! every storage simple: write, sync, rename on a desktop; one key in flash on a board.

use core::fmt;

use heapless::Vec;
use serde::de::{DeserializeSeed, Deserializer, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::time::Duration;
use crate::types::{Entry, EntryId, LogIndex, Member, NodeId, Term};

/// Durable storage for one node.
pub trait Storage {
    /// Durably replaces the saved state with `state`. Returns only once a crash right
    /// after could not lose it.
    fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError>;
}

/// Why storage failed; the node fail-stops on any of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// The medium refused the write or the sync.
    Io,
    /// The state does not fit the medium or the caller's buffer.
    NoSpace,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Io => "storage write or sync failed",
            Self::NoSpace => "storage has no space for the state",
        })
    }
}

impl core::error::Error for StorageError {}

/// Everything a node must remember across a crash, borrowed from the node.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PersistentState<'a> {
    /// The node this state belongs to: a node refuses to start on another node's state.
    pub id: NodeId,
    /// The current term: it never goes back.
    pub term: Term,
    /// Whom this node voted for in `term`.
    pub voted_for: Option<NodeId>,
    /// The log term: the latest term whose leader confirmed this node's whole log. It
    /// ranks the log in elections and never goes back (see [`crate::raft`]).
    pub log_term: Term,
    /// The loyalty window of the leader this node last followed (that leader's
    /// `election_timeout_min`): a restarted node refuses votes for at least this long, so
    /// a lease that relied on its acknowledgement before the restart is honoured.
    pub stick: Duration,
    /// The commit index this node knew. Raft does not require it, but without it a flock
    /// restarted whole with a log full of committed entries could not compact them.
    pub commit: LogIndex,
    /// The last entry folded into the snapshot.
    pub snapshot: EntryId,
    /// The membership as of `snapshot`.
    pub snapshot_members: &'a [Member],
    /// The log after `snapshot`.
    pub entries: &'a [Entry],
}

/// A persistent state read back, with capacities `M` members and `L` entries.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct SavedState<const M: usize, const L: usize> {
    /// See [`PersistentState::id`].
    pub id: NodeId,
    /// See [`PersistentState::term`].
    pub term: Term,
    /// See [`PersistentState::voted_for`].
    pub voted_for: Option<NodeId>,
    /// See [`PersistentState::log_term`].
    pub log_term: Term,
    /// See [`PersistentState::stick`].
    pub stick: Duration,
    /// See [`PersistentState::commit`].
    pub commit: LogIndex,
    /// See [`PersistentState::snapshot`].
    pub snapshot: EntryId,
    /// See [`PersistentState::snapshot_members`].
    pub snapshot_members: Vec<Member, M>,
    /// See [`PersistentState::entries`].
    pub entries: Vec<Entry, L>,
}

/// Why saved bytes were refused. A node never starts from a state it cannot trust.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateError {
    /// Not a postcard state, trailing bytes, or more members or entries than this build
    /// holds.
    Undecodable,
    /// Decoded, but inconsistent: entries with terms out of order or above the current
    /// term, a log term above the current term, a zero or duplicate member id, or a vote
    /// for id 0.
    Inconsistent,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Undecodable => "state is not decodable (corrupt, or over this build's capacity)",
            Self::Inconsistent => "state is decodable but inconsistent",
        })
    }
}

impl core::error::Error for StateError {}

impl PersistentState<'_> {
    /// Encodes into `buffer`, returning the bytes used.
    pub fn encode<'b>(&self, buffer: &'b mut [u8]) -> Result<&'b [u8], StorageError> {
        postcard::to_slice(self, buffer)
            .map(|used| &*used)
            .map_err(|_| StorageError::NoSpace)
    }
}

impl<const M: usize, const L: usize> SavedState<M, L> {
    /// Decodes and checks bytes written by [`PersistentState::encode`]: the bytes its
    /// derived `Deserialize` accepts, decoded in place (serde seeds that fill the state's
    /// own vectors).
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        let mut state = Self::empty(NodeId::PLACEHOLDER);
        state.decode_into(bytes, false)?;
        Ok(state)
    }

    /// A state with nothing in it, of node `id`.
    pub(crate) fn empty(id: NodeId) -> Self {
        Self {
            id,
            term: Term(0),
            voted_for: None,
            log_term: Term(0),
            stick: Duration::ZERO,
            commit: LogIndex(0),
            snapshot: EntryId::default(),
            snapshot_members: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// The same state in the form [`PersistentState::encode`] takes: a state converted
    /// from the first format is written back in the current one.
    pub fn as_persistent(&self) -> PersistentState<'_> {
        PersistentState {
            id: self.id,
            term: self.term,
            voted_for: self.voted_for,
            log_term: self.log_term,
            stick: self.stick,
            commit: self.commit,
            snapshot: self.snapshot,
            snapshot_members: &self.snapshot_members,
            entries: &self.entries,
        }
    }

    /// Decodes and checks a state written by the first format, which had neither a log
    /// term nor a loyalty window (a node that ran wire version 1): its log term becomes
    /// the term of its last entry, which is what version 1 ranked logs by, and the window
    /// its own. Under version 1 a log whose last entry has term `t` is a prefix of leader
    /// `t`'s log that holds the no-op that leader appended at its election, so it held
    /// that leader's whole log at election: what a log term of `t` promises.
    pub fn decode_first_format(bytes: &[u8]) -> Result<Self, StateError> {
        let mut state = Self::empty(NodeId::PLACEHOLDER);
        state.decode_into(bytes, true)?;
        Ok(state)
    }

    /// Decodes and checks `bytes` into this state, every field replaced (on an error, in
    /// an unspecified way). In place, and out of line: a board's stack never holds a
    /// second state, nor this decoding's frames beside the node's.
    #[inline(never)]
    pub(crate) fn decode_into(
        &mut self,
        bytes: &[u8],
        first_format: bool,
    ) -> Result<(), StateError> {
        let mut decoder = postcard::Deserializer::from_bytes(bytes);
        InPlace {
            state: self,
            first_format,
        }
        .deserialize(&mut decoder)
        .map_err(|_| StateError::Undecodable)?;
        let rest = decoder.finalize().map_err(|_| StateError::Undecodable)?;
        if !rest.is_empty() {
            return Err(StateError::Undecodable);
        }
        self.check()
    }

    fn check(&self) -> Result<(), StateError> {
        let mut term = self.snapshot.term;
        for entry in &self.entries {
            if entry.term < term || entry.term > self.term {
                return Err(StateError::Inconsistent);
            }
            term = entry.term;
        }
        let last_index = self
            .snapshot
            .index
            .0
            .saturating_add(self.entries.len() as u64);
        if !self.id.is_valid()
            || self.log_term > self.term
            || self.commit < self.snapshot.index
            || self.commit.0 > last_index
            || self.snapshot.term > self.term
            || self.voted_for.is_some_and(|id| !id.is_valid())
        {
            return Err(StateError::Inconsistent);
        }
        let members = &self.snapshot_members;
        for (i, member) in members.iter().enumerate() {
            if !member.id.is_valid() || members[..i].iter().any(|m| m.id == member.id) {
                return Err(StateError::Inconsistent);
            }
        }
        Ok(())
    }
}

/// Decodes a [`SavedState`] field by field as its derived `Deserialize` does (postcard
/// gives a struct as the sequence of its fields), except that the member and entry lists
/// are pushed straight into the vectors the state is built from ([`Fill`]). The derived
/// one, through heapless' `Vec`, returns each list by value from every layer: the 1.5 KiB
/// log was copied three times on a board's stack.
///
/// The first format is the current one without `log_term` and `stick`: its log term
/// becomes the term of its last entry (see [`SavedState::decode_first_format`]), its
/// window zero.
struct InPlace<'s, const M: usize, const L: usize> {
    state: &'s mut SavedState<M, L>,
    first_format: bool,
}

impl<'de, const M: usize, const L: usize> DeserializeSeed<'de> for InPlace<'_, M, L> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, decoder: D) -> Result<Self::Value, D::Error> {
        const FIELDS: &[&str] = &[
            "id",
            "term",
            "voted_for",
            "log_term",
            "stick",
            "commit",
            "snapshot",
            "snapshot_members",
            "entries",
        ];
        const FIRST_FORMAT_FIELDS: &[&str] = &[
            "id",
            "term",
            "voted_for",
            "commit",
            "snapshot",
            "snapshot_members",
            "entries",
        ];
        match self.first_format {
            true => decoder.deserialize_struct("FirstFormat", FIRST_FORMAT_FIELDS, self),
            false => decoder.deserialize_struct("SavedState", FIELDS, self),
        }
    }
}

impl<'de, const M: usize, const L: usize> Visitor<'de> for InPlace<'_, M, L> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a saved state")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut fields: A) -> Result<Self::Value, A::Error> {
        let missing = || A::Error::invalid_length(0, &"every field of a saved state");
        let state = self.state;
        state.id = fields.next_element()?.ok_or_else(missing)?;
        state.term = fields.next_element()?.ok_or_else(missing)?;
        state.voted_for = fields.next_element()?.ok_or_else(missing)?;
        if !self.first_format {
            state.log_term = fields.next_element()?.ok_or_else(missing)?;
            state.stick = fields.next_element()?.ok_or_else(missing)?;
        }
        state.commit = fields.next_element()?.ok_or_else(missing)?;
        state.snapshot = fields.next_element()?.ok_or_else(missing)?;
        state.snapshot_members.clear();
        state.entries.clear();
        fields
            .next_element_seed(Fill(&mut state.snapshot_members))?
            .ok_or_else(missing)?;
        fields
            .next_element_seed(Fill(&mut state.entries))?
            .ok_or_else(missing)?;
        if self.first_format {
            state.log_term = state.entries.last().map_or(state.snapshot.term, |e| e.term);
            state.stick = Duration::ZERO;
        }
        Ok(())
    }
}

/// Decodes a sequence into the vector it borrows, refusing more than its capacity, as
/// heapless' `Vec` does when it decodes one by value.
struct Fill<'v, T, const N: usize>(&'v mut Vec<T, N>);

impl<'de, T: Deserialize<'de>, const N: usize> DeserializeSeed<'de> for Fill<'_, T, N> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, decoder: D) -> Result<(), D::Error> {
        decoder.deserialize_seq(self)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Fill<'_, T, N> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence within capacity")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while let Some(item) = items.next_element()? {
            if self.0.push(item).is_err() {
                return Err(A::Error::invalid_length(
                    N + 1,
                    &"no more than the capacity",
                ));
            }
        }
        Ok(())
    }
}

/// The largest encoding of a state with `members` members and `entries` entries: terms,
/// indexes and the window as worst-case varints plus the worst case per member and entry.
pub const fn state_size_max(members: usize, entries: usize) -> usize {
    96 + members * crate::limits::MEMBER_SIZE_MAX + entries * crate::limits::ENTRY_SIZE_MAX
}
