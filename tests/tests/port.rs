//! The node's port is its own: a second process tries to take a share of a running node's
//! port, the way `SO_REUSEPORT` lets processes share one, and the node's datagrams never
//! reach it.
//!
//! The node binds its port as a reuseport group of two sockets (peer frames and text) with
//! a BPF program that hands every datagram to one of those two (`node-std`'s
//! `event_loop/port.rs`). Linux lets a socket join a reuseport group only if it sets
//! `SO_REUSEPORT` too and belongs to the same effective user; the program decides which
//! member receives. So:
//!
//! - a process of another user cannot bind the port at all, with `SO_REUSEPORT` or
//!   without (`EADDRINUSE`);
//! - a process of the node's own user cannot bind it without `SO_REUSEPORT`; with it, the
//!   bind succeeds, but not one datagram of hundreds of probes and frames sent to the port
//!   reaches it while the node answers every probe.
//!
//! The second process is this test binary run again with [`INTRUDER`] set (it has no
//! harness: `main` is below), as another user by `setuid` from root. Switching users needs
//! root: without it the test fails, it never skips. Every wait is bounded and every child
//! is killed by pid.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use flock_tests::procs::{self, Flock, OnViolation, Timing};

/// Set (to `<port> <reuseport: 0|1>`) in the environment of the second process.
const INTRUDER: &str = "GOOSE_PORT_INTRUDER";
/// How long the second process listens once bound.
const LISTEN_FOR: Duration = Duration::from_millis(1500);
/// The longest the second process may take in all.
const CHILD_MAX: Duration = Duration::from_secs(10);
/// The user the second process becomes for the other-user case (`nobody`).
const OTHER_USER: u32 = 65534;
/// Probes and junk frames sent to the node while the second process listens.
const PROBES: usize = 300;
const FRAMES: usize = 300;
/// How long the flock gets to agree on a goose.
const AGREE_WITHIN: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    if let Ok(spec) = std::env::var(INTRUDER) {
        return intruder(&spec);
    }
    // SAFETY: geteuid has no preconditions and no side effects.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test runs a second process as another user, which needs root (euid is {euid})"
    );
    // Without reply limits, so that every probe is answered however fast they come.
    let unlimited = ["--reply-rate", "0", "--reply-rate-total", "0"];
    let flock = Flock::start_with(3, Timing::DEFAULT, &unlimited, OnViolation::Panic);
    let all = flock.all();
    let (goose, _) = flock.wait_agreed(&all, AGREE_WITHIN);
    let port = flock.port(goose);

    // Another user: refused, with SO_REUSEPORT or without.
    for reuse in [true, false] {
        let (first, _) = run_intruder(port, reuse, Some(OTHER_USER), || {});
        assert!(
            first.starts_with("refused") && first.contains("in use"),
            "another user's bind (SO_REUSEPORT {reuse}): {first}"
        );
    }
    // The node's own user, without SO_REUSEPORT: refused.
    let (first, _) = run_intruder(port, false, None, || {});
    assert!(
        first.starts_with("refused"),
        "own user, no SO_REUSEPORT: {first}"
    );

    // The node's own user with SO_REUSEPORT: bound, and receives nothing.
    let mut answers = 0;
    let (first, last) = run_intruder(port, true, None, || {
        answers = send_traffic(port);
    });
    assert_eq!(first, "bound", "own user with SO_REUSEPORT");
    assert_eq!(
        last, "received 0",
        "the second process got the node's datagrams"
    );
    assert_eq!(
        answers, PROBES,
        "the node answered every probe while it listened"
    );
    let status = flock.status(goose);
    for key in ["socket_drops_peer", "socket_drops_text"] {
        assert_eq!(status.get(key).map(String::as_str), Some("0"), "{key}");
    }
    // The junk frames went to the node's peer queue and were counted there.
    let magic: u64 = status
        .get("drop_magic")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(magic >= FRAMES as u64, "drop_magic {magic}");
    // The node still leads, on the same port.
    assert_eq!(flock.wait_agreed(&all, AGREE_WITHIN).0, goose);
    println!("port: the node's port is its own (3 refusals, 0 of {PROBES} probes and {FRAMES} frames to a joiner)");
    ExitCode::SUCCESS
}

/// Runs this binary as the second process against `port`, as `user` (or the node's own),
/// calls `meanwhile` once it has bound or been refused, and returns its first and last
/// lines.
fn run_intruder(
    port: u16,
    reuse: bool,
    user: Option<u32>,
    meanwhile: impl FnOnce(),
) -> (String, String) {
    let exe = std::env::current_exe().expect("this test's own path");
    let mut command = Command::new(exe);
    command
        .env(INTRUDER, format!("{port} {}", u8::from(reuse)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(user) = user {
        command.uid(user).gid(user);
    }
    let mut child = KillOnDrop(command.spawn().expect("spawn the second process"));
    let stdout = child.0.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| "(no output)".to_owned());
    meanwhile();
    let last = lines
        .map_while(Result::ok)
        .last()
        .unwrap_or_else(|| first.clone());
    let started = Instant::now();
    while started.elapsed() < CHILD_MAX {
        if let Ok(Some(_)) = child.0.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (first, last)
}

/// A child killed (by its pid) and reaped when dropped, also on panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `PROBES` probes (collecting the answers) and `FRAMES` junk frames (first byte
/// 0xFF: peer queue, dropped by the node as a bad magic) to `port`; returns the answers.
fn send_traffic(port: u16) -> usize {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("client socket");
    let target = (Ipv4Addr::LOCALHOST, port);
    let mut answers = 0;
    for _ in 0..PROBES {
        let _ = socket.send_to(&[0xFF; 16], target);
        let _ = socket.send_to(b"whois-goose", target);
        let deadline = Instant::now() + Duration::from_millis(500);
        if procs::receive(&socket, deadline)
            .is_some_and(|reply| reply.starts_with(b"goose ") || reply.starts_with(b"duck "))
        {
            answers += 1;
        }
    }
    answers
}

/// The second process: binds `127.0.0.1:<port>` (with `SO_REUSEPORT` if asked), prints
/// `bound` or `refused <error>`, and once bound counts what it receives for
/// [`LISTEN_FOR`], printing `received <n>`.
fn intruder(spec: &str) -> ExitCode {
    let mut words = spec.split(' ');
    let port: Option<u16> = words.next().and_then(|w| w.parse().ok());
    let reuse = words.next() == Some("1");
    let Some(port) = port else {
        println!("refused bad {INTRUDER}: {spec}");
        return ExitCode::FAILURE;
    };
    let socket = match bind(port, reuse) {
        Ok(socket) => socket,
        Err(error) => {
            println!("refused {error}");
            return ExitCode::SUCCESS;
        }
    };
    println!("bound");
    let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
    let mut received = 0u64;
    let mut buffer = [0u8; 2048];
    let started = Instant::now();
    while started.elapsed() < LISTEN_FOR {
        if socket.recv_from(&mut buffer).is_ok() {
            received += 1;
        }
    }
    println!("received {received}");
    ExitCode::SUCCESS
}

/// A UDP socket on 127.0.0.1:`port`, with `SO_REUSEPORT` set first if `reuse`.
fn bind(port: u16, reuse: bool) -> std::io::Result<UdpSocket> {
    // SAFETY: socket(2) has no memory effects; the result is checked before it is used.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket just created and owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if reuse {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on our own socket with a pointer to a live c_int and its
        // size; the kernel only reads it.
        let result = unsafe {
            libc::setsockopt(
                owned.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEPORT,
                std::ptr::from_ref(&one).cast(),
                libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4),
            )
        };
        if result != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let socket = UdpSocket::from(owned);
    let address = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    // std's bind would make a new socket: bind this one through socket2-free libc.
    let name = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap_or(2),
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: bind on our own socket with a pointer to a live sockaddr_in and its size.
    let result = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::from_ref(&name).cast(),
            libc::socklen_t::try_from(size_of::<libc::sockaddr_in>()).unwrap_or(16),
        )
    };
    if result != 0 {
        let error = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            error.kind(),
            format!("{address}: {error}"),
        ));
    }
    Ok(socket)
}
