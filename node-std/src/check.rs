//! `--check <cmd>`: a health check, like keepalived's `track_script`.
//!
//! The command runs with `sh -c` and `GOOSE_ID` (in a process group of its own, its output
//! logged at debug level) every `--check-interval-ms`; a run still going at the next interval is killed with
//! its group and counts as a failure. After `--check-fails` failures in a row the node is
//! unhealthy; one pass makes it healthy again. What the runner does with it: an unhealthy
//! goose hands off, an unhealthy voter does not campaign and tells its leader so, which never
//! makes it a transfer target (`goose_core::Node::set_healthy`).
//!
//! The first run is at start; until `--check-fails` runs have failed the node counts as
//! healthy, so a node that just started is not kept out of an election by a check that has
//! not run yet.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use goose_core::NodeId;

use crate::child::{self, Level};

/// How often the check runs, unless `--check-interval-ms` says otherwise.
pub(crate) const CHECK_INTERVAL_DEFAULT: Duration = Duration::from_millis(1_000);
/// Failures in a row that make a node unhealthy, unless `--check-fails` says otherwise.
pub(crate) const CHECK_FAILS_DEFAULT: u32 = 3;

/// `--check`, `--check-interval-ms` and `--check-fails`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CheckCommand {
    /// The shell command; exit 0 means healthy.
    pub(crate) command: String,
    /// From the start of one run to the start of the next; also a run's time limit.
    pub(crate) interval: Duration,
    /// Failures in a row that make the node unhealthy.
    pub(crate) fails: u32,
}

/// The health check of one node.
pub(crate) struct Check {
    id: NodeId,
    spec: CheckCommand,
    running: Option<Child>,
    next_run: Instant,
    /// Failures in a row so far.
    failures: u32,
    healthy: bool,
}

impl Check {
    /// A check whose first run is due at once.
    pub(crate) fn new(id: NodeId, spec: CheckCommand) -> Self {
        Self {
            id,
            spec,
            running: None,
            next_run: Instant::now(),
            failures: 0,
            healthy: true,
        }
    }

    /// Whether the node is healthy.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy
    }

    /// The command it runs (to tell whether a reload changed it).
    pub(crate) fn spec(&self) -> &CheckCommand {
        &self.spec
    }

    /// When [`Check::poll`] must run next: the next run, or the running one's time limit.
    pub(crate) fn deadline(&self) -> Instant {
        self.next_run
    }

    /// Reaps a finished run, kills one past its time, starts the next when due. Returns the
    /// new health when it changed.
    pub(crate) fn poll(&mut self) -> Option<bool> {
        let now = Instant::now();
        let mut changed = None;
        if let Some(child) = self.running.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.running = None;
                    changed = self.record(passed(status), &status.to_string());
                }
                Ok(None) if now >= self.next_run => {
                    let _ = child::signal_group(child, libc::SIGKILL);
                    // Reaped at once: SIGKILL leaves a zombie the moment it lands.
                    let _ = child.wait();
                    self.running = None;
                    let limit = self.spec.interval.as_millis();
                    changed = self.record(false, &format!("still running after {limit} ms"));
                }
                Ok(None) => return None,
                Err(error) => {
                    self.running = None;
                    changed = self.record(false, &format!("cannot wait for it: {error}"));
                }
            }
        }
        if self.running.is_none() && now >= self.next_run {
            self.next_run = now + self.spec.interval;
            let mut command = child::shell(&self.spec.command);
            command.env("GOOSE_ID", self.id.to_string());
            match command.spawn() {
                Ok(mut child) => {
                    child::log_output(&mut child, self.id, "check", Level::Debug);
                    self.running = Some(child);
                }
                Err(error) => {
                    changed = changed.or(self.record(false, &format!("cannot run sh: {error}")));
                }
            }
        }
        changed
    }

    /// Counts one run; returns the new health when it changed.
    fn record(&mut self, passed: bool, outcome: &str) -> Option<bool> {
        let id = self.id;
        if passed {
            self.failures = 0;
            if !self.healthy {
                log::info!("node {id}: health check passes again: healthy");
                self.healthy = true;
                return Some(true);
            }
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        log::warn!(
            "node {id}: health check failed ({outcome}), {} of {} in a row",
            self.failures,
            self.spec.fails
        );
        if self.healthy && self.failures >= self.spec.fails {
            log::warn!(
                "node {id}: unhealthy: a goose hands off, a voter does not campaign, until \
                 the check passes again"
            );
            self.healthy = false;
            return Some(false);
        }
        None
    }
}

fn passed(status: ExitStatus) -> bool {
    status.success()
}

impl Drop for Check {
    fn drop(&mut self) {
        if let Some(child) = self.running.as_mut() {
            let _ = child::signal_group(child, libc::SIGKILL);
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Check, CheckCommand};
    use goose_core::NodeId;
    use std::time::{Duration, Instant};

    fn run_until(check: &mut Check, within: Duration, want: bool) -> Duration {
        let started = Instant::now();
        loop {
            if check.poll() == Some(want) {
                return started.elapsed();
            }
            assert!(started.elapsed() < within, "health never became {want}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn unhealthy_after_k_failures_in_a_row_healthy_after_one_pass() {
        let folder = std::env::temp_dir().join(format!("goose-check-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let flag = folder.join("healthy");
        let spec = CheckCommand {
            command: format!("test -e {}", flag.display()),
            interval: Duration::from_millis(20),
            fails: 3,
        };
        let mut check = Check::new(NodeId::new(1).unwrap(), spec);
        assert!(check.healthy(), "healthy until it has failed enough");
        // Three failures 20 ms apart: about 40 ms after the first.
        let took = run_until(&mut check, Duration::from_secs(5), false);
        assert!(took >= Duration::from_millis(40), "{took:?}");
        assert!(!check.healthy());
        std::fs::write(&flag, b"").unwrap();
        run_until(&mut check, Duration::from_secs(5), true);
        assert!(check.healthy());
        let _ = std::fs::remove_dir_all(&folder);
    }

    #[test]
    fn a_run_past_the_interval_is_killed_and_fails() {
        let spec = CheckCommand {
            command: "sleep 30".to_owned(),
            interval: Duration::from_millis(20),
            fails: 2,
        };
        let mut check = Check::new(NodeId::new(1).unwrap(), spec);
        let took = run_until(&mut check, Duration::from_secs(5), false);
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
