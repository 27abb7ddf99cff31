//! Children (`goose node`, `keepalived`), each started inside a node's network namespace.
//!
//! A child enters its namespace between fork and exec (`setns` in `pre_exec`), so its pid
//! is the `goose` process itself and every signal goes to it by that pid. It also asks the
//! kernel for SIGKILL when the thread that spawned it ends (`PR_SET_PDEATHSIG`), so no node
//! outlives a soak killed too hard to run its destructors. Dropping a [`NodeProcess`] kills
//! it by pid (SIGKILL also ends a stopped process) and reaps it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};

/// How to start one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The id of the node it runs on.
    pub id: u16,
    /// Its namespace file (`/run/netns/<name>`).
    pub namespace: PathBuf,
    /// The binary (`goose`, `keepalived`).
    pub binary: PathBuf,
    /// Arguments after the binary (`node --id …`).
    pub args: Vec<String>,
    /// Where its stdout and stderr go (appended across restarts).
    pub log: PathBuf,
}

/// One node's process, while it runs.
#[derive(Debug)]
pub struct NodeProcess {
    /// How it was started.
    pub spec: NodeSpec,
    child: Option<Child>,
}

impl NodeProcess {
    /// A node not yet started.
    pub fn new(spec: NodeSpec) -> Self {
        Self { spec, child: None }
    }

    /// Starts it (on its data dir, whatever is in it); returns its pid.
    ///
    /// # Errors
    ///
    /// If it is already running, or the namespace, log or binary cannot be opened.
    pub fn spawn(&mut self) -> Result<u32, String> {
        if self.child.is_some() {
            return Err(format!("node {} is already running", self.spec.id));
        }
        let id = self.spec.id;
        let namespace = File::open(&self.spec.namespace)
            .map_err(|e| format!("node {id}: open {}: {e}", self.spec.namespace.display()))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.spec.log)
            .map_err(|e| format!("node {id}: open {}: {e}", self.spec.log.display()))?;
        let stdout = log
            .try_clone()
            .map_err(|e| format!("node {id}: {}: {e}", self.spec.log.display()))?;
        let namespace_fd = namespace.as_raw_fd();
        let mut command = Command::new(&self.spec.binary);
        command
            .args(&self.spec.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log);
        // SAFETY: between fork and exec only async-signal-safe system calls run (setns,
        // prctl, getppid); `namespace_fd` stays open in the parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(namespace_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The spawning thread may have ended between fork and prctl.
                if libc::getppid() == 1 {
                    return Err(io::Error::other("parent gone"));
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("node {id}: spawn {}: {e}", self.spec.binary.display()))?;
        drop(namespace);
        let pid = child.id();
        self.child = Some(child);
        Ok(pid)
    }

    /// Its pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` to it by pid.
    ///
    /// # Errors
    ///
    /// If it is not running or kill(2) fails.
    pub fn signal(&self, signal: libc::c_int) -> Result<(), String> {
        let id = self.spec.id;
        let pid = self
            .pid()
            .ok_or_else(|| format!("node {id} is not running"))?;
        let pid = libc::pid_t::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
        // SAFETY: kill(2) on the pid of our own child, not yet reaped (we hold its Child):
        // it cannot name another process.
        if unsafe { libc::kill(pid, signal) } == 0 {
            Ok(())
        } else {
            Err(format!(
                "node {id}: kill({pid}, {signal}): {}",
                io::Error::last_os_error()
            ))
        }
    }

    /// `kill -9` and reap.
    ///
    /// # Errors
    ///
    /// If it is not running or the signal fails.
    pub fn kill9(&mut self) -> Result<(), String> {
        self.signal(libc::SIGKILL)?;
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        Ok(())
    }

    /// Its exit status if it has exited on its own (it is then reaped and forgotten).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL by pid; also ends a SIGSTOPped child
            let _ = child.wait();
        }
    }
}
