//! `goose cluster`: launches a local flock of `goose node` processes and keeps a live view
//! of who is goose.
//!
//! The children are this same executable. Each gets `PR_SET_PDEATHSIG = SIGKILL`, so a
//! launcher killed with SIGKILL does not leave them behind; SIGINT or SIGTERM to the
//! launcher stops them all (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and exits 0.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{probe_all, Probe};

/// How often the live view probes every node.
const VIEW_INTERVAL: Duration = Duration::from_millis(100);
/// How long one round of probes waits for replies.
const VIEW_PROBE_TIMEOUT: Duration = Duration::from_millis(80);
/// How long children get to exit after SIGTERM before they are killed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often a stopping launcher checks whether its children have exited.
const STOP_POLL: Duration = Duration::from_millis(20);

/// What to launch.
#[derive(Debug)]
pub(crate) struct Options {
    /// Node count: ids 1..=nodes.
    pub(crate) nodes: u16,
    /// Node `i` listens on 127.0.0.1:`base_port + i - 1`.
    pub(crate) base_port: u16,
    /// Node `i` keeps its state in `data_dir/i`.
    pub(crate) data_dir: PathBuf,
    /// `--heartbeat-ms …` and `--election-timeout-ms …`, passed to every child.
    pub(crate) timing_flags: Vec<String>,
}

/// Why the launcher failed.
#[derive(Debug)]
pub(crate) enum ClusterError {
    /// The launcher's own path or its signal handlers could not be set up.
    Setup(io::Error),
    /// A child could not be spawned.
    Spawn(u16, io::Error),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setup(error) => write!(f, "cannot start: {error}"),
            Self::Spawn(id, error) => write!(f, "cannot spawn node {id}: {error}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// One `goose node` child of the launcher.
struct Launched {
    id: u16,
    addr: SocketAddr,
    /// `None` once it has exited and been reaped.
    child: Option<Child>,
}

/// Runs the flock until SIGINT or SIGTERM, then stops every child.
///
/// # Errors
///
/// If signal handlers cannot be installed or a child cannot be spawned (the children
/// already spawned are stopped first).
pub(crate) fn run(options: &Options) -> Result<(), ClusterError> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(ClusterError::Setup)?;
    }
    let executable = std::env::current_exe().map_err(ClusterError::Setup)?;
    let addrs: Vec<(u16, SocketAddr)> = (1..=options.nodes)
        .map(|id| {
            let port = options.base_port.saturating_add(id - 1);
            (id, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        })
        .collect();
    let mut nodes = Vec::with_capacity(addrs.len());
    for &(id, addr) in &addrs {
        let mut command = Command::new(&executable);
        command
            .arg("node")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(options.data_dir.join(id.to_string()))
            .args(&options.timing_flags);
        for &(peer, peer_addr) in addrs.iter().filter(|(peer, _)| *peer != id) {
            command.arg("--peer").arg(format!("{peer}={peer_addr}"));
        }
        set_parent_death_signal(&mut command);
        match command.spawn() {
            Ok(child) => {
                println!("node {id} {addr} pid {}", child.id());
                nodes.push(Launched {
                    id,
                    addr,
                    child: Some(child),
                });
            }
            Err(error) => {
                stop_all(&mut nodes);
                return Err(ClusterError::Spawn(id, error));
            }
        }
    }
    live_view(&mut nodes, &stop);
    stop_all(&mut nodes);
    Ok(())
}

/// Kills the child with SIGKILL when the launcher dies, however it dies.
fn set_parent_death_signal(command: &mut Command) {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let launcher = unsafe { libc::getpid() };
    let hook = move || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are async-signal-safe, touch no
        // memory of ours, and are all a child may call between fork and exec.
        let result = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if result != 0 {
            return Err(io::Error::last_os_error());
        }
        // The launcher may have died before prctl took effect; then nobody would ever
        // send the signal, so give up now.
        // SAFETY: as above.
        if unsafe { libc::getppid() } != launcher {
            return Err(io::Error::other("launcher exited while spawning"));
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe calls and allocates nothing on its
    // success path (io::Error::other allocates only when the launcher is already gone).
    unsafe {
        command.pre_exec(hook);
    }
}

/// Probes every node each [`VIEW_INTERVAL`] and prints one line per change of goose or
/// term, and one per child that exits, until `stop` is set.
fn live_view(nodes: &mut [Launched], stop: &AtomicBool) {
    let started = Instant::now();
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
    let mut shown: Option<(Vec<u16>, Option<u64>)> = None;
    while !stop.load(Ordering::SeqCst) {
        let round = Instant::now();
        reap_exited(nodes, started);
        let replies = probe_all(&addrs, VIEW_PROBE_TIMEOUT);
        let probes: Vec<Option<Probe>> = replies
            .iter()
            .map(|reply| reply.as_deref().and_then(Probe::parse))
            .collect();
        let geese: Vec<u16> = nodes
            .iter()
            .zip(&probes)
            .filter(|(_, probe)| probe.is_some_and(|p| p.goose))
            .map(|(node, _)| node.id)
            .collect();
        let term = probes.iter().flatten().filter_map(|p| p.term).max();
        let view = (geese, term);
        if shown.as_ref() != Some(&view) {
            print_view(started, &view.0, view.1);
            shown = Some(view);
        }
        std::thread::sleep(VIEW_INTERVAL.saturating_sub(round.elapsed()));
    }
}

fn print_view(started: Instant, geese: &[u16], term: Option<u64>) {
    let elapsed = started.elapsed().as_secs_f64();
    let term = term.map_or_else(|| "-".to_owned(), |t| t.to_string());
    match geese {
        [] => println!("[{elapsed:8.3}s] goose none term {term}"),
        [goose] => println!("[{elapsed:8.3}s] goose {goose} term {term}"),
        // Never expected: the lease forbids it. Shown loudly if it ever happens.
        many => println!("[{elapsed:8.3}s] TWO GEESE {many:?} term {term}"),
    }
}

fn reap_exited(nodes: &mut [Launched], started: Instant) {
    for node in nodes {
        let Some(child) = node.child.as_mut() else {
            continue;
        };
        if let Ok(Some(status)) = child.try_wait() {
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "[{elapsed:8.3}s] node {} exited: {}",
                node.id,
                describe(status)
            );
            node.child = None;
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown status".to_owned(),
    }
}

/// SIGTERM to every running child, then SIGKILL to any still running after
/// [`STOP_GRACE`]; reaps them all.
fn stop_all(nodes: &mut [Launched]) {
    for child in nodes.iter_mut().filter_map(|m| m.child.as_mut()) {
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill has no memory-safety preconditions; `pid` is our own child,
            // not yet reaped, so it cannot have been reused by another process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        let running = nodes
            .iter_mut()
            .filter_map(|m| m.child.as_mut())
            .map(|child| matches!(child.try_wait(), Ok(None)))
            .filter(|running| *running)
            .count();
        if running == 0 {
            break;
        }
        std::thread::sleep(STOP_POLL);
    }
    for node in nodes {
        if let Some(mut child) = node.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                eprintln!(
                    "goose cluster: node {} ignored SIGTERM; killing it",
                    node.id
                );
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
