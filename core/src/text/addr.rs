//! Socket addresses as the text protocol reads and writes them (`127.0.0.1:9901`,
//! `[::1]:9901`, `[fe80::1%2]:9901`): the strings `core::net`'s `FromStr` accepts and the
//! bytes its `Display` writes, exactly (the tests compare the two over every form and
//! hundreds of thousands of generated strings), in a fraction of the flash. A board pays
//! for every byte: `core::net`'s parser and printer, with its padding machinery, cost the
//! QEMU firmware about 4.8 KB.

use core::fmt::{self, Write};

use super::digits::write_number;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Parses `ip:port`, `[ipv6]:port` or `[ipv6%scope]:port` as `SocketAddr::from_str` does.
pub fn parse_socket_addr(text: &str) -> Option<SocketAddr> {
    let mut cursor = Cursor::new(text);
    let addr = match cursor.atomic(Cursor::socket_v4) {
        Some(addr) => SocketAddr::V4(addr),
        None => SocketAddr::V6(cursor.atomic(Cursor::socket_v6)?),
    };
    cursor.end(addr)
}

/// Parses a dotted IPv4 address as `Ipv4Addr::from_str` does (no leading zeros).
pub fn parse_ipv4(text: &str) -> Option<Ipv4Addr> {
    let mut cursor = Cursor::new(text);
    let ip = cursor.atomic(Cursor::ipv4)?;
    cursor.end(ip)
}

/// Writes a socket address as its `Display` does (without width or precision).
pub struct AddrText(pub SocketAddr);

impl AddrText {
    /// Writes the address into `f` without `core::fmt`'s formatting machinery, which a
    /// reply naming an address would otherwise link.
    ///
    /// # Errors
    /// Only those of `f`.
    pub fn write_to(&self, f: &mut impl Write) -> fmt::Result {
        match self.0 {
            SocketAddr::V4(addr) => write_ipv4(f, *addr.ip())?,
            SocketAddr::V6(addr) => {
                f.write_char('[')?;
                write_ipv6(f, addr.ip())?;
                if addr.scope_id() != 0 {
                    f.write_char('%')?;
                    write_number(f, u64::from(addr.scope_id()), 10, 1)?;
                }
                f.write_char(']')?;
            }
        }
        f.write_char(':')?;
        write_number(f, u64::from(self.0.port()), 10, 1)
    }
}

impl fmt::Display for AddrText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

fn write_ipv4(f: &mut impl Write, ip: Ipv4Addr) -> fmt::Result {
    for (index, octet) in ip.octets().into_iter().enumerate() {
        if index > 0 {
            f.write_char('.')?;
        }
        write_number(f, u64::from(octet), 10, 1)?;
    }
    Ok(())
}

/// RFC 5952 as `core::net` writes it: the longest run of two or more zero groups (the
/// first of equals) as `::`, and an IPv4-mapped address as `::ffff:a.b.c.d`.
fn write_ipv6<W: Write>(f: &mut W, ip: &Ipv6Addr) -> fmt::Result {
    if let Some(v4) = ip.to_ipv4_mapped() {
        f.write_str("::ffff:")?;
        return write_ipv4(f, v4);
    }
    let groups = ip.segments();
    let (mut zeros_at, mut zeros_len, mut run) = (0, 0, 0);
    for (index, group) in groups.into_iter().enumerate() {
        run = if group == 0 { run + 1 } else { 0 };
        if run > zeros_len {
            (zeros_at, zeros_len) = (index + 1 - run, run);
        }
    }
    let write_groups = |f: &mut W, groups: &[u16]| -> fmt::Result {
        for (index, group) in groups.iter().enumerate() {
            if index > 0 {
                f.write_char(':')?;
            }
            write_number(f, u64::from(*group), 16, 1)?;
        }
        Ok(())
    };
    if zeros_len > 1 {
        write_groups(f, &groups[..zeros_at])?;
        f.write_str("::")?;
        write_groups(f, &groups[zeros_at + zeros_len..])
    } else {
        write_groups(f, &groups)
    }
}

/// The parser's position in the text. Each `Option`-returning step consumes what it read
/// on success; [`Cursor::atomic`] puts the position back when a step fails, which is how
/// `core::net` backtracks, so both accept the same strings.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn end<T>(&self, value: T) -> Option<T> {
        (self.at == self.bytes.len()).then_some(value)
    }

    fn atomic<T>(&mut self, step: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let at = self.at;
        let value = step(self);
        if value.is_none() {
            self.at = at;
        }
        value
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    /// A number in `radix` up to `max`: more than `max_digits` digits (if given) fails, as
    /// does a leading zero before another digit unless `zero_prefix`.
    fn number(
        &mut self,
        radix: u32,
        max_digits: Option<u32>,
        zero_prefix: bool,
        max: u32,
    ) -> Option<u32> {
        self.atomic(|cursor| {
            let leading_zero = cursor.bytes.get(cursor.at) == Some(&b'0');
            let (mut value, mut digits) = (0u64, 0u32);
            while let Some(digit) = cursor
                .bytes
                .get(cursor.at)
                .and_then(|byte| char::from(*byte).to_digit(radix))
            {
                cursor.at += 1;
                digits += 1;
                value = value * u64::from(radix) + u64::from(digit);
                if max_digits.is_some_and(|most| digits > most) || value > u64::from(max) {
                    return None;
                }
            }
            let refused = digits == 0 || (leading_zero && digits > 1 && !zero_prefix);
            (!refused).then_some(value as u32)
        })
    }

    fn port(&mut self) -> Option<u16> {
        self.eat(b':')?;
        self.number(10, None, true, u16::MAX.into())
            .map(|port| port as u16)
    }

    fn ipv4(&mut self) -> Option<Ipv4Addr> {
        let mut octets = [0u8; 4];
        for (index, octet) in octets.iter_mut().enumerate() {
            if index > 0 {
                self.eat(b'.')?;
            }
            *octet = self.number(10, Some(3), false, u8::MAX.into())? as u8;
        }
        Some(Ipv4Addr::from(octets))
    }

    /// Up to `groups.len()` groups separated by `:`, the last two possibly as an IPv4
    /// address: how many were read, and whether the IPv4 form ended them.
    fn groups(&mut self, groups: &mut [u16]) -> (usize, bool) {
        let limit = groups.len();
        for index in 0..limit {
            if index + 1 < limit {
                let v4 = self.atomic(|cursor| {
                    if index > 0 {
                        cursor.eat(b':')?;
                    }
                    cursor.ipv4()
                });
                if let Some(v4) = v4 {
                    let [a, b, c, d] = v4.octets();
                    groups[index] = u16::from_be_bytes([a, b]);
                    groups[index + 1] = u16::from_be_bytes([c, d]);
                    return (index + 2, true);
                }
            }
            let group = self.atomic(|cursor| {
                if index > 0 {
                    cursor.eat(b':')?;
                }
                cursor.number(16, Some(4), true, u16::MAX.into())
            });
            match group {
                Some(group) => groups[index] = group as u16,
                None => return (index, false),
            }
        }
        (limit, false)
    }

    fn ipv6(&mut self) -> Option<Ipv6Addr> {
        self.atomic(|cursor| {
            let mut head = [0u16; 8];
            let (head_len, head_v4) = cursor.groups(&mut head);
            if head_len == 8 {
                return Some(Ipv6Addr::from(head));
            }
            // IPv4's form only ends an address, and fewer than 8 groups need a `::`.
            if head_v4 {
                return None;
            }
            cursor.eat(b':')?;
            cursor.eat(b':')?;
            // `::` stands for one zero group at least.
            let mut tail = [0u16; 7];
            let (tail_len, _) = cursor.groups(&mut tail[..7 - head_len]);
            head[8 - tail_len..].copy_from_slice(&tail[..tail_len]);
            Some(Ipv6Addr::from(head))
        })
    }

    fn socket_v4(&mut self) -> Option<SocketAddrV4> {
        let ip = self.ipv4()?;
        Some(SocketAddrV4::new(ip, self.port()?))
    }

    fn socket_v6(&mut self) -> Option<SocketAddrV6> {
        self.eat(b'[')?;
        let ip = self.ipv6()?;
        let scope = self.atomic(|cursor| {
            cursor.eat(b'%')?;
            cursor.number(10, None, true, u32::MAX)
        });
        self.eat(b']')?;
        Some(SocketAddrV6::new(ip, self.port()?, 0, scope.unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::{parse_ipv4, parse_socket_addr, AddrText};
    use crate::rand::Rand;
    use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
    use std::string::{String, ToString};
    use std::vec::Vec;

    /// Ours against `core::net`'s on one string: the same answer, and a parsed address
    /// written back the same way.
    fn same(text: &str) {
        let ours = parse_socket_addr(text);
        assert_eq!(ours, text.parse::<SocketAddr>().ok(), "{text:?}");
        assert_eq!(parse_ipv4(text), text.parse::<Ipv4Addr>().ok(), "{text:?}");
        if let Some(addr) = ours {
            assert_eq!(AddrText(addr).to_string(), addr.to_string(), "{text:?}");
        }
    }

    #[test]
    fn every_form_parses_and_prints_as_core_net_does() {
        let accepted = [
            "127.0.0.1:9901",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "1.2.3.4:0080",
            "[::]:1",
            "[::1]:9901",
            "[1::]:1",
            "[1:2:3:4:5:6:7:8]:1",
            "[1:2:3:4:5:6::8]:1",
            "[1:2:3:4:5:6:7::]:1",
            "[1::4:5:6:7:8]:1",
            "[1:0:0:4:0:0:0:8]:1",
            "[1:0:0:4:5:0:0:8]:1",
            "[0:0:1:0:0:1:0:0]:1",
            "[FFFF:abcd::0DB8]:1",
            "[0000:0000::0001]:1",
            "[::ffff:192.0.2.1]:1",
            "[::192.0.2.1]:1",
            "[64:ff9b::192.0.2.33]:1",
            "[1:2:3:4:5:6:1.2.3.4]:1",
            "[fe80::1%2]:65535",
            "[fe80::1%4294967295]:1",
            "[fe80::1%007]:1",
        ];
        for text in accepted {
            assert!(parse_socket_addr(text).is_some(), "{text}");
            same(text);
        }
        let refused = [
            "",
            "1.2.3.4",
            "1.2.3.4:",
            "1.2.3.4:65536",
            "01.2.3.4:1",
            "1.2.3.256:1",
            "1.2.3.1234:1",
            "1.2.3:1",
            "1.2.3.4.5:1",
            "1.2.3.4:1 ",
            " 1.2.3.4:1",
            "::1:1",
            "[::1]",
            "[::1]:",
            "[::1%]:1",
            "[::1%4294967296]:1",
            "[1:2:3:4:5:6:7:8:9]:1",
            "[1::2::3]:1",
            "[12345::]:1",
            "[1.2.3.4::]:1",
            "[1:2:3:4:5:6:7:1.2.3.4]:1",
            "[:::]:1",
            "[::1]:+1",
            "1.2.3.+4:1",
            "localhost:80",
        ];
        for text in refused {
            assert!(parse_socket_addr(text).is_none(), "{text}");
            same(text);
        }
        for text in [
            "1.2.3.4",
            "0.0.0.0",
            "01.1.1.1",
            "1.1.1",
            "256.1.1.1",
            "1.1.1.1 ",
        ] {
            same(text);
        }
    }

    #[test]
    fn generated_strings_parse_as_core_net_does() {
        let alphabet = b"0123456789aAfF:.[]%:::...0000";
        let mut rand = Rand::new(0x5EED);
        for _ in 0..300_000 {
            let len = rand.range_inclusive(0, 24) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rand.range_inclusive(0, alphabet.len() as u64 - 1) as usize])
                .collect();
            same(core::str::from_utf8(&bytes).unwrap());
        }
    }

    #[test]
    fn generated_addresses_print_and_parse_back_as_core_net_does() {
        let mut rand = Rand::new(0xADD2);
        for _ in 0..100_000 {
            // Groups mostly zero or small, so runs of zeros and every compression occur.
            let mut groups = [0u16; 8];
            for group in &mut groups {
                *group = match rand.range_inclusive(0, 3) {
                    0 | 1 => 0,
                    2 => rand.range_inclusive(0, 0xF) as u16,
                    _ => rand.next_u64() as u16,
                };
            }
            if rand.range_inclusive(0, 7) == 0 {
                groups[..6].copy_from_slice(&[0, 0, 0, 0, 0, 0xFFFF]);
            }
            let scope = match rand.range_inclusive(0, 3) {
                0 => rand.next_u64() as u32,
                _ => 0,
            };
            let port = rand.next_u64() as u16;
            let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(groups), port, 0, scope));
            let bytes = rand.next_u64().to_be_bytes();
            let v4 = SocketAddr::from(([bytes[0], bytes[1], bytes[2], bytes[3]], port));
            for addr in [v6, v4] {
                let text: String = AddrText(addr).to_string();
                assert_eq!(text, addr.to_string());
                same(&text);
                assert_eq!(parse_socket_addr(&text), Some(addr));
            }
        }
    }
}
