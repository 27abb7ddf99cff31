//! [`Board`]: one core node on one smoltcp UDP socket, answering exactly like the desktop
//! node (`node-std/src/event_loop.rs`), and its loop (STYLE.md, "the node-embedded loop").
//!
//! Each [`Board::poll`]:
//!
//! 1. moves one frame from the device into smoltcp (`poll_ingress_single`), then handles
//!    every datagram the socket holds at a fresh clock reading: peer frames (first byte
//!    ≥ 0x80) go to the node and its output is sent at once, text is answered at once; this
//!    repeats up to [`FRAMES_PER_POLL_MAX`] frames. One frame at a time keeps a burst of
//!    probes from overflowing the socket's small receive ring (EMBEDDED-NOTES.md);
//! 2. fires the node's timers if due, drains its frames to the socket;
//! 3. flushes the socket to the device and returns when to poll next.
//!
//! `ctl stop` keeps the node only to answer probes and `status`; nothing is fed to it or
//! taken from it until `ctl start`, which rebuilds it from the flash. Nothing here panics on
//! input from the network.

use core::cell::RefCell;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use embedded_storage::nor_flash::NorFlash;
use goose_core::limits::FRAME_SIZE_MAX;
use goose_core::text::{self, Command, PeerList, ProbeReply, Request, StatusReply};
use goose_core::{Config, Event, Instant, Member, Node, NodeId, RaftRole, StartError, Status};
use heapless::{String, Vec};
use smoltcp::iface::{
    Config as InterfaceConfig, Interface, PollIngressSingleResult, SocketHandle, SocketSet,
    SocketStorage,
};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Cidr};
use subtle::ConstantTimeEq;

use crate::store::{FlashStorage, FlashStore, LoadError};
use crate::{
    DATAGRAM_SIZE_MAX, FRAMES_PER_POLL_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX, REPLY_SIZE_MAX,
    TOKEN_SIZE_MAX, TRANSMITS_PER_INPUT_MAX, UDP_RX_BUFFER_SIZE, UDP_RX_DATAGRAMS_MAX,
    UDP_TX_BUFFER_SIZE, UDP_TX_DATAGRAMS_MAX,
};

/// A monotonic clock that counts all real time (see `goose_core::time`): on a board, a
/// timer tick counter; in tests, simulated time.
pub trait Clock {
    /// Now, in microseconds since an arbitrary epoch; never decreases.
    fn now(&self) -> Instant;
}

/// The core node as a board runs it: [`MEMBERS_MAX`] members, [`LOG_ENTRIES_MAX`] entries,
/// state on flash.
pub type BoardNode<'a, F> = Node<FlashStorage<'a, F>, MEMBERS_MAX, LOG_ENTRIES_MAX>;

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
    /// Datagrams longer than [`DATAGRAM_SIZE_MAX`] or truncated by the socket.
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

fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

/// Everything a board runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoardConfig {
    /// The core's configuration: id and timing.
    pub node: Config,
    /// The UDP port the board listens on; a launcher forwards the host's
    /// `127.0.0.1:<port>` to it.
    pub port: u16,
    /// The bootstrap membership as the host sees it, this board included (at
    /// `127.0.0.1:<port>` under QEMU). Used only while the flash holds no state.
    pub members: Vec<Member, MEMBERS_MAX>,
    /// Drives the election-timeout jitter (and smoltcp's); should differ per board and per
    /// boot.
    pub seed: u64,
    /// The board's Ethernet address.
    pub mac: [u8; 6],
    /// The board's IPv4 address.
    pub address: Ipv4Addr,
    /// The prefix length of the board's subnet.
    pub prefix_len: u8,
    /// The default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// How the board reaches the host's loopback, if it can (slirp: 10.0.2.2). Members at
    /// `127.x.x.x:<q>` are sent to `<host>:<q>`, and control from this address is trusted
    /// like loopback control on a desktop node.
    pub host: Option<Ipv4Addr>,
    /// Lets other sources send control as `ctl token=<T> …`.
    pub control_token: Option<String<TOKEN_SIZE_MAX>>,
}

impl BoardConfig {
    /// The board's address under QEMU's user networking (slirp's default guest address).
    pub const QEMU_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    /// slirp's subnet, 10.0.2.0/24.
    pub const QEMU_PREFIX_LEN: u8 = 24;
    /// slirp's gateway, which is also the host's loopback as the guest sees it.
    pub const QEMU_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

    /// A board under QEMU's user networking with slirp's defaults.
    ///
    /// # Errors
    /// [`BoardError::MembersOverCapacity`] for more than [`MEMBERS_MAX`] members.
    pub fn qemu(
        node: Config,
        port: u16,
        members: &[Member],
        seed: u64,
    ) -> Result<Self, BoardError> {
        Ok(Self {
            node,
            port,
            members: Vec::from_slice(members).map_err(|()| BoardError::MembersOverCapacity)?,
            seed,
            mac: Self::mac_for(node.id),
            address: Self::QEMU_ADDRESS,
            prefix_len: Self::QEMU_PREFIX_LEN,
            gateway: Some(Self::QEMU_HOST),
            host: Some(Self::QEMU_HOST),
            control_token: None,
        })
    }

    /// The MAC address of node `id`: locally administered, unicast, `02:00:00:00:hi:lo`.
    pub const fn mac_for(id: NodeId) -> [u8; 6] {
        let [high, low] = id.get().to_be_bytes();
        [0x02, 0, 0, 0, high, low]
    }
}

/// Why a board could not start (or restart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoardError {
    /// The flash could not be read.
    Storage(LoadError),
    /// The flash was in use (a node saving while another loads: a bug, not input).
    StorageBusy,
    /// The core refused the configuration or the saved state.
    Start(StartError),
    /// More members than [`MEMBERS_MAX`].
    MembersOverCapacity,
    /// smoltcp refused the address, route or port.
    Network,
}

impl core::fmt::Display for BoardError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Storage(error) => write!(f, "state flash refused: {error}"),
            Self::StorageBusy => f.write_str("state flash busy"),
            Self::Start(error) => write!(f, "cannot start: {error}"),
            Self::MembersOverCapacity => write!(f, "at most {MEMBERS_MAX} members"),
            Self::Network => f.write_str("network setup refused (address, route or port)"),
        }
    }
}

impl core::error::Error for BoardError {}

/// The socket's storage. Keep it in a `static` (about 8 KiB): the [`Board`] borrows it for
/// its whole life.
pub struct Buffers<'a> {
    sockets: [SocketStorage<'a>; 1],
    rx_metadata: [udp::PacketMetadata; UDP_RX_DATAGRAMS_MAX],
    rx_payload: [u8; UDP_RX_BUFFER_SIZE],
    tx_metadata: [udp::PacketMetadata; UDP_TX_DATAGRAMS_MAX],
    tx_payload: [u8; UDP_TX_BUFFER_SIZE],
}

impl Buffers<'_> {
    /// Empty buffers; `const` so a `static` needs no run-time initialisation.
    pub const fn new() -> Self {
        Self {
            sockets: [SocketStorage::EMPTY; 1],
            rx_metadata: [udp::PacketMetadata::EMPTY; UDP_RX_DATAGRAMS_MAX],
            rx_payload: [0; UDP_RX_BUFFER_SIZE],
            tx_metadata: [udp::PacketMetadata::EMPTY; UDP_TX_DATAGRAMS_MAX],
            tx_payload: [0; UDP_TX_BUFFER_SIZE],
        }
    }
}

impl Default for Buffers<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// A goose node on a smoltcp interface. See the module docs for its loop.
pub struct Board<'a, F: NorFlash> {
    config: BoardConfig,
    interface: Interface,
    sockets: SocketSet<'a>,
    udp: SocketHandle,
    store: &'a RefCell<FlashStore<F>>,
    node: BoardNode<'a, F>,
    /// `ctl start`s that rebuilt the node, mixed into its seed.
    restarts: u64,
    /// `ctl stop` was the last of stop/start.
    stopped: bool,
    partition: PeerList,
    stats: BoardStats,
    receive: [u8; DATAGRAM_SIZE_MAX],
    frame: [u8; FRAME_SIZE_MAX],
    reply: String<REPLY_SIZE_MAX>,
}

impl<'a, F: NorFlash> Board<'a, F> {
    /// Starts node `config.node.id` from the state on `store`'s flash (or, if it holds none,
    /// from `config.members`), with an interface on `device` and its socket in `buffers`.
    ///
    /// # Errors
    /// See [`BoardError`]: a flash that cannot be read, or holds a state the core refuses,
    /// stops the board rather than starting it empty.
    pub fn new<D: Device + ?Sized>(
        config: BoardConfig,
        device: &mut D,
        buffers: &'a mut Buffers<'a>,
        store: &'a RefCell<FlashStore<F>>,
        now: Instant,
    ) -> Result<Self, BoardError> {
        let node = build_node(&config, store, config.seed, now)?;
        let hardware = HardwareAddress::Ethernet(EthernetAddress(config.mac));
        let mut interface_config = InterfaceConfig::new(hardware);
        interface_config.random_seed = config.seed;
        let mut interface = Interface::new(interface_config, device, timestamp(now));
        let cidr = IpCidr::Ipv4(Ipv4Cidr::new(config.address, config.prefix_len));
        let mut added = Err(BoardError::Network);
        interface.update_ip_addrs(|addresses| {
            added = addresses.push(cidr).map_err(|_| BoardError::Network);
        });
        added?;
        if let Some(gateway) = config.gateway {
            interface
                .routes_mut()
                .add_default_ipv4_route(gateway)
                .map_err(|_| BoardError::Network)?;
        }
        let Buffers {
            sockets,
            rx_metadata,
            rx_payload,
            tx_metadata,
            tx_payload,
        } = buffers;
        let mut socket = udp::Socket::new(
            udp::PacketBuffer::new(&mut rx_metadata[..], &mut rx_payload[..]),
            udp::PacketBuffer::new(&mut tx_metadata[..], &mut tx_payload[..]),
        );
        socket.bind(config.port).map_err(|_| BoardError::Network)?;
        let mut sockets = SocketSet::new(&mut sockets[..]);
        let udp = sockets.add(socket);
        Ok(Self {
            config,
            interface,
            sockets,
            udp,
            store,
            node,
            restarts: 0,
            stopped: false,
            partition: PeerList::new(),
            stats: BoardStats::default(),
            receive: [0; DATAGRAM_SIZE_MAX],
            frame: [0; FRAME_SIZE_MAX],
            reply: String::new(),
        })
    }

    // --- Getters -------------------------------------------------------------------------

    /// What the board runs with.
    pub fn config(&self) -> &BoardConfig {
        &self.config
    }

    /// The core node (while stopped: the node as it was when stopped).
    pub fn node(&self) -> &BoardNode<'a, F> {
        &self.node
    }

    /// Whether `ctl stop` holds the board.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Whether the board is goose at `now` (never while stopped).
    pub fn is_goose(&self, now: Instant) -> bool {
        !self.stopped && self.node.is_goose(now)
    }

    /// The node's status at `now`, as a probe reports it (a stopped board is no goose).
    pub fn status(&self, now: Instant) -> Status {
        let mut status = self.node.status(now);
        status.goose &= !self.stopped;
        status
    }

    /// The board's own drop counters.
    pub fn stats(&self) -> &BoardStats {
        &self.stats
    }

    // --- The loop ------------------------------------------------------------------------

    /// Handles what arrived on `device`, fires due timers, sends what is due, and returns
    /// the instant it next has work without new frames (`None`: only a frame can give it
    /// work). Polling earlier is harmless; a board with no frame interrupt polls on every
    /// tick.
    pub fn poll<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
        clock: &impl Clock,
    ) -> Option<Instant> {
        for _ in 0..FRAMES_PER_POLL_MAX {
            let now = clock.now();
            let ingress =
                self.interface
                    .poll_ingress_single(timestamp(now), device, &mut self.sockets);
            self.receive_all(device, clock);
            if ingress == PollIngressSingleResult::None {
                break;
            }
        }
        let now = clock.now();
        if !self.stopped
            && self
                .node
                .poll_timeout()
                .is_some_and(|deadline| deadline <= now)
        {
            self.node.handle_timeout(now);
        }
        self.transmit_all(device, now);
        self.interface
            .poll_egress(timestamp(now), device, &mut self.sockets);
        self.poll_at(now)
    }

    /// The next event of the node (role, term or goose changes; [`Event::Failed`] when its
    /// storage failed and it stopped for good: halt the board then).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.node.poll_event()
    }

    fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let network = self
            .interface
            .poll_at(timestamp(now), &self.sockets)
            .map(|at| Instant::from_micros(u64::try_from(at.total_micros()).unwrap_or(0)));
        let node = if self.stopped {
            None
        } else {
            self.node.poll_timeout()
        };
        match (network, node) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn receive_all<D: Device + ?Sized>(&mut self, device: &mut D, clock: &impl Clock) {
        // The socket holds at most UDP_RX_DATAGRAMS_MAX datagrams.
        for _ in 0..UDP_RX_DATAGRAMS_MAX {
            let socket = self.sockets.get_mut::<udp::Socket<'_>>(self.udp);
            let (size, source) = match socket.recv() {
                Ok((payload, metadata)) => match self.receive.get_mut(..payload.len()) {
                    Some(receive) => {
                        receive.copy_from_slice(payload);
                        (payload.len(), metadata.endpoint)
                    }
                    None => {
                        bump(&mut self.stats.receive_errors);
                        continue;
                    }
                },
                Err(udp::RecvError::Exhausted) => return,
                Err(udp::RecvError::Truncated) => {
                    bump(&mut self.stats.receive_errors);
                    continue;
                }
            };
            // A fresh reading per datagram: a probe's answer reflects the lease now.
            self.handle_datagram(device, clock.now(), source, size);
        }
    }

    fn handle_datagram<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
        now: Instant,
        source: IpEndpoint,
        size: usize,
    ) {
        match text::parse(&self.receive[..size]) {
            Request::Binary => {
                if self.stopped {
                    bump(&mut self.stats.stopped_in);
                } else if self.partitioned_source(size) {
                    bump(&mut self.stats.partition_in);
                } else {
                    self.node.handle_frame(now, &self.receive[..size]);
                    self.transmit_all(device, now);
                }
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
                self.reply.clear();
                // REPLY_SIZE_MAX holds any probe reply; a failure would only shorten it.
                let _ = text::write_probe_reply(&mut self.reply, &reply);
                self.send_reply(device, now, source);
            }
            Request::Control { token, command } => {
                let allowed = control_allowed(
                    source,
                    token,
                    self.config.host,
                    self.config.control_token.as_deref(),
                );
                self.reply.clear();
                match (allowed, command) {
                    (true, Ok(command)) => self.control(now, command),
                    (true, Err(error)) => {
                        let _ = text::write_err(&mut self.reply, error.reason());
                    }
                    (false, _) => {
                        bump(&mut self.stats.text_forbidden);
                        let _ = text::write_err(&mut self.reply, "forbidden");
                    }
                }
                self.send_reply(device, now, source);
            }
            Request::Reply => {}
            Request::Unknown => {
                bump(&mut self.stats.text_unknown);
                self.reply.clear();
                let _ = text::write_err(&mut self.reply, "unknown-command");
                self.send_reply(device, now, source);
            }
        }
    }

    /// Whether a peer frame comes from a partitioned member: identity is the frame's source
    /// id (slirp rewrites addresses), mapped to the member's address for partitions named
    /// by `ip:port`.
    fn partitioned_source(&self, size: usize) -> bool {
        if self.partition.is_empty() {
            return false;
        }
        let Ok((header, _)) = goose_core::wire::parse_header(&self.receive[..size]) else {
            return false; // the core counts it
        };
        let Some(source) = NodeId::new(header.source) else {
            return false;
        };
        self.node
            .members()
            .iter()
            .find(|member| member.id == source)
            .is_some_and(|member| self.partition.contains(member.id, member.addr))
    }

    /// Carries out one control command and writes its reply into `self.reply`.
    fn control(&mut self, now: Instant, command: Command) {
        match command {
            Command::Stop => {
                self.stopped = true;
                let _ = text::write_ok_plain(&mut self.reply);
            }
            Command::Start => {
                if self.stopped {
                    self.restarts = self.restarts.wrapping_add(1);
                    let seed = self.config.seed ^ self.restarts.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    match build_node(&self.config, self.store, seed, now) {
                        Ok(node) => {
                            self.node = node;
                            self.stopped = false;
                            let _ = text::write_ok_plain(&mut self.reply);
                        }
                        // Stays stopped: starting on a state it cannot trust would be worse.
                        Err(_) => {
                            let _ = text::write_err(&mut self.reply, "start-failed");
                        }
                    }
                } else {
                    let _ = text::write_ok_plain(&mut self.reply);
                }
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
            Command::Transfer(_) | Command::Add { .. } | Command::Remove(_) => {
                if self.stopped || !self.node.is_goose(now) {
                    let leader = self.node.status(now).leader.filter(|_| !self.stopped);
                    let addr = leader.and_then(|leader| {
                        let members = self.node.members();
                        members.iter().find(|m| m.id == leader).map(|m| m.addr)
                    });
                    let _ = text::write_not_goose(&mut self.reply, leader, addr);
                } else {
                    let _ = text::write_err(&mut self.reply, "not-implemented");
                }
            }
        }
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

    fn send_reply<D: Device + ?Sized>(&mut self, device: &mut D, now: Instant, target: IpEndpoint) {
        let mut link = Link {
            interface: &mut self.interface,
            sockets: &mut self.sockets,
            udp: self.udp,
            stats: &mut self.stats,
        };
        link.send(device, now, self.reply.as_bytes(), target);
    }

    /// Drains the node's frames to their members' addresses, as the board reaches them.
    fn transmit_all<D: Device + ?Sized>(&mut self, device: &mut D, now: Instant) {
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
            let mut link = Link {
                interface: &mut self.interface,
                sockets: &mut self.sockets,
                udp: self.udp,
                stats: &mut self.stats,
            };
            link.send(device, now, &self.frame[..transmit.size], target);
        }
    }
}

/// The parts of a board that sending touches, borrowed apart from the buffer being sent.
struct Link<'b, 'a> {
    interface: &'b mut Interface,
    sockets: &'b mut SocketSet<'a>,
    udp: SocketHandle,
    stats: &'b mut BoardStats,
}

impl Link<'_, '_> {
    /// Queues `data` for `target`; if the socket is full, flushes it to the device and tries
    /// once more, then counts a send error (the datagram is lost, as UDP may lose it).
    fn send<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
        now: Instant,
        data: &[u8],
        target: IpEndpoint,
    ) {
        for attempt in 0..2 {
            let socket = self.sockets.get_mut::<udp::Socket<'_>>(self.udp);
            match socket.send_slice(data, target) {
                Ok(()) => return,
                Err(udp::SendError::BufferFull) if attempt == 0 => {
                    self.interface
                        .poll_egress(timestamp(now), device, self.sockets);
                }
                Err(_) => break,
            }
        }
        bump(&mut self.stats.send_errors);
    }
}

/// Builds a node from the flash's state, or from the bootstrap membership if it holds none.
/// It grants no vote for a minimum election timeout (lease safety, see `goose_core::raft`).
fn build_node<'a, F: NorFlash>(
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

/// The core's instant as smoltcp's (both microseconds on the same clock).
fn timestamp(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(now.micros()).unwrap_or(i64::MAX))
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
