//! # goose-core: allocation-free Raft leader election with a lease-backed goose
//!
//! A flock of nodes elects exactly one **goose**: the Raft leader whose whole log a majority
//! holds (committed) and that holds a lease a majority granted it. This crate is the whole
//! protocol, and nothing else: it is `#![no_std]`, never allocates, and never reads a
//! clock, a socket or a file (sans-I/O).
//!
//! **Nodes drive [`Service`](service::Service); [`Node`] alone is for simulators and
//! fuzzers.** The desktop node and the microcontroller node both run one `Service`: the
//! [`Node`] behind its UDP port, with the text protocol (probes, `ctl`, stop/start,
//! partitions, transfer requesters) and the cluster key's sealing around it.
//!
//! Layers, bottom up:
//!
//! - [`time`], [`rand`], [`types`], [`limits`]: instants, the seeded PRNG, newtypes, and
//!   every capacity with why it is that size;
//! - [`wire`]: peer frames (magic, version, ids, postcard body), checked once at the
//!   gateway; [`auth`]: sealing frames with a MAC and a replay window (the MAC itself is
//!   injected); [`text`]: the `whois-goose` / `ctl` text protocol, its replies and their
//!   parser;
//! - [`raft`]: the [`Node`], its [`Storage`] and the lease's safety argument;
//! - [`service`]: the node behind its UDP port without the port.
//!
//! ## Driving a service
//!
//! Four families of methods, called in one order (as quinn-proto's `Connection`):
//!
//! | family | methods | sends? |
//! | --- | --- | --- |
//! | getters | `is_goose`, `status`, `node`, `stats`, `reply`, `partition`, `is_stopped` | no |
//! | inputs | `handle_datagram`, `handle_timeout` | no |
//! | commands | `start`/`start_failed` (after `Handled::Start`), `stop`, `leave` | no |
//! | output step | `flush(now, &mut impl Outlet)` | yes: the answer, frames, late answers |
//! | pure outputs | `poll_event`, `poll_timeout` | no |
//!
//! Each time the program wakes:
//!
//! 1. for each datagram: `handle_datagram` (a board calls it where the datagram lies in its
//!    socket's ring), release the datagram, `flush`;
//! 2. `handle_timeout`, `flush`;
//! 3. `poll_event` until `None` (log it; `Event::Failed`: exit or halt);
//! 4. sleep until `poll_timeout` or the next datagram.
//!
//! `now` never decreases. Once storage fails, nothing more is sent or answered
//! (fail-stop). A flock of one, electing itself and answering `whois-goose`:
//!
//! ```
//! use core::net::{IpAddr, Ipv4Addr, SocketAddr};
//! use goose_core::service::{Handled, Host, Notice, Origin, Outlet, Service};
//! use goose_core::{Config, Instant, Member, Node, NodeId, PersistentState, Storage};
//! use goose_core::{StorageError, Transmit};
//!
//! struct Memory(Option<[u8; 512]>);
//! impl Storage for Memory {
//!     fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError> {
//!         let mut buffer = [0; 512];
//!         state.encode(&mut buffer)?;
//!         self.0 = Some(buffer);
//!         Ok(())
//!     }
//! }
//!
//! /// Where the service sends: a node's socket; here, a list. `u16` stands for the
//! /// program's address type (a desktop's `SocketAddr`, a board's smoltcp endpoint).
//! #[derive(Default)]
//! struct Toy {
//!     replies: Vec<(u16, String)>,
//! }
//! impl Outlet<u16> for Toy {
//!     fn send_frame(&mut self, _frame: &[u8], _transmit: &Transmit) -> bool {
//!         true // a flock of one has no peer to send to
//!     }
//!     fn send_reply(&mut self, reply: &[u8], target: u16) -> bool {
//!         self.replies.push((target, String::from_utf8_lossy(reply).into_owned()));
//!         true
//!     }
//! }
//!
//! let id = NodeId::new(1).unwrap();
//! let me = Member { id, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9900)), voter: true };
//! let node: Node<Memory, 5, 32> =
//!     Node::new(&Config::new(id), Memory(None), None, &[me], 42, Instant::ZERO).unwrap();
//! // 3 peers in a `ctl partition`, replies of up to 256 bytes.
//! let mut service: Service<_, u16, 5, 32, 3, 256> = Service::new(node);
//! let mut out = Toy::default();
//!
//! // It elects itself once its first election timeout passes.
//! let mut now = Instant::ZERO;
//! while !service.is_goose(now) {
//!     now = service.poll_timeout().unwrap();
//!     service.handle_timeout(now); // inputs send nothing,
//!     assert!(service.flush(now, &mut out)); // the output step does
//!     while let Some(event) = service.poll_event() {
//!         println!("{event:?}");
//!     }
//! }
//!
//! // Anyone may ask who the goose is.
//! let origin = Origin { addr: 7, ip: IpAddr::V4(Ipv4Addr::LOCALHOST), trusted: true };
//! let handled = service.handle_datagram(now, origin, &Host::default(), b"whois-goose");
//! assert_eq!(handled, Handled::Answer(Notice::None));
//! assert!(out.replies.is_empty(), "handled, not sent yet");
//! assert!(service.flush(now, &mut out));
//! // A goose tells how long its lease still holds.
//! let lease_ms = service.status(now).lease_remaining.millis();
//! let expected = format!("goose id=1 term=1 goose=1 lease_ms={lease_ms}\n");
//! assert_eq!(out.replies, [(7, expected)]);
//! ```
//!
//! A simulator or a fuzzer drives the [`Node`] itself: the same families without the text
//! protocol (`handle_frame`, `handle_timeout`, then `poll_transmit`, `poll_event`,
//! `poll_timeout`; see [`raft`]).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod config;
pub mod limits;
pub mod quorum;
pub mod raft;
pub mod rand;
pub mod ratelimit;
pub mod service;
pub mod stats;
pub mod storage;
pub mod text;
pub mod time;
pub mod types;
pub mod wire;

pub use config::{Config, ConfigError};
pub use raft::{
    Cause, Checked, Event, Node, Observed, ProposeError, RaftRole, StartError, Status,
    TransferError, Transmit,
};
pub use stats::Stats;
pub use storage::{PersistentState, SavedState, StateError, Storage, StorageError};
pub use time::{Duration, Instant};
pub use types::{Entry, EntryId, LogIndex, LogView, Member, NodeId, Payload, Term};
