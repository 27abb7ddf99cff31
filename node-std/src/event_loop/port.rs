//! The node's port: two UDP sockets on one address, so that a flood of text can never
//! crowd peer frames out of the kernel's receive buffer, read and written in batches
//! ([`super::mmsg`]), with the peer traffic counted for `ctl status`.
//!
//! # Two queues on one port
//!
//! Both sockets are bound to the node's address with `SO_REUSEPORT`, which makes them one
//! *reuseport group*, and a classic BPF program attached to the group picks the socket for
//! every datagram that arrives: the *peer* socket for a first byte ≥ 0x80 (every peer
//! frame starts with its magic byte) or no byte at all, the *text* socket for a first
//! byte below 0x80 (probes, control, replies). Each socket has its own receive buffer, so
//! however fast text arrives, only the text socket's buffer overflows; and the node reads
//! the peer socket first, and again after every batch of text. Peers see one port, as the
//! contract says.
//!
//! Who else may join the group is the kernel's rule: only a socket of the same effective
//! user, bound with `SO_REUSEPORT` too. So the peer socket is bound *without* it first (the
//! bind fails if anything at all holds the port), and only then sets it for the text
//! socket to join. A process of another user can never join (its bind fails with
//! `EADDRINUSE`); one of the same user can, but the program hands datagrams only to the
//! group's first two sockets (the kernel indexes a group's sockets by join order), so it
//! receives nothing. A process of the node's own user can also signal or trace the node,
//! so nothing is lost by trusting it; run each node as a user of its own.
//! `tests/tests/port.rs` shows all three.
//!
//! Where the group cannot be set up (a kernel without reuseport BPF), the node warns and
//! runs on the peer socket alone, as before.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use goose_core::service::Outlet;
use goose_core::{NodeId, Transmit};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::mmsg::{ReceiveBatch, SendQueue, BATCH_SIZE};

/// Kernel socket buffers, each. Peer traffic is a few datagrams per heartbeat, but probes
/// and a flood of junk can burst: 1 MiB queues about two thousand full-size datagrams.
const SOCKET_BUFFER_SIZE: usize = 1 << 20;
/// Full batches of text read, under a flood, before the peer socket is looked at again: a
/// peer frame then waits behind at most 512 probes (a millisecond at the fastest flood
/// measured), in its own socket's buffer meanwhile, and a flood costs one more system call
/// per 512 probes.
const TEXT_BATCHES_PER_PEER_LOOK: u32 = 16;
/// How often, at most, the sockets' drop counts are read (two system calls), under a flood
/// of text: `ctl status` may show them this much behind.
const DROPS_REFRESH_EVERY: Duration = Duration::from_millis(100);

/// Which of the port's sockets a datagram arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Queue {
    /// First byte ≥ 0x80, or empty: peer frames.
    Peer,
    /// First byte below 0x80: probes, control, replies.
    Text,
}

/// A queued datagram: a peer frame for a node (counted as peer traffic once sent), or a
/// text datagram (a reply, a join request).
type Tag = Option<NodeId>;

/// The sockets, their batches and the traffic counters.
pub(super) struct Port {
    peer: UdpSocket,
    /// `None` where the reuseport group could not be set up: everything arrives on `peer`.
    text: Option<UdpSocket>,
    /// Readiness not yet drained, per queue: mio reports an edge once, so a socket is read
    /// until a batch comes back short.
    readable: [bool; 2],
    /// Whether `poll` wakes for peer frames ([`Port::wake_for_peers`]).
    peer_wakes: bool,
    /// The last batch read.
    batch: ReceiveBatch,
    /// Batches of text read since the peer socket was last looked at.
    text_batches: u32,
    /// What is waiting to be sent, all from the peer socket (both share the address).
    send: SendQueue<Tag>,
    traffic: Traffic,
    /// Datagrams that could not be sent since [`Port::take_send_failures`].
    send_failures: u64,
}

impl Port {
    /// The port's sockets, non-blocking, with explicit buffer sizes, bound to `listen`.
    ///
    /// # Errors
    ///
    /// The peer socket's: the port is in use, the address is not local. A failure to set
    /// up the text socket is logged and leaves the port with the peer socket alone.
    pub(super) fn bind(listen: SocketAddr) -> io::Result<Self> {
        let peer = new_socket(listen)?;
        // No SO_REUSEPORT yet: the bind fails if any socket holds the address.
        peer.bind(&listen.into())?;
        let text = match join_text_socket(&peer) {
            Ok(text) => Some(UdpSocket::from_std(text.into())),
            Err(error) => {
                log::warn!(
                    "{listen}: no separate queue for text ({error}): a flood of probes \
                     shares the peer frames' receive buffer"
                );
                None
            }
        };
        Ok(Self {
            peer: UdpSocket::from_std(peer.into()),
            text,
            readable: [true; 2],
            peer_wakes: true,
            batch: ReceiveBatch::new(),
            text_batches: 0,
            send: SendQueue::new(),
            traffic: Traffic::default(),
            send_failures: 0,
        })
    }

    /// Wakes `registry`'s `poll` under `peer` or `text` when a datagram arrives there.
    pub(super) fn register(
        &mut self,
        registry: &Registry,
        peer: Token,
        text: Token,
    ) -> io::Result<()> {
        registry.register(&mut self.peer, peer, Interest::READABLE)?;
        if let Some(socket) = self.text.as_mut() {
            registry.register(socket, text, Interest::READABLE)?;
        }
        Ok(())
    }

    /// Whether `poll` wakes under `token` for peer frames. Off, the peer socket leaves the
    /// poll set and is read after every wake-up instead ([`Port::woke`]): a quiescent goose
    /// then wakes for its heartbeats, not for each acknowledgement of them. Where text
    /// shares the peer socket (no reuseport group), it always wakes: a probe must not wait.
    ///
    /// # Errors
    ///
    /// The poll's: the socket could not be added back or taken out.
    pub(super) fn wake_for_peers(
        &mut self,
        registry: &Registry,
        token: Token,
        wake: bool,
    ) -> io::Result<()> {
        let wake = wake || self.text.is_none();
        if wake == self.peer_wakes {
            return Ok(());
        }
        if wake {
            registry.register(&mut self.peer, token, Interest::READABLE)?;
        } else {
            registry.deregister(&mut self.peer)?;
        }
        self.peer_wakes = wake;
        self.readable[Queue::Peer as usize] = true;
        Ok(())
    }

    /// The loop woke: while `poll` does not wake for peer frames, the peer socket is read
    /// at every wake-up, before anything is decided.
    pub(super) fn woke(&mut self) {
        if !self.peer_wakes {
            self.readable[Queue::Peer as usize] = true;
        }
    }

    /// `queue`'s socket has datagrams (mio said so): read it at the next
    /// [`Port::receive`].
    pub(super) fn set_readable(&mut self, queue: Queue) {
        self.readable[queue as usize] = true;
    }

    /// Reads the next batch, peer frames first: the peer socket's while it has any, then
    /// text, the peer socket being read again after every
    /// [`TEXT_BATCHES_PER_PEER_LOOK`] batches of it. Returns how many
    /// datagrams the batch holds ([`Port::source`], [`Port::datagram`]); 0 once both
    /// sockets are drained.
    ///
    /// # Errors
    ///
    /// A socket's error (an ICMP error queued on it): that socket is read again next time.
    pub(super) fn receive(&mut self) -> io::Result<usize> {
        for queue in [Queue::Peer, Queue::Text] {
            let socket = match (queue, &self.text) {
                (Queue::Peer, _) => self.peer.as_raw_fd(),
                (Queue::Text, Some(text)) => text.as_raw_fd(),
                (Queue::Text, None) => break,
            };
            if !self.readable[queue as usize] {
                continue;
            }
            let count = self.batch.receive(socket)?;
            // A short batch drained the socket: any later datagram is a new edge.
            self.readable[queue as usize] = count == BATCH_SIZE;
            if queue == Queue::Text && count > 0 {
                // Text keeps coming: whatever reached the peer socket meanwhile goes next,
                // every few batches. (Once text is drained, the loop polls, and the peer
                // socket's own readiness says whether it has frames.)
                if count == BATCH_SIZE {
                    self.text_batches += 1;
                }
                if self.text_batches >= TEXT_BATCHES_PER_PEER_LOOK {
                    self.text_batches = 0;
                    self.readable[Queue::Peer as usize] = true;
                }
                self.traffic
                    .maybe_refresh_drops(self.peer.as_raw_fd(), socket);
            }
            if count > 0 {
                return Ok(count);
            }
        }
        Ok(0)
    }

    /// The source of datagram `index` of the last batch.
    pub(super) fn source(&self, index: usize) -> Option<SocketAddr> {
        self.batch.source(index)
    }

    /// Datagram `index` of the last batch.
    pub(super) fn datagram(&self, index: usize) -> &[u8] {
        self.batch.datagram(index)
    }

    /// Queues a datagram of the node's own (a join request), not through the service;
    /// `false` if it could not be queued or sent.
    pub(super) fn send_to(&mut self, datagram: &[u8], target: SocketAddr) -> bool {
        if !self.send.has_room(datagram.len()) {
            self.transmit();
        }
        self.send.push(datagram, target, None)
    }

    /// Sends whatever is queued, counting what could not be sent
    /// ([`Port::take_send_failures`]).
    pub(super) fn transmit(&mut self) {
        if self.send.is_empty() {
            return;
        }
        let (traffic, failures) = (&mut self.traffic, &mut self.send_failures);
        self.send
            .send(self.peer.as_raw_fd(), |tag, target, result| match result {
                Ok(sent) => {
                    if tag.is_some() {
                        bump(&mut traffic.peer_frames_out);
                        add(&mut traffic.peer_bytes_out, sent);
                    }
                }
                Err(error) => {
                    bump(failures);
                    match tag {
                        Some(id) => log::debug!("send to node {id} at {target} failed: {error}"),
                        None => log::debug!("send to {target} failed: {error}"),
                    }
                }
            });
    }

    /// Datagrams that could not be sent since the last call, for the service's
    /// `send_errors`.
    pub(super) fn take_send_failures(&mut self) -> u64 {
        std::mem::take(&mut self.send_failures)
    }

    /// Counts a peer frame of `size` bytes handed to the core.
    pub(super) fn count_frame_in(&mut self, size: usize) {
        bump(&mut self.traffic.peer_frames_in);
        add(&mut self.traffic.peer_bytes_in, size);
    }

    /// The traffic counters `ctl status` prints after the service's.
    pub(super) fn counters(&self) -> [(&'static str, u64); 6] {
        self.traffic.counters()
    }

    /// Where the service sends: into the send queue, which is sent whenever it is full
    /// and by [`Port::transmit`].
    pub(super) fn outlet(&mut self) -> SocketOutlet<'_> {
        SocketOutlet { port: self }
    }
}

/// A non-blocking UDP socket for `listen`'s family with explicit buffer sizes.
fn new_socket(listen: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if listen.is_ipv6() {
        // Dual-stack where the system allows it, so [::]:p also hears IPv4 peers.
        let _ = socket.set_only_v6(false);
    }
    socket.set_recv_buffer_size(SOCKET_BUFFER_SIZE)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_SIZE)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Makes the bound `peer` socket a reuseport group with a text socket on its address, and
/// attaches the program that steers text to the text socket. On failure the peer socket
/// is left as it was bound: alone, and closed to joiners.
fn join_text_socket(peer: &Socket) -> io::Result<Socket> {
    let joined = || -> io::Result<Socket> {
        let address = peer.local_addr()?;
        set_reuse_port(peer.as_raw_fd(), true)?;
        let text = new_socket(address.as_socket().ok_or(io::ErrorKind::InvalidInput)?)?;
        set_reuse_port(text.as_raw_fd(), true)?;
        // Joins the peer socket's group: the peer socket is index 0, this one index 1.
        text.bind(&address)?;
        attach_steering(peer.as_raw_fd())?;
        Ok(text)
    };
    joined().inspect_err(|_| {
        let _ = set_reuse_port(peer.as_raw_fd(), false);
    })
}

/// Sets `SO_REUSEPORT` on `socket`.
fn set_reuse_port(socket: RawFd, on: bool) -> io::Result<()> {
    let value = libc::c_int::from(on);
    // SAFETY: setsockopt on an open socket with a pointer to a live c_int and its size;
    // the kernel only reads it.
    let result = unsafe {
        libc::setsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            std::ptr::from_ref(&value).cast(),
            socklen_of::<libc::c_int>(),
        )
    };
    os_result(result)
}

/// The steering program, classic BPF over the UDP payload: index 0 (the peer socket) for a
/// first byte ≥ 0x80, index 1 (the text socket) below; a load past the end of an empty
/// payload ends the program with 0, so an empty datagram goes to the peer socket too.
const STEERING: [libc::sock_filter; 4] = [
    // A = payload[0]
    bpf(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 0),
    // A >= 0x80 ? next : skip one
    bpf(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K, 0, 1, 0x80),
    bpf(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    bpf(libc::BPF_RET | libc::BPF_K, 0, 0, 1),
];

const fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        // Every BPF opcode fits 16 bits.
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Attaches [`STEERING`] to the reuseport group of `socket`.
fn attach_steering(socket: RawFd) -> io::Result<()> {
    let program = libc::sock_fprog {
        len: STEERING.len() as u16,
        filter: STEERING.as_ptr().cast_mut(),
    };
    // SAFETY: setsockopt on an open socket with a pointer to a live sock_fprog whose filter
    // points at STEERING's instructions (a static); the kernel copies the program and only
    // reads both.
    let result = unsafe {
        libc::setsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_CBPF,
            std::ptr::from_ref(&program).cast(),
            socklen_of::<libc::sock_fprog>(),
        )
    };
    os_result(result)
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

fn os_result(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Datagrams the kernel dropped at `socket` because its receive buffer was full
/// (`SO_MEMINFO`); `None` if it cannot say.
fn socket_drops(socket: RawFd) -> Option<u64> {
    /// `SO_MEMINFO` (Linux 4.12): the socket's memory figures, drops among them.
    const SO_MEMINFO: libc::c_int = 55;
    /// Figures `SO_MEMINFO` returns (`SK_MEMINFO_VARS`).
    const MEMINFO_VARS: usize = 9;
    let mut info = [0u32; MEMINFO_VARS];
    let mut size = socklen_of::<[u32; MEMINFO_VARS]>();
    // SAFETY: getsockopt on an open socket into a live array of `size` bytes, with `size`
    // telling the kernel how much it may write.
    let result = unsafe {
        libc::getsockopt(
            socket,
            libc::SOL_SOCKET,
            SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut size,
        )
    };
    let index = usize::try_from(libc::SK_MEMINFO_DROPS).ok()?;
    (result == 0).then(|| u64::from(info[index]))
}

/// The desktop node's peer traffic and its sockets' drops, reported by `ctl status` after
/// the service's counters under the fields' names.
#[derive(Debug, Default)]
struct Traffic {
    /// Peer frames handed to the core.
    peer_frames_in: u64,
    /// Their bytes.
    peer_bytes_in: u64,
    /// Peer frames sent.
    peer_frames_out: u64,
    /// Their bytes (UDP payload).
    peer_bytes_out: u64,
    /// Datagrams the kernel dropped at the peer socket, its receive buffer full: peer
    /// frames lost to the node being too slow (0 is the promise of the two queues).
    socket_drops_peer: u64,
    /// The same at the text socket: probes and control lost to a flood.
    socket_drops_text: u64,
    /// When the drop counts were last read.
    drops_read_at: Option<Instant>,
}

impl Traffic {
    fn counters(&self) -> [(&'static str, u64); 6] {
        [
            ("peer_frames_in", self.peer_frames_in),
            ("peer_bytes_in", self.peer_bytes_in),
            ("peer_frames_out", self.peer_frames_out),
            ("peer_bytes_out", self.peer_bytes_out),
            ("socket_drops_peer", self.socket_drops_peer),
            ("socket_drops_text", self.socket_drops_text),
        ]
    }

    /// Reads both sockets' drop counts after a batch of text (where `ctl status` comes
    /// from), at most every [`DROPS_REFRESH_EVERY`]; never on the peer frames' path.
    fn maybe_refresh_drops(&mut self, peer: RawFd, text: RawFd) {
        let now = Instant::now();
        if self
            .drops_read_at
            .is_some_and(|at| now.duration_since(at) < DROPS_REFRESH_EVERY)
        {
            return;
        }
        self.drops_read_at = Some(now);
        if let Some(drops) = socket_drops(peer) {
            self.socket_drops_peer = drops;
        }
        if let Some(drops) = socket_drops(text) {
            self.socket_drops_text = drops;
        }
    }
}

/// Adds one to a counter, saturating.
pub(super) fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

fn add(counter: &mut u64, amount: usize) {
    *counter = counter.saturating_add(u64::try_from(amount).unwrap_or(u64::MAX));
}

/// Queues the service's datagrams on the port, sending the queue whenever it is full.
pub(super) struct SocketOutlet<'a> {
    port: &'a mut Port,
}

impl SocketOutlet<'_> {
    fn queue(&mut self, datagram: &[u8], target: SocketAddr, tag: Tag) -> bool {
        if !self.port.send.has_room(datagram.len()) {
            self.port.transmit();
        }
        self.port.send.push(datagram, target, tag)
    }
}

impl Outlet<SocketAddr> for SocketOutlet<'_> {
    fn send_frame(&mut self, frame: &[u8], transmit: &Transmit) -> bool {
        self.queue(frame, transmit.addr, Some(transmit.target))
    }

    fn send_reply(&mut self, reply: &[u8], target: SocketAddr) -> bool {
        self.queue(reply, target, None)
    }
}

#[cfg(test)]
mod tests {
    use super::{Port, Queue, BATCH_SIZE, TEXT_BATCHES_PER_PEER_LOOK};
    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    fn bound() -> (Port, SocketAddr, UdpSocket) {
        let port = Port::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = port.peer.local_addr().unwrap();
        assert!(port.text.is_some(), "the reuseport group was set up");
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        (port, address, client)
    }

    /// Every datagram sent has arrived in one of the node's sockets.
    fn settle() {
        std::thread::sleep(Duration::from_millis(50));
    }

    #[test]
    fn peer_frames_are_read_before_text_that_arrived_first() {
        let (mut port, address, client) = bound();
        let batches = TEXT_BATCHES_PER_PEER_LOOK as usize;
        for _ in 0..batches * BATCH_SIZE + 8 {
            client.send_to(b"whois-goose", address).unwrap();
        }
        client.send_to(&[0x80, 1, 2], address).unwrap();
        client.send_to(&[], address).unwrap();
        settle();
        assert_eq!(port.receive().unwrap(), 2, "the peer queue first");
        assert_eq!(port.datagram(0), &[0x80, 1, 2]);
        assert_eq!(port.datagram(1), b"");
        assert_eq!(port.source(0), Some(client.local_addr().unwrap()));
        for _ in 1..batches {
            assert_eq!(port.receive().unwrap(), BATCH_SIZE, "full batches of text");
        }
        client.send_to(&[0xFF], address).unwrap();
        settle();
        assert_eq!(
            port.receive().unwrap(),
            BATCH_SIZE,
            "the last batch before a look"
        );
        assert_eq!(port.receive().unwrap(), 1, "the peer queue again");
        assert_eq!(port.datagram(0), &[0xFF]);
        assert_eq!(port.receive().unwrap(), 8, "the rest of the text");
        assert_eq!(port.datagram(7), b"whois-goose");
        assert_eq!(port.receive().unwrap(), 0);
        // Drained: nothing is read until mio reports a socket readable again.
        client.send_to(&[0x80], address).unwrap();
        settle();
        assert_eq!(port.receive().unwrap(), 0);
        port.set_readable(Queue::Peer);
        assert_eq!(port.receive().unwrap(), 1);
    }

    #[test]
    fn a_flood_of_text_overflows_only_the_text_queue() {
        let (mut port, address, client) = bound();
        // Far more than the text socket's buffer holds (its 1 MiB, or net.core.rmem_max
        // if lower), unread.
        let datagram = [b'x'; 1000];
        for _ in 0..4000 {
            let _ = client.send_to(&datagram, address);
        }
        let frames = 50;
        for index in 0..frames {
            client.send_to(&[0x80, index], address).unwrap();
        }
        settle();
        assert_eq!(port.receive().unwrap(), BATCH_SIZE);
        assert_eq!(port.receive().unwrap(), frames as usize - BATCH_SIZE);
        assert_eq!(port.datagram(0)[0], 0x80);
        // The first batch of text refreshes the drop counters.
        assert_eq!(port.receive().unwrap(), BATCH_SIZE);
        assert_eq!(port.datagram(0), &datagram);
        let counters = port.counters();
        let counter = |key: &str| counters.iter().find(|c| c.0 == key).unwrap().1;
        assert_eq!(counter("socket_drops_peer"), 0);
        assert!(counter("socket_drops_text") > 0, "{counters:?}");
    }

    #[test]
    fn queued_datagrams_leave_in_order_and_count_as_peer_traffic() {
        let (mut port, _, client) = bound();
        let target = client.local_addr().unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let id = goose_core::NodeId::new(2).unwrap();
        let transmit = goose_core::Transmit {
            target: id,
            addr: target,
            size: 3,
        };
        {
            use goose_core::service::Outlet;
            let mut outlet = port.outlet();
            // More than a batch: the queue sends itself when full.
            for index in 0..BATCH_SIZE as u8 + 4 {
                assert!(outlet.send_frame(&[0x80, index, 0], &transmit));
            }
            assert!(outlet.send_reply(b"duck\n", target));
        }
        port.transmit();
        let mut buffer = [0; 64];
        for index in 0..BATCH_SIZE as u8 + 4 {
            let size = client.recv(&mut buffer).unwrap();
            assert_eq!(&buffer[..size], &[0x80, index, 0]);
        }
        let size = client.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..size], b"duck\n");
        let counters = port.counters();
        assert_eq!(counters[2], ("peer_frames_out", BATCH_SIZE as u64 + 4));
        assert_eq!(counters[3], ("peer_bytes_out", 3 * (BATCH_SIZE as u64 + 4)));
        assert_eq!(port.take_send_failures(), 0);
        // Nothing left: a second transmit sends nothing.
        port.transmit();
        client.set_nonblocking(true).unwrap();
        assert!(client.recv(&mut buffer).is_err());
    }
}
