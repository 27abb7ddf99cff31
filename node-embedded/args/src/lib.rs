//! # goose-board-args: what a launcher and a board agree on
//!
//! The board's command line, `goose node`'s flags in the board's terms:
//!
//! ```text
//! --id <1..65535> --port <p> [--peer <id>=<ip:port>]… [--seed <u64>] [--state <path>]
//! [--heartbeat-ms <n>] [--election-timeout-ms <min>-<max>] [--control-token <t>]
//! [--key-file <path>] [--address <ip>/<prefix> [--gateway <ip>]]
//! ```
//!
//! Peers are given as the host sees them (`127.0.0.1:<q>`); the board listens on `<p>`,
//! which a launcher forwards from the host's `127.0.0.1:<p>`, so its own member address is
//! `127.0.0.1:<p>` too. On a LAN (`--address`, a real board) the board is at that address
//! instead, and members are given as it reaches them. In QEMU the words arrive through semihosting's command line
//! (`-append "…"`; [`qemu`] is the rest of QEMU's command line). [`write()`] is [`parse`]'s
//! inverse: `goose board` writes the line, the firmware parses it.
//!
//! The cluster key is never on the command line (QEMU's `-append` is in every `ps`): the
//! line names the host file that holds it (`--key-file`), which the firmware reads through
//! semihosting at start, by the core's key-file rule (`goose_core::auth::key`).
//!
//! This crate is the board's edge: no network stack, no flash, no cryptography, so a
//! launcher can write the line without building the board (goose-embedded turns a parsed
//! line into its `BoardConfig`).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod page;
pub mod qemu;

use core::fmt::{self, Write};
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use goose_core::limits::EMBEDDED_MEMBERS_MAX;
// The core's address parsers: `core::net`'s grammar in less flash.
use goose_core::text::{parse_ipv4, parse_socket_addr};
use goose_core::{Config, ConfigError, Duration, Member, NodeId};
use heapless::{String, Vec};

/// Members (voters and learners) a board holds: the core's embedded configuration, a
/// 5-node flock.
pub const MEMBERS_MAX: usize = EMBEDDED_MEMBERS_MAX;

/// The longest `--control-token`.
pub const TOKEN_SIZE_MAX: usize = 64;

/// The longest `--state` or `--key-file` path the firmware takes, in bytes (its buffer
/// holds one more, for the NUL the host call needs).
pub const PATH_SIZE_MAX: usize = 255;

/// The longest key file the firmware reads, in bytes (its buffer): a key's 64 hex digits
/// and as much whitespace around them.
pub const KEY_FILE_SIZE_MAX: usize = 128;

/// One line of usage, for error messages.
pub const USAGE: &str = "usage: --id <1..65535> --port <p> [--peer <id>=<ip:port>]... \
[--seed <u64>] [--state <path>] [--heartbeat-ms <n>] [--election-timeout-ms <min>-<max>] \
[--control-token <t>] [--key-file <path>] [--address <ip>/<prefix> [--gateway <ip>]]";

/// A parsed command line: everything a board runs with but the key, which the caller reads
/// from `key_file`.
#[derive(Clone, Debug)]
pub struct BoardArgs<'a> {
    /// The core's configuration: `--id` and the timing flags.
    pub node: Config,
    /// `--port`: the UDP port the board listens on; a launcher forwards the host's
    /// `127.0.0.1:<port>` to it.
    pub port: u16,
    /// The bootstrap membership as the host sees it: every `--peer`, then the board itself
    /// at `127.0.0.1:<port>`.
    pub members: Vec<Member, MEMBERS_MAX>,
    /// `--seed`: drives the election-timeout jitter ([`default_seed`] when absent).
    pub seed: u64,
    /// `--control-token`: lets other sources send control as `ctl token=<T> …`.
    pub control_token: Option<String<TOKEN_SIZE_MAX>>,
    /// `--state`: the file that holds the board's flash image, if given.
    pub state: Option<&'a str>,
    /// `--key-file`: the file that holds the cluster key, if the flock has one.
    pub key_file: Option<&'a str>,
    /// `--address` and `--gateway`: the board's own place on a LAN (a real board). `None`:
    /// the board is behind QEMU's user networking.
    pub lan: Option<Lan>,
}

/// A board's address on a LAN, where no host forwards its port: its member address is
/// `<address>:<port>`, and it reaches members at their own addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lan {
    /// The board's IPv4 address.
    pub address: Ipv4Addr,
    /// The prefix length of its subnet (`/24`).
    pub prefix_len: u8,
    /// The router for members outside the subnet, if any.
    pub gateway: Option<Ipv4Addr>,
}

/// Why a command line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// A word that is not a known flag.
    UnknownFlag,
    /// The flag's value is missing.
    MissingValue(&'static str),
    /// The flag's value does not parse (or, for a path, contains whitespace or quotes).
    BadValue(&'static str),
    /// `--id` was not given.
    MissingId,
    /// `--port` was not given.
    MissingPort,
    /// Two members with one id (a `--peer` may not name the board itself).
    DuplicatePeer,
    /// More members than [`MEMBERS_MAX`].
    TooManyPeers,
    /// `--gateway` without `--address`.
    GatewayWithoutAddress,
    /// The timing is invalid.
    Config(ConfigError),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFlag => f.write_str("unknown flag"),
            // A piece at a time: a board links no more of `core::fmt` than this needs.
            Self::MissingValue(flag) => {
                f.write_str(flag)?;
                f.write_str(" needs a value")
            }
            Self::BadValue(flag) => {
                f.write_str("bad value for ")?;
                f.write_str(flag)
            }
            Self::MissingId => f.write_str("--id is required"),
            Self::MissingPort => f.write_str("--port is required"),
            Self::DuplicatePeer => f.write_str("two members share an id"),
            Self::TooManyPeers => {
                f.write_str("at most ")?;
                goose_core::text::write_decimal(f, MEMBERS_MAX as u64)?;
                f.write_str(" members")
            }
            Self::GatewayWithoutAddress => f.write_str("--gateway needs --address"),
            Self::Config(error) => error.fmt(f),
        }
    }
}

impl core::error::Error for ArgsError {}

/// The default election seed of node `id` when `--seed` is absent: differs per id; a
/// launcher should pass a fresh random `--seed` so restarts differ too.
pub const fn default_seed(id: NodeId) -> u64 {
    (id.get() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Whether the command line can carry `path`: one word, without quotes. (The firmware
/// takes at most [`PATH_SIZE_MAX`] bytes of it.)
pub fn is_plain_path(path: &str) -> bool {
    !path.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'')
}

/// The flags [`parse`] knows.
#[derive(Clone, Copy)]
enum Flag {
    Id,
    Port,
    Peer,
    Seed,
    State,
    HeartbeatMs,
    ElectionTimeoutMs,
    ControlToken,
    KeyFile,
    Address,
    Gateway,
}

/// Each flag as written on the line.
const FLAGS: [(&str, Flag); 11] = [
    ("--id", Flag::Id),
    ("--port", Flag::Port),
    ("--peer", Flag::Peer),
    ("--seed", Flag::Seed),
    ("--state", Flag::State),
    ("--heartbeat-ms", Flag::HeartbeatMs),
    ("--election-timeout-ms", Flag::ElectionTimeoutMs),
    ("--control-token", Flag::ControlToken),
    ("--key-file", Flag::KeyFile),
    ("--address", Flag::Address),
    ("--gateway", Flag::Gateway),
];

/// Parses the board's words (without the program name).
///
/// # Errors
/// See [`ArgsError`]; the first problem found.
pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<BoardArgs<'a>, ArgsError> {
    let mut words = words.into_iter().filter(|word| !word.is_empty());
    let mut id = None;
    let mut port = None;
    let mut members: Vec<Member, MEMBERS_MAX> = Vec::new();
    let mut seed = None;
    let mut state = None;
    let mut heartbeat_ms = 50;
    let mut election_ms = (150, 300);
    let mut control_token = None;
    let mut key_file = None;
    let mut address = None;
    let mut gateway = None;
    while let Some(word) = words.next() {
        let Some(&(name, flag)) = FLAGS.iter().find(|(name, _)| *name == word) else {
            return Err(ArgsError::UnknownFlag);
        };
        let value = words.next().ok_or(ArgsError::MissingValue(name))?;
        let bad = ArgsError::BadValue(name);
        match flag {
            Flag::Id => id = Some(value.parse().ok().and_then(NodeId::new).ok_or(bad)?),
            Flag::Port => port = Some(value.parse::<u16>().ok().filter(|p| *p != 0).ok_or(bad)?),
            Flag::Peer => {
                let member = parse_peer(value).ok_or(bad)?;
                if members.iter().any(|m| m.id == member.id) {
                    return Err(ArgsError::DuplicatePeer);
                }
                members.push(member).map_err(|_| ArgsError::TooManyPeers)?;
            }
            Flag::Seed => seed = Some(value.parse::<u64>().map_err(|_| bad)?),
            Flag::State => state = Some(path(value).ok_or(bad)?),
            Flag::KeyFile => key_file = Some(path(value).ok_or(bad)?),
            Flag::HeartbeatMs => heartbeat_ms = value.parse::<u64>().map_err(|_| bad)?,
            Flag::ElectionTimeoutMs => {
                let (min, max) = value.split_once('-').ok_or(bad)?;
                let min = min.parse::<u64>().map_err(|_| bad)?;
                election_ms = (min, max.parse::<u64>().map_err(|_| bad)?);
            }
            Flag::ControlToken => {
                control_token = Some(String::try_from(value).map_err(|()| bad)?);
            }
            Flag::Address => address = Some(parse_address(value).ok_or(bad)?),
            Flag::Gateway => gateway = Some(parse_ipv4(value).ok_or(bad)?),
        }
    }
    let id = id.ok_or(ArgsError::MissingId)?;
    let port = port.ok_or(ArgsError::MissingPort)?;
    let node = Config::with_timing(
        id,
        Duration::from_millis(heartbeat_ms),
        Duration::from_millis(election_ms.0),
        Duration::from_millis(election_ms.1),
    );
    node.validate().map_err(ArgsError::Config)?;
    if members.iter().any(|m| m.id == id) {
        return Err(ArgsError::DuplicatePeer);
    }
    let lan = match (address, gateway) {
        (Some((address, prefix_len)), gateway) => Some(Lan {
            address,
            prefix_len,
            gateway,
        }),
        (None, Some(_)) => return Err(ArgsError::GatewayWithoutAddress),
        (None, None) => None,
    };
    let me = Member {
        id,
        addr: SocketAddr::V4(SocketAddrV4::new(
            lan.map_or(Ipv4Addr::LOCALHOST, |lan| lan.address),
            port,
        )),
        voter: true,
    };
    members.push(me).map_err(|_| ArgsError::TooManyPeers)?;
    Ok(BoardArgs {
        node,
        port,
        members,
        seed: seed.unwrap_or(default_seed(id)),
        control_token,
        state,
        key_file,
        lan,
    })
}

/// `<ip>/<prefix>`: a unicast IPv4 address and a prefix length of 1 to 32.
fn parse_address(value: &str) -> Option<(Ipv4Addr, u8)> {
    let (address, prefix_len) = value.split_once('/')?;
    let address = parse_ipv4(address)?;
    let prefix_len: u8 = prefix_len.parse().ok().filter(|p| (1..=32).contains(p))?;
    let unicast = !(address.is_unspecified() || address.is_broadcast() || address.is_multicast());
    unicast.then_some((address, prefix_len))
}

/// `value` if the command line can carry it as a path ([`is_plain_path`]).
fn path(value: &str) -> Option<&str> {
    is_plain_path(value).then_some(value)
}

fn parse_peer(value: &str) -> Option<Member> {
    let (id, addr) = value.split_once('=')?;
    Some(Member {
        id: id.parse().ok().and_then(NodeId::new)?,
        addr: parse_socket_addr(addr)?,
        voter: true,
    })
}

/// Writes `args` as [`parse`] reads them: one line of space-separated words, no newline.
///
/// # Errors
/// Only those of `out`.
pub fn write(out: &mut impl Write, args: &BoardArgs<'_>) -> fmt::Result {
    let node = &args.node;
    write!(
        out,
        "--id {} --port {} --seed {} --heartbeat-ms {} --election-timeout-ms {}-{}",
        node.id,
        args.port,
        args.seed,
        node.heartbeat_interval.millis(),
        node.election_timeout_min.millis(),
        node.election_timeout_max.millis()
    )?;
    for member in args.members.iter().filter(|m| m.id != node.id) {
        write!(out, " --peer {}={}", member.id, member.addr)?;
    }
    if let Some(state) = args.state {
        write!(out, " --state {state}")?;
    }
    if let Some(token) = &args.control_token {
        write!(out, " --control-token {token}")?;
    }
    if let Some(key_file) = args.key_file {
        write!(out, " --key-file {key_file}")?;
    }
    if let Some(lan) = args.lan {
        write!(out, " --address {}/{}", lan.address, lan.prefix_len)?;
        if let Some(gateway) = lan.gateway {
            write!(out, " --gateway {gateway}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    #[test]
    fn errors_read_as_the_format_machinery_wrote_them() {
        use std::string::ToString;
        let config = ConfigError::NoLease;
        for (error, expected) in [
            (
                ArgsError::MissingValue("--port"),
                "--port needs a value".to_string(),
            ),
            (
                ArgsError::BadValue("--seed"),
                "bad value for --seed".to_string(),
            ),
            (
                ArgsError::TooManyPeers,
                std::format!("at most {MEMBERS_MAX} members"),
            ),
            (ArgsError::Config(config), std::format!("{config}")),
        ] {
            assert_eq!(error.to_string(), expected);
            let page = page::PageError::Args(error);
            assert_eq!(
                page.to_string(),
                std::format!("configuration page: {expected}")
            );
        }
    }

    fn words(line: &str) -> impl Iterator<Item = &str> {
        line.split(' ')
    }

    #[test]
    fn parses_a_full_line_and_writes_it_back() {
        let line = "--id 4 --port 9903 --seed 77 --heartbeat-ms 40 --election-timeout-ms 200-400 \
                    --peer 1=127.0.0.1:9900 --peer 2=127.0.0.1:9901 --state goose-data/4/board.flash \
                    --control-token s3cret --key-file /etc/goose/cluster.key";
        let args = parse(words(line)).unwrap();
        assert_eq!(args.node.id.get(), 4);
        assert_eq!(args.port, 9903);
        assert_eq!(args.seed, 77);
        assert_eq!(args.node.heartbeat_interval, Duration::from_millis(40));
        assert_eq!(args.node.election_timeout_max, Duration::from_millis(400));
        assert_eq!(args.members.len(), 3, "the board itself is a member");
        assert!(args
            .members
            .iter()
            .any(|m| m.id.get() == 4 && m.addr == SocketAddr::from((Ipv4Addr::LOCALHOST, 9903))));
        assert_eq!(args.state, Some("goose-data/4/board.flash"));
        assert_eq!(args.control_token.as_deref(), Some("s3cret"));
        assert_eq!(args.key_file, Some("/etc/goose/cluster.key"));
        assert_eq!(args.lan, None, "behind QEMU");
        let mut line: String<512> = String::new();
        write(&mut line, &args).unwrap();
        let again = parse(words(&line)).unwrap();
        let mut line_again: String<512> = String::new();
        write(&mut line_again, &again).unwrap();
        assert_eq!(line_again, line);
        assert_eq!(
            (again.state, again.key_file, again.members),
            (args.state, args.key_file, args.members)
        );
    }

    #[test]
    fn a_board_on_a_lan_is_a_member_at_its_own_address() {
        let line = "--id 4 --port 9900 --peer 1=192.168.1.51:9900 --address 192.168.1.54/24 \
                    --gateway 192.168.1.1";
        let args = parse(words(line)).unwrap();
        let lan = args.lan.unwrap();
        assert_eq!(lan.address, Ipv4Addr::new(192, 168, 1, 54));
        assert_eq!(
            (lan.prefix_len, lan.gateway),
            (24, Some(Ipv4Addr::new(192, 168, 1, 1)))
        );
        let me = args.members.iter().find(|m| m.id.get() == 4).unwrap();
        assert_eq!(me.addr, "192.168.1.54:9900".parse().unwrap());
        let mut written: String<512> = String::new();
        write(&mut written, &args).unwrap();
        let again = parse(words(&written)).unwrap();
        assert_eq!((again.lan, again.members), (args.lan, args.members));
        let no_gateway = parse(words("--id 4 --port 1 --address 10.1.2.3/8")).unwrap();
        assert_eq!(no_gateway.lan.unwrap().gateway, None);
    }

    #[test]
    fn defaults_and_extra_spaces() {
        let args = parse(words("  --id 2   --port 9910 ")).unwrap();
        assert_eq!(args.node, Config::new(NodeId::new(2).unwrap()));
        assert_eq!(args.key_file, None);
        assert_eq!(args.seed, default_seed(NodeId::new(2).unwrap()));
        assert_eq!(args.state, None);
        assert_eq!(args.control_token, None);
    }

    #[test]
    fn refuses_bad_lines() {
        let long_token = std::format!(
            "--id 1 --port 1 --control-token {}",
            "t".repeat(TOKEN_SIZE_MAX + 1)
        );
        let cases: [(&str, ArgsError); 22] = [
            ("--port 1", ArgsError::MissingId),
            ("--id 1", ArgsError::MissingPort),
            ("--id 0 --port 1", ArgsError::BadValue("--id")),
            ("--id 1 --port 0", ArgsError::BadValue("--port")),
            ("--id 1 --port 1 --peer", ArgsError::MissingValue("--peer")),
            (
                "--id 1 --port 1 --peer 2=nowhere",
                ArgsError::BadValue("--peer"),
            ),
            (
                "--id 1 --port 1 --peer 1=127.0.0.1:2",
                ArgsError::DuplicatePeer,
            ),
            ("--id 1 --port 1 --bogus 3", ArgsError::UnknownFlag),
            (
                "--id 1 --port 1 --election-timeout-ms 300",
                ArgsError::BadValue("--election-timeout-ms"),
            ),
            (
                "--id 1 --port 1 --election-timeout-ms 300-100",
                ArgsError::Config(ConfigError::ElectionTimeoutRange),
            ),
            (
                "--id 1 --port 1 --peer 2=127.0.0.1:2 --peer 3=127.0.0.1:3 --peer 4=127.0.0.1:4 \
                 --peer 5=127.0.0.1:5 --peer 6=127.0.0.1:6",
                ArgsError::TooManyPeers,
            ),
            ("--id 1 --port 1 --seed -1", ArgsError::BadValue("--seed")),
            (
                "--id 1 --port 1 --key-file",
                ArgsError::MissingValue("--key-file"),
            ),
            (
                "--id 1 --port 1 --key-file 'k'",
                ArgsError::BadValue("--key-file"),
            ),
            (
                "--id 1 --port 1 --state \"s\"",
                ArgsError::BadValue("--state"),
            ),
            (&long_token, ArgsError::BadValue("--control-token")),
            (
                "--id 1 --port 1 --gateway 10.0.0.1",
                ArgsError::GatewayWithoutAddress,
            ),
            (
                "--id 1 --port 1 --address 10.0.0.5",
                ArgsError::BadValue("--address"),
            ),
            (
                "--id 1 --port 1 --address 10.0.0.5/33",
                ArgsError::BadValue("--address"),
            ),
            (
                "--id 1 --port 1 --address 0.0.0.0/8",
                ArgsError::BadValue("--address"),
            ),
            (
                "--id 1 --port 1 --address 10.0.0.5/24 --gateway x",
                ArgsError::BadValue("--gateway"),
            ),
            (
                "--id 1 --port 1 --address 224.0.0.1/4",
                ArgsError::BadValue("--address"),
            ),
        ];
        for (line, error) in cases {
            assert_eq!(parse(words(line)).err(), Some(error), "{line}");
        }
    }
}
