//! Warnings against the easy mistakes that leave a flock quietly broken: two nodes with one
//! id, a member without the flock's key or with another key. Each kind is logged at most
//! once every [`WARNING_INTERVAL`], with how often it happened since, and names the fix.
//! (The join client, `join`, warns the same way about a `--join` nobody answers.)

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use goose_core::service::ServiceStats;
use goose_core::NodeId;

/// The shortest time between two warnings of one kind: often enough to be seen in a log,
/// rarely enough not to bury it.
pub(super) const WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of warning: when it was last logged, and how often it was due since.
#[derive(Debug, Default)]
pub(super) struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// Whether to log now; if so, how many were left unlogged since the last one.
    pub(super) fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + WARNING_INTERVAL) {
            self.suppressed = self.suppressed.saturating_add(1);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `" (and 12 more since)"`, or nothing.
pub(super) fn more(suppressed: u64) -> String {
    if suppressed == 0 {
        String::new()
    } else {
        format!(
            " (and {suppressed} more in the last {} s)",
            WARNING_INTERVAL.as_secs()
        )
    }
}

/// The node's rails: see the module docs.
#[derive(Debug, Default)]
pub(super) struct Rails {
    duplicate: Throttle,
    told_duplicate: Throttle,
    unsealed: Throttle,
    bad_mac: Throttle,
    undecodable: Throttle,
}

impl Rails {
    /// Frames from `source` carry id `other`, which this node has (`other == own`) or which
    /// `elsewhere` sent from moments ago.
    pub(super) fn duplicate_id(
        &mut self,
        own: NodeId,
        other: NodeId,
        source: SocketAddr,
        elsewhere: Option<SocketAddr>,
    ) {
        let Some(suppressed) = self.duplicate.due() else {
            return;
        };
        let more = more(suppressed);
        if other == own {
            log::error!(
                "node {own}: peer frames from {source} carry this node's own id {own}: two \
                 nodes have id {own}; give each node its own --id (dropped, counted in \
                 drop_duplicate_id){more}"
            );
            return;
        }
        let elsewhere = elsewhere.map_or_else(|| "another address".to_owned(), |a| a.to_string());
        log::error!(
            "node {own}: peer frames for node {other} come from {source} and from {elsewhere}: \
             two nodes have id {other}; give each node its own --id (the second one's frames \
             are dropped, counted in drop_duplicate_id){more}"
        );
    }

    /// `source` answered `err duplicate-id`: it hears this node's id from another address
    /// too (`known_at`: where its membership has the id).
    pub(super) fn told_duplicate(&mut self, own: NodeId, source: SocketAddr, known_at: &str) {
        let Some(suppressed) = self.told_duplicate.due() else {
            return;
        };
        log::error!(
            "node {own}: {source} says another node also uses id {own} (its flock knows id \
             {own} at {known_at}): give this node its own --id, or stop the other one; until \
             then the flock drops this node's frames{}",
            more(suppressed)
        );
    }

    /// After a peer frame from `source` was dropped: warns if the cluster key's checks, or
    /// decoding, dropped it (`before` and `after` are the service's counters around it).
    pub(super) fn frame_dropped(
        &mut self,
        own: NodeId,
        source: SocketAddr,
        claimed: Option<u16>,
        before: &ServiceStats,
        after: &ServiceStats,
    ) {
        let who = match claimed {
            Some(id) => format!("{source} (claiming node {id})"),
            None => source.to_string(),
        };
        if after.drop_unsealed > before.drop_unsealed {
            if let Some(suppressed) = self.unsealed.due() {
                log::warn!(
                    "node {own}: peer frames from {who} carry no authentication trailer \
                     (drop_unsealed): that node runs without the flock's key; give it the same \
                     --cluster-key-file as this one{}",
                    more(suppressed)
                );
            }
        }
        if after.drop_bad_mac > before.drop_bad_mac {
            if let Some(suppressed) = self.bad_mac.due() {
                log::warn!(
                    "node {own}: peer frames from {who} fail the cluster key's check \
                     (drop_bad_mac): that node has another key, or they are forged; give every \
                     node the same --cluster-key-file{}",
                    more(suppressed)
                );
            }
        }
    }

    /// A peer frame from `source` did not decode on a node without a key: most likely a
    /// member that has a key (its frames carry a trailer this node cannot read).
    pub(super) fn undecodable(&mut self, own: NodeId, source: SocketAddr, claimed: Option<u16>) {
        let Some(suppressed) = self.undecodable.due() else {
            return;
        };
        let who = match claimed {
            Some(id) => format!("{source} (claiming node {id})"),
            None => source.to_string(),
        };
        log::warn!(
            "node {own}: peer frames from {who} do not decode (drop_undecodable): if that node \
             has --cluster-key-file, give this one the same key{}",
            more(suppressed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{more, Throttle};

    #[test]
    fn a_throttle_lets_one_through_per_interval_and_counts_the_rest() {
        let mut throttle = Throttle::default();
        assert_eq!(throttle.due(), Some(0));
        assert_eq!(throttle.due(), None);
        assert_eq!(throttle.due(), None);
        assert_eq!(throttle.suppressed, 2);
        assert_eq!(more(2), " (and 2 more in the last 10 s)");
        assert_eq!(more(0), "");
    }
}
