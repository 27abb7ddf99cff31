//! The `text_parse` target: any datagram parses without panicking; a parsed control
//! command renders back to text that parses to the same command, plain or signed (and a
//! client's signed datagram carries a tag over what the node reads as signed); and every
//! reply a node can write, with values drawn from the input up to their largest, fits a
//! `heapless::String<TEXT_REPLY_SIZE_MAX>` as exactly one line that parses as a reply (so
//! two nodes can never bounce replies); a nonce reply gives back its nonce.

use std::fmt::Write as _;

use goose_core::auth::{self, Mac};
use goose_core::limits::MEMBERS_MAX;
use goose_core::text::{
    self, Command, PeerRef, ProbeReply, Request, Signature, StatusReply, TEXT_REPLY_SIZE_MAX,
};
use goose_core::{NodeId, Stats, Term};

use crate::TestMac;

type Reply = heapless::String<TEXT_REPLY_SIZE_MAX>;

/// Runs one input.
pub fn run(data: &[u8]) {
    let request = text::parse(data);
    match data.first() {
        None => assert_eq!(request, Request::Unknown),
        Some(&first) if first >= 0x80 => assert_eq!(request, Request::Binary),
        Some(_) => assert_ne!(request, Request::Binary),
    }
    match &request {
        Request::Control {
            token,
            signature: None,
            command: Ok(command),
        } => {
            let rendered = render(*token, command);
            let again = text::parse(rendered.as_bytes());
            assert_eq!(
                again,
                Request::Control {
                    token: *token,
                    signature: None,
                    command: Ok(command.clone())
                },
                "{rendered:?} does not parse back"
            );
        }
        Request::Control {
            token,
            signature: Some(signature),
            command,
        } => {
            assert_eq!(*token, None, "a signed command carries no token");
            check_signed(signature, command);
        }
        Request::Probe { nonce: Some(nonce) } => {
            let mut again = String::new();
            text::write_signed_probe(&mut again, *nonce).expect("a String takes any request");
            let parsed = text::parse(again.as_bytes());
            assert_eq!(
                parsed,
                Request::Probe {
                    nonce: Some(*nonce)
                },
                "{again:?}"
            );
        }
        _ => {}
    }
    if let Some(nonce) = std::str::from_utf8(data)
        .ok()
        .and_then(text::parse_nonce_reply)
    {
        let mut reply = String::new();
        text::write_nonce(&mut reply, nonce).expect("a String takes any reply");
        assert_eq!(text::parse_nonce_reply(&reply), Some(nonce), "{reply:?}");
    }
    let mut values = Values::new(data);
    let probe = ProbeReply {
        goose: values.bool(),
        id: values.id(),
        term: Term(values.u64()),
        leader: values.option_id(),
        stopped: values.bool(),
        lease_ms: values.bool().then(|| values.u64()),
    };
    check_reply(|out| text::write_probe_reply(out, &probe));
    check_signed_probe(&probe, values.u64_any());
    let members: Vec<NodeId> = (0..values.count(MEMBERS_MAX))
        .map(|_| values.id())
        .collect();
    let voters: Vec<NodeId> = (0..values.count(MEMBERS_MAX))
        .map(|_| values.id())
        .collect();
    let learners: Vec<NodeId> = (0..values.count(MEMBERS_MAX))
        .map(|_| values.id())
        .collect();
    let stats = Stats::default();
    let counters: Vec<(&str, u64)> = stats
        .counters()
        .iter()
        .map(|(name, _)| (*name, values.u64()))
        .collect();
    check_reply(|out| {
        text::write_status(
            out,
            &StatusReply {
                goose: values.bool(),
                raft: ["follower", "candidate", "leader", "learner"][values.count(3)],
                id: values.id(),
                term: Term(values.u64()),
                leader: values.option_id(),
                stopped: values.bool(),
                commit: values.u64(),
                members: &members,
                voters: &voters,
                learners: &learners,
                lease_ms: values.u64(),
                change: values
                    .bool()
                    .then(|| (goose_core::Cause::LeaseLapsed, values.u64())),
                healthy: values.bool(),
                fields: &[],
                counters: &counters,
            },
        )
    });
    let addr = match &request {
        Request::Control {
            command: Ok(Command::Add { addr, .. }),
            ..
        } => Some(*addr),
        _ => None,
    };
    check_reply(|out| text::write_not_goose(out, values.option_id(), addr));
    check_reply(text::write_ok_plain);
    let nonce = values.u64_any();
    check_reply(|out| text::write_nonce(out, nonce));
    let mut reply = Reply::new();
    text::write_nonce(&mut reply, nonce).expect("a nonce reply fits");
    assert_eq!(text::parse_nonce_reply(&reply), Some(nonce), "{reply:?}");
    check_reply(|out| text::write_ok_pair(out, "term", values.u64()));
    if let Request::Control {
        command: Err(error),
        ..
    } = &request
    {
        check_reply(|out| text::write_err(out, *error));
    }
}

/// A signed probe reply fits a reply buffer as one line, reads as the reply it signs, and
/// verifies with its key and nonce only; the input, read as a signed reply, never
/// verifies with a nonce it does not name.
fn check_signed_probe(probe: &ProbeReply, nonce: u64) {
    let mac = TestMac(TestMac::SEED_KEY);
    let mut reply = Reply::new();
    check_reply(|out| text::write_signed_probe_reply(out, probe, nonce, &mac));
    text::write_signed_probe_reply(&mut reply, probe, nonce, &mac).expect("checked above");
    assert!(reply.len() <= text::PROBE_REPLY_SIZE_MAX, "{reply:?}");
    let plain = text::ProbeReply::parse(&reply).map_err(text::SignedProbeError::Reply);
    assert_eq!(text::verify_signed_probe_reply(&reply, nonce, &mac), plain);
    let other = TestMac(TestMac::SEED_KEY ^ 1);
    assert!(text::verify_signed_probe_reply(&reply, nonce, &other).is_err());
    assert!(text::verify_signed_probe_reply(&reply, !nonce, &mac).is_err());
}

/// Writes a reply into a fresh buffer and checks it.
fn check_reply(write: impl FnOnce(&mut Reply) -> std::fmt::Result) {
    let mut reply = Reply::new();
    write(&mut reply).expect("a reply fits TEXT_REPLY_SIZE_MAX");
    assert!(reply.ends_with('\n'), "{reply:?} does not end a line");
    assert_eq!(reply.matches('\n').count(), 1, "{reply:?} is not one line");
    assert_eq!(text::parse(reply.as_bytes()), Request::Reply, "{reply:?}");
}

/// A signed command renders back to itself: as it came with the tag in lowercase (any
/// command, even one that does not parse), and, when it parses, in the canonical form a
/// client writes. A client's datagram ([`auth::write_signed_control`]) carries the tag of
/// exactly what the node reads as signed.
fn check_signed(signature: &Signature<'_>, command: &Result<Command, text::Reason>) {
    assert!(signature.signed.starts_with("nonce="), "{signature:?}");
    let tag: String = signature.tag.iter().map(|b| format!("{b:02x}")).collect();
    let rendered = format!("ctl sig={tag} {}", signature.signed);
    let again = text::parse(rendered.as_bytes());
    let expected = Request::Control {
        token: None,
        signature: Some(*signature),
        command: command.clone(),
    };
    assert_eq!(again, expected, "{rendered:?} does not parse back");
    let Ok(command) = command else {
        return;
    };
    let words = render_command(command);
    let signed = format!("nonce={:016x} {words}", signature.nonce);
    let rendered = format!("ctl sig={tag} {signed}");
    let expected = Request::Control {
        token: None,
        signature: Some(Signature {
            signed: &signed,
            ..*signature
        }),
        command: Ok(command.clone()),
    };
    assert_eq!(
        text::parse(rendered.as_bytes()),
        expected,
        "{rendered:?} does not parse back"
    );
    let mac = TestMac(TestMac::SEED_KEY);
    let mut datagram = String::new();
    if auth::write_signed_control(&mut datagram, &mac, signature.nonce, &words).is_err() {
        // Too long for a datagram: the client refuses it.
        assert!(signed.len() > auth::SIGNED_CONTROL_SIZE_MAX, "{signed:?}");
        return;
    }
    let Request::Control {
        token: None,
        signature: Some(sent),
        command: Ok(parsed),
    } = text::parse(datagram.as_bytes())
    else {
        panic!("{datagram:?} does not parse as signed");
    };
    assert_eq!(sent.nonce, signature.nonce, "{datagram:?}");
    assert_eq!(sent.signed, signed, "{datagram:?}");
    assert!(
        mac.verify(sent.signed.as_bytes(), &sent.tag),
        "{datagram:?}"
    );
    assert_eq!(&parsed, command, "{datagram:?}");
}

/// The text a `ctl` client would send for `command`, unsigned.
fn render(token: Option<&str>, command: &Command) -> String {
    let mut out = String::from("ctl");
    if let Some(token) = token {
        let _ = write!(out, " token={token}");
    }
    let _ = write!(out, " {}", render_command(command));
    out
}

/// A command and its arguments as a client writes them, e.g. `partition 2,3`.
fn render_command(command: &Command) -> String {
    let mut out = String::new();
    let _ = match command {
        Command::Stop => write!(out, "stop"),
        Command::Start => write!(out, "start"),
        Command::Heal => write!(out, "heal"),
        Command::Status => write!(out, "status"),
        Command::Nonce => write!(out, "nonce"),
        Command::Partition(peers) => {
            let _ = write!(out, "partition");
            for (i, peer) in peers.as_slice().iter().enumerate() {
                let separator = if i == 0 { ' ' } else { ',' };
                let _ = match peer {
                    PeerRef::Id(id) => write!(out, "{separator}{id}"),
                    PeerRef::Addr(addr) => write!(out, "{separator}{addr}"),
                };
            }
            Ok(())
        }
        Command::Transfer(None) => write!(out, "transfer"),
        Command::Transfer(Some(id)) => write!(out, "transfer {id}"),
        Command::Add { id, addr } => write!(out, "add {id} {addr}"),
        Command::Remove(id) => write!(out, "remove {id}"),
    };
    out
}

/// Reply values drawn from the input, cycling through it; past the end, or for an empty
/// input, the largest values (the worst case for the reply's length).
struct Values<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Values<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, at: 0 }
    }

    fn byte(&mut self) -> u8 {
        let byte = self.data.get(self.at).copied().unwrap_or(0xFF);
        self.at += 1;
        byte
    }

    fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// 0..=max, biased to max (0xFF bytes, and most bytes ≥ max, give max).
    fn count(&mut self, max: usize) -> usize {
        usize::from(self.byte()).min(max)
    }

    fn u64(&mut self) -> u64 {
        match self.byte() {
            0 => 0,
            small @ 1..=0x7F => u64::from(small),
            _ => u64::MAX - u64::from(self.byte()),
        }
    }

    /// Any `u64`, from eight bytes (all ones past the end).
    fn u64_any(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    fn id(&mut self) -> NodeId {
        let high = u16::from(self.byte());
        NodeId::new(high << 8 | 0xFF).expect("never 0")
    }

    fn option_id(&mut self) -> Option<NodeId> {
        self.bool().then(|| self.id())
    }
}
