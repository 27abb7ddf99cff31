//! Durable file storage in a node's data dir.
//!
//! ```text
//! <data-dir>/lock       flock'ed for the life of the process: one process per dir
//! <data-dir>/state      the persistent state (below), replaced atomically on every save
//! <data-dir>/state.tmp  the next state while it is written; ignored when reading
//! <data-dir>/epoch      the boot epoch (below), one more at every start
//! <data-dir>/epoch.tmp  the next epoch while it is written; ignored when reading
//!
//! state = header (16 bytes) ++ postcard bytes of goose_core::PersistentState
//!   bytes 0..6    magic "GOOSE1"
//!   bytes 6..8    format version, u16 little-endian
//!   bytes 8..12   payload length, u32 little-endian
//!   bytes 12..16  CRC-32 (IEEE) of bytes 6..12 and the payload, u32 little-endian
//!
//! epoch = the same header with magic "GEPOCH" ++ the epoch, u32 little-endian (20 bytes)
//! ```
//!
//! A save writes `state.tmp`, fsyncs it, renames it over `state` and fsyncs the directory,
//! so after a crash `state` holds either the old or the new state, whole. A state file
//! that fails any check is refused with an error naming it; it is never reset, because a
//! node that forgot its term or vote could vote twice in one term.
//!
//! The boot epoch ([`DataDir::next_epoch`]) numbers this process's sealed peer frames
//! (`goose_core::auth`): at every start, with a cluster key or without, the node reads it,
//! adds one and writes it back the same durable way *before* its socket exists, so no two
//! boots of a node ever seal with the same epoch (receivers would drop the later boot's
//! frames as replays). No file is the first boot: epoch 1. A file that fails a check is
//! refused like the state file, never reset, for the same reason; at `u32::MAX` the node
//! refuses to start. It is bumped at every start, not only with a key, so the data dir
//! needs nothing when a key is added later, and every start runs the same code.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use goose_core::limits::{LOG_ENTRIES_MAX, MEMBERS_MAX};
use goose_core::storage::state_size_max;
use goose_core::{PersistentState, SavedState, Storage, StorageError};

/// The state file's name inside the data dir.
const STATE_FILE: &str = "state";
/// Where the next state is written before it is renamed over [`STATE_FILE`].
const STATE_TMP_FILE: &str = "state.tmp";
/// The lock file's name inside the data dir.
const LOCK_FILE: &str = "lock";
/// The boot epoch's file name inside the data dir.
const EPOCH_FILE: &str = "epoch";
/// Where the next epoch is written before it is renamed over [`EPOCH_FILE`].
const EPOCH_TMP_FILE: &str = "epoch.tmp";

const MAGIC: [u8; 6] = *b"GOOSE1";
/// The epoch file's magic: a state file can never be mistaken for it, nor the reverse.
const EPOCH_MAGIC: [u8; 6] = *b"GEPOCH";
/// Bytes of the epoch file: the header and a u32.
const EPOCH_FILE_SIZE: usize = HEADER_SIZE + 4;
/// The state file's format: 2 since the state holds a log term and a loyalty window.
const FORMAT_VERSION: u16 = 2;
/// The first state format, read and converted at start (its next save writes format 2).
const FIRST_FORMAT_VERSION: u16 = 1;
/// The epoch file's format, unchanged since the first.
const EPOCH_FORMAT_VERSION: u16 = 1;
const HEADER_SIZE: usize = 16;

/// The largest payload a node with the default capacities can save.
const PAYLOAD_SIZE_MAX: usize = state_size_max(MEMBERS_MAX, LOG_ENTRIES_MAX);
/// The largest state file: reading stops after this many bytes.
const FILE_SIZE_MAX: usize = HEADER_SIZE + PAYLOAD_SIZE_MAX;

const _: () = assert!(PAYLOAD_SIZE_MAX <= u32::MAX as usize);

/// Why a data dir could not be opened or its state read.
#[derive(Debug)]
pub(crate) enum DataDirError {
    /// The directory could not be created or the lock file opened.
    Open(PathBuf, io::Error),
    /// Another process holds the lock.
    Locked(PathBuf),
    /// The state file exists but could not be read.
    Read(PathBuf, io::Error),
    /// The state file was read but fails a check.
    Corrupt(PathBuf, String),
    /// The epoch file exists but could not be read, or fails a check.
    Epoch(PathBuf, String),
    /// The epoch file holds `u32::MAX`: no higher epoch is left.
    EpochsExhausted(PathBuf),
    /// The next epoch could not be written durably.
    EpochWrite(PathBuf, io::Error),
}

impl fmt::Display for DataDirError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open(path, error) => {
                write!(f, "cannot open data dir {}: {error}", path.display())
            }
            Self::Locked(path) => write!(
                f,
                "data dir is in use by another goose process (lock held on {})",
                path.display()
            ),
            Self::Read(path, error) => {
                write!(f, "cannot read state file {}: {error}", path.display())
            }
            Self::Corrupt(path, reason) => write!(
                f,
                "state file {} is corrupt ({reason}); refusing to start. It is never reset \
                 automatically: move it away only if this node may safely forget its term and vote",
                path.display()
            ),
            Self::Epoch(path, reason) => write!(
                f,
                "epoch file {} refused ({reason}); refusing to start. It is never reset \
                 automatically: a reused epoch makes peers drop this node's frames as replays",
                path.display()
            ),
            Self::EpochsExhausted(path) => write!(
                f,
                "epoch file {} holds {}, the last boot epoch; refusing to start (a reused \
                 epoch makes peers drop this node's frames as replays)",
                path.display(),
                u32::MAX
            ),
            Self::EpochWrite(path, error) => write!(
                f,
                "cannot write epoch file {} durably: {error}; refusing to start",
                path.display()
            ),
        }
    }
}

impl std::error::Error for DataDirError {}

/// An open, locked data dir. The lock is released when this is dropped (or the process
/// dies, however it dies).
#[derive(Debug)]
pub(crate) struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock.
    ///
    /// # Errors
    ///
    /// [`DataDirError::Open`] if the directory or lock file cannot be created,
    /// [`DataDirError::Locked`] if another process holds the lock.
    pub(crate) fn open(path: &Path) -> Result<Self, DataDirError> {
        let open_error = |error| DataDirError::Open(path.to_path_buf(), error);
        fs::create_dir_all(path).map_err(open_error)?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(open_error)?;
        match fs4::FileExt::try_lock(&lock) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => return Err(DataDirError::Locked(lock_path)),
            Err(fs4::TryLockError::Error(error)) => return Err(open_error(error)),
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The path of the state file.
    pub(crate) fn state_path(&self) -> PathBuf {
        self.path.join(STATE_FILE)
    }

    /// Reads and checks the state file: `None` if there is none yet (a new node), else the
    /// postcard payload to hand to `Node::new`.
    ///
    /// # Errors
    ///
    /// [`DataDirError::Read`] if it exists but cannot be read, [`DataDirError::Corrupt`] if
    /// its header, length or checksum is wrong.
    pub(crate) fn read_state(&self) -> Result<Option<Vec<u8>>, DataDirError> {
        let path = self.state_path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(DataDirError::Read(path, error)),
        };
        let mut bytes = Vec::with_capacity(FILE_SIZE_MAX);
        let limit = u64::try_from(FILE_SIZE_MAX + 1).unwrap_or(u64::MAX);
        if let Err(error) = file.take(limit).read_to_end(&mut bytes) {
            return Err(DataDirError::Read(path, error));
        }
        let versions = [FORMAT_VERSION, FIRST_FORMAT_VERSION];
        match decode_file(MAGIC, &versions, &bytes) {
            Ok((FORMAT_VERSION, payload)) => Ok(Some(payload.to_vec())),
            Ok((_, payload)) => match first_format_to_current(payload) {
                Ok(current) => Ok(Some(current)),
                Err(reason) => Err(DataDirError::Corrupt(path, reason)),
            },
            Err(reason) => Err(DataDirError::Corrupt(path, reason)),
        }
    }

    /// The path of the boot epoch file.
    pub(crate) fn epoch_path(&self) -> PathBuf {
        self.path.join(EPOCH_FILE)
    }

    /// This boot's epoch: the epoch file's plus one (1 without a file), written durably
    /// before it is returned (module docs). Call it once per process start, before the
    /// socket sends anything.
    ///
    /// # Errors
    ///
    /// [`DataDirError::Epoch`] if the file exists but cannot be read or fails a check (it
    /// is left as it is), [`DataDirError::EpochsExhausted`] at `u32::MAX`,
    /// [`DataDirError::EpochWrite`] if the new epoch could not be written durably.
    pub(crate) fn next_epoch(&self) -> Result<u32, DataDirError> {
        let path = self.epoch_path();
        let previous = match File::open(&path) {
            Ok(file) => {
                let mut bytes = Vec::with_capacity(EPOCH_FILE_SIZE);
                let limit = u64::try_from(EPOCH_FILE_SIZE + 1).unwrap_or(u64::MAX);
                file.take(limit)
                    .read_to_end(&mut bytes)
                    .map_err(|error| DataDirError::Epoch(path.clone(), error.to_string()))?;
                decode_epoch(&bytes).map_err(|reason| DataDirError::Epoch(path.clone(), reason))?
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => 0,
            Err(error) => return Err(DataDirError::Epoch(path, error.to_string())),
        };
        let epoch = previous
            .checked_add(1)
            .ok_or_else(|| DataDirError::EpochsExhausted(path.clone()))?;
        write_durably(&self.path, EPOCH_TMP_FILE, EPOCH_FILE, &encode_epoch(epoch))
            .map_err(|error| DataDirError::EpochWrite(path, error))?;
        Ok(epoch)
    }

    /// A [`Storage`] writing into this dir. Only one should exist at a time.
    pub(crate) fn storage(&self) -> FileStorage {
        FileStorage {
            dir: self.path.clone(),
            buffer: vec![0; FILE_SIZE_MAX],
        }
    }
}

/// [`Storage`] over the data dir's state file.
#[derive(Debug)]
pub(crate) struct FileStorage {
    dir: PathBuf,
    /// Header and payload of the state being saved; sized once, never grows.
    buffer: Vec<u8>,
}

/// Replaces `dir/name` with `bytes` durably: writes `dir/tmp_name`, fsyncs it, renames it
/// over `dir/name` and fsyncs `dir`, so after a crash `name` holds the old or the new
/// bytes, whole.
fn write_durably(dir: &Path, tmp_name: &str, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp_path = dir.join(tmp_name);
    let mut tmp = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&tmp_path)?;
    tmp.write_all(bytes)?;
    tmp.sync_all()?;
    drop(tmp);
    fs::rename(&tmp_path, dir.join(name))?;
    // The rename is only durable once the directory entry is.
    File::open(dir)?.sync_all()
}

impl Storage for FileStorage {
    fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError> {
        let (header, payload) = self.buffer.split_at_mut(HEADER_SIZE);
        let payload_size = state.encode(payload)?.len();
        let header_bytes = encode_header(MAGIC, &payload[..payload_size]);
        header.copy_from_slice(&header_bytes);
        let size = HEADER_SIZE + payload_size;
        write_durably(&self.dir, STATE_TMP_FILE, STATE_FILE, &self.buffer[..size]).map_err(
            |error| {
                log::error!(
                    "storage: saving {} (written via {STATE_TMP_FILE}) failed: {error}",
                    self.dir.join(STATE_FILE).display()
                );
                StorageError::Io
            },
        )
    }
}

/// A state saved by a build of the first format (wire version 1), as the current format's
/// payload: nothing is lost, the log term is derived (`SavedState::decode_first_format`).
fn first_format_to_current(payload: &[u8]) -> Result<Vec<u8>, String> {
    let state = SavedState::<MEMBERS_MAX, LOG_ENTRIES_MAX>::decode_first_format(payload)
        .map_err(|error| format!("format {FIRST_FORMAT_VERSION}: {error}"))?;
    let mut buffer = vec![0; PAYLOAD_SIZE_MAX];
    let bytes = state
        .as_persistent()
        .encode(&mut buffer)
        .map_err(|error| format!("format {FIRST_FORMAT_VERSION}: {error}"))?;
    Ok(bytes.to_vec())
}

fn encode_header(magic: [u8; 6], payload: &[u8]) -> [u8; HEADER_SIZE] {
    assert!(payload.len() <= PAYLOAD_SIZE_MAX);
    let length = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let version = if magic == MAGIC {
        FORMAT_VERSION
    } else {
        EPOCH_FORMAT_VERSION
    };
    let mut header = [0; HEADER_SIZE];
    header[0..6].copy_from_slice(&magic);
    header[6..8].copy_from_slice(&version.to_le_bytes());
    header[8..12].copy_from_slice(&length.to_le_bytes());
    let crc = checksum(&header[6..12], payload);
    header[12..16].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The epoch file's bytes for `epoch`.
fn encode_epoch(epoch: u32) -> [u8; EPOCH_FILE_SIZE] {
    let payload = epoch.to_le_bytes();
    let mut bytes = [0; EPOCH_FILE_SIZE];
    bytes[..HEADER_SIZE].copy_from_slice(&encode_header(EPOCH_MAGIC, &payload));
    bytes[HEADER_SIZE..].copy_from_slice(&payload);
    bytes
}

/// Checks a whole epoch file and returns its epoch, or why it was refused.
fn decode_epoch(bytes: &[u8]) -> Result<u32, String> {
    let (_, payload) = decode_file(EPOCH_MAGIC, &[EPOCH_FORMAT_VERSION], bytes)?;
    let epoch: [u8; 4] = payload
        .try_into()
        .map_err(|_| format!("{} payload bytes, an epoch is 4", payload.len()))?;
    Ok(u32::from_le_bytes(epoch))
}

/// Checks a whole state (or epoch) file against its `magic` and the format `versions` this
/// build reads, and returns its version and payload, or why it was refused.
fn decode_file<'b>(
    magic: [u8; 6],
    versions: &[u16],
    bytes: &'b [u8],
) -> Result<(u16, &'b [u8]), String> {
    let Some((header, payload)) = bytes.split_first_chunk::<HEADER_SIZE>() else {
        return Err(format!(
            "{} bytes, shorter than the {HEADER_SIZE}-byte header",
            bytes.len()
        ));
    };
    if header[0..6] != magic {
        return Err(format!(
            "bad magic: not a goose {} file",
            if magic == MAGIC { "state" } else { "epoch" }
        ));
    }
    let version = u16::from_le_bytes([header[6], header[7]]);
    if !versions.contains(&version) {
        return Err(format!(
            "format version {version}, this build reads {versions:?}"
        ));
    }
    let length = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if usize::try_from(length).ok() != Some(payload.len()) {
        return Err(format!(
            "header says {length} payload bytes, file holds {}",
            payload.len()
        ));
    }
    let crc = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if checksum(&header[6..12], payload) != crc {
        return Err("checksum mismatch".to_owned());
    }
    Ok((version, payload))
}

fn checksum(header_fields: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_fields);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::{
        checksum, decode_epoch, decode_file, encode_epoch, encode_header, DataDir, DataDirError,
        EPOCH_FILE, FIRST_FORMAT_VERSION, FORMAT_VERSION, HEADER_SIZE, MAGIC, STATE_FILE,
    };
    use goose_core::{Config, Instant, Member, Node, NodeId};
    use std::net::SocketAddr;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("goose-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn file_with(payload: &[u8]) -> Vec<u8> {
        let mut bytes = encode_header(MAGIC, payload).to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn header_round_trips() {
        let bytes = file_with(b"hello");
        assert_eq!(
            decode_file(MAGIC, &[FORMAT_VERSION], &bytes),
            Ok((FORMAT_VERSION, &b"hello"[..]))
        );
        assert_eq!(
            decode_file(MAGIC, &[FORMAT_VERSION], &file_with(b"")),
            Ok((FORMAT_VERSION, &b""[..]))
        );
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let bytes = file_with(b"some state bytes");
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[index] ^= 1 << bit;
                assert!(
                    decode_file(MAGIC, &[FORMAT_VERSION], &corrupt).is_err(),
                    "byte {index} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn truncated_and_extended_files_are_refused() {
        let bytes = file_with(b"some state bytes");
        for size in 0..bytes.len() {
            assert!(
                decode_file(MAGIC, &[FORMAT_VERSION], &bytes[..size]).is_err(),
                "size {size}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_file(MAGIC, &[FORMAT_VERSION], &longer).is_err());
        assert!(decode_file(MAGIC, &[FORMAT_VERSION], &bytes[..HEADER_SIZE - 1]).is_err());
    }

    #[test]
    fn a_node_restarted_on_its_dir_remembers_its_term_and_vote() {
        let dir = temp_dir("restart");
        let id = NodeId::new(1).unwrap();
        let addr: SocketAddr = "127.0.0.1:9900".parse().unwrap();
        let members = [Member {
            id,
            addr,
            voter: true,
        }];
        let config = Config::new(id);
        let data_dir = DataDir::open(&dir).unwrap();
        assert_eq!(data_dir.read_state().unwrap(), None);
        let mut node: Node<_> = Node::new(
            &config,
            data_dir.storage(),
            None,
            &members,
            7,
            Instant::ZERO,
        )
        .unwrap();
        let mut now = Instant::ZERO;
        for _ in 0..100 {
            if node.is_goose(now) {
                break;
            }
            now = node.poll_timeout().unwrap();
            node.handle_timeout(now);
            let mut frame = [0; goose_core::limits::FRAME_SIZE_MAX];
            while node.poll_transmit(now, &mut frame).is_some() {}
        }
        assert!(node.is_goose(now));
        let (term, vote) = (node.term(), node.voted_for());
        drop(node);

        let saved = data_dir.read_state().unwrap().unwrap();
        let node: Node<_> =
            Node::new(&config, data_dir.storage(), Some(&saved), &[], 8, now).unwrap();
        assert_eq!((node.term(), node.voted_for()), (term, vote));
        assert_eq!(node.members(), &members);
        assert!(!node.is_goose(now));

        // One flipped byte and the dir is refused, and the file is left as it was.
        let path = dir.join(STATE_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            data_dir.read_state(),
            Err(DataDirError::Corrupt(..))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        drop(data_dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_state_file_of_the_first_format_is_read_and_converted() {
        use goose_core::{Duration, Entry, EntryId, LogIndex, Payload, PersistentState, Term};
        let dir = temp_dir("first-format");
        let id = NodeId::new(1).unwrap();
        let members = [Member {
            id,
            addr: "127.0.0.1:9900".parse().unwrap(),
            voter: true,
        }];
        let entries = [Entry {
            term: Term(3),
            payload: Payload::Noop,
        }];
        let current = PersistentState {
            id,
            term: Term(3),
            voted_for: Some(id),
            log_term: Term(0),
            stick: Duration::ZERO,
            commit: LogIndex(0),
            snapshot: EntryId::default(),
            snapshot_members: &members,
            entries: &entries,
        };
        let mut buffer = [0; 256];
        let bytes = current.encode(&mut buffer).unwrap();
        // The first format is the same postcard fields without the log term and the
        // window, here two zero bytes after id (1), term (3) and the vote (1 = Some, 1).
        assert_eq!(&bytes[..6], &[1, 3, 1, 1, 0, 0]);
        let first = [&bytes[..4], &bytes[6..]].concat();
        let mut file = encode_header(MAGIC, &first).to_vec();
        file[6..8].copy_from_slice(&FIRST_FORMAT_VERSION.to_le_bytes());
        let crc = checksum(&file[6..12], &first);
        file[12..16].copy_from_slice(&crc.to_le_bytes());
        file.extend_from_slice(&first);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE_FILE), &file).unwrap();

        let data_dir = DataDir::open(&dir).unwrap();
        let saved = data_dir.read_state().unwrap().unwrap();
        let config = Config::new(id);
        let node: Node<_> = Node::new(
            &config,
            data_dir.storage(),
            Some(&saved),
            &[],
            8,
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!((node.term(), node.voted_for()), (Term(3), Some(id)));
        assert_eq!(node.log_term(), Term(3), "its last entry's term");
        assert_eq!(node.entries(), &entries);
        drop(data_dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_epoch_rises_at_every_start_and_a_bad_file_is_refused_as_it_is() {
        let dir = temp_dir("epoch");
        let data_dir = DataDir::open(&dir).unwrap();
        assert_eq!(data_dir.next_epoch().unwrap(), 1, "no file: the first boot");
        assert_eq!(data_dir.next_epoch().unwrap(), 2);
        let path = dir.join(EPOCH_FILE);
        let good = std::fs::read(&path).unwrap();
        assert_eq!(decode_epoch(&good), Ok(2));
        for bad in [
            Vec::new(),
            b"3\n".to_vec(),
            good[..good.len() - 1].to_vec(),
            [&good[..], &[0]].concat(),
            {
                let mut flipped = good.clone();
                flipped[HEADER_SIZE] ^= 4;
                flipped
            },
            encode_header(MAGIC, &2u32.to_le_bytes()).to_vec(),
        ] {
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(data_dir.next_epoch(), Err(DataDirError::Epoch(..))),
                "{bad:?}"
            );
            assert_eq!(std::fs::read(&path).unwrap(), bad, "left as it was");
        }
        std::fs::write(&path, encode_epoch(u32::MAX)).unwrap();
        assert!(matches!(
            data_dir.next_epoch(),
            Err(DataDirError::EpochsExhausted(_))
        ));
        std::fs::write(&path, encode_epoch(u32::MAX - 1)).unwrap();
        assert_eq!(data_dir.next_epoch().unwrap(), u32::MAX);
        drop(data_dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_open_of_one_dir_is_refused() {
        let dir = temp_dir("lock");
        let first = DataDir::open(&dir);
        assert!(first.is_ok());
        assert!(matches!(DataDir::open(&dir), Err(DataDirError::Locked(_))));
        drop(first);
        assert!(DataDir::open(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
