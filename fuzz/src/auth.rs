//! The `auth_open` script: senders seal frames, a receiver opens them in any order, and a
//! set-based reference model of the replay window says what each open must return.

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};
use goose_core::auth::{AuthError, ReplayGuard, Sealer, REPLAY_WINDOW, TAG_SIZE, TRAILER_SIZE};
use goose_core::limits::{FRAME_HEADER_SIZE, FRAME_SIZE_MAX};
use goose_core::NodeId;

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
}

impl Encode for AuthOp {
    fn encode(&self, out: &mut Vec<u8>) {
        const COUNT: u64 = 6;
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

/// The reference: per sender, the newest epoch, the newest counter and the set of counters
/// seen within the window.
#[derive(Default)]
struct Model {
    senders: Vec<(NodeId, u32, u64, BTreeSet<u64>)>,
}

impl Model {
    fn accept(&mut self, sender: NodeId, epoch: u32, counter: u64) -> Result<(), AuthError> {
        let Some(window) = self.senders.iter_mut().find(|w| w.0 == sender) else {
            if self.senders.len() == SENDERS {
                return Err(AuthError::TooManySenders);
            }
            self.senders
                .push((sender, epoch, counter, BTreeSet::from([counter])));
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
    fn open(&mut self, mac: &TestMac, frame: &[u8]) -> Result<usize, AuthError> {
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
        self.accept(sender, epoch, counter)?;
        Ok(body)
    }
}

/// Runs a whole fuzz input, asserting that the guard agrees with the model at every open
/// and that every sealed frame opens at most once.
pub fn run(data: &[u8]) {
    let mac = TestMac(TestMac::SEED_KEY);
    let mut guard = ReplayGuard::<SENDERS>::new();
    let mut model = Model::default();
    let mut sealers: Vec<(u16, Sealer)> = Vec::new();
    let mut sealed: Vec<Vec<u8>> = Vec::new();
    let check = |guard: &mut ReplayGuard<SENDERS>, model: &mut Model, frame: &[u8]| {
        let expected = model.open(&mac, frame);
        let got = guard.open(&mac, frame);
        match (got, expected) {
            (Ok(body), Ok(size)) => assert_eq!(body, &frame[..size], "opened body"),
            (Err(got), Err(expected)) => assert_eq!(got, expected, "refusal reason"),
            (got, expected) => panic!("guard {got:?}, model {expected:?}, frame {frame:02x?}"),
        }
        got.is_ok()
    };
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
                        if sealed.len() == SEALED_MAX {
                            sealed.remove(0);
                        }
                        sealed.push(buffer[..total].to_vec());
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
                if sealed.is_empty() {
                    continue;
                }
                let frame = sealed[usize::from(frame) % sealed.len()].clone();
                if check(&mut guard, &mut model, &frame) {
                    // Exactly once: the same frame is now a replay.
                    assert_eq!(guard.open(&mac, &frame), Err(AuthError::Replay));
                }
            }
            AuthOp::OpenTampered { frame, at, xor } => {
                if sealed.is_empty() {
                    continue;
                }
                let mut frame = sealed[usize::from(frame) % sealed.len()].clone();
                let at = usize::from(at) % frame.len();
                frame[at] ^= xor.max(1);
                let opened = check(&mut guard, &mut model, &frame);
                // The test MAC changes with any single byte, so a tampered frame never opens.
                assert!(!opened || frame.len() < FRAME_HEADER_SIZE + TRAILER_SIZE);
            }
            AuthOp::OpenForged {
                sender,
                epoch,
                counter,
            } => {
                use goose_core::auth::Mac;
                let [a, b] = (u16::from(sender) % 12).to_le_bytes();
                let mut frame = vec![0xD9, 1, a, b, 1, 0];
                frame.extend_from_slice(&epoch.to_le_bytes());
                frame.extend_from_slice(&counter.to_le_bytes());
                let tag = mac.tag(&frame);
                frame.extend_from_slice(&tag);
                check(&mut guard, &mut model, &frame);
            }
            AuthOp::OpenRaw { bytes } => {
                check(&mut guard, &mut model, &bytes.0);
            }
        }
    }
}
