//! The three rtnetlink requests `--vip` makes (what `ip link show <dev>`, `ip addr replace`
//! and `ip addr del` send), on one blocking netlink socket.
//!
//! The kernel carries out a route request and queues its answer before `send` returns, so
//! the answer is there to read at once; a read timeout ([`ANSWER_TIMEOUT`]) bounds the wait
//! anyway, and answers to an earlier request (one that timed out) are recognised by their
//! sequence number and skipped.

use std::io;
use std::net::IpAddr;
use std::time::Duration as StdDuration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkLayerType, LinkMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

use super::{Link, VipAddr};

/// The longest the node waits for the kernel's answer to one request.
const ANSWER_TIMEOUT: StdDuration = StdDuration::from_secs(1);
/// The largest answer read: an interface's description (statistics included) takes a few
/// KiB; a longer datagram is refused rather than cut.
const ANSWER_SIZE_MAX: usize = 32 * 1024;
/// Datagrams read for one request (its answer, its acknowledgement, late answers to earlier
/// requests) before the node gives up on it.
const DATAGRAMS_PER_REQUEST_MAX: usize = 16;
/// Netlink messages in a datagram are aligned to 4 bytes.
const NLMSG_ALIGN: usize = 4;

/// A route netlink socket and the sequence number of its last request.
pub(crate) struct Netlink {
    socket: Socket,
    sequence: u32,
    answer: Vec<u8>,
}

impl Netlink {
    /// Opens and connects the socket.
    ///
    /// # Errors
    ///
    /// The socket could not be opened, bound or set up.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Errors then carry the request's header only, not the whole request.
        socket.set_cap_ack(true)?;
        socket2::SockRef::from(&socket).set_read_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Self {
            socket,
            sequence: 0,
            answer: Vec::with_capacity(ANSWER_SIZE_MAX),
        })
    }

    /// The Ethernet interface named `name`.
    ///
    /// # Errors
    ///
    /// `ENODEV` if there is none; `InvalidInput` if it is not Ethernet (nothing to announce
    /// the address with); a failed request.
    pub(crate) fn link(&mut self, name: &str) -> io::Result<Link> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        let answer = self.request(RouteNetlinkMessage::GetLink(message), 0)?;
        let Some(RouteNetlinkMessage::NewLink(link)) = answer else {
            return Err(io::Error::other("the kernel described no interface"));
        };
        if link.header.link_layer_type != LinkLayerType::Ether {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "not an Ethernet interface (link type {}): an address on it cannot be \
                     announced",
                    link.header.link_layer_type
                ),
            ));
        }
        let mac = link
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            });
        let mac = mac.ok_or_else(|| io::Error::other("the interface has no Ethernet address"))?;
        Ok(Link {
            index: link.header.index,
            mac,
        })
    }

    /// Adds `addr` to interface `index`, or leaves it as it is if it is there (`ip addr
    /// replace`). An IPv6 address skips duplicate address detection (module docs of `vip`).
    ///
    /// # Errors
    ///
    /// The kernel refused (no such interface, no `CAP_NET_ADMIN`, …).
    pub(crate) fn add(&mut self, index: u32, addr: &VipAddr) -> io::Result<()> {
        let mut message = address_message(index, addr);
        message.header.scope = AddressScope::Universe;
        message.attributes.push(AddressAttribute::Address(addr.ip));
        if addr.ip.is_ipv6() {
            message.header.flags = AddressHeaderFlags::Nodad;
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        let flags = NLM_F_CREATE | NLM_F_REPLACE;
        self.request(RouteNetlinkMessage::NewAddress(message), flags)
            .map(drop)
    }

    /// Removes `addr` from interface `index`: `Ok(false)` if it was not there (nor the
    /// interface). An IPv4 address goes whatever prefix length it was given.
    ///
    /// # Errors
    ///
    /// The kernel refused (no `CAP_NET_ADMIN`, …).
    pub(crate) fn remove(&mut self, index: u32, addr: &VipAddr) -> io::Result<bool> {
        let message = address_message(index, addr);
        match self.request(RouteNetlinkMessage::DelAddress(message), 0) {
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::EADDRNOTAVAIL | libc::ENODEV)
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(error),
        }
    }

    /// Sends `message` and waits for its acknowledgement; returns the answer that came
    /// before it, if any.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Option<RouteNetlinkMessage>> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut request = NetlinkMessage::new(header, NetlinkPayload::from(message));
        request.finalize();
        let mut bytes = vec![0; request.buffer_len()];
        request.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        let mut answer = None;
        for _ in 0..DATAGRAMS_PER_REQUEST_MAX {
            self.answer.clear();
            let size = self.socket.recv(&mut self.answer, libc::MSG_TRUNC)?;
            if size > self.answer.len() {
                return Err(io::Error::other(format!(
                    "a netlink answer of {size} bytes, more than the {ANSWER_SIZE_MAX} read"
                )));
            }
            let mut offset = 0;
            while offset < size {
                let message =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.answer[offset..size])
                        .map_err(|error| {
                            io::Error::new(io::ErrorKind::InvalidData, error.to_string())
                        })?;
                let length = message.header.length as usize;
                if length == 0 {
                    break;
                }
                offset += length.next_multiple_of(NLMSG_ALIGN);
                if message.header.sequence_number != self.sequence {
                    continue; // a late answer to an earlier request
                }
                match message.payload {
                    NetlinkPayload::Error(error) if error.code.is_none() => return Ok(answer),
                    NetlinkPayload::Error(error) => return Err(error.to_io()),
                    NetlinkPayload::Done(_) => return Ok(answer),
                    NetlinkPayload::InnerMessage(inner) => answer = Some(inner),
                    _ => {}
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement from the kernel",
        ))
    }
}

/// An address message for `addr` on interface `index`, with the address as its local one.
fn address_message(index: u32, addr: &VipAddr) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = match addr.ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.prefix_len = addr.prefix;
    message.header.index = index;
    message.attributes.push(AddressAttribute::Local(addr.ip));
    message
}
