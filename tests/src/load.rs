//! Probe throughput measured against the machine's own limit, for `bin/bench_flock.rs`.
//!
//! A [`windowed`] client keeps [`WINDOW`] probes in flight from one socket: it sends them
//! in one `sendmmsg`, reads replies in `recvmmsg` batches and sends one new probe for each
//! reply, so it measures what the target can answer, not one round trip at a time. An
//! [`EchoServer`] is the least a UDP server can do per datagram with the same batching as
//! a node (`recvmmsg` of up to 32, then one `sendmmsg` of as many answers of a probe
//! answer's size): the same clients against it give this machine's limit, and a node's
//! figure is read as a fraction of it.
//!
//! A [`HeartbeatFloor`] is the least an idle goose can cost: a thread that sends a
//! heartbeat-sized datagram to each of its followers every heartbeat interval, in one
//! `sendmmsg`, and reads their answers when it next wakes, with followers in processes of
//! their own ([`follow_heartbeats`]) that answer each. Its CPU is this machine's floor for
//! a goose's, which is read against it.
//!
//! Every thread stops at its deadline; every loop has a bound.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Probes a [`windowed`] client keeps in flight.
pub const WINDOW: usize = 64;
/// Datagrams the echo server reads and answers per batch: a node's batch.
const ECHO_BATCH: usize = 32;
/// A probe answer's size, which the echo server sends (`goose id=1 term=1 goose=1\n`).
const ANSWER: &[u8] = b"goose id=1 term=1 goose=1\n";
/// A heartbeat's UDP payload: a goose of five sends about 21 bytes to each follower.
const HEARTBEAT: [u8; 21] = [0x80; 21];
/// A heartbeat follower that hears nothing for this long exits.
const FOLLOWER_QUIET_MAX: Duration = Duration::from_secs(5);
/// Batches of answers a heartbeat leader reads per wake-up at most.
const LEADER_READS_MAX: usize = 16;
/// Largest datagram read.
const DATAGRAM_SIZE_MAX: usize = 512;
/// A client that hears nothing for this long takes its window for lost and sends a new
/// one (and the echo server looks at its stop flag this often).
const QUIET_MAX: Duration = Duration::from_millis(20);
/// The longest a measurement runs, whatever it is asked.
const DURATION_MAX: Duration = Duration::from_secs(600);

/// What a [`windowed`] client counted.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Replies that start with `goose `.
    pub answers: u64,
    /// Probes whose reply never came (or was not `goose`).
    pub lost: u64,
}

/// Runs `threads` [`windowed`] clients against 127.0.0.1:`port` for `duration`; returns
/// their counts summed and the time they took.
///
/// # Errors
///
/// A client's socket error.
pub fn windowed_clients(
    port: u16,
    threads: usize,
    duration: Duration,
) -> io::Result<(Counts, Duration)> {
    let started = Instant::now();
    let deadline = started + duration.min(DURATION_MAX);
    let handles: Vec<JoinHandle<io::Result<Counts>>> = (0..threads)
        .map(|_| thread::spawn(move || windowed(port, deadline)))
        .collect();
    let mut total = Counts::default();
    for handle in handles {
        let counts = handle
            .join()
            .map_err(|_| io::Error::other("client thread panicked"))??;
        total.answers += counts.answers;
        total.lost += counts.lost;
    }
    Ok((total, started.elapsed()))
}

/// One client: [`WINDOW`] probes in flight to 127.0.0.1:`port` until `deadline`.
///
/// # Errors
///
/// A socket error other than a timeout.
pub fn windowed(port: u16, deadline: Instant) -> io::Result<Counts> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.connect((Ipv4Addr::LOCALHOST, port))?;
    socket.set_read_timeout(Some(QUIET_MAX))?;
    let mut batch = Batch::new(WINDOW);
    let mut counts = Counts::default();
    let mut in_flight = batch.send(&socket, b"whois-goose", None, WINDOW);
    // Bounded by the deadline: every pass waits at most QUIET_MAX.
    while Instant::now() < deadline {
        let replies = match batch.receive(&socket) {
            Ok(replies) => replies,
            Err(error) if is_timeout(&error) => {
                counts.lost += in_flight as u64;
                in_flight = batch.send(&socket, b"whois-goose", None, WINDOW);
                continue;
            }
            Err(error) => return Err(error),
        };
        let answered = (0..replies)
            .filter(|&index| batch.datagram(index).starts_with(b"goose "))
            .count();
        counts.answers += answered as u64;
        counts.lost += (replies - answered) as u64;
        in_flight = in_flight.saturating_sub(replies);
        in_flight += batch.send(&socket, b"whois-goose", None, replies);
    }
    counts.lost += in_flight as u64;
    Ok(counts)
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The least a batched UDP server can do: answers every datagram with a probe answer's
/// bytes, up to [`ECHO_BATCH`] per `recvmmsg` and one `sendmmsg`, on one thread like a
/// node. Stops when dropped.
#[derive(Debug)]
pub struct EchoServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Starts one on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// The socket's.
    pub fn start() -> io::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_read_timeout(Some(QUIET_MAX))?;
        let port = socket.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut batch = Batch::new(ECHO_BATCH);
            // Bounded by the stop flag, looked at least every QUIET_MAX.
            while !stopping.load(Ordering::Relaxed) {
                let Ok(count) = batch.receive(&socket) else {
                    continue;
                };
                batch.answer(&socket, ANSWER, count);
            }
        });
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
        })
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The heartbeat traffic of an idle goose with nothing else: see the module's text.
/// Stops when dropped.
#[derive(Debug)]
pub struct HeartbeatFloor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The leader thread's id, for its run time in `/proc`.
    tid: libc::pid_t,
}

impl HeartbeatFloor {
    /// Starts the leader thread: every `interval`, it reads what came and sends one
    /// heartbeat to each of `followers` (ports on 127.0.0.1).
    ///
    /// # Errors
    ///
    /// The socket's, or the thread's failure to start.
    pub fn start(interval: Duration, followers: &[u16]) -> io::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        socket.set_nonblocking(true)?;
        let targets: Vec<SocketAddrV4> = followers
            .iter()
            .map(|&port| SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let (tid_in, tid_out) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            // SAFETY: gettid has no preconditions and no side effects.
            let _ = tid_in.send(unsafe { libc::gettid() });
            let mut batch = Batch::new(ECHO_BATCH.max(targets.len()));
            let mut next = Instant::now();
            // Bounded by the stop flag, looked at every interval.
            while !stopping.load(Ordering::Relaxed) {
                next += interval;
                thread::sleep(next.saturating_duration_since(Instant::now()));
                for _ in 0..LEADER_READS_MAX {
                    if !batch.receive(&socket).is_ok_and(|count| count > 0) {
                        break;
                    }
                }
                batch.send_each(&socket, &HEARTBEAT, &targets);
            }
        });
        let tid = tid_out
            .recv()
            .map_err(|_| io::Error::other("the heartbeat thread did not start"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
            tid,
        })
    }

    /// The leader thread's run time so far, in nanoseconds (its `schedstat`).
    pub fn run_nanos(&self) -> Option<u64> {
        let path = format!("/proc/self/task/{}/schedstat", self.tid);
        std::fs::read_to_string(path)
            .ok()?
            .split(' ')
            .next()?
            .parse()
            .ok()
    }
}

impl Drop for HeartbeatFloor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A [`HeartbeatFloor`]'s follower, run as a process of its own (a node's followers are):
/// prints its port on 127.0.0.1 on a line of standard output, then answers every
/// datagram with an acknowledgement's size, and returns once it has heard nothing for
/// [`FOLLOWER_QUIET_MAX`].
///
/// # Errors
///
/// The socket's, or standard output's.
pub fn follow_heartbeats() -> io::Result<()> {
    use std::io::Write as _;
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    socket.set_read_timeout(Some(FOLLOWER_QUIET_MAX))?;
    let mut out = io::stdout();
    writeln!(out, "{}", socket.local_addr()?.port())?;
    out.flush()?;
    let mut buffer = [0; DATAGRAM_SIZE_MAX];
    // Bounded: each pass waits at most FOLLOWER_QUIET_MAX, and silence that long ends it.
    loop {
        match socket.recv_from(&mut buffer) {
            Ok((_, from)) => {
                let _ = socket.send_to(&HEARTBEAT, from);
            }
            Err(error) if is_timeout(&error) => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}

/// Buffers and headers for `recvmmsg` and `sendmmsg` of up to `size` datagrams.
struct Batch {
    buffers: Vec<[u8; DATAGRAM_SIZE_MAX]>,
    names: Vec<libc::sockaddr_in>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl Batch {
    fn new(size: usize) -> Self {
        let name = sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let iovec = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are valid (null
        // pointers, zero lengths); every field used is set before each call.
        let header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            buffers: vec![[0; DATAGRAM_SIZE_MAX]; size],
            names: vec![name; size],
            iovecs: vec![iovec; size],
            headers: vec![header; size],
        }
    }

    /// Points header `index` at name `index` and iovec `index` over `bytes`.
    fn prepare(&mut self, index: usize, bytes: *mut u8, size: usize, with_name: bool) {
        self.iovecs[index] = libc::iovec {
            iov_base: bytes.cast(),
            iov_len: size,
        };
        let header = &mut self.headers[index].msg_hdr;
        header.msg_iov = &mut self.iovecs[index];
        header.msg_iovlen = 1;
        if with_name {
            header.msg_name = std::ptr::from_mut(&mut self.names[index]).cast();
            header.msg_namelen = socklen::<libc::sockaddr_in>();
        } else {
            header.msg_name = std::ptr::null_mut();
            header.msg_namelen = 0;
        }
        header.msg_control = std::ptr::null_mut();
        header.msg_controllen = 0;
        header.msg_flags = 0;
    }

    /// Waits for at least one datagram (up to the socket's read timeout) and reads up to
    /// the batch's size: how many.
    fn receive(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        for index in 0..self.headers.len() {
            let buffer = self.buffers[index].as_mut_ptr();
            self.prepare(index, buffer, DATAGRAM_SIZE_MAX, true);
        }
        let length = libc::c_uint::try_from(self.headers.len()).unwrap_or(1);
        // SAFETY: every header points at its own name and one iovec over its own buffer,
        // all alive and unmoved during the call; a null timeout is allowed.
        let count = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                length,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        usize::try_from(count).map_err(|_| io::Error::last_os_error())
    }

    /// Datagram `index` of the last [`Batch::receive`].
    fn datagram(&self, index: usize) -> &[u8] {
        let size = usize::try_from(self.headers[index].msg_len).unwrap_or(0);
        &self.buffers[index][..size.min(DATAGRAM_SIZE_MAX)]
    }

    /// Sends `bytes` `count` times (at most the batch's size) on the connected `socket`
    /// (`target` `None`) or to `target`; how many went.
    fn send(
        &mut self,
        socket: &UdpSocket,
        bytes: &[u8],
        target: Option<SocketAddrV4>,
        count: usize,
    ) -> usize {
        let count = count.min(self.headers.len());
        for index in 0..count {
            if let Some(target) = target {
                self.names[index] = sockaddr(target);
            }
            self.prepare(
                index,
                bytes.as_ptr().cast_mut(),
                bytes.len(),
                target.is_some(),
            );
        }
        self.send_prepared(socket, count)
    }

    /// Sends `bytes` once to each of `targets` (as many as the batch holds) in one call;
    /// how many went.
    fn send_each(&mut self, socket: &UdpSocket, bytes: &[u8], targets: &[SocketAddrV4]) -> usize {
        let count = targets.len().min(self.headers.len());
        for (index, &target) in targets.iter().take(count).enumerate() {
            self.names[index] = sockaddr(target);
            self.prepare(index, bytes.as_ptr().cast_mut(), bytes.len(), true);
        }
        self.send_prepared(socket, count)
    }

    /// Answers the first `count` datagrams of the last [`Batch::receive`], each to its
    /// source, with `bytes`.
    fn answer(&mut self, socket: &UdpSocket, bytes: &[u8], count: usize) {
        let count = count.min(self.headers.len());
        for index in 0..count {
            // The source recvmmsg wrote stays in names[index].
            self.prepare(index, bytes.as_ptr().cast_mut(), bytes.len(), true);
        }
        self.send_prepared(socket, count);
    }

    fn send_prepared(&mut self, socket: &UdpSocket, count: usize) -> usize {
        let length = libc::c_uint::try_from(count).unwrap_or(0);
        // SAFETY: the first `count` headers point at live names and iovecs of `self` and
        // at `bytes`, which the kernel only reads, during the call.
        let sent =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), self.headers.as_mut_ptr(), length, 0) };
        usize::try_from(sent).unwrap_or(0)
    }
}

/// `addr` as the kernel takes it in a `msghdr`.
pub(crate) fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(0),
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// The size of a `T` as a socket call takes it.
pub(crate) fn socklen<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}
