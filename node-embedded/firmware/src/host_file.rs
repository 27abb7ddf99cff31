//! The state file on the host, through semihosting: QEMU opens, reads, writes and seeks it
//! for the firmware, so the board's flash image survives QEMU being killed and restarted.
//! And [`read_small`], for the cluster key file.

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

/// Reads the host file `path` (opened read-only, never created) into `buffer`; returns the
/// bytes read, or `None` if it cannot be opened or read, or is longer than `buffer`.
pub(crate) fn read_small<'b>(path: &CStr, buffer: &'b mut [u8]) -> Option<&'b [u8]> {
    let mut file = File::options().read(true).open(path).ok()?;
    let mut total = 0;
    // Each read returns at least one byte or ends the file: at most `len + 1` rounds.
    for _ in 0..=buffer.len() {
        match file.read(&mut buffer[total..]).ok()? {
            0 => return Some(&buffer[..total]),
            count => total += count,
        }
        if total == buffer.len() {
            // Full: only the end of the file may follow.
            let mut more = [0; 1];
            return match file.read(&mut more).ok()? {
                0 => Some(&buffer[..total]),
                _ => None,
            };
        }
    }
    None
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
