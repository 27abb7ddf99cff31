//! The `node_frames` regressions (`regressions/node_frames/`), written out as the ops they
//! decode to, each with a check that it still reaches the path it once crashed.
//!
//! A regression file is a `node_frames` script, not a raw frame: the harness builds each
//! frame with `wire::encode`, so it always carries the current wire version. But its bytes
//! decode through the harness's `ArbBody` layout, and when a message gains fields (wire
//! version 2 added the loyalty window, the leader's last index, the confirmed flag and
//! vote requests' log view) the old bytes decode to other ops, which test nothing in
//! particular. So the ops live here: `committed_files_are_these_ops` fails when the layout
//! changes, and `GOOSE_FUZZ_WRITE_REGRESSIONS=1 cargo test --test regressions` writes the
//! files again from the ops below.
//!
//! The version-2 fields are set to what a version-1 peer meant: a loyalty window of zero
//! (a follower then stays loyal for its own `election_timeout_min`, as under version 1), and
//! an Append's `last` at the end of its entries (the leader has sent its whole log).

use std::fs;
use std::path::{Path, PathBuf};

use goose_core::wire::{AppendResult, Body};
use goose_core::{LogIndex, RaftRole, Term};
use goose_fuzz::flock::Encode;
use goose_fuzz::single::{
    decode_ops, trace, ArbBody, ArbEntry, ArbId, ArbMember, Few, Op, Step, Stick,
};

struct Regression {
    name: &'static str,
    ops: Vec<Op>,
    /// Panics unless the traced run took the path the regression is about.
    reaches: fn(&[Step]),
}

fn path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions/node_frames")
        .join(name)
}

fn voters(step: &Step) -> Vec<u16> {
    step.members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id.get())
        .collect()
}

fn regressions() -> Vec<Regression> {
    vec![
        Regression {
            // A forged TimeoutNow of its own term reaches a leader. Fixed by `step`
            // dropping (and counting as invalid) a leader-only message that reaches a
            // leader of the same term; before, `follow`'s debug assertion fired.
            name: "leader-told-to-follow",
            ops: vec![
                // Node 2, in term 65, sends entries (of term 0) removing nodes 2 and 3,
                // and commits them: node 1 is left the only voter.
                Op::Frame {
                    from: 2,
                    to: 0,
                    term: 65,
                    body: ArbBody::Append {
                        prev: ArbId {
                            term: -1,
                            index: -1,
                        },
                        commit: 42,
                        last: 0,
                        stick: Stick::ZERO,
                        sent_at: -477_230_838,
                        entries: Few(vec![
                            ArbEntry {
                                term: -114,
                                kind: 227,
                                id: 56,
                            },
                            ArbEntry {
                                term: -114,
                                kind: 3,
                                id: 242,
                            },
                        ]),
                    },
                },
                // It elects itself (term 66) and adds node 5 as a learner.
                Op::Timeout,
                Op::Propose { kind: 65, id: 39 },
                // Node 5 (17 % 6) sends a TimeoutNow of term 66 (relative 0).
                Op::Frame {
                    from: 17,
                    to: 0,
                    term: 0,
                    body: ArbBody::TimeoutNow,
                },
            ],
            reaches: |steps| {
                let [append, timeout, propose, timeout_now] = steps else {
                    panic!("four ops: {steps:#?}");
                };
                assert_eq!(append.status.term, Term(65));
                assert_eq!(append.status.commit, LogIndex(2));
                assert_eq!(voters(append), [1], "nodes 2 and 3 removed");
                assert_eq!(timeout.status.raft, RaftRole::Leader);
                assert_eq!(timeout.status.term, Term(66));
                assert!(
                    propose.members.iter().any(|m| m.id.get() == 5 && !m.voter),
                    "node 5 added as a learner"
                );
                // The TimeoutNow passed the gateway (a member, well-formed) and reached
                // the same-term leader check in `step`: counted invalid, and the node
                // leads on in the same term.
                assert_eq!(timeout_now.status.raft, RaftRole::Leader);
                assert_eq!(timeout_now.status.term, Term(66));
                assert_eq!(timeout_now.stats.unknown_node, propose.stats.unknown_node);
                assert_eq!(timeout_now.stats.invalid, propose.stats.invalid + 1);
            },
        },
        Regression {
            // A completed snapshot with no member at all. The fix (a snapshot with no voter
            // is dropped as invalid) stops this input at its first frame: the membership
            // never becomes empty, so the second half of the old crash (a node without
            // members let past the commit-index check by an older snapshot, then saving a
            // commit index beyond its log) is not reached from here any more.
            // `stale-snapshot-to-emptied-node` reaches it another way.
            name: "stale-snapshot-to-empty-node",
            ops: vec![
                // Node 2 (128 % 6), term 0: a one-chunk snapshot up to (0, 5), no members.
                Op::Frame {
                    from: 128,
                    to: 0,
                    term: 0,
                    body: ArbBody::Snapshot {
                        last: ArbId { term: 0, index: 5 },
                        stick: Stick::ZERO,
                        sent_at: -1_744_764_928,
                        offset: 176,
                        members: Few(vec![]),
                        done: true,
                    },
                },
                Op::Restart,
                // Node 2 (8 % 6) again: a snapshot up to (0, 0), no members.
                Op::Frame {
                    from: 8,
                    to: 0,
                    term: -1,
                    body: ArbBody::Snapshot {
                        last: ArbId {
                            term: -62,
                            index: -62,
                        },
                        stick: Stick::ZERO,
                        sent_at: 12_763_648,
                        offset: 8,
                        members: Few(vec![]),
                        done: true,
                    },
                },
            ],
            reaches: |steps| {
                let [empty, restart, older] = steps else {
                    panic!("three ops: {steps:#?}");
                };
                // Past the gateway (the node now follows node 2), completed, and dropped
                // as invalid for want of a voter: nothing installed, nothing answered.
                assert_eq!(empty.status.leader.map(|l| l.get()), Some(2));
                assert_eq!(empty.stats.invalid, 1);
                assert_eq!(empty.status.commit, LogIndex(0));
                assert_eq!(voters(empty), [1, 2, 3]);
                assert!(empty.sent.is_empty(), "{:?}", empty.sent);
                assert_eq!(voters(restart), [1, 2, 3]);
                // With its membership intact, the node answers the older snapshot as one
                // it already holds.
                assert_eq!(older.stats.invalid, 0);
                assert!(
                    older.sent.iter().any(|(to, m)| *to == 2
                        && matches!(
                            m.body,
                            Body::AppendResponse {
                                result: AppendResult::Accepted {
                                    match_index: LogIndex(0),
                                    ..
                                },
                                ..
                            }
                        )),
                    "{:?}",
                    older.sent
                );
            },
        },
        Regression {
            // Hand-written, not found by fuzzing: the path `stale-snapshot-to-empty-node`
            // crashed, reached without an empty snapshot. Forged entries remove every
            // member, node 1 included, and commit; after a restart node 1 is a joining node
            // (no membership) and takes a snapshot from anyone. A snapshot older than its
            // commit index, conflicting with its log, must be refused (the fix's first
            // half: a node without members takes a snapshot only if it is not older than
            // its commit index); before, it was installed with the commit index kept
            // beyond it, and the saved state could not be read back.
            name: "stale-snapshot-to-emptied-node",
            ops: vec![
                // Node 2, term 1: entries of term 1 removing nodes 2, 3 and 1, committed,
                // the leader's whole log.
                Op::Frame {
                    from: 2,
                    to: 0,
                    term: 1,
                    body: ArbBody::Append {
                        prev: ArbId { term: -1, index: 0 },
                        commit: 3,
                        last: 0,
                        stick: Stick::ZERO,
                        sent_at: 0,
                        entries: Few(vec![
                            ArbEntry {
                                term: 1,
                                kind: 3,
                                id: 1,
                            },
                            ArbEntry {
                                term: 1,
                                kind: 3,
                                id: 2,
                            },
                            ArbEntry {
                                term: 1,
                                kind: 3,
                                id: 0,
                            },
                        ]),
                    },
                },
                Op::Restart,
                // Node 2: a snapshot up to (0, 1), older than commit 3 and conflicting with
                // the entry of term 1 there, naming node 2 as a voter.
                Op::Frame {
                    from: 2,
                    to: 0,
                    term: 0,
                    body: ArbBody::Snapshot {
                        last: ArbId {
                            term: -1,
                            index: -2,
                        },
                        stick: Stick::ZERO,
                        sent_at: 0,
                        offset: 0,
                        members: Few(vec![ArbMember { id: 1, voter: true }]),
                        done: true,
                    },
                },
            ],
            reaches: |steps| {
                let [append, restart, snapshot] = steps else {
                    panic!("three ops: {steps:#?}");
                };
                assert!(append.members.is_empty(), "{:?}", append.members);
                assert_eq!(append.status.commit, LogIndex(3));
                assert!(restart.members.is_empty());
                assert_eq!(restart.status.leader, None);
                // The snapshot passed the gateway as one to a joining node (node 2 is no
                // member: the node now follows it, which `step` does before
                // `handle_snapshot`), and was not installed.
                assert_eq!(snapshot.status.leader.map(|l| l.get()), Some(2));
                assert_eq!(snapshot.stats.unknown_node, 0);
                assert_eq!(snapshot.status.commit, LogIndex(3));
                assert_eq!(snapshot.status.last.index, LogIndex(3));
                assert!(snapshot.members.is_empty());
            },
        },
        Regression {
            // Two chunks of one snapshot that both name node 1. Fixed by `handle_snapshot`
            // dropping (and counting as invalid) a chunk that repeats an id already
            // received for the snapshot; before, the joined membership held node 1 twice
            // and the next save could not be read back.
            name: "duplicate-members-across-chunks",
            ops: vec![
                // Node 2, term 0 (relative −127, saturated): chunk 0 of a snapshot up to
                // (0, 114), node 1 as a learner, more to come.
                Op::Frame {
                    from: 2,
                    to: 0,
                    term: -127,
                    body: ArbBody::Snapshot {
                        last: ArbId {
                            term: -1,
                            index: 114,
                        },
                        stick: Stick::ZERO,
                        sent_at: 477_240_064,
                        offset: 0,
                        members: Few(vec![ArbMember {
                            id: 255,
                            voter: false,
                        }]),
                        done: false,
                    },
                },
                // Node 3 (255 % 6), term 2: chunk 1 (5 % 4) of the same snapshot, node 1
                // again, as a voter, last chunk.
                Op::Frame {
                    from: 255,
                    to: 5,
                    term: 2,
                    body: ArbBody::Snapshot {
                        last: ArbId {
                            term: -1,
                            index: 114,
                        },
                        stick: Stick::ZERO,
                        sent_at: -458_688,
                        offset: 5,
                        members: Few(vec![ArbMember { id: 5, voter: true }]),
                        done: true,
                    },
                },
            ],
            reaches: |steps| {
                let [first, second] = steps else {
                    panic!("two ops: {steps:#?}");
                };
                // The first chunk is taken and waits for more.
                assert_eq!(first.status.leader.map(|l| l.get()), Some(2));
                assert_eq!(first.stats.invalid, 0);
                assert!(first.sent.is_empty(), "{:?}", first.sent);
                // The second passed the gateway (the node adopted term 2 and follows
                // node 3, which `step` does before `handle_snapshot`), came in order, and
                // was counted invalid: the repeated-id check is the only invalid drop on
                // that path before a chunk is joined. Nothing installed.
                assert_eq!(second.status.term, Term(2));
                assert_eq!(second.status.leader.map(|l| l.get()), Some(3));
                assert_eq!(second.stats.invalid, 1);
                assert_eq!(second.status.commit, LogIndex(0));
                assert_eq!(voters(second), [1, 2, 3]);
            },
        },
    ]
}

fn encode(ops: &[Op]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for op in ops {
        op.encode(&mut bytes);
    }
    bytes
}

#[test]
fn committed_files_are_these_ops() {
    let write = std::env::var_os("GOOSE_FUZZ_WRITE_REGRESSIONS").is_some();
    for regression in regressions() {
        let bytes = encode(&regression.ops);
        assert_eq!(decode_ops(&bytes), regression.ops, "{}", regression.name);
        let path = path(regression.name);
        if write {
            fs::write(&path, &bytes).unwrap();
        }
        let committed = fs::read(&path).unwrap();
        assert_eq!(
            decode_ops(&committed),
            regression.ops,
            "{} decodes to other ops: GOOSE_FUZZ_WRITE_REGRESSIONS=1 cargo test --test regressions",
            path.display()
        );
    }
}

/// Runs the ops (which `committed_files_are_these_ops` holds the files to, and
/// `tests/corpus.rs` replays the files themselves through the target).
#[test]
fn every_regression_reaches_its_path() {
    for regression in regressions() {
        let steps = trace(&encode(&regression.ops));
        (regression.reaches)(&steps);
    }
}

#[test]
fn every_file_is_listed_here() {
    let mut files: Vec<String> = fs::read_dir(path(""))
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    let mut listed: Vec<String> = regressions().iter().map(|r| r.name.to_string()).collect();
    listed.sort();
    assert_eq!(files, listed);
}
