//! Leadership transfer (dissertation §3.10).
//!
//! The leader stops being goose at once, brings the target's log level with its own, then
//! sends it TimeoutNow: the target campaigns at once, with a Vote marked `transfer` that
//! voters grant despite their loyalty to this leader. That is safe for the lease because
//! the leader gave it up first, and never takes it back in this term: a leader that sent
//! TimeoutNow and is still leader at the deadline steps down.
//!
//! # Held transfers
//!
//! A program that runs something only the goose may run (a job, a duck hook that must end
//! before the next goose hook starts) starts the transfer *held* ([`Node::transfer_held`]):
//! the leader stops being goose and catches the target up as usual, but sends TimeoutNow
//! only once the program calls [`Node::release_transfer`], when what it ran has ended.
//! Nothing else can make another node goose meanwhile: the leader keeps sending heartbeats,
//! so every voter stays loyal to it (the [lease](super::lease) argument), and the only vote
//! voters grant despite that loyalty follows a TimeoutNow, which has not left. So whatever
//! the program stopped before releasing is stopped before any other node can be goose.
//!
//! A hold has a deadline. A program that cannot finish by then (a job that will not die) does
//! not get TimeoutNow sent at all: the leader steps down instead, and the voters elect a new
//! leader only once their loyalty windows have run out, an election timeout after the last
//! heartbeat, as after a crash.
//!
//! An unhealthy voter (its [`Node::set_healthy`] said so in its acknowledgements) is never
//! chosen as the target, nor accepted as one.

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
    /// When the transfer gives up (before TimeoutNow), the leader steps down (after it,
    /// or at the end of a hold).
    pub(super) deadline: Instant,
    /// Whether TimeoutNow was sent.
    pub(super) sent: bool,
    /// Whether TimeoutNow waits for [`Node::release_transfer`] (until `deadline`).
    pub(super) held: bool,
}

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// Starts a transfer to `target`, or to the most up-to-date voter: see
    /// [`Node::transfer`]. With `hold_until`, TimeoutNow waits for
    /// [`Node::release_transfer`] until then ([`Node::transfer_held`]).
    pub(super) fn start_transfer(
        &mut self,
        now: Instant,
        target: Option<NodeId>,
        hold_until: Option<Instant>,
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
            if state.progress.iter().any(|p| p.id == id && !p.healthy) {
                return Err(TransferError::Unhealthy);
            }
        } else if !state
            .progress
            .iter()
            .any(|p| p.healthy && self.log.is_voter(p.id))
        {
            return Err(TransferError::NoTarget);
        }
        state.transfer = Some(Transfer {
            target,
            deadline: hold_until.unwrap_or(now + self.config.election_timeout_min),
            sent: false,
            held: hold_until.is_some(),
        });
        self.because(Cause::Handoff { to: target });
        self.maybe_send_timeout_now(now);
        Ok(())
    }

    /// Lets a held transfer send TimeoutNow once its target has caught up, which it then
    /// has `election_timeout_min` from now to do. Returns whether a held transfer was
    /// released.
    pub(super) fn release_held_transfer(&mut self, now: Instant) -> bool {
        let Some(state) = self.role.leader_mut() else {
            return false;
        };
        let Some(transfer) = state.transfer.as_mut().filter(|t| t.held) else {
            return false;
        };
        transfer.held = false;
        transfer.deadline = now + self.config.election_timeout_min;
        self.maybe_send_timeout_now(now);
        true
    }

    /// Whether a held transfer waits for [`Node::release_transfer`].
    pub(super) fn holds_transfer(&self) -> bool {
        self.role
            .leader()
            .and_then(|state| state.transfer)
            .is_some_and(|transfer| transfer.held)
    }

    /// Ends a transfer whose deadline has passed: before TimeoutNow it failed and this
    /// node leads on; after, the target did not take over and this node steps down; a hold
    /// that was never released steps down without sending it.
    pub(super) fn expire_transfer(&mut self, now: Instant) {
        let Some(state) = self.role.leader_mut() else {
            return;
        };
        if let Some(transfer) = state.transfer.filter(|t| now >= t.deadline) {
            if transfer.sent || transfer.held {
                // The target did not take over, or the program never let the transfer
                // go on: step down so an ordinary election follows, rather than lead on
                // without ever being goose (or, held, be goose again beside whatever the
                // program could not stop).
                self.because(Cause::HandoffTimedOut);
                self.become_follower(now, self.term, None);
                return;
            }
            state.transfer = None;
            self.push_event(Event::TransferFailed);
        }
    }

    /// Sends TimeoutNow once the transfer's target has every entry this leader has, unless
    /// the transfer is held (the target is still caught up meanwhile).
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
            .filter(|p| p.healthy && self.log.is_voter(p.id));
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
        if transfer.held {
            return;
        }
        let to = progress.id;
        let deadline = now + self.config.election_timeout_max;
        state.transfer = Some(Transfer {
            target: Some(to),
            deadline,
            sent: true,
            held: false,
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
