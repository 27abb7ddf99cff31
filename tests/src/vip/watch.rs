//! What the harness sees, from both sides of the wire.
//!
//! - On each node, a **watcher** thread inside the node's namespace answers the client's
//!   probes with the node's id (a tiny responder on [`ECHO_PORT`]) and samples, every
//!   [`SAMPLE_INTERVAL`], whether the namespace holds the virtual IP: binding a socket to an
//!   address succeeds exactly while that address is assigned to one of the namespace's
//!   interfaces, so one `bind` tells it without parsing netlink. Each [`Sample`] brackets its
//!   `bind` between a clock reading before and one after: the thread may be preempted on
//!   either side, so the check happened somewhere in between, and [`super::analysis`] says
//!   only what those brackets prove.
//! - The **client**, in the client namespace, sends a probe to the virtual IP every
//!   [`PROBE_INTERVAL`] and records when it sent each one and which node answered it, when.
//!
//! A probe reaches a node only if the client's neighbour table maps the virtual IP to that
//! node's MAC *and* the node holds the address (a node that does not drops it: namespaces do
//! not forward), so an answer from node N means N held the address and the client's ARP
//! entry pointed at it: exactly what a user of the address sees.
//!
//! Everything is recorded against one [`Clock`]; [`Observers::finish`] stops the threads and
//! returns the [`Record`] for [`super::analysis`]. While they run, [`Live`] says who holds
//! the address and who answered last, for the scenario driver's waits.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::netns;

/// Microseconds since the run's [`Clock`] started.
pub type Micros = u64;

/// The UDP port of every node's responder.
pub const ECHO_PORT: u16 = 7100;
/// The client sends one probe per interval.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// Each watcher checks whether its node holds the address once per interval.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(1);
/// Probes the client records (33 minutes at one per millisecond); it stops sending beyond.
pub const PROBES_MAX: usize = 2_000_000;
/// Answers the client records; beyond, it stops recording (and says so in the record).
pub const ANSWERS_MAX: usize = PROBES_MAX;
/// Samples one watcher keeps (two per change of "holds the address"); beyond, it stops
/// recording.
pub const SAMPLES_MAX: usize = 200_000;
/// How long a watcher or the client's receiver blocks before checking whether to stop.
const RECV_TIMEOUT: Duration = Duration::from_millis(1);
/// A probe: the probe's sequence number, big-endian. An answer: the same four bytes, then
/// the answering node's id (two bytes, big-endian).
const PROBE_LEN: usize = 4;
const ANSWER_LEN: usize = 6;

/// The run's time base: every record is in microseconds since it started.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    /// Starts now.
    pub fn start() -> Self {
        Self(Instant::now())
    }

    /// Microseconds since the start.
    pub fn now(&self) -> Micros {
        self.at(Instant::now())
    }

    /// `instant` in microseconds since the start (0 before it).
    pub fn at(&self, instant: Instant) -> Micros {
        Micros::try_from(instant.saturating_duration_since(self.0).as_micros())
            .unwrap_or(Micros::MAX)
    }
}

/// One answer the client received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The probe's sequence number (its index in [`Record::sent`]).
    pub seq: u32,
    /// The node that answered.
    pub node: u16,
    /// When the answer arrived.
    pub at: Micros,
}

/// One check of whether a node holds the address: the `bind` ran, and found `held`, at some
/// moment in `[before, after]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Read before the check.
    pub before: Micros,
    /// Read after it.
    pub after: Micros,
    /// Whether the bind succeeded: the address was on one of the node's interfaces.
    pub held: bool,
}

/// Everything the observers saw.
#[derive(Clone, Debug, Default)]
pub struct Record {
    /// Per node (index = id − 1): its samples, in order, with only the first and the last
    /// of each run of samples that agree (one, if the run had one): the ones between say
    /// nothing the two ends do not, and a run of hours is two samples.
    pub holds: Vec<Vec<Sample>>,
    /// When each probe was sent (index = sequence number).
    pub sent: Vec<Micros>,
    /// Every answer, in arrival order.
    pub answers: Vec<Answer>,
    /// Something hit a bound and stopped recording: the record is incomplete from there.
    pub truncated: bool,
}

/// What the observers know right now, for waiting on.
#[derive(Debug)]
pub struct Live {
    holds: Vec<AtomicBool>,
    /// The last answer: node id in the top 16 bits, arrival time (µs) in the low 48.
    last_answer: AtomicU64,
}

const AT_BITS: u32 = 48;
const AT_MASK: u64 = (1 << AT_BITS) - 1;

impl Live {
    fn new(nodes: usize) -> Self {
        Self {
            holds: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
            last_answer: AtomicU64::new(0),
        }
    }

    /// The nodes that hold the address now (ids).
    pub fn holders(&self) -> Vec<u16> {
        self.holds
            .iter()
            .enumerate()
            .filter(|(_, held)| held.load(Ordering::Relaxed))
            .map(|(index, _)| id_of(index))
            .collect()
    }

    /// The last answer's node and arrival time, if any arrived.
    pub fn last_answer(&self) -> Option<(u16, Micros)> {
        let packed = self.last_answer.load(Ordering::Relaxed);
        let node = u16::try_from(packed >> AT_BITS).unwrap_or(u16::MAX);
        (node != 0).then_some((node, packed & AT_MASK))
    }

    fn answered(&self, node: u16, at: Micros) {
        self.last_answer.store(
            (u64::from(node) << AT_BITS) | (at & AT_MASK),
            Ordering::Relaxed,
        );
    }
}

fn id_of(index: usize) -> u16 {
    u16::try_from(index + 1).unwrap_or(u16::MAX)
}

/// The running watchers and client.
#[derive(Debug)]
pub struct Observers {
    stop: Arc<AtomicBool>,
    live: Arc<Live>,
    watchers: Vec<JoinHandle<Result<Holds, String>>>,
    client: Option<JoinHandle<Result<ClientLog, String>>>,
}

/// One node's samples at the ends of each run ([`Record::holds`]).
type Holds = Vec<Sample>;
/// The client's sends, answers, and whether it hit a bound.
type ClientLog = (Vec<Micros>, Vec<Answer>, bool);

impl Observers {
    /// Starts a watcher in each of `nodes` (namespace files, node `i + 1` at index `i`) and
    /// the client in `client`, probing `vip`.
    ///
    /// # Errors
    ///
    /// A thread that could not be spawned (those already started are stopped).
    pub fn start(
        clock: Clock,
        nodes: &[PathBuf],
        client: PathBuf,
        vip: Ipv4Addr,
    ) -> Result<Self, String> {
        let mut observers = Self {
            stop: Arc::new(AtomicBool::new(false)),
            live: Arc::new(Live::new(nodes.len())),
            watchers: Vec::new(),
            client: None,
        };
        for (index, namespace) in nodes.iter().enumerate() {
            let (stop, live, namespace) = (
                observers.stop.clone(),
                observers.live.clone(),
                namespace.clone(),
            );
            let handle = thread::Builder::new()
                .name(format!("vip-watch-{}", index + 1))
                .spawn(move || watch(index, &namespace, vip, clock, &stop, &live))
                .map_err(|e| format!("spawn a watcher: {e}"))?;
            observers.watchers.push(handle);
        }
        let (stop, live) = (observers.stop.clone(), observers.live.clone());
        observers.client = Some(
            thread::Builder::new()
                .name("vip-client".to_owned())
                .spawn(move || probe(&client, vip, clock, &stop, &live))
                .map_err(|e| format!("spawn the client: {e}"))?,
        );
        Ok(observers)
    }

    /// What they know now.
    pub fn live(&self) -> &Live {
        &self.live
    }

    /// Stops every thread and returns what they recorded.
    ///
    /// # Errors
    ///
    /// The first thread that failed (could not enter its namespace or bind its socket) or
    /// panicked.
    pub fn finish(mut self) -> Result<Record, String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut record = Record::default();
        let mut first_error = None;
        for handle in std::mem::take(&mut self.watchers) {
            match handle.join() {
                Ok(Ok(holds)) => {
                    record.truncated |= holds.len() >= SAMPLES_MAX;
                    record.holds.push(holds);
                }
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(_) => {
                    first_error.get_or_insert_with(|| "a watcher panicked".to_owned());
                }
            }
        }
        match self.client.take().map(JoinHandle::join) {
            Some(Ok(Ok((sent, answers, truncated)))) => {
                record.sent = sent;
                record.answers = answers;
                record.truncated |= truncated;
            }
            Some(Ok(Err(error))) => {
                first_error.get_or_insert(error);
            }
            Some(Err(_)) => {
                first_error.get_or_insert_with(|| "the client panicked".to_owned());
            }
            None => {}
        }
        first_error.map_or(Ok(record), Err)
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.watchers.drain(..) {
            let _ = handle.join();
        }
        if let Some(handle) = self.client.take() {
            let _ = handle.join();
        }
    }
}

/// A watcher: answers probes with the node's id and records when the node holds `vip`.
fn watch(
    index: usize,
    namespace: &std::path::Path,
    vip: Ipv4Addr,
    clock: Clock,
    stop: &AtomicBool,
    live: &Live,
) -> Result<Holds, String> {
    let id = id_of(index);
    netns::enter(namespace).map_err(|e| format!("watcher {id}: setns: {e}"))?;
    // Bound to every address, so it answers whichever address the probe came to; only
    // probes to the virtual IP are sent, and only a node that holds it receives them.
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, ECHO_PORT))
        .map_err(|e| format!("watcher {id}: bind port {ECHO_PORT}: {e}"))?;
    socket
        .set_read_timeout(Some(RECV_TIMEOUT))
        .map_err(|e| format!("watcher {id}: {e}"))?;
    let mut holds: Holds = Vec::new();
    // The latest sample, kept or not: it ends its run when the next one disagrees.
    let mut latest: Option<Sample> = None;
    let mut next_sample = Instant::now();
    let mut buffer = [0_u8; 64];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((len, from)) = socket.recv_from(&mut buffer) {
            if len == PROBE_LEN {
                let mut answer = [0_u8; ANSWER_LEN];
                answer[..PROBE_LEN].copy_from_slice(&buffer[..PROBE_LEN]);
                answer[PROBE_LEN..].copy_from_slice(&id.to_be_bytes());
                let _ = socket.send_to(&answer, from); // a lost answer is a gap the client sees
            }
        }
        let now = Instant::now();
        if now >= next_sample {
            next_sample = now + SAMPLE_INTERVAL;
            let held = UdpSocket::bind(SocketAddr::from((vip, 0))).is_ok();
            let sample = Sample {
                before: clock.at(now),
                after: clock.now(),
                held,
            };
            if latest.map(|latest| latest.held) != Some(held) {
                live.holds[index].store(held, Ordering::Relaxed);
                // The last sample of the run that ends, then the first of the new one.
                for kept in latest.into_iter().chain([sample]) {
                    if holds.len() < SAMPLES_MAX && holds.last() != Some(&kept) {
                        holds.push(kept);
                    }
                }
            }
            latest = Some(sample);
        }
    }
    // The last run's last sample.
    if let Some(latest) = latest {
        if holds.len() < SAMPLES_MAX && holds.last() != Some(&latest) {
            holds.push(latest);
        }
    }
    Ok(holds)
}

/// The client: one probe to `vip` per [`PROBE_INTERVAL`], on a fixed schedule (a late send
/// is recorded when it actually left, and the schedule does not try to catch up).
fn probe(
    namespace: &std::path::Path,
    vip: Ipv4Addr,
    clock: Clock,
    stop: &AtomicBool,
    live: &Live,
) -> Result<ClientLog, String> {
    netns::enter(namespace).map_err(|e| format!("client: setns: {e}"))?;
    let socket =
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("client: bind: {e}"))?;
    let receiver = socket
        .try_clone()
        .map_err(|e| format!("client: clone the socket: {e}"))?;
    receiver
        .set_read_timeout(Some(RECV_TIMEOUT))
        .map_err(|e| format!("client: {e}"))?;
    let target = SocketAddr::from((vip, ECHO_PORT));
    thread::scope(|scope| {
        let answers = thread::Builder::new()
            .name("vip-client-recv".to_owned())
            .spawn_scoped(scope, || receive(&receiver, clock, stop, live))
            .map_err(|e| format!("spawn the client's receiver: {e}"))?;
        let mut sent: Vec<Micros> = Vec::with_capacity(PROBES_MAX.min(1 << 20));
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) && sent.len() < PROBES_MAX {
            let now = Instant::now();
            if now < next {
                thread::sleep(next - now);
                continue;
            }
            let seq = u32::try_from(sent.len()).unwrap_or(u32::MAX);
            sent.push(clock.now());
            // A send error (no neighbour entry yet, or a failed one) is a probe without
            // answer, which is what the client saw.
            let _ = socket.send_to(&seq.to_be_bytes(), target);
            next = (next + PROBE_INTERVAL).max(now);
        }
        let truncated = sent.len() >= PROBES_MAX;
        if truncated {
            // Keep the receiver going until told to stop, so the answers stay consistent.
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(RECV_TIMEOUT);
            }
        }
        let (answers, answers_truncated) = answers
            .join()
            .map_err(|_| "the client's receiver panicked".to_owned())?;
        Ok((sent, answers, truncated || answers_truncated))
    })
}

fn receive(
    socket: &UdpSocket,
    clock: Clock,
    stop: &AtomicBool,
    live: &Live,
) -> (Vec<Answer>, bool) {
    let mut answers = Vec::with_capacity(ANSWERS_MAX.min(1 << 20));
    let mut buffer = [0_u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok(len) = socket.recv(&mut buffer) else {
            continue;
        };
        if len != ANSWER_LEN {
            continue;
        }
        let at = clock.now();
        let seq = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
        let node = u16::from_be_bytes([buffer[4], buffer[5]]);
        live.answered(node, at);
        if answers.len() < ANSWERS_MAX {
            answers.push(Answer { seq, node, at });
        }
    }
    let truncated = answers.len() >= ANSWERS_MAX;
    (answers, truncated)
}
