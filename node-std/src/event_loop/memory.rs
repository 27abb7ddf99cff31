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
//! - **Code.** Start-up runs code the loop never runs again (the command line's parser,
//!   the state's decoding, the config), and every page of code or read-only data it
//!   touched stays mapped, with the kernel's fault-around mapping 64 KiB around each: most
//!   of an idle node's memory. The mappings of files that were never written to (no page
//!   of theirs copied on write, so dropping them loses nothing) are dropped
//!   (`madvise(MADV_DONTNEED)`): the pages stay in the page cache, and the loop faults back
//!   in only what it runs.
//! - **Again, once settled.** The loop's first seconds run code its steady state never
//!   does: the election, the first saves, becoming goose or following one. Once a node's
//!   term and role have held for [`SETTLED_AFTER`] ([`Settle`]), its code mappings are
//!   dropped and its heap trimmed once more, and again after every later change of term or
//!   role has settled: an idle node maps what its heartbeats run.
//!
//! All are best effort: a failure costs memory, never correctness, and is ignored.

use std::fs;

use goose_core::{Duration, Instant, RaftRole, Term};

/// Stack kept below the caller's frame: the loop's own frames fit in it. A deeper call (a
/// `ctl start` building a node) faults its pages back in, once.
const STACK_KEPT: usize = 16 * 1024;
/// How long a node's term and role hold before what got it there is given back: far
/// longer than an election or a handoff takes, so the release comes after them.
const SETTLED_AFTER: Duration = Duration::from_millis(5_000);
/// The page size assumed for alignment (x86-64, aarch64 with 4 KiB pages; a larger page
/// only makes the release round to fewer pages).
const PAGE_SIZE: usize = 4096;

/// Gives back the heap's free pages and the stack below the caller's frame (less
/// [`STACK_KEPT`]). Call it from the function that then runs the loop, once start-up is
/// done.
#[inline(never)]
pub(super) fn release_start_up() {
    // The code first: reading the mappings allocates, and the trim gives that back too.
    release_code();
    trim_heap();
    release_stack();
}

/// Gives back code and heap once a node's term and role have held for
/// [`SETTLED_AFTER`]: once per term and role.
pub(super) struct Settle {
    /// The term and role last seen, and since when.
    seen: (Term, RaftRole),
    since: Instant,
    released: bool,
}

impl Settle {
    /// Nothing settled yet: the term and role at `now` start the count.
    pub(super) fn new(now: Instant, term: Term, role: RaftRole) -> Self {
        Self {
            seen: (term, role),
            since: now,
            released: false,
        }
    }

    /// Called every turn of the loop: a change restarts the count; a term and role that
    /// have held long enough are released for.
    pub(super) fn tend(&mut self, now: Instant, term: Term, role: RaftRole) {
        if (term, role) != self.seen {
            *self = Self::new(now, term, role);
        } else if !self.released && now.saturating_since(self.since) >= SETTLED_AFTER {
            self.released = true;
            release_code();
            trim_heap();
        }
    }
}

/// Mappings read from `/proc/self/smaps` at most: far more than a node maps (its binary,
/// the C library and the loader, a few each).
const MAPPINGS_MAX: usize = 256;

/// Drops the read-only private file mappings none of whose pages was copied on write:
/// code and constants, read back from the page cache when next used.
pub(super) fn release_code() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_file_mappings(&smaps).into_iter().take(MAPPINGS_MAX) {
        // SAFETY: [start, end) is a whole mapping of a file, private and not writable, and
        // none of its pages is anonymous (`Anonymous: 0 kB`): every page equals the file's
        // page, which the page cache serves again at the next access. Dropping it changes
        // no value the process can read, only which pages are resident.
        let _ =
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The address ranges in `smaps` of private, non-writable mappings of a file (a path, not
/// `[vdso]` and the like) without anonymous pages.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut clean = Vec::new();
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(kb) = line.strip_prefix("Anonymous:") {
            if let Some(range) = candidate.take() {
                if kb.trim() == "0 kB" {
                    clean.push(range);
                }
            }
            continue;
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue; // a field line such as "Rss: 4 kB"
        };
        let path = fields.nth(3).unwrap_or("");
        let private_read_only = perms.len() == 4
            && perms.starts_with('r')
            && &perms[1..2] == "-"
            && perms.ends_with('p');
        candidate = (private_read_only && path.starts_with('/')).then_some((start, end));
    }
    clean
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

#[cfg(test)]
mod tests {
    use super::clean_file_mappings;

    #[test]
    fn only_read_only_private_file_mappings_without_anonymous_pages_are_dropped() {
        let smaps = "\
55d0a0000000-55d0a0010000 r--p 00000000 fd:01 123 /usr/bin/goose
Rss:                  64 kB
Anonymous:             0 kB
55d0a0010000-55d0a0200000 r-xp 00010000 fd:01 123 /usr/bin/goose
Size:               1984 kB
Anonymous:             0 kB
55d0a0200000-55d0a0210000 r--p 00200000 fd:01 123 /usr/bin/goose
Anonymous:            16 kB
55d0a0210000-55d0a0211000 rw-p 00210000 fd:01 123 /usr/bin/goose
Anonymous:             4 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0
Anonymous:           132 kB
7f0000100000-7f0000101000 r--s 00000000 fd:01 9 /dev/shm/x
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_file_mappings(smaps),
            [
                (0x55d0_a000_0000, 0x55d0_a001_0000),
                (0x55d0_a001_0000, 0x55d0_a020_0000)
            ]
        );
    }

    #[test]
    fn this_process_keeps_running_the_code_it_dropped_and_maps_less_of_its_files() {
        let file_kib = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
            let kib = line.split_ascii_whitespace().nth(1).unwrap();
            kib.parse::<u64>().unwrap()
        };
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        assert!(
            !clean_file_mappings(&smaps).is_empty(),
            "its own binary's code"
        );
        let before = file_kib();
        super::release_code();
        // Code and constants come back from the page cache, only those used.
        let text: String = (1..=3).map(|n| n.to_string()).collect();
        assert_eq!(text, "123");
        let after = file_kib();
        assert!(
            after < before,
            "file pages mapped: {before} KiB before, {after} KiB after"
        );
    }
}
