//! `goose`: the Duck Duck Goose desktop node, its cluster launcher and its clients.
//!
//! This file is the CLI (the contract's flags, usage and exit codes) and nothing else:
//!
//! - `goose node` runs one node ([`event_loop`], [`storage_file`], [`clock`]);
//! - `goose cluster` (also what a bare `goose` runs) launches a local flock ([`cluster`]),
//!   some of it boards with `--boards`;
//! - `goose board` runs one board, the firmware in QEMU ([`board`]);
//! - `goose whois` and `goose ctl` talk the text protocol to nodes ([`client`]);
//! - `goose keygen` makes a cluster key, which `--cluster-key-file` reads ([`key_file`]);
//! - `goose exec-guard` (hidden) runs a node's `--exec` command for it ([`exec`]);
//! - `goose vip-release` removes a stopped node's `--vip` addresses ([`vip`]).
//!
//! `goose node --config <file>` reads the same flags from a TOML file ([`config`]), the
//! command line overriding it; SIGHUP reads it again ([`reload_settings`]).
//!
//! Exit codes: 0 success, 1 a runtime failure (port in use, locked or corrupt data dir,
//! storage failure, no reply), 2 bad flags (clap's usage-error code, also used for values
//! clap parses but we refuse, such as `--id 0`, or a `--cluster-key-file` that holds no
//! key).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod board;
mod board_config;
mod check;
mod child;
mod client;
mod clock;
mod cluster;
mod config;
mod dashboard;
mod event_loop;
mod exec;
mod hooks;
mod http;
mod key_file;
mod status;
mod storage_file;
mod vip;

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;

use clap::builder::StyledStr;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use goose_core::limits::MEMBERS_MAX;
use goose_core::ratelimit::{self, RateLimit};
use goose_core::{Config, Duration, Member, NodeId};
use key_file::KeyFile;

/// An id for checks that do not depend on it (timing).
const ANY_ID: NodeId = match NodeId::new(1) {
    Some(id) => id,
    None => panic!("1 is a valid node id"),
};

/// Duck Duck Goose: a flock of nodes elects exactly one goose (a lease-holding Raft
/// leader); every other node is a duck. Without a subcommand, runs `goose cluster`.
#[derive(Debug, Parser)]
#[command(name = "goose", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one node of a flock.
    #[command(after_help = NODE_AFTER_HELP)]
    Node(Box<NodeArgs>),
    /// Launch a local flock of `goose node` processes and show who is goose.
    #[command(after_help = CLUSTER_AFTER_HELP)]
    Cluster(ClusterArgs),
    /// Ask nodes who they are: prints "<ip:port>: goose|duck|-" per address, in order; exit
    /// 0 iff exactly one answered goose.
    Whois(WhoisArgs),
    /// Send a control command to a node and print its reply (exit 1 on err, 3 on no reply).
    #[command(after_help = CTL_AFTER_HELP)]
    Ctl(CtlArgs),
    /// Run one board: the firmware in qemu-system-arm (lm3s6965evb), its UDP port forwarded
    /// to 127.0.0.1:<port>.
    #[command(after_help = BOARD_AFTER_HELP)]
    Board(BoardArgs),
    /// Print a new cluster key (64 hex digits from the OS random number generator), for
    /// --cluster-key-file.
    #[command(after_help = KEYGEN_AFTER_HELP)]
    Keygen(KeygenArgs),
    /// Write the configuration page of a real board (NUCLEO-F429ZI): its id, port,
    /// address, peers, timing and key, for `probe-rs download`.
    BoardConfig(board_config::BoardConfigArgs),
    /// Internal: what `goose node --exec` runs the command under (see docs/interface.md).
    #[command(hide = true)]
    ExecGuard(ExecGuardArgs),
    /// Remove a node's --vip addresses from their interfaces once the node has stopped
    /// (a systemd unit's ExecStopPost): a node killed with SIGKILL cannot.
    #[command(after_help = VIP_RELEASE_AFTER_HELP)]
    VipRelease(VipReleaseArgs),
}

const VIP_RELEASE_AFTER_HELP: &str = "\
Run it after the node has stopped, however it stopped (kill -9 too): deploy/goose.service does
  ExecStopPost=/usr/local/bin/goose vip-release --config /etc/goose/goose.toml
It reads vip, vip-dev and data-dir from the config file (ignoring the node's other keys),
refuses to run while a node holds that data dir (a running node lets go of its addresses
itself), and removes each address that is on its interface. Exit 0 when none is left,
1 otherwise. Needs CAP_NET_ADMIN and CAP_NET_RAW, as the node does.";

const KEYGEN_AFTER_HELP: &str = "\
Usage in a flock:
  goose keygen > flock.key && chmod 600 flock.key     (or: goose keygen --out flock.key)
  copy flock.key to every machine of the flock, then give every node the same key:
  goose node … --cluster-key-file flock.key
  goose cluster --cluster-key-file flock.key          (passes it to every node)
  goose ctl --cluster-key-file flock.key 127.0.0.1:9900 status

With a key, every peer frame is authenticated (HMAC-SHA256/128) and replays are dropped, and
control must be signed: `goose ctl --cluster-key-file` signs; plain `ctl …` datagrams (nc,
the scripts) are answered `err forbidden`. Without a key, anyone who can send UDP to a
node's port can forge votes and heartbeats. Keep the file readable by the node's user only.";

const NODE_AFTER_HELP: &str = "\
Examples:
  goose node --id 1 --listen 127.0.0.1:9900 --peer 2=127.0.0.1:9901 --peer 3=127.0.0.1:9902
      a node of a new flock of three (every node gets the same peer list)
  goose node --id 4 --listen 127.0.0.1:9903 --join 127.0.0.1:9900
      a new node that asks the flock to add it (as a learner, promoted to voter once caught
      up while voters are fewer than --voters)
  goose node --data-dir goose-data/4
      a restart: id, address and membership come from the data dir

Leaving: SIGTERM or SIGINT on the goose hands leadership to the most up-to-date voter
(`ctl transfer`) and exits 0 once the handoff is sent (or failed, within an election
timeout); any other node exits 0 at once. A node whose removal (`ctl remove <id>`) committed
exits 0. Either way the node first goes silent and lets a running or pending hook finish
(the duck hook of a goose that hands off); a second signal exits at once.

Hooks: --on-goose and --on-duck run with `sh -c`, never two at once, with GOOSE_ID,
GOOSE_TERM (a fencing token) and GOOSE_ROLE (goose|duck) in their environment. The goose hook
runs once the lease holds; the duck hook the moment the node stops being goose (step-down,
lease lapse, handoff, `ctl stop`, exit, fail-stop) and once at start. A transition during a
hook waits, and only the latest one waiting runs. A hook still running after
--hook-timeout-ms gets SIGTERM, then SIGKILL a second later (with its process group). A
handoff sends TimeoutNow only once the old goose's duck hook has ended.

Exec: --exec runs `sh -c <CMD>` only while this node is goose. It gets SIGTERM when the lease
left drops below --exec-grace-ms and SIGKILL at the lease's end, so it is gone before any
other node can be goose; a handoff stops it first. It dies with the node, even with kill -9.
Only a frozen node (SIGSTOP, a paused VM) can leave it running: pass GOOSE_TERM (a fencing
token) to whatever it changes.

Config: --config <file> reads these flags from a TOML file (listen = \"10.0.0.1:9900\",
peer = [\"2=10.0.0.2:9900\"], single = true); the command line overrides it. SIGHUP reads it
again and applies the hooks, the check, the reply limits and the control token.

Authentication: with --cluster-key-file (`goose keygen --help`), every peer frame is sealed
and checked (drops counted in `ctl status`: drop_unsealed, drop_bad_mac, drop_replay,
drop_senders) and control must be signed (`goose ctl --cluster-key-file`). Without it,
anyone who can send UDP to --listen can forge votes and heartbeats. At every start the node
raises the boot epoch in <data-dir>/epoch, durably, before it sends anything; a corrupt
epoch file is refused, never reset.";

const CLUSTER_AFTER_HELP: &str = "\
Signals to the launcher (it prints its pid):
  SIGHUP           rolling restart: every node in turn (ducks first, the goose last) gets
                   SIGTERM, so a goose hands off first; it is restarted with `goose node
                   --data-dir <dir>/<id>` alone, and the next node waits until it answers
                   again and follows a goose. With the dashboard: its terminal closed, so
                   the flock stops (as `q` does)
  SIGINT, SIGTERM  stops the flock, ducks first and the goose last (nobody is left to hand
                   off to, so this costs no election), and exits 0";

const BOARD_AFTER_HELP: &str = "\
Example, a mixed flock of three desktop nodes and two boards:
  goose node --id 1 --listen 127.0.0.1:9900 --peer 2=127.0.0.1:9901 … --peer 5=127.0.0.1:9904
  goose board --id 4 --port 9903 --peer 1=127.0.0.1:9900 … --peer 5=127.0.0.1:9904
(or all five with `goose cluster --boards 2`). Peers are given as this machine sees them
(127.0.0.1:<port>); a board holds at most 5 members. Its state is <data-dir>/board.flash.
It prints `board <id> 127.0.0.1:<port> pid <qemu pid>` and stays in the foreground;
SIGINT or SIGTERM stop QEMU and exit 0; QEMU's own exit code is passed on (1: state file
unusable or storage failed, 2: bad command line, 0: removed from the flock).";

const CTL_AFTER_HELP: &str = "\
Commands:
  status                      role, term, goose, members, voters, learners, counters
  stop | start                go silent to peers / resume from the persisted state
  partition <peer>[,<peer>…]  drop peer traffic with these ids or ip:ports; heal: none
  transfer [<id>]             goose: hand off (to <id>, or the most up-to-date voter);
                              answers `ok to=<id>` once sent
  add <id> <ip:port>          goose: add a learner (promoted once caught up, up to the
                              voter target); one change at a time, else `err busy`
  remove <id>                 goose: remove a voter or learner; it exits 0 once committed
A duck answers goose-only commands with `err not-goose goose=<id> addr=<ip:port>`, which
`goose ctl` follows once.

With --cluster-key-file (a node started with a key accepts nothing else): `goose ctl` asks
the node for a nonce (`ctl nonce`), signs the command over it and sends
`ctl sig=<tag> nonce=<nonce> <command…>`; on `err stale-nonce` it fetches a fresh nonce and
tries once more. A node with a key answers unsigned control `err forbidden`, even from
this machine; a node without one answers signed control `err no-key`.";

/// Timing shared by `node` and `cluster`; every node of a flock should use the same.
#[derive(Debug, Clone, Copy, Args)]
struct TimingArgs {
    /// Heartbeat interval of a leader, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 50,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    heartbeat_ms: u64,
    /// Randomized election timeout range, in milliseconds.
    #[arg(long, value_name = "MIN-MAX", default_value = "150-300")]
    election_timeout_ms: TimeoutRange,
}

impl TimingArgs {
    /// The core configuration for node `id`, or why this timing is refused.
    fn config(&self, id: NodeId) -> Result<Config, String> {
        let config = Config::with_timing(
            id,
            Duration::from_millis(self.heartbeat_ms),
            Duration::from_millis(self.election_timeout_ms.min),
            Duration::from_millis(self.election_timeout_ms.max),
        );
        config.validate().map_err(|error| {
            format!(
                "--heartbeat-ms {} with --election-timeout-ms {}: {error} (the lease is {} ms)",
                self.heartbeat_ms,
                self.election_timeout_ms,
                config.lease_duration().millis()
            )
        })?;
        Ok(config)
    }

    /// The flags that reproduce this timing on a child's command line.
    fn to_flags(self) -> [String; 4] {
        [
            "--heartbeat-ms".to_owned(),
            self.heartbeat_ms.to_string(),
            "--election-timeout-ms".to_owned(),
            self.election_timeout_ms.to_string(),
        ]
    }
}

/// `<min>-<max>` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TimeoutRange {
    min: u64,
    max: u64,
}

impl FromStr for TimeoutRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage = || format!("expected <min>-<max> in milliseconds, e.g. 150-300, got {text:?}");
        let (min, max) = text.split_once('-').ok_or_else(usage)?;
        let min: u64 = min.trim().parse().map_err(|_| usage())?;
        let max: u64 = max.trim().parse().map_err(|_| usage())?;
        if min == 0 || min > max || max > 600_000 {
            return Err(format!("need 0 < min <= max <= 600000, got {min}-{max}"));
        }
        Ok(Self { min, max })
    }
}

impl std::fmt::Display for TimeoutRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// `<id>=<ip:port>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PeerArg {
    id: NodeId,
    addr: SocketAddr,
}

impl FromStr for PeerArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (id, addr) = text.split_once('=').ok_or_else(|| {
            format!("expected <id>=<ip:port>, e.g. 2=127.0.0.1:9901, got {text:?}")
        })?;
        let id = parse_node_id(id)?;
        let addr = parse_peer_addr(addr)?;
        Ok(Self { id, addr })
    }
}

fn parse_node_id(text: &str) -> Result<NodeId, String> {
    text.parse::<u16>()
        .ok()
        .and_then(NodeId::new)
        .ok_or_else(|| format!("node id must be 1..65535, got {text:?}"))
}

/// `<ip>:<port>` or `<host name>:<port>`, resolved now, with a port other than 0. A name
/// takes its first IPv4 address if it has one (so that every node resolving `localhost`
/// agrees), else its first address.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let usage = || {
        format!(
            "expected <ip>:<port> or <host>:<port> (e.g. 127.0.0.1:9900, [::1]:9900, \
             node1.example:9900), got {text:?}"
        )
    };
    let addr = match text.parse::<SocketAddr>() {
        Ok(addr) => addr,
        Err(_) => {
            let (host, port) = text.rsplit_once(':').ok_or_else(usage)?;
            let port: u16 = port.parse().map_err(|_| usage())?;
            let valid = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.';
            if host.is_empty() || !host.bytes().all(valid) {
                return Err(usage());
            }
            let found: Vec<SocketAddr> = (host, port)
                .to_socket_addrs()
                .map_err(|error| format!("cannot resolve {host:?}: {error}"))?
                .collect();
            let first = found.iter().find(|addr| addr.is_ipv4()).or(found.first());
            *first.ok_or_else(|| format!("{host:?} resolves to no address"))?
        }
    };
    if addr.port() == 0 {
        return Err(format!(
            "port 0 is not an address peers can reach: {text:?}"
        ));
    }
    Ok(addr)
}

/// An address a peer can be reached at: [`parse_addr`], and not `0.0.0.0` or `[::]`.
fn parse_peer_addr(text: &str) -> Result<SocketAddr, String> {
    let addr = parse_addr(text)?;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "{text:?} is every address of a machine, not one a peer can reach"
        ));
    }
    Ok(addr)
}

/// A control token: one non-empty word of printable ASCII, as it must appear in
/// `ctl token=<T> …`.
fn parse_token(text: &str) -> Result<String, String> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_graphic()) {
        return Err("the token must be non-empty printable ASCII without spaces".to_owned());
    }
    Ok(text.to_owned())
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// This node's id, 1..65535. Needed for a new node; a restart reads it from --data-dir.
    #[arg(long, value_parser = parse_node_id)]
    id: Option<NodeId>,
    /// The UDP address to listen on (peer traffic, probes and control), e.g. 127.0.0.1:9900,
    /// [::1]:9900 or a host name (resolved at start). Needed for a new node; a restart uses
    /// its address in the stored membership. 0.0.0.0 or [::] needs --advertise.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    listen: Option<SocketAddr>,
    /// Where peers reach this node, if not at --listen (NAT, or --listen 0.0.0.0:<port>):
    /// what the membership stores and --join asks for.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_peer_addr)]
    advertise: Option<SocketAddr>,
    /// Another member of a new flock; repeat for each. Only seeds an empty data dir (with a
    /// stored membership they are ignored, with a warning when they differ).
    #[arg(long = "peer", value_name = "ID=HOST:PORT", conflicts_with = "join")]
    peers: Vec<PeerArg>,
    /// Start with no membership and ask a member to add this node (`ctl add`, following a
    /// duck's redirect to the goose), retrying with a backoff of 0.1 s doubling to 2 s (±50%
    /// jitter) until the node is in the membership; repeat for more members, asked in turn.
    /// Sends --control-token if given.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_peer_addr)]
    join: Vec<SocketAddr>,
    /// A new node that is a whole flock by itself: without it, a new node with neither
    /// --peer nor --join is refused (forgetting --peer on one machine would make a second
    /// goose).
    #[arg(long, conflicts_with_all = ["peers", "join"])]
    single: bool,
    /// Read flags from this TOML file (keys are the long flags without dashes); the command
    /// line overrides it. SIGHUP reads it again.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Voters a goose keeps: it promotes caught-up learners while there are fewer; beyond
    /// it, added nodes stay learners. Give every node the same value.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=MEMBERS_MAX as i64))]
    voters: u16,
    /// Where the persistent state lives [default: goose-data/<id>]. Alone, restarts the
    /// node stored there.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Accept control datagrams from non-loopback sources that carry `token=<T>`.
    #[arg(long, value_name = "T", value_parser = parse_token)]
    control_token: Option<String>,
    /// As --control-token, read from this file (its first line), so that the token is not
    /// on the command line for `ps` to show.
    #[arg(long, value_name = "FILE", conflicts_with = "control_token")]
    control_token_file: Option<PathBuf>,
    /// The flock's cluster key (`goose keygen`): authenticates every peer frame and
    /// requires signed control (`goose ctl --cluster-key-file`). Every node needs the same.
    #[arg(long, value_name = "FILE", value_parser = key_file::parse_key_file)]
    cluster_key_file: Option<KeyFile>,
    /// Text answers (probes, control, errors) per second to one source IP address; beyond
    /// it, datagrams from that address go unanswered (counted as drop_rate_limited), so a
    /// probe flood costs the node little and cannot use it as an amplifier. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = ratelimit::REPLY_RATE_PER_SOURCE_DEFAULT)]
    reply_rate: u32,
    /// Answers one source IP address may draw at once before --reply-rate applies.
    #[arg(long, value_name = "N", default_value_t = ratelimit::REPLY_BURST_DEFAULT)]
    reply_burst: u32,
    /// Text answers per second of this node, all sources together. 0: no limit.
    #[arg(long, value_name = "N", default_value_t = ratelimit::REPLY_RATE_GLOBAL_DEFAULT)]
    reply_rate_total: u32,
    /// Shell command run (sh -c) when this node becomes goose, once its lease holds.
    #[arg(long, value_name = "CMD")]
    on_goose: Option<String>,
    /// Shell command run (sh -c) the moment this node stops being goose.
    #[arg(long, value_name = "CMD")]
    on_duck: Option<String>,
    /// Serve read-only HTTP here: GET /status (JSON), /metrics (Prometheus), /healthz (200
    /// while running and goose or following a goose, else 503) and / (a live page).
    #[arg(long, value_name = "IP:PORT")]
    http: Option<SocketAddr>,
    /// A hook still running after this long gets SIGTERM, and SIGKILL a second later, with
    /// everything it started.
    #[arg(long, value_name = "MS", default_value_t = hooks::HOOK_TIMEOUT_DEFAULT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    hook_timeout_ms: u64,
    /// A command (sh -c) run only while this node is goose, stopped before any other node
    /// can be goose, restarted (0.1 s doubling to 10 s) if it exits by itself.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// The --exec child's SIGTERM-to-SIGKILL time, and the lease left at which it gets
    /// SIGTERM. At most the lease minus two heartbeats [default: that].
    #[arg(long, value_name = "MS", requires = "exec",
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    exec_grace_ms: Option<u64>,
    /// A health check (sh -c; exit 0 is healthy): after --check-fails failures in a row an
    /// unhealthy goose hands off, an unhealthy voter does not campaign.
    #[arg(long, value_name = "CMD")]
    check: Option<String>,
    /// How often --check runs; a run taking longer is killed and fails.
    #[arg(long, value_name = "MS", default_value_t = check::CHECK_INTERVAL_DEFAULT.as_millis() as u64,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    check_interval_ms: u64,
    /// Failures of --check in a row that make the node unhealthy (one pass: healthy again).
    #[arg(long, value_name = "K", default_value_t = check::CHECK_FAILS_DEFAULT,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    check_fails: u32,
    #[command(flatten)]
    vips: VipArgs,
    #[command(flatten)]
    timing: TimingArgs,
}

/// `--vip` and `--vip-dev`, shared by `node` and `vip-release`.
#[derive(Debug, Clone, Args)]
struct VipArgs {
    /// A virtual address held only while this node is goose (e.g. 10.0.0.100/24,
    /// fd00::100/64): added to --vip-dev and announced (gratuitous ARP, unsolicited neighbour
    /// advertisement) once goose, removed the moment it is not, and at start. Repeat for more
    /// (at most 16). Needs CAP_NET_ADMIN and CAP_NET_RAW.
    #[arg(long = "vip", value_name = "IP/PREFIX", requires = "vip_devs")]
    addrs: Vec<vip::VipAddr>,
    /// The interface of the --vip addresses: one for all, or one per --vip in the same order.
    #[arg(long = "vip-dev", value_name = "INTERFACE", requires = "addrs")]
    vip_devs: Vec<vip::Interface>,
}

impl VipArgs {
    /// Every `--vip` on its `--vip-dev`.
    fn paired(&self) -> Result<Vec<vip::Vip>, String> {
        vip::pair(&self.addrs, &self.vip_devs)
    }
}

#[derive(Debug, Args)]
struct VipReleaseArgs {
    /// Read vip, vip-dev and data-dir from this TOML file (the node's own; its other keys
    /// are ignored).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The node's data dir: refused while a node holds it.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    vips: VipArgs,
}

#[derive(Debug, Args)]
struct ExecGuardArgs {
    /// The command, for sh -c.
    #[arg(allow_hyphen_values = true)]
    command: String,
}

#[derive(Debug, Args)]
struct ClusterArgs {
    /// How many nodes to launch (ids 1..n).
    #[arg(long, default_value_t = 5,
          value_parser = clap::value_parser!(u16).range(1..=MEMBERS_MAX as i64))]
    nodes: u16,
    /// The first node's UDP port on 127.0.0.1; node i listens on base-port + i - 1.
    #[arg(long, value_name = "PORT", default_value_t = 9900,
          value_parser = clap::value_parser!(u16).range(1..))]
    base_port: u16,
    /// Parent of every node's data dir (<dir>/<id>).
    #[arg(long, value_name = "DIR", default_value = "goose-data")]
    data_dir: PathBuf,
    /// How many of the nodes (the highest ids) are boards: the firmware in qemu-system-arm,
    /// as `goose board` runs it. A flock with boards has at most 5 nodes.
    #[arg(long, value_name = "M", default_value_t = 0)]
    boards: u16,
    /// The boards' firmware [default: the release build in node-embedded/firmware].
    #[arg(long, value_name = "ELF")]
    firmware: Option<PathBuf>,
    /// The flock's cluster key (`goose keygen`), passed to every node: peer frames are
    /// authenticated, control must be signed (`goose ctl --cluster-key-file`).
    #[arg(long, value_name = "FILE", value_parser = key_file::parse_key_file)]
    cluster_key_file: Option<KeyFile>,
    #[command(flatten)]
    timing: TimingArgs,
}

#[derive(Debug, Args)]
struct BoardArgs {
    /// This board's node id, 1..65535.
    #[arg(long, value_parser = parse_node_id)]
    id: NodeId,
    /// The UDP port on 127.0.0.1 forwarded to the board (the board listens on the same
    /// port inside QEMU).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Another member of the flock, as this machine sees it (127.0.0.1:<port>); repeat for
    /// each (at most 4).
    #[arg(long = "peer", value_name = "ID=IP:PORT")]
    peers: Vec<PeerArg>,
    /// Where the board's state file lives [default: goose-data/<id>]; created if missing.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The firmware ELF [default: the release build in node-embedded/firmware].
    #[arg(long, value_name = "ELF")]
    firmware: Option<PathBuf>,
    /// Accept control datagrams from other sources than this machine that carry
    /// `token=<T>` (at most 64 bytes).
    #[arg(long, value_name = "T", value_parser = parse_token)]
    control_token: Option<String>,
    /// The flock's cluster key file: the board gets its absolute path and reads the key
    /// itself, so the key never appears on QEMU's command line.
    #[arg(long, value_name = "FILE")]
    cluster_key_file: Option<PathBuf>,
    #[command(flatten)]
    timing: TimingArgs,
}

#[derive(Debug, Args)]
struct WhoisArgs {
    /// The nodes to ask.
    #[arg(required = true, value_name = "IP:PORT", value_parser = parse_peer_addr)]
    addrs: Vec<SocketAddr>,
    /// The flock's cluster key: ask with a fresh nonce and count only answers signed over
    /// it with this key (a forged or replayed answer prints `-`).
    #[arg(long, value_name = "FILE", value_parser = key_file::parse_key_file)]
    cluster_key_file: Option<KeyFile>,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Write the key to this new file (mode 0600) instead of standard output; an existing
    /// file is never overwritten.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CtlArgs {
    /// The node to send the command to.
    #[arg(value_name = "IP:PORT", value_parser = parse_peer_addr)]
    addr: SocketAddr,
    /// Token for a node started with --control-token (needed from non-loopback sources).
    #[arg(long, value_name = "T", value_parser = parse_token, conflicts_with = "cluster_key_file")]
    token: Option<String>,
    /// The flock's cluster key: sign the command (needed by a node started with a key).
    #[arg(long, value_name = "FILE", value_parser = key_file::parse_key_file)]
    cluster_key_file: Option<KeyFile>,
    /// The command and its arguments, e.g. `status` or `partition 2,3`.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    // Milliseconds: a failover takes a few hundred of them.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let cli = parse_cli(&argv);
    let command = cli.command.unwrap_or_else(|| {
        let _ = writeln!(
            io::stdout(),
            "goose: no subcommand, so running a local demo flock: 5 nodes on \
             127.0.0.1:9900-9904, data in ./goose-data (`goose cluster`); Ctrl-C stops it, \
             `goose --help` lists the rest"
        );
        Command::Cluster(ClusterArgs::from_defaults())
    });
    match command {
        Command::Node(args) => run_node(*args, argv),
        Command::ExecGuard(args) => exec::run_guard(&args.command),
        Command::VipRelease(args) => {
            let vips = args
                .vips
                .paired()
                .unwrap_or_else(|message| usage_error("vip-release", &message));
            vip::release_command(&vips, args.data_dir.as_deref())
        }
        Command::Cluster(args) => run_cluster(args),
        Command::Whois(args) => {
            client::whois(&args.addrs, args.cluster_key_file.as_ref().map(|f| &f.key))
        }
        Command::Ctl(args) => {
            let auth = match (&args.cluster_key_file, &args.token) {
                (Some(file), _) => client::ControlAuth::Key(&file.key),
                (None, Some(token)) => client::ControlAuth::Token(token),
                (None, None) => client::ControlAuth::None,
            };
            client::ctl(args.addr, auth, &args.command)
        }
        Command::Board(args) => run_board(args),
        Command::BoardConfig(args) => board_config::run(args),
        Command::Keygen(args) => match key_file::keygen(args.out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("goose keygen: {error}");
                ExitCode::FAILURE
            }
        },
    }
}

impl ClusterArgs {
    /// `goose cluster` with every default, for a bare `goose`.
    fn from_defaults() -> Self {
        let matches = Cli::command().get_matches_from(["goose", "cluster"]);
        let cli = <Cli as FromArgMatches>::from_arg_matches(&matches);
        match cli {
            Ok(Cli {
                command: Some(Command::Cluster(args)),
            }) => args,
            _ => unreachable!("`goose cluster` parses with defaults"),
        }
    }
}

/// Parses the command line (and `goose node --config`'s file); on a usage error prints
/// clap's one-line error plus the usage of the subcommand given (clap leaves usage out of
/// value errors) and exits 2.
fn parse_cli(argv: &[OsString]) -> Cli {
    match parse_args(argv) {
        Ok(cli) => cli,
        Err(ParseError::Config(message)) => {
            let subcommand = argv.get(1).and_then(|name| name.to_str());
            usage_error(subcommand.unwrap_or("node"), &message)
        }
        Err(ParseError::Clap(mut error)) => {
            if error.use_stderr() && error.get(ContextKind::Usage).is_none() {
                let subcommand = argv.get(1);
                let usage = usage_of(subcommand.and_then(|name| name.to_str()));
                error.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
            }
            error.exit()
        }
    }
}

/// Why a command line was refused.
enum ParseError {
    /// By clap: a usage error, or `--help`/`--version`.
    Clap(clap::Error),
    /// By the `--config` file.
    Config(String),
}

/// The command line, with `goose node --config`'s flags merged in ([`config`]).
fn parse_args(argv: &[OsString]) -> Result<Cli, ParseError> {
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(ParseError::Clap)?;
    // `node` takes every key of the file; `vip-release` the keys it has flags for.
    let (name, keys) = match matches.subcommand() {
        Some(("node", sub)) => ("node", Some((sub, config::Keys::All))),
        Some(("vip-release", sub)) => ("vip-release", Some((sub, config::Keys::OwnOnly))),
        _ => ("", None),
    };
    let merged = match keys {
        Some((sub, keys)) => match sub.get_one::<PathBuf>("config") {
            Some(path) => {
                let mut command = Cli::command();
                let sub_command = command
                    .find_subcommand_mut(name)
                    .ok_or_else(|| ParseError::Config(format!("no {name} subcommand")))?;
                // Everything after the subcommand, as given.
                let at = argv.iter().position(|arg| arg == name).unwrap_or(1);
                let mut merged: Vec<OsString> = argv[..=at].to_vec();
                let sub_args = config::merge(path, sub_command, sub, &argv[at + 1..], keys)
                    .map_err(ParseError::Config)?;
                merged.extend(sub_args);
                Some(merged)
            }
            None => None,
        },
        None => None,
    };
    let matches = match merged {
        Some(merged) => Cli::command()
            .try_get_matches_from(merged)
            .map_err(ParseError::Clap)?,
        None => matches,
    };
    <Cli as FromArgMatches>::from_arg_matches(&matches).map_err(ParseError::Clap)
}

/// `Usage: goose <subcommand> …`, or the top-level usage for an unknown subcommand.
fn usage_of(subcommand: Option<&str>) -> StyledStr {
    let mut command = Cli::command();
    command.build();
    match subcommand.and_then(|name| command.find_subcommand_mut(name)) {
        Some(sub) => sub.render_usage(),
        None => command.render_usage(),
    }
}

/// Exits 2 with a one-line error and the usage of `subcommand`, for values clap parsed
/// but the node refuses (e.g. a heartbeat slower than the lease).
fn usage_error(subcommand: &str, message: &str) -> ! {
    let mut command = Cli::command();
    // Building sets the subcommands' display names (`goose node`, not `node`).
    command.build();
    let error = match command.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(ErrorKind::ValueValidation, message),
        None => command.error(ErrorKind::ValueValidation, message),
    };
    error.exit()
}

fn run_node(args: NodeArgs, argv: Vec<OsString>) -> ExitCode {
    // Timing does not depend on the id: check it with the one given, or any; a restart
    // learns its id from the data dir.
    let mut config = args
        .timing
        .config(args.id.unwrap_or(ANY_ID))
        .unwrap_or_else(|message| usage_error("node", &message));
    config.voters_target = args.voters;
    let Some(data_dir) = args.data_dir.clone().or_else(|| {
        args.id
            .map(|id| PathBuf::from("goose-data").join(id.to_string()))
    }) else {
        usage_error(
            "node",
            "a new node needs --id and --listen; a restart needs --data-dir (or --id)",
        );
    };
    if let (Some(listen), None) = (args.listen, args.advertise) {
        if listen.ip().is_unspecified() {
            usage_error(
                "node",
                &format!(
                    "--listen {listen} listens on every address of this machine, but peers \
                     need the one they reach it at: add --advertise <host:port>"
                ),
            );
        }
    }
    let advertised = args.advertise.or(args.listen);
    let bootstrap = match (args.id, advertised) {
        (Some(_), Some(_)) if !args.join.is_empty() => Some(Vec::new()),
        (Some(id), Some(advertised)) => Some(
            bootstrap_members(id, advertised, &args.peers)
                .unwrap_or_else(|message| usage_error("node", &message)),
        ),
        _ => None,
    };
    let exec = args.exec.clone().map(|command| {
        let grace = args
            .exec_grace_ms
            .map_or_else(|| exec::grace_limit(&config), Duration::from_millis);
        if let Some(message) = exec::refuse_grace(&config, grace) {
            usage_error("node", &message);
        }
        event_loop::ExecOptions { command, grace }
    });
    let vips = args
        .vips
        .paired()
        .unwrap_or_else(|message| usage_error("node", &message));
    let reloadable = reloadable(&args).unwrap_or_else(|message| usage_error("node", &message));
    let fixed = Fixed::of(&args);
    let reload: Option<event_loop::Reload> = args
        .config
        .is_some()
        .then(|| Box::new(move || reload_settings(&argv, &fixed)) as event_loop::Reload);
    let options = event_loop::Options {
        id: args.id,
        listen: args.listen,
        advertise: args.advertise,
        bootstrap,
        peers: args.peers.iter().map(|peer| (peer.id, peer.addr)).collect(),
        join: args.join,
        single: args.single,
        config,
        data_dir,
        control_token: reloadable.control_token,
        cluster_key: args.cluster_key_file,
        hooks: reloadable.hooks,
        reply_limit: reloadable.reply_limit,
        exec,
        check: reloadable.check,
        reload,
        http: args.http,
        vips,
    };
    match event_loop::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(event_loop::RunError::Usage(message)) => usage_error("node", &message),
        Err(error) => {
            let id = args.id.map_or_else(|| "?".to_owned(), |id| id.to_string());
            // Straight to stderr, not through the logger: a fatal error must be seen
            // whatever RUST_LOG says.
            eprintln!("goose node {id}: error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// What a SIGHUP may change, from the flags (the config file's merged in).
fn reloadable(args: &NodeArgs) -> Result<event_loop::Reloaded, String> {
    let control_token = match (&args.control_token_file, &args.control_token) {
        (Some(path), _) => Some(read_token_file(path)?),
        (None, token) => token.clone(),
    };
    Ok(event_loop::Reloaded {
        hooks: hooks::HookCommands {
            on_goose: args.on_goose.clone(),
            on_duck: args.on_duck.clone(),
            timeout: std::time::Duration::from_millis(args.hook_timeout_ms),
        },
        check: args.check.clone().map(|command| check::CheckCommand {
            command,
            interval: std::time::Duration::from_millis(args.check_interval_ms),
            fails: args.check_fails,
        }),
        reply_limit: RateLimit {
            per_source_per_s: args.reply_rate,
            burst: args.reply_burst,
            global_per_s: args.reply_rate_total,
        },
        control_token,
        ignored: Vec::new(),
    })
}

/// The settings a running node cannot change (a SIGHUP that changes them says so).
#[derive(Debug, PartialEq)]
struct Fixed {
    fields: Vec<(&'static str, String)>,
}

impl Fixed {
    fn of(args: &NodeArgs) -> Self {
        let key = args.cluster_key_file.as_ref().map(|file| file.path.clone());
        let fields = vec![
            ("id", format!("{:?}", args.id)),
            ("listen", format!("{:?}", args.listen)),
            ("advertise", format!("{:?}", args.advertise)),
            ("peer", format!("{:?}", args.peers)),
            ("join", format!("{:?}", args.join)),
            ("single", format!("{:?}", args.single)),
            ("voters", format!("{:?}", args.voters)),
            ("data-dir", format!("{:?}", args.data_dir)),
            ("cluster-key-file", format!("{key:?}")),
            ("exec", format!("{:?}", args.exec)),
            ("exec-grace-ms", format!("{:?}", args.exec_grace_ms)),
            ("vip", format!("{:?}", args.vips.addrs)),
            ("vip-dev", format!("{:?}", args.vips.vip_devs)),
            ("heartbeat-ms", format!("{:?}", args.timing.heartbeat_ms)),
            (
                "election-timeout-ms",
                format!("{:?}", args.timing.election_timeout_ms),
            ),
        ];
        Self { fields }
    }

    /// The names of the settings that differ.
    fn changed(&self, now: &Self) -> Vec<String> {
        let pairs = self.fields.iter().zip(&now.fields);
        pairs
            .filter(|(before, after)| before != after)
            .map(|((name, _), _)| (*name).to_owned())
            .collect()
    }
}

/// SIGHUP: the command line parsed again with the config file as it is now.
fn reload_settings(argv: &[OsString], fixed: &Fixed) -> Result<event_loop::Reloaded, String> {
    let cli = match parse_args(argv) {
        Ok(cli) => cli,
        Err(ParseError::Config(message)) => return Err(message),
        Err(ParseError::Clap(error)) => return Err(error.render().to_string()),
    };
    let Some(Command::Node(args)) = cli.command else {
        return Err("the command line is no longer `goose node`".to_owned());
    };
    let mut reloaded = reloadable(&args)?;
    reloaded.ignored = fixed.changed(&Fixed::of(&args));
    Ok(reloaded)
}

/// The first line of `path`, as a control token; warns if others may read the file.
fn read_token_file(path: &Path) -> Result<String, String> {
    let shown = path.display();
    let metadata = std::fs::metadata(path)
        .map_err(|error| format!("--control-token-file {shown}: {error}"))?;
    if metadata.len() > 1024 {
        return Err(format!(
            "--control-token-file {shown}: {} bytes; a token file holds one short line",
            metadata.len()
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("--control-token-file {shown}: {error}"))?;
    let token = text.lines().next().unwrap_or("").trim();
    let token =
        parse_token(token).map_err(|error| format!("--control-token-file {shown}: {error}"))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "--control-token-file {shown} may be read by group or others (mode {:o}): chmod 600 it",
            metadata.permissions().mode() & 0o777
        );
    }
    Ok(token)
}

/// Self at `--listen` plus every `--peer`, all voters, in id order. A `--peer` naming this node is
/// accepted (so every node can be given one shared peer list) if its address is `--listen`.
fn bootstrap_members(
    id: NodeId,
    listen: SocketAddr,
    peers: &[PeerArg],
) -> Result<Vec<Member>, String> {
    let mut members = vec![Member {
        id,
        addr: listen,
        voter: true,
    }];
    for peer in peers {
        if peer.id == id {
            if peer.addr != listen {
                return Err(format!(
                    "--peer {}={} names this node (--id {id}) at another address than \
                     --listen {listen}",
                    peer.id, peer.addr
                ));
            }
            continue;
        }
        if let Some(other) = members.iter().find(|m| m.id == peer.id) {
            return Err(format!(
                "--peer {}={} repeats node id {} (already {})",
                peer.id, peer.addr, peer.id, other.addr
            ));
        }
        if let Some(other) = members.iter().find(|m| m.addr == peer.addr) {
            return Err(format!(
                "--peer {}={} uses the address of node {}",
                peer.id, peer.addr, other.id
            ));
        }
        members.push(Member {
            id: peer.id,
            addr: peer.addr,
            voter: true,
        });
    }
    // Every node of a new flock must start from the same bootstrap, whoever it is.
    members.sort_by_key(|member| member.id);
    if members.len() > MEMBERS_MAX {
        return Err(format!(
            "{} members, this build holds at most {MEMBERS_MAX}",
            members.len()
        ));
    }
    Ok(members)
}

fn run_cluster(args: ClusterArgs) -> ExitCode {
    let last_port = u32::from(args.base_port) + u32::from(args.nodes) - 1;
    if last_port > u32::from(u16::MAX) {
        usage_error(
            "cluster",
            &format!(
                "--base-port {} with --nodes {} needs ports up to {last_port}",
                args.base_port, args.nodes
            ),
        );
    }
    let timing = args
        .timing
        .config(ANY_ID)
        .unwrap_or_else(|message| usage_error("cluster", &message));
    if args.boards > args.nodes {
        usage_error(
            "cluster",
            &format!("--boards {} with only --nodes {}", args.boards, args.nodes),
        );
    }
    if args.boards > 0 && usize::from(args.nodes) > goose_board_args::MEMBERS_MAX {
        usage_error(
            "cluster",
            &format!(
                "a board holds at most {} members: --nodes {} with --boards {}",
                goose_board_args::MEMBERS_MAX,
                args.nodes,
                args.boards
            ),
        );
    }
    let options = cluster::Options {
        nodes: args.nodes,
        base_port: args.base_port,
        data_dir: args.data_dir,
        cluster_key: args.cluster_key_file.as_ref().map(|file| file.key.clone()),
        cluster_key_file: args.cluster_key_file.map(|file| file.path),
        timing_flags: args.timing.to_flags().to_vec(),
        timing,
        boards: args.boards,
        firmware: args.firmware.unwrap_or_else(board::default_firmware),
    };
    match cluster::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("goose cluster: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run_board(args: BoardArgs) -> ExitCode {
    let config = args
        .timing
        .config(args.id)
        .unwrap_or_else(|message| usage_error("board", &message));
    let listen = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, args.port));
    let members = bootstrap_members(args.id, listen, &args.peers)
        .unwrap_or_else(|message| usage_error("board", &message));
    let spec = board::BoardSpec {
        config,
        port: args.port,
        members,
        data_dir: args
            .data_dir
            .unwrap_or_else(|| PathBuf::from("goose-data").join(args.id.to_string())),
        firmware: args.firmware.unwrap_or_else(board::default_firmware),
        control_token: args.control_token,
        cluster_key_file: args.cluster_key_file,
    };
    match board::run(&spec) {
        Ok(code) => ExitCode::from(code),
        Err(board::BoardError::Usage(message)) => usage_error("board", &message),
        Err(error) => {
            eprintln!("goose board {}: error: {error}", args.id);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Cli, PeerArg, TimeoutRange};
    use clap::{CommandFactory, Parser};

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_peers_and_ranges() {
        let peer: PeerArg = "2=127.0.0.1:9901".parse().unwrap();
        assert_eq!(peer.id.get(), 2);
        assert_eq!(peer.addr.port(), 9901);
        assert!("[::1]:9901".parse::<PeerArg>().is_err());
        assert!("2=[::1]:9901".parse::<PeerArg>().is_ok());
        assert!("0=127.0.0.1:9901".parse::<PeerArg>().is_err());
        assert!("2=127.0.0.1:0".parse::<PeerArg>().is_err());
        assert!("2=nowhere".parse::<PeerArg>().is_err());
        assert_eq!(
            "150-300".parse::<TimeoutRange>(),
            Ok(TimeoutRange { min: 150, max: 300 })
        );
        assert!("300-150".parse::<TimeoutRange>().is_err());
        assert!("0-10".parse::<TimeoutRange>().is_err());
        assert!("150".parse::<TimeoutRange>().is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["goose", "node", "--id", "0", "--listen", "127.0.0.1:9900"][..],
            &["goose", "node", "--id", "1", "--listen", "nowhere"],
            &[
                "goose",
                "node",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:9900",
                "--peer",
                "x",
            ],
            &["goose", "whois"],
            &["goose", "ctl", "127.0.0.1:9900"],
            &["goose", "cluster", "--nodes", "0"],
        ] {
            let error = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn elastic_flags() {
        let restart = Cli::try_parse_from(["goose", "node", "--data-dir", "d"]).unwrap();
        let Some(super::Command::Node(args)) = restart.command else {
            panic!("a node")
        };
        assert_eq!((args.id, args.listen, args.voters), (None, None, 5));
        let join = [
            "goose",
            "node",
            "--id",
            "4",
            "--listen",
            "127.0.0.1:9903",
            "--join",
            "127.0.0.1:9900",
            "--voters",
            "3",
            "--on-goose",
            "echo up",
            "--on-duck",
            "echo down",
            "--hook-timeout-ms",
            "500",
        ];
        let Some(super::Command::Node(args)) = Cli::try_parse_from(join).unwrap().command else {
            panic!("a node")
        };
        assert_eq!(args.join, ["127.0.0.1:9900".parse().unwrap()]);
        assert_eq!(args.voters, 3);
        assert_eq!(args.on_goose.as_deref(), Some("echo up"));
        assert_eq!(args.hook_timeout_ms, 500);
        for bad in [
            &["goose", "node", "--data-dir", "d", "--voters", "0"][..],
            &["goose", "node", "--data-dir", "d", "--join", "nowhere"],
            &["goose", "node", "--data-dir", "d", "--hook-timeout-ms", "0"],
            &[
                "goose",
                "node",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:1",
                "--join",
                "127.0.0.1:2",
                "--peer",
                "2=127.0.0.1:2",
            ],
        ] {
            let error = Cli::try_parse_from(bad).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn bootstrap_is_self_and_peers_in_id_order() {
        let id = |n| goose_core::NodeId::new(n).unwrap();
        let listen = "127.0.0.1:9901".parse().unwrap();
        let peers: Vec<PeerArg> = ["3=127.0.0.1:9902", "1=127.0.0.1:9900", "2=127.0.0.1:9901"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let members = super::bootstrap_members(id(2), listen, &peers).unwrap();
        let ids: Vec<u16> = members.iter().map(|m| m.id.get()).collect();
        assert_eq!(ids, [1, 2, 3]);
        assert!(members.iter().all(|m| m.voter));
        let clash: Vec<PeerArg> = vec!["2=127.0.0.1:1".parse().unwrap()];
        assert!(super::bootstrap_members(id(2), listen, &clash).is_err());
    }

    #[test]
    fn a_token_file_gives_its_first_line_and_refuses_what_a_token_cannot_be() {
        let dir = std::env::temp_dir().join(format!("goose-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("token");
        std::fs::write(&file, "  sesame \nignored\n").unwrap();
        assert_eq!(super::read_token_file(&file).as_deref(), Ok("sesame"));
        std::fs::write(&file, "two words\n").unwrap();
        assert!(super::read_token_file(&file).is_err());
        std::fs::write(&file, "").unwrap();
        assert!(super::read_token_file(&file).is_err());
        let missing = super::read_token_file(&dir.join("missing")).unwrap_err();
        assert!(missing.contains("--control-token-file"), "{missing}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_config_file_gives_flags_and_the_command_line_overrides_it() {
        let dir = std::env::temp_dir().join(format!("goose-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("goose.toml");
        let text = "id = 3\nlisten = \"127.0.0.1:9902\"\npeer = [\"1=127.0.0.1:9900\", \
                    \"2=127.0.0.1:9901\"]\nheartbeat_ms = 20\non-goose = \"true\"\n";
        std::fs::write(&config, text).unwrap();
        let path = config.display().to_string();
        let parse = |args: &[&str]| {
            let argv: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            match super::parse_args(&argv) {
                Ok(Cli {
                    command: Some(super::Command::Node(args)),
                }) => Ok(args),
                Ok(_) => Err("not a node".to_owned()),
                Err(super::ParseError::Config(message)) => Err(message),
                Err(super::ParseError::Clap(error)) => Err(error.to_string()),
            }
        };
        let args = parse(&["goose", "node", "--config", &path]).unwrap();
        assert_eq!(args.id.map(|id| id.get()), Some(3));
        assert_eq!(args.peers.len(), 2);
        assert_eq!(args.timing.heartbeat_ms, 20);
        assert_eq!(args.on_goose.as_deref(), Some("true"));
        // The command line wins, a repeated flag replacing the file's whole list.
        let args = parse(&[
            "goose",
            "node",
            "--config",
            &path,
            "--heartbeat-ms",
            "30",
            "--peer",
            "5=127.0.0.1:9905",
        ])
        .unwrap();
        assert_eq!(args.timing.heartbeat_ms, 30);
        assert_eq!(args.peers.len(), 1);
        for (bad, word) in [
            ("colour = \"blue\"\n", "no flag"),
            ("id = [1, 2]\n", "does not take"),
            ("single = \"yes\"\n", "does not take"),
            ("config = \"x\"\n", "no flag"),
            ("id = \n", "not TOML"),
            ("heartbeat-ms = 0\n", "heartbeat"),
        ] {
            std::fs::write(&config, bad).unwrap();
            let error = parse(&["goose", "node", "--config", &path]).unwrap_err();
            assert!(error.contains(word), "{bad:?}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn addresses_take_host_names_and_ipv6_and_never_port_0() {
        use super::{parse_addr, parse_peer_addr};
        assert_eq!(
            parse_addr("localhost:9900"),
            Ok("127.0.0.1:9900".parse().unwrap())
        );
        assert_eq!(parse_addr("[::1]:9900"), Ok("[::1]:9900".parse().unwrap()));
        assert!(parse_addr("0.0.0.0:9900").is_ok());
        assert!(parse_peer_addr("0.0.0.0:9900").is_err());
        assert!(parse_addr("localhost:0").is_err());
        assert!(parse_addr("localhost").is_err());
        assert!(parse_addr("bad host:9900").is_err());
        assert!(parse_addr("no-such-host.invalid:9900").is_err());
    }

    #[test]
    fn no_subcommand_means_cluster_defaults() {
        let cli = Cli::try_parse_from(["goose"]).unwrap();
        assert!(cli.command.is_none());
        let args = super::ClusterArgs::from_defaults();
        assert_eq!((args.nodes, args.base_port), (5, 9900));
    }
}
