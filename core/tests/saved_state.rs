//! The persisted state's gateway: [`SavedState::decode`] takes back exactly what
//! [`PersistentState::encode`] wrote, and refuses truncated, garbage, over-capacity and
//! inconsistent bytes with a typed error, never a panic.

use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use goose_core::storage::state_size_max;
use goose_core::{
    Duration, Entry, EntryId, LogIndex, Member, NodeId, Payload, PersistentState, SavedState,
    StateError, Term,
};

/// The embedded configuration's capacities.
type Saved = SavedState<5, 32>;

fn id(value: u16) -> NodeId {
    NodeId::new(value).unwrap()
}

/// Id 0, which [`NodeId::new`] refuses but corrupt bytes can hold.
fn id_zero() -> NodeId {
    postcard::from_bytes(&[0]).unwrap()
}

fn member(value: u16) -> Member {
    Member {
        id: id(value),
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9000 + value)),
        voter: value <= 3,
    }
}

fn entry(term: u64, payload: Payload) -> Entry {
    Entry {
        term: Term(term),
        payload,
    }
}

fn snapshot(term: u64, index: u64) -> EntryId {
    EntryId {
        term: Term(term),
        index: LogIndex(index),
    }
}

struct Fixture {
    term: Term,
    voted_for: Option<NodeId>,
    log_term: Term,
    snapshot: EntryId,
    members: Vec<Member>,
    entries: Vec<Entry>,
}

impl Fixture {
    fn valid() -> Self {
        let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, u16::MAX));
        Self {
            term: Term(7),
            voted_for: Some(id(2)),
            log_term: Term(6),
            snapshot: snapshot(3, 10),
            members: (1..=5).map(member).collect(),
            entries: vec![
                entry(3, Payload::Noop),
                entry(5, Payload::Noop),
                entry(
                    5,
                    Payload::AddLearner {
                        id: id(9),
                        addr: v6,
                    },
                ),
                entry(6, Payload::Promote { id: id(9) }),
                entry(7, Payload::Remove { id: id(4) }),
            ],
        }
    }

    fn encode(&self) -> Vec<u8> {
        let state = PersistentState {
            id: id(1),
            term: self.term,
            voted_for: self.voted_for,
            log_term: self.log_term,
            stick: Duration::from_millis(300),
            commit: self.snapshot.index,
            snapshot: self.snapshot,
            snapshot_members: &self.members,
            entries: &self.entries,
        };
        let mut buffer = [0; state_size_max(64, 64)];
        state.encode(&mut buffer).unwrap().to_vec()
    }
}

#[test]
fn round_trips_a_valid_state() {
    let fixture = Fixture::valid();
    let saved = Saved::decode(&fixture.encode()).unwrap();
    assert_eq!(saved.term, fixture.term);
    assert_eq!(saved.voted_for, fixture.voted_for);
    assert_eq!(saved.log_term, fixture.log_term);
    assert_eq!(saved.stick, Duration::from_millis(300));
    assert_eq!(saved.snapshot, fixture.snapshot);
    assert_eq!(
        saved.snapshot_members.as_slice(),
        fixture.members.as_slice()
    );
    assert_eq!(saved.entries.as_slice(), fixture.entries.as_slice());
}

#[test]
fn round_trips_the_empty_state_and_a_full_one() {
    let empty = Fixture {
        term: Term(0),
        voted_for: None,
        log_term: Term(0),
        snapshot: EntryId::default(),
        members: Vec::new(),
        entries: Vec::new(),
    };
    let saved = Saved::decode(&empty.encode()).unwrap();
    assert_eq!(saved.term, Term(0));
    assert!(saved.entries.is_empty());
    // Every varint at its widest, every capacity used.
    let v6 = SocketAddr::from((Ipv6Addr::from([0xFFFF; 8]), u16::MAX));
    let full = Fixture {
        term: Term(u64::MAX),
        voted_for: Some(id(u16::MAX)),
        log_term: Term(u64::MAX),
        snapshot: snapshot(u64::MAX, u64::MAX),
        members: (0..5)
            .map(|i| Member {
                id: id(u16::MAX - i),
                addr: v6,
                voter: true,
            })
            .collect(),
        entries: vec![
            entry(
                u64::MAX,
                Payload::AddLearner {
                    id: id(u16::MAX),
                    addr: v6
                }
            );
            32
        ],
    };
    let bytes = full.encode();
    assert!(
        bytes.len() <= state_size_max(5, 32),
        "{} bytes",
        bytes.len()
    );
    let saved = Saved::decode(&bytes).unwrap();
    assert_eq!(saved.entries.len(), 32);
    assert_eq!(saved.snapshot_members.as_slice(), full.members.as_slice());
}

#[test]
fn refuses_truncated_and_extended_bytes() {
    let bytes = Fixture::valid().encode();
    for size in 0..bytes.len() {
        let result = Saved::decode(&bytes[..size]);
        assert_eq!(result, Err(StateError::Undecodable), "truncated to {size}");
    }
    for extra in [0x00, 0x01, 0xFF] {
        let mut longer = bytes.clone();
        longer.push(extra);
        assert_eq!(Saved::decode(&longer), Err(StateError::Undecodable));
    }
}

#[test]
fn refuses_more_than_this_build_holds() {
    let mut fixture = Fixture::valid();
    fixture.members = (1..=6).map(member).collect();
    assert_eq!(
        Saved::decode(&fixture.encode()),
        Err(StateError::Undecodable)
    );
    // The same bytes are fine for a bigger build.
    assert!(SavedState::<64, 64>::decode(&fixture.encode()).is_ok());
    let mut fixture = Fixture::valid();
    fixture.entries = vec![entry(7, Payload::Noop); 33];
    assert_eq!(
        Saved::decode(&fixture.encode()),
        Err(StateError::Undecodable)
    );
}

#[test]
fn refuses_inconsistent_states() {
    type Edit = fn(&mut Fixture);
    let cases: [(&str, Edit); 9] = [
        ("the log term above the term", |f| f.log_term = Term(8)),
        ("entry terms decrease", |f| f.entries[3].term = Term(4)),
        ("an entry above the term", |f| f.entries[4].term = Term(8)),
        ("an entry below the snapshot", |f| {
            f.entries[0].term = Term(2)
        }),
        ("the snapshot above the term", |f| {
            f.snapshot.term = Term(8);
            f.entries.clear();
        }),
        ("a vote for id 0", |f| f.voted_for = Some(id_zero())),
        ("a member with id 0", |f| f.members[2].id = id_zero()),
        ("a duplicate member", |f| f.members[4].id = id(1)),
        ("a duplicate member, adjacent", |f| f.members[1].id = id(1)),
    ];
    for (name, edit) in cases {
        let mut fixture = Fixture::valid();
        edit(&mut fixture);
        let result = Saved::decode(&fixture.encode());
        assert_eq!(result, Err(StateError::Inconsistent), "{name}");
    }
}

#[test]
fn garbage_never_panics_and_never_passes_unchecked() {
    let valid = Fixture::valid().encode();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut accepted = 0;
    for iteration in 0..20_000 {
        let bytes: Vec<u8> = if iteration % 2 == 0 {
            let size = (next() % 160) as usize;
            (0..size).map(|_| next() as u8).collect()
        } else {
            let mut bytes = valid.clone();
            for _ in 0..=next() % 3 {
                let i = (next() as usize) % bytes.len();
                bytes[i] = next() as u8;
            }
            bytes
        };
        if let Ok(saved) = Saved::decode(&bytes) {
            accepted += 1;
            // Whatever passes satisfies the invariants the node trusts.
            assert!(saved.voted_for.is_none_or(|id| id.is_valid()));
            assert!(saved.snapshot.term <= saved.term);
            assert!(saved.log_term <= saved.term);
            let terms = saved.entries.iter().map(|e| e.term);
            assert!(terms.clone().all(|t| t <= saved.term));
            assert!(terms.clone().zip(terms.skip(1)).all(|(a, b)| a <= b));
        }
    }
    assert!(accepted > 0, "some mutations keep the state valid");
}

/// The first format, as a node of wire version 1 saved it: no log term, no loyalty window.
#[derive(serde::Serialize)]
struct FirstFormat<'a> {
    id: NodeId,
    term: Term,
    voted_for: Option<NodeId>,
    commit: LogIndex,
    snapshot: EntryId,
    snapshot_members: &'a [Member],
    entries: &'a [Entry],
}

impl Fixture {
    /// The same state as the first format wrote it.
    fn first_format(&self) -> FirstFormat<'_> {
        FirstFormat {
            id: id(1),
            term: self.term,
            voted_for: self.voted_for,
            commit: self.snapshot.index,
            snapshot: self.snapshot,
            snapshot_members: &self.members,
            entries: &self.entries,
        }
    }
}

fn first_format_bytes(first: &FirstFormat<'_>) -> Vec<u8> {
    let mut buffer = [0; state_size_max(64, 64)];
    postcard::to_slice(first, &mut buffer).unwrap().to_vec()
}

#[test]
fn the_first_format_is_read_with_the_log_term_of_its_last_entry() {
    let fixture = Fixture::valid();
    let first = fixture.first_format();
    let bytes = first_format_bytes(&first);
    let saved = Saved::decode_first_format(&bytes).unwrap();
    // Version 1 ranked logs by their last entry's term: 7 here.
    assert_eq!(saved.log_term, Term(7));
    assert_eq!(saved.stick, Duration::ZERO);
    assert_eq!(saved.term, fixture.term);
    assert_eq!(saved.entries.as_slice(), fixture.entries.as_slice());
    // No entries: the snapshot's term.
    let first = FirstFormat {
        entries: &[],
        ..first
    };
    let bytes = first_format_bytes(&first);
    let saved = Saved::decode_first_format(&bytes).unwrap();
    assert_eq!(saved.log_term, fixture.snapshot.term);
    // The current format is not the first one, nor the reverse.
    assert!(Saved::decode_first_format(&Fixture::valid().encode()).is_err());
    assert!(Saved::decode(&bytes).is_err());
}

/// The bytes a mutation test tries: `bytes` cut at every length, and with every byte set to
/// each of a few values that move varints, tags and lengths.
fn mutations(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = (0..=bytes.len()).map(|n| bytes[..n].to_vec()).collect();
    out.push([bytes, &[0]].concat());
    for at in 0..bytes.len() {
        let was = bytes[at];
        for value in [0, 1, 2, 5, 0x7F, 0x80, 0xFF, was ^ 1, was.wrapping_add(1)] {
            let mut changed = bytes.to_vec();
            changed[at] = value;
            out.push(changed);
        }
    }
    out
}

/// `decode` reads the state's lists in place rather than through the derived
/// `Deserialize`: it must take exactly the bytes that one takes, to the same state.
#[test]
fn decode_takes_exactly_what_the_derived_deserialize_takes() {
    let (mut accepted, mut refused) = (0, 0);
    for bytes in mutations(&Fixture::valid().encode()) {
        let derived = postcard::take_from_bytes::<Saved>(&bytes)
            .ok()
            .filter(|(_, rest)| rest.is_empty())
            .map(|(state, _)| state);
        match Saved::decode(&bytes) {
            Ok(state) => {
                assert_eq!(Some(state), derived, "{bytes:?}");
                accepted += 1;
            }
            Err(StateError::Inconsistent) => assert!(derived.is_some(), "{bytes:?}"),
            Err(StateError::Undecodable) => {
                assert_eq!(derived, None, "{bytes:?}");
                refused += 1;
            }
        }
    }
    assert!(
        accepted > 0 && refused > 0,
        "{accepted} accepted, {refused} refused"
    );
}

/// The first format, read in place too, against a derived decoding of its fields.
#[test]
fn the_first_format_takes_exactly_what_a_derived_deserialize_takes() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Derived {
        id: NodeId,
        term: Term,
        voted_for: Option<NodeId>,
        commit: LogIndex,
        snapshot: EntryId,
        snapshot_members: heapless::Vec<Member, 5>,
        entries: heapless::Vec<Entry, 32>,
    }
    let fixture = Fixture::valid();
    let first = fixture.first_format();
    let mut accepted = 0;
    for bytes in mutations(&first_format_bytes(&first)) {
        let derived = postcard::take_from_bytes::<Derived>(&bytes)
            .ok()
            .filter(|(_, rest)| rest.is_empty())
            .map(|(state, _)| state);
        match Saved::decode_first_format(&bytes) {
            Ok(state) => {
                let derived = derived.unwrap_or_else(|| panic!("{bytes:?}"));
                assert_eq!(
                    (state.id, state.term, state.voted_for, state.commit),
                    (derived.id, derived.term, derived.voted_for, derived.commit)
                );
                assert_eq!(state.snapshot, derived.snapshot);
                assert_eq!(state.snapshot_members, derived.snapshot_members);
                assert_eq!(state.entries, derived.entries);
                accepted += 1;
            }
            Err(StateError::Inconsistent) => assert!(derived.is_some(), "{bytes:?}"),
            Err(StateError::Undecodable) => assert_eq!(derived, None, "{bytes:?}"),
        }
    }
    assert!(accepted > 0);
}
