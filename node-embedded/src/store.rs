//! Term, vote and log on NOR flash: the core's [`Storage`] over a sequential-storage map.
//!
//! The node saves its whole [`PersistentState`] (at most [`STATE_SIZE_MAX`] bytes) after
//! every change; [`FlashStore`] writes it as the one value of key [`STATE_KEY`] in a
//! sequential-storage map spanning the flash. The map appends each new value and erases a
//! page only when it needs the room, so a state change costs one small write and the pages
//! wear evenly. Item headers and data carry CRCs: a write torn by a power cut is ignored on
//! the next start and the previous state (which is all any message ever depended on, since
//! `save` had not returned) is read instead.
//!
//! A board with a cluster key also keeps its boot epoch there, as the value of key
//! [`EPOCH_KEY`] next to the state ([`FlashStore::next_epoch`]): read, incremented and
//! written back at every start, before the board sends anything (`goose_core::auth`). When
//! the map erases a page to make room, it moves the latest value of every key out of it
//! first, so saving the state never loses the epoch, nor the other way round.
//!
//! The node owns a [`FlashStorage`], a shared handle to a `RefCell<FlashStore>`; the board
//! keeps another so that `ctl start` can rebuild the node from what is on the flash. The
//! two never borrow at once: [`FlashStore::load`] runs only between nodes, and the core
//! saves only from inside `handle_*`.

use core::cell::RefCell;
use core::fmt;

use embassy_futures::block_on;
use embedded_storage::nor_flash::NorFlash;
use goose_core::{PersistentState, SavedState, Storage, StorageError};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage};

use crate::flash::{Blocking, FLASH_WORD_SIZE};
use crate::{LOG_ENTRIES_MAX, MEMBERS_MAX, STATE_SIZE_MAX};

/// The map key the state is stored under.
pub const STATE_KEY: u8 = 3;

/// The map key the first state format (without a log term and a loyalty window) was stored
/// under: read and converted when [`STATE_KEY`] holds nothing yet. The first save after
/// writes [`STATE_KEY`], which wins from then on.
pub const FIRST_FORMAT_STATE_KEY: u8 = 1;

/// The map key the boot epoch is stored under (a little-endian `u32`).
pub const EPOCH_KEY: u8 = 2;

/// Bytes of an epoch's value on the flash.
const EPOCH_SIZE: usize = 4;

/// Bytes of the buffer sequential-storage serializes an item into: the one-byte key plus
/// the largest state, rounded up to whole flash words.
pub const ITEM_BUFFER_SIZE: usize = (1 + STATE_SIZE_MAX).next_multiple_of(FLASH_WORD_SIZE);

type Map<F> = MapStorage<u8, Blocking<F>, Cache<Uncached, Uncached, Uncached, u8>>;

/// Why the state could not be read back, or the flash not used at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The flash's geometry does not suit a map (fewer than two pages, or misaligned).
    Geometry,
    /// The flash failed to read.
    Io,
    /// The flash holds data that is not a state map (or one damaged beyond repair).
    Corrupt,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Geometry => "flash geometry unsuitable for the state map",
            Self::Io => "flash read failed",
            Self::Corrupt => "flash holds no readable state map (corrupt)",
        })
    }
}

impl core::error::Error for LoadError {}

/// Why the boot epoch could not be advanced. A board must not start then: sending with an
/// epoch not above every earlier boot's would have its frames dropped as replays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochError {
    /// The flash could not be read, or holds no readable map.
    Load(LoadError),
    /// The epoch item is not a 4-byte epoch: damaged, or written by something else. Never
    /// reset silently: an epoch that went back would make peers drop this board's frames.
    Corrupt,
    /// The epoch is already `u32::MAX`: no higher one is left (about four billion boots).
    Exhausted,
    /// The new epoch could not be written.
    Save(StorageError),
}

impl fmt::Display for EpochError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(error) => {
                f.write_str("boot epoch unreadable: ")?;
                error.fmt(f)
            }
            Self::Corrupt => f.write_str("boot epoch on the flash is not a 4-byte epoch (corrupt)"),
            Self::Exhausted => f.write_str("boot epoch exhausted (u32::MAX reached)"),
            Self::Save(error) => {
                f.write_str("boot epoch not saved: ")?;
                error.fmt(f)
            }
        }
    }
}

impl core::error::Error for EpochError {}

/// The state map on a flash, with the buffers it needs. Keep it in a `static` (about
/// 2 × [`STATE_SIZE_MAX`] bytes) and share it through [`FlashStorage`].
pub struct FlashStore<F: NorFlash> {
    map: Map<F>,
    /// The state encoded by the core, before it becomes an item.
    encoded: [u8; STATE_SIZE_MAX],
    /// sequential-storage's serialization buffer.
    item: [u8; ITEM_BUFFER_SIZE],
    saves: u64,
}

impl<F: NorFlash> FlashStore<F> {
    /// The state map over the whole of `flash` (rounded down to whole pages).
    ///
    /// # Errors
    /// [`LoadError::Geometry`] if fewer than two pages remain, or pages are too small.
    pub fn new(flash: F) -> Result<Self, LoadError> {
        let pages = flash.capacity() / F::ERASE_SIZE;
        let end = u32::try_from(pages * F::ERASE_SIZE).map_err(|_| LoadError::Geometry)?;
        let config = MapConfig::<Blocking<F>>::try_new(0..end).map_err(|_| LoadError::Geometry)?;
        Ok(Self {
            map: MapStorage::new(Blocking(flash), config, Cache::new_uncached()),
            encoded: [0; STATE_SIZE_MAX],
            item: [0; ITEM_BUFFER_SIZE],
            saves: 0,
        })
    }

    /// The latest state saved, or `None` if the flash holds none (new, or erased).
    ///
    /// # Errors
    /// See [`LoadError`]. A node must refuse to start on an error: starting empty instead
    /// would forget a vote.
    #[inline(never)] // its futures and the first format's decoding: not on the node's frame
    pub fn load(&mut self) -> Result<Option<&[u8]>, LoadError> {
        let map_error = |error| match error {
            sequential_storage::Error::Storage { .. } => LoadError::Io,
            _ => LoadError::Corrupt,
        };
        let current = block_on(self.map.fetch_item::<&[u8]>(&mut self.item, &STATE_KEY))
            .map_err(map_error)?
            .is_some();
        if current {
            // Fetched again to hand out the borrow (the first fetch only told it is there).
            return block_on(self.map.fetch_item::<&[u8]>(&mut self.item, &STATE_KEY))
                .map_err(map_error);
        }
        let Some(first) = block_on(
            self.map
                .fetch_item::<&[u8]>(&mut self.item, &FIRST_FORMAT_STATE_KEY),
        )
        .map_err(map_error)?
        else {
            return Ok(None);
        };
        convert_first_format(first, &mut self.encoded).map(Some)
    }

    /// Durably replaces the state with `state`.
    ///
    /// # Errors
    /// [`StorageError::NoSpace`] if it does not fit, [`StorageError::Io`] if the flash failed.
    pub fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError> {
        let encoded: &[u8] = state.encode(&mut self.encoded)?;
        block_on(self.map.store_item(&mut self.item, &STATE_KEY, &encoded)).map_err(|error| {
            match error {
                sequential_storage::Error::FullStorage
                | sequential_storage::Error::ItemTooBig
                | sequential_storage::Error::BufferTooSmall(_) => StorageError::NoSpace,
                _ => StorageError::Io,
            }
        })?;
        self.saves = self.saves.saturating_add(1);
        Ok(())
    }

    /// The boot epoch last written by [`FlashStore::next_epoch`], or `None` if there is none.
    ///
    /// # Errors
    /// [`EpochError::Load`] if the flash cannot be read, [`EpochError::Corrupt`] if the item
    /// is not an epoch.
    pub fn epoch(&mut self) -> Result<Option<u32>, EpochError> {
        let item = &mut self.item;
        let value = block_on(self.map.fetch_item::<&[u8]>(item, &EPOCH_KEY)).map_err(|error| {
            EpochError::Load(match error {
                sequential_storage::Error::Storage { .. } => LoadError::Io,
                _ => LoadError::Corrupt,
            })
        })?;
        let Some(value) = value else {
            return Ok(None);
        };
        let bytes: [u8; EPOCH_SIZE] = value.try_into().map_err(|_| EpochError::Corrupt)?;
        Ok(Some(u32::from_le_bytes(bytes)))
    }

    /// This boot's epoch: one above the last one written (1 on a flash that holds none),
    /// durably written before it is returned. Call it once per boot, before sending.
    ///
    /// # Errors
    /// See [`EpochError`]; nothing is written on an error.
    pub fn next_epoch(&mut self) -> Result<u32, EpochError> {
        let epoch = self.epoch()?.unwrap_or(0);
        let next = epoch.checked_add(1).ok_or(EpochError::Exhausted)?;
        let bytes = next.to_le_bytes();
        block_on(
            self.map
                .store_item(&mut self.item, &EPOCH_KEY, &bytes.as_slice()),
        )
        .map_err(|error| {
            EpochError::Save(match error {
                sequential_storage::Error::FullStorage => StorageError::NoSpace,
                _ => StorageError::Io,
            })
        })?;
        Ok(next)
    }

    /// Writes `epoch` as the last one, whatever was there (tests: an exhausted epoch).
    #[cfg(test)]
    fn set_epoch(&mut self, epoch: &[u8]) {
        block_on(self.map.store_item(&mut self.item, &EPOCH_KEY, &epoch)).unwrap();
    }

    /// States saved since this store was made.
    pub fn saves(&self) -> u64 {
        self.saves
    }

    /// The flash back.
    pub fn into_flash(self) -> F {
        self.map.destroy().0 .0
    }
}

/// The node's handle on a shared [`FlashStore`]: the core's [`Storage`].
pub struct FlashStorage<'a, F: NorFlash>(pub &'a RefCell<FlashStore<F>>);

impl<F: NorFlash> Storage for FlashStorage<'_, F> {
    fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError> {
        // Busy means a caller broke the module's rule (saving while loading): fail-stop
        // rather than panic.
        let mut store = self.0.try_borrow_mut().map_err(|_| StorageError::Io)?;
        store.save(state)
    }
}

/// A state in the first format, re-encoded in the current one into `encoded`. Out of line:
/// its decoding frames are large, and only a board that ran wire version 1 needs them.
#[inline(never)]
fn convert_first_format<'e>(first: &[u8], encoded: &'e mut [u8]) -> Result<&'e [u8], LoadError> {
    let state = SavedState::<MEMBERS_MAX, LOG_ENTRIES_MAX>::decode_first_format(first)
        .map_err(|_| LoadError::Corrupt)?;
    state
        .as_persistent()
        .encode(encoded)
        .map_err(|_| LoadError::Corrupt)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::net::{Ipv4Addr, SocketAddr};

    use goose_core::{Entry, EntryId, Member, NodeId, Payload, SavedState, Term};

    use super::*;
    use crate::flash::{MemFlash, FLASH_PAGES};
    use crate::{LOG_ENTRIES_MAX, MEMBERS_MAX};

    fn members() -> [Member; MEMBERS_MAX] {
        core::array::from_fn(|index| Member {
            id: NodeId::new(u16::MAX - index as u16).unwrap(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9900 + index as u16)),
            voter: true,
        })
    }

    fn state<'a>(term: u64, members: &'a [Member], entries: &'a [Entry]) -> PersistentState<'a> {
        PersistentState {
            id: NodeId::new(3).unwrap(),
            term: Term(term),
            voted_for: NodeId::new(2),
            log_term: Term(term),
            stick: goose_core::Duration::from_millis(150),
            commit: goose_core::LogIndex(0),
            snapshot: EntryId::default(),
            snapshot_members: members,
            entries,
        }
    }

    fn decode(bytes: &[u8]) -> SavedState<MEMBERS_MAX, LOG_ENTRIES_MAX> {
        SavedState::decode(bytes).unwrap()
    }

    #[test]
    fn an_erased_flash_holds_no_state() {
        let mut store = FlashStore::new(MemFlash::new()).unwrap();
        assert_eq!(store.load(), Ok(None));
    }

    #[test]
    fn the_latest_state_survives_a_restart_across_page_turnover() {
        let members = members();
        let entries = [Entry {
            term: Term(1),
            payload: Payload::Noop,
        }; LOG_ENTRIES_MAX];
        let mut store = FlashStore::new(MemFlash::new()).unwrap();
        // Enough worst-case states to wrap the map around every page several times.
        for term in 1..=300 {
            store.save(&state(term, &members, &entries)).unwrap();
        }
        let flash = store.into_flash();
        assert!(
            flash.erases() > FLASH_PAGES as u64,
            "pages recycled: {}",
            flash.erases()
        );
        let mut store = FlashStore::new(flash).unwrap();
        let saved = decode(store.load().unwrap().unwrap());
        assert_eq!(saved.term, Term(300));
        assert_eq!(saved.voted_for, NodeId::new(2));
        assert_eq!(saved.entries.len(), LOG_ENTRIES_MAX);
        assert_eq!(saved.snapshot_members.as_slice(), &members[..]);
    }

    #[test]
    fn a_state_of_the_first_format_is_read_and_converted_then_replaced() {
        let members = members();
        let entries = [Entry {
            term: Term(5),
            payload: Payload::Noop,
        }];
        let mut current = state(7, &members, &entries);
        current.log_term = Term(0);
        current.stick = goose_core::Duration::ZERO;
        let mut buffer = [0; STATE_SIZE_MAX];
        let bytes = current.encode(&mut buffer).unwrap();
        // The first format lacks the log term and the window: two zero bytes after the id
        // (3), the term (7) and the vote (1 = Some, 2).
        assert_eq!(&bytes[..6], &[3, 7, 1, 2, 0, 0]);
        let mut first = [0; STATE_SIZE_MAX];
        first[..4].copy_from_slice(&bytes[..4]);
        first[4..bytes.len() - 2].copy_from_slice(&bytes[6..]);
        let first = &first[..bytes.len() - 2];
        let mut store = FlashStore::new(MemFlash::new()).unwrap();
        let mut item = [0; ITEM_BUFFER_SIZE];
        block_on(
            store
                .map
                .store_item(&mut item, &FIRST_FORMAT_STATE_KEY, &first),
        )
        .unwrap();
        let saved = decode(store.load().unwrap().unwrap());
        assert_eq!((saved.term, saved.log_term), (Term(7), Term(5)));
        assert_eq!(saved.entries.as_slice(), &entries);
        // Saved once in the current format, that one is read from then on.
        store.save(&state(8, &members, &entries)).unwrap();
        let mut store = FlashStore::new(store.into_flash()).unwrap();
        assert_eq!(decode(store.load().unwrap().unwrap()).term, Term(8));
    }

    #[test]
    fn a_torn_write_falls_back_to_the_previous_state() {
        let members = members();
        let mut store = FlashStore::new(MemFlash::new()).unwrap();
        store.save(&state(7, &members, &[])).unwrap();
        store.save(&state(8, &members, &[])).unwrap();
        let mut flash = store.into_flash();
        // Damage one byte in the middle of the newest item's data.
        let mut newest = [0; STATE_SIZE_MAX];
        let newest = state(8, &members, &[]).encode(&mut newest).unwrap();
        let image = flash.bytes_mut();
        let at = image
            .windows(newest.len())
            .rposition(|window| window == newest)
            .unwrap();
        image[at + newest.len() / 2] ^= 0x01;
        let mut store = FlashStore::new(flash).unwrap();
        let saved = decode(store.load().unwrap().unwrap());
        assert_eq!(saved.term, Term(7), "the damaged newest item is skipped");
    }

    #[test]
    fn a_state_that_cannot_fit_is_refused_not_truncated() {
        let members = members();
        // More entries than a board holds, each of the largest kind: over STATE_SIZE_MAX.
        let entries = [Entry {
            term: Term(u64::MAX),
            payload: Payload::AddLearner {
                id: NodeId::new(u16::MAX).unwrap(),
                addr: "[ffff::ffff]:65535".parse().unwrap(),
            },
        }; 2 * LOG_ENTRIES_MAX];
        let mut store = FlashStore::new(MemFlash::new()).unwrap();
        let result = store.save(&state(1, &members, &entries));
        assert_eq!(result, Err(StorageError::NoSpace));
        assert_eq!(store.load(), Ok(None));
        assert_eq!(store.saves(), 0);
    }

    #[test]
    fn the_epoch_rises_at_every_boot_and_survives_restarts() {
        let mut store = FlashStore::new(MemFlash::new()).unwrap();
        assert_eq!(store.epoch(), Ok(None));
        assert_eq!(store.next_epoch(), Ok(1));
        assert_eq!(store.next_epoch(), Ok(2));
        for boot in 3..=5 {
            let mut restarted = FlashStore::new(store.into_flash()).unwrap();
            assert_eq!(restarted.epoch(), Ok(Some(boot - 1)));
            assert_eq!(restarted.next_epoch(), Ok(boot));
            store = restarted;
        }
        assert_eq!(store.load(), Ok(None), "an epoch is no state");
    }

    #[test]
    fn state_saves_never_clobber_the_epoch_nor_it_the_state() {
        let members = members();
        let entries = [Entry {
            term: Term(1),
            payload: Payload::Noop,
        }; LOG_ENTRIES_MAX];
        let mut store = FlashStore::new(MemFlash::new()).unwrap();
        store.save(&state(1, &members, &entries)).unwrap();
        assert_eq!(store.next_epoch(), Ok(1));
        // Enough worst-case states to recycle every page more than once: the epoch item is
        // moved out of each page before it is erased.
        for term in 2..=300 {
            store.save(&state(term, &members, &entries)).unwrap();
        }
        let flash = store.into_flash();
        assert!(flash.erases() > FLASH_PAGES as u64, "{}", flash.erases());
        let mut store = FlashStore::new(flash).unwrap();
        assert_eq!(store.epoch(), Ok(Some(1)));
        assert_eq!(store.next_epoch(), Ok(2));
        assert_eq!(decode(store.load().unwrap().unwrap()).term, Term(300));
    }

    #[test]
    fn a_bad_or_exhausted_epoch_is_refused_and_left_alone() {
        let mut store = FlashStore::new(MemFlash::new()).unwrap();
        store.set_epoch(&[1, 2, 3]);
        assert_eq!(store.next_epoch(), Err(EpochError::Corrupt));
        store.set_epoch(&u32::MAX.to_le_bytes());
        assert_eq!(store.next_epoch(), Err(EpochError::Exhausted));
        assert_eq!(store.epoch(), Ok(Some(u32::MAX)), "nothing written");
        // A flash that holds no map at all.
        let mut flash = MemFlash::new();
        flash.bytes_mut().fill(0x5a);
        let mut store = FlashStore::new(flash).unwrap();
        assert!(matches!(store.next_epoch(), Err(EpochError::Load(_))));
    }

    #[test]
    fn the_node_handle_saves_and_refuses_while_loading() {
        let members = members();
        let cell = RefCell::new(FlashStore::new(MemFlash::new()).unwrap());
        let mut handle = FlashStorage(&cell);
        handle.save(&state(4, &members, &[])).unwrap();
        let mut store = cell.borrow_mut();
        assert_eq!(decode(store.load().unwrap().unwrap()).term, Term(4));
        let mut second = FlashStorage(&cell);
        assert_eq!(second.save(&state(5, &members, &[])), Err(StorageError::Io));
    }
}
