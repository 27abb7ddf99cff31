//! The node behind a UDP port, without the port: what a node does with each datagram that
//! is not handled by Raft itself, written once for the desktop node and the board.
//!
//! A [`Service`] owns a [`Node`] and everything the text protocol keeps about it:
//!
//! - probe and `ctl status` replies, built from the node's status and counters;
//! - `ctl stop`/`start` (a stopped node drops peer traffic in and out, fires no timer,
//!   answers probes `duck … goose=none state=stopped`; `start` asks the caller to rebuild
//!   the node from storage: see [`Handled::Start`]);
//! - `ctl partition`/`heal` and the matching of peer frames against the partition (by the
//!   source id in the frame header, never by address: NAT rewrites addresses);
//! - the control trust decision: the caller says whether the source is trusted (loopback on
//!   a desktop, the slirp host on a board), the service checks the token for the others;
//! - `ctl transfer`/`add`/`remove` on the goose, their `err …` words, and the requesters
//!   of a transfer, answered once the handoff is sent ([`TRANSFER_WAITERS_MAX`]).
//!
//! It never touches a socket. Like quinn-proto's `Connection`, it is driven through four
//! families of methods, in one order:
//!
//! - **getters** (`&self`, no effects): [`Service::is_goose`], [`Service::status`],
//!   [`Service::node`], [`Service::stats`], [`Service::reply`], …;
//! - **inputs**, which send nothing: [`Service::handle_datagram`] (a board handles a
//!   datagram where it lies in its socket's ring, and cannot send meanwhile) and
//!   [`Service::handle_timeout`]; and **commands**, which act for the program:
//!   [`Service::start`] or [`Service::start_failed`] (after [`Handled::Start`]),
//!   [`Service::stop`], [`Service::leave`];
//! - **the output step**, [`Service::flush`], after every input or command and before the
//!   next datagram: it sends the answer to the datagram just handled, the node's frames
//!   (sealed, filtered by the partition) and the late answers to transfer requesters
//!   through the caller's [`Outlet`], and moves the node's events, acted on, to the
//!   service's queue;
//! - **pure outputs**: [`Service::poll_event`] (those events, oldest first) and
//!   [`Service::poll_timeout`].
//!
//! The caller's loop, each time it wakes:
//!
//! 1. for each datagram: [`Service::handle_datagram`] (then [`Service::start`] if it says
//!    [`Handled::Start`]), release the datagram's buffer, [`Service::flush`];
//! 2. [`Service::handle_timeout`], [`Service::flush`];
//! 3. [`Service::poll_event`] until `None`;
//! 4. sleep until [`Service::poll_timeout`] or the next datagram.
//!
//! Fail-stop: once the node's storage failed, nothing more leaves. The datagram that made
//! it fail and every later one get no answer, [`Service::flush`] sends nothing (no frame,
//! no late answer), [`Service::poll_event`] reports [`Event::Failed`] and
//! [`Service::poll_timeout`] is `None`: the program exits or halts.
//!
//! `now` must never decrease (the node asserts it). Nothing here panics on input.

use core::fmt::{self, Write};
use core::net::{IpAddr, SocketAddr};

use heapless::{Deque, String, Vec};

use crate::auth::{self, AuthError, Mac, NoKey, Nonces, ReplayGuard, Sealer};
use crate::limits::{EVENTS_MAX, FRAME_SIZE_MAX};
use crate::raft::{Event, Node, ProposeError, RaftRole, Status, TransferError, Transmit};
use crate::ratelimit::{RateLimit, RateLimiter, RATE_SOURCES_MAX};
use crate::stats::{bump, counters};
use crate::storage::Storage;
use crate::text::{self, Command, PeerList, ProbeReply, Reason, Request, Signature, StatusReply};
use crate::time::{Duration, Instant};
use crate::types::{NodeId, Payload};

/// `ctl transfer` requesters waiting for the handoff to be sent. The core runs one
/// transfer at a time and refuses others (`err busy`), so one waiter is the norm; when
/// full, the oldest is answered `err busy` and dropped.
pub const TRANSFER_WAITERS_MAX: usize = 4;

/// How long after `election_timeout_max` a `ctl transfer` requester is answered
/// `err no-target` if the node reported nothing (it always reports within
/// `election_timeout_min`; this only guards against a lost event).
pub const TRANSFER_REPLY_SLACK: Duration = Duration::from_millis(100);

/// Frames [`Service::flush`] sends per call. The node's outbox and per-peer replication
/// hold far fewer (a leader of 64 members sends a few per peer); the bound only keeps a
/// core bug from becoming a spin.
pub const TRANSMITS_PER_CALL_MAX: usize = 4096;

/// Counters `ctl status` prints: the node's (13), the service's (15) and up to 12 of the
/// caller's own ([`Host::counters`]; the desktop node has 6, a board 1). Any beyond are left
/// out of the reply.
pub const STATUS_COUNTERS_MAX: usize = 40;

const _: () = assert!(crate::stats::Stats::COUNT + ServiceStats::COUNT + 4 <= STATUS_COUNTERS_MAX);

/// The smallest reply buffer a [`Service`] accepts: room for a probe reply (signed), a late
/// transfer answer and any `err` word. `ctl status` needs more (see [`text::TEXT_REPLY_SIZE_MAX`]);
/// a status that does not fit is answered `err reply-too-long`, never cut.
pub const REPLY_SIZE_MIN: usize = if LATE_REPLY_SIZE_MAX > text::PROBE_REPLY_SIZE_MAX {
    LATE_REPLY_SIZE_MAX
} else {
    text::PROBE_REPLY_SIZE_MAX
};

/// Bytes of the buffer for the late answers to transfer requesters: the longest is
/// `err not-goose goose=65535 addr=<IPv6 with scope>:65535\n`, 85 bytes.
const LATE_REPLY_SIZE_MAX: usize = 128;

counters! {
    /// The service's counters; `ctl status` prints them after the node's. The names are
    /// the same on every kind of node.
    pub struct ServiceStats {
        /// Text that is not a request (answered `err unknown-command`).
        text_unknown,
        /// Control refused (answered `err forbidden`).
        text_forbidden,
        /// Peer frames dropped on arrival by `ctl partition`.
        drop_partition_in,
        /// Peer frames not sent because of `ctl partition`.
        drop_partition_out,
        /// Peer frames dropped on arrival while stopped.
        drop_stopped,
        /// Datagrams the [`Outlet`] could not send.
        send_errors,
        /// Datagrams the caller could not receive whole (counted by the caller).
        receive_errors,
        /// Peer frames without a whole authentication trailer (a node with a key got a
        /// plain frame: a flock member without the key, or noise).
        drop_unsealed,
        /// Peer frames whose MAC did not match: forged, corrupted, or another flock's key.
        drop_bad_mac,
        /// Peer frames seen before, too old for the replay window, or from a sender's older
        /// boot.
        drop_replay,
        /// Peer frames from a sender the replay table had no room for.
        drop_senders,
        /// Signed control whose signature did not match (answered `err forbidden`).
        ctl_bad_signature,
        /// Signed control with a nonce not issued, used, expired or pushed out (answered
        /// `err stale-nonce`).
        ctl_stale_nonce,
        /// Text left unanswered by the reply rate limits ([`crate::ratelimit`]).
        drop_rate_limited,
        /// Events dropped, oldest first, because the program did not take them with
        /// [`Service::poll_event`] ([`EVENTS_MAX`] wait).
        drop_events_unpolled,
        /// Peer frames dropped because their source id is in use elsewhere: this node's own
        /// id, or a member id another address sent from within the last
        /// `election_timeout_min` (two processes with one id). See [`Notice::DuplicateId`].
        drop_duplicate_id,
    }
}

/// Where a [`Service`] sends; `A` is the caller's kind of source address (a desktop's
/// `SocketAddr`, a board's smoltcp endpoint).
pub trait Outlet<A> {
    /// Sends a peer frame the node wrote for `transmit.target` at `transmit.addr` (an
    /// address as the flock knows it). Returns `false` if it could not be sent, which the
    /// service counts as a send error; an outlet that drops a frame for a reason of its own
    /// (an address it cannot reach) counts that itself and returns `true`.
    fn send_frame(&mut self, frame: &[u8], transmit: &Transmit) -> bool;

    /// Sends a one-line text reply to `target`; `false` if it could not (counted).
    fn send_reply(&mut self, reply: &[u8], target: A) -> bool;
}

/// Where a datagram came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin<A> {
    /// The source address, where the answer goes.
    pub addr: A,
    /// The source's IP address: what per-source reply limits count by (an attacker picks
    /// its ports freely).
    pub ip: IpAddr,
    /// Whether control from it needs no token (loopback on a desktop; the host's loopback
    /// as a board sees it).
    pub trusted: bool,
}

/// What the program around the service adds to its answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Host<'a> {
    /// The node's control token: a control datagram from an untrusted source must carry
    /// `token=<it>`. Without one, only trusted sources may send control.
    pub control_token: Option<&'a str>,
    /// The caller's own counters, printed by `ctl status` after the service's.
    pub counters: &'a [(&'a str, u64)],
    /// The caller's own fields (`vips=` on a desktop node with virtual addresses), printed
    /// by `ctl status` before the counters.
    pub fields: &'a [(&'a str, &'a str)],
}

/// What [`Service::handle_datagram`] did, and what the caller does next.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// A peer frame, handed to the node: [`Service::flush`] sends what it answers.
    Frame,
    /// A peer frame dropped (stopped, from a partitioned member, failed authentication),
    /// or text left unanswered by the rate limits; counted.
    Dropped,
    /// Text that is itself a reply (`ok`, `err`, `goose`, `duck`): never answered, so two
    /// nodes can never bounce replies (a caller that sent a request may read it).
    Ignored,
    /// [`Service::reply`] holds the answer; [`Service::flush`] sends it to the source.
    Answer(Notice),
    /// `ctl transfer [<id>]` started a handoff: a later [`Service::flush`] answers the
    /// source, once the handoff is sent, failed, or took too long.
    Transferring(Option<NodeId>),
    /// `ctl start` on a stopped node: build a new node from storage (at a fresh `now`: it
    /// grants no vote for an election timeout, see `crate::raft`), hand it to
    /// [`Service::start`] (or call [`Service::start_failed`]); [`Service::flush`] then
    /// sends the reply.
    Start,
}

/// What a control command changed, for the caller's log (and hooks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Nothing worth a log line (probes, `status`, refusals of a command).
    None,
    /// Control refused: `err forbidden`.
    Forbidden,
    /// `ctl stop` stopped a running node: it is silent now (no longer goose to anyone).
    Stopped,
    /// `ctl partition`: [`Service::partition`] holds the new set.
    Partitioned,
    /// `ctl heal`.
    Healed,
    /// `ctl add`: the learner's entry was appended at `index`.
    Adding {
        /// The new member.
        id: NodeId,
        /// Its address.
        addr: SocketAddr,
        /// The configuration entry's index.
        index: u64,
    },
    /// `ctl remove`: the removal's entry was appended at `index`.
    Removing {
        /// The member removed.
        id: NodeId,
        /// The configuration entry's index.
        index: u64,
    },
    /// A peer frame carried id `id`, which this node itself has or another address
    /// ([`Service::heard_from`]) sent from moments ago: two processes share an id, which
    /// breaks the one-vote-per-voter rule Raft's safety rests on. The frame was dropped
    /// (counted in `drop_duplicate_id`), and its source is answered `err duplicate-id id=<id>
    /// addr=<where this node's membership has that id>` so that it can say so too (the
    /// answer passes the reply rate limits).
    DuplicateId {
        /// The id in use twice.
        id: NodeId,
    },
}

/// The address a member id last sent from, for telling two processes with one id apart
/// from a member that moved: a member that moved went quiet at its old address first.
#[derive(Clone, Copy, Debug)]
struct Sender<A> {
    id: NodeId,
    addr: A,
    heard: Instant,
}

/// A `ctl transfer` requester waiting for the handoff to be sent.
#[derive(Clone, Copy, Debug)]
struct TransferWaiter<A> {
    addr: A,
    /// When it is answered `err no-target` if the node reported nothing.
    deadline: Instant,
    /// Its answer, once an input decided it; [`Service::flush`] sends it.
    answer: Option<Late>,
}

/// A transfer requester's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Late {
    /// `ok to=<id>`: TimeoutNow was sent to that voter.
    Handed(NodeId),
    /// `err no-target`: no voter caught up in time.
    NoTarget,
    /// `err not-goose …`: the node stopped leading, or went silent.
    NotGoose,
}

/// What a node with a cluster key keeps to seal, open and sign ([`crate::auth`]).
struct Auth<K, const M: usize> {
    key: K,
    sealer: Sealer,
    guard: ReplayGuard<M>,
    nonces: Nonces,
}

/// A node and its text protocol; see the module docs. `A` is the caller's address type,
/// `P` the peers a `ctl partition` may name, `R` the reply buffer's size (at least
/// [`REPLY_SIZE_MIN`]; [`text::TEXT_REPLY_SIZE_MAX`] holds any status of a 64-member node),
/// `K` the cluster key's MAC ([`NoKey`] for a node without one), `Q` the sources the reply
/// rate limiter tracks.
pub struct Service<
    S: Storage,
    A: Copy,
    const M: usize,
    const L: usize,
    const P: usize,
    const R: usize,
    K: Mac = NoKey,
    const Q: usize = RATE_SOURCES_MAX,
> {
    node: Node<S, M, L>,
    /// With a cluster key: peer frames are sealed and opened, control must be signed.
    auth: Option<Auth<K, M>>,
    /// Every text answer (probe, control, `err`) is sent only if this allows it.
    limiter: RateLimiter<Q>,
    /// `ctl stop` was the last of stop/start, or the node is leaving.
    stopped: bool,
    /// The node is on its way out ([`Service::leave`]): `ctl start` is refused.
    leaving: bool,
    partition: PeerList<P>,
    stats: ServiceStats,
    waiters: Vec<TransferWaiter<A>, TRANSFER_WAITERS_MAX>,
    /// A requester pushed out of `waiters` by a newer one, answered `err busy` by the next
    /// [`Service::flush`] (one datagram pushes out at most one).
    busy: Option<A>,
    /// Where [`Service::flush`] sends [`Service::reply`]: the source of the datagram just
    /// handled, if it is answered.
    reply_to: Option<A>,
    /// The node's events, once acted on, for [`Service::poll_event`]; when full, the oldest
    /// is dropped and counted.
    events: Deque<Event, EVENTS_MAX>,
    /// Set by the program ([`Service::hold_transfers`]): every transfer waits for
    /// [`Service::release_transfer`], for at most this long.
    hold: Option<Duration>,
    /// Where each member id last sent from (one per member; the oldest makes room).
    senders: Vec<Sender<A>, M>,
    frame: [u8; FRAME_SIZE_MAX],
    reply: String<R>,
    late: String<LATE_REPLY_SIZE_MAX>,
}

impl<
        S: Storage,
        A: Copy + PartialEq,
        const M: usize,
        const L: usize,
        const P: usize,
        const R: usize,
        K: Mac,
        const Q: usize,
    > Service<S, A, M, L, P, R, K, Q>
{
    const REPLY_HOLDS_ANY_SHORT_ANSWER: () = assert!(R >= REPLY_SIZE_MIN);

    /// The service around a running `node`, without a cluster key: peer frames are plain,
    /// control is trusted from trusted sources or with the token.
    pub fn new(node: Node<S, M, L>) -> Self {
        Self::build(|| node, None)
    }

    /// The service around a running `node` of a flock sharing `key`: every peer frame sent
    /// is sealed, every one received must open, control must be signed. `epoch` is this
    /// boot's, persisted higher than any earlier boot's before this node sends anything
    /// (see [`crate::auth`]).
    pub fn with_key(node: Node<S, M, L>, key: K, epoch: u32) -> Self {
        Self::starting(|| node, Some((key, epoch)))
    }

    /// [`Service::new`], or with `key` and the boot's epoch [`Service::with_key`], around
    /// the node `start` returns (typically [`Node::start`]), which is built in place, in
    /// the service: a node handed over by value is copied on the way (4 KiB on a board's
    /// small stack). Out of line, so the node's construction lands in the service the
    /// caller keeps rather than in a copy.
    #[inline(never)]
    pub fn starting(start: impl FnOnce() -> Node<S, M, L>, key: Option<(K, u32)>) -> Self {
        let auth = key.map(|(key, epoch)| Auth {
            key,
            sealer: Sealer::new(epoch),
            guard: ReplayGuard::new(),
            nonces: Nonces::new(epoch),
        });
        Self::build(start, auth)
    }

    fn build(start: impl FnOnce() -> Node<S, M, L>, auth: Option<Auth<K, M>>) -> Self {
        let () = Self::REPLY_HOLDS_ANY_SHORT_ANSWER;
        Self {
            node: start(),
            auth,
            limiter: RateLimiter::new(RateLimit::DEFAULT),
            stopped: false,
            leaving: false,
            partition: PeerList::new(),
            stats: ServiceStats::default(),
            waiters: Vec::new(),
            busy: None,
            reply_to: None,
            events: Deque::new(),
            hold: None,
            senders: Vec::new(),
            frame: [0; FRAME_SIZE_MAX],
            reply: String::new(),
            late: String::new(),
        }
    }

    /// Sets the limits on text answers ([`RateLimit::DEFAULT`] until then); every bucket
    /// starts full.
    pub fn set_rate_limit(&mut self, limit: RateLimit) {
        self.limiter = RateLimiter::new(limit);
    }

    /// Makes every transfer (`ctl transfer`, [`Service::hand_off`]) wait for
    /// [`Service::release_transfer`] before TimeoutNow leaves, for at most `hold` (then the
    /// node steps down without sending it): for a program that must stop what only the
    /// goose may run first ([`Node::transfer_held`]). `None` (the default): no wait.
    pub fn hold_transfers(&mut self, hold: Option<Duration>) {
        self.hold = hold;
    }

    // --- Getters -------------------------------------------------------------------------

    /// The node (while stopped: as it was when stopped).
    pub fn node(&self) -> &Node<S, M, L> {
        &self.node
    }

    /// The node, to drive it directly (a desktop node's handoff when it is told to leave);
    /// what that makes the node say leaves with the next [`Service::flush`].
    pub fn node_mut(&mut self) -> &mut Node<S, M, L> {
        &mut self.node
    }

    /// Whether `ctl stop` (or leaving) holds the node.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the node is goose at `now` (never while stopped).
    pub fn is_goose(&self, now: Instant) -> bool {
        !self.stopped && self.node.is_goose(now)
    }

    /// The node's status at `now`, as a probe reports it (a stopped node is no goose).
    pub fn status(&self, now: Instant) -> Status {
        let mut status = self.node.status(now);
        status.goose &= !self.stopped;
        status
    }

    /// The peers `ctl partition` named.
    pub fn partition(&self) -> &PeerList<P> {
        &self.partition
    }

    /// The service's counters.
    pub fn stats(&self) -> &ServiceStats {
        &self.stats
    }

    /// The service's counters, for the caller to count receive errors.
    pub fn stats_mut(&mut self) -> &mut ServiceStats {
        &mut self.stats
    }

    /// The address member `id` last sent an accepted frame from, as far as this node
    /// remembers: the other side of a [`Notice::DuplicateId`].
    pub fn heard_from(&self, id: NodeId) -> Option<A> {
        self.senders.iter().find(|s| s.id == id).map(|s| s.addr)
    }

    /// The answer [`Service::handle_datagram`] wrote (one line ending in `\n`, or empty).
    pub fn reply(&self) -> &str {
        &self.reply
    }

    /// The next instant the service has work without new datagrams: the node's deadline
    /// (none while stopped) or a transfer requester's; `None` once the node has failed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.node.is_failed() {
            return None;
        }
        let node = if self.stopped {
            None
        } else {
            self.node.poll_timeout()
        };
        let waiting = self.waiters.iter().filter(|waiter| waiter.answer.is_none());
        let waiter = waiting.map(|waiter| waiter.deadline).min();
        match (node, waiter) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // --- Inputs --------------------------------------------------------------------------

    /// Handles one datagram from `origin` and writes the answer, if any, into
    /// [`Service::reply`]. Sends nothing: [`Service::flush`] sends the answer and whatever
    /// the node has to say; see [`Handled`] for what else comes next.
    ///
    /// Out of line, as are the control commands: a parsed command and a status reply take
    /// a few hundred bytes of stack, which a board's loop should not carry at all times.
    ///
    /// # Panics
    /// If the previous datagram's answer was never flushed: a caller that skips
    /// [`Service::flush`] would lose answers silently.
    #[inline(never)]
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        origin: Origin<A>,
        host: &Host<'_>,
        datagram: &[u8],
    ) -> Handled {
        assert!(self.reply_to.is_none(), "flush after every datagram");
        self.reply.clear();
        if self.node.is_failed() {
            // Fail-stop: the caller exits or halts; until then nothing is answered.
            return Handled::Dropped;
        }
        let handled = self.handle_request(now, origin, host, datagram);
        if self.node.is_failed() {
            // This very datagram made storage fail (a `ctl add` whose entry could not be
            // saved): its answer would speak of state storage never confirmed.
            self.reply.clear();
            return Handled::Dropped;
        }
        if matches!(handled, Handled::Answer(_) | Handled::Start) {
            self.reply_to = Some(origin.addr);
        }
        handled
    }

    #[inline(never)]
    fn handle_request(
        &mut self,
        now: Instant,
        origin: Origin<A>,
        host: &Host<'_>,
        datagram: &[u8],
    ) -> Handled {
        let request = text::parse_sized::<P>(datagram);
        let answered = !matches!(request, Request::Binary | Request::Reply);
        // Before any work beyond classifying: a flood must cost as little as possible.
        if answered && !self.limiter.allow(now, origin.ip) {
            bump(&mut self.stats.drop_rate_limited);
            return Handled::Dropped;
        }
        match request {
            Request::Binary => self.handle_frame(now, origin, datagram),
            Request::Probe { nonce } => {
                let status = self.node.status(now);
                let goose = status.goose && !self.stopped;
                let reply = ProbeReply {
                    goose,
                    id: status.id,
                    term: status.term,
                    leader: status.leader,
                    stopped: self.stopped,
                    lease_ms: goose.then(|| status.lease_remaining.millis()),
                };
                // R >= REPLY_SIZE_MIN holds any probe reply, signed or not.
                let _ = match (nonce, &self.auth) {
                    (Some(nonce), Some(auth)) => {
                        text::write_signed_probe_reply(&mut self.reply, &reply, nonce, &auth.key)
                    }
                    // Without a key there is nothing to sign with: the plain answer, which
                    // a client holding a key refuses as unsigned.
                    _ => text::write_probe_reply(&mut self.reply, &reply),
                };
                Handled::Answer(Notice::None)
            }
            Request::Control {
                command: Ok(Command::Nonce),
                ..
            } => {
                match self.auth.as_mut().map(|auth| auth.nonces.issue(now)) {
                    Some(Some(nonce)) => text::write_nonce(&mut self.reply, nonce),
                    Some(None) => text::write_err(&mut self.reply, Reason::NoNonce),
                    None => text::write_err(&mut self.reply, Reason::NoKey),
                }
                .unwrap_or(());
                Handled::Answer(Notice::None)
            }
            Request::Control {
                token,
                signature,
                command,
            } => {
                if let Err(reason) = self.authorize(now, origin.trusted, token, signature, host) {
                    let _ = text::write_err(&mut self.reply, reason);
                    return Handled::Answer(Notice::Forbidden);
                }
                match command {
                    Ok(command) => self.control(now, origin.addr, command, host),
                    Err(error) => {
                        let _ = text::write_err(&mut self.reply, error);
                        Handled::Answer(Notice::None)
                    }
                }
            }
            Request::Reply => Handled::Ignored,
            Request::Unknown => {
                bump(&mut self.stats.text_unknown);
                let _ = text::write_err(&mut self.reply, Reason::UnknownCommand);
                Handled::Answer(Notice::None)
            }
        }
    }

    /// Fires the node's timers if they are due (not while stopped), and decides
    /// `err no-target` for transfer requesters the node reported nothing for in time.
    /// Sends nothing: [`Service::flush`] follows. Early or spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        if !self.stopped && self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
        }
        let expired = |waiter: &&mut TransferWaiter<A>| now >= waiter.deadline;
        for waiter in self.waiters.iter_mut().filter(expired) {
            waiter.answer = waiter.answer.or(Some(Late::NoTarget));
        }
    }

    /// `ctl start` (after [`Handled::Start`]): the service runs `node`, a new node built from
    /// storage, and answers `ok` (sent by [`Service::flush`]).
    pub fn start(&mut self, node: Node<S, M, L>) {
        self.start_with(|old| *old = node);
    }

    /// [`Service::start`] with a node `restart` makes of the old one in place (typically
    /// with [`Node::restart`]), rather than one handed over by value and copied (4 KiB on
    /// a board's small stack).
    pub fn start_with(&mut self, restart: impl FnOnce(&mut Node<S, M, L>)) {
        restart(&mut self.node);
        self.stopped = false;
        self.reply.clear();
        let _ = text::write_ok_plain(&mut self.reply);
    }

    /// `ctl start` (after [`Handled::Start`]) could not build a node from storage: the node
    /// stays stopped (starting on a storage it cannot trust would be worse) and the answer
    /// is `err start-failed`.
    pub fn start_failed(&mut self) {
        self.reply.clear();
        let _ = text::write_err(&mut self.reply, Reason::StartFailed);
    }

    /// Stops taking part, as `ctl stop` does; returns whether the node was running. Transfer
    /// requesters are answered `err not-goose …` by the next [`Service::flush`].
    pub fn stop(&mut self) -> bool {
        let was_running = !self.stopped;
        self.stopped = true;
        self.answer_waiters(Late::NotGoose);
        was_running
    }

    /// Stops for good (the node is leaving): as [`Service::stop`], and `ctl start` is
    /// answered `err exiting` from now on.
    pub fn leave(&mut self) -> bool {
        self.leaving = true;
        self.stop()
    }

    /// Hands leadership off for the program itself (it is leaving, or unhealthy), as
    /// `ctl transfer` does but with no requester to answer; held if
    /// [`Service::hold_transfers`] says so. What it sends leaves with the next
    /// [`Service::flush`].
    ///
    /// # Errors
    /// The node's refusal ([`TransferError`]); a stopped node is [`TransferError::NotLeader`].
    pub fn hand_off(&mut self, now: Instant, target: Option<NodeId>) -> Result<(), TransferError> {
        if self.stopped {
            return Err(TransferError::NotLeader);
        }
        match self.hold {
            Some(hold) => self.node.transfer_held(now, target, now + hold),
            None => self.node.transfer(now, target),
        }
    }

    /// Lets a held transfer send TimeoutNow ([`Node::release_transfer`]): the program has
    /// stopped what only the goose may run. Sends nothing: [`Service::flush`] follows.
    /// Returns whether a held transfer was released.
    pub fn release_transfer(&mut self, now: Instant) -> bool {
        !self.stopped && self.node.release_transfer(now)
    }

    // --- Outputs -------------------------------------------------------------------------

    /// The output step, after every input and command: sends the answer to the datagram
    /// just handled (to its source), the node's frames (not while stopped, nor to or from a
    /// partitioned peer; sealed with a cluster key), then the late answers to transfer
    /// requesters — `ok to=<id>` once the handoff is sent, `err no-target`, `err not-goose
    /// …` once the node stopped leading or went silent, `err busy` to one a newer requester
    /// pushed out — and moves the node's events to [`Service::poll_event`]. Once the node
    /// has failed it sends nothing at all (module docs, "fail-stop").
    ///
    /// Returns `false` if it stopped at [`TRANSMITS_PER_CALL_MAX`] frames with some possibly
    /// left: call it again.
    #[must_use]
    pub fn flush(&mut self, now: Instant, out: &mut impl Outlet<A>) -> bool {
        let reply_to = self.reply_to.take();
        if self.node.is_failed() {
            self.take_events();
            self.waiters.clear();
            self.busy = None;
            return true;
        }
        if let Some(target) = reply_to.filter(|_| !self.reply.is_empty()) {
            debug_assert!(self.reply.ends_with('\n'), "{:?}", self.reply.as_str());
            if !out.send_reply(self.reply.as_bytes(), target) {
                bump(&mut self.stats.send_errors);
            }
        }
        let sent_all = self.transmit(now, out);
        // After the frames: `ok to=<id>` promises the TimeoutNow has left.
        self.take_events();
        self.answer_late(now, out);
        sent_all
    }

    /// The node's next event, oldest first, once the service has acted on it (it has
    /// answered the transfer requesters an event settles): role, term or goose changes to
    /// log; [`Event::Failed`] when storage failed and the node stopped for good;
    /// [`Event::Removed`] when its removal committed (the desktop node exits 1 and 0, a
    /// board halts).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Sends the node's frames to their members. Returns `false` if it stopped at
    /// [`TRANSMITS_PER_CALL_MAX`] with frames possibly left.
    fn transmit(&mut self, now: Instant, out: &mut impl Outlet<A>) -> bool {
        if self.stopped {
            return true;
        }
        // With a key, the node writes into the front of the buffer, leaving room to seal.
        let room = match self.auth {
            Some(_) => auth::UNSEALED_FRAME_SIZE_MAX,
            None => FRAME_SIZE_MAX,
        };
        for _ in 0..TRANSMITS_PER_CALL_MAX {
            let Some(transmit) = self.node.poll_transmit(now, &mut self.frame[..room]) else {
                return true;
            };
            if self.partition.contains(transmit.target, transmit.addr) {
                bump(&mut self.stats.drop_partition_out);
                continue;
            }
            let size = match &mut self.auth {
                // The node wrote at most `room` bytes: the trailer fits.
                Some(auth) => match auth.sealer.seal(&auth.key, &mut self.frame, transmit.size) {
                    Ok(size) => size,
                    Err(_) => {
                        bump(&mut self.stats.send_errors);
                        continue;
                    }
                },
                None => transmit.size,
            };
            if !out.send_frame(&self.frame[..size], &transmit) {
                bump(&mut self.stats.send_errors);
            }
        }
        false
    }

    /// Moves the node's events to the service's queue, deciding the answers of the
    /// transfer requesters they settle.
    fn take_events(&mut self) {
        // The node holds at most EVENTS_MAX.
        for _ in 0..EVENTS_MAX {
            let Some(event) = self.node.poll_event() else {
                return;
            };
            match event {
                Event::TransferSent { to } => self.answer_waiters(Late::Handed(to)),
                Event::TransferFailed => self.answer_waiters(Late::NoTarget),
                Event::Changed(observed) if observed.raft != RaftRole::Leader => {
                    self.answer_waiters(Late::NotGoose);
                }
                Event::Changed(_) | Event::Failed | Event::Removed => {}
            }
            if self.events.is_full() {
                self.events.pop_front();
                bump(&mut self.stats.drop_events_unpolled);
            }
            let pushed = self.events.push_back(event);
            assert!(pushed.is_ok(), "room was made");
        }
    }

    // --- Peer frames ---------------------------------------------------------------------

    fn handle_frame(&mut self, now: Instant, origin: Origin<A>, frame: &[u8]) -> Handled {
        if self.stopped {
            bump(&mut self.stats.drop_stopped);
            return Handled::Dropped;
        }
        if partitioned_source(&self.partition, &self.node, frame) {
            bump(&mut self.stats.drop_partition_in);
            return Handled::Dropped;
        }
        let frame = match self.open(frame) {
            Ok(frame) => frame,
            Err(counter) => {
                bump(counter);
                return Handled::Dropped;
            }
        };
        if let Some(id) = self.duplicate_source(now, origin.addr, frame) {
            bump(&mut self.stats.drop_duplicate_id);
            if !self.limiter.allow(now, origin.ip) {
                bump(&mut self.stats.drop_rate_limited);
                return Handled::Dropped;
            }
            let addr = self.node.members().iter().find(|m| m.id == id);
            // R >= REPLY_SIZE_MIN holds it (an `err` word, an id and an address).
            let _ = text::write_duplicate_id(&mut self.reply, id, addr.map(|m| m.addr));
            return Handled::Answer(Notice::DuplicateId { id });
        }
        self.node.handle_frame(now, frame);
        Handled::Frame
    }

    /// The id a well-formed frame for this node claims, if that id is in use elsewhere:
    /// this node's own, or a member's that another address sent from less than
    /// `election_timeout_min` ago. Otherwise remembers `source` as where the member sends
    /// from. A member that moved (restarted at another address) is taken at its new address
    /// once its old one has been quiet that long; two live processes with one id never both
    /// are. A frame that does not decode is no sign of a second process (noise, or a
    /// forgery): it goes to the node, to be counted under its own reason.
    fn duplicate_source(&mut self, now: Instant, source: A, frame: &[u8]) -> Option<NodeId> {
        let (header, _) = crate::wire::parse_header(frame).ok()?;
        let own = self.node.id();
        if header.target != own.get() {
            return None; // dropped by the node as addressed to another
        }
        let id = NodeId::new(header.source)?;
        // Decoded only on a conflict, which a healthy flock never has.
        let well_formed = |frame: &[u8]| crate::wire::decode(frame).is_ok();
        if id == own {
            return well_formed(frame).then_some(id);
        }
        let window = self.node.config().election_timeout_min;
        if let Some(sender) = self.senders.iter_mut().find(|s| s.id == id) {
            if sender.addr != source && now < sender.heard + window {
                return well_formed(frame).then_some(id);
            }
            sender.addr = source;
            sender.heard = now;
            return None;
        }
        if !self.node.members().iter().any(|m| m.id == id) {
            return None; // dropped by the node as unknown
        }
        let sender = Sender {
            id,
            addr: source,
            heard: now,
        };
        if self.senders.is_full() {
            if let Some(oldest) = (0..self.senders.len()).min_by_key(|&i| self.senders[i].heard) {
                self.senders.swap_remove(oldest);
            }
        }
        // Room was made above (M > 0: a node is a member of its own flock).
        let _ = self.senders.push(sender);
        None
    }

    /// The frame to hand the node: without a key, `frame` itself; with one, `frame` without
    /// its trailer once it opened, or the counter of why it did not. A frame whose header is
    /// already wrong (length, magic, version) goes to the node as it is, to be dropped and
    /// counted there under its own reason: the node acts on no frame that fails those.
    fn open<'f>(&mut self, frame: &'f [u8]) -> Result<&'f [u8], &mut u64> {
        let Some(auth) = &mut self.auth else {
            return Ok(frame);
        };
        if crate::wire::parse_header(frame).is_err() {
            return Ok(frame);
        }
        let members = self.node.members();
        let is_member = |id: NodeId| members.iter().any(|member| member.id == id);
        auth.guard
            .open(&auth.key, frame, is_member)
            .map_err(|error| match error {
                AuthError::Short => &mut self.stats.drop_unsealed,
                AuthError::BadTag => &mut self.stats.drop_bad_mac,
                AuthError::Replay => &mut self.stats.drop_replay,
                AuthError::TooManySenders => &mut self.stats.drop_senders,
            })
    }

    // --- Control -------------------------------------------------------------------------

    /// Whether a control command may run; if not, the `err` reason. With a key, only a
    /// signed command whose tag matches and whose nonce is fresh (see [`crate::auth`]),
    /// from any source: a key forbids unsigned control, even from a trusted source. Without
    /// one, the contract's rule: trusted sources, or the right token; a signed command gets
    /// `err no-key`.
    fn authorize(
        &mut self,
        now: Instant,
        trusted: bool,
        token: Option<&str>,
        signature: Option<Signature<'_>>,
        host: &Host<'_>,
    ) -> Result<(), Reason> {
        let (auth, stats) = (&mut self.auth, &mut self.stats);
        match (auth, signature) {
            (Some(auth), Some(signature)) => {
                // The tag first: a forged command must not use up a nonce.
                if !auth.key.verify(signature.signed.as_bytes(), &signature.tag) {
                    bump(&mut stats.ctl_bad_signature);
                    return Err(Reason::Forbidden);
                }
                if !auth.nonces.redeem(now, signature.nonce) {
                    bump(&mut stats.ctl_stale_nonce);
                    return Err(Reason::StaleNonce);
                }
                Ok(())
            }
            (Some(_), None) => {
                bump(&mut stats.text_forbidden);
                Err(Reason::Forbidden)
            }
            (None, Some(_)) => {
                bump(&mut stats.text_forbidden);
                Err(Reason::NoKey)
            }
            (None, None) if control_allowed(trusted, token, host.control_token) => Ok(()),
            (None, None) => {
                bump(&mut stats.text_forbidden);
                Err(Reason::Forbidden)
            }
        }
    }

    /// Carries out one control command and writes its reply (none yet for a transfer or a
    /// start).
    #[inline(never)]
    fn control(
        &mut self,
        now: Instant,
        source: A,
        command: Command<P>,
        host: &Host<'_>,
    ) -> Handled {
        let notice = match command {
            Command::Stop => {
                let stopped = self.stop();
                let _ = text::write_ok_plain(&mut self.reply);
                if stopped {
                    Notice::Stopped
                } else {
                    Notice::None
                }
            }
            Command::Start if self.leaving => {
                let _ = text::write_err(&mut self.reply, Reason::Exiting);
                Notice::None
            }
            Command::Start if self.stopped => return Handled::Start,
            Command::Start => {
                let _ = text::write_ok_plain(&mut self.reply);
                Notice::None
            }
            Command::Partition(peers) => {
                self.partition = peers;
                let _ = text::write_ok_plain(&mut self.reply);
                Notice::Partitioned
            }
            Command::Heal => {
                self.partition = PeerList::new();
                let _ = text::write_ok_plain(&mut self.reply);
                Notice::Healed
            }
            Command::Status => {
                self.write_status(now, host);
                Notice::None
            }
            Command::Transfer(target) => {
                if !self.goose_only(now) {
                    return Handled::Answer(Notice::None);
                }
                return self.control_transfer(now, source, target);
            }
            Command::Add { id, addr } => match self.goose_only(now) {
                true => self.control_add(now, id, addr),
                false => Notice::None,
            },
            Command::Remove(id) => match self.goose_only(now) {
                true => self.control_remove(now, id),
                false => Notice::None,
            },
            // Answered before authorization (handle_datagram).
            Command::Nonce => Notice::None,
        };
        Handled::Answer(notice)
    }

    /// Whether this node is goose; if not, writes `err not-goose goose=… addr=…` naming
    /// the goose it follows (never itself: a leader that is not goose names none).
    fn goose_only(&mut self, now: Instant) -> bool {
        if self.is_goose(now) {
            return true;
        }
        let _ = write_not_goose(&mut self.reply, &self.node, self.stopped, now);
        false
    }

    /// `ctl transfer [<id>]` on the goose: starts the handoff (held, if the program asked
    /// for it); the requester is answered `ok to=<id>` once TimeoutNow is sent
    /// ([`Event::TransferSent`]).
    fn control_transfer(&mut self, now: Instant, source: A, target: Option<NodeId>) -> Handled {
        let reason = match self.hand_off(now, target) {
            Ok(()) => {
                if self.waiters.is_full() {
                    // Answered `err busy` by the next flush.
                    self.busy = Some(self.waiters.remove(0).addr);
                }
                let hold = self.hold.unwrap_or(Duration::ZERO);
                let wait = self.node.config().election_timeout_max + TRANSFER_REPLY_SLACK + hold;
                let pushed = self.waiters.push(TransferWaiter {
                    addr: source,
                    deadline: now + wait,
                    answer: None,
                });
                assert!(pushed.is_ok(), "room was made above");
                return Handled::Transferring(target);
            }
            Err(TransferError::NotLeader) => {
                let _ = write_not_goose(&mut self.reply, &self.node, self.stopped, now);
                return Handled::Answer(Notice::None);
            }
            Err(TransferError::UnknownNode) => Reason::UnknownNode,
            Err(TransferError::NoTarget) => Reason::NoTarget,
            Err(TransferError::Busy) => Reason::Busy,
            Err(TransferError::Unhealthy) => Reason::Unhealthy,
        };
        let _ = text::write_err(&mut self.reply, reason);
        Handled::Answer(Notice::None)
    }

    /// `ctl add <id> <ip:port>` on the goose. Adding a member again at the same address is
    /// a no-op answered `ok`, so a joining node may repeat its request. A member id at
    /// another address is refused (`err id-in-use`): that is a second node given the same
    /// id far more often than a member that moved, and moving a member silently (the goose
    /// itself, even) would send the flock's frames where nobody with that id listens.
    fn control_add(&mut self, now: Instant, id: NodeId, addr: SocketAddr) -> Notice {
        let members = self.node.members();
        if members.iter().any(|m| m.id == id && m.addr == addr) {
            let _ = text::write_ok_plain(&mut self.reply);
            return Notice::None;
        }
        if members.iter().any(|m| m.id == id) {
            let _ = text::write_err(&mut self.reply, Reason::IdInUse);
            return Notice::None;
        }
        if members.iter().any(|m| m.id != id && m.addr == addr) {
            let _ = text::write_err(&mut self.reply, Reason::AddressInUse);
            return Notice::None;
        }
        match self.node.propose(now, Payload::AddLearner { id, addr }) {
            Ok(index) => {
                let _ = text::write_ok_plain(&mut self.reply);
                Notice::Adding {
                    id,
                    addr,
                    index: index.0,
                }
            }
            Err(error) => self.write_propose_error(now, error, Reason::MembersFull),
        }
    }

    /// `ctl remove <id>` on the goose. Removing the last voter is refused: no majority
    /// would be left to commit anything, ever.
    fn control_remove(&mut self, now: Instant, id: NodeId) -> Notice {
        let members = self.node.members();
        let Some(member) = members.iter().find(|m| m.id == id) else {
            let _ = text::write_err(&mut self.reply, Reason::UnknownNode);
            return Notice::None;
        };
        if member.voter && members.iter().filter(|m| m.voter).count() == 1 {
            let _ = text::write_err(&mut self.reply, Reason::LastVoter);
            return Notice::None;
        }
        match self.node.propose(now, Payload::Remove { id }) {
            Ok(index) => {
                let _ = text::write_ok_plain(&mut self.reply);
                Notice::Removing { id, index: index.0 }
            }
            Err(error) => self.write_propose_error(now, error, Reason::UnknownNode),
        }
    }

    fn write_propose_error(
        &mut self,
        now: Instant,
        error: ProposeError,
        invalid: Reason,
    ) -> Notice {
        let reason = match error {
            ProposeError::NotLeader => {
                let _ = write_not_goose(&mut self.reply, &self.node, self.stopped, now);
                return Notice::None;
            }
            // Too many uncommitted entries is as transient as a change in flight.
            ProposeError::Busy | ProposeError::LogFull => Reason::Busy,
            ProposeError::Invalid => invalid,
            ProposeError::RemovesLeaderOfTwo => Reason::TransferFirst,
        };
        let _ = text::write_err(&mut self.reply, reason);
        Notice::None
    }

    /// `ok role=… raft=… …`: the node's status, the caller's fields, the node's counters,
    /// the service's, then the caller's.
    #[inline(never)]
    fn write_status(&mut self, now: Instant, host: &Host<'_>) {
        let mut reply = core::mem::take(&mut self.reply);
        if self.write_status_line(now, host, &mut reply).is_err() {
            // Never send half a line.
            reply.clear();
            let _ = text::write_err(&mut reply, Reason::ReplyTooLong);
        }
        self.reply = reply;
    }

    /// Writes what `ctl status` answers at `now`, with the fields and counters of `host`:
    /// the one status line a program around the service shows in other forms too (the
    /// desktop node's status page and metrics read it).
    ///
    /// # Errors
    /// Only those of `out` ([`text::TEXT_REPLY_SIZE_MAX`] always suffices).
    pub fn write_status_line(
        &self,
        now: Instant,
        host: &Host<'_>,
        out: &mut impl Write,
    ) -> fmt::Result {
        let status = self.node.status(now);
        let (changed_at, cause) = self.node.last_change();
        let mut all: Vec<NodeId, M> = Vec::new();
        let mut voters: Vec<NodeId, M> = Vec::new();
        let mut learners: Vec<NodeId, M> = Vec::new();
        for member in self.node.members() {
            // The node holds at most M members: these pushes cannot fail.
            let _ = all.push(member.id);
            let _ = match member.voter {
                true => voters.push(member.id),
                false => learners.push(member.id),
            };
        }
        let raft = match (self.stopped, status.raft) {
            (_, RaftRole::Learner) => "learner",
            // Not taking part: it would restart as a follower.
            (true, _) => "follower",
            (false, role) => role.as_str(),
        };
        let mut counters: Vec<(&str, u64), STATUS_COUNTERS_MAX> = Vec::new();
        let every = (self.node.stats().counters().into_iter())
            .chain(self.stats.counters())
            .chain(host.counters.iter().copied());
        for counter in every {
            if counters.push(counter).is_err() {
                break;
            }
        }
        let reply = StatusReply {
            goose: status.goose && !self.stopped,
            raft,
            id: status.id,
            term: status.term,
            leader: status.leader,
            stopped: self.stopped,
            commit: status.commit.0,
            members: &all,
            voters: &voters,
            learners: &learners,
            lease_ms: if self.stopped {
                0
            } else {
                status.lease_remaining.millis()
            },
            change: Some((cause, now.saturating_since(changed_at).millis())),
            healthy: status.healthy,
            fields: host.fields,
            counters: &counters,
        };
        text::write_status(out, &reply)
    }

    // --- Transfer requesters ---------------------------------------------------------

    /// Decides `answer` for every requester not answered yet (the first answer stands).
    fn answer_waiters(&mut self, answer: Late) {
        for waiter in self.waiters.iter_mut() {
            waiter.answer = waiter.answer.or(Some(answer));
        }
    }

    /// Sends the answers decided since the last flush and forgets those requesters.
    fn answer_late(&mut self, now: Instant, out: &mut impl Outlet<A>) {
        if let Some(target) = self.busy.take() {
            self.late.clear();
            let _ = text::write_err(&mut self.late, Reason::Busy);
            send_late(out, &self.late, target, &mut self.stats);
        }
        for waiter in core::mem::take(&mut self.waiters) {
            let Some(answer) = waiter.answer else {
                let kept = self.waiters.push(waiter);
                assert!(kept.is_ok(), "it came from there");
                continue;
            };
            self.late.clear();
            // LATE_REPLY_SIZE_MAX holds each of these.
            let _ = match answer {
                Late::Handed(to) => text::write_ok_pair(&mut self.late, "to", u64::from(to.get())),
                Late::NoTarget => text::write_err(&mut self.late, Reason::NoTarget),
                Late::NotGoose => write_not_goose(&mut self.late, &self.node, self.stopped, now),
            };
            send_late(out, &self.late, waiter.addr, &mut self.stats);
        }
    }
}

fn send_late<A>(out: &mut impl Outlet<A>, reply: &str, target: A, stats: &mut ServiceStats) {
    if !out.send_reply(reply.as_bytes(), target) {
        bump(&mut stats.send_errors);
    }
}

/// `err not-goose goose=<id|none> addr=<ip:port|none>`: the leader `node` follows, never
/// itself, and none while stopped.
fn write_not_goose<S: Storage, const M: usize, const L: usize>(
    out: &mut impl Write,
    node: &Node<S, M, L>,
    stopped: bool,
    now: Instant,
) -> fmt::Result {
    let id = node.id();
    let leader = (!stopped)
        .then(|| node.status(now).leader)
        .flatten()
        .filter(|&leader| leader != id);
    let addr = leader.and_then(|leader| {
        let member = node.members().iter().find(|m| m.id == leader)?;
        Some(member.addr)
    });
    text::write_not_goose(out, leader, addr)
}

/// Whether a peer frame comes from a partitioned member. Identity is the frame header's
/// source id (a NAT'd board's address says nothing), mapped to the member's address for
/// partitions named by `ip:port`, in the latest membership and in the committed one: a
/// member whose removal is not committed yet is still heard by the node, so it must still
/// be cut off.
fn partitioned_source<S: Storage, const M: usize, const L: usize, const P: usize>(
    partition: &PeerList<P>,
    node: &Node<S, M, L>,
    frame: &[u8],
) -> bool {
    if partition.is_empty() {
        return false;
    }
    let Ok((header, _)) = crate::wire::parse_header(frame) else {
        return false; // the node counts it
    };
    let Some(source) = NodeId::new(header.source) else {
        return false;
    };
    let latest = node.members().iter().find(|m| m.id == source).copied();
    [latest, node.committed_member(source)]
        .into_iter()
        .flatten()
        .any(|member| partition.contains(member.id, member.addr))
}

/// Whether control is accepted: from a trusted source always; from others only if the node
/// has a token and `given` matches it.
pub fn control_allowed(trusted: bool, given: Option<&str>, expected: Option<&str>) -> bool {
    if trusted {
        return true;
    }
    match (expected, given) {
        (Some(expected), Some(given)) => same_token(given.as_bytes(), expected.as_bytes()),
        _ => false,
    }
}

/// Compares two tokens in time that depends only on their lengths: every byte is looked
/// at, and `black_box` keeps the optimiser from stopping at the first difference (the
/// approach of the `subtle` crate, which the core does not depend on). Only the length can
/// leak.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    if given.len() != expected.len() {
        return false;
    }
    let mut difference = 0u8;
    for (a, b) in given.iter().zip(expected) {
        difference |= core::hint::black_box(a ^ b);
    }
    core::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::String as StdString;
    use std::vec::Vec as StdVec;

    use super::*;
    use crate::types::Member;
    use core::net::Ipv4Addr;

    use crate::auth::tests::ToyMac;
    use crate::config::Config;
    use crate::storage::{PersistentState, StorageError};
    use crate::text::TEXT_REPLY_SIZE_MAX;

    struct Nowhere;

    impl Storage for Nowhere {
        fn save(&mut self, _state: &PersistentState<'_>) -> Result<(), StorageError> {
            Ok(())
        }
    }

    type TestService = Service<Nowhere, u16, 5, 32, 3, TEXT_REPLY_SIZE_MAX>;

    fn id(value: u16) -> NodeId {
        NodeId::new(value).unwrap()
    }

    fn member(value: u16) -> Member {
        Member {
            id: id(value),
            addr: SocketAddr::from(([127, 0, 0, 1], 9899 + value)),
            voter: true,
        }
    }

    /// Records what was sent.
    #[derive(Default)]
    struct Recorder {
        frames: StdVec<(NodeId, usize)>,
        bytes: StdVec<StdVec<u8>>,
        replies: StdVec<(u16, StdString)>,
        /// Every datagram in the order sent: the frame's target, or the reply's.
        sent: StdVec<StdString>,
        refuse: bool,
    }

    impl Outlet<u16> for Recorder {
        fn send_frame(&mut self, frame: &[u8], transmit: &Transmit) -> bool {
            self.frames.push((transmit.target, frame.len()));
            self.bytes.push(frame.to_vec());
            self.sent.push(std::format!("frame to {}", transmit.target));
            !self.refuse
        }

        fn send_reply(&mut self, reply: &[u8], target: u16) -> bool {
            let reply = StdString::from_utf8(reply.to_vec()).unwrap();
            self.sent
                .push(std::format!("{target}: {}", reply.trim_end()));
            self.replies.push((target, reply));
            !self.refuse
        }
    }

    /// Node 1 of a flock of `size`, or a flock of one (which elects itself) for `size` 1.
    fn service(size: u16) -> TestService {
        service_of(1, size)
    }

    /// Node `me` of a flock of `size`.
    fn service_of(me: u16, size: u16) -> TestService {
        let members: StdVec<Member> = (1..=size).map(member).collect();
        let config = Config::new(id(me));
        // Seeds differ by node, or a flock of two would split its votes for ever.
        let seed = 7 + u64::from(me) - 1;
        let node = Node::new(&config, Nowhere, None, &members, seed, Instant::ZERO);
        Service::new(node.unwrap())
    }

    const TRUSTED: Origin<u16> = Origin {
        addr: 5000,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        trusted: true,
    };

    /// Handles `datagram` and flushes: what it answers and sends is not looked at.
    fn handle<S: Storage, K: Mac>(
        service: &mut Service<S, u16, 5, 32, 3, TEXT_REPLY_SIZE_MAX, K>,
        now: Instant,
        origin: Origin<u16>,
        host: &Host<'_>,
        datagram: &[u8],
    ) -> Handled {
        let handled = service.handle_datagram(now, origin, host, datagram);
        assert!(service.flush(now, &mut Recorder::default()));
        handled
    }

    fn ask(service: &mut TestService, now: Instant, text: &str) -> (Handled, StdString) {
        let handled = handle(service, now, TRUSTED, &Host::default(), text.as_bytes());
        (handled, StdString::from(service.reply()))
    }

    /// Runs a flock of one until it is goose; returns the time.
    fn elect(service: &mut TestService, out: &mut Recorder) -> Instant {
        let mut now = Instant::ZERO;
        for _ in 0..100 {
            if service.is_goose(now) {
                return now;
            }
            now = service.poll_timeout().unwrap().max(now);
            service.handle_timeout(now);
            assert!(service.flush(now, out));
            while service.poll_event().is_some() {}
        }
        panic!("a flock of one elects itself");
    }

    #[test]
    fn probes_and_stop_start() {
        let mut service = service(3);
        let now = Instant::from_millis(1);
        let (handled, reply) = ask(&mut service, now, "whois-goose");
        assert_eq!(handled, Handled::Answer(Notice::None));
        assert_eq!(reply, "duck id=1 term=0 goose=none\n");
        let (handled, reply) = ask(&mut service, now, "ctl stop");
        assert_eq!(
            (handled, reply.as_str()),
            (Handled::Answer(Notice::Stopped), "ok\n")
        );
        assert_eq!(
            ask(&mut service, now, "ctl stop").0,
            Handled::Answer(Notice::None)
        );
        let (_, reply) = ask(&mut service, now, "whois-goose");
        assert_eq!(reply, "duck id=1 term=0 goose=none state=stopped\n");
        assert_eq!(service.poll_timeout(), None, "a stopped node has no timer");
        assert_eq!(ask(&mut service, now, "ctl start").0, Handled::Start);
        assert_eq!(
            service.reply(),
            "",
            "answered once the caller rebuilt the node"
        );
        service.start_failed();
        assert_eq!(service.reply(), "err start-failed\n");
        assert!(service.is_stopped());
        assert_eq!(ask(&mut service, now, "ctl start").0, Handled::Start);
        let fresh = self::service(3).node;
        service.start(fresh);
        assert_eq!(service.reply(), "ok\n");
        assert!(!service.is_stopped());
        assert_eq!(ask(&mut service, now, "ctl start").1, "ok\n");
        service.leave();
        assert_eq!(ask(&mut service, now, "ctl start").1, "err exiting\n");
    }

    #[test]
    fn text_that_is_not_a_request() {
        let mut service = service(3);
        let now = Instant::from_millis(1);
        assert_eq!(ask(&mut service, now, "ok to=3").0, Handled::Ignored);
        assert_eq!(ask(&mut service, now, "hello").1, "err unknown-command\n");
        assert_eq!(
            ask(&mut service, now, "ctl frob").1,
            "err unknown-command\n"
        );
        assert_eq!(
            ask(&mut service, now, "ctl remove 0").1,
            "err bad-node-id\n"
        );
        assert_eq!(service.stats().text_unknown, 1);
        let (_, reply) = ask(&mut service, now, "ctl partition 2,3,4,5");
        assert_eq!(reply, "err too-many-peers\n", "this service holds 3");
    }

    #[test]
    fn goose_only_commands_on_a_duck() {
        let mut service = service(3);
        let now = Instant::from_millis(1);
        for command in ["ctl transfer", "ctl add 4 127.0.0.1:1", "ctl remove 2"] {
            let (_, reply) = ask(&mut service, now, command);
            assert_eq!(reply, "err not-goose goose=none addr=none\n", "{command}");
        }
    }

    #[test]
    fn goose_commands_and_their_errors() {
        let mut service = service(1);
        let mut out = Recorder::default();
        let now = elect(&mut service, &mut out);
        let (_, reply) = ask(&mut service, now, "whois-goose");
        let lease = service.status(now).lease_remaining.millis();
        assert!(lease > 0);
        assert_eq!(
            reply,
            std::format!("goose id=1 term=1 goose=1 lease_ms={lease}\n")
        );
        // Why it is what it is, and since when.
        let (_, status) = ask(&mut service, now, "ctl status");
        assert!(status.contains(" cause=elected changed_ms="), "{status}");
        assert_eq!(ask(&mut service, now, "ctl transfer").1, "err no-target\n");
        assert_eq!(
            ask(&mut service, now, "ctl transfer 2").1,
            "err unknown-node\n"
        );
        assert_eq!(ask(&mut service, now, "ctl remove 1").1, "err last-voter\n");
        assert_eq!(
            ask(&mut service, now, "ctl remove 3").1,
            "err unknown-node\n"
        );
        let (_, reply) = ask(&mut service, now, "ctl add 2 127.0.0.1:9900");
        assert_eq!(reply, "err address-in-use\n", "node 1's address");
        assert_eq!(ask(&mut service, now, "ctl add 1 127.0.0.1:9900").1, "ok\n");
        let (handled, reply) = ask(&mut service, now, "ctl add 2 127.0.0.1:9901");
        // Elections append nothing: this is the log's first entry.
        let added = Notice::Adding {
            id: id(2),
            addr: member(2).addr,
            index: 1,
        };
        assert_eq!((handled, reply.as_str()), (Handled::Answer(added), "ok\n"));
        let status = ask(&mut service, now, "ctl status").1;
        assert!(
            status.starts_with("ok role=goose raft=leader id=1 term=1 goose=1 "),
            "{status}"
        );
        assert!(
            status.contains(" members=1,2 voters=1 learners=2 "),
            "{status}"
        );
        assert!(status.contains(" healthy=yes "), "{status}");
        // A member at another address: refused, whoever it is (the goose itself too).
        for command in ["ctl add 2 127.0.0.1:9950", "ctl add 1 127.0.0.1:9951"] {
            assert_eq!(ask(&mut service, now, command).1, "err id-in-use\n");
        }
        assert_eq!(service.node().members()[1].addr, member(2).addr);
    }

    /// A heartbeat from node `from` to node `to`, in term 1.
    fn heartbeat_between(from: u16, to: u16, sent_at: Instant) -> StdVec<u8> {
        let message = crate::wire::Message {
            term: crate::types::Term(1),
            body: crate::wire::Body::Append {
                prev: crate::types::EntryId::default(),
                commit: crate::types::LogIndex(0),
                last: crate::types::LogIndex(0),
                stick: Duration::from_millis(150),
                sent_at,
                entries: &[][..],
            },
        };
        frame(from, to, &message)
    }

    #[test]
    fn duplicate_ids_are_dropped_counted_and_told() {
        let mut service = service_of(2, 3);
        let from = |addr: u16| Origin {
            addr,
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            trusted: false,
        };
        let host = Host::default();
        let mut now = Instant::from_millis(10);
        let frame = heartbeat_between(1, 2, now);
        assert_eq!(
            handle(&mut service, now, from(1), &host, &frame),
            Handled::Frame
        );
        assert_eq!(service.heard_from(id(1)), Some(1));
        // Node 1's id from a second address while the first is alive: two processes.
        now = now + Duration::from_millis(1);
        let handled = service.handle_datagram(now, from(7), &host, &frame);
        assert_eq!(handled, Handled::Answer(Notice::DuplicateId { id: id(1) }));
        assert_eq!(
            service.reply(),
            "err duplicate-id id=1 addr=127.0.0.1:9900\n"
        );
        let mut out = Recorder::default();
        assert!(service.flush(now, &mut out));
        assert_eq!(out.replies.len(), 1);
        assert_eq!(out.replies[0].0, 7);
        assert_eq!(service.stats().drop_duplicate_id, 1);
        // This node's own id from anywhere.
        let own = heartbeat_between(2, 2, now);
        let handled = handle(&mut service, now, from(1), &host, &own);
        assert_eq!(handled, Handled::Answer(Notice::DuplicateId { id: id(2) }));
        assert_eq!(service.stats().drop_duplicate_id, 2);
        // Noise under node 1's id is no second process: the node counts it as undecodable.
        let mut noise = frame.clone();
        noise.truncate(6);
        noise.extend([0xFF; 12]);
        assert_eq!(
            handle(&mut service, now, from(7), &host, &noise),
            Handled::Frame
        );
        assert_eq!(service.node().stats().undecodable, 1);
        // Frames to another node are the node's to drop (`drop_wrong_target`).
        let elsewhere = heartbeat_between(1, 3, now);
        assert_eq!(
            handle(&mut service, now, from(7), &host, &elsewhere),
            Handled::Frame
        );
        // A member that moved: taken at its new address once the old one has been quiet
        // for an election timeout.
        now = now + Duration::from_millis(200);
        let moved = heartbeat_between(1, 2, now);
        assert_eq!(
            handle(&mut service, now, from(7), &host, &moved),
            Handled::Frame
        );
        assert_eq!(service.heard_from(id(1)), Some(7));
        assert_eq!(service.stats().drop_duplicate_id, 2);
    }

    #[test]
    fn transfer_requesters_are_answered_later() {
        let mut service = service(1);
        let mut out = Recorder::default();
        let now = elect(&mut service, &mut out);
        let _ = ask(&mut service, now, "ctl add 2 127.0.0.1:9901");
        assert!(service.flush(now, &mut out));
        // Node 2 is a learner, not a voter: no transfer target.
        assert_eq!(
            ask(&mut service, now, "ctl transfer 2").1,
            "err unknown-node\n"
        );
        // A stopped node answers its waiters not-goose.
        let mut waiting = self::service(1);
        let now = elect(&mut waiting, &mut out);
        waiting
            .waiters
            .push(TransferWaiter {
                addr: 7,
                deadline: now,
                answer: None,
            })
            .unwrap();
        assert!(waiting.stop());
        out.replies.clear();
        assert!(waiting.flush(now, &mut out));
        assert_eq!(
            out.replies,
            [(7, StdString::from("err not-goose goose=none addr=none\n"))]
        );
        // Late requesters get no-target.
        waiting
            .waiters
            .push(TransferWaiter {
                addr: 8,
                deadline: now,
                answer: None,
            })
            .unwrap();
        out.replies.clear();
        waiting.handle_timeout(now);
        assert!(out.replies.is_empty(), "an input sends nothing");
        assert!(waiting.flush(now, &mut out));
        assert_eq!(out.replies, [(8, StdString::from("err no-target\n"))]);
        assert_eq!(waiting.poll_timeout(), None);
    }

    #[test]
    fn status_reports_every_counter_and_fits() {
        let mut service = service(3);
        let now = Instant::from_millis(1);
        let extra = [("peer_frames_in", u64::MAX), ("drop_unroutable", 3)];
        let host = Host {
            control_token: None,
            counters: &extra,
            fields: &[("vips", "10.0.0.100/24@eth0")],
        };
        let _ = handle(&mut service, now, TRUSTED, &host, b"ctl status");
        let reply = service.reply();
        assert!(reply.starts_with("ok role=duck raft=follower id=1 term=0 goose=none "));
        // The caller's fields come after the node's own, before every counter.
        assert!(
            reply.contains(" changed_ms=1 vips=10.0.0.100/24@eth0 drop_short=0 "),
            "{reply}"
        );
        assert!(
            reply.contains(" drop_events=0 text_unknown=0 text_forbidden=0 "),
            "{reply}"
        );
        assert!(reply.ends_with(" peer_frames_in=18446744073709551615 drop_unroutable=3\n"));
        let core = service.node.stats().counters().len();
        assert!(core + service.stats.counters().len() + 4 <= STATUS_COUNTERS_MAX);
    }

    #[test]
    fn control_trust() {
        assert!(control_allowed(true, None, None));
        assert!(control_allowed(true, Some("x"), Some("secret")));
        assert!(!control_allowed(false, None, None));
        assert!(!control_allowed(false, Some("secret"), None));
        assert!(!control_allowed(false, None, Some("secret")));
        assert!(!control_allowed(false, Some("secreT"), Some("secret")));
        assert!(!control_allowed(false, Some(""), Some("secret")));
        assert!(!control_allowed(false, Some("secret2"), Some("secret")));
        assert!(control_allowed(false, Some("secret"), Some("secret")));
        let mut service = service(3);
        let stranger = Origin {
            addr: 9,
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
            trusted: false,
        };
        let host = Host {
            control_token: Some("t"),
            counters: &[],
            fields: &[],
        };
        let now = Instant::from_millis(1);
        let handled = handle(&mut service, now, stranger, &host, b"ctl status");
        assert_eq!(handled, Handled::Answer(Notice::Forbidden));
        assert_eq!(service.reply(), "err forbidden\n");
        let _ = handle(&mut service, now, stranger, &host, b"ctl token=t status");
        assert!(service.reply().starts_with("ok role=duck"));
        assert_eq!(service.stats().text_forbidden, 1);
    }

    // --- The driving contract ----------------------------------------------------------

    #[test]
    fn flush_sends_the_answer_to_its_source_once() {
        let mut service = service(3);
        let now = Instant::from_millis(1);
        let origin = Origin {
            addr: 77,
            ..TRUSTED
        };
        let handled = service.handle_datagram(now, origin, &Host::default(), b"whois-goose");
        assert_eq!(handled, Handled::Answer(Notice::None));
        let mut out = Recorder::default();
        assert!(service.flush(now, &mut out));
        assert_eq!(out.sent, ["77: duck id=1 term=0 goose=none"]);
        assert!(service.flush(now, &mut out));
        assert_eq!(out.sent.len(), 1, "sent once");
        assert_eq!(
            service.reply(),
            "duck id=1 term=0 goose=none\n",
            "still readable"
        );
        // Neither a reply nor a frame gets an answer.
        for datagram in [&b"ok"[..], &[0xD9, 0x01]] {
            let _ = service.handle_datagram(now, origin, &Host::default(), datagram);
            assert!(service.flush(now, &mut out));
        }
        assert_eq!(out.sent.len(), 1);
    }

    #[test]
    #[should_panic(expected = "flush after every datagram")]
    fn an_answer_never_flushed_is_a_caller_bug() {
        let mut service = service(3);
        let now = Instant::from_millis(1);
        let _ = service.handle_datagram(now, TRUSTED, &Host::default(), b"whois-goose");
        let _ = service.handle_datagram(now, TRUSTED, &Host::default(), b"whois-goose");
    }

    /// A heartbeat from node 2, leader in `term`, to node 1.
    fn heartbeat(term: u64, now: Instant) -> StdVec<u8> {
        use crate::types::{EntryId, LogIndex, Term};
        let message = crate::wire::Message {
            term: Term(term),
            body: crate::wire::Body::Append {
                prev: EntryId::default(),
                commit: LogIndex(0),
                last: LogIndex(0),
                stick: Duration::from_millis(150),
                sent_at: now,
                entries: &[][..],
            },
        };
        frame(2, 1, &message)
    }

    #[test]
    fn events_wait_in_the_service_bounded_and_counted() {
        let mut service = service(3);
        let mut out = Recorder::default();
        assert!(service.flush(Instant::ZERO, &mut out));
        let initial = service.poll_event();
        assert!(
            matches!(initial, Some(Event::Changed(o)) if o.term.0 == 0),
            "{initial:?}"
        );
        assert_eq!(service.poll_event(), None);
        let terms = EVENTS_MAX as u64 + 4;
        for term in 1..=terms {
            let now = Instant::from_millis(term);
            let handled =
                service.handle_datagram(now, TRUSTED, &Host::default(), &heartbeat(term, now));
            assert_eq!(handled, Handled::Frame);
            assert!(service.flush(now, &mut out));
            assert_eq!(
                out.frames.last(),
                Some(&(id(2), out.bytes.last().unwrap().len()))
            );
        }
        assert_eq!(
            out.frames.len() as u64,
            terms,
            "each heartbeat answered at its flush"
        );
        let mut events = StdVec::new();
        while let Some(event) = service.poll_event() {
            events.push(event);
        }
        assert_eq!(events.len(), EVENTS_MAX, "{events:?}");
        assert_eq!(
            service.stats().drop_events_unpolled,
            terms - EVENTS_MAX as u64
        );
        let term = |event: &Event| match event {
            Event::Changed(observed) => observed.term.0,
            other => panic!("{other:?}"),
        };
        let kept: StdVec<u64> = events.iter().map(term).collect();
        let newest: StdVec<u64> = (terms - EVENTS_MAX as u64 + 1..=terms).collect();
        assert_eq!(kept, newest, "the oldest are dropped");
        assert_eq!(
            service.node().stats().events_dropped,
            0,
            "the node's never fill"
        );
    }

    /// Runs two services, nodes 1 and 2 of a flock of two, delivering every frame, until
    /// one is goose; returns it, its peer and the time.
    fn elect_one_of_two() -> (TestService, TestService, Instant) {
        let mut nodes = [service_of(1, 2), service_of(2, 2)];
        let mut inboxes: [StdVec<StdVec<u8>>; 2] = Default::default();
        let mut now = Instant::ZERO;
        for _ in 0..1_000 {
            if let Some(goose) = nodes.iter().position(|n| n.is_goose(now)) {
                let [one, two] = nodes;
                return match goose {
                    0 => (one, two, now),
                    _ => (two, one, now),
                };
            }
            if inboxes.iter().all(StdVec::is_empty) {
                let next = nodes.iter().filter_map(TestService::poll_timeout).min();
                now = next.unwrap().max(now);
            }
            for index in 0..2 {
                let mut out = Recorder::default();
                for bytes in core::mem::take(&mut inboxes[index]) {
                    let _ = nodes[index].handle_datagram(now, TRUSTED, &Host::default(), &bytes);
                    assert!(nodes[index].flush(now, &mut out));
                }
                nodes[index].handle_timeout(now);
                assert!(nodes[index].flush(now, &mut out));
                while nodes[index].poll_event().is_some() {}
                inboxes[1 - index].extend(out.bytes);
            }
        }
        panic!("a flock of two elects a goose");
    }

    /// Delivers `sent`'s frames to `service`, dropping what it answers.
    fn deliver_all(service: &mut TestService, now: Instant, sent: &Recorder) {
        for bytes in &sent.bytes {
            let _ = service.handle_datagram(now, TRUSTED, &Host::default(), bytes);
            let mut out = Recorder::default();
            assert!(service.flush(now, &mut out));
            assert!(out.replies.is_empty());
        }
    }

    #[test]
    fn a_transfer_requester_hears_ok_once_timeout_now_has_left() {
        let (mut goose, mut duck, now) = elect_one_of_two();
        let origin = Origin { addr: 9, ..TRUSTED };
        let transfer = b"ctl transfer";
        let handled = goose.handle_datagram(now, origin, &Host::default(), transfer);
        let target = duck.node().id();
        assert_eq!(handled, Handled::Transferring(None));
        assert!(
            !goose.is_goose(now),
            "a goose handing off answers duck at once"
        );
        let mut out = Recorder::default();
        // The duck is caught up: TimeoutNow goes in this very flush, then the answer.
        assert!(goose.flush(now, &mut out));
        let answer = std::format!("9: ok to={target}");
        let at = out.sent.iter().position(|line| *line == answer);
        assert!(at.is_some_and(|at| at > 0), "{:?}", out.sent);
        assert!(out.sent[..at.unwrap()].contains(&std::format!("frame to {target}")));
        let mut events = StdVec::new();
        while let Some(event) = goose.poll_event() {
            events.push(event);
        }
        assert!(
            events.contains(&Event::TransferSent { to: target }),
            "{events:?}"
        );
        // Nothing more for the requester, and the duck takes over.
        deliver_all(&mut duck, now, &out);
        let mut later = Recorder::default();
        assert!(goose.flush(now, &mut later));
        assert!(later.replies.is_empty());
        assert_eq!(goose.poll_timeout().map(|at| at > now), Some(true));
        assert!(
            duck.node().term() > goose.node().term(),
            "the target campaigned"
        );
    }

    /// Storage whose saves fail once it is broken.
    #[derive(Clone, Default)]
    struct Breakable(std::rc::Rc<core::cell::Cell<bool>>);

    impl Storage for Breakable {
        fn save(&mut self, _state: &PersistentState<'_>) -> Result<(), StorageError> {
            match self.0.get() {
                true => Err(StorageError::Io),
                false => Ok(()),
            }
        }
    }

    type BreakableService = Service<Breakable, u16, 5, 32, 3, TEXT_REPLY_SIZE_MAX>;

    fn breakable(size: u16, storage: &Breakable) -> BreakableService {
        let members: StdVec<Member> = (1..=size).map(member).collect();
        let config = Config::new(id(1));
        let node = Node::new(&config, storage.clone(), None, &members, 7, Instant::ZERO);
        Service::new(node.unwrap())
    }

    fn frame(from: u16, to: u16, message: &crate::wire::MessageRef<'_>) -> StdVec<u8> {
        let mut buffer = [0; FRAME_SIZE_MAX];
        let size = crate::wire::encode(id(from), id(to), message, &mut buffer).unwrap();
        buffer[..size].to_vec()
    }

    fn ask_breakable(service: &mut BreakableService, now: Instant, text: &str) -> Handled {
        handle(service, now, TRUSTED, &Host::default(), text.as_bytes())
    }

    #[test]
    fn a_failed_save_shows_nothing_storage_did_not_confirm() {
        use crate::types::{LogView, Term};
        use crate::wire::{Body, Message};
        // A duck asked for its vote in term 5 must save term 5 first; the save fails.
        let storage = Breakable::default();
        let mut service = breakable(3, &storage);
        let now = Instant::from_millis(1000);
        let vote = Message {
            term: Term(5),
            body: Body::Vote {
                log: LogView::default(),
                transfer: false,
            },
        };
        storage.0.set(true);
        let handled = service.handle_datagram(now, TRUSTED, &Host::default(), &frame(2, 1, &vote));
        assert_eq!(handled, Handled::Dropped);
        // Nothing in the same batch answers, let alone with term 5.
        assert_eq!(
            ask_breakable(&mut service, now, "whois-goose"),
            Handled::Dropped
        );
        assert_eq!(
            ask_breakable(&mut service, now, "ctl status"),
            Handled::Dropped
        );
        assert_eq!(service.reply(), "");
        let status = service.status(now);
        assert_eq!((status.term, status.failed), (Term(0), true));
        assert_eq!(service.node().voted_for(), None);
        // A requester whose answer was decided before the failure hears nothing either.
        let waiter = TransferWaiter {
            addr: 8,
            deadline: now,
            answer: Some(Late::NotGoose),
        };
        service.waiters.push(waiter).unwrap();
        service.busy = Some(9);
        let mut out = Recorder::default();
        assert!(service.flush(now, &mut out));
        assert!(out.sent.is_empty(), "the vote never leaves, nor any answer");
        let mut events = StdVec::new();
        while let Some(event) = service.poll_event() {
            events.push(event);
        }
        assert_eq!(events.last(), Some(&Event::Failed), "{events:?}");
        assert_eq!(service.poll_timeout(), None, "nothing left to do");

        // A goose whose `ctl add` cannot be saved does not answer `ok`.
        let storage = Breakable::default();
        let mut service = breakable(1, &storage);
        let mut out = Recorder::default();
        let mut now = Instant::ZERO;
        for _ in 0..100 {
            if service.is_goose(now) {
                break;
            }
            now = service.poll_timeout().unwrap().max(now);
            service.handle_timeout(now);
            assert!(service.flush(now, &mut out));
            while service.poll_event().is_some() {}
        }
        assert!(service.is_goose(now));
        storage.0.set(true);
        let handled = ask_breakable(&mut service, now, "ctl add 2 127.0.0.1:9901");
        assert_eq!((handled, service.reply()), (Handled::Dropped, ""));
        assert!(!service.is_goose(now));
        assert_eq!(service.status(now).term, Term(1));
    }

    #[test]
    fn a_partition_cuts_a_member_whose_removal_is_not_committed() {
        use crate::storage::PersistentState;
        use crate::types::{Entry, EntryId, LogIndex, Term};
        // Node 1's log removes node 3 by an entry not yet committed: node 3 is out of the
        // latest membership but still heard, as a member of the committed one.
        let members: StdVec<Member> = (1..=3).map(member).collect();
        let entries = [Entry {
            term: Term(1),
            payload: Payload::Remove { id: id(3) },
        }];
        let state = PersistentState {
            id: id(1),
            term: Term(1),
            voted_for: None,
            log_term: Term(1),
            stick: Duration::ZERO,
            commit: LogIndex(0),
            snapshot: EntryId::default(),
            snapshot_members: &members,
            entries: &entries,
        };
        let mut buffer = [0; 512];
        let saved = state.encode(&mut buffer).unwrap();
        let config = Config::new(id(1));
        let node = Node::new(&config, Nowhere, Some(saved), &[], 7, Instant::ZERO).unwrap();
        let mut service = TestService::new(node);
        assert!(!service.node().members().iter().any(|m| m.id == id(3)));
        let heartbeat = crate::wire::Message {
            term: Term(1),
            body: crate::wire::Body::PreVoteResponse { granted: false },
        };
        let from_three = frame(3, 1, &heartbeat);
        let now = Instant::from_millis(1);
        for named in ["3", "127.0.0.1:9902"] {
            let _ = ask(&mut service, now, &std::format!("ctl partition {named}"));
            let handled = service.handle_datagram(now, TRUSTED, &Host::default(), &from_three);
            assert_eq!(handled, Handled::Dropped, "partition {named}");
        }
        assert_eq!(service.stats().drop_partition_in, 2);
        let _ = ask(&mut service, now, "ctl heal");
        let handled = service.handle_datagram(now, TRUSTED, &Host::default(), &from_three);
        assert_eq!(handled, Handled::Frame);
    }

    #[test]
    fn partitioned_and_stopped_frames_are_dropped() {
        let mut service = service(3);
        let now = Instant::from_millis(1);
        // A heartbeat from node 2 to node 1 (the wire tests' fixture, source and target
        // swapped).
        let frame = [
            0xD9, 0x02, 0x02, 0x00, 0x01, 0x00, 0x03, 0x04, 0x02, 0x05, 0x04, 0x05, 0xF0, 0x93,
            0x09, 0xE8, 0x07, 0x00,
        ];
        let _ = ask(&mut service, now, "ctl partition 127.0.0.1:9901");
        let handled = service.handle_datagram(now, TRUSTED, &Host::default(), &frame);
        assert_eq!(handled, Handled::Dropped);
        assert_eq!(service.stats().drop_partition_in, 1);
        assert_eq!(
            ask(&mut service, now, "ctl heal").0,
            Handled::Answer(Notice::Healed)
        );
        let handled = service.handle_datagram(now, TRUSTED, &Host::default(), &frame);
        assert_eq!(handled, Handled::Frame);
        let _ = service.stop();
        let handled = service.handle_datagram(now, TRUSTED, &Host::default(), &frame);
        assert_eq!(handled, Handled::Dropped);
        assert_eq!(service.stats().drop_stopped, 1);
        let mut out = Recorder {
            refuse: true,
            ..Recorder::default()
        };
        assert!(service.flush(now, &mut out), "a stopped node sends nothing");
        assert!(out.frames.is_empty());
    }

    type KeyedService = Service<Nowhere, u16, 5, 32, 3, TEXT_REPLY_SIZE_MAX, ToyMac>;

    /// Node `me` of a flock of three sharing the key `key`, in boot `epoch`.
    fn keyed(me: u16, key: u8, epoch: u32) -> KeyedService {
        let members: StdVec<Member> = (1..=3).map(member).collect();
        let node = Node::new(
            &Config::new(id(me)),
            Nowhere,
            None,
            &members,
            7,
            Instant::ZERO,
        );
        Service::with_key(node.unwrap(), ToyMac(key), epoch)
    }

    fn deliver(service: &mut KeyedService, now: Instant, frame: &[u8]) -> Handled {
        service.handle_datagram(now, TRUSTED, &Host::default(), frame)
    }

    #[test]
    fn keyed_frames_are_sealed_and_every_drop_reason_counted() {
        let (mut one, mut two) = (keyed(1, 7, 1), keyed(2, 7, 1));
        let mut out = Recorder::default();
        let now = one.poll_timeout().unwrap();
        one.handle_timeout(now);
        assert!(one.flush(now, &mut out));
        let to_two = out
            .frames
            .iter()
            .position(|(target, _)| target.get() == 2)
            .unwrap();
        let frame = out.bytes[to_two].clone();
        assert_eq!(deliver(&mut two, now, &frame), Handled::Frame);
        assert_eq!(*two.stats(), ServiceStats::default());
        let mut answers = Recorder::default();
        assert!(two.flush(now, &mut answers));
        assert_eq!(answers.frames.len(), 1, "node 2 answers the pre-vote");
        assert_eq!(deliver(&mut one, now, &answers.bytes[0]), Handled::Frame);
        assert_eq!(*one.stats(), ServiceStats::default());

        // The same frame again: a replay.
        assert_eq!(deliver(&mut two, now, &frame), Handled::Dropped);
        assert_eq!(two.stats().drop_replay, 1);
        // Any bit changed, or another flock's key: a bad MAC.
        let mut tampered = frame.clone();
        tampered[7] ^= 0x10;
        assert_eq!(deliver(&mut two, now, &tampered), Handled::Dropped);
        assert_eq!(deliver(&mut keyed(2, 8, 1), now, &frame), Handled::Dropped);
        assert_eq!(two.stats().drop_bad_mac, 1);
        // A plain frame (a member without the key): unsealed.
        let plain = &frame[..frame.len() - auth::TRAILER_SIZE];
        assert_eq!(deliver(&mut two, now, &plain[..8]), Handled::Dropped);
        assert_eq!(two.stats().drop_unsealed, 1);
        // Wrong version and oversized: refused by the node under their own reasons.
        let mut version = frame.clone();
        version[1] = crate::wire::VERSION + 1;
        assert_eq!(deliver(&mut two, now, &version), Handled::Frame);
        assert_eq!(
            deliver(&mut two, now, &[0xD9; FRAME_SIZE_MAX + 1]),
            Handled::Frame
        );
        // Sealed with the key, from an id that is not a member: unknown node.
        let mut stranger = [0; FRAME_SIZE_MAX];
        stranger[..plain.len()].copy_from_slice(plain);
        stranger[2] = 9;
        let size = Sealer::new(1)
            .seal(&ToyMac(7), &mut stranger, plain.len())
            .unwrap();
        assert_eq!(deliver(&mut two, now, &stranger[..size]), Handled::Frame);
        let counters = two.node().stats();
        assert_eq!(
            (
                counters.bad_version,
                counters.too_long,
                counters.unknown_node
            ),
            (1, 1, 1)
        );
        let fine = ServiceStats {
            drop_replay: 1,
            drop_bad_mac: 1,
            drop_unsealed: 1,
            ..ServiceStats::default()
        };
        assert_eq!(*two.stats(), fine, "nothing else counted");
        assert_eq!(counters.undecodable + counters.invalid, 0);
        // A restarted sender (higher epoch) is heard again.
        let mut restarted = keyed(1, 7, 2);
        let mut out = Recorder::default();
        let later = now + Duration::from_millis(1_000);
        restarted.handle_timeout(later);
        assert!(restarted.flush(later, &mut out));
        let to_two = out
            .frames
            .iter()
            .position(|(target, _)| target.get() == 2)
            .unwrap();
        assert_eq!(deliver(&mut two, later, &out.bytes[to_two]), Handled::Frame);
        assert_eq!(*two.stats(), fine);
    }

    fn ask_keyed(service: &mut KeyedService, now: Instant, text: &str) -> StdString {
        let stranger = Origin {
            addr: 9,
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
            trusted: false,
        };
        let _ = handle(service, now, stranger, &Host::default(), text.as_bytes());
        StdString::from(service.reply())
    }

    fn signed(key: u8, nonce: u64, command: &str) -> StdString {
        let mut datagram = StdString::new();
        auth::write_signed_control(&mut datagram, &ToyMac(key), nonce, command).unwrap();
        datagram
    }

    #[test]
    fn keyed_control_is_signed_over_a_fresh_nonce() {
        let mut one = keyed(1, 7, 3);
        let now = Instant::from_millis(1);
        // Unsigned control is refused, even from a trusted source and with a token.
        let host = Host {
            control_token: Some("t"),
            counters: &[],
            fields: &[],
        };
        let _ = handle(&mut one, now, TRUSTED, &host, b"ctl token=t status");
        assert_eq!(one.reply(), "err forbidden\n");
        assert_eq!(ask_keyed(&mut one, now, "ctl stop"), "err forbidden\n");
        let nonce = text::parse_nonce_reply(&ask_keyed(&mut one, now, "ctl nonce")).unwrap();
        assert_eq!(nonce >> 32, 3, "the boot's epoch");
        // Another key's signature: refused without using up the nonce.
        assert_eq!(
            ask_keyed(&mut one, now, &signed(8, nonce, "stop")),
            "err forbidden\n"
        );
        let command = signed(7, nonce, "stop");
        let mut changed = command.clone().into_bytes();
        let last = changed.len() - 1;
        changed[last] = b'a'; // "stoa": the tag no longer covers it
        assert_eq!(
            ask_keyed(&mut one, now, core::str::from_utf8(&changed).unwrap()),
            "err forbidden\n"
        );
        assert_eq!(ask_keyed(&mut one, now, &command), "ok\n");
        assert!(one.is_stopped());
        assert_eq!(
            ask_keyed(&mut one, now, &command),
            "err stale-nonce\n",
            "a recorded command is never good twice"
        );
        let expired = text::parse_nonce_reply(&ask_keyed(&mut one, now, "ctl nonce")).unwrap();
        let late = now + auth::NONCE_LIFETIME;
        assert_eq!(
            ask_keyed(&mut one, late, &signed(7, expired, "start")),
            "err stale-nonce\n"
        );
        assert_eq!(
            (
                one.stats().text_forbidden,
                one.stats().ctl_bad_signature,
                one.stats().ctl_stale_nonce
            ),
            (2, 2, 2)
        );
        // Without a key there is nothing to sign with.
        let mut plain = service(3);
        let (_, reply) = ask(&mut plain, now, "ctl nonce");
        assert_eq!(reply, "err no-key\n");
        let (_, reply) = ask(&mut plain, now, &signed(7, 1, "status"));
        assert_eq!(reply, "err no-key\n");
    }

    #[test]
    fn a_keyed_node_signs_probe_answers_over_the_client_nonce() {
        let mut one = keyed(1, 7, 3);
        let now = Instant::from_millis(1);
        let plain = ask_keyed(&mut one, now, "whois-goose");
        assert_eq!(
            plain, "duck id=1 term=0 goose=none\n",
            "no nonce, no signature"
        );
        let nonce = 0x0000_0000_0000_beef;
        let answer = ask_keyed(&mut one, now, "whois-goose nonce=000000000000beef");
        let reply = text::verify_signed_probe_reply(&answer, nonce, &ToyMac(7)).unwrap();
        assert_eq!((reply.id, reply.goose), (id(1), false));
        assert_eq!(
            text::verify_signed_probe_reply(&answer, nonce, &ToyMac(8)),
            Err(text::SignedProbeError::BadTag)
        );
        // A node without a key answers plainly; the client refuses it as unsigned.
        let mut plain = service(3);
        let (_, answer) = ask(&mut plain, now, "whois-goose nonce=000000000000beef");
        assert_eq!(answer, "duck id=1 term=0 goose=none\n");
        assert_eq!(
            text::verify_signed_probe_reply(&answer, nonce, &ToyMac(7)),
            Err(text::SignedProbeError::Unsigned)
        );
    }

    #[test]
    fn text_answers_are_rate_limited_per_source_and_peer_frames_never() {
        let mut service = service(3);
        service.set_rate_limit(RateLimit {
            per_source_per_s: 10,
            burst: 5,
            global_per_s: 0,
        });
        let now = Instant::from_millis(1);
        let from = |last: u8| Origin {
            addr: u16::from(last),
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
            trusted: false,
        };
        let answered = |service: &mut TestService, now, origin, text: &str| {
            let handled = handle(service, now, origin, &Host::default(), text.as_bytes());
            matches!(handled, Handled::Answer(_))
        };
        let flood = (0..20)
            .filter(|_| answered(&mut service, now, from(1), "whois-goose"))
            .count();
        assert_eq!(flood, 5, "the burst, then nothing");
        assert!(!answered(&mut service, now, from(1), "ctl status"));
        assert!(!answered(&mut service, now, from(1), "nonsense"));
        assert!(
            answered(&mut service, now, from(2), "whois-goose"),
            "another source"
        );
        assert_eq!(service.stats().drop_rate_limited, 17);
        // Replies are not answered anyway and cost no token.
        let reply = service.handle_datagram(now, from(2), &Host::default(), b"ok");
        assert_eq!(reply, Handled::Ignored);
        // A peer frame from a limited source still reaches the node.
        let heartbeat = [
            0xD9, 0x01, 0x02, 0x00, 0x01, 0x00, 0x03, 0x04, 0x02, 0x05, 0x04, 0xE8, 0x07, 0x00,
        ];
        let handled = service.handle_datagram(now, from(1), &Host::default(), &heartbeat);
        assert_eq!(handled, Handled::Frame);
        let later = now + Duration::from_millis(300);
        let refilled = (0..10)
            .filter(|_| answered(&mut service, later, from(1), "whois-goose"))
            .count();
        assert_eq!(refilled, 3, "10/s for 300 ms");
    }
}
