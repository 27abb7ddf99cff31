//! # goose-core: allocation-free Raft leader election with a lease-backed goose
//!
//! A flock of nodes elects exactly one **goose**: the Raft leader whose whole log a majority
//! confirmed in its term and that holds a lease a majority granted it. This crate is the whole
//! protocol, and nothing else: it is `#![no_std]`, never allocates, and never reads a
//! clock, a socket or a file (sans-I/O). The desktop node and the microcontroller node
//! both drive this one state machine.
//!
//! Layers, bottom up:
//!
//! - [`time`], [`rand`], [`types`], [`limits`]: instants, the seeded PRNG, newtypes, and
//!   every capacity with why it is that size;
//! - [`wire`]: peer frames (magic, version, ids, postcard body), checked once at the
//!   gateway; [`auth`]: sealing frames with a MAC and a replay window (the MAC itself is
//!   injected); [`text`]: the `whois-goose` / `ctl` text protocol;
//! - [`raft`]: the [`Node`], its [`Storage`] and the lease's safety argument;
//! - [`service`]: the node behind its UDP port without the port (probe and `ctl` replies,
//!   stop/start, partitions, transfer requesters), which the desktop node and the board
//!   both run.
//!
//! ```
//! use core::net::{Ipv4Addr, SocketAddr};
//! use goose_core::{Config, Instant, Member, Node, NodeId, PersistentState, Storage, StorageError};
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
//! // A flock of one: it elects itself once its first election timeout passes.
//! let id = NodeId::new(1).unwrap();
//! let me = Member { id, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9900)), voter: true };
//! let mut node: Node<Memory, 5, 32> =
//!     Node::new(&Config::new(id), Memory(None), None, &[me], 42, Instant::ZERO).unwrap();
//! let mut now = Instant::ZERO;
//! while !node.is_goose(now) {
//!     now = node.poll_timeout().unwrap();
//!     node.handle_timeout(now);
//!     let mut frame = [0; goose_core::limits::FRAME_SIZE_MAX];
//!     while let Some(_transmit) = node.poll_transmit(now, &mut frame) {}
//! }
//! assert_eq!(node.status(now).term.0, 1);
//! ```
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
    Event, Node, Observed, ProposeError, RaftRole, StartError, Status, TransferError, Transmit,
};
pub use stats::Stats;
pub use storage::{PersistentState, SavedState, StateError, Storage, StorageError};
pub use time::{Duration, Instant};
pub use types::{Entry, EntryId, LogIndex, LogView, Member, NodeId, Payload, Term};
