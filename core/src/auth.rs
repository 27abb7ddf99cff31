//! Authenticated peer frames: a trailer with the sender's boot epoch, a per-epoch counter
//! and a MAC over everything before the tag, plus a per-sender replay window.
//!
//! ```text
//! frame (see wire)  | epoch: u32 LE | counter: u64 LE | tag: 16 bytes
//! ```
//!
//! The MAC itself is injected ([`Mac`]): by default the core depends on no cryptography
//! crate. Its `hmac` feature adds `key::ClusterKey`, RustCrypto's HMAC-SHA256 truncated to
//! 16 bytes, which both nodes and the firmware use. A flock without a key sends plain
//! frames; a node with a key accepts only sealed ones.
//!
//! Replay protection: every sender persists its epoch and bumps it at each start, and
//! numbers its frames within an epoch. A receiver keeps, per sender, the newest epoch and a
//! 64-frame window of counters, and drops anything older or seen. (Raft already tolerates
//! duplicated and delayed messages; the window keeps an attacker from replaying a recorded
//! frame to make a node act on it again.)
//!
//! ## Safety does not rest on this
//!
//! Raft's safety (one leader per term, the lease) assumes a network that may lose, delay,
//! duplicate and reorder messages, but not forge them. The MAC removes forgery; what is left
//! to an attacker who can record and resend frames is duplication and delay, which the
//! protocol already tolerates. The replay window is a second line: it keeps a recorded
//! frame from being acted on twice within a sender's boot. It has gaps, all harmless for
//! safety: a receiver that restarts (its windows start empty), or that gave a removed
//! sender's window to another and later hears that sender again, accepts once each frame
//! of the sender's current boot replayed in increasing counter order; Raft treats them as
//! any delayed duplicates. So a bug here can cost liveness (frames dropped as replays), never
//! a second goose. A sender must persist a higher epoch *before* sending at start: with the
//! same epoch and a counter from zero, receivers would drop its frames as replays until the
//! counter passed the old one.
//!
//! ## Signed control
//!
//! With a key, `ctl` commands are signed by the client over a nonce the node issued, so a
//! recorded command can never be replayed (no clock needed, which a board lacks):
//!
//! ```text
//! client -> node   ctl nonce
//! node -> client   ok nonce=<16 hex digits>
//! client -> node   ctl sig=<32 hex digits> nonce=<16 hex digits> <command> [args]
//! ```
//!
//! The tag covers `nonce=… <command> [args]` exactly as sent (after the `sig=…` word, without
//! trailing whitespace). A nonce is this node's epoch and a sequence number, so it is never
//! issued twice, even across restarts; it is good once, for [`NONCE_LIFETIME`], and only
//! while among the last [`NONCES_MAX`] issued. Peer frames start with a byte ≥ 0x80 and
//! signed text with `n`, so no tag of one kind is ever valid for the other.

#[cfg(feature = "hmac")]
pub mod key;

use core::fmt::{self, Write};

use heapless::{String, Vec};

use crate::limits::{FRAME_HEADER_SIZE, FRAME_SIZE_MAX};
use crate::time::{Duration, Instant};
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

/// Nonces a node remembers for signed control: a nonce older than the last this many issued
/// is refused (`err stale-nonce`; the client asks again).
pub const NONCES_MAX: usize = 8;
/// How long an issued nonce stays good.
pub const NONCE_LIFETIME: Duration = Duration::from_millis(10_000);

/// A keyed MAC over byte strings, implemented outside the core.
pub trait Mac {
    /// The tag of `data`.
    fn tag(&self, data: &[u8]) -> [u8; TAG_SIZE];
    /// Whether `tag` is the tag of `data`, compared in constant time.
    fn verify(&self, data: &[u8], tag: &[u8; TAG_SIZE]) -> bool;
}

/// The key of a node that has none: a type with no value, for
/// [`crate::service::Service`]'s key parameter.
#[derive(Clone, Copy, Debug)]
pub enum NoKey {}

impl Mac for NoKey {
    fn tag(&self, _: &[u8]) -> [u8; TAG_SIZE] {
        match *self {}
    }
    fn verify(&self, _: &[u8], _: &[u8; TAG_SIZE]) -> bool {
        match *self {}
    }
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
    ///
    /// When the table is full, a new sender takes the window of a sender for which
    /// `is_member` is false (a removed node: the node drops its frames anyway); with every
    /// window a member's, the frame is refused ([`AuthError::TooManySenders`]).
    pub fn open<'f>(
        &mut self,
        mac: &impl Mac,
        frame: &'f [u8],
        is_member: impl Fn(NodeId) -> bool,
    ) -> Result<&'f [u8], AuthError> {
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
        self.accept(sender, epoch, counter, is_member)?;
        Ok(body)
    }

    fn accept(
        &mut self,
        sender: NodeId,
        epoch: u32,
        counter: u64,
        is_member: impl Fn(NodeId) -> bool,
    ) -> Result<(), AuthError> {
        let Some(window) = self.windows.iter_mut().find(|w| w.sender == sender) else {
            let window = Window {
                sender,
                epoch,
                newest: counter,
                seen: 1,
            };
            if let Err(window) = self.windows.push(window) {
                let gone = self.windows.iter_mut().find(|w| !is_member(w.sender));
                *gone.ok_or(AuthError::TooManySenders)? = window;
            }
            return Ok(());
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

/// The nonces a node issued for signed control ([module docs](self)).
#[derive(Clone, Debug)]
pub struct Nonces {
    epoch: u32,
    /// Nonces issued so far this boot; the next one's sequence number.
    issued: u32,
    /// Per slot (`sequence % NONCES_MAX`): when that sequence was issued, and whether it
    /// was used.
    slots: [(u32, Instant, bool); NONCES_MAX],
}

impl Nonces {
    /// No nonce issued yet in this boot's `epoch`.
    pub const fn new(epoch: u32) -> Self {
        Self {
            epoch,
            issued: 0,
            slots: [(0, Instant::ZERO, true); NONCES_MAX],
        }
    }

    /// A new nonce, good once for [`NONCE_LIFETIME`]. After 2³² nonces in one boot the
    /// sequence would repeat: from then on no nonce is issued (`None`).
    pub fn issue(&mut self, now: Instant) -> Option<u64> {
        let sequence = self.issued;
        self.issued = self.issued.checked_add(1)?;
        self.slots[sequence as usize % NONCES_MAX] = (sequence, now, false);
        Some((u64::from(self.epoch) << 32) | u64::from(sequence))
    }

    /// Uses up `nonce` if this node issued it in this boot, within [`NONCE_LIFETIME`]
    /// before `now`, among the last [`NONCES_MAX`], and it was not used yet.
    pub fn redeem(&mut self, now: Instant, nonce: u64) -> bool {
        if nonce >> 32 != u64::from(self.epoch) {
            return false;
        }
        let sequence = nonce as u32;
        let slot = &mut self.slots[sequence as usize % NONCES_MAX];
        let fresh = slot.0 == sequence
            && sequence < self.issued
            && !slot.2
            && now.saturating_since(slot.1) < NONCE_LIFETIME;
        slot.2 |= fresh;
        fresh
    }
}

/// Longest `nonce=… <command> [args]` a client signs: a control datagram fits a frame.
pub const SIGNED_CONTROL_SIZE_MAX: usize = FRAME_SIZE_MAX - "ctl sig= ".len() - 2 * TAG_SIZE;

/// Writes the signed control datagram `ctl sig=<tag> nonce=<nonce> <command>` (the client's
/// side; `command` is the command and its arguments, e.g. `partition 2,3`). Fails if the
/// command is too long for a datagram.
pub fn write_signed_control(
    out: &mut impl Write,
    mac: &impl Mac,
    nonce: u64,
    command: &str,
) -> fmt::Result {
    let mut signed: String<SIGNED_CONTROL_SIZE_MAX> = String::new();
    signed.write_str("nonce=")?;
    crate::text::write_hex_u64(&mut signed, nonce)?;
    signed.write_char(' ')?;
    signed.write_str(command.trim_ascii())?;
    out.write_str("ctl sig=")?;
    crate::text::write_hex_bytes(out, &mac.tag(signed.as_bytes()))?;
    out.write_char(' ')?;
    out.write_str(&signed)
}

// The largest message the core builds still fits once sealed.
const _: () = assert!(
    UNSEALED_FRAME_SIZE_MAX
        >= FRAME_HEADER_SIZE
            + crate::limits::MESSAGE_FIXED_SIZE_MAX
            + crate::limits::ENTRIES_PER_MESSAGE_MAX * crate::limits::ENTRY_SIZE_MAX
);

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A toy MAC for the tests: not cryptographic, only keyed and position-sensitive.
    pub(crate) struct ToyMac(pub(crate) u8);

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

    fn member(_: NodeId) -> bool {
        true
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
            guard.open(&ToyMac(8), &buffer[..size], member),
            Err(AuthError::BadTag)
        );
        assert_eq!(guard.open(&mac, &buffer[..size], member), Ok(&frame(3)[..]));
        assert_eq!(
            guard.open(&mac, &buffer[..size], member),
            Err(AuthError::Replay)
        );
        let mut tampered = buffer;
        tampered[6] ^= 1;
        assert_eq!(
            guard.open(&mac, &tampered[..size], member),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            guard.open(&mac, &buffer[..10], member),
            Err(AuthError::Short)
        );
    }

    #[test]
    fn window_accepts_reordering_within_bounds_and_new_epochs_only() {
        let mac = ToyMac(1);
        let mut sealer = Sealer::new(5);
        let mut guard = ReplayGuard::<4>::new();
        let frames: [_; 70] = core::array::from_fn(|_| sealed(&mut sealer, &mac, 2));
        let open = |guard: &mut ReplayGuard<4>, i: usize| {
            guard
                .open(&mac, &frames[i].0[..frames[i].1], member)
                .map(|_| ())
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
        assert_eq!(guard.open(&mac, &buffer[..size], member), Ok(&frame(2)[..]));
        assert_eq!(open(&mut guard, 67), Err(AuthError::Replay));
    }

    #[test]
    fn sender_table_is_bounded_and_makes_room_only_from_non_members() {
        let mac = ToyMac(1);
        let mut guard = ReplayGuard::<2>::new();
        let mut open = |source: u16, is_member: &dyn Fn(NodeId) -> bool| {
            let (buffer, size) = sealed(&mut Sealer::new(1), &mac, source);
            guard.open(&mac, &buffer[..size], is_member).map(|_| ())
        };
        assert_eq!(open(1, &member), Ok(()));
        assert_eq!(open(2, &member), Ok(()));
        assert_eq!(open(3, &member), Err(AuthError::TooManySenders));
        // Node 1 was removed: node 3 takes its window.
        let without_1 = |id: NodeId| id.get() != 1;
        assert_eq!(open(3, &without_1), Ok(()));
        assert_eq!(open(1, &without_1), Err(AuthError::TooManySenders));
    }

    #[test]
    fn nonces_are_good_once_while_fresh_and_recent() {
        let start = Instant::from_micros(1_000);
        let mut nonces = Nonces::new(7);
        let first = nonces.issue(start).unwrap();
        assert_eq!(first >> 32, 7, "the epoch makes nonces unique across boots");
        assert!(!Nonces::new(8).redeem(start, first), "another boot's nonce");
        assert!(nonces.redeem(start, first));
        assert!(!nonces.redeem(start, first), "used");
        assert!(!nonces.redeem(start, first + 1), "never issued");
        let late = nonces.issue(start).unwrap();
        assert!(!nonces.redeem(start + NONCE_LIFETIME, late), "expired");
        let old = nonces.issue(start).unwrap();
        for _ in 0..NONCES_MAX {
            nonces.issue(start).unwrap();
        }
        assert!(!nonces.redeem(start, old), "pushed out by newer ones");
        let newest = nonces.issue(start).unwrap();
        assert!(nonces.redeem(start, newest));
    }

    #[test]
    fn signed_control_covers_nonce_and_command() {
        let mac = ToyMac(3);
        let mut datagram: String<128> = String::new();
        write_signed_control(&mut datagram, &mac, 0x0000_0007_0000_0002, " status\n").unwrap();
        let (head, signed) = datagram.split_at("ctl sig=".len() + 2 * TAG_SIZE + 1);
        assert_eq!(signed, "nonce=0000000700000002 status");
        assert!(head.starts_with("ctl sig="));
        let mut expected: String<40> = String::new();
        for byte in mac.tag(signed.as_bytes()) {
            write!(expected, "{byte:02x}").unwrap();
        }
        assert_eq!(&head["ctl sig=".len()..head.len() - 1], expected.as_str());
        let too_long = [b'a'; SIGNED_CONTROL_SIZE_MAX];
        let too_long = core::str::from_utf8(&too_long).unwrap();
        assert!(write_signed_control(&mut datagram, &mac, 1, too_long).is_err());
    }
}
