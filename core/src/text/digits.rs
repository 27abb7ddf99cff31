//! Numbers as the text protocol writes them, without `core::fmt`'s formatting machinery
//! (`write!`, `Formatter::pad_integral`, the integer `Display` and `LowerHex` impls): a
//! board pays for every byte of flash, and that machinery cost more than the replies.
//! The digits are those `{value}`, `{value:x}` and `{value:016x}` write (the text module's
//! tests compare the two).

use core::fmt::{self, Write};

/// Writes `value` in `radix` (10 or 16, lower-case), zero-padded to at least `width`
/// digits (at most 20, the most a `u64` takes): as `{value}` writes it with a width of 1,
/// `{value:0width$x}` with a radix of 16.
pub(crate) fn write_number(
    out: &mut (impl Write + ?Sized),
    value: u64,
    radix: u64,
    width: usize,
) -> fmt::Result {
    out.write_str(digits(&mut [b'0'; 20], value, radix, width))
}

/// The digits of `value` in `buffer`'s tail: one copy of the loop, whatever the writer.
#[inline(never)]
fn digits(buffer: &mut [u8; 20], mut value: u64, radix: u64, width: usize) -> &str {
    let mut start = buffer.len();
    loop {
        start -= 1;
        let digit = (value % radix) as u8;
        buffer[start] = if digit < 10 {
            b'0' + digit
        } else {
            b'a' + digit - 10
        };
        value /= radix;
        if value == 0 {
            break;
        }
    }
    let start = start.min(buffer.len().saturating_sub(width));
    // Only ASCII digits were written, so this never fails.
    core::str::from_utf8(&buffer[start..]).unwrap_or_default()
}

/// Writes `value` in decimal, as `{value}` would: for a board's log lines too, which
/// would otherwise link `core::fmt`'s integer printing for a few numbers.
///
/// # Errors
/// Only those of `out`.
pub fn write_decimal(out: &mut (impl Write + ?Sized), value: u64) -> fmt::Result {
    write_number(out, value, 10, 1)
}

/// Writes `value` as 16 lower-case hex digits, as `{value:016x}` would (a nonce).
pub(crate) fn write_hex_u64(out: &mut (impl Write + ?Sized), value: u64) -> fmt::Result {
    write_number(out, value, 16, 16)
}

/// Writes `bytes` as two lower-case hex digits each, as `{byte:02x}` would (a tag, a key).
pub(crate) fn write_hex_bytes(out: &mut (impl Write + ?Sized), bytes: &[u8]) -> fmt::Result {
    bytes
        .iter()
        .try_for_each(|&byte| write_number(out, u64::from(byte), 16, 2))
}
