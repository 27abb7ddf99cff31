//! Probers: threads in the client namespace that send `whois-goose` to random nodes, one
//! probe at a time, and record each with its send and receive times.
//!
//! Every probe uses a fresh socket connected to its node, so a late reply to an earlier,
//! timed-out probe can never be taken for the answer to a later one (it arrives at a closed
//! port). A probe with no reply within the timeout is recorded as [`Outcome::Timeout`].

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use goose_core::rand::Rand;

use super::history::{Answer, Micros, Outcome, ProbeRecord};
use crate::procs::Probe;

/// A prober stops after this many probes whatever the clock says (a bound on its loop,
/// far above what an hour produces).
pub const PROBES_PER_PROBER_MAX: u64 = 50_000_000;
/// Largest reply read.
const REPLY_SIZE_MAX: usize = 2048;

/// Microseconds from `start` to now.
pub fn micros_since(start: Instant) -> Micros {
    Micros::try_from(start.elapsed().as_micros()).unwrap_or(Micros::MAX)
}

/// What the probers tell the nemesis while they run.
#[derive(Debug, Default)]
pub struct Sightings {
    /// The latest send time of a probe answered `goose` (µs since start; 0: none yet).
    pub goose_sent: AtomicU64,
    /// The id of the node that last answered `goose`.
    pub goose_node: AtomicU64,
}

/// One prober's settings.
#[derive(Clone, Debug)]
pub struct ProberConfig {
    /// Its number in the history.
    pub prober: u16,
    /// The nodes it probes, by id and address.
    pub targets: Vec<(u16, SocketAddr)>,
    /// How long it waits for a reply.
    pub timeout: Duration,
    /// Pause after each probe.
    pub pause: Duration,
    /// Seed of its choice of nodes.
    pub seed: u64,
}

/// Probes until `stop` is set (or [`PROBES_PER_PROBER_MAX`]); returns every probe. Must
/// run on a thread already in the client namespace.
pub fn run(
    config: &ProberConfig,
    start: Instant,
    stop: &AtomicBool,
    sightings: &Sightings,
) -> Vec<ProbeRecord> {
    let mut rand = Rand::new(config.seed);
    let mut records = Vec::new();
    if config.targets.is_empty() {
        return records;
    }
    let count = u64::try_from(config.targets.len()).unwrap_or(u64::MAX);
    for _ in 0..PROBES_PER_PROBER_MAX {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let pick = usize::try_from(rand.range_inclusive(0, count - 1)).unwrap_or(0);
        let (node, addr) = config.targets[pick];
        let record = probe(config, node, addr, start);
        if let Some((_, answer)) = record.answer() {
            if answer.goose {
                sightings
                    .goose_sent
                    .fetch_max(record.sent, Ordering::Relaxed);
                sightings
                    .goose_node
                    .store(u64::from(node), Ordering::Relaxed);
            }
        }
        records.push(record);
        thread::sleep(config.pause);
    }
    records
}

/// Sends one probe and waits for its reply.
fn probe(config: &ProberConfig, node: u16, addr: SocketAddr, start: Instant) -> ProbeRecord {
    let mut record = ProbeRecord {
        node,
        prober: config.prober,
        sent: 0,
        outcome: Outcome::Timeout,
    };
    let socket = match UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)) {
        Ok(socket) => socket,
        Err(_) => {
            record.sent = micros_since(start);
            return record; // out of sockets for a moment: nothing was sent, nothing proven
        }
    };
    if socket.connect(addr).is_err() || socket.set_read_timeout(Some(config.timeout)).is_err() {
        record.sent = micros_since(start);
        return record;
    }
    let deadline = Instant::now() + config.timeout;
    record.sent = micros_since(start);
    if socket.send(b"whois-goose").is_err() {
        return record;
    }
    let mut buffer = [0u8; REPLY_SIZE_MAX];
    // Bounded: each pass either returns or waits out part of the timeout.
    for _ in 0..16 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match socket.recv(&mut buffer) {
            Ok(size) => {
                let received = micros_since(start);
                record.outcome = match Probe::parse(&buffer[..size]) {
                    Ok(probe) => Outcome::Reply {
                        received,
                        answer: Answer {
                            goose: probe.goose,
                            id: probe.id,
                            term: probe.term,
                            leader: probe.leader,
                            stopped: probe.stopped,
                        },
                    },
                    Err(why) => Outcome::Malformed { received, why },
                };
                return record;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Timeout, or ICMP port unreachable (a killed node): no answer.
            Err(_) => break,
        }
    }
    record
}

/// A running prober: joins to its records, or to why it could not probe.
pub type ProberHandle = thread::JoinHandle<Result<Vec<ProbeRecord>, String>>;

/// Starts `configs.len()` prober threads, each entering namespace `namespace` first.
///
/// # Errors
///
/// If a thread cannot be spawned.
pub fn spawn_all(
    configs: Vec<ProberConfig>,
    namespace: std::path::PathBuf,
    start: Instant,
    stop: Arc<AtomicBool>,
    sightings: Arc<Sightings>,
) -> Result<Vec<ProberHandle>, String> {
    let mut handles = Vec::with_capacity(configs.len());
    for config in configs {
        let (namespace, stop, sightings) = (namespace.clone(), stop.clone(), sightings.clone());
        let handle = thread::Builder::new()
            .name(format!("prober-{}", config.prober))
            .spawn(move || {
                crate::netns::enter(&namespace)
                    .map_err(|e| format!("prober {}: setns: {e}", config.prober))?;
                Ok(run(&config, start, &stop, &sightings))
            })
            .map_err(|e| format!("spawn prober: {e}"))?;
        handles.push(handle);
    }
    Ok(handles)
}
