//! The fixed-capacity log, its snapshot, and the membership they define.
//!
//! `entries[i]` has index `snapshot.index + 1 + i`. The membership in force is the
//! snapshot's membership with every membership entry of the log applied in order,
//! committed or not (dissertation §4.1: a configuration takes effect when appended). When
//! the log is full, the committed prefix is folded into the snapshot.

use heapless::Vec;

use crate::types::{Entry, EntryId, LogIndex, Member, NodeId, Payload, Term};

/// Why an entry could not be appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppendError {
    /// The log is full of uncommitted entries.
    LogFull,
    /// The entry would add a member beyond capacity.
    MembersFull,
}

#[derive(Clone, Debug)]
pub(crate) struct Log<const M: usize, const L: usize> {
    snapshot: EntryId,
    snapshot_members: Vec<Member, M>,
    entries: Vec<Entry, L>,
    members: Vec<Member, M>,
}

impl<const M: usize, const L: usize> Log<M, L> {
    /// A log of `entries` after a snapshot, `members` being its membership
    /// ([`Log::replay`] of the two).
    #[cfg(test)]
    pub(crate) fn from_parts(
        snapshot: EntryId,
        snapshot_members: Vec<Member, M>,
        entries: Vec<Entry, L>,
        members: Vec<Member, M>,
    ) -> Self {
        Self {
            snapshot,
            snapshot_members,
            entries,
            members,
        }
    }

    /// An empty log at the start of time, to [`Log::load`] into.
    pub(crate) const fn empty() -> Self {
        Self {
            snapshot: EntryId {
                term: Term(0),
                index: LogIndex(0),
            },
            snapshot_members: Vec::new(),
            entries: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Replaces the whole log, in place, with `entries` after a snapshot, `members` being
    /// its membership ([`Log::replay`] of the two, which fit: the vectors have the same
    /// capacities).
    pub(crate) fn load(
        &mut self,
        snapshot: EntryId,
        snapshot_members: &Vec<Member, M>,
        entries: &Vec<Entry, L>,
        members: &Vec<Member, M>,
    ) {
        self.snapshot = snapshot;
        copy_into(&mut self.snapshot_members, snapshot_members);
        copy_into(&mut self.entries, entries);
        copy_into(&mut self.members, members);
    }

    /// The membership after `entries`' changes on top of `snapshot_members`. Fails if a
    /// change does not fit.
    pub(crate) fn replay(
        snapshot_members: &Vec<Member, M>,
        entries: &[Entry],
    ) -> Result<Vec<Member, M>, AppendError> {
        let mut members = snapshot_members.clone();
        for entry in entries {
            apply(&mut members, entry.payload)?;
        }
        Ok(members)
    }

    pub(crate) fn snapshot(&self) -> EntryId {
        self.snapshot
    }

    pub(crate) fn snapshot_members(&self) -> &[Member] {
        &self.snapshot_members
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(crate) fn members(&self) -> &[Member] {
        &self.members
    }

    pub(crate) fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// A member of the membership in force, or else of the committed membership: a member
    /// being removed by an uncommitted entry is still heard and answered until the removal
    /// commits, or it could never learn of it (nor could a removed leader collect the
    /// acknowledgements that commit its own removal).
    pub(crate) fn known_member(&self, id: NodeId, commit: LogIndex) -> Option<Member> {
        self.member(id)
            .copied()
            .or_else(|| self.committed_member(id, commit))
    }

    /// A member of the membership as of `commit` (the snapshot's, with the committed
    /// entries applied).
    pub(crate) fn committed_member(&self, id: NodeId, commit: LogIndex) -> Option<Member> {
        let mut committed = self.snapshot_members.clone();
        let count =
            usize::try_from(commit.0.saturating_sub(self.snapshot.index.0)).unwrap_or(usize::MAX);
        for entry in self.entries.iter().take(count) {
            reapply(&mut committed, entry.payload);
        }
        committed.into_iter().find(|m| m.id == id)
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.member(id).is_some_and(|m| m.voter)
    }

    pub(crate) fn voter_count(&self) -> usize {
        self.members.iter().filter(|m| m.voter).count()
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot.index.0 + self.entries.len() as u64)
    }

    pub(crate) fn last_id(&self) -> EntryId {
        match self.entries.last() {
            Some(entry) => EntryId {
                term: entry.term,
                index: self.last_index(),
            },
            None => self.snapshot,
        }
    }

    /// The term of the entry at `index`: known for the snapshot's last entry and every
    /// entry in the log, `None` before the snapshot or past the end.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.position(index).map(|i| self.entries[i].term)
    }

    fn position(&self, index: LogIndex) -> Option<usize> {
        let offset = index.0.checked_sub(self.snapshot.index.0 + 1)?;
        let offset = usize::try_from(offset).ok()?;
        (offset < self.entries.len()).then_some(offset)
    }

    /// Up to `count_max` entries starting at `index` (which must be after the snapshot).
    pub(crate) fn entries_from(&self, index: LogIndex, count_max: usize) -> &[Entry] {
        match self.position(index) {
            Some(start) => &self.entries[start..self.entries.len().min(start + count_max)],
            None => &[],
        }
    }

    /// The last index at or below `index` whose term is at most `term` (etcd's
    /// `findConflictByTerm`), for fast back-off. Stops at the snapshot.
    pub(crate) fn find_conflict_by_term(&self, index: LogIndex, term: Term) -> EntryId {
        let mut index = index.min(self.last_index());
        loop {
            match self.term_at(index) {
                Some(t) if t <= term => return EntryId { term: t, index },
                Some(_) if index > self.snapshot.index => index = index.prev(),
                _ => return self.snapshot,
            }
        }
    }

    /// Appends one entry after the last, applying it to the membership. When the log is
    /// full, first folds the prefix up to `commit` into the snapshot.
    pub(crate) fn append(&mut self, entry: Entry, commit: LogIndex) -> Result<(), AppendError> {
        debug_assert!(entry.term >= self.last_id().term);
        if self.entries.is_full() {
            self.compact(commit);
        }
        let mut members = self.members.clone();
        apply(&mut members, entry.payload)?;
        self.entries.push(entry).map_err(|_| AppendError::LogFull)?;
        self.members = members;
        Ok(())
    }

    /// Removes every entry after `index` (which must not be before the snapshot) and
    /// recomputes the membership. The caller guarantees nothing removed was committed.
    pub(crate) fn truncate_after(&mut self, index: LogIndex) {
        debug_assert!(index >= self.snapshot.index);
        let keep = index.0.saturating_sub(self.snapshot.index.0);
        let keep = usize::try_from(keep)
            .unwrap_or(usize::MAX)
            .min(self.entries.len());
        self.entries.truncate(keep);
        // Removing entries only removes changes, so the membership shrinks back to one
        // that fitted before: recomputation cannot fail.
        let recomputed = self.recompute_members();
        assert!(recomputed.is_ok(), "a replayed membership fits M");
    }

    /// Folds every entry up to `index` (at most the commit index) into the snapshot.
    pub(crate) fn compact(&mut self, index: LogIndex) {
        let index = index.min(self.last_index());
        let Some(count) = self.position(index).map(|i| i + 1) else {
            return;
        };
        let Some(term) = self.term_at(index) else {
            return;
        };
        for entry in &self.entries[..count] {
            // Folding applies changes the log already applied to `members`, which fitted.
            reapply(&mut self.snapshot_members, entry.payload);
        }
        self.entries.rotate_left(count);
        self.entries.truncate(self.entries.len() - count);
        self.snapshot = EntryId { term, index };
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub(crate) fn install(&mut self, snapshot: EntryId, members: Vec<Member, M>) {
        if self.term_at(snapshot.index) == Some(snapshot.term)
            && snapshot.index > self.snapshot.index
        {
            // Our log already holds the snapshot's last entry: keep what follows (§7).
            self.compact(snapshot.index);
            return;
        }
        self.snapshot = snapshot;
        self.snapshot_members = members.clone();
        self.members = members;
        self.entries.clear();
    }

    fn recompute_members(&mut self) -> Result<(), AppendError> {
        self.members = Self::replay(&self.snapshot_members, &self.entries)?;
        Ok(())
    }
}

/// Replaces `to`'s items with `from`'s, in place (`clone_from` would build a copy first).
fn copy_into<T: Clone, const N: usize>(to: &mut Vec<T, N>, from: &Vec<T, N>) {
    to.clear();
    let copied = to.extend_from_slice(from);
    assert!(copied.is_ok(), "a vector fits one of the same capacity");
}

/// Applies again a change that fitted when it was appended. Replaying the log from the
/// snapshot retraces memberships that each fitted then (every append, restart, truncation,
/// compaction and snapshot keeps that so), so it fits again: a failure is a core bug.
fn reapply<const M: usize>(members: &mut Vec<Member, M>, payload: Payload) {
    let applied = apply(members, payload);
    assert!(applied.is_ok(), "a replayed membership fits M");
}

/// Applies one entry's membership change.
fn apply<const M: usize>(
    members: &mut Vec<Member, M>,
    payload: Payload,
) -> Result<(), AppendError> {
    match payload {
        Payload::Noop => {}
        Payload::AddLearner { id, addr } => match members.iter_mut().find(|m| m.id == id) {
            Some(member) => member.addr = addr,
            None => {
                members
                    .push(Member {
                        id,
                        addr,
                        voter: false,
                    })
                    .map_err(|_| AppendError::MembersFull)?;
            }
        },
        Payload::Promote { id } => {
            if let Some(member) = members.iter_mut().find(|m| m.id == id) {
                member.voter = true;
            }
        }
        Payload::Remove { id } => members.retain(|m| m.id != id),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::net::{Ipv4Addr, SocketAddr};

    fn id(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    fn noop(term: u64) -> Entry {
        Entry {
            term: Term(term),
            payload: Payload::Noop,
        }
    }

    fn log() -> Log<4, 4> {
        let mut members = Vec::new();
        members
            .push(Member {
                id: id(1),
                addr: addr(1),
                voter: true,
            })
            .unwrap();
        let current = Log::<4, 4>::replay(&members, &[]).unwrap();
        Log::from_parts(EntryId::default(), members, Vec::new(), current)
    }

    #[test]
    fn full_log_compacts_the_committed_prefix_and_keeps_membership() {
        let mut log = log();
        log.append(
            Entry {
                term: Term(1),
                payload: Payload::AddLearner {
                    id: id(2),
                    addr: addr(2),
                },
            },
            LogIndex(0),
        )
        .unwrap();
        for _ in 0..3 {
            log.append(noop(1), LogIndex(0)).unwrap();
        }
        assert_eq!(log.append(noop(1), LogIndex(0)), Err(AppendError::LogFull));
        log.append(noop(2), LogIndex(2)).unwrap();
        assert_eq!(
            log.snapshot(),
            EntryId {
                term: Term(1),
                index: LogIndex(2)
            }
        );
        assert_eq!(log.last_index(), LogIndex(5));
        assert_eq!(log.snapshot_members().len(), 2);
        assert_eq!(log.members().len(), 2);
        assert_eq!(log.term_at(LogIndex(1)), None);
        assert_eq!(log.term_at(LogIndex(5)), Some(Term(2)));
    }

    #[test]
    fn truncation_undoes_uncommitted_membership_changes() {
        let mut log = log();
        log.append(noop(1), LogIndex(0)).unwrap();
        log.append(
            Entry {
                term: Term(1),
                payload: Payload::AddLearner {
                    id: id(3),
                    addr: addr(3),
                },
            },
            LogIndex(0),
        )
        .unwrap();
        assert!(log.member(id(3)).is_some());
        log.truncate_after(LogIndex(1));
        assert!(log.member(id(3)).is_none());
        assert_eq!(
            log.last_id(),
            EntryId {
                term: Term(1),
                index: LogIndex(1)
            }
        );
    }

    #[test]
    fn members_over_capacity_are_refused_and_change_nothing() {
        let mut log = log();
        for n in 2..=4 {
            log.append(
                Entry {
                    term: Term(1),
                    payload: Payload::AddLearner {
                        id: id(n),
                        addr: addr(n),
                    },
                },
                LogIndex(0),
            )
            .unwrap();
        }
        let fifth = Entry {
            term: Term(1),
            payload: Payload::AddLearner {
                id: id(5),
                addr: addr(5),
            },
        };
        assert_eq!(
            log.append(fifth, LogIndex(0)),
            Err(AppendError::MembersFull)
        );
        assert_eq!(log.last_index(), LogIndex(3));
    }

    #[test]
    fn conflict_search_skips_whole_terms() {
        let mut log = log();
        for term in [1, 1, 2, 2] {
            log.append(noop(term), LogIndex(0)).unwrap();
        }
        assert_eq!(
            log.find_conflict_by_term(LogIndex(4), Term(1)),
            EntryId {
                term: Term(1),
                index: LogIndex(2)
            }
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(9), Term(3)),
            EntryId {
                term: Term(2),
                index: LogIndex(4)
            }
        );
        assert_eq!(
            log.find_conflict_by_term(LogIndex(4), Term(0)),
            EntryId::default()
        );
    }
}
