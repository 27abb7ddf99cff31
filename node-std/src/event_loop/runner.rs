//! The loop of a running node: each wake-up reads the socket, drives the service in the
//! order its docs give, acts on its events (the log, the hooks, leaving) and sleeps until
//! the earliest deadline. See the parent module for the order and for leaving.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use goose_core::auth::key::ClusterKey;
use goose_core::limits::{LOG_ENTRIES_MAX, MEMBERS_MAX};
use goose_core::service::{Handled, Host, Notice, Origin, Service, TRANSMITS_PER_CALL_MAX};
use goose_core::text::{PeerRef, PARTITION_PEERS_MAX, TEXT_REPLY_SIZE_MAX};
use goose_core::{Config, Event, Instant, Member, Observed, RaftRole};
use mio::{Events, Interest, Poll, Token};

use crate::clock::Clock;
use crate::hooks::{HookRole, Hooks, Transition};
use crate::storage_file::{DataDir, FileStorage};

use crate::http::Publisher;

use super::heard::Heard;
use super::join::{Join, Request};
use super::port::{bump, Port};
use super::signals::{drain_pipe, Pipes};
use super::{build_node, describe_members, log_authentication, Prepared, RunError};

/// Datagrams read per wake-up before the loop lets timers and sends run. 1024 is far
/// above what a flock sends one node between two wake-ups (a few per peer), and bounds the
/// time one flood can keep timers from firing.
const DATAGRAMS_PER_WAKE_MAX: usize = 1024;
/// Events handled per wake-up; the service buffers at most `EVENTS_MAX` anyway.
const EVENTS_PER_WAKE_MAX: usize = 64;
/// mio readiness events taken per `poll`: one per registered source (socket, two pipes)
/// with room to spare.
const POLL_EVENTS_CAPACITY: usize = 8;

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);
const CHILDREN: Token = Token(2);

/// Where a leaving node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// A leader waiting for its handoff to be sent, at most until `deadline`.
    Handoff { deadline: Instant },
    /// Silent; exits once no hook runs or waits.
    Draining,
}

/// The desktop node's service: the core's, at the desktop's capacities, with the board's
/// MAC type for the cluster key (built with `Service::new` when there is none).
type DesktopService = Service<
    FileStorage,
    SocketAddr,
    MEMBERS_MAX,
    LOG_ENTRIES_MAX,
    PARTITION_PEERS_MAX,
    TEXT_REPLY_SIZE_MAX,
    ClusterKey,
>;

/// A running node: its socket and signal pipes, the service, the hooks, the join client
/// and where it is in leaving.
pub(super) struct Runner {
    config: Config,
    /// What `ctl start` rebuilds from when the data dir holds no state yet.
    bootstrap: Vec<Member>,
    /// `--control-token`, for the service to check.
    control_token: Option<String>,
    data_dir: DataDir,
    /// The socket, and the peer traffic `ctl status` reports.
    port: Port,
    pipes: Pipes,
    poll: Poll,
    clock: Clock,
    /// The node and its text protocol (probes, `ctl`, stop/start, partitions, transfer
    /// requesters): `goose_core::service`.
    service: DesktopService,
    /// The receive drain stopped at its bound with datagrams possibly left: poll again
    /// without sleeping.
    more_to_read: bool,
    hooks: Hooks,
    /// The goose status the hooks were last told about.
    was_goose: bool,
    join: Option<Join>,
    exit: Option<Exit>,
    /// When each member was last heard from.
    heard: Heard,
    /// `--http`: where the loop publishes its snapshot.
    http: Option<Publisher>,
}

mod publish;

impl Runner {
    /// Runs until the node leaves (then `Ok`) or fails.
    pub(super) fn run(&mut self) -> Result<(), RunError> {
        let mut events = Events::with_capacity(POLL_EVENTS_CAPACITY);
        loop {
            self.receive_all()?;
            // Read after the datagrams: every call into a node gets a `now` at or after
            // the one before (a `ctl start` builds its node at a fresh reading).
            let now = self.clock.now();
            self.service.handle_timeout(now);
            if !self.service.is_stopped() {
                self.maybe_join(now);
            }
            self.flush(now);
            self.handle_events()?;
            let stopped = self.service.is_stopped();
            self.heard.maybe_warn(now, self.service.node(), stopped);
            self.maybe_publish(now);
            self.check_exit_deadline();
            self.hooks.poll();
            if self.exit == Some(Exit::Draining) && self.hooks.is_idle() {
                let node = self.service.node();
                log::info!("node {} term {}: exiting", node.id(), node.term());
                return Ok(());
            }
            let timeout = self.sleep_for();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(RunError::Poll(error)),
            }
            let mut signalled = false;
            for event in &events {
                match event.token() {
                    SIGNALS => signalled |= drain_pipe(&mut self.pipes.signals),
                    CHILDREN => {
                        // Reaped by hooks.poll() at the next turn.
                        drain_pipe(&mut self.pipes.children);
                    }
                    _ => {}
                }
            }
            if signalled && self.on_signal() {
                return Ok(());
            }
        }
    }

    /// How long to sleep: until the earliest deadline, not at all if the last drain was
    /// capped. A stopped node has no node deadline (only datagrams, signals, transfer
    /// requesters and its hooks wake it).
    fn sleep_for(&mut self) -> Option<StdDuration> {
        if self.more_to_read {
            return Some(StdDuration::ZERO);
        }
        let mut deadline: Option<Instant> = None;
        let mut consider = |at: Option<Instant>| {
            deadline = match (deadline, at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        };
        consider(self.service.poll_timeout());
        if !self.service.is_stopped() {
            consider(self.join.as_ref().map(Join::next_attempt));
        }
        if let Some(Exit::Handoff { deadline }) = self.exit {
            consider(Some(deadline));
        }
        let now = self.clock.now();
        // mio rounds up to its resolution, so this never wakes before the deadline.
        let mut sleep =
            deadline.map(|at| StdDuration::from_micros(at.saturating_since(now).micros()));
        if let Some(hook) = self.hooks.deadline() {
            let until = hook.saturating_duration_since(std::time::Instant::now());
            sleep = Some(sleep.map_or(until, |sleep| sleep.min(until)));
        }
        sleep
    }

    /// The service's output step: the answer to the datagram just handled, the node's
    /// frames and the late answers to transfer requesters, through the socket.
    fn flush(&mut self, now: Instant) {
        let mut out = self.port.outlet(self.service.node().id());
        if !self.service.flush(now, &mut out) {
            log::warn!(
                "node {}: more than {TRANSMITS_PER_CALL_MAX} frames in one flush",
                self.service.node().id()
            );
        }
    }

    fn receive_all(&mut self) -> Result<(), RunError> {
        self.more_to_read = true;
        for _ in 0..DATAGRAMS_PER_WAKE_MAX {
            let (source, size) = match self.port.receive() {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.more_to_read = false;
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // E.g. an ICMP error queued on the socket: count it and read on.
                    bump(&mut self.service.stats_mut().receive_errors);
                    log::debug!("node {}: receive error: {error}", self.service.node().id());
                    continue;
                }
            };
            self.handle_datagram(source, size)?;
        }
        Ok(())
    }

    /// Handles one datagram at a fresh clock reading (a probe's answer must reflect the
    /// lease at the moment it is sent, not at the start of a long drain).
    fn handle_datagram(&mut self, source: SocketAddr, size: usize) -> Result<(), RunError> {
        let mut now = self.clock.now();
        let origin = Origin {
            addr: source,
            ip: source.ip().to_canonical(),
            trusted: source.ip().to_canonical().is_loopback(),
        };
        let host = Host {
            control_token: self.control_token.as_deref(),
            counters: &self.port.counters(),
        };
        let datagram = self.port.datagram(size);
        match self.service.handle_datagram(now, origin, &host, datagram) {
            Handled::Frame => {
                self.port.count_frame_in(size);
                let datagram = self.port.datagram(size);
                self.heard.frame(now, datagram, self.service.node());
            }
            Handled::Dropped => {}
            Handled::Ignored => self.maybe_join_reply(source, size),
            Handled::Transferring(target) => {
                let node = self.service.node();
                log::info!(
                    "node {} term {}: handing leadership to {} (ctl from {source})",
                    node.id(),
                    node.term(),
                    target
                        .map_or_else(|| "the most up-to-date voter".to_owned(), |t| t.to_string())
                );
            }
            Handled::Answer(notice) => self.on_notice(source, notice),
            Handled::Start => {
                // The new node starts at a fresh reading, and is flushed at it.
                now = self.clock.now();
                let node = build_node(&self.config, &self.bootstrap, &self.data_dir, now)?;
                self.service.start(node);
                log::info!(
                    "node {} term {}: started by ctl from the persisted state",
                    self.service.node().id(),
                    self.service.node().term()
                );
            }
        }
        self.flush(now);
        Ok(())
    }

    /// Logs what a control command changed; a node that went silent runs its duck hook.
    fn on_notice(&mut self, source: SocketAddr, notice: Notice) {
        let node = self.service.node();
        let (id, term) = (node.id(), node.term());
        match notice {
            Notice::None => {}
            Notice::Forbidden => log::warn!("node {id}: control from {source} refused"),
            Notice::Stopped => {
                log::info!("node {id} term {term}: stopped by ctl");
                self.went_silent();
            }
            Notice::Partitioned => log::info!(
                "node {id}: partitioned from {}",
                describe_peers(self.service.partition().as_slice())
            ),
            Notice::Healed => log::info!("node {id}: partition healed"),
            Notice::Adding {
                id: new,
                addr,
                index,
            } => log::info!(
                "node {id} term {term}: adding {new} at {addr} as a learner (entry {index})"
            ),
            Notice::Removing { id: member, index } => {
                log::info!("node {id} term {term}: removing {member} (entry {index})");
            }
            Notice::DuplicateId { id: other } => log::warn!(
                "node {id}: frames from {source} carry node id {other}, in use elsewhere ({:?})",
                self.service.heard_from(other)
            ),
        }
    }

    fn handle_events(&mut self) -> Result<(), RunError> {
        let id = self.service.node().id();
        for _ in 0..EVENTS_PER_WAKE_MAX {
            let Some(event) = self.service.poll_event() else {
                break;
            };
            let term = self.service.node().term();
            match event {
                Event::Changed(observed) => self.on_changed(&observed),
                // storage_file has logged the cause; main logs the exit.
                Event::Failed => return Err(RunError::StorageFailed),
                Event::TransferSent { to } => {
                    log::info!("node {id} term {term}: handed leadership to {to}");
                    if matches!(self.exit, Some(Exit::Handoff { .. })) {
                        self.begin_drain("handoff sent");
                    }
                }
                Event::TransferFailed => {
                    log::warn!("node {id} term {term}: no voter caught up for a handoff");
                    if matches!(self.exit, Some(Exit::Handoff { .. })) {
                        self.begin_drain("no handoff possible");
                    }
                }
                Event::Removed => {
                    log::info!("node {id} term {term}: removed from the flock");
                    self.begin_drain("removed");
                }
            }
        }
        // Belt and braces: a failed node has no deadline, so if its Failed event were ever
        // lost (pushed out of the service's queue) the loop would sleep forever instead of
        // exiting.
        if self.service.node().status(self.clock.now()).failed {
            return Err(RunError::StorageFailed);
        }
        Ok(())
    }

    /// A role, goose, term or leader change: log it, tell the hooks when the goose status
    /// flipped, and settle a handoff that waited on this node leading. (The service has
    /// answered `ctl transfer` requesters already.)
    fn on_changed(&mut self, observed: &Observed) {
        let last = self.service.node().status(self.clock.now()).last;
        log_change(self.service.node(), observed, self.was_goose, last.index);
        if let Some(http) = self.http.as_mut() {
            http.changed(observed);
        }
        if self.service.is_stopped() {
            // Silent: its goose status as others see it is already settled.
            return;
        }
        if observed.goose != self.was_goose {
            self.was_goose = observed.goose;
            let role = if observed.goose {
                HookRole::Goose
            } else {
                HookRole::Duck
            };
            self.hooks.transition(Transition {
                role,
                term: observed.term,
            });
        }
        if observed.raft != RaftRole::Leader && matches!(self.exit, Some(Exit::Handoff { .. })) {
            self.begin_drain("no longer leader");
        }
    }

    /// The node stopped taking part (`ctl stop`, or leaving): a goose that goes silent
    /// stops being goose as far as anyone can tell, so the duck hook runs.
    fn went_silent(&mut self) {
        if self.was_goose {
            self.was_goose = false;
            self.hooks.transition(Transition {
                role: HookRole::Duck,
                term: self.service.node().term(),
            });
        }
    }

    fn begin_drain(&mut self, reason: &str) {
        if self.exit == Some(Exit::Draining) {
            return;
        }
        log::info!(
            "node {} term {}: {reason}; leaving once hooks are done",
            self.service.node().id(),
            self.service.node().term()
        );
        self.service.leave();
        self.went_silent();
        // Transfer requesters hear `err not-goose` now, not at the next datagram.
        let now = self.clock.now();
        self.flush(now);
        self.exit = Some(Exit::Draining);
    }

    /// SIGINT or SIGTERM. Returns whether to exit at once (a second signal).
    fn on_signal(&mut self) -> bool {
        let id = self.service.node().id();
        if self.exit.is_some() {
            log::info!("node {id}: signalled again, exiting now");
            return true;
        }
        let now = self.clock.now();
        if !self.service.is_stopped() && self.service.node().status(now).raft == RaftRole::Leader {
            match self.service.node_mut().transfer(now, None) {
                Ok(()) => {
                    log::info!(
                        "node {id} term {}: signalled; handing leadership off before exiting",
                        self.service.node().term()
                    );
                    let deadline = now + self.config.election_timeout_max;
                    self.exit = Some(Exit::Handoff { deadline });
                    return false;
                }
                Err(error) => log::info!("node {id}: no handoff possible ({error:?})"),
            }
        }
        self.begin_drain("signalled");
        false
    }

    /// Gives up a handoff that was not sent in time.
    fn check_exit_deadline(&mut self) {
        if let Some(Exit::Handoff { deadline }) = self.exit {
            if self.clock.now() >= deadline {
                self.begin_drain("handoff not sent in time");
            }
        }
    }

    /// A joining node not yet in the membership asks to be added when its next attempt is
    /// due; once the membership names it, it stops asking.
    fn maybe_join(&mut self, now: Instant) {
        let node = self.service.node();
        let id = node.id();
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if node.members().iter().any(|m| m.id == id) {
            log::info!(
                "node {id} term {}: joined the flock after {} request(s): {}",
                node.term(),
                join.attempts(),
                describe_members(node.members())
            );
            self.join = None;
            return;
        }
        if let Some(request) = join.poll_request(now) {
            self.send_join_request(&request);
        }
    }

    /// A datagram that is itself a reply: the join client's, if it answers its request.
    fn maybe_join_reply(&mut self, source: SocketAddr, size: usize) {
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if let Some(request) = join.handle_reply(source, self.port.datagram(size)) {
            self.send_join_request(&request);
        }
    }

    fn send_join_request(&mut self, request: &Request) {
        let target = request.target;
        if let Err(error) = self.port.send_to(request.text.as_bytes(), target) {
            bump(&mut self.service.stats_mut().send_errors);
            let id = self.service.node().id();
            log::debug!("node {id}: join request to {target} failed: {error}");
        }
    }
}

impl Prepared {
    /// Registers the socket and the pipes, and sets up what a run keeps.
    pub(super) fn start(
        self,
        mut port: Port,
        mut pipes: Pipes,
        http: Option<Publisher>,
    ) -> Result<Runner, RunError> {
        let Self {
            options,
            config,
            bootstrap,
            data_dir,
            node,
            mut clock,
            listen,
            epoch,
        } = self;
        let heard = Heard::new(clock.now());
        let poll = Poll::new().map_err(RunError::Poll)?;
        let registry = poll.registry();
        port.register(registry, SOCKET).map_err(RunError::Poll)?;
        registry
            .register(&mut pipes.signals, SIGNALS, Interest::READABLE)
            .map_err(RunError::Poll)?;
        registry
            .register(&mut pipes.children, CHILDREN, Interest::READABLE)
            .map_err(RunError::Poll)?;
        let id = node.id();
        let member = node.members().iter().any(|m| m.id == id);
        log::info!(
            "node {id} term {}: listening on {listen}, data dir {}, voters target {}, \
             members {}",
            node.term(),
            options.data_dir.display(),
            config.voters_target,
            describe_members(node.members())
        );
        log_authentication(id, &options, epoch);
        let join = match options.join {
            Some(_) if member => {
                log::info!("node {id}: already a member; --join not needed");
                None
            }
            Some(target) => Some(Join::new(
                target,
                id,
                listen,
                options.control_token.clone(),
                options.cluster_key.as_ref().map(|file| file.key.clone()),
            )),
            None => {
                if !member {
                    log::warn!(
                        "node {id}: not in its own membership; waiting to be added \
                         (`ctl add {id} {listen}` on the goose, or restart with --join)"
                    );
                }
                None
            }
        };
        let mut service = match options.cluster_key {
            Some(file) => Service::with_key(node, file.key, epoch),
            None => Service::new(node),
        };
        service.set_rate_limit(options.reply_limit);
        Ok(Runner {
            config,
            bootstrap,
            control_token: options.control_token,
            data_dir,
            port,
            pipes,
            poll,
            clock,
            hooks: Hooks::new(id, options.hooks),
            service,
            more_to_read: false,
            was_goose: false,
            join,
            exit: None,
            heard,
            http,
        })
    }
}

/// The peers of a partition, for the log.
fn describe_peers(peers: &[PeerRef]) -> String {
    if peers.is_empty() {
        return "nobody".to_owned();
    }
    let mut text = String::new();
    for (index, peer) in peers.iter().enumerate() {
        let separator = if index == 0 { "" } else { "," };
        let _ = match peer {
            PeerRef::Id(id) => write!(text, "{separator}{id}"),
            PeerRef::Addr(addr) => write!(text, "{separator}{addr}"),
        };
    }
    text
}

/// One line per role, goose, term or leader change, with why; a promotion to goose and a
/// demotion from it say so. `RUST_LOG=debug` adds what the election went by.
fn log_change(
    node: &goose_core::Node<FileStorage>,
    observed: &Observed,
    was_goose: bool,
    last: goose_core::LogIndex,
) {
    let id = node.id();
    let term = observed.term;
    let raft = observed.raft.as_str();
    let cause = observed.cause;
    match (observed.goose, was_goose, observed.leader) {
        (true, false, _) => log::info!("node {id} term {term}: promoted to goose: {cause}"),
        (true, true, _) => log::info!("node {id} term {term}: goose ({raft}): {cause}"),
        (false, true, _) => {
            log::info!("node {id} term {term}: demoted to duck ({raft}): {cause}");
        }
        (false, false, Some(leader)) if leader == id => {
            log::info!("node {id} term {term}: duck ({raft}, not yet goose): {cause}");
        }
        (false, false, Some(leader)) => {
            log::info!("node {id} term {term}: duck ({raft} of {leader}): {cause}");
        }
        (false, false, None) => {
            log::info!("node {id} term {term}: duck ({raft}, no leader): {cause}");
        }
    }
    log::debug!(
        "node {id} term {term}: election detail: voted for {}, log term {}, last index {}, \
         commit {}, voters {}",
        node.voted_for()
            .map_or_else(|| "nobody".to_owned(), |v| v.to_string()),
        node.log_term(),
        last.0,
        node.commit().0,
        node.members().iter().filter(|m| m.voter).count()
    );
}
