//! The cluster key (feature `hmac`): HMAC-SHA256 (RFC 2104, FIPS 180-4) from RustCrypto's
//! `hmac` and `sha2`, truncated to 128 bits (RFC 2104 §5), behind the core's [`Mac`] trait.
//! The desktop node, its clients and the board firmware all use this one type, so every
//! member of a flock computes the same tags.
//!
//! A key is [`KEY_SIZE`] bytes. In a key file it is [`KEY_HEX_SIZE`] hex digits (what
//! [`write_hex`] writes for `goose keygen`) or the raw bytes: [`ClusterKey::from_file_bytes`]
//! is the one rule every reader of a key file applies.

use core::fmt;

use super::{Mac, TAG_SIZE};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

/// Bytes of a cluster key.
pub const KEY_SIZE: usize = 32;
/// Hex digits of a cluster key written as text.
pub const KEY_HEX_SIZE: usize = 2 * KEY_SIZE;

/// A cluster key, ready to tag: the HMAC's inner and outer hash states are computed once
/// here, so a tag costs two SHA-256 compressions plus the data's.
#[derive(Clone)]
pub struct ClusterKey {
    hmac: Hmac<Sha256>,
}

/// A key that is not [`KEY_HEX_SIZE`] hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyError;

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A piece at a time, the number by the text protocol's digit writer: a board
        // that logs this links none of `core::fmt`'s integer printing.
        f.write_str("a cluster key is ")?;
        crate::text::write_decimal(f, KEY_HEX_SIZE as u64)?;
        f.write_str(" hex digits (`goose keygen` writes one)")
    }
}

impl core::error::Error for KeyError {}

impl ClusterKey {
    /// The key `bytes`.
    pub fn new(bytes: &[u8; KEY_SIZE]) -> Self {
        // HMAC takes keys of any length: this cannot fail.
        let hmac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(bytes);
        Self {
            hmac: hmac.unwrap_or_else(|_| unreachable!("HMAC accepts any key length")),
        }
    }

    /// The key written as [`KEY_HEX_SIZE`] hex digits (either case), surrounding ASCII
    /// whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim_ascii();
        if text.len() != KEY_HEX_SIZE {
            return Err(KeyError);
        }
        let mut bytes = [0; KEY_SIZE];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            *byte =
                (hex_digit(pair[0]).ok_or(KeyError)? << 4) | hex_digit(pair[1]).ok_or(KeyError)?;
        }
        Ok(Self::new(&bytes))
    }

    /// The key in a key file's bytes: [`KEY_HEX_SIZE`] hex digits (surrounding whitespace
    /// ignored, as [`ClusterKey::from_hex`]), or exactly [`KEY_SIZE`] raw bytes. 32 bytes
    /// that are all printable ASCII are taken for text, not raw bytes (they are almost
    /// surely half of a hex key), so they are refused. `goose node`, `goose ctl` and
    /// `goose board` read `--cluster-key-file` by this rule, and the firmware its
    /// `--key-file`.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let printable = bytes
            .iter()
            .all(|byte| byte.is_ascii_graphic() || byte.is_ascii_whitespace());
        if let (Ok(raw), false) = (<&[u8; KEY_SIZE]>::try_from(bytes), printable) {
            return Ok(Self::new(raw));
        }
        let text = core::str::from_utf8(bytes).map_err(|_| KeyError)?;
        Self::from_hex(text)
    }
}

/// Writes `bytes` as lowercase hex digits (a new key, for `goose keygen`).
pub fn write_hex(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    crate::text::write_hex_bytes(out, bytes)
}

fn hex_digit(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|value| value as u8)
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a key.
        f.write_str("ClusterKey(..)")
    }
}

impl Mac for ClusterKey {
    fn tag(&self, data: &[u8]) -> [u8; TAG_SIZE] {
        let mut hmac = self.hmac.clone();
        hmac.update(data);
        let full = hmac.finalize().into_bytes();
        let mut tag = [0; TAG_SIZE];
        tag.copy_from_slice(&full[..TAG_SIZE]);
        tag
    }

    fn verify(&self, data: &[u8], tag: &[u8; TAG_SIZE]) -> bool {
        let mut hmac = self.hmac.clone();
        hmac.update(data);
        // Constant time (the `subtle` crate underneath).
        hmac.verify_truncated_left(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn key_error_reads_as_the_format_machinery_wrote_it() {
        use std::string::ToString;
        assert_eq!(
            KeyError.to_string(),
            std::format!("a cluster key is {KEY_HEX_SIZE} hex digits (`goose keygen` writes one)")
        );
    }

    /// RFC 4231 test case 2 ("Jefe"): HMAC-SHA256 truncated to 128 bits. Our keys are 32
    /// bytes, so the key is padded here the way HMAC pads it (zeros to the block size).
    #[test]
    fn rfc4231_case_2_truncated() {
        let mut key = [0; KEY_SIZE];
        key[..4].copy_from_slice(b"Jefe");
        let key = ClusterKey::new(&key);
        let tag = key.tag(b"what do ya want for nothing?");
        let expected = [
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
            0x75, 0xc7,
        ];
        assert_eq!(tag, expected);
        assert!(key.verify(b"what do ya want for nothing?", &expected));
        let mut wrong = expected;
        wrong[15] ^= 1;
        assert!(!key.verify(b"what do ya want for nothing?", &wrong));
        assert!(!key.verify(b"what do ya want for nothing!", &expected));
    }

    #[test]
    fn key_files_hold_hex_or_raw_bytes() {
        let hex = "ab".repeat(KEY_SIZE) + "\n";
        let tag = |key: ClusterKey| key.tag(b"x");
        let expected = tag(ClusterKey::new(&[0xab; KEY_SIZE]));
        assert_eq!(
            tag(ClusterKey::from_file_bytes(hex.as_bytes()).unwrap()),
            expected
        );
        assert_eq!(
            tag(ClusterKey::from_file_bytes(&[0xab; KEY_SIZE]).unwrap()),
            expected
        );
        for bad in [&b"ab"[..], &[b'a'; KEY_SIZE], &[0xff; KEY_SIZE + 1], b""] {
            assert_eq!(ClusterKey::from_file_bytes(bad).map(|_| ()), Err(KeyError));
        }
    }

    #[test]
    fn hex_keys() {
        let mut text: heapless::String<80> = heapless::String::new();
        write_hex(&mut text, &[0xab; KEY_SIZE]).unwrap();
        assert_eq!(text.len(), KEY_HEX_SIZE);
        let key = ClusterKey::from_hex(&text).unwrap();
        assert_eq!(key.tag(b"x"), ClusterKey::new(&[0xab; KEY_SIZE]).tag(b"x"));
        let upper = std::string::String::from("AB").repeat(KEY_SIZE);
        assert!(ClusterKey::from_hex(&std::format!(" {upper}\n")).is_ok());
        for bad in [
            "",
            "ab",
            &text[..63],
            &std::string::String::from("zz").repeat(KEY_SIZE),
            &std::format!("{text}0"),
        ] {
            assert_eq!(
                ClusterKey::from_hex(bad).map(|_| ()),
                Err(KeyError),
                "{bad:?}"
            );
        }
    }
}
