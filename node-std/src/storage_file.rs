//! Durable file storage in a node's data dir.
//!
//! ```text
//! <data-dir>/lock       flock'ed for the life of the process: one process per dir
//! <data-dir>/state      the persistent state: two slots, saved alternately in place
//! <data-dir>/state.tmp  a new or converted state file while it is written; ignored when read
//! <data-dir>/epoch      the boot epoch: two slots too, one more at every start
//! <data-dir>/epoch.tmp  the same for the epoch file
//!
//! state = a file of two slots (`slots`, 8192 bytes), magic "GOOSE1", format version 3,
//!         each slot's payload the postcard bytes of goose_core::PersistentState
//! epoch = the same with magic "GEPOCH", format version 2, payload the epoch (u32 LE)
//! ```
//!
//! A save writes the state into the slot that does not hold the newest one, with the next
//! sequence number and a checksum, and syncs that data (`fdatasync`): one data sync, no
//! rename and no directory sync, because the file never changes size. At start the valid
//! slot with the higher sequence number wins, so a crash in the middle of a save loses
//! only the state being saved, which the node had not acted on (it speaks only once `save`
//! has returned). The file is created, and a file of an older format converted, the way
//! every save used to work: written whole to `state.tmp`, fsynced, renamed over `state`,
//! the directory fsynced; so at any crash `state` holds the old file or the new one.
//!
//! Older formats are read, and converted at the first save without losing anything: format
//! 2 (one record: a 16-byte header, magic "GOOSE1", version, payload length and CRC-32, then
//! the same payload) and format 1 (the same record holding the first format's payload, with
//! no log term nor loyalty window: `SavedState::decode_first_format`). The epoch's format 1
//! is that record with magic "GEPOCH" and the epoch (20 bytes).
//!
//! A state file that fails every check is refused with an error naming it; it is never
//! reset, because a node that forgot its term or vote could vote twice in one term.
//!
//! The boot epoch ([`DataDir::next_epoch`]) numbers this process's sealed peer frames
//! (`goose_core::auth`): at every start, with a cluster key or without, the node reads it,
//! adds one and writes it back durably *before* its socket exists, so no two boots of a
//! node ever seal with the same epoch (receivers would drop the later boot's frames as
//! replays). No file is the first boot: epoch 1. A file that fails a check is refused like
//! the state file, never reset, for the same reason; at `u32::MAX` the node refuses to
//! start. It is bumped at every start, not only with a key, so the data dir needs nothing
//! when a key is added later, and every start runs the same code.

mod slots;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use goose_core::limits::{LOG_ENTRIES_MAX, MEMBERS_MAX};
use goose_core::storage::state_size_max;
use goose_core::{PersistentState, SavedState, Storage, StorageError};

use self::slots::SlotFile;

/// The state file's name inside the data dir.
const STATE_FILE: &str = "state";
/// Where a new or converted state file is written before it is renamed over [`STATE_FILE`].
const STATE_TMP_FILE: &str = "state.tmp";
/// The lock file's name inside the data dir.
const LOCK_FILE: &str = "lock";
/// The boot epoch's file name inside the data dir.
const EPOCH_FILE: &str = "epoch";
/// Where a new or converted epoch file is written before it is renamed over [`EPOCH_FILE`].
const EPOCH_TMP_FILE: &str = "epoch.tmp";

const MAGIC: [u8; 6] = *b"GOOSE1";
/// The epoch file's magic: a state file can never be mistaken for it, nor the reverse.
const EPOCH_MAGIC: [u8; 6] = *b"GEPOCH";
/// The state file's format: 3 since it is two slots.
const FORMAT_VERSION: u16 = 3;
/// The one-record format with the log term and the loyalty window, read and converted.
const SECOND_FORMAT_VERSION: u16 = 2;
/// The first state format, read and converted.
const FIRST_FORMAT_VERSION: u16 = 1;
/// The epoch file's format: 2 since it is two slots.
const EPOCH_FORMAT_VERSION: u16 = 2;
/// The epoch file's first format, one record, read and converted.
const FIRST_EPOCH_FORMAT_VERSION: u16 = 1;
/// The header of a file of the one-record formats.
const RECORD_HEADER_SIZE: usize = 16;

/// The largest payload a node with the default capacities can save.
const PAYLOAD_SIZE_MAX: usize = state_size_max(MEMBERS_MAX, LOG_ENTRIES_MAX);

const _: () = assert!(PAYLOAD_SIZE_MAX <= slots::PAYLOAD_SIZE_MAX);
const _: () = assert!(RECORD_HEADER_SIZE + PAYLOAD_SIZE_MAX < slots::FILE_SIZE);

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
    /// postcard payload to hand to `Node::new` (of a file of an older format: converted).
    ///
    /// # Errors
    ///
    /// [`DataDirError::Read`] if it exists but cannot be read, [`DataDirError::Corrupt`] if
    /// no slot (or record) of it passes every check.
    pub(crate) fn read_state(&self) -> Result<Option<Vec<u8>>, DataDirError> {
        let path = self.state_path();
        let Some(bytes) =
            read_file(&path).map_err(|error| DataDirError::Read(path.clone(), error))?
        else {
            return Ok(None);
        };
        decode_state(&bytes)
            .map(Some)
            .map_err(|reason| DataDirError::Corrupt(path, reason))
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
        let refused = |reason: String| DataDirError::Epoch(path.clone(), reason);
        let bytes = read_file(&path).map_err(|error| refused(error.to_string()))?;
        let (previous, newest) = match bytes.as_deref().map(decode_epoch).transpose() {
            Ok(found) => found.unwrap_or((0, None)),
            Err(reason) => return Err(refused(reason)),
        };
        let epoch = previous
            .checked_add(1)
            .ok_or_else(|| DataDirError::EpochsExhausted(path.clone()))?;
        let payload = epoch.to_le_bytes();
        let written = match newest {
            Some(newest) => OpenOptions::new().write(true).open(&path).and_then(|file| {
                SlotFile::open(file, EPOCH_MAGIC, EPOCH_FORMAT_VERSION, newest).save(&payload)
            }),
            None => slots::first_image(EPOCH_MAGIC, EPOCH_FORMAT_VERSION, &payload)
                .and_then(|image| write_durably(&self.path, EPOCH_TMP_FILE, EPOCH_FILE, &image)),
        };
        written.map_err(|error| DataDirError::EpochWrite(path, error))?;
        Ok(epoch)
    }

    /// A [`Storage`] writing into this dir. Only one should exist at a time.
    pub(crate) fn storage(&self) -> FileStorage {
        FileStorage {
            dir: self.path.clone(),
            payload: vec![0; PAYLOAD_SIZE_MAX],
            file: None,
        }
    }
}

/// [`Storage`] over the data dir's state file.
#[derive(Debug)]
pub(crate) struct FileStorage {
    dir: PathBuf,
    /// The state being saved, encoded; sized once, never grows.
    payload: Vec<u8>,
    /// The state file, open for saves in place once the first save has found (or made) it.
    file: Option<SlotFile<File>>,
}

impl Storage for FileStorage {
    fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError> {
        let size = state.encode(&mut self.payload)?.len();
        let payload = &self.payload[..size];
        let result = match &mut self.file {
            Some(file) => file.save(payload),
            None => open_state_file(&self.dir, payload).map(|file| self.file = Some(file)),
        };
        result.map_err(|error| {
            log::error!(
                "storage: saving {} failed: {error}",
                self.dir.join(STATE_FILE).display()
            );
            StorageError::Io
        })
    }
}

/// The first save of a process: saves `payload` into `dir`'s state file and returns it
/// ready for the next saves in place. A file of two slots is opened and saved into; none
/// yet, or one record of an older format (read at start, converted now), is replaced by a
/// new file holding `payload`, written whole the durable way ([`write_durably`]).
fn open_state_file(dir: &Path, payload: &[u8]) -> io::Result<SlotFile<File>> {
    let path = dir.join(STATE_FILE);
    match read_file(&path)? {
        Some(bytes) if bytes.len() == slots::FILE_SIZE => {
            let newest = slots::decode(MAGIC, FORMAT_VERSION, &bytes)
                .map_err(|reason| io::Error::new(io::ErrorKind::InvalidData, reason))?;
            let file = OpenOptions::new().write(true).open(&path)?;
            let at = (newest.slot, newest.sequence);
            let mut file = SlotFile::open(file, MAGIC, FORMAT_VERSION, at);
            file.save(payload)?;
            Ok(file)
        }
        _ => {
            let image = slots::first_image(MAGIC, FORMAT_VERSION, payload)?;
            write_durably(dir, STATE_TMP_FILE, STATE_FILE, &image)?;
            let file = OpenOptions::new().write(true).open(&path)?;
            Ok(SlotFile::open(file, MAGIC, FORMAT_VERSION, (0, 1)))
        }
    }
}

/// The whole file at `path`, up to one byte more than a slot file; `None` if there is none.
fn read_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut bytes = Vec::with_capacity(slots::FILE_SIZE);
    let limit = u64::try_from(slots::FILE_SIZE + 1).unwrap_or(u64::MAX);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
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

/// The current format's payload of a whole state file of any format this build reads, or
/// why it is refused.
fn decode_state(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() == slots::FILE_SIZE {
        let newest = slots::decode(MAGIC, FORMAT_VERSION, bytes)?;
        if let Some(damaged) = &newest.damaged {
            // A crash during a save leaves exactly this, and the node had not acted on that
            // save; a disk that damaged a slot after the node acted on it leaves the same,
            // and then the node starts one save back. Nothing here can tell them apart: say
            // so where an operator will look.
            log::warn!(
                "{STATE_FILE}: {damaged}; starting from slot {} (save {}). After a crash \
                 during a save this is expected; otherwise the disk damaged the newer state \
                 (see the README's known limits)",
                newest.slot,
                newest.sequence
            );
        }
        return Ok(newest.payload.to_vec());
    }
    let versions = [SECOND_FORMAT_VERSION, FIRST_FORMAT_VERSION];
    match decode_record(MAGIC, &versions, bytes)? {
        (SECOND_FORMAT_VERSION, payload) => Ok(payload.to_vec()),
        (_, payload) => first_format_to_current(payload),
    }
}

/// The epoch in a whole epoch file, and where it is if the file is of two slots (`None`: an
/// older format, to convert), or why it is refused.
fn decode_epoch(bytes: &[u8]) -> Result<(u32, Option<(usize, u64)>), String> {
    let (payload, newest) = if bytes.len() == slots::FILE_SIZE {
        let newest = slots::decode(EPOCH_MAGIC, EPOCH_FORMAT_VERSION, bytes)?;
        (newest.payload, Some((newest.slot, newest.sequence)))
    } else {
        let (_, payload) = decode_record(EPOCH_MAGIC, &[FIRST_EPOCH_FORMAT_VERSION], bytes)?;
        (payload, None)
    };
    let epoch: [u8; 4] = payload
        .try_into()
        .map_err(|_| format!("{} payload bytes, an epoch is 4", payload.len()))?;
    Ok((u32::from_le_bytes(epoch), newest))
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

/// Checks a whole file of the one-record formats against its `magic` and the format
/// `versions` this build reads of them, and returns its version and payload, or why it was
/// refused.
fn decode_record<'b>(
    magic: [u8; 6],
    versions: &[u16],
    bytes: &'b [u8],
) -> Result<(u16, &'b [u8]), String> {
    let Some((header, payload)) = bytes.split_first_chunk::<RECORD_HEADER_SIZE>() else {
        return Err(format!(
            "{} bytes, shorter than any goose {} file",
            bytes.len(),
            kind(magic)
        ));
    };
    if header[0..6] != magic {
        return Err(format!("bad magic: not a goose {} file", kind(magic)));
    }
    let version = u16::from_le_bytes([header[6], header[7]]);
    if !versions.contains(&version) {
        return Err(format!(
            "{} bytes of format version {version}: this build reads {versions:?} in one \
             record, or two slots in {} bytes",
            bytes.len(),
            slots::FILE_SIZE
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
    if slots::checksum(&header[6..12], payload) != crc {
        return Err("checksum mismatch".to_owned());
    }
    Ok((version, payload))
}

/// "state" or "epoch", for errors.
fn kind(magic: [u8; 6]) -> &'static str {
    if magic == MAGIC {
        "state"
    } else {
        "epoch"
    }
}

#[cfg(test)]
mod tests {
    use super::slots::tests::FaultyMedium;
    use super::slots::{self, SlotFile};
    use super::{
        decode_epoch, decode_record, decode_state, DataDir, DataDirError, EPOCH_FILE,
        EPOCH_FORMAT_VERSION, EPOCH_MAGIC, FIRST_EPOCH_FORMAT_VERSION, FIRST_FORMAT_VERSION,
        FORMAT_VERSION, MAGIC, RECORD_HEADER_SIZE, SECOND_FORMAT_VERSION, STATE_FILE,
    };
    use goose_core::{
        Config, Duration, Entry, EntryId, Instant, LogIndex, Member, Node, NodeId, Payload,
        PersistentState, Storage, StorageError, Term,
    };
    use std::net::SocketAddr;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("goose-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A file of the one-record formats: `magic`, `version`, `payload`.
    fn record(magic: [u8; 6], version: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0; RECORD_HEADER_SIZE];
        bytes[0..6].copy_from_slice(&magic);
        bytes[6..8].copy_from_slice(&version.to_le_bytes());
        let length = u32::try_from(payload.len()).unwrap();
        bytes[8..12].copy_from_slice(&length.to_le_bytes());
        let crc = slots::checksum(&bytes[6..12], payload);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    /// Storage for nodes that are only started, never saved from.
    struct Unused;

    impl Storage for Unused {
        fn save(&mut self, _: &PersistentState<'_>) -> Result<(), StorageError> {
            Err(StorageError::Io)
        }
    }

    fn node_one() -> (NodeId, [Member; 1]) {
        let id = NodeId::new(1).unwrap();
        let addr: SocketAddr = "127.0.0.1:9900".parse().unwrap();
        (
            id,
            [Member {
                id,
                addr,
                voter: true,
            }],
        )
    }

    // --- The one-record formats, read for conversion ------------------------------------

    #[test]
    fn a_record_round_trips_and_every_flipped_bit_or_length_is_refused() {
        let versions = [SECOND_FORMAT_VERSION, FIRST_FORMAT_VERSION];
        let bytes = record(MAGIC, SECOND_FORMAT_VERSION, b"some state bytes");
        assert_eq!(
            decode_record(MAGIC, &versions, &bytes),
            Ok((SECOND_FORMAT_VERSION, &b"some state bytes"[..]))
        );
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[index] ^= 1 << bit;
                assert!(decode_record(MAGIC, &versions, &corrupt).is_err());
            }
        }
        for size in 0..bytes.len() {
            assert!(decode_record(MAGIC, &versions, &bytes[..size]).is_err());
        }
        let longer = [&bytes[..], &[0]].concat();
        assert!(decode_record(MAGIC, &versions, &longer).is_err());
        // A record claiming the current version is no file this build writes.
        let third = record(MAGIC, FORMAT_VERSION, b"x");
        let refusal = decode_state(&third).unwrap_err();
        assert!(refusal.contains("two slots"), "{refusal}");
    }

    // --- The state file -----------------------------------------------------------------

    #[test]
    fn a_node_restarted_on_its_dir_remembers_its_term_and_vote() {
        let dir = temp_dir("restart");
        let (id, members) = node_one();
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
        let path = dir.join(STATE_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            slots::FILE_SIZE as u64
        );

        let saved = data_dir.read_state().unwrap().unwrap();
        let node: Node<_> =
            Node::new(&config, data_dir.storage(), Some(&saved), &[], 8, now).unwrap();
        assert_eq!((node.term(), node.voted_for()), (term, vote));
        assert_eq!(node.members(), &members);
        assert!(!node.is_goose(now));
        drop(node);

        // A newest slot that fails its checksum is taken for a torn write: the previous
        // state is read. With both slots bad the dir is refused, and the file left as it
        // was.
        let good = std::fs::read(&path).unwrap();
        let newest = slots::decode(MAGIC, FORMAT_VERSION, &good).unwrap();
        let mut without_newest = good.clone();
        let start = newest.slot * slots::SLOT_SIZE;
        without_newest[start..start + slots::SLOT_SIZE].fill(0);
        let older = slots::decode(MAGIC, FORMAT_VERSION, &without_newest);
        let mut bytes = good.clone();
        bytes[newest.slot * slots::SLOT_SIZE + slots::HEADER_SIZE] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        match older {
            Ok(older) => assert_eq!(data_dir.read_state().unwrap().unwrap(), older.payload),
            Err(_) => assert!(data_dir.read_state().is_err(), "one save only"),
        }
        let other = (1 - newest.slot) * slots::SLOT_SIZE + slots::HEADER_SIZE;
        bytes[other] ^= 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            data_dir.read_state(),
            Err(DataDirError::Corrupt(..))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        drop(data_dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The state `term` and `vote` with a log and members that make the payload some
    /// hundreds of bytes.
    fn state_bytes(term: u64, vote: u16) -> Vec<u8> {
        let members: Vec<Member> = (1..=40)
            .map(|n| Member {
                id: NodeId::new(n).unwrap(),
                addr: format!("127.0.0.1:{}", 9900 + n).parse().unwrap(),
                voter: n <= 5,
            })
            .collect();
        let entries: Vec<Entry> = (0..8)
            .map(|n| Entry {
                term: Term(term.min(n + 1)),
                payload: Payload::Promote {
                    id: NodeId::new(6).unwrap(),
                },
            })
            .collect();
        let state = PersistentState {
            id: NodeId::new(1).unwrap(),
            term: Term(term),
            voted_for: NodeId::new(vote),
            log_term: Term(term - 1),
            stick: Duration::from_millis(150),
            commit: LogIndex(4),
            snapshot: EntryId::default(),
            snapshot_members: &members,
            entries: &entries,
        };
        let mut buffer = vec![0; 4096];
        state.encode(&mut buffer).unwrap().to_vec()
    }

    #[test]
    fn a_save_cut_at_any_byte_starts_the_node_from_the_old_or_the_new_state() {
        let (old, new) = (state_bytes(3, 1), state_bytes(4, 2));
        assert!(old.len() > 300, "{}", old.len());
        let mut base = SlotFile::open(
            FaultyMedium::new(slots::first_image(MAGIC, FORMAT_VERSION, &old).unwrap()),
            MAGIC,
            FORMAT_VERSION,
            (0, 1),
        );
        // Both slots hold a state: the cut save overwrites the older one.
        base.save(&old).unwrap();
        let config = Config::new(NodeId::new(1).unwrap());
        let start = |image: &[u8]| {
            let payload = decode_state(image).unwrap();
            let node: Node<_> = Node::new(&config, Unused, Some(&payload), &[], 1, Instant::ZERO)
                .expect("the node starts from what it finds");
            (node.term().0, node.voted_for().map(NodeId::get))
        };
        let written = slots::HEADER_SIZE + new.len();
        let mut whole = SlotFile::open(base.medium().clone(), MAGIC, FORMAT_VERSION, (1, 2));
        whole.save(&new).unwrap();
        let (mut olds, mut news) = (0, 0);
        for cut in 0..=written {
            for (tail_first, fill) in [
                (false, None),
                (true, None),
                (false, Some(0)),
                (true, Some(0xFF)),
            ] {
                let mut medium = base.medium().clone();
                medium.cut_at = Some(cut);
                medium.tail_first = tail_first;
                medium.fill = fill;
                let mut file = SlotFile::open(medium, MAGIC, FORMAT_VERSION, (1, 2));
                assert!(file.save(&new).is_err());
                match start(&file.medium().image) {
                    (3, Some(1)) => olds += 1,
                    // Only a write whose lost bytes held what it wrote anyway.
                    (4, Some(2)) if file.medium().image == whole.medium().image => news += 1,
                    other => panic!("cut at {cut}: the node started with {other:?}"),
                }
            }
        }
        assert!(news >= 4, "every whole write is new");
        assert!(olds >= 4 * (written - slots::HEADER_SIZE), "{olds}");
    }

    #[test]
    fn state_files_of_the_older_formats_are_read_and_converted_at_the_first_save() {
        let dir = temp_dir("older-formats");
        let (id, members) = node_one();
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
        let config = Config::new(id);
        for (file, log_term) in [
            (record(MAGIC, FIRST_FORMAT_VERSION, &first), Term(3)),
            (record(MAGIC, SECOND_FORMAT_VERSION, bytes), Term(0)),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(STATE_FILE), &file).unwrap();
            let data_dir = DataDir::open(&dir).unwrap();
            let saved = data_dir.read_state().unwrap().unwrap();
            let mut node: Node<_> = Node::new(
                &config,
                data_dir.storage(),
                Some(&saved),
                &[],
                8,
                Instant::ZERO,
            )
            .unwrap();
            assert_eq!((node.term(), node.voted_for()), (Term(3), Some(id)));
            assert_eq!(node.log_term(), log_term, "format 1: its last entry's term");
            assert_eq!(node.entries(), &entries);
            // Untouched until the node saves; then two slots, nothing lost.
            assert_eq!(std::fs::read(dir.join(STATE_FILE)).unwrap(), file);
            let mut now = Instant::ZERO;
            while node.term() == Term(3) {
                now = node.poll_timeout().unwrap();
                node.handle_timeout(now);
            }
            let converted = std::fs::read(dir.join(STATE_FILE)).unwrap();
            assert_eq!(converted.len(), slots::FILE_SIZE);
            let reread = data_dir.read_state().unwrap().unwrap();
            let again: Node<_> = Node::new(&config, Unused, Some(&reread), &[], 8, now).unwrap();
            assert_eq!(again.term(), node.term());
            assert_eq!(again.entries(), &entries);
            assert!(again.log_term() >= log_term);
            drop(node);
            drop(data_dir);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A one-node flock's `state` and `epoch` as a build of the first format wrote them
    /// (wire version 1: node 1 at 127.0.0.1:39411, elected in term 1), byte for byte: the
    /// upgrade reads what an old build wrote, not what this build's tests think it wrote.
    const FIRST_BUILD_STATE: [u8; 37] = [
        0x47, 0x4f, 0x4f, 0x53, 0x45, 0x31, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0xff, 0x41, 0xf8,
        0xc5, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x01, 0x01, 0x00, 0x7f, 0x00, 0x00, 0x01,
        0xf3, 0xb3, 0x02, 0x01, 0x01, 0x01, 0x00,
    ];
    const FIRST_BUILD_EPOCH: [u8; 20] = [
        0x47, 0x45, 0x50, 0x4f, 0x43, 0x48, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0xd7, 0x6a, 0xbe,
        0x30, 0x01, 0x00, 0x00, 0x00,
    ];

    #[test]
    fn files_an_older_build_wrote_are_read_and_converted() {
        let dir = temp_dir("older-build");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE_FILE), FIRST_BUILD_STATE).unwrap();
        std::fs::write(dir.join(EPOCH_FILE), FIRST_BUILD_EPOCH).unwrap();
        let data_dir = DataDir::open(&dir).unwrap();
        assert_eq!(data_dir.next_epoch().unwrap(), 2, "its epoch was 1");
        let id = NodeId::new(1).unwrap();
        let config = Config::new(id);
        let saved = data_dir.read_state().unwrap().unwrap();
        let mut node: Node<_> = Node::new(
            &config,
            data_dir.storage(),
            Some(&saved),
            &[],
            8,
            Instant::ZERO,
        )
        .unwrap();
        assert_eq!((node.term(), node.voted_for()), (Term(1), Some(id)));
        let addr: SocketAddr = "127.0.0.1:39411".parse().unwrap();
        let members = [Member {
            id,
            addr,
            voter: true,
        }];
        assert_eq!(node.members(), &members);
        // Its next election saves the state in two slots; a restart reads that back.
        let mut now = Instant::ZERO;
        while node.term() == Term(1) {
            now = node.poll_timeout().unwrap();
            node.handle_timeout(now);
        }
        let converted = std::fs::read(dir.join(STATE_FILE)).unwrap();
        assert_eq!(converted.len(), slots::FILE_SIZE);
        let reread = data_dir.read_state().unwrap().unwrap();
        let again: Node<_> = Node::new(&config, Unused, Some(&reread), &[], 8, now).unwrap();
        assert_eq!((again.term(), again.voted_for()), (node.term(), Some(id)));
        assert_eq!(again.members(), &members);
        drop(node);
        drop(data_dir);
        let _ = std::fs::remove_dir_all(&dir);
    }

    // --- The boot epoch -----------------------------------------------------------------

    #[test]
    fn the_epoch_rises_at_every_start_and_a_bad_file_is_refused_as_it_is() {
        let dir = temp_dir("epoch");
        let data_dir = DataDir::open(&dir).unwrap();
        assert_eq!(data_dir.next_epoch().unwrap(), 1, "no file: the first boot");
        for epoch in 2..=5 {
            assert_eq!(data_dir.next_epoch().unwrap(), epoch);
        }
        let path = dir.join(EPOCH_FILE);
        let good = std::fs::read(&path).unwrap();
        assert_eq!(good.len(), slots::FILE_SIZE, "two slots, written in place");
        assert_eq!(decode_epoch(&good).map(|(epoch, _)| epoch), Ok(5));
        let both_flipped = {
            let mut flipped = good.clone();
            flipped[slots::HEADER_SIZE] ^= 4;
            flipped[slots::SLOT_SIZE + slots::HEADER_SIZE] ^= 4;
            flipped
        };
        for bad in [
            Vec::new(),
            b"3\n".to_vec(),
            good[..good.len() - 1].to_vec(),
            [&good[..], &[0]].concat(),
            both_flipped,
            record(MAGIC, FIRST_EPOCH_FORMAT_VERSION, &2u32.to_le_bytes()),
            slots::first_image(MAGIC, EPOCH_FORMAT_VERSION, &2u32.to_le_bytes()).unwrap(),
        ] {
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(data_dir.next_epoch(), Err(DataDirError::Epoch(..))),
                "{:?}",
                &bad[..bad.len().min(24)]
            );
            assert_eq!(std::fs::read(&path).unwrap(), bad, "left as it was");
        }
        // The first format's file is read and converted.
        let first = record(EPOCH_MAGIC, FIRST_EPOCH_FORMAT_VERSION, &7u32.to_le_bytes());
        std::fs::write(&path, first).unwrap();
        assert_eq!(data_dir.next_epoch().unwrap(), 8);
        assert_eq!(std::fs::read(&path).unwrap().len(), slots::FILE_SIZE);
        assert_eq!(data_dir.next_epoch().unwrap(), 9);
        let last = |epoch: u32| {
            slots::first_image(EPOCH_MAGIC, EPOCH_FORMAT_VERSION, &epoch.to_le_bytes()).unwrap()
        };
        std::fs::write(&path, last(u32::MAX)).unwrap();
        assert!(matches!(
            data_dir.next_epoch(),
            Err(DataDirError::EpochsExhausted(_))
        ));
        std::fs::write(&path, last(u32::MAX - 1)).unwrap();
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
