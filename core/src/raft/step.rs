//! Term handling and leader stickiness, then dispatch (etcd's `Step`).
//!
//! Every peer message that passed the gateway ([`Node::handle_frame`]) comes through `step`,
//! which compares terms once, for every message:
//!
//! - a higher term makes this node a follower of it, except that a vote request is refused
//!   without even adopting its term while this node is loyal to a leader (stickiness, on
//!   which the [lease](super::lease) depends), and that pre-votes ask about a future term
//!   without changing anyone's;
//! - a lower term is counted and dropped, with an answer that tells a stale leader or
//!   pre-candidate about the newer term;
//! - a leader-only message that reaches a leader of the same term is forged or corrupt:
//!   counted and dropped, never followed.
//!
//! Then each message goes to the side of the protocol it addresses: vote requests and
//! answers to the [election](super::election), Append, Snapshot and TimeoutNow to the
//! [follower](super::follower), acknowledgements to the [leader](super::leader). Each
//! handler checks that this node still has the role its message is for.

use super::{Cause, Node};
use crate::stats::bump;
use crate::storage::Storage;
use crate::time::Instant;
use crate::types::{EntryId, LogIndex, NodeId};
use crate::wire::{AppendResult, Body, Message, MessageOwned};

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    pub(super) fn step(&mut self, now: Instant, from: NodeId, message: MessageOwned) {
        let Message { term, body } = message;
        if term > self.term {
            let transfer = matches!(body, Body::Vote { transfer: true, .. });
            if body.is_vote_request() && !transfer && self.in_lease(now) {
                // Leader stickiness (§4.2.3), which the lease depends on: refuse without
                // even adopting the term.
                bump(&mut self.stats.sticky_refusals);
                return;
            }
            match body {
                // A PreVote asks about a future term; a granted PreVoteResponse carries it.
                Body::PreVote { .. } | Body::PreVoteResponse { granted: true } => {}
                _ => {
                    let leader = body.is_from_leader().then_some(from);
                    self.because(Cause::HigherTerm { from });
                    self.become_follower(now, term, leader);
                }
            }
        } else if term < self.term {
            bump(&mut self.stats.stale_term);
            match body {
                // Tell a stale leader about the new term so it steps down. The zero
                // `sent_at` can never extend anyone's lease.
                Body::Append { .. } | Body::Snapshot { .. } => {
                    let result = AppendResult::Rejected {
                        rejected: LogIndex(0),
                        hint: EntryId::default(),
                    };
                    self.respond(
                        from,
                        Body::AppendResponse {
                            sent_at: Instant::ZERO,
                            result,
                            healthy: self.healthy,
                        },
                    );
                }
                Body::PreVote { .. } => {
                    self.respond(from, Body::PreVoteResponse { granted: false })
                }
                _ => {}
            }
            return;
        }
        if body.is_from_leader() && self.role.is_leader() {
            // Another leader in this term: impossible among honest peers (one vote per
            // voter per term), so the frame is forged or corrupt. Drop it, never follow it.
            bump(&mut self.stats.invalid);
            return;
        }
        match body {
            Body::PreVote { log } => self.handle_vote_request(now, from, term, log, true),
            Body::Vote { log, transfer } => {
                if !transfer && self.in_lease(now) && self.voted_for != Some(from) {
                    bump(&mut self.stats.sticky_refusals);
                    return;
                }
                self.handle_vote_request(now, from, term, log, false);
            }
            Body::PreVoteResponse { granted } => {
                self.handle_vote_response(now, from, granted, true)
            }
            Body::VoteResponse { granted } => self.handle_vote_response(now, from, granted, false),
            Body::Append {
                prev,
                commit,
                last,
                stick,
                sent_at,
                entries,
            } => {
                self.follow(now, from, stick);
                self.handle_append(from, prev, commit, last, sent_at, &entries);
            }
            Body::Snapshot {
                last,
                stick,
                sent_at,
                offset,
                members,
                done,
            } => {
                self.follow(now, from, stick);
                self.handle_snapshot(from, last, sent_at, offset, &members, done);
            }
            Body::TimeoutNow => {
                self.follow(now, from, self.stick);
                // An unhealthy voter told to take over does not: the leader steps down at
                // its transfer deadline and an ordinary election follows.
                if self.may_campaign() {
                    self.because(Cause::TimeoutNow { from });
                    self.become_candidate(now, true);
                }
            }
            Body::AppendResponse {
                sent_at,
                result,
                healthy,
            } => self.handle_append_response(now, from, sent_at, result, healthy),
            Body::SnapshotResponse {
                sent_at,
                last,
                received,
            } => {
                self.handle_snapshot_response(now, from, sent_at, last, received);
            }
        }
    }
}
