//! The goose lease, and why at most one node is goose at any instant.
//!
//! Both sides of the rule live here: the leader's lease (`lease_end`, extended by
//! `maybe_extend_lease` as acknowledgements arrive) and the voters' loyalty window (`follow`
//! sets it from every leader frame; `in_lease` is what makes `step` refuse a vote and the
//! election timer wait).
//!
//! [`Node::is_goose`] holds only while the node is leader, a majority holds its whole log
//! (its commit index covers its log as of its election, or a majority confirmed that log
//! in its term: [the log term](super::follower)), and `now < lease_end`. `lease_end`
//! is `t + D` for the latest heartbeat round `t` (leader's clock, taken *before* the round
//! is sent) that a majority of voters acknowledged in the current term, where
//! `D = W × (1 − max_drift) − lease_margin` and `W` is the leader's own
//! `election_timeout_min`: the leader's *loyalty window*.
//!
//! Every leader frame (Append, Snapshot) carries `W`. A node that hears a leader refuses
//! every vote (PreVote and Vote, any term, itself included: it does not campaign either)
//! until its own clock has advanced `max(W, own election_timeout_min)` past the receipt
//! (leader stickiness, §4.2.3, kept in `sticky_until`); its election timer never fires
//! before that.
//!
//! Claim: while the leader's `now < lease_end`, no other node can be elected, whatever the
//! mix of timing flags in the flock.
//!
//! 1. Another node C needs votes from a majority of voters. Any two majorities share a
//!    voter F, so some F that acknowledged round `t` must vote for C (single-server
//!    membership changes keep adjacent configurations' majorities overlapping, §4.1).
//! 2. F acknowledged round `t` after receiving it, at real time ≥ the real time of `t`.
//!    The frame told F the leader's `W`; from the receipt F refuses every vote until its
//!    clock has advanced at least `W` (its own timing may be shorter or longer: it takes the
//!    longer). The only exception is a Vote marked `transfer`, which only follows a
//!    TimeoutNow from a leader that has given up its lease first.
//! 3. By the drift bound, while F's clock advances `W` the leader's advances at least
//!    `W × (1 − max_drift) > D + lease_margin`. So the leader's clock reads at least `t + D`
//!    before F can vote: the lease has ended before any vote for C exists, let alone C's
//!    election.
//!
//! Timing changes one restart at a time, in any order, cannot break this: the window each
//! voter honours comes from the leader whose lease relies on it, not from the voter's own
//! flags, and `W` is fixed for a leader's whole term (timing changes only with a restart,
//! and a restarted node is a new candidate in a new term). The guard is one-sided on
//! purpose: a voter with a *longer* window than the leader's only waits longer.
//!
//! The cases that break the naive argument:
//!
//! - **A follower that acknowledged and then restarted** has forgotten when it heard the
//!   leader. It saved `W` (the window of the leader it last followed) before that
//!   acknowledgement left, so on start it refuses every vote for
//!   `max(W, own election_timeout_min)` from its start, which covers any round it
//!   acknowledged before. Only the latest leader's `W` is needed: an earlier leader's lease
//!   ended before the later leader was elected (this argument, applied to that election).
//! - **A follower restarted with shorter timing**, or **a goose with longer timing than
//!   its voters**: the voters stay loyal for the goose's `W`, carried in its frames and
//!   saved, not for their own shorter timeout.
//! - **A leader frozen (SIGSTOP, a long pause) that resumes with a jumped clock**: the lease
//!   is anchored at send times on the leader's own clock, so after the pause `now` is past
//!   `lease_end` and it answers duck. Acknowledgements that arrive after the pause carry
//!   the old `sent_at` and cannot extend the lease past its old end. This requires the
//!   clock to count the paused time (CLOCK_BOOTTIME on Linux counts a stopped process and a
//!   suspend; a board must read a free-running hardware counter, never a tick count kept by
//!   an interrupt that a stalled CPU or emulator does not run).
//! - **Stale acknowledgements** (a response to an Append this node sent in an earlier
//!   term, answered in the current one) are ignored: only `sent_at` at or after the time
//!   this node became leader count.
//! - **A leader that reads acknowledgements late**: a quiescent leader
//!   ([`Node::is_quiescent`]) whose host reads peer frames only when it wakes for another
//!   reason (the desktop node does). An acknowledgement extends the lease to its round's
//!   `t + D`, never to when it is read, so a late read leaves the lease shorter meanwhile,
//!   never longer: the claim holds for any delay of any frame. What waits is the leader's
//!   reaction to a higher term, until its next wake-up at most; it stays leader that long,
//!   but goose only while its lease holds, which 1–3 bound.
//!
//! A leader that sees a higher term, or loses its quorum (CheckQuorum), stops being leader
//! at once, and with it goose.

use heapless::Vec;

use super::{push_bounded, Cause, Node, Role};
use crate::quorum::quorum_value;
use crate::storage::Storage;
use crate::time::{Duration, Instant};
use crate::types::NodeId;

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// The end of the lease, if this node is goose at `now`: leader, not handing over, a
    /// majority holding its whole log, and `now` before the end.
    ///
    /// A majority holds that log once it confirmed it in this term (`log_confirmed`), or
    /// from the start if the commit index already covers it: every entry of it is then
    /// committed (a majority holds it, and every later leader will), and by Leader
    /// Completeness the log holds every committed entry, so it is exactly the committed
    /// log. The goose needs no more: what it answers rests on the lease alone. Proposals
    /// still wait for the confirmation (`check_proposal`, Ongaro's fix).
    pub(super) fn lease_end(&self, now: Instant) -> Option<Instant> {
        let state = self.role.leader()?;
        let log_held = state.log_confirmed || self.commit >= state.election_last;
        if self.failed || state.transfer.is_some() || !log_held {
            return None;
        }
        state.lease_end.filter(|end| now < *end)
    }

    /// Extends the lease to the send time of the latest round a majority of voters
    /// acknowledged, plus the lease duration. See the module docs for why this is safe.
    pub(super) fn maybe_extend_lease(&mut self) {
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        let mut acked: Vec<Instant, M> = Vec::new();
        if self.log.is_voter(self.config.id) {
            push_bounded(&mut acked, state.round_sent_at);
        }
        for progress in &state.progress {
            if let (true, Some(at)) = (self.log.is_voter(progress.id), progress.acked_sent_at) {
                push_bounded(&mut acked, at);
            }
        }
        if let Some(start) = quorum_value(&mut acked, self.log.voter_count()) {
            debug_assert!(start >= state.since);
            let end = start + self.config.lease_duration();
            state.lease_end = state.lease_end.max(Some(end));
        }
    }

    /// Whether this node is inside a loyalty window (it heard a leader, or started, too
    /// recently): it then refuses every vote and does not campaign. A leader is always in
    /// its own lease.
    pub(super) fn in_lease(&self, now: Instant) -> bool {
        self.role.is_leader() || now < self.sticky_until
    }

    /// A message from the leader of the current term, whose loyalty window is `stick`:
    /// follow it, and stay loyal for the longer of that window and this node's own. The
    /// window is saved when it changes, so a restart honours it too.
    pub(super) fn follow(&mut self, now: Instant, leader: NodeId, stick: Duration) {
        if !matches!(self.role, Role::Follower) || self.leader != Some(leader) {
            // Two leaders in one term are impossible (one vote per term per voter), and
            // `step` drops a leader-only message that reaches a leader.
            assert!(!self.role.is_leader(), "two leaders in a term");
            self.because(Cause::LeaderHeard { from: leader });
            self.become_follower(now, self.term, Some(leader));
        }
        if stick != self.stick {
            self.stick = stick;
            self.dirty = true;
        }
        let window = self.config.election_timeout_min.max(stick);
        self.sticky_until = self.sticky_until.max(now + window);
        self.reset_election_timer(now);
    }
}
