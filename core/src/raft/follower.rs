//! Replication, follower side: Append and Snapshot, the whole-log rule, and the log term.
//!
//! # Elections append nothing: the log term
//!
//! Raft's new leader appends a no-op and becomes useful once it commits (§8). Every leader
//! that fails before then leaves a no-op behind, and enough of them in a row fill a bounded
//! log with entries no leader can commit: the flock stalls for good. Here, as in Viewstamped
//! Replication's log view, a node keeps a durable **log term**: the latest term whose leader
//! it knows it held the whole log of. Elections rank logs by `(log term, last index)`
//! ([`crate::LogView`]), and a leader commits by confirmation instead of by a no-op:
//!
//! - A leader holds its own whole log: it may take its term as its log term once elected.
//! - Every Append carries the leader's last index at sending. A follower that, after
//!   applying it, holds the leader's log up to exactly that index drops whatever follows
//!   that is of an earlier term (the leader's log has nothing there, or entries of its own
//!   term) and may take the leader's term as its log term. A follower that received only
//!   part (entries come in chunks of 8) may not: a short log must never outrank a long one
//!   that holds a committed entry.
//! - A node counts as *confirming* a leader's log only once its log term, the leader's
//!   term, is saved: a follower's acknowledgement says so (*confirmed*) only then, and a
//!   leader counts itself only then. A leader commits the highest index that a majority
//!   confirmed, whatever the term of the entry there, and once that reaches its last index
//!   at election its log is *confirmed*: it may propose changes.
//! - The log term never decreases; installing a snapshot leaves it as it is.
//!
//! Claim: an index `i` committed by the leader of term `T` is in the log of every later
//! leader, and never removed from any log (Leader Completeness and State Machine Safety,
//! §5.4). Let `Q` be the majority that confirmed `i` in `T`. We show, by induction over
//! terms `U > T`, three things:
//!
//! (a) every node of `Q` keeps forever a log term `≥ T`, a log holding `i`, and, while its
//!     log term is `T`, a last index `≥ i`;
//! (b) every node whose log term is `> T` holds `i`, and so does every node whose log term
//!     is `T` and whose last index is `≥ i`;
//! (c) the leader of `U` holds `i` when elected.
//!
//! For (c): the leader of `U` won a majority, which shares a voter `F` with `Q`. `F`
//! confirmed in `T` before voting in `U` (after voting it is in term `U > T` and answers
//! `T` no more), so when it voted, (a) held for it, and the candidate's log ranked at least
//! as high as `F`'s. A higher log term is `> T`: (b) gives `i`. An equal log term is `T`
//! with a last index `≥ i` (from (a)), or `> T`: (b) gives `i` again.
//!
//! For (a) and (b), what can change a log: (1) a leader of a later term truncates only
//! after a conflict, and by (c) it holds `i` too, so by Log Matching the conflict lies after
//! `i` and the last index stays `≥ i`; (2) the leader of `T` itself never conflicts with a
//! prefix of its own log; leaders of earlier terms are refused by term; (3) dropping
//! entries after a whole log drops only what follows the leader's last index, which holds
//! `i` ((c), or the leader of `T` itself); (4) a snapshot replaces a log only when the log
//! lacks the snapshot's last entry, which is committed: a log holding `i` beyond that point
//! agrees with the leader up to `i` and so holds it, and a snapshot reaching `i` holds it;
//! (5) a log term rises only by taking a whole log of the leader of that term, which holds
//! `i` by (c), and never falls. A node that restarts reads all of it back.
//!
//! # When the log term is saved
//!
//! Nothing above needs the log term to be saved at the moment the whole log is taken: a
//! node that has not saved it yet ranks its log lower than it may (its old log term), which
//! only narrows whom it votes for, and it confirms nothing until it has saved it, so it is
//! in no majority `Q` before then. So a log term that would be the only reason to save is
//! not saved at once: a follower takes it at its next `handle_timeout`, due at once, after
//! its unconfirmed acknowledgement has left, and confirms with a second acknowledgement once
//! it is saved; a leader takes it with its next heartbeat round. Where the input saves
//! anyway (entries appended, a new term), the log term rides along. A follower takes it
//! only if it still follows the same leader in the same term and still holds the whole
//! log's last entry (entries of that term may have followed, from that leader: they are
//! its log too). A leader that cannot make a majority without itself (a flock of one or
//! two voters) takes it at once.
//!
//! Why bother: a handoff or a failover then saves twice on its way to a new goose (the
//! candidate its vote for itself, the voters their votes, in parallel) instead of four
//! times, because a new leader whose commit index already covers its whole log at election
//! needs no confirmation to be goose ([`lease`](super::lease)): every entry it holds is
//! committed, and the lease comes from the first acknowledgements, which no save delays.
//!
//! Ongaro's fix for single-server membership changes (raft-dev, 2015: a leader proposes no
//! change before it has committed an entry of its term) holds in this form too: a leader
//! proposes only once a majority confirmed its log in its term; from then on any log
//! lacking its entries ranks below that majority, so no configuration from an earlier term
//! that it lacks can ever commit.
//!
//! Upgrading: a state saved by the first format (wire version 1, no log term) is read with
//! the term of its last entry as log term. Under version 1 such a log held the no-op its
//! last entry's leader appended at election, so it held that leader's whole log as of its
//! election, which is what a log term promises.

use heapless::Vec;

use super::{Node, Role};
use crate::stats::bump;
use crate::storage::Storage;
use crate::time::Instant;
use crate::types::{Entry, EntryId, LogIndex, Member, NodeId, Term};
use crate::wire::{AppendResult, Body};

/// A log term this node holds a leader's whole log for but has not saved (see [When the
/// log term is saved](self#when-the-log-term-is-saved)).
#[derive(Clone, Copy, Debug)]
pub(super) struct PendingLogTerm {
    /// The leader's term: the log term to take.
    term: Term,
    /// The leader to confirm to once saved; `None` for a leader's own.
    leader: Option<NodeId>,
    /// The last entry of the whole log, as this node held it.
    last: EntryId,
    /// The `sent_at` of the Append that brought this node level, for the confirmation.
    sent_at: Instant,
}

impl PendingLogTerm {
    /// A new leader's own log term, held from its election on.
    pub(super) fn own(term: Term, last: EntryId, now: Instant) -> Self {
        Self {
            term,
            leader: None,
            last,
            sent_at: now,
        }
    }
}

/// A snapshot being received, chunk by chunk: its last entry and the members so far.
#[derive(Clone, Debug)]
pub(super) struct SnapshotReceive<const M: usize> {
    last: EntryId,
    members: Vec<Member, M>,
}

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// AppendEntries (§5.3), plus the log term: a follower whose log, once this message is
    /// applied, ends exactly at the leader's last index (`last`, as the leader sent it)
    /// holds the leader's whole log and takes the leader's term as its log term, confirming
    /// it only once saved ([`Self::take_whole_log`]). A follower holding only a prefix (entries come in chunks) does
    /// not: a short log must never outrank a long one that holds a committed entry.
    pub(super) fn handle_append(
        &mut self,
        from: NodeId,
        prev: EntryId,
        commit: LogIndex,
        last: LogIndex,
        sent_at: Instant,
        entries: &[Entry],
    ) {
        // Everything up to our commit index matches any leader's log (Leader
        // Completeness): skip what we already have.
        let end = LogIndex(prev.index.0 + entries.len() as u64);
        let (prev, entries) = if end <= self.commit {
            let prev = EntryId {
                index: self.commit,
                term: self.log.term_at(self.commit).unwrap_or_default(),
            };
            (prev, &entries[..0])
        } else if prev.index < self.commit {
            let skip = usize::try_from(self.commit.0 - prev.index.0).unwrap_or(usize::MAX);
            let prev = EntryId {
                index: self.commit,
                term: entries[skip - 1].term,
            };
            (prev, &entries[skip..])
        } else {
            (prev, entries)
        };
        if self.log.term_at(prev.index) != Some(prev.term) {
            let hint = self.log.find_conflict_by_term(prev.index, prev.term);
            let result = AppendResult::Rejected {
                rejected: prev.index,
                hint,
            };
            self.respond_append(from, sent_at, result);
            return;
        }
        let mut matched = prev.index;
        for entry in entries {
            let index = matched.next();
            match self.log.term_at(index) {
                Some(term) if term == entry.term => {}
                existing => {
                    if existing.is_some() {
                        if index <= self.commit {
                            // A leader that would overwrite a committed entry breaks Raft.
                            bump(&mut self.stats.invalid);
                            return;
                        }
                        self.log.truncate_after(matched);
                        self.dirty = true;
                    }
                    if self.log.append(*entry, self.commit).is_err() {
                        bump(&mut self.stats.capacity);
                        break;
                    }
                    self.dirty = true;
                }
            }
            matched = index;
        }
        if matched == last {
            self.take_whole_log(from, matched, sent_at);
        }
        self.advance_commit(commit.min(matched));
        let result = AppendResult::Accepted {
            match_index: matched,
            confirmed: self.log_term == self.term,
        };
        self.respond_append(from, sent_at, result);
    }

    /// This node's log matches the current leader's (`from`) up to `last`, the leader's
    /// whole log when it sent the message at `sent_at`. What follows here cannot be in the
    /// leader's log: entries of an earlier term (the leader appends only entries of its own
    /// term after `last`) go, entries of this term (a reordered older message) stay. Then
    /// the log is a prefix of the leader's, at least as long as the leader's log at its
    /// election: the log term may become this term, at once if this input saves anyway,
    /// else once the acknowledgement has left (module docs).
    pub(super) fn take_whole_log(&mut self, from: NodeId, last: LogIndex, sent_at: Instant) {
        // `last` is at or after the commit index (handle_append skips below it): nothing
        // committed goes.
        if self
            .log
            .term_at(last.next())
            .is_some_and(|term| term != self.term)
        {
            self.log.truncate_after(last);
            self.dirty = true;
        }
        self.whole_log = true;
        if self.log_term == self.term {
            self.log_term_pending = None;
            return;
        }
        self.log_term_pending = Some(PendingLogTerm {
            term: self.term,
            leader: Some(from),
            last: EntryId {
                index: last,
                term: self.log.term_at(last).unwrap_or_default(),
            },
            sent_at,
        });
        if self.dirty {
            self.take_pending_log_term();
        }
    }

    /// Takes the log term held but not saved yet, if it still stands (the same term and
    /// role, and for a follower the same leader and the whole log's last entry still held),
    /// and marks the state for saving; a follower confirms it to its leader, in an
    /// acknowledgement that leaves only after the save.
    pub(super) fn take_pending_log_term(&mut self) {
        let Some(pending) = self.log_term_pending.take() else {
            return;
        };
        let holds_last = self.log.term_at(pending.last.index) == Some(pending.last.term)
            || self.log.snapshot().index >= pending.last.index;
        let stands = pending.term == self.term
            && match pending.leader {
                None => self.role.is_leader(),
                Some(leader) => {
                    matches!(self.role, Role::Follower) && self.leader == Some(leader) && holds_last
                }
            };
        if !stands || self.log_term >= pending.term {
            return;
        }
        self.log_term = pending.term;
        self.dirty = true;
        if let Some(leader) = pending.leader {
            let result = AppendResult::Accepted {
                match_index: pending.last.index,
                confirmed: true,
            };
            self.respond_append(leader, pending.sent_at, result);
        }
    }

    pub(super) fn handle_snapshot(
        &mut self,
        from: NodeId,
        last: EntryId,
        sent_at: Instant,
        offset: u16,
        members: &[Member],
        done: bool,
    ) {
        // A joining node has no membership yet: even a snapshot at index 0 (the flock's
        // bootstrap membership) is news to it.
        let knows_nothing = self.log.members().is_empty() && last.index >= self.commit;
        if last.index <= self.commit && !knows_nothing {
            let result = AppendResult::Accepted {
                match_index: self.commit,
                confirmed: self.log_term == self.term,
            };
            self.respond_append(from, sent_at, result);
            return;
        }
        let receive = self.snapshot_receive.get_or_insert(SnapshotReceive {
            last,
            members: Vec::new(),
        });
        if offset == 0 && (receive.last != last || !receive.members.is_empty()) {
            *receive = SnapshotReceive {
                last,
                members: Vec::new(),
            };
        }
        let in_order = receive.last == last && usize::from(offset) == receive.members.len();
        if in_order
            && members
                .iter()
                .any(|m| receive.members.iter().any(|r| r.id == m.id))
        {
            // Each chunk is checked alone at the gateway; an id repeated across chunks is
            // forged or corrupt, and a membership with it could not be saved and read back.
            bump(&mut self.stats.invalid);
            self.snapshot_receive = None;
            return;
        }
        if in_order && receive.members.extend_from_slice(members).is_err() {
            bump(&mut self.stats.capacity);
            self.snapshot_receive = None;
            return;
        }
        if in_order && !done {
            // More chunks are streaming in.
            return;
        }
        if !in_order {
            // A chunk went missing: tell the leader where to resume.
            let received = u16::try_from(receive.members.len()).unwrap_or(u16::MAX);
            let last = receive.last;
            self.respond(
                from,
                Body::SnapshotResponse {
                    sent_at,
                    last,
                    received,
                },
            );
            return;
        }
        let Some(receive) = self.snapshot_receive.take() else {
            return;
        };
        if !receive.members.iter().any(|m| m.voter) {
            // A flock always has a voter: a snapshot without one is forged or corrupt.
            bump(&mut self.stats.invalid);
            return;
        }
        self.log.install(last, receive.members);
        self.commit = self.commit.max(last.index);
        self.dirty = true;
        let result = AppendResult::Accepted {
            match_index: last.index,
            confirmed: self.log_term == self.term,
        };
        self.respond_append(from, sent_at, result);
    }

    /// Answers an Append (or a completed snapshot) with `result`, and whether this node is
    /// healthy: a leader never hands leadership to a voter that says it is not.
    fn respond_append(&mut self, to: NodeId, sent_at: Instant, result: AppendResult) {
        let healthy = self.healthy;
        self.respond(
            to,
            Body::AppendResponse {
                sent_at,
                result,
                healthy,
            },
        );
    }

    pub(super) fn advance_commit(&mut self, index: LogIndex) {
        if index > self.commit {
            debug_assert!(index <= self.log.last_index());
            // Not a reason to save on its own: the commit index rides along with the next
            // save (see PersistentState::commit), keeping fsyncs off the path to goose.
            self.commit = index;
        }
    }
}
