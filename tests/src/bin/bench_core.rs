//! Measures the core's hot paths, in nanoseconds per operation, and the size of a node.
//!
//! ```text
//! cargo run --release -p flock-tests --bin bench_core
//! ```
//!
//! A 5-node flock of the simulator (`flock_sim`, held: no network faults, every frame
//! delivered by hand) runs until it has a goose and every follower knows it. Frames are
//! then captured from that steady state (a heartbeat, its acknowledgement, PreVotes) and
//! replayed into one node many times. Each figure is the median of [`RUNS`] runs of
//! [`ITERATIONS`] operations, timed with `std::time::Instant`. The node is called directly,
//! so the figures are the protocol's own cost, and the bench fails if a steady-state
//! operation writes storage.
//!
//! It also times `RateLimiter::allow`, which guards every text reply, in the cases a probe
//! flood produces: a known source refused, a known source allowed, and a new source
//! finding the table full of active sources (the longest path: two scans of the table).

use std::hint::black_box;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr};

use flock_sim::{id, Flock, FlockConfig, SimNode, SimStorage};
use goose_core::limits::{
    EMBEDDED_LOG_ENTRIES_MAX, EMBEDDED_MEMBERS_MAX, FRAME_SIZE_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX,
};
use goose_core::ratelimit::{
    RateLimit, RateLimiter, Verdict, EMBEDDED_RATE_SOURCES_MAX, RATE_SOURCES_MAX,
};
use goose_core::wire::{self, Body, Message, MessageRef};
use goose_core::{Duration, Instant, Node, PersistentState, Storage, StorageError, Term};

/// Operations per run: enough that one run takes tens of milliseconds.
const ITERATIONS: u32 = 200_000;
/// Runs per figure; the median is reported, so one noisy run (a 2-core CI box) does not
/// move it.
const RUNS: usize = 5;
/// Nodes in the flock.
const NODES: u16 = 5;
/// Frames in flight at most: every node's answers to one round of every other, many times
/// over.
const IN_FLIGHT_MAX: usize = 1_024;

/// A storage that keeps nothing, for the size figures: the node's own state, without the
/// simulator's storage handle.
struct Nowhere;

impl Storage for Nowhere {
    fn save(&mut self, _state: &PersistentState<'_>) -> Result<(), StorageError> {
        Ok(())
    }
}

/// A held flock of [`NODES`] nodes with clocks that do not drift.
fn flock<const M: usize, const L: usize>() -> Flock<M, L> {
    let config = FlockConfig {
        drift_ppm: 0,
        ..FlockConfig::new(NODES, 1)
    };
    let mut flock = Flock::held(config, IN_FLIGHT_MAX);
    for n in 1..=NODES {
        flock.start(n);
    }
    flock
}

/// Advances to the goose's next heartbeat round and returns its frame for `follower`,
/// undelivered: the other followers get theirs, so the flock stays healthy.
fn capture_heartbeat<const M: usize, const L: usize>(
    flock: &mut Flock<M, L>,
    goose: u16,
    follower: u16,
) -> Vec<u8> {
    flock.now = flock.deadline(goose).expect("leader has a deadline");
    flock.fire(goose);
    let mut captured = None;
    for packet in flock.take_frames() {
        if packet.to == follower {
            captured = Some(packet.bytes);
        } else {
            flock.deliver(&packet);
        }
    }
    flock.deliver_all();
    let frame = captured.expect("a heartbeat for every follower");
    let (_, message) = wire::decode(&frame).expect("the core encodes valid frames");
    match message.body {
        Body::Append { entries, .. } => {
            assert!(entries.is_empty(), "a heartbeat, not a catch-up")
        }
        other => panic!("expected a heartbeat, got {other:?}"),
    }
    frame
}

/// Encodes `message` from `source` to `target`.
fn frame(source: u16, target: u16, message: &MessageRef<'_>) -> Vec<u8> {
    let mut buffer = [0; FRAME_SIZE_MAX];
    let size = wire::encode(id(source), id(target), message, &mut buffer).expect("fits");
    buffer[..size].to_vec()
}

/// Saves done by every node of `disks`.
fn saves(disks: &[SimStorage]) -> u64 {
    disks
        .iter()
        .map(|storage| storage.disk().borrow().saves)
        .sum()
}

/// The median over [`RUNS`] of the ns per call of `operation`, which must not write to any
/// of `disks` (every measured operation is a steady-state one).
fn measure(disks: &[SimStorage], mut operation: impl FnMut()) -> f64 {
    let before = saves(disks);
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = std::time::Instant::now();
            for _ in 0..ITERATIONS {
                operation();
            }
            started.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
        })
        .collect();
    assert_eq!(saves(disks), before, "a steady-state operation saved");
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

/// Hands `frame` to `node` and drains its transmits, as a driver's loop does; returns how
/// many frames it sent and the size of the last, which `buffer` holds.
fn handle_and_drain<const M: usize, const L: usize>(
    node: &mut SimNode<M, L>,
    now: Instant,
    frame: &[u8],
    buffer: &mut [u8; FRAME_SIZE_MAX],
) -> (usize, usize) {
    node.handle_frame(now, black_box(frame));
    let (mut sent, mut size) = (0, 0);
    while let Some(transmit) = node.poll_transmit(now, buffer) {
        sent += 1;
        size = black_box(transmit).size;
    }
    (sent, size)
}

struct Figure {
    name: &'static str,
    ns: f64,
    /// Frames the operation sends, checked once before timing.
    sent: usize,
}

/// A flock in its steady state, and the roles its nodes play in the bench.
struct Steady<const M: usize, const L: usize> {
    flock: Flock<M, L>,
    /// Every node's storage, to count saves while a node is borrowed.
    disks: Vec<SimStorage>,
    goose: u16,
    follower: u16,
    bystander: u16,
    heartbeat: Vec<u8>,
}

impl<const M: usize, const L: usize> Steady<M, L> {
    fn new() -> Self {
        let mut flock = flock::<M, L>();
        let goose = flock.settle_held();
        let follower = if goose == 1 { 2 } else { 1 };
        let bystander = (1..=NODES)
            .find(|&n| n != goose && n != follower)
            .expect("5 nodes");
        let heartbeat = capture_heartbeat(&mut flock, goose, follower);
        let disks = flock.processes.iter().map(|p| p.storage.clone()).collect();
        Self {
            flock,
            disks,
            goose,
            follower,
            bystander,
            heartbeat,
        }
    }
}

/// Node `n`, to call directly, and its clock's reading now.
fn node_at<const M: usize, const L: usize>(
    flock: &mut Flock<M, L>,
    n: u16,
) -> (&mut SimNode<M, L>, Instant) {
    let now = flock.local_now(n);
    (flock.node_mut(n).expect("running"), now)
}

/// Measures every operation on a fresh flock with `M` members and `L` entries of capacity;
/// also returns the saves of the whole run, elections included.
fn bench<const M: usize, const L: usize>() -> (Vec<Figure>, u64) {
    let mut steady = Steady::<M, L>::new();
    let mut figures = bench_replication(&mut steady);
    figures.extend(bench_pre_votes(&mut steady));
    figures.extend(bench_ticks(&mut steady));
    (figures, saves(&steady.disks))
}

/// A heartbeat at the follower, then its acknowledgement at the leader.
fn bench_replication<const M: usize, const L: usize>(steady: &mut Steady<M, L>) -> Vec<Figure> {
    let Steady {
        flock,
        disks,
        heartbeat,
        ..
    } = steady;
    let mut buffer = [0; FRAME_SIZE_MAX];
    let mut figures = Vec::new();

    // Follower: a heartbeat from its leader, answered with an AppendResponse.
    let (node, now) = node_at(flock, steady.follower);
    let (sent, size) = handle_and_drain(node, now, heartbeat, &mut buffer);
    let ack = buffer[..size].to_vec();
    let (_, answer) = wire::decode(&ack).expect("valid");
    assert!(matches!(answer.body, Body::AppendResponse { .. }));
    let ns = measure(disks, || {
        handle_and_drain(node, now, heartbeat, &mut buffer);
    });
    let name = "follower: heartbeat (Append, 0 entries) + poll_transmit";
    figures.push(Figure { name, ns, sent });

    // Leader: the acknowledgement (commit and lease bookkeeping, nothing to send back).
    let (node, now) = node_at(flock, steady.goose);
    assert!(node.is_goose(now));
    let (sent, _) = handle_and_drain(node, now, &ack, &mut buffer);
    let ns = measure(disks, || {
        handle_and_drain(node, now, &ack, &mut buffer);
    });
    let name = "leader: ack (AppendResponse) + poll_transmit";
    figures.push(Figure { name, ns, sent });

    // Decoding alone, for scale: what every handle_frame pays first.
    let ns = measure(disks, || {
        black_box(wire::decode(black_box(heartbeat)).is_ok());
    });
    let name = "wire::decode of the heartbeat alone";
    figures.push(Figure { name, ns, sent: 0 });
    figures
}

/// A PreVote from a node back from a partition, in the next term with an up-to-date log,
/// refused by a follower with a live leader, then granted once the leader is silent.
fn bench_pre_votes<const M: usize, const L: usize>(steady: &mut Steady<M, L>) -> Vec<Figure> {
    let mut buffer = [0; FRAME_SIZE_MAX];
    let mut figures = Vec::new();
    let (node, now) = node_at(&mut steady.flock, steady.follower);
    let pre_vote = Message {
        term: Term(node.term().0 + 1),
        body: Body::PreVote {
            log: goose_core::LogView {
                term: node.log_term(),
                last: node.status(now).last.index,
            },
        },
    };
    let pre_vote = frame(steady.bystander, steady.follower, &pre_vote);

    // A follower that heard its leader within election_timeout_min refuses without an
    // answer (leader stickiness): the common case while a goose is alive.
    let refusals = node.stats().sticky_refusals;
    let (sent, _) = handle_and_drain(node, now, &pre_vote, &mut buffer);
    assert!(node.stats().sticky_refusals > refusals, "refused as sticky");
    let ns = measure(&steady.disks, || {
        handle_and_drain(node, now, &pre_vote, &mut buffer);
    });
    let name = "follower: PreVote refused (sticky) + poll_transmit";
    figures.push(Figure { name, ns, sent });

    // Once its leader has been silent for election_timeout_min, the same PreVote is
    // granted (a PreVoteResponse goes back). Only this follower's clock moves on.
    let later = now + node.config().election_timeout_min + Duration::from_micros(1);
    let (sent, size) = handle_and_drain(node, later, &pre_vote, &mut buffer);
    let (_, answer) = wire::decode(&buffer[..size]).expect("valid");
    let granted = matches!(answer.body, Body::PreVoteResponse { granted: true });
    assert!(granted, "granted once the leader is silent: {answer:?}");
    let ns = measure(&steady.disks, || {
        handle_and_drain(node, later, &pre_vote, &mut buffer);
    });
    let name = "follower: PreVote granted + poll_transmit";
    figures.push(Figure { name, ns, sent });
    figures
}

/// Ticks with nothing due: the driver woke early (or spuriously).
fn bench_ticks<const M: usize, const L: usize>(steady: &mut Steady<M, L>) -> Vec<Figure> {
    let mut figures = Vec::new();
    for (n, name) in [
        (steady.goose, "leader: handle_timeout, nothing due"),
        (steady.bystander, "follower: handle_timeout, nothing due"),
    ] {
        let (node, now) = node_at(&mut steady.flock, n);
        assert!(node.poll_timeout().is_some_and(|deadline| deadline > now));
        let ns = measure(&steady.disks, || node.handle_timeout(black_box(now)));
        figures.push(Figure { name, ns, sent: 0 });
    }
    figures
}

/// A source address of the limiter bench: 10.0.0.0 + `n`.
fn source(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

/// Times `RateLimiter::<N>::allow` with the default limits and a table full of `N` active
/// sources; each figure checks the verdict its case is about once, before timing.
fn bench_limiter<const N: usize>() -> Vec<Figure> {
    let mut limiter = RateLimiter::<N>::new(RateLimit::DEFAULT);
    let start = Instant::from_millis(1_000);
    let count = u32::try_from(N).expect("a small table");
    for n in 0..count {
        assert!(limiter.allow(start, source(n)));
    }
    assert_eq!(limiter.sources_count(), N);
    let last = source(count - 1);
    let mut figures = Vec::new();

    // The flood case: the last source in the table, its bucket empty, at one instant.
    while limiter.allow(start, last) {}
    assert_eq!(limiter.check(start, last), Verdict::RefuseSource);
    let ns = measure(&[], || {
        black_box(limiter.allow(black_box(start), black_box(last)));
    });
    let name = "allow: known source (last in the table), refused";
    figures.push(Figure { name, ns, sent: 0 });

    // A known source allowed: time moves 1 ms per call (one token at 1,000/s).
    let mut now = start;
    let ns = measure(&[], || {
        now = now + Duration::from_millis(1);
        black_box(limiter.allow(black_box(now), black_box(last)));
    });
    assert_eq!(
        limiter.check(now, last),
        Verdict::RefuseSource,
        "allowed once per ms"
    );
    let name = "allow: known source (last in the table), allowed";
    figures.push(Figure { name, ns, sent: 0 });

    // A new source, the table full of active sources: refused by the overflow bucket
    // after a scan for the source and a scan for an idle entry.
    let stranger = source(count + 1);
    let mut busy = RateLimiter::<N>::new(RateLimit::DEFAULT);
    for n in 0..count {
        assert!(busy.allow(start, source(n)));
    }
    while busy.allow(start, stranger) {}
    assert_eq!(busy.check(start, stranger), Verdict::RefuseOverflow);
    let ns = measure(&[], || {
        black_box(busy.allow(black_box(start), black_box(stranger)));
    });
    let name = "allow: new source, table full of active sources (overflow), refused";
    figures.push(Figure { name, ns, sent: 0 });
    figures
}

fn main() {
    let (desktop, desktop_saves) = bench::<MEMBERS_MAX, LOG_ENTRIES_MAX>();
    let (embedded, embedded_saves) = bench::<EMBEDDED_MEMBERS_MAX, EMBEDDED_LOG_ENTRIES_MAX>();
    let saves = desktop_saves + embedded_saves;

    println!(
        "goose-core hot paths, 5-node flock, median of {RUNS} runs × {ITERATIONS} ops (ns/op)\n"
    );
    println!(
        "| operation | frames sent | Node<_, {MEMBERS_MAX}, {LOG_ENTRIES_MAX}> | \
         Node<_, {EMBEDDED_MEMBERS_MAX}, {EMBEDDED_LOG_ENTRIES_MAX}> |"
    );
    println!("| --- | ---: | ---: | ---: |");
    for (wide, small) in desktop.iter().zip(&embedded) {
        assert_eq!(wide.sent, small.sent);
        println!(
            "| {} | {} | {:.0} | {:.0} |",
            wide.name, wide.sent, wide.ns, small.ns
        );
    }
    println!();
    println!("| type | size_of (bytes) |");
    println!("| --- | ---: |");
    println!(
        "| Node<S, {MEMBERS_MAX}, {LOG_ENTRIES_MAX}> | {} |",
        size_of::<Node<Nowhere, MEMBERS_MAX, LOG_ENTRIES_MAX>>()
    );
    println!(
        "| Node<S, {EMBEDDED_MEMBERS_MAX}, {EMBEDDED_LOG_ENTRIES_MAX}> | {} |",
        size_of::<Node<Nowhere, EMBEDDED_MEMBERS_MAX, EMBEDDED_LOG_ENTRIES_MAX>>()
    );
    println!(
        "| wire::MessageOwned (what wire::decode returns) | {} |",
        size_of::<wire::MessageOwned>()
    );
    println!(
        "\n(S is a zero-sized storage; storage saves during the run, elections included: {saves})"
    );
    print_limiter();
}

/// The `RateLimiter::allow` table, at the desktop and the embedded table sizes.
fn print_limiter() {
    let desktop = bench_limiter::<RATE_SOURCES_MAX>();
    let embedded = bench_limiter::<EMBEDDED_RATE_SOURCES_MAX>();
    println!("\nRateLimiter::allow, default limits, table full of active sources (ns/op)\n");
    println!(
        "| case | RateLimiter<{RATE_SOURCES_MAX}> | RateLimiter<{EMBEDDED_RATE_SOURCES_MAX}> |"
    );
    println!("| --- | ---: | ---: |");
    for (wide, small) in desktop.iter().zip(&embedded) {
        println!("| {} | {:.0} | {:.0} |", wide.name, wide.ns, small.ns);
    }
    println!(
        "\nsize_of: RateLimiter<{RATE_SOURCES_MAX}> {} bytes, \
         RateLimiter<{EMBEDDED_RATE_SOURCES_MAX}> {} bytes",
        size_of::<RateLimiter<RATE_SOURCES_MAX>>(),
        size_of::<RateLimiter<EMBEDDED_RATE_SOURCES_MAX>>()
    );
}
