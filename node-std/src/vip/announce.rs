//! The announcements of an address just added: frames built by etherparse, sent whole
//! (Ethernet header included) through a packet socket bound to no protocol, so that it
//! receives nothing and costs nothing while it waits.
//!
//! - **IPv4**: a gratuitous ARP request, broadcast: sender and target protocol address both
//!   the virtual address, sender hardware address the interface's, target hardware address
//!   the broadcast one (as keepalived and `arping -U` send it). Linux takes a request whose
//!   sender and target are one address as gratuitous and updates an existing neighbour entry
//!   at once, whatever its lock time.
//! - **IPv6**: an unsolicited neighbour advertisement (RFC 4861 §7.2.6) from the address to
//!   all nodes (`ff02::1`, hop limit 255, as neighbour discovery requires), with the override
//!   flag and the target link-layer address option, so a neighbour replaces the entry it has.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::icmpv6::NeighborAdvertisementHeader;
use etherparse::{ArpEthIpv4Packet, ArpOperation, Icmpv6Type, PacketBuilder};
use socket2::{Domain, Protocol, SockAddr, SockAddrStorage, Socket, Type};

use super::{Link, VipAddr};

/// The Ethernet broadcast address.
const BROADCAST: [u8; 6] = [0xff; 6];
/// `ff02::1`, all nodes on the link.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// `ff02::1`'s Ethernet multicast address (`33:33` and its last 32 bits).
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// The hop limit neighbour discovery messages must carry (receivers drop any other).
const ND_HOP_LIMIT: u8 = 255;
/// The target link-layer address option's type, and its length in units of 8 bytes.
const OPTION_TARGET_LINK_LAYER: u8 = 2;
const OPTION_LENGTH_ONE: u8 = 1;
/// Ethernet type numbers, for the packet socket's address.
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// A packet socket that sends announcements.
pub(crate) struct Announcer {
    socket: Socket,
}

impl Announcer {
    /// Opens the socket (needs `CAP_NET_RAW`). Protocol 0: it receives no frame at all.
    ///
    /// # Errors
    ///
    /// The socket could not be opened.
    pub(crate) fn open() -> io::Result<Self> {
        let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))?;
        // The loop never waits on a send: a full queue loses this announcement, and the
        // burst's others or the next burst make up for it.
        socket.set_nonblocking(true)?;
        Ok(Self { socket })
    }

    /// Sends one announcement of `addr` on `link`.
    ///
    /// # Errors
    ///
    /// The frame could not be built or sent.
    pub(crate) fn announce(&self, link: &Link, addr: &VipAddr) -> io::Result<()> {
        let (frame, protocol, destination) = match addr.ip {
            IpAddr::V4(ip) => (gratuitous_arp(link.mac, ip)?, ETH_P_ARP, BROADCAST),
            IpAddr::V6(ip) => (
                unsolicited_advertisement(link.mac, ip)?,
                ETH_P_IPV6,
                ALL_NODES_MAC,
            ),
        };
        let to = link_address(link.index, protocol, destination)?;
        let sent = self.socket.send_to(&frame, &to)?;
        if sent != frame.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of the frame's {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }
}

/// A gratuitous ARP request for `ip` from `mac`, in its Ethernet frame.
pub(crate) fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> io::Result<Vec<u8>> {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac,
        sender_ipv4: ip.octets(),
        target_mac: BROADCAST,
        target_ipv4: ip.octets(),
    };
    let builder = PacketBuilder::ethernet2(mac, BROADCAST).arp(arp.to_arp_packet());
    let mut frame = Vec::with_capacity(builder.size());
    builder.write_to_vec(&mut frame).map_err(io::Error::other)?;
    Ok(frame)
}

/// An unsolicited neighbour advertisement of `ip` at `mac`, in its Ethernet frame.
pub(crate) fn unsolicited_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> io::Result<Vec<u8>> {
    let flags = NeighborAdvertisementHeader {
        router: false,
        solicited: false,
        r#override: true,
    };
    // The target address, then the target link-layer address option (RFC 4861 §4.4, §4.6.1).
    let mut payload = Vec::with_capacity(16 + 8);
    payload.extend_from_slice(&ip.octets());
    payload.extend_from_slice(&[OPTION_TARGET_LINK_LAYER, OPTION_LENGTH_ONE]);
    payload.extend_from_slice(&mac);
    let builder = PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(ip.octets(), ALL_NODES.octets(), ND_HOP_LIMIT)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(flags));
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write_to_vec(&mut frame, &payload)
        .map_err(io::Error::other)?;
    Ok(frame)
}

/// The packet socket address of interface `index`, for frames of Ethernet type `protocol`
/// to `destination`.
fn link_address(index: u32, protocol: u16, destination: [u8; 6]) -> io::Result<SockAddr> {
    let index = i32::try_from(index)
        .map_err(|_| io::Error::other(format!("interface index {index} out of range")))?;
    let mut storage = SockAddrStorage::zeroed();
    // SAFETY: socket2 has no constructor for a link-layer address. `sockaddr_ll` is one of
    // the platform's `sockaddr_*` types, smaller than the storage (view_as asserts it), and
    // every field is written below; zeroed storage is a valid `sockaddr_ll`.
    let address = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    address.sll_family = libc::AF_PACKET as libc::sa_family_t;
    address.sll_protocol = protocol.to_be();
    address.sll_ifindex = index;
    address.sll_halen = 6;
    address.sll_addr[..6].copy_from_slice(&destination);
    let length = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the storage holds an initialised `sockaddr_ll` of exactly that length.
    Ok(unsafe { SockAddr::new(storage, length) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x07];

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let ip = Ipv4Addr::new(10, 77, 0, 200);
        let frame = gratuitous_arp(MAC, ip).unwrap();
        assert_eq!(frame.len(), 14 + 28);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(ethernet)) = &packet.link else {
            panic!("not Ethernet: {packet:?}");
        };
        assert_eq!(ethernet.destination(), BROADCAST);
        assert_eq!(ethernet.source(), MAC);
        let Some(NetSlice::Arp(arp)) = packet.net else {
            panic!("not ARP: {packet:?}");
        };
        let arp = arp.to_packet().try_eth_ipv4().unwrap();
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(arp.sender_mac, MAC);
        assert_eq!(arp.sender_ipv4_addr(), ip);
        assert_eq!(arp.target_ipv4_addr(), ip);
    }

    #[test]
    fn an_unsolicited_advertisement_overrides_and_carries_the_link_address() {
        let ip: Ipv6Addr = "fd77::200".parse().unwrap();
        let frame = unsolicited_advertisement(MAC, ip).unwrap();
        assert_eq!(frame.len(), 14 + 40 + 8 + 16 + 8);
        let packet = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(ethernet)) = &packet.link else {
            panic!("not Ethernet: {packet:?}");
        };
        assert_eq!(ethernet.destination(), ALL_NODES_MAC);
        assert_eq!(ethernet.source(), MAC);
        let Some(NetSlice::Ipv6(ipv6)) = &packet.net else {
            panic!("not IPv6: {packet:?}");
        };
        let header = ipv6.header();
        assert_eq!(header.source_addr(), ip);
        assert_eq!(header.destination_addr(), ALL_NODES);
        assert_eq!(header.hop_limit(), ND_HOP_LIMIT);
        let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
            panic!("not ICMPv6: {packet:?}");
        };
        let Icmpv6Type::NeighborAdvertisement(flags) = icmp.icmp_type() else {
            panic!("not a neighbour advertisement: {:?}", icmp.icmp_type());
        };
        assert!(flags.r#override && !flags.solicited && !flags.router);
        let payload = icmp.payload();
        assert_eq!(&payload[..16], &ip.octets());
        assert_eq!(
            &payload[16..18],
            &[OPTION_TARGET_LINK_LAYER, OPTION_LENGTH_ONE]
        );
        assert_eq!(&payload[18..24], &MAC);
        // The checksum covers the pseudo-header: recomputed, it matches what was written.
        let expected = icmp
            .header()
            .icmp_type
            .calc_checksum(ip.octets(), ALL_NODES.octets(), payload)
            .unwrap();
        assert_eq!(icmp.checksum(), expected);
    }
}
