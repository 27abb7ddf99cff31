//! Authenticated peer frames: a trailer with the sender's boot epoch, a per-epoch counter
//! and a MAC over everything before the tag, plus a per-sender replay window.
//!
//! ```text
//! frame (see wire)  | epoch: u32 LE | counter: u64 LE | tag: 16 bytes
//! ```
//!
//! The MAC itself is injected ([`Mac`]): the core depends on no cryptography crate, and both
//! nodes implement it with RustCrypto's HMAC-SHA256 truncated to 16 bytes. A flock without
//! a key sends plain frames; a node with a key accepts only sealed ones.
//!
//! Replay protection: every sender persists its epoch and bumps it at each start, and
//! numbers its frames within an epoch. A receiver keeps, per sender, the newest epoch and a
//! 64-frame window of counters, and drops anything older or seen. (Raft already tolerates
//! duplicated and delayed messages; the window keeps an attacker from replaying a recorded
//! frame to make a node act on it again.)

use core::fmt;

use heapless::Vec;

use crate::limits::{FRAME_HEADER_SIZE, FRAME_SIZE_MAX};
use crate::types::NodeId;

/// Bytes of the MAC tag (HMAC-SHA256 truncated to 128 bits, RFC 2104 §5).
pub const TAG_SIZE: usize = 16;
/// Bytes the trailer adds to a frame: epoch (4), counter (8), tag.
pub const TRAILER_SIZE: usize = 4 + 8 + TAG_SIZE;
/// The largest frame the core may produce so that a sealed frame still fits a datagram.
pub const UNSEALED_FRAME_SIZE_MAX: usize = FRAME_SIZE_MAX - TRAILER_SIZE;
/// Counters a receiver remembers below the newest one seen from a sender: frames reordered
/// by more than this are dropped as replays.
pub const REPLAY_WINDOW: u64 = 64;

/// A keyed MAC over byte strings, implemented outside the core.
pub trait Mac {
    /// The tag of `data`.
    fn tag(&self, data: &[u8]) -> [u8; TAG_SIZE];
    /// Whether `tag` is the tag of `data`, compared in constant time.
    fn verify(&self, data: &[u8], tag: &[u8; TAG_SIZE]) -> bool;
}

/// Why a frame was not sealed or not accepted. Each has its own drop counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// Too short to hold a header and a trailer, or no room to seal.
    Short,
    /// The tag does not match: forged, corrupted, or another flock's key.
    BadTag,
    /// Seen before, or older than the window, or from an older epoch of the sender.
    Replay,
    /// The sender table is full (more senders than members).
    TooManySenders,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Short => "frame too short for its authentication trailer",
            Self::BadTag => "authentication tag does not match",
            Self::Replay => "frame replayed or too old",
            Self::TooManySenders => "too many senders to track",
        })
    }
}

impl core::error::Error for AuthError {}

/// Seals outgoing frames: one per node, created with the epoch it persisted at start.
#[derive(Clone, Debug)]
pub struct Sealer {
    epoch: u32,
    counter: u64,
}

impl Sealer {
    /// A sealer for this boot's `epoch`, which must be higher than any earlier boot's.
    pub const fn new(epoch: u32) -> Self {
        Self { epoch, counter: 0 }
    }

    /// Appends the trailer to the frame in `buffer[..size]`, returning the sealed size. Give
    /// [`crate::Node::poll_transmit`] `&mut buffer[..UNSEALED_FRAME_SIZE_MAX]` so the sealed
    /// frame always fits.
    pub fn seal(
        &mut self,
        mac: &impl Mac,
        buffer: &mut [u8],
        size: usize,
    ) -> Result<usize, AuthError> {
        let sealed = size + TRAILER_SIZE;
        if sealed > buffer.len() || sealed > FRAME_SIZE_MAX {
            return Err(AuthError::Short);
        }
        self.counter += 1;
        buffer[size..size + 4].copy_from_slice(&self.epoch.to_le_bytes());
        buffer[size + 4..size + 12].copy_from_slice(&self.counter.to_le_bytes());
        let tag = mac.tag(&buffer[..size + 12]);
        buffer[size + 12..sealed].copy_from_slice(&tag);
        Ok(sealed)
    }
}

#[derive(Clone, Copy, Debug)]
struct Window {
    sender: NodeId,
    epoch: u32,
    newest: u64,
    /// Bit `i` set: counter `newest − i` was seen.
    seen: u64,
}

/// Per-sender replay windows for up to `N` senders (a node's member capacity).
#[derive(Clone, Debug, Default)]
pub struct ReplayGuard<const N: usize> {
    windows: Vec<Window, N>,
}

impl<const N: usize> ReplayGuard<N> {
    /// No sender seen yet.
    pub const fn new() -> Self {
        Self {
            windows: Vec::new(),
        }
    }

    /// Checks a sealed frame's tag and freshness; on success returns the frame without its
    /// trailer, for [`crate::Node::handle_frame`]. A failed check changes nothing.
    pub fn open<'f>(&mut self, mac: &impl Mac, frame: &'f [u8]) -> Result<&'f [u8], AuthError> {
        if frame.len() < FRAME_HEADER_SIZE + TRAILER_SIZE || frame.len() > FRAME_SIZE_MAX {
            return Err(AuthError::Short);
        }
        let (signed, tag) = frame.split_at(frame.len() - TAG_SIZE);
        let tag: &[u8; TAG_SIZE] = tag.try_into().map_err(|_| AuthError::Short)?;
        if !mac.verify(signed, tag) {
            return Err(AuthError::BadTag);
        }
        let (body, trailer) = signed.split_at(signed.len() - 12);
        let epoch = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let mut counter = [0; 8];
        counter.copy_from_slice(&trailer[4..12]);
        let counter = u64::from_le_bytes(counter);
        // The tag covers the header, so the source id is authentic (ids 0 are dropped by
        // the node later; here they only name a window).
        let sender =
            NodeId::new(u16::from_le_bytes([body[2], body[3]])).ok_or(AuthError::BadTag)?;
        self.accept(sender, epoch, counter)?;
        Ok(body)
    }

    fn accept(&mut self, sender: NodeId, epoch: u32, counter: u64) -> Result<(), AuthError> {
        let Some(window) = self.windows.iter_mut().find(|w| w.sender == sender) else {
            let window = Window {
                sender,
                epoch,
                newest: counter,
                seen: 1,
            };
            return self
                .windows
                .push(window)
                .map_err(|_| AuthError::TooManySenders);
        };
        if epoch < window.epoch {
            return Err(AuthError::Replay);
        }
        if epoch > window.epoch {
            *window = Window {
                sender,
                epoch,
                newest: counter,
                seen: 1,
            };
            return Ok(());
        }
        if counter > window.newest {
            let shift = counter - window.newest;
            window.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                window.seen << shift
            };
            window.seen |= 1;
            window.newest = counter;
            return Ok(());
        }
        let age = window.newest - counter;
        if age >= REPLAY_WINDOW || window.seen & (1 << age) != 0 {
            return Err(AuthError::Replay);
        }
        window.seen |= 1 << age;
        Ok(())
    }
}

// The largest message the core builds still fits once sealed.
const _: () = assert!(
    UNSEALED_FRAME_SIZE_MAX
        >= FRAME_HEADER_SIZE
            + crate::limits::MESSAGE_FIXED_SIZE_MAX
            + crate::limits::ENTRIES_PER_MESSAGE_MAX * crate::limits::ENTRY_SIZE_MAX
);

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy MAC for the tests: not cryptographic, only keyed and position-sensitive.
    struct ToyMac(u8);

    impl Mac for ToyMac {
        fn tag(&self, data: &[u8]) -> [u8; TAG_SIZE] {
            let mut tag = [self.0; TAG_SIZE];
            for (i, byte) in data.iter().enumerate() {
                tag[i % TAG_SIZE] = tag[i % TAG_SIZE].rotate_left(3) ^ byte ^ (i as u8);
            }
            tag
        }
        fn verify(&self, data: &[u8], tag: &[u8; TAG_SIZE]) -> bool {
            self.tag(data) == *tag
        }
    }

    fn frame(source: u16) -> [u8; 8] {
        let [a, b] = source.to_le_bytes();
        [0xD9, 1, a, b, 2, 0, 0x42, 0x43]
    }

    fn sealed(sealer: &mut Sealer, mac: &ToyMac, source: u16) -> ([u8; 64], usize) {
        let mut buffer = [0; 64];
        buffer[..8].copy_from_slice(&frame(source));
        let size = sealer.seal(mac, &mut buffer, 8).unwrap();
        (buffer, size)
    }

    #[test]
    fn sealed_frames_open_once_and_only_with_the_key() {
        let mac = ToyMac(7);
        let mut sealer = Sealer::new(1);
        let mut guard = ReplayGuard::<4>::new();
        let (buffer, size) = sealed(&mut sealer, &mac, 3);
        assert_eq!(size, 8 + TRAILER_SIZE);
        assert_eq!(
            guard.open(&ToyMac(8), &buffer[..size]),
            Err(AuthError::BadTag)
        );
        assert_eq!(guard.open(&mac, &buffer[..size]), Ok(&frame(3)[..]));
        assert_eq!(guard.open(&mac, &buffer[..size]), Err(AuthError::Replay));
        let mut tampered = buffer;
        tampered[6] ^= 1;
        assert_eq!(guard.open(&mac, &tampered[..size]), Err(AuthError::BadTag));
        assert_eq!(guard.open(&mac, &buffer[..10]), Err(AuthError::Short));
    }

    #[test]
    fn window_accepts_reordering_within_bounds_and_new_epochs_only() {
        let mac = ToyMac(1);
        let mut sealer = Sealer::new(5);
        let mut guard = ReplayGuard::<4>::new();
        let frames: [_; 70] = core::array::from_fn(|_| sealed(&mut sealer, &mac, 2));
        let open = |guard: &mut ReplayGuard<4>, i: usize| {
            guard.open(&mac, &frames[i].0[..frames[i].1]).map(|_| ())
        };
        assert_eq!(open(&mut guard, 10), Ok(()));
        assert_eq!(open(&mut guard, 3), Ok(()), "reordered within the window");
        assert_eq!(open(&mut guard, 3), Err(AuthError::Replay));
        assert_eq!(open(&mut guard, 69), Ok(()));
        assert_eq!(
            open(&mut guard, 4),
            Err(AuthError::Replay),
            "older than the window"
        );
        assert_eq!(open(&mut guard, 68), Ok(()));
        // The sender restarts with a higher epoch; its old epoch is dead.
        let mut restarted = Sealer::new(6);
        let (buffer, size) = sealed(&mut restarted, &mac, 2);
        assert_eq!(guard.open(&mac, &buffer[..size]), Ok(&frame(2)[..]));
        assert_eq!(open(&mut guard, 67), Err(AuthError::Replay));
    }

    #[test]
    fn sender_table_is_bounded() {
        let mac = ToyMac(1);
        let mut guard = ReplayGuard::<2>::new();
        for (source, expected) in [
            (1, Ok(())),
            (2, Ok(())),
            (3, Err(AuthError::TooManySenders)),
        ] {
            let (buffer, size) = sealed(&mut Sealer::new(1), &mac, source);
            assert_eq!(guard.open(&mac, &buffer[..size]).map(|_| ()), expected);
        }
    }
}
