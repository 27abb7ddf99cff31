//! `goose node`: one [`Node`] driven by a single-threaded mio loop over one UDP port.
//!
//! The node sits in a [`goose_core::service::Service`], which owns everything the text
//! protocol does (probe and `ctl` replies, stop/start, partitions, transfer requesters) the
//! same way on a board; this module is the socket, the clock, the data dir, hooks, `--join`
//! and leaving:
//!
//! - this file: the options, starting (the data dir, the node's id and address, the boot
//!   epoch) and why a run ends ([`RunError`]);
//! - `runner`: the loop below, the events, the hooks, the `--exec` child and the health
//!   check ([`crate::exec`], [`crate::check`]), leaving;
//! - `port`: the UDP port (two sockets: peer frames, text), its traffic counters;
//! - `mmsg`: datagrams in batches, one `recvmmsg`/`sendmmsg` per batch;
//! - `join`: the `--join` client;
//! - `heard`: when each member was last heard from, and the warning when one goes quiet;
//! - `rails`: warnings against duplicate ids and a member without the flock's key;
//! - `signals`: the SIGINT/SIGTERM, SIGHUP and SIGCHLD self-pipes;
//! - `memory`: what start-up used, given back before the loop runs.
//!
//! Each wake-up drives the service in the order its docs give:
//!
//! 1. read the port in batches of up to 32 datagrams, the peer socket first and again
//!    after every batch of text, until both are drained (at most `DATAGRAMS_PER_WAKE_MAX`,
//!    1024; mio is edge-triggered, so a capped drain wakes again at once), each datagram to
//!    `Service::handle_datagram` at a fresh reading of the clock ([`crate::clock`]), then
//!    `Service::flush` into the port's send queue: a batch's answers and whatever the node
//!    says leave together, in one `sendmmsg`, as soon as the batch is handled;
//! 2. `now` = the clock;
//! 3. `Service::handle_timeout` (the node's timers, late transfer requesters); a joining
//!    node asks to be added if its next attempt is due; `Service::flush`;
//! 4. `Service::poll_event`: role changes to the log and the hooks ([`crate::hooks`]), a
//!    handoff to the exit, a removal to the exit;
//! 5. the health check's result, the lease rule for the `--exec` child (hold it, let it go,
//!    or step down on a lapsing lease), and the release of a held handoff once the child and
//!    the hooks are done; `Service::flush` again if any of them made the node speak;
//! 6. sleep in `poll` until the earliest deadline (the service's, a hook's, the child's, the
//!    lease rule's, the check's, a join attempt's, a pending handoff's): an idle node sleeps,
//!    it never spins. SIGINT/SIGTERM, SIGHUP and SIGCHLD wake it through self-pipes.
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
//! A node whose storage fails ([`goose_core::Event::Failed`]) stops its `--exec` child and
//! runs its duck hook (best effort, each bounded), then makes [`run`] return an error: the
//! process exits 1 (fail-stop).
//!
//! # Leaving
//!
//! SIGINT or SIGTERM on a leader starts a leadership transfer (dissertation §3.10): it
//! answers duck at once, stops its `--exec` child and runs its duck hook, brings the most
//! up-to-date healthy voter level, sends it TimeoutNow once the child and the hook have
//! ended (the transfer is held until then), and exits 0 once that frame has left (or once
//! the transfer failed, at most the hold and `election_timeout_max` later). Any other node
//! exits 0 at once. A node whose removal
//! committed ([`goose_core::Event::Removed`]) exits 0 too. Before exiting, a node goes
//! silent (as with `ctl stop`) and lets its hooks finish (each bounded by the hook
//! timeout); a second signal exits at once.

use std::collections::hash_map::RandomState;
use std::fmt::{self, Write as _};
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use goose_core::limits::{LOG_ENTRIES_MAX, MEMBERS_MAX};
use goose_core::ratelimit::RateLimit;
use goose_core::{Config, Instant, Member, Node, NodeId, SavedState, StartError};

use crate::check::CheckCommand;
use crate::clock::Clock;
use crate::hooks::HookCommands;
use crate::key_file::KeyFile;
use crate::storage_file::{DataDir, DataDirError, FileStorage};
use crate::vip::{self, Vip, Vips};

use self::port::Port;
use self::signals::Pipes;

mod heard;
mod join;
mod memory;
mod mmsg;
mod port;
mod rails;
mod runner;
mod signals;

/// What `goose node` runs with, checked by the CLI.
pub(crate) struct Options {
    /// `--id`: required for a new node; a restart takes it from the state file.
    pub(crate) id: Option<NodeId>,
    /// `--listen`: required for a new node; a restart takes it from its own entry in the
    /// stored membership.
    pub(crate) listen: Option<SocketAddr>,
    /// `--advertise`: where peers reach this node, if not at `--listen` (required with an
    /// unspecified `--listen`). What the membership stores and `--join` asks for.
    pub(crate) advertise: Option<SocketAddr>,
    /// The membership a new node starts from: self plus every `--peer`, all voters, or
    /// empty with `--join`. `None` when `--id` and `--listen` were not both given. Ignored
    /// once the data dir holds a state.
    pub(crate) bootstrap: Option<Vec<Member>>,
    /// Every `--peer`, to warn when a stored membership overrides them.
    pub(crate) peers: Vec<(NodeId, SocketAddr)>,
    /// `--join`, each given: ask them, in turn, to add this node until it is in the
    /// membership.
    pub(crate) join: Vec<SocketAddr>,
    /// `--single`: a new node with neither `--peer` nor `--join` may form a flock of one.
    pub(crate) single: bool,
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
    /// `--http`: serve status, metrics, health and a page there ([`crate::http`]).
    pub(crate) http: Option<SocketAddr>,
    /// `--exec` and its grace (checked against the timing).
    pub(crate) exec: Option<ExecOptions>,
    /// `--check`, its interval and failures.
    pub(crate) check: Option<CheckCommand>,
    /// `--vip` on `--vip-dev`: addresses held only while goose ([`crate::vip`]).
    pub(crate) vips: Vec<Vip>,
    /// What SIGHUP does: read the config file again (`None` without `--config`).
    pub(crate) reload: Option<Reload>,
}

/// `--exec <cmd>` and `--exec-grace-ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExecOptions {
    /// The command, run with `sh -c` only while the node is goose.
    pub(crate) command: String,
    /// From SIGTERM to SIGKILL, and the lease left at which SIGTERM is sent.
    pub(crate) grace: goose_core::Duration,
}

/// What a reload may change while the node runs: what nothing else depends on.
#[derive(Debug)]
pub(crate) struct Reloaded {
    /// `--on-goose`, `--on-duck`, `--hook-timeout-ms`.
    pub(crate) hooks: HookCommands,
    /// `--check` and its settings.
    pub(crate) check: Option<CheckCommand>,
    /// The reply limits.
    pub(crate) reply_limit: RateLimit,
    /// `--control-token`, `--control-token-file`.
    pub(crate) control_token: Option<String>,
    /// Settings that changed but take effect only at the next start (their flag names).
    pub(crate) ignored: Vec<String>,
}

/// Reads the configuration again (SIGHUP): what changed, or why it cannot be used.
pub(crate) type Reload = Box<dyn FnMut() -> Result<Reloaded, String>>;

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("id", &self.id)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("join", &self.join)
            .field("data_dir", &self.data_dir)
            .field("exec", &self.exec)
            .field("check", &self.check)
            .field("vips", &self.vips)
            .finish_non_exhaustive()
    }
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
    /// `--http`'s address could not be bound.
    Http(SocketAddr, io::Error),
    /// `--vip` cannot be honoured: capabilities, sockets, an interface, a stale address
    /// that cannot be removed.
    Vip(String),
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
            Self::Http(addr, error) => write!(f, "cannot serve --http on {addr}: {error}"),
            Self::Vip(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for RunError {}

impl From<DataDirError> for RunError {
    fn from(error: DataDirError) -> Self {
        Self::DataDir(error)
    }
}

/// Runs a node until it leaves (SIGINT, SIGTERM, or its removal: then `Ok`, every state
/// change being durable already) or fails.
///
/// # Errors
///
/// See [`RunError`]: [`RunError::Usage`] is a reason to exit 2, the others to exit 1.
pub(crate) fn run(options: Options) -> Result<(), RunError> {
    // Nothing the node starts inherits what a unit grants for `--vip`.
    vip::keep_capabilities_to_itself();
    if !options.vips.is_empty() {
        vip::check_capabilities().map_err(RunError::Vip)?;
    }
    let mut runner = start(options)?;
    // Start-up's frames have returned: what they used is given back before the loop.
    memory::release_start_up();
    runner.run()
}

/// Everything before the loop: the data dir, the node, the boot epoch, the port. Out of
/// line, so that its frames are gone before the loop runs ([`memory`]).
#[inline(never)]
fn start(options: Options) -> Result<runner::Runner, RunError> {
    let data_dir = DataDir::open(&options.data_dir)?;
    let saved = data_dir.read_state()?;
    let id = identify(&options, &data_dir, saved.as_deref())?;
    let config = Config {
        id,
        ..options.config
    };
    let alone = options.peers.is_empty() && options.join.is_empty();
    if saved.is_none() && options.bootstrap.is_some() && alone && !options.single {
        return Err(RunError::Usage(format!(
            "a new node with neither --peer nor --join would be a flock of one, goose by \
             itself (the data dir {} holds no state): give every node of the flock the same \
             --peer list, or --join a member; --single if this one node is the whole flock",
            options.data_dir.display()
        )));
    }
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
    let (listen, advertised) = resolve_listen(&options, &node)?;
    if saved.is_some() {
        warn_if_membership_differs(&options, &node);
    }
    let vips = open_vips(&options, id, listen, advertised)?;
    // Durable before the socket exists, so before anything is sent (module docs); after
    // every other check, so a start refused for another reason uses up no epoch.
    let epoch = data_dir.next_epoch()?;
    let port = Port::bind(listen).map_err(|error| RunError::Listen(listen, error))?;
    let pipes = Pipes::new().map_err(RunError::Poll)?;
    let http = match options.http {
        Some(addr) => Some(crate::http::serve(addr, listen).map_err(|e| RunError::Http(addr, e))?),
        None => None,
    };
    let prepared = Prepared {
        options,
        config,
        bootstrap,
        data_dir,
        node,
        clock,
        listen,
        advertised,
        epoch,
        vips,
    };
    prepared.start(port, pipes, http)
}

/// `--vip`'s addresses, before the node opens its socket: checked (not the node's own
/// address, interfaces that exist), and removed wherever an earlier run that died as goose
/// left them.
fn open_vips(
    options: &Options,
    id: NodeId,
    listen: SocketAddr,
    advertised: SocketAddr,
) -> Result<Option<Vips>, RunError> {
    if options.vips.is_empty() {
        return Ok(None);
    }
    let own = [listen.ip(), advertised.ip()];
    if let Some(message) = vip::refuse_own_address(&options.vips, &own) {
        return Err(RunError::Usage(message));
    }
    let mut vips = Vips::open(id, options.vips.clone()).map_err(RunError::Vip)?;
    vips.remove_stale().map_err(RunError::Vip)?;
    Ok(Some(vips))
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

/// Where to bind and where peers reach this node: `--listen` and `--advertise` if given
/// (with a warning if the flock knows this node elsewhere), else this node's address in the
/// stored membership.
fn resolve_listen(
    options: &Options,
    node: &Node<FileStorage>,
) -> Result<(SocketAddr, SocketAddr), RunError> {
    let id = node.id();
    let stored = node.members().iter().find(|m| m.id == id).map(|m| m.addr);
    let given = options.advertise.or(options.listen);
    let advertised = match (given, stored) {
        (Some(given), Some(stored)) if given != stored => {
            log::warn!(
                "node {id}: peers should reach this node at {given} (--listen/--advertise), \
                 but the flock knows it at {stored}: they will not reach it there until it is \
                 removed (goose ctl <goose> remove {id}) and joins again (--join)"
            );
            given
        }
        (Some(given), _) => given,
        (None, Some(stored)) => stored,
        (None, None) => {
            return Err(RunError::Usage(format!(
                "node {id} is not in its stored membership ({}), so it was removed (or is still \
             joining): to take part again, start it with --listen <ip:port> and add it on the \
             goose (goose ctl <goose> add {id} <ip:port>), or start it with --join",
                describe_members(node.members())
            )))
        }
    };
    let bind = options.listen.unwrap_or(advertised);
    Ok((bind, advertised))
}

/// Everything the loop needs before its socket exists.
struct Prepared {
    options: Options,
    config: Config,
    bootstrap: Vec<Member>,
    data_dir: DataDir,
    /// Boxed, as everything large a run keeps: each big value is built in the frame of
    /// the function that makes it, and those frames do not pile up on one stack.
    node: Box<Node<FileStorage>>,
    clock: Clock,
    /// Where the socket binds.
    listen: SocketAddr,
    /// Where peers reach this node (`--advertise`, else `listen`).
    advertised: SocketAddr,
    /// This boot's epoch, already durable.
    epoch: u32,
    /// `--vip`'s addresses, none held (stale ones removed).
    vips: Option<Vips>,
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
///
/// Out of line, and the node boxed: its frame (the node, the state read, the decoding)
/// is gone once it returns, rather than part of a caller's that stays on the stack.
#[inline(never)]
fn build_node(
    config: &Config,
    bootstrap: &[Member],
    data_dir: &DataDir,
    now: Instant,
) -> Result<Box<Node<FileStorage>>, RunError> {
    let saved = data_dir.read_state()?;
    let seed = RandomState::new().hash_one(config.id.get());
    let node = Node::new(
        config,
        data_dir.storage(),
        saved.as_deref(),
        bootstrap,
        seed,
        now,
    )
    .map_err(|error| RunError::Start(data_dir.state_path(), error))?;
    Ok(Box::new(node))
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
