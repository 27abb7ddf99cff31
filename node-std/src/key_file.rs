//! The cluster key on disk: `goose keygen` writes one, `--cluster-key-file` reads one.
//!
//! A key file holds [`KEY_HEX_SIZE`] hex digits (either case; surrounding whitespace, such
//! as the newline `goose keygen` ends with, is ignored), or exactly [`KEY_SIZE`] raw bytes
//! (a key made with e.g. `head -c 32 /dev/urandom`). Anything else is refused. A file of
//! 32 bytes that are all printable ASCII is refused too rather than taken as raw bytes: it
//! is almost surely half of a hex key (a random key is all printable with probability
//! about 10⁻¹³), and a node that took it would silently be in no flock. The rule is
//! [`ClusterKey::from_file_bytes`], which the board firmware applies to the same file.
//!
//! The key is never logged or printed, except by `goose keygen` itself.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use goose_core::auth::key::{self, ClusterKey, KEY_HEX_SIZE, KEY_SIZE};

/// The most bytes read from a key file: a hex key with generous whitespace around it. A
/// longer file is refused without reading it all.
const KEY_FILE_SIZE_MAX: usize = 1024;
/// Permission bits for group and others: a key file with any of them set is logged as a
/// warning (anyone who reads the key can forge votes).
const GROUP_OTHER_MODE_MASK: u32 = 0o077;
/// The mode `goose keygen --out` creates its file with.
const KEY_FILE_MODE: u32 = 0o600;

/// `--cluster-key-file`: the path as given, and the key it holds.
#[derive(Clone, Debug)]
pub(crate) struct KeyFile {
    /// The file, as given on the command line (children of `goose cluster` get it too).
    pub(crate) path: PathBuf,
    /// The key (its `Debug` prints no key material).
    pub(crate) key: ClusterKey,
}

/// Reads and checks a key file (clap's value parser for `--cluster-key-file`, so a bad
/// one is a usage error: exit 2 with a one-line message naming the file). Logs a warning
/// if group or others may access it.
///
/// # Errors
///
/// Why the file is no key: unreadable, too long, or neither hex nor 32 raw bytes.
pub(crate) fn parse_key_file(text: &str) -> Result<KeyFile, String> {
    // clap's message names the file: `invalid value '<file>' for '--cluster-key-file …'`.
    let path = PathBuf::from(text);
    let key = read_key(&path)?;
    Ok(KeyFile { path, key })
}

fn read_key(path: &Path) -> Result<ClusterKey, String> {
    let file = File::open(path).map_err(|error| format!("cannot open it: {error}"))?;
    if let Ok(metadata) = file.metadata() {
        let mode = metadata.permissions().mode();
        if mode & GROUP_OTHER_MODE_MASK != 0 {
            log::warn!(
                "cluster key file {} is accessible by group or others (mode {:o}): anyone \
                 who reads it can forge peer frames and control; chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let mut bytes = Vec::with_capacity(KEY_FILE_SIZE_MAX);
    let limit = u64::try_from(KEY_FILE_SIZE_MAX + 1).unwrap_or(u64::MAX);
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read it: {error}"))?;
    decode_key(&bytes)
}

/// The key in a key file's bytes (module docs; the rule is
/// [`ClusterKey::from_file_bytes`], the board firmware's too), or why they are none.
fn decode_key(bytes: &[u8]) -> Result<ClusterKey, String> {
    const EXPECTED: &str = "a cluster key file holds 64 hex digits (as `goose keygen` \
                            writes) or exactly 32 raw bytes";
    if bytes.len() > KEY_FILE_SIZE_MAX {
        return Err(format!("longer than {KEY_FILE_SIZE_MAX} bytes; {EXPECTED}"));
    }
    ClusterKey::from_file_bytes(bytes).map_err(|_| match std::str::from_utf8(bytes) {
        Err(_) => format!(
            "{} bytes of binary, not {KEY_SIZE}; {EXPECTED}",
            bytes.len()
        ),
        Ok(text) if text.trim_ascii().len() == KEY_HEX_SIZE => {
            format!("{KEY_HEX_SIZE} characters but not all hex digits; {EXPECTED}")
        }
        Ok(text) => format!(
            "{} characters of text, not {KEY_HEX_SIZE} hex digits; {EXPECTED}",
            text.trim_ascii().len()
        ),
    })
}

/// Why `goose keygen` failed.
#[derive(Debug)]
pub(crate) enum KeygenError {
    /// The OS random number generator failed.
    Random(getrandom::Error),
    /// `--out` names a file that exists: it is never overwritten.
    Exists(PathBuf),
    /// `--out` could not be created or written.
    Write(PathBuf, io::Error),
    /// Standard output could not be written.
    Stdout(io::Error),
}

impl fmt::Display for KeygenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Random(error) => write!(f, "the OS random number generator failed: {error}"),
            Self::Exists(path) => write!(
                f,
                "{} exists; not overwriting it (a flock's nodes must share one key)",
                path.display()
            ),
            Self::Write(path, error) => write!(f, "cannot write {}: {error}", path.display()),
            Self::Stdout(error) => write!(f, "cannot write the key: {error}"),
        }
    }
}

impl std::error::Error for KeygenError {}

/// A new key from the OS random number generator, as its file's text: [`KEY_HEX_SIZE`]
/// lowercase hex digits and a newline.
///
/// # Errors
///
/// [`KeygenError::Random`] if the OS generator fails.
pub(crate) fn new_key_text() -> Result<String, KeygenError> {
    let mut bytes = [0u8; KEY_SIZE];
    getrandom::fill(&mut bytes).map_err(KeygenError::Random)?;
    let mut text = String::with_capacity(KEY_HEX_SIZE + 1);
    // Writing into a String cannot fail.
    let _ = key::write_hex(&mut text, &bytes);
    text.push('\n');
    Ok(text)
}

/// `goose keygen [--out <file>]`: prints a new key, or writes it to a new file with mode
/// 0600 (never over an existing one), synced to disk.
///
/// # Errors
///
/// See [`KeygenError`].
pub(crate) fn keygen(out: Option<&Path>) -> Result<(), KeygenError> {
    let text = new_key_text()?;
    let Some(path) = out else {
        let mut stdout = io::stdout().lock();
        return stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(KeygenError::Stdout);
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_FILE_MODE)
        .open(path)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => KeygenError::Exists(path.to_path_buf()),
            _ => KeygenError::Write(path.to_path_buf(), error),
        })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| KeygenError::Write(path.to_path_buf(), error))
}

#[cfg(test)]
mod tests {
    use super::{decode_key, new_key_text, KEY_FILE_SIZE_MAX};
    use goose_core::auth::key::ClusterKey;
    use goose_core::auth::Mac as _;

    fn tag(key: &ClusterKey) -> [u8; 16] {
        key.tag(b"probe")
    }

    #[test]
    fn hex_and_raw_keys_are_read_and_anything_else_refused() {
        let text = new_key_text().unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert!(text[..64]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(text, new_key_text().unwrap(), "two keys differ");
        let hex = decode_key(text.as_bytes()).unwrap();
        let spaced = decode_key(format!("  {}\r\n\n", text.trim().to_uppercase()).as_bytes());
        assert_eq!(tag(&spaced.unwrap()), tag(&hex));

        let raw = [0x80u8; 32];
        assert_eq!(tag(&decode_key(&raw).unwrap()), tag(&ClusterKey::new(&raw)));
        let long = vec![b' '; KEY_FILE_SIZE_MAX + 1];
        for bad in [
            &b""[..],
            b"\n",
            &text.as_bytes()[..63],
            &text.as_bytes()[..32], // half a hex key: not taken as raw bytes
            &[0x80; 31],
            &[0x80; 33],
            &[b'g'; 64],
            &long,
        ] {
            let error = decode_key(bad).map(|_| ()).unwrap_err();
            assert!(error.contains("64 hex digits"), "{error}");
        }
    }
}
