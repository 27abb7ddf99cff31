//! Every capacity of the core, with why it is that size.
//!
//! Capacities that only affect one node's memory are const generics of
//! [`crate::Node`] (`MEMBERS`, `LOG`), so a desktop node and a 64 KiB board can choose
//! differently; the defaults are here. Capacities that shape the wire are plain constants:
//! every node of a mixed flock must agree on them.

/// Default member capacity (voters + learners) of a desktop node. An elastic flock runs
/// 5 voters and up to 40 learners (`bench_elastic` measures one); 64 leaves room for growth and stays a power of two.
pub const MEMBERS_MAX: usize = 64;

/// Default log capacity of a desktop node. Elections append nothing; each membership change
/// appends one entry. 64 entries hold a long history of changes before the committed prefix
/// is compacted into the snapshot, so lagging followers mostly catch up from the log rather
/// than by snapshot.
pub const LOG_ENTRIES_MAX: usize = 64;

/// Member capacity of the small embedded configuration (a 5-node flock).
pub const EMBEDDED_MEMBERS_MAX: usize = 5;

/// Log capacity of the small embedded configuration.
pub const EMBEDDED_LOG_ENTRIES_MAX: usize = 32;

/// Entries carried by one AppendEntries. An entry encodes to at most
/// [`ENTRY_SIZE_MAX`] bytes, so 8 entries stay far below the datagram limit.
pub const ENTRIES_PER_MESSAGE_MAX: usize = 8;

/// Members carried by one InstallSnapshot chunk. A member encodes to at most
/// [`MEMBER_SIZE_MAX`] bytes; 8 of them fit in a datagram with room for the header.
pub const MEMBERS_PER_SNAPSHOT_CHUNK: usize = 8;

/// The largest datagram a node sends or accepts: the IPv4 size that is never fragmented
/// (576-byte minimum reassembly buffer − 60-byte IP header − 8-byte UDP header).
pub const FRAME_SIZE_MAX: usize = 508;

/// Frame header: magic, version, source id (2), target id (2).
pub const FRAME_HEADER_SIZE: usize = 6;

/// Worst-case postcard size of one `SocketAddr`: variant tag (1), IPv6 address (16),
/// port varint (3).
pub const ADDR_SIZE_MAX: usize = 1 + 16 + 3;

/// Worst-case postcard size of one [`crate::Member`]: id varint (3), address, voter (1).
pub const MEMBER_SIZE_MAX: usize = 3 + ADDR_SIZE_MAX + 1;

/// Worst-case postcard size of one [`crate::Entry`]: term varint (10), payload tag (1),
/// id varint (3), address.
pub const ENTRY_SIZE_MAX: usize = 10 + 1 + 3 + ADDR_SIZE_MAX;

/// Worst-case size of a message's fixed fields (term, kind, entry ids, commit index,
/// timestamps, flags and counts, each a worst-case varint). 96 bytes is an upper bound,
/// checked by the wire tests against the largest message the encoder can build.
pub const MESSAGE_FIXED_SIZE_MAX: usize = 96;

/// The number of events (role and term changes) the core buffers for [`crate::Node::poll_event`];
/// when full, the oldest is dropped and counted. A caller that polls after every input never
/// sees more than three.
pub const EVENTS_MAX: usize = 8;

/// The longest loyalty window a node accepts: its own `election_timeout_min`, or the one a
/// leader's frame asks its followers to honour. A minute is far beyond any sane election
/// timeout; the bound keeps a corrupt frame from silencing a node's vote for good.
pub const LOYALTY_WINDOW_MAX: crate::time::Duration = crate::time::Duration::from_millis(60_000);

/// Membership changes may not be proposed while this many entries are uncommitted: a leader
/// that cannot commit must not grow its log without bound.
pub const UNCOMMITTED_ENTRIES_MAX: usize = 4;

const _: () = assert!(
    FRAME_HEADER_SIZE + MESSAGE_FIXED_SIZE_MAX + ENTRIES_PER_MESSAGE_MAX * ENTRY_SIZE_MAX
        <= FRAME_SIZE_MAX
);
const _: () = assert!(
    FRAME_HEADER_SIZE + MESSAGE_FIXED_SIZE_MAX + MEMBERS_PER_SNAPSHOT_CHUNK * MEMBER_SIZE_MAX
        <= FRAME_SIZE_MAX
);
const _: () = assert!(ENTRIES_PER_MESSAGE_MAX <= EMBEDDED_LOG_ENTRIES_MAX);
const _: () = assert!(UNCOMMITTED_ENTRIES_MAX < EMBEDDED_LOG_ENTRIES_MAX);
const _: () = assert!(EMBEDDED_MEMBERS_MAX <= MEMBERS_MAX);
