//! Replication, leader side: progress, heartbeats, commit by confirmation, CheckQuorum.
//!
//! The leader keeps one progress record per peer and builds each Append or Snapshot
//! from the log when it is polled, so nothing waits in a queue. It commits the highest index
//! a majority *confirmed* (acknowledged while their log term was this term), whatever the
//! term of the entry there: elections append nothing, and why that is safe is argued with
//! the [log term](super::follower). A leader that has not heard from a majority within an
//! election timeout steps down (CheckQuorum).

use core::net::SocketAddr;

use heapless::Vec;

use super::membership::Leaving;
use super::transfer::Transfer;
use super::{encode_to, push_bounded, Cause, Node, ProposeError, Transmit};
use crate::limits::{ENTRIES_PER_MESSAGE_MAX, MEMBERS_PER_SNAPSHOT_CHUNK};
use crate::quorum::{majority, quorum_value};
use crate::stats::bump;
use crate::storage::Storage;
use crate::time::Instant;
use crate::types::{Entry, EntryId, LogIndex, Member, NodeId, Payload};
use crate::wire::{AppendResult, Body, Message};

use super::log::{AppendError, Log};

#[derive(Clone, Copy, Debug)]
pub(super) struct Progress {
    pub(super) id: NodeId,
    /// Where the peer listens; kept here so a member being removed still hears the entry
    /// that removes it.
    pub(super) addr: SocketAddr,
    /// The next index to send.
    pub(super) next: LogIndex,
    /// The highest index known to match.
    pub(super) matched: LogIndex,
    /// The highest index the peer acknowledged while its log term was this leader's term:
    /// what counts towards the commit index.
    pub(super) confirmed: Option<LogIndex>,
    /// Set once the peer's removal has committed: it keeps its progress until it has
    /// acknowledged a frame that told it so.
    pub(super) leaving: Option<Leaving>,
    /// The latest `sent_at` this peer acknowledged in this leadership.
    pub(super) acked_sent_at: Option<Instant>,
    /// Heard from since the last CheckQuorum.
    pub(super) active: bool,
    /// A replication message is due, stamped with the time it was decided.
    pub(super) send: Option<Instant>,
    /// Members of the current snapshot the peer has received (while `next` is inside the
    /// snapshot).
    pub(super) snapshot_received: u16,
    /// When a snapshot chunk was last sent to the peer. A removed peer learns of its
    /// removal only from an Append that leaves it holding this leader's whole log, never
    /// from a snapshot (entries after it could add it back), so only the acknowledgement
    /// of a later send ends its telling.
    pub(super) snapshot_sent_at: Option<Instant>,
    /// What the peer's latest AppendResponse said of its health check: an unhealthy voter
    /// is never a transfer target. Healthy until it says otherwise.
    pub(super) healthy: bool,
}

#[derive(Clone, Debug)]
pub(super) struct LeaderState<const M: usize> {
    pub(super) progress: Vec<Progress, M>,
    /// When this node became leader: acknowledgements of earlier sends are stale.
    pub(super) since: Instant,
    /// The last index of this leader's log when it was elected.
    pub(super) election_last: LogIndex,
    /// A majority confirmed this leader's whole log as of its election in its term: every
    /// entry it holds from earlier terms is committed, and it may be goose.
    pub(super) log_confirmed: bool,
    /// The send time of the latest round: the leader's own acknowledgement.
    pub(super) round_sent_at: Instant,
    pub(super) lease_end: Option<Instant>,
    pub(super) heartbeat_deadline: Instant,
    pub(super) quorum_check_deadline: Instant,
    pub(super) transfer: Option<Transfer>,
}

impl Progress {
    /// A peer's progress as a leader starts it: nothing known to match, `next` to send.
    pub(super) fn new(member: &Member, next: LogIndex) -> Self {
        Self {
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
            snapshot_sent_at: None,
            healthy: true,
        }
    }
}

impl<const M: usize> LeaderState<M> {
    /// The progress of `from`, once an answer to a send at `sent_at` arrived: the peer
    /// counts as active for CheckQuorum, and the send time as acknowledged for the lease
    /// (unless it predates this leadership). `None` if `from` is no peer.
    pub(super) fn acknowledged(&mut self, from: NodeId, sent_at: Instant) -> Option<&mut Progress> {
        let progress = self.progress.iter_mut().find(|p| p.id == from)?;
        progress.active = true;
        if sent_at >= self.since {
            progress.acked_sent_at = progress.acked_sent_at.max(Some(sent_at));
        }
        Some(progress)
    }

    /// Whether a peer has answered nothing in this leadership.
    pub(super) fn has_silent_peer(&self) -> bool {
        self.progress.iter().any(|p| p.acked_sent_at.is_none())
    }

    /// Peers that have not answered anything in this leadership get the snapshot from now
    /// on, rather than Appends at this leader's last index. A peer that does not know this
    /// leader drops its Appends, so it would never answer the Rejected that makes a leader
    /// back off: a member added while its process was down starts empty (`--join`), and a
    /// voter that was down while this leader was added has an older membership. Only a
    /// snapshot tells either of them the flock: both take one from a sender they do not
    /// know (`Node::handle_frame`). A live peer that was only cut off takes the snapshot as an
    /// acknowledgement of what it holds, and the leader resumes Appends from there.
    pub(super) fn snapshot_to_the_silent(&mut self, snapshot: LogIndex) {
        for progress in &mut self.progress {
            if progress.acked_sent_at.is_none() && progress.next > snapshot {
                progress.next = snapshot;
                progress.snapshot_received = 0;
            }
        }
    }

    /// Whether a majority of voters (this node among them, if a voter) was heard from since
    /// the last check; starts the next period.
    pub(super) fn quorum_active<const L: usize>(&mut self, log: &Log<M, L>, id: NodeId) -> bool {
        let mut active = usize::from(log.is_voter(id));
        for progress in &mut self.progress {
            if progress.active && log.is_voter(progress.id) {
                active += 1;
            }
            progress.active = false;
        }
        active >= majority(log.voter_count())
    }
}

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// The leader's timers: a transfer's deadline, CheckQuorum, the heartbeat.
    pub(super) fn tick_leader(&mut self, now: Instant) {
        self.expire_transfer(now);
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        if now >= state.quorum_check_deadline {
            state.quorum_check_deadline = now + self.config.election_timeout_min;
            if !state.quorum_active(&self.log, self.config.id) {
                // CheckQuorum: a leader cut off from its majority steps down, so a
                // minority side has no leader at all (its lease ended long before).
                self.because(Cause::LostMajority);
                self.become_follower(now, self.term, None);
                return;
            }
            if state.has_silent_peer() {
                // Fold what is committed into the snapshot first, so the snapshot the
                // silent get names every committed member, this leader included: a voter
                // that was down while this leader was added knows neither it nor its
                // address, and learns both only from that list.
                self.log.compact(self.commit);
                let snapshot = self.log.snapshot().index;
                if let Some(state) = self.role.leader_mut() {
                    state.snapshot_to_the_silent(snapshot);
                }
            }
        }
        let Some(state) = self.role.leader() else {
            return;
        };
        if now >= state.heartbeat_deadline {
            // Its own log term, held since its election, saved before this round leaves.
            self.take_pending_log_term();
            self.maybe_commit(now);
            self.broadcast_append(now);
            self.maybe_promote(now);
        }
    }

    pub(super) fn append_as_leader(
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

    pub(super) fn broadcast_append(&mut self, now: Instant) {
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        state.round_sent_at = now;
        state.heartbeat_deadline = now + self.config.heartbeat_interval;
        for progress in &mut state.progress {
            progress.send = Some(now);
        }
        self.maybe_extend_lease();
    }

    pub(super) fn handle_append_response(
        &mut self,
        now: Instant,
        from: NodeId,
        sent_at: Instant,
        result: AppendResult,
        healthy: bool,
    ) {
        let last_index = self.log.last_index();
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        let Some(progress) = state.acknowledged(from, sent_at) else {
            return;
        };
        progress.healthy = healthy;
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
                // Not if this answers a snapshot: the peer took no whole log from it.
                let told = progress.leaving.is_some_and(|leaving| {
                    sent_at >= leaving.told_from
                        && progress.snapshot_sent_at.is_none_or(|at| sent_at > at)
                        && match_index == last_index
                        && match_index >= leaving.removal
                });
                if told {
                    state.progress.retain(|p| p.id != from);
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

    pub(super) fn handle_snapshot_response(
        &mut self,
        now: Instant,
        from: NodeId,
        sent_at: Instant,
        last: EntryId,
        received: u16,
    ) {
        let snapshot = self.log.snapshot();
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        let Some(progress) = state.acknowledged(from, sent_at) else {
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
    /// elections append nothing (the log term, argued in `follower`). Once the confirmed
    /// index reaches the election's last index, the leader's log is confirmed and it may be
    /// goose.
    pub(super) fn maybe_commit(&mut self, now: Instant) {
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        let mut indexes: Vec<LogIndex, M> = Vec::new();
        if self.log.is_voter(self.config.id) && self.log_term == self.term {
            // The leader confirms its own log once its log term is this term, which is
            // saved before anything it sends after taking it (the log term, in `follower`).
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

    /// Builds the next replication frame from the log. A peer behind the snapshot gets the
    /// whole snapshot streamed, one chunk per call, so that even a joining node that cannot
    /// reply yet receives all of it.
    pub(super) fn poll_replication(&mut self, buffer: &mut [u8]) -> Option<Transmit> {
        let state = self.role.leader_mut()?;
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
                progress.snapshot_sent_at = Some(sent_at);
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
}
