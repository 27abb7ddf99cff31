//! A probe flood against a real flock, and a watch on the flock while it lasts, for
//! `bin/bench_flood.rs` and `tests/flood.rs`.
//!
//! A [`Flooder`] sends `whois-goose` from several source addresses (127.0.0.10, .11, …:
//! the whole of 127.0.0.0/8 is local on Linux, so no setup is needed), as fast as it can
//! or at a set rate, in `sendmmsg(2)` batches from a few threads, and counts the replies
//! that come back to those sources. A [`Watcher`] meanwhile asks every node for
//! `ctl status` from 127.0.0.1 every [`SAMPLE_EVERY`], and records terms, geese, and the
//! counters the flood moves. [`socket_drops`] reads the kernel's count of datagrams a
//! node's socket dropped because its receive buffer was full.
//!
//! Every thread stops at its deadline, and every loop has a bound.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::load::{sockaddr, socklen};
use crate::procs::{gather, parse_status, Flock, Status};

/// The probe every flooder sends.
pub const PROBE: &[u8] = b"whois-goose";
/// Source addresses available: 127.0.0.10 up to 127.0.0.(10 + this − 1).
pub const SOURCES_MAX: usize = 64;
/// How often the [`Watcher`] samples the flock.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How long a sample waits for the nodes' `ctl status` replies.
const SAMPLE_WINDOW: Duration = Duration::from_millis(100);
/// First octet-4 of the flood's source addresses.
const SOURCE_FIRST: u8 = 10;
/// Receive buffer asked for each flooder socket, so replies are not lost at the flooder
/// (Linux caps it at `net.core.rmem_max`).
const FLOODER_RECEIVE_BUFFER_SIZE: libc::c_int = 4 << 20;
/// Replies read per source between two batches, at most.
const REPLIES_PER_DRAIN_MAX: usize = 4096;
/// Largest reply read (a probe reply is about 30 bytes).
const REPLY_SIZE_MAX: usize = 512;
/// Largest `sendmmsg` batch.
pub const BATCH_MAX: usize = 1024;
/// A flood never runs longer than this, whatever it is asked.
const FLOOD_DURATION_MAX: Duration = Duration::from_secs(600);
/// Samples taken at most by one watcher (an hour at [`SAMPLE_EVERY`]).
const SAMPLES_MAX: usize = 36_000;

/// Which nodes the flood is aimed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aim {
    /// The goose only.
    Goose,
    /// Every node, round-robin within each batch.
    All,
}

/// How to flood.
#[derive(Clone, Debug)]
pub struct FloodConfig {
    /// Source addresses (127.0.0.10 …), each its own socket; at most [`SOURCES_MAX`].
    pub sources: usize,
    /// Sending threads; the sources are dealt out among them.
    pub threads: usize,
    /// How long to flood.
    pub duration: Duration,
    /// Datagrams per second, all threads together; `None`: as fast as they can.
    pub rate: Option<u64>,
    /// Datagrams per `sendmmsg` call, at most [`BATCH_MAX`].
    pub batch: usize,
    /// `nice` value of the sending threads (0: as the bench itself). On a machine with
    /// few cores, a positive value keeps the flood from simply out-competing the nodes
    /// for the CPU, which an attacker on another machine could not do.
    pub nice: i32,
}

/// What a flood sent and got back.
#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    /// Datagrams sent (accepted by the kernel).
    pub sent: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// `sendmmsg` calls that failed (e.g. `EAGAIN`).
    pub send_errors: u64,
    /// Replies received by the sources.
    pub replies: u64,
    /// Their bytes.
    pub reply_bytes: u64,
    /// Replies per source address.
    pub replies_per_source: Vec<u64>,
    /// From the first send to the last thread's end.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Datagrams sent per second.
    pub fn sent_per_s(&self) -> f64 {
        per_second(self.sent, self.elapsed)
    }

    /// Replies received per second.
    pub fn replies_per_s(&self) -> f64 {
        per_second(self.replies, self.elapsed)
    }

    /// Reply bytes per probe byte sent: above 1, the node amplifies.
    pub fn amplification(&self) -> f64 {
        if self.sent_bytes == 0 {
            return 0.0;
        }
        self.reply_bytes as f64 / self.sent_bytes as f64
    }
}

/// `count / elapsed` in seconds, 0 for no time.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// A running flood: [`Flooder::finish`] waits for it and returns its figures.
#[derive(Debug)]
pub struct Flooder {
    stop: Arc<AtomicBool>,
    started: Instant,
    sources: usize,
    threads: Vec<JoinHandle<io::Result<Vec<SourceCount>>>>,
}

/// One source's counts, with its index.
#[derive(Clone, Copy, Debug, Default)]
struct SourceCount {
    index: usize,
    sent: u64,
    send_errors: u64,
    replies: u64,
    reply_bytes: u64,
}

/// One source: its socket and counts.
struct Source {
    socket: UdpSocket,
    count: SourceCount,
}

impl Flooder {
    /// Starts flooding `targets` with `config`.
    ///
    /// # Errors
    ///
    /// If a source socket cannot be bound or set up.
    ///
    /// # Panics
    ///
    /// If `config` asks for no targets, no threads, more than [`SOURCES_MAX`] sources or a
    /// batch outside 1..=[`BATCH_MAX`].
    pub fn start(targets: &[SocketAddrV4], config: &FloodConfig) -> io::Result<Self> {
        assert!(!targets.is_empty(), "a flood needs a target");
        assert!(
            (1..=SOURCES_MAX).contains(&config.sources),
            "1..={SOURCES_MAX} sources"
        );
        assert!(
            (1..=config.sources).contains(&config.threads),
            "1..=sources threads"
        );
        assert!(
            (1..=BATCH_MAX).contains(&config.batch),
            "1..={BATCH_MAX} per batch"
        );
        let mut dealt: Vec<Vec<Source>> = (0..config.threads).map(|_| Vec::new()).collect();
        for index in 0..config.sources {
            dealt[index % config.threads].push(bind_source(index)?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let deadline = started + config.duration.min(FLOOD_DURATION_MAX);
        let rate = config
            .rate
            .map(|rate| rate / u64::try_from(config.threads).unwrap_or(1));
        let threads = dealt
            .into_iter()
            .map(|sources| {
                let (stop, targets) = (Arc::clone(&stop), targets.to_vec());
                let (batch, nice) = (config.batch, config.nice);
                thread::spawn(move || {
                    set_nice(nice);
                    flood_thread(sources, &targets, batch, rate, deadline, &stop)
                })
            })
            .collect();
        Ok(Self {
            stop,
            started,
            sources: config.sources,
            threads,
        })
    }

    /// Waits for the flood's deadline (or stops it now if `early`) and returns its figures.
    ///
    /// # Errors
    ///
    /// A sending thread's socket error.
    pub fn finish(self, early: bool) -> io::Result<FloodReport> {
        if early {
            self.stop.store(true, Ordering::Relaxed);
        }
        let mut report = FloodReport {
            replies_per_source: vec![0; self.sources],
            ..FloodReport::default()
        };
        for thread in self.threads {
            let counts = thread
                .join()
                .map_err(|_| io::Error::other("flood thread panicked"))??;
            for count in counts {
                report.sent += count.sent;
                report.send_errors += count.send_errors;
                report.replies += count.replies;
                report.reply_bytes += count.reply_bytes;
                report.replies_per_source[count.index] = count.replies;
            }
        }
        report.elapsed = self.started.elapsed();
        report.sent_bytes = report.sent * PROBE.len() as u64;
        Ok(report)
    }
}

/// Source `index`'s address: 127.0.0.(10 + index).
pub fn source_ip(index: usize) -> Ipv4Addr {
    let last = u8::try_from(index).map_or(u8::MAX, |i| SOURCE_FIRST.saturating_add(i));
    Ipv4Addr::new(127, 0, 0, last)
}

fn bind_source(index: usize) -> io::Result<Source> {
    let socket = UdpSocket::bind((source_ip(index), 0))?;
    socket.set_nonblocking(true)?;
    let size = FLOODER_RECEIVE_BUFFER_SIZE;
    // SAFETY: setsockopt on our own open socket with a pointer to a live c_int and its
    // size; the kernel only reads it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_ref(&size).cast(),
            socklen::<libc::c_int>(),
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Source {
        socket,
        count: SourceCount {
            index,
            ..SourceCount::default()
        },
    })
}

/// Lowers the calling thread's priority to `nice` (Linux: a thread's own nice value).
fn set_nice(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: gettid and setpriority have no memory effects; the id is this thread's.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::id_t::try_from(tid).unwrap_or(0),
            nice,
        )
    };
    if result != 0 {
        eprintln!("flood: setpriority({nice}): {}", io::Error::last_os_error());
    }
}

/// Sends batches from each of `sources` in turn, reading their replies between batches,
/// until `deadline` or `stop`; paces itself to `rate` datagrams/s if given.
fn flood_thread(
    mut sources: Vec<Source>,
    targets: &[SocketAddrV4],
    batch: usize,
    rate: Option<u64>,
    deadline: Instant,
    stop: &AtomicBool,
) -> io::Result<Vec<SourceCount>> {
    let mut names: Vec<libc::sockaddr_in> = (0..batch)
        .map(|i| sockaddr(targets[i % targets.len()]))
        .collect();
    let mut iov = libc::iovec {
        iov_base: PROBE.as_ptr().cast_mut().cast(),
        iov_len: PROBE.len(),
    };
    let mut messages: Vec<libc::mmsghdr> = names
        .iter_mut()
        .map(|name| {
            // SAFETY: msghdr is a plain C struct for which all-zero bytes are valid (null
            // pointers, zero lengths); the fields that matter are set below.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_name = std::ptr::from_mut(name).cast();
            header.msg_namelen = socklen::<libc::sockaddr_in>();
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: header,
                msg_len: 0,
            }
        })
        .collect();
    let vlen = libc::c_uint::try_from(batch).unwrap_or(1);
    let started = Instant::now();
    let mut sent_total: u64 = 0;
    let mut buffer = [0u8; REPLY_SIZE_MAX];
    // Bounded by the deadline: every pass takes time, and the loop ends at the deadline.
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        for source in &mut sources {
            // SAFETY: `messages` holds `vlen` headers whose name and iovec pointers point
            // into `names` and `iov`, both alive and unmoved for this whole function; the
            // payload is a static the kernel only reads.
            let sent = unsafe {
                libc::sendmmsg(source.socket.as_raw_fd(), messages.as_mut_ptr(), vlen, 0)
            };
            match u64::try_from(sent) {
                Ok(sent) => {
                    source.count.sent += sent;
                    sent_total += sent;
                }
                Err(_) => source.count.send_errors += 1,
            }
            drain_replies(source, &mut buffer);
        }
        if let Some(rate) = rate {
            pace(started, sent_total, rate, deadline);
        }
    }
    // The last replies in flight.
    thread::sleep(Duration::from_millis(20));
    for source in &mut sources {
        drain_replies(source, &mut buffer);
    }
    Ok(sources.into_iter().map(|source| source.count).collect())
}

/// Reads every reply waiting on `source` (at most [`REPLIES_PER_DRAIN_MAX`]).
fn drain_replies(source: &mut Source, buffer: &mut [u8]) {
    for _ in 0..REPLIES_PER_DRAIN_MAX {
        match source.socket.recv(buffer) {
            Ok(size) => {
                source.count.replies += 1;
                source.count.reply_bytes += size as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            // WouldBlock: none left; ConnectionRefused: an ICMP error, none either.
            Err(_) => break,
        }
    }
}

/// Sleeps while `sent` is ahead of `rate` since `started` (never past `deadline`).
fn pace(started: Instant, sent: u64, rate: u64, deadline: Instant) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
    let ahead = due.saturating_sub(started.elapsed());
    let left = deadline.saturating_duration_since(Instant::now());
    if !ahead.is_zero() {
        thread::sleep(ahead.min(left));
    }
}

// ---------------------------------------------------------------------------------------
// Watching the flock
// ---------------------------------------------------------------------------------------

/// Asks every node for `ctl status` at once from one fresh 127.0.0.1 socket ([`gather`],
/// as a probe round asks `whois-goose`), and collects the replies that arrive within
/// `window`; `None` where a node did not answer `ok …`.
pub fn sample(flock: &Flock, window: Duration) -> Vec<Option<Status>> {
    let targets: Vec<SocketAddr> = flock.all().into_iter().map(|i| flock.addr(i)).collect();
    let (_, replies) = gather(&targets, b"ctl status", window);
    replies
        .into_iter()
        .map(|reply| parse_status(&String::from_utf8_lossy(&reply?.0)))
        .collect()
}

/// A numeric `key` of a status.
pub fn counter(status: &Status, key: &str) -> Option<u64> {
    status.get(key)?.parse().ok()
}

/// What a [`Watcher`] saw.
#[derive(Clone, Debug, Default)]
pub struct Watched {
    /// Samples taken.
    pub samples: u64,
    /// Node replies missing from samples (a node that did not answer within the window).
    pub missing: u64,
    /// Samples in which every node answered and none said `role=goose` (a lease lapsed).
    pub gooseless: u64,
    /// Samples in which two nodes said `role=goose`.
    pub double_geese: u64,
    /// Terms seen, in order of first sight.
    pub terms: Vec<u64>,
    /// Geese seen (ids), each time the goose seen changed.
    pub geese: Vec<u64>,
    /// Each node's first status (since [`Watcher::restart_counters`]).
    pub first: Vec<Option<Status>>,
    /// Each node's last status.
    pub last: Vec<Option<Status>>,
}

impl Watched {
    /// Term changes seen: terms beyond the first.
    pub fn term_changes(&self) -> usize {
        self.terms.len().saturating_sub(1)
    }

    /// Goose changes seen: geese beyond the first.
    pub fn goose_changes(&self) -> usize {
        self.geese.len().saturating_sub(1)
    }

    /// `last − first` of counter `key` at node `index`, if both samples have it.
    pub fn delta(&self, index: usize, key: &str) -> Option<u64> {
        let first = counter(self.first.get(index)?.as_ref()?, key)?;
        let last = counter(self.last.get(index)?.as_ref()?, key)?;
        Some(last.saturating_sub(first))
    }

    /// Whether any node's status has `key`.
    pub fn has(&self, key: &str) -> bool {
        self.last
            .iter()
            .chain(&self.first)
            .flatten()
            .any(|status| status.contains_key(key))
    }

    fn record(&mut self, statuses: Vec<Option<Status>>) {
        self.samples += 1;
        let answered = statuses.iter().flatten().count();
        self.missing += (statuses.len() - answered) as u64;
        let mut geese = 0;
        for (index, status) in statuses.iter().enumerate() {
            let Some(status) = status else { continue };
            if let Some(term) = counter(status, "term") {
                if !self.terms.contains(&term) {
                    self.terms.push(term);
                }
            }
            if status.get("role").map(String::as_str) == Some("goose") {
                geese += 1;
                if let Some(id) = counter(status, "id") {
                    if self.geese.last() != Some(&id) {
                        self.geese.push(id);
                    }
                }
            }
            if self.first.get(index).is_some_and(Option::is_none) {
                self.first[index] = Some(status.clone());
            }
            self.last[index] = Some(status.clone());
        }
        // Only when every node answered: a missing reply may be the goose's, its socket
        // having dropped the request along with the flood.
        if geese == 0 && answered == statuses.len() {
            self.gooseless += 1;
        }
        if geese > 1 {
            self.double_geese += 1;
        }
    }
}

/// Samples a flock every [`SAMPLE_EVERY`] on the calling thread: [`Watcher::watch`].
#[derive(Debug)]
pub struct Watcher<'a> {
    flock: &'a Flock,
    watched: Watched,
}

impl<'a> Watcher<'a> {
    /// A watcher of `flock` that has seen nothing yet.
    pub fn new(flock: &'a Flock) -> Self {
        let count = flock.len();
        Self {
            flock,
            watched: Watched {
                first: vec![None; count],
                last: vec![None; count],
                ..Watched::default()
            },
        }
    }

    /// Takes one sample now.
    pub fn sample_once(&mut self) {
        let statuses = sample(self.flock, SAMPLE_WINDOW);
        self.watched.record(statuses);
    }

    /// Samples every [`SAMPLE_EVERY`] for `duration`.
    pub fn watch(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration.min(FLOOD_DURATION_MAX);
        for _ in 0..SAMPLES_MAX {
            let started = Instant::now();
            if started >= deadline {
                break;
            }
            self.sample_once();
            let rest = SAMPLE_EVERY.saturating_sub(started.elapsed());
            thread::sleep(rest.min(deadline.saturating_duration_since(Instant::now())));
        }
    }

    /// What it has seen.
    pub fn watched(&self) -> &Watched {
        &self.watched
    }

    /// Makes the last statuses the first ones, so [`Watched::delta`] counts from now on.
    pub fn restart_counters(&mut self) {
        self.watched.first = self.watched.last.clone();
    }
}

/// Datagrams the kernel dropped at the UDP sockets bound to 127.0.0.1:`port` because their
/// receive buffers were full (the `drops` column of `/proc/net/udp`, summed over a node's
/// sockets); `None` if no such socket is listed.
pub fn socket_drops(port: u16) -> Option<u64> {
    let table = fs::read_to_string("/proc/net/udp").ok()?;
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) != Some(&local.as_str()) {
                return None;
            }
            fields.last()?.parse::<u64>().ok()
        })
        .reduce(u64::saturating_add)
}

/// The 127.0.0.1 addresses of nodes `indices`.
pub fn targets(flock: &Flock, indices: &[usize]) -> Vec<SocketAddrV4> {
    indices
        .iter()
        .filter_map(|&index| match flock.addr(index) {
            SocketAddr::V4(addr) => Some(addr),
            SocketAddr::V6(_) => None,
        })
        .collect()
}
