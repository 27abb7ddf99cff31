//! A file of two checksummed slots, written alternately in place: a save is one `pwrite`
//! into the slot that does not hold the newest value, then one `fdatasync`; no rename, no
//! directory sync, and the file never changes size, so the data sync writes no metadata.
//!
//! ```text
//! file = slot 0 (bytes 0..4096) ++ slot 1 (bytes 4096..8192)
//! slot = bytes 0..6    magic (the file's kind)
//!        bytes 6..8    format version, u16 little-endian
//!        bytes 8..12   payload length, u32 little-endian
//!        bytes 12..20  sequence number, u64 little-endian: one more at every save
//!        bytes 20..24  CRC-32 (IEEE) of bytes 6..20 and the payload, u32 little-endian
//!        bytes 24..    the payload; the rest of the slot is not read
//! ```
//!
//! At start the valid slot with the higher sequence number wins. A write torn by a crash
//! (any prefix, any mixture of old and new bytes) fails its slot's checksum, so it loses
//! only the value being written, which the caller never acted on: `save` had not returned.
//! Each slot is one 4 KiB block of its own, so writing one never rewrites the other's
//! sectors. A slot that passes its checksum but has another format version makes the whole
//! file refused: it may be the newest, written by another build.
//!
//! What cannot be told apart is a torn write from a newest slot corrupted later on the
//! medium (both fail the checksum): the file then starts from the older slot. A medium
//! that corrupts data at rest is out of scope here, as it is for every fsync-based store.

use std::io;

/// Bytes of one slot: one block on every common file system, and room for the largest
/// state (checked where it is used).
pub(super) const SLOT_SIZE: usize = 4096;
/// Bytes of a slot file: its two slots.
pub(super) const FILE_SIZE: usize = 2 * SLOT_SIZE;
/// Bytes of a slot's header.
pub(super) const HEADER_SIZE: usize = 24;
/// The largest payload a slot holds.
pub(super) const PAYLOAD_SIZE_MAX: usize = SLOT_SIZE - HEADER_SIZE;

/// Where a slot file's bytes go: the data dir's file, or a test's fault-injecting one.
pub(super) trait Medium {
    /// Writes `bytes` at `offset`, in place (the file never grows).
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Makes every write so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
}

impl Medium for std::fs::File {
    fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, bytes, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Self::sync_data(self)
    }
}

/// The newest valid slot of a slot file.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Newest<'b> {
    /// Its payload.
    pub(super) payload: &'b [u8],
    /// Which slot holds it (0 or 1).
    pub(super) slot: usize,
    /// Its sequence number.
    pub(super) sequence: u64,
    /// Why the other slot is not valid, when it was written once (not all zero bytes): a
    /// save a crash cut short, or damage the disk did later, which look alike.
    pub(super) damaged: Option<String>,
}

/// A slot file being saved to: the next save goes to `next` with `sequence`.
#[derive(Debug)]
pub(super) struct SlotFile<M> {
    medium: M,
    magic: [u8; 6],
    version: u16,
    next: usize,
    sequence: u64,
    /// The slot being written, built whole before the write.
    slot: Box<[u8; SLOT_SIZE]>,
}

impl<M: Medium> SlotFile<M> {
    /// Saves into `medium`, a slot file whose newest valid slot is `newest`
    /// ([`decode`]'s `slot` and `sequence`): the next save goes to the other slot.
    pub(super) fn open(medium: M, magic: [u8; 6], version: u16, newest: (usize, u64)) -> Self {
        let (slot, sequence) = newest;
        Self {
            medium,
            magic,
            version,
            next: 1 - slot.min(1),
            sequence: sequence.saturating_add(1),
            slot: Box::new([0; SLOT_SIZE]),
        }
    }

    /// Writes `payload` into the slot not holding the newest value and syncs it: once this
    /// returns `Ok`, a restart reads `payload`.
    ///
    /// # Errors
    ///
    /// The medium's write or sync error; the file then still holds the previous value
    /// (the slot written may be torn), and the next save writes the same slot again.
    pub(super) fn save(&mut self, payload: &[u8]) -> io::Result<()> {
        let size = encode_slot(
            self.magic,
            self.version,
            self.sequence,
            payload,
            &mut self.slot,
        )?;
        let offset = u64::try_from(self.next * SLOT_SIZE).unwrap_or(u64::MAX);
        self.medium.write_at(offset, &self.slot[..size])?;
        self.medium.sync_data()?;
        self.next = 1 - self.next;
        self.sequence = self.sequence.saturating_add(1);
        Ok(())
    }

    /// The medium, for tests.
    #[cfg(test)]
    pub(super) fn medium(&self) -> &M {
        &self.medium
    }
}

/// Writes the slot holding `payload` with `sequence` into the start of `slot`: its size.
fn encode_slot(
    magic: [u8; 6],
    version: u16,
    sequence: u64,
    payload: &[u8],
    slot: &mut [u8; SLOT_SIZE],
) -> io::Result<usize> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= PAYLOAD_SIZE_MAX)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} bytes do not fit a {SLOT_SIZE}-byte slot", payload.len()),
            )
        })?;
    slot[0..6].copy_from_slice(&magic);
    slot[6..8].copy_from_slice(&version.to_le_bytes());
    slot[8..12].copy_from_slice(&length.to_le_bytes());
    slot[12..20].copy_from_slice(&sequence.to_le_bytes());
    let crc = checksum(&slot[6..20], payload);
    slot[20..24].copy_from_slice(&crc.to_le_bytes());
    slot[HEADER_SIZE..HEADER_SIZE + payload.len()].copy_from_slice(payload);
    Ok(HEADER_SIZE + payload.len())
}

/// A whole slot file holding `payload` in slot 0 with sequence 1 and nothing valid in
/// slot 1: what a new file, or a file converted from an older format, starts as (written
/// by the caller the old way, to a temporary file renamed into place).
pub(super) fn first_image(magic: [u8; 6], version: u16, payload: &[u8]) -> io::Result<Vec<u8>> {
    let mut slot = Box::new([0; SLOT_SIZE]);
    encode_slot(magic, version, 1, payload, &mut slot)?;
    let mut image = vec![0; FILE_SIZE];
    image[..SLOT_SIZE].copy_from_slice(&slot[..]);
    Ok(image)
}

/// The newest valid slot of a whole slot file of `magic` and `version`, or why the file
/// is refused: not [`FILE_SIZE`] bytes, no valid slot, a valid slot of another format
/// version, or two valid slots with one sequence number.
pub(super) fn decode(magic: [u8; 6], version: u16, bytes: &[u8]) -> Result<Newest<'_>, String> {
    if bytes.len() != FILE_SIZE {
        return Err(format!(
            "{} bytes, a file of two slots is {FILE_SIZE}",
            bytes.len()
        ));
    }
    let mut newest: Option<Newest<'_>> = None;
    let mut reasons = [String::new(), String::new()];
    for (index, slot) in bytes.chunks_exact(SLOT_SIZE).enumerate() {
        match decode_slot(magic, slot) {
            Ok((found, _, _)) if found != version => {
                return Err(format!(
                    "slot {index} has format version {found}, this build reads {version}"
                ));
            }
            Ok((_, sequence, payload)) => {
                if newest.as_ref().is_some_and(|n| n.sequence == sequence) {
                    return Err(format!("both slots have sequence number {sequence}"));
                }
                if newest.as_ref().is_none_or(|n| n.sequence < sequence) {
                    newest = Some(Newest {
                        payload,
                        slot: index,
                        sequence,
                        damaged: None,
                    });
                }
            }
            Err(reason) => reasons[index] = reason,
        }
    }
    let mut newest = newest.ok_or_else(|| {
        format!(
            "no valid slot (slot 0: {}; slot 1: {})",
            reasons[0], reasons[1]
        )
    })?;
    let other = 1 - newest.slot;
    let written = bytes[other * SLOT_SIZE..(other + 1) * SLOT_SIZE]
        .iter()
        .any(|&byte| byte != 0);
    if written && !reasons[other].is_empty() {
        newest.damaged = Some(format!("slot {other}: {}", reasons[other]));
    }
    Ok(newest)
}

/// One slot's format version, sequence number and payload, or why it is not valid.
fn decode_slot(magic: [u8; 6], slot: &[u8]) -> Result<(u16, u64, &[u8]), String> {
    let Some((header, rest)) = slot.split_first_chunk::<HEADER_SIZE>() else {
        return Err("shorter than a header".to_owned());
    };
    if header[0..6] != magic {
        return Err("bad magic".to_owned());
    }
    let length = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    let payload = usize::try_from(length)
        .ok()
        .and_then(|length| rest.get(..length))
        .ok_or_else(|| format!("payload length {length} past the slot's end"))?;
    let crc = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    if checksum(&header[6..20], payload) != crc {
        return Err("checksum mismatch".to_owned());
    }
    let version = u16::from_le_bytes([header[6], header[7]]);
    let mut sequence = [0; 8];
    sequence.copy_from_slice(&header[12..20]);
    Ok((version, u64::from_le_bytes(sequence), payload))
}

/// CRC-32 of a header's checked fields and a payload.
pub(super) fn checksum(header_fields: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_fields);
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
pub(super) mod tests {
    use super::{decode, first_image, Medium, SlotFile, FILE_SIZE, HEADER_SIZE, SLOT_SIZE};
    use std::io;

    const MAGIC: [u8; 6] = *b"TSLOTS";

    /// A file in memory whose next write can be cut short, as a crash would: only part of
    /// it reaches the medium (`keep` picks which bytes), and the write and every later call
    /// fail.
    #[derive(Clone, Debug)]
    pub(crate) struct FaultyMedium {
        pub(crate) image: Vec<u8>,
        /// Bytes of the next write that land: a prefix of this length, or, with
        /// `tail_first`, a suffix; the others keep what they held, or become `fill` if set.
        pub(crate) cut_at: Option<usize>,
        pub(crate) tail_first: bool,
        pub(crate) fill: Option<u8>,
        pub(crate) crashed: bool,
        pub(crate) syncs: usize,
    }

    impl FaultyMedium {
        pub(crate) fn new(image: Vec<u8>) -> Self {
            Self {
                image,
                cut_at: None,
                tail_first: false,
                fill: None,
                crashed: false,
                syncs: 0,
            }
        }
    }

    impl Medium for FaultyMedium {
        fn write_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
            if self.crashed {
                return Err(io::Error::other("crashed"));
            }
            let start = usize::try_from(offset).unwrap();
            let target = &mut self.image[start..start + bytes.len()];
            let Some(cut) = self.cut_at else {
                target.copy_from_slice(bytes);
                return Ok(());
            };
            self.crashed = true;
            for (index, (old, new)) in target.iter_mut().zip(bytes).enumerate() {
                let lands = if self.tail_first {
                    index >= bytes.len() - cut
                } else {
                    index < cut
                };
                if lands {
                    *old = *new;
                } else if let Some(fill) = self.fill {
                    *old = fill;
                }
            }
            Err(io::Error::other("crashed mid-write"))
        }

        fn sync_data(&mut self) -> io::Result<()> {
            if self.crashed {
                return Err(io::Error::other("crashed"));
            }
            self.syncs += 1;
            Ok(())
        }
    }

    fn opened(image: Vec<u8>) -> SlotFile<FaultyMedium> {
        let newest = decode(MAGIC, 1, &image).unwrap();
        let at = (newest.slot, newest.sequence);
        SlotFile::open(FaultyMedium::new(image), MAGIC, 1, at)
    }

    #[test]
    fn saves_alternate_between_the_slots_and_the_newest_wins() {
        let mut file = opened(first_image(MAGIC, 1, b"one").unwrap());
        for (index, value) in [&b"two"[..], b"three", b"", b"five"].iter().enumerate() {
            file.save(value).unwrap();
            let newest = decode(MAGIC, 1, &file.medium().image).unwrap();
            assert_eq!(newest.payload, *value);
            assert_eq!(newest.slot, (index + 1) % 2);
            assert_eq!(newest.sequence, index as u64 + 2);
        }
        assert_eq!(file.medium().syncs, 4, "one data sync per save");
        assert_eq!(file.medium().image.len(), FILE_SIZE, "the file never grows");
    }

    #[test]
    fn a_damaged_slot_is_told_from_one_never_written() {
        let fresh = first_image(MAGIC, 1, b"one").unwrap();
        assert_eq!(decode(MAGIC, 1, &fresh).unwrap().damaged, None);
        let mut file = opened(fresh);
        file.save(b"two").unwrap();
        let mut image = file.medium().image.clone();
        image[SLOT_SIZE + HEADER_SIZE] ^= 0xff; // the newer slot's payload, as a disk might
        let newest = decode(MAGIC, 1, &image).unwrap();
        assert_eq!((newest.payload, newest.slot), (&b"one"[..], 0));
        let damaged = newest.damaged.unwrap();
        assert!(damaged.starts_with("slot 1: "), "{damaged}");
    }

    #[test]
    fn a_save_cut_at_any_byte_leaves_the_old_or_the_new_value() {
        let old = vec![7u8; 300];
        let new = vec![9u8; 1000];
        let mut base = opened(first_image(MAGIC, 1, &old).unwrap());
        base.save(&old).unwrap(); // both slots valid: the crash overwrites an older one
        let written = HEADER_SIZE + new.len();
        let mut whole = opened(base.medium().image.clone());
        whole.save(&new).unwrap();
        let mut outcomes = [0usize; 2];
        for cut in 0..=written {
            for (tail_first, fill) in [(false, None), (true, None), (false, Some(0xA5))] {
                let mut file = opened(base.medium().image.clone());
                file.medium.cut_at = Some(cut);
                file.medium.tail_first = tail_first;
                file.medium.fill = fill;
                let saved = file.save(&new).is_ok();
                let newest = decode(MAGIC, 1, &file.medium().image)
                    .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
                assert!(!saved, "a crashed save never reports success");
                if newest.payload == new {
                    outcomes[1] += 1;
                    // Only a write whose lost bytes held what it wrote anyway.
                    assert_eq!(file.medium().image, whole.medium().image, "cut at {cut}");
                } else {
                    assert_eq!(newest.payload, old, "cut at {cut}");
                    outcomes[0] += 1;
                }
            }
        }
        assert!(outcomes[0] > 0 && outcomes[1] > 0, "{outcomes:?}");
    }

    #[test]
    fn bad_files_are_refused() {
        let good = first_image(MAGIC, 1, b"value").unwrap();
        assert!(decode(MAGIC, 1, &good[..FILE_SIZE - 1]).is_err());
        assert!(decode(*b"OTHERS", 1, &good).is_err());
        assert!(decode(MAGIC, 2, &good)
            .unwrap_err()
            .contains("format version 1"));
        let mut both_empty = good.clone();
        both_empty[..SLOT_SIZE].fill(0);
        assert!(decode(MAGIC, 1, &both_empty)
            .unwrap_err()
            .contains("no valid slot"));
        let mut twins = good.clone();
        twins.copy_within(..SLOT_SIZE, SLOT_SIZE);
        assert!(decode(MAGIC, 1, &twins).unwrap_err().contains("sequence"));
        for index in 0..HEADER_SIZE + 5 {
            for bit in 0..8 {
                let mut flipped = good.clone();
                flipped[index] ^= 1 << bit;
                assert!(
                    decode(MAGIC, 1, &flipped).is_err(),
                    "byte {index} bit {bit}"
                );
            }
        }
    }
}
