//! `goose whois` and `goose ctl`: one-datagram clients of the text protocol.
//!
//! `goose whois` is the `goose-client` crate's probe ([`goose_client::Flock`]), the one
//! applications use: with a cluster key it sends `whois-goose nonce=<16 hex>` and counts
//! only answers signed over that nonce. `goose ctl` sends each request on its own
//! *connected* UDP socket, so only the asked node's reply is accepted, and a closed port
//! (ICMP port unreachable) answers at once instead of after the timeout.
//!
//! Exit codes: `goose whois` 0 iff exactly one node answered goose, else 1; `goose ctl` 0 for
//! a reply that is not `err`, 1 for `err`, [`CTL_NO_REPLY`] when no reply came.
//!
//! With a cluster key, `goose ctl` signs (`goose_core::auth`): `ctl nonce` to the node, then
//! `ctl sig=<tag> nonce=<nonce> <command…>` from the same socket; `err stale-nonce` (the
//! nonce expired or was pushed out meanwhile) gets one more try with a fresh nonce
//! ([`STALE_NONCE_RETRIES`]), and a duck's redirect to the goose is followed once with a
//! nonce of the goose's. At most 2 targets × 2 tries × 2 requests, each bounded by its
//! timeout.

use std::io::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use goose_client::{AskError, Flock};
use goose_core::auth::key::ClusterKey;
use goose_core::auth::write_signed_control;
use goose_core::text::{parse_nonce_reply, Reason, Reply, TEXT_REPLY_SIZE_MAX};

/// How long `whois` waits for all its replies (the launcher's views wait less).
const WHOIS_TIMEOUT: Duration = Duration::from_millis(500);
/// How long `ctl` waits for a reply.
const CTL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long `ctl … transfer` waits: the goose answers only once the handoff is sent, or
/// after an election timeout without a caught-up voter, and election timeouts may be set
/// up to 600 s; 10 s covers any sensible setting.
const CTL_TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest reply read: the longest a node writes (a `status` at 64 members).
const REPLY_SIZE_MAX: usize = TEXT_REPLY_SIZE_MAX;
/// How long `ctl` waits for the node's answer to `ctl nonce`.
const NONCE_TIMEOUT: Duration = Duration::from_secs(1);
/// Further tries of a signed command answered `err stale-nonce`, each with a fresh nonce. A
/// nonce is good for 10 s and among the node's last 8: stale twice in a row means something
/// else keeps asking the node for nonces, and retrying more would not help.
const STALE_NONCE_RETRIES: usize = 1;
/// Targets a `ctl` may talk to: the node asked, and the goose a duck names.
const CTL_TARGETS_MAX: usize = 2;

/// How `goose ctl` proves it may send control.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ControlAuth<'a> {
    /// Nothing: the node trusts loopback (a node without a key).
    None,
    /// `ctl token=<T> …`, for a node started with `--control-token` (no key).
    Token(&'a str),
    /// Signed over a nonce of the node's, for a node started with the same key.
    Key(&'a ClusterKey),
}

/// `goose ctl`'s exit code when no reply came in time (1 is an `err` reply).
pub(crate) const CTL_NO_REPLY: u8 = 3;

/// `goose whois`: prints `<ip:port>: goose|duck|-` for each address, in order (`-`: no
/// usable answer; with a key, an answer that is not signed over this probe's nonce, said
/// on stderr); exit 0 iff exactly one answered goose.
pub(crate) fn whois(addrs: &[SocketAddr], key: Option<&ClusterKey>) -> ExitCode {
    let mut flock = Flock::new(addrs.iter().copied()).timeout(WHOIS_TIMEOUT);
    if let Some(key) = key {
        flock = flock.with_key(key.clone());
    }
    let answers = flock.ask();
    for answer in &answers {
        if let Err(error @ (AskError::Unverified(_) | AskError::Malformed(_))) = &answer.reply {
            eprintln!("goose whois: {}: {error}", answer.addr);
        }
        // A reader that went away (`| head -1`) is not an error of the flock's.
        let _ = writeln!(io::stdout(), "{}: {}", answer.addr, answer.role());
    }
    let geese = answers.iter().filter(|answer| answer.role() == "goose");
    match geese.count() {
        1 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// `goose ctl`: sends `ctl [token=T] <command…>`, or with a key the signed form (module
/// docs), prints the reply; exit 1 on `err`, [`CTL_NO_REPLY`] without a reply. A duck's
/// `err not-goose … addr=<ip:port>` is followed once to the goose.
pub(crate) fn ctl(addr: SocketAddr, auth: ControlAuth<'_>, command: &[String]) -> ExitCode {
    let command = command.join(" ");
    let timeout = if command.split_ascii_whitespace().next() == Some("transfer") {
        CTL_TRANSFER_TIMEOUT
    } else {
        CTL_TIMEOUT
    };
    let mut target = addr;
    let mut reply = Err(io::Error::other("not sent"));
    for _ in 0..CTL_TARGETS_MAX {
        reply = ask(target, auth, &command, timeout);
        let parsed = reply.as_deref().ok().map(Reply::parse);
        let Some(goose) = parsed.and_then(Result::ok).and_then(|r| r.goose_addr()) else {
            break;
        };
        if goose == target {
            break;
        }
        eprintln!("goose ctl: {target} is not goose; following to {goose}");
        target = goose;
    }
    match reply {
        Ok(reply) => {
            let _ = writeln!(io::stdout(), "{reply}");
            let Ok(Reply::Err { reason, .. }) = Reply::parse(&reply) else {
                return ExitCode::SUCCESS;
            };
            match (reason, auth) {
                (Some(Reason::Forbidden), ControlAuth::Key(_)) => eprintln!(
                    "goose ctl: {target} refused the signature: is its --cluster-key-file \
                     the same key?"
                ),
                (Some(Reason::Forbidden), _) => eprintln!(
                    "goose ctl: {target} refused the command: a node with a cluster key takes \
                     only signed control (goose ctl --cluster-key-file <file>)"
                ),
                (Some(Reason::NoKey), _) => eprintln!(
                    "goose ctl: {target} has no cluster key: send without --cluster-key-file"
                ),
                _ => {}
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("goose ctl: no reply from {target}: {error}");
            ExitCode::from(CTL_NO_REPLY)
        }
    }
}

/// One control request to `target` and its reply line; with a key, signed over a fresh
/// nonce, retried with another on `err stale-nonce` ([`STALE_NONCE_RETRIES`]).
pub(crate) fn ask(
    target: SocketAddr,
    auth: ControlAuth<'_>,
    command: &str,
    timeout: Duration,
) -> io::Result<String> {
    let key = match auth {
        ControlAuth::None => return request_reply(target, &format!("ctl {command}"), timeout),
        ControlAuth::Token(token) => {
            return request_reply(target, &format!("ctl token={token} {command}"), timeout)
        }
        ControlAuth::Key(key) => key,
    };
    let mut reply = Err(io::Error::other("not sent"));
    for _ in 0..=STALE_NONCE_RETRIES {
        let socket = send_request(target, b"ctl nonce")?;
        let answer = receive_reply(&socket, Instant::now() + NONCE_TIMEOUT)?;
        let Some(nonce) = parse_nonce_reply(&answer) else {
            // `err no-key` (a node without a key) or another refusal: that is the answer.
            return Ok(answer);
        };
        let mut request = String::new();
        write_signed_control(&mut request, key, nonce, command).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the command is too long for one datagram",
            )
        })?;
        socket.send(request.as_bytes())?;
        reply = receive_reply(&socket, Instant::now() + timeout);
        let stale = |line: &str| Reply::parse(line).ok()?.reason();
        if reply.as_deref().ok().and_then(stale) != Some(Reason::StaleNonce) {
            break;
        }
    }
    reply
}

fn request_reply(addr: SocketAddr, request: &str, timeout: Duration) -> io::Result<String> {
    let socket = send_request(addr, request.as_bytes())?;
    receive_reply(&socket, Instant::now() + timeout)
}

fn send_request(addr: SocketAddr, request: &[u8]) -> io::Result<UdpSocket> {
    let local = if addr.is_ipv4() {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.send(request)?;
    Ok(socket)
}

/// One reply line (without its `\n`), or an error once `deadline` passes.
fn receive_reply(socket: &UdpSocket, deadline: Instant) -> io::Result<String> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    // A zero read timeout means "block forever" to std; wait at least a millisecond.
    socket.set_read_timeout(Some(remaining.max(Duration::from_millis(1))))?;
    let mut buffer = [0; REPLY_SIZE_MAX];
    let size = socket.recv(&mut buffer)?;
    let text = String::from_utf8_lossy(&buffer[..size]);
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}
