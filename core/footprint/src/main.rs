//! A firmware-shaped driver of the embedded configuration, `Node<_, 5, 32>`, that links every
//! part of the core a board uses: the node's inputs and outputs, the wire codec, the text
//! protocol and its replies. It is never run: it is built, to prove the core needs neither
//! std nor alloc, and measured. Its inputs come through `black_box`, so the optimiser cannot
//! fold the protocol away.
//!
//! There is deliberately no `#[global_allocator]`: if any crate in the graph linked `alloc`,
//! rustc would refuse to build this binary ("no global memory allocator found").
//!
//! `unsafe_code` is not forbidden here only because `#[entry]` expands to unsafe code; this
//! file has none.
#![no_std]
#![no_main]

#[cfg(feature = "alloc-canary")]
extern crate alloc;

use core::fmt::Write;
use core::hint::black_box;
use core::mem::MaybeUninit;
use core::net::{Ipv4Addr, SocketAddr};

use cortex_m_rt::entry;
use goose_core::limits::{EMBEDDED_LOG_ENTRIES_MAX, EMBEDDED_MEMBERS_MAX, FRAME_SIZE_MAX};
use goose_core::storage::state_size_max;
use goose_core::text::{self, Command, ProbeReply, Request, StatusReply, TEXT_REPLY_SIZE_MAX};
use goose_core::{
    Config, Instant, Member, Node, NodeId, Payload, PersistentState, Storage, StorageError,
};

const MEMBERS: usize = EMBEDDED_MEMBERS_MAX;
const LOG: usize = EMBEDDED_LOG_ENTRIES_MAX;

/// Stands in for a flash page: the last state saved, encoded.
struct Flash {
    image: [u8; state_size_max(MEMBERS, LOG)],
    size: usize,
}

impl Storage for Flash {
    fn save(&mut self, state: &PersistentState<'_>) -> Result<(), StorageError> {
        self.size = state.encode(&mut self.image)?.len();
        black_box(&self.image[..self.size]);
        Ok(())
    }
}

type EmbeddedNode = Node<Flash, MEMBERS, LOG>;

/// A heartbeat from node 1 to node 2 (the wire tests' fixture).
static HEARTBEAT: [u8; 14] = [
    0xD9, 0x01, 0x01, 0x00, 0x02, 0x00, 0x03, 0x04, 0x02, 0x05, 0x04, 0xE8, 0x07, 0x00,
];

/// What arrives on the node's one UDP port, in turn.
static DATAGRAMS: [&[u8]; 5] = [
    &HEARTBEAT,
    b"whois-goose",
    b"ctl status",
    b"ctl add 6 10.0.0.6:9000",
    b"ctl remove 5",
];

fn id(n: u16) -> NodeId {
    match NodeId::new(n) {
        Some(id) => id,
        None => panic!("ids start at 1"),
    }
}

fn member(n: u16) -> Member {
    Member {
        id: id(n),
        addr: SocketAddr::from((Ipv4Addr::new(10, 0, 0, n as u8), 9000)),
        voter: true,
    }
}

#[entry]
fn main() -> ! {
    // `#[entry]` turns this into a safe `&'static mut`. Uninitialised, the node lives in
    // .bss; an `Option` would put its `None` (not all zeros) in .data, and a copy in flash.
    static mut NODE: MaybeUninit<EmbeddedNode> = MaybeUninit::uninit();
    let bootstrap = [member(1), member(2), member(3), member(4), member(5)];
    let flash = Flash {
        image: [0; state_size_max(MEMBERS, LOG)],
        size: 0,
    };
    let config = Config::new(id(2));
    let started = Node::new(&config, flash, None, &bootstrap, 0x5EED, Instant::ZERO);
    let Ok(node) = started else {
        panic!("the bootstrap fits");
    };
    let node = NODE.write(node);
    let mut frame = [0; FRAME_SIZE_MAX];
    let mut ticks = 0u64;
    loop {
        ticks = black_box(ticks + 1_000);
        let now = Instant::from_micros(ticks);
        let datagram = black_box(DATAGRAMS[(ticks / 1_000) as usize % DATAGRAMS.len()]);
        answer(node, now, datagram);
        if node.poll_timeout().is_some_and(|deadline| deadline <= now) {
            node.handle_timeout(now);
        }
        while let Some(transmit) = node.poll_transmit(now, &mut frame) {
            black_box((transmit.addr, &frame[..transmit.size]));
        }
        while let Some(event) = node.poll_event() {
            black_box(event);
        }
    }
}

/// Handles one datagram, as the node-embedded runner will.
fn answer(node: &mut EmbeddedNode, now: Instant, datagram: &[u8]) {
    let mut reply: heapless::String<TEXT_REPLY_SIZE_MAX> = heapless::String::new();
    let written = match text::parse(datagram) {
        Request::Binary => {
            node.handle_frame(now, datagram);
            return;
        }
        Request::Reply => return,
        Request::Probe { .. } => {
            let status = node.status(now);
            let probe = ProbeReply {
                goose: status.goose,
                id: status.id,
                term: status.term,
                leader: status.leader,
                stopped: false,
                lease_ms: status.goose.then(|| status.lease_remaining.millis()),
            };
            text::write_probe_reply(&mut reply, &probe)
        }
        Request::Control { command, .. } => match command {
            Ok(Command::Status) => write_status(node, now, &mut reply),
            Ok(Command::Add { id, addr }) => {
                propose(node, now, Payload::AddLearner { id, addr }, &mut reply)
            }
            Ok(Command::Remove(id)) => propose(node, now, Payload::Remove { id }, &mut reply),
            Ok(_) => text::write_ok_plain(&mut reply),
            Err(error) => text::write_err(&mut reply, error),
        },
        Request::Unknown => text::write_err(&mut reply, text::Reason::UnknownCommand),
    };
    black_box((written.is_ok(), reply.as_bytes()));
    #[cfg(feature = "alloc-canary")]
    black_box(alloc::vec![0u8; datagram.len()]);
}

fn propose(
    node: &mut EmbeddedNode,
    now: Instant,
    payload: Payload,
    reply: &mut impl Write,
) -> core::fmt::Result {
    match node.propose(now, payload) {
        Ok(index) => text::write_ok_pair(reply, "index", index.0),
        Err(_) => text::write_not_goose(reply, node.status(now).leader, None),
    }
}

fn write_status(node: &EmbeddedNode, now: Instant, reply: &mut impl Write) -> core::fmt::Result {
    let status = node.status(now);
    let mut members: heapless::Vec<NodeId, MEMBERS> = heapless::Vec::new();
    let mut voters: heapless::Vec<NodeId, MEMBERS> = heapless::Vec::new();
    let mut learners: heapless::Vec<NodeId, MEMBERS> = heapless::Vec::new();
    for member in node.members() {
        let _ = members.push(member.id);
        let _ = if member.voter {
            &mut voters
        } else {
            &mut learners
        }
        .push(member.id);
    }
    let counters = node.stats().counters();
    text::write_status(
        reply,
        &StatusReply {
            goose: status.goose,
            raft: status.raft.as_str(),
            id: status.id,
            term: status.term,
            leader: status.leader,
            stopped: false,
            commit: status.commit.0,
            members: &members,
            voters: &voters,
            learners: &learners,
            lease_ms: status.lease_remaining.millis(),
            change: Some((node.last_change().1, 0)),
            healthy: status.healthy,
            fields: &[],
            counters: &counters,
        },
    )
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // A board would reset here; halting keeps the image free of any panic runtime.
    loop {
        core::hint::spin_loop();
    }
}
