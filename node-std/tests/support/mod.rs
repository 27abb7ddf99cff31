//! Real `goose` processes on 127.0.0.1 for the elastic-flock tests and `bench_elastic`.
//!
//! Every child is killed by pid (SIGKILL) and reaped when its [`Flock`] drops, and every
//! wait has a bound. Probes go out from one socket to every node at once, so a probe
//! *round* is a near-instant snapshot: a node reads its socket in order, so the old goose
//! of a handoff has answered its probe before it hands off, and the new goose reads its
//! probe (queued before the handoff began) before the TimeoutNow that makes it goose. Two
//! `goose` answers in one round would therefore be a real overlap.
#![allow(
    dead_code,
    reason = "each test binary and the bench use a different part of this module"
)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Read as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use goose_core::text::{ProbeReply, Reason, Reply};
use goose_core::NodeId;

/// Attempts at finding free ports before giving up.
const PORT_ATTEMPTS_MAX: usize = 100;
/// How long a freshly spawned node may take to answer its first probe.
pub(crate) const LISTEN_WITHIN: Duration = Duration::from_secs(10);
/// The pause between two polls of a waiting helper.
const POLL_PAUSE: Duration = Duration::from_millis(5);
/// The largest reply read.
const REPLY_SIZE_MAX: usize = 4096;
/// How long `ctl` waits for a reply (a transfer answers only once the handoff is sent).
pub(crate) const CTL_TIMEOUT: Duration = Duration::from_secs(3);

/// Timing flags: fast enough for short tests, slow enough for a loaded 2-core machine.
pub(crate) const FAST: &[&str] = &["--heartbeat-ms", "20", "--election-timeout-ms", "100-200"];

/// A temporary folder, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    /// A fresh folder under the system's temp dir.
    pub(crate) fn new(label: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let sequence = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "goose-elastic-{label}-{}-{sequence}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `count` UDP ports on 127.0.0.1 that were free a moment ago, all distinct.
pub(crate) fn free_ports(count: usize) -> Vec<u16> {
    let sockets: Vec<UdpSocket> = (0..count)
        .map(|_| UdpSocket::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    sockets
        .iter()
        .map(|socket| socket.local_addr().expect("local addr").port())
        .collect()
}

/// `count` consecutive free UDP ports (for `goose cluster --base-port`).
pub(crate) fn free_port_range(count: u16) -> u16 {
    let seed = std::process::id().wrapping_mul(7919);
    for attempt in 0..PORT_ATTEMPTS_MAX {
        let offset = (seed.wrapping_add(attempt as u32 * 977)) % 20_000;
        let base = 30_000 + u16::try_from(offset).expect("below 20000");
        let bound: Vec<_> = (0..count)
            .map_while(|i| UdpSocket::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if bound.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no {count} consecutive free ports");
}

/// One parsed `whois-goose` reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Probe {
    /// It answered `goose`.
    pub(crate) goose: bool,
    /// Its id.
    pub(crate) id: u16,
    /// Its term.
    pub(crate) term: u64,
    /// The goose it names, if any.
    pub(crate) leader: Option<u16>,
}

impl Probe {
    /// Parses `goose|duck id=… term=… goose=…` with the core's parser.
    pub(crate) fn parse(reply: &str) -> Option<Self> {
        let reply = ProbeReply::parse(reply).ok()?;
        Some(Self {
            goose: reply.goose,
            id: reply.id.get(),
            term: reply.term.0,
            leader: reply.leader.map(NodeId::get),
        })
    }
}

/// Sends `whois-goose` to every port from one socket and collects the replies that arrive
/// within `window`, in port order (`None`: no reply).
pub(crate) fn probe_round(ports: &[u16], window: Duration) -> Vec<Option<Probe>> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    for &port in ports {
        let _ = socket.send_to(b"whois-goose", ("127.0.0.1", port));
    }
    let mut replies: Vec<Option<Probe>> = vec![None; ports.len()];
    let deadline = Instant::now() + window;
    let mut buffer = [0u8; REPLY_SIZE_MAX];
    while replies.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let _ = socket.set_read_timeout(Some(left));
        let Ok((size, source)) = socket.recv_from(&mut buffer) else {
            // Timeout, or ECONNREFUSED from a closed port: either way nothing more now.
            if Instant::now() >= deadline {
                break;
            }
            continue;
        };
        let Some(slot) = ports.iter().position(|&p| p == source.port()) else {
            continue;
        };
        replies[slot] = Probe::parse(&String::from_utf8_lossy(&buffer[..size]));
    }
    replies
}

/// Sends `whois-goose` to every port each `period` from one socket, and hands every reply
/// to `on_reply` with its arrival time, until `on_reply` returns `true` (then `true`) or
/// `max` passes (then `false`). Replies are read as they come (blocking until the next
/// send is due), so a node that does not answer delays nothing and the prober sleeps
/// between datagrams.
pub(crate) fn probe_stream(
    ports: &[u16],
    period: Duration,
    max: Duration,
    mut on_reply: impl FnMut(Instant, &Probe) -> bool,
) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    let started = Instant::now();
    let mut next_send = started;
    let mut buffer = [0u8; REPLY_SIZE_MAX];
    while started.elapsed() < max {
        let now = Instant::now();
        if now >= next_send {
            for &port in ports {
                let _ = socket.send_to(b"whois-goose", ("127.0.0.1", port));
            }
            // Never more than one batch behind: a stalled prober does not burst.
            next_send = (next_send + period).max(now);
            continue;
        }
        // std refuses a zero timeout: wait at least a few microseconds.
        let wait = next_send
            .saturating_duration_since(now)
            .max(Duration::from_micros(5));
        let _ = socket.set_read_timeout(Some(wait));
        let Ok((size, _)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let arrived = Instant::now();
        let Some(probe) = Probe::parse(&String::from_utf8_lossy(&buffer[..size])) else {
            continue;
        };
        if on_reply(arrived, &probe) {
            return true;
        }
    }
    false
}

/// Sends one datagram to `port` and returns the reply line without its `\n`.
pub(crate) fn request(port: u16, text: &str, timeout: Duration) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.connect(("127.0.0.1", port)).ok()?;
    socket.send(text.as_bytes()).ok()?;
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut buffer = [0u8; REPLY_SIZE_MAX];
    let size = socket.recv(&mut buffer).ok()?;
    Some(
        String::from_utf8_lossy(&buffer[..size])
            .trim_end()
            .to_owned(),
    )
}

/// `ctl <command>` to `port`.
pub(crate) fn ctl(port: u16, command: &str) -> Option<String> {
    request(port, &format!("ctl {command}"), CTL_TIMEOUT)
}

/// `ctl status` to `port`, as key/value pairs (the first word, `ok`, dropped).
pub(crate) fn status(port: u16) -> Option<BTreeMap<String, String>> {
    let reply = ctl(port, "status")?;
    let Ok(Reply::Ok(pairs)) = Reply::parse(&reply) else {
        return None;
    };
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// A comma-separated id list from `status` (`members`, `voters`, `learners`).
pub(crate) fn ids(status: &BTreeMap<String, String>, key: &str) -> Vec<u16> {
    status
        .get(key)
        .map(|list| list.split(',').filter_map(|id| id.parse().ok()).collect())
        .unwrap_or_default()
}

/// Sends `signal` to `pid`.
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid fits");
    // SAFETY: kill has no memory-safety preconditions; the pid is a child of this process
    // that has not been reaped, so it cannot name another process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// CPU time (user + system) of `pid` so far, from /proc/<pid>/stat.
pub(crate) fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the command.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second).ok().filter(|&t| t > 0)?;
    Some(Duration::from_micros(ticks * 1_000_000 / per_second))
}

/// One `goose node` child.
pub(crate) struct Proc {
    /// Its id.
    pub(crate) id: u16,
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    /// Its data dir.
    pub(crate) data_dir: PathBuf,
    /// Where its stderr goes (appended across restarts).
    pub(crate) log: PathBuf,
    child: Option<Child>,
}

/// A set of `goose node` processes sharing a temp folder.
pub(crate) struct Flock {
    binary: PathBuf,
    /// Timing flags every node gets.
    pub(crate) timing: Vec<String>,
    /// The nodes, in the order they were added.
    pub(crate) nodes: Vec<Proc>,
    // Last: the children are killed before their folder goes.
    root: TempDir,
}

impl Flock {
    /// An empty flock run by `binary` with `timing` flags.
    pub(crate) fn new(binary: &Path, label: &str, timing: &[&str]) -> Self {
        Self {
            binary: binary.to_path_buf(),
            timing: timing.iter().map(|&flag| flag.to_owned()).collect(),
            nodes: Vec::new(),
            root: TempDir::new(label),
        }
    }

    /// The temp folder.
    pub(crate) fn root(&self) -> &Path {
        self.root.path()
    }

    /// Starts `count` nodes (ids 1..=count) that know each other, each with `extra` flags,
    /// and waits until every one answers a probe. Returns their indices.
    pub(crate) fn bootstrap(&mut self, count: u16, extra: &[&str]) -> Vec<usize> {
        let ports = free_ports(usize::from(count));
        let first = self.nodes.len();
        for (i, &port) in ports.iter().enumerate() {
            let id = u16::try_from(i + 1).expect("few nodes");
            let mut args = self.new_node_args(id, port);
            for (j, &peer) in ports.iter().enumerate() {
                if j != i {
                    args.push("--peer".into());
                    args.push(format!("{}=127.0.0.1:{peer}", j + 1));
                }
            }
            args.extend(extra.iter().map(|&flag| flag.to_owned()));
            self.add_node(id, port, &args);
        }
        let indices: Vec<usize> = (first..self.nodes.len()).collect();
        self.wait_listening(&indices);
        indices
    }

    /// Starts node `id` on a free port with `--join 127.0.0.1:<join_port>` and `extra`.
    /// Does not wait.
    pub(crate) fn spawn_join(&mut self, id: u16, join_port: u16, extra: &[&str]) -> usize {
        let port = free_ports(1)[0];
        self.spawn_join_at(id, port, join_port, extra)
    }

    /// [`Flock::spawn_join`] on a given port.
    pub(crate) fn spawn_join_at(
        &mut self,
        id: u16,
        port: u16,
        join_port: u16,
        extra: &[&str],
    ) -> usize {
        let mut args = self.new_node_args(id, port);
        args.push("--join".into());
        args.push(format!("127.0.0.1:{join_port}"));
        args.extend(extra.iter().map(|&flag| flag.to_owned()));
        self.add_node(id, port, &args)
    }

    fn new_node_args(&self, id: u16, port: u16) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--data-dir".into(),
            self.root().join(id.to_string()).display().to_string(),
        ];
        args.extend(self.timing.iter().cloned());
        args
    }

    fn add_node(&mut self, id: u16, port: u16, args: &[String]) -> usize {
        let data_dir = self.root().join(id.to_string());
        let log = self.root().join(format!("node-{id}.log"));
        self.nodes.push(Proc {
            id,
            port,
            data_dir,
            log,
            child: None,
        });
        let index = self.nodes.len() - 1;
        self.launch(index, args);
        index
    }

    /// Restarts a node that is not running with `--data-dir` alone (plus timing and
    /// `extra`), as the contract allows once the data dir holds a membership.
    pub(crate) fn restart(&mut self, index: usize, extra: &[&str]) {
        let mut args: Vec<String> = vec![
            "node".into(),
            "--data-dir".into(),
            self.nodes[index].data_dir.display().to_string(),
        ];
        args.extend(self.timing.iter().cloned());
        args.extend(extra.iter().map(|&flag| flag.to_owned()));
        self.launch(index, &args);
    }

    fn launch(&mut self, index: usize, args: &[String]) {
        let node = &mut self.nodes[index];
        assert!(node.child.is_none(), "node {} is running", node.id);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log file");
        let child = Command::new(&self.binary)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn goose node {}: {e}", node.id));
        node.child = Some(child);
    }

    /// Waits until every node of `indices` answers a probe.
    ///
    /// # Panics
    ///
    /// If one exits or stays silent for [`LISTEN_WITHIN`].
    pub(crate) fn wait_listening(&mut self, indices: &[usize]) {
        let deadline = Instant::now() + LISTEN_WITHIN;
        loop {
            for &index in indices {
                if let Some(status) = self.exit_status(index) {
                    panic!(
                        "node {} exited ({status}) at start:\n{}",
                        self.nodes[index].id,
                        self.log_tail(index)
                    );
                }
            }
            let ports: Vec<u16> = indices.iter().map(|&i| self.nodes[i].port).collect();
            let round = probe_round(&ports, Duration::from_millis(100));
            if round.iter().all(Option::is_some) {
                return;
            }
            assert!(Instant::now() < deadline, "nodes silent: {round:?}");
            thread::sleep(POLL_PAUSE);
        }
    }

    /// The ports of `indices`.
    pub(crate) fn ports(&self, indices: &[usize]) -> Vec<u16> {
        indices.iter().map(|&i| self.nodes[i].port).collect()
    }

    /// The indices of the nodes still running.
    pub(crate) fn running(&mut self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.exit_status(i).is_none() && self.nodes[i].child.is_some())
            .collect()
    }

    /// Probes `indices` once; panics if two answer goose.
    pub(crate) fn round(&self, indices: &[usize]) -> Vec<Option<Probe>> {
        let round = probe_round(&self.ports(indices), Duration::from_millis(200));
        let geese: Vec<u16> = round
            .iter()
            .flatten()
            .filter(|p| p.goose)
            .map(|p| p.id)
            .collect();
        assert!(geese.len() <= 1, "two geese in one probe round: {round:?}");
        round
    }

    /// Waits until exactly one of `indices` answers goose and every other one that answers
    /// names it; returns its index and term.
    ///
    /// # Panics
    ///
    /// After `within`, or if a probe round ever shows two geese.
    pub(crate) fn wait_goose(&self, indices: &[usize], within: Duration) -> (usize, u64) {
        let deadline = Instant::now() + within;
        loop {
            let round = self.round(indices);
            let goose = round.iter().flatten().find(|p| p.goose).cloned();
            if let Some(goose) = goose {
                let agreed = round
                    .iter()
                    .flatten()
                    .all(|p| p.goose || p.leader == Some(goose.id));
                if agreed && round.iter().all(Option::is_some) {
                    let index = indices
                        .iter()
                        .copied()
                        .find(|&i| self.nodes[i].id == goose.id)
                        .expect("a goose among the probed");
                    return (index, goose.term);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed goose among {:?} within {within:?}: {round:?}",
                indices
                    .iter()
                    .map(|&i| self.nodes[i].id)
                    .collect::<Vec<_>>()
            );
            thread::sleep(POLL_PAUSE);
        }
    }

    /// `ctl <command>` to node `index`.
    pub(crate) fn ctl(&self, index: usize, command: &str) -> Option<String> {
        ctl(self.nodes[index].port, command)
    }

    /// `ctl status` of node `index`.
    pub(crate) fn status(&self, index: usize) -> BTreeMap<String, String> {
        status(self.nodes[index].port)
            .unwrap_or_else(|| panic!("no status from node {}", self.nodes[index].id))
    }

    /// `ctl <command>` to node `index`, retried while it answers `err busy`.
    ///
    /// # Panics
    ///
    /// If it is still busy after `within`.
    pub(crate) fn ctl_until_not_busy(
        &self,
        index: usize,
        command: &str,
        within: Duration,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let reply = self.ctl(index, command).unwrap_or_default();
            let busy = Reply::parse(&reply).map(|reply| reply.reason() == Some(Reason::Busy));
            if busy == Ok(false) {
                return reply;
            }
            assert!(
                Instant::now() < deadline,
                "ctl {command}: busy for {within:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's pid, if running.
    pub(crate) fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(Child::id)
    }

    /// Sends `sig` to node `index`.
    pub(crate) fn signal(&self, index: usize, sig: libc::c_int) {
        if let Some(pid) = self.pid(index) {
            signal(pid, sig);
        }
    }

    /// SIGKILL to node `index`, and reaps it.
    pub(crate) fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The exit status of node `index` if it has exited (reaping it).
    pub(crate) fn exit_status(&mut self, index: usize) -> Option<ExitStatus> {
        let child = self.nodes[index].child.as_mut()?;
        let status = child.try_wait().ok()??;
        self.nodes[index].child = None;
        Some(status)
    }

    /// Waits up to `within` for node `index` to exit; its status.
    pub(crate) fn wait_exit(&mut self, index: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status(index) {
                return Some(status);
            }
            if self.nodes[index].child.is_none() || Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// The last lines of node `index`'s log.
    pub(crate) fn log_tail(&self, index: usize) -> String {
        let log = self.log(index);
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Node `index`'s whole log.
    pub(crate) fn log(&self, index: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.nodes[index].log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Polls `condition` every few milliseconds until it holds, for at most `within`.
pub(crate) fn eventually(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The `p`-th percentile (0–100) of sorted `values`, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The address of a node on 127.0.0.1.
pub(crate) fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
