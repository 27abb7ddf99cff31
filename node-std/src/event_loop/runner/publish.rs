//! The snapshot a node with `--http` publishes ([`crate::http`]): the `ctl status` line the
//! service writes, and the members as this node sees them.

use goose_core::service::Host;
use goose_core::NodeId;

use crate::status::{Fields, MemberView, Snapshot};

use super::Runner;

impl Runner {
    /// Publishes a new snapshot if one is due (see [`crate::http::PUBLISH_EVERY`]).
    pub(super) fn maybe_publish(&mut self, now: goose_core::Instant) {
        let Some(http) = self.http.as_mut() else {
            return;
        };
        if !http.due(now) {
            return;
        }
        let mut line = String::new();
        let field = self.goose_only.iter().find_map(|held| held.status_field());
        let host = Host {
            control_token: None,
            counters: &self.port.counters(),
            fields: field.as_slice(),
        };
        if self
            .service
            .write_status_line(now, &host, &mut line)
            .is_err()
        {
            return; // a String takes any line
        }
        let fields = Fields::parse(&line).unwrap_or_default();
        let node = self.service.node();
        let id = node.id();
        let last = node.status(now).last.index;
        let goose = fields.goose();
        let leader = node
            .status(now)
            .leader
            .filter(|_| !self.service.is_stopped());
        let members = node
            .members()
            .iter()
            .map(|member| {
                let matched = node.peer_match(member.id);
                MemberView {
                    id: member.id.get(),
                    addr: member.addr.to_string(),
                    kind: if member.voter { "voter" } else { "learner" },
                    role: role(member.id, id, goose, leader),
                    last_heard_ms: self.heard.age(member.id, now).map(|age| age.millis()),
                    match_index: matched.map(|index| index.0),
                    lag: matched.map(|index| last.0.saturating_sub(index.0)),
                }
            })
            .collect();
        let snapshot = Snapshot {
            fields,
            members,
            ..Snapshot::default()
        };
        if let Some(http) = self.http.as_mut() {
            http.publish(snapshot);
        }
    }
}

/// A member's role as the node `me` sees it: the goose it names, a leader that is not
/// goose, itself, or a duck.
fn role(member: NodeId, me: NodeId, goose: Option<u16>, leader: Option<NodeId>) -> &'static str {
    match () {
        () if goose == Some(member.get()) => "goose",
        () if leader == Some(member) => "leader",
        () if member == me => "self",
        () => "duck",
    }
}
