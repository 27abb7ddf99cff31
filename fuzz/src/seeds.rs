//! The seed corpus, generated rather than typed: scripted flock scenarios (encoded as
//! `node_sequences` inputs), the frames those scenarios send (one per message kind, for
//! `frame_decode`), sealed-frame scripts for `auth_open`, and probe and control strings
//! for `text_parse`. `tests/corpus.rs` checks `corpus/` against this and rewrites it with
//! `GOOSE_FUZZ_WRITE_CORPUS=1`.

use std::collections::BTreeMap;

use goose_core::limits::FRAME_SIZE_MAX;
use goose_core::wire::{self, Body, Message};
use goose_core::{EntryId, Instant, LogIndex, NodeId, Term};

use goose_core::auth::write_signed_control;

use crate::auth::AuthOp;
use crate::flock::Encode as _;
use crate::flock::{encode_script, Action, Bytes, Change, Driver, Packet, Setup};
use crate::single::Op;
use crate::TestMac;

/// One seed: the target, a file name, the bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A named flock scenario and what it must end with.
pub struct Scenario {
    pub name: &'static str,
    pub setup: Setup,
    pub actions: Vec<Action>,
    /// The node (1-based) that must be goose at the end, if any.
    pub goose: Option<u16>,
}

const DELIVER_ROUNDS: usize = 6;

fn setup() -> Setup {
    Setup {
        drift: [0, 1_000, -1_000],
        epoch: [0, 5_000_000, 77],
        seed: 1,
        margin: 15_000,
        timing: [0; 3],
    }
}

fn rounds(actions: &mut Vec<Action>, count: usize) {
    actions.extend(std::iter::repeat_n(Action::DeliverAll, count));
}

/// Node `node` (0-based) times out and wins: its timer fires, then every message round
/// trip is delivered until a majority has confirmed its log in its term (it appends
/// nothing) and it is goose.
fn elect(actions: &mut Vec<Action>, node: u8) {
    actions.push(Action::Tick { node });
    rounds(actions, DELIVER_ROUNDS);
}

/// The start of most scenarios: 160 ms pass and node 2's timers fire, then node 1 times
/// out and is elected.
fn elected() -> Vec<Action> {
    let mut actions = vec![Action::Advance {
        node: 1,
        ticks: 1_600,
    }];
    elect(&mut actions, 0);
    actions
}

/// Node 1 is elected and leads three heartbeats, then crashes; node 2 waits out its
/// timeout and wins, and node 1 returns (with timing `timing` of the palette) as a duck.
fn failover(timing: u8) -> Vec<Action> {
    let mut actions = elected();
    heartbeats(&mut actions, 0, 3);
    actions.push(Action::Crash { node: 0 });
    actions.push(Action::Advance {
        node: 1,
        ticks: 3_100,
    });
    rounds(&mut actions, DELIVER_ROUNDS);
    actions.push(Action::Restart { node: 0, timing });
    heartbeats(&mut actions, 1, 2);
    actions
}

/// `count` heartbeat rounds of leader `node`, each delivered both ways.
fn heartbeats(actions: &mut Vec<Action>, node: u8, count: usize) {
    for _ in 0..count {
        actions.push(Action::Tick { node });
        rounds(actions, 2);
    }
}

/// The scenarios, each with the goose it must end with.
pub fn scenarios() -> Vec<Scenario> {
    let mut list = Vec::new();

    list.push(Scenario {
        name: "elect",
        setup: setup(),
        actions: elected(),
        goose: Some(1),
    });

    list.push(Scenario {
        name: "crash-and-failover",
        setup: setup(),
        actions: failover(0),
        goose: Some(2),
    });

    let mut actions = elected();
    heartbeats(&mut actions, 0, 1);
    for change in [
        Change::AddLearner { id: 3, port: 0 },
        Change::Promote { id: 3 },
        Change::Remove { id: 3 },
        Change::Noop,
    ] {
        actions.push(Action::Propose { node: 0, change });
        rounds(&mut actions, 2);
        heartbeats(&mut actions, 0, 1);
    }
    list.push(Scenario {
        name: "membership",
        setup: setup(),
        actions,
        goose: Some(1),
    });

    let mut actions = elected();
    heartbeats(&mut actions, 0, 1);
    actions.push(Action::Transfer {
        node: 0,
        to: Some(2),
    });
    rounds(&mut actions, 8);
    heartbeats(&mut actions, 2, 1);
    list.push(Scenario {
        name: "transfer",
        setup: setup(),
        actions,
        goose: Some(3),
    });

    // Node 3 is down while the leader fills and compacts its 16-entry log; on its return it
    // is sent the snapshot.
    let mut actions = elected();
    actions.push(Action::Crash { node: 2 });
    for _ in 0..10 {
        for change in [
            Change::AddLearner { id: 3, port: 1 },
            Change::Remove { id: 3 },
        ] {
            actions.push(Action::Propose { node: 0, change });
            heartbeats(&mut actions, 0, 1);
        }
    }
    actions.push(Action::Restart { node: 2, timing: 0 });
    heartbeats(&mut actions, 0, 3);
    list.push(Scenario {
        name: "snapshot",
        setup: setup(),
        actions,
        goose: Some(1),
    });

    // Nodes 1 and 3 cannot hear each other: node 3 times out and campaigns, but node 2,
    // hearing from the leader, refuses it (leader stickiness), so node 1 stays goose.
    let mut actions = elected();
    actions.push(Action::Cut { a: 0, b: 2 });
    heartbeats(&mut actions, 0, 4);
    actions.push(Action::Tick { node: 2 });
    rounds(&mut actions, DELIVER_ROUNDS);
    heartbeats(&mut actions, 0, 1);
    actions.push(Action::Heal);
    heartbeats(&mut actions, 0, 2);
    list.push(Scenario {
        name: "partition",
        setup: setup(),
        actions,
        goose: Some(1),
    });

    // Mixed timing, changed one restart at a time: node 1 runs the fast timing (12–24 ms),
    // node 2 the contract's, node 3 the long one (300–600 ms). Node 1 leads and crashes;
    // node 2 takes over once every voter has waited out its own window, and node 1 comes
    // back with the short timing (30–60 ms) as a duck.
    list.push(Scenario {
        name: "mixed-timing",
        setup: Setup {
            timing: [1, 0, 3],
            ..setup()
        },
        actions: failover(2),
        goose: Some(2),
    });

    // Faults the nodes must shrug off: garbage, tampered frames, a failed save.
    let mut actions = vec![Action::Advance {
        node: 1,
        ticks: 1_600,
    }];
    actions.push(Action::Inject {
        node: 1,
        bytes: Bytes(b"whois-goose".to_vec()),
    });
    actions.push(Action::Inject {
        node: 2,
        // A well-formed header of this wire version (from node 1 to node 3) over a body
        // that does not decode: dropped as undecodable, past the version check.
        bytes: Bytes(vec![wire::MAGIC, wire::VERSION, 1, 0, 3, 0, 0xFF, 0xFF]),
    });
    actions.push(Action::Tick { node: 0 });
    actions.push(Action::Tamper {
        frame: 0,
        at: 1,
        xor: 2,
    });
    actions.push(Action::Duplicate { frame: 1 });
    rounds(&mut actions, DELIVER_ROUNDS);
    actions.push(Action::FailStorage { node: 1 });
    heartbeats(&mut actions, 0, 2);
    actions.push(Action::Restart { node: 1, timing: 0 });
    heartbeats(&mut actions, 0, 2);
    list.push(Scenario {
        name: "faults",
        setup: setup(),
        actions,
        goose: Some(1),
    });

    list
}

/// Runs a scenario, returning its driver and every frame sent.
pub fn play(scenario: &Scenario) -> (Driver, Vec<Packet>) {
    let mut driver = Driver::new(&scenario.setup);
    driver.flock_mut().sent = Some(Vec::new());
    for action in &scenario.actions {
        driver.apply(action);
    }
    let sent = driver.flock_mut().sent.take().unwrap_or_default();
    (driver, sent)
}

/// The first frame of each message kind the scenarios send.
pub fn frames_by_kind() -> BTreeMap<&'static str, Vec<u8>> {
    let mut frames = BTreeMap::new();
    for scenario in scenarios() {
        let (_, sent) = play(&scenario);
        for packet in sent {
            if let Ok((_, message)) = wire::decode(&packet.bytes) {
                frames
                    .entry(crate::kind_name(&message.body))
                    .or_insert(packet.bytes);
            }
        }
    }
    // A snapshot fits one chunk in a flock this small, so no node ever asks to resume
    // one: build that kind by hand.
    let message = Message {
        term: Term(3),
        body: Body::SnapshotResponse {
            sent_at: Instant::from_millis(1_500),
            last: EntryId {
                term: Term(2),
                index: LogIndex(17),
            },
            received: 8,
        },
    };
    let mut buffer = [0; FRAME_SIZE_MAX];
    let (from, to) = (NodeId::new(2), NodeId::new(1));
    if let (Some(from), Some(to)) = (from, to) {
        if let Ok(size) = wire::encode(from, to, &message, &mut buffer) {
            frames
                .entry("snapshot-response")
                .or_insert(buffer[..size].to_vec());
        }
    }
    frames
}

/// Hand-built frames at the edges of the version-2 fields, for `frame_decode`: `last` at
/// and beyond the end of an Append's entries and before it (refused), the loyalty window
/// at zero, ordinary, at `LOYALTY_WINDOW_MAX` and above it (refused), a confirmed and an
/// unconfirmed acknowledgement, and vote requests ranking logs by (log term, last index),
/// one with a log term above its message's term (refused). A refused frame is a seed too:
/// one byte away from a valid one.
pub fn boundary_frames() -> Vec<(&'static str, Vec<u8>)> {
    use goose_core::limits::LOYALTY_WINDOW_MAX;
    use goose_core::wire::AppendResult;
    use goose_core::{Duration, Entry, LogView, Member, Payload};

    let ordinary = Duration::from_millis(150);
    let over = LOYALTY_WINDOW_MAX + Duration::from_micros(1);
    let entries = [
        Entry {
            term: Term(3),
            payload: Payload::Noop,
        },
        Entry {
            term: Term(4),
            payload: Payload::Promote {
                id: NodeId::new(3).expect("non-zero"),
            },
        },
    ];
    let prev = EntryId {
        term: Term(3),
        index: LogIndex(6),
    };
    let append = |last: u64, stick: Duration| Body::Append {
        prev,
        commit: LogIndex(6),
        last: LogIndex(last),
        stick,
        sent_at: Instant::from_millis(2_000),
        entries: &entries[..],
    };
    let members = [Member {
        id: NodeId::new(2).expect("non-zero"),
        addr: ([127, 0, 0, 1], 9002).into(),
        voter: true,
    }];
    let snapshot = |stick: Duration| Body::Snapshot {
        last: EntryId {
            term: Term(3),
            index: LogIndex(17),
        },
        stick,
        sent_at: Instant::from_millis(2_000),
        offset: 0,
        members: &members[..],
        done: true,
    };
    let accepted = |confirmed: bool| Body::AppendResponse {
        sent_at: Instant::from_millis(2_000),
        result: AppendResult::Accepted {
            match_index: LogIndex(8),
            confirmed,
        },
        healthy: true,
    };
    let log = |term: u64, last: u64| LogView {
        term: Term(term),
        last: LogIndex(last),
    };
    type BodyRef<'a> = Body<&'a [Entry], &'a [Member]>;
    let bodies: Vec<(&'static str, BodyRef<'_>)> = vec![
        ("append-whole-log-stick-zero", append(8, Duration::ZERO)),
        ("append-more-to-send-stick-ordinary", append(12, ordinary)),
        ("append-stick-at-limit", append(8, LOYALTY_WINDOW_MAX)),
        ("append-stick-over-limit", append(8, over)),
        ("append-last-before-entries-end", append(7, ordinary)),
        ("snapshot-stick-at-limit", snapshot(LOYALTY_WINDOW_MAX)),
        ("snapshot-stick-over-limit", snapshot(over)),
        ("append-response-confirmed", accepted(true)),
        ("append-response-unconfirmed", accepted(false)),
        ("prevote-log-view", Body::PreVote { log: log(3, 8) }),
        (
            "vote-log-view-transfer",
            Body::Vote {
                log: log(4, 2),
                transfer: true,
            },
        ),
        (
            "vote-log-term-above-term",
            Body::Vote {
                log: log(5, 8),
                transfer: false,
            },
        ),
    ];
    let (from, to) = (
        NodeId::new(2).expect("non-zero"),
        NodeId::new(1).expect("non-zero"),
    );
    bodies
        .into_iter()
        .map(|(name, body)| {
            let message = Message {
                term: Term(4),
                body,
            };
            let mut buffer = [0; FRAME_SIZE_MAX];
            let size = wire::encode(from, to, &message, &mut buffer).expect("a small frame fits");
            (name, buffer[..size].to_vec())
        })
        .collect()
}

fn text_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let signed = |nonce: u64, command: &str| {
        let mut datagram = String::new();
        write_signed_control(&mut datagram, &TestMac(TestMac::SEED_KEY), nonce, command)
            .expect("a short command fits");
        datagram.into_bytes()
    };
    let plain: Vec<(&'static str, &'static [u8])> = vec![
        ("probe", b"whois-goose\n"),
        ("probe-nonce", b"whois-goose nonce=0000000700000001\n"),
        ("status", b"ctl status"),
        ("status-token", b"ctl token=s3cret status\n"),
        ("stop", b"ctl stop"),
        ("start", b"ctl start"),
        ("heal", b"ctl heal"),
        ("partition", b"ctl partition 1,3,127.0.0.1:9002,[::1]:9005"),
        ("transfer", b"ctl transfer 2"),
        ("transfer-any", b"ctl transfer"),
        ("add", b"ctl add 4 127.0.0.1:9004"),
        ("add-v6", b"ctl add 65535 [fe80::1%2]:65535"),
        ("remove", b"ctl remove 3"),
        ("bad-id", b"ctl remove 0"),
        ("extra", b"ctl stop now"),
        ("reply", b"goose id=1 term=3 goose=1\n"),
        ("reply-lease", b"goose id=1 term=3 goose=1 lease_ms=120\n"),
        ("unknown", b"hello"),
        ("nonce", b"ctl nonce\n"),
        ("nonce-reply", b"ok nonce=00000007000000ff\n"),
        (
            "signed-bad",
            b"ctl sig=00112233445566778899AABBCCDDEEFF  nonce=0000000700000001 stop now",
        ),
    ];
    let mut seeds: Vec<_> = plain
        .into_iter()
        .map(|(name, bytes)| (name, bytes.to_vec()))
        .collect();
    seeds.push(("signed-status", signed(0x0000_0007_0000_0000, "status")));
    seeds.push((
        "signed-partition",
        signed(
            0x0000_0007_0000_0001,
            "partition 2,127.0.0.1:9002,[::1]:9005",
        ),
    ));
    seeds.push(("signed-add", signed(u64::MAX, "add 4 127.0.0.1:9004")));
    seeds
}

/// `auth_open` scripts.
pub fn auth_scripts(frames: &BTreeMap<&'static str, Vec<u8>>) -> Vec<(&'static str, Vec<AuthOp>)> {
    let frame = |kind: &str| Bytes(frames.get(kind).cloned().unwrap_or_default());
    vec![
        (
            "seal-open-replay",
            vec![
                AuthOp::Seal {
                    frame: frame("append"),
                },
                AuthOp::Open { frame: 0 },
                AuthOp::Open { frame: 0 },
            ],
        ),
        (
            "reorder-and-tamper",
            vec![
                AuthOp::Seal {
                    frame: frame("vote"),
                },
                AuthOp::Seal {
                    frame: frame("vote"),
                },
                AuthOp::Seal {
                    frame: frame("prevote"),
                },
                AuthOp::Open { frame: 1 },
                AuthOp::OpenTampered {
                    frame: 0,
                    at: 3,
                    xor: 1,
                },
                AuthOp::Open { frame: 0 },
                AuthOp::Open { frame: 2 },
            ],
        ),
        (
            "restart-epochs",
            vec![
                AuthOp::Seal {
                    frame: frame("append-response"),
                },
                AuthOp::Open { frame: 0 },
                AuthOp::Restart {
                    sender: 2,
                    epoch: 2,
                },
                AuthOp::Seal {
                    frame: frame("append-response"),
                },
                AuthOp::Open { frame: 1 },
                AuthOp::OpenForged {
                    sender: 2,
                    epoch: 1,
                    counter: 9,
                },
                AuthOp::OpenForged {
                    sender: 2,
                    epoch: 2,
                    counter: 200,
                },
                AuthOp::OpenForged {
                    sender: 2,
                    epoch: 2,
                    counter: 137,
                },
                AuthOp::OpenForged {
                    sender: 2,
                    epoch: 2,
                    counter: 136,
                },
            ],
        ),
        (
            "many-senders",
            (0..12)
                .map(|sender| AuthOp::OpenForged {
                    sender,
                    epoch: 1,
                    counter: 1,
                })
                .chain([AuthOp::OpenRaw {
                    bytes: frame("timeout-now"),
                }])
                .collect(),
        ),
        (
            // Eight senders fill the guard; three of them leave the membership, and the
            // next three new senders take their windows; one more finds none free.
            "members-leave",
            (1..=8)
                .map(|sender| AuthOp::OpenForged {
                    sender,
                    epoch: 1,
                    counter: 1,
                })
                .chain([AuthOp::Members {
                    mask: !(1 << 2 | 1 << 5 | 1 << 7),
                }])
                .chain((9..=11).map(|sender| AuthOp::OpenForged {
                    sender,
                    epoch: 1,
                    counter: 1,
                }))
                .chain([
                    AuthOp::OpenForged {
                        sender: 2,
                        epoch: 1,
                        counter: 1,
                    },
                    AuthOp::Members { mask: u16::MAX },
                    AuthOp::Seal {
                        frame: frame("vote"),
                    },
                    AuthOp::Open { frame: 0 },
                ])
                .collect(),
        ),
        (
            // Issued, redeemed once, refused again; a forged one; one expired; one pushed
            // out by newer ones.
            "nonces",
            vec![
                AuthOp::NonceIssue { after_ms: 1 },
                AuthOp::NonceRedeem {
                    after_ms: 10,
                    pick: 0,
                    xor: 0,
                },
                AuthOp::NonceRedeem {
                    after_ms: 10,
                    pick: 0,
                    xor: 0,
                },
                AuthOp::NonceRedeem {
                    after_ms: 0,
                    pick: 0,
                    xor: 1,
                },
                AuthOp::NonceIssue { after_ms: 0 },
                AuthOp::NonceRedeem {
                    after_ms: 10_000,
                    pick: 0,
                    xor: 0,
                },
            ]
            .into_iter()
            .chain((0..10).map(|_| AuthOp::NonceIssue { after_ms: 100 }))
            .chain([
                AuthOp::NonceRedeem {
                    after_ms: 0,
                    pick: 9,
                    xor: 0,
                },
                AuthOp::NonceRedeem {
                    after_ms: 0,
                    pick: 7,
                    xor: 0,
                },
            ])
            .collect(),
        ),
    ]
}

/// `node_frames` scripts, each with whether the node must end as goose.
pub fn frame_scripts(
    frames: &BTreeMap<&'static str, Vec<u8>>,
) -> Vec<(&'static str, Vec<Op>, bool)> {
    use crate::single::{ArbBody, ArbEntry, ArbId, ArbLog, ArbMember, Few, Stick};
    let now = ArbId { term: 0, index: 0 };
    let from = |from: u8, term: i8, body: ArbBody| Op::Frame {
        from,
        to: 0,
        term,
        body,
    };
    let from_2 = |term: i8, body: ArbBody| from(2, term, body);
    let accepted = |index: i8, confirmed: bool| ArbBody::AppendResponse {
        sent_at: 0,
        accepted: true,
        confirmed,
        healthy: true,
        index,
        hint: now,
    };
    // Node 1 campaigns and wins with node 2's votes; node 2 confirms its whole (empty) log
    // in the new term, which makes it goose: leaders append nothing at election.
    let win = vec![
        Op::Timeout,
        from_2(1, ArbBody::PreVoteResponse { granted: true }),
        from_2(0, ArbBody::VoteResponse { granted: true }),
        from_2(0, accepted(0, true)),
    ];
    // Then its first heartbeat round saves its own log term (a leader's is deferred to it),
    // which with node 2's confirmation confirms its log, so it may propose; node 3
    // acknowledges without confirming (its log term is not this term), which commits
    // nothing; node 2 confirms; a transfer, and a rejection.
    let mut lead = win.clone();
    lead.extend([
        Op::Timeout,
        Op::Propose { kind: 1, id: 3 },
        from(3, 0, accepted(0, false)),
        Op::Advance { micros: 50_000 },
        from_2(0, accepted(0, true)),
        Op::Transfer { to: Some(1) },
        from_2(
            0,
            ArbBody::AppendResponse {
                sent_at: 0,
                accepted: false,
                confirmed: false,
                healthy: true,
                index: -1,
                hint: now,
            },
        ),
    ]);
    // A follower gets a leader's log in two Appends: the first with more to send (`last`
    // beyond its entries), the second ending at the leader's last index (a whole log: the
    // follower's log term becomes the leader's term); then Appends the validator refuses
    // (a window over the limit, entries ending after `last`), a vote request, a snapshot
    // at the window limit, TimeoutNow and a restart.
    // Entry terms are relative to the node's term when the frame is built: 1 in the first
    // Append (term 0 to 1), 0 after it.
    let entry = |term: i8, kind: u8, id: u8| ArbEntry { term, kind, id };
    let follow = vec![
        from_2(
            1,
            ArbBody::Append {
                prev: ArbId { term: -1, index: 0 },
                commit: 0,
                last: 1,
                stick: Stick::ZERO,
                sent_at: 0,
                entries: Few(vec![entry(1, 0, 0)]),
            },
        ),
        from_2(
            0,
            ArbBody::Append {
                prev: now,
                commit: 1,
                last: 0,
                stick: Stick::ORDINARY,
                sent_at: 0,
                entries: Few(vec![entry(0, 1, 3)]),
            },
        ),
        from_2(
            0,
            ArbBody::Append {
                prev: now,
                commit: 0,
                last: 0,
                stick: Stick::OVER,
                sent_at: 0,
                entries: Few(vec![]),
            },
        ),
        from_2(
            0,
            ArbBody::Append {
                prev: ArbId { term: 0, index: -1 },
                commit: 0,
                last: -1,
                stick: Stick::ORDINARY,
                sent_at: 0,
                entries: Few(vec![entry(0, 1, 3)]),
            },
        ),
        from_2(
            0,
            ArbBody::Vote {
                log: ArbLog { term: 0, last: 0 },
                transfer: false,
            },
        ),
        from_2(
            0,
            ArbBody::Snapshot {
                last: ArbId { term: 0, index: 10 },
                stick: Stick::LIMIT,
                sent_at: 0,
                offset: 0,
                members: Few(vec![
                    ArbMember { id: 0, voter: true },
                    ArbMember { id: 1, voter: true },
                    ArbMember { id: 2, voter: true },
                ]),
                done: true,
            },
        ),
        from_2(0, ArbBody::TimeoutNow),
        Op::Restart,
    ];
    // Elections rank logs by (log term, last index): once the follower holds a whole log
    // of term 1 and its loyalty window has passed, it refuses a longer log of a lower log
    // term and a shorter one of its own, and grants an equal one and a higher log term.
    let votes = vec![
        from_2(
            1,
            ArbBody::Append {
                prev: ArbId { term: -1, index: 0 },
                commit: 1,
                last: 0,
                stick: Stick::ORDINARY,
                sent_at: 0,
                entries: Few(vec![entry(1, 1, 3)]),
            },
        ),
        Op::Advance { micros: 400_000 },
        from(
            3,
            1,
            ArbBody::PreVote {
                log: ArbLog { term: -1, last: 5 },
            },
        ),
        from(
            3,
            1,
            ArbBody::PreVote {
                log: ArbLog { term: 0, last: 0 },
            },
        ),
        from(
            3,
            1,
            ArbBody::Vote {
                log: ArbLog { term: 0, last: -1 },
                transfer: false,
            },
        ),
        from_2(
            0,
            ArbBody::Vote {
                log: ArbLog { term: 1, last: 0 },
                transfer: false,
            },
        ),
    ];
    let faults = vec![
        Op::Raw {
            bytes: Bytes(frames.get("vote").cloned().unwrap_or_default()),
        },
        Op::Raw {
            bytes: Bytes(b"whois-goose".to_vec()),
        },
        Op::Timeout,
        Op::FailStorage,
        from_2(1, ArbBody::PreVoteResponse { granted: true }),
        Op::Restart,
        Op::Timeout,
    ];
    vec![
        ("win-election", win, true),
        ("lead", lead, false),
        ("follow", follow, false),
        ("votes", votes, false),
        ("faults", faults, false),
    ]
}

/// Every seed of every target.
pub fn corpus() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for scenario in scenarios() {
        seeds.push(Seed {
            target: "node_sequences",
            name: scenario.name.to_string(),
            bytes: encode_script(&scenario.setup, &scenario.actions),
        });
    }
    let frames = frames_by_kind();
    for (kind, bytes) in &frames {
        seeds.push(Seed {
            target: "frame_decode",
            name: (*kind).to_string(),
            bytes: bytes.clone(),
        });
    }
    for (name, bytes) in boundary_frames() {
        seeds.push(Seed {
            target: "frame_decode",
            name: name.to_string(),
            bytes,
        });
    }
    for (name, ops) in auth_scripts(&frames) {
        let mut bytes = Vec::new();
        for op in &ops {
            op.encode(&mut bytes);
        }
        seeds.push(Seed {
            target: "auth_open",
            name: name.to_string(),
            bytes,
        });
    }
    for (name, ops, _) in frame_scripts(&frames) {
        let mut bytes = Vec::new();
        for op in &ops {
            op.encode(&mut bytes);
        }
        seeds.push(Seed {
            target: "node_frames",
            name: name.to_string(),
            bytes,
        });
    }
    for (name, bytes) in text_seeds() {
        seeds.push(Seed {
            target: "text_parse",
            name: name.to_string(),
            bytes,
        });
    }
    seeds
}
