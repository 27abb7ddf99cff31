//! `goose node`: one [`Node`] driven by a single-threaded mio loop over one UDP socket.
//!
//! Each wake-up (STYLE.md, "the node-std loop"):
//!
//! 1. read the socket until `WouldBlock` (at most [`DATAGRAMS_PER_WAKE_MAX`]; mio is
//!    edge-triggered, so a capped drain wakes again at once): peer frames (first byte
//!    ≥ 0x80) go to [`Node::handle_frame`], text goes to [`goose_core::text::parse`] and is
//!    answered here, each at a fresh reading of the clock ([`crate::clock`]);
//! 2. `now` = the clock;
//! 3. [`Node::handle_timeout`] if its deadline has passed; a joining node asks to be added
//!    if its next attempt is due;
//! 4. drain [`Node::poll_transmit`] to the socket, then [`Node::poll_event`]: role changes
//!    to the log and the hooks ([`crate::hooks`]), handoffs to the `ctl transfer` requester
//!    waiting for them, a removal to the exit;
//! 5. sleep in `poll` until the earliest deadline (the node's, a hook's, a join attempt's, a
//!    pending handoff's): an idle node sleeps, it never spins. SIGINT/SIGTERM and SIGCHLD
//!    wake it through self-pipes.
//!
//! `ctl stop` keeps the node object only to answer `status`: nothing is fed to it and
//! nothing taken from it until `ctl start`, which rebuilds it from the state file.
//! A node whose storage fails ([`Event::Failed`]) makes [`run`] return an error: the
//! process exits 1 (fail-stop).
//!
//! # Leaving
//!
//! SIGINT or SIGTERM on a leader starts a leadership transfer (dissertation §3.10): it
//! answers duck at once, brings the most up-to-date voter level, sends it TimeoutNow, and
//! exits 0 once that frame has left (or once the transfer failed, at most
//! `election_timeout_max` later). Any other node exits 0 at once. A node whose removal
//! committed ([`Event::Removed`]) exits 0 too. Before exiting, a node goes silent (as with
//! `ctl stop`) and lets its hooks finish (each bounded by the hook timeout); a second
//! signal exits at once.

use std::collections::hash_map::RandomState;
use std::fmt::{self, Write as _};
use std::hash::BuildHasher;
use std::io::{self, Read as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use goose_core::limits::{FRAME_SIZE_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX};
use goose_core::text::{
    self, Command, PeerList, ProbeReply, Request, StatusReply, TEXT_REPLY_SIZE_MAX,
};
use goose_core::{
    Config, Duration, Event, Instant, Member, Node, NodeId, Observed, Payload, ProposeError,
    RaftRole, SavedState, StartError, TransferError,
};
use mio::net::{UdpSocket, UnixStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use subtle::ConstantTimeEq;

use crate::client::not_goose_addr;
use crate::clock::Clock;
use crate::hooks::{HookCommands, HookRole, Hooks, Transition};
use crate::storage_file::{DataDir, DataDirError, FileStorage};

/// Datagrams read per wake-up before the loop lets timers and sends run. 1024 is far
/// above what a flock sends one node between two wake-ups (a few per peer), and bounds the
/// time one flood can keep timers from firing.
const DATAGRAMS_PER_WAKE_MAX: usize = 1024;
/// Frames sent per wake-up. The core's outbox and per-peer replication hold far fewer; the
/// bound only guards against a core bug turning into a spin.
const TRANSMITS_PER_WAKE_MAX: usize = 4096;
/// Events handled per wake-up; the core buffers at most `EVENTS_MAX` anyway.
const EVENTS_PER_WAKE_MAX: usize = 64;
/// mio readiness events taken per `poll`: one per registered source (socket, two pipes)
/// with room to spare.
const POLL_EVENTS_CAPACITY: usize = 8;
/// Reads of a signal self-pipe per wake-up. Each signal writes one byte; a burst of more
/// than this many signals between two wake-ups only needs to be seen once.
const SIGNAL_READS_PER_WAKE_MAX: usize = 16;
/// Kernel socket buffers. Peer traffic is a few datagrams per heartbeat, but probes and a
/// flood of junk can burst: 1 MiB queues about two thousand full-size datagrams.
const SOCKET_BUFFER_SIZE: usize = 1 << 20;
/// The receive buffer: larger than any valid frame or text request, so a too-long frame
/// arrives whole and is counted as too long rather than undecodable.
const RECEIVE_BUFFER_SIZE: usize = 2048;
/// `ctl transfer` requesters waiting for [`Event::TransferSent`]. The core runs one
/// transfer at a time and refuses others (`err busy`), so one waiter is the norm; when
/// full, the oldest is answered `err busy` and dropped.
const TRANSFER_WAITERS_MAX: usize = 4;
/// How long after `election_timeout_max` a `ctl transfer` requester is answered
/// `err no-target` if the core reported nothing (it always reports within
/// `election_timeout_min`; this only guards against a lost event).
const TRANSFER_REPLY_SLACK: Duration = Duration::from_millis(100);
/// The first wait between two `ctl add` requests of a joining node; it doubles up to
/// [`JOIN_RETRY_MAX`]. 100 ms: a goose answers within a round trip, and a change in
/// flight (`err busy`) commits within a few heartbeats.
const JOIN_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait between two `ctl add` requests of a joining node: a node that cannot
/// reach the flock asks every 2 s, forever (it has nothing else to do).
const JOIN_RETRY_MAX: Duration = Duration::from_millis(2_000);

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);
const CHILDREN: Token = Token(2);

/// What `goose node` runs with, checked by the CLI.
#[derive(Debug)]
pub(crate) struct Options {
    /// `--id`: required for a new node; a restart takes it from the state file.
    pub(crate) id: Option<NodeId>,
    /// `--listen`: required for a new node; a restart takes it from its own entry in the
    /// stored membership.
    pub(crate) listen: Option<SocketAddr>,
    /// The membership a new node starts from: self plus every `--peer`, all voters, or
    /// empty with `--join`. `None` when `--id` and `--listen` were not both given. Ignored
    /// once the data dir holds a state.
    pub(crate) bootstrap: Option<Vec<Member>>,
    /// Every `--peer`, to warn when a stored membership overrides them.
    pub(crate) peers: Vec<(NodeId, SocketAddr)>,
    /// `--join`: ask the member there to add this node until it is in the membership.
    pub(crate) join: Option<SocketAddr>,
    /// Timing and the voter target, validated; its `id` is replaced by the node's.
    pub(crate) config: Config,
    /// Where the state file and lock live.
    pub(crate) data_dir: PathBuf,
    /// Lets non-loopback sources send control with `token=<T>`; a joining node sends it
    /// with its `ctl add`.
    pub(crate) control_token: Option<String>,
    /// `--on-goose`, `--on-duck` and their timeout.
    pub(crate) hooks: HookCommands,
}

/// Why a node stopped running.
#[derive(Debug)]
pub(crate) enum RunError {
    /// Flags missing for what the data dir holds (exit 2, like any usage error).
    Usage(String),
    /// The socket could not be created or bound (port in use, address not local).
    Listen(SocketAddr, io::Error),
    /// The data dir is locked, unreadable or corrupt.
    DataDir(DataDirError),
    /// The core refused the configuration or the stored state.
    Start(PathBuf, StartError),
    /// The poller or a signal pipe failed.
    Poll(io::Error),
    /// Storage failed and the node fail-stopped.
    StorageFailed,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(message) => f.write_str(message),
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
            Self::Start(path, StartError::WrongNode) => write!(
                f,
                "state file {} belongs to another node id than --id; refusing to start",
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

/// The desktop node's own counters, reported by `ctl status` after the core's.
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
    /// Peer frames handed to the core.
    frames_in: u64,
    /// Their bytes.
    bytes_in: u64,
    /// Peer frames sent.
    frames_out: u64,
    /// Their bytes (UDP payload).
    bytes_out: u64,
}

impl LoopStats {
    fn counters(&self) -> [(&'static str, u64); 11] {
        [
            ("text_unknown", self.text_unknown),
            ("text_forbidden", self.forbidden),
            ("drop_partition_in", self.partition_in),
            ("drop_partition_out", self.partition_out),
            ("drop_stopped", self.stopped_in),
            ("send_errors", self.send_errors),
            ("receive_errors", self.receive_errors),
            ("peer_frames_in", self.frames_in),
            ("peer_bytes_in", self.bytes_in),
            ("peer_frames_out", self.frames_out),
            ("peer_bytes_out", self.bytes_out),
        ]
    }
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

fn add(counter: &mut u64, amount: usize) {
    *counter = counter.saturating_add(u64::try_from(amount).unwrap_or(u64::MAX));
}

/// A `ctl transfer` requester waiting for the handoff to be sent.
#[derive(Debug, Clone, Copy)]
struct TransferWaiter {
    addr: SocketAddr,
    /// When it is answered `err no-target` if the core reported nothing.
    deadline: Instant,
}

/// A node started with `--join` that is not in the membership yet.
#[derive(Debug)]
struct Join {
    /// Where to ask: any member; a duck answers with the goose's address.
    target: SocketAddr,
    /// The goose a duck named in answer to the current attempt (followed once).
    redirect: Option<SocketAddr>,
    next_attempt: Instant,
    backoff: Duration,
    attempts: u64,
}

/// Where a leaving node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// A leader waiting for its handoff to be sent, at most until `deadline`.
    Handoff { deadline: Instant },
    /// Silent; exits once no hook runs or waits.
    Draining,
}

/// Runs a node until it leaves (SIGINT, SIGTERM, or its removal: then `Ok`, every state
/// change being durable already) or fails.
///
/// # Errors
///
/// See [`RunError`]: [`RunError::Usage`] is a reason to exit 2, the others to exit 1.
pub(crate) fn run(options: Options) -> Result<(), RunError> {
    let data_dir = DataDir::open(&options.data_dir)?;
    let saved = data_dir.read_state()?;
    let id = identify(&options, &data_dir, saved.as_deref())?;
    let config = Config {
        id,
        ..options.config
    };
    let bootstrap = match (&options.bootstrap, &saved) {
        (Some(bootstrap), _) => bootstrap.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => {
            return Err(RunError::Usage(format!(
                "the data dir {} holds no state yet: a new node needs --listen (and --peer \
                 or --join)",
                options.data_dir.display()
            )))
        }
    };
    let mut clock = Clock::new();
    let node = build_node(&config, &bootstrap, &data_dir, clock.now())?;
    let listen = resolve_listen(&options, &node)?;
    if saved.is_some() {
        warn_if_membership_differs(&options, &node);
    }
    let socket = bind(listen).map_err(|error| RunError::Listen(listen, error))?;
    let signals = signal_pipe(&[signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(RunError::Poll)?;
    let children = signal_pipe(&[signal_hook::consts::SIGCHLD]).map_err(RunError::Poll)?;
    let pipes = Pipes { signals, children };
    let prepared = Prepared {
        options,
        config,
        bootstrap,
        data_dir,
        node,
        clock,
        listen,
    };
    let mut runner = prepared.start(socket, pipes)?;
    runner.run()
}

/// The node's id: the state file's if there is one (and `--id`, if given, must agree),
/// else `--id`.
fn identify(
    options: &Options,
    data_dir: &DataDir,
    saved: Option<&[u8]>,
) -> Result<NodeId, RunError> {
    let Some(bytes) = saved else {
        return options.id.ok_or_else(|| {
            RunError::Usage(format!(
                "the data dir {} holds no state yet: a new node needs --id and --listen",
                options.data_dir.display()
            ))
        });
    };
    let state = SavedState::<MEMBERS_MAX, LOG_ENTRIES_MAX>::decode(bytes)
        .map_err(|error| RunError::Start(data_dir.state_path(), StartError::State(error)))?;
    match options.id {
        Some(id) if id != state.id => Err(RunError::Start(
            data_dir.state_path(),
            StartError::WrongNode,
        )),
        _ => Ok(state.id),
    }
}

/// `--listen` if given (with a warning if the flock knows this node elsewhere), else this
/// node's address in the stored membership.
fn resolve_listen(options: &Options, node: &Node<FileStorage>) -> Result<SocketAddr, RunError> {
    let id = node.id();
    let stored = node.members().iter().find(|m| m.id == id).map(|m| m.addr);
    match (options.listen, stored) {
        (Some(listen), Some(stored)) if listen != stored => {
            log::warn!(
                "node {id}: listening on {listen} (--listen), but the flock knows this node \
                 at {stored}: peers will not reach it until it is re-added there"
            );
            Ok(listen)
        }
        (Some(listen), _) => Ok(listen),
        (None, Some(stored)) => Ok(stored),
        (None, None) => Err(RunError::Usage(format!(
            "node {id} is not in its stored membership ({}): give --listen",
            describe_members(node.members())
        ))),
    }
}

/// The two self-pipes: SIGINT/SIGTERM, and SIGCHLD (a hook ended).
struct Pipes {
    signals: UnixStream,
    children: UnixStream,
}

/// A socket that becomes readable when one of `signals` arrives (signal-hook's self-pipe:
/// the handler only writes one byte).
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
fn drain_pipe(pipe: &mut UnixStream) -> bool {
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

/// Everything the loop needs before its socket exists.
struct Prepared {
    options: Options,
    config: Config,
    bootstrap: Vec<Member>,
    data_dir: DataDir,
    node: Node<FileStorage>,
    clock: Clock,
    listen: SocketAddr,
}

struct Runner {
    config: Config,
    /// What `ctl start` rebuilds from when the data dir holds no state yet.
    bootstrap: Vec<Member>,
    listen: SocketAddr,
    control_token: Option<String>,
    data_dir: DataDir,
    socket: UdpSocket,
    pipes: Pipes,
    poll: Poll,
    clock: Clock,
    node: Node<FileStorage>,
    /// `ctl stop` was the last of stop/start, or the node is leaving.
    stopped: bool,
    partition: PeerList,
    stats: LoopStats,
    frame: [u8; FRAME_SIZE_MAX],
    receive: [u8; RECEIVE_BUFFER_SIZE],
    reply: String,
    /// The receive drain stopped at its bound with datagrams possibly left: poll again
    /// without sleeping.
    more_to_read: bool,
    hooks: Hooks,
    /// The goose status the hooks were last told about.
    was_goose: bool,
    transfer_waiters: Vec<TransferWaiter>,
    join: Option<Join>,
    exit: Option<Exit>,
}

impl Runner {
    fn run(&mut self) -> Result<(), RunError> {
        let mut events = Events::with_capacity(POLL_EVENTS_CAPACITY);
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
                self.maybe_join(now);
                self.transmit_all(now);
            }
            self.handle_events()?;
            self.check_deadlines();
            self.hooks.poll();
            if self.exit == Some(Exit::Draining) && self.hooks.is_idle() {
                log::info!("node {} term {}: exiting", self.node.id(), self.node.term());
                return Ok(());
            }
            let timeout = self.sleep_for();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(RunError::Poll(error)),
            }
            let mut signalled = false;
            for event in &events {
                match event.token() {
                    SIGNALS => signalled |= drain_pipe(&mut self.pipes.signals),
                    CHILDREN => {
                        // Reaped by hooks.poll() at the next turn.
                        drain_pipe(&mut self.pipes.children);
                    }
                    _ => {}
                }
            }
            if signalled && self.on_signal() {
                return Ok(());
            }
        }
    }

    /// How long to sleep: until the earliest deadline, not at all if the last drain was
    /// capped. A stopped node has no node deadline (only datagrams, signals and its hooks
    /// wake it).
    fn sleep_for(&mut self) -> Option<StdDuration> {
        if self.more_to_read {
            return Some(StdDuration::ZERO);
        }
        let mut deadline: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            deadline = match (deadline, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        };
        if !self.stopped {
            consider(self.node.poll_timeout());
            consider(self.join.as_ref().map(|join| join.next_attempt));
        }
        consider(self.transfer_waiters.iter().map(|w| w.deadline).min());
        if let Some(Exit::Handoff { deadline }) = self.exit {
            consider(Some(deadline));
        }
        let now = self.clock.now();
        // mio rounds up to its resolution, so this never wakes before the deadline.
        let mut sleep =
            deadline.map(|at| StdDuration::from_micros(at.saturating_since(now).micros()));
        if let Some(hook) = self.hooks.deadline() {
            let until = hook.saturating_duration_since(std::time::Instant::now());
            sleep = Some(sleep.map_or(until, |sleep| sleep.min(until)));
        }
        sleep
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
                    bump(&mut self.stats.frames_in);
                    add(&mut self.stats.bytes_in, size);
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
                if control_allowed(source, token, self.control_token.as_deref()) {
                    match command {
                        Ok(command) => self.control(source, command)?,
                        Err(error) => {
                            let _ = text::write_err(&mut self.reply, error.reason());
                        }
                    }
                } else {
                    bump(&mut self.stats.forbidden);
                    log::warn!("node {}: control from {source} refused", self.node.id());
                    let _ = text::write_err(&mut self.reply, "forbidden");
                }
                // Empty: answered later (a `ctl transfer` waits for its handoff).
                if !self.reply.is_empty() {
                    self.send_reply(source);
                }
            }
            Request::Reply => self.maybe_join_reply(source, size),
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

    /// Carries out one control command and writes its reply into `self.reply` (or leaves
    /// it empty when the reply comes later).
    fn control(&mut self, source: SocketAddr, command: Command) -> Result<(), RunError> {
        let id = self.node.id();
        match command {
            Command::Stop => {
                if !self.stopped {
                    log::info!("node {id} term {}: stopped by ctl", self.node.term());
                    self.go_silent();
                }
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Start if self.exit.is_some() => {
                let _ = text::write_err(&mut self.reply, "exiting");
            }
            Command::Start => {
                if self.stopped {
                    let now = self.clock.now();
                    // Drop the old node first: its storage must not outlive the restart.
                    self.node = build_node(&self.config, &self.bootstrap, &self.data_dir, now)?;
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
            Command::Transfer(target) => {
                if self.goose_only() {
                    self.control_transfer(source, target);
                }
            }
            Command::Add { id: new, addr } => {
                if self.goose_only() {
                    self.control_add(new, addr);
                }
            }
            Command::Remove(member) => {
                if self.goose_only() {
                    self.control_remove(member);
                }
            }
        }
        Ok(())
    }

    /// Whether this node is goose; if not, writes `err not-goose goose=… addr=…` naming
    /// the goose it follows (never itself: a leader that is not goose names none).
    fn goose_only(&mut self) -> bool {
        let now = self.clock.now();
        if !self.stopped && self.node.is_goose(now) {
            return true;
        }
        self.write_not_goose();
        false
    }

    fn write_not_goose(&mut self) {
        let now = self.clock.now();
        let id = self.node.id();
        let leader = (!self.stopped)
            .then(|| self.node.status(now).leader)
            .flatten()
            .filter(|&leader| leader != id);
        let addr = leader.and_then(|leader| self.member_addr(leader));
        let _ = text::write_not_goose(&mut self.reply, leader, addr);
    }

    /// `ctl transfer [<id>]` on the goose: starts the handoff; the requester is answered
    /// `ok to=<id>` once TimeoutNow is sent ([`Event::TransferSent`]).
    fn control_transfer(&mut self, source: SocketAddr, target: Option<NodeId>) {
        let now = self.clock.now();
        match self.node.transfer(now, target) {
            Ok(()) => {
                log::info!(
                    "node {} term {}: handing leadership to {} (ctl from {source})",
                    self.node.id(),
                    self.node.term(),
                    target
                        .map_or_else(|| "the most up-to-date voter".to_owned(), |t| t.to_string())
                );
                if self.transfer_waiters.len() >= TRANSFER_WAITERS_MAX {
                    let oldest = self.transfer_waiters.remove(0);
                    self.answer(oldest.addr, |out| text::write_err(out, "busy"));
                }
                let wait = self.config.election_timeout_max + TRANSFER_REPLY_SLACK;
                self.transfer_waiters.push(TransferWaiter {
                    addr: source,
                    deadline: now + wait,
                });
            }
            Err(error) => {
                let reason = match error {
                    TransferError::NotLeader => return self.write_not_goose(),
                    TransferError::UnknownNode => "unknown-node",
                    TransferError::NoTarget => "no-target",
                    TransferError::Busy => "busy",
                };
                let _ = text::write_err(&mut self.reply, reason);
            }
        }
    }

    /// `ctl add <id> <ip:port>` on the goose. Adding a member again at the same address is
    /// a no-op answered `ok`, so a joining node may repeat its request.
    fn control_add(&mut self, id: NodeId, addr: SocketAddr) {
        let members = self.node.members();
        if members.iter().any(|m| m.id == id && m.addr == addr) {
            let _ = text::write_ok_plain(&mut self.reply);
            return;
        }
        if members.iter().any(|m| m.id != id && m.addr == addr) {
            let _ = text::write_err(&mut self.reply, "address-in-use");
            return;
        }
        let now = self.clock.now();
        match self.node.propose(now, Payload::AddLearner { id, addr }) {
            Ok(index) => {
                log::info!(
                    "node {} term {}: adding {id} at {addr} as a learner (entry {})",
                    self.node.id(),
                    self.node.term(),
                    index.0
                );
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Err(error) => self.write_propose_error(error, "members-full"),
        }
    }

    /// `ctl remove <id>` on the goose. Removing the last voter is refused: no majority
    /// would be left to commit anything, ever.
    fn control_remove(&mut self, id: NodeId) {
        let members = self.node.members();
        let Some(member) = members.iter().find(|m| m.id == id) else {
            let _ = text::write_err(&mut self.reply, "unknown-node");
            return;
        };
        if member.voter && members.iter().filter(|m| m.voter).count() == 1 {
            let _ = text::write_err(&mut self.reply, "last-voter");
            return;
        }
        let now = self.clock.now();
        match self.node.propose(now, Payload::Remove { id }) {
            Ok(index) => {
                log::info!(
                    "node {} term {}: removing {id} (entry {})",
                    self.node.id(),
                    self.node.term(),
                    index.0
                );
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Err(error) => self.write_propose_error(error, "unknown-node"),
        }
    }

    fn write_propose_error(&mut self, error: ProposeError, invalid: &str) {
        let reason = match error {
            ProposeError::NotLeader => return self.write_not_goose(),
            // Too many uncommitted entries is as transient as a change in flight.
            ProposeError::Busy | ProposeError::LogFull => "busy",
            ProposeError::Invalid => invalid,
        };
        let _ = text::write_err(&mut self.reply, reason);
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

    /// Writes a reply with `write` and sends it to `target` (a requester answered late).
    fn answer(&mut self, target: SocketAddr, write: impl FnOnce(&mut String) -> fmt::Result) {
        self.reply.clear();
        let _ = write(&mut self.reply);
        self.send_reply(target);
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
            match self.socket.send_to(frame, transmit.addr) {
                Ok(sent) => {
                    bump(&mut self.stats.frames_out);
                    add(&mut self.stats.bytes_out, sent);
                }
                Err(error) => {
                    bump(&mut self.stats.send_errors);
                    log::debug!(
                        "node {}: send to {} ({}) failed: {error}",
                        self.node.id(),
                        transmit.target,
                        transmit.addr
                    );
                }
            }
        }
        log::warn!(
            "node {}: more than {TRANSMITS_PER_WAKE_MAX} frames in one wake-up",
            self.node.id()
        );
    }

    fn handle_events(&mut self) -> Result<(), RunError> {
        let id = self.node.id();
        for _ in 0..EVENTS_PER_WAKE_MAX {
            match self.node.poll_event() {
                None => break,
                Some(Event::Changed(observed)) => self.on_changed(&observed),
                // storage_file has logged the cause; main logs the exit.
                Some(Event::Failed) => return Err(RunError::StorageFailed),
                Some(Event::TransferSent { to }) => {
                    log::info!(
                        "node {id} term {}: handed leadership to {to}",
                        self.node.term()
                    );
                    for waiter in std::mem::take(&mut self.transfer_waiters) {
                        self.answer(waiter.addr, |out| {
                            text::write_ok(out, format_args!("to={to}"))
                        });
                    }
                    if matches!(self.exit, Some(Exit::Handoff { .. })) {
                        self.begin_drain("handoff sent");
                    }
                }
                Some(Event::TransferFailed) => {
                    log::warn!(
                        "node {id} term {}: no voter caught up for a handoff",
                        self.node.term()
                    );
                    for waiter in std::mem::take(&mut self.transfer_waiters) {
                        self.answer(waiter.addr, |out| text::write_err(out, "no-target"));
                    }
                    if matches!(self.exit, Some(Exit::Handoff { .. })) {
                        self.begin_drain("no handoff possible");
                    }
                }
                Some(Event::Removed) => {
                    log::info!(
                        "node {id} term {}: removed from the flock",
                        self.node.term()
                    );
                    self.begin_drain("removed");
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

    /// A role, goose, term or leader change: log it, tell the hooks when the goose status
    /// flipped, and settle what waited on this node leading.
    fn on_changed(&mut self, observed: &Observed) {
        log_change(self.node.id(), observed);
        if self.stopped {
            // Silent: its goose status as others see it is already settled.
            return;
        }
        if observed.goose != self.was_goose {
            self.was_goose = observed.goose;
            let role = if observed.goose {
                HookRole::Goose
            } else {
                HookRole::Duck
            };
            self.hooks.transition(Transition {
                role,
                term: observed.term,
            });
        }
        if observed.raft != RaftRole::Leader {
            self.answer_waiters_not_goose();
            if matches!(self.exit, Some(Exit::Handoff { .. })) {
                self.begin_drain("no longer leader");
            }
        }
    }

    fn answer_waiters_not_goose(&mut self) {
        for waiter in std::mem::take(&mut self.transfer_waiters) {
            self.reply.clear();
            self.write_not_goose();
            self.send_reply(waiter.addr);
        }
    }

    /// Stops taking part (`ctl stop`, or leaving): a goose that goes silent stops being
    /// goose as far as anyone can tell, so the duck hook runs.
    fn go_silent(&mut self) {
        self.stopped = true;
        if self.was_goose {
            self.was_goose = false;
            self.hooks.transition(Transition {
                role: HookRole::Duck,
                term: self.node.term(),
            });
        }
        self.answer_waiters_not_goose();
    }

    fn begin_drain(&mut self, reason: &str) {
        if self.exit == Some(Exit::Draining) {
            return;
        }
        log::info!(
            "node {} term {}: {reason}; leaving once hooks are done",
            self.node.id(),
            self.node.term()
        );
        self.go_silent();
        self.exit = Some(Exit::Draining);
    }

    /// SIGINT or SIGTERM. Returns whether to exit at once (a second signal).
    fn on_signal(&mut self) -> bool {
        let id = self.node.id();
        if self.exit.is_some() {
            log::info!("node {id}: signalled again, exiting now");
            return true;
        }
        let now = self.clock.now();
        if !self.stopped && self.node.status(now).raft == RaftRole::Leader {
            match self.node.transfer(now, None) {
                Ok(()) => {
                    log::info!(
                        "node {id} term {}: signalled; handing leadership off before exiting",
                        self.node.term()
                    );
                    let deadline = now + self.config.election_timeout_max;
                    self.exit = Some(Exit::Handoff { deadline });
                    return false;
                }
                Err(error) => log::info!("node {id}: no handoff possible ({error:?})"),
            }
        }
        self.begin_drain("signalled");
        false
    }

    /// Answers `ctl transfer` requesters nothing was reported for, and gives up a
    /// handoff that was not sent in time.
    fn check_deadlines(&mut self) {
        let now = self.clock.now();
        let (late, waiting): (Vec<_>, Vec<_>) = self
            .transfer_waiters
            .iter()
            .partition(|waiter| now >= waiter.deadline);
        self.transfer_waiters = waiting;
        for waiter in late {
            self.answer(waiter.addr, |out| text::write_err(out, "no-target"));
        }
        if let Some(Exit::Handoff { deadline }) = self.exit {
            if now >= deadline {
                self.begin_drain("handoff not sent in time");
            }
        }
    }

    /// A joining node not yet in the membership asks to be added when its next attempt is
    /// due; once the membership names it, it stops asking.
    fn maybe_join(&mut self, now: Instant) {
        let id = self.node.id();
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if self.node.members().iter().any(|m| m.id == id) {
            log::info!(
                "node {id} term {}: joined the flock after {} request(s): {}",
                self.node.term(),
                join.attempts,
                describe_members(self.node.members())
            );
            self.join = None;
            return;
        }
        if now < join.next_attempt {
            return;
        }
        join.attempts += 1;
        join.redirect = None;
        // Jitter (50–150% of the backoff) keeps many nodes joining at once from asking in
        // lock-step, each time all but one hearing `err busy`.
        let jitter = RandomState::new().hash_one(join.attempts) % 1_000;
        let wait = join.backoff.micros() / 2 + join.backoff.micros() * jitter / 1_000;
        join.next_attempt = now + Duration::from_micros(wait);
        join.backoff =
            Duration::from_micros(join.backoff.micros().saturating_mul(2)).min(JOIN_RETRY_MAX);
        let target = join.target;
        log::debug!("node {id}: asking {target} to add this node");
        self.send_join_request(target);
    }

    fn send_join_request(&mut self, target: SocketAddr) {
        let mut request = String::from("ctl");
        if let Some(token) = &self.control_token {
            let _ = write!(request, " token={token}");
        }
        let _ = write!(request, " add {} {}", self.node.id(), self.listen);
        if let Err(error) = self.socket.send_to(request.as_bytes(), target) {
            bump(&mut self.stats.send_errors);
            log::debug!(
                "node {}: join request to {target} failed: {error}",
                self.node.id()
            );
        }
    }

    /// A reply to a join request: a duck's `err not-goose … addr=<goose>` is followed once
    /// per attempt; anything else only matters for the log (the next attempt retries).
    fn maybe_join_reply(&mut self, source: SocketAddr, size: usize) {
        let id = self.node.id();
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if source != join.target && Some(source) != join.redirect {
            return;
        }
        let reply = String::from_utf8_lossy(&self.receive[..size]);
        let reply = reply.trim_end();
        let redirect = (source == join.target && join.redirect.is_none())
            .then(|| not_goose_addr(reply))
            .flatten()
            .filter(|&goose| goose != source);
        if let Some(goose) = redirect {
            join.redirect = Some(goose);
            log::debug!("node {id}: {source} is not goose; asking {goose}");
            self.send_join_request(goose);
        } else if reply == "ok" {
            log::info!("node {id}: {source} accepted the join request; waiting for the log");
        } else if reply.starts_with("err busy") || reply.starts_with("err not-goose") {
            log::debug!("node {id}: join request: {source} answered {reply:?}; will retry");
        } else {
            log::warn!("node {id}: join request: {source} answered {reply:?}; will retry");
        }
    }
}

impl Prepared {
    /// Registers the socket and the pipes, and sets up what a run keeps.
    fn start(self, mut socket: UdpSocket, mut pipes: Pipes) -> Result<Runner, RunError> {
        let Self {
            options,
            config,
            bootstrap,
            data_dir,
            node,
            clock,
            listen,
        } = self;
        let poll = Poll::new().map_err(RunError::Poll)?;
        let registry = poll.registry();
        registry
            .register(&mut socket, SOCKET, Interest::READABLE)
            .map_err(RunError::Poll)?;
        registry
            .register(&mut pipes.signals, SIGNALS, Interest::READABLE)
            .map_err(RunError::Poll)?;
        registry
            .register(&mut pipes.children, CHILDREN, Interest::READABLE)
            .map_err(RunError::Poll)?;
        let id = node.id();
        let member = node.members().iter().any(|m| m.id == id);
        log::info!(
            "node {id} term {}: listening on {listen}, data dir {}, voters target {}, \
             members {}",
            node.term(),
            options.data_dir.display(),
            config.voters_target,
            describe_members(node.members())
        );
        let join = match options.join {
            Some(_) if member => {
                log::info!("node {id}: already a member; --join not needed");
                None
            }
            Some(target) => Some(Join {
                target,
                redirect: None,
                next_attempt: Instant::ZERO,
                backoff: JOIN_RETRY_INITIAL,
                attempts: 0,
            }),
            None => {
                if !member {
                    log::warn!(
                        "node {id}: not in its own membership; waiting to be added \
                         (`ctl add {id} {listen}` on the goose, or restart with --join)"
                    );
                }
                None
            }
        };
        Ok(Runner {
            config,
            bootstrap,
            listen,
            control_token: options.control_token,
            data_dir,
            socket,
            pipes,
            poll,
            clock,
            hooks: Hooks::new(id, options.hooks),
            node,
            stopped: false,
            partition: PeerList::new(),
            stats: LoopStats::default(),
            frame: [0; FRAME_SIZE_MAX],
            receive: [0; RECEIVE_BUFFER_SIZE],
            reply: String::with_capacity(TEXT_REPLY_SIZE_MAX),
            more_to_read: false,
            was_goose: false,
            transfer_waiters: Vec::with_capacity(TRANSFER_WAITERS_MAX),
            join,
            exit: None,
        })
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

/// A fresh node from the data dir's state file, or from `bootstrap` if there is none yet.
/// It grants no vote for a minimum election timeout (lease safety).
fn build_node(
    config: &Config,
    bootstrap: &[Member],
    data_dir: &DataDir,
    now: Instant,
) -> Result<Node<FileStorage>, RunError> {
    let saved = data_dir.read_state()?;
    let seed = RandomState::new().hash_one(config.id.get());
    Node::new(
        config,
        data_dir.storage(),
        saved.as_deref(),
        bootstrap,
        seed,
        now,
    )
    .map_err(|error| RunError::Start(data_dir.state_path(), error))
}

/// `--peer` only seeds an empty data dir: say so when a stored membership overrides it
/// (compared without this node itself, which `--peer` may or may not name).
fn warn_if_membership_differs(options: &Options, node: &Node<FileStorage>) {
    if options.peers.is_empty() {
        return;
    }
    let id = node.id();
    let mut stored: Vec<(NodeId, SocketAddr)> = node
        .members()
        .iter()
        .filter(|m| m.id != id)
        .map(|m| (m.id, m.addr))
        .collect();
    let mut given: Vec<(NodeId, SocketAddr)> = options
        .peers
        .iter()
        .copied()
        .filter(|(peer, _)| *peer != id)
        .collect();
    stored.sort_unstable();
    given.sort_unstable();
    if stored != given {
        log::warn!(
            "node {id}: the data dir holds membership {}; ignoring --peer flags ({})",
            describe_members(node.members()),
            given
                .iter()
                .map(|(peer, addr)| format!("{peer}={addr}"))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
}

fn describe_members(members: &[Member]) -> String {
    if members.is_empty() {
        return "none".to_owned();
    }
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
