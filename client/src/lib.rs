//! # goose-client: ask a Duck Duck Goose flock who is goose
//!
//! For an application that must act only on the goose: "am I goose, with which fencing
//! token, until when". One UDP datagram per node (`whois-goose`), read with the parser that
//! sits beside the nodes' own writer ([`goose_core::text::ProbeReply`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use goose_client::Flock;
//!
//! let flock = Flock::new(["127.0.0.1:9900".parse().unwrap(), "127.0.0.1:9901".parse().unwrap()]);
//! match flock.goose() {
//!     Ok(lease) => println!("goose {} at {}, term {}", lease.id, lease.addr, lease.term),
//!     Err(why) => println!("no goose to act on: {why}"),
//! }
//! // Role changes, as they are seen: at most one probe round per 100 ms.
//! for change in flock.watch(Duration::from_millis(100)).take(3) {
//!     println!("{change:?}");
//! }
//! ```
//!
//! - [`Flock::ask`]: every node's answer, in order, each probed at once and waited for
//!   together ([`Flock::timeout`], 500 ms by default);
//! - [`Flock::goose`]: the goose, if exactly one node answered `goose`;
//! - [`Answer::lease`]: a goose's term (its fencing token) and until when its lease holds,
//!   counted from when the probe was *sent* (the node counted it from when it answered,
//!   later), so the instant is never late by more than the clocks' drift;
//! - [`Flock::watch`]: the goose as it changes.
//!
//! With a cluster key ([`Flock::with_key`]) every probe carries a fresh random nonce
//! (`whois-goose nonce=<16 hex>`) and an answer counts only if the node signed it over that
//! nonce with the key ([`goose_core::text::verify_signed_probe_reply`]): a forged or
//! replayed answer is [`AskError::Unverified`], never a goose.
//!
//! What a lease means: no other node can be goose before it ends, on the flock's
//! assumptions (clocks within 1 % of each other). A process acting for the goose should
//! stop before [`Lease::until`] and tag what it writes with [`Lease::term`], so that a
//! resource can refuse a term lower than one it has seen.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

pub use goose_core::auth::key::ClusterKey;
use goose_core::text::{self, ProbeReply, ReplyError, SignedProbeError, PROBE_REPLY_SIZE_MAX};
pub use goose_core::{NodeId, Term};

/// How long [`Flock::ask`] waits for all answers unless told otherwise.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_millis(500);

/// Nodes one [`Flock`] asks: a flock holds at most 64 members.
pub const NODES_MAX: usize = 64;

/// The nodes to ask, and how.
#[derive(Clone)]
pub struct Flock {
    addrs: Vec<SocketAddr>,
    key: Option<ClusterKey>,
    timeout: Duration,
}

impl fmt::Debug for Flock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Flock")
            .field("addrs", &self.addrs)
            .field("signed", &self.key.is_some())
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One node's answer to one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The node asked.
    pub addr: SocketAddr,
    /// When the probe was sent: what a lease is counted from.
    pub sent_at: Instant,
    /// What it said, or why it said nothing usable.
    pub reply: Result<ProbeReply, AskError>,
}

/// A goose's lease as a client may rely on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The goose's node id.
    pub id: NodeId,
    /// Where it answered.
    pub addr: SocketAddr,
    /// Its term: the fencing token. A later goose always has a higher one.
    pub term: Term,
    /// No other node can be goose before this instant (this machine's clock).
    pub until: Instant,
}

/// Why a node's answer is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AskError {
    /// No answer within the timeout (or the port is closed).
    NoReply,
    /// An answer that is not a probe reply.
    Malformed(ReplyError),
    /// With a key: an answer not signed over this probe's nonce with it.
    Unverified(SignedProbeError),
}

impl fmt::Display for AskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoReply => f.write_str("no reply"),
            Self::Malformed(error) => write!(f, "not a probe reply: {error}"),
            Self::Unverified(error) => write!(f, "answer refused: {error}"),
        }
    }
}

impl std::error::Error for AskError {}

/// Why [`Flock::goose`] names no goose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoGoose {
    /// Nobody answered `goose` (an election is under way, or the flock is down).
    None,
    /// More than one node answered `goose`: never expected (the lease forbids it); act on
    /// neither.
    Many(Vec<NodeId>),
}

impl fmt::Display for NoGoose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("no node answered goose"),
            Self::Many(ids) => write!(f, "several nodes answered goose: {ids:?}"),
        }
    }
}

impl std::error::Error for NoGoose {}

/// What [`Flock::watch`] reports: the goose changed (or none is left).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// The goose now, if exactly one node answered `goose`.
    pub goose: Option<Lease>,
    /// When this was seen.
    pub at: Instant,
}

impl Answer {
    /// The lease, if this node answered `goose` with `lease_ms=`.
    pub fn lease(&self) -> Option<Lease> {
        let reply = self.reply.as_ref().ok().filter(|reply| reply.goose)?;
        Some(Lease {
            id: reply.id,
            addr: self.addr,
            term: reply.term,
            until: self.sent_at + Duration::from_millis(reply.lease_ms?),
        })
    }

    /// The role word `goose whois` prints: `goose`, `duck`, or `-` without a usable answer.
    pub fn role(&self) -> &'static str {
        match &self.reply {
            Ok(reply) if reply.goose => "goose",
            Ok(_) => "duck",
            Err(_) => "-",
        }
    }
}

impl Flock {
    /// The nodes at `addrs`, asked in this order (at most [`NODES_MAX`]; more are ignored).
    pub fn new(addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            addrs: addrs.into_iter().take(NODES_MAX).collect(),
            key: None,
            timeout: TIMEOUT_DEFAULT,
        }
    }

    /// Accept only answers signed with the flock's cluster key.
    pub fn with_key(mut self, key: ClusterKey) -> Self {
        self.key = Some(key);
        self
    }

    /// How long [`Flock::ask`] waits for all answers together.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The nodes asked.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Probes every node at once and waits up to the timeout in total; one answer per
    /// node, in order.
    pub fn ask(&self) -> Vec<Answer> {
        let deadline = Instant::now() + self.timeout;
        let sent: Vec<(Instant, Option<u64>, io::Result<UdpSocket>)> = self
            .addrs
            .iter()
            .map(|addr| {
                let nonce = self.key.as_ref().map(|_| fresh_nonce());
                let mut request = String::new();
                let written = match nonce {
                    Some(nonce) => text::write_signed_probe(&mut request, nonce),
                    None => {
                        request.push_str("whois-goose");
                        Ok(())
                    }
                };
                let socket = written
                    .map_err(io::Error::other)
                    .and_then(|()| send(*addr, request.as_bytes()));
                (Instant::now(), nonce, socket)
            })
            .collect();
        self.addrs
            .iter()
            .zip(sent)
            .map(|(addr, (sent_at, nonce, socket))| {
                let line = socket.and_then(|socket| receive(&socket, deadline));
                Answer {
                    addr: *addr,
                    sent_at,
                    reply: self.read(line, nonce),
                }
            })
            .collect()
    }

    fn read(&self, line: io::Result<String>, nonce: Option<u64>) -> Result<ProbeReply, AskError> {
        let line = line.map_err(|_| AskError::NoReply)?;
        match (&self.key, nonce) {
            (Some(key), Some(nonce)) => {
                text::verify_signed_probe_reply(&line, nonce, key).map_err(AskError::Unverified)
            }
            _ => ProbeReply::parse(&line).map_err(AskError::Malformed),
        }
    }

    /// The goose, if exactly one node answered `goose` (with its lease).
    ///
    /// # Errors
    /// [`NoGoose`]: none answered `goose`, or more than one did.
    pub fn goose(&self) -> Result<Lease, NoGoose> {
        goose_of(&self.ask())
    }

    /// The goose as it changes: probes every `interval` (at least 10 ms) and yields a
    /// [`Change`] whenever the goose's id or term differs from the last one yielded (the
    /// first round always yields). It runs as long as it is iterated: bound it with
    /// `take`, `take_while` or a `break`.
    pub fn watch(&self, interval: Duration) -> Watch<'_> {
        Watch {
            flock: self,
            interval: interval.max(Duration::from_millis(10)),
            last: None,
        }
    }
}

/// The goose among `answers`, if exactly one answered `goose`.
///
/// # Errors
/// As [`Flock::goose`].
pub fn goose_of(answers: &[Answer]) -> Result<Lease, NoGoose> {
    let geese: Vec<&Answer> = answers.iter().filter(|a| a.role() == "goose").collect();
    match geese.as_slice() {
        [] => Err(NoGoose::None),
        [one] => one.lease().ok_or(NoGoose::None),
        many => Err(NoGoose::Many(
            many.iter()
                .filter_map(|a| a.reply.as_ref().ok().map(|r| r.id))
                .collect(),
        )),
    }
}

/// The iterator [`Flock::watch`] returns.
#[derive(Debug)]
pub struct Watch<'a> {
    flock: &'a Flock,
    interval: Duration,
    /// The goose last yielded: `Some(None)` once "no goose" was.
    last: Option<Option<(NodeId, Term)>>,
}

impl Iterator for Watch<'_> {
    type Item = Change;

    fn next(&mut self) -> Option<Change> {
        loop {
            let round = Instant::now();
            let goose = self.flock.goose().ok();
            let seen = goose.map(|lease| (lease.id, lease.term));
            if self.last != Some(seen) {
                self.last = Some(seen);
                return Some(Change { goose, at: round });
            }
            std::thread::sleep(self.interval.saturating_sub(round.elapsed()));
        }
    }
}

/// A nonce no one can guess: one a forger could predict would let it fetch a signed answer
/// early and replay it when it is no longer true.
fn fresh_nonce() -> u64 {
    let mut bytes = [0; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // No OS randomness: a nonce from the clock and the process is still fresh, only
        // guessable; the answer is still checked against it.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(40);
    }
    u64::from_be_bytes(bytes)
}

/// Sends `request` from a fresh socket *connected* to `addr`: only that node's answer is
/// read, and a closed port answers at once (ICMP port unreachable).
fn send(addr: SocketAddr, request: &[u8]) -> io::Result<UdpSocket> {
    let local = match addr {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.send(request)?;
    Ok(socket)
}

/// One reply line (without its `\n`), or an error once `deadline` passes.
fn receive(socket: &UdpSocket, deadline: Instant) -> io::Result<String> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    // A zero read timeout means "block forever" to std; wait at least a millisecond.
    socket.set_read_timeout(Some(remaining.max(Duration::from_millis(1))))?;
    let mut buffer = [0; PROBE_REPLY_SIZE_MAX];
    let size = socket.recv(&mut buffer)?;
    let text = String::from_utf8_lossy(&buffer[..size]);
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(line: Option<&str>) -> Answer {
        Answer {
            addr: "127.0.0.1:1".parse().unwrap(),
            sent_at: Instant::now(),
            reply: match line {
                Some(line) => ProbeReply::parse(line).map_err(AskError::Malformed),
                None => Err(AskError::NoReply),
            },
        }
    }

    #[test]
    fn one_goose_with_a_lease_is_the_goose() {
        let goose = answer(Some("goose id=3 term=7 goose=3 lease_ms=120"));
        let lease = goose.lease().unwrap();
        assert_eq!((lease.id.get(), lease.term.0), (3, 7));
        assert_eq!(lease.until - goose.sent_at, Duration::from_millis(120));
        let duck = answer(Some("duck id=1 term=7 goose=3"));
        let silent = answer(None);
        assert_eq!(
            [goose.role(), duck.role(), silent.role()],
            ["goose", "duck", "-"]
        );
        let answers = [duck.clone(), goose.clone(), silent.clone()];
        assert_eq!(goose_of(&answers), Ok(lease));
        assert_eq!(goose_of(&[duck, silent]), Err(NoGoose::None));
        let other = answer(Some("goose id=4 term=7 goose=4 lease_ms=5"));
        let ids = |list: &[u16]| list.iter().map(|&n| NodeId::new(n).unwrap()).collect();
        assert_eq!(
            goose_of(&[goose.clone(), other]),
            Err(NoGoose::Many(ids(&[3, 4])))
        );
        // A goose that does not tell its lease (an older node) gives nothing to rely on.
        let older = answer(Some("goose id=3 term=7 goose=3"));
        assert_eq!(older.lease(), None);
        assert_eq!(goose_of(&[older]), Err(NoGoose::None));
    }

    #[test]
    fn a_silent_port_is_no_reply_within_the_timeout() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let flock = Flock::new([addr]).timeout(Duration::from_millis(50));
        let started = Instant::now();
        let answers = flock.ask();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(answers[0].reply, Err(AskError::NoReply));
        assert!(format!("{flock:?}").contains("signed: false"));
    }
}
