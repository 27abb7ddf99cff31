//! The text protocol on a node's UDP port: `whois-goose` probes, `ctl` commands, and the
//! one-line replies (the contract's "One UDP port per node").
//!
//! [`parse`] classifies any datagram and never panics; the caller decides what to send:
//!
//! | [`Request`] | the caller answers |
//! | --- | --- |
//! | `Binary` | nothing here: it is a peer frame for [`crate::wire`] |
//! | `Probe` | [`write_probe_reply`] |
//! | `Control` | `err forbidden` unless from loopback or with the right token; else `ok …` or `err …` |
//! | `Reply` | nothing, so two nodes can never bounce replies |
//! | `Unknown` | `err unknown-command` |
//!
//! Every `write_*` function emits exactly one line ending in `\n` into any [`fmt::Write`];
//! a `heapless::String<TEXT_REPLY_SIZE_MAX>` always has room for it. A refusal's word is a
//! [`Reason`].
//!
//! The client's side sits beside the writers: [`Reply::parse`] reads any reply (a probe's
//! [`ProbeReply`], `ok key=value…`, `err <reason> …`), [`ProbeReply::parse`] a probe's and
//! [`parse_nonce_reply`] the answer to `ctl nonce`; they are total, like [`parse`], and
//! tested against the writers.

use core::fmt::{self, Write};
use core::net::SocketAddr;

use crate::auth::{Mac, TAG_SIZE};
use crate::limits::MEMBERS_MAX;
use crate::raft::Cause;
use crate::types::{NodeId, Term};

mod addr;
mod digits;

pub use addr::{parse_ipv4, parse_socket_addr, AddrText};
pub use digits::write_decimal;
pub(crate) use digits::{write_hex_bytes, write_hex_u64};

/// Peers one `ctl partition` may name by default ([`parse`]): the default member capacity
/// ([`MEMBERS_MAX`]), since a node never has more peers than its flock holds. A longer list
/// is refused with [`Reason::TooManyPeers`], never truncated (a half-applied partition
/// would mislead). A small node picks a smaller capacity with [`parse_sized`]: each peer
/// takes 32 bytes, so 64 of them cost 2 KiB of RAM, and as much stack while a command is
/// parsed.
pub const PARTITION_PEERS_MAX: usize = MEMBERS_MAX;

/// Size of the longest reply, `ctl status` at [`MEMBERS_MAX`] members: three id lists
/// (members, voters, learners) of up to 64 × 6 characters (`65535,`), plus up to
/// [`crate::service::STATUS_COUNTERS_MAX`] counters and a dozen other `key=value` pairs,
/// each at most 40 characters (a 19-character name and a 20-digit `u64`). Writing into a
/// smaller buffer may fail.
pub const TEXT_REPLY_SIZE_MAX: usize = 4096;

const _: () = assert!(
    3 * MEMBERS_MAX * "65535,".len() + (crate::service::STATUS_COUNTERS_MAX + 12) * 40
        <= TEXT_REPLY_SIZE_MAX
);

/// What a datagram that arrived on the node's port asks for; a `ctl partition` names at most
/// `N` peers.
#[allow(
    clippy::large_enum_variant,
    reason = "no alloc to box into; parsed once, on the stack"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request<'a, const N: usize = PARTITION_PEERS_MAX> {
    /// A peer frame (first byte ≥ 0x80): the caller decodes it with [`crate::wire`].
    Binary,
    /// `whois-goose`, or `whois-goose nonce=<16 hex digits>`: answer with
    /// [`write_probe_reply`], or, by a node with a cluster key asked with a nonce, with
    /// [`write_signed_probe_reply`].
    Probe {
        /// The client's nonce, which a signed answer covers.
        nonce: Option<u64>,
    },
    /// `ctl [token=T] <command> [args]`, or signed:
    /// `ctl sig=<tag> nonce=<nonce> <command> [args]` (see [`crate::auth`]).
    Control {
        /// The `token=T` argument, if given (`T` may be empty). Checked by the caller, and
        /// only for sources other than loopback.
        token: Option<&'a str>,
        /// The signature, if the command is signed (checked by the caller). A `sig=` word
        /// that is not [`Signature`]-shaped makes the command [`Reason::BadSignature`].
        signature: Option<Signature<'a>>,
        /// The command, or why it would not parse (answered `err <reason>`).
        command: Result<Command<N>, Reason>,
    },
    /// Text that is itself a reply (first word `ok`, `err`, `goose` or `duck`): answer nothing.
    Reply,
    /// Any other text, including empty or non-UTF-8 datagrams: answer `err unknown-command`.
    Unknown,
}

/// A parsed `ctl` command; the contract's table says what each does. A partition names at
/// most `N` peers.
#[allow(
    clippy::large_enum_variant,
    reason = "no alloc to box into; parsed once, on the stack"
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<const N: usize = PARTITION_PEERS_MAX> {
    /// `stop`: go silent to peers, keep answering probes and control.
    Stop,
    /// `start`: resume from the persisted state as a follower.
    Start,
    /// `partition <peer>[,<peer>…]`: drop peer traffic with exactly these peers. An empty
    /// list (`partition` alone) heals.
    Partition(PeerList<N>),
    /// `heal`: drop no peer traffic.
    Heal,
    /// `status`: answer with [`write_status`].
    Status,
    /// `transfer [<id>]`: hand leadership to `id`, or to the most up-to-date voter.
    Transfer(Option<NodeId>),
    /// `add <id> <ip:port>`: add a learner.
    Add {
        /// The new member's id.
        id: NodeId,
        /// Where it listens.
        addr: SocketAddr,
    },
    /// `remove <id>`: remove a voter or learner.
    Remove(NodeId),
    /// `nonce`: a nonce to sign a command with (nodes with a cluster key; see
    /// [`crate::auth`]). Needs no authorization: it changes nothing.
    Nonce,
}

/// A signed command's `sig=<32 hex digits> nonce=<16 hex digits>` and the text the tag
/// covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature<'a> {
    /// The tag.
    pub tag: [u8; TAG_SIZE],
    /// The nonce the node issued.
    pub nonce: u64,
    /// `nonce=… <command> [args]` as sent: what the tag covers.
    pub signed: &'a str,
}

/// One peer named in `ctl partition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRef {
    /// By node id, e.g. `3`.
    Id(NodeId),
    /// By address, e.g. `127.0.0.1:9902` or `[::1]:9902`.
    Addr(SocketAddr),
}

/// The set of peers a node is partitioned from: at most `N` (by default
/// [`PARTITION_PEERS_MAX`]), no duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerList<const N: usize = PARTITION_PEERS_MAX> {
    peers: heapless::Vec<PeerRef, N>,
}

impl<const N: usize> PeerList<N> {
    /// The empty set: no partition.
    pub const fn new() -> Self {
        Self {
            peers: heapless::Vec::new(),
        }
    }

    /// The peers, in the order first named.
    pub fn as_slice(&self) -> &[PeerRef] {
        &self.peers
    }

    /// Whether no peer is named.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Whether the member `id` listening at `addr` is named, by id or by address.
    pub fn contains(&self, id: NodeId, addr: SocketAddr) -> bool {
        self.peers.iter().any(|peer| match *peer {
            PeerRef::Id(named) => named == id,
            PeerRef::Addr(named) => named == addr,
        })
    }

    fn insert(&mut self, peer: PeerRef) -> Result<(), Reason> {
        if self.peers.contains(&peer) {
            return Ok(());
        }
        self.peers.push(peer).map_err(|_| Reason::TooManyPeers)
    }
}

/// The word after `err` in a refusal: every one a node writes, so that the service writes
/// and a client reads the same enum rather than matching strings; also why a `ctl` command
/// would not parse (its first seven variants). Only
/// [`Reason::NotGoose`] carries more (`goose=<id|none> addr=<ip:port|none>`, see
/// [`write_not_goose`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `unknown-command`: no such command, or text that is no request at all.
    UnknownCommand,
    /// `missing-argument`: the command, or one of its required arguments, is missing.
    MissingArgument,
    /// `bad-node-id`: a node id that is not a number in `1..=65535`.
    BadNodeId,
    /// `bad-address`: an address that is not `ip:port`.
    BadAddress,
    /// `too-many-peers`: a partition naming more peers than the node holds.
    TooManyPeers,
    /// `extra-argument`: more arguments than the command takes.
    ExtraArgument,
    /// `bad-signature`: a `sig=` that is not 32 hex digits, `nonce=` and 16 hex digits.
    BadSignature,
    /// `forbidden`: control refused (an untrusted source without the token, unsigned
    /// control to a node with a cluster key, or a signature that does not match).
    Forbidden,
    /// `no-key`: signed control, or `ctl nonce`, sent to a node without a cluster key.
    NoKey,
    /// `no-nonce`: the node has issued every nonce one boot may issue.
    NoNonce,
    /// `stale-nonce`: a signed command over a nonce not issued, used, expired or pushed
    /// out: ask for a fresh nonce and sign again.
    StaleNonce,
    /// `not-goose`: a goose-only command sent to a duck; the reply names the goose.
    NotGoose,
    /// `busy`: a membership change or handoff is under way, or a newer transfer requester
    /// took this one's place; try again.
    Busy,
    /// `no-target`: no voter to hand leadership to, or none caught up in time.
    NoTarget,
    /// `unknown-node`: no such member (or, for `transfer`, no such voter).
    UnknownNode,
    /// `address-in-use`: another member listens at that address.
    AddressInUse,
    /// `last-voter`: removing the only voter would leave a flock that can never commit.
    LastVoter,
    /// `members-full`: the membership is at capacity.
    MembersFull,
    /// `transfer-first`: a goose of two voters removing itself must hand off first.
    TransferFirst,
    /// `exiting`: `ctl start` on a node that is leaving.
    Exiting,
    /// `start-failed`: `ctl start` could not rebuild the node from its storage.
    StartFailed,
    /// `reply-too-long`: the answer does not fit the node's reply buffer.
    ReplyTooLong,
    /// `unhealthy`: a transfer to a voter whose health check fails.
    Unhealthy,
    /// `id-in-use`: `add` of an id that is a member at another address (another node has
    /// that id, or the member moved: remove it first).
    IdInUse,
    /// `duplicate-id`: sent, unasked, to the source of peer frames carrying an id that
    /// another address (or the receiving node itself) already uses.
    DuplicateId,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: [Self; 25] = [
        Self::UnknownCommand,
        Self::MissingArgument,
        Self::BadNodeId,
        Self::BadAddress,
        Self::TooManyPeers,
        Self::ExtraArgument,
        Self::BadSignature,
        Self::Forbidden,
        Self::NoKey,
        Self::NoNonce,
        Self::StaleNonce,
        Self::NotGoose,
        Self::Busy,
        Self::NoTarget,
        Self::UnknownNode,
        Self::AddressInUse,
        Self::LastVoter,
        Self::MembersFull,
        Self::TransferFirst,
        Self::Exiting,
        Self::StartFailed,
        Self::ReplyTooLong,
        Self::Unhealthy,
        Self::IdInUse,
        Self::DuplicateId,
    ];

    /// The word as it appears in `err <word>`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownCommand => "unknown-command",
            Self::MissingArgument => "missing-argument",
            Self::BadNodeId => "bad-node-id",
            Self::BadAddress => "bad-address",
            Self::TooManyPeers => "too-many-peers",
            Self::ExtraArgument => "extra-argument",
            Self::BadSignature => "bad-signature",
            Self::Forbidden => "forbidden",
            Self::NoKey => "no-key",
            Self::NoNonce => "no-nonce",
            Self::StaleNonce => "stale-nonce",
            Self::NotGoose => "not-goose",
            Self::Busy => "busy",
            Self::NoTarget => "no-target",
            Self::UnknownNode => "unknown-node",
            Self::AddressInUse => "address-in-use",
            Self::LastVoter => "last-voter",
            Self::MembersFull => "members-full",
            Self::TransferFirst => "transfer-first",
            Self::Exiting => "exiting",
            Self::StartFailed => "start-failed",
            Self::ReplyTooLong => "reply-too-long",
            Self::Unhealthy => "unhealthy",
            Self::IdInUse => "id-in-use",
            Self::DuplicateId => "duplicate-id",
        }
    }

    /// The reason `word` names; `None` for a word no node of this build writes (a newer
    /// node's, or noise).
    pub fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == word)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Classifies one datagram. Total: any byte string gives a [`Request`], never a panic.
/// Trailing ASCII whitespace (spaces, `\r`, `\n`) is ignored; words are separated by one
/// or more spaces. A `ctl partition` may name up to [`PARTITION_PEERS_MAX`] peers.
pub fn parse(datagram: &[u8]) -> Request<'_> {
    parse_sized(datagram)
}

/// [`parse`] with room for `N` peers in a `ctl partition` (a longer list is
/// [`Reason::TooManyPeers`]).
pub fn parse_sized<const N: usize>(datagram: &[u8]) -> Request<'_, N> {
    let Some(&first) = datagram.first() else {
        return Request::Unknown;
    };
    if first >= 0x80 {
        return Request::Binary;
    }
    let Ok(text) = core::str::from_utf8(datagram.trim_ascii_end()) else {
        return Request::Unknown;
    };
    let (first_word, rest) = text.split_once(' ').unwrap_or((text, ""));
    match first_word {
        "whois-goose" if rest.is_empty() => Request::Probe { nonce: None },
        "whois-goose" => match parse_probe_nonce(rest) {
            Some(nonce) => Request::Probe { nonce: Some(nonce) },
            None => Request::Unknown,
        },
        "ok" | "err" | "goose" | "duck" => Request::Reply,
        "ctl" => {
            let rest = rest.trim_start_matches(' ');
            if let Some(signed) = rest.strip_prefix("sig=") {
                return parse_signed(signed);
            }
            let mut words = rest.split(' ').filter(|word| !word.is_empty()).peekable();
            let token = words.next_if(|word| word.starts_with("token="));
            let token = token.and_then(|word| word.strip_prefix("token="));
            Request::Control {
                token,
                signature: None,
                command: parse_command(&mut words),
            }
        }
        _ => Request::Unknown,
    }
}

/// `<tag> nonce=<nonce> <command> [args]`, after `ctl sig=`.
fn parse_signed<const N: usize>(text: &str) -> Request<'_, N> {
    let (tag, signed) = text.split_once(' ').unwrap_or((text, ""));
    let signed = signed.trim_start_matches(' ');
    let (nonce, command) = signed.split_once(' ').unwrap_or((signed, ""));
    let mut tag_bytes = [0; TAG_SIZE];
    let mut nonce_bytes = [0; 8];
    let signature = parse_hex(tag, &mut tag_bytes)
        .and_then(|()| parse_hex(nonce.strip_prefix("nonce=")?, &mut nonce_bytes))
        .map(|()| Signature {
            tag: tag_bytes,
            nonce: u64::from_be_bytes(nonce_bytes),
            signed,
        });
    let command = match signature {
        Some(_) => parse_command(&mut command.split(' ').filter(|word| !word.is_empty())),
        None => Err(Reason::BadSignature),
    };
    Request::Control {
        token: None,
        signature,
        command,
    }
}

/// The nonce of `whois-goose nonce=<16 hex digits>` (one space before it, as in every
/// request).
fn parse_probe_nonce(rest: &str) -> Option<u64> {
    let mut bytes = [0; 8];
    parse_hex(rest.strip_prefix("nonce=")?, &mut bytes)?;
    Some(u64::from_be_bytes(bytes))
}

/// Fills `out` from exactly `2 × out.len()` hex digits (either case, no sign).
fn parse_hex(text: &str, out: &mut [u8]) -> Option<()> {
    if text.len() != 2 * out.len() {
        return None;
    }
    let digit = |byte: u8| char::from(byte).to_digit(16);
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        *byte = u8::try_from((digit(pair[0])? << 4) | digit(pair[1])?).ok()?;
    }
    Some(())
}

fn parse_command<'a, const N: usize>(
    words: &mut impl Iterator<Item = &'a str>,
) -> Result<Command<N>, Reason> {
    let mut required = || words.next().ok_or(Reason::MissingArgument);
    let command = match required()? {
        "stop" => Command::Stop,
        "start" => Command::Start,
        "heal" => Command::Heal,
        "status" => Command::Status,
        "partition" => Command::Partition(required().map_or(Ok(PeerList::new()), parse_peers)?),
        "transfer" => Command::Transfer(required().ok().map(parse_node_id).transpose()?),
        "add" => Command::Add {
            id: parse_node_id(required()?)?,
            addr: parse_addr(required()?)?,
        },
        "remove" => Command::Remove(parse_node_id(required()?)?),
        "nonce" => Command::Nonce,
        _ => return Err(Reason::UnknownCommand),
    };
    match words.next() {
        Some(_) => Err(Reason::ExtraArgument),
        None => Ok(command),
    }
}

/// A comma-separated list of ids and addresses; empty items are skipped, so `1,2,` is fine.
fn parse_peers<const N: usize>(list: &str) -> Result<PeerList<N>, Reason> {
    let mut peers = PeerList::new();
    for item in list.split(',').filter(|item| !item.is_empty()) {
        let peer = match item.contains(':') {
            true => PeerRef::Addr(parse_addr(item)?),
            false => PeerRef::Id(parse_node_id(item)?),
        };
        peers.insert(peer)?;
    }
    Ok(peers)
}

fn parse_node_id(word: &str) -> Result<NodeId, Reason> {
    word.parse::<u16>()
        .ok()
        .and_then(NodeId::new)
        .ok_or(Reason::BadNodeId)
}

fn parse_addr(word: &str) -> Result<SocketAddr, Reason> {
    parse_socket_addr(word).ok_or(Reason::BadAddress)
}

/// A node's answer to `whois-goose`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeReply {
    /// Whether the node is goose now (leader, own-term entry committed, lease valid).
    pub goose: bool,
    /// The node's id.
    pub id: NodeId,
    /// Its current term.
    pub term: Term,
    /// The leader it follows, if known (may be itself while it is a leader but not goose).
    pub leader: Option<NodeId>,
    /// Whether the node was stopped with `ctl stop`.
    pub stopped: bool,
    /// A goose's lease left, in milliseconds (`lease_ms=`, written by a goose only): no
    /// other node can be goose before it has passed, counted from when the reply left.
    pub lease_ms: Option<u64>,
}

/// Writes `goose id=3 term=7 goose=3 lease_ms=120`, `duck id=1 term=7 goose=3|none` or,
/// when stopped, `duck id=1 term=7 goose=none state=stopped`, then `\n`.
///
/// # Errors
/// Only those of `out` (a full buffer).
pub fn write_probe_reply(out: &mut impl Write, reply: &ProbeReply) -> fmt::Result {
    write_probe_words(out, reply)?;
    out.write_char('\n')
}

/// The probe reply without its `\n`. Written a word at a time, numbers by
/// [`write_decimal`]: it is the answer to every probe, the node's hottest path, and
/// `write!`'s formatting machinery cost more than the rest of the reply.
fn write_probe_words(out: &mut impl Write, reply: &ProbeReply) -> fmt::Result {
    let (role, goose) = role_and_goose(reply.goose, reply.id, reply.leader, reply.stopped);
    out.write_str(role)?;
    out.write_str(" id=")?;
    write_decimal(out, u64::from(reply.id.get()))?;
    out.write_str(" term=")?;
    write_decimal(out, reply.term.0)?;
    out.write_str(" goose=")?;
    write_id_or_none(out, goose)?;
    if let (Some(lease_ms), "goose") = (reply.lease_ms, role) {
        out.write_str(" lease_ms=")?;
        write_decimal(out, lease_ms)?;
    }
    if reply.stopped {
        out.write_str(" state=stopped")?;
    }
    Ok(())
}

/// Bytes of the longest signed probe reply before its `sig=`: the role, `id`, `term`,
/// `goose`, `lease_ms` and `nonce` at their longest, and `state=stopped`.
const SIGNED_PROBE_SIZE_MAX: usize = 160;

/// Bytes of the longest probe reply, signed: what a reply buffer must hold.
pub const PROBE_REPLY_SIZE_MAX: usize = SIGNED_PROBE_SIZE_MAX + " sig=".len() + 2 * TAG_SIZE + 1;

const _: () = assert!(
    "goose id=65535 term=18446744073709551615 goose=65535 lease_ms=18446744073709551615 \
     state=stopped nonce=0123456789abcdef"
        .len()
        <= SIGNED_PROBE_SIZE_MAX
);

/// Writes the answer to `whois-goose nonce=<nonce>` of a node with a cluster key: the
/// probe reply, ` nonce=<16 hex digits>`, then ` sig=<32 hex digits>`, a tag over
/// everything before ` sig=` (so over the reply and the nonce), then `\n`. The tag cannot
/// be taken for a peer frame's or a signed command's: those cover bytes that start with a
/// byte ≥ 0x80 or with `nonce=`, this one bytes that start with `goose` or `duck`.
///
/// # Errors
/// Only those of `out`.
pub fn write_signed_probe_reply(
    out: &mut impl Write,
    reply: &ProbeReply,
    nonce: u64,
    mac: &impl Mac,
) -> fmt::Result {
    let mut signed: heapless::String<SIGNED_PROBE_SIZE_MAX> = heapless::String::new();
    write_probe_words(&mut signed, reply)?;
    signed.write_str(" nonce=")?;
    write_hex_u64(&mut signed, nonce)?;
    out.write_str(&signed)?;
    out.write_str(" sig=")?;
    write_hex_bytes(out, &mac.tag(signed.as_bytes()))?;
    out.write_char('\n')
}

/// Why a signed probe reply was not accepted ([`verify_signed_probe_reply`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedProbeError {
    /// No `sig=` word: a node without the key answered, or a forger that lacks it.
    Unsigned,
    /// The `nonce=` is not the one sent: a replay of an older answer.
    WrongNonce,
    /// The tag does not match: forged, corrupted, or another flock's key.
    BadTag,
    /// The reply itself does not parse.
    Reply(ReplyError),
}

impl fmt::Display for SignedProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unsigned => f.write_str("unsigned (does the node have the cluster key?)"),
            Self::WrongNonce => f.write_str("signed for another nonce (a replayed answer)"),
            Self::BadTag => f.write_str("bad signature (forged, or another key)"),
            Self::Reply(error) => write!(f, "not a probe reply: {error}"),
        }
    }
}

impl core::error::Error for SignedProbeError {}

/// The client's side of [`write_signed_probe_reply`]: the reply, if `line` is an answer to
/// `whois-goose nonce=<nonce>` signed with `mac`'s key.
///
/// # Errors
/// See [`SignedProbeError`].
pub fn verify_signed_probe_reply(
    line: &str,
    nonce: u64,
    mac: &impl Mac,
) -> Result<ProbeReply, SignedProbeError> {
    let line = one_line(line).map_err(SignedProbeError::Reply)?;
    let (signed, tag) = line
        .rsplit_once(" sig=")
        .ok_or(SignedProbeError::Unsigned)?;
    let mut tag_bytes = [0; TAG_SIZE];
    parse_hex(tag, &mut tag_bytes).ok_or(SignedProbeError::BadTag)?;
    if !mac.verify(signed.as_bytes(), &tag_bytes) {
        return Err(SignedProbeError::BadTag);
    }
    let mut said = [0; 8];
    let told = Pairs(signed)
        .get("nonce")
        .and_then(|hex| parse_hex(hex, &mut said));
    if told.is_none() || u64::from_be_bytes(said) != nonce {
        return Err(SignedProbeError::WrongNonce);
    }
    ProbeReply::parse(signed).map_err(SignedProbeError::Reply)
}

/// Writes `whois-goose nonce=<16 hex digits>`, the request a signed answer covers.
///
/// # Errors
/// Only those of `out`.
pub fn write_signed_probe(out: &mut impl Write, nonce: u64) -> fmt::Result {
    out.write_str("whois-goose nonce=")?;
    write_hex_u64(out, nonce)
}

/// The answer to `ctl status`; each field is printed as one `key=value` pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusReply<'a> {
    /// Whether the node is goose now.
    pub goose: bool,
    /// Its Raft role: `leader`, `candidate`, `follower` or `learner`.
    pub raft: &'a str,
    /// The node's id.
    pub id: NodeId,
    /// Its current term.
    pub term: Term,
    /// The leader it follows, if known.
    pub leader: Option<NodeId>,
    /// Whether the node was stopped with `ctl stop`.
    pub stopped: bool,
    /// Its commit index.
    pub commit: u64,
    /// Every member, voters and learners.
    pub members: &'a [NodeId],
    /// The voters.
    pub voters: &'a [NodeId],
    /// The learners.
    pub learners: &'a [NodeId],
    /// Lease left in milliseconds, 0 if none.
    pub lease_ms: u64,
    /// Whether its health check passes (always, without one).
    pub healthy: bool,
    /// Why the role last changed and how many milliseconds ago, if known.
    pub change: Option<(Cause, u64)>,
    /// The program's own `key=value` fields (`vips=`), printed in this order before the
    /// counters.
    pub fields: &'a [(&'a str, &'a str)],
    /// Named counters (one per drop reason), printed in this order.
    pub counters: &'a [(&'a str, u64)],
}

/// Writes `ok role=… raft=… id=… term=… goose=… state=running|stopped commit=… members=…
/// voters=… learners=… lease_ms=… healthy=yes|no`, with a change `cause=<word>[
/// cause_node=<id>] changed_ms=…` ([`Cause::as_str`]), then each field as ` key=value`,
/// then each counter as ` name=n`, then `\n`. `role` and `goose` follow the probe's rules (a stopped node is `role=duck goose=none`).
///
/// # Errors
/// Only those of `out` (a full buffer; [`TEXT_REPLY_SIZE_MAX`] always suffices).
pub fn write_status(out: &mut impl Write, status: &StatusReply<'_>) -> fmt::Result {
    let (role, goose) = role_and_goose(status.goose, status.id, status.leader, status.stopped);
    out.write_str("ok role=")?;
    out.write_str(role)?;
    out.write_str(" raft=")?;
    out.write_str(status.raft)?;
    write_pair(out, " id=", u64::from(status.id.get()))?;
    write_pair(out, " term=", status.term.0)?;
    out.write_str(" goose=")?;
    write_id_or_none(out, goose)?;
    out.write_str(if status.stopped {
        " state=stopped"
    } else {
        " state=running"
    })?;
    write_pair(out, " commit=", status.commit)?;
    out.write_str(" members=")?;
    write_id_list(out, status.members)?;
    out.write_str(" voters=")?;
    write_id_list(out, status.voters)?;
    out.write_str(" learners=")?;
    write_id_list(out, status.learners)?;
    write_pair(out, " lease_ms=", status.lease_ms)?;
    out.write_str(if status.healthy {
        " healthy=yes"
    } else {
        " healthy=no"
    })?;
    if let Some((cause, changed_ms)) = status.change {
        out.write_str(" cause=")?;
        out.write_str(cause.as_str())?;
        if let Some(node) = cause.node() {
            write_pair(out, " cause_node=", u64::from(node.get()))?;
        }
        write_pair(out, " changed_ms=", changed_ms)?;
    }
    for (key, value) in status.fields {
        out.write_char(' ')?;
        out.write_str(key)?;
        out.write_char('=')?;
        out.write_str(value)?;
    }
    for (name, value) in status.counters {
        out.write_char(' ')?;
        out.write_str(name)?;
        write_pair(out, "=", *value)?;
    }
    out.write_char('\n')
}

/// Writes `ok <key>=<value>\n`, e.g. `ok to=4` (the answer to a `transfer`).
///
/// # Errors
/// Only those of `out`.
pub fn write_ok_pair(out: &mut impl Write, key: &str, value: u64) -> fmt::Result {
    out.write_str("ok ")?;
    out.write_str(key)?;
    write_pair(out, "=", value)?;
    out.write_char('\n')
}

/// Writes `ok\n`.
///
/// # Errors
/// Only those of `out`.
pub fn write_ok_plain(out: &mut impl Write) -> fmt::Result {
    out.write_str("ok\n")
}

/// Writes the answer to `ctl nonce`: `ok nonce=<16 hex digits>\n`.
///
/// # Errors
/// Only those of `out`.
pub fn write_nonce(out: &mut impl Write, nonce: u64) -> fmt::Result {
    out.write_str("ok nonce=")?;
    write_hex_u64(out, nonce)?;
    out.write_char('\n')
}

/// The nonce in an answer to `ctl nonce` (the client's side), if it is one.
pub fn parse_nonce_reply(reply: &str) -> Option<u64> {
    let Ok(Reply::Ok(pairs)) = Reply::parse(reply) else {
        return None;
    };
    let mut bytes = [0; 8];
    parse_hex(pairs.get("nonce")?, &mut bytes)?;
    Some(u64::from_be_bytes(bytes))
}

/// Writes `err <reason>\n`, e.g. `err forbidden` or [`Reason`]. A duck's
/// `err not-goose` names the goose: write it with [`write_not_goose`].
///
/// # Errors
/// Only those of `out`.
pub fn write_err(out: &mut impl Write, reason: Reason) -> fmt::Result {
    write_err_words(out, reason)?;
    out.write_char('\n')
}

/// Writes a duck's answer to a goose-only command:
/// `err not-goose goose=<id|none> addr=<ip:port|none>\n`.
///
/// # Errors
/// Only those of `out`.
pub fn write_not_goose(
    out: &mut impl Write,
    goose: Option<NodeId>,
    addr: Option<SocketAddr>,
) -> fmt::Result {
    write_err_words(out, Reason::NotGoose)?;
    out.write_str(" goose=")?;
    write_id_or_none(out, goose)?;
    write_addr_line_end(out, addr)
}

/// Writes what a node tells the source of peer frames carrying an id already in use
/// elsewhere: `err duplicate-id id=<id> addr=<ip:port|none>\n`, `addr` being where the
/// receiver's membership has that id.
///
/// # Errors
/// Only those of `out`.
pub fn write_duplicate_id(
    out: &mut impl Write,
    id: NodeId,
    addr: Option<SocketAddr>,
) -> fmt::Result {
    write_err_words(out, Reason::DuplicateId)?;
    write_pair(out, " id=", u64::from(id.get()))?;
    write_addr_line_end(out, addr)
}

/// The role word and `goose=` value: a stopped node is a duck following no one; a goose
/// names itself; a duck names its leader but never itself (a leader that is not goose
/// answers `duck … goose=none`, so no two replies ever name two geese).
fn role_and_goose(
    goose: bool,
    id: NodeId,
    leader: Option<NodeId>,
    stopped: bool,
) -> (&'static str, Option<NodeId>) {
    match (stopped, goose) {
        (true, _) => ("duck", None),
        (false, true) => ("goose", Some(id)),
        (false, false) => ("duck", leader.filter(|&leader| leader != id)),
    }
}

// ---- Reading replies (the client's side) ----

/// A reply as a client reads it: the other side of the `write_*` functions above. Parsing
/// is total: any text gives a [`Reply`] or a [`ReplyError`], never a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// `goose …` or `duck …`: the answer to `whois-goose` ([`ProbeReply::parse`]).
    Probe(ProbeReply),
    /// `ok[ key=value…]`: plain `ok`, `ok to=<id>`, `ok nonce=<hex>` or `ctl status`.
    Ok(Pairs<'a>),
    /// `err <reason>[ key=value…]`.
    Err {
        /// The reason; `None` for a word this build does not know (a newer node's).
        reason: Option<Reason>,
        /// What follows the reason (`goose=… addr=…` after `not-goose`).
        details: Pairs<'a>,
    },
}

/// Why a reply did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyError {
    /// Empty, or more than one line (one `\n`, at the end, is allowed).
    NotOneLine,
    /// The first word is none of `goose`, `duck`, `ok` and `err` (for a probe reply: not
    /// `goose` or `duck`).
    UnknownKind,
    /// A probe reply's pair with this key is missing or its value is not well formed.
    BadPair(&'static str),
    /// A probe reply that contradicts itself: a goose that does not name itself in
    /// `goose=`, a duck that names itself, or a goose that says it is stopped.
    Inconsistent,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotOneLine => f.write_str("not one line"),
            Self::UnknownKind => f.write_str("does not start with goose, duck, ok or err"),
            Self::BadPair(key) => write!(f, "no well-formed {key}="),
            Self::Inconsistent => {
                f.write_str("a goose not naming itself, a duck naming itself, or a stopped goose")
            }
        }
    }
}

impl core::error::Error for ReplyError {}

/// The `key=value` words of a reply, in order; words without `=` are skipped. Where a key
/// appears twice the first counts (the contract: more pairs may follow, scripts take the
/// first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pairs<'a>(&'a str);

impl<'a> Pairs<'a> {
    /// Every pair, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.0.split(' ').filter_map(|word| word.split_once('='))
    }

    /// The first value given for `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, value)| value)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl<'a> Reply<'a> {
    /// Parses one reply line, with or without its final `\n`.
    ///
    /// # Errors
    /// See [`ReplyError`]; a probe reply is checked as [`ProbeReply::parse`] does.
    pub fn parse(line: &'a str) -> Result<Self, ReplyError> {
        let line = one_line(line)?;
        let (kind, rest) = first_word(line);
        match kind {
            "goose" | "duck" => ProbeReply::parse(line).map(Self::Probe),
            "ok" => Ok(Self::Ok(Pairs(rest))),
            "err" => {
                let (word, details) = first_word(rest);
                Ok(Self::Err {
                    reason: Reason::parse(word),
                    details: Pairs(details),
                })
            }
            _ => Err(ReplyError::UnknownKind),
        }
    }

    /// The reason of an `err` reply; `None` for any other reply or an unknown word.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            Self::Err { reason, .. } => *reason,
            _ => None,
        }
    }

    /// The goose's address in `err not-goose goose=<id> addr=<ip:port>`, if it names one:
    /// where to send a goose-only command next.
    pub fn goose_addr(&self) -> Option<SocketAddr> {
        match self {
            Self::Err {
                reason: Some(Reason::NotGoose),
                details,
            } => parse_socket_addr(details.get("addr")?),
            _ => None,
        }
    }
}

impl ProbeReply {
    /// Parses an answer to `whois-goose`, with or without its final `\n`: the role, then
    /// `id`, `term` and `goose` pairs (`lease_ms=` if given, `state=stopped` if stopped;
    /// other pairs, such as a signed reply's `nonce=` and `sig=`, are skipped). A reply [`write_probe_reply`] wrote parses back to what it says: `goose`
    /// is the role, `leader` the `goose=` value.
    ///
    /// # Errors
    /// See [`ReplyError`].
    pub fn parse(line: &str) -> Result<Self, ReplyError> {
        let line = one_line(line)?;
        let (role, rest) = first_word(line);
        let goose = match role {
            "goose" => true,
            "duck" => false,
            _ => return Err(ReplyError::UnknownKind),
        };
        let pairs = Pairs(rest);
        let id = pairs.get("id").and_then(reply_node_id);
        let id = id.ok_or(ReplyError::BadPair("id"))?;
        let term = pairs.get("term").and_then(|value| value.parse().ok());
        let term = Term(term.ok_or(ReplyError::BadPair("term"))?);
        let leader = match pairs.get("goose") {
            Some("none") => None,
            Some(value) => Some(reply_node_id(value).ok_or(ReplyError::BadPair("goose"))?),
            None => return Err(ReplyError::BadPair("goose")),
        };
        let stopped = pairs.get("state") == Some("stopped");
        let lease_ms = match pairs.get("lease_ms") {
            Some(value) => Some(value.parse().map_err(|_| ReplyError::BadPair("lease_ms"))?),
            None => None,
        };
        let consistent = match goose {
            true => leader == Some(id) && !stopped,
            false => leader != Some(id),
        };
        if !consistent {
            return Err(ReplyError::Inconsistent);
        }
        Ok(Self {
            goose,
            id,
            term,
            leader,
            stopped,
            lease_ms,
        })
    }
}

/// `line` without its final `\n`; an error if empty or if more lines follow.
fn one_line(line: &str) -> Result<&str, ReplyError> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    if line.is_empty() || line.contains('\n') {
        return Err(ReplyError::NotOneLine);
    }
    Ok(line)
}

/// The first word and the rest after one space.
fn first_word(text: &str) -> (&str, &str) {
    text.split_once(' ').unwrap_or((text, ""))
}

/// A node id as a reply writes it: decimal, `1..=65535`.
fn reply_node_id(value: &str) -> Option<NodeId> {
    NodeId::new(value.parse().ok()?)
}

/// Writes `err <reason>`.
fn write_err_words(out: &mut impl Write, reason: Reason) -> fmt::Result {
    out.write_str("err ")?;
    out.write_str(reason.as_str())
}

/// Writes ` addr=<ip:port|none>\n`, the end of a refusal that names where an id lives.
fn write_addr_line_end(out: &mut impl Write, addr: Option<SocketAddr>) -> fmt::Result {
    out.write_str(" addr=")?;
    match addr {
        Some(addr) => AddrText(addr).write_to(out)?,
        None => out.write_str("none")?,
    }
    out.write_char('\n')
}

/// Writes `<key><value>`, the key with its `=` (and any space before it), the value in
/// decimal.
fn write_pair(out: &mut impl Write, key: &str, value: u64) -> fmt::Result {
    out.write_str(key)?;
    write_decimal(out, value)
}

/// Writes a node id, or `none`.
fn write_id_or_none(out: &mut impl Write, id: Option<NodeId>) -> fmt::Result {
    match id {
        Some(id) => write_decimal(out, u64::from(id.get())),
        None => out.write_str("none"),
    }
}

/// Writes node ids separated by commas (nothing for none).
fn write_id_list(out: &mut impl Write, ids: &[NodeId]) -> fmt::Result {
    for (index, id) in ids.iter().enumerate() {
        if index > 0 {
            out.write_char(',')?;
        }
        write_decimal(out, u64::from(id.get()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use heapless::{String, Vec};

    use super::*;

    /// Test text, formatted without `std`.
    type Text = String<512>;

    macro_rules! text {
        ($($arg:tt)*) => {{
            let mut out = Text::new();
            out.write_fmt(format_args!($($arg)*)).unwrap();
            out
        }};
    }

    #[test]
    fn probe_replies_are_written_as_the_format_machinery_would() {
        let id = NodeId::new(7).unwrap();
        for (goose, term, leader, stopped, lease_ms) in [
            (true, 0, Some(id), false, Some(0)),
            (true, u64::MAX, Some(id), false, Some(u64::MAX)),
            (false, 10, NodeId::new(65535), false, None),
            (false, 99, None, false, None),
            (false, 1_000_000_007, NodeId::new(1), true, None),
        ] {
            let reply = ProbeReply {
                goose,
                id,
                term: Term(term),
                leader,
                stopped,
                lease_ms,
            };
            let mut written = Text::new();
            write_probe_reply(&mut written, &reply).unwrap();
            let (role, shown) = role_and_goose(goose, id, leader, stopped);
            let mut expected = text!("{role} id={id} term={term} goose={}", OrNone(shown));
            if let (Some(lease_ms), "goose") = (lease_ms, role) {
                expected.push_str(&text!(" lease_ms={lease_ms}")).unwrap();
            }
            if stopped {
                expected.push_str(" state=stopped").unwrap();
            }
            expected.push('\n').unwrap();
            assert_eq!(written, expected);
        }
    }

    /// The old writers' `Display` helpers, kept here as the reference the `write!`-free
    /// writers are held to.
    struct OrNone<T>(Option<T>);

    impl<T: fmt::Display> fmt::Display for OrNone<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match &self.0 {
                Some(value) => value.fmt(f),
                None => f.write_str("none"),
            }
        }
    }

    struct IdList<'a>(&'a [NodeId]);

    impl fmt::Display for IdList<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for (index, id) in self.0.iter().enumerate() {
                let separator = if index == 0 { "" } else { "," };
                write!(f, "{separator}{id}")?;
            }
            Ok(())
        }
    }

    /// `ctl status` as `write_status` wrote it with `write!`.
    fn status_by_format(status: &StatusReply<'_>) -> String<2048> {
        let mut out = String::new();
        let (role, goose) = role_and_goose(status.goose, status.id, status.leader, status.stopped);
        let state = if status.stopped { "stopped" } else { "running" };
        let healthy = if status.healthy { "yes" } else { "no" };
        write!(
            out,
            "ok role={role} raft={} id={} term={} goose={} state={state} commit={} members={} \
             voters={} learners={} lease_ms={} healthy={healthy}",
            status.raft,
            status.id,
            status.term,
            OrNone(goose),
            status.commit,
            IdList(status.members),
            IdList(status.voters),
            IdList(status.learners),
            status.lease_ms,
        )
        .unwrap();
        if let Some((cause, changed_ms)) = status.change {
            write!(out, " cause={}", cause.as_str()).unwrap();
            if let Some(node) = cause.node() {
                write!(out, " cause_node={node}").unwrap();
            }
            write!(out, " changed_ms={changed_ms}").unwrap();
        }
        for (key, value) in status.fields {
            write!(out, " {key}={value}").unwrap();
        }
        for (name, value) in status.counters {
            write!(out, " {name}={value}").unwrap();
        }
        out.push('\n').unwrap();
        out
    }

    /// Numbers at every length and edge: the writers' digits against `{}` and `{:x}`.
    const NUMBERS: [u64; 14] = [
        0,
        1,
        9,
        10,
        15,
        16,
        99,
        255,
        256,
        65_535,
        999_999_999,
        u32::MAX as u64,
        10_000_000_000_000_000_000,
        u64::MAX,
    ];

    #[test]
    fn numbers_are_written_as_the_format_machinery_would() {
        for value in NUMBERS.into_iter().chain((0..64).map(|shift| 1 << shift)) {
            for value in [value, value.saturating_sub(1), value.saturating_add(1)] {
                assert_eq!(
                    written(|out| write_ok_pair(out, "term", value)),
                    text!("ok term={value}\n")
                );
                assert_eq!(
                    written(|out| write_nonce(out, value)),
                    text!("ok nonce={value:016x}\n")
                );
                let mut hex = Text::new();
                digits::write_number(&mut hex, value, 16, 1).unwrap();
                assert_eq!(hex, text!("{value:x}"));
                let bytes = value.to_be_bytes();
                let mut hex = Text::new();
                write_hex_bytes(&mut hex, &bytes[..usize::from(value as u8 % 9)]).unwrap();
                let mut expected = Text::new();
                for byte in &bytes[..usize::from(value as u8 % 9)] {
                    write!(expected, "{byte:02x}").unwrap();
                }
                assert_eq!(hex, expected);
            }
        }
    }

    #[test]
    fn replies_are_written_as_the_format_machinery_would() {
        for reason in Reason::ALL {
            assert_eq!(
                written(|out| write_err(out, reason)),
                text!("err {reason}\n")
            );
        }
        let addrs = [
            None,
            Some(addr("0.0.0.0:0")),
            Some(addr("255.255.255.255:65535")),
            Some(addr("[::1]:9901")),
            Some(addr("[fe80::1%4294967295]:1")),
            Some(addr("[::ffff:10.0.0.1]:9900")),
        ];
        for goose in [None, Some(id(1)), Some(id(65535))] {
            for addr in addrs {
                let shown = OrNone(addr.map(AddrText));
                assert_eq!(
                    written(|out| write_not_goose(out, goose, addr)),
                    text!("err not-goose goose={} addr={shown}\n", OrNone(goose))
                );
                let id = goose.unwrap_or(id(7));
                assert_eq!(
                    written(|out| write_duplicate_id(out, id, addr)),
                    text!("err duplicate-id id={id} addr={shown}\n")
                );
            }
        }
        for nonce in NUMBERS {
            let mut request = Text::new();
            write_signed_probe(&mut request, nonce).unwrap();
            assert_eq!(request, text!("whois-goose nonce={nonce:016x}"));
        }
    }

    #[test]
    fn signed_lines_are_written_as_the_format_machinery_would() {
        use crate::auth::tests::ToyMac;
        use crate::auth::write_signed_control;
        let mac = ToyMac(9);
        let reply = ProbeReply {
            goose: true,
            id: id(65535),
            term: Term(u64::MAX),
            leader: Some(id(65535)),
            stopped: false,
            lease_ms: Some(120),
        };
        for nonce in NUMBERS {
            let mut signed = Text::new();
            write_probe_words(&mut signed, &reply).unwrap();
            write!(signed, " nonce={nonce:016x}").unwrap();
            let mut expected = text!("{signed} sig=");
            for byte in mac.tag(signed.as_bytes()) {
                write!(expected, "{byte:02x}").unwrap();
            }
            expected.push('\n').unwrap();
            let line = written(|out| write_signed_probe_reply(out, &reply, nonce, &mac));
            assert_eq!(line, expected);

            let signed = text!("nonce={nonce:016x} partition 2,3");
            let mut expected = text!("ctl sig=");
            for byte in mac.tag(signed.as_bytes()) {
                write!(expected, "{byte:02x}").unwrap();
            }
            write!(expected, " {signed}").unwrap();
            let mut datagram = Text::new();
            write_signed_control(&mut datagram, &mac, nonce, " partition 2,3\n").unwrap();
            assert_eq!(datagram, expected);
        }
    }

    #[test]
    fn status_is_written_as_the_format_machinery_would() {
        let members: Vec<NodeId, MEMBERS_MAX> =
            (0..MEMBERS_MAX as u16).map(|n| id(65535 - n)).collect();
        let (voters, learners) = members.split_at(MEMBERS_MAX / 2);
        let counters = [("drop_unknown_node", 0), ("drop_bad_frame", u64::MAX)];
        let fields = [("vips", "10.0.0.9/24@eth0"), ("empty", "")];
        let base = StatusReply {
            goose: true,
            raft: "leader",
            id: id(1),
            term: Term(0),
            leader: Some(id(1)),
            stopped: false,
            commit: 0,
            members: &[],
            voters: &[],
            learners: &[],
            lease_ms: 0,
            healthy: true,
            change: None,
            fields: &[],
            counters: &[],
        };
        let statuses = [
            base,
            StatusReply {
                goose: false,
                raft: "follower",
                id: id(65535),
                term: Term(u64::MAX),
                leader: Some(id(2)),
                stopped: true,
                commit: u64::MAX,
                members: &members,
                voters,
                learners,
                lease_ms: u64::MAX,
                healthy: false,
                change: Some((Cause::LeaseLapsed, u64::MAX)),
                fields: &fields,
                counters: &counters,
            },
            StatusReply {
                goose: false,
                raft: "candidate",
                leader: None,
                members: &members[..1],
                voters: &members[..1],
                change: Some((Cause::HigherTerm { from: id(65535) }, 0)),
                counters: &counters[..1],
                ..base
            },
            StatusReply {
                goose: false,
                raft: "leader",
                change: Some((Cause::Handoff { to: None }, 7)),
                ..base
            },
        ];
        for status in statuses {
            let line = written(|out| write_status(out, &status));
            assert_eq!(line.as_str(), status_by_format(&status).as_str());
        }
    }

    fn id(value: u16) -> NodeId {
        NodeId::new(value).unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn control(text: &str) -> (Option<&str>, Result<Command, Reason>) {
        match parse(text.as_bytes()) {
            Request::Control {
                token,
                signature: None,
                command,
            } => (token, command),
            other => panic!("{text:?} parsed as {other:?}"),
        }
    }

    #[test]
    fn signed_form() {
        let tag = "00112233445566778899aabbccddeeff";
        let text = text!("ctl sig={tag}  nonce=00000007000000FF  partition 2,3 \r\n");
        let Request::Control {
            token: None,
            signature: Some(signature),
            command,
        } = parse(text.as_bytes())
        else {
            panic!("{text:?}");
        };
        assert_eq!(signature.tag[..3], [0x00, 0x11, 0x22]);
        assert_eq!(signature.tag[15], 0xff);
        assert_eq!(signature.nonce, 0x0000_0007_0000_00ff);
        assert_eq!(signature.signed, "nonce=00000007000000FF  partition 2,3");
        assert_eq!(
            command,
            Ok(peers(&[PeerRef::Id(id(2)), PeerRef::Id(id(3))]))
        );
        for bad in [
            "ctl sig=",
            "ctl sig=0011 nonce=0000000000000001 status",
            &text!("ctl sig={tag} status"),
            &text!("ctl sig={tag} nonce=+000000000000001 status"),
            &text!("ctl sig={tag} nonce=00000000000000001 status"),
            &text!("ctl sig={}g nonce=0000000000000001 status", &tag[..31]),
        ] {
            let Request::Control {
                signature: None,
                command,
                ..
            } = parse(bad.as_bytes())
            else {
                panic!("{bad:?}");
            };
            assert_eq!(command, Err(Reason::BadSignature), "{bad:?}");
        }
        assert_eq!(control("ctl nonce"), (None, Ok(Command::Nonce)));
        let mut reply = Text::new();
        write_nonce(&mut reply, 0x0000_0003_0000_0010).unwrap();
        assert_eq!(reply, "ok nonce=0000000300000010\n");
        assert_eq!(parse_nonce_reply(&reply), Some(0x0000_0003_0000_0010));
        assert_eq!(parse_nonce_reply("ok nonce=12"), None);
        assert_eq!(parse_nonce_reply("err forbidden"), None);
    }

    fn command(text: &str) -> Result<Command, Reason> {
        let (token, command) = control(text);
        assert_eq!(token, None, "{text:?}");
        command
    }

    fn add(value: u16, text: &str) -> Command {
        Command::Add {
            id: id(value),
            addr: addr(text),
        }
    }

    fn peers(list: &[PeerRef]) -> Command {
        let mut peers = PeerList::new();
        list.iter().for_each(|&peer| peers.insert(peer).unwrap());
        Command::Partition(peers)
    }

    fn written(
        write: impl FnOnce(&mut String<TEXT_REPLY_SIZE_MAX>) -> fmt::Result,
    ) -> String<TEXT_REPLY_SIZE_MAX> {
        let mut out = String::new();
        write(&mut out).unwrap();
        out
    }

    // ---- classification ----

    #[test]
    fn binary_empty_and_unknown() {
        assert_eq!(parse(&[]), Request::Unknown);
        assert_eq!(parse(&[0xD9, 1, 0, 0]), Request::Binary);
        assert_eq!(parse(&[0x80]), Request::Binary);
        assert_eq!(parse(b"hello"), Request::Unknown);
        assert_eq!(parse(b"A\xff\xfe"), Request::Unknown);
        assert_eq!(parse(b"\n"), Request::Unknown);
        assert_eq!(parse(b"ctlx stop"), Request::Unknown);
    }

    #[test]
    fn probe_ignores_trailing_whitespace_only() {
        for probe in [
            "whois-goose",
            "whois-goose\n",
            "whois-goose\r\n",
            "whois-goose \r\n",
        ] {
            assert_eq!(
                parse(probe.as_bytes()),
                Request::Probe { nonce: None },
                "{probe:?}"
            );
        }
        let signed = parse(b"whois-goose nonce=00000000DEADbeef\r\n");
        assert_eq!(
            signed,
            Request::Probe {
                nonce: Some(0xdead_beef)
            }
        );
        for other in [
            "whois-goose nonce=",
            "whois-goose nonce=deadbeef",
            "whois-goose nonce=00000000deadbeef x",
            "whois-goose  nonce=00000000deadbeef",
            "whois-goose nonce=+0000000deadbeef",
            " whois-goose",
            "whois-goose x",
            "whois-goosex",
            "WHOIS-GOOSE",
        ] {
            assert_eq!(parse(other.as_bytes()), Request::Unknown, "{other:?}");
        }
    }

    #[test]
    fn replies_are_ignored() {
        let replies = [
            "ok",
            "ok\n",
            "ok to=3\n",
            "err unknown-command\n",
            "err busy",
        ];
        let roles = ["goose id=3 term=7 goose=3\n", "duck id=1 term=7 goose=none"];
        for reply in replies.iter().chain(&roles) {
            assert_eq!(parse(reply.as_bytes()), Request::Reply, "{reply:?}");
        }
        for other in ["okay", "errors", "gooseberry", "ducks", " ok"] {
            assert_eq!(parse(other.as_bytes()), Request::Unknown, "{other:?}");
        }
    }

    // ---- ctl commands ----

    #[test]
    fn every_command() {
        let v4 = addr("127.0.0.1:9903");
        let cases = [
            ("ctl stop", Command::Stop),
            ("ctl start", Command::Start),
            ("ctl heal", Command::Heal),
            ("ctl status", Command::Status),
            ("ctl transfer", Command::Transfer(None)),
            ("ctl transfer 2", Command::Transfer(Some(id(2)))),
            ("ctl add 4 127.0.0.1:9903", add(4, "127.0.0.1:9903")),
            ("ctl remove 65535", Command::Remove(id(65535))),
            ("ctl partition", peers(&[])),
            ("ctl partition 2", peers(&[PeerRef::Id(id(2))])),
            (
                "ctl partition 127.0.0.1:9903,3",
                peers(&[PeerRef::Addr(v4), PeerRef::Id(id(3))]),
            ),
            (
                "ctl partition [::1]:80,1,1,",
                peers(&[PeerRef::Addr(addr("[::1]:80")), PeerRef::Id(id(1))]),
            ),
            ("ctl partition ,", peers(&[])),
        ];
        for (text, expected) in cases {
            assert_eq!(command(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn spaces_and_crlf() {
        assert_eq!(
            command("ctl   add  4   10.0.0.1:1 \r\n"),
            Ok(add(4, "10.0.0.1:1"))
        );
        assert_eq!(command("ctl stop\r\n"), Ok(Command::Stop));
    }

    #[test]
    fn token_form() {
        let status = (Some("s3cret"), Ok(Command::Status));
        assert_eq!(control("ctl token=s3cret status\n"), status);
        assert_eq!(control("ctl token= stop"), (Some(""), Ok(Command::Stop)));
        let missing = Err(Reason::MissingArgument);
        assert_eq!(control("ctl token=abc"), (Some("abc"), missing));
        let extra = Err(Reason::ExtraArgument);
        assert_eq!(control("ctl status token=abc"), (None, extra));
    }

    #[test]
    fn command_errors() {
        use Reason::*;
        let cases = [
            ("ctl", MissingArgument),
            ("ctl frobnicate", UnknownCommand),
            ("ctl STOP", UnknownCommand),
            ("ctl stop now", ExtraArgument),
            ("ctl partition 1 2", ExtraArgument),
            ("ctl transfer 1 2", ExtraArgument),
            ("ctl add", MissingArgument),
            ("ctl add 4", MissingArgument),
            ("ctl remove", MissingArgument),
            ("ctl remove 0", BadNodeId),
            ("ctl remove 65536", BadNodeId),
            ("ctl remove x", BadNodeId),
            ("ctl transfer -1", BadNodeId),
            ("ctl add 0 127.0.0.1:1", BadNodeId),
            ("ctl partition 1,0", BadNodeId),
            ("ctl add 4 nowhere:1", BadAddress),
            ("ctl add 4 127.0.0.1", BadAddress),
            ("ctl partition 127.0.0.1:99999", BadAddress),
            ("ctl add 4 127.0.0.1:1 extra", ExtraArgument),
        ];
        for (text, expected) in cases {
            assert_eq!(command(text), Err(expected), "{text:?}");
        }
        assert_eq!(BadNodeId.as_str(), "bad-node-id");
        assert_eq!(text!("{TooManyPeers}"), "too-many-peers");
    }

    #[test]
    fn partition_capacity() {
        let list = |count: u16| {
            let mut list = Text::new();
            (1..=count).for_each(|n| write!(list, "{n},").unwrap());
            list
        };
        let full = command(&text!("ctl partition {}1", list(64))).unwrap();
        let Command::Partition(peers) = full else {
            panic!("{full:?}")
        };
        assert_eq!(peers.as_slice().len(), PARTITION_PEERS_MAX);
        assert!(peers.contains(id(64), addr("1.1.1.1:1")));
        assert!(!peers.contains(id(65), addr("1.1.1.1:1")));
        let too_many = text!("ctl partition {}", list(65));
        assert_eq!(command(&too_many), Err(Reason::TooManyPeers));
    }

    #[test]
    fn partition_capacity_of_a_small_node() {
        let parsed = |text: &str| match parse_sized::<3>(text.as_bytes()) {
            Request::Control { command, .. } => command,
            other => panic!("{text:?} parsed as {other:?}"),
        };
        let Ok(Command::Partition(peers)) = parsed("ctl partition 1,2,127.0.0.1:9,2") else {
            panic!("three distinct peers fit")
        };
        assert_eq!(peers.as_slice().len(), 3);
        let too_many = parsed("ctl partition 1,2,3,4");
        assert_eq!(too_many, Err(Reason::TooManyPeers));
        assert_eq!(parsed("ctl stop"), Ok(Command::Stop));
    }

    #[test]
    fn parse_never_panics() {
        let vocabulary = "ctl| |token=|partition|add|transfer|1|65536|,|:|1.2.3.4:5|[::1]|\r\n";
        let vocabulary: Vec<&str, 16> = vocabulary.split('|').collect();
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..20_000 {
            let mut datagram: Vec<u8, 256> = Vec::new();
            for _ in 0..next() % 24 {
                let word = next();
                match round % 2 {
                    0 => datagram.push(word as u8).unwrap(),
                    _ => datagram
                        .extend_from_slice(vocabulary[word as usize % vocabulary.len()].as_bytes())
                        .unwrap(),
                }
            }
            if let Request::Control {
                command: Ok(Command::Partition(peers)),
                ..
            } = parse(&datagram)
            {
                assert!(peers.as_slice().len() <= PARTITION_PEERS_MAX);
            }
        }
    }

    // ---- replies ----

    #[test]
    fn probe_replies() {
        let cases = [
            (true, 3, Some(3), false, "goose id=3 term=7 goose=3\n"),
            (false, 1, Some(3), false, "duck id=1 term=7 goose=3\n"),
            (false, 1, None, false, "duck id=1 term=7 goose=none\n"),
            (false, 1, Some(1), false, "duck id=1 term=7 goose=none\n"), // leader, not goose
            (
                true,
                3,
                Some(3),
                true,
                "duck id=3 term=7 goose=none state=stopped\n",
            ),
        ];
        for (goose, me, leader, stopped, expected) in cases {
            let term = Term(7);
            let reply = ProbeReply {
                goose,
                id: id(me),
                term,
                leader: leader.map(id),
                stopped,
                lease_ms: None,
            };
            let line = written(|out| write_probe_reply(out, &reply));
            assert_eq!(line, expected);
            assert_eq!(parse(line.as_bytes()), Request::Reply);
        }
        // Only a goose tells its lease.
        let goose = ProbeReply {
            goose: true,
            id: id(3),
            term: Term(7),
            leader: Some(id(3)),
            stopped: false,
            lease_ms: Some(120),
        };
        let line = written(|out| write_probe_reply(out, &goose));
        assert_eq!(line, "goose id=3 term=7 goose=3 lease_ms=120\n");
        let duck = ProbeReply {
            goose: false,
            ..goose
        };
        let line = written(|out| write_probe_reply(out, &duck));
        assert_eq!(line, "duck id=3 term=7 goose=none\n");
    }

    #[test]
    fn signed_probe_replies_verify_only_with_the_key_and_nonce() {
        use crate::auth::tests::ToyMac;
        let reply = ProbeReply {
            goose: true,
            id: id(3),
            term: Term(7),
            leader: Some(id(3)),
            stopped: false,
            lease_ms: Some(120),
        };
        let nonce = 0x0123_4567_89ab_cdef;
        let line = written(|out| write_signed_probe_reply(out, &reply, nonce, &ToyMac(5)));
        let tag = "goose id=3 term=7 goose=3 lease_ms=120 nonce=0123456789abcdef sig=";
        assert!(line.starts_with(tag), "{line:?}");
        assert_eq!(line.len(), tag.len() + 2 * TAG_SIZE + 1);
        assert_eq!(parse(line.as_bytes()), Request::Reply);
        assert_eq!(
            verify_signed_probe_reply(&line, nonce, &ToyMac(5)),
            Ok(reply)
        );
        // Scripts read it as any probe reply.
        assert_eq!(ProbeReply::parse(&line), Ok(reply));
        use SignedProbeError::*;
        assert_eq!(
            verify_signed_probe_reply(&line, nonce, &ToyMac(6)),
            Err(BadTag)
        );
        assert_eq!(
            verify_signed_probe_reply(&line, nonce + 1, &ToyMac(5)),
            Err(WrongNonce)
        );
        let forged = line.replacen("term=7", "term=8", 1);
        assert_eq!(
            verify_signed_probe_reply(&forged, nonce, &ToyMac(5)),
            Err(BadTag)
        );
        let plain = written(|out| write_probe_reply(out, &reply));
        assert_eq!(
            verify_signed_probe_reply(&plain, nonce, &ToyMac(5)),
            Err(Unsigned)
        );
        let cut = &line[..line.len() - 3];
        assert_eq!(
            verify_signed_probe_reply(cut, nonce, &ToyMac(5)),
            Err(BadTag)
        );
        assert_eq!(
            verify_signed_probe_reply("", nonce, &ToyMac(5)),
            Err(Reply(ReplyError::NotOneLine))
        );
        // The longest reply fits what a reply buffer holds.
        let longest = ProbeReply {
            id: id(65535),
            term: Term(u64::MAX),
            leader: Some(id(65535)),
            lease_ms: Some(u64::MAX),
            ..reply
        };
        let line = written(|out| write_signed_probe_reply(out, &longest, u64::MAX, &ToyMac(1)));
        assert!(line.len() <= PROBE_REPLY_SIZE_MAX, "{}", line.len());
        let mut request = Text::new();
        write_signed_probe(&mut request, nonce).unwrap();
        assert_eq!(
            parse(request.as_bytes()),
            Request::Probe { nonce: Some(nonce) }
        );
    }

    #[test]
    fn ok_and_err_lines() {
        assert_eq!(written(|out| write_ok_pair(out, "to", 4)), "ok to=4\n");
        assert_eq!(written(write_ok_plain), "ok\n");
        let reason = Reason::UnknownCommand;
        assert_eq!(
            written(|out| write_err(out, reason)),
            "err unknown-command\n"
        );
        let line = written(|out| write_not_goose(out, Some(id(2)), Some(addr("127.0.0.1:9901"))));
        assert_eq!(line, "err not-goose goose=2 addr=127.0.0.1:9901\n");
        let line = written(|out| write_not_goose(out, None, None));
        assert_eq!(line, "err not-goose goose=none addr=none\n");
    }

    #[test]
    fn status_lines() {
        let ids = [id(1), id(2), id(3)];
        let status = StatusReply {
            goose: true,
            raft: "leader",
            id: id(1),
            term: Term(3),
            leader: Some(id(1)),
            stopped: false,
            commit: 5,
            members: &ids,
            voters: &ids,
            learners: &[],
            lease_ms: 120,
            change: Some((Cause::HigherTerm { from: id(2) }, 40)),
            healthy: true,
            fields: &[("vips", "10.0.0.100/24@eth0")],
            counters: &[("drop_magic", 2), ("drop_short", 0)],
        };
        let expected = "ok role=goose raft=leader id=1 term=3 goose=1 state=running commit=5 \
                        members=1,2,3 voters=1,2,3 learners= lease_ms=120 healthy=yes \
                        cause=higher-term cause_node=2 changed_ms=40 vips=10.0.0.100/24@eth0 \
                        drop_magic=2 drop_short=0\n";
        assert_eq!(written(|out| write_status(out, &status)), expected);
        let stopped = StatusReply {
            stopped: true,
            raft: "follower",
            lease_ms: 0,
            change: None,
            healthy: false,
            fields: &[],
            counters: &[],
            ..status
        };
        let expected = "ok role=duck raft=follower id=1 term=3 goose=none state=stopped commit=5 \
                        members=1,2,3 voters=1,2,3 learners= lease_ms=0 healthy=no\n";
        assert_eq!(written(|out| write_status(out, &stopped)), expected);
        assert_eq!(parse(expected.as_bytes()), Request::Reply);
    }

    #[test]
    fn status_at_capacity_fits() {
        let members: Vec<NodeId, MEMBERS_MAX> =
            (0..MEMBERS_MAX as u16).map(|n| id(65535 - n)).collect();
        let (voters, learners) = members.split_at(MEMBERS_MAX / 2);
        let counters = [("drop_unknown_node", u64::MAX); 16];
        // A desktop node's 16 virtual addresses at their longest (IPv6 /128 on an interface
        // name of 15 bytes).
        let mut vips: String<1024> = String::new();
        for n in 0..16 {
            let separator = if n == 0 { "" } else { "," };
            write!(
                vips,
                "{separator}ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff{n:02x}/128@abcdefghijklmno"
            )
            .unwrap();
        }
        let status = StatusReply {
            goose: false,
            raft: "candidate",
            id: id(65535),
            term: Term(u64::MAX),
            leader: None,
            stopped: false,
            commit: u64::MAX,
            members: &members,
            voters,
            learners,
            lease_ms: u64::MAX,
            change: Some((
                Cause::Handoff {
                    to: Some(id(65535)),
                },
                u64::MAX,
            )),
            healthy: false,
            fields: &[("vips", &vips)],
            counters: &counters,
        };
        let line = written(|out| write_status(out, &status)); // fails if it overflows
        assert_eq!(line.matches('\n').count(), 1);
    }

    // ---- reading replies: round trips and hostile input ----

    #[test]
    fn probe_replies_parse_back_to_what_they_say() {
        let mut checked = 0;
        for (goose, stopped) in [(false, false), (true, false), (false, true), (true, true)] {
            for me in [1, 2, 65535] {
                for leader in [None, Some(1), Some(2), Some(65535)] {
                    let reply = ProbeReply {
                        goose,
                        id: id(me),
                        term: Term(u64::MAX - u64::from(me)),
                        leader: leader.map(id),
                        stopped,
                        lease_ms: Some(u64::from(me)),
                    };
                    let line = written(|out| write_probe_reply(out, &reply));
                    let parsed = ProbeReply::parse(&line).unwrap();
                    // What the line says, by the writer's own rules.
                    let (role, named) = role_and_goose(goose, reply.id, reply.leader, stopped);
                    let said = ProbeReply {
                        goose: role == "goose",
                        leader: named,
                        lease_ms: reply.lease_ms.filter(|_| role == "goose"),
                        ..reply
                    };
                    assert_eq!(parsed, said, "{line:?}");
                    assert_eq!(written(|out| write_probe_reply(out, &parsed)), line);
                    let without_newline = line.trim_end_matches('\n');
                    assert_eq!(ProbeReply::parse(without_newline), Ok(parsed));
                    assert_eq!(Reply::parse(&line), Ok(Reply::Probe(parsed)));
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 48);
        // More pairs may follow; the first of a key counts.
        let extended = ProbeReply::parse("duck id=4 term=6 goose=2 zone=b term=9 x\n");
        assert_eq!(
            extended.map(|p| (p.term, p.leader)),
            Ok((Term(6), Some(id(2))))
        );
    }

    #[test]
    fn malformed_probe_replies_are_refused_with_their_reason() {
        use ReplyError::*;
        let cases = [
            ("", NotOneLine),
            ("\n", NotOneLine),
            ("goose id=3 term=7 goose=3\n\n", NotOneLine),
            ("goose id=3 term=7\ngoose=3", NotOneLine),
            ("geese id=3 term=7 goose=3", UnknownKind),
            (" goose id=3 term=7 goose=3", UnknownKind),
            ("err unknown-command", UnknownKind),
            ("goose term=7 goose=3", BadPair("id")),
            ("duck id=0 term=7 goose=none", BadPair("id")),
            ("duck id=65536 term=7 goose=none", BadPair("id")),
            ("duck id=1 term=-7 goose=none", BadPair("term")),
            (
                "duck id=1 term=18446744073709551616 goose=none",
                BadPair("term"),
            ),
            ("duck id=1 term=7", BadPair("goose")),
            ("duck id=1 term=7 goose=", BadPair("goose")),
            ("duck id=1 term=7 goose=nobody", BadPair("goose")),
            ("goose id=3 term=7 goose=2", Inconsistent),
            ("goose id=3 term=7 goose=none", Inconsistent),
            ("goose id=3 term=7 goose=3 state=stopped", Inconsistent),
            ("duck id=3 term=7 goose=3", Inconsistent),
        ];
        for (line, error) in cases {
            assert_eq!(ProbeReply::parse(line), Err(error), "{line:?}");
        }
        assert_eq!(Reply::parse("hello"), Err(UnknownKind));
        assert_eq!(Reply::parse("duck id=1"), Err(BadPair("term")));
    }

    #[test]
    fn every_err_word_parses_back() {
        for reason in Reason::ALL {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason));
            let line = written(|out| write_err(out, reason));
            assert_eq!(line, text!("err {}\n", reason.as_str()));
            let parsed = Reply::parse(&line).unwrap();
            assert_eq!(parsed.reason(), Some(reason), "{line:?}");
            assert_eq!(parse(line.as_bytes()), Request::Reply, "never answered");
        }
        // ALL lists every variant: the match makes a new one a compile error here until
        // it has a place, and the place must hold it.
        let place = |reason: Reason| match reason {
            Reason::UnknownCommand => 0,
            Reason::MissingArgument => 1,
            Reason::BadNodeId => 2,
            Reason::BadAddress => 3,
            Reason::TooManyPeers => 4,
            Reason::ExtraArgument => 5,
            Reason::BadSignature => 6,
            Reason::Forbidden => 7,
            Reason::NoKey => 8,
            Reason::NoNonce => 9,
            Reason::StaleNonce => 10,
            Reason::NotGoose => 11,
            Reason::Busy => 12,
            Reason::NoTarget => 13,
            Reason::UnknownNode => 14,
            Reason::AddressInUse => 15,
            Reason::LastVoter => 16,
            Reason::MembersFull => 17,
            Reason::TransferFirst => 18,
            Reason::Exiting => 19,
            Reason::StartFailed => 20,
            Reason::ReplyTooLong => 21,
            Reason::Unhealthy => 22,
            Reason::IdInUse => 23,
            Reason::DuplicateId => 24,
        };
        for (index, reason) in Reason::ALL.into_iter().enumerate() {
            assert_eq!(place(reason), index, "{reason:?}");
        }
        let words: Vec<&str, 32> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        for (index, word) in words.iter().enumerate() {
            assert!(!words[..index].contains(word), "{word} twice");
        }
        let unknown = Reply::parse("err not-a-reason-yet x=1").unwrap();
        assert_eq!(unknown.reason(), None);
        assert!(
            matches!(unknown, Reply::Err { reason: None, details } if details.get("x") == Some("1"))
        );
        assert!(matches!(
            Reply::parse("err"),
            Ok(Reply::Err { reason: None, .. })
        ));
    }

    #[test]
    fn not_goose_names_the_goose_to_follow() {
        let v6 = addr("[fe80::1%2]:65535");
        for (goose, at) in [
            (Some(id(2)), Some(addr("127.0.0.1:9901"))),
            (Some(id(65535)), Some(v6)),
            (None, None),
        ] {
            let line = written(|out| write_not_goose(out, goose, at));
            let reply = Reply::parse(&line).unwrap();
            assert_eq!(reply.reason(), Some(Reason::NotGoose));
            assert_eq!(reply.goose_addr(), at, "{line:?}");
            let Reply::Err { details, .. } = reply else {
                panic!("{line:?}");
            };
            let named = details.get("goose").and_then(reply_node_id);
            assert_eq!(named, goose);
        }
        assert_eq!(
            Reply::parse("err busy addr=127.0.0.1:1")
                .unwrap()
                .goose_addr(),
            None
        );
        assert_eq!(
            Reply::parse("ok addr=127.0.0.1:1").unwrap().goose_addr(),
            None
        );
        let bad = Reply::parse("err not-goose goose=2 addr=nowhere").unwrap();
        assert_eq!(bad.goose_addr(), None);
    }

    #[test]
    fn ok_replies_and_status_pairs_parse_back() {
        assert_eq!(Reply::parse("ok\n"), Ok(Reply::Ok(Pairs(""))));
        let Ok(Reply::Ok(pairs)) = Reply::parse("ok\n") else {
            panic!()
        };
        assert!(pairs.is_empty());
        let line = written(|out| write_ok_pair(out, "to", 4));
        let Ok(Reply::Ok(pairs)) = Reply::parse(&line) else {
            panic!("{line:?}")
        };
        assert_eq!(pairs.get("to"), Some("4"));
        let ids = [id(1), id(2), id(3)];
        let counters = [("drop_magic", 2), ("drop_short", u64::MAX)];
        let status = StatusReply {
            goose: false,
            raft: "learner",
            id: id(3),
            term: Term(9),
            leader: Some(id(1)),
            stopped: false,
            commit: 5,
            members: &ids,
            voters: &ids[..2],
            learners: &ids[2..],
            lease_ms: 0,
            change: None,
            healthy: true,
            fields: &[],
            counters: &counters,
        };
        let line = written(|out| write_status(out, &status));
        let Ok(Reply::Ok(pairs)) = Reply::parse(&line) else {
            panic!("{line:?}")
        };
        let expected = [
            ("role", "duck"),
            ("raft", "learner"),
            ("id", "3"),
            ("term", "9"),
            ("goose", "1"),
            ("state", "running"),
            ("commit", "5"),
            ("members", "1,2,3"),
            ("voters", "1,2"),
            ("learners", "3"),
            ("lease_ms", "0"),
            ("healthy", "yes"),
            ("drop_magic", "2"),
            ("drop_short", "18446744073709551615"),
        ];
        assert!(pairs.iter().eq(expected.iter().copied()), "{line:?}");
        let nonce = written(|out| write_nonce(out, u64::MAX));
        assert_eq!(parse_nonce_reply(&nonce), Some(u64::MAX));
        assert_eq!(
            parse_nonce_reply("ok nonce=ffffffffffffffff"),
            Some(u64::MAX)
        );
        assert_eq!(parse_nonce_reply("err nonce=ffffffffffffffff"), None);
    }

    #[test]
    fn reply_parsing_never_panics() {
        // Valid replies with words replaced, dropped, doubled and cut: hostile text close
        // enough to the real thing to reach every branch.
        let seeds = [
            "goose id=3 term=7 goose=3\n",
            "duck id=1 term=7 goose=none state=stopped\n",
            "err not-goose goose=2 addr=[::1]:9901\n",
            "ok role=duck raft=follower id=1 term=0 goose=none members=1,2\n",
        ];
        let vocabulary = "goose|duck|ok|err|id=|term=|goose=|none|state=stopped|addr=|\
                          not-goose|busy|1|0|65536|18446744073709551616|[::1]:1|\n|\r|\u{e9}|=";
        let vocabulary: Vec<&str, 32> = vocabulary.split('|').collect();
        let mut state = 0x2545_F491_4F6C_DD1D_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let (mut probes, mut others, mut refused) = (0, 0, 0);
        for _ in 0..20_000 {
            let seed = seeds[next() as usize % seeds.len()];
            let mut words: Vec<&str, 32> = seed.split(' ').collect();
            for _ in 0..next() % 3 {
                let at = next() as usize % words.len();
                let word = vocabulary[next() as usize % vocabulary.len()];
                match next() % 4 {
                    0 => words[at] = word,
                    1 if words.len() > 1 => drop(words.remove(at)),
                    2 => drop(words.insert(at, words[at])),
                    _ => {
                        let cut = next() as usize % (words[at].len() + 1);
                        let cut = (0..=cut).rev().find(|&i| words[at].is_char_boundary(i));
                        words[at] = &words[at][..cut.unwrap_or(0)];
                    }
                }
            }
            let mut line = Text::new();
            for (index, word) in words.iter().enumerate() {
                let separator = if index == 0 { "" } else { " " };
                write!(line, "{separator}{word}").unwrap();
            }
            match Reply::parse(&line) {
                Ok(Reply::Probe(probe)) => {
                    probes += 1;
                    // Anything that parses as a probe reply is one the writer could write.
                    let again = written(|out| write_probe_reply(out, &probe));
                    assert_eq!(ProbeReply::parse(&again), Ok(probe), "{line:?}");
                }
                Ok(reply) => {
                    others += 1;
                    let _ = (reply.reason(), reply.goose_addr());
                }
                Err(_) => refused += 1,
            }
            let _ = parse_nonce_reply(&line);
        }
        assert!(probes > 1_000 && others > 1_000 && refused > 1_000);
    }
}
