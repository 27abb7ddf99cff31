//! What the node's own children share: hooks, the health check and the `--exec` child each
//! run `sh -c <command>` in a process group of their own, so that one signal reaches
//! everything the command started, and their output becomes log lines naming the node and
//! the command's role.

use std::io::{self, BufRead as _, BufReader, Read};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::thread;

use goose_core::NodeId;

/// Bytes of one output line a child may write before it is cut into a second log line: a
/// child that writes megabytes without a newline costs the node this much memory per
/// stream, not more.
const OUTPUT_LINE_SIZE_MAX: usize = 4096;

/// How a child's output lines are logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// `info`: hooks and the exec child, whose output an operator wants to see.
    Info,
    /// `debug`: the health check, which runs every second and says little worth keeping.
    Debug,
}

/// `sh -c <command>` in a process group of its own (its pid is the group id), standard input
/// from `/dev/null`, standard output and error piped: hand the child to [`log_output`].
pub(crate) fn shell(command: &str) -> Command {
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    shell
}

/// Logs every line `child` writes to its standard output and error as
/// `node <id> <label>: <line>`, from one thread per stream, which ends when the stream
/// does (when the child, and whatever it started that holds the stream, has exited).
pub(crate) fn log_output(child: &mut Child, id: NodeId, label: &str, level: Level) {
    let streams: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let name = format!("{label} output");
        let label = label.to_owned();
        let spawned = thread::Builder::new()
            .name(name)
            .spawn(move || log_lines(stream, id, &label, level));
        if let Err(error) = spawned {
            // The stream is dropped with the closure: the child gets EPIPE, not a hang.
            log::warn!("node {id}: cannot log the output of a child: {error}");
        }
    }
}

fn log_lines(stream: impl Read, id: NodeId, label: &str, level: Level) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        // Bounded: at most OUTPUT_LINE_SIZE_MAX bytes per read, the rest on the next line.
        let limit = u64::try_from(OUTPUT_LINE_SIZE_MAX).unwrap_or(u64::MAX);
        match (&mut reader).take(limit).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        match level {
            Level::Info => log::info!("node {id} {label}: {text}"),
            Level::Debug => log::debug!("node {id} {label}: {text}"),
        }
    }
}

/// Sends `signal` to the process group `child` leads (it was spawned with
/// `process_group(0)`). Call it only on a child not reaped yet: until then its pid, and the
/// group id with it, cannot have been reused.
pub(crate) fn signal_group(child: &Child, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| io::Error::other("pid range"))?;
    // SAFETY: kill has no memory-safety preconditions; `-pid` names the group the child
    // leads, which exists at least as long as the unreaped child does.
    let result = unsafe { libc::kill(-pid, signal) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    // ESRCH: the group is empty (everything in it exited, the leader is a zombie).
    match error.raw_os_error() {
        Some(libc::ESRCH) => Ok(()),
        _ => Err(error),
    }
}

/// Whether `child` has exited, without reaping it (`waitid` with `WNOWAIT`): while it is
/// an unreaped zombie its pid cannot be reused, so its process group can still be
/// signalled safely (to kill what it left behind) before [`Child::try_wait`] reaps it.
pub(crate) fn has_exited(child: &Child) -> io::Result<bool> {
    let pid = libc::id_t::from(child.id());
    // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    // SAFETY: `info` is a valid, writable siginfo_t owned by this frame; waitid writes only
    // into it, and WNOWAIT leaves the child waitable.
    let result = unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info` (or left it zeroed when nothing has exited); si_pid is
    // valid to read for a SIGCHLD siginfo, and zero otherwise.
    Ok(unsafe { info.si_pid() } != 0)
}

#[cfg(test)]
mod tests {
    use super::{has_exited, shell, signal_group};
    use std::time::{Duration, Instant};

    #[test]
    fn a_group_signal_reaches_what_the_command_started() {
        // `sh` starts a background sleep that outlives it unless the group is killed.
        let mut child = shell("sleep 30 & echo $!; wait").spawn().unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut pid = String::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pid.ends_with('\n') && Instant::now() < deadline {
            let mut byte = [0u8; 1];
            if std::io::Read::read(&mut out, &mut byte).unwrap() == 1 {
                pid.push(char::from(byte[0]));
            }
        }
        let sleeper: i32 = pid.trim().parse().unwrap();
        assert!(!has_exited(&child).unwrap());
        signal_group(&child, libc::SIGKILL).unwrap();
        while !has_exited(&child).unwrap() {
            assert!(Instant::now() < deadline, "sh did not die");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(has_exited(&child).unwrap(), "still waitable after WNOWAIT");
        assert!(child.try_wait().unwrap().is_some());
        // The background sleep died with the group (it may linger as init's zombie).
        std::thread::sleep(Duration::from_millis(50));
        let state = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(" Z "), "{state}");
    }
}
