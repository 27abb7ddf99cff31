//! Safety invariants, checked after every simulated event.
//!
//! - **Election safety**: at most one leader per term (§5.2).
//! - **One goose**: at most one node is goose at any instant of global time (checked by
//!   the flock after every event: goose status only turns on while handling an event, so
//!   an overlap always shows at some event).
//! - **Log matching**: two logs with an entry of the same index and term agree on every
//!   entry up to it (§5.3).
//! - **Committed entries are never lost or changed**, on any node, across restarts;
//!   **leader completeness**: a new leader holds every committed entry (§5.4).
//! - **Term and vote never go back**, across crashes and restarts.
//! - **Only voters campaign**: a node stands for election (pre-vote or vote) only while it
//!   is a voter of its latest membership; a node removed, or being removed, never does.

use std::collections::BTreeMap;
use std::fmt;

use goose_core::{Entry, Instant, LogIndex, NodeId, RaftRole, Term};

use crate::SimNode;

/// A broken invariant, with what the checker saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two nodes were goose at global time `at`.
    TwoGeese {
        /// Global time, µs.
        at: u64,
        /// The geese.
        geese: Vec<u16>,
    },
    /// A node whose removal had committed was goose.
    RemovedGoose {
        /// Global time, µs.
        at: u64,
        /// The node.
        node: u16,
    },
    /// Two leaders in one term.
    TwoLeaders {
        /// The term.
        term: Term,
        /// The leaders.
        leaders: (u16, u16),
    },
    /// A node's term went down.
    TermWentBack {
        /// The node.
        node: u16,
        /// Before and after.
        terms: (Term, Term),
    },
    /// A node's vote in a term changed.
    VoteChanged {
        /// The node.
        node: u16,
        /// The term.
        term: Term,
    },
    /// A node's log disagrees with a committed entry.
    CommittedEntryChanged {
        /// The node.
        node: u16,
        /// The index.
        index: LogIndex,
    },
    /// A new leader lacks a committed entry.
    LeaderIncomplete {
        /// The leader.
        node: u16,
        /// The committed index it lacks.
        index: LogIndex,
    },
    /// A node campaigned while not a voter of its latest membership.
    CampaignOutsideMembership {
        /// The node.
        node: u16,
    },
    /// Two logs share an entry id but differ before it.
    LogMismatch {
        /// The nodes.
        nodes: (u16, u16),
        /// Where they differ.
        index: LogIndex,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant violated: {self:?}")
    }
}

/// What the checker remembers between events.
pub struct Checker {
    leaders: BTreeMap<Term, u16>,
    /// Every committed entry by index (1-based: `committed[i]` is index `i + 1`); entries
    /// first seen inside a snapshot are recorded by term only.
    committed: Vec<(Term, Option<Entry>)>,
    terms: Vec<(Term, Option<NodeId>)>,
    logs: Vec<Vec<(LogIndex, Entry)>>,
}

impl Checker {
    /// A checker for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            leaders: BTreeMap::new(),
            committed: Vec::new(),
            terms: vec![(Term(0), None); nodes],
            logs: vec![Vec::new(); nodes],
        }
    }

    /// Entries known committed, in index order.
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }

    /// The leader recorded for each term.
    pub fn leaders(&self) -> &BTreeMap<Term, u16> {
        &self.leaders
    }

    /// A node (re)started: its persisted term and vote must be what it had.
    pub fn on_start<const L: usize>(&mut self, n: u16, node: &SimNode<L>) {
        if let Err(violation) = self.check_term_and_vote(n, node) {
            panic!("{violation}");
        }
    }

    /// Checks everything about node `n` after it handled an event at local time `now`.
    pub fn on_event<const L: usize>(
        &mut self,
        n: u16,
        node: &SimNode<L>,
        now: Instant,
    ) -> Result<(), Violation> {
        let _ = now;
        self.check_term_and_vote(n, node)?;
        let raft = node.status(now).raft;
        if matches!(raft, RaftRole::PreCandidate | RaftRole::Candidate)
            && !node.members().iter().any(|m| m.id.get() == n && m.voter)
        {
            return Err(Violation::CampaignOutsideMembership { node: n });
        }
        if raft == RaftRole::Leader {
            let term = node.term();
            match self.leaders.get(&term) {
                Some(other) if *other != n => {
                    return Err(Violation::TwoLeaders {
                        term,
                        leaders: (*other, n),
                    });
                }
                Some(_) => {}
                None => {
                    self.leaders.insert(term, n);
                    self.check_leader_complete(n, node)?;
                }
            }
        }
        self.record_log(n, node);
        self.check_committed(n, node)?;
        self.check_log_matching(n)
    }

    fn check_term_and_vote<const L: usize>(
        &mut self,
        n: u16,
        node: &SimNode<L>,
    ) -> Result<(), Violation> {
        let slot = &mut self.terms[usize::from(n) - 1];
        let (term, vote) = (node.term(), node.voted_for());
        if term < slot.0 {
            return Err(Violation::TermWentBack {
                node: n,
                terms: (slot.0, term),
            });
        }
        if term == slot.0 && slot.1.is_some() && vote != slot.1 {
            return Err(Violation::VoteChanged { node: n, term });
        }
        *slot = (term, vote);
        Ok(())
    }

    fn record_log<const L: usize>(&mut self, n: u16, node: &SimNode<L>) {
        let first = node.snapshot().index.0 + 1;
        let log = &mut self.logs[usize::from(n) - 1];
        log.clear();
        log.extend(
            node.entries()
                .iter()
                .enumerate()
                .map(|(i, e)| (LogIndex(first + i as u64), *e)),
        );
    }

    fn check_committed<const L: usize>(
        &mut self,
        n: u16,
        node: &SimNode<L>,
    ) -> Result<(), Violation> {
        let snapshot = node.snapshot();
        let first = snapshot.index.0 + 1;
        let commit = node.commit().0;
        // The snapshot's last entry is committed: its term must match the record.
        if snapshot.index.0 > 0 {
            self.agree(n, snapshot.index, snapshot.term, None)?;
        }
        for index in first..=commit {
            let entry = node.entries()[(index - first) as usize];
            self.agree(n, LogIndex(index), entry.term, Some(entry))?;
        }
        Ok(())
    }

    fn agree(
        &mut self,
        n: u16,
        index: LogIndex,
        term: Term,
        entry: Option<Entry>,
    ) -> Result<(), Violation> {
        let position = (index.0 - 1) as usize;
        if position < self.committed.len() {
            let (known_term, known_entry) = &mut self.committed[position];
            if *known_term == Term(0) {
                // A placeholder for an index first seen inside a snapshot.
                *known_term = term;
            }
            let entry_differs = matches!((&*known_entry, entry), (Some(a), Some(b)) if *a != b);
            if *known_term != term || entry_differs {
                return Err(Violation::CommittedEntryChanged { node: n, index });
            }
            if known_entry.is_none() {
                *known_entry = entry;
            }
            return Ok(());
        }
        if position > self.committed.len() {
            // Known committed only through a snapshot whose prefix we never saw: record
            // placeholders by term where we can. Without them, later checks start here.
            while self.committed.len() < position {
                self.committed.push((Term(0), None));
            }
        }
        self.committed.push((term, entry));
        Ok(())
    }

    fn check_leader_complete<const L: usize>(
        &self,
        n: u16,
        node: &SimNode<L>,
    ) -> Result<(), Violation> {
        let snapshot = node.snapshot();
        let last = snapshot.index.0 + node.entries().len() as u64;
        for (position, (term, _)) in self.committed.iter().enumerate() {
            let index = position as u64 + 1;
            if *term == Term(0) {
                continue;
            }
            let held = if index < snapshot.index.0 {
                true
            } else if index == snapshot.index.0 {
                snapshot.term == *term
            } else if index <= last {
                node.entries()[(index - snapshot.index.0 - 1) as usize].term == *term
            } else {
                false
            };
            if !held {
                return Err(Violation::LeaderIncomplete {
                    node: n,
                    index: LogIndex(index),
                });
            }
        }
        Ok(())
    }

    fn check_log_matching(&self, n: u16) -> Result<(), Violation> {
        let mine = &self.logs[usize::from(n) - 1];
        for (other_index, theirs) in self.logs.iter().enumerate() {
            let other = other_index as u16 + 1;
            if other == n || theirs.is_empty() || mine.is_empty() {
                continue;
            }
            // Walk the overlap from its end: once an (index, term) pair is shared, every
            // earlier overlapping entry must be equal.
            let start = mine[0].0.max(theirs[0].0);
            let end = mine[mine.len() - 1].0.min(theirs[theirs.len() - 1].0);
            let at = |log: &Vec<(LogIndex, Entry)>, i: u64| log[(i - log[0].0 .0) as usize].1;
            let mut shared = false;
            let mut i = end.0;
            while i >= start.0 && i > 0 {
                let (a, b) = (at(mine, i), at(theirs, i));
                shared |= a.term == b.term;
                if shared && a != b {
                    return Err(Violation::LogMismatch {
                        nodes: (n, other),
                        index: LogIndex(i),
                    });
                }
                i -= 1;
            }
        }
        Ok(())
    }
}
