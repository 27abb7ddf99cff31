//! `goose`: the Duck Duck Goose desktop node, its cluster launcher and its clients.
//!
//! This file is the CLI (the contract's flags, usage and exit codes) and nothing else:
//!
//! - `goose node` runs one node ([`event_loop`], [`storage_file`], [`clock`]);
//! - `goose cluster` (also what a bare `goose` runs) launches a local flock ([`cluster`]);
//! - `goose whois` and `goose ctl` talk the text protocol to nodes ([`client`]).
//!
//! Exit codes: 0 success, 1 a runtime failure (port in use, locked or corrupt data dir,
//! storage failure, no reply), 2 bad flags (clap's usage-error code, also used for values
//! clap parses but we refuse, such as `--id 0`).

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod client;
mod clock;
mod cluster;
mod event_loop;
mod storage_file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::builder::StyledStr;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};
use goose_core::limits::MEMBERS_MAX;
use goose_core::{Config, Duration, Member, NodeId};

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
    #[command(after_help = "Example:\n  goose node --id 1 --listen 127.0.0.1:9900 \
                      --peer 2=127.0.0.1:9901 --peer 3=127.0.0.1:9902")]
    Node(NodeArgs),
    /// Launch a local flock of `goose node` processes and show who is goose.
    Cluster(ClusterArgs),
    /// Ask nodes who they are: prints "<port>: goose|duck|-" per address, in order.
    Whois(WhoisArgs),
    /// Send a control command to a node and print its reply (exit 1 on err or no reply).
    #[command(
        after_help = "Commands: stop, start, status, partition <peer>[,<peer>...], \
                            heal, transfer [<id>], add <id> <ip:port>, remove <id>"
    )]
    Ctl(CtlArgs),
}

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

/// A socket address a peer can be reached at: a concrete IP and a non-zero port.
fn parse_peer_addr(text: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        format!("expected <ip>:<port> (e.g. 127.0.0.1:9900 or [::1]:9900), got {text:?}")
    })?;
    if addr.port() == 0 {
        return Err(format!(
            "port 0 is not an address peers can reach: {text:?}"
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
    /// This node's id, 1..65535.
    #[arg(long, value_parser = parse_node_id)]
    id: NodeId,
    /// The UDP address to listen on (peer traffic, probes and control), e.g. 127.0.0.1:9900.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_peer_addr)]
    listen: SocketAddr,
    /// Another member of the flock; repeat for each. Only seeds an empty data dir.
    #[arg(long = "peer", value_name = "ID=IP:PORT")]
    peers: Vec<PeerArg>,
    /// Where the persistent state lives [default: goose-data/<id>].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Accept control datagrams from non-loopback sources that carry `token=<T>`.
    #[arg(long, value_name = "T", value_parser = parse_token)]
    control_token: Option<String>,
    #[command(flatten)]
    timing: TimingArgs,
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
    #[command(flatten)]
    timing: TimingArgs,
}

#[derive(Debug, Args)]
struct WhoisArgs {
    /// The nodes to ask.
    #[arg(required = true, value_name = "IP:PORT", value_parser = parse_peer_addr)]
    addrs: Vec<SocketAddr>,
}

#[derive(Debug, Args)]
struct CtlArgs {
    /// The node to send the command to.
    #[arg(value_name = "IP:PORT", value_parser = parse_peer_addr)]
    addr: SocketAddr,
    /// Token for a node started with --control-token (needed from non-loopback sources).
    #[arg(long, value_name = "T", value_parser = parse_token)]
    token: Option<String>,
    /// The command and its arguments, e.g. `status` or `partition 2,3`.
    #[arg(required = true, num_args = 1.., trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = parse_cli();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Cluster(ClusterArgs::from_defaults()));
    match command {
        Command::Node(args) => run_node(args),
        Command::Cluster(args) => run_cluster(args),
        Command::Whois(args) => client::whois(&args.addrs),
        Command::Ctl(args) => client::ctl(args.addr, args.token.as_deref(), &args.command),
    }
}

impl ClusterArgs {
    /// `goose cluster` with every default, for a bare `goose`.
    fn from_defaults() -> Self {
        let matches = Cli::command().get_matches_from(["goose", "cluster"]);
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches);
        match cli {
            Ok(Cli {
                command: Some(Command::Cluster(args)),
            }) => args,
            _ => unreachable!("`goose cluster` parses with defaults"),
        }
    }
}

/// Parses the command line; on a usage error prints clap's one-line error plus the usage
/// of the subcommand given (clap leaves usage out of value errors) and exits 2.
fn parse_cli() -> Cli {
    Cli::try_parse().unwrap_or_else(|mut error| {
        if error.use_stderr() && error.get(ContextKind::Usage).is_none() {
            // args_os: std::env::args panics on arguments that are not UTF-8.
            let subcommand = std::env::args_os().nth(1);
            let usage = usage_of(subcommand.as_ref().and_then(|name| name.to_str()));
            error.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
        }
        error.exit()
    })
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

fn run_node(args: NodeArgs) -> ExitCode {
    let config = args
        .timing
        .config(args.id)
        .unwrap_or_else(|message| usage_error("node", &message));
    let bootstrap =
        bootstrap_members(&args).unwrap_or_else(|message| usage_error("node", &message));
    let data_dir = args
        .data_dir
        .unwrap_or_else(|| PathBuf::from("goose-data").join(args.id.to_string()));
    let options = event_loop::Options {
        config,
        listen: args.listen,
        bootstrap,
        data_dir,
        control_token: args.control_token,
    };
    match event_loop::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("node {}: {error}", args.id);
            ExitCode::FAILURE
        }
    }
}

/// Self at `--listen` plus every `--peer`, all voters, in id order. A `--peer` naming this node is
/// accepted (so every node can be given one shared peer list) if its address is `--listen`.
fn bootstrap_members(args: &NodeArgs) -> Result<Vec<Member>, String> {
    let mut members = vec![Member {
        id: args.id,
        addr: args.listen,
        voter: true,
    }];
    for peer in &args.peers {
        if peer.id == args.id {
            if peer.addr != args.listen {
                return Err(format!(
                    "--peer {}={} names this node (--id {}) at another address than --listen {}",
                    peer.id, peer.addr, args.id, args.listen
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
    if let Some(id) = NodeId::new(1) {
        if let Err(message) = args.timing.config(id) {
            usage_error("cluster", &message);
        }
    }
    let options = cluster::Options {
        nodes: args.nodes,
        base_port: args.base_port,
        data_dir: args.data_dir,
        timing_flags: args.timing.to_flags().to_vec(),
    };
    match cluster::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("goose cluster: {error}");
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
    fn no_subcommand_means_cluster_defaults() {
        let cli = Cli::try_parse_from(["goose"]).unwrap();
        assert!(cli.command.is_none());
        let args = super::ClusterArgs::from_defaults();
        assert_eq!((args.nodes, args.base_port), (5, 9900));
    }
}
