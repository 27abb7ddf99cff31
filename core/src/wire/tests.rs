//! Codec proofs: a byte fixture, a round trip of every message kind, the worst-case sizes
//! the limits promise, one crafted input per [`WireError`], and a never-panics property
//! loop over random and mutated frames.

extern crate std;

use std::vec::Vec;

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;
use crate::limits::LOYALTY_WINDOW_MAX;
use crate::limits::{
    ENTRIES_PER_MESSAGE_MAX, ENTRY_SIZE_MAX, MEMBERS_PER_SNAPSHOT_CHUNK, MEMBER_SIZE_MAX,
    MESSAGE_FIXED_SIZE_MAX,
};
use crate::time::{Duration, Instant};
use crate::types::{Entry, EntryId, LogIndex, LogView, Member, Term};

fn id(value: u16) -> NodeId {
    NodeId::new(value).unwrap()
}

/// Id 0, which [`NodeId::new`] refuses but the wire can carry.
fn id_zero() -> NodeId {
    postcard::from_bytes(&[0]).unwrap()
}

fn entry_id(term: u64, index: u64) -> EntryId {
    EntryId {
        term: Term(term),
        index: LogIndex(index),
    }
}

fn log_view(term: u64, last: u64) -> LogView {
    LogView {
        term: Term(term),
        last: LogIndex(last),
    }
}

fn addr_v6_max() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::from([0xFFFF; 8]), u16::MAX))
}

fn member(value: u16, addr: SocketAddr) -> Member {
    Member {
        id: id(value),
        addr,
        voter: true,
    }
}

fn learner_entry(term: u64, value: u16) -> Entry {
    Entry {
        term: Term(term),
        payload: Payload::AddLearner {
            id: id(value),
            addr: addr_v6_max(),
        },
    }
}

fn owned(term: u64, body: Body<Vec<Entry>, Vec<Member>>) -> MessageOwned {
    let body = match body {
        Body::Append {
            prev,
            commit,
            last,
            stick,
            sent_at,
            entries,
        } => Body::Append {
            prev,
            commit,
            last,
            stick,
            sent_at,
            entries: heapless::Vec::from_slice(&entries).unwrap(),
        },
        Body::Snapshot {
            last,
            stick,
            sent_at,
            offset,
            members,
            done,
        } => Body::Snapshot {
            last,
            stick,
            sent_at,
            offset,
            members: heapless::Vec::from_slice(&members).unwrap(),
            done,
        },
        Body::PreVote { log } => Body::PreVote { log },
        Body::PreVoteResponse { granted } => Body::PreVoteResponse { granted },
        Body::Vote { log, transfer } => Body::Vote { log, transfer },
        Body::VoteResponse { granted } => Body::VoteResponse { granted },
        Body::AppendResponse {
            sent_at,
            result,
            healthy,
        } => Body::AppendResponse {
            sent_at,
            result,
            healthy,
        },
        Body::SnapshotResponse {
            sent_at,
            last,
            received,
        } => Body::SnapshotResponse {
            sent_at,
            last,
            received,
        },
        Body::TimeoutNow => Body::TimeoutNow,
    };
    Message {
        term: Term(term),
        body,
    }
}

/// The largest AppendEntries the encoder can build: every varint at its widest, every entry
/// an `AddLearner` of an IPv6 address.
fn largest_append() -> MessageOwned {
    let entries = (0..ENTRIES_PER_MESSAGE_MAX)
        .map(|_| learner_entry(u64::MAX, u16::MAX))
        .collect();
    owned(
        u64::MAX,
        Body::Append {
            // The widest varints whose entries still end at or before `last`.
            prev: entry_id(u64::MAX, u64::MAX - ENTRIES_PER_MESSAGE_MAX as u64),
            commit: LogIndex(u64::MAX),
            last: LogIndex(u64::MAX),
            stick: LOYALTY_WINDOW_MAX,
            sent_at: Instant::from_micros(u64::MAX),
            entries,
        },
    )
}

/// The largest snapshot chunk: a full chunk of IPv6 members with the widest ids.
fn largest_snapshot() -> MessageOwned {
    let members = (0..MEMBERS_PER_SNAPSHOT_CHUNK)
        .map(|i| member(u16::MAX - i as u16, addr_v6_max()))
        .collect();
    owned(
        u64::MAX,
        Body::Snapshot {
            last: entry_id(u64::MAX, u64::MAX),
            stick: LOYALTY_WINDOW_MAX,
            sent_at: Instant::from_micros(u64::MAX),
            offset: u16::MAX,
            members,
            done: true,
        },
    )
}

/// One message of every kind, small values and worst-case values alike.
fn every_kind() -> Vec<MessageOwned> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, 9001));
    let max = u64::MAX;
    let sent_max = Instant::from_micros(max);
    let mut messages = std::vec![
        owned(
            2,
            Body::PreVote {
                log: log_view(1, 7)
            }
        ),
        owned(
            max,
            Body::PreVote {
                log: log_view(max, max)
            }
        ),
        owned(2, Body::PreVoteResponse { granted: true }),
        owned(2, Body::PreVoteResponse { granted: false }),
        owned(
            3,
            Body::Vote {
                log: log_view(2, 9),
                transfer: false
            }
        ),
        owned(
            max,
            Body::Vote {
                log: log_view(max, max),
                transfer: true
            }
        ),
        owned(3, Body::VoteResponse { granted: true }),
        owned(3, Body::VoteResponse { granted: false }),
        owned(
            4,
            Body::Append {
                prev: entry_id(3, 10),
                commit: LogIndex(10),
                last: LogIndex(10),
                stick: Duration::from_millis(150),
                sent_at: Instant::from_millis(1500),
                entries: Vec::new(),
            },
        ),
        owned(
            4,
            Body::Append {
                prev: entry_id(3, 10),
                commit: LogIndex(9),
                last: LogIndex(14),
                stick: Duration::from_millis(150),
                sent_at: Instant::from_millis(1500),
                entries: std::vec![
                    Entry {
                        term: Term(3),
                        payload: Payload::Noop
                    },
                    Entry {
                        term: Term(4),
                        payload: Payload::AddLearner {
                            id: id(6),
                            addr: v4
                        }
                    },
                    Entry {
                        term: Term(4),
                        payload: Payload::Promote { id: id(6) }
                    },
                    Entry {
                        term: Term(4),
                        payload: Payload::Remove { id: id(2) }
                    },
                ],
            },
        ),
        owned(
            4,
            Body::AppendResponse {
                sent_at: Instant::from_millis(1500),
                result: AppendResult::Accepted {
                    match_index: LogIndex(12),
                    confirmed: true,
                },
                healthy: true,
            },
        ),
        owned(
            max,
            Body::AppendResponse {
                sent_at: sent_max,
                result: AppendResult::Rejected {
                    rejected: LogIndex(max),
                    hint: entry_id(max, max),
                },
                healthy: false,
            },
        ),
        owned(
            5,
            Body::Snapshot {
                last: entry_id(4, 20),
                stick: Duration::from_millis(150),
                sent_at: Instant::from_millis(2000),
                offset: 0,
                members: std::vec![
                    member(1, v4),
                    Member {
                        voter: false,
                        ..member(2, v4)
                    }
                ],
                done: false,
            },
        ),
        owned(
            5,
            Body::SnapshotResponse {
                sent_at: Instant::from_millis(2000),
                last: entry_id(4, 20),
                received: 2,
            },
        ),
        owned(
            max,
            Body::SnapshotResponse {
                sent_at: sent_max,
                last: entry_id(max, max),
                received: u16::MAX,
            },
        ),
        owned(6, Body::TimeoutNow),
    ];
    messages.push(largest_append());
    messages.push(largest_snapshot());
    messages
}

fn encoded(message: &MessageOwned) -> Vec<u8> {
    let mut buffer = [0; FRAME_SIZE_MAX];
    let size = encode(id(1), id(u16::MAX), &message.as_ref(), &mut buffer).unwrap();
    buffer[..size].to_vec()
}

fn postcard_size<T: serde::Serialize>(value: &T) -> usize {
    let mut buffer = [0; FRAME_SIZE_MAX];
    postcard::to_slice(value, &mut buffer).unwrap().len()
}

// ---- fixture ----

/// A heartbeat, byte by byte: pins the wire format, so a change to it is a visible diff.
#[test]
fn heartbeat_fixture() {
    let frame = [
        0xD9, 0x02, // magic, version
        0x01, 0x00, 0x02, 0x00, // source 1, target 2
        0x03, // term 3
        0x04, // Body::Append
        0x02, 0x05, // prev term 2, index 5
        0x04, // commit 4
        0x05, // the leader's last index 5
        0xF0, 0x93, 0x09, // loyalty window 150,000 µs (varint)
        0xE8, 0x07, // sent_at 1000 µs (varint)
        0x00, // no entries
    ];
    let message = owned(
        3,
        Body::Append {
            prev: entry_id(2, 5),
            commit: LogIndex(4),
            last: LogIndex(5),
            stick: Duration::from_millis(150),
            sent_at: Instant::from_micros(1000),
            entries: Vec::new(),
        },
    );
    let mut buffer = [0; FRAME_SIZE_MAX];
    let size = encode(id(1), id(2), &message.as_ref(), &mut buffer).unwrap();
    assert_eq!(&buffer[..size], &frame);
    let (header, decoded) = decode(&frame).unwrap();
    assert_eq!(
        header,
        Header {
            source: 1,
            target: 2
        }
    );
    assert_eq!(decoded, message);
}

// ---- round trip ----

/// The variant's position, by an exhaustive match: a new kind fails to compile here until
/// [`every_kind`] covers it.
fn kind<E, M>(body: &Body<E, M>) -> usize {
    match body {
        Body::PreVote { .. } => 0,
        Body::PreVoteResponse { .. } => 1,
        Body::Vote { .. } => 2,
        Body::VoteResponse { .. } => 3,
        Body::Append { .. } => 4,
        Body::AppendResponse { .. } => 5,
        Body::Snapshot { .. } => 6,
        Body::SnapshotResponse { .. } => 7,
        Body::TimeoutNow => 8,
    }
}

#[test]
fn every_kind_round_trips() {
    let messages = every_kind();
    let mut covered = [false; 9];
    for message in &messages {
        covered[kind(&message.body)] = true;
        let frame = encoded(message);
        assert!(frame.len() <= FRAME_SIZE_MAX);
        let (header, decoded) = decode(&frame).unwrap();
        assert_eq!(
            header,
            Header {
                source: 1,
                target: u16::MAX
            }
        );
        assert_eq!(&decoded, message);
    }
    assert_eq!(covered, [true; 9], "one message per Body variant at least");
}

#[test]
fn as_ref_borrows_entries_and_members() {
    let append = largest_append();
    let Body::Append { entries, .. } = &append.body else {
        unreachable!()
    };
    let Body::Append {
        entries: borrowed, ..
    } = append.as_ref().body
    else {
        panic!("an Append stays an Append");
    };
    assert!(core::ptr::eq(borrowed, entries.as_slice()));
    let snapshot = largest_snapshot();
    let Body::Snapshot { members, .. } = &snapshot.body else {
        unreachable!()
    };
    let Body::Snapshot {
        members: borrowed, ..
    } = snapshot.as_ref().body
    else {
        panic!("a Snapshot stays a Snapshot");
    };
    assert!(core::ptr::eq(borrowed, members.as_slice()));
}

#[test]
fn encode_refuses_small_buffers_and_caps_at_the_frame_limit() {
    let message = largest_append();
    let size = encoded(&message).len();
    let mut buffer = [0; 2 * FRAME_SIZE_MAX];
    for short in [0, FRAME_HEADER_SIZE - 1, FRAME_HEADER_SIZE, size - 1] {
        let result = encode(id(1), id(2), &message.as_ref(), &mut buffer[..short]);
        assert_eq!(result, Err(WireError::BufferTooSmall), "buffer of {short}");
    }
    assert_eq!(
        encode(id(1), id(2), &message.as_ref(), &mut buffer[..size]),
        Ok(size)
    );
    // A bigger buffer does not let the encoder go past FRAME_SIZE_MAX.
    let mut entries = std::vec![learner_entry(u64::MAX, u16::MAX); ENTRIES_PER_MESSAGE_MAX * 2];
    entries[0].term = Term(u64::MAX);
    let oversize = Message {
        term: Term(u64::MAX),
        body: Body::Append {
            prev: entry_id(u64::MAX, u64::MAX),
            commit: LogIndex(u64::MAX),
            last: LogIndex(u64::MAX),
            stick: LOYALTY_WINDOW_MAX,
            sent_at: Instant::from_micros(u64::MAX),
            entries: entries.as_slice(),
        },
    };
    let result = encode(id(1), id(2), &oversize, &mut buffer);
    assert_eq!(result, Err(WireError::BufferTooSmall));
}

// ---- worst-case sizes: what limits.rs promises ----

#[test]
fn largest_append_fits_a_datagram_and_its_fixed_part_the_limit() {
    let message = largest_append();
    let frame = encoded(&message);
    let Body::Append { entries, .. } = &message.body else {
        unreachable!()
    };
    let entries_size: usize = entries.iter().map(postcard_size).sum();
    for entry in entries {
        assert_eq!(
            postcard_size(entry),
            ENTRY_SIZE_MAX,
            "the worst entry is the bound"
        );
    }
    let fixed_size = frame.len() - FRAME_HEADER_SIZE - entries_size;
    std::println!(
        "largest append: {} bytes, fixed part {fixed_size} (limit {MESSAGE_FIXED_SIZE_MAX})",
        frame.len()
    );
    assert!(frame.len() <= FRAME_SIZE_MAX);
    assert!(fixed_size <= MESSAGE_FIXED_SIZE_MAX);
    assert_eq!(decode(&frame).unwrap().1, message);
}

#[test]
fn largest_snapshot_chunk_fits_a_datagram_and_its_fixed_part_the_limit() {
    let message = largest_snapshot();
    let frame = encoded(&message);
    let Body::Snapshot { members, .. } = &message.body else {
        unreachable!()
    };
    let members_size: usize = members.iter().map(postcard_size).sum();
    for member in members {
        assert_eq!(
            postcard_size(member),
            MEMBER_SIZE_MAX,
            "the worst member is the bound"
        );
    }
    let fixed_size = frame.len() - FRAME_HEADER_SIZE - members_size;
    std::println!(
        "largest snapshot chunk: {} bytes, fixed part {fixed_size} (limit {MESSAGE_FIXED_SIZE_MAX})",
        frame.len()
    );
    assert!(frame.len() <= FRAME_SIZE_MAX);
    assert!(fixed_size <= MESSAGE_FIXED_SIZE_MAX);
    assert_eq!(decode(&frame).unwrap().1, message);
}

#[test]
fn every_kind_fixed_part_is_within_the_limit() {
    for message in every_kind() {
        let (entries_size, members_size) = match &message.body {
            Body::Append { entries, .. } => (entries.iter().map(postcard_size).sum(), 0),
            Body::Snapshot { members, .. } => (0, members.iter().map(postcard_size).sum()),
            _ => (0, 0),
        };
        let fixed_size = encoded(&message).len() - FRAME_HEADER_SIZE - entries_size - members_size;
        assert!(
            fixed_size <= MESSAGE_FIXED_SIZE_MAX,
            "{message:?}: {fixed_size}"
        );
    }
}

// ---- one crafted input per WireError ----

fn frame_of(term: u64, body: Body<Vec<Entry>, Vec<Member>>) -> Vec<u8> {
    encoded(&owned(term, body))
}

fn heartbeat_frame() -> Vec<u8> {
    frame_of(
        3,
        Body::Append {
            prev: entry_id(2, 5),
            commit: LogIndex(4),
            last: LogIndex(5),
            stick: Duration::from_millis(150),
            sent_at: Instant::from_micros(1000),
            entries: Vec::new(),
        },
    )
}

#[test]
fn too_short() {
    let frame = heartbeat_frame();
    for size in 0..FRAME_HEADER_SIZE {
        assert_eq!(
            decode(&frame[..size]),
            Err(WireError::TooShort),
            "{size} bytes"
        );
    }
    // A bare header is long enough, but has no message.
    assert_eq!(
        decode(&frame[..FRAME_HEADER_SIZE]),
        Err(WireError::Undecodable)
    );
}

#[test]
fn too_long() {
    let mut frame = [0; FRAME_SIZE_MAX + 1];
    let size = encode(id(1), id(2), &largest_append().as_ref(), &mut frame).unwrap();
    assert!(size <= FRAME_SIZE_MAX);
    assert_eq!(decode(&frame), Err(WireError::TooLong));
    assert_eq!(parse_header(&frame), Err(WireError::TooLong));
    // Length is checked before anything else, even before the magic.
    assert_eq!(decode(&[0; FRAME_SIZE_MAX + 1]), Err(WireError::TooLong));
}

#[test]
fn bad_magic() {
    let mut frame = heartbeat_frame();
    for magic in [0x00, b'w', 0x80, MAGIC ^ 1, 0xFF] {
        frame[0] = magic;
        assert_eq!(decode(&frame), Err(WireError::BadMagic), "magic {magic:#x}");
    }
}

#[test]
fn bad_version() {
    let mut frame = heartbeat_frame();
    for version in [0, VERSION + 1, 0xFF] {
        frame[1] = version;
        assert_eq!(
            decode(&frame),
            Err(WireError::BadVersion),
            "version {version}"
        );
    }
}

#[test]
fn undecodable_body() {
    let mut frame = heartbeat_frame();
    frame[FRAME_HEADER_SIZE + 1] = 9; // Body's tags are 0..=8
    assert_eq!(decode(&frame), Err(WireError::Undecodable));
    // Truncated anywhere inside the body.
    let frame = encoded(&largest_append());
    for size in FRAME_HEADER_SIZE..frame.len() {
        assert_eq!(
            decode(&frame[..size]),
            Err(WireError::Undecodable),
            "{size} bytes"
        );
    }
    // A varint longer than a u64 allows.
    let mut frame = heartbeat_frame()[..FRAME_HEADER_SIZE].to_vec();
    frame.extend_from_slice(&[0xFF; 11]);
    assert_eq!(decode(&frame), Err(WireError::Undecodable));
}

#[test]
fn undecodable_over_capacity() {
    // One entry beyond ENTRIES_PER_MESSAGE_MAX: fits the datagram, not the decoder.
    let entries =
        std::vec![Entry { term: Term(1), payload: Payload::Noop }; ENTRIES_PER_MESSAGE_MAX + 1];
    let message = Message {
        term: Term(1),
        body: Body::Append {
            prev: entry_id(1, 1),
            commit: LogIndex(1),
            last: LogIndex(10),
            stick: Duration::from_millis(150),
            sent_at: Instant::ZERO,
            entries: entries.as_slice(),
        },
    };
    let mut buffer = [0; FRAME_SIZE_MAX];
    let size = encode(id(1), id(2), &message, &mut buffer).unwrap();
    assert_eq!(decode(&buffer[..size]), Err(WireError::Undecodable));
    let members = std::vec![member(1, SocketAddr::from((Ipv4Addr::LOCALHOST, 1))); MEMBERS_PER_SNAPSHOT_CHUNK + 1];
    let message: MessageRef<'_> = Message {
        term: Term(1),
        body: Body::Snapshot {
            last: entry_id(1, 1),
            stick: Duration::from_millis(150),
            sent_at: Instant::ZERO,
            offset: 0,
            members: members.as_slice(),
            done: true,
        },
    };
    let size = encode(id(1), id(2), &message, &mut buffer).unwrap();
    assert_eq!(decode(&buffer[..size]), Err(WireError::Undecodable));
}

#[test]
fn trailing_bytes() {
    for message in every_kind() {
        let mut frame = encoded(&message);
        if frame.len() == FRAME_SIZE_MAX {
            continue;
        }
        frame.push(0);
        assert_eq!(decode(&frame), Err(WireError::Undecodable), "{message:?}");
    }
}

fn append_frame(term: u64, prev: EntryId, entries: Vec<Entry>) -> Vec<u8> {
    frame_of(
        term,
        Body::Append {
            last: LogIndex(prev.index.0 + entries.len() as u64),
            prev,
            commit: LogIndex(0),
            stick: Duration::from_millis(150),
            sent_at: Instant::ZERO,
            entries,
        },
    )
}

fn noop(term: u64) -> Entry {
    Entry {
        term: Term(term),
        payload: Payload::Noop,
    }
}

#[test]
fn invalid_entry_terms_decreasing() {
    let frame = append_frame(5, entry_id(2, 1), std::vec![noop(3), noop(4), noop(3)]);
    assert_eq!(decode(&frame), Err(WireError::Invalid));
    // Below prev's term counts as decreasing too.
    let frame = append_frame(5, entry_id(3, 1), std::vec![noop(2)]);
    assert_eq!(decode(&frame), Err(WireError::Invalid));
    // Equal terms are fine.
    let frame = append_frame(5, entry_id(3, 1), std::vec![noop(3), noop(3), noop(5)]);
    assert!(decode(&frame).is_ok());
}

#[test]
fn invalid_entry_term_above_message_term() {
    let frame = append_frame(5, entry_id(2, 1), std::vec![noop(5), noop(6)]);
    assert_eq!(decode(&frame), Err(WireError::Invalid));
    let frame = append_frame(5, entry_id(6, 1), Vec::new());
    assert_eq!(
        decode(&frame),
        Err(WireError::Invalid),
        "prev above the term"
    );
}

#[test]
fn invalid_zero_node_id_in_payload() {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    for payload in [
        Payload::AddLearner {
            id: id_zero(),
            addr,
        },
        Payload::Promote { id: id_zero() },
        Payload::Remove { id: id_zero() },
    ] {
        let frame = append_frame(
            5,
            entry_id(2, 1),
            std::vec![Entry {
                term: Term(5),
                payload
            }],
        );
        assert_eq!(decode(&frame), Err(WireError::Invalid), "{payload:?}");
    }
}

fn snapshot_frame(term: u64, last: EntryId, members: Vec<Member>) -> Vec<u8> {
    frame_of(
        term,
        Body::Snapshot {
            last,
            stick: Duration::from_millis(150),
            sent_at: Instant::ZERO,
            offset: 0,
            members,
            done: true,
        },
    )
}

#[test]
fn invalid_snapshot_members() {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 1));
    let duplicate = std::vec![member(1, addr), member(2, addr), member(1, addr)];
    let frame = snapshot_frame(5, entry_id(5, 9), duplicate);
    assert_eq!(decode(&frame), Err(WireError::Invalid), "duplicate member");
    let zero = std::vec![
        member(1, addr),
        Member {
            id: id_zero(),
            addr,
            voter: true
        }
    ];
    let frame = snapshot_frame(5, entry_id(5, 9), zero);
    assert_eq!(decode(&frame), Err(WireError::Invalid), "zero member id");
    let frame = snapshot_frame(5, entry_id(6, 9), std::vec![member(1, addr)]);
    assert_eq!(
        decode(&frame),
        Err(WireError::Invalid),
        "last above the term"
    );
}

#[test]
fn invalid_vote_requests_from_the_future() {
    let frame = frame_of(
        5,
        Body::PreVote {
            log: log_view(6, 1),
        },
    );
    assert_eq!(decode(&frame), Err(WireError::Invalid));
    let frame = frame_of(
        5,
        Body::Vote {
            log: log_view(6, 1),
            transfer: false,
        },
    );
    assert_eq!(decode(&frame), Err(WireError::Invalid));
}

// ---- property: decoding never panics ----

/// xorshift64 (Marsaglia 2003): enough randomness for a fuzz loop, no dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

fn mutate(rand: &mut XorShift, frame: &mut Vec<u8>) {
    for _ in 0..=rand.below(4) {
        match rand.below(6) {
            0 if !frame.is_empty() => {
                let i = rand.below(frame.len());
                frame[i] ^= 1 << rand.below(8);
            }
            1 if !frame.is_empty() => {
                let i = rand.below(frame.len());
                frame[i] = rand.next() as u8;
            }
            2 => {
                let size = rand.below(frame.len() + 1);
                frame.truncate(size);
            }
            3 => {
                let i = rand.below(frame.len() + 1);
                frame.insert(i, rand.next() as u8);
            }
            4 if !frame.is_empty() => {
                let i = rand.below(frame.len());
                frame.remove(i);
            }
            _ => {
                // Interesting values: varint continuations, the maxima, zeros.
                let i = rand.below(frame.len() + 1);
                let value = [0x00, 0x7F, 0x80, 0xFF, 0x01][rand.below(5)];
                frame.insert(i, value);
            }
        }
    }
}

/// A decoded message satisfies the gateway's invariants and re-encodes to a frame that
/// decodes to the same message.
fn check_decoded(header: Header, message: &MessageOwned) {
    assert_eq!(validate(message), Ok(()));
    let (Some(source), Some(target)) = (NodeId::new(header.source), NodeId::new(header.target))
    else {
        return;
    };
    let mut buffer = [0; FRAME_SIZE_MAX];
    let size = encode(source, target, &message.as_ref(), &mut buffer).unwrap();
    assert_eq!(decode(&buffer[..size]), Ok((header, message.clone())));
}

#[test]
fn decoding_random_and_mutated_frames_never_panics() {
    const ITERATIONS: usize = 100_000;
    let valid: Vec<Vec<u8>> = every_kind().iter().map(encoded).collect();
    let mut rand = XorShift(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut errors) = (0usize, [0usize; 7]);
    for iteration in 0..ITERATIONS {
        let frame = if iteration % 2 == 0 {
            let mut frame: Vec<u8> = (0..rand.below(FRAME_SIZE_MAX + 8))
                .map(|_| rand.next() as u8)
                .collect();
            // Mostly past the header checks, so the body decoder sees the bytes.
            if frame.len() >= 2 && rand.below(8) != 0 {
                frame[0] = MAGIC;
                frame[1] = VERSION;
            }
            frame
        } else {
            let mut frame = valid[rand.below(valid.len())].clone();
            mutate(&mut rand, &mut frame);
            frame
        };
        match decode(&frame) {
            Ok((header, message)) => {
                accepted += 1;
                check_decoded(header, &message);
            }
            Err(error) => errors[error as usize] += 1,
        }
    }
    std::println!("{ITERATIONS} frames: {accepted} accepted, errors by kind {errors:?}");
    // The loop reaches the decoder's depths, not only the header checks.
    assert!(accepted > 1000);
    assert!(errors[WireError::Undecodable as usize] > 1000);
    assert!(errors[WireError::Invalid as usize] > 0);
}
