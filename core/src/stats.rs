//! One counter per reason a frame or message was dropped, plus a few outcomes worth
//! watching. `ctl status` prints them all.

/// Counters of a node's drops. All only ever increase (saturating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames shorter than the header.
    pub too_short: u64,
    /// Frames longer than 508 bytes.
    pub too_long: u64,
    /// Frames with a wrong magic byte.
    pub bad_magic: u64,
    /// Frames of another wire version.
    pub bad_version: u64,
    /// Frames whose body would not decode.
    pub undecodable: u64,
    /// Frames that decoded but broke a protocol invariant.
    pub invalid: u64,
    /// Frames from an id that is not a member (or is this node).
    pub unknown_node: u64,
    /// Frames addressed to another node id.
    pub wrong_target: u64,
    /// Messages from a lower term (answered, where Raft says so, then dropped).
    pub stale_term: u64,
    /// Vote requests refused because a leader was heard within the minimum election
    /// timeout (leader stickiness, or the start-up quiet period).
    pub sticky_refusals: u64,
    /// Entries refused because the log or the membership was at capacity.
    pub capacity: u64,
    /// Outgoing messages dropped because the outbox was full.
    pub outbox_full: u64,
    /// Events dropped because the caller did not poll them.
    pub events_dropped: u64,
}

impl Stats {
    /// Every counter with its `ctl status` name, in a stable order.
    pub const fn counters(&self) -> [(&'static str, u64); 13] {
        [
            ("drop_short", self.too_short),
            ("drop_long", self.too_long),
            ("drop_magic", self.bad_magic),
            ("drop_version", self.bad_version),
            ("drop_undecodable", self.undecodable),
            ("drop_invalid", self.invalid),
            ("drop_unknown_node", self.unknown_node),
            ("drop_wrong_target", self.wrong_target),
            ("drop_stale_term", self.stale_term),
            ("drop_sticky", self.sticky_refusals),
            ("drop_capacity", self.capacity),
            ("drop_outbox_full", self.outbox_full),
            ("drop_events", self.events_dropped),
        ]
    }
}

/// Adds one to a counter, saturating.
pub(crate) fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}
