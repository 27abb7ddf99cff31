//! When this node last heard from each member, for the status page (per-peer age) and the
//! warning about members gone quiet.
//!
//! A peer frame counts once the service took it ([`goose_core::service::Handled::Frame`]:
//! not partitioned, authenticated with a key); its source is the id in its header. Only a
//! goose hears from every voter (their acknowledgements); a duck hears from the leader
//! alone. So the leader warns about each member not heard from in [`QUIET_AFTER`], and any
//! other node only when it has heard from no member at all for that long. The warning comes
//! at most once per [`WARN_EVERY`].

use std::collections::HashMap;

use goose_core::limits::MEMBERS_MAX;
use goose_core::wire::parse_header;
use goose_core::{Duration, Instant, Node, NodeId, RaftRole};

use crate::storage_file::FileStorage;

/// How long a member may go unheard before the log says so.
pub(super) const QUIET_AFTER: Duration = Duration::from_millis(10_000);
/// How often at most that warning is logged.
pub(super) const WARN_EVERY: Duration = Duration::from_millis(10_000);

/// The last time each member was heard from; see the module docs.
#[derive(Debug)]
pub(super) struct Heard {
    /// At most one entry per member ([`MEMBERS_MAX`]): ids that are not members are not
    /// recorded.
    last: HashMap<NodeId, Instant>,
    /// When this record started: a member never heard from counts as silent since then.
    since: Instant,
    /// The next instant a warning may be logged.
    next_warning: Instant,
}

impl Heard {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            last: HashMap::new(),
            since: now,
            next_warning: now + QUIET_AFTER,
        }
    }

    /// A peer frame the service took, from the member its header names.
    pub(super) fn frame(&mut self, now: Instant, frame: &[u8], node: &Node<FileStorage>) {
        let Ok((header, _)) = parse_header(frame) else {
            return;
        };
        let Some(source) = NodeId::new(header.source) else {
            return;
        };
        if !node.members().iter().any(|member| member.id == source) {
            return;
        }
        if self.last.len() >= MEMBERS_MAX && !self.last.contains_key(&source) {
            // Members changed: forget those gone.
            self.last
                .retain(|id, _| node.members().iter().any(|m| m.id == *id));
        }
        self.last.insert(source, now);
    }

    /// How long ago `id` was heard from; `None` if never since this node started.
    pub(super) fn age(&self, id: NodeId, now: Instant) -> Option<Duration> {
        self.last.get(&id).map(|at| now.saturating_since(*at))
    }

    /// Logs a warning about members gone quiet, at most once per [`WARN_EVERY`].
    pub(super) fn maybe_warn(&mut self, now: Instant, node: &Node<FileStorage>, stopped: bool) {
        if stopped || now < self.next_warning {
            return;
        }
        let id = node.id();
        let silent_for = |member: NodeId| {
            let at = self.last.get(&member).copied().unwrap_or(self.since);
            now.saturating_since(at)
        };
        let others = node.members().iter().filter(|m| m.id != id);
        let status = node.status(now);
        let quiet: Vec<String> = match status.raft {
            RaftRole::Leader => others
                .filter(|m| silent_for(m.id) >= QUIET_AFTER)
                .map(|m| describe(m.id, self.last.contains_key(&m.id), silent_for(m.id)))
                .collect(),
            _ => {
                let newest = others.map(|m| silent_for(m.id)).min();
                match newest {
                    Some(age) if age >= QUIET_AFTER => {
                        vec![format!("any member (the latest {:.1} s ago)", seconds(age))]
                    }
                    _ => Vec::new(),
                }
            }
        };
        if quiet.is_empty() {
            return;
        }
        self.next_warning = now + WARN_EVERY;
        log::warn!(
            "node {id} term {}: not heard from {} in {} s or more",
            status.term,
            quiet.join(", "),
            QUIET_AFTER.millis() / 1000
        );
    }
}

fn describe(id: NodeId, ever: bool, age: Duration) -> String {
    match ever {
        true => format!("node {id} ({:.1} s)", seconds(age)),
        false => format!("node {id} (never since start)"),
    }
}

fn seconds(duration: Duration) -> f64 {
    duration.micros() as f64 / 1e6
}
