//! A flock of [`Board`]s in simulated time, wired the way QEMU wires them.
//!
//! Each board sits alone on its own Ethernet segment behind a [`Slirp`] that plays QEMU's
//! user networking: it answers ARP for every 10.0.2.x but the board's 10.0.2.15, and
//! forwards UDP the board sends to 10.0.2.2:<q> to whoever listens on the host's port
//! <q> (another board, or a client), rewriting the source to 10.0.2.2:<ephemeral> as slirp
//! does. So the boards are configured exactly as under QEMU ([`BoardConfig::qemu`]: peers
//! at 127.0.0.1:<q>, the host at 10.0.2.2) and identify peers only by their frames.
//!
//! The network can lose datagrams (seeded PRNG), cut links between boards, and take a
//! board's segment down. Each board's inbox holds at most [`INBOX_FRAMES_MAX`] frames, like
//! the QEMU MAC's FIFO. [`Sim::step`] advances the clock 1 ms and polls every board once,
//! then checks that at most one board is goose at that instant. Everything is
//! deterministic: no threads, no wall clock, one seed.

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;

use goose_core::{Config, Instant, Member, NodeId};
use goose_embedded::flash::MemFlash;
use goose_embedded::store::FlashStore;
use goose_embedded::{Board, BoardConfig, Buffers, Clock, Payloads};
use smoltcp::phy::{ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

/// Frames one board's inbox holds; more are dropped (the QEMU MAC's FIFO holds 31).
pub const INBOX_FRAMES_MAX: usize = 32;
/// Board `id` listens on `BASE_PORT + id`, forwarded from the host's port of that number.
pub const BASE_PORT: u16 = 9900;
/// Boards in the flock.
pub const BOARDS: usize = 5;
/// The host's port the trusted client sends from (it appears as 10.0.2.2 to boards).
pub const CLIENT_PORT: u16 = 40_000;
/// A source on the slirp network that is not the host (slirp's DNS address), to test that
/// control from it is refused.
pub const STRANGER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The port the stranger sends from.
pub const STRANGER_PORT: u16 = 40_001;
/// The MAC slirp answers with.
const SLIRP_MAC: EthernetAddress = EthernetAddress([0x52, 0x55, 0x0a, 0x00, 0x02, 0x02]);

pub fn port_of(id: u16) -> u16 {
    BASE_PORT + id
}

// --- The network ------------------------------------------------------------------------

/// Every board's segment and the host between them.
pub struct Slirp {
    /// Index `id - 1`: frames waiting for board `id`.
    inboxes: Vec<VecDeque<Vec<u8>>>,
    /// Index `id - 1`: whether the board's QEMU (its segment) is up.
    up: Vec<bool>,
    /// Directed board pairs `(from, to)` whose datagrams are dropped.
    blocked: HashSet<(u16, u16)>,
    /// Chance a datagram between boards is lost, in parts per million.
    loss_ppm: u32,
    rng: u64,
    /// Datagrams that reached the host's client port: (board id, source IP, text).
    pub to_client: Vec<(u16, Ipv4Addr, String)>,
    pub delivered: u64,
    pub lost: u64,
}

impl Slirp {
    fn new(seed: u64) -> Self {
        Self {
            inboxes: vec![VecDeque::new(); BOARDS],
            up: vec![true; BOARDS],
            blocked: HashSet::new(),
            loss_ppm: 0,
            rng: seed | 1,
            to_client: Vec::new(),
            delivered: 0,
            lost: 0,
        }
    }

    /// xorshift64*: enough for drawing losses, and reproducible.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Cuts every link between the boards in `side` and the others (both directions).
    pub fn split(&mut self, side: &[u16]) {
        for a in 1..=BOARDS as u16 {
            for b in 1..=BOARDS as u16 {
                if side.contains(&a) != side.contains(&b) {
                    self.blocked.insert((a, b));
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    pub fn set_loss_ppm(&mut self, loss_ppm: u32) {
        self.loss_ppm = loss_ppm;
    }

    /// A board that is down neither sends nor receives, and loses what was queued for it.
    pub fn set_up(&mut self, id: u16, up: bool) {
        self.up[usize::from(id) - 1] = up;
        self.inboxes[usize::from(id) - 1].clear();
    }

    fn push(&mut self, id: u16, frame: Vec<u8>) {
        let inbox = &mut self.inboxes[usize::from(id) - 1];
        if inbox.len() >= INBOX_FRAMES_MAX {
            self.lost += 1;
        } else {
            inbox.push_back(frame);
            self.delivered += 1;
        }
    }

    /// Sends `payload` to board `id` from `source`, as slirp delivers it.
    pub fn inject(&mut self, id: u16, source: (Ipv4Addr, u16), payload: &[u8]) {
        if self.up[usize::from(id) - 1] {
            let mac = EthernetAddress(BoardConfig::mac_for(NodeId::new(id).unwrap()));
            let target = (BoardConfig::QEMU_ADDRESS, port_of(id));
            let frame = udp_frame(mac, source, target, payload);
            self.push(id, frame);
        }
    }

    /// What slirp does with a frame board `from` sent.
    fn forward(&mut self, from: u16, frame: &[u8]) {
        if !self.up[usize::from(from) - 1] {
            return;
        }
        let caps = ChecksumCapabilities::default();
        let Ok(ethernet) = EthernetFrame::new_checked(frame) else {
            return;
        };
        let board_mac = ethernet.src_addr();
        match ethernet.ethertype() {
            EthernetProtocol::Arp => {
                let Ok(packet) = ArpPacket::new_checked(ethernet.payload()) else {
                    return;
                };
                let Ok(ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Request,
                    source_hardware_addr,
                    source_protocol_addr,
                    target_protocol_addr,
                    ..
                }) = ArpRepr::parse(&packet)
                else {
                    return;
                };
                if target_protocol_addr == BoardConfig::QEMU_ADDRESS {
                    return;
                }
                let reply = ArpRepr::EthernetIpv4 {
                    operation: ArpOperation::Reply,
                    source_hardware_addr: SLIRP_MAC,
                    source_protocol_addr: target_protocol_addr,
                    target_hardware_addr: source_hardware_addr,
                    target_protocol_addr: source_protocol_addr,
                };
                let header = EthernetRepr {
                    src_addr: SLIRP_MAC,
                    dst_addr: board_mac,
                    ethertype: EthernetProtocol::Arp,
                };
                let mut buffer = vec![0; header.buffer_len() + reply.buffer_len()];
                let mut frame = EthernetFrame::new_unchecked(&mut buffer[..]);
                header.emit(&mut frame);
                reply.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
                self.push(from, buffer);
            }
            EthernetProtocol::Ipv4 => {
                let Ok(packet) = Ipv4Packet::new_checked(ethernet.payload()) else {
                    return;
                };
                let Ok(ip) = Ipv4Repr::parse(&packet, &caps) else {
                    return;
                };
                if ip.next_header != IpProtocol::Udp {
                    return;
                }
                let Ok(udp_packet) = UdpPacket::new_checked(packet.payload()) else {
                    return;
                };
                let (src, dst) = (IpAddress::Ipv4(ip.src_addr), IpAddress::Ipv4(ip.dst_addr));
                let Ok(udp) = UdpRepr::parse(&udp_packet, &src, &dst, &caps) else {
                    return;
                };
                let payload = udp_packet.payload().to_vec();
                // slirp's host socket for this board's source port: an ephemeral port.
                let source = (BoardConfig::QEMU_HOST, 50_000 + from);
                if ip.dst_addr == STRANGER && udp.dst_port == STRANGER_PORT {
                    let text = String::from_utf8_lossy(&payload).into_owned();
                    self.to_client.push((from, STRANGER, text));
                } else if ip.dst_addr != BoardConfig::QEMU_HOST {
                    // slirp would NAT it to the world: the firmware never does that.
                    panic!("board {from} sent to {}", ip.dst_addr);
                } else if udp.dst_port == CLIENT_PORT {
                    let text = String::from_utf8_lossy(&payload).into_owned();
                    self.to_client.push((from, BoardConfig::QEMU_HOST, text));
                } else if let Some(to) = (1..=BOARDS as u16).find(|id| port_of(*id) == udp.dst_port)
                {
                    let lost = self.loss_ppm > 0
                        && self.next_random() % 1_000_000 < u64::from(self.loss_ppm);
                    if lost || self.blocked.contains(&(from, to)) {
                        self.lost += 1;
                    } else {
                        self.inject(to, source, &payload);
                    }
                }
            }
            _ => {}
        }
    }
}

fn udp_frame(
    mac: EthernetAddress,
    source: (Ipv4Addr, u16),
    target: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let udp = UdpRepr {
        src_port: source.1,
        dst_port: target.1,
    };
    let ip = Ipv4Repr {
        src_addr: source.0,
        dst_addr: target.0,
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + payload.len(),
        hop_limit: 64,
    };
    let header = EthernetRepr {
        src_addr: SLIRP_MAC,
        dst_addr: mac,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buffer = vec![0; header.buffer_len() + ip.buffer_len() + ip.payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut buffer[..]);
    header.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &caps);
    let (src, dst) = (IpAddress::Ipv4(source.0), IpAddress::Ipv4(target.0));
    udp.emit(
        &mut UdpPacket::new_unchecked(packet.payload_mut()),
        &src,
        &dst,
        payload.len(),
        |buffer| buffer.copy_from_slice(payload),
        &caps,
    );
    buffer
}

/// Board `id`'s MAC as a smoltcp device on its segment.
pub struct SlirpDevice {
    slirp: Rc<RefCell<Slirp>>,
    id: u16,
}

pub struct SlirpRx(Vec<u8>);

pub struct SlirpTx {
    slirp: Rc<RefCell<Slirp>>,
    id: u16,
}

impl RxToken for SlirpRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for SlirpTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0; len];
        let result = f(&mut frame);
        self.slirp.borrow_mut().forward(self.id, &frame);
        result
    }
}

impl Device for SlirpDevice {
    type RxToken<'a> = SlirpRx;
    type TxToken<'a> = SlirpTx;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(SlirpRx, SlirpTx)> {
        let frame = self.slirp.borrow_mut().inboxes[usize::from(self.id) - 1].pop_front()?;
        let tx = SlirpTx {
            slirp: self.slirp.clone(),
            id: self.id,
        };
        Some((SlirpRx(frame), tx))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<SlirpTx> {
        Some(SlirpTx {
            slirp: self.slirp.clone(),
            id: self.id,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = goose_embedded::ETHERNET_FRAME_SIZE_MAX;
        caps
    }
}

// --- Time -------------------------------------------------------------------------------

#[derive(Clone, Default)]
pub struct SimClock(Rc<Cell<u64>>);

impl Clock for SimClock {
    fn now(&self) -> Instant {
        Instant::from_micros(self.0.get())
    }
}

// --- The flock --------------------------------------------------------------------------

/// The membership as every node is given it: the host's view.
pub fn members() -> Vec<Member> {
    (1..=BOARDS as u16)
        .map(|id| Member {
            id: NodeId::new(id).unwrap(),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port_of(id))),
            voter: true,
        })
        .collect()
}

pub struct SimBoard {
    pub board: Option<Board<'static, MemFlash>>,
    /// Every event the board reported, oldest first.
    pub events: Vec<goose_core::Event>,
    device: SlirpDevice,
    store: &'static RefCell<FlashStore<MemFlash>>,
    config: BoardConfig,
}

pub struct Sim {
    pub net: Rc<RefCell<Slirp>>,
    pub clock: SimClock,
    /// Index `id - 1`.
    pub boards: Vec<SimBoard>,
    /// The goose seen at each step, for tests that look at history.
    pub geese: Vec<Option<u16>>,
}

impl Sim {
    /// Five boards configured as `goose board` configures them under QEMU.
    pub fn new(seed: u64) -> Self {
        Self::with_configs(seed, |_| {})
    }

    pub fn with_configs(seed: u64, mut adjust: impl FnMut(&mut BoardConfig)) -> Self {
        let net = Rc::new(RefCell::new(Slirp::new(seed)));
        let clock = SimClock::default();
        let boards = (1..=BOARDS as u16)
            .map(|id| {
                let store = &*Box::leak(Box::new(RefCell::new(
                    FlashStore::new(MemFlash::new()).unwrap(),
                )));
                let node = Config::new(NodeId::new(id).unwrap());
                let seed = seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add(u64::from(id));
                let mut config = BoardConfig::qemu(node, port_of(id), &members(), seed).unwrap();
                adjust(&mut config);
                let device = SlirpDevice {
                    slirp: net.clone(),
                    id,
                };
                let mut board = SimBoard {
                    board: None,
                    events: Vec::new(),
                    device,
                    store,
                    config,
                };
                board.start(&clock);
                board
            })
            .collect();
        Self {
            net,
            clock,
            boards,
            geese: Vec::new(),
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn board(&self, id: u16) -> &Board<'static, MemFlash> {
        self.boards[usize::from(id) - 1]
            .board
            .as_ref()
            .expect("board is running")
    }

    /// One millisecond: every running board polls once.
    pub fn step(&mut self) {
        self.clock.0.set(self.clock.0.get() + 1000);
        for board in &mut self.boards {
            if let Some(running) = board.board.as_mut() {
                running.poll(&mut board.device, &self.clock);
                while let Some(event) = running.poll_event() {
                    board.events.push(event);
                }
            }
        }
        let now = self.now();
        let geese: Vec<u16> = self
            .running()
            .filter(|b| b.is_goose(now))
            .map(|b| b.node().id().get())
            .collect();
        assert!(geese.len() <= 1, "two geese at {now:?}: {geese:?}");
        self.geese.push(geese.first().copied());
    }

    fn running(&self) -> impl Iterator<Item = &Board<'static, MemFlash>> {
        self.boards.iter().filter_map(|b| b.board.as_ref())
    }

    /// Runs `ms` milliseconds.
    pub fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Steps until `done` holds, at most `ms` milliseconds; returns how many it took.
    pub fn run_until(&mut self, ms: u64, mut done: impl FnMut(&Self) -> bool) -> Option<u64> {
        for elapsed in 0..=ms {
            if done(self) {
                return Some(elapsed);
            }
            self.step();
        }
        None
    }

    /// The one goose at this instant, if any.
    pub fn goose(&self) -> Option<u16> {
        let now = self.now();
        self.running()
            .find(|b| b.is_goose(now))
            .map(|b| b.node().id().get())
    }

    /// Waits (at most `ms`) for a goose and returns it.
    pub fn elect(&mut self, ms: u64) -> u16 {
        self.run_until(ms, |sim| sim.goose().is_some())
            .unwrap_or_else(|| panic!("no goose within {ms} ms"));
        self.goose().unwrap()
    }

    /// Sends `text` to board `id` from `source` (as slirp delivers it), then runs `wait_ms`
    /// and returns every reply that reached `source`'s address.
    pub fn send_from(
        &mut self,
        source: (Ipv4Addr, u16),
        id: u16,
        texts: &[&str],
        wait_ms: u64,
    ) -> Vec<String> {
        self.net.borrow_mut().to_client.clear();
        for text in texts {
            self.net.borrow_mut().inject(id, source, text.as_bytes());
        }
        self.run_ms(wait_ms);
        let replies = std::mem::take(&mut self.net.borrow_mut().to_client);
        replies
            .into_iter()
            .map(|(from, to, text)| {
                assert_eq!(
                    (from, to),
                    (id, source.0),
                    "reply from the board asked, to the asker"
                );
                text
            })
            .collect()
    }

    /// What `printf '<text>' | nc -u -w1 127.0.0.1 <port of id>` prints: the one reply,
    /// if any.
    pub fn ask(&mut self, id: u16, text: &str) -> Option<String> {
        let mut replies = self.send_from((BoardConfig::QEMU_HOST, CLIENT_PORT), id, &[text], 20);
        assert!(replies.len() <= 1, "one reply per request: {replies:?}");
        replies.pop()
    }

    /// Kills board `id`: it stops polling and its segment goes down (its flash stays).
    pub fn kill(&mut self, id: u16) {
        self.boards[usize::from(id) - 1].board = None;
        self.net.borrow_mut().set_up(id, false);
    }

    /// Boots board `id` again on its flash, with fresh buffers and interface.
    pub fn restart(&mut self, id: u16) {
        self.net.borrow_mut().set_up(id, true);
        let clock = self.clock.clone();
        self.boards[usize::from(id) - 1].start(&clock);
    }
}

impl SimBoard {
    fn start(&mut self, clock: &SimClock) {
        let buffers = Box::leak(Box::new(Buffers::new()));
        let payloads = Box::leak(Box::new(Payloads::new()));
        let board = Board::new(
            self.config.clone(),
            &mut self.device,
            buffers,
            payloads,
            self.store,
            clock.now(),
        )
        .expect("board starts");
        self.board = Some(board);
    }
}
