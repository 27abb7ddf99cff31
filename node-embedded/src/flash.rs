//! NOR flashes for the persistent state, all with one geometry ([`FLASH_PAGE_SIZE`]-byte
//! pages, [`FLASH_WORD_SIZE`]-byte writes, [`FLASH_SIZE`] bytes in all), and the adapter
//! that lets sequential-storage's async API run on a blocking flash.
//!
//! - [`MemFlash`]: in RAM, for tests (a volatile flash must never back a real node: a
//!   rebooted node would forget its vote).
//! - [`FileFlash`]: a flash image in a host file, reached through any [`FileIo`]; the QEMU
//!   firmware implements [`FileIo`] with semihosting, tests with `std::fs::File`.
//! - [`Region`]: some erase pages of a larger flash (a chip's) as a flash of their own.
//!
//! Both behave like NOR: erasing sets bytes to `0xFF`, writing can only clear bits (the
//! written data is ANDed in), reads and writes outside the flash or misaligned are errors,
//! never panics.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Bytes one write must be a multiple of, and aligned to (a 32-bit word, like most MCU
/// flashes).
pub const FLASH_WORD_SIZE: usize = 4;

/// Bytes one erase covers. 4 KiB holds three worst-case states (`STATE_SIZE_MAX`) or
/// dozens of typical ones, so the map rarely migrates.
pub const FLASH_PAGE_SIZE: usize = 4096;

/// Pages of flash given to the state: sequential-storage's map needs at least two (one is
/// kept free for garbage collection); four spread the wear.
pub const FLASH_PAGES: usize = 4;

/// The whole flash, in bytes.
pub const FLASH_SIZE: usize = FLASH_PAGES * FLASH_PAGE_SIZE;

/// Bytes copied at a time by [`FileFlash`]'s erase and read-modify-write.
const CHUNK_SIZE: usize = 64;

const _: () = assert!(crate::STATE_SIZE_MAX + 64 < FLASH_PAGE_SIZE);
const _: () = assert!(FLASH_PAGE_SIZE.is_multiple_of(CHUNK_SIZE));
const _: () = assert!(CHUNK_SIZE.is_multiple_of(FLASH_WORD_SIZE));

/// Why a flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashError {
    /// The range is not inside the flash.
    OutOfBounds,
    /// The offset or length is not a multiple of the write or erase size.
    NotAligned,
    /// The medium behind the flash (a host file) failed.
    Io,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::NotAligned => NorFlashErrorKind::NotAligned,
            Self::Io => NorFlashErrorKind::Other,
        }
    }
}

/// Checks `offset..offset + size` against the flash and the alignment `align`.
fn check(offset: u32, size: usize, align: usize) -> Result<usize, FlashError> {
    let start = usize::try_from(offset).map_err(|_| FlashError::OutOfBounds)?;
    let end = start.checked_add(size).ok_or(FlashError::OutOfBounds)?;
    if end > FLASH_SIZE {
        return Err(FlashError::OutOfBounds);
    }
    if !start.is_multiple_of(align) || !size.is_multiple_of(align) {
        return Err(FlashError::NotAligned);
    }
    Ok(start)
}

/// Checks an erase range `from..to`.
fn check_erase(from: u32, to: u32) -> Result<(usize, usize), FlashError> {
    let size = to.checked_sub(from).ok_or(FlashError::OutOfBounds)?;
    let size = usize::try_from(size).map_err(|_| FlashError::OutOfBounds)?;
    let start = check(from, size, FLASH_PAGE_SIZE)?;
    Ok((start, start + size))
}

// --- In memory --------------------------------------------------------------------------

/// A flash in RAM, erased at creation. For tests: it forgets everything when dropped.
pub struct MemFlash {
    bytes: [u8; FLASH_SIZE],
    writes: u64,
    erases: u64,
}

impl MemFlash {
    /// An erased flash.
    pub const fn new() -> Self {
        Self {
            bytes: [0xFF; FLASH_SIZE],
            writes: 0,
            erases: 0,
        }
    }

    /// Every byte, for tests that inspect or corrupt the image.
    pub fn bytes_mut(&mut self) -> &mut [u8; FLASH_SIZE] {
        &mut self.bytes
    }

    /// Write calls so far.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Erase calls so far.
    pub fn erases(&self) -> u64 {
        self.erases
    }
}

impl Default for MemFlash {
    fn default() -> Self {
        Self::new()
    }
}

impl ErrorType for MemFlash {
    type Error = FlashError;
}

impl ReadNorFlash for MemFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let start = check(offset, bytes.len(), Self::READ_SIZE)?;
        bytes.copy_from_slice(&self.bytes[start..start + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        FLASH_SIZE
    }
}

impl NorFlash for MemFlash {
    const WRITE_SIZE: usize = FLASH_WORD_SIZE;
    const ERASE_SIZE: usize = FLASH_PAGE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let (start, end) = check_erase(from, to)?;
        self.bytes[start..end].fill(0xFF);
        self.erases += 1;
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let start = check(offset, bytes.len(), Self::WRITE_SIZE)?;
        for (cell, byte) in self.bytes[start..].iter_mut().zip(bytes) {
            *cell &= byte;
        }
        self.writes += 1;
        Ok(())
    }
}

// --- In a host file ---------------------------------------------------------------------

/// Positioned reads and writes on a file that holds a flash image.
pub trait FileIo {
    /// Reads from `offset` into `buffer` as many bytes as the file holds there, up to
    /// `buffer.len()`, and returns how many; fewer only at the end of the file.
    ///
    /// # Errors
    /// [`FlashError::Io`] if the file cannot be read.
    fn read_at(&mut self, offset: u32, buffer: &mut [u8]) -> Result<usize, FlashError>;

    /// Writes all of `data` at `offset`, extending the file if needed.
    ///
    /// # Errors
    /// [`FlashError::Io`] if the file cannot be written.
    fn write_at(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError>;

    /// The file's length in bytes.
    ///
    /// # Errors
    /// [`FlashError::Io`] if it cannot be read.
    fn size(&mut self) -> Result<u32, FlashError>;
}

/// A NOR flash of [`FLASH_SIZE`] bytes kept in a file. [`FileFlash::open`] extends a
/// shorter file (a new, empty one included) with erased bytes (`0xFF`), so the file never
/// has a gap a write past its end would fill with zeros.
///
/// Durability is the file's: a write has reached the host's page cache when it returns, so
/// it survives the emulator being killed, not the host losing power.
pub struct FileFlash<B: FileIo> {
    file: B,
}

impl<B: FileIo> FileFlash<B> {
    /// A flash backed by `file`, extended to [`FLASH_SIZE`] bytes if shorter. Bytes already
    /// there are kept as they are: a file that is not a flash image is refused later, by
    /// the state map, never reset.
    ///
    /// # Errors
    /// [`FlashError::Io`] if the file cannot be sized or extended.
    pub fn open(mut file: B) -> Result<Self, FlashError> {
        let size = usize::try_from(file.size()?).map_err(|_| FlashError::Io)?;
        let erased = [0xFF; CHUNK_SIZE];
        let mut at = size;
        while at < FLASH_SIZE {
            let count = (FLASH_SIZE - at).min(CHUNK_SIZE);
            let offset = u32::try_from(at).map_err(|_| FlashError::OutOfBounds)?;
            file.write_at(offset, &erased[..count])?;
            at += count;
        }
        Ok(Self { file })
    }

    /// The file back.
    pub fn into_file(self) -> B {
        self.file
    }

    /// Reads `bytes.len()` bytes at `start`, filling what the file lacks with `0xFF`.
    fn read_padded(&mut self, start: usize, bytes: &mut [u8]) -> Result<(), FlashError> {
        let offset = u32::try_from(start).map_err(|_| FlashError::OutOfBounds)?;
        let read = self.file.read_at(offset, bytes)?.min(bytes.len());
        bytes[read..].fill(0xFF);
        Ok(())
    }
}

impl<B: FileIo> ErrorType for FileFlash<B> {
    type Error = FlashError;
}

impl<B: FileIo> ReadNorFlash for FileFlash<B> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let start = check(offset, bytes.len(), Self::READ_SIZE)?;
        self.read_padded(start, bytes)
    }

    fn capacity(&self) -> usize {
        FLASH_SIZE
    }
}

impl<B: FileIo> NorFlash for FileFlash<B> {
    const WRITE_SIZE: usize = FLASH_WORD_SIZE;
    const ERASE_SIZE: usize = FLASH_PAGE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let (start, end) = check_erase(from, to)?;
        let erased = [0xFF; CHUNK_SIZE];
        for chunk_start in (start..end).step_by(CHUNK_SIZE) {
            let offset = u32::try_from(chunk_start).map_err(|_| FlashError::OutOfBounds)?;
            self.file.write_at(offset, &erased)?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let start = check(offset, bytes.len(), Self::WRITE_SIZE)?;
        let mut current = [0; CHUNK_SIZE];
        for (index, data) in bytes.chunks(CHUNK_SIZE).enumerate() {
            let chunk_start = start + index * CHUNK_SIZE;
            let current = &mut current[..data.len()];
            self.read_padded(chunk_start, current)?;
            for (cell, byte) in current.iter_mut().zip(data) {
                *cell &= byte;
            }
            let offset = u32::try_from(chunk_start).map_err(|_| FlashError::OutOfBounds)?;
            self.file.write_at(offset, current)?;
        }
        Ok(())
    }
}

// --- A region of a larger flash ---------------------------------------------------------

/// The erase pages `start..start + size` of a larger flash, as a flash of their own: offset 0
/// is `start`. A board keeps its state in a few pages of the chip's flash (reserved in its
/// `memory.x`) and must never erase or write outside them, where its program lives; every
/// range is checked here before it reaches the chip, and one outside is an error.
pub struct Region<F> {
    flash: F,
    start: u32,
    size: u32,
}

impl<F: NorFlash> Region<F> {
    /// The region `start..start + size` of `flash`, in bytes from its beginning. `None`
    /// unless both ends lie on erase-page boundaries inside `flash`.
    pub fn new(flash: F, start: u32, size: u32) -> Option<Self> {
        let end = start.checked_add(size)?;
        let page = u32::try_from(F::ERASE_SIZE).ok()?;
        let fits = usize::try_from(end).is_ok_and(|end| end <= flash.capacity());
        (fits && size > 0 && start.is_multiple_of(page) && size.is_multiple_of(page))
            .then_some(Self { flash, start, size })
    }

    /// The offset in the whole flash of `size` bytes at `offset` in the region, if they lie
    /// inside it.
    fn absolute(&self, offset: u32, size: usize) -> Result<u32, RegionError<F::Error>> {
        let size = u32::try_from(size).map_err(|_| RegionError::OutOfBounds)?;
        let end = offset.checked_add(size).ok_or(RegionError::OutOfBounds)?;
        if end > self.size {
            return Err(RegionError::OutOfBounds);
        }
        Ok(self.start + offset)
    }
}

/// A [`Region`]'s error: a range outside it, or the flash's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError<E> {
    /// The range is not inside the region (nothing reached the flash).
    OutOfBounds,
    /// The flash refused or failed.
    Flash(E),
}

impl<E: NorFlashError> NorFlashError for RegionError<E> {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            Self::Flash(error) => error.kind(),
        }
    }
}

impl<F: NorFlash> ErrorType for Region<F> {
    type Error = RegionError<F::Error>;
}

impl<F: NorFlash> ReadNorFlash for Region<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = self.absolute(offset, bytes.len())?;
        self.flash.read(at, bytes).map_err(RegionError::Flash)
    }

    fn capacity(&self) -> usize {
        self.size as usize
    }
}

impl<F: NorFlash> NorFlash for Region<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let size = to.checked_sub(from).ok_or(RegionError::OutOfBounds)?;
        let at = self.absolute(from, size as usize)?;
        self.flash.erase(at, at + size).map_err(RegionError::Flash)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = self.absolute(offset, bytes.len())?;
        self.flash.write(at, bytes).map_err(RegionError::Flash)
    }
}

// --- Blocking to async ------------------------------------------------------------------

/// Presents a blocking `embedded_storage` flash through the async
/// `embedded_storage_async` traits that sequential-storage is written against. Every call
/// completes in its first poll, so [`embassy_futures::block_on`] runs it to the end at once.
pub struct Blocking<F>(pub F);

impl<F: ErrorType> ErrorType for Blocking<F> {
    type Error = F::Error;
}

impl<F: ReadNorFlash> embedded_storage_async::nor_flash::ReadNorFlash for Blocking<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: NorFlash> embedded_storage_async::nor_flash::NorFlash for Blocking<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use super::*;

    /// A file in memory, to test [`FileFlash`] without a file system.
    #[derive(Default)]
    struct VecFile(Vec<u8>);

    impl FileIo for VecFile {
        fn read_at(&mut self, offset: u32, buffer: &mut [u8]) -> Result<usize, FlashError> {
            let start = (offset as usize).min(self.0.len());
            let available = &self.0[start..];
            let count = available.len().min(buffer.len());
            buffer[..count].copy_from_slice(&available[..count]);
            Ok(count)
        }

        fn write_at(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
            let start = offset as usize;
            if self.0.len() < start + data.len() {
                // Like a real file: a gap reads as zeros.
                self.0.resize(start + data.len(), 0);
            }
            self.0[start..start + data.len()].copy_from_slice(data);
            Ok(())
        }

        fn size(&mut self) -> Result<u32, FlashError> {
            Ok(self.0.len() as u32)
        }
    }

    fn exercise(flash: &mut impl NorFlash<Error = FlashError>) {
        let mut read = [0; 8];
        flash.read(100, &mut read).unwrap();
        assert_eq!(read, [0xFF; 8], "a new flash reads erased");
        flash.write(96, &[0x0F, 0xF0, 0x00, 0xFF]).unwrap();
        flash.write(96, &[0xFF, 0x3C, 0xFF, 0xFF]).unwrap();
        let mut word = [0; 4];
        flash.read(96, &mut word).unwrap();
        assert_eq!(word, [0x0F, 0x30, 0x00, 0xFF], "writes only clear bits");
        // Writes that span chunk boundaries.
        let data: Vec<u8> = (0..200u8).collect();
        flash.write(4100, &data).unwrap();
        let mut back = [0; 200];
        flash.read(4100, &mut back).unwrap();
        assert_eq!(&back[..], &data[..]);
        flash.erase(0, FLASH_PAGE_SIZE as u32).unwrap();
        flash.read(96, &mut word).unwrap();
        assert_eq!(word, [0xFF; 4], "erase sets every byte");
        flash.read(4100, &mut word).unwrap();
        assert_eq!(word, [0, 1, 2, 3], "erase stays inside its pages");
        flash
            .erase(FLASH_PAGE_SIZE as u32, FLASH_SIZE as u32)
            .unwrap();
        flash.read(4100, &mut word).unwrap();
        assert_eq!(word, [0xFF; 4]);
    }

    fn refuses(flash: &mut impl NorFlash<Error = FlashError>) {
        let size = FLASH_SIZE as u32;
        assert_eq!(flash.write(2, &[0; 4]), Err(FlashError::NotAligned));
        assert_eq!(flash.write(0, &[0; 3]), Err(FlashError::NotAligned));
        assert_eq!(flash.write(size, &[0; 4]), Err(FlashError::OutOfBounds));
        assert_eq!(
            flash.write(u32::MAX - 3, &[0; 4]),
            Err(FlashError::OutOfBounds)
        );
        assert_eq!(
            flash.read(size - 1, &mut [0; 2]),
            Err(FlashError::OutOfBounds)
        );
        assert_eq!(flash.erase(1, 4096), Err(FlashError::NotAligned));
        assert_eq!(flash.erase(4096, 0), Err(FlashError::OutOfBounds));
        assert_eq!(flash.erase(0, size + 4096), Err(FlashError::OutOfBounds));
    }

    #[test]
    fn a_region_is_a_flash_of_its_own_and_never_reaches_outside() {
        let page = FLASH_PAGE_SIZE as u32;
        assert!(
            Region::new(MemFlash::new(), 1, page).is_none(),
            "not on a page"
        );
        assert!(
            Region::new(MemFlash::new(), 0, page + 4).is_none(),
            "not whole pages"
        );
        assert!(Region::new(MemFlash::new(), 0, 0).is_none(), "empty");
        assert!(
            Region::new(MemFlash::new(), 3 * page, 2 * page).is_none(),
            "past the end"
        );
        let mut region = Region::new(MemFlash::new(), page, 2 * page).unwrap();
        assert_eq!(region.capacity(), 2 * FLASH_PAGE_SIZE);
        region.write(0, &[1, 2, 3, 4]).unwrap();
        region.write(2 * page - 4, &[5, 6, 7, 8]).unwrap();
        let out = |region: &mut Region<MemFlash>, offset, size| {
            let error = region.write(offset, &std::vec![0; size]).unwrap_err();
            assert_eq!(error, RegionError::OutOfBounds);
            let error = region.read(offset, &mut std::vec![0; size]).unwrap_err();
            assert_eq!(error, RegionError::OutOfBounds);
        };
        out(&mut region, 2 * page, 4);
        out(&mut region, 2 * page - 4, 8);
        out(&mut region, u32::MAX - 3, 4);
        assert_eq!(region.erase(0, 3 * page), Err(RegionError::OutOfBounds));
        assert_eq!(region.erase(page, 0), Err(RegionError::OutOfBounds));
        assert_eq!(
            region.write(2, &[0; 4]),
            Err(RegionError::Flash(FlashError::NotAligned)),
            "the flash's own rules still apply"
        );
        let mut flash = region.flash;
        let bytes = flash.bytes_mut();
        assert_eq!(&bytes[FLASH_PAGE_SIZE..FLASH_PAGE_SIZE + 4], &[1, 2, 3, 4]);
        assert_eq!(
            &bytes[3 * FLASH_PAGE_SIZE - 4..3 * FLASH_PAGE_SIZE],
            &[5, 6, 7, 8]
        );
        assert!(bytes[..FLASH_PAGE_SIZE].iter().all(|byte| *byte == 0xFF));
        assert!(bytes[3 * FLASH_PAGE_SIZE..]
            .iter()
            .all(|byte| *byte == 0xFF));
        let mut region = Region::new(flash, page, 2 * page).unwrap();
        region.erase(page, 2 * page).unwrap();
        let mut word = [0; 4];
        region.read(2 * page - 4, &mut word).unwrap();
        assert_eq!(word, [0xFF; 4]);
        region.read(0, &mut word).unwrap();
        assert_eq!(word, [1, 2, 3, 4], "the erase stayed in its page");
    }

    #[test]
    fn a_state_map_lives_in_a_region() {
        use crate::store::FlashStore;
        let page = FLASH_PAGE_SIZE as u32;
        let region = Region::new(MemFlash::new(), 2 * page, 2 * page).unwrap();
        let mut store = FlashStore::new(region).unwrap();
        assert_eq!(store.next_epoch(), Ok(1));
        let flash = store.into_flash().flash;
        assert!(flash.bytes[..2 * FLASH_PAGE_SIZE]
            .iter()
            .all(|byte| *byte == 0xFF));
        let mut store = FlashStore::new(Region::new(flash, 2 * page, 2 * page).unwrap()).unwrap();
        assert_eq!(store.epoch(), Ok(Some(1)));
    }

    #[test]
    fn mem_flash_behaves_like_nor() {
        let mut flash = MemFlash::new();
        exercise(&mut flash);
        refuses(&mut flash);
    }

    #[test]
    fn file_flash_behaves_like_nor() {
        let mut flash = FileFlash::open(VecFile::default()).unwrap();
        exercise(&mut flash);
        refuses(&mut flash);
        assert_eq!(flash.into_file().0.len(), FLASH_SIZE);
    }

    #[test]
    fn file_flash_extends_a_short_file_with_erased_bytes_and_keeps_its_content() {
        let flash = FileFlash::open(VecFile(std::vec![1, 2, 3])).unwrap();
        let file = flash.into_file().0;
        assert_eq!(file.len(), FLASH_SIZE);
        assert_eq!(&file[..4], &[1, 2, 3, 0xFF]);
        assert!(file[3..].iter().all(|byte| *byte == 0xFF));
        let mut flash = FileFlash::open(VecFile(file)).unwrap();
        let mut head = [0; 3];
        flash.read(0, &mut head).unwrap();
        assert_eq!(head, [1, 2, 3], "an existing image is never reset");
    }
}
