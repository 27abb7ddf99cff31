//! Messages waiting for [`crate::Node::poll_transmit`], bounded by the member capacity.
//!
//! At most one request (PreVote, Vote, TimeoutNow) and one response per peer wait at a
//! time; a newer one to the same peer replaces the older. Raft tolerates lost messages,
//! and replacing is a loss of the stale one, so this is safe and keeps the outbox at
//! `2 × M` short messages. Leader replication (Append, Snapshot) is not queued here: each
//! peer's progress holds a "send" mark and the frame is built from the log at poll time.

use heapless::Vec;

use crate::types::NodeId;
use crate::wire::MessageShort;

#[derive(Clone, Debug)]
pub(crate) struct Outbox<const M: usize> {
    requests: Vec<(NodeId, MessageShort), M>,
    responses: Vec<(NodeId, MessageShort), M>,
}

impl<const M: usize> Outbox<M> {
    pub(crate) const fn new() -> Self {
        Self {
            requests: Vec::new(),
            responses: Vec::new(),
        }
    }

    /// Queues a request, replacing an older one to the same peer. Returns false (and
    /// drops the message) only if `M` other peers already wait.
    pub(crate) fn push_request(&mut self, to: NodeId, message: MessageShort) -> bool {
        push(&mut self.requests, to, message)
    }

    /// Queues a response, as `push_request`.
    pub(crate) fn push_response(&mut self, to: NodeId, message: MessageShort) -> bool {
        push(&mut self.responses, to, message)
    }

    /// The next message: responses first (a peer is waiting on them), then requests.
    pub(crate) fn pop(&mut self) -> Option<(NodeId, MessageShort)> {
        self.responses.pop().or_else(|| self.requests.pop())
    }

    pub(crate) fn clear_requests(&mut self) {
        self.requests.clear();
    }

    pub(crate) fn clear(&mut self) {
        self.requests.clear();
        self.responses.clear();
    }
}

fn push<const M: usize>(
    queue: &mut Vec<(NodeId, MessageShort), M>,
    to: NodeId,
    message: MessageShort,
) -> bool {
    if let Some(slot) = queue.iter_mut().find(|(id, _)| *id == to) {
        slot.1 = message;
        return true;
    }
    queue.push((to, message)).is_ok()
}
