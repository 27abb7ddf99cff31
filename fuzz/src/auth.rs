//! The `auth_open` script: senders seal frames, a receiver opens them in any order while
//! its membership changes, and a set-based reference model of the replay window says what
//! each open must return. The same script issues and redeems signed-control nonces,
//! checked against a model of [`Nonces`].

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use goose_core::auth::{
    AuthError, Nonces, ReplayGuard, Sealer, NONCES_MAX, NONCE_LIFETIME, REPLAY_WINDOW, TAG_SIZE,
    TRAILER_SIZE,
};
use goose_core::limits::{FRAME_HEADER_SIZE, FRAME_SIZE_MAX};
use goose_core::wire;
use goose_core::{Duration, Instant, NodeId};

use crate::flock::{Bytes, Encode};
use crate::TestMac;

/// Senders the receiver can track (a node's member capacity in `node_sequences`).
pub const SENDERS: usize = 8;
/// Operations decoded from one input at most.
pub const OPS_MAX: usize = 128;
/// Sealed frames remembered for re-opening at most.
pub const SEALED_MAX: usize = 64;

/// One step of the script.
#[derive(Arbitrary, Clone, Debug, PartialEq, Eq)]
pub enum AuthOp {
    /// Seal `frame` with the sealer of the source id in its header (ids are taken modulo
    /// 12, so more senders than the guard tracks appear) and remember it.
    Seal { frame: Bytes },
    /// Restart sender `sender`: its next frames carry a new epoch (which may be lower: a
    /// sender that lost its persisted epoch).
    Restart { sender: u8, epoch: u32 },
    /// Open remembered frame `frame`.
    Open { frame: u8 },
    /// Open a copy of remembered frame `frame` with one byte changed.
    OpenTampered { frame: u8, at: u16, xor: u8 },
    /// A sender holding the key writes a trailer by hand: any epoch and counter.
    OpenForged {
        sender: u8,
        epoch: u32,
        counter: u64,
    },
    /// Open arbitrary bytes.
    OpenRaw { bytes: Bytes },
    /// The receiver's membership changes: sender `id` is a member when bit `id % 16` of
    /// `mask` is set (all are, at the start). A full guard gives a new sender the window
    /// of a non-member.
    Members { mask: u16 },
    /// `after_ms` pass, then the receiver issues a nonce.
    NonceIssue { after_ms: u16 },
    /// `after_ms` pass, then the receiver redeems issued nonce `pick` (modulo those
    /// issued) xor `xor`: with `xor` 0 the genuine nonce, else most likely one never
    /// issued, or another issued one.
    NonceRedeem { after_ms: u16, pick: u8, xor: u64 },
}

impl Encode for AuthOp {
    fn encode(&self, out: &mut Vec<u8>) {
        const COUNT: u64 = 9;
        let variant = |out: &mut Vec<u8>, index: u64| {
            let tag = ((index << 32).div_ceil(COUNT)) as u32;
            out.extend_from_slice(&tag.to_le_bytes());
        };
        let bytes = |out: &mut Vec<u8>, bytes: &Bytes| {
            out.push(bytes.0.len() as u8);
            out.extend_from_slice(&bytes.0);
        };
        match self {
            Self::Seal { frame } => {
                variant(out, 0);
                bytes(out, frame);
            }
            Self::Restart { sender, epoch } => {
                variant(out, 1);
                out.push(*sender);
                out.extend_from_slice(&epoch.to_le_bytes());
            }
            Self::Open { frame } => {
                variant(out, 2);
                out.push(*frame);
            }
            Self::OpenTampered { frame, at, xor } => {
                variant(out, 3);
                out.push(*frame);
                out.extend_from_slice(&at.to_le_bytes());
                out.push(*xor);
            }
            Self::OpenForged {
                sender,
                epoch,
                counter,
            } => {
                variant(out, 4);
                out.push(*sender);
                out.extend_from_slice(&epoch.to_le_bytes());
                out.extend_from_slice(&counter.to_le_bytes());
            }
            Self::OpenRaw { bytes: raw } => {
                variant(out, 5);
                bytes(out, raw);
            }
            Self::Members { mask } => {
                variant(out, 6);
                out.extend_from_slice(&mask.to_le_bytes());
            }
            Self::NonceIssue { after_ms } => {
                variant(out, 7);
                out.extend_from_slice(&after_ms.to_le_bytes());
            }
            Self::NonceRedeem {
                after_ms,
                pick,
                xor,
            } => {
                variant(out, 8);
                out.extend_from_slice(&after_ms.to_le_bytes());
                out.push(*pick);
                out.extend_from_slice(&xor.to_le_bytes());
            }
        }
    }
}

/// Decodes a script as the target does.
pub fn decode_ops(data: &[u8]) -> Vec<AuthOp> {
    let mut u = Unstructured::new(data);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < OPS_MAX {
        match AuthOp::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// Whether sender `id` is a member under `mask` ([`AuthOp::Members`]).
fn is_member(mask: u16) -> impl Fn(NodeId) -> bool {
    move |id| mask >> (id.get() % 16) & 1 == 1
}

/// The reference: per sender, the newest epoch, the newest counter and the set of counters
/// seen within the window; and the sender whose window the last accept took over, if any.
#[derive(Default)]
struct Model {
    senders: Vec<(NodeId, u32, u64, BTreeSet<u64>)>,
    evicted: Option<NodeId>,
}

impl Model {
    fn accept(
        &mut self,
        sender: NodeId,
        epoch: u32,
        counter: u64,
        is_member: &impl Fn(NodeId) -> bool,
    ) -> Result<(), AuthError> {
        self.evicted = None;
        let Some(window) = self.senders.iter_mut().find(|w| w.0 == sender) else {
            let window = (sender, epoch, counter, BTreeSet::from([counter]));
            if self.senders.len() < SENDERS {
                self.senders.push(window);
                return Ok(());
            }
            // Which non-member's window goes is the guard's choice; it takes the first in
            // table order (a replaced window keeps its place), and so does the model.
            let Some(gone) = self.senders.iter_mut().find(|w| !is_member(w.0)) else {
                return Err(AuthError::TooManySenders);
            };
            self.evicted = Some(gone.0);
            *gone = window;
            return Ok(());
        };
        let (_, seen_epoch, newest, seen) = window;
        if epoch < *seen_epoch {
            return Err(AuthError::Replay);
        }
        if epoch > *seen_epoch {
            *window = (sender, epoch, counter, BTreeSet::from([counter]));
            return Ok(());
        }
        let fresh =
            counter > *newest || (*newest - counter < REPLAY_WINDOW && !seen.contains(&counter));
        if !fresh {
            return Err(AuthError::Replay);
        }
        seen.insert(counter);
        *newest = (*newest).max(counter);
        let floor = newest.saturating_sub(REPLAY_WINDOW - 1);
        seen.retain(|&c| c >= floor);
        Ok(())
    }

    /// What `open` must return for `frame`, updating the model as the guard should.
    fn open(
        &mut self,
        mac: &TestMac,
        frame: &[u8],
        is_member: &impl Fn(NodeId) -> bool,
    ) -> Result<usize, AuthError> {
        use goose_core::auth::Mac;
        if frame.len() < FRAME_HEADER_SIZE + TRAILER_SIZE || frame.len() > FRAME_SIZE_MAX {
            return Err(AuthError::Short);
        }
        let (signed, tag) = frame.split_at(frame.len() - TAG_SIZE);
        if mac.tag(signed) != tag {
            return Err(AuthError::BadTag);
        }
        let body = signed.len() - 12;
        let epoch = u32::from_le_bytes(signed[body..body + 4].try_into().unwrap());
        let counter = u64::from_le_bytes(signed[body + 4..].try_into().unwrap());
        let sender =
            NodeId::new(u16::from_le_bytes([frame[2], frame[3]])).ok_or(AuthError::BadTag)?;
        self.accept(sender, epoch, counter, is_member)?;
        Ok(body)
    }
}

/// The epoch in which the receiver issues nonces.
const NONCE_EPOCH: u32 = 7;

/// The reference for [`Nonces`]: every nonce issued (its sequence number is its index),
/// when, and whether it was redeemed.
#[derive(Default)]
struct NonceModel {
    issued: Vec<(Instant, bool)>,
}

impl NonceModel {
    fn nonce(sequence: usize) -> u64 {
        (u64::from(NONCE_EPOCH) << 32) | sequence as u64
    }

    /// Whether `redeem(now, nonce)` must succeed: issued in this epoch, among the last
    /// [`NONCES_MAX`], less than [`NONCE_LIFETIME`] ago, not redeemed yet. Marks it used.
    fn redeem(&mut self, now: Instant, nonce: u64) -> bool {
        if nonce >> 32 != u64::from(NONCE_EPOCH) {
            return false;
        }
        let sequence = (nonce & 0xFFFF_FFFF) as usize;
        let count = self.issued.len();
        let Some((issued_at, used)) = self.issued.get_mut(sequence) else {
            return false;
        };
        let good = count - sequence <= NONCES_MAX
            && !*used
            && now.saturating_since(*issued_at) < NONCE_LIFETIME;
        *used |= good;
        good
    }
}

/// The sender id in a sealed frame's header.
fn sender_of(frame: &[u8]) -> u16 {
    u16::from_le_bytes([frame[2], frame[3]])
}

/// The receiver under test, its model, and what it was sent.
struct Receiver {
    guard: ReplayGuard<SENDERS>,
    model: Model,
    /// The membership ([`AuthOp::Members`]).
    members: u16,
    /// The last [`SEALED_MAX`] frames sealed, each with whether it opened since its sender
    /// last had a window in the guard.
    sealed: Vec<(Vec<u8>, bool)>,
}

impl Receiver {
    /// Opens `frame` with `mac` in the guard and in the model, which must agree; returns
    /// whether it opened.
    fn open(&mut self, mac: &TestMac, frame: &[u8]) -> bool {
        let expected = self.model.open(mac, frame, &is_member(self.members));
        let got = self.guard.open(mac, frame, is_member(self.members));
        match (got, expected) {
            (Ok(body), Ok(size)) => {
                assert_eq!(body.as_ptr(), frame.as_ptr(), "the body starts the frame");
                assert_eq!(body.len(), size, "opened body");
            }
            (Err(got), Err(expected)) => assert_eq!(got, expected, "refusal reason"),
            (got, expected) => panic!("guard {got:?}, model {expected:?}, frame {frame:02x?}"),
        }
        if let Some(gone) = self.model.evicted.take() {
            // The guard forgot a non-member's window: its frames may open once more, as
            // after a restart of the receiver.
            for (frame, opened) in &mut self.sealed {
                if sender_of(frame) == gone.get() {
                    *opened = false;
                }
            }
        }
        got.is_ok()
    }

    /// Opens remembered frame `index`: never with another key, and at most once while its
    /// sender keeps its window.
    fn open_sealed(&mut self, mac: &TestMac, wrong: &TestMac, index: usize) {
        let frame = self.sealed[index].0.clone();
        assert!(!self.open(wrong, &frame), "opened with another key");
        if self.open(mac, &frame) {
            assert!(!self.sealed[index].1, "opened twice: {frame:02x?}");
            self.sealed[index].1 = true;
            let again = self.guard.open(mac, &frame, is_member(self.members));
            assert_eq!(again, Err(AuthError::Replay), "opened twice in a row");
        }
    }
}

/// Runs a whole fuzz input, asserting that the guard agrees with the model at every open,
/// that every sealed frame opens at most once (while its sender keeps its window) and only
/// with the key, and that nonces agree with their model, each redeemed at most once and
/// only if issued.
pub fn run(data: &[u8]) {
    let mac = TestMac(TestMac::SEED_KEY);
    let wrong = TestMac(TestMac::SEED_KEY ^ 1);
    let mut receiver = Receiver {
        guard: ReplayGuard::new(),
        model: Model::default(),
        members: u16::MAX,
        sealed: Vec::new(),
    };
    let mut sealers: Vec<(u16, Sealer)> = Vec::new();
    let mut now = Instant::from_micros(1);
    let mut nonces = Nonces::new(NONCE_EPOCH);
    let mut nonce_model = NonceModel::default();
    let mut issued = BTreeSet::new();
    let mut redeemed = BTreeSet::new();
    for op in decode_ops(data) {
        match op {
            AuthOp::Seal { frame } => {
                let source = match frame.0.get(2..4) {
                    Some(id) => u16::from_le_bytes([id[0], id[1]]) % 12,
                    None => 0,
                };
                let sealer = match sealers.iter_mut().position(|(id, _)| *id == source) {
                    Some(i) => &mut sealers[i].1,
                    None => {
                        sealers.push((source, Sealer::new(1)));
                        &mut sealers.last_mut().unwrap().1
                    }
                };
                let mut buffer = [0; FRAME_SIZE_MAX];
                let size = frame.0.len();
                if size > buffer.len() {
                    continue;
                }
                buffer[..size].copy_from_slice(&frame.0);
                if size >= 4 {
                    buffer[2..4].copy_from_slice(&source.to_le_bytes());
                }
                match sealer.seal(&mac, &mut buffer, size) {
                    Ok(total) => {
                        assert_eq!(total, size + TRAILER_SIZE);
                        if receiver.sealed.len() == SEALED_MAX {
                            receiver.sealed.remove(0);
                        }
                        receiver.sealed.push((buffer[..total].to_vec(), false));
                    }
                    Err(error) => {
                        assert_eq!(error, AuthError::Short);
                        assert!(size + TRAILER_SIZE > FRAME_SIZE_MAX);
                    }
                }
            }
            AuthOp::Restart { sender, epoch } => {
                let source = u16::from(sender) % 12;
                sealers.retain(|(id, _)| *id != source);
                sealers.push((source, Sealer::new(epoch)));
            }
            AuthOp::Open { frame } => {
                if receiver.sealed.is_empty() {
                    continue;
                }
                let index = usize::from(frame) % receiver.sealed.len();
                receiver.open_sealed(&mac, &wrong, index);
            }
            AuthOp::OpenTampered { frame, at, xor } => {
                if receiver.sealed.is_empty() {
                    continue;
                }
                let index = usize::from(frame) % receiver.sealed.len();
                let mut frame = receiver.sealed[index].0.clone();
                let at = usize::from(at) % frame.len();
                frame[at] ^= xor.max(1);
                // The test MAC changes with any single byte, so a tampered frame never opens.
                assert!(!receiver.open(&mac, &frame), "a tampered frame opened");
            }
            AuthOp::OpenForged {
                sender,
                epoch,
                counter,
            } => {
                use goose_core::auth::Mac;
                let [a, b] = (u16::from(sender) % 12).to_le_bytes();
                // A header of this wire version, from `sender` to node 1.
                let mut frame = vec![wire::MAGIC, wire::VERSION, a, b, 1, 0];
                frame.extend_from_slice(&epoch.to_le_bytes());
                frame.extend_from_slice(&counter.to_le_bytes());
                let tag = mac.tag(&frame);
                frame.extend_from_slice(&tag);
                receiver.open(&mac, &frame);
            }
            AuthOp::OpenRaw { bytes } => {
                receiver.open(&mac, &bytes.0);
            }
            AuthOp::Members { mask } => receiver.members = mask,
            AuthOp::NonceIssue { after_ms } => {
                now = now + Duration::from_millis(u64::from(after_ms));
                let nonce = nonces.issue(now).expect("far fewer than 2^32 nonces");
                assert_eq!(nonce, NonceModel::nonce(nonce_model.issued.len()));
                assert!(issued.insert(nonce), "nonce {nonce:016x} issued twice");
                nonce_model.issued.push((now, false));
            }
            AuthOp::NonceRedeem {
                after_ms,
                pick,
                xor,
            } => {
                now = now + Duration::from_millis(u64::from(after_ms));
                // Counted from the newest, so that most picks are still fresh.
                let count = nonce_model.issued.len();
                let nonce = match count {
                    0 => xor,
                    _ => NonceModel::nonce(count - 1 - usize::from(pick) % count) ^ xor,
                };
                let expected = nonce_model.redeem(now, nonce);
                let got = nonces.redeem(now, nonce);
                assert_eq!(got, expected, "redeem {nonce:016x} at {now:?}");
                if got {
                    assert!(
                        issued.contains(&nonce),
                        "redeemed {nonce:016x}, never issued"
                    );
                    assert!(redeemed.insert(nonce), "redeemed {nonce:016x} twice");
                }
            }
        }
    }
}
