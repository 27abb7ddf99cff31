//! Shared pieces of the goose-core fuzz targets: the `frame_decode` round trip, a keyed
//! test MAC, the simulated flock that `node_sequences` drives, and the seed corpus
//! generator (`tests/corpus.rs` writes and checks `corpus/`).
//!
//! The targets themselves are in `fuzz_targets/`; `scripts/ci/fuzz.sh` runs them.

pub mod auth;
pub mod flock;
pub mod seeds;
pub mod single;
pub mod text;

use goose_core::auth::{Mac, TAG_SIZE};
use goose_core::limits::FRAME_SIZE_MAX;
use goose_core::wire::{self, Body};
use goose_core::NodeId;

/// The `frame_decode` target: decoding never panics, and every frame that decodes
/// re-encodes (no longer than the input: postcard's canonical varints are the shortest)
/// to a frame that decodes to the same header and message.
pub fn frame_decode(data: &[u8]) {
    let Ok((header, message)) = wire::decode(data) else {
        return;
    };
    let mut buffer = [0; FRAME_SIZE_MAX];
    // The header may carry id 0, which `NodeId` cannot hold: encode with a placeholder and
    // write the header's ids back.
    let one = NodeId::new(1).expect("1 is a valid id");
    let size = wire::encode(one, one, &message.as_ref(), &mut buffer)
        .expect("a decoded message re-encodes");
    assert!(
        size <= data.len(),
        "re-encoding grew from {} to {size} bytes",
        data.len()
    );
    buffer[2..4].copy_from_slice(&header.source.to_le_bytes());
    buffer[4..6].copy_from_slice(&header.target.to_le_bytes());
    let again = wire::decode(&buffer[..size]).expect("a re-encoded message decodes");
    assert_eq!(
        again,
        (header, message),
        "re-encoded frame decodes differently"
    );
}

/// The name of a message's kind, for seed file names and traces.
pub fn kind_name<E, M>(body: &Body<E, M>) -> &'static str {
    match body {
        Body::PreVote { .. } => "prevote",
        Body::PreVoteResponse { .. } => "prevote-response",
        Body::Vote { .. } => "vote",
        Body::VoteResponse { .. } => "vote-response",
        Body::Append { .. } => "append",
        Body::AppendResponse { .. } => "append-response",
        Body::Snapshot { .. } => "snapshot",
        Body::SnapshotResponse { .. } => "snapshot-response",
        Body::TimeoutNow => "timeout-now",
    }
}

/// A keyed, position-sensitive test MAC: not cryptographic, but any change to the key or
/// to one byte of the data changes the tag, which is all `ReplayGuard::open` relies on.
/// (The fuzzer cannot forge a real HMAC either; this one keeps executions fast.)
pub struct TestMac(pub u64);

impl TestMac {
    /// The key the seed corpus is sealed with.
    pub const SEED_KEY: u64 = 0x0060_075e_d0c5;
}

impl Mac for TestMac {
    fn tag(&self, data: &[u8]) -> [u8; TAG_SIZE] {
        // Two FNV-1a-style lanes seeded from the key, each folding in every byte.
        let mut a = 0xcbf2_9ce4_8422_2325 ^ self.0;
        let mut b = 0x8422_2325_cbf2_9ce4 ^ self.0.rotate_left(29);
        for &byte in data {
            a = (a ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            b = (b ^ u64::from(byte))
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(7);
        }
        let mut tag = [0; TAG_SIZE];
        tag[..8].copy_from_slice(&a.to_le_bytes());
        tag[8..].copy_from_slice(&b.to_le_bytes());
        tag
    }

    fn verify(&self, data: &[u8], tag: &[u8; TAG_SIZE]) -> bool {
        self.tag(data) == *tag
    }
}
