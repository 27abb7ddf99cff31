//! The panic handler: one fixed line on stderr and exit 101, the code a Rust program's panic
//! gives.
//!
//! It never looks at the `PanicInfo`. A handler that formats the message and its location
//! (semihosting's own does) keeps every panic site's `Location` alive, and with it the
//! absolute path of every source file that can panic (49 paths here, about 90 bytes each,
//! longer in a deeper checkout) and the formatting code: 10.8 KB of flash in all. Unused,
//! link-time optimisation drops the argument and all of that (checked: no path is left in
//! `.rodata`). Nothing in the node panics on input from the network or the flash; a panic is
//! a bug, and the fixed line and the exit code are enough to notice it (the message comes
//! back with a debug build under gdb, `break rust_begin_unwind`).

use core::panic::PanicInfo;

use semihosting::io::Write as _;

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    if let Ok(mut stderr) = semihosting::io::stderr() {
        let _ = stderr.write_all(b"goose-firmware: panicked (a bug; exiting 101)\n");
    }
    semihosting::process::exit(101)
}
