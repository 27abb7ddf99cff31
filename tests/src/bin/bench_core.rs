//! Measures the core's hot paths, in nanoseconds per operation, and the size of a node.
//!
//! ```text
//! cargo run --release -p flock-tests --bin bench_core
//! ```
//!
//! A 5-node flock is driven by hand, with no network faults, until it has a goose and
//! every follower knows it. Frames are then captured from that steady state (a heartbeat,
//! its acknowledgement, PreVotes) and replayed into one node many times. Each figure is
//! the median of [`RUNS`] runs of [`ITERATIONS`] operations, timed with
//! `std::time::Instant`. Storage is a no-op that counts saves, so the figures are the
//! protocol's own cost, and the bench fails if a steady-state operation writes storage.
//!
//! It also times `RateLimiter::allow`, which guards every text reply, in the cases a probe
//! flood produces: a known source refused, a known source allowed, and a new source
//! finding the table full of active sources (the longest path: two scans of the table).

use std::hint::black_box;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use goose_core::limits::{
    EMBEDDED_LOG_ENTRIES_MAX, EMBEDDED_MEMBERS_MAX, FRAME_SIZE_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX,
};
use goose_core::ratelimit::{
    RateLimit, RateLimiter, Verdict, EMBEDDED_RATE_SOURCES_MAX, RATE_SOURCES_MAX,
};
use goose_core::wire::{self, Body, Message, MessageRef};
use goose_core::{
    Config, Duration, Instant, Member, Node, NodeId, PersistentState, RaftRole, Storage,
    StorageError, Term,
};

/// Operations per run: enough that one run takes tens of milliseconds.
const ITERATIONS: u32 = 200_000;
/// Runs per figure; the median is reported, so one noisy run (a 2-core CI box) does not
/// move it.
const RUNS: usize = 5;
/// Nodes in the flock.
const NODES: u16 = 5;
/// A bound on the steps the flock may take to elect a goose.
const ELECTION_STEPS_MAX: usize = 10_000;

/// Saves done by every [`Counted`] storage.
static SAVES: AtomicU64 = AtomicU64::new(0);

/// A zero-sized storage: `save` only counts.
struct Counted;

impl Storage for Counted {
    fn save(&mut self, _state: &PersistentState<'_>) -> Result<(), StorageError> {
        SAVES.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn id(n: u16) -> NodeId {
    NodeId::new(n).expect("ids start at 1")
}

fn addr(n: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 9000 + n))
}

/// A flock of [`NODES`] nodes on one clock and a lossless, instant network.
struct Flock<const M: usize, const L: usize> {
    nodes: Vec<Node<Counted, M, L>>,
    now: Instant,
}

impl<const M: usize, const L: usize> Flock<M, L> {
    fn new() -> Self {
        let members: Vec<Member> = (1..=NODES)
            .map(|n| Member {
                id: id(n),
                addr: addr(n),
                voter: true,
            })
            .collect();
        let nodes = (1..=NODES)
            .map(|n| {
                let config = Config::new(id(n));
                Node::new(
                    &config,
                    Counted,
                    None,
                    &members,
                    u64::from(n),
                    Instant::ZERO,
                )
                .expect("valid config and bootstrap")
            })
            .collect();
        Self {
            nodes,
            now: Instant::ZERO,
        }
    }

    fn node(&mut self, n: u16) -> &mut Node<Counted, M, L> {
        &mut self.nodes[usize::from(n - 1)]
    }

    /// Every frame node `n` has to send now, with its target.
    fn drain(&mut self, n: u16) -> Vec<(u16, Vec<u8>)> {
        let now = self.now;
        let mut frames = Vec::new();
        let mut buffer = [0; FRAME_SIZE_MAX];
        while let Some(transmit) = self.node(n).poll_transmit(now, &mut buffer) {
            frames.push((transmit.target.get(), buffer[..transmit.size].to_vec()));
        }
        while self.node(n).poll_event().is_some() {}
        frames
    }

    /// Delivers frames until every node is quiet.
    fn deliver_all(&mut self) {
        let mut queue: Vec<(u16, Vec<u8>)> = (1..=NODES).flat_map(|n| self.drain(n)).collect();
        let mut steps = 0;
        while let Some((target, frame)) = queue.pop() {
            steps += 1;
            assert!(steps < ELECTION_STEPS_MAX, "the flock does not settle");
            let now = self.now;
            self.node(target).handle_frame(now, &frame);
            queue.extend(self.drain(target));
        }
    }

    /// Advances to the earliest deadline and fires every timer due.
    fn tick(&mut self) {
        let next = self.nodes.iter().filter_map(Node::poll_timeout).min();
        self.now = next.expect("no node has failed").max(self.now);
        let now = self.now;
        for node in &mut self.nodes {
            if node.poll_timeout().is_some_and(|deadline| deadline <= now) {
                node.handle_timeout(now);
            }
        }
        self.deliver_all();
    }

    /// Runs until one node is goose and every other follows it; returns the goose.
    fn elect(&mut self) -> u16 {
        for _ in 0..ELECTION_STEPS_MAX {
            self.tick();
            let now = self.now;
            let goose = (1..=NODES).find(|&n| self.node(n).is_goose(now));
            if let Some(goose) = goose {
                let followed = (1..=NODES).filter(|&n| n != goose).all(|n| {
                    let status = self.nodes[usize::from(n - 1)].status(now);
                    status.raft == RaftRole::Follower && status.leader == Some(id(goose))
                });
                if followed {
                    return goose;
                }
            }
        }
        panic!("no goose after {ELECTION_STEPS_MAX} steps");
    }

    /// Advances to the goose's next heartbeat round and returns its frame for `follower`,
    /// undelivered: the other followers get theirs, so the flock stays healthy.
    fn capture_heartbeat(&mut self, goose: u16, follower: u16) -> Vec<u8> {
        self.now = self
            .node(goose)
            .poll_timeout()
            .expect("leader has a deadline");
        let now = self.now;
        self.node(goose).handle_timeout(now);
        let mut captured = None;
        for (target, frame) in self.drain(goose) {
            if target == follower {
                captured = Some(frame);
            } else {
                self.node(target).handle_frame(now, &frame);
                for (back, answer) in self.drain(target) {
                    self.node(back).handle_frame(now, &answer);
                }
            }
        }
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
}

/// Encodes `message` from `source` to `target`.
fn frame(source: u16, target: u16, message: &MessageRef<'_>) -> Vec<u8> {
    let mut buffer = [0; FRAME_SIZE_MAX];
    let size = wire::encode(id(source), id(target), message, &mut buffer).expect("fits");
    buffer[..size].to_vec()
}

/// The median over [`RUNS`] of the ns per call of `operation`, which must not write
/// storage (every measured operation is a steady-state one).
fn measure(mut operation: impl FnMut()) -> f64 {
    let saves = SAVES.load(Ordering::Relaxed);
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = std::time::Instant::now();
            for _ in 0..ITERATIONS {
                operation();
            }
            started.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
        })
        .collect();
    assert_eq!(
        SAVES.load(Ordering::Relaxed),
        saves,
        "a steady-state operation saved"
    );
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

/// Hands `frame` to `node` and drains its transmits, as a driver's loop does; returns how
/// many frames it sent and the size of the last, which `buffer` holds.
fn handle_and_drain<const M: usize, const L: usize>(
    node: &mut Node<Counted, M, L>,
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
    goose: u16,
    follower: u16,
    bystander: u16,
    heartbeat: Vec<u8>,
    now: Instant,
}

impl<const M: usize, const L: usize> Steady<M, L> {
    fn new() -> Self {
        let mut flock = Flock::<M, L>::new();
        let goose = flock.elect();
        let follower = if goose == 1 { 2 } else { 1 };
        let bystander = (1..=NODES)
            .find(|&n| n != goose && n != follower)
            .expect("5 nodes");
        let heartbeat = flock.capture_heartbeat(goose, follower);
        let now = flock.now;
        Self {
            flock,
            goose,
            follower,
            bystander,
            heartbeat,
            now,
        }
    }
}

/// Measures every operation on a fresh flock with `M` members and `L` entries of capacity.
fn bench<const M: usize, const L: usize>() -> Vec<Figure> {
    let mut steady = Steady::<M, L>::new();
    let mut figures = bench_replication(&mut steady);
    figures.extend(bench_pre_votes(&mut steady));
    figures.extend(bench_ticks(&mut steady));
    figures
}

/// A heartbeat at the follower, then its acknowledgement at the leader.
fn bench_replication<const M: usize, const L: usize>(steady: &mut Steady<M, L>) -> Vec<Figure> {
    let (now, heartbeat) = (steady.now, steady.heartbeat.clone());
    let mut buffer = [0; FRAME_SIZE_MAX];
    let mut figures = Vec::new();

    // Follower: a heartbeat from its leader, answered with an AppendResponse.
    let node = steady.flock.node(steady.follower);
    let (sent, size) = handle_and_drain(node, now, &heartbeat, &mut buffer);
    let ack = buffer[..size].to_vec();
    let (_, answer) = wire::decode(&ack).expect("valid");
    assert!(matches!(answer.body, Body::AppendResponse { .. }));
    let ns = measure(|| {
        handle_and_drain(node, now, &heartbeat, &mut buffer);
    });
    let name = "follower: heartbeat (Append, 0 entries) + poll_transmit";
    figures.push(Figure { name, ns, sent });

    // Leader: the acknowledgement (commit and lease bookkeeping, nothing to send back).
    let node = steady.flock.node(steady.goose);
    assert!(node.is_goose(now));
    let (sent, _) = handle_and_drain(node, now, &ack, &mut buffer);
    let ns = measure(|| {
        handle_and_drain(node, now, &ack, &mut buffer);
    });
    let name = "leader: ack (AppendResponse) + poll_transmit";
    figures.push(Figure { name, ns, sent });

    // Decoding alone, for scale: what every handle_frame pays first.
    let ns = measure(|| {
        black_box(wire::decode(black_box(&heartbeat)).is_ok());
    });
    let name = "wire::decode of the heartbeat alone";
    figures.push(Figure { name, ns, sent: 0 });
    figures
}

/// A PreVote from a node back from a partition, in the next term with an up-to-date log,
/// refused by a follower with a live leader, then granted once the leader is silent.
fn bench_pre_votes<const M: usize, const L: usize>(steady: &mut Steady<M, L>) -> Vec<Figure> {
    let now = steady.now;
    let mut buffer = [0; FRAME_SIZE_MAX];
    let mut figures = Vec::new();
    let node = steady.flock.node(steady.follower);
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
    let ns = measure(|| {
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
    let ns = measure(|| {
        handle_and_drain(node, later, &pre_vote, &mut buffer);
    });
    let name = "follower: PreVote granted + poll_transmit";
    figures.push(Figure { name, ns, sent });
    figures
}

/// Ticks with nothing due: the driver woke early (or spuriously).
fn bench_ticks<const M: usize, const L: usize>(steady: &mut Steady<M, L>) -> Vec<Figure> {
    let now = steady.now;
    let mut figures = Vec::new();
    for (n, name) in [
        (steady.goose, "leader: handle_timeout, nothing due"),
        (steady.bystander, "follower: handle_timeout, nothing due"),
    ] {
        let node = steady.flock.node(n);
        assert!(node.poll_timeout().is_some_and(|deadline| deadline > now));
        let ns = measure(|| node.handle_timeout(black_box(now)));
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
    let ns = measure(|| {
        black_box(limiter.allow(black_box(start), black_box(last)));
    });
    let name = "allow: known source (last in the table), refused";
    figures.push(Figure { name, ns, sent: 0 });

    // A known source allowed: time moves 1 ms per call (one token at 1,000/s).
    let mut now = start;
    let ns = measure(|| {
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
    let ns = measure(|| {
        black_box(busy.allow(black_box(start), black_box(stranger)));
    });
    let name = "allow: new source, table full of active sources (overflow), refused";
    figures.push(Figure { name, ns, sent: 0 });
    figures
}

fn main() {
    let saves_before = SAVES.load(Ordering::Relaxed);
    let desktop = bench::<MEMBERS_MAX, LOG_ENTRIES_MAX>();
    let embedded = bench::<EMBEDDED_MEMBERS_MAX, EMBEDDED_LOG_ENTRIES_MAX>();
    let saves = SAVES.load(Ordering::Relaxed) - saves_before;

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
        size_of::<Node<Counted, MEMBERS_MAX, LOG_ENTRIES_MAX>>()
    );
    println!(
        "| Node<S, {EMBEDDED_MEMBERS_MAX}, {EMBEDDED_LOG_ENTRIES_MAX}> | {} |",
        size_of::<Node<Counted, EMBEDDED_MEMBERS_MAX, EMBEDDED_LOG_ENTRIES_MAX>>()
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
