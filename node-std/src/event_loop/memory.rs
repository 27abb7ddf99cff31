//! What start-up used and the loop never uses again, given back before the loop runs: an
//! idle node's memory is then what the loop needs.
//!
//! - **The stack.** Start-up builds the node, reads the state and parses the command line
//!   in frames that take the main thread's stack down to a hundred KiB or more, and those
//!   pages stay the process's for good. The pages below the current frame, less a margin
//!   for the loop's own calls, are handed back (`madvise(MADV_DONTNEED)`): they are free
//!   stack, zero-filled again if ever used.
//! - **The heap.** Parsing and start-up leave freed blocks in glibc's heap;
//!   `malloc_trim(0)` returns their whole pages to the kernel.
//!
//! Both are best effort: a failure costs memory, never correctness, and is ignored.

use std::fs;

/// Stack kept below the caller's frame: the loop's frames, and a full `ctl status` or
/// `ctl start` among them, fit in it, so they do not fault pages back in one by one.
const STACK_KEPT: usize = 64 * 1024;
/// The page size assumed for alignment (x86-64, aarch64 with 4 KiB pages; a larger page
/// only makes the release round to fewer pages).
const PAGE_SIZE: usize = 4096;

/// Gives back the heap's free pages and the stack below the caller's frame (less
/// [`STACK_KEPT`]). Call it from the function that then runs the loop, once start-up is
/// done.
#[inline(never)]
pub(super) fn release_start_up() {
    trim_heap();
    release_stack();
}

fn release_stack() {
    let marker = 0u8;
    let here = std::ptr::from_ref(&marker) as usize;
    let Some(lowest) = stack_lowest() else {
        return;
    };
    let end = here.saturating_sub(STACK_KEPT) & !(PAGE_SIZE - 1);
    if end <= lowest {
        return;
    }
    // SAFETY: [lowest, end) is the main thread's stack below the current frame and a
    // margin: no live value is there (this thread is the only one using this stack, and
    // it is inside this call). MADV_DONTNEED on private anonymous memory leaves it mapped,
    // zero-filled on next use, which is what unused stack is.
    let _ = unsafe {
        libc::madvise(
            lowest as *mut libc::c_void,
            end - lowest,
            libc::MADV_DONTNEED,
        )
    };
}

/// The lowest address of the main thread's stack mapping (`[stack]` in
/// `/proc/self/maps`).
fn stack_lowest() -> Option<usize> {
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|line| line.ends_with("[stack]"))?;
    let (range, _) = line.split_once(' ')?;
    let (start, _) = range.split_once('-')?;
    usize::from_str_radix(start, 16).ok()
}

#[cfg(target_env = "gnu")]
fn trim_heap() {
    // SAFETY: malloc_trim only reorganises glibc's own free lists; it touches no live
    // allocation.
    let _ = unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn trim_heap() {}
