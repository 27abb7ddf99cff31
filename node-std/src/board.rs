//! `goose board`: one board of a mixed flock, the firmware in `qemu-system-arm`
//! (`lm3s6965evb`), and the QEMU command line `goose cluster --boards` runs too.
//!
//! The command line is `goose_board_args::qemu`'s, word for word (node-embedded/README.md,
//! "The QEMU command line"): the fixed board arguments, slirp networking with the board's
//! UDP port forwarded from the host's `127.0.0.1:<port>`, the firmware, and the board's own
//! flags in `-append` (`goose_board_args::write`, which the firmware parses), its state in
//! `<data-dir>/board.flash`.
//! Peers are given as the host sees them (`127.0.0.1:<q>`); the board reaches them at slirp's
//! 10.0.2.2. Nothing else is allowed as a peer: only loopback keeps a board's traffic on
//! this machine.
//!
//! With `--cluster-key-file <f>`, the key is checked here first (the same file rule as
//! `goose node`), then the board's command line gets `--key-file <f as an absolute path>`
//! and the firmware reads the file itself through semihosting: the key never appears on
//! QEMU's command line, which every `ps` shows.
//!
//! `goose board` stays in the foreground with QEMU as its child (in its own process group,
//! so a terminal's Ctrl-C reaches the launcher, which stops QEMU). SIGINT or SIGTERM stop
//! QEMU and exit 0; QEMU gets `PR_SET_PDEATHSIG`, so it never outlives a `goose board` (or a
//! launcher) killed with SIGKILL. When QEMU exits by itself, `goose board` exits with its
//! code (the firmware's: 0 removed from the flock, 1 state or key file unusable or storage
//! failed, 2 bad command line).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::io::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use goose_board_args::{
    self as args, qemu, BoardArgs, KEY_FILE_SIZE_MAX, MEMBERS_MAX as BOARD_MEMBERS_MAX,
    PATH_SIZE_MAX, TOKEN_SIZE_MAX,
};
use goose_core::auth::key::ClusterKey;
use goose_core::{Config, Member, NodeId};

use crate::cluster::set_parent_death_signal;
use crate::storage_file::{DataDir, DataDirError};

/// The state file's name in a board's data dir.
pub(crate) const STATE_FILE: &str = "board.flash";
/// How often `goose board` looks at its QEMU child and its signal flag.
const WATCH_INTERVAL: Duration = Duration::from_millis(20);
/// How long QEMU gets to exit after SIGTERM before it is killed (it exits at once).
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often a stopping `goose board` checks whether QEMU has exited.
const STOP_POLL: Duration = Duration::from_millis(5);

/// The firmware a `cargo build --release` in node-embedded/firmware produces, in this
/// build's source tree.
pub(crate) fn default_firmware() -> PathBuf {
    let node_std = Path::new(env!("CARGO_MANIFEST_DIR"));
    node_std
        .parent()
        .unwrap_or(node_std)
        .join(qemu::FIRMWARE_PATH)
}

/// Why a board could not run.
#[derive(Debug)]
pub(crate) enum BoardError {
    /// Flags the board cannot run with (exit 2, like any usage error).
    Usage(String),
    /// No firmware at this path.
    FirmwareMissing(PathBuf),
    /// `qemu-system-arm` is not on the `PATH`.
    QemuMissing,
    /// The data dir could not be created, or is locked by another process.
    DataDir(DataDirError),
    /// The cluster key file cannot be read, or holds no key (the path, and why).
    KeyFile(PathBuf, String),
    /// QEMU could not be started, or the signal handlers installed.
    Spawn(io::Error),
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(message) => f.write_str(message),
            Self::FirmwareMissing(path) => write!(
                f,
                "no firmware at {}: build it with `cargo build --release` in \
                 node-embedded/firmware, or give --firmware <elf>",
                path.display()
            ),
            Self::QemuMissing => write!(
                f,
                "{} not found on the PATH: install it (Debian: apt-get install qemu-system-arm)",
                qemu::PROGRAM
            ),
            Self::DataDir(error) => write!(f, "{error}"),
            Self::KeyFile(path, why) => write!(f, "cluster key file {}: {why}", path.display()),
            Self::Spawn(error) => write!(f, "cannot start {}: {error}", qemu::PROGRAM),
        }
    }
}

impl std::error::Error for BoardError {}

impl From<DataDirError> for BoardError {
    fn from(error: DataDirError) -> Self {
        Self::DataDir(error)
    }
}

/// One board: what its QEMU command line is made of.
#[derive(Debug, Clone)]
pub(crate) struct BoardSpec {
    /// Its id, timing and voter target (the board uses id and timing).
    pub(crate) config: Config,
    /// The host port forwarded to the board (the board listens on the same port).
    pub(crate) port: u16,
    /// The bootstrap membership as the host sees it, the board at `127.0.0.1:<port>`.
    pub(crate) members: Vec<Member>,
    /// Where `board.flash` lives.
    pub(crate) data_dir: PathBuf,
    /// The firmware ELF.
    pub(crate) firmware: PathBuf,
    /// `--control-token`, passed to the firmware.
    pub(crate) control_token: Option<String>,
    /// `--cluster-key-file`: the firmware gets its absolute path and reads the key itself.
    pub(crate) cluster_key_file: Option<PathBuf>,
}

impl BoardSpec {
    /// Checks what the firmware would refuse, so the user hears it before QEMU starts:
    /// at most 5 members, IPv4 loopback peers only, a state path and token it can take.
    ///
    /// # Errors
    ///
    /// [`BoardError::Usage`] naming the problem.
    pub(crate) fn check(&self) -> Result<(), BoardError> {
        let id = self.config.id;
        if self.members.len() > BOARD_MEMBERS_MAX {
            return Err(BoardError::Usage(format!(
                "a board holds at most {BOARD_MEMBERS_MAX} members (itself and {} peers), \
                 got {}",
                BOARD_MEMBERS_MAX - 1,
                self.members.len()
            )));
        }
        for member in self.members.iter().filter(|m| m.id != id) {
            if !is_ipv4_loopback(member.addr) {
                return Err(BoardError::Usage(format!(
                    "peer {}={}: a board reaches peers on this machine only, given as the \
                     host sees them (127.0.0.1:<port>)",
                    member.id, member.addr
                )));
            }
        }
        let state = self.state_path();
        let state = state.to_str().ok_or_else(|| {
            BoardError::Usage(format!("data dir {} is not UTF-8", self.data_dir.display()))
        })?;
        if state.len() > PATH_SIZE_MAX || !args::is_plain_path(state) {
            return Err(BoardError::Usage(format!(
                "state path {state:?}: the firmware takes at most {PATH_SIZE_MAX} bytes \
                 without spaces or quotes"
            )));
        }
        if let Some(token) = &self.control_token {
            if token.len() > TOKEN_SIZE_MAX {
                return Err(BoardError::Usage(format!(
                    "a board's control token holds at most {TOKEN_SIZE_MAX} bytes"
                )));
            }
        }
        Ok(())
    }

    /// The key file as the firmware gets it: absolute (QEMU may run elsewhere), checked to
    /// hold a key the firmware reads (`ClusterKey::from_file_bytes`, at most
    /// [`KEY_FILE_SIZE_MAX`] bytes) and to fit its command line. `None` without a key.
    ///
    /// # Errors
    ///
    /// [`BoardError::KeyFile`] naming the file and the problem.
    pub(crate) fn key_path(&self) -> Result<Option<String>, BoardError> {
        let Some(given) = &self.cluster_key_file else {
            return Ok(None);
        };
        let refused = |why: String| BoardError::KeyFile(given.clone(), why);
        let path = std::fs::canonicalize(given).map_err(|e| refused(e.to_string()))?;
        let file = std::fs::File::open(&path).map_err(|e| refused(e.to_string()))?;
        let mut bytes = Vec::new();
        let limit = u64::try_from(KEY_FILE_SIZE_MAX + 1).unwrap_or(u64::MAX);
        io::Read::read_to_end(&mut io::Read::take(file, limit), &mut bytes)
            .map_err(|e| refused(e.to_string()))?;
        if bytes.len() > KEY_FILE_SIZE_MAX {
            return Err(refused(format!(
                "longer than the {KEY_FILE_SIZE_MAX} bytes a board reads"
            )));
        }
        ClusterKey::from_file_bytes(&bytes)
            .map_err(|e| refused(format!("{e} (or exactly 32 raw bytes)")))?;
        let text = path
            .to_str()
            .filter(|text| text.len() <= PATH_SIZE_MAX && args::is_plain_path(text))
            .ok_or_else(|| {
                refused(format!(
                    "the firmware takes an absolute path of at most {PATH_SIZE_MAX} \
                     UTF-8 bytes without spaces or quotes, not {}",
                    path.display()
                ))
            })?;
        Ok(Some(text.to_owned()))
    }

    /// `<data-dir>/board.flash`.
    pub(crate) fn state_path(&self) -> PathBuf {
        self.data_dir.join(STATE_FILE)
    }

    /// The QEMU command for one boot with election seed `seed`: stdin closed, in its own
    /// process group (the caller adds the parent-death signal). Check the spec first
    /// ([`BoardSpec::check`]).
    ///
    /// # Errors
    ///
    /// [`BoardError::Usage`] if the membership does not fit a board, [`BoardError::KeyFile`]
    /// if the key file is no (longer a) key.
    pub(crate) fn command(&self, qemu: &Path, seed: u64) -> Result<Command, BoardError> {
        let id = self.config.id;
        let members = heapless::Vec::from_slice(&self.members).map_err(|()| {
            BoardError::Usage(format!("board {id}: at most {BOARD_MEMBERS_MAX} members"))
        })?;
        let control_token =
            match &self.control_token {
                Some(token) => Some(heapless::String::try_from(token.as_str()).map_err(|()| {
                    BoardError::Usage(format!("board {id}: control token too long"))
                })?),
                None => None,
            };
        let state = self.state_path();
        let key_file = self.key_path()?;
        let board_args = BoardArgs {
            node: self.config,
            port: self.port,
            members,
            seed,
            control_token,
            state: state.to_str(),
            key_file: key_file.as_deref(),
            lan: None,
        };
        let mut append = String::new();
        let mut nic = String::new();
        // Writing into a String cannot fail.
        let _ = args::write(&mut append, &board_args);
        let _ = qemu::write_nic(&mut nic, id, self.port);
        let mut command = Command::new(qemu);
        command
            .args(qemu::FIXED_ARGS)
            .arg("-nic")
            .arg(nic)
            .arg("-kernel")
            .arg(&self.firmware)
            .arg("-append")
            .arg(append)
            .stdin(Stdio::null())
            .process_group(0);
        Ok(command)
    }
}

/// A fresh election seed for each boot of board `id` (so restarts draw new timeouts).
pub(crate) fn fresh_seed(id: NodeId) -> u64 {
    RandomState::new().hash_one((id.get(), SystemTime::now()))
}

fn is_ipv4_loopback(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
}

/// `qemu-system-arm` on the `PATH`, and the firmware: both must exist before a board can
/// start. Returns QEMU's path.
///
/// # Errors
///
/// [`BoardError::FirmwareMissing`] or [`BoardError::QemuMissing`].
pub(crate) fn check_tools(firmware: &Path) -> Result<PathBuf, BoardError> {
    if !firmware.is_file() {
        return Err(BoardError::FirmwareMissing(firmware.to_path_buf()));
    }
    find_on_path(qemu::PROGRAM).ok_or(BoardError::QemuMissing)
}

/// The first executable file called `name` in a directory of `$PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// Runs one board in the foreground until QEMU exits (its exit code) or SIGINT/SIGTERM
/// (then QEMU is stopped, and 0). Prints `board <id> 127.0.0.1:<port> pid <qemu pid>`.
///
/// # Errors
///
/// See [`BoardError`]: [`BoardError::Usage`] is a reason to exit 2, the others to exit 1.
pub(crate) fn run(spec: &BoardSpec) -> Result<u8, BoardError> {
    spec.check()?;
    spec.key_path()?;
    let qemu = check_tools(&spec.firmware)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(BoardError::Spawn)?;
    }
    // Creates the dir (semihosting cannot) and keeps any other goose process off it.
    let _data_dir = DataDir::open(&spec.data_dir)?;
    let id = spec.config.id;
    let mut command = spec.command(&qemu, fresh_seed(id))?;
    set_parent_death_signal(&mut command);
    let mut child = command.spawn().map_err(BoardError::Spawn)?;
    let _ = writeln!(
        io::stdout(),
        "board {id} 127.0.0.1:{} pid {}",
        spec.port,
        child.id()
    );
    log::info!(
        "board {id}: {} running {} as node {id} on 127.0.0.1:{}, state {}",
        qemu.display(),
        spec.firmware.display(),
        spec.port,
        spec.state_path().display()
    );
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let code = status.code();
                match code {
                    Some(0) => log::info!("board {id}: QEMU exited 0 (removed from the flock)"),
                    Some(code) => log::error!(
                        "board {id}: QEMU exited {code} (1: state or key file unusable, or \
                         storage failed; 2: bad command line; see its lines above)"
                    ),
                    None => log::error!("board {id}: QEMU ended by a signal ({status})"),
                }
                return Ok(code.and_then(|c| u8::try_from(c).ok()).unwrap_or(1));
            }
            Ok(None) => {}
            Err(error) => log::warn!("board {id}: cannot wait for QEMU: {error}"),
        }
        if stop.load(Ordering::SeqCst) {
            log::info!("board {id}: signalled; stopping QEMU");
            stop_child(&mut child);
            return Ok(0);
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
}

/// SIGTERM to QEMU, SIGKILL after [`STOP_GRACE`]; reaps it.
pub(crate) fn stop_child(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; `pid` is our own child, not yet
        // reaped, so it cannot have been reused by another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(STOP_POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn id(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn member(n: u16, addr: &str) -> Member {
        Member {
            id: id(n),
            addr: addr.parse().unwrap(),
            voter: true,
        }
    }

    fn spec(members: Vec<Member>) -> BoardSpec {
        BoardSpec {
            config: Config::new(id(4)),
            port: 9903,
            members,
            data_dir: PathBuf::from("data/4"),
            firmware: PathBuf::from("fw.elf"),
            control_token: None,
            cluster_key_file: None,
        }
    }

    fn five() -> Vec<Member> {
        (1..=5)
            .map(|n| member(n, &format!("127.0.0.1:{}", 9899 + n)))
            .collect()
    }

    #[test]
    fn the_command_is_the_documented_one() {
        let spec = spec(five());
        spec.check().unwrap();
        let command = spec
            .command(Path::new("/usr/bin/qemu-system-arm"), 77)
            .unwrap();
        let words: Vec<String> = command
            .get_args()
            .map(|word| word.to_string_lossy().into_owned())
            .collect();
        let expected = [
            "-M",
            "lm3s6965evb",
            "-nographic",
            "-monitor",
            "none",
            "-semihosting-config",
            "enable=on,target=native",
            "-nic",
            "user,model=stellaris,mac=02:00:00:00:00:04,hostfwd=udp:127.0.0.1:9903-:9903",
            "-kernel",
            "fw.elf",
            "-append",
            "--id 4 --port 9903 --seed 77 --heartbeat-ms 50 --election-timeout-ms 150-300 \
             --peer 1=127.0.0.1:9900 --peer 2=127.0.0.1:9901 --peer 3=127.0.0.1:9902 \
             --peer 5=127.0.0.1:9904 --state data/4/board.flash",
        ];
        assert_eq!(words, expected);
        assert_eq!(command.get_program(), "/usr/bin/qemu-system-arm");
    }

    #[test]
    fn refuses_what_the_firmware_would() {
        let mut six = five();
        six.push(member(6, "127.0.0.1:9905"));
        assert!(matches!(spec(six).check(), Err(BoardError::Usage(_))));
        let mut remote = five();
        remote[0].addr = SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 9900));
        assert!(matches!(spec(remote).check(), Err(BoardError::Usage(_))));
        let mut v6 = five();
        v6[0].addr = "[::1]:9900".parse().unwrap();
        assert!(matches!(spec(v6).check(), Err(BoardError::Usage(_))));
        let mut spaced = spec(five());
        spaced.data_dir = PathBuf::from("my data/4");
        assert!(matches!(spaced.check(), Err(BoardError::Usage(_))));
        let mut long_token = spec(five());
        long_token.control_token = Some("t".repeat(TOKEN_SIZE_MAX + 1));
        assert!(matches!(long_token.check(), Err(BoardError::Usage(_))));
    }

    #[test]
    fn the_key_file_goes_to_the_firmware_as_an_absolute_path_never_the_key() {
        let dir = std::env::temp_dir().join(format!("goose-board-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hex = "0123456789abcdef".repeat(4);
        std::fs::write(dir.join("cluster.key"), format!("{hex}\n")).unwrap();
        std::fs::write(dir.join("short.key"), "0123").unwrap();
        let mut keyed = spec(five());
        // With a `..` in it: the firmware gets the canonical path.
        keyed.cluster_key_file = Some(
            dir.join("..")
                .join(dir.file_name().unwrap())
                .join("cluster.key"),
        );
        let command = keyed.command(Path::new("qemu"), 77).unwrap();
        let words: Vec<String> = command
            .get_args()
            .map(|word| word.to_string_lossy().into_owned())
            .collect();
        let append = words.last().unwrap();
        let absolute = std::fs::canonicalize(dir.join("cluster.key")).unwrap();
        assert!(
            append.ends_with(&format!(" --key-file {}", absolute.display())),
            "{append}"
        );
        assert!(
            words.iter().all(|word| !word.contains(&hex)),
            "no key: {words:?}"
        );
        keyed.cluster_key_file = Some(dir.join("short.key"));
        let error = keyed.key_path().unwrap_err();
        assert!(matches!(error, BoardError::KeyFile(..)), "{error}");
        assert!(error.to_string().contains("short.key"), "{error}");
        keyed.cluster_key_file = Some(dir.join("missing.key"));
        assert!(matches!(keyed.key_path(), Err(BoardError::KeyFile(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_tools_are_named() {
        let missing = Path::new("/nonexistent/goose-firmware");
        let error = check_tools(missing).unwrap_err();
        assert!(
            error.to_string().contains("/nonexistent/goose-firmware"),
            "{error}"
        );
        assert!(BoardError::QemuMissing
            .to_string()
            .contains("qemu-system-arm"));
    }
}
