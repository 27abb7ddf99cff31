//! The board's command line, `goose node`'s flags in the board's terms:
//!
//! ```text
//! --id <1..65535> --port <p> [--peer <id>=<ip:port>]… [--seed <u64>] [--state <path>]
//! [--heartbeat-ms <n>] [--election-timeout-ms <min>-<max>] [--control-token <t>]
//! [--key-file <path>]
//! ```
//!
//! Peers are given as the host sees them (`127.0.0.1:<q>`); the board listens on `<p>`,
//! which a launcher forwards from the host's `127.0.0.1:<p>`, so its own member address is
//! `127.0.0.1:<p>` too. In QEMU the words arrive through semihosting's command line
//! (`-append "…"`). [`write`] is [`parse`]'s inverse, for launchers.
//!
//! The cluster key is never on the command line (QEMU's `-append` is in every `ps`): the
//! line names the host file that holds it (`--key-file`, [`goose_core::auth::key::KEY_HEX_SIZE`] hex
//! digits), which the firmware reads through semihosting at start.

use core::fmt::{self, Write};
use core::net::{Ipv4Addr, SocketAddr};

use goose_core::{Config, ConfigError, Duration, Member, NodeId};
use heapless::{String, Vec};

use crate::board::BoardConfig;
use crate::MEMBERS_MAX;

/// One line of usage, for error messages.
pub const USAGE: &str = "usage: --id <1..65535> --port <p> [--peer <id>=<ip:port>]... \
[--seed <u64>] [--state <path>] [--heartbeat-ms <n>] [--election-timeout-ms <min>-<max>] \
[--control-token <t>] [--key-file <path>]";

/// A parsed command line.
#[derive(Clone, Debug)]
pub struct BoardArgs<'a> {
    /// Everything the board runs with (without the key: [`BoardConfig::key`] is `None`
    /// until the caller has read `key_file`).
    pub config: BoardConfig,
    /// The file that holds the board's flash image, if given.
    pub state: Option<&'a str>,
    /// The file that holds the cluster key, if the flock has one.
    pub key_file: Option<&'a str>,
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
    /// The timing is invalid.
    Config(ConfigError),
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownFlag => f.write_str("unknown flag"),
            Self::MissingValue(flag) => write!(f, "{flag} needs a value"),
            Self::BadValue(flag) => write!(f, "bad value for {flag}"),
            Self::MissingId => f.write_str("--id is required"),
            Self::MissingPort => f.write_str("--port is required"),
            Self::DuplicatePeer => f.write_str("two members share an id"),
            Self::TooManyPeers => write!(f, "at most {MEMBERS_MAX} members"),
            Self::Config(error) => write!(f, "{error}"),
        }
    }
}

impl core::error::Error for ArgsError {}

/// The default election seed of node `id` when `--seed` is absent: differs per id; a
/// launcher should pass a fresh random `--seed` so restarts differ too.
pub const fn default_seed(id: NodeId) -> u64 {
    (id.get() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Parses the board's words (without the program name).
///
/// # Errors
/// See [`ArgsError`]; the first problem found.
pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Result<BoardArgs<'a>, ArgsError> {
    let mut words = words.into_iter().filter(|word| !word.is_empty());
    let mut id = None;
    let mut port = None;
    let mut peers: Vec<Member, MEMBERS_MAX> = Vec::new();
    let mut seed = None;
    let mut state = None;
    let mut heartbeat_ms = 50;
    let mut election_ms = (150, 300);
    let mut token = None;
    let mut key_file = None;
    while let Some(flag) = words.next() {
        let name: &'static str = match flag {
            "--id" => "--id",
            "--port" => "--port",
            "--peer" => "--peer",
            "--seed" => "--seed",
            "--state" => "--state",
            "--heartbeat-ms" => "--heartbeat-ms",
            "--election-timeout-ms" => "--election-timeout-ms",
            "--control-token" => "--control-token",
            "--key-file" => "--key-file",
            _ => return Err(ArgsError::UnknownFlag),
        };
        let value = words.next().ok_or(ArgsError::MissingValue(name))?;
        let bad = ArgsError::BadValue(name);
        match name {
            "--id" => id = Some(value.parse().ok().and_then(NodeId::new).ok_or(bad)?),
            "--port" => port = Some(value.parse::<u16>().ok().filter(|p| *p != 0).ok_or(bad)?),
            "--peer" => {
                let member = parse_peer(value).ok_or(bad)?;
                if peers.iter().any(|m| m.id == member.id) {
                    return Err(ArgsError::DuplicatePeer);
                }
                peers.push(member).map_err(|_| ArgsError::TooManyPeers)?;
            }
            "--seed" => seed = Some(value.parse::<u64>().map_err(|_| bad)?),
            "--state" => state = Some(path(value).ok_or(bad)?),
            "--key-file" => key_file = Some(path(value).ok_or(bad)?),
            "--heartbeat-ms" => heartbeat_ms = value.parse::<u64>().map_err(|_| bad)?,
            "--election-timeout-ms" => {
                let (min, max) = value.split_once('-').ok_or(bad)?;
                let min = min.parse::<u64>().map_err(|_| bad)?;
                election_ms = (min, max.parse::<u64>().map_err(|_| bad)?);
            }
            _ => token = Some(String::try_from(value).map_err(|()| bad)?),
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
    if peers.iter().any(|m| m.id == id) {
        return Err(ArgsError::DuplicatePeer);
    }
    let me = Member {
        id,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        voter: true,
    };
    peers.push(me).map_err(|_| ArgsError::TooManyPeers)?;
    let mut config = BoardConfig::qemu(node, port, &peers, seed.unwrap_or(default_seed(id)))
        .map_err(|_| ArgsError::TooManyPeers)?;
    config.control_token = token;
    Ok(BoardArgs {
        config,
        state,
        key_file,
    })
}

/// A path the command line can carry: one word, no quotes.
fn path(value: &str) -> Option<&str> {
    let plain = !value.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'');
    plain.then_some(value)
}

fn parse_peer(value: &str) -> Option<Member> {
    let (id, addr) = value.split_once('=')?;
    Some(Member {
        id: id.parse().ok().and_then(NodeId::new)?,
        addr: addr.parse().ok()?,
        voter: true,
    })
}

/// Writes `args` as [`parse`] reads them: one line of space-separated words, no newline.
///
/// # Errors
/// Only those of `out`.
pub fn write(out: &mut impl Write, args: &BoardArgs<'_>) -> fmt::Result {
    let config = &args.config;
    let node = &config.node;
    write!(
        out,
        "--id {} --port {} --seed {} --heartbeat-ms {} --election-timeout-ms {}-{}",
        node.id,
        config.port,
        config.seed,
        node.heartbeat_interval.millis(),
        node.election_timeout_min.millis(),
        node.election_timeout_max.millis()
    )?;
    for member in config.members.iter().filter(|m| m.id != node.id) {
        write!(out, " --peer {}={}", member.id, member.addr)?;
    }
    if let Some(state) = args.state {
        write!(out, " --state {state}")?;
    }
    if let Some(token) = &config.control_token {
        write!(out, " --control-token {token}")?;
    }
    if let Some(key_file) = args.key_file {
        write!(out, " --key-file {key_file}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> impl Iterator<Item = &str> {
        line.split(' ')
    }

    #[test]
    fn parses_a_full_line_and_writes_it_back() {
        let line = "--id 4 --port 9903 --seed 77 --heartbeat-ms 40 --election-timeout-ms 200-400 \
                    --peer 1=127.0.0.1:9900 --peer 2=127.0.0.1:9901 --state goose-data/4/board.flash \
                    --control-token s3cret --key-file /etc/goose/cluster.key";
        let args = parse(words(line)).unwrap();
        let config = &args.config;
        assert_eq!(config.node.id.get(), 4);
        assert_eq!(config.port, 9903);
        assert_eq!(config.seed, 77);
        assert_eq!(config.node.heartbeat_interval, Duration::from_millis(40));
        assert_eq!(config.node.election_timeout_max, Duration::from_millis(400));
        assert_eq!(config.members.len(), 3, "the board itself is a member");
        assert!(config
            .members
            .iter()
            .any(|m| m.id.get() == 4 && m.addr == SocketAddr::from((Ipv4Addr::LOCALHOST, 9903))));
        assert_eq!(args.state, Some("goose-data/4/board.flash"));
        assert_eq!(config.control_token.as_deref(), Some("s3cret"));
        assert_eq!(config.mac, [0x02, 0, 0, 0, 0, 4]);
        assert_eq!(args.key_file, Some("/etc/goose/cluster.key"));
        assert!(config.key.is_none(), "the key is read from the file, later");
        let mut line: String<512> = String::new();
        write(&mut line, &args).unwrap();
        let again = parse(words(&line)).unwrap();
        let mut line_again: String<512> = String::new();
        write(&mut line_again, &again).unwrap();
        assert_eq!(line_again, line);
        assert_eq!(
            (again.state, again.key_file, again.config.members),
            (args.state, args.key_file, args.config.members)
        );
    }

    #[test]
    fn defaults_and_extra_spaces() {
        let args = parse(words("  --id 2   --port 9910 ")).unwrap();
        assert_eq!(args.config.node, Config::new(NodeId::new(2).unwrap()));
        assert_eq!(args.key_file, None);
        assert_eq!(args.config.seed, default_seed(NodeId::new(2).unwrap()));
        assert_eq!(args.state, None);
        assert_eq!(args.config.control_token, None);
    }

    #[test]
    fn refuses_bad_lines() {
        let cases: [(&str, ArgsError); 14] = [
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
        ];
        for (line, error) in cases {
            assert_eq!(parse(words(line)).err(), Some(error), "{line}");
        }
    }
}
