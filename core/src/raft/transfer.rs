//! Leadership transfer (dissertation §3.10).
//!
//! The leader stops being goose at once, brings the target's log level with its own, then
//! sends it TimeoutNow: the target campaigns at once, with a Vote marked `transfer` that
//! voters grant despite their loyalty to this leader. That is safe for the lease because
//! the leader gave it up first, and never takes it back in this term: a leader that sent
//! TimeoutNow and is still leader at the deadline steps down.

use super::{Cause, Event, Node, TransferError};
use crate::stats::bump;
use crate::storage::Storage;
use crate::time::Instant;
use crate::types::NodeId;
use crate::wire::{Body, MessageShort};

/// A leadership transfer under way. While it lasts the leader is not goose; once TimeoutNow
/// is sent it is never goose again in this term, because the voters it asked may ignore
/// stickiness for the target.
#[derive(Clone, Copy, Debug)]
pub(super) struct Transfer {
    /// The voter asked for, or `None` for the most up-to-date one.
    pub(super) target: Option<NodeId>,
    /// When the transfer gives up (before TimeoutNow) or the leader steps down (after).
    pub(super) deadline: Instant,
    /// Whether TimeoutNow was sent.
    pub(super) sent: bool,
}

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// Starts a transfer to `target`, or to the most up-to-date voter: see
    /// [`Node::transfer`].
    pub(super) fn start_transfer(
        &mut self,
        now: Instant,
        target: Option<NodeId>,
    ) -> Result<(), TransferError> {
        let Some(state) = self.role.leader_mut() else {
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
        self.because(Cause::Handoff { to: target });
        self.maybe_send_timeout_now(now);
        Ok(())
    }

    /// Ends a transfer whose deadline has passed: before TimeoutNow it failed and this
    /// node leads on; after, the target did not take over and this node steps down.
    pub(super) fn expire_transfer(&mut self, now: Instant) {
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        if let Some(transfer) = state.transfer.filter(|t| now >= t.deadline) {
            if transfer.sent {
                // The target did not take over: step down so an ordinary election
                // follows, rather than lead on without ever being goose.
                self.because(Cause::HandoffTimedOut);
                self.become_follower(now, self.term, None);
                return;
            }
            state.transfer = None;
            self.push_event(Event::TransferFailed);
        }
    }

    /// Sends TimeoutNow once the transfer's target has every entry this leader has.
    pub(super) fn maybe_send_timeout_now(&mut self, now: Instant) {
        let last_index = self.log.last_index();
        let Some(state) = self.role.leader_mut() else {
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
}
