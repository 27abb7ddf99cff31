//! Why a node's role, goose status, term or leader changed: the reason an
//! [`Event::Changed`](super::Event::Changed) carries, for logs, `ctl status` and the live
//! views.
//!
//! The code that changes the role records why (`because`), at the place it decides; the
//! node reports the latest reason recorded during an input with the change that input
//! made, and forgets it. A change nobody recorded a reason for is named by what changed:
//! a leader that became goose was confirmed by a majority, a goose that is still leader
//! but no longer goose saw its lease lapse, and anything else is the membership changing
//! the node's part (a learner promoted to voter).

use core::fmt;

use super::{Node, Observed};
use crate::storage::Storage;
use crate::types::NodeId;

/// Why the node is what an [`Observed`] says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The node started (or restarted, `ctl start`), from its persisted state.
    Started,
    /// No leader was heard within an election timeout: asking for pre-votes.
    ElectionTimeout,
    /// A majority granted pre-votes: campaigning in a new term.
    PreVotesGranted,
    /// TimeoutNow from the leader `from`, handing off to this node: campaigning at once.
    TimeoutNow {
        /// The leader handing off.
        from: NodeId,
    },
    /// A majority voted for this node: leader, goose once its log is confirmed.
    Elected,
    /// A majority refused this node's (pre-)votes.
    VotesRefused,
    /// A message of a higher term, from `from`.
    HigherTerm {
        /// The sender.
        from: NodeId,
    },
    /// A leader of the current term was heard.
    LeaderHeard {
        /// The leader.
        from: NodeId,
    },
    /// A majority confirmed this leader's whole log and acknowledged its lease: goose.
    Confirmed,
    /// The goose's lease ended before a majority acknowledged a newer heartbeat round.
    LeaseLapsed,
    /// CheckQuorum: no majority heard from within an election timeout; the leader steps
    /// down.
    LostMajority,
    /// A handoff started (`ctl transfer`, a signal): no longer goose, to `to` or to the
    /// most up-to-date voter.
    Handoff {
        /// The voter asked for, if one was.
        to: Option<NodeId>,
    },
    /// TimeoutNow was sent, but the target did not take over in time: step down.
    HandoffTimedOut,
    /// This node's removal committed.
    Removed,
    /// The membership changed this node's part: a learner promoted to voter, or the
    /// reverse.
    Membership,
    /// The host's health check failed (`--check`): the node hands off and does not
    /// campaign. Recorded by the code that acts on the check.
    CheckFailed,
}

impl Cause {
    /// The reason as one word, for `ctl status` (`cause=<word>`) and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::ElectionTimeout => "election-timeout",
            Self::PreVotesGranted => "pre-votes-granted",
            Self::TimeoutNow { .. } => "timeout-now",
            Self::Elected => "elected",
            Self::VotesRefused => "votes-refused",
            Self::HigherTerm { .. } => "higher-term",
            Self::LeaderHeard { .. } => "leader-heard",
            Self::Confirmed => "confirmed",
            Self::LeaseLapsed => "lease-lapsed",
            Self::LostMajority => "lost-majority",
            Self::Handoff { .. } => "handoff",
            Self::HandoffTimedOut => "handoff-timed-out",
            Self::Removed => "removed",
            Self::Membership => "membership",
            Self::CheckFailed => "check-failed",
        }
    }

    /// The other node the reason names, if any.
    pub const fn node(self) -> Option<NodeId> {
        match self {
            Self::TimeoutNow { from } | Self::HigherTerm { from } | Self::LeaderHeard { from } => {
                Some(from)
            }
            Self::Handoff { to } => to,
            _ => None,
        }
    }
}

/// A sentence for logs: `higher term from node 3`, `lease lapsed`.
impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Started => f.write_str("started"),
            Self::ElectionTimeout => f.write_str("no leader heard within an election timeout"),
            Self::PreVotesGranted => f.write_str("a majority granted pre-votes"),
            Self::TimeoutNow { from } => write!(f, "handoff from node {from}"),
            Self::Elected => f.write_str("elected by a majority"),
            Self::VotesRefused => f.write_str("a majority refused its votes"),
            Self::HigherTerm { from } => write!(f, "higher term from node {from}"),
            Self::LeaderHeard { from } => write!(f, "heard leader {from}"),
            Self::Confirmed => f.write_str("a majority confirmed its log and lease"),
            Self::LeaseLapsed => f.write_str("lease lapsed"),
            Self::LostMajority => f.write_str("lost its majority"),
            Self::Handoff { to: Some(to) } => write!(f, "handoff to node {to}"),
            Self::Handoff { to: None } => f.write_str("handoff to the most up-to-date voter"),
            Self::HandoffTimedOut => f.write_str("handoff target did not take over in time"),
            Self::Removed => f.write_str("removed from the flock"),
            Self::Membership => f.write_str("membership changed"),
            Self::CheckFailed => f.write_str("health check failed"),
        }
    }
}

impl<S: Storage, const M: usize, const L: usize> Node<S, M, L> {
    /// Records why the role is about to change; the latest reason recorded during an input
    /// goes with the change it makes.
    pub(crate) fn because(&mut self, cause: Cause) {
        self.cause = Some(cause);
    }

    /// The reason for a change from `before` to `after`: the one recorded, else what
    /// changed (module docs).
    pub(super) fn take_cause(&mut self, before: Option<&Observed>, after: &Observed) -> Cause {
        if let Some(cause) = self.cause.take() {
            return cause;
        }
        let Some(before) = before else {
            return Cause::Started;
        };
        match (before.goose, after.goose) {
            (false, true) => Cause::Confirmed,
            (true, false) => Cause::LeaseLapsed,
            // Every `become_*` records why; what is left is the membership changing this
            // node's part (a learner promoted, a voter demoted).
            _ => Cause::Membership,
        }
    }
}
