//! The loop of a running node: each wake-up reads the socket, drives the service in the
//! order its docs give, acts on its events (the log, the hooks, leaving), tends the health
//! check and the `--exec` child, and sleeps until the earliest deadline. See the parent
//! module for the order and for leaving, and [`crate::exec`] for why the child is gone
//! before any other node can be goose.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use goose_core::auth::key::ClusterKey;
use goose_core::limits::{LOG_ENTRIES_MAX, MEMBERS_MAX};
use goose_core::service::{Handled, Host, Notice, Origin, Service, TRANSMITS_PER_CALL_MAX};
use goose_core::text::{PeerRef, Reason, Reply, PARTITION_PEERS_MAX, TEXT_REPLY_SIZE_MAX};
use goose_core::{Config, Duration, Event, Instant, Member, Observed, RaftRole};
use mio::{Events, Interest, Poll, Token};

use crate::check::Check;
use crate::clock::Clock;
use crate::exec::{grace_limit, ExecChild, GooseOnly, LeaseRule, Verdict, EXEC_REAP_SLACK};
use crate::hooks::{HookRole, Hooks, Transition};
use crate::storage_file::{DataDir, FileStorage};
use crate::vip::RELEASE_BOUND as VIP_RELEASE_BOUND;

use crate::http::Publisher;

use super::heard::Heard;
use super::join::{Join, Request};
use super::memory::Settle;
use super::port::{bump, Port, Queue};
use super::rails::Rails;
use super::signals::{drain_pipe, Pipes};
use super::{build_node, describe_members, log_authentication, Prepared, Reload, RunError};

/// Datagrams read per wake-up before the loop lets timers run (each batch's answers are
/// sent after the batch). 1024 is far above what a flock sends one node between two
/// wake-ups (a few per peer), and bounds the time one flood can keep timers from firing.
const DATAGRAMS_PER_WAKE_MAX: usize = 1024;
/// Events handled per wake-up; the service buffers at most `EVENTS_MAX` anyway.
const EVENTS_PER_WAKE_MAX: usize = 64;
/// mio readiness events taken per `poll`: one per registered source (two sockets, two
/// pipes) with room to spare.
const POLL_EVENTS_CAPACITY: usize = 8;

const SOCKET: Token = Token(0);
const SIGNALS: Token = Token(1);
const CHILDREN: Token = Token(2);
const RELOAD: Token = Token(3);
const TEXT_SOCKET: Token = Token(4);

/// Where a leaving node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// A leader waiting for its handoff to be sent, at most until `deadline`.
    Handoff { deadline: Instant },
    /// Silent; exits once no hook runs or waits and the `--exec` child is gone.
    Draining,
    /// Storage failed: silent for good; exits 1 once its duck hook has run and the `--exec`
    /// child is gone (best effort, each bounded).
    Failing,
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
    /// requesters): `goose_core::service`. Boxed: tens of KiB, built once, not carried in
    /// the loop's stack frame.
    service: Box<DesktopService>,
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
    /// When the term and role last changed: once they have held a while, the code and
    /// heap the change ran are given back.
    settle: Settle,
    /// `--http`: where the loop publishes its snapshot.
    http: Option<Publisher>,
    /// What only the goose may hold (the `--exec` child), and the rule that lets it go.
    goose_only: Vec<Box<dyn GooseOnly>>,
    lease_rule: Option<LeaseRule>,
    /// How long a handoff waits for the child and the hooks (`None`: it does not wait).
    hold: Option<Duration>,
    /// `--check`, and when an unhealthy goose last tried to hand off.
    check: Option<Check>,
    health_handoff_at: Option<Instant>,
    rails: Rails,
    reload: Option<Reload>,
    /// Whether the node has a cluster key (frames it cannot decode then are not a sign of
    /// a member with a key).
    keyed: bool,
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
            let node = self.service.node();
            self.settle.tend(now, node.term(), node.status(now).raft);
            self.maybe_publish(now);
            self.hooks.poll();
            self.tend(now)?;
            self.check_exit_deadline();
            if self.is_idle() {
                let node = self.service.node();
                match self.exit {
                    Some(Exit::Draining) => {
                        log::info!("node {} term {}: exiting", node.id(), node.term());
                        return Ok(());
                    }
                    Some(Exit::Failing) => return Err(RunError::StorageFailed),
                    Some(Exit::Handoff { .. }) | None => {}
                }
            }
            let quiet = self.exit.is_none()
                && !self.service.is_stopped()
                && self.service.node().is_quiescent();
            self.port
                .wake_for_peers(self.poll.registry(), SOCKET, !quiet)
                .map_err(RunError::Poll)?;
            let timeout = self.sleep_for();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(RunError::Poll(error)),
            }
            self.port.woke();
            let (mut signalled, mut reload) = (false, false);
            for event in &events {
                match event.token() {
                    SOCKET => self.port.set_readable(Queue::Peer),
                    TEXT_SOCKET => self.port.set_readable(Queue::Text),
                    SIGNALS => signalled |= drain_pipe(&mut self.pipes.signals),
                    RELOAD => reload |= drain_pipe(&mut self.pipes.reload),
                    CHILDREN => {
                        // Reaped by hooks.poll() and tend() at the next turn.
                        drain_pipe(&mut self.pipes.children);
                    }
                    _ => {}
                }
            }
            if reload {
                self.reload();
            }
            if signalled && self.on_signal() {
                if self.exit == Some(Exit::Failing) {
                    return Err(RunError::StorageFailed);
                }
                return Ok(());
            }
        }
    }

    /// Whether nothing the node started runs or waits: no hook, no `--exec` child.
    fn is_idle(&self) -> bool {
        self.hooks.is_idle() && self.goose_only.iter().all(|held| held.is_released())
    }

    /// What follows the events each turn: the health check's result (an unhealthy goose
    /// hands off), the lease rule for what only the goose may hold (hold it, let it go, or
    /// let it go and step down when the lease left drops below the grace), and the release
    /// of a held handoff once the child and the hooks are done. Whatever makes the node
    /// speak is flushed, and its events handled.
    fn tend(&mut self, now: Instant) -> Result<(), RunError> {
        let mut spoke = self.tend_health(now);
        if let Some(rule) = self.lease_rule.as_mut() {
            let status = self.service.status(now);
            let goose = status
                .goose
                .then_some((status.term, status.lease_remaining));
            let handing_off = self.service.node().is_transfer_held();
            match rule.decide(now, goose, handing_off) {
                Verdict::Hold(term) => {
                    for held in &mut self.goose_only {
                        held.hold(now, term);
                    }
                }
                Verdict::Release { by } => {
                    for held in &mut self.goose_only {
                        held.release(now, by);
                    }
                }
                Verdict::Lapse { by } => {
                    log::warn!(
                        "node {} term {}: lease left {} ms, below the grace: letting go of \
                         what only the goose holds (exec child, addresses) by the lease's end \
                         and stepping down",
                        status.id,
                        status.term,
                        status.lease_remaining.millis()
                    );
                    for held in &mut self.goose_only {
                        held.release(now, by);
                    }
                    self.service.node_mut().step_down(now);
                    spoke = true;
                }
            }
            for held in &mut self.goose_only {
                held.poll(now);
            }
        }
        if self.service.node().is_transfer_held() && self.is_idle() {
            let node = self.service.node();
            log::info!(
                "node {} term {}: exec child and hooks done; sending the handoff",
                node.id(),
                node.term()
            );
            spoke |= self.service.release_transfer(now);
        }
        if spoke {
            self.flush(now);
            self.handle_events()?;
        }
        Ok(())
    }

    /// Feeds the check's result to the node; an unhealthy goose hands off (once per check
    /// interval while no handoff is possible). Returns whether the node was told anything
    /// that makes it speak.
    fn tend_health(&mut self, now: Instant) -> bool {
        let Some(check) = self.check.as_mut() else {
            return false;
        };
        if let Some(healthy) = check.poll() {
            self.service.node_mut().set_healthy(healthy);
        }
        if check.healthy() || self.exit.is_some() || !self.service.is_goose(now) {
            return false;
        }
        let interval = duration_of(check.spec().interval);
        if self.health_handoff_at.is_some_and(|at| now < at + interval) {
            return false;
        }
        self.health_handoff_at = Some(now);
        let id = self.service.node().id();
        match self.service.hand_off(now, None) {
            Ok(()) => {
                log::warn!("node {id}: unhealthy goose: handing off to a healthy voter");
                true
            }
            Err(error) => {
                log::warn!(
                    "node {id}: unhealthy goose, but no handoff is possible ({error}); leading on"
                );
                false
            }
        }
    }

    /// SIGHUP: reads the config file again and applies what may change while running.
    fn reload(&mut self) {
        let id = self.service.node().id();
        let Some(reload) = self.reload.as_mut() else {
            log::info!("node {id}: SIGHUP: nothing to reload (started without --config)");
            return;
        };
        let reloaded = match reload() {
            Ok(reloaded) => reloaded,
            Err(error) => {
                log::error!(
                    "node {id}: SIGHUP: config not reloaded, running on as before: {error}"
                );
                return;
            }
        };
        self.hooks.set_commands(reloaded.hooks);
        let same_check = match (&self.check, &reloaded.check) {
            (Some(running), Some(spec)) => running.spec() == spec,
            (None, None) => true,
            _ => false,
        };
        if !same_check {
            self.check = reloaded.check.map(|spec| Check::new(id, spec));
            // A new check starts healthy, as at start.
            self.service.node_mut().set_healthy(true);
        }
        self.service.set_rate_limit(reloaded.reply_limit);
        self.control_token = reloaded.control_token;
        log::info!(
            "node {id}: SIGHUP: reloaded hooks, health check, reply limits and control token"
        );
        if !reloaded.ignored.is_empty() {
            log::warn!(
                "node {id}: SIGHUP: {} changed; that takes a restart",
                reloaded.ignored.join(", ")
            );
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
        for held in &self.goose_only {
            consider(held.deadline());
        }
        let now = self.clock.now();
        if let Some(rule) = &self.lease_rule {
            let status = self.service.status(now);
            if status.goose {
                consider(Some(rule.next_check(now, status.lease_remaining)));
            }
        }
        // mio rounds up to its resolution, so this never wakes before the deadline.
        let mut sleep =
            deadline.map(|at| StdDuration::from_micros(at.saturating_since(now).micros()));
        let others = [
            self.hooks.deadline(),
            self.check.as_ref().map(Check::deadline),
        ];
        for at in others.into_iter().flatten() {
            let until = at.saturating_duration_since(std::time::Instant::now());
            sleep = Some(sleep.map_or(until, |sleep| sleep.min(until)));
        }
        sleep
    }

    /// The service's output step: the answer to the datagram just handled, the node's
    /// frames and the late answers to transfer requesters, through the socket.
    fn flush(&mut self, now: Instant) {
        self.queue_output(now);
        self.transmit();
    }

    /// The service's output step into the port's send queue, sent when full or by
    /// [`Runner::transmit`].
    fn queue_output(&mut self, now: Instant) {
        if !self.service.flush(now, &mut self.port.outlet()) {
            log::warn!(
                "node {}: more than {TRANSMITS_PER_CALL_MAX} frames in one flush",
                self.service.node().id()
            );
        }
    }

    /// Sends what the port has queued; what could not be sent counts as `send_errors`.
    fn transmit(&mut self) {
        self.port.transmit();
        let failures = self.port.take_send_failures();
        let errors = &mut self.service.stats_mut().send_errors;
        *errors = errors.saturating_add(failures);
    }

    /// Reads the port in batches (peer frames first) and handles every datagram, each
    /// batch's answers leaving in one `sendmmsg` after it.
    fn receive_all(&mut self) -> Result<(), RunError> {
        let mut handled = 0;
        while handled < DATAGRAMS_PER_WAKE_MAX {
            let count = match self.port.receive() {
                Ok(0) => {
                    self.more_to_read = false;
                    return Ok(());
                }
                Ok(count) => count,
                Err(error) => {
                    // E.g. an ICMP error queued on the socket: count it and read on.
                    bump(&mut self.service.stats_mut().receive_errors);
                    log::debug!("node {}: receive error: {error}", self.service.node().id());
                    handled += 1;
                    continue;
                }
            };
            for index in 0..count {
                self.handle_datagram(index)?;
            }
            self.transmit();
            handled += count;
        }
        self.more_to_read = true;
        Ok(())
    }

    /// Handles datagram `index` of the port's batch at a fresh clock reading (a probe's
    /// answer must reflect the lease at the moment it is decided, not at the start of a
    /// long drain).
    fn handle_datagram(&mut self, index: usize) -> Result<(), RunError> {
        let Some(source) = self.port.source(index) else {
            return Ok(());
        };
        let size = self.port.datagram(index).len();
        let mut now = self.clock.now();
        let origin = Origin {
            addr: source,
            ip: source.ip().to_canonical(),
            trusted: source.ip().to_canonical().is_loopback(),
        };
        let field = self.goose_only.iter().find_map(|held| held.status_field());
        let host = Host {
            control_token: self.control_token.as_deref(),
            counters: &self.port.counters(),
            fields: field.as_slice(),
        };
        let datagram = self.port.datagram(index);
        let before = *self.service.stats();
        let undecodable = self.service.node().stats().undecodable;
        match self.service.handle_datagram(now, origin, &host, datagram) {
            Handled::Frame => {
                self.port.count_frame_in(size);
                let datagram = self.port.datagram(index);
                self.heard.frame(now, datagram, self.service.node());
                if self.service.node().stats().undecodable > undecodable && !self.keyed {
                    let claimed = claimed_source(self.port.datagram(index));
                    let id = self.service.node().id();
                    self.rails.undecodable(id, source, claimed);
                }
            }
            Handled::Dropped => {
                let claimed = claimed_source(self.port.datagram(index));
                let (id, after) = (self.service.node().id(), *self.service.stats());
                self.rails
                    .frame_dropped(id, source, claimed, &before, &after);
            }
            Handled::Ignored => {
                self.maybe_duplicate_told(source, index);
                self.maybe_join_reply(now, source, index);
            }
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
                self.start_node(now)?;
            }
        }
        self.queue_output(now);
        Ok(())
    }

    /// `ctl start`: a node from the persisted state. Out of line, so that the node being
    /// built takes stack only while it is (it is tens of KiB).
    #[inline(never)]
    fn start_node(&mut self, now: Instant) -> Result<(), RunError> {
        let node = build_node(&self.config, &self.bootstrap, &self.data_dir, now)?;
        self.service.start(*node);
        log::info!(
            "node {} term {}: started by ctl from the persisted state",
            self.service.node().id(),
            self.service.node().term()
        );
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
            Notice::DuplicateId { id: other } => {
                let elsewhere = self.service.heard_from(other);
                self.rails.duplicate_id(id, other, source, elsewhere);
            }
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
                Event::Failed => self.fail_stop(),
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
            self.fail_stop();
        }
        Ok(())
    }

    /// Storage failed: the node is silent for good. It stops its `--exec` child (the lease
    /// rule sees no goose) and runs its duck hook, best effort, then exits 1 (the loop).
    fn fail_stop(&mut self) {
        if self.exit == Some(Exit::Failing) {
            return;
        }
        let id = self.service.node().id();
        log::error!(
            "node {id}: storage failed: stopping for good once the exec child is gone and the \
             duck hook has run"
        );
        self.service.leave();
        self.went_silent();
        self.exit = Some(Exit::Failing);
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
        if matches!(self.exit, Some(Exit::Draining | Exit::Failing)) {
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
            match self.service.hand_off(now, None) {
                Ok(()) => {
                    log::info!(
                        "node {id} term {}: signalled; handing leadership off before exiting",
                        self.service.node().term()
                    );
                    let hold = self.hold.unwrap_or(Duration::ZERO);
                    let deadline = now + hold + self.config.election_timeout_max;
                    self.exit = Some(Exit::Handoff { deadline });
                    return false;
                }
                Err(error) => log::info!("node {id}: no handoff possible ({error})"),
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
    fn maybe_join_reply(&mut self, now: Instant, source: SocketAddr, index: usize) {
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if let Some(request) = join.handle_reply(now, source, self.port.datagram(index)) {
            self.send_join_request(&request);
        }
    }

    /// A reply `err duplicate-id id=<this node's id> …`: another node saw this node's id
    /// from two addresses.
    fn maybe_duplicate_told(&mut self, source: SocketAddr, index: usize) {
        let text = String::from_utf8_lossy(self.port.datagram(index));
        let Ok(reply) = Reply::parse(text.trim_end()) else {
            return;
        };
        let Reply::Err {
            reason: Some(Reason::DuplicateId),
            details,
        } = reply
        else {
            return;
        };
        let id = self.service.node().id();
        if details.get("id") != Some(id.to_string().as_str()) {
            return;
        }
        let known_at = details.get("addr").unwrap_or("none").to_owned();
        self.rails.told_duplicate(id, source, &known_at);
    }

    fn send_join_request(&mut self, request: &Request) {
        let target = request.target;
        if !self.port.send_to(request.text.as_bytes(), target) {
            bump(&mut self.service.stats_mut().send_errors);
            let id = self.service.node().id();
            log::debug!("node {id}: join request to {target} could not be queued");
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
            advertised,
            epoch,
            vips,
        } = self;
        let now = clock.now();
        let heard = Heard::new(now);
        let settle = Settle::new(now, node.term(), node.status(now).raft);
        let poll = Poll::new().map_err(RunError::Poll)?;
        let registry = poll.registry();
        port.register(registry, SOCKET, TEXT_SOCKET)
            .map_err(RunError::Poll)?;
        registry
            .register(&mut pipes.signals, SIGNALS, Interest::READABLE)
            .map_err(RunError::Poll)?;
        registry
            .register(&mut pipes.children, CHILDREN, Interest::READABLE)
            .map_err(RunError::Poll)?;
        registry
            .register(&mut pipes.reload, RELOAD, Interest::READABLE)
            .map_err(RunError::Poll)?;
        let id = node.id();
        let member = node.members().iter().any(|m| m.id == id);
        let reached = if advertised == listen {
            String::new()
        } else {
            format!(" (peers reach it at {advertised})")
        };
        log::info!(
            "node {id} term {}: listening on {listen}{reached}, data dir {}, voters target {}, \
             members {}",
            node.term(),
            options.data_dir.display(),
            config.voters_target,
            describe_members(node.members())
        );
        log_authentication(id, &options, epoch);
        let join = match options.join.is_empty() {
            false if member => {
                log::info!("node {id}: already a member; --join not needed");
                None
            }
            false => Some(Join::new(
                options.join.clone(),
                id,
                advertised,
                options.control_token.clone(),
                options.cluster_key.as_ref().map(|file| file.key.clone()),
            )),
            true => {
                if !member {
                    log::warn!(
                        "node {id}: not in its own membership; waiting to be added \
                         (`ctl add {id} {advertised}` on the goose, or restart with --join)"
                    );
                }
                None
            }
        };
        let term = node.term();
        let keyed = options.cluster_key.is_some();
        let mut service = Box::new(match options.cluster_key {
            Some(file) => Service::with_key(*node, file.key, epoch),
            None => Service::new(*node),
        });
        service.set_rate_limit(options.reply_limit);
        let mut goose_only: Vec<Box<dyn GooseOnly>> = Vec::new();
        let mut lease_rule = None;
        let mut hold = None;
        if let Some(vips) = vips {
            // First in the list: added before the --exec child starts (a job may bind the
            // address), removed before it is stopped.
            log::info!(
                "node {id}: holds {} only while goose; removed when the lease left drops \
                 below {} ms, on a handoff (before TimeoutNow) and on leaving",
                options
                    .vips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                options
                    .exec
                    .as_ref()
                    .map_or_else(|| grace_limit(&config), |exec| exec.grace)
                    .millis()
            );
            goose_only.push(Box::new(vips));
            hold = Some(VIP_RELEASE_BOUND);
        }
        if let Some(exec) = options.exec {
            log::info!(
                "node {id}: exec child `{}` only while goose; SIGTERM when the lease left \
                 drops below {} ms (and on a handoff), SIGKILL at the lease's end at the latest",
                exec.command,
                exec.grace.millis()
            );
            lease_rule = Some(LeaseRule::new(exec.grace));
            let reap = exec.grace + EXEC_REAP_SLACK;
            hold = Some(hold.map_or(reap, |hold: Duration| hold.max(reap)));
            goose_only.push(Box::new(ExecChild::new(id, exec.command, exec.grace)));
        }
        if lease_rule.is_none() && !goose_only.is_empty() {
            // The addresses alone: the rule's grace is --exec-grace-ms's default.
            lease_rule = Some(LeaseRule::new(grace_limit(&config)));
        }
        if options.hooks.any() {
            // A duck hook may wait for a goose hook still running: two hooks' worth.
            let hooks = duration_of(options.hooks.bound() + options.hooks.bound());
            hold = Some(hold.map_or(hooks, |hold: Duration| hold.max(hooks)));
        }
        service.hold_transfers(hold);
        let mut hooks = Hooks::new(id, options.hooks);
        // It may have died as goose: whatever its goose hook set up goes.
        hooks.transition(Transition {
            role: HookRole::Duck,
            term,
        });
        let check = options.check.map(|spec| {
            log::info!(
                "node {id}: health check `{}` every {} ms, unhealthy after {} failures in a row",
                spec.command,
                spec.interval.as_millis(),
                spec.fails
            );
            Check::new(id, spec)
        });
        Ok(Runner {
            config,
            bootstrap,
            control_token: options.control_token,
            data_dir,
            port,
            pipes,
            poll,
            clock,
            hooks,
            service,
            more_to_read: false,
            was_goose: false,
            join,
            exit: None,
            heard,
            settle,
            http,
            goose_only,
            lease_rule,
            hold,
            check,
            health_handoff_at: None,
            rails: Rails::default(),
            reload: options.reload,
            keyed,
        })
    }
}

/// A std duration as the core's.
fn duration_of(duration: StdDuration) -> Duration {
    Duration::from_micros(u64::try_from(duration.as_micros()).unwrap_or(u64::MAX))
}

/// The source id a peer frame claims, if it has a header.
fn claimed_source(frame: &[u8]) -> Option<u16> {
    goose_core::wire::parse_header(frame)
        .ok()
        .map(|(header, _)| header.source)
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
