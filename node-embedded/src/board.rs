//! [`Board`]: one core node on one smoltcp UDP socket, and its loop. What the node answers (probes, `ctl`, stop/start, partitions,
//! transfer requesters) is the core's `goose_core::service`, the very code the desktop node
//! runs; this file is the socket, the flash and the board's address translation.
//!
//! Each [`Board::poll`] drives the service in the order its docs give:
//!
//! 1. moves one frame from the device into smoltcp (`poll_ingress_single`), then, for
//!    every datagram the socket holds, at a fresh clock reading: `handle_datagram` where
//!    the datagram lies in the socket's ring, releases it, then `flush` (the answer, the
//!    node's frames, late answers) into the socket; this repeats up to
//!    [`FRAMES_PER_POLL_MAX`] frames. One frame at a time keeps a burst of probes from
//!    overflowing the socket's small receive ring (smoltcp moves every pending frame into
//!    the socket at once);
//! 2. `handle_timeout`, `flush`;
//! 3. flushes the socket to the device and returns when to poll next.
//!
//! [`Board::poll_event`] is the service's: the events it acted on, for the program.
//!
//! `ctl stop` keeps the node only to answer probes and `status`; nothing is fed to it or
//! taken from it until `ctl start`, which rebuilds it from the flash. Nothing here panics on
//! input from the network.

use core::cell::RefCell;
use core::net::{IpAddr, Ipv4Addr, SocketAddr};

use embedded_storage::nor_flash::NorFlash;
use goose_core::ratelimit::EMBEDDED_RATE_SOURCES_MAX;
use goose_core::service::{Handled, Host, Origin, Outlet, Service, ServiceStats};
use goose_core::{
    Checked, Config, Event, Instant, Member, Node, NodeId, StartError, Status, Transmit,
};
use heapless::{String, Vec};
use smoltcp::iface::{
    Config as InterfaceConfig, Interface, PollIngressSingleResult, SocketHandle, SocketSet,
    SocketStorage,
};
use smoltcp::phy::Device;
use smoltcp::socket::udp;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Cidr};

use crate::store::{EpochError, FlashStorage, FlashStore, LoadError};
use crate::{
    FRAMES_PER_POLL_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX, PARTITION_PEERS_MAX, REPLY_SIZE_MAX,
    TOKEN_SIZE_MAX, UDP_RX_BUFFER_SIZE, UDP_RX_DATAGRAMS_MAX, UDP_TX_BUFFER_SIZE,
    UDP_TX_DATAGRAMS_MAX,
};
use goose_core::auth::key::ClusterKey;

/// A monotonic clock that counts all real time (see `goose_core::time`), stalls included:
/// on a board, a free-running counter read at each call, never ticks counted by an
/// interrupt (a stalled or masked one loses them); under QEMU, the host's clock; in
/// tests, simulated time.
pub trait Clock {
    /// Now, in microseconds since an arbitrary epoch; never decreases.
    fn now(&self) -> Instant;
}

/// The core node as a board runs it: [`MEMBERS_MAX`] members, [`LOG_ENTRIES_MAX`] entries,
/// state on flash.
pub type BoardNode<'a, F> = Node<FlashStorage<'a, F>, MEMBERS_MAX, LOG_ENTRIES_MAX>;

/// Everything a board runs with.
#[derive(Clone, Debug)]
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
    /// The flock's cluster key: with one, every peer frame is sealed and must open, and
    /// control must be signed (`goose_core::auth`); the token and the trusted host no
    /// longer matter. Each start then advances the boot epoch on the flash
    /// ([`FlashStore::next_epoch`]) before the board sends anything. The board moves the
    /// key into its service: [`Board::config`] shows `None` here.
    pub key: Option<ClusterKey>,
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
            key: None,
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
    /// The boot epoch could not be advanced (a board with a key only).
    Epoch(EpochError),
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
            // Each message a piece at a time, numbers by the core's digit writer: a board
            // links no more of `core::fmt` than its errors' own words need.
            Self::Storage(error) => {
                f.write_str("state flash refused: ")?;
                core::fmt::Display::fmt(error, f)
            }
            Self::Epoch(error) => {
                f.write_str("state flash refused: ")?;
                core::fmt::Display::fmt(error, f)
            }
            Self::StorageBusy => f.write_str("state flash busy"),
            Self::Start(error) => {
                f.write_str("cannot start: ")?;
                core::fmt::Display::fmt(error, f)
            }
            Self::MembersOverCapacity => {
                f.write_str("at most ")?;
                goose_core::text::write_decimal(f, MEMBERS_MAX as u64)?;
                f.write_str(" members")
            }
            Self::Network => f.write_str("network setup refused (address, route or port)"),
        }
    }
}

impl core::error::Error for BoardError {}

impl From<StartError> for BoardError {
    fn from(error: StartError) -> Self {
        Self::Start(error)
    }
}

/// The socket's slot and packet metadata (a few hundred bytes). Keep it in a `static`: the
/// [`Board`] borrows it for its whole life.
pub struct Buffers<'a> {
    sockets: [SocketStorage<'a>; 1],
    rx_metadata: [udp::PacketMetadata; UDP_RX_DATAGRAMS_MAX],
    tx_metadata: [udp::PacketMetadata; UDP_TX_DATAGRAMS_MAX],
}

impl Buffers<'_> {
    /// Empty buffers; `const` so a `static` needs no run-time initialisation.
    pub const fn new() -> Self {
        Self {
            sockets: [SocketStorage::EMPTY; 1],
            rx_metadata: [udp::PacketMetadata::EMPTY; UDP_RX_DATAGRAMS_MAX],
            tx_metadata: [udp::PacketMetadata::EMPTY; UDP_TX_DATAGRAMS_MAX],
        }
    }
}

impl Default for Buffers<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// The socket's datagram bytes (about 7 KiB). Kept apart from [`Buffers`] because it is all
/// zeros: a `static` of it costs RAM (`.bss`) but no flash, where [`Buffers`]' non-zero
/// `None`s would put the whole lot in `.data`, copied from flash at boot.
pub struct Payloads {
    rx: [u8; UDP_RX_BUFFER_SIZE],
    tx: [u8; UDP_TX_BUFFER_SIZE],
}

impl Payloads {
    /// Zeroed payload buffers.
    pub const fn new() -> Self {
        Self {
            rx: [0; UDP_RX_BUFFER_SIZE],
            tx: [0; UDP_TX_BUFFER_SIZE],
        }
    }
}

impl Default for Payloads {
    fn default() -> Self {
        Self::new()
    }
}

/// What [`Board::prepare`] made ready for [`Board::build`].
pub struct Prepared<'a, F: NorFlash> {
    net: Net<'a>,
    config: BoardConfig,
    store: &'a RefCell<FlashStore<F>>,
    /// The cluster key and this boot's epoch.
    key: Option<(ClusterKey, u32)>,
}

/// The board's counters in `ctl status`, after the core node's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoardStats {
    /// The text protocol's counters, named and ordered as on the desktop node.
    pub service: ServiceStats,
    /// Peer frames for an address the board cannot reach (IPv6, or loopback without a
    /// configured host).
    pub drop_unroutable: u64,
}

/// The core's text-protocol service at the board's capacities.
type BoardService<'a, F> = Service<
    FlashStorage<'a, F>,
    IpEndpoint,
    MEMBERS_MAX,
    LOG_ENTRIES_MAX,
    PARTITION_PEERS_MAX,
    REPLY_SIZE_MAX,
    ClusterKey,
    EMBEDDED_RATE_SOURCES_MAX,
>;

/// A goose node on a smoltcp interface. See the module docs for its loop.
pub struct Board<'a, F: NorFlash> {
    net: Net<'a>,
    /// The node and its text protocol (`goose_core::service`, as on the desktop node).
    service: BoardService<'a, F>,
    config: BoardConfig,
    store: &'a RefCell<FlashStore<F>>,
    /// `ctl start`s that rebuilt the node, mixed into its seed.
    restarts: u64,
    /// [`BoardStats::drop_unroutable`].
    drop_unroutable: u64,
    /// This boot's epoch, with a cluster key.
    epoch: Option<u32>,
}

/// The interface and its one socket.
struct Net<'a> {
    interface: Interface,
    sockets: SocketSet<'a>,
    udp: SocketHandle,
}

impl<'a, F: NorFlash> Board<'a, F> {
    /// Starts node `config.node.id` from the state on `store`'s flash (or, if it holds none,
    /// from `config.members`), with an interface on `device` and its socket in `buffers` and
    /// `payloads`: [`check_node`], [`Board::prepare`] and [`Board::build`] in turn. A board
    /// with a small stack calls the three itself, each result where it keeps it (the
    /// firmware does): here the first two are copied out of their `Result`s.
    ///
    /// # Errors
    /// See [`BoardError`]: a flash that cannot be read, or holds a state the core refuses,
    /// stops the board rather than starting it empty.
    pub fn new<D: Device + ?Sized>(
        config: BoardConfig,
        device: &mut D,
        buffers: &'a mut Buffers<'a>,
        payloads: &'a mut Payloads,
        store: &'a RefCell<FlashStore<F>>,
        now: Instant,
    ) -> Result<Self, BoardError> {
        let checked = check_node(&config, store)?;
        let prepared = Self::prepare(config, device, buffers, payloads, store, now)?;
        Ok(Self::build(prepared, &checked, now))
    }

    /// What can fail in a board's start besides its node ([`check_node`]): the interface
    /// and its socket, and with a cluster key the boot epoch, advanced on the flash before
    /// anything is sent.
    ///
    /// # Errors
    /// [`BoardError::Epoch`] if the epoch cannot be advanced, [`BoardError::Network`] if
    /// smoltcp refuses the address, route or port.
    #[inline(never)]
    pub fn prepare<D: Device + ?Sized>(
        mut config: BoardConfig,
        device: &mut D,
        buffers: &'a mut Buffers<'a>,
        payloads: &'a mut Payloads,
        store: &'a RefCell<FlashStore<F>>,
        now: Instant,
    ) -> Result<Prepared<'a, F>, BoardError> {
        let net = Net::new(&config, device, buffers, payloads, now)?;
        let key = match config.key.take() {
            Some(key) => {
                // Durable before the first frame: a boot that reused an epoch would have its
                // frames dropped as replays (goose_core::auth).
                let epoch = store
                    .try_borrow_mut()
                    .map_err(|_| BoardError::StorageBusy)?
                    .next_epoch()
                    .map_err(BoardError::Epoch)?;
                Some((key, epoch))
            }
            None => None,
        };
        Ok(Prepared {
            net,
            config,
            store,
            key,
        })
    }

    /// The board from `prepared`, around the node `checked` describes, which cannot fail.
    /// The board is built where the caller keeps this call's result, and the node right
    /// inside it ([`Service::starting`]): no copy of either on the stack.
    #[inline(never)]
    pub fn build(
        prepared: Prepared<'a, F>,
        checked: &Checked<MEMBERS_MAX, LOG_ENTRIES_MAX>,
        now: Instant,
    ) -> Self {
        let Prepared {
            net,
            config,
            store,
            key,
        } = prepared;
        let (seed, epoch) = (config.seed, key.as_ref().map(|&(_, epoch)| epoch));
        Self {
            net,
            service: Service::starting(
                move || Node::start(FlashStorage(store), checked, seed, now),
                key,
            ),
            config,
            store,
            restarts: 0,
            drop_unroutable: 0,
            epoch,
        }
    }

    // --- Getters -------------------------------------------------------------------------

    /// What the board runs with.
    pub fn config(&self) -> &BoardConfig {
        &self.config
    }

    /// This boot's epoch if the board has a cluster key (peer frames are sealed with it).
    pub fn epoch(&self) -> Option<u32> {
        self.epoch
    }

    /// The core node (while stopped: the node as it was when stopped).
    pub fn node(&self) -> &BoardNode<'a, F> {
        self.service.node()
    }

    /// Whether `ctl stop` holds the board.
    pub fn is_stopped(&self) -> bool {
        self.service.is_stopped()
    }

    /// Whether the board is goose at `now` (never while stopped).
    pub fn is_goose(&self, now: Instant) -> bool {
        self.service.is_goose(now)
    }

    /// The node's status at `now`, as a probe reports it (a stopped board is no goose).
    pub fn status(&self, now: Instant) -> Status {
        self.service.status(now)
    }

    /// The board's counters (the core node's are in [`Board::node`]).
    pub fn stats(&self) -> BoardStats {
        BoardStats {
            service: *self.service.stats(),
            drop_unroutable: self.drop_unroutable,
        }
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
            let ingress = self.net.interface.poll_ingress_single(
                timestamp(now),
                device,
                &mut self.net.sockets,
            );
            self.receive_all(device, clock);
            if ingress == PollIngressSingleResult::None {
                break;
            }
        }
        let now = clock.now();
        let mut out = NetOutlet {
            net: &mut self.net,
            device: &mut *device,
            now,
            host: self.config.host,
            drop_unroutable: &mut self.drop_unroutable,
        };
        self.service.handle_timeout(now);
        // At TRANSMITS_PER_CALL_MAX the rest goes at the next poll.
        let _ = self.service.flush(now, &mut out);
        self.net
            .interface
            .poll_egress(timestamp(now), device, &mut self.net.sockets);
        let network = self
            .net
            .interface
            .poll_at(timestamp(now), &self.net.sockets)
            .map(|at| Instant::from_micros(u64::try_from(at.total_micros()).unwrap_or(0)));
        [network, self.service.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// The next event of the node, oldest first, once the service has acted on it: role,
    /// term or goose changes to log; [`Event::Failed`] when its storage failed and it
    /// stopped for good, and [`Event::Removed`] when it left the flock: halt the board then
    /// (the desktop node exits 1 and 0). Up to `goose_core::limits::EVENTS_MAX` wait; older
    /// ones are dropped and counted (`drop_events_unpolled`).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.service.poll_event()
    }

    /// Handles every datagram in the socket, each at a fresh clock reading (a probe's answer
    /// reflects the lease at the moment it is sent), where it lies in the socket's ring;
    /// answers once the socket has it back.
    fn receive_all<D: Device + ?Sized>(&mut self, device: &mut D, clock: &impl Clock) {
        // The socket holds at most UDP_RX_DATAGRAMS_MAX datagrams.
        for _ in 0..UDP_RX_DATAGRAMS_MAX {
            let now = clock.now();
            let socket = self.net.sockets.get_mut::<udp::Socket<'_>>(self.net.udp);
            let (datagram, metadata) = match socket.recv() {
                Ok(received) => received,
                Err(udp::RecvError::Exhausted) => return,
                Err(udp::RecvError::Truncated) => {
                    let errors = &mut self.service.stats_mut().receive_errors;
                    *errors = errors.saturating_add(1);
                    continue;
                }
            };
            let source = metadata.endpoint;
            let origin = Origin {
                addr: source,
                ip: source.addr.into(),
                trusted: source_trusted(source, self.config.host),
            };
            let unroutable = [("drop_unroutable", self.drop_unroutable)];
            let host = Host {
                control_token: self.config.control_token.as_deref(),
                counters: &unroutable,
                fields: &[],
            };
            let handled = self.service.handle_datagram(now, origin, &host, datagram);
            if handled == Handled::Start {
                self.restart(now);
            }
            // The datagram's borrow of the socket's ring ends here: the socket can send.
            let mut out = NetOutlet {
                net: &mut self.net,
                device: &mut *device,
                now,
                host: self.config.host,
                drop_unroutable: &mut self.drop_unroutable,
            };
            // At TRANSMITS_PER_CALL_MAX the rest goes with the next flush.
            let _ = self.service.flush(now, &mut out);
        }
    }

    /// `ctl start` on a stopped board: the node started again from the flash, with a fresh
    /// seed, in place of the stopped one ([`Node::restart`]). Out of line, where the stack
    /// is shallow: checking the flash's state takes a deep frame.
    #[inline(never)]
    fn restart(&mut self, now: Instant) {
        self.restarts = self.restarts.wrapping_add(1);
        let seed = self.config.seed ^ self.restarts.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        match &check_node(&self.config, self.store) {
            Ok(checked) => {
                let store = self.store;
                self.service
                    .start_with(|node| node.restart(FlashStorage(store), checked, seed, now));
            }
            Err(_) => self.service.start_failed(),
        }
    }
}

impl<'a> Net<'a> {
    fn new<D: Device + ?Sized>(
        config: &BoardConfig,
        device: &mut D,
        buffers: &'a mut Buffers<'a>,
        payloads: &'a mut Payloads,
        now: Instant,
    ) -> Result<Self, BoardError> {
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
            tx_metadata,
        } = buffers;
        let mut socket = udp::Socket::new(
            udp::PacketBuffer::new(&mut rx_metadata[..], &mut payloads.rx[..]),
            udp::PacketBuffer::new(&mut tx_metadata[..], &mut payloads.tx[..]),
        );
        socket.bind(config.port).map_err(|_| BoardError::Network)?;
        let mut sockets = SocketSet::new(&mut sockets[..]);
        let udp = sockets.add(socket);
        Ok(Self {
            interface,
            sockets,
            udp,
        })
    }
}

/// Sends through the socket, flushing it to the device when it is full.
struct NetOutlet<'n, 'a, D: Device + ?Sized> {
    net: &'n mut Net<'a>,
    device: &'n mut D,
    now: Instant,
    /// How the board reaches the host's loopback ([`BoardConfig::host`]).
    host: Option<Ipv4Addr>,
    /// [`BoardStats::drop_unroutable`].
    drop_unroutable: &'n mut u64,
}

impl<D: Device + ?Sized> NetOutlet<'_, '_, D> {
    /// Queues `data` for `target`; if the socket is full, flushes it to the device and tries
    /// once more.
    fn send(&mut self, data: &[u8], target: IpEndpoint) -> bool {
        for attempt in 0..2 {
            let socket = self.net.sockets.get_mut::<udp::Socket<'_>>(self.net.udp);
            match socket.send_slice(data, target) {
                Ok(()) => return true,
                Err(udp::SendError::BufferFull) if attempt == 0 => {
                    self.net.interface.poll_egress(
                        timestamp(self.now),
                        self.device,
                        &mut self.net.sockets,
                    );
                }
                Err(_) => break,
            }
        }
        false
    }
}

impl<D: Device + ?Sized> Outlet<IpEndpoint> for NetOutlet<'_, '_, D> {
    /// Sends a peer frame to the member's address as the board reaches it; one it cannot
    /// reach is counted `drop_unroutable`.
    fn send_frame(&mut self, frame: &[u8], transmit: &Transmit) -> bool {
        let Some(target) = board_endpoint(transmit.addr, self.host) else {
            *self.drop_unroutable = self.drop_unroutable.saturating_add(1);
            return true;
        };
        self.send(frame, target)
    }

    fn send_reply(&mut self, reply: &[u8], target: IpEndpoint) -> bool {
        self.send(reply, target)
    }
}

/// The core's instant as smoltcp's (both microseconds on the same clock).
fn timestamp(now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(i64::try_from(now.micros()).unwrap_or(i64::MAX))
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

/// Whether control from `source` needs no token: from `host` (the host's loopback as the
/// board sees it) or the board's own loopback. Others need the token
/// (`goose_core::service::control_allowed`).
pub(crate) fn source_trusted(source: IpEndpoint, host: Option<Ipv4Addr>) -> bool {
    let IpAddress::Ipv4(source) = source.addr;
    Some(source) == host || IpAddr::V4(source).is_loopback()
}

/// Checks the flash's state, or if it holds none the bootstrap membership, for a node
/// ([`Node::check`]; [`Node::start`] builds it). The node grants no vote for a minimum
/// election timeout (lease safety, see `goose_core::raft`). Out of line: decoding the
/// state takes a deep frame, which should exist only here.
#[inline(never)]
pub fn check_node<F: NorFlash>(
    config: &BoardConfig,
    store: &RefCell<FlashStore<F>>,
) -> Result<Checked<MEMBERS_MAX, LOG_ENTRIES_MAX>, BoardError> {
    let mut flash = store
        .try_borrow_mut()
        .map_err(|_| BoardError::StorageBusy)?;
    let saved = flash.load().map_err(BoardError::Storage)?;
    Node::<FlashStorage<'_, F>, MEMBERS_MAX, LOG_ENTRIES_MAX>::check(
        &config.node,
        saved,
        &config.members,
    )
}

#[cfg(test)]
mod tests {
    use goose_core::service::{control_allowed, STATUS_COUNTERS_MAX};
    use goose_core::text::{self, StatusReply};

    use super::*;

    fn endpoint(text: &str) -> IpEndpoint {
        let addr: SocketAddr = text.parse().unwrap();
        board_endpoint(addr, None).unwrap()
    }

    #[test]
    fn errors_read_as_the_format_machinery_wrote_them() {
        extern crate std;
        use std::string::ToString;

        use goose_core::{ConfigError, StorageError};

        use crate::store::{EpochError, LoadError};

        let start = StartError::Config(ConfigError::NoLease);
        for (error, expected) in [
            (
                BoardError::Storage(LoadError::Io),
                std::format!("state flash refused: {}", LoadError::Io),
            ),
            (
                BoardError::Epoch(EpochError::Corrupt),
                std::format!("state flash refused: {}", EpochError::Corrupt),
            ),
            (
                BoardError::Start(start),
                std::format!("cannot start: {start}"),
            ),
            (
                BoardError::MembersOverCapacity,
                std::format!("at most {MEMBERS_MAX} members"),
            ),
        ] {
            assert_eq!(error.to_string(), expected);
        }
        for (error, words) in [
            (
                EpochError::Load(LoadError::Corrupt),
                "boot epoch unreadable",
            ),
            (EpochError::Save(StorageError::Io), "boot epoch not saved"),
        ] {
            let cause = match error {
                EpochError::Load(cause) => cause.to_string(),
                EpochError::Save(cause) => cause.to_string(),
                _ => unreachable!(),
            };
            assert_eq!(error.to_string(), std::format!("{words}: {cause}"));
        }
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
        let allowed = |source: IpEndpoint, token, host, expected| {
            control_allowed(source_trusted(source, host), token, expected)
        };
        let from_host = endpoint("10.0.2.2:40000");
        let other = endpoint("10.0.2.3:40000");
        assert!(allowed(from_host, None, host, None));
        assert!(allowed(from_host, None, host, Some("t")));
        assert!(!allowed(other, None, host, None));
        assert!(!allowed(other, Some("t"), host, None));
        assert!(!allowed(other, None, host, Some("t")));
        assert!(!allowed(other, Some("T"), host, Some("t")));
        assert!(!allowed(other, Some(""), host, Some("t")));
        assert!(allowed(other, Some("t"), host, Some("t")));
        assert!(!allowed(from_host, None, None, None), "no host, no trust");
    }

    /// The core's counters, the service's and `drop_unroutable`.
    const COUNTERS: usize = 30;

    #[test]
    fn status_has_room_for_every_counter() {
        let core = goose_core::Stats::default().counters().len();
        let service = ServiceStats::default().counters().len();
        assert_eq!(core + service + 1, COUNTERS);
        const { assert!(COUNTERS <= STATUS_COUNTERS_MAX) };
    }

    #[test]
    fn the_longest_status_fits_the_reply_buffer() {
        let ids = [NodeId::new(65535).unwrap(); MEMBERS_MAX];
        // Every counter the board prints, by its own name, at its widest value.
        let names = goose_core::Stats::default()
            .counters()
            .into_iter()
            .chain(ServiceStats::default().counters())
            .map(|(name, _)| name)
            .chain(["drop_unroutable"]);
        let mut counters: Vec<(&str, u64), COUNTERS> = Vec::new();
        for name in names {
            counters.push((name, u64::MAX)).unwrap();
        }
        let reply = StatusReply {
            goose: true,
            raft: "candidate",
            id: ids[0],
            term: goose_core::Term(u64::MAX),
            leader: Some(ids[0]),
            stopped: false,
            commit: u64::MAX,
            // Voters and learners split the members between them: all voters is the
            // longest split.
            members: &ids,
            voters: &ids,
            learners: &[],
            lease_ms: u64::MAX,
            change: Some((goose_core::Cause::Handoff { to: Some(ids[0]) }, u64::MAX)),
            healthy: true,
            fields: &[],
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
