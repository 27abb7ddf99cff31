//! A node's configuration, checked once by [`Config::validate`].

use core::fmt;

use crate::limits::LOYALTY_WINDOW_MAX;
use crate::time::Duration;
use crate::types::NodeId;

/// One million: `max_drift_ppm` is in parts per million.
const PPM: u64 = 1_000_000;

/// How a node is timed. Nodes of one flock may differ (timing is changed one restart at a
/// time): every leader frame carries the leader's `election_timeout_min`, and followers stay
/// loyal for the longer of theirs and the leader's (see [`crate::raft`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub id: NodeId,
    /// How often a leader sends heartbeats. Must be well below the lease so that one lost
    /// heartbeat does not cost the lease.
    pub heartbeat_interval: Duration,
    /// The lower end of the randomized election timeout, and the leader-stickiness window.
    pub election_timeout_min: Duration,
    /// The upper end of the randomized election timeout.
    pub election_timeout_max: Duration,
    /// The bound on clock drift between any two nodes, in parts per million: over any real
    /// interval in which one node's clock advances by `d`, every other node's advances by at
    /// least `d × (1 − max_drift)`. Crystal oscillators drift ~50 ppm; QEMU's SysTick ~1000.
    pub max_drift_ppm: u32,
    /// Time subtracted from the lease for what happens between reading the clock and a
    /// reply leaving the process (scheduling, the probe's own handling).
    pub lease_margin: Duration,
    /// How many voters a leader keeps: it promotes caught-up learners until there are this
    /// many; beyond it, added nodes stay learners.
    pub voters_target: u16,
}

/// Why a [`Config`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `election_timeout_min` is zero, above `election_timeout_max`, or above
    /// [`LOYALTY_WINDOW_MAX`].
    ElectionTimeoutRange,
    /// `heartbeat_interval` is zero or not below the lease: the goose would lose its lease
    /// between two heartbeats.
    HeartbeatTooSlow,
    /// `max_drift_ppm` is 10% or more: no useful lease is left.
    DriftTooLarge,
    /// The lease is zero after drift and margin.
    NoLease,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ElectionTimeoutRange => {
                "election timeout must be min-max with 0 < min <= max and min at most 60 s"
            }
            Self::HeartbeatTooSlow => "heartbeat interval must be above 0 and below the lease",
            Self::DriftTooLarge => "max drift must be below 10%",
            Self::NoLease => "no lease left after drift and margin",
        })
    }
}

impl core::error::Error for ConfigError {}

impl Config {
    /// The contract's defaults: heartbeat 50 ms, election timeout 150–300 ms (the Raft
    /// paper's range), drift 1%, lease margin 10% of the minimum election timeout.
    pub const fn new(id: NodeId) -> Self {
        Self::with_timing(
            id,
            Duration::from_millis(50),
            Duration::from_millis(150),
            Duration::from_millis(300),
        )
    }

    /// Custom timing, with the default drift (1%) and margin (10% of `election_timeout_min`).
    pub const fn with_timing(
        id: NodeId,
        heartbeat_interval: Duration,
        election_timeout_min: Duration,
        election_timeout_max: Duration,
    ) -> Self {
        Self {
            id,
            heartbeat_interval,
            election_timeout_min,
            election_timeout_max,
            max_drift_ppm: 10_000,
            lease_margin: Duration::from_micros(election_timeout_min.micros() / 10),
            voters_target: 5,
        }
    }

    /// Checks the relations the lease depends on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min = self.election_timeout_min;
        if min == Duration::ZERO || min > self.election_timeout_max || min > LOYALTY_WINDOW_MAX {
            return Err(ConfigError::ElectionTimeoutRange);
        }
        if u64::from(self.max_drift_ppm) >= PPM / 10 {
            return Err(ConfigError::DriftTooLarge);
        }
        let lease = self.lease_duration();
        if lease == Duration::ZERO {
            return Err(ConfigError::NoLease);
        }
        if self.heartbeat_interval == Duration::ZERO || self.heartbeat_interval >= lease {
            return Err(ConfigError::HeartbeatTooSlow);
        }
        Ok(())
    }

    /// How long a goose's lease lasts from the send time of a heartbeat round that a
    /// majority acknowledged: `election_timeout_min × (1 − max_drift) − lease_margin`.
    /// Why this is safe is written in [`crate::raft`]'s lease section.
    pub const fn lease_duration(&self) -> Duration {
        let min = self.election_timeout_min.micros();
        let drift = min.saturating_mul(self.max_drift_ppm as u64).div_ceil(PPM);
        Duration::from_micros(
            min.saturating_sub(drift)
                .saturating_sub(self.lease_margin.micros()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, ConfigError};
    use crate::time::Duration;
    use crate::types::NodeId;

    fn id() -> NodeId {
        NodeId::new(1).unwrap()
    }

    #[test]
    fn default_lease_is_below_the_minimum_election_timeout_after_drift() {
        let config = Config::new(id());
        assert_eq!(config.validate(), Ok(()));
        // 150 ms × (1 − 1%) − 15 ms = 133.5 ms.
        assert_eq!(config.lease_duration(), Duration::from_micros(133_500));
    }

    #[test]
    fn refuses_heartbeat_at_or_above_the_lease() {
        let mut config = Config::new(id());
        config.heartbeat_interval = config.lease_duration();
        assert_eq!(config.validate(), Err(ConfigError::HeartbeatTooSlow));
        config.heartbeat_interval = Duration::ZERO;
        assert_eq!(config.validate(), Err(ConfigError::HeartbeatTooSlow));
    }

    #[test]
    fn refuses_bad_ranges_and_drift() {
        let mut config = Config::new(id());
        config.election_timeout_max = Duration::from_millis(100);
        assert_eq!(config.validate(), Err(ConfigError::ElectionTimeoutRange));
        let mut config = Config::new(id());
        config.max_drift_ppm = 100_000;
        assert_eq!(config.validate(), Err(ConfigError::DriftTooLarge));
        let mut config = Config::new(id());
        config.lease_margin = Duration::from_millis(150);
        assert_eq!(config.validate(), Err(ConfigError::NoLease));
    }
}
