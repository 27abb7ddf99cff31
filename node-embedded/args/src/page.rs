//! The configuration page: what a real board runs with (its command line and the flock's
//! cluster key), written by the host (`goose board-config`) into a page of the board's flash
//! with `probe-rs download`, and read by the firmware at boot. A board without a debugger
//! has no command line and no host files; this page is both.
//!
//! Layout ([`PAGE_SIZE`] bytes at most; the rest of the flash page stays erased):
//!
//! | bytes | what |
//! | --- | --- |
//! | 8 | [`MAGIC`], `GOOSECF1` (the `1` is the layout's version) |
//! | 2 | the line's length `n`, little-endian |
//! | 1 | the key file's length `k`, 0 without a key |
//! | 128 | the cluster key file's `k` bytes, as `goose keygen` wrote it (zeros after) |
//! | n | the board's command line ([`write`](crate::write)), UTF-8 |
//! | 4 | CRC-32 (IEEE) of everything before it, little-endian |
//!
//! The firmware refuses a page that is erased, of another layout, truncated, damaged or
//! names host files (`--state`, `--key-file`), with an error naming the fix: a board must
//! never start on part of its configuration (a board missing one `--peer` would bootstrap a
//! different membership from the others').

use core::fmt::{self, Write};

use heapless::String;

use crate::{parse, ArgsError, BoardArgs};

/// The first bytes of a configuration page.
pub const MAGIC: [u8; 8] = *b"GOOSECF1";

/// The room for the key file's bytes: the firmware reads them by the desktop's key-file
/// rule (`goose_core::auth::key::ClusterKey::from_file_bytes`).
pub const KEY_FIELD_SIZE: usize = crate::KEY_FILE_SIZE_MAX;

/// The longest command line a page holds: five members, a token and a LAN address take
/// under 400 bytes.
pub const LINE_SIZE_MAX: usize = 512;

/// Bytes before the line: magic, length, key flag, key.
const HEADER_SIZE: usize = MAGIC.len() + 2 + 1 + KEY_FIELD_SIZE;

/// Bytes of the checksum after the line.
const CRC_SIZE: usize = 4;

/// The largest page: what a board reads from its flash.
pub const PAGE_SIZE: usize = HEADER_SIZE + LINE_SIZE_MAX + CRC_SIZE;

/// A configuration page, read.
#[derive(Clone, Debug)]
pub struct Page<'a> {
    /// The board's command line, parsed.
    pub args: BoardArgs<'a>,
    /// The flock's cluster key file's bytes, if it has one (not yet checked as a key).
    pub key_file: Option<&'a [u8]>,
}

/// Why a page was refused (or could not be written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageError {
    /// The page is erased: nothing was written there.
    Erased,
    /// Not a configuration page of this layout.
    Magic,
    /// The line is longer than [`LINE_SIZE_MAX`], the key file than [`KEY_FIELD_SIZE`],
    /// or the page is cut short.
    Length,
    /// The checksum does not match: a write that did not finish, or damage.
    Checksum,
    /// The line is not UTF-8.
    Utf8,
    /// The line names a host file (`--state` or `--key-file`), which a board has not.
    HostFile,
    /// The line does not parse.
    Args(ArgsError),
}

impl fmt::Display for PageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Erased => {
                f.write_str("configuration page erased (write one: goose board-config)")
            }
            Self::Magic => f.write_str(
                "not a configuration page of this firmware (rewrite it: goose board-config)",
            ),
            Self::Length => f.write_str("configuration page too long or cut short"),
            Self::Checksum => {
                f.write_str("configuration page damaged or partly written (write it again)")
            }
            Self::Utf8 => f.write_str("configuration page line is not UTF-8"),
            Self::HostFile => f.write_str("--state and --key-file have no place on a board's page"),
            Self::Args(error) => {
                f.write_str("configuration page: ")?;
                error.fmt(f)
            }
        }
    }
}

impl core::error::Error for PageError {}

fn crc(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(bytes);
    hasher.finalize()
}

/// Writes the page for `args` (which must name no host file) and the cluster key file's
/// bytes `key_file` into `out`, and
/// returns how many bytes of it to flash.
///
/// # Errors
/// [`PageError::HostFile`] for `--state` or `--key-file`, [`PageError::Length`] for a line
/// over [`LINE_SIZE_MAX`] or a key file over [`KEY_FIELD_SIZE`].
pub fn write_page(
    args: &BoardArgs<'_>,
    key_file: Option<&[u8]>,
    out: &mut [u8; PAGE_SIZE],
) -> Result<usize, PageError> {
    if args.state.is_some() || args.key_file.is_some() {
        return Err(PageError::HostFile);
    }
    let mut line: String<LINE_SIZE_MAX> = String::new();
    crate::write(&mut line, args).map_err(|fmt::Error| PageError::Length)?;
    let size = HEADER_SIZE + line.len() + CRC_SIZE;
    let length = u16::try_from(line.len()).map_err(|_| PageError::Length)?;
    let key_file = key_file.unwrap_or(&[]);
    let key_length = u8::try_from(key_file.len())
        .ok()
        .filter(|length| usize::from(*length) <= KEY_FIELD_SIZE)
        .ok_or(PageError::Length)?;
    out.fill(0xFF);
    out[..MAGIC.len()].copy_from_slice(&MAGIC);
    out[8..10].copy_from_slice(&length.to_le_bytes());
    out[10] = key_length;
    out[11..HEADER_SIZE].fill(0);
    out[11..11 + key_file.len()].copy_from_slice(key_file);
    out[HEADER_SIZE..HEADER_SIZE + line.len()].copy_from_slice(line.as_bytes());
    let checksum = crc(&out[..size - CRC_SIZE]);
    out[size - CRC_SIZE..size].copy_from_slice(&checksum.to_le_bytes());
    Ok(size)
}

/// Reads the page at the start of `bytes` (the flash page, or at least [`PAGE_SIZE`] bytes
/// of it).
///
/// # Errors
/// See [`PageError`]: the first check that fails, in the order of the layout.
pub fn read_page(bytes: &[u8]) -> Result<Page<'_>, PageError> {
    let magic = bytes.get(..MAGIC.len()).ok_or(PageError::Length)?;
    if magic.iter().all(|byte| *byte == 0xFF) {
        return Err(PageError::Erased);
    }
    if magic != MAGIC {
        return Err(PageError::Magic);
    }
    let header = bytes.get(..HEADER_SIZE).ok_or(PageError::Length)?;
    let length = usize::from(u16::from_le_bytes([header[8], header[9]]));
    if length > LINE_SIZE_MAX || usize::from(header[10]) > KEY_FIELD_SIZE {
        return Err(PageError::Length);
    }
    let size = HEADER_SIZE + length + CRC_SIZE;
    let page = bytes.get(..size).ok_or(PageError::Length)?;
    let (covered, checksum) = page.split_at(size - CRC_SIZE);
    let checksum = u32::from_le_bytes([checksum[0], checksum[1], checksum[2], checksum[3]]);
    if crc(covered) != checksum {
        return Err(PageError::Checksum);
    }
    // Checked above: at most KEY_FIELD_SIZE.
    let key_file = match usize::from(header[10]) {
        0 => None,
        length => header.get(11..11 + length),
    };
    let line = core::str::from_utf8(&covered[HEADER_SIZE..]).map_err(|_| PageError::Utf8)?;
    let args = parse(line.split(' ')).map_err(PageError::Args)?;
    if args.state.is_some() || args.key_file.is_some() {
        return Err(PageError::HostFile);
    }
    Ok(Page { args, key_file })
}

/// Writes `page` as text for a person (no key): what `goose board-config` prints.
///
/// # Errors
/// Only those of `out`.
pub fn describe(out: &mut impl Write, page: &Page<'_>) -> fmt::Result {
    crate::write(out, &page.args)?;
    match page.key_file {
        Some(_) => out.write_str(" (with a cluster key)"),
        None => out.write_str(" (no cluster key)"),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    const LINE: &str = "--id 4 --port 9900 --seed 7 --peer 1=192.168.1.51:9900 \
                        --peer 2=192.168.1.52:9900 --address 192.168.1.54/24 --gateway 192.168.1.1";

    fn page(key: Option<&[u8]>) -> ([u8; PAGE_SIZE], usize) {
        let args = parse(LINE.split(' ')).unwrap();
        let mut out = [0; PAGE_SIZE];
        let size = write_page(&args, key, &mut out).unwrap();
        (out, size)
    }

    #[test]
    fn a_page_reads_back_what_was_written() {
        let key = [b'a'; 64];
        let (bytes, size) = page(Some(&key));
        assert_eq!(&bytes[..8], b"GOOSECF1");
        assert!(
            bytes[size..].iter().all(|byte| *byte == 0xFF),
            "the rest stays erased"
        );
        let read = read_page(&bytes).unwrap();
        assert_eq!(read.key_file, Some(&key[..]));
        let expected = parse(LINE.split(' ')).unwrap();
        assert_eq!(read.args.members, expected.members);
        assert_eq!((read.args.lan, read.args.seed), (expected.lan, 7));
        let (bytes, _) = page(None);
        assert_eq!(read_page(&bytes).unwrap().key_file, None);
        let mut text: String<600> = String::new();
        describe(&mut text, &read_page(&bytes).unwrap()).unwrap();
        assert!(
            text.ends_with("--gateway 192.168.1.1 (no cluster key)"),
            "{text}"
        );
    }

    #[test]
    fn every_bad_page_is_refused() {
        assert_eq!(read_page(&[0xFF; PAGE_SIZE]).err(), Some(PageError::Erased));
        let (good, size) = page(Some(&[1; 32]));
        let mut other = good;
        other[7] = b'2';
        assert_eq!(read_page(&other).err(), Some(PageError::Magic));
        assert_eq!(read_page(&good[..size - 1]).err(), Some(PageError::Length));
        let mut long = good;
        long[8..10].copy_from_slice(&(LINE_SIZE_MAX as u16 + 1).to_le_bytes());
        assert_eq!(read_page(&long).err(), Some(PageError::Length));
        // Every single damaged byte is caught, and so is a write cut short anywhere.
        for at in 8..size {
            let mut damaged = good;
            damaged[at] ^= 0x10;
            assert!(read_page(&damaged).is_err(), "byte {at}");
            let mut cut = good;
            cut[at..].fill(0xFF);
            assert!(read_page(&cut).is_err(), "cut at {at}");
        }
        let mut out = [0; PAGE_SIZE];
        let args = parse(LINE.split(' ')).unwrap();
        let long_key = [b'a'; KEY_FIELD_SIZE + 1];
        assert_eq!(
            write_page(&args, Some(&long_key), &mut out),
            Err(PageError::Length)
        );
        let mut long_key = good;
        long_key[10] = KEY_FIELD_SIZE as u8 + 1;
        assert_eq!(read_page(&long_key).err(), Some(PageError::Length));
        let args = parse("--id 1 --port 1 --state s".split(' ')).unwrap();
        assert_eq!(write_page(&args, None, &mut out), Err(PageError::HostFile));
        let args = parse("--id 1 --port 1 --key-file k".split(' ')).unwrap();
        assert_eq!(write_page(&args, None, &mut out), Err(PageError::HostFile));
    }

    #[test]
    fn a_page_with_a_bad_line_names_the_flag() {
        let (mut bytes, size) = page(None);
        // Same length, a bad id, a fresh checksum: the parser's error comes through.
        let at = HEADER_SIZE + "--id ".len();
        bytes[at] = b'x';
        let checksum = crc(&bytes[..size - CRC_SIZE]);
        bytes[size - CRC_SIZE..size].copy_from_slice(&checksum.to_le_bytes());
        assert_eq!(
            read_page(&bytes).err(),
            Some(PageError::Args(ArgsError::BadValue("--id")))
        );
    }
}
