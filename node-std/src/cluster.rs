//! `goose cluster`: launches a local flock of `goose node` processes and keeps a live view
//! of who is goose: on a terminal the dashboard ([`crate::dashboard`]), elsewhere one line
//! per change (the output scripts and tests read).
//!
//! The children are this same executable, and with `--boards <m>`, for the `m` highest ids,
//! QEMU running the board firmware ([`crate::board`]; the launcher holds each board's data
//! dir lock). Each child gets `PR_SET_PDEATHSIG = SIGKILL`, so a launcher killed with
//! SIGKILL does not leave them behind, and its own process group, so Ctrl-C in a terminal
//! reaches the launcher alone.
//!
//! - **SIGINT or SIGTERM** to the launcher stops the flock and exits 0: first every duck
//!   (SIGTERM; a duck exits at once), then the goose. Why the goose last: nobody is left to
//!   hand off to in a full shutdown, so a goose stopped first would only cause one more
//!   election (and a term on every disk) among nodes about to stop too; stopped last, the
//!   flock keeps one truthful goose until its lease runs out. Children still running
//!   [`STOP_GRACE`] after their SIGTERM are killed.
//! - **SIGHUP** restarts every node one by one ([`rolling_restart`]): ducks first, the goose
//!   last, so exactly one handoff happens; each node gets SIGTERM (a goose hands off before
//!   it exits) and is started again with `goose node --data-dir <dir>/<id>` alone (its id,
//!   address and membership come from its state); a board's QEMU is stopped and started
//!   again on its state file (a board goose does not hand off: the flock elects another).
//!   The next node waits until the restarted one answers again and follows a goose.
//!   To the dashboard, SIGHUP is its terminal closing: it stops the flock as `q` does.

use std::fmt;
use std::io::{self, IsTerminal};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use goose_client::Flock;
use goose_core::text::ProbeReply;
use goose_core::{Config, Member, NodeId};

use crate::board::{self, BoardError, BoardSpec};
use crate::storage_file::DataDir;

/// Set once the launcher's standard output is gone (`goose cluster | head` closed the
/// pipe): the launcher then stops the flock, as on SIGTERM, and exits 0.
static OUTPUT_LOST: AtomicBool = AtomicBool::new(false);

/// `println!` that never panics: a line that cannot be written sets [`OUTPUT_LOST`].
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            OUTPUT_LOST.store(true, Ordering::SeqCst);
        }
    }};
}

/// How often the live view probes every node.
const VIEW_INTERVAL: Duration = Duration::from_millis(100);
/// How often a rolling restart checks on the node it waits for (and updates the view).
const ROLLING_INTERVAL: Duration = Duration::from_millis(10);
/// How long one round of probes waits for replies.
const VIEW_PROBE_TIMEOUT: Duration = Duration::from_millis(80);
/// How long children get to exit after SIGTERM before they are killed. A goose's handoff
/// takes at most an election timeout; its hooks may take longer, and are killed with it.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often a stopping launcher checks whether its children have exited.
const STOP_POLL: Duration = Duration::from_millis(5);
/// How long a rolling restart waits for the flock to have a goose before it takes the next
/// node down, and for a restarted node to answer and follow a goose. Elections take a few
/// election timeouts at worst (default 150–300 ms); 10 s is generous. When it passes, the
/// rolling restart stops rather than take more nodes down.
const ROLLING_WAIT_MAX: Duration = Duration::from_secs(10);

/// What to launch.
#[derive(Debug)]
pub(crate) struct Options {
    /// Node count: ids 1..=nodes.
    pub(crate) nodes: u16,
    /// Node `i` listens on 127.0.0.1:`base_port + i - 1`.
    pub(crate) base_port: u16,
    /// Node `i` keeps its state in `data_dir/i`.
    pub(crate) data_dir: PathBuf,
    /// `--cluster-key-file`, checked by the CLI, passed to every child: a node's command
    /// line ([`Options::key_flags`]), a board's spec.
    pub(crate) cluster_key_file: Option<PathBuf>,
    /// `--heartbeat-ms …` and `--election-timeout-ms …`, passed to every child.
    pub(crate) timing_flags: Vec<String>,
    /// The same timing, for the boards' command lines.
    pub(crate) timing: Config,
    /// How many of the nodes (the highest ids) are boards.
    pub(crate) boards: u16,
    /// The boards' firmware.
    pub(crate) firmware: PathBuf,
    /// The cluster key itself, for the dashboard's signed `ctl` commands.
    pub(crate) cluster_key: Option<goose_core::auth::key::ClusterKey>,
}

impl Options {
    /// `--cluster-key-file <f>` if the flock has a key, for the nodes' command lines (at
    /// start and at a rolling restart). A board gets the same file through its
    /// [`BoardSpec`] (the firmware reads it itself, see [`crate::board`]).
    fn key_flags(&self) -> Vec<std::ffi::OsString> {
        match &self.cluster_key_file {
            Some(path) => vec!["--cluster-key-file".into(), path.clone().into_os_string()],
            None => Vec::new(),
        }
    }
}

/// Why the launcher failed.
#[derive(Debug)]
pub(crate) enum ClusterError {
    /// The launcher's own path or its signal handlers could not be set up.
    Setup(io::Error),
    /// A child could not be spawned.
    Spawn(u16, io::Error),
    /// A board cannot run (no firmware or QEMU, its data dir locked, …).
    Board(u16, BoardError),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Setup(error) => write!(f, "cannot start: {error}"),
            Self::Spawn(id, error) => write!(f, "cannot spawn node {id}: {error}"),
            Self::Board(id, error) => write!(f, "board {id}: {error}"),
        }
    }
}

impl std::error::Error for ClusterError {}

/// One child of the launcher: a `goose node`, or a board's QEMU.
pub(crate) struct Launched {
    pub(crate) id: u16,
    pub(crate) addr: SocketAddr,
    data_dir: PathBuf,
    kind: Kind,
    /// `None` once it has exited and been reaped.
    pub(crate) child: Option<Child>,
}

/// What a child runs.
enum Kind {
    /// `goose node`.
    Node,
    /// QEMU with the board firmware.
    Board {
        /// Boxed: the spec is large, and a flock has a handful of boards.
        spec: Box<BoardSpec>,
        qemu: PathBuf,
        /// The board's data dir, locked by the launcher for the board.
        _lock: DataDir,
    },
}

impl Launched {
    /// Where a dashboard sends the child's output: `node.log` in its data dir.
    pub(crate) fn log_path(&self) -> PathBuf {
        self.data_dir.join("node.log")
    }

    /// `node` or `board`, as the launcher's lines say.
    pub(crate) fn label(&self) -> &'static str {
        match self.kind {
            Kind::Node => "node",
            Kind::Board { .. } => "board",
        }
    }
}

/// The launcher's signals, set by handlers and read by the loop.
struct Flags {
    stop: Arc<AtomicBool>,
    rolling: Arc<AtomicBool>,
}

/// Runs the flock until SIGINT or SIGTERM, then stops every child.
///
/// # Errors
///
/// If signal handlers cannot be installed or a child cannot be spawned (the children
/// already spawned are stopped first).
pub(crate) fn run(options: &Options) -> Result<(), ClusterError> {
    let flags = Flags {
        stop: Arc::new(AtomicBool::new(false)),
        rolling: Arc::new(AtomicBool::new(false)),
    };
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&flags.stop))
            .map_err(ClusterError::Setup)?;
    }
    // A person at a terminal gets the dashboard; a pipe, CI or a test the lines below.
    let dashboard = io::stdout().is_terminal() && io::stdin().is_terminal();
    // SIGHUP: to a launcher without a terminal, a rolling restart; to the dashboard, its
    // terminal closing, which stops the flock.
    let hangup = if dashboard {
        &flags.stop
    } else {
        &flags.rolling
    };
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(hangup))
        .map_err(ClusterError::Setup)?;
    let executable = std::env::current_exe().map_err(ClusterError::Setup)?;
    let mut nodes = plan(options)?;
    let peers: Vec<String> = nodes
        .iter()
        .map(|node| format!("{}={}", node.id, node.addr))
        .collect();
    for index in 0..nodes.len() {
        let node = &nodes[index];
        let mut command = match &node.kind {
            Kind::Node => {
                let mut command = Command::new(&executable);
                command
                    .arg("node")
                    .arg("--id")
                    .arg(node.id.to_string())
                    .arg("--listen")
                    .arg(node.addr.to_string())
                    .arg("--data-dir")
                    .arg(&node.data_dir)
                    .args(&options.timing_flags)
                    .args(options.key_flags());
                for (peer, flag) in nodes.iter().zip(&peers) {
                    if peer.id != node.id {
                        command.arg("--peer").arg(flag);
                    }
                }
                if nodes.len() == 1 {
                    // A node without --peer must say it is a flock of one.
                    command.arg("--single");
                }
                command
            }
            Kind::Board { spec, qemu, .. } => {
                match spec.command(qemu, board::fresh_seed(spec.config.id)) {
                    Ok(command) => command,
                    Err(error) => {
                        let id = node.id;
                        stop_all(&mut nodes);
                        return Err(ClusterError::Board(id, error));
                    }
                }
            }
        };
        if let Err(error) = spawn(&mut nodes[index], &mut command, dashboard) {
            let id = nodes[index].id;
            stop_all(&mut nodes);
            return Err(ClusterError::Spawn(id, error));
        }
    }
    if dashboard {
        let restart = Restart {
            executable: &executable,
            timing_flags: &options.timing_flags,
            key_flags: &options.key_flags(),
            stop: &flags.stop,
        };
        let shown = crate::dashboard::run(&mut nodes, &restart, options.cluster_key.as_ref());
        stop_all(&mut nodes);
        return shown.map_err(ClusterError::Setup);
    }
    say!(
        "launcher pid {}: SIGHUP restarts every node one by one; SIGINT or SIGTERM stops \
         the flock",
        std::process::id()
    );
    let mut view = View::new(&nodes);
    while !flags.stop.load(Ordering::SeqCst) && !OUTPUT_LOST.load(Ordering::SeqCst) {
        let round = Instant::now();
        if flags.rolling.swap(false, Ordering::SeqCst) {
            let restart = Restart {
                executable: &executable,
                timing_flags: &options.timing_flags,
                key_flags: &options.key_flags(),
                stop: &flags.stop,
            };
            match rolling_restart(&mut nodes, &mut view, &restart) {
                Ok(took) => say!(
                    "{} rolling restart done in {:.3}s",
                    view.stamp(),
                    took.as_secs_f64()
                ),
                Err(why) => say!("{} rolling restart stopped: {why}", view.stamp()),
            }
            continue;
        }
        view.refresh(&mut nodes);
        std::thread::sleep(VIEW_INTERVAL.saturating_sub(round.elapsed()));
    }
    stop_all(&mut nodes);
    Ok(())
}

/// The children to launch: ids 1..=n on consecutive ports, the last `boards` of them
/// boards (checked, with their data dirs created and locked by the launcher).
fn plan(options: &Options) -> Result<Vec<Launched>, ClusterError> {
    let first_board = options.nodes.saturating_sub(options.boards) + 1;
    let addr_of = |id: u16| {
        let port = options.base_port.saturating_add(id - 1);
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    };
    let members: Vec<Member> = (1..=options.nodes)
        .filter_map(|id| {
            Some(Member {
                id: NodeId::new(id)?,
                addr: addr_of(id),
                voter: true,
            })
        })
        .collect();
    let qemu = match options.boards {
        0 => None,
        _ => Some(
            board::check_tools(&options.firmware)
                .map_err(|e| ClusterError::Board(first_board, e))?,
        ),
    };
    let mut nodes = Vec::with_capacity(usize::from(options.nodes));
    for id in 1..=options.nodes {
        let addr = addr_of(id);
        let data_dir = options.data_dir.join(id.to_string());
        let kind = match (&qemu, NodeId::new(id)) {
            (Some(qemu), Some(node_id)) if id >= first_board => {
                let spec = BoardSpec {
                    config: Config {
                        id: node_id,
                        ..options.timing
                    },
                    port: addr.port(),
                    members: members.clone(),
                    data_dir: data_dir.clone(),
                    firmware: options.firmware.clone(),
                    control_token: None,
                    cluster_key_file: options.cluster_key_file.clone(),
                };
                let board_error = |error| ClusterError::Board(id, error);
                spec.check().map_err(board_error)?;
                let lock = DataDir::open(&data_dir)
                    .map_err(|error| board_error(BoardError::DataDir(error)))?;
                Kind::Board {
                    spec: Box::new(spec),
                    qemu: qemu.clone(),
                    _lock: lock,
                }
            }
            _ => Kind::Node,
        };
        nodes.push(Launched {
            id,
            addr,
            data_dir,
            kind,
            child: None,
        });
    }
    Ok(nodes)
}

/// Spawns `command` for `node` in its own process group and prints `node <id> <ip:port> pid
/// <pid>` (`board …` for a board, with QEMU's pid). Its own group: Ctrl-C in a terminal
/// then reaches the launcher alone, which stops the flock in its order (a goose that got
/// the SIGINT too would hand off to a duck that is leaving, costing a term). With a
/// dashboard, the child's output goes to `node.log` in its data dir instead of the
/// terminal, and the line to the dashboard.
fn spawn(node: &mut Launched, command: &mut Command, quiet: bool) -> io::Result<()> {
    set_parent_death_signal(command);
    command.process_group(0);
    if quiet {
        std::fs::create_dir_all(&node.data_dir)?;
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(node.log_path())?;
        command.stdout(log.try_clone()?).stderr(log);
        command.stdin(std::process::Stdio::null());
    }
    let child = command.spawn()?;
    if !quiet {
        say!(
            "{} {} {} pid {}",
            node.label(),
            node.id,
            node.addr,
            child.id()
        );
    }
    node.child = Some(child);
    Ok(())
}

/// Kills the child with SIGKILL when its parent (the launcher, or `goose board`) dies,
/// however it dies.
pub(crate) fn set_parent_death_signal(command: &mut Command) {
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

/// The live view: one line per change of goose or term, one per child that exits.
struct View {
    started: Instant,
    addrs: Vec<SocketAddr>,
    shown: Option<(Vec<u16>, Option<u64>)>,
}

impl View {
    fn new(nodes: &[Launched]) -> Self {
        Self {
            started: Instant::now(),
            addrs: nodes.iter().map(|node| node.addr).collect(),
            shown: None,
        }
    }

    /// `[   1.234s]`: time since the launcher started.
    fn stamp(&self) -> String {
        format!("[{:8.3}s]", self.started.elapsed().as_secs_f64())
    }

    /// Reaps exited children, probes every node, prints what changed; returns the probes
    /// in node order.
    fn refresh(&mut self, nodes: &mut [Launched]) -> Vec<Option<ProbeReply>> {
        self.reap_exited(nodes);
        let probes = probe_all(&self.addrs);
        let geese = geese(nodes, &probes);
        let term = probes.iter().flatten().map(|p| p.term.0).max();
        let view = (geese, term);
        if self.shown.as_ref() != Some(&view) {
            let term = term.map_or_else(|| "-".to_owned(), |t| t.to_string());
            match view.0.as_slice() {
                [] => say!("{} goose none term {term}", self.stamp()),
                [goose] => say!("{} goose {goose} term {term}", self.stamp()),
                // Never expected: the lease forbids it. Shown loudly if it ever happens.
                many => say!("{} TWO GEESE {many:?} term {term}", self.stamp()),
            }
            self.shown = Some(view);
        }
        probes
    }

    fn reap_exited(&self, nodes: &mut [Launched]) {
        for node in nodes {
            self.reap(node);
        }
    }

    /// Reaps `node` if it has exited, with one line saying how.
    fn reap(&self, node: &mut Launched) {
        let Some(child) = node.child.as_mut() else {
            return;
        };
        if let Ok(Some(status)) = child.try_wait() {
            say!(
                "{} {} {} exited: {}",
                self.stamp(),
                node.label(),
                node.id,
                describe(status)
            );
            node.child = None;
        }
    }
}

/// Every node's answer to one probe round, in order (`None`: no usable answer).
fn probe_all(addrs: &[SocketAddr]) -> Vec<Option<ProbeReply>> {
    let flock = Flock::new(addrs.iter().copied()).timeout(VIEW_PROBE_TIMEOUT);
    flock
        .ask()
        .into_iter()
        .map(|answer| answer.reply.ok())
        .collect()
}

/// The ids of the nodes that answered `goose`.
fn geese(nodes: &[Launched], probes: &[Option<ProbeReply>]) -> Vec<u16> {
    nodes
        .iter()
        .zip(probes)
        .filter(|(_, probe)| probe.is_some_and(|p| p.goose))
        .map(|(node, _)| node.id)
        .collect()
}

pub(crate) fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown status".to_owned(),
    }
}

/// What a restart of a node needs besides the node.
pub(crate) struct Restart<'a> {
    executable: &'a Path,
    timing_flags: &'a [String],
    /// `--cluster-key-file <f>`, or nothing.
    key_flags: &'a [std::ffi::OsString],
    /// SIGINT/SIGTERM during the restart: stop it and let the launcher shut down.
    pub(crate) stop: &'a AtomicBool,
}

/// Restarts every node in turn, ducks first and the goose last; returns how long it took.
/// Stops early (with why) if a wait passes [`ROLLING_WAIT_MAX`], a node cannot be
/// respawned, or the launcher is told to stop.
fn rolling_restart(
    nodes: &mut [Launched],
    view: &mut View,
    restart: &Restart<'_>,
) -> Result<Duration, String> {
    let started = Instant::now();
    say!(
        "{} rolling restart of {} nodes, ducks first, the goose last",
        view.stamp(),
        nodes.len()
    );
    let goose = wait_until(
        nodes,
        view,
        restart.stop,
        "the flock to have a goose",
        |n, p| geese(n, p).first().copied(),
    )?;
    let mut order: Vec<usize> = (0..nodes.len()).filter(|&i| nodes[i].id != goose).collect();
    order.extend((0..nodes.len()).filter(|&i| nodes[i].id == goose));
    for index in order {
        wait_until(
            nodes,
            view,
            restart.stop,
            "the flock to have a goose",
            |n, p| geese(n, p).first().copied(),
        )?;
        let down = Instant::now();
        stop_node(&mut nodes[index], view);
        let node = &mut nodes[index];
        respawn(node, restart, false)?;
        let (id, label) = (node.id, node.label());
        let what = format!("{label} {id} to answer and follow a goose");
        wait_until(nodes, view, restart.stop, &what, |_, probes| {
            probes[index].and_then(|probe| probe.leader)
        })?;
        say!(
            "{} rolling restart: {label} {id} back in {} ms",
            view.stamp(),
            down.elapsed().as_millis()
        );
    }
    Ok(started.elapsed())
}

/// Starts `node` again on its data dir: `goose node --data-dir <dir>` with the timing and
/// key flags (its id, address and membership come from its state), or a board's QEMU on
/// its state file.
pub(crate) fn respawn(
    node: &mut Launched,
    restart: &Restart<'_>,
    quiet: bool,
) -> Result<(), String> {
    let mut command = match &node.kind {
        Kind::Node => {
            let mut command = Command::new(restart.executable);
            command
                .arg("node")
                .arg("--data-dir")
                .arg(&node.data_dir)
                .args(restart.timing_flags)
                .args(restart.key_flags);
            command
        }
        Kind::Board { spec, qemu, .. } => spec
            .command(qemu, board::fresh_seed(spec.config.id))
            .map_err(|error| format!("cannot respawn board {}: {error}", node.id))?,
    };
    spawn(node, &mut command, quiet).map_err(|error| format!("cannot respawn {}: {error}", node.id))
}

/// Refreshes the view every [`ROLLING_INTERVAL`] until `done` returns something, for at
/// most [`ROLLING_WAIT_MAX`].
fn wait_until<T>(
    nodes: &mut [Launched],
    view: &mut View,
    stop: &AtomicBool,
    what: &str,
    mut done: impl FnMut(&[Launched], &[Option<ProbeReply>]) -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + ROLLING_WAIT_MAX;
    loop {
        let round = Instant::now();
        let probes = view.refresh(nodes);
        if let Some(value) = done(nodes, &probes) {
            return Ok(value);
        }
        if stop.load(Ordering::SeqCst) {
            return Err("the launcher was told to stop".to_owned());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "waited {} s for {what}",
                ROLLING_WAIT_MAX.as_secs()
            ));
        }
        std::thread::sleep(ROLLING_INTERVAL.saturating_sub(round.elapsed()));
    }
}

/// SIGTERM to one node, SIGKILL after [`STOP_GRACE`]; reaps it.
fn stop_node(node: &mut Launched, view: &View) {
    terminate(node);
    wait_exited(&mut [node], view);
}

/// SIGTERM to a running child.
fn terminate(node: &mut Launched) {
    let Some(child) = node.child.as_mut() else {
        return;
    };
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; `pid` is our own child, not yet
        // reaped, so it cannot have been reused by another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Waits up to [`STOP_GRACE`] for `nodes` to exit, then kills the rest; reaps them all.
fn wait_exited(nodes: &mut [&mut Launched], view: &View) {
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        for node in nodes.iter_mut() {
            view.reap(node);
        }
        if nodes.iter().all(|node| node.child.is_none()) {
            return;
        }
        std::thread::sleep(STOP_POLL);
    }
    for node in nodes {
        if let Some(mut child) = node.child.take() {
            eprintln!(
                "goose cluster: {} {} still running {} s after SIGTERM; killing it",
                node.label(),
                node.id,
                STOP_GRACE.as_secs()
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Stops the flock: every node that does not answer goose first, then the goose (see the
/// module docs for why in this order).
pub(crate) fn stop_all(nodes: &mut [Launched]) {
    let view = View::new(nodes);
    let addrs: Vec<SocketAddr> = nodes.iter().map(|node| node.addr).collect();
    let is_goose: Vec<bool> = probe_all(&addrs)
        .iter()
        .map(|reply| reply.is_some_and(|p| p.goose))
        .collect();
    for goose_last in [false, true] {
        let mut group: Vec<&mut Launched> = nodes
            .iter_mut()
            .zip(&is_goose)
            .filter(|(_, goose)| **goose == goose_last)
            .map(|(node, _)| node)
            .collect();
        for node in &mut group {
            terminate(node);
        }
        wait_exited(&mut group, &view);
    }
}
