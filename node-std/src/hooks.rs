//! Role-change hooks (`--on-goose`, `--on-duck`), like keepalived's notify scripts.
//!
//! A hook is a shell command run with `sh -c` when the node becomes goose (only once its
//! lease holds: the core reports `goose == true`) or stops being goose (step-down, a lease
//! that lapsed, a handoff, `ctl stop`, an exit). Its environment carries `GOOSE_ID`,
//! `GOOSE_TERM` (the term, a fencing token) and `GOOSE_ROLE` (`goose` or `duck`).
//!
//! Rules, all enforced here:
//!
//! - the event loop never waits for a hook: [`Hooks::poll`] reaps with `try_wait` (the loop
//!   calls it whenever SIGCHLD or a deadline wakes it);
//! - never two hooks at once on one node: a transition while a hook runs is remembered as
//!   *pending*, and only the latest pending one runs once the current one has been reaped
//!   (a goose → duck → goose flap while a hook runs therefore runs nothing stale);
//! - a hook still running after the timeout (`--hook-timeout-ms`, default
//!   [`HOOK_TIMEOUT_DEFAULT`]) gets SIGTERM, and SIGKILL [`HOOK_KILL_GRACE`] later, with its
//!   whole process group (the hook runs in a group of its own, so `sh` and everything it
//!   started get the signal together), and both are logged;
//! - what a hook writes to its standard output and error is logged line by line as
//!   `node <id> on-goose hook: …` ([`crate::child`]); a goose hook that fails is logged as
//!   an error with its status (whatever it was to set up is not there);
//! - a transition equal to the one last delivered (same role, same term) is not run twice.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use goose_core::{NodeId, Term};

use crate::child::{self, Level};

/// How long a hook that got SIGTERM at its timeout has before SIGKILL: enough to remove an
/// address or write a line, short enough not to hold up the next hook.
pub(crate) const HOOK_KILL_GRACE: Duration = Duration::from_secs(1);

/// How long a hook may run before it is killed, unless `--hook-timeout-ms` says otherwise.
/// Ten seconds is far above what a notify script needs (move an address, start a unit) and
/// still bounds how long a hung one blocks the hooks after it.
pub(crate) const HOOK_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// The role a hook announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HookRole {
    /// The node became goose (`--on-goose`).
    Goose,
    /// The node stopped being goose (`--on-duck`).
    Duck,
}

impl HookRole {
    /// The `GOOSE_ROLE` value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Goose => "goose",
            Self::Duck => "duck",
        }
    }

    /// The hook's name in the log: its flag.
    const fn label(self) -> &'static str {
        match self {
            Self::Goose => "on-goose hook",
            Self::Duck => "on-duck hook",
        }
    }
}

/// One role change to announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transition {
    /// The new role.
    pub(crate) role: HookRole,
    /// The term it happened in.
    pub(crate) term: Term,
}

/// The hook commands and their timeout, from the command line.
#[derive(Clone, Debug, Default)]
pub(crate) struct HookCommands {
    /// Run when the node becomes goose.
    pub(crate) on_goose: Option<String>,
    /// Run when the node stops being goose.
    pub(crate) on_duck: Option<String>,
    /// How long a hook may run before it is killed.
    pub(crate) timeout: Duration,
}

impl HookCommands {
    /// The longest a hook takes to end, killed or not: the timeout and the kill's grace.
    pub(crate) fn bound(&self) -> Duration {
        self.timeout + HOOK_KILL_GRACE
    }

    /// Whether any hook is given.
    pub(crate) fn any(&self) -> bool {
        self.on_goose.is_some() || self.on_duck.is_some()
    }

    fn command(&self, role: HookRole) -> Option<&str> {
        match role {
            HookRole::Goose => self.on_goose.as_deref(),
            HookRole::Duck => self.on_duck.as_deref(),
        }
    }
}

struct Running {
    transition: Transition,
    child: Child,
    started: Instant,
    /// When it gets SIGTERM, then SIGKILL; `None` once it got SIGKILL.
    deadline: Option<Instant>,
    /// Whether it got SIGTERM for its timeout.
    terminated: bool,
}

/// The hooks of one node: at most one running, at most one pending.
pub(crate) struct Hooks {
    id: NodeId,
    commands: HookCommands,
    running: Option<Running>,
    pending: Option<Transition>,
    /// The transition delivered last (run, or skipped for want of a command).
    last: Option<Transition>,
}

impl Hooks {
    /// Hooks for node `id`; with neither command given, transitions cost nothing.
    pub(crate) fn new(id: NodeId, commands: HookCommands) -> Self {
        Self {
            id,
            commands,
            running: None,
            pending: None,
            last: None,
        }
    }

    /// Announces a role change: runs its hook now if none is running, else remembers it as
    /// the pending one (replacing any older pending one).
    pub(crate) fn transition(&mut self, transition: Transition) {
        self.pending = Some(transition);
        self.poll();
    }

    /// Reaps a finished hook, kills one past its deadline, and starts the pending one when
    /// none is running. Never blocks.
    pub(crate) fn poll(&mut self) {
        self.reap();
        if self.running.is_none() {
            self.start_pending();
        }
    }

    /// Replaces the commands and timeout (a reload): the running hook keeps its own.
    pub(crate) fn set_commands(&mut self, commands: HookCommands) {
        self.commands = commands;
    }

    /// When [`Hooks::poll`] must run next at the latest: the running hook's next signal.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.running.as_ref().and_then(|running| running.deadline)
    }

    /// Whether no hook runs and none is pending.
    pub(crate) fn is_idle(&self) -> bool {
        self.running.is_none() && self.pending.is_none()
    }

    fn reap(&mut self) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        let Transition { role, term } = running.transition;
        let role = role.as_str();
        let id = self.id;
        match running.child.try_wait() {
            Ok(Some(status)) => {
                let elapsed = running.started.elapsed().as_millis();
                let goose = running.transition.role == HookRole::Goose;
                log_exit(id, term, role, status, elapsed, running.terminated, goose);
                self.running = None;
            }
            Ok(None) => {
                let due = running
                    .deadline
                    .is_some_and(|deadline| Instant::now() >= deadline);
                if due && !running.terminated {
                    log::warn!(
                        "node {id} term {term}: {role} hook still running after {} ms \
                         (--hook-timeout-ms); SIGTERM, SIGKILL in {} ms",
                        self.commands.timeout.as_millis(),
                        HOOK_KILL_GRACE.as_millis()
                    );
                    signal(id, &running.child, libc::SIGTERM);
                    running.terminated = true;
                    running.deadline = Some(Instant::now() + HOOK_KILL_GRACE);
                } else if due {
                    log::warn!("node {id} term {term}: {role} hook ignored SIGTERM; SIGKILL");
                    signal(id, &running.child, libc::SIGKILL);
                    running.deadline = None;
                }
            }
            Err(error) => {
                // ECHILD: nothing left to wait for. Forget it rather than block every
                // later hook.
                log::warn!("node {id} term {term}: cannot wait for the {role} hook: {error}");
                self.running = None;
            }
        }
    }

    fn start_pending(&mut self) {
        let Some(transition) = self.pending.take() else {
            return;
        };
        if self.last == Some(transition) {
            return;
        }
        self.last = Some(transition);
        let Some(command) = self.commands.command(transition.role) else {
            return;
        };
        let Transition { role, term } = transition;
        match spawn(self.id, command, transition) {
            Ok(mut child) => {
                log::info!(
                    "node {} term {term}: running the {} hook (pid {})",
                    self.id,
                    role.as_str(),
                    child.id()
                );
                child::log_output(&mut child, self.id, role.label(), Level::Info);
                let started = Instant::now();
                self.running = Some(Running {
                    transition,
                    child,
                    started,
                    deadline: Some(started + self.commands.timeout),
                    terminated: false,
                });
            }
            Err(error) => log::error!(
                "node {} term {term}: cannot run the {} hook: {error}",
                self.id,
                role.as_str()
            ),
        }
    }
}

/// The hook in a process group of its own, so that a timeout reaches everything it started.
fn spawn(id: NodeId, command: &str, transition: Transition) -> std::io::Result<Child> {
    child::shell(command)
        .env("GOOSE_ID", id.to_string())
        .env("GOOSE_TERM", transition.term.to_string())
        .env("GOOSE_ROLE", transition.role.as_str())
        .spawn()
}

/// `signal` to the hook's whole process group (its pid is the group id); the hook is not
/// reaped yet, so the group id cannot have been reused.
fn signal(id: NodeId, child: &Child, signal: libc::c_int) {
    if let Err(error) = child::signal_group(child, signal) {
        log::warn!(
            "node {id}: cannot signal hook group {}: {error}",
            child.id()
        );
    }
}

fn log_exit(
    id: NodeId,
    term: Term,
    role: &str,
    status: ExitStatus,
    elapsed: u128,
    timed_out: bool,
    goose: bool,
) {
    if timed_out {
        log::warn!(
            "node {id} term {term}: {role} hook ended after its timeout, {elapsed} ms ({status})"
        );
    } else if status.success() {
        log::info!("node {id} term {term}: {role} hook done in {elapsed} ms");
    } else if goose {
        // Whatever it was to set up for the goose is not there.
        log::error!("node {id} term {term}: {role} hook failed after {elapsed} ms ({status})");
    } else {
        log::warn!("node {id} term {term}: {role} hook failed after {elapsed} ms ({status})");
    }
}

#[cfg(test)]
mod tests {
    use super::{HookCommands, HookRole, Hooks, Transition, HOOK_KILL_GRACE};
    use goose_core::{NodeId, Term};
    use std::time::{Duration, Instant};

    fn hooks(on_goose: &str, on_duck: &str, timeout: Duration) -> Hooks {
        let commands = HookCommands {
            on_goose: Some(on_goose.to_owned()),
            on_duck: Some(on_duck.to_owned()),
            timeout,
        };
        Hooks::new(NodeId::new(7).unwrap(), commands)
    }

    fn goose(term: u64) -> Transition {
        Transition {
            role: HookRole::Goose,
            term: Term(term),
        }
    }

    fn duck(term: u64) -> Transition {
        Transition {
            role: HookRole::Duck,
            term: Term(term),
        }
    }

    fn settle(hooks: &mut Hooks, within: Duration) {
        let deadline = Instant::now() + within;
        while !hooks.is_idle() {
            assert!(Instant::now() < deadline, "hooks did not settle");
            hooks.poll();
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn runs_one_at_a_time_and_only_the_latest_pending() {
        let dir = std::env::temp_dir().join(format!("goose-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("log");
        let line = format!(
            "echo \"start $GOOSE_ROLE $GOOSE_TERM $GOOSE_ID\" >> {0}; sleep 0.1; \
             echo \"end $GOOSE_ROLE $GOOSE_TERM\" >> {0}",
            file.display()
        );
        let mut hooks = hooks(&line, &line, Duration::from_secs(5));
        hooks.transition(goose(3));
        hooks.transition(duck(3)); // replaced by the next one before it could run
        hooks.transition(goose(4));
        hooks.transition(goose(4)); // the same again: runs once
        settle(&mut hooks, Duration::from_secs(5));
        hooks.transition(goose(4)); // equal to the last delivered: not run again
        hooks.transition(duck(4));
        settle(&mut hooks, Duration::from_secs(5));
        let log = std::fs::read_to_string(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            log,
            "start goose 3 7\nend goose 3\nstart goose 4 7\nend goose 4\n\
             start duck 4 7\nend duck 4\n"
        );
    }

    #[test]
    fn a_hung_hook_gets_sigterm_then_sigkill_with_its_children() {
        // SIGTERM ends the first; the second ignores it and needs SIGKILL a second later.
        let mut hooks = hooks("sleep 30; sleep 30", "true", Duration::from_millis(100));
        let started = Instant::now();
        hooks.transition(goose(1));
        assert!(!hooks.is_idle());
        assert!(hooks.deadline().is_some());
        settle(&mut hooks, Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "SIGTERM ended it"
        );
        let mut stubborn =
            self::hooks("trap '' TERM; sleep 30", "true", Duration::from_millis(100));
        let started = Instant::now();
        stubborn.transition(goose(1));
        settle(&mut stubborn, Duration::from_secs(5));
        let took = started.elapsed();
        assert!(took >= HOOK_KILL_GRACE, "{took:?}");
        assert!(took < Duration::from_secs(4), "{took:?}");
    }

    #[test]
    fn no_command_no_process() {
        let mut hooks = Hooks::new(NodeId::new(1).unwrap(), HookCommands::default());
        hooks.transition(goose(1));
        assert!(hooks.is_idle());
        assert_eq!(hooks.deadline(), None);
    }
}
