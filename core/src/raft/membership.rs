//! Membership changes in the log, leaving peers, and removal.
//!
//! Changes are single-server (dissertation §4.1): one at a time, each taking effect when
//! appended. A leader proposes only once a majority confirmed its log in its term, which
//! plays the part of the committed no-op in Ongaro's fix for single-server changes (the
//! [log term](super::follower)). A new member first gets a snapshot that names it; a removed
//! one is told until it knows.
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
//! removal committed until it has acknowledged an Append that carried that commit and its
//! whole log, however many changes follow the removal (a snapshot's acknowledgement does not
//! count: the member takes no whole log from a snapshot, and the leader sends the silent
//! one); and a new leader starts sending
//! again to every member a removal in its log took out and no later entry added back, since
//! it cannot know which of them were told. Such a member is no voter of the latest
//! membership, so it counts in no majority, lease or CheckQuorum. Not covered: a removal
//! already folded into a snapshot when the leader changes (the README's known limits).
//!
//! # A member that missed changes
//!
//! A voter that was down while members were added may come back knowing neither the leader
//! nor its address. The gateway (`Node::handle_frame`) takes frames only from members it
//! knows, which keeps nodes outside the flock from disturbing it, so such a voter drops the
//! leader's Appends and never answers. Two rules let it back in:
//!
//! - a leader sends the snapshot to every peer that has answered nothing in its leadership,
//!   first folding what is committed into it, so the snapshot names every committed member,
//!   this leader among them once its own addition committed (`tick_leader`);
//! - a node takes a Snapshot from a sender it does not know if the Snapshot's term is not
//!   below its own (`takes_snapshot_from_stranger`), and answers at the address the
//!   installed membership gives.
//!
//! Why this is safe: it is plain Raft, which takes every message whatever the sender. There
//! is one leader per term, and only a leader sends Snapshots, so the sender is the leader
//! of a term at least this node's. Its snapshot holds only committed entries, which every
//! later leader holds too (Leader Completeness, in [`follower`](super::follower)), and
//! installing keeps what follows a matching last entry (§7). The node follows the sender as
//! it follows any leader frame: it adopts the term and refuses votes for the loyalty window,
//! which only adds to the [lease](super::lease)'s guarantee. The simulator's test of it is
//! `membership_a_voter_down_while_the_goose_was_added_follows_it`; the swarm checks after
//! healing that every running member follows the goose.

use super::leader::Progress;
use super::{push_bounded, Cause, Event, Node, ProposeError};
use crate::limits::UNCOMMITTED_ENTRIES_MAX;
use crate::storage::Storage;
use crate::time::Instant;
use crate::types::{LogIndex, NodeId, Payload};

/// A member whose removal has committed, still sent heartbeats until it knows: otherwise a
/// later change would drop it first and it would never learn it was removed.
#[derive(Clone, Copy, Debug)]
pub(super) struct Leaving {
    /// The index of the entry that removed it.
    pub(super) removal: LogIndex,
    /// When this leader's commit index first covered the removal: every frame sent since
    /// carries it.
    pub(super) told_from: Instant,
}

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// Whether `payload` may be proposed now: only by a leader whose log a majority
    /// confirmed, one change at a time, with room in the log, and never a change that
    /// would leave a flock unable to elect.
    pub(super) fn check_proposal(&self, payload: Payload) -> Result<(), ProposeError> {
        let (transferring, confirmed) = match self.role.leader() {
            Some(state) if !self.failed => (state.transfer.is_some(), state.log_confirmed),
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
        Ok(())
    }

    /// Whether this node may stand for election: only as a voter of its latest membership.
    /// A node being removed, even by an entry not yet committed, never campaigns: it would
    /// only disturb the flock it is leaving. That this cannot stall a flock is argued in the
    /// module docs (removal of a leader).
    pub(super) fn can_campaign(&self) -> bool {
        self.log.is_voter(self.config.id)
    }

    /// Whether this node stands for election now: a voter of its latest membership whose
    /// health check passes ([`Node::set_healthy`]). An unhealthy voter still votes.
    pub(super) fn may_campaign(&self) -> bool {
        self.can_campaign() && self.healthy
    }

    /// Whether this node has not been a member since it started: it then accepts a leader's
    /// snapshot from a sender it does not know yet, to learn the membership.
    pub(super) fn is_joining(&self) -> bool {
        !self.was_member && self.log.member(self.config.id).is_none()
    }

    /// Whether `id` is a removed member this leader is still telling of its removal: its
    /// acknowledgements are what end the telling.
    pub(super) fn is_leaving_peer(&self, id: NodeId) -> bool {
        let Some(state) = self.role.leader() else {
            return false;
        };
        state
            .progress
            .iter()
            .any(|p| p.id == id && p.leaving.is_some())
    }

    /// Keeps one progress per member other than this node, after a membership change. A
    /// removed member keeps its progress until it knows of its removal: while the removal
    /// is uncommitted, and after, until it acknowledged a frame that carried the commit
    /// ([`Leaving`]); otherwise it would never learn it, and wait forever. A new member
    /// starts from the snapshot, which carries the membership a joining node needs before
    /// it can even reply.
    pub(super) fn sync_progress(&mut self) {
        let Some(state) = self.role.leader_mut() else {
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
            push_bounded(&mut state.progress, Progress::new(member, next));
        }
    }

    /// Marks the peers whose removal the commit index now covers as [`Leaving`], from
    /// `now`: they keep their progress until they acknowledge a frame sent since.
    pub(super) fn mark_leaving(&mut self, now: Instant, from: LogIndex) {
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        for (i, entry) in self.log.entries_from(from.next(), L).iter().enumerate() {
            let index = LogIndex(from.0 + 1 + i as u64);
            if index > self.commit {
                break;
            }
            if let Payload::Remove { id } = entry.payload {
                if self.log.member(id).is_some() {
                    // Added back after this removal: a member, not leaving.
                    continue;
                }
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
    pub(super) fn maybe_promote(&mut self, now: Instant) {
        let Some(state) = self.role.leader() else {
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

    /// A leader whose removal has committed steps down (dissertation §4.2.2).
    pub(super) fn step_down_if_removed(&mut self) {
        if self.log.member(self.config.id).is_none() || !self.log.is_voter(self.config.id) {
            let now = self.last_now;
            self.because(Cause::Removed);
            self.become_follower(now, self.term, None);
            // Its own log is the whole log: the removal it committed is the last word.
            self.whole_log = true;
        }
    }

    /// Reports [`Event::Removed`] once this node's removal is committed and is the last
    /// word on it: it was in the committed membership and no longer is, and it is not in
    /// the latest membership of a log it knows to be some leader's whole log (a node
    /// removed, restarted and added again meanwhile learns of the removal from entries it
    /// receives before those that add it back: only a whole log tells the end). An
    /// addition that never committed and was overwritten is not a removal: the node stays,
    /// to be added again.
    pub(super) fn maybe_report_removed(&mut self) {
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
        let whole = self.whole_log || self.role.is_leader();
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
}
