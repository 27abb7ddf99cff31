//! # goose-embedded: the Duck Duck Goose node for microcontrollers
//!
//! The very same allocation-free Raft core as the desktop node, driven over
//! [smoltcp](https://docs.rs/smoltcp) instead of an operating system:
//!
//! - [`Board`] owns one smoltcp [`Interface`](smoltcp::iface::Interface), one UDP socket and
//!   one core [`Node`](goose_core::Node) with room for [`MEMBERS_MAX`] members and
//!   [`LOG_ENTRIES_MAX`] entries. It is generic over any [`smoltcp::phy::Device`] and reads
//!   time from any [`Clock`]; it answers peer frames, `whois-goose` and `ctl` with the
//!   core's [`Service`](goose_core::service::Service), the same code as the desktop node
//!   (the contract's "One UDP port per node").
//! - [`store`] keeps term, vote and log through the core's [`Storage`](goose_core::Storage)
//!   in a sequential-storage map on any `embedded_storage` [`NorFlash`](embedded_storage::nor_flash::NorFlash).
//! - [`flash`] has the flashes this repository uses: [`flash::MemFlash`] for tests and
//!   [`flash::FileFlash`], a flash kept in a host file (the QEMU firmware reaches it through
//!   semihosting).
//! - [`args`] parses and writes the board's command line and turns it into a
//!   [`BoardConfig`]; [`qemu`] is the QEMU command line a launcher runs. Both come from the
//!   small `goose-board-args` crate, which a launcher uses without this one.
//!
//! Nothing here allocates: every buffer is a field of [`Buffers`], [`Payloads`], [`Board`]
//! or [`store::FlashStore`], with its size a named constant below, and the firmware keeps
//! them all in `static`s.
//!
//! ## Driving a board
//!
//! ```text
//! let board = Board::new(config, &mut device, buffers, payloads, store, clock.now())?;
//! loop {
//!     let wake = board.poll(&mut device, &clock);   // frames in, replies and peer frames out
//!     while let Some(event) = board.poll_event() { /* log; Event::Failed: halt */ }
//!     sleep until `wake` or the next frame (the firmware: WFI until the next 1 ms tick)
//! }
//! ```
//!
//! ## Addresses: the host's view and the board's
//!
//! Members are configured as the host sees them (`127.0.0.1:<port>`), so every node of a
//! mixed flock shares one membership. A board cannot reach 127.0.0.1: it sends to
//! [`BoardConfig::host`] (QEMU slirp's 10.0.2.2, which is the host's loopback) at the same
//! port. Control is trusted from that address, the board's equivalent of the desktop node's
//! "loopback only" rule; anyone else needs `ctl token=T …` when a token is configured. A
//! peer is always identified by the id in its frame, never by the source address (slirp
//! rewrites it).
#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod args;
mod board;
pub mod flash;
mod step;
pub mod store;

pub use goose_board_args::{qemu, MEMBERS_MAX, TOKEN_SIZE_MAX};

pub use board::{
    check_node, Board, BoardConfig, BoardError, BoardNode, BoardStats, Buffers, Clock, Payloads,
    Prepared,
};
pub use step::{Halt, EVENTS_PER_STEP_MAX};

use goose_board_args::KEY_FILE_SIZE_MAX;
use goose_core::auth::key::KEY_HEX_SIZE;
use goose_core::limits::{EMBEDDED_LOG_ENTRIES_MAX, FRAME_SIZE_MAX};
use goose_core::storage::state_size_max;

/// Log entries a board holds before compacting: the core's embedded configuration.
pub const LOG_ENTRIES_MAX: usize = EMBEDDED_LOG_ENTRIES_MAX;

/// The largest encoded persistent state at [`MEMBERS_MAX`] and [`LOG_ENTRIES_MAX`].
pub const STATE_SIZE_MAX: usize = state_size_max(MEMBERS_MAX, LOG_ENTRIES_MAX);

/// The largest UDP payload a board sends or accepts: what fits one Ethernet frame
/// (1500-byte MTU − 20-byte IPv4 header − 8-byte UDP header). Peer frames are at most
/// [`FRAME_SIZE_MAX`] and text replies at most [`REPLY_SIZE_MAX`]; anything longer that
/// arrives is dropped by the driver or smoltcp, never fragmented or reassembled.
pub const DATAGRAM_SIZE_MAX: usize = 1472;

/// The largest Ethernet frame without its FCS (14-byte header + 1500-byte MTU): the size of
/// a driver's frame buffers.
pub const ETHERNET_FRAME_SIZE_MAX: usize = 1514;

/// Datagrams the UDP socket queues for reading. [`Board::poll`] moves one frame at a time
/// into the socket and empties it before the next, so one is in it at most; the second
/// slot is slack.
pub const UDP_RX_DATAGRAMS_MAX: usize = 2;

/// Bytes of the socket's receive ring: one of the largest datagrams (an empty ring starts
/// over at its beginning, so one always fits). Datagrams are handled where they lie in it.
pub const UDP_RX_BUFFER_SIZE: usize = DATAGRAM_SIZE_MAX;

/// Datagrams the UDP socket queues for sending. A leader sends one frame per peer per
/// heartbeat (4 in a 5-node flock) plus a reply; when the queue is full the board flushes
/// it to the device and retries once before counting a send error.
pub const UDP_TX_DATAGRAMS_MAX: usize = 8;

/// Bytes of the socket's send ring: [`UDP_TX_DATAGRAMS_MAX`] full peer frames.
pub const UDP_TX_BUFFER_SIZE: usize = UDP_TX_DATAGRAMS_MAX * FRAME_SIZE_MAX;

/// The longest text reply: `ctl status` with every counter at `u64::MAX` and
/// [`MEMBERS_MAX`] five-digit ids takes 1422 bytes (checked by a test); the rest of a
/// datagram is room for one more counter.
pub const REPLY_SIZE_MAX: usize = DATAGRAM_SIZE_MAX;

/// Peers one `ctl partition` may name on a board: every other member by id and by address
/// (a longer list is answered `err too-many-peers`). At 32 bytes a peer, the desktop's 64
/// would cost 2 KiB of RAM for the set and as much stack while a command is parsed.
pub const PARTITION_PEERS_MAX: usize = 2 * MEMBERS_MAX;

/// Frames [`Board::poll`] takes from the device before it lets timers run. The QEMU MAC's
/// receive FIFO holds 31 frames; 64 bounds how long a flood can delay a heartbeat.
pub const FRAMES_PER_POLL_MAX: usize = 64;

const _: () = assert!(FRAME_SIZE_MAX <= DATAGRAM_SIZE_MAX);
const _: () = assert!(REPLY_SIZE_MAX <= DATAGRAM_SIZE_MAX);
const _: () = assert!(DATAGRAM_SIZE_MAX + 20 + 8 + 14 <= ETHERNET_FRAME_SIZE_MAX);
const _: () = assert!(UDP_TX_BUFFER_SIZE >= REPLY_SIZE_MAX);
// The firmware's key-file buffer holds a hex key and as much whitespace around it.
const _: () = assert!(KEY_FILE_SIZE_MAX == 2 * KEY_HEX_SIZE);
