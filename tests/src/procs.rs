//! Real `goose` processes on 127.0.0.1: the one harness of every process test and
//! benchmark (this crate's `tests/` and `bin/`, and node-std's `tests/elastic.rs`).
//!
//! A [`Flock`] spawns `goose node` children on free UDP ports, each with its own data dir in
//! a fresh temporary folder; a mixed flock ([`Flock::start_mixed`]) makes its last members
//! boards, `goose board` children running the firmware in QEMU. Dropping it (also while a
//! test panics) kills every child by pid with SIGKILL (a board's QEMU dies with its
//! `goose board`, which set its parent-death signal), reaps it, prints the tail of each
//! node's log if a test is failing, and removes the folder.
//!
//! Every [`Flock::probe_round`] sends `whois-goose` to the nodes at once and checks, on the
//! replies it sees, what the contract promises at every instant:
//!
//! - at most one node answers `goose` in one round (whatever their terms);
//! - no node's term ever goes backwards, across rounds and across restarts;
//! - one term never has two different geese.
//!
//! A broken promise panics (the tests) or is counted (the benchmark), as the flock's
//! [`OnViolation`] says. Every wait in here has a time bound.
//!
//! A flock with a cluster key ([`Flock::start_keyed`], [`new_key_file`]) gets the key on
//! every node's command line, and [`Flock::ctl`] sends its commands through
//! `goose ctl --cluster-key-file`, which signs them; probes need no key.
//!
//! Nodes a test did not spawn itself (a `goose cluster`'s) are probed with [`probe`], and
//! asked with [`ctl`]; the numbers of a process with [`cpu_ticks`]; a benchmark's
//! distribution with [`percentile`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead as _, BufReader};
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use goose_core::text::{ProbeReply, Reply};
use goose_core::NodeId;

/// Node ports are drawn below Linux's default ephemeral range (32768–60999), so the probe
/// sockets the tests bind to port 0 never take a port a restarted node needs back.
const PORT_LOW: u32 = 20_000;
/// One past the highest node port drawn.
const PORT_HIGH: u32 = 32_000;
/// How long a started flock gets until every node answers a probe.
const LISTEN_WITHIN: Duration = Duration::from_secs(10);
/// Attempts at starting a flock when a port turned out to be taken meanwhile.
const START_ATTEMPTS: u32 = 5;
/// How long a `goose board` gets to exit once its QEMU was killed.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long [`ctl`] waits for a reply: a transfer answers only once the handoff is sent,
/// several state saves later, which a loaded machine can stretch past a second.
const CTL_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest reply read (a `status` line of a 5-node flock is well below).
const REPLY_SIZE_MAX: usize = 4096;
/// Log lines of each node printed when a test fails.
const LOG_TAIL_LINES: usize = 40;
/// How long a started mixed flock gets until every member answers: QEMU boots in well
/// under a second, but two cores shared with builds can make it many times slower.
const MIXED_LISTEN_WITHIN: Duration = Duration::from_secs(30);
/// How long `goose board` gets to print its QEMU's pid.
const QEMU_PID_WITHIN: Duration = Duration::from_secs(10);
/// How long a `goose ctl` or `goose keygen` child may run: a signed command is two round
/// trips, one more try on a stale nonce and one redirect, each bounded by the client.
const CLIENT_RUN_WITHIN: Duration = Duration::from_secs(15);
/// Attempts at finding consecutive free ports ([`free_port_range`]).
const PORT_RANGE_ATTEMPTS: u32 = 100;
/// The pause between two tries of [`Flock::ctl_until_not_busy`].
const POLL_PAUSE: Duration = Duration::from_millis(10);
/// Clock ticks per second of `/proc/<pid>/stat` when `sysconf` cannot say (Linux's
/// `USER_HZ` everywhere).
const CLOCK_TICKS_PER_SECOND_DEFAULT: u64 = 100;

/// A flock's timing, passed to every node as `--heartbeat-ms` and `--election-timeout-ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `--heartbeat-ms`.
    pub heartbeat_ms: u64,
    /// `--election-timeout-ms <min>-…`.
    pub election_timeout_ms_min: u64,
    /// `--election-timeout-ms …-<max>`.
    pub election_timeout_ms_max: u64,
}

impl Timing {
    /// The contract's defaults: heartbeat 50 ms, election timeout 150–300 ms.
    pub const DEFAULT: Self = Self {
        heartbeat_ms: 50,
        election_timeout_ms_min: 150,
        election_timeout_ms_max: 300,
    };
    /// The Raft paper's fastest range (Figure 16): 12–24 ms, heartbeat 3 ms.
    pub const FAST: Self = Self {
        heartbeat_ms: 3,
        election_timeout_ms_min: 12,
        election_timeout_ms_max: 24,
    };

    /// The command-line flags for this timing.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--heartbeat-ms".to_owned(),
            self.heartbeat_ms.to_string(),
            "--election-timeout-ms".to_owned(),
            format!(
                "{}-{}",
                self.election_timeout_ms_min, self.election_timeout_ms_max
            ),
        ]
    }

    /// The goose's lease as the core computes it for this timing.
    pub fn lease(&self) -> Duration {
        let id = NodeId::new(1).expect("1 is a node id");
        let config = goose_core::Config::with_timing(
            id,
            goose_core::Duration::from_millis(self.heartbeat_ms),
            goose_core::Duration::from_millis(self.election_timeout_ms_min),
            goose_core::Duration::from_millis(self.election_timeout_ms_max),
        );
        Duration::from_micros(config.lease_duration().micros())
    }

    /// The maximum election timeout.
    pub fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(self.election_timeout_ms_max)
    }
}

impl fmt::Display for Timing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{} ms, heartbeat {} ms",
            self.election_timeout_ms_min, self.election_timeout_ms_max, self.heartbeat_ms
        )
    }
}

// ---------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------

/// The `goose` binary of the profile this executable was built with: `$GOOSE_BIN` if set,
/// else `target/<profile>/goose` next to this executable (`target/<profile>/deps/` for a
/// test, `target/<profile>/` for a binary). Asks cargo to build it first (a no-op when it is
/// up to date), because a package's tests cannot depend on another package's binary.
///
/// # Panics
///
/// If there is no binary and cargo could not build one.
pub fn goose_binary() -> &'static Path {
    BINARY.get_or_init(|| locate_or_build().unwrap_or_else(|error| panic!("{error}")))
}

/// The binary [`goose_binary`] returns, once found.
static BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Makes [`goose_binary`] return `path` (a test of the `goose` package passes cargo's
/// `CARGO_BIN_EXE_goose`, a benchmark its `--goose`), unless it already returns a binary.
pub fn use_goose_binary(path: &Path) {
    let _ = BINARY.set(path.to_path_buf());
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("GOOSE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut profile_dir = exe.parent().ok_or("executable without a folder")?;
    if profile_dir.file_name().is_some_and(|name| name == "deps") {
        profile_dir = profile_dir.parent().ok_or("deps/ without a parent")?;
    }
    let profile = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or("profile folder without a name")?;
    let target_dir = profile_dir
        .parent()
        .ok_or("profile folder without a parent")?;
    let binary = profile_dir.join("goose");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", "goose", "--bin", "goose"])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile {
        "debug" => {}
        "release" => {
            command.arg("--release");
        }
        other => {
            command.args(["--profile", other]);
        }
    }
    let built = command.status();
    match (built, binary.is_file()) {
        (Ok(status), true) if status.success() => Ok(binary),
        (outcome, true) => {
            eprintln!("procs: `cargo build -p goose` failed ({outcome:?}); using {binary:?}");
            Ok(binary)
        }
        (outcome, false) => Err(format!(
            "no goose binary at {} and `cargo build -p goose` failed: {outcome:?}",
            binary.display()
        )),
    }
}

/// The board firmware: `$GOOSE_FIRMWARE` if set, else node-embedded/firmware's release
/// ELF, built first with `cargo build --release` there (cargo does nothing if it is up to
/// date), so a test never runs a firmware older than the tree. If the build fails but an
/// ELF is there, it says so and uses it, as [`goose_binary`] does.
///
/// # Panics
///
/// If there is no ELF and the build fails: a mixed flock cannot run without it.
pub fn firmware() -> &'static Path {
    static FIRMWARE: OnceLock<PathBuf> = OnceLock::new();
    FIRMWARE.get_or_init(|| {
        if let Some(path) = std::env::var_os("GOOSE_FIRMWARE") {
            return PathBuf::from(path);
        }
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node-embedded/firmware");
        let elf = folder.join("target/thumbv7m-none-eabi/release/goose-firmware");
        let built = build_firmware(&folder, &["--locked"]);
        match (built, elf.is_file()) {
            (Ok(status), true) if status.success() => elf,
            (outcome, true) => {
                eprintln!(
                    "procs: `cargo build --release` in {} failed ({outcome:?}); using {}",
                    folder.display(),
                    elf.display()
                );
                elf
            }
            (outcome, false) => panic!(
                "no firmware at {} and `cargo build --release` in {} failed ({outcome:?}); \
                 it needs the thumbv7m-none-eabi target (`rustup target add \
                 thumbv7m-none-eabi`)",
                elf.display(),
                folder.display()
            ),
        }
    })
}

/// The board firmware built with its `report` feature (it logs its peak stack: see
/// node-embedded/README.md, "Footprint"), in its own target dir under the firmware's folder.
/// Always built (cargo does nothing if it is up to date), so it is never stale.
///
/// # Panics
///
/// If the build fails.
pub fn report_firmware() -> &'static Path {
    static FIRMWARE: OnceLock<PathBuf> = OnceLock::new();
    FIRMWARE.get_or_init(|| {
        let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node-embedded/firmware");
        let flags = [
            "--locked",
            "--features",
            "report",
            "--target-dir",
            "target/report",
        ];
        let built = build_firmware(&folder, &flags);
        let elf = folder.join("target/report/thumbv7m-none-eabi/release/goose-firmware");
        match (built, elf.is_file()) {
            (Ok(status), true) if status.success() => elf,
            (outcome, _) => panic!(
                "`cargo build --release --features report` in {} failed ({outcome:?})",
                folder.display()
            ),
        }
    })
}

/// `cargo build --release` with `flags` in the firmware's `folder`. Its own
/// .cargo/config.toml sets its target, linker script and rustflags: an outer target dir or
/// RUSTFLAGS would put the ELF elsewhere or override them.
fn build_firmware(folder: &Path, flags: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
        .args(["build", "--release"])
        .args(flags)
        .current_dir(folder)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
}

/// Panics, naming the package, unless `qemu-system-arm` is on the `PATH`: the QEMU tests
/// fail rather than skip without it.
pub fn require_qemu() {
    let found = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("qemu-system-arm").is_file())
    });
    assert!(
        found,
        "qemu-system-arm is not on the PATH: install it (Debian: apt-get install          qemu-system-arm); the mixed-flock tests need it and never skip"
    );
}

// ---------------------------------------------------------------------------------------
// Ports and folders
// ---------------------------------------------------------------------------------------

/// A fresh number per call in this process, starting at a value that differs between
/// processes (pid and clock), so parallel test runs rarely try the same ports.
fn next_sequence() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    let start = *START.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::process::id().wrapping_mul(7919) ^ nanos
    });
    start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// `count` distinct UDP ports on 127.0.0.1 that were free a moment ago.
///
/// # Panics
///
/// If no free ports turn up in 10,000 tries.
pub fn free_ports(count: usize) -> Vec<u16> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..10_000 {
        if held.len() == count {
            break;
        }
        let port = PORT_LOW + next_sequence().wrapping_mul(2_654_435_761) % (PORT_HIGH - PORT_LOW);
        let port = u16::try_from(port).expect("below 32000");
        if let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)) {
            held.push(socket);
        }
    }
    assert_eq!(held.len(), count, "no {count} free UDP ports found");
    held.iter()
        .map(|socket| socket.local_addr().expect("bound").port())
        .collect()
}

/// The first of `count` consecutive UDP ports on 127.0.0.1 that were free a moment ago (for
/// `goose cluster --base-port`).
///
/// # Panics
///
/// If none turn up in [`PORT_RANGE_ATTEMPTS`] tries.
pub fn free_port_range(count: u16) -> u16 {
    let span = PORT_HIGH - PORT_LOW - u32::from(count);
    for _ in 0..PORT_RANGE_ATTEMPTS {
        let base = PORT_LOW + next_sequence().wrapping_mul(2_654_435_761) % span;
        let base = u16::try_from(base).expect("below 32000");
        let held: Vec<UdpSocket> = (0..count)
            .map_while(|i| UdpSocket::bind((Ipv4Addr::LOCALHOST, base + i)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return base;
        }
    }
    panic!("no {count} consecutive free UDP ports found");
}

/// A temporary folder, removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new empty folder under the system's temporary folder.
    ///
    /// # Panics
    ///
    /// If it cannot be created.
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "goose-{label}-{}-{}",
            std::process::id(),
            next_sequence()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------------
// Probes
// ---------------------------------------------------------------------------------------

/// A parsed probe reply: `goose|duck id=<id> term=<term> goose=<id|none> [state=stopped] …`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// It answered `goose`.
    pub goose: bool,
    /// Its `id=`.
    pub id: u16,
    /// Its `term=`.
    pub term: u64,
    /// Its `goose=`: the goose it follows (its own id for a goose), `None` for `none`.
    pub leader: Option<u16>,
    /// It said `state=stopped`.
    pub stopped: bool,
    /// The line as received, without its `\n`.
    pub line: String,
}

impl Probe {
    /// Parses one reply datagram, checking the contract's format: one line ending in `\n`,
    /// then what the core's `ProbeReply::parse` checks (role first, then `id`, `term` and
    /// `goose` pairs that agree with the role).
    ///
    /// # Errors
    ///
    /// A description of what is wrong with the reply.
    pub fn parse(datagram: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(datagram)
            .map_err(|_| format!("reply is not UTF-8: {datagram:?}"))?;
        let line = text
            .strip_suffix('\n')
            .ok_or_else(|| format!("reply does not end in \\n: {text:?}"))?;
        let reply = ProbeReply::parse(text).map_err(|error| format!("{error}: {text:?}"))?;
        Ok(Self {
            goose: reply.goose,
            id: reply.id.get(),
            term: reply.term.0,
            leader: reply.leader.map(NodeId::get),
            stopped: reply.stopped,
            line: line.to_owned(),
        })
    }
}

/// The replies of one probe round, by node index; `None` where a node did not answer.
#[derive(Clone, Debug)]
pub struct Round {
    /// When the probes were sent.
    pub sent: Instant,
    /// Each node's reply and when it arrived.
    pub replies: Vec<Option<(Probe, Instant)>>,
}

impl Round {
    /// The nodes that answered `goose`.
    pub fn geese(&self) -> Vec<usize> {
        self.answers()
            .filter(|(_, probe)| probe.goose)
            .map(|(index, _)| index)
            .collect()
    }

    /// The nodes that answered, with their replies.
    pub fn answers(&self) -> impl Iterator<Item = (usize, &Probe)> {
        self.replies
            .iter()
            .enumerate()
            .filter_map(|(index, reply)| Some((index, &reply.as_ref()?.0)))
    }

    /// Node `index`'s reply.
    pub fn reply(&self, index: usize) -> Option<&Probe> {
        self.replies.get(index)?.as_ref().map(|(probe, _)| probe)
    }

    /// `(goose index, term)` if every node in `among` answered, exactly one of them is
    /// goose, none is stopped, and all share the goose's term and name it in `goose=`.
    pub fn agreed(&self, among: &[usize]) -> Option<(usize, u64)> {
        let geese = self.geese();
        let [goose] = geese[..] else {
            return None;
        };
        if !among.contains(&goose) {
            return None;
        }
        let leader = self.reply(goose)?;
        let all_agree = among.iter().all(|&index| {
            self.reply(index).is_some_and(|probe| {
                !probe.stopped && probe.term == leader.term && probe.leader == Some(leader.id)
            })
        });
        all_agree.then_some((goose, leader.term))
    }
}

impl fmt::Display for Round {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, reply) in self.replies.iter().enumerate() {
            let separator = if index == 0 { "" } else { " | " };
            match reply {
                Some((probe, at)) => write!(
                    f,
                    "{separator}[{index}] {} (+{} µs)",
                    probe.line,
                    at.saturating_duration_since(self.sent).as_micros()
                )?,
                None => write!(f, "{separator}[{index}] -")?,
            }
        }
        Ok(())
    }
}

/// Sends `text` to 127.0.0.1:`port` from a fresh socket and returns the first reply within
/// `timeout`, if any.
pub fn request(port: u16, text: &[u8], timeout: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    socket.connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    socket.send(text).ok()?;
    receive(&socket, Instant::now() + timeout)
}

/// The next datagram on `socket` before `deadline`, if any.
pub fn receive(socket: &UdpSocket, deadline: Instant) -> Option<Vec<u8>> {
    let mut buffer = vec![0; REPLY_SIZE_MAX];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).ok()?;
        match socket.recv(&mut buffer) {
            Ok(size) => {
                buffer.truncate(size);
                return Some(buffer);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock/TimedOut: the timeout; ConnectionRefused: nobody listens.
            Err(_) => return None,
        }
    }
}

/// One reply per target of a [`gather`]: the datagram and when it arrived.
pub type Replies = Vec<Option<(Vec<u8>, Instant)>>;

/// Sends `datagram` to every one of `targets` at once from one fresh 127.0.0.1 socket and
/// collects each one's first reply until all answered or `window` has passed; returns
/// when it sent them, and the replies in the order of `targets`. Sent from one socket at
/// once, a round is a near-instant snapshot of the flock: a node reads its socket in order,
/// so two `goose` answers in one probe round are a real overlap.
pub fn gather(targets: &[SocketAddr], datagram: &[u8], window: Duration) -> (Instant, Replies) {
    let mut replies = vec![None; targets.len()];
    let Ok(socket) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
        return (Instant::now(), replies);
    };
    let sent = Instant::now();
    for target in targets {
        // A full buffer or a dead port only means no answer.
        let _ = socket.send_to(datagram, target);
    }
    let deadline = sent + window;
    let mut buffer = [0; REPLY_SIZE_MAX];
    let mut waiting = targets.len();
    while waiting > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            break;
        }
        let (size, source) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let at = Instant::now();
        let Some(slot) = targets.iter().position(|target| *target == source) else {
            continue;
        };
        if replies[slot].is_none() {
            replies[slot] = Some((buffer[..size].to_vec(), at));
            waiting -= 1;
        }
    }
    (sent, replies)
}

/// One probe round of nodes this harness did not spawn (a `goose cluster`'s): `whois-goose`
/// to every one of `ports` at once ([`gather`]); the replies in the order of `ports`.
/// Nothing is checked: [`Flock::probe_round`] checks the promises on its own nodes.
///
/// # Panics
///
/// On a reply that breaks the reply format.
pub fn probe(ports: &[u16], window: Duration) -> Round {
    let targets: Vec<SocketAddr> = ports
        .iter()
        .map(|&port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
        .collect();
    let (sent, replies) = gather(&targets, b"whois-goose", window);
    let replies = replies
        .into_iter()
        .map(|reply| {
            let (datagram, at) = reply?;
            let probe = Probe::parse(&datagram).unwrap_or_else(|error| panic!("{error}"));
            Some((probe, at))
        })
        .collect();
    Round { sent, replies }
}

/// Sends `ctl <command>` to 127.0.0.1:`port`, unsigned, and returns the reply line without
/// its `\n`, if one came within the control timeout.
pub fn ctl(port: u16, command: &str) -> Option<String> {
    let text = format!("ctl {command}");
    let reply = request(port, text.as_bytes(), CTL_TIMEOUT)?;
    let reply = String::from_utf8_lossy(&reply).into_owned();
    Some(reply.strip_suffix('\n').unwrap_or(&reply).to_owned())
}

/// A node's `ctl status` pairs.
pub type Status = BTreeMap<String, String>;

/// The `key=value` pairs of an `ok …` reply (a `ctl status`), read with the core's parser;
/// `None` for any other reply.
pub fn parse_status(reply: &str) -> Option<Status> {
    let Ok(Reply::Ok(pairs)) = Reply::parse(reply) else {
        return None;
    };
    Some(
        pairs
            .iter()
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect(),
    )
}

/// The ids of a `ctl status` list (`voters=1,2,3`; empty when none); `None` if the status
/// has no such key or an item is not an id.
pub fn ids(status: &Status, key: &str) -> Option<Vec<u16>> {
    status
        .get(key)?
        .split(',')
        .filter(|item| !item.is_empty())
        .map(|item| item.parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------------------
// The flock
// ---------------------------------------------------------------------------------------

/// What a probe round does when it sees a broken safety promise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnViolation {
    /// Panic at once with the round (the tests).
    Panic,
    /// Count it in [`Watch`] and go on (the benchmark reports the count).
    Count,
}

/// What the probe rounds of a flock have seen so far.
#[derive(Clone, Debug, Default)]
pub struct Watch {
    /// Probe rounds done.
    pub rounds: u64,
    /// Rounds in which two or more nodes answered `goose`.
    pub double_geese: u64,
    /// Replies whose term was below one the same node had answered before.
    pub term_regressions: u64,
    /// Terms in which a second node answered `goose`.
    pub two_geese_in_a_term: u64,
    /// Replies that broke the reply format.
    pub malformed: u64,
    /// The highest term each node answered.
    pub max_term: Vec<u64>,
    /// The goose seen in each term.
    pub goose_of_term: BTreeMap<u64, u16>,
}

/// A flock's extra flags for its desktop nodes, for its boards, and its boards' firmware if
/// not [`firmware`].
type Flags<'a> = (&'a [&'a str], &'a [&'a str], Option<&'a Path>);

/// One `goose node` child, or a `goose board` one.
#[derive(Debug)]
pub struct Node {
    /// Its id.
    pub id: u16,
    /// Whether it is a board (`goose board`, the firmware in QEMU).
    pub board: bool,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
    /// Its `--data-dir`.
    pub data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

/// A flock of `goose node` processes on 127.0.0.1; see the module docs.
#[derive(Debug)]
pub struct Flock {
    /// The nodes, index `i` has id `i + 1`.
    pub nodes: Vec<Node>,
    /// Their timing.
    pub timing: Timing,
    /// When the first node was spawned.
    pub started: Instant,
    on_violation: OnViolation,
    watch: RefCell<Watch>,
    /// The cluster key file [`Flock::ctl`] signs with, if any.
    control_key: Option<PathBuf>,
    // Last, so the children are killed before their folder is removed.
    root: TempDir,
}

impl Flock {
    /// Starts `count` nodes with `timing` and waits until every one answers a probe.
    ///
    /// # Panics
    ///
    /// If the flock cannot be started in [`START_ATTEMPTS`] attempts.
    pub fn start(count: usize, timing: Timing) -> Self {
        Self::start_with(count, timing, &[], OnViolation::Panic)
    }

    /// [`Flock::start`] with extra flags for every node, and a choice of what a broken
    /// safety promise does.
    ///
    /// # Panics
    ///
    /// If the flock cannot be started in [`START_ATTEMPTS`] attempts.
    pub fn start_with(
        count: usize,
        timing: Timing,
        extra: &[&str],
        on_violation: OnViolation,
    ) -> Self {
        Self::start_members(count, 0, timing, (extra, &[], None), on_violation)
    }

    /// [`Flock::start`] with `--cluster-key-file key_file` on every node; [`Flock::ctl`]
    /// signs with it.
    ///
    /// # Panics
    ///
    /// If the flock cannot be started in [`START_ATTEMPTS`] attempts.
    pub fn start_keyed(count: usize, timing: Timing, key_file: &Path) -> Self {
        let key = key_file.display().to_string();
        let extra = ["--cluster-key-file", key.as_str()];
        let mut flock = Self::start_with(count, timing, &extra, OnViolation::Panic);
        flock.control_key = Some(key_file.to_path_buf());
        flock
    }

    /// The key file [`Flock::ctl`] signs with (`None`: plain control datagrams).
    pub fn set_control_key(&mut self, key_file: Option<PathBuf>) {
        self.control_key = key_file;
    }

    /// Node `index`'s command line after `goose`, to change before a [`Flock::restart`]
    /// (e.g. another `--cluster-key-file`).
    pub fn args_mut(&mut self, index: usize) -> &mut Vec<String> {
        &mut self.nodes[index].args
    }

    /// Spawns one more `goose node` with id `id` on `port` (a port from [`free_ports`]) and
    /// `args` after `node --id <id> --listen 127.0.0.1:<port> --data-dir <its dir>` (e.g.
    /// `--join …`); it is probed, killed and logged like the others. Returns its index.
    pub fn spawn_node(&mut self, id: u16, port: u16, args: &[String]) -> usize {
        let data_dir = self.root.path().join(id.to_string());
        let mut line = node_args(id, port, &data_dir);
        line.extend(args.iter().cloned());
        self.nodes.push(Node {
            id,
            board: false,
            port,
            data_dir,
            log: self.root.path().join(format!("node-{id}.log")),
            args: line,
            child: None,
        });
        self.watch.borrow_mut().max_term.push(0);
        let index = self.nodes.len() - 1;
        self.launch(index);
        index
    }

    /// Spawns `goose node --id <id> --join <node via's address>` on `port`, with the
    /// flock's timing and `extra` flags, as [`Flock::spawn_node`]; does not wait.
    pub fn spawn_joiner(&mut self, id: u16, port: u16, via: usize, extra: &[&str]) -> usize {
        let mut args = vec!["--join".to_owned(), self.addr(via).to_string()];
        args.extend(self.timing.flags());
        args.extend(extra.iter().map(|&flag| flag.to_owned()));
        self.spawn_node(id, port, &args)
    }

    /// A mixed flock: `desktops` `goose node`s (ids 1..) then `boards` `goose board`s, the
    /// firmware in QEMU ([`firmware`], built if missing), every member answering a probe.
    ///
    /// # Panics
    ///
    /// If `qemu-system-arm` is missing, the firmware cannot be built, or the flock cannot
    /// be started in [`START_ATTEMPTS`] attempts.
    pub fn start_mixed(
        desktops: usize,
        boards: usize,
        timing: Timing,
        on_violation: OnViolation,
    ) -> Self {
        require_qemu();
        firmware();
        Self::start_members(
            desktops + boards,
            boards,
            timing,
            (&[], &[], None),
            on_violation,
        )
    }

    /// [`Flock::start_mixed`] with the boards running `firmware` (e.g. [`report_firmware`]).
    ///
    /// # Panics
    ///
    /// As [`Flock::start_mixed`].
    pub fn start_mixed_with(
        desktops: usize,
        boards: usize,
        timing: Timing,
        firmware: &Path,
    ) -> Self {
        require_qemu();
        let flags = (&[][..], &[][..], Some(firmware));
        Self::start_members(desktops + boards, boards, timing, flags, OnViolation::Panic)
    }

    /// [`Flock::start_mixed`] with `--cluster-key-file key_file` on every member, the
    /// boards' `goose board` included; [`Flock::ctl`] signs with it.
    ///
    /// # Panics
    ///
    /// As [`Flock::start_mixed`].
    pub fn start_mixed_keyed(
        desktops: usize,
        boards: usize,
        timing: Timing,
        key_file: &Path,
    ) -> Self {
        require_qemu();
        firmware();
        let key = key_file.display().to_string();
        let extra = ["--cluster-key-file", key.as_str()];
        let count = desktops + boards;
        let flags = (&extra[..], &extra[..], None);
        let mut flock = Self::start_members(count, boards, timing, flags, OnViolation::Panic);
        flock.control_key = Some(key_file.to_path_buf());
        flock
    }

    /// `flags`: the desktop nodes' extra flags, the boards', and the boards' firmware if not
    /// [`firmware`].
    fn start_members(
        count: usize,
        boards: usize,
        timing: Timing,
        flags: Flags<'_>,
        on_violation: OnViolation,
    ) -> Self {
        let within = if boards == 0 {
            LISTEN_WITHIN
        } else {
            MIXED_LISTEN_WITHIN
        };
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let mut flock = Self::spawn(count, boards, timing, flags, on_violation);
            match flock.listening(&flock.all(), within) {
                Ok(()) => return flock,
                // Another process took a port between the check and the bind: new ports.
                Err(error) => failures.push(error),
            }
        }
        panic!("could not start a flock of {count}: {failures:#?}");
    }

    /// `flags`: as [`Flock::start_members`] takes them.
    fn spawn(
        count: usize,
        boards: usize,
        timing: Timing,
        (extra, board_extra, board_firmware): Flags<'_>,
        on_violation: OnViolation,
    ) -> Self {
        let root = TempDir::new("flock");
        let ports = free_ports(count);
        let mut nodes = Vec::with_capacity(count);
        for (index, &port) in ports.iter().enumerate() {
            let id = u16::try_from(index + 1).expect("few nodes");
            let data_dir = root.path().join(id.to_string());
            let board = index + boards >= count;
            let mut args: Vec<String> = if board {
                vec![
                    "board".into(),
                    "--id".into(),
                    id.to_string(),
                    "--port".into(),
                    port.to_string(),
                    "--firmware".into(),
                    board_firmware.map_or_else(
                        || firmware().display().to_string(),
                        |path| path.display().to_string(),
                    ),
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                ]
            } else {
                node_args(id, port, &data_dir)
            };
            for (peer_index, &peer_port) in ports.iter().enumerate() {
                if peer_index != index {
                    args.push("--peer".into());
                    args.push(format!("{}=127.0.0.1:{peer_port}", peer_index + 1));
                }
            }
            args.extend(timing.flags());
            if count == 1 && !board {
                // A node with no --peer must say it is a flock of one.
                args.push("--single".into());
            }
            let extra = if board { board_extra } else { extra };
            args.extend(extra.iter().map(|&flag| flag.to_owned()));
            nodes.push(Node {
                id,
                board,
                port,
                data_dir,
                log: root.path().join(format!("node-{id}.log")),
                args,
                child: None,
            });
        }
        let mut flock = Self {
            nodes,
            timing,
            started: Instant::now(),
            on_violation,
            watch: RefCell::new(Watch {
                max_term: vec![0; count],
                ..Watch::default()
            }),
            control_key: None,
            root,
        };
        goose_binary(); // build before the clock starts
        flock.started = Instant::now();
        for index in 0..count {
            flock.launch(index);
        }
        flock
    }

    fn launch(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        assert!(node.child.is_none(), "node {} is running", node.id);
        let open_log = || {
            File::options()
                .create(true)
                .append(true)
                .open(&node.log)
                .expect("log file")
        };
        // stdout too: `goose board` prints its QEMU's pid there.
        let child = Command::new(goose_binary())
            .args(&node.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(open_log())
            .stderr(open_log())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn goose node {}: {e}", node.id));
        node.child = Some(child);
    }

    /// Waits until every node of `indices` answers a probe.
    ///
    /// # Panics
    ///
    /// If one exits or stays silent for [`LISTEN_WITHIN`].
    pub fn wait_listening(&mut self, indices: &[usize]) {
        if let Err(error) = self.listening(indices, LISTEN_WITHIN) {
            panic!("{error}");
        }
    }

    /// Waits until every node of `indices` answers a probe, or fails with why not.
    fn listening(&mut self, indices: &[usize], within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            for &index in indices {
                if let Some(status) = self.exit_status(index) {
                    return Err(format!(
                        "node {} exited ({status}) at start:\n{}",
                        self.nodes[index].id,
                        self.log_tail(index)
                    ));
                }
            }
            let round = self.probe_round(indices, Duration::from_millis(50));
            if round.answers().count() == indices.len() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not every node answered within {within:?}: {round}"
                ));
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Node count.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the flock has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's index.
    pub fn all(&self) -> Vec<usize> {
        (0..self.nodes.len()).collect()
    }

    /// Node `index`'s port.
    pub fn port(&self, index: usize) -> u16 {
        self.nodes[index].port
    }

    /// The ports of `indices`.
    pub fn ports(&self, indices: &[usize]) -> Vec<u16> {
        indices.iter().map(|&index| self.port(index)).collect()
    }

    /// Node `index`'s address.
    pub fn addr(&self, index: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port(index)))
    }

    /// Node `index`'s pid, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.nodes[index].child.as_ref().map(Child::id)
    }

    /// What the probe rounds have seen so far.
    pub fn watch(&self) -> Watch {
        self.watch.borrow().clone()
    }

    /// Sends `whois-goose` to the nodes `indices` at once from one fresh socket and collects
    /// their replies until all answered or `window` has passed; checks the safety promises
    /// (module docs) on what it got.
    ///
    /// # Panics
    ///
    /// On a broken promise, if the flock was started with [`OnViolation::Panic`].
    pub fn probe_round(&self, indices: &[usize], window: Duration) -> Round {
        let targets: Vec<SocketAddr> = indices.iter().map(|&index| self.addr(index)).collect();
        let (sent, replies) = gather(&targets, b"whois-goose", window);
        let mut round = Round {
            sent,
            replies: vec![None; self.nodes.len()],
        };
        for (&index, reply) in indices.iter().zip(replies) {
            let Some((datagram, at)) = reply else {
                continue;
            };
            match Probe::parse(&datagram) {
                Ok(probe) => round.replies[index] = Some((probe, at)),
                Err(error) => self.violation(|w| &mut w.malformed, &error),
            }
        }
        self.check(&round);
        round
    }

    fn check(&self, round: &Round) {
        let mut problems = Vec::new();
        {
            let mut watch = self.watch.borrow_mut();
            watch.rounds += 1;
            if round.geese().len() > 1 {
                watch.double_geese += 1;
                problems.push("two nodes answered goose in one round".to_owned());
            }
            for (index, probe) in round.answers() {
                if probe.term < watch.max_term[index] {
                    watch.term_regressions += 1;
                    problems.push(format!(
                        "node {} went back from term {} to {}",
                        probe.id, watch.max_term[index], probe.term
                    ));
                }
                watch.max_term[index] = watch.max_term[index].max(probe.term);
                if probe.goose {
                    match watch.goose_of_term.insert(probe.term, probe.id) {
                        Some(other) if other != probe.id => {
                            watch.two_geese_in_a_term += 1;
                            problems.push(format!(
                                "term {} had goose {other} and goose {}",
                                probe.term, probe.id
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
        if !problems.is_empty() && self.on_violation == OnViolation::Panic {
            panic!("safety: {} (round {})", problems.join("; "), round);
        }
    }

    fn violation(&self, counter: impl FnOnce(&mut Watch) -> &mut u64, what: &str) {
        *counter(&mut self.watch.borrow_mut()) += 1;
        if self.on_violation == OnViolation::Panic {
            panic!("{what}");
        }
    }

    /// Probes the nodes `indices` every `every` until `done` accepts a round or `within`
    /// has passed; returns that round, or the last one as the error.
    ///
    /// # Errors
    ///
    /// The last round, if none was accepted in time.
    pub fn wait_until(
        &self,
        indices: &[usize],
        within: Duration,
        every: Duration,
        mut done: impl FnMut(&Round) -> bool,
    ) -> Result<Round, Round> {
        let deadline = Instant::now() + within;
        loop {
            let started = Instant::now();
            let round = self.probe_round(indices, every.max(Duration::from_millis(20)));
            if done(&round) {
                return Ok(round);
            }
            if Instant::now() >= deadline {
                return Err(round);
            }
            if let Some(rest) = every.checked_sub(started.elapsed()) {
                thread::sleep(rest);
            }
        }
    }

    /// Waits until the nodes `among` agree on one goose and its term ([`Round::agreed`]);
    /// returns `(goose index, term)`.
    ///
    /// # Panics
    ///
    /// If they do not within `within`.
    pub fn wait_agreed(&self, among: &[usize], within: Duration) -> (usize, u64) {
        let waited = Instant::now();
        match self.wait_until(among, within, Duration::from_millis(10), |round| {
            round.agreed(among).is_some()
        }) {
            Ok(round) => round.agreed(among).expect("accepted"),
            Err(last) => panic!(
                "nodes {among:?} did not agree on one goose within {within:?} \
                 (waited {:?}); last round: {last}",
                waited.elapsed()
            ),
        }
    }

    /// Probes `indices` every `every` until one answers `goose`, for at most `within` from
    /// `since`; that node, its term, and the time from `since` to its answer's arrival.
    pub fn first_goose(
        &self,
        indices: &[usize],
        since: Instant,
        every: Duration,
        within: Duration,
    ) -> Option<(usize, u64, Duration)> {
        while since.elapsed() < within {
            let next = Instant::now() + every;
            // Replies take well under a millisecond; leave the rest of the period to sleep.
            let window = every.saturating_sub(Duration::from_micros(200));
            let round = self.probe_round(indices, window);
            if let Some(&goose) = round.geese().first() {
                let (probe, at) = round.replies[goose].as_ref()?;
                return Some((goose, probe.term, at.saturating_duration_since(since)));
            }
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        None
    }

    /// Waits at most `within` until every node agrees on one goose and its term
    /// ([`Round::agreed`]) without a change for an election timeout (at least 100 ms);
    /// returns the goose and the term.
    pub fn wait_stable(&self, within: Duration) -> Option<(usize, u64)> {
        let hold = self
            .timing
            .election_timeout_max()
            .max(Duration::from_millis(100));
        let all = self.all();
        let deadline = Instant::now() + within;
        let mut since: Option<(Instant, (usize, u64))> = None;
        while Instant::now() < deadline {
            let round = self.probe_round(&all, Duration::from_millis(50));
            match (round.agreed(&all), since) {
                (Some(agreed), Some((start, seen))) if agreed == seen => {
                    if start.elapsed() >= hold {
                        return Some(agreed);
                    }
                }
                (Some(agreed), _) => since = Some((Instant::now(), agreed)),
                (None, _) => since = None,
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Sends `ctl <command>` to node `index` and returns the reply line without its `\n`.
    /// With a control key ([`Flock::start_keyed`]), through `goose ctl
    /// --cluster-key-file`, which signs it (and follows a duck's redirect to the goose).
    pub fn ctl(&self, index: usize, command: &str) -> Option<String> {
        match &self.control_key {
            Some(key) => signed_ctl(key, self.addr(index), command),
            None => ctl(self.port(index), command),
        }
    }

    /// [`Flock::ctl`], retried every few milliseconds while node `index` answers nothing or
    /// `err busy` (one membership change at a time); the first other reply.
    ///
    /// # Panics
    ///
    /// If it is still busy or silent after `within`.
    pub fn ctl_until_not_busy(&self, index: usize, command: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            match self.ctl(index, command) {
                Some(reply) if reply != "err busy" => return reply,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "ctl {command} to node {}: busy or silent for {within:?}",
                self.nodes[index].id
            );
            thread::sleep(POLL_PAUSE);
        }
    }

    /// Node `index`'s `ctl status` pairs, if it answers `ok …`.
    pub fn try_status(&self, index: usize) -> Option<Status> {
        parse_status(&self.ctl(index, "status")?)
    }

    /// Node `index`'s `ctl status` pairs.
    ///
    /// # Panics
    ///
    /// If it does not answer `ok …`.
    pub fn status(&self, index: usize) -> Status {
        let reply = self.ctl(index, "status");
        let reply = reply.unwrap_or_else(|| panic!("no status from node {}", index + 1));
        parse_status(&reply)
            .unwrap_or_else(|| panic!("status of node {} is not ok: {reply}", index + 1))
    }

    /// Sends signal `signal` to node `index` by its pid.
    ///
    /// # Panics
    ///
    /// If the node is not running or the signal cannot be sent.
    pub fn signal(&self, index: usize, signal: libc::c_int) {
        let pid = self.pid(index).expect("node is running");
        let pid = libc::pid_t::try_from(pid).expect("pid fits");
        // SAFETY: kill(2) with a pid of our own, unreaped child: it cannot name another
        // process, and has no memory effects.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            result,
            0,
            "kill({pid}, {signal}): {}",
            io::Error::last_os_error()
        );
    }

    /// `kill -9`s node `index` and reaps it; returns the instant just before the signal.
    ///
    /// # Panics
    ///
    /// If the node is not running.
    pub fn kill9(&mut self, index: usize) -> Instant {
        let killed = Instant::now();
        self.signal(index, libc::SIGKILL);
        let mut child = self.nodes[index].child.take().expect("running");
        let _ = child.wait();
        killed
    }

    /// The pid of board `index`'s QEMU, as its `goose board` printed it
    /// (`board <id> 127.0.0.1:<port> pid <pid>`, the latest start's).
    ///
    /// # Panics
    ///
    /// If it is not a running board or printed no pid in time.
    pub fn qemu_pid(&self, index: usize) -> u32 {
        let node = &self.nodes[index];
        assert!(node.board, "node {} is not a board", node.id);
        let prefix = format!("board {} 127.0.0.1:{} pid ", node.id, node.port);
        let deadline = Instant::now() + QEMU_PID_WITHIN;
        loop {
            let text = fs::read_to_string(&node.log).unwrap_or_default();
            let pid = text
                .lines()
                .filter_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
                .next_back();
            if let Some(pid) = pid {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "board {} printed no QEMU pid:\n{}",
                node.id,
                self.log_tail(index)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills member `index` with SIGKILL and reaps it; returns the instant just before the
    /// signal. A board's QEMU is what is killed (its `goose board` then exits, reaped here);
    /// a desktop node's process, as [`Flock::kill9`].
    ///
    /// # Panics
    ///
    /// If the member is not running.
    pub fn kill_member(&mut self, index: usize) -> Instant {
        if !self.nodes[index].board {
            return self.kill9(index);
        }
        let qemu = libc::pid_t::try_from(self.qemu_pid(index)).expect("pid fits");
        let killed = Instant::now();
        // SAFETY: kill(2) has no memory effects; the pid is the QEMU child of our own
        // running, unreaped `goose board` child, which reaps it only after it dies, so the
        // pid cannot name another process yet.
        let result = unsafe { libc::kill(qemu, libc::SIGKILL) };
        assert_eq!(result, 0, "kill({qemu}): {}", io::Error::last_os_error());
        let mut child = self.nodes[index].child.take().expect("running");
        // `goose board` notices within its watch interval and exits 1.
        let deadline = Instant::now() + STOP_WAIT;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return killed;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        killed
    }

    /// Sends `signal` to board `index`'s QEMU (SIGSTOP freezes the whole emulated board, its
    /// clock included, as a stalled CPU or a starved emulator would be; SIGCONT resumes it).
    ///
    /// # Panics
    ///
    /// If it is not a running board or the signal cannot be sent.
    pub fn signal_qemu(&self, index: usize, signal: libc::c_int) {
        let qemu = self.qemu_pid(index);
        let id = self.nodes[index].id;
        send_signal(qemu, signal)
            .unwrap_or_else(|e| panic!("kill({qemu}, {signal}) (board {id}'s QEMU): {e}"));
    }

    /// Starves board `index`: a thread stops its QEMU for `stopped` of every `period`
    /// (SIGSTOP, then SIGCONT), until the returned guard ends or is dropped, which leaves
    /// it running. The guard borrows the flock, so the board cannot be killed, restarted
    /// and its pid reaped meanwhile.
    ///
    /// # Panics
    ///
    /// If it is not a running board, or `stopped` is not shorter than `period`.
    pub fn starve_qemu(&self, index: usize, stopped: Duration, period: Duration) -> Starving<'_> {
        assert!(stopped < period, "stopped {stopped:?} of every {period:?}");
        let qemu = self.qemu_pid(index);
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = Arc::clone(&done);
            let running = period - stopped;
            thread::spawn(move || {
                let mut cycles = 0;
                while !done.load(Ordering::Relaxed) {
                    send_signal(qemu, libc::SIGSTOP)?;
                    thread::sleep(stopped);
                    send_signal(qemu, libc::SIGCONT)?;
                    cycles += 1;
                    thread::sleep(running);
                }
                Ok(cycles)
            })
        };
        Starving {
            done,
            thread: Some(thread),
            _flock: PhantomData,
        }
    }

    /// Starts node `index` again on its data dir, with the same flags.
    ///
    /// # Panics
    ///
    /// If it is running.
    pub fn restart(&mut self, index: usize) {
        self.launch(index);
    }

    /// Starts desktop node `index` again with `--data-dir` alone (plus the flock's timing
    /// and `extra`), as the contract allows once the data dir holds a membership; later
    /// [`Flock::restart`]s keep these flags. Does not wait.
    ///
    /// # Panics
    ///
    /// If it is running.
    pub fn restart_from_data_dir(&mut self, index: usize, extra: &[&str]) {
        let node = &mut self.nodes[index];
        let mut args = vec![
            "node".to_owned(),
            "--data-dir".to_owned(),
            node.data_dir.display().to_string(),
        ];
        args.extend(self.timing.flags());
        args.extend(extra.iter().map(|&flag| flag.to_owned()));
        node.args = args;
        self.launch(index);
    }

    /// Node `index`'s exit status, if it has exited (it is then reaped and forgotten).
    pub fn exit_status(&mut self, index: usize) -> Option<ExitStatus> {
        let child = self.nodes[index].child.as_mut()?;
        let status = child.try_wait().ok()??;
        self.nodes[index].child = None;
        Some(status)
    }

    /// Whether node `index` is running.
    pub fn running(&mut self, index: usize) -> bool {
        self.nodes[index].child.is_some() && self.exit_status(index).is_none()
    }

    /// The last lines of node `index`'s log.
    pub fn log_tail(&self, index: usize) -> String {
        let text = fs::read_to_string(&self.nodes[index].log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// The folder every node's data dir and log live in.
    pub fn root(&self) -> &Path {
        self.root.path()
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            if let Some(mut child) = self.nodes[index].child.take() {
                // SIGKILL also ends a SIGSTOPped child.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if thread::panicking() {
            for index in 0..self.nodes.len() {
                eprintln!(
                    "--- node {} (127.0.0.1:{}) log tail ---\n{}",
                    self.nodes[index].id,
                    self.nodes[index].port,
                    self.log_tail(index)
                );
            }
        }
    }
}

/// `kill(pid, signal)`, for a process the caller started and has not reaped (a `goose
/// cluster` launcher, a board's QEMU), so that `pid` names no other process.
///
/// # Errors
///
/// `kill`'s, e.g. when the process is gone.
pub fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) has no memory effects. The callers pass the pid of a process of
    // theirs that they have not reaped (a board's QEMU: the child of a `goose board` child
    // that runs and is not reaped, the flock borrowed meanwhile), so the pid cannot name
    // another process unless that process itself died.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A board's QEMU being stopped and continued in a loop ([`Flock::starve_qemu`]); ended
/// (and the QEMU left running) by [`Starving::end`] or when dropped.
#[derive(Debug)]
pub struct Starving<'a> {
    done: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<io::Result<u64>>>,
    _flock: PhantomData<&'a Flock>,
}

impl Starving<'_> {
    /// Ends the loop once the QEMU runs again; returns how many times it was stopped.
    ///
    /// # Panics
    ///
    /// If a signal could not be sent (QEMU died) or the thread panicked.
    pub fn end(mut self) -> u64 {
        self.finish()
            .unwrap_or_else(|e| panic!("starving a board's QEMU: {e}"))
    }

    fn finish(&mut self) -> io::Result<u64> {
        self.done.store(true, Ordering::Relaxed);
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Ok(outcome)) => outcome,
            Some(Err(_)) => Err(io::Error::other("the starving thread panicked")),
            None => Ok(0),
        }
    }
}

impl Drop for Starving<'_> {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

// ---------------------------------------------------------------------------------------
// A `goose cluster`
// ---------------------------------------------------------------------------------------

/// A `goose cluster` launcher, whose nodes are its own children on consecutive ports; killed
/// by pid (SIGKILL: its nodes follow through their parent-death signal) and reaped when
/// dropped, unless [`Cluster::stop`] stopped it.
#[derive(Debug)]
pub struct Cluster {
    launcher: Child,
    lines: mpsc::Receiver<String>,
    /// Its nodes' ports: node `i + 1` listens on `ports[i]`.
    pub ports: Vec<u16>,
}

impl Cluster {
    /// Starts `goose cluster --nodes <nodes>` on free consecutive ports with its data under
    /// `data_dir`, `timing` and `extra` flags; a thread reads its stdout into
    /// [`Cluster::lines`]. Does not wait for the nodes.
    ///
    /// # Panics
    ///
    /// If it cannot be spawned.
    pub fn start(nodes: u16, timing: Timing, data_dir: &Path, extra: &[&OsStr]) -> Self {
        let base = free_port_range(nodes);
        let mut launcher = Command::new(goose_binary())
            .args(["cluster", "--nodes", &nodes.to_string()])
            .args(["--base-port", &base.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .args(timing.flags())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn goose cluster: {e}"));
        let (lines_in, lines) = mpsc::channel::<String>();
        if let Some(stdout) = launcher.stdout.take() {
            // Ends when the launcher closes its stdout (it exits) or the cluster drops.
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if lines_in.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Self {
            launcher,
            lines,
            ports: (0..nodes).map(|i| base + i).collect(),
        }
    }

    /// The lines the launcher printed so far and not yet received.
    pub fn lines(&self) -> &mpsc::Receiver<String> {
        &self.lines
    }

    /// Sends `signal` to the launcher (SIGHUP: a rolling restart).
    ///
    /// # Errors
    ///
    /// `kill`'s, e.g. when the launcher is gone.
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        send_signal(self.launcher.id(), signal)
    }

    /// SIGTERM to the launcher, which stops every node; its exit status if it exited
    /// within `within`.
    pub fn stop(&mut self, within: Duration) -> Option<ExitStatus> {
        let _ = self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.launcher.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if matches!(self.launcher.try_wait(), Ok(None)) {
            let _ = self.launcher.kill();
        }
        let _ = self.launcher.wait();
    }
}

// ---------------------------------------------------------------------------------------
// One-shot runs
// ---------------------------------------------------------------------------------------

/// `goose ctl --cluster-key-file <key> <addr> <command…>`: its reply line, `None` if it
/// printed none (no reply).
pub fn signed_ctl(key: &Path, addr: SocketAddr, command: &str) -> Option<String> {
    let key = key.display().to_string();
    let addr = addr.to_string();
    let mut args = vec!["ctl", "--cluster-key-file", key.as_str(), addr.as_str()];
    args.extend(command.split_ascii_whitespace());
    let outcome = run_goose(&args, CLIENT_RUN_WITHIN);
    let line = outcome.stdout.lines().next()?.to_owned();
    Some(line)
}

/// Writes a new cluster key to `folder/name` with `goose keygen --out` and returns its path.
///
/// # Panics
///
/// If `goose keygen` fails.
pub fn new_key_file(folder: &Path, name: &str) -> PathBuf {
    let path = folder.join(name);
    let file = path.display().to_string();
    let outcome = run_goose(&["keygen", "--out", file.as_str()], CLIENT_RUN_WITHIN);
    assert_eq!(outcome.code(), Some(0), "goose keygen: {outcome:?}");
    path
}

/// How a one-shot `goose` run ended.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit status; `None` if it was still running at the deadline (then killed).
    pub status: Option<ExitStatus>,
    /// What it wrote to stderr.
    pub stderr: String,
    /// What it wrote to stdout.
    pub stdout: String,
}

impl Outcome {
    /// Its exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|status| status.code())
    }
}

/// Runs `goose <args>` with `RUST_LOG=info`, waits at most `within` (then kills it), and
/// returns how it ended.
///
/// # Panics
///
/// If it cannot be spawned.
pub fn run_goose(args: &[&str], within: Duration) -> Outcome {
    let folder = TempDir::new("run");
    let (stdout_path, stderr_path) = (folder.path().join("out"), folder.path().join("err"));
    let mut child = Command::new(goose_binary())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn goose {args:?}: {e}"));
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        status,
        stderr: fs::read_to_string(stderr_path).unwrap_or_default(),
        stdout: fs::read_to_string(stdout_path).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------
// Timing changes, exits and logs (tests/assumptions_processes.rs)
// ---------------------------------------------------------------------------------------

impl Flock {
    /// Gives node `index` `timing` at its next [`Flock::restart`]: its `--heartbeat-ms` and
    /// `--election-timeout-ms` flags are replaced (added if it had none). Nodes of one
    /// flock may run with different timing, changed one restart at a time.
    pub fn set_timing(&mut self, index: usize, timing: Timing) {
        let args = &mut self.nodes[index].args;
        let mut kept = Vec::with_capacity(args.len());
        let mut words = std::mem::take(args).into_iter();
        while let Some(word) = words.next() {
            if word == "--heartbeat-ms" || word == "--election-timeout-ms" {
                let _value = words.next();
            } else {
                kept.push(word);
            }
        }
        kept.extend(timing.flags());
        *args = kept;
    }

    /// Waits at most `within` for node `index` to exit; its exit status if it did (it is
    /// then reaped and forgotten), `None` if it still runs or was not running.
    pub fn wait_exit(&mut self, index: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status(index) {
                return Some(status);
            }
            if self.nodes[index].child.is_none() || Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Node `index`'s whole log, over all its starts (empty if there is none yet).
    pub fn log(&self, index: usize) -> String {
        fs::read_to_string(&self.nodes[index].log).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Command lines, waits and figures
// ---------------------------------------------------------------------------------------

/// `node --id <id> --listen 127.0.0.1:<port> --data-dir <data_dir>`: the start of a desktop
/// node's command line.
pub fn node_args(id: u16, port: u16, data_dir: &Path) -> Vec<String> {
    vec![
        "node".into(),
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ]
}

/// Polls `condition` every `every` until it holds (then `true`), for at most `within`.
pub fn eventually(within: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(every);
    }
}

/// The CPU time (user + system, every thread) process `pid` has used, in clock ticks
/// ([`clock_ticks_per_second`]), from `/proc/<pid>/stat`.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the parenthesised command name (which may hold spaces): state is field 3,
    // utime 14, stime 15 of the whole line.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of [`cpu_ticks`].
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a system constant; no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks)
        .ok()
        .filter(|&ticks| ticks > 0)
        .unwrap_or(CLOCK_TICKS_PER_SECOND_DEFAULT)
}

/// The machine's load averages (1, 5 and 15 minutes), as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| text.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The nearest-rank percentile `p` (0–100) of `sorted`, `None` if it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// The pids of the live processes in process group `group` (zombies left out: they run
/// nothing), read from `/proc/<pid>/stat`.
pub fn group_members(group: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields.first(), fields.get(2));
        if state != Some(&"Z") && pgrp.and_then(|g| g.parse::<u32>().ok()) == Some(group) {
            members.push(pid);
        }
    }
    members
}

/// An `--exec` command that appends `<GOOSE_ID> <GOOSE_TERM> <ns since the epoch>` to `file`
/// about every 5 ms (a `date` and a `sleep` per line), for as long as it runs: the lines
/// tell when each child ran, in the children's own words.
pub fn exec_ticker(file: &Path) -> String {
    format!(
        "while :; do echo \"$GOOSE_ID $GOOSE_TERM $(date +%s%N)\" >> {}; sleep 0.005; done",
        file.display()
    )
}

/// One `--exec` child's run, from its [`exec_ticker`] lines: node, term, first and last
/// line (ns since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecRun {
    /// The node that ran it.
    pub id: u16,
    /// The goose term it ran for.
    pub term: u64,
    /// Its first line.
    pub first: u128,
    /// Its last line.
    pub last: u128,
}

/// The runs in an [`exec_ticker`] file, one per node and term, in order of their first
/// line.
pub fn exec_runs(file: &Path) -> Vec<ExecRun> {
    let text = fs::read_to_string(file).unwrap_or_default();
    let mut runs: BTreeMap<(u16, u64), ExecRun> = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [id, term, at] = words.as_slice() else {
            continue;
        };
        let (Ok(id), Ok(term), Ok(at)) = (id.parse(), term.parse(), at.parse::<u128>()) else {
            continue;
        };
        let run = runs.entry((id, term)).or_insert(ExecRun {
            id,
            term,
            first: at,
            last: at,
        });
        run.first = run.first.min(at);
        run.last = run.last.max(at);
    }
    let mut runs: Vec<ExecRun> = runs.into_values().collect();
    runs.sort_by_key(|run| run.first);
    runs
}

/// The gaps between consecutive runs (one's first line after the other's last), in ms, or
/// the first two runs that overlap.
pub fn exec_gaps(runs: &[ExecRun]) -> Result<Vec<f64>, (ExecRun, ExecRun)> {
    let mut gaps = Vec::with_capacity(runs.len());
    for pair in runs.windows(2) {
        let (before, after) = (pair[0], pair[1]);
        if after.first <= before.last {
            return Err((before, after));
        }
        gaps.push((after.first - before.last) as f64 / 1e6);
    }
    Ok(gaps)
}
