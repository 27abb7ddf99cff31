//! The README's limit table must state the constants the code uses.

use goose_core::auth::{NONCES_MAX, REPLAY_WINDOW};
use goose_core::limits::*;
use goose_core::ratelimit::{EMBEDDED_RATE_SOURCES_MAX, RATE_SOURCES_MAX};
use goose_core::text::{PARTITION_PEERS_MAX, TEXT_REPLY_SIZE_MAX};

#[test]
fn readme_limit_table_matches_the_constants() {
    let readme = include_str!("../../README.md");
    let constants = [
        ("MEMBERS_MAX", MEMBERS_MAX),
        ("LOG_ENTRIES_MAX", LOG_ENTRIES_MAX),
        ("EMBEDDED_MEMBERS_MAX", EMBEDDED_MEMBERS_MAX),
        ("EMBEDDED_LOG_ENTRIES_MAX", EMBEDDED_LOG_ENTRIES_MAX),
        ("ENTRIES_PER_MESSAGE_MAX", ENTRIES_PER_MESSAGE_MAX),
        ("MEMBERS_PER_SNAPSHOT_CHUNK", MEMBERS_PER_SNAPSHOT_CHUNK),
        ("FRAME_SIZE_MAX", FRAME_SIZE_MAX),
        ("EVENTS_MAX", EVENTS_MAX),
        ("UNCOMMITTED_ENTRIES_MAX", UNCOMMITTED_ENTRIES_MAX),
        ("TEXT_REPLY_SIZE_MAX", TEXT_REPLY_SIZE_MAX),
        ("PARTITION_PEERS_MAX", PARTITION_PEERS_MAX),
        ("RATE_SOURCES_MAX", RATE_SOURCES_MAX),
        ("EMBEDDED_RATE_SOURCES_MAX", EMBEDDED_RATE_SOURCES_MAX),
        ("NONCES_MAX", NONCES_MAX),
        ("REPLAY_WINDOW", REPLAY_WINDOW as usize),
    ];
    let window = format!("{} s", LOYALTY_WINDOW_MAX.millis() / 1000);
    let constants = constants
        .map(|(name, value)| (name, value.to_string()))
        .into_iter()
        .chain([("LOYALTY_WINDOW_MAX", window)])
        .collect::<Vec<_>>();
    for (name, value) in &constants {
        let row = format!("| `{name}` | {value} |");
        assert!(
            readme.contains(&row),
            "README limit table lacks or misstates: {row}"
        );
    }
    let rows = readme
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains("_MAX"))
        .count()
        + readme
            .lines()
            .filter(|l| {
                ["| `MEMBERS_PER_SNAPSHOT_CHUNK`", "| `REPLAY_WINDOW`"]
                    .iter()
                    .any(|name| l.starts_with(name))
            })
            .count();
    assert_eq!(rows, constants.len(), "every limit row is checked");
}
