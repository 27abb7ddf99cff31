//! What the cluster key costs per peer frame on this host: sealing and opening a heartbeat
//! (an AppendEntries with no entries, as a goose sends every 50 ms per peer) with
//! [`ClusterKey`], HMAC-SHA256/128, through the core's `Sealer` and `ReplayGuard`.
//!
//! ```text
//! cargo run --release -p goose-embedded --example mac_cost
//! ```
//!
//! Each figure is the median of 5 runs of 200,000 operations, in nanoseconds.

use std::hint::black_box;
use std::time::Instant;

use goose_core::auth::key::{ClusterKey, KEY_SIZE};
use goose_core::auth::{Mac, ReplayGuard, Sealer, TRAILER_SIZE};
use goose_core::limits::FRAME_SIZE_MAX;
use goose_core::wire::{self, Body, MessageRef};
use goose_core::{EntryId, LogIndex, NodeId, Term};

const ITERATIONS: u32 = 200_000;
const RUNS: usize = 5;

fn median_ns(mut operation: impl FnMut()) -> f64 {
    let mut runs: Vec<f64> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..ITERATIONS {
                operation();
            }
            started.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[RUNS / 2]
}

fn main() {
    let key = ClusterKey::new(&[0x5a; KEY_SIZE]);
    let id = |n| NodeId::new(n).expect("not 0");
    let heartbeat = MessageRef {
        term: Term(7),
        body: Body::Append {
            prev: EntryId {
                term: Term(7),
                index: LogIndex(41),
            },
            commit: LogIndex(41),
            last: LogIndex(41),
            stick: goose_core::Duration::from_millis(150),
            sent_at: goose_core::Instant::from_millis(123_456),
            entries: &[],
        },
    };
    let mut buffer = [0; FRAME_SIZE_MAX];
    let size = wire::encode(id(1), id(2), &heartbeat, &mut buffer).expect("fits");
    let mut sealer = Sealer::new(1);
    let sealed = sealer.seal(&key, &mut buffer, size).expect("room");
    assert_eq!(sealed, size + TRAILER_SIZE);

    let tag = median_ns(|| {
        black_box(key.tag(black_box(&buffer[..size + 12])));
    });
    let mut frame = buffer;
    let seal = median_ns(|| {
        black_box(
            sealer
                .seal(&key, black_box(&mut frame), size)
                .expect("room"),
        );
    });
    // Every open needs a fresh counter, so each iteration seals one frame and opens it.
    let mut guard = ReplayGuard::<5>::new();
    let mut opener = Sealer::new(2);
    let seal_and_open = median_ns(|| {
        let sealed = opener.seal(&key, &mut frame, size).expect("room");
        black_box(guard.open(&key, black_box(&frame[..sealed]), |_| true)).expect("fresh");
    });
    println!("heartbeat: {size} bytes plain, {sealed} sealed (ns per operation, median of {RUNS} × {ITERATIONS})\n");
    println!("| operation | ns |");
    println!("| --- | ---: |");
    println!("| ClusterKey::tag over the heartbeat and its trailer | {tag:.0} |");
    println!("| Sealer::seal (sender) | {seal:.0} |");
    println!("| seal + ReplayGuard::open (sender and receiver) | {seal_and_open:.0} |");
}
