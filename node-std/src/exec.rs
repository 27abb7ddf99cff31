//! `--exec <cmd>`: a child that runs only while the node is goose, and the lease rule that
//! decides when anything only the goose may hold ([`GooseOnly`]) must be let go.
//!
//! # Why the child is gone before another node can be goose
//!
//! Another node becomes goose in one of two ways, and the child is gone before either:
//!
//! 1. **It is elected after this node's lease has run out.** While the lease holds, no other
//!    node can even be elected (the argument in `goose_core::raft::lease`), and it is
//!    measured on this node's own clock, which counts every moment the process was stopped
//!    (`CLOCK_BOOTTIME`). The [`LeaseRule`] sends the child SIGTERM as soon as the lease
//!    left drops below the grace (`--exec-grace-ms`), SIGKILL at the lease's end at the
//!    latest, and makes the node step down. Its deadlines are the runner's own timers, so
//!    the node wakes for them whatever the network does. A process that was sent SIGKILL
//!    runs none of its own code again (only a system call it was in can complete). The lease
//!    leaves `lease_margin` (10% of `election_timeout_min`) between its end and the earliest
//!    moment a voter may vote again, which covers the timer waking a millisecond late (the
//!    poll's resolution) and the signal's delivery; after that vote come an election round
//!    trip, the new goose's confirmation round and its own child's start.
//! 2. **A planned handoff** (`ctl transfer`, SIGTERM on the goose, an unhealthy goose):
//!    the transfer is *held* (`goose_core::raft::transfer`): the node stops being goose,
//!    the child gets SIGTERM and SIGKILL after the grace, and TimeoutNow, the only message
//!    that lets a voter ignore its loyalty to this leader, is sent once the child has been
//!    reaped. Meanwhile the leader's heartbeats keep every voter loyal. If the child cannot
//!    be reaped by the hold's deadline (the grace and a second more), the node steps down
//!    without sending TimeoutNow: the flock then elects a goose an election timeout later,
//!    as after a crash, by which time the child has had SIGKILL for that long.
//!
//! The rule needs grace ≤ lease − 2 × heartbeat (enforced at start, [`grace_limit`]): a
//! goose's lease left never drops below the lease minus one heartbeat and a round trip while
//! its acknowledgements flow, so one late round does not stop the job.
//!
//! What the rule cannot cover: a node that is frozen (SIGSTOP, a paused VM) or starved of
//! the CPU for longer than the lease margin cannot send the signal while it is frozen, and
//! the child keeps running meanwhile (when the whole machine or VM is frozen, the child is
//! frozen too and runs nothing). That is what `GOOSE_TERM`, a fencing token, is for: a
//! child that changes a shared resource passes its term, and the resource refuses a term
//! lower than one it has seen.
//!
//! # Never orphaned
//!
//! The node does not run the command itself: it runs `goose exec-guard`, a small process
//! that leads a process group of its own and starts `sh -c <cmd>` in it, with the node's
//! standard output and error (logged line by line) and a pipe from the node on its standard
//! input. The node signals the whole group: SIGTERM reaches the command (the guard catches
//! it and waits), SIGKILL everything. When the node dies, however it dies (`kill -9`
//! included), the pipe's last writer is gone: the guard reads end-of-file and kills the
//! group, itself with it. When the command exits by itself, the guard exits with its status,
//! and the node kills whatever the command left behind in the group before it reaps the
//! guard. A process that leaves the group (`setsid`) escapes all of this.

use std::io::{self, Read as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, ChildStdin, Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use goose_core::{Config, Duration, Instant, NodeId, Term};

use crate::child::{self, Level};

/// The first wait before a child that exited by itself is started again; it doubles up to
/// [`EXEC_RESTART_MAX`].
const EXEC_RESTART_INITIAL: Duration = Duration::from_millis(100);
/// The longest wait before a child that keeps exiting is started again. A child that ran
/// at least this long starts the backoff over.
const EXEC_RESTART_MAX: Duration = Duration::from_millis(10_000);
/// How early before its deadline SIGKILL is sent: the loop's poll sleeps in whole
/// milliseconds, rounded up.
const KILL_EARLY: Duration = Duration::from_millis(1);
/// How long a planned handoff waits for the child beyond the grace (it has had SIGKILL by
/// then; only a system call it is stuck in can keep it).
pub(crate) const EXEC_REAP_SLACK: Duration = Duration::from_millis(1_000);

/// Something only the goose may hold: the `--exec` child, the `--vip` addresses
/// ([`crate::vip`]). The node tells it when to hold and when to let go; it never decides
/// that itself.
pub(crate) trait GooseOnly {
    /// Holds it for the goose of `term` (again, if a term change let it go).
    fn hold(&mut self, now: Instant, term: Term);
    /// Lets it go: gracefully at once, and wholly by `by` at the latest. Repeating it with
    /// an earlier `by` brings the end forward.
    fn release(&mut self, now: Instant, by: Instant);
    /// Whether nothing of it is held or being let go.
    fn is_released(&self) -> bool;
    /// Does what is due: reaps, escalates, restarts.
    fn poll(&mut self, now: Instant);
    /// When [`GooseOnly::poll`] must run next, at the latest.
    fn deadline(&self) -> Option<Instant>;
    /// The `ctl status` field that says what it holds now, if it reports one (`vips=`).
    fn status_field(&self) -> Option<(&'static str, &str)> {
        None
    }
}

/// What the lease rule asks of a [`GooseOnly`] resource, and of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The node is goose with at least the grace of lease left: hold it.
    Hold(Term),
    /// The node is not goose: let it go by `by`.
    Release {
        /// When it must be gone.
        by: Instant,
    },
    /// The node is goose with less than the grace of lease left: let it go by the lease's
    /// end, and step down.
    Lapse {
        /// The lease's end.
        by: Instant,
    },
}

/// The rule of the module docs: when a goose-only resource is held and when it must be gone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaseRule {
    grace: Duration,
    /// The latest lease end seen while goose: no other node is elected before it.
    lease_end: Option<Instant>,
}

impl LeaseRule {
    /// The rule for `--exec-grace-ms` `grace`.
    pub(crate) fn new(grace: Duration) -> Self {
        Self {
            grace,
            lease_end: None,
        }
    }

    /// What to do at `now`: `goose` is the node's term and lease left while it is goose;
    /// `handing_off` whether a held transfer waits for the resource (then nobody else can
    /// be goose before it is released, and the grace is all the time it gets).
    pub(crate) fn decide(
        &mut self,
        now: Instant,
        goose: Option<(Term, Duration)>,
        handing_off: bool,
    ) -> Verdict {
        if let Some((term, left)) = goose {
            let end = now + left;
            self.lease_end = self.lease_end.max(Some(end));
            if left >= self.grace {
                return Verdict::Hold(term);
            }
            return Verdict::Lapse { by: end };
        }
        let graceful = now + self.grace;
        let by = match (handing_off, self.lease_end) {
            (true, _) => graceful,
            (false, Some(end)) => graceful.min(end),
            (false, None) => now,
        };
        Verdict::Release { by }
    }

    /// When the node must look again while goose with `left` of lease: when the lease left
    /// drops below the grace.
    pub(crate) fn next_check(&self, now: Instant, left: Duration) -> Instant {
        (now + left) - self.grace
    }
}

/// The longest grace a timing honours: the lease minus two heartbeats, so that one late
/// round of acknowledgements never stops the job.
pub(crate) fn grace_limit(config: &Config) -> Duration {
    let heartbeats = config.heartbeat_interval + config.heartbeat_interval;
    config.lease_duration() - heartbeats
}

/// Why `grace` does not fit `config`'s timing, naming a timing that would fit it, or
/// `None` if it fits.
pub(crate) fn refuse_grace(config: &Config, grace: Duration) -> Option<String> {
    let limit = grace_limit(config);
    if grace <= limit {
        return None;
    }
    let heartbeat = config.heartbeat_interval;
    let needed = grace + heartbeat + heartbeat;
    // The shortest minimum election timeout whose lease holds the grace and two heartbeats
    // (bounded: the loyalty window's maximum, 60 s).
    let fitting = (config.election_timeout_min.millis()..=60_000).find(|&min| {
        let min = Duration::from_millis(min);
        let timing = Config::with_timing(config.id, heartbeat, min, min + min);
        timing.lease_duration() >= needed
    });
    let timing = match fitting {
        Some(min) => format!(
            "--election-timeout-ms {min}-{} (or longer) with --heartbeat-ms {}",
            2 * min,
            heartbeat.millis()
        ),
        None => format!("a shorter --heartbeat-ms than {}", heartbeat.millis()),
    };
    Some(format!(
        "--exec-grace-ms {} needs a lease of at least {} ms (the grace plus two heartbeats), \
         but --election-timeout-ms {}-{} gives {} ms: use {timing}, or a grace of at most {} ms",
        grace.millis(),
        needed.millis(),
        config.election_timeout_min.millis(),
        config.election_timeout_max.millis(),
        config.lease_duration().millis(),
        limit.millis()
    ))
}

/// The `--exec` child of one node; see the module docs.
pub(crate) struct ExecChild {
    id: NodeId,
    command: String,
    grace: Duration,
    /// The goose term it should run for; `None` while it must not run.
    wanted: Option<Term>,
    running: Option<Running>,
    /// When to start it again after it exited by itself.
    restart_at: Option<Instant>,
    backoff: Duration,
}

/// The guard of a running child, and how far stopping it has got.
struct Running {
    guard: Child,
    /// Held open for the guard: when it closes with the node, the guard kills the group.
    _lifeline: ChildStdin,
    term: Term,
    started: Instant,
    /// SIGTERM was sent, and SIGKILL is due at this instant.
    kill_at: Option<Instant>,
    killed: bool,
}

impl ExecChild {
    /// The child of node `id`: `sh -c command`, with `grace` between SIGTERM and SIGKILL.
    pub(crate) fn new(id: NodeId, command: String, grace: Duration) -> Self {
        Self {
            id,
            command,
            grace,
            wanted: None,
            running: None,
            restart_at: None,
            backoff: EXEC_RESTART_INITIAL,
        }
    }

    fn start(&mut self, now: Instant, term: Term) {
        let id = self.id;
        match spawn_guard(id, &self.command, term) {
            Ok((mut guard, lifeline)) => {
                log::info!(
                    "node {id} term {term}: exec child started (pid {})",
                    guard.id()
                );
                child::log_output(&mut guard, id, "exec", Level::Info);
                self.running = Some(Running {
                    guard,
                    _lifeline: lifeline,
                    term,
                    started: now,
                    kill_at: None,
                    killed: false,
                });
            }
            Err(error) => {
                log::error!("node {id} term {term}: cannot start the exec child: {error}");
                self.schedule_restart(now);
            }
        }
    }

    fn schedule_restart(&mut self, now: Instant) {
        let wait = self.backoff;
        self.restart_at = Some(now + wait);
        self.backoff = (wait + wait).min(EXEC_RESTART_MAX);
    }

    /// SIGTERM now, SIGKILL at `by` at the latest.
    fn stop(&mut self, now: Instant, by: Instant) {
        let id = self.id;
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if running.kill_at.is_none() {
            log::info!(
                "node {id} term {}: stopping the exec child (SIGTERM, SIGKILL within {} ms)",
                running.term,
                by.saturating_since(now).millis()
            );
            if let Err(error) = child::signal_group(&running.guard, libc::SIGTERM) {
                log::warn!("node {id}: cannot signal the exec child: {error}");
            }
        }
        running.kill_at = Some(running.kill_at.map_or(by, |at| at.min(by)));
    }

    /// Reaps the guard if it exited (after killing what its command left in the group).
    fn reap(&mut self, now: Instant) {
        let id = self.id;
        let Some(running) = self.running.as_mut() else {
            return;
        };
        match child::has_exited(&running.guard) {
            Ok(false) => return,
            Ok(true) => {}
            Err(error) => log::warn!("node {id}: cannot wait for the exec child: {error}"),
        }
        // Still a zombie: its group id is not reused yet.
        let _ = child::signal_group(&running.guard, libc::SIGKILL);
        let status = running.guard.try_wait();
        let stopped = running.kill_at.is_some();
        let (term, ran) = (running.term, now.saturating_since(running.started));
        self.running = None;
        let status = match status {
            Ok(Some(status)) => describe(status),
            Ok(None) => "status unknown".to_owned(),
            Err(error) => format!("status unknown: {error}"),
        };
        if stopped {
            log::info!("node {id} term {term}: exec child stopped ({status})");
            return;
        }
        if ran >= EXEC_RESTART_MAX {
            self.backoff = EXEC_RESTART_INITIAL;
        }
        self.schedule_restart(now);
        log::warn!(
            "node {id} term {term}: exec child exited by itself after {} ms ({status}); \
             starting it again in {} ms",
            ran.millis(),
            self.restart_at
                .map_or(0, |at| at.saturating_since(now).millis())
        );
    }
}

impl GooseOnly for ExecChild {
    fn hold(&mut self, now: Instant, term: Term) {
        if self.wanted != Some(term) {
            self.wanted = Some(term);
            self.restart_at = None;
            self.backoff = EXEC_RESTART_INITIAL;
        }
        // A child of an earlier term goes first: its fencing token is stale.
        if self.running.as_ref().is_some_and(|r| r.term != term) {
            self.stop(now, now + self.grace);
        }
        self.poll(now);
    }

    fn release(&mut self, now: Instant, by: Instant) {
        self.wanted = None;
        self.restart_at = None;
        self.stop(now, by);
        self.poll(now);
    }

    fn is_released(&self) -> bool {
        self.running.is_none()
    }

    fn poll(&mut self, now: Instant) {
        self.reap(now);
        let id = self.id;
        if let Some(running) = self.running.as_mut() {
            let due = running.kill_at.is_some_and(|at| now + KILL_EARLY >= at);
            if due && !running.killed {
                log::warn!(
                    "node {id} term {}: exec child still running at its deadline; SIGKILL",
                    running.term
                );
                running.killed = true;
                if let Err(error) = child::signal_group(&running.guard, libc::SIGKILL) {
                    log::warn!("node {id}: cannot kill the exec child: {error}");
                }
            }
            return;
        }
        let Some(term) = self.wanted else {
            return;
        };
        if self.restart_at.is_none_or(|at| now >= at) {
            self.restart_at = None;
            self.start(now, term);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.running {
            Some(running) if !running.killed => running.kill_at.map(|at| at - KILL_EARLY),
            Some(_) => None,
            None => self.wanted.and(self.restart_at),
        }
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        // The guard passes the command's death by a signal on as 128 + the signal.
        (Some(code), _) if code > 128 => format!("killed by signal {}", code - 128),
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// Spawns `goose exec-guard` for `command` (this very binary, through `/proc/self/exe`, so
/// an upgrade of the file on disk does not matter), leading a process group of its own, its
/// standard input a pipe whose write end only the node holds.
fn spawn_guard(id: NodeId, command: &str, term: Term) -> io::Result<(Child, ChildStdin)> {
    let mut guard = Command::new("/proc/self/exe")
        .arg0("goose")
        .arg("exec-guard")
        .arg(command)
        .env("GOOSE_ID", id.to_string())
        .env("GOOSE_TERM", term.to_string())
        .env("GOOSE_ROLE", "goose")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let lifeline = guard
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no pipe to the guard"))?;
    Ok((guard, lifeline))
}

/// `goose exec-guard <cmd>`: see the module docs. Runs `sh -c <cmd>` in this process's
/// group (the node made it the leader), survives SIGTERM and SIGINT sent to the group (they
/// are for the command), kills the group when its standard input ends (the node is gone),
/// and otherwise exits as the command did (128 + the signal if a signal killed it).
pub(crate) fn run_guard(command: &str) -> ExitCode {
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // A handler, not SIG_IGN: a handler is reset to the default by exec, so the command
        // still dies of the signal.
        if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&flag)) {
            eprintln!("goose exec-guard: cannot catch signal {signal}: {error}");
            return ExitCode::from(1);
        }
    }
    // SAFETY: getpid has no preconditions.
    let group = unsafe { libc::getpid() };
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .process_group(group);
    crate::cluster::set_parent_death_signal(&mut shell);
    let mut child = match shell.spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("goose exec-guard: cannot run sh: {error}");
            return ExitCode::from(127);
        }
    };
    let watchdog = std::thread::Builder::new()
        .name("lifeline".to_owned())
        .spawn(|| {
            let mut buffer = [0u8; 64];
            let mut stdin = io::stdin();
            // Bounded by the node's life: it never writes, so only its end ends this.
            while matches!(stdin.read(&mut buffer), Ok(n) if n > 0) {}
            // SAFETY: kill has no memory-safety preconditions; 0 is this process's group.
            unsafe { libc::kill(0, libc::SIGKILL) };
        });
    if let Err(error) = watchdog {
        eprintln!("goose exec-guard: cannot watch the node: {error}");
        let _ = child.kill();
        return ExitCode::from(1);
    }
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                eprintln!("goose exec-guard: cannot wait for sh: {error}");
                return ExitCode::from(1);
            }
        }
    };
    use std::os::unix::process::ExitStatusExt as _;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(heartbeat: u64, min: u64) -> Config {
        let id = NodeId::new(1).unwrap();
        let ms = Duration::from_millis;
        Config::with_timing(id, ms(heartbeat), ms(min), ms(2 * min))
    }

    #[test]
    fn the_grace_fits_the_lease_minus_two_heartbeats() {
        let default = config(50, 150);
        // 133.5 ms of lease, two heartbeats of 50 ms.
        assert_eq!(grace_limit(&default), Duration::from_micros(33_500));
        assert_eq!(refuse_grace(&default, Duration::from_millis(33)), None);
        let refused = refuse_grace(&default, Duration::from_millis(1_000)).unwrap();
        // 1100 ms of lease is 0.89 × 1236 ms (1% drift, 10% margin).
        assert!(
            refused.contains("--election-timeout-ms 1236-2472"),
            "{refused}"
        );
        assert!(refused.contains("at most 33 ms"), "{refused}");
        // The timing it names does fit, and the one below does not.
        let named = config(50, 1236);
        assert_eq!(refuse_grace(&named, Duration::from_millis(1_000)), None);
        assert!(refuse_grace(&config(50, 1235), Duration::from_millis(1_000)).is_some());
    }

    #[test]
    fn the_rule_holds_with_grace_left_and_lapses_below_it() {
        let mut rule = LeaseRule::new(Duration::from_millis(30));
        let now = Instant::from_millis(1_000);
        let term = Term(4);
        let left = Duration::from_millis(100);
        assert_eq!(
            rule.decide(now, Some((term, left)), false),
            Verdict::Hold(term)
        );
        assert_eq!(rule.next_check(now, left), Instant::from_millis(1_070));
        let later = Instant::from_millis(1_075);
        let lapse = rule.decide(later, Some((term, Duration::from_millis(25))), false);
        assert_eq!(
            lapse,
            Verdict::Lapse {
                by: Instant::from_millis(1_100)
            }
        );
        // No longer goose: the grace, but never past the lease seen.
        let verdict = rule.decide(Instant::from_millis(1_080), None, false);
        assert_eq!(
            verdict,
            Verdict::Release {
                by: Instant::from_millis(1_100)
            }
        );
        // A held handoff: nobody else can be goose, so the whole grace.
        let verdict = rule.decide(Instant::from_millis(1_080), None, true);
        assert_eq!(
            verdict,
            Verdict::Release {
                by: Instant::from_millis(1_110)
            }
        );
        // Never goose: nothing to wait for.
        let mut fresh = LeaseRule::new(Duration::from_millis(30));
        assert_eq!(fresh.decide(now, None, false), Verdict::Release { by: now });
    }
}
