//! The state file on the host, through semihosting: QEMU opens, reads, writes and seeks it
//! for the firmware, so the board's flash image survives QEMU being killed and restarted.

use core::ffi::CStr;

use goose_embedded::flash::{FileIo, FlashError};
use semihosting::fs::File;
use semihosting::io::{Read, Seek, SeekFrom, Write};

/// A host file opened read-write.
pub(crate) struct HostFile(File);

impl HostFile {
    /// Opens `path` read-write, creating it empty if it does not exist (semihosting has no
    /// "create without truncating" mode, so an existing file is opened first).
    pub(crate) fn open(path: &CStr) -> Option<Self> {
        let existing = File::options().read(true).write(true).open(path);
        let file = match existing {
            Ok(file) => file,
            Err(_) => File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .ok()?,
        };
        Some(Self(file))
    }
}

impl FileIo for HostFile {
    fn read_at(&mut self, offset: u32, buffer: &mut [u8]) -> Result<usize, FlashError> {
        self.0
            .seek(SeekFrom::Start(offset.into()))
            .map_err(|_| FlashError::Io)?;
        let mut total = 0;
        // Each read returns at least one byte or ends the file: at most `len` rounds.
        while total < buffer.len() {
            match self
                .0
                .read(&mut buffer[total..])
                .map_err(|_| FlashError::Io)?
            {
                0 => break,
                count => total += count,
            }
        }
        Ok(total)
    }

    fn write_at(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        self.0
            .seek(SeekFrom::Start(offset.into()))
            .map_err(|_| FlashError::Io)?;
        self.0.write_all(data).map_err(|_| FlashError::Io)
    }

    fn size(&mut self) -> Result<u32, FlashError> {
        let size = self.0.metadata().map_err(|_| FlashError::Io)?.len();
        u32::try_from(size).map_err(|_| FlashError::Io)
    }
}
