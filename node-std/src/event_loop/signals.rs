//! SIGINT/SIGTERM, SIGHUP and SIGCHLD as sockets the loop's one `poll` waits on
//! (signal-hook's self-pipes: a handler only writes one byte).

use std::io::{self, Read as _};

use mio::net::UnixStream;

/// Reads of a signal self-pipe per wake-up. Each signal writes one byte; a burst of more
/// than this many signals between two wake-ups only needs to be seen once.
const SIGNAL_READS_PER_WAKE_MAX: usize = 16;

/// The self-pipes: SIGINT/SIGTERM, SIGHUP, and SIGCHLD (a hook, check or child ended).
pub(super) struct Pipes {
    /// Readable after SIGINT or SIGTERM.
    pub(super) signals: UnixStream,
    /// Readable after SIGHUP: reload the config file.
    pub(super) reload: UnixStream,
    /// Readable after SIGCHLD.
    pub(super) children: UnixStream,
}

impl Pipes {
    /// The pipes, their signal handlers installed.
    pub(super) fn new() -> io::Result<Self> {
        let signals = signal_pipe(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
        let reload = signal_pipe(&[signal_hook::consts::SIGHUP])?;
        let children = signal_pipe(&[signal_hook::consts::SIGCHLD])?;
        Ok(Self {
            signals,
            reload,
            children,
        })
    }
}

/// A socket that becomes readable when one of `signals` arrives.
fn signal_pipe(signals: &[libc::c_int]) -> io::Result<UnixStream> {
    let (read, write) = std::os::unix::net::UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    for &signal in signals {
        signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
    }
    Ok(UnixStream::from_std(read))
}

/// Empties a self-pipe (bounded); returns whether anything was in it.
pub(super) fn drain_pipe(pipe: &mut UnixStream) -> bool {
    let mut buffer = [0u8; 64];
    let mut any = false;
    for _ in 0..SIGNAL_READS_PER_WAKE_MAX {
        match pipe.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => any = true,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // WouldBlock: empty
        }
    }
    any
}
