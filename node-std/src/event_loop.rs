//! `goose node`: one [`Node`] driven by a single-threaded mio loop over one UDP socket.
//!
//! Each wake-up (STYLE.md, "the node-std loop"):
//!
//! 1. read the socket until `WouldBlock` (at most [`DATAGRAMS_PER_WAKE_MAX`]; mio is
//!    edge-triggered, so a capped drain wakes again at once): peer frames (first byte
//!    ≥ 0x80) go to [`Node::handle_frame`], text goes to [`goose_core::text::parse`] and is
//!    answered here, each at a fresh reading of the clock ([`crate::clock`]);
//! 2. `now` = the clock;
//! 3. [`Node::handle_timeout`] if its deadline has passed;
//! 4. drain [`Node::poll_transmit`] to the socket, then [`Node::poll_event`] to the log;
//! 5. sleep in `poll` until [`Node::poll_timeout`]: an idle node sleeps, it never spins.
//!
//! `ctl stop` keeps the node object only to answer `status`: nothing is fed to it and
//! nothing taken from it until `ctl start`, which rebuilds it from the state file.
//! A node whose storage fails ([`Event::Failed`]) makes [`run`] return an error: the
//! process exits 1 (fail-stop).

use std::collections::hash_map::RandomState;
use std::fmt::{self, Write as _};
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use goose_core::limits::FRAME_SIZE_MAX;
use goose_core::text::{
    self, Command, PeerList, ProbeReply, Request, StatusReply, TEXT_REPLY_SIZE_MAX,
};
use goose_core::{Config, Event, Instant, Member, Node, NodeId, Observed, RaftRole, StartError};
use mio::net::{UdpSocket, UnixStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use subtle::ConstantTimeEq;

use crate::clock::Clock;
use crate::storage_file::{DataDir, DataDirError, FileStorage};

/// Datagrams read per wake-up before the loop lets timers and sends run. 1024 is far
/// above what a flock sends one node between two wake-ups (a few per peer), and bounds the
/// time one flood can keep timers from firing.
const DATAGRAMS_PER_WAKE_MAX: usize = 1024;
/// Frames sent per wake-up. The core's outbox and per-peer replication hold far fewer; the
/// bound only guards against a core bug turning into a spin.
const TRANSMITS_PER_WAKE_MAX: usize = 4096;
/// Events logged per wake-up; the core buffers at most `EVENTS_MAX` anyway.
const EVENTS_PER_WAKE_MAX: usize = 64;
/// Kernel socket buffers. Peer traffic is a few datagrams per heartbeat, but probes and a
/// flood of junk can burst: 1 MiB queues about two thousand full-size datagrams.
const SOCKET_BUFFER_SIZE: usize = 1 << 20;
/// The receive buffer: larger than any valid frame or text request, so a too-long frame
/// arrives whole and is counted as too long rather than undecodable.
const RECEIVE_BUFFER_SIZE: usize = 2048;

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);

/// What `goose node` runs with, checked by the CLI.
#[derive(Debug)]
pub(crate) struct Options {
    /// Timing and id.
    pub(crate) config: Config,
    /// The UDP address to bind.
    pub(crate) listen: SocketAddr,
    /// Self plus every `--peer`, all voters; used only when the data dir is empty.
    pub(crate) bootstrap: Vec<Member>,
    /// Where the state file and lock live.
    pub(crate) data_dir: PathBuf,
    /// Lets non-loopback sources send control with `token=<T>`.
    pub(crate) control_token: Option<String>,
}

/// Why a node stopped running.
#[derive(Debug)]
pub(crate) enum RunError {
    /// The socket could not be created or bound (port in use, address not local).
    Listen(SocketAddr, io::Error),
    /// The data dir is locked, unreadable or corrupt.
    DataDir(DataDirError),
    /// The core refused the configuration or the stored state.
    Start(PathBuf, StartError),
    /// The poller or the signal pipe failed.
    Poll(io::Error),
    /// Storage failed and the node fail-stopped.
    StorageFailed,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listen(addr, error) if error.kind() == io::ErrorKind::AddrInUse => {
                write!(f, "cannot listen on {addr}: port in use ({error})")
            }
            Self::Listen(addr, error) => write!(f, "cannot listen on {addr}: {error}"),
            Self::DataDir(error) => write!(f, "{error}"),
            Self::Start(path, StartError::State(error)) => write!(
                f,
                "state file {} refused: {error}; refusing to start (it is never reset \
                 automatically)",
                path.display()
            ),
            Self::Start(_, error) => write!(f, "cannot start: {error}"),
            Self::Poll(error) => write!(f, "event loop failed: {error}"),
            Self::StorageFailed => f.write_str("storage failed; stopped for good (fail-stop)"),
        }
    }
}

impl std::error::Error for RunError {}

impl From<DataDirError> for RunError {
    fn from(error: DataDirError) -> Self {
        Self::DataDir(error)
    }
}

/// The desktop node's own drop counters, reported by `ctl status` after the core's.
#[derive(Debug, Default)]
struct LoopStats {
    /// Text that is not a request (`err unknown-command`).
    text_unknown: u64,
    /// Control refused (`err forbidden`).
    forbidden: u64,
    /// Peer frames dropped on arrival by `ctl partition`.
    partition_in: u64,
    /// Peer frames not sent because of `ctl partition`.
    partition_out: u64,
    /// Peer frames dropped on arrival while stopped.
    stopped_in: u64,
    /// Datagrams the kernel refused to send (buffer full, no route).
    send_errors: u64,
    /// Socket read errors other than `WouldBlock`.
    receive_errors: u64,
}

impl LoopStats {
    fn counters(&self) -> [(&'static str, u64); 7] {
        [
            ("text_unknown", self.text_unknown),
            ("text_forbidden", self.forbidden),
            ("drop_partition_in", self.partition_in),
            ("drop_partition_out", self.partition_out),
            ("drop_stopped", self.stopped_in),
            ("send_errors", self.send_errors),
            ("receive_errors", self.receive_errors),
        ]
    }
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Runs node `options.config.id` until SIGINT or SIGTERM (then `Ok`: every state change
/// is already durable, so there is nothing to flush) or until it fails.
///
/// # Errors
///
/// See [`RunError`]: each is a reason to exit 1.
pub(crate) fn run(options: Options) -> Result<(), RunError> {
    let data_dir = DataDir::open(&options.data_dir)?;
    let socket = bind(options.listen).map_err(|error| RunError::Listen(options.listen, error))?;
    let signals = signal_pipe().map_err(RunError::Poll)?;
    let mut runner = Runner::new(options, data_dir, socket, signals)?;
    runner.run()
}

/// A socket that becomes readable when SIGINT or SIGTERM arrives, so the loop can log its
/// exit instead of dying silently (signal-hook's self-pipe: the handler only writes).
fn signal_pipe() -> io::Result<UnixStream> {
    let (read, write) = std::os::unix::net::UnixStream::pair()?;
    read.set_nonblocking(true)?;
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(signal, write.try_clone()?)?;
    }
    Ok(UnixStream::from_std(read))
}

/// A non-blocking UDP socket with explicit buffer sizes, bound to `listen`.
fn bind(listen: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if listen.is_ipv6() {
        // Dual-stack where the system allows it, so [::]:p also hears IPv4 peers.
        let _ = socket.set_only_v6(false);
    }
    socket.set_recv_buffer_size(SOCKET_BUFFER_SIZE)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_SIZE)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

struct Runner {
    options: Options,
    data_dir: DataDir,
    socket: UdpSocket,
    /// Readable once SIGINT or SIGTERM arrived; only its readiness is used, but it must
    /// stay open for as long as it is registered.
    _signals: UnixStream,
    poll: Poll,
    clock: Clock,
    node: Node<FileStorage>,
    /// `ctl stop` was the last of stop/start.
    stopped: bool,
    partition: PeerList,
    stats: LoopStats,
    frame: [u8; FRAME_SIZE_MAX],
    receive: [u8; RECEIVE_BUFFER_SIZE],
    reply: String,
    /// The receive drain stopped at its bound with datagrams possibly left: poll again
    /// without sleeping.
    more_to_read: bool,
}

impl Runner {
    fn new(
        options: Options,
        data_dir: DataDir,
        mut socket: UdpSocket,
        mut signals: UnixStream,
    ) -> Result<Self, RunError> {
        let poll = Poll::new().map_err(RunError::Poll)?;
        let registry = poll.registry();
        registry
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(RunError::Poll)?;
        registry
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(RunError::Poll)?;
        let mut clock = Clock::new();
        let now = clock.now();
        let node = build_node(&options, &data_dir, now)?;
        warn_if_membership_differs(&options, &node);
        log::info!(
            "node {} term {}: listening on {}, data dir {}, members {}",
            node.id(),
            node.term(),
            options.listen,
            options.data_dir.display(),
            describe_members(node.members())
        );
        Ok(Self {
            options,
            data_dir,
            socket,
            _signals: signals,
            poll,
            clock,
            node,
            stopped: false,
            partition: PeerList::new(),
            stats: LoopStats::default(),
            frame: [0; FRAME_SIZE_MAX],
            receive: [0; RECEIVE_BUFFER_SIZE],
            reply: String::with_capacity(TEXT_REPLY_SIZE_MAX),
            more_to_read: false,
        })
    }

    fn run(&mut self) -> Result<(), RunError> {
        let mut events = Events::with_capacity(8);
        loop {
            self.receive_all()?;
            // Read after the datagrams: every call into a node gets a `now` at or after
            // the one before (a `ctl start` builds its node at a fresh reading).
            let now = self.clock.now();
            if !self.stopped {
                if self
                    .node
                    .poll_timeout()
                    .is_some_and(|deadline| deadline <= now)
                {
                    self.node.handle_timeout(now);
                }
                self.transmit_all(now);
            }
            self.log_events()?;
            let timeout = self.sleep_for();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(RunError::Poll(error)),
            }
            if events.iter().any(|event| event.token() == SIGNALS) {
                log::info!(
                    "node {} term {}: signalled, exiting",
                    self.node.id(),
                    self.node.term()
                );
                return Ok(());
            }
        }
    }

    /// How long to sleep: until the node's next deadline, not at all if the last drain
    /// was capped, forever while stopped (only datagrams wake a stopped node).
    fn sleep_for(&mut self) -> Option<StdDuration> {
        if self.more_to_read {
            return Some(StdDuration::ZERO);
        }
        if self.stopped {
            return None;
        }
        let deadline = self.node.poll_timeout()?;
        let now = self.clock.now();
        // mio rounds up to its resolution, so this never wakes before the deadline.
        Some(StdDuration::from_micros(
            deadline.saturating_since(now).micros(),
        ))
    }

    fn receive_all(&mut self) -> Result<(), RunError> {
        self.more_to_read = true;
        for _ in 0..DATAGRAMS_PER_WAKE_MAX {
            let (size, source) = match self.socket.recv_from(&mut self.receive) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.more_to_read = false;
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // E.g. an ICMP error queued on the socket: count it and read on.
                    bump(&mut self.stats.receive_errors);
                    log::debug!("node {}: receive error: {error}", self.node.id());
                    continue;
                }
            };
            let size = size.min(RECEIVE_BUFFER_SIZE);
            self.handle_datagram(source, size)?;
        }
        Ok(())
    }

    /// Handles one datagram at a fresh clock reading (a probe's answer must reflect the
    /// lease at the moment it is sent, not at the start of a long drain).
    fn handle_datagram(&mut self, source: SocketAddr, size: usize) -> Result<(), RunError> {
        let now = self.clock.now();
        let datagram = &self.receive[..size];
        match text::parse(datagram) {
            Request::Binary => {
                if self.stopped {
                    bump(&mut self.stats.stopped_in);
                } else if self.partitioned_source(datagram) {
                    bump(&mut self.stats.partition_in);
                } else {
                    self.node.handle_frame(now, datagram);
                }
            }
            Request::Probe => {
                let status = self.node.status(now);
                let reply = ProbeReply {
                    goose: status.goose,
                    id: status.id,
                    term: status.term,
                    leader: status.leader,
                    stopped: self.stopped,
                };
                self.reply.clear();
                // A String never refuses a write: the Err arm is unreachable.
                let _ = text::write_probe_reply(&mut self.reply, &reply);
                self.send_reply(source);
            }
            Request::Control { token, command } => {
                self.reply.clear();
                if control_allowed(source, token, self.options.control_token.as_deref()) {
                    match command {
                        Ok(command) => self.control(command)?,
                        Err(error) => {
                            let _ = text::write_err(&mut self.reply, error.reason());
                        }
                    }
                } else {
                    bump(&mut self.stats.forbidden);
                    log::warn!("node {}: control from {source} refused", self.node.id());
                    let _ = text::write_err(&mut self.reply, "forbidden");
                }
                self.send_reply(source);
            }
            Request::Reply => {}
            Request::Unknown => {
                bump(&mut self.stats.text_unknown);
                self.reply.clear();
                let _ = text::write_err(&mut self.reply, "unknown-command");
                self.send_reply(source);
            }
        }
        Ok(())
    }

    /// Whether a peer frame comes from a partitioned member. Identity is the frame
    /// header's source id (a NAT'd board's address says nothing), mapped to the member's
    /// address for partitions named by `ip:port`.
    fn partitioned_source(&self, frame: &[u8]) -> bool {
        if self.partition.is_empty() {
            return false;
        }
        let Ok((header, _)) = goose_core::wire::parse_header(frame) else {
            return false; // the core counts it
        };
        let Some(source) = NodeId::new(header.source) else {
            return false;
        };
        self.node
            .members()
            .iter()
            .find(|member| member.id == source)
            .is_some_and(|member| self.partition.contains(member.id, member.addr))
    }

    /// Carries out one control command and writes its reply into `self.reply`.
    fn control(&mut self, command: Command) -> Result<(), RunError> {
        let id = self.node.id();
        match command {
            Command::Stop => {
                if !self.stopped {
                    self.stopped = true;
                    log::info!("node {id} term {}: stopped by ctl", self.node.term());
                }
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Start => {
                if self.stopped {
                    let now = self.clock.now();
                    // Drop the old node first: its storage must not outlive the restart.
                    self.node = build_node(&self.options, &self.data_dir, now)?;
                    self.stopped = false;
                    log::info!(
                        "node {id} term {}: started by ctl from the persisted state",
                        self.node.term()
                    );
                }
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Partition(peers) => {
                self.partition = peers;
                log::info!(
                    "node {id}: partitioned from {}",
                    describe_peers(&self.partition)
                );
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Heal => {
                self.partition = PeerList::new();
                log::info!("node {id}: partition healed");
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Status => self.write_status(),
            Command::Transfer(_) | Command::Add { .. } | Command::Remove(_) => {
                let now = self.clock.now();
                if self.stopped || !self.node.is_goose(now) {
                    let leader = self.node.status(now).leader.filter(|_| !self.stopped);
                    let addr = leader.and_then(|leader| self.member_addr(leader));
                    let _ = text::write_not_goose(&mut self.reply, leader, addr);
                } else {
                    let _ = text::write_err(&mut self.reply, "not-implemented");
                }
            }
        }
        Ok(())
    }

    fn write_status(&mut self) {
        let now = self.clock.now();
        let status = self.node.status(now);
        let members = self.node.members();
        let ids = |voter: Option<bool>| -> Vec<NodeId> {
            members
                .iter()
                .filter(|m| voter.is_none_or(|voter| m.voter == voter))
                .map(|m| m.id)
                .collect()
        };
        let (all, voters, learners) = (ids(None), ids(Some(true)), ids(Some(false)));
        let raft = match (self.stopped, status.raft) {
            // Not taking part: it would restart as a follower (or learner).
            (true, RaftRole::Learner) | (false, RaftRole::Learner) => "learner",
            (true, _) => "follower",
            (false, role) => role.as_str(),
        };
        let counters: Vec<(&str, u64)> = self
            .node
            .stats()
            .counters()
            .into_iter()
            .chain(self.stats.counters())
            .collect();
        let reply = StatusReply {
            goose: status.goose && !self.stopped,
            raft,
            id: status.id,
            term: status.term,
            leader: status.leader,
            stopped: self.stopped,
            commit: status.commit.0,
            members: &all,
            voters: &voters,
            learners: &learners,
            lease_ms: if self.stopped {
                0
            } else {
                status.lease_remaining.millis()
            },
            counters: &counters,
        };
        let _ = text::write_status(&mut self.reply, &reply);
    }

    fn member_addr(&self, id: NodeId) -> Option<SocketAddr> {
        let member = self.node.members().iter().find(|m| m.id == id)?;
        Some(member.addr)
    }

    fn send_reply(&mut self, target: SocketAddr) {
        debug_assert!(self.reply.ends_with('\n'));
        if let Err(error) = self.socket.send_to(self.reply.as_bytes(), target) {
            bump(&mut self.stats.send_errors);
            log::debug!("node {}: reply to {target} failed: {error}", self.node.id());
        }
    }

    fn transmit_all(&mut self, now: Instant) {
        for _ in 0..TRANSMITS_PER_WAKE_MAX {
            let Some(transmit) = self.node.poll_transmit(now, &mut self.frame) else {
                return;
            };
            if self.partition.contains(transmit.target, transmit.addr) {
                bump(&mut self.stats.partition_out);
                continue;
            }
            let frame = &self.frame[..transmit.size];
            if let Err(error) = self.socket.send_to(frame, transmit.addr) {
                bump(&mut self.stats.send_errors);
                log::debug!(
                    "node {}: send to {} ({}) failed: {error}",
                    self.node.id(),
                    transmit.target,
                    transmit.addr
                );
            }
        }
        log::warn!(
            "node {}: more than {TRANSMITS_PER_WAKE_MAX} frames in one wake-up",
            self.node.id()
        );
    }

    fn log_events(&mut self) -> Result<(), RunError> {
        for _ in 0..EVENTS_PER_WAKE_MAX {
            match self.node.poll_event() {
                None => break,
                Some(Event::Changed(observed)) => log_change(self.node.id(), &observed),
                // storage_file has logged the cause; main logs the exit.
                Some(Event::Failed) => return Err(RunError::StorageFailed),
                Some(Event::TransferSent { to }) => {
                    log::info!("node {}: handed leadership to {to}", self.node.id());
                }
                Some(Event::TransferFailed) => {
                    log::warn!("node {}: no voter caught up for a handoff", self.node.id());
                }
                Some(Event::Removed) => {
                    log::info!("node {}: removed from the flock", self.node.id());
                }
            }
        }
        // Belt and braces: a failed node has no deadline, so if its Failed event were ever
        // lost the loop would sleep forever instead of exiting.
        if self.node.status(self.clock.now()).failed {
            return Err(RunError::StorageFailed);
        }
        Ok(())
    }
}

/// Whether control from `source` with `token` is accepted: loopback sources always;
/// others only if the node has a token and `token` matches it, compared in constant time
/// (only the length can leak).
fn control_allowed(source: SocketAddr, token: Option<&str>, expected: Option<&str>) -> bool {
    if source.ip().to_canonical().is_loopback() {
        return true;
    }
    match (expected, token) {
        (Some(expected), Some(given)) => expected.as_bytes().ct_eq(given.as_bytes()).into(),
        _ => false,
    }
}

/// A fresh node from the data dir's state file, or from the bootstrap membership if there
/// is none yet. It grants no vote for a minimum election timeout (lease safety).
fn build_node(
    options: &Options,
    data_dir: &DataDir,
    now: Instant,
) -> Result<Node<FileStorage>, RunError> {
    let saved = data_dir.read_state()?;
    let seed = RandomState::new().hash_one(options.config.id.get());
    Node::new(
        &options.config,
        data_dir.storage(),
        saved.as_deref(),
        &options.bootstrap,
        seed,
        now,
    )
    .map_err(|error| RunError::Start(data_dir.state_path(), error))
}

/// `--peer` only seeds an empty data dir: say so when a stored membership overrides it.
fn warn_if_membership_differs(options: &Options, node: &Node<FileStorage>) {
    let stored = node.members();
    let same = stored.len() == options.bootstrap.len()
        && options
            .bootstrap
            .iter()
            .all(|member| stored.contains(member));
    if !same {
        log::warn!(
            "node {}: the data dir holds membership {}; ignoring --listen/--peer ({})",
            node.id(),
            describe_members(stored),
            describe_members(&options.bootstrap)
        );
    }
}

fn describe_members(members: &[Member]) -> String {
    let mut text = String::new();
    for (index, member) in members.iter().enumerate() {
        let separator = if index == 0 { "" } else { "," };
        let learner = if member.voter { "" } else { "(learner)" };
        let _ = write!(text, "{separator}{}={}{learner}", member.id, member.addr);
    }
    text
}

fn describe_peers(peers: &PeerList) -> String {
    if peers.is_empty() {
        return "nobody".to_owned();
    }
    let mut text = String::new();
    for (index, peer) in peers.as_slice().iter().enumerate() {
        let separator = if index == 0 { "" } else { "," };
        let _ = match peer {
            text::PeerRef::Id(id) => write!(text, "{separator}{id}"),
            text::PeerRef::Addr(addr) => write!(text, "{separator}{addr}"),
        };
    }
    text
}

/// One line per role, goose, term or leader change.
fn log_change(id: NodeId, observed: &Observed) {
    let term = observed.term;
    let raft = observed.raft.as_str();
    match (observed.goose, observed.leader) {
        (true, _) => log::info!("node {id} term {term}: goose ({raft})"),
        (false, Some(leader)) if leader == id => {
            log::info!("node {id} term {term}: duck ({raft}, not yet goose)");
        }
        (false, Some(leader)) => log::info!("node {id} term {term}: duck ({raft} of {leader})"),
        (false, None) => log::info!("node {id} term {term}: duck ({raft}, no leader)"),
    }
}

#[cfg(test)]
mod tests {
    use super::control_allowed;
    use std::net::SocketAddr;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn loopback_control_needs_no_token() {
        for source in [
            "127.0.0.1:5000",
            "127.9.9.9:5000",
            "[::1]:5000",
            "[::ffff:127.0.0.1]:5000",
        ] {
            assert!(control_allowed(addr(source), None, None), "{source}");
            assert!(
                control_allowed(addr(source), None, Some("secret")),
                "{source}"
            );
        }
    }

    #[test]
    fn remote_control_needs_the_token() {
        let remote = addr("192.0.2.7:5000");
        assert!(!control_allowed(remote, None, None));
        assert!(!control_allowed(remote, Some("secret"), None));
        assert!(!control_allowed(remote, None, Some("secret")));
        assert!(!control_allowed(remote, Some("secreT"), Some("secret")));
        assert!(!control_allowed(remote, Some(""), Some("secret")));
        assert!(!control_allowed(remote, Some("secret2"), Some("secret")));
        assert!(control_allowed(remote, Some("secret"), Some("secret")));
        assert!(control_allowed(
            addr("[2001:db8::1]:5000"),
            Some("secret"),
            Some("secret")
        ));
    }
}
