//! The node behind a board's socket, without the network: the text protocol (probes and
//! `ctl`, answered exactly as the desktop node answers them, `node-std/src/event_loop.rs`),
//! the node's lifecycle (`ctl stop`/`start` rebuild it from flash), and its frames.
//!
//! [`Service`] never touches smoltcp's socket itself, so [`crate::Board`] can hand it a
//! datagram where it lies in the socket's ring: [`Service::handle_datagram`] writes at most
//! one reply into its buffer, and every send goes through an [`Outlet`] afterwards.

use core::cell::RefCell;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use embedded_storage::nor_flash::NorFlash;
use goose_core::limits::{EVENTS_MAX, FRAME_SIZE_MAX};
use goose_core::text::{self, Command, PeerList, ProbeReply, Request, StatusReply};
use goose_core::{
    Duration, Event, Instant, Member, Node, NodeId, Payload, ProposeError, RaftRole, Status,
    TransferError,
};
use heapless::{Deque, String, Vec};
use smoltcp::wire::{IpAddress, IpEndpoint};
use subtle::ConstantTimeEq;

use crate::board::{BoardConfig, BoardError, BoardNode};
use crate::store::{FlashStorage, FlashStore};
use crate::{MEMBERS_MAX, REPLY_SIZE_MAX, TRANSMITS_PER_INPUT_MAX};

/// Counters in `ctl status` after the core's, one per reason the board dropped something.
/// The names shared with the desktop node are the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoardStats {
    /// Text that is not a request (answered `err unknown-command`).
    pub text_unknown: u64,
    /// Control refused (answered `err forbidden`).
    pub text_forbidden: u64,
    /// Peer frames dropped on arrival by `ctl partition`.
    pub partition_in: u64,
    /// Peer frames not sent because of `ctl partition`.
    pub partition_out: u64,
    /// Peer frames dropped on arrival while stopped.
    pub stopped_in: u64,
    /// Datagrams the socket refused even after a flush.
    pub send_errors: u64,
    /// Datagrams truncated by the socket (longer than its receive ring).
    pub receive_errors: u64,
    /// Peer frames for an address the board cannot reach (IPv6, or loopback without a
    /// configured host).
    pub unroutable: u64,
}

impl BoardStats {
    /// Every counter with its `ctl status` name, in a stable order.
    pub const fn counters(&self) -> [(&'static str, u64); 8] {
        [
            ("text_unknown", self.text_unknown),
            ("text_forbidden", self.text_forbidden),
            ("drop_partition_in", self.partition_in),
            ("drop_partition_out", self.partition_out),
            ("drop_stopped", self.stopped_in),
            ("send_errors", self.send_errors),
            ("receive_errors", self.receive_errors),
            ("drop_unroutable", self.unroutable),
        ]
    }
}

/// All counters `ctl status` prints: the core's 13 and the board's 8.
const COUNTERS_MAX: usize = 21;

/// `ctl transfer` requesters waiting for the handoff to be sent. The core runs one transfer
/// at a time and refuses others (`err busy`), so one waiter is the norm; when full, the
/// oldest is answered `err busy` and dropped (as on the desktop node).
const TRANSFER_WAITERS_MAX: usize = 4;

/// How long after `election_timeout_max` a `ctl transfer` requester is answered
/// `err no-target` if the core reported nothing (it always reports within
/// `election_timeout_min`; this only guards against a lost event).
const TRANSFER_REPLY_SLACK: Duration = Duration::from_millis(100);

/// Events kept for [`Board::poll_event`]: the core's own bound. When full, the oldest is
/// dropped (a caller that polls after every [`Board::poll`] never sees more than a few).
const BOARD_EVENTS_MAX: usize = EVENTS_MAX;

/// A `ctl transfer` requester waiting for the handoff to be sent.
#[derive(Clone, Copy, Debug)]
struct TransferWaiter {
    source: IpEndpoint,
    /// When it is answered `err no-target` if the core reported nothing.
    deadline: Instant,
}

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Where a [`Service`] sends datagrams.
pub(crate) trait Outlet {
    /// Queues `data` for `target`; `false` if it could not (the datagram is lost, as UDP
    /// may lose it, and counted).
    fn send(&mut self, data: &[u8], target: IpEndpoint) -> bool;
}

/// The node and everything the text protocol keeps about it.
pub(crate) struct Service<'a, F: NorFlash> {
    pub(crate) config: BoardConfig,
    store: &'a RefCell<FlashStore<F>>,
    pub(crate) node: BoardNode<'a, F>,
    /// A `ctl start` waits for [`Service::after_datagram`] to rebuild the node.
    start_requested: bool,
    /// `ctl start`s that rebuilt the node, mixed into its seed.
    restarts: u64,
    /// `ctl stop` was the last of stop/start.
    pub(crate) stopped: bool,
    partition: PeerList,
    pub(crate) stats: BoardStats,
    transfer_waiters: Vec<TransferWaiter, TRANSFER_WAITERS_MAX>,
    /// A requester pushed out of `transfer_waiters`, to answer `err busy`.
    busy_to: Option<IpEndpoint>,
    /// The node's events, after the service has acted on them.
    events: Deque<Event, BOARD_EVENTS_MAX>,
    frame: [u8; FRAME_SIZE_MAX],
    reply: String<REPLY_SIZE_MAX>,
}

impl<'a, F: NorFlash> Service<'a, F> {
    /// The service around `node` (see [`build_node`]).
    pub(crate) fn new(
        config: BoardConfig,
        store: &'a RefCell<FlashStore<F>>,
        node: BoardNode<'a, F>,
    ) -> Self {
        Self {
            config,
            store,
            node,
            start_requested: false,
            restarts: 0,
            stopped: false,
            partition: PeerList::new(),
            stats: BoardStats::default(),
            transfer_waiters: Vec::new(),
            busy_to: None,
            events: Deque::new(),
            frame: [0; FRAME_SIZE_MAX],
            reply: String::new(),
        }
    }

    /// The node's status at `now`, as a probe reports it (a stopped node is no goose).
    pub(crate) fn status(&self, now: Instant) -> Status {
        let mut status = self.node.status(now);
        status.goose &= !self.stopped;
        status
    }

    /// The next instant the service has work without new datagrams.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let node = if self.stopped {
            None
        } else {
            self.node.poll_timeout()
        };
        let waiter = self.transfer_waiters.iter().map(|w| w.deadline).min();
        [node, waiter].into_iter().flatten().min()
    }

    /// The next event, oldest first (see [`crate::Board::poll_event`]).
    pub(crate) fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Fires the node's timers and the transfer deadlines that are due, and sends what
    /// they produced.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut impl Outlet) {
        if !self.stopped && self.node.poll_timeout().is_some_and(|at| at <= now) {
            self.node.handle_timeout(now);
        }
        self.flush(now, out);
        self.check_transfer_deadlines(out, now);
    }

    /// Handles one datagram from `source` and returns whether `reply` holds an answer for
    /// it. Sends nothing: call [`Service::after_datagram`] once the datagram is released.
    #[inline(never)]
    pub(crate) fn handle_datagram(
        &mut self,
        now: Instant,
        source: IpEndpoint,
        datagram: &[u8],
    ) -> bool {
        self.reply.clear();
        match text::parse(datagram) {
            Request::Binary => {
                if self.stopped {
                    bump(&mut self.stats.stopped_in);
                } else if partitioned_source(&self.partition, self.node.members(), datagram) {
                    bump(&mut self.stats.partition_in);
                } else {
                    self.node.handle_frame(now, datagram);
                }
                false
            }
            Request::Probe => {
                let status = self.node.status(now);
                let reply = ProbeReply {
                    goose: status.goose && !self.stopped,
                    id: status.id,
                    term: status.term,
                    leader: status.leader,
                    stopped: self.stopped,
                };
                // REPLY_SIZE_MAX holds any probe reply; a failure would only shorten it.
                let _ = text::write_probe_reply(&mut self.reply, &reply);
                true
            }
            Request::Control { token, command } => {
                let expected = self.config.control_token.as_deref();
                if !control_allowed(source, token, self.config.host, expected) {
                    bump(&mut self.stats.text_forbidden);
                    let _ = text::write_err(&mut self.reply, "forbidden");
                } else {
                    match command {
                        Ok(command) => self.control(now, source, command),
                        Err(error) => {
                            let _ = text::write_err(&mut self.reply, error.reason());
                        }
                    }
                }
                // Empty when the answer comes later (`ctl transfer`), or once the node is
                // rebuilt (`ctl start`).
                !self.reply.is_empty() || self.start_requested
            }
            Request::Reply => false,
            Request::Unknown => {
                bump(&mut self.stats.text_unknown);
                let _ = text::write_err(&mut self.reply, "unknown-command");
                true
            }
        }
    }

    /// Sends the answer to the datagram just handled (to `reply_to`, if any) and whatever
    /// the node produced.
    pub(crate) fn after_datagram(
        &mut self,
        now: Instant,
        reply_to: Option<IpEndpoint>,
        out: &mut impl Outlet,
    ) {
        if self.start_requested {
            self.start_requested = false;
            self.restart(now);
        }
        if let Some(target) = reply_to {
            self.send_reply(out, target);
        }
        if let Some(target) = self.busy_to.take() {
            self.reply.clear();
            let _ = text::write_err(&mut self.reply, "busy");
            self.send_reply(out, target);
        }
        self.flush(now, out);
    }

    /// `ctl start` on a stopped node: a new node from the flash, answered `ok`; if the flash
    /// cannot be trusted, the node stays stopped (starting on it would be worse) and the
    /// answer is `err start-failed`.
    #[inline(never)]
    fn restart(&mut self, now: Instant) {
        self.restarts = self.restarts.wrapping_add(1);
        let seed = self.config.seed ^ self.restarts.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.reply.clear();
        match build_node(&self.config, self.store, seed, now) {
            Ok(node) => {
                self.node = node;
                self.stopped = false;
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Err(_) => {
                let _ = text::write_err(&mut self.reply, "start-failed");
            }
        }
    }

    /// Drains the node's frames and events.
    fn flush(&mut self, now: Instant, out: &mut impl Outlet) {
        self.transmit_all(now, out);
        self.handle_events(now, out);
    }

    /// Moves the node's events to [`Service::poll_event`]'s queue, answering
    /// `ctl transfer` requesters on the way.
    fn handle_events(&mut self, now: Instant, out: &mut impl Outlet) {
        for _ in 0..EVENTS_MAX {
            let Some(event) = self.node.poll_event() else {
                return;
            };
            match event {
                Event::TransferSent { to } => {
                    self.reply.clear();
                    let _ = text::write_ok(&mut self.reply, format_args!("to={to}"));
                    self.answer_transfer_waiters(out);
                }
                Event::TransferFailed => {
                    self.reply.clear();
                    let _ = text::write_err(&mut self.reply, "no-target");
                    self.answer_transfer_waiters(out);
                }
                Event::Changed(observed) if observed.raft != RaftRole::Leader => {
                    self.reply.clear();
                    self.write_not_goose(now);
                    self.answer_transfer_waiters(out);
                }
                Event::Changed(_) | Event::Failed | Event::Removed => {}
            }
            if self.events.is_full() {
                self.events.pop_front();
            }
            let _ = self.events.push_back(event);
        }
    }

    /// Sends `reply` to every `ctl transfer` requester and forgets them.
    fn answer_transfer_waiters(&mut self, out: &mut impl Outlet) {
        for waiter in core::mem::take(&mut self.transfer_waiters) {
            self.send_reply(out, waiter.source);
        }
    }

    /// Answers `err no-target` to requesters the core reported nothing for in time.
    fn check_transfer_deadlines(&mut self, out: &mut impl Outlet, now: Instant) {
        for waiter in core::mem::take(&mut self.transfer_waiters) {
            if now >= waiter.deadline {
                self.reply.clear();
                let _ = text::write_err(&mut self.reply, "no-target");
                self.send_reply(out, waiter.source);
            } else {
                // Fits: it came from there.
                let _ = self.transfer_waiters.push(waiter);
            }
        }
    }

    fn send_reply(&mut self, out: &mut impl Outlet, target: IpEndpoint) {
        if !out.send(self.reply.as_bytes(), target) {
            bump(&mut self.stats.send_errors);
        }
    }

    /// Drains the node's frames to their members' addresses, as the board reaches them.
    fn transmit_all(&mut self, now: Instant, out: &mut impl Outlet) {
        if self.stopped {
            return;
        }
        for _ in 0..TRANSMITS_PER_INPUT_MAX {
            let Some(transmit) = self.node.poll_transmit(now, &mut self.frame) else {
                return;
            };
            if self.partition.contains(transmit.target, transmit.addr) {
                bump(&mut self.stats.partition_out);
                continue;
            }
            let Some(target) = board_endpoint(transmit.addr, self.config.host) else {
                bump(&mut self.stats.unroutable);
                continue;
            };
            if !out.send(&self.frame[..transmit.size], target) {
                bump(&mut self.stats.send_errors);
            }
        }
    }

    /// Carries out one control command and writes its reply into `self.reply` (left empty
    /// when the reply comes later: `ctl transfer` waits for its handoff).
    #[inline(never)]
    fn control(&mut self, now: Instant, source: IpEndpoint, command: Command) {
        match command {
            Command::Stop => {
                self.stopped = true;
                let _ = text::write_ok_plain(&mut self.reply);
            }
            // Rebuilt in `after_datagram`, where the stack is shallow: the core's
            // `Node::new` needs a deep frame.
            Command::Start if self.stopped => self.start_requested = true,
            Command::Start => {
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Partition(peers) => {
                self.partition = peers;
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Heal => {
                self.partition = PeerList::new();
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Status => self.write_status(now),
            Command::Transfer(target) => {
                if self.goose_only(now) {
                    self.control_transfer(now, source, target);
                }
            }
            Command::Add { id, addr } => {
                if self.goose_only(now) {
                    self.control_add(now, id, addr);
                }
            }
            Command::Remove(id) => {
                if self.goose_only(now) {
                    self.control_remove(now, id);
                }
            }
        }
    }

    /// Whether this board is goose; if not, writes `err not-goose goose=… addr=…` naming
    /// the goose it follows (never itself: a leader that is not goose names none).
    fn goose_only(&mut self, now: Instant) -> bool {
        if !self.stopped && self.node.is_goose(now) {
            return true;
        }
        self.write_not_goose(now);
        false
    }

    fn write_not_goose(&mut self, now: Instant) {
        let id = self.node.id();
        let leader = (!self.stopped)
            .then(|| self.node.status(now).leader)
            .flatten()
            .filter(|&leader| leader != id);
        let addr = leader.and_then(|leader| {
            let members = self.node.members();
            members.iter().find(|m| m.id == leader).map(|m| m.addr)
        });
        let _ = text::write_not_goose(&mut self.reply, leader, addr);
    }

    /// `ctl transfer [<id>]` on the goose: starts the handoff; the requester is answered
    /// `ok to=<id>` once TimeoutNow is sent ([`Event::TransferSent`]).
    fn control_transfer(&mut self, now: Instant, source: IpEndpoint, target: Option<NodeId>) {
        match self.node.transfer(now, target) {
            Ok(()) => {
                if self.transfer_waiters.is_full() {
                    // Answered `err busy` once the socket is free again.
                    self.busy_to = Some(self.transfer_waiters.remove(0).source);
                }
                let wait = self.config.node.election_timeout_max + TRANSFER_REPLY_SLACK;
                // Room was made above.
                let _ = self.transfer_waiters.push(TransferWaiter {
                    source,
                    deadline: now + wait,
                });
            }
            Err(error) => {
                let reason = match error {
                    TransferError::NotLeader => return self.write_not_goose(now),
                    TransferError::UnknownNode => "unknown-node",
                    TransferError::NoTarget => "no-target",
                    TransferError::Busy => "busy",
                };
                let _ = text::write_err(&mut self.reply, reason);
            }
        }
    }

    /// `ctl add <id> <ip:port>` on the goose. Adding a member again at the same address is
    /// a no-op answered `ok`, so a joining node may repeat its request.
    fn control_add(&mut self, now: Instant, id: NodeId, addr: SocketAddr) {
        let members = self.node.members();
        if members.iter().any(|m| m.id == id && m.addr == addr) {
            let _ = text::write_ok_plain(&mut self.reply);
            return;
        }
        if members.iter().any(|m| m.id != id && m.addr == addr) {
            let _ = text::write_err(&mut self.reply, "address-in-use");
            return;
        }
        match self.node.propose(now, Payload::AddLearner { id, addr }) {
            Ok(_) => {
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Err(error) => self.write_propose_error(now, error, "members-full"),
        }
    }

    /// `ctl remove <id>` on the goose. Removing the last voter is refused: no majority
    /// would be left to commit anything, ever.
    fn control_remove(&mut self, now: Instant, id: NodeId) {
        let members = self.node.members();
        let Some(member) = members.iter().find(|m| m.id == id) else {
            let _ = text::write_err(&mut self.reply, "unknown-node");
            return;
        };
        if member.voter && members.iter().filter(|m| m.voter).count() == 1 {
            let _ = text::write_err(&mut self.reply, "last-voter");
            return;
        }
        match self.node.propose(now, Payload::Remove { id }) {
            Ok(_) => {
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Err(error) => self.write_propose_error(now, error, "unknown-node"),
        }
    }

    fn write_propose_error(&mut self, now: Instant, error: ProposeError, invalid: &str) {
        let reason = match error {
            ProposeError::NotLeader => return self.write_not_goose(now),
            // Too many uncommitted entries is as transient as a change in flight.
            ProposeError::Busy | ProposeError::LogFull => "busy",
            ProposeError::Invalid => invalid,
        };
        let _ = text::write_err(&mut self.reply, reason);
    }

    fn write_status(&mut self, now: Instant) {
        let status = self.node.status(now);
        let members = self.node.members();
        let mut all: Vec<NodeId, MEMBERS_MAX> = Vec::new();
        let mut voters: Vec<NodeId, MEMBERS_MAX> = Vec::new();
        let mut learners: Vec<NodeId, MEMBERS_MAX> = Vec::new();
        for member in members {
            // The node holds at most MEMBERS_MAX members: these pushes cannot fail.
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
        let mut counters: Vec<(&str, u64), COUNTERS_MAX> = Vec::new();
        for counter in self
            .node
            .stats()
            .counters()
            .into_iter()
            .chain(self.stats.counters())
        {
            let _ = counters.push(counter);
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
            counters: &counters,
        };
        if text::write_status(&mut self.reply, &reply).is_err() {
            // Cannot happen at REPLY_SIZE_MAX (tested); never send half a line.
            self.reply.clear();
            let _ = text::write_err(&mut self.reply, "reply-too-long");
        }
    }
}

/// Whether a peer frame comes from a partitioned member: identity is the frame's source id
/// (slirp rewrites addresses), mapped to the member's address for partitions named by
/// `ip:port`.
fn partitioned_source(partition: &PeerList, members: &[Member], frame: &[u8]) -> bool {
    if partition.is_empty() {
        return false;
    }
    let Ok((header, _)) = goose_core::wire::parse_header(frame) else {
        return false; // the core counts it
    };
    let Some(source) = NodeId::new(header.source) else {
        return false;
    };
    members
        .iter()
        .find(|member| member.id == source)
        .is_some_and(|member| partition.contains(member.id, member.addr))
}

/// Where the board sends a member's frames: its address, except that the host's loopback
/// is reached through `host`. `None` if the board cannot reach it.
pub(crate) fn board_endpoint(addr: SocketAddr, host: Option<Ipv4Addr>) -> Option<IpEndpoint> {
    let SocketAddr::V4(addr) = addr else {
        return None;
    };
    let ip = match addr.ip().is_loopback() {
        true => host?,
        false => *addr.ip(),
    };
    Some(IpEndpoint::new(IpAddress::Ipv4(ip), addr.port()))
}

/// Whether control from `source` with `token` is accepted: from `host` (the host's
/// loopback as the board sees it) always; from others only if the board has a token and
/// `token` matches it, compared in constant time (only the length can leak).
pub(crate) fn control_allowed(
    source: IpEndpoint,
    token: Option<&str>,
    host: Option<Ipv4Addr>,
    expected: Option<&str>,
) -> bool {
    let IpAddress::Ipv4(source) = source.addr;
    if Some(source) == host || IpAddr::V4(source).is_loopback() {
        return true;
    }
    match (expected, token) {
        (Some(expected), Some(given)) => expected.as_bytes().ct_eq(given.as_bytes()).into(),
        _ => false,
    }
}

/// Builds a node from the flash's state, or from the bootstrap membership if it holds none.
/// It grants no vote for a minimum election timeout (lease safety, see `goose_core::raft`).
/// Out of line: the core's `Node::new` takes a deep frame, which should exist only here.
#[inline(never)]
pub(crate) fn build_node<'a, F: NorFlash>(
    config: &BoardConfig,
    store: &'a RefCell<FlashStore<F>>,
    seed: u64,
    now: Instant,
) -> Result<BoardNode<'a, F>, BoardError> {
    let mut flash = store
        .try_borrow_mut()
        .map_err(|_| BoardError::StorageBusy)?;
    let saved = flash.load().map_err(BoardError::Storage)?;
    // `Node::new` decodes `saved` and never saves, so the borrow above is not contended.
    Node::new(
        &config.node,
        FlashStorage(store),
        saved,
        &config.members,
        seed,
        now,
    )
    .map_err(BoardError::Start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(text: &str) -> IpEndpoint {
        let addr: SocketAddr = text.parse().unwrap();
        board_endpoint(addr, None).unwrap()
    }

    #[test]
    fn loopback_members_are_reached_through_the_host() {
        let host = Some(BoardConfig::QEMU_HOST);
        let to = |text: &str| board_endpoint(text.parse().unwrap(), host);
        assert_eq!(to("127.0.0.1:9901"), Some(endpoint("10.0.2.2:9901")));
        assert_eq!(to("127.0.0.7:9902"), Some(endpoint("10.0.2.2:9902")));
        assert_eq!(to("192.0.2.9:9903"), Some(endpoint("192.0.2.9:9903")));
        assert_eq!(to("[::1]:9904"), None, "IPv6 is not built in");
        assert_eq!(board_endpoint("127.0.0.1:1".parse().unwrap(), None), None);
    }

    #[test]
    fn control_is_trusted_from_the_host_only_unless_the_token_matches() {
        let host = Some(BoardConfig::QEMU_HOST);
        let from_host = endpoint("10.0.2.2:40000");
        let other = endpoint("10.0.2.3:40000");
        assert!(control_allowed(from_host, None, host, None));
        assert!(control_allowed(from_host, None, host, Some("t")));
        assert!(!control_allowed(other, None, host, None));
        assert!(!control_allowed(other, Some("t"), host, None));
        assert!(!control_allowed(other, None, host, Some("t")));
        assert!(!control_allowed(other, Some("T"), host, Some("t")));
        assert!(!control_allowed(other, Some(""), host, Some("t")));
        assert!(control_allowed(other, Some("t"), host, Some("t")));
        assert!(
            !control_allowed(from_host, None, None, None),
            "no host, no trust"
        );
    }

    #[test]
    fn status_has_room_for_every_counter() {
        let core = goose_core::Stats::default().counters().len();
        assert_eq!(core + BoardStats::default().counters().len(), COUNTERS_MAX);
    }

    #[test]
    fn the_longest_status_fits_the_reply_buffer() {
        let ids = [NodeId::new(65535).unwrap(); MEMBERS_MAX];
        let counters = [("drop_partition_out", u64::MAX); COUNTERS_MAX];
        let reply = StatusReply {
            goose: true,
            raft: "candidate",
            id: ids[0],
            term: goose_core::Term(u64::MAX),
            leader: Some(ids[0]),
            stopped: false,
            commit: u64::MAX,
            members: &ids,
            voters: &ids,
            learners: &ids,
            lease_ms: u64::MAX,
            counters: &counters,
        };
        let mut out: String<{ 2 * REPLY_SIZE_MAX }> = String::new();
        text::write_status(&mut out, &reply).unwrap();
        assert!(out.ends_with('\n'));
        assert!(
            out.len() <= REPLY_SIZE_MAX,
            "{} > {REPLY_SIZE_MAX}",
            out.len()
        );
    }
}
