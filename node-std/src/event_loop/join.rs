//! `--join`: a node not yet in the membership asks a member to add it, again and again with
//! a growing, jittered backoff, until the membership names it. Each attempt asks the next
//! `--join` address in turn (any member answers). A duck answers
//! `err not-goose … addr=<goose>`, which is followed once per attempt; with a cluster key
//! the node asks for a nonce first and signs its `ctl add` over it. [`Join`] decides what to
//! send and when; the runner sends it through the node's socket and hands it the replies.
//!
//! Nobody answering for [`JOIN_SILENCE_WARN`], `err forbidden` (no key, or the wrong one)
//! and `err id-in-use` (another node has this id) are each logged at most once per
//! `WARNING_INTERVAL` (10 s), naming the fix.

use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::net::SocketAddr;

use goose_core::auth::key::ClusterKey;
use goose_core::auth::write_signed_control;
use goose_core::text::{parse_nonce_reply, Reason, Reply};
use goose_core::{Duration, Instant, NodeId};

use super::rails::{more, Throttle};

/// The first wait between two `ctl add` requests of a joining node; it doubles up to
/// [`JOIN_RETRY_MAX`]. 100 ms: a goose answers within a round trip, and a change in
/// flight (`err busy`) commits within a few heartbeats.
const JOIN_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait between two `ctl add` requests of a joining node: a node that cannot
/// reach the flock asks every 2 s, forever (it has nothing else to do).
const JOIN_RETRY_MAX: Duration = Duration::from_millis(2_000);
/// How long a joining node hears nothing back before it says so: a member answers every
/// request within a round trip, so 2 s of silence (five requests) means nobody listens, or
/// the datagrams do not get through.
const JOIN_SILENCE_WARN: Duration = Duration::from_millis(2_000);

/// A datagram the join client wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    /// Where to.
    pub(super) target: SocketAddr,
    /// The request's text.
    pub(super) text: String,
}

/// A node started with `--join` that is not in the membership yet.
#[derive(Debug)]
pub(super) struct Join {
    /// This node's id, as the flock will know it.
    id: NodeId,
    /// This node's address, as the flock will know it.
    listen: SocketAddr,
    /// `--control-token`, sent with an unsigned `ctl add`.
    control_token: Option<String>,
    /// The cluster key, to sign `ctl add` (the service has its own copy).
    key: Option<ClusterKey>,
    /// Where to ask, in turn: any member; a duck answers with the goose's address.
    targets: Vec<SocketAddr>,
    /// The one asked in the current attempt.
    target: SocketAddr,
    /// When anything last answered (or the join began).
    answered: Instant,
    silent: Throttle,
    forbidden: Throttle,
    id_in_use: Throttle,
    /// The goose a duck named in answer to the current attempt (followed once).
    redirect: Option<SocketAddr>,
    next_attempt: Instant,
    backoff: Duration,
    attempts: u64,
}

impl Join {
    /// Node `id`, reached at `listen`, asks each of `targets` in turn, the first at once.
    ///
    /// # Panics
    ///
    /// If `targets` is empty (the command line requires one).
    pub(super) fn new(
        targets: Vec<SocketAddr>,
        id: NodeId,
        listen: SocketAddr,
        control_token: Option<String>,
        key: Option<ClusterKey>,
    ) -> Self {
        assert!(!targets.is_empty(), "--join needs an address");
        Self {
            id,
            listen,
            control_token,
            key,
            target: targets[0],
            targets,
            answered: Instant::ZERO,
            silent: Throttle::default(),
            forbidden: Throttle::default(),
            id_in_use: Throttle::default(),
            redirect: None,
            next_attempt: Instant::ZERO,
            backoff: JOIN_RETRY_INITIAL,
            attempts: 0,
        }
    }

    /// When the next request is due.
    pub(super) fn next_attempt(&self) -> Instant {
        self.next_attempt
    }

    /// Requests made so far.
    pub(super) fn attempts(&self) -> u64 {
        self.attempts
    }

    /// The request to send at `now`, if one is due; the next waits 50–150% of a backoff
    /// that doubles up to [`JOIN_RETRY_MAX`].
    pub(super) fn poll_request(&mut self, now: Instant) -> Option<Request> {
        if now < self.next_attempt {
            return None;
        }
        if self.attempts == 0 {
            self.answered = now;
        } else if now.saturating_since(self.answered) >= JOIN_SILENCE_WARN {
            self.warn_silent(now);
        }
        let index = usize::try_from(self.attempts).unwrap_or(0) % self.targets.len();
        self.target = self.targets[index];
        self.attempts += 1;
        self.redirect = None;
        // Jitter (50–150% of the backoff) keeps many nodes joining at once from asking in
        // lock-step, each time all but one hearing `err busy`.
        let jitter = RandomState::new().hash_one(self.attempts) % 1_000;
        let wait = self.backoff.micros() / 2 + self.backoff.micros() * jitter / 1_000;
        self.next_attempt = now + Duration::from_micros(wait);
        self.backoff =
            Duration::from_micros(self.backoff.micros().saturating_mul(2)).min(JOIN_RETRY_MAX);
        let target = self.target;
        log::debug!("node {}: asking {target} to add this node", self.id);
        Some(self.request(target))
    }

    fn warn_silent(&mut self, now: Instant) {
        let Some(suppressed) = self.silent.due() else {
            return;
        };
        let targets: Vec<String> = self.targets.iter().map(ToString::to_string).collect();
        log::warn!(
            "node {}: no answer to the join request from {} in {:.1} s: is a member of the \
             flock listening there, and does UDP reach it (address, port, firewall)? Check \
             --join{}",
            self.id,
            targets.join(", "),
            now.saturating_since(self.answered).millis() as f64 / 1000.0,
            more(suppressed)
        );
    }

    /// A reply from `source`, if it answers a join request: with a key, a nonce is answered
    /// with the signed request; a duck's `err not-goose … addr=<goose>` is followed once
    /// per attempt; anything else only matters for the log (the next attempt retries).
    pub(super) fn handle_reply(
        &mut self,
        now: Instant,
        source: SocketAddr,
        datagram: &[u8],
    ) -> Option<Request> {
        let id = self.id;
        if source != self.target && Some(source) != self.redirect {
            return None;
        }
        self.answered = now;
        let reply = String::from_utf8_lossy(datagram);
        let reply = reply.trim_end();
        let parsed = Reply::parse(reply).ok();
        let redirect = (source == self.target && self.redirect.is_none())
            .then(|| parsed?.goose_addr())
            .flatten()
            .filter(|&goose| goose != source);
        if let Some(goose) = redirect {
            self.redirect = Some(goose);
            log::debug!("node {id}: {source} is not goose; asking {goose}");
            return Some(self.request(goose));
        }
        if let Some(nonce) = parse_nonce_reply(reply).filter(|_| self.key.is_some()) {
            return self.signed_request(source, nonce);
        }
        let reason = parsed.as_ref().and_then(Reply::reason);
        if matches!(parsed, Some(Reply::Ok(pairs)) if pairs.is_empty()) {
            log::info!("node {id}: {source} accepted the join request; waiting for the log");
        } else if reason == Some(Reason::Forbidden) {
            if let Some(suppressed) = self.forbidden.due() {
                let fix = match self.key {
                    Some(_) => "this node's --cluster-key-file is not the flock's key: give it the same file as the members",
                    None => "the flock has a cluster key: give this node the same --cluster-key-file (without a key, a join from another machine needs the member's --control-token)",
                };
                log::warn!(
                    "node {id}: {source} refused the join request (err forbidden): {fix}{}",
                    more(suppressed)
                );
            }
        } else if reason == Some(Reason::IdInUse) {
            if let Some(suppressed) = self.id_in_use.due() {
                log::error!(
                    "node {id}: {source} refused the join request (err id-in-use): the flock \
                     has a member with id {id} at another address. If that is another node, \
                     give this one its own --id; if this node moved, remove the old member \
                     first (goose ctl <goose> remove {id}){}",
                    more(suppressed)
                );
            }
        } else if matches!(
            reason,
            Some(Reason::Busy | Reason::NotGoose | Reason::StaleNonce)
        ) {
            log::debug!("node {id}: join request: {source} answered {reply:?}; will retry");
        } else {
            log::warn!("node {id}: join request: {source} answered {reply:?}; will retry");
        }
        None
    }

    /// Asks `target` to add this node: `ctl [token=T] add <id> <addr>`, or with a key
    /// `ctl nonce` first (the signed `ctl add` follows its answer, [`Self::handle_reply`]).
    fn request(&self, target: SocketAddr) -> Request {
        let text = match self.key {
            Some(_) => String::from("ctl nonce"),
            None => {
                let mut request = String::from("ctl");
                if let Some(token) = &self.control_token {
                    let _ = write!(request, " token={token}");
                }
                let _ = write!(request, " add {} {}", self.id, self.listen);
                request
            }
        };
        Request { target, text }
    }

    /// The signed `ctl add <id> <addr>` over `nonce`, a nonce `target` issued.
    fn signed_request(&self, target: SocketAddr, nonce: u64) -> Option<Request> {
        let key = self.key.as_ref()?;
        let command = format!("add {} {}", self.id, self.listen);
        let mut text = String::new();
        // `add <id> <ip:port>` is far below a datagram's size.
        write_signed_control(&mut text, key, nonce, &command).ok()?;
        Some(Request { target, text })
    }
}

#[cfg(test)]
mod tests {
    use goose_core::auth::key::KEY_SIZE;

    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn join(token: Option<&str>, key: Option<ClusterKey>) -> Join {
        let id = NodeId::new(7).unwrap();
        Join::new(
            vec![addr(9901)],
            id,
            addr(9907),
            token.map(String::from),
            key,
        )
    }

    fn request(target: u16, text: &str) -> Option<Request> {
        let text = text.to_owned();
        Some(Request {
            target: addr(target),
            text,
        })
    }

    #[test]
    fn asks_at_once_then_after_a_jittered_doubling_backoff() {
        let mut join = join(Some("t"), None);
        let mut now = Instant::ZERO;
        let asked = request(9901, "ctl token=t add 7 127.0.0.1:9907");
        assert_eq!(join.poll_request(now), asked);
        let mut backoff = JOIN_RETRY_INITIAL;
        for attempt in 1..=8 {
            assert_eq!(join.poll_request(now), None, "not due yet");
            let wait = join.next_attempt().saturating_since(now);
            assert!(wait.micros() >= backoff.micros() / 2, "attempt {attempt}");
            assert!(
                wait.micros() <= backoff.micros() * 3 / 2,
                "attempt {attempt}"
            );
            now = join.next_attempt();
            assert!(join.poll_request(now).is_some());
            backoff = Duration::from_micros(backoff.micros() * 2).min(JOIN_RETRY_MAX);
        }
        assert_eq!(join.attempts(), 9);
    }

    #[test]
    fn asks_each_join_address_in_turn() {
        let id = NodeId::new(7).unwrap();
        let targets = vec![addr(9901), addr(9902), addr(9903)];
        let mut join = Join::new(targets, id, addr(9907), None, None);
        let mut asked = Vec::new();
        let mut now = Instant::ZERO;
        for _ in 0..6 {
            let request = join.poll_request(now).expect("due");
            asked.push(request.target.port());
            now = join.next_attempt();
        }
        assert_eq!(asked, [9901, 9902, 9903, 9901, 9902, 9903]);
    }

    #[test]
    fn follows_a_duck_to_the_goose_once_per_attempt() {
        let mut join = join(None, None);
        let _ = join.poll_request(Instant::ZERO);
        let not_goose = b"err not-goose goose=2 addr=127.0.0.1:9902\n";
        assert_eq!(
            join.handle_reply(Instant::ZERO, addr(9999), not_goose),
            None,
            "not asked"
        );
        let asked = request(9902, "ctl add 7 127.0.0.1:9907");
        assert_eq!(
            join.handle_reply(Instant::ZERO, addr(9901), not_goose),
            asked
        );
        assert_eq!(
            join.handle_reply(Instant::ZERO, addr(9901), not_goose),
            None,
            "once"
        );
        let elsewhere = b"err not-goose goose=3 addr=127.0.0.1:9903\n";
        assert_eq!(
            join.handle_reply(Instant::ZERO, addr(9902), elsewhere),
            None
        );
        assert_eq!(join.handle_reply(Instant::ZERO, addr(9902), b"ok\n"), None);
    }

    #[test]
    fn with_a_key_signs_over_the_nonce_it_is_given() {
        let key = ClusterKey::new(&[7; KEY_SIZE]);
        let mut join = join(Some("ignored"), Some(key.clone()));
        assert_eq!(join.poll_request(Instant::ZERO), request(9901, "ctl nonce"));
        let signed = join.handle_reply(Instant::ZERO, addr(9901), b"ok nonce=0000000100000002\n");
        let mut expected = String::new();
        write_signed_control(&mut expected, &key, 0x1_0000_0002, "add 7 127.0.0.1:9907").unwrap();
        assert_eq!(signed, request(9901, &expected));
        let mut plain = self::join(None, None);
        let _ = plain.poll_request(Instant::ZERO);
        let nonce = b"ok nonce=0000000100000002\n";
        assert_eq!(
            plain.handle_reply(Instant::ZERO, addr(9901), nonce),
            None,
            "no key, no signature"
        );
    }
}
