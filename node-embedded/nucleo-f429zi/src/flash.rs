//! The chip's internal flash as the state's `NorFlash`: the HAL's driver, unlocked for each
//! erase or write and locked again at once, so a stray write elsewhere in the program can
//! never program the flash. `goose_embedded::flash::Region` keeps every range inside the
//! two sectors `memory.x` reserves.

use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
use stm32f4xx_hal::flash::{Error, FlashExt, LockedFlash, UnlockedFlash};

/// The whole internal flash, offsets from its start (0x0800_0000).
pub(crate) struct InternalFlash(pub(crate) LockedFlash);

impl ErrorType for InternalFlash {
    type Error = Error;
}

impl ReadNorFlash for InternalFlash {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Error> {
        // The region checked the range; the HAL slices the memory-mapped flash.
        ReadNorFlash::read(&mut self.0, offset, bytes)
    }

    fn capacity(&self) -> usize {
        ReadNorFlash::capacity(&self.0)
    }
}

impl NorFlash for InternalFlash {
    const WRITE_SIZE: usize = 1;
    // The HAL's: its largest sector (128 KiB). The state's two sectors are of that size.
    const ERASE_SIZE: usize = <UnlockedFlash<'_> as NorFlash>::ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Error> {
        NorFlash::erase(&mut self.0.unlocked(), from, to)
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Error> {
        NorFlash::write(&mut self.0.unlocked(), offset, bytes)
    }
}
