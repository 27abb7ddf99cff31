//! The node's one UDP socket: bound with explicit buffer sizes, read one datagram at a time
//! into a buffer larger than any valid datagram, written through the service's [`Outlet`],
//! its peer traffic counted for `ctl status`.

use std::io;
use std::net::SocketAddr;

use goose_core::service::Outlet;
use goose_core::{NodeId, Transmit};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

/// Kernel socket buffers. Peer traffic is a few datagrams per heartbeat, but probes and a
/// flood of junk can burst: 1 MiB queues about two thousand full-size datagrams.
const SOCKET_BUFFER_SIZE: usize = 1 << 20;
/// The receive buffer: larger than any valid frame or text request, so a too-long frame
/// arrives whole and is counted as too long rather than undecodable.
const RECEIVE_BUFFER_SIZE: usize = 2048;

/// The socket, its receive buffer and its traffic counters.
pub(super) struct Port {
    socket: UdpSocket,
    traffic: Traffic,
    receive: [u8; RECEIVE_BUFFER_SIZE],
}

impl Port {
    /// A non-blocking UDP socket with explicit buffer sizes, bound to `listen`.
    pub(super) fn bind(listen: SocketAddr) -> io::Result<Self> {
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
        socket.bind(&listen.into())?;
        Ok(Self {
            socket: UdpSocket::from_std(socket.into()),
            traffic: Traffic::default(),
            receive: [0; RECEIVE_BUFFER_SIZE],
        })
    }

    /// Wakes `registry`'s `poll` under `token` when a datagram arrives.
    pub(super) fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(&mut self.socket, token, Interest::READABLE)
    }

    /// Reads one datagram into the receive buffer ([`Port::datagram`]): its source and
    /// size. `WouldBlock` once the socket is empty.
    pub(super) fn receive(&mut self) -> io::Result<(SocketAddr, usize)> {
        let (size, source) = self.socket.recv_from(&mut self.receive)?;
        Ok((source, size.min(RECEIVE_BUFFER_SIZE)))
    }

    /// The first `size` bytes [`Port::receive`] read.
    pub(super) fn datagram(&self, size: usize) -> &[u8] {
        &self.receive[..size.min(RECEIVE_BUFFER_SIZE)]
    }

    /// Sends a datagram of the node's own (a join request), not through the service.
    pub(super) fn send_to(&self, datagram: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(datagram, target)
    }

    /// Counts a peer frame of `size` bytes handed to the core.
    pub(super) fn count_frame_in(&mut self, size: usize) {
        bump(&mut self.traffic.peer_frames_in);
        add(&mut self.traffic.peer_bytes_in, size);
    }

    /// The traffic counters `ctl status` prints after the service's.
    pub(super) fn counters(&self) -> [(&'static str, u64); 4] {
        self.traffic.counters()
    }

    /// Where node `id`'s service sends.
    pub(super) fn outlet(&mut self, id: NodeId) -> SocketOutlet<'_> {
        SocketOutlet {
            socket: &self.socket,
            traffic: &mut self.traffic,
            id,
        }
    }
}

/// The desktop node's peer traffic, reported by `ctl status` after the service's counters
/// under the fields' names.
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
}

impl Traffic {
    fn counters(&self) -> [(&'static str, u64); 4] {
        [
            ("peer_frames_in", self.peer_frames_in),
            ("peer_bytes_in", self.peer_bytes_in),
            ("peer_frames_out", self.peer_frames_out),
            ("peer_bytes_out", self.peer_bytes_out),
        ]
    }
}

/// Adds one to a counter, saturating.
pub(super) fn bump(counter: &mut u64) {
    *counter = counter.saturating_add(1);
}

fn add(counter: &mut u64, amount: usize) {
    *counter = counter.saturating_add(u64::try_from(amount).unwrap_or(u64::MAX));
}

/// Sends through the node's socket, counting its peer traffic.
pub(super) struct SocketOutlet<'a> {
    socket: &'a UdpSocket,
    traffic: &'a mut Traffic,
    id: NodeId,
}

impl Outlet<SocketAddr> for SocketOutlet<'_> {
    fn send_frame(&mut self, frame: &[u8], transmit: &Transmit) -> bool {
        match self.socket.send_to(frame, transmit.addr) {
            Ok(sent) => {
                bump(&mut self.traffic.peer_frames_out);
                add(&mut self.traffic.peer_bytes_out, sent);
                true
            }
            Err(error) => {
                log::debug!(
                    "node {}: send to {} ({}) failed: {error}",
                    self.id,
                    transmit.target,
                    transmit.addr
                );
                false
            }
        }
    }

    fn send_reply(&mut self, reply: &[u8], target: SocketAddr) -> bool {
        match self.socket.send_to(reply, target) {
            Ok(_) => true,
            Err(error) => {
                log::debug!("node {}: reply to {target} failed: {error}", self.id);
                false
            }
        }
    }
}
