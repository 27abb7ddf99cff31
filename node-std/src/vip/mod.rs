//! `--vip <ip>/<prefix> --vip-dev <interface>`: addresses only the goose holds, as
//! keepalived's virtual IPs are, held and let go by the lease rule of [`crate::exec`].
//!
//! # When the node holds them
//!
//! The node's addresses are one [`GooseOnly`] resource, [`Vips`]: the node adds them to their
//! interfaces when the lease rule says hold (it is goose, with at least the grace of lease
//! left), and removes them when it says let go: when the lease left drops below the grace
//! (and the node steps down), so before the lease ends, and no other node can be elected
//! before that; when the node stops being goose any other way (a higher term, `ctl stop`,
//! leaving, a storage failure); and when a planned handoff begins, whose TimeoutNow waits until
//! [`GooseOnly::is_released`] says so. Removing an address is one rtnetlink request, which
//! the kernel has carried out by the time it answers: once released, the address is off the
//! interface, and the next goose can only add it after that.
//!
//! Each address added is announced, so that neighbours (clients, the router) send to this
//! machine at once rather than once their cache entry for the old holder has expired: for
//! IPv4 a gratuitous ARP request (sender and target the address, as keepalived and
//! `arping -U` send it), for IPv6 an unsolicited neighbour advertisement to all nodes with
//! the override flag ([`announce`]); [`ANNOUNCE_BURST`] at once and as many again
//! [`ANNOUNCE_AGAIN_AFTER`] later, keepalived's defaults (`vrrp_garp_master_repeat`,
//! `vrrp_garp_master_delay`). IPv6 addresses are added without duplicate address detection,
//! as keepalived adds them: the old holder has removed the address already, and detection
//! would keep it unusable for a second.
//!
//! # What the node cannot do: run
//!
//! A process killed with SIGKILL (or by the OOM killer, or a crash) runs nothing more, so
//! its addresses stay on the interface while the next goose adds them too: two machines then
//! answer for the address, each neighbour reaching whichever announced last (the new goose,
//! as soon as it holds it). Two things close that window, neither of them the dead process:
//! the systemd unit's `ExecStopPost` runs `goose vip-release` ([`release_command`]) once the
//! node has gone, however it went, and a node removes its addresses at start, before it
//! opens its socket ([`Vips::remove_stale`]). A frozen node (SIGSTOP, a paused VM) keeps them
//! until it resumes, when its lease is over and it removes them at once: the same case as the
//! `--exec` child's.
//!
//! # Capabilities
//!
//! Adding and removing addresses needs `CAP_NET_ADMIN`, sending the announcements (a packet
//! socket) `CAP_NET_RAW`: a node given `--vip` without both refuses to start
//! ([`check_capabilities`]). Every node lowers both from its ambient set at start
//! ([`keep_capabilities_to_itself`]), so its hooks, `--exec` child and check do not inherit
//! them from a unit that grants them.

mod announce;
mod netlink;

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::str::FromStr;

use caps::{CapSet, Capability};
use goose_core::{Duration, Instant, NodeId, Term};

use crate::exec::GooseOnly;

pub(crate) use self::announce::Announcer;
pub(crate) use self::netlink::Netlink;

/// The most addresses one node holds: far more than a service needs (one per address
/// family and network), few enough that `ctl status` stays one short line.
pub(crate) const VIPS_MAX: usize = 16;
/// Announcements sent at once for each address, at each burst.
pub(crate) const ANNOUNCE_BURST: u32 = 5;
/// Bursts per claim: one when the address is added, one [`ANNOUNCE_AGAIN_AFTER`] later, for
/// a switch or a neighbour that missed the first.
const ANNOUNCE_BURSTS: u8 = 2;
/// From the first burst to the second.
pub(crate) const ANNOUNCE_AGAIN_AFTER: Duration = Duration::from_millis(5_000);
/// The first wait before adding an address again after a failure; it doubles up to
/// [`ADD_RETRY_MAX`].
const ADD_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait between two attempts to add an address.
const ADD_RETRY_MAX: Duration = Duration::from_millis(10_000);
/// The wait between two attempts to remove an address that could not be removed.
const REMOVE_RETRY: Duration = Duration::from_millis(20);
/// Attempts to remove an address before the node gives up on it (and says so, loudly):
/// the node must be able to leave, and its unit's `ExecStopPost` tries again.
const REMOVE_ATTEMPTS_MAX: u32 = 50;
/// How long letting go of the addresses can take at most: a handoff waits this long for
/// them before it gives up and steps down instead.
pub(crate) const RELEASE_BOUND: Duration =
    Duration::from_millis(REMOVE_RETRY.millis() * REMOVE_ATTEMPTS_MAX as u64);

/// An address and its prefix length: `10.0.0.100/24`, `fd00::100/64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct VipAddr {
    pub(crate) ip: IpAddr,
    pub(crate) prefix: u8,
}

impl FromStr for VipAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let usage =
            || format!("expected <ip>/<prefix>, e.g. 10.0.0.100/24 or fd00::100/64, got {text:?}");
        let (ip, prefix) = text.split_once('/').ok_or_else(usage)?;
        let ip: IpAddr = ip.parse().map_err(|_| usage())?;
        let prefix: u8 = prefix.parse().map_err(|_| usage())?;
        let longest = if ip.is_ipv4() { 32 } else { 128 };
        if prefix == 0 || prefix > longest {
            return Err(format!(
                "{text:?}: the prefix length of an {} address is 1 to {longest}",
                if ip.is_ipv4() { "IPv4" } else { "IPv6" }
            ));
        }
        let refused = match ip {
            IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                Some("an IPv4-mapped address (give the IPv4 address)")
            }
            ip if ip.is_unspecified() => Some("the unspecified address"),
            ip if ip.is_loopback() => Some("a loopback address"),
            ip if ip.is_multicast() => Some("a multicast address"),
            _ => None,
        };
        if let Some(what) = refused {
            return Err(format!("{text:?} is {what}, not one a machine can hold"));
        }
        Ok(Self { ip, prefix })
    }
}

impl fmt::Display for VipAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.prefix)
    }
}

/// A network interface's name, as the kernel accepts it (at most 15 bytes, none of `/`,
/// `:` or white space) and as `ctl status` can list it (no `,`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Interface(String);

/// The longest interface name Linux takes (`IFNAMSIZ` less its NUL).
const INTERFACE_NAME_MAX: usize = 15;

impl FromStr for Interface {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let fits = (1..=INTERFACE_NAME_MAX).contains(&text.len());
        let allowed = |byte: u8| byte.is_ascii_graphic() && !matches!(byte, b'/' | b':' | b',');
        if !fits || text == "." || text == ".." || !text.bytes().all(allowed) {
            return Err(format!(
                "expected an interface name (1 to {INTERFACE_NAME_MAX} printable characters, \
                 none of / : , or spaces; `ip link` lists them), got {text:?}"
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

impl Interface {
    /// The name.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One `--vip` on its `--vip-dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Vip {
    pub(crate) addr: VipAddr,
    pub(crate) dev: Interface,
}

impl fmt::Display for Vip {
    /// `10.0.0.100/24@eth0`: how `ctl status` lists it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.addr, self.dev)
    }
}

/// Pairs every `--vip` with its `--vip-dev`: one `--vip-dev` for all of them, or one per
/// `--vip`, in the same order.
///
/// # Errors
///
/// Counts that do not pair, an address given twice, more than [`VIPS_MAX`].
pub(crate) fn pair(addrs: &[VipAddr], devs: &[Interface]) -> Result<Vec<Vip>, String> {
    let vips: Vec<Vip> = match (addrs.len(), devs) {
        (0, []) => return Ok(Vec::new()),
        (0, _) => return Err("--vip-dev without --vip".to_owned()),
        (_, [dev]) => addrs
            .iter()
            .map(|&addr| Vip {
                addr,
                dev: dev.clone(),
            })
            .collect(),
        (n, devs) if devs.len() == n => addrs
            .iter()
            .zip(devs)
            .map(|(&addr, dev)| Vip {
                addr,
                dev: dev.clone(),
            })
            .collect(),
        (n, devs) => {
            return Err(format!(
                "--vip given {n} times with --vip-dev {} times: give one --vip-dev for every \
                 --vip, or one per --vip in the same order",
                devs.len()
            ))
        }
    };
    if vips.len() > VIPS_MAX {
        return Err(format!(
            "{} --vip addresses; a node holds at most {VIPS_MAX}",
            vips.len()
        ));
    }
    for (index, vip) in vips.iter().enumerate() {
        if vips[..index]
            .iter()
            .any(|other| other.addr.ip == vip.addr.ip)
        {
            return Err(format!("--vip {} is given twice", vip.addr.ip));
        }
    }
    Ok(vips)
}

/// Refuses `vips` that are the node's own address (`--listen`, `--advertise`): the node would
/// remove it at start and whenever it is a duck, and cut itself off.
pub(crate) fn refuse_own_address(vips: &[Vip], own: &[IpAddr]) -> Option<String> {
    let vip = vips.iter().find(|vip| own.contains(&vip.addr.ip))?;
    Some(format!(
        "--vip {} is this node's own address (--listen or --advertise): the node removes its \
         virtual addresses whenever it is not goose, and would cut itself off. A virtual \
         address must be one that no machine holds by itself",
        vip.addr
    ))
}

/// An interface as the announcements need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Link {
    /// The kernel's index of the interface.
    pub(crate) index: u32,
    /// Its Ethernet address, the announcements' sender.
    pub(crate) mac: [u8; 6],
}

/// What [`Vips`] asks of the machine: the real one is [`System`]; the tests give a fake.
pub(crate) trait Stack {
    /// The Ethernet interface named `name`.
    fn link(&mut self, name: &str) -> io::Result<Link>;
    /// Adds `addr` to the interface (done if it is there already).
    fn add(&mut self, link: &Link, addr: &VipAddr) -> io::Result<()>;
    /// Removes `addr` from interface `index`; `Ok(false)` if it was not there (nor the
    /// interface).
    fn remove(&mut self, index: u32, addr: &VipAddr) -> io::Result<bool>;
    /// Sends one announcement of `addr` on the interface.
    fn announce(&mut self, link: &Link, addr: &VipAddr) -> io::Result<()>;
}

/// The machine's own network stack: rtnetlink for addresses, a packet socket for
/// announcements.
pub(crate) struct System {
    netlink: Netlink,
    announcer: Announcer,
}

impl System {
    /// Opens the netlink and packet sockets.
    ///
    /// # Errors
    ///
    /// Either socket could not be opened (no `CAP_NET_RAW` for the packet socket).
    pub(crate) fn open() -> io::Result<Self> {
        Ok(Self {
            netlink: Netlink::open()?,
            announcer: Announcer::open()?,
        })
    }
}

impl Stack for System {
    fn link(&mut self, name: &str) -> io::Result<Link> {
        self.netlink.link(name)
    }

    fn add(&mut self, link: &Link, addr: &VipAddr) -> io::Result<()> {
        self.netlink.add(link.index, addr)
    }

    fn remove(&mut self, index: u32, addr: &VipAddr) -> io::Result<bool> {
        self.netlink.remove(index, addr)
    }

    fn announce(&mut self, link: &Link, addr: &VipAddr) -> io::Result<()> {
        self.announcer.announce(link, addr)
    }
}

/// One address of a node, and where holding or letting go of it has got.
#[derive(Debug)]
struct Entry {
    vip: Vip,
    /// The interface it was added to, until it is removed.
    on: Option<Link>,
    /// When to try again to add it (while held) or remove it (while let go) after a failure.
    retry_at: Option<Instant>,
    /// Failures in a row of the current attempt (adding, or removing).
    failures: u32,
    /// The next burst of announcements, and how many bursts are left with it.
    announce: Option<(Instant, u8)>,
}

/// The addresses of one node: a [`GooseOnly`] resource (module docs).
pub(crate) struct Vips<S: Stack = System> {
    id: NodeId,
    stack: S,
    entries: Vec<Entry>,
    /// The goose term they are held for; `None` while they must not be held.
    term: Option<Term>,
    /// `ctl status`'s `vips=`: the addresses on their interfaces now.
    held: String,
}

impl Vips<System> {
    /// Node `id`'s addresses on the machine's own stack, each interface checked (it exists and
    /// is Ethernet).
    ///
    /// # Errors
    ///
    /// A message naming the problem and the fix: a socket that cannot be opened, an interface
    /// that does not exist or cannot carry announcements.
    pub(crate) fn open(id: NodeId, vips: Vec<Vip>) -> Result<Self, String> {
        let stack = System::open().map_err(|error| {
            format!(
                "--vip: cannot open the netlink or packet socket: {error} (it needs \
                 CAP_NET_RAW, and AF_NETLINK and AF_PACKET sockets: a systemd unit's \
                 RestrictAddressFamilies= must allow both)"
            )
        })?;
        let mut vips = Self::new(id, vips, stack);
        for entry in &vips.entries {
            vips.stack.link(entry.vip.dev.as_str()).map_err(|error| {
                format!(
                    "--vip-dev {}: {error} (`ip link` lists this machine's interfaces)",
                    entry.vip.dev
                )
            })?;
        }
        Ok(vips)
    }
}

impl<S: Stack> Vips<S> {
    /// Node `id`'s addresses on `stack`, none held yet.
    pub(crate) fn new(id: NodeId, vips: Vec<Vip>, stack: S) -> Self {
        let entries = vips
            .into_iter()
            .map(|vip| Entry {
                vip,
                on: None,
                retry_at: None,
                failures: 0,
                announce: None,
            })
            .collect();
        Self {
            id,
            stack,
            entries,
            term: None,
            held: String::new(),
        }
    }

    /// At start, before anything else: removes every address of this node that is on its
    /// interface (an earlier run died as goose and could not), and says so.
    ///
    /// # Errors
    ///
    /// One that could not be removed: the node must not start while it may hold one.
    pub(crate) fn remove_stale(&mut self) -> Result<(), String> {
        let id = self.id;
        for entry in &self.entries {
            let vip = &entry.vip;
            let removed = match self.stack.link(vip.dev.as_str()) {
                Ok(link) => self.stack.remove(link.index, &vip.addr),
                Err(error) => Err(error),
            };
            match removed {
                Ok(true) => log::warn!(
                    "node {id}: removed {} from {} at start: an earlier run of this node held \
                     it and could not let go of it (killed, or a crash)",
                    vip.addr,
                    vip.dev
                ),
                Ok(false) => {}
                Err(error) => {
                    return Err(format!(
                        "cannot remove {} from {} at start: {error}; refusing to start while \
                         it may still be there (remove it with `ip addr del {} dev {}`)",
                        vip.addr, vip.dev, vip.addr, vip.dev
                    ))
                }
            }
        }
        Ok(())
    }

    /// `ctl status`'s `vips=` value: the addresses held now, `<ip>/<prefix>@<interface>`,
    /// comma-separated.
    pub(crate) fn held(&self) -> &str {
        &self.held
    }

    fn describe(&mut self) {
        self.held.clear();
        for entry in self.entries.iter().filter(|entry| entry.on.is_some()) {
            if !self.held.is_empty() {
                self.held.push(',');
            }
            self.held.push_str(&entry.vip.to_string());
        }
    }

    /// Adds, announces or removes `entry` as `term` says, when due.
    fn tend(stack: &mut S, id: NodeId, term: Option<Term>, entry: &mut Entry, now: Instant) {
        let due = entry.retry_at.is_none_or(|at| now >= at);
        if let (Some(term), None, true) = (term, entry.on, due) {
            // Announced at once below, in the same turn.
            add(stack, id, term, entry, now);
        }
        match (term, entry.on) {
            (Some(term), Some(link)) => {
                if let Some((at, left)) = entry.announce.filter(|(at, _)| now >= *at) {
                    announce_burst(stack, id, term, entry, &link);
                    let left = left.saturating_sub(1);
                    entry.announce = (left > 0).then_some((at + ANNOUNCE_AGAIN_AFTER, left));
                }
            }
            (None, Some(link)) if due => remove(stack, id, entry, &link, now),
            _ => {}
        }
    }
}

fn add<S: Stack>(stack: &mut S, id: NodeId, term: Term, entry: &mut Entry, now: Instant) {
    let vip = &entry.vip;
    let added = stack
        .link(vip.dev.as_str())
        .and_then(|link| stack.add(&link, &vip.addr).map(|()| link));
    match added {
        Ok(link) => {
            log::info!("node {id} term {term}: holding {} on {}", vip.addr, vip.dev);
            entry.on = Some(link);
            entry.failures = 0;
            entry.retry_at = None;
            entry.announce = Some((now, ANNOUNCE_BURSTS));
        }
        Err(error) => {
            entry.failures = entry.failures.saturating_add(1);
            let doublings = entry.failures.saturating_sub(1).min(16);
            let wait = Duration::from_micros(
                ADD_RETRY_INITIAL
                    .micros()
                    .saturating_mul(1 << doublings)
                    .min(ADD_RETRY_MAX.micros()),
            );
            entry.retry_at = Some(now + wait);
            log::error!(
                "node {id} term {term}: cannot add {} to {}: {error}; trying again in {} ms",
                vip.addr,
                vip.dev,
                wait.millis()
            );
        }
    }
}

fn announce_burst<S: Stack>(stack: &mut S, id: NodeId, term: Term, entry: &Entry, link: &Link) {
    let vip = &entry.vip;
    let mut failed = None;
    for _ in 0..ANNOUNCE_BURST {
        if let Err(error) = stack.announce(link, &vip.addr) {
            failed = Some(error);
        }
    }
    match failed {
        None => log::debug!(
            "node {id} term {term}: announced {} on {} ({ANNOUNCE_BURST} times)",
            vip.addr,
            vip.dev
        ),
        Some(error) => log::warn!(
            "node {id} term {term}: cannot announce {} on {}: {error} (neighbours learn the \
             new holder when their cache entry expires)",
            vip.addr,
            vip.dev
        ),
    }
}

fn remove<S: Stack>(stack: &mut S, id: NodeId, entry: &mut Entry, link: &Link, now: Instant) {
    let vip = &entry.vip;
    match stack.remove(link.index, &vip.addr) {
        Ok(_) => {
            log::info!("node {id}: released {} from {}", vip.addr, vip.dev);
            entry.on = None;
            entry.failures = 0;
            entry.retry_at = None;
        }
        Err(error) => {
            entry.failures = entry.failures.saturating_add(1);
            if entry.failures >= REMOVE_ATTEMPTS_MAX {
                log::error!(
                    "node {id}: cannot remove {} from {} after {REMOVE_ATTEMPTS_MAX} attempts \
                     ({error}); giving up: remove it by hand (`ip addr del {} dev {}`, or \
                     `goose vip-release`)",
                    vip.addr,
                    vip.dev,
                    vip.addr,
                    vip.dev
                );
                entry.on = None;
                entry.failures = 0;
                entry.retry_at = None;
                return;
            }
            entry.retry_at = Some(now + REMOVE_RETRY);
            log::warn!(
                "node {id}: cannot remove {} from {}: {error}; trying again in {} ms",
                vip.addr,
                vip.dev,
                REMOVE_RETRY.millis()
            );
        }
    }
}

impl<S: Stack> GooseOnly for Vips<S> {
    fn hold(&mut self, now: Instant, term: Term) {
        if self.term != Some(term) {
            self.term = Some(term);
            for entry in &mut self.entries {
                entry.failures = 0;
                entry.retry_at = None;
                // A new term is a new claim: neighbours hear it again.
                if entry.on.is_some() {
                    entry.announce = Some((now, ANNOUNCE_BURSTS));
                }
            }
        }
        self.poll(now);
    }

    fn release(&mut self, now: Instant, _by: Instant) {
        // Removing takes one request: at once, whatever time `by` allows.
        if self.term.take().is_some() {
            for entry in &mut self.entries {
                entry.announce = None;
                entry.failures = 0;
                entry.retry_at = None;
            }
        }
        self.poll(now);
    }

    fn is_released(&self) -> bool {
        self.entries.iter().all(|entry| entry.on.is_none())
    }

    fn poll(&mut self, now: Instant) {
        let (id, term) = (self.id, self.term);
        for entry in &mut self.entries {
            Self::tend(&mut self.stack, id, term, entry, now);
        }
        self.describe();
    }

    fn deadline(&self) -> Option<Instant> {
        let waiting = self.entries.iter().filter_map(|entry| {
            let pending = match (self.term, entry.on) {
                (Some(_), None) | (None, Some(_)) => entry.retry_at,
                _ => None,
            };
            let announce = entry.on.and(entry.announce).map(|(at, _)| at);
            pending.into_iter().chain(announce).min()
        });
        waiting.min()
    }

    fn status_field(&self) -> Option<(&'static str, &str)> {
        Some(("vips", self.held()))
    }
}

impl<S: Stack> Drop for Vips<S> {
    /// However the loop ends (a second signal, an error), nothing stays held: removing an
    /// address is always safe, only holding one needs the lease.
    fn drop(&mut self) {
        let id = self.id;
        for entry in &mut self.entries {
            let Some(link) = entry.on.take() else {
                continue;
            };
            match self.stack.remove(link.index, &entry.vip.addr) {
                Ok(_) => log::info!(
                    "node {id}: released {} from {}",
                    entry.vip.addr,
                    entry.vip.dev
                ),
                Err(error) => log::error!(
                    "node {id}: cannot remove {} from {} while exiting: {error}",
                    entry.vip.addr,
                    entry.vip.dev
                ),
            }
        }
    }
}

/// How to give a node the capabilities `--vip` needs.
const CAPABILITIES_FIX: &str = "--vip needs CAP_NET_ADMIN (addresses) and CAP_NET_RAW \
    (announcements): run the node as root, or grant them (systemd: \
    AmbientCapabilities=CAP_NET_ADMIN CAP_NET_RAW, as deploy/goose.service does; by hand: \
    setcap cap_net_admin,cap_net_raw+ep on the binary)";

/// Whether this process may do what `--vip` does: both capabilities effective.
///
/// # Errors
///
/// The message that refuses the start, naming what is missing and how to grant it.
pub(crate) fn check_capabilities() -> Result<(), String> {
    let needed = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW];
    let mut missing = Vec::new();
    for capability in needed {
        match caps::has_cap(None, CapSet::Effective, capability) {
            Ok(true) => {}
            Ok(false) => missing.push(capability.to_string()),
            Err(error) => return Err(format!("cannot read this process's capabilities: {error}")),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "this process lacks {}; {CAPABILITIES_FIX}",
        missing.join(" and ")
    ))
}

/// Lowers `CAP_NET_ADMIN` and `CAP_NET_RAW` from the ambient set, so that nothing the node
/// starts (hooks, the `--exec` child, the check) inherits them: a unit grants them for the
/// node's own addresses, not for the job. The node keeps them for itself.
pub(crate) fn keep_capabilities_to_itself() {
    for capability in [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW] {
        if caps::has_cap(None, CapSet::Ambient, capability).unwrap_or(false) {
            if let Err(error) = caps::drop(None, CapSet::Ambient, capability) {
                log::warn!("cannot keep {capability} from the node's children: {error}");
            }
        }
    }
}

/// `goose vip-release`: removes `vips` from their interfaces, for a node that is not running
/// (the unit's `ExecStopPost`, after the node has gone however it went). With `data_dir`, it
/// first makes sure no node runs on it (a running node lets go of its addresses itself, and
/// taking them from a goose would cut its clients off). Exit 0 when every address is gone
/// (removed now, or not there), 1 otherwise.
pub(crate) fn release_command(vips: &[Vip], data_dir: Option<&Path>) -> ExitCode {
    if vips.is_empty() {
        eprintln!("goose vip-release: no --vip given (nor in --config): nothing to release");
        return ExitCode::SUCCESS;
    }
    // Held until the addresses are removed, so that no node starts meanwhile and claims one.
    let _lock = match data_dir.filter(|dir| dir.is_dir()) {
        Some(dir) => match crate::storage_file::DataDir::open(dir) {
            Ok(lock) => Some(lock),
            Err(error) => {
                eprintln!(
                    "goose vip-release: {error}: that node lets go of its addresses itself; \
                     stop it first"
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    if let Err(message) = check_capabilities() {
        eprintln!("goose vip-release: {message}");
        return ExitCode::FAILURE;
    }
    let mut stack = match System::open() {
        Ok(stack) => stack,
        Err(error) => {
            eprintln!("goose vip-release: cannot open the netlink or packet socket: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for vip in vips {
        let removed = match stack.link(vip.dev.as_str()) {
            Ok(link) => stack.remove(link.index, &vip.addr),
            // No interface, no address on it.
            Err(error) if error.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            Err(error) => Err(error),
        };
        match removed {
            Ok(true) => println!("removed {} from {}", vip.addr, vip.dev),
            Ok(false) => println!("{} was not on {}", vip.addr, vip.dev),
            Err(error) => {
                eprintln!(
                    "goose vip-release: cannot remove {} from {}: {error}",
                    vip.addr, vip.dev
                );
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests;
