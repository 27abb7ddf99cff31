//! `goose node`: one [`Node`] driven by a single-threaded mio loop over one UDP socket.
//!
//! The node sits in a [`goose_core::service::Service`], which owns everything the text
//! protocol does (probe and `ctl` replies, stop/start, partitions, transfer requesters) the
//! same way on a board; this file is the socket, the clock, the data dir, hooks, `--join`
//! and leaving. Each wake-up drives the service in the order its docs give:
//!
//! 1. read the socket until `WouldBlock` (at most [`DATAGRAMS_PER_WAKE_MAX`]; mio is
//!    edge-triggered, so a capped drain wakes again at once), each datagram to
//!    [`Service::handle_datagram`] at a fresh reading of the clock ([`crate::clock`]), then
//!    [`Service::flush`]: its answer and whatever the node says leave at once;
//! 2. `now` = the clock;
//! 3. [`Service::handle_timeout`] (the node's timers, late transfer requesters); a joining
//!    node asks to be added if its next attempt is due; [`Service::flush`];
//! 4. [`Service::poll_event`]: role changes to the log and the hooks ([`crate::hooks`]), a
//!    handoff to the exit, a removal to the exit;
//! 5. sleep in `poll` until the earliest deadline (the service's, a hook's, a join
//!    attempt's, a pending handoff's): an idle node sleeps, it never spins. SIGINT/SIGTERM
//!    and SIGCHLD wake it through self-pipes.
//!
//! `ctl stop` keeps the node object only to answer `status`: nothing is fed to it and
//! nothing taken from it until `ctl start`, which rebuilds it from the state file.
//!
//! # Cluster key
//!
//! With `--cluster-key-file` the service seals every peer frame it sends and opens every
//! one it receives (`goose_core::auth`), and control must be signed. Frames are sealed
//! with this boot's epoch, read from the data dir, incremented and written durably at every
//! start before the socket is bound ([`DataDir::next_epoch`]), so a restarted node's frames
//! are never taken for replays of its previous boot's. `ctl stop` and `ctl start` keep the
//! service, and so its sealer and counter: only a new process takes a new epoch. A joining
//! node with a key asks for a nonce and signs its `ctl add`.
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
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use goose_core::auth::key::ClusterKey;
use goose_core::limits::{LOG_ENTRIES_MAX, MEMBERS_MAX};
use goose_core::ratelimit::RateLimit;
use goose_core::service::{Handled, Host, Notice, Origin, Service, TRANSMITS_PER_CALL_MAX};
use goose_core::text::{PeerRef, PARTITION_PEERS_MAX, TEXT_REPLY_SIZE_MAX};
use goose_core::{
    Config, Event, Instant, Member, Node, NodeId, Observed, RaftRole, SavedState, StartError,
};
use mio::{Events, Interest, Poll, Token};

use crate::clock::Clock;
use crate::hooks::{HookCommands, HookRole, Hooks, Transition};
use crate::key_file::KeyFile;
use crate::storage_file::{DataDir, DataDirError, FileStorage};

use self::join::{Join, Request};
use self::port::{bump, Port};
use self::signals::{drain_pipe, Pipes};

mod join;
mod port;
mod signals;

/// Datagrams read per wake-up before the loop lets timers and sends run. 1024 is far
/// above what a flock sends one node between two wake-ups (a few per peer), and bounds the
/// time one flood can keep timers from firing.
const DATAGRAMS_PER_WAKE_MAX: usize = 1024;
/// Events handled per wake-up; the service buffers at most `EVENTS_MAX` anyway.
const EVENTS_PER_WAKE_MAX: usize = 64;
/// mio readiness events taken per `poll`: one per registered source (socket, two pipes)
/// with room to spare.
const POLL_EVENTS_CAPACITY: usize = 8;

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
    /// with its `ctl add`. Ignored with a cluster key (control is signed then).
    pub(crate) control_token: Option<String>,
    /// `--cluster-key-file`: seal and open peer frames, require signed control.
    pub(crate) cluster_key: Option<KeyFile>,
    /// `--on-goose`, `--on-duck` and their timeout.
    pub(crate) hooks: HookCommands,
    /// `--reply-rate`, `--reply-burst`, `--reply-rate-total`: limits on text answers.
    pub(crate) reply_limit: RateLimit,
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
    // Durable before the socket exists, so before anything is sent (module docs); after
    // every other check, so a start refused for another reason uses up no epoch.
    let epoch = data_dir.next_epoch()?;
    let port = Port::bind(listen).map_err(|error| RunError::Listen(listen, error))?;
    let pipes = Pipes::new().map_err(RunError::Poll)?;
    let prepared = Prepared {
        options,
        config,
        bootstrap,
        data_dir,
        node,
        clock,
        listen,
        epoch,
    };
    let mut runner = prepared.start(port, pipes)?;
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
            "node {id} is not in its stored membership ({}), so it was removed (or is still \
             joining): to take part again, start it with --listen <ip:port> and add it on the \
             goose (goose ctl <goose> add {id} <ip:port>), or start it with --join",
            describe_members(node.members())
        ))),
    }
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
    /// This boot's epoch, already durable.
    epoch: u32,
}

/// The desktop node's service: the core's, at the desktop's capacities, with the board's
/// MAC type for the cluster key (built with `Service::new` when there is none).
type DesktopService = Service<
    FileStorage,
    SocketAddr,
    MEMBERS_MAX,
    LOG_ENTRIES_MAX,
    PARTITION_PEERS_MAX,
    TEXT_REPLY_SIZE_MAX,
    ClusterKey,
>;

struct Runner {
    config: Config,
    /// What `ctl start` rebuilds from when the data dir holds no state yet.
    bootstrap: Vec<Member>,
    /// `--control-token`, for the service to check.
    control_token: Option<String>,
    data_dir: DataDir,
    /// The socket, and the peer traffic `ctl status` reports.
    port: Port,
    pipes: Pipes,
    poll: Poll,
    clock: Clock,
    /// The node and its text protocol (probes, `ctl`, stop/start, partitions, transfer
    /// requesters): `goose_core::service`.
    service: DesktopService,
    /// The receive drain stopped at its bound with datagrams possibly left: poll again
    /// without sleeping.
    more_to_read: bool,
    hooks: Hooks,
    /// The goose status the hooks were last told about.
    was_goose: bool,
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
            self.service.handle_timeout(now);
            if !self.service.is_stopped() {
                self.maybe_join(now);
            }
            self.flush(now);
            self.handle_events()?;
            self.check_exit_deadline();
            self.hooks.poll();
            if self.exit == Some(Exit::Draining) && self.hooks.is_idle() {
                let node = self.service.node();
                log::info!("node {} term {}: exiting", node.id(), node.term());
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
    /// capped. A stopped node has no node deadline (only datagrams, signals, transfer
    /// requesters and its hooks wake it).
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
        consider(self.service.poll_timeout());
        if !self.service.is_stopped() {
            consider(self.join.as_ref().map(Join::next_attempt));
        }
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

    /// The service's output step: the answer to the datagram just handled, the node's
    /// frames and the late answers to transfer requesters, through the socket.
    fn flush(&mut self, now: Instant) {
        let mut out = self.port.outlet(self.service.node().id());
        if !self.service.flush(now, &mut out) {
            log::warn!(
                "node {}: more than {TRANSMITS_PER_CALL_MAX} frames in one flush",
                self.service.node().id()
            );
        }
    }

    fn receive_all(&mut self) -> Result<(), RunError> {
        self.more_to_read = true;
        for _ in 0..DATAGRAMS_PER_WAKE_MAX {
            let (source, size) = match self.port.receive() {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.more_to_read = false;
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // E.g. an ICMP error queued on the socket: count it and read on.
                    bump(&mut self.service.stats_mut().receive_errors);
                    log::debug!("node {}: receive error: {error}", self.service.node().id());
                    continue;
                }
            };
            self.handle_datagram(source, size)?;
        }
        Ok(())
    }

    /// Handles one datagram at a fresh clock reading (a probe's answer must reflect the
    /// lease at the moment it is sent, not at the start of a long drain).
    fn handle_datagram(&mut self, source: SocketAddr, size: usize) -> Result<(), RunError> {
        let mut now = self.clock.now();
        let origin = Origin {
            addr: source,
            ip: source.ip().to_canonical(),
            trusted: source.ip().to_canonical().is_loopback(),
        };
        let host = Host {
            control_token: self.control_token.as_deref(),
            counters: &self.port.counters(),
        };
        let datagram = self.port.datagram(size);
        match self.service.handle_datagram(now, origin, &host, datagram) {
            Handled::Frame => self.port.count_frame_in(size),
            Handled::Dropped => {}
            Handled::Ignored => self.maybe_join_reply(source, size),
            Handled::Transferring(target) => {
                let node = self.service.node();
                log::info!(
                    "node {} term {}: handing leadership to {} (ctl from {source})",
                    node.id(),
                    node.term(),
                    target
                        .map_or_else(|| "the most up-to-date voter".to_owned(), |t| t.to_string())
                );
            }
            Handled::Answer(notice) => self.on_notice(source, notice),
            Handled::Start => {
                // The new node starts at a fresh reading, and is flushed at it.
                now = self.clock.now();
                let node = build_node(&self.config, &self.bootstrap, &self.data_dir, now)?;
                self.service.start(node);
                log::info!(
                    "node {} term {}: started by ctl from the persisted state",
                    self.service.node().id(),
                    self.service.node().term()
                );
            }
        }
        self.flush(now);
        Ok(())
    }

    /// Logs what a control command changed; a node that went silent runs its duck hook.
    fn on_notice(&mut self, source: SocketAddr, notice: Notice) {
        let node = self.service.node();
        let (id, term) = (node.id(), node.term());
        match notice {
            Notice::None => {}
            Notice::Forbidden => log::warn!("node {id}: control from {source} refused"),
            Notice::Stopped => {
                log::info!("node {id} term {term}: stopped by ctl");
                self.went_silent();
            }
            Notice::Partitioned => log::info!(
                "node {id}: partitioned from {}",
                describe_peers(self.service.partition().as_slice())
            ),
            Notice::Healed => log::info!("node {id}: partition healed"),
            Notice::Adding {
                id: new,
                addr,
                index,
            } => log::info!(
                "node {id} term {term}: adding {new} at {addr} as a learner (entry {index})"
            ),
            Notice::Removing { id: member, index } => {
                log::info!("node {id} term {term}: removing {member} (entry {index})");
            }
        }
    }

    fn handle_events(&mut self) -> Result<(), RunError> {
        let id = self.service.node().id();
        for _ in 0..EVENTS_PER_WAKE_MAX {
            let Some(event) = self.service.poll_event() else {
                break;
            };
            let term = self.service.node().term();
            match event {
                Event::Changed(observed) => self.on_changed(&observed),
                // storage_file has logged the cause; main logs the exit.
                Event::Failed => return Err(RunError::StorageFailed),
                Event::TransferSent { to } => {
                    log::info!("node {id} term {term}: handed leadership to {to}");
                    if matches!(self.exit, Some(Exit::Handoff { .. })) {
                        self.begin_drain("handoff sent");
                    }
                }
                Event::TransferFailed => {
                    log::warn!("node {id} term {term}: no voter caught up for a handoff");
                    if matches!(self.exit, Some(Exit::Handoff { .. })) {
                        self.begin_drain("no handoff possible");
                    }
                }
                Event::Removed => {
                    log::info!("node {id} term {term}: removed from the flock");
                    self.begin_drain("removed");
                }
            }
        }
        // Belt and braces: a failed node has no deadline, so if its Failed event were ever
        // lost (pushed out of the service's queue) the loop would sleep forever instead of
        // exiting.
        if self.service.node().status(self.clock.now()).failed {
            return Err(RunError::StorageFailed);
        }
        Ok(())
    }

    /// A role, goose, term or leader change: log it, tell the hooks when the goose status
    /// flipped, and settle a handoff that waited on this node leading. (The service has
    /// answered `ctl transfer` requesters already.)
    fn on_changed(&mut self, observed: &Observed) {
        log_change(self.service.node().id(), observed);
        if self.service.is_stopped() {
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
        if observed.raft != RaftRole::Leader && matches!(self.exit, Some(Exit::Handoff { .. })) {
            self.begin_drain("no longer leader");
        }
    }

    /// The node stopped taking part (`ctl stop`, or leaving): a goose that goes silent
    /// stops being goose as far as anyone can tell, so the duck hook runs.
    fn went_silent(&mut self) {
        if self.was_goose {
            self.was_goose = false;
            self.hooks.transition(Transition {
                role: HookRole::Duck,
                term: self.service.node().term(),
            });
        }
    }

    fn begin_drain(&mut self, reason: &str) {
        if self.exit == Some(Exit::Draining) {
            return;
        }
        log::info!(
            "node {} term {}: {reason}; leaving once hooks are done",
            self.service.node().id(),
            self.service.node().term()
        );
        self.service.leave();
        self.went_silent();
        // Transfer requesters hear `err not-goose` now, not at the next datagram.
        let now = self.clock.now();
        self.flush(now);
        self.exit = Some(Exit::Draining);
    }

    /// SIGINT or SIGTERM. Returns whether to exit at once (a second signal).
    fn on_signal(&mut self) -> bool {
        let id = self.service.node().id();
        if self.exit.is_some() {
            log::info!("node {id}: signalled again, exiting now");
            return true;
        }
        let now = self.clock.now();
        if !self.service.is_stopped() && self.service.node().status(now).raft == RaftRole::Leader {
            match self.service.node_mut().transfer(now, None) {
                Ok(()) => {
                    log::info!(
                        "node {id} term {}: signalled; handing leadership off before exiting",
                        self.service.node().term()
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

    /// Gives up a handoff that was not sent in time.
    fn check_exit_deadline(&mut self) {
        if let Some(Exit::Handoff { deadline }) = self.exit {
            if self.clock.now() >= deadline {
                self.begin_drain("handoff not sent in time");
            }
        }
    }

    /// A joining node not yet in the membership asks to be added when its next attempt is
    /// due; once the membership names it, it stops asking.
    fn maybe_join(&mut self, now: Instant) {
        let node = self.service.node();
        let id = node.id();
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if node.members().iter().any(|m| m.id == id) {
            log::info!(
                "node {id} term {}: joined the flock after {} request(s): {}",
                node.term(),
                join.attempts(),
                describe_members(node.members())
            );
            self.join = None;
            return;
        }
        if let Some(request) = join.poll_request(now) {
            self.send_join_request(&request);
        }
    }

    /// A datagram that is itself a reply: the join client's, if it answers its request.
    fn maybe_join_reply(&mut self, source: SocketAddr, size: usize) {
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if let Some(request) = join.handle_reply(source, self.port.datagram(size)) {
            self.send_join_request(&request);
        }
    }

    fn send_join_request(&mut self, request: &Request) {
        let target = request.target;
        if let Err(error) = self.port.send_to(request.text.as_bytes(), target) {
            bump(&mut self.service.stats_mut().send_errors);
            let id = self.service.node().id();
            log::debug!("node {id}: join request to {target} failed: {error}");
        }
    }
}

impl Prepared {
    /// Registers the socket and the pipes, and sets up what a run keeps.
    fn start(self, mut port: Port, mut pipes: Pipes) -> Result<Runner, RunError> {
        let Self {
            options,
            config,
            bootstrap,
            data_dir,
            node,
            clock,
            listen,
            epoch,
        } = self;
        let poll = Poll::new().map_err(RunError::Poll)?;
        let registry = poll.registry();
        port.register(registry, SOCKET).map_err(RunError::Poll)?;
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
        log_authentication(id, &options, epoch);
        let join = match options.join {
            Some(_) if member => {
                log::info!("node {id}: already a member; --join not needed");
                None
            }
            Some(target) => Some(Join::new(
                target,
                id,
                listen,
                options.control_token.clone(),
                options.cluster_key.as_ref().map(|file| file.key.clone()),
            )),
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
        let mut service = match options.cluster_key {
            Some(file) => Service::with_key(node, file.key, epoch),
            None => Service::new(node),
        };
        service.set_rate_limit(options.reply_limit);
        Ok(Runner {
            config,
            bootstrap,
            control_token: options.control_token,
            data_dir,
            port,
            pipes,
            poll,
            clock,
            hooks: Hooks::new(id, options.hooks),
            service,
            more_to_read: false,
            was_goose: false,
            join,
            exit: None,
        })
    }
}

/// One line saying whether peer frames are authenticated (never the key itself).
fn log_authentication(id: NodeId, options: &Options, epoch: u32) {
    let Some(file) = &options.cluster_key else {
        log::info!(
            "node {id}: peer authentication off (no --cluster-key-file): anyone who can send \
             UDP to this port can forge votes and heartbeats; boot epoch {epoch}"
        );
        return;
    };
    log::info!(
        "node {id}: peer authentication on (cluster key from {}), signed control only; boot \
         epoch {epoch}",
        file.path.display()
    );
    if options.control_token.is_some() {
        log::warn!(
            "node {id}: --control-token is ignored with --cluster-key-file: every control \
             datagram must be signed"
        );
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

fn describe_peers(peers: &[PeerRef]) -> String {
    if peers.is_empty() {
        return "nobody".to_owned();
    }
    let mut text = String::new();
    for (index, peer) in peers.iter().enumerate() {
        let separator = if index == 0 { "" } else { "," };
        let _ = match peer {
            PeerRef::Id(id) => write!(text, "{separator}{id}"),
            PeerRef::Addr(addr) => write!(text, "{separator}{addr}"),
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
