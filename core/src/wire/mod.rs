//! Peer frames: bytes, then a checked view, then a message, validated once at the gateway.
//!
//! ```text
//! byte 0      magic   0xD9 (≥ 0x80, so a frame is never mistaken for text)
//! byte 1      version 2 (VERSION)
//! bytes 2..4  source node id, little-endian
//! bytes 4..6  target node id, little-endian
//! bytes 6..   postcard-encoded Message
//! ```
//!
//! The whole frame is at most [`FRAME_SIZE_MAX`] bytes. Decoding any byte string returns a
//! [`WireError`] or a message whose invariants ([`validate`]) hold; it never panics.

pub mod message;

use core::fmt;

pub use message::{AppendResult, Body, Message, MessageOwned, MessageRef, MessageShort};

use crate::limits::{FRAME_HEADER_SIZE, FRAME_SIZE_MAX, LOYALTY_WINDOW_MAX};
use crate::types::{NodeId, Payload};

/// The first byte of every peer frame.
pub const MAGIC: u8 = 0xD9;
/// The wire version this build speaks; frames of any other version are dropped. Version 2
/// ranks logs by their log term in elections, commits by confirmation instead of a no-op,
/// and carries the leader's loyalty window; it cannot share a flock with version 1.
pub const VERSION: u8 = 2;

const _: () = assert!(MAGIC >= 0x80);

/// Why a frame was dropped. Each reason has its own counter in [`crate::Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header.
    TooShort,
    /// Longer than [`FRAME_SIZE_MAX`].
    TooLong,
    /// First byte is not [`MAGIC`].
    BadMagic,
    /// Second byte is not [`VERSION`].
    BadVersion,
    /// The body is not a postcard message, or has trailing bytes, or exceeds a capacity.
    Undecodable,
    /// The body decoded but breaks an invariant (a zero node id, entries out of term
    /// order, duplicate members).
    Invalid,
    /// The caller's buffer is too small to encode into (an encoder-side error).
    BufferTooSmall,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooShort => "frame shorter than its header",
            Self::TooLong => "frame longer than 508 bytes",
            Self::BadMagic => "wrong magic byte",
            Self::BadVersion => "unsupported wire version",
            Self::Undecodable => "undecodable message body",
            Self::Invalid => "message breaks a protocol invariant",
            Self::BufferTooSmall => "buffer too small for the frame",
        })
    }
}

impl core::error::Error for WireError {}

/// The header of a frame whose length, magic and version have been checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's id as written in the frame (may be 0: checked by the node).
    pub source: u16,
    /// The intended receiver's id as written in the frame.
    pub target: u16,
}

/// Checks length, magic and version, and splits the frame into header and body.
pub fn parse_header(frame: &[u8]) -> Result<(Header, &[u8]), WireError> {
    if frame.len() > FRAME_SIZE_MAX {
        return Err(WireError::TooLong);
    }
    let Some((head, body)) = frame.split_first_chunk::<FRAME_HEADER_SIZE>() else {
        return Err(WireError::TooShort);
    };
    if head[0] != MAGIC {
        return Err(WireError::BadMagic);
    }
    if head[1] != VERSION {
        return Err(WireError::BadVersion);
    }
    let header = Header {
        source: u16::from_le_bytes([head[2], head[3]]),
        target: u16::from_le_bytes([head[4], head[5]]),
    };
    Ok((header, body))
}

/// Decodes and validates a whole frame.
pub fn decode(frame: &[u8]) -> Result<(Header, MessageOwned), WireError> {
    let (header, body) = parse_header(frame)?;
    let (message, rest) =
        postcard::take_from_bytes::<MessageOwned>(body).map_err(|_| WireError::Undecodable)?;
    if !rest.is_empty() {
        return Err(WireError::Undecodable);
    }
    validate(&message)?;
    Ok((header, message))
}

/// Encodes `message` from `source` to `target` into `buffer`, returning the frame's length.
pub fn encode(
    source: NodeId,
    target: NodeId,
    message: &MessageRef<'_>,
    buffer: &mut [u8],
) -> Result<usize, WireError> {
    let limit = buffer.len().min(FRAME_SIZE_MAX);
    let buffer = &mut buffer[..limit];
    let Some((head, body)) = buffer.split_first_chunk_mut::<FRAME_HEADER_SIZE>() else {
        return Err(WireError::BufferTooSmall);
    };
    let [s0, s1] = source.get().to_le_bytes();
    let [t0, t1] = target.get().to_le_bytes();
    *head = [MAGIC, VERSION, s0, s1, t0, t1];
    let used = postcard::to_slice(message, body)
        .map_err(|_| WireError::BufferTooSmall)?
        .len();
    Ok(FRAME_HEADER_SIZE + used)
}

/// The gateway: invariants every decoded message satisfies, so the node can trust them.
///
/// - node ids inside entries and members are non-zero;
/// - an Append's entries have terms that never decrease, start at or after `prev.term`,
///   and do not exceed the message's term, and end at or before the leader's last index;
/// - a leader's loyalty window is at most [`LOYALTY_WINDOW_MAX`];
/// - a snapshot chunk's members have distinct ids and its last entry's term does not
///   exceed the message's term;
/// - a vote request's log term does not exceed the message's term.
pub fn validate(message: &MessageOwned) -> Result<(), WireError> {
    match &message.body {
        Body::Append {
            prev,
            entries,
            last,
            stick,
            ..
        } => {
            if *stick > LOYALTY_WINDOW_MAX {
                return Err(WireError::Invalid);
            }
            // The leader's last index is at least the end of what it sends.
            let end = prev.index.0.checked_add(entries.len() as u64);
            if end.is_none_or(|end| end > last.0) {
                return Err(WireError::Invalid);
            }
            let mut term = prev.term;
            for entry in entries {
                if entry.term < term || entry.term > message.term || !payload_valid(entry.payload) {
                    return Err(WireError::Invalid);
                }
                term = entry.term;
            }
            if prev.term > message.term {
                return Err(WireError::Invalid);
            }
        }
        Body::Snapshot {
            last,
            members,
            stick,
            ..
        } => {
            if last.term > message.term || *stick > LOYALTY_WINDOW_MAX {
                return Err(WireError::Invalid);
            }
            for (i, member) in members.iter().enumerate() {
                if !member.id.is_valid() || members[..i].iter().any(|m| m.id == member.id) {
                    return Err(WireError::Invalid);
                }
            }
        }
        Body::PreVote { log } | Body::Vote { log, .. } if log.term > message.term => {
            return Err(WireError::Invalid);
        }
        _ => {}
    }
    Ok(())
}

fn payload_valid(payload: Payload) -> bool {
    match payload {
        Payload::Noop => true,
        Payload::AddLearner { id, .. } | Payload::Promote { id } | Payload::Remove { id } => {
            id.is_valid()
        }
    }
}

#[cfg(test)]
mod tests;
