//! One counter per reason a frame or message was dropped, plus a few outcomes worth
//! watching. `ctl status` prints them all.
//!
//! Counters are declared with the crate's `counters!` macro: one table in which each field
//! stands beside its `ctl status` name, so that the name a reader finds on the wire finds
//! the field in the code, and the list `ctl status` prints can never drift from the fields.

/// Declares a struct of `u64` counters and its `counters()` list from one table. A field's
/// `ctl status` name is the field's own name, or the string after `=` where an older name
/// is kept on the wire.
macro_rules! counters {
    (@name $field:ident = $wire:literal) => {
        $wire
    };
    (@name $field:ident) => {
        stringify!($field)
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[$doc:meta])*
                $field:ident $(= $wire:literal)?,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $(
                $(#[$doc])*
                pub $field: u64,
            )*
        }

        impl $name {
            /// How many counters there are.
            pub const COUNT: usize = [$(stringify!($field)),*].len();

            /// Every counter with its `ctl status` name, in a stable order.
            pub const fn counters(&self) -> [(&'static str, u64); Self::COUNT] {
                [$((counters!(@name $field $(= $wire)?), self.$field)),*]
            }
        }
    };
}

pub(crate) use counters;

counters! {
    /// Counters of a node's drops. All only ever increase (saturating).
    pub struct Stats {
        /// Frames shorter than the header.
        too_short = "drop_short",
        /// Frames longer than 508 bytes.
        too_long = "drop_long",
        /// Frames with a wrong magic byte.
        bad_magic = "drop_magic",
        /// Frames of another wire version.
        bad_version = "drop_version",
        /// Frames whose body would not decode.
        undecodable = "drop_undecodable",
        /// Frames that decoded but broke a protocol invariant.
        invalid = "drop_invalid",
        /// Frames from an id that is not a member (or is this node).
        unknown_node = "drop_unknown_node",
        /// Frames addressed to another node id.
        wrong_target = "drop_wrong_target",
        /// Messages from a lower term (answered, where Raft says so, then dropped).
        stale_term = "drop_stale_term",
        /// Vote requests refused because a leader was heard within the minimum election
        /// timeout (leader stickiness, or the start-up quiet period).
        sticky_refusals = "drop_sticky",
        /// Entries refused because the log or the membership was at capacity.
        capacity = "drop_capacity",
        /// Outgoing messages dropped because the outbox was full.
        outbox_full = "drop_outbox_full",
        /// Events dropped because the caller did not poll them.
        events_dropped = "drop_events",
    }
}

/// Adds one to a counter, saturating.
pub(crate) fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::ServiceStats;

    #[test]
    fn every_counter_has_its_own_wire_name() {
        let core = Stats::default().counters();
        let service = ServiceStats::default().counters();
        let names: heapless::Vec<&str, 64> = core.iter().chain(&service).map(|c| c.0).collect();
        assert_eq!(names.len(), Stats::COUNT + ServiceStats::COUNT);
        for (index, name) in names.iter().enumerate() {
            assert!(!names[..index].contains(name), "{name} twice");
            let word = |b: u8| b.is_ascii_lowercase() || b == b'_';
            assert!(name.bytes().all(word), "{name} is not a status key");
        }
        // Each name reads its own field.
        let stats = Stats {
            sticky_refusals: 7,
            ..Stats::default()
        };
        let sticky = stats.counters().into_iter().find(|c| c.0 == "drop_sticky");
        assert_eq!(sticky, Some(("drop_sticky", 7)));
        assert_eq!(stats.counters().iter().map(|c| c.1).sum::<u64>(), 7);
    }
}
