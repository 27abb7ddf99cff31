//! Safety invariants, checked after every input a simulated node handles: the one checker
//! of the swarm, the scenario tests and the fuzz target.
//!
//! - **Election safety**: at most one leader per term (§5.2).
//! - **One goose**: at most one node is goose at any instant of global time (checked by
//!   the flock after every input: goose status only turns on while handling one, so an
//!   overlap always shows at some input); a goose is a leader; a node whose removal
//!   committed is not goose until its own latest membership names it again.
//! - **Log matching**: two logs with an entry of the same index and term agree on every
//!   entry up to it (§5.3).
//! - **Committed entries are never lost or changed**, on any node, across restarts
//!   (compared by index with the first sighting), and no commit index passes its log.
//! - **Leader completeness**: a new leader holds every entry committed in an earlier term
//!   (§5.4). An entry is charged to the lowest term of a node seen holding it committed,
//!   an upper bound on the term it was committed in: a delayed vote can elect a leader of
//!   an earlier term after a later term has committed more, which it need not hold.
//! - **Term and vote never go back**, across crashes and restarts; **the log term never
//!   goes back** (it ranks the node's log in elections: lowering it would let a shorter log
//!   outrank one holding a committed entry) and never exceeds the term.
//! - **Only voters campaign**: a node stands for election (pre-vote or vote) only while it
//!   is a voter of its latest membership; a node removed, or being removed, never does.
//! - **A failed node reports only what it saved**: once a save failed (fail-stop), its
//!   term, vote and log term obey the rules above and it is never goose again. Its commit
//!   index is not compared with the committed entries: its log may hold entries it never
//!   saved, and a lone voter's "commit" of one it could not save is no commit at all.
//! - **A node restarts from what it saved** (checked by the flock at every start).

use std::collections::BTreeMap;
use std::fmt;

use goose_core::{Entry, Instant, LogIndex, Node, NodeId, RaftRole, Storage, Term};

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
    /// A node was goose in another role than leader.
    GooseNotLeader {
        /// The node.
        node: u16,
        /// Its role.
        role: RaftRole,
    },
    /// A node whose save failed was goose.
    GooseAfterFailure {
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
    /// A node's log term went down.
    LogTermWentBack {
        /// The node.
        node: u16,
        /// Before and after.
        log_terms: (Term, Term),
    },
    /// A node's log term exceeded its term.
    LogTermAboveTerm {
        /// The node.
        node: u16,
        /// Its log term and term.
        terms: (Term, Term),
    },
    /// A node's log disagrees with a committed entry.
    CommittedEntryChanged {
        /// The node.
        node: u16,
        /// The index.
        index: LogIndex,
    },
    /// A node's commit index is beyond its last entry.
    CommitBeyondLog {
        /// The node.
        node: u16,
        /// Its commit index.
        commit: LogIndex,
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
    /// A node refused the state it had saved itself.
    RestartRefused {
        /// The node.
        node: u16,
        /// Why.
        error: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invariant violated: {self:?}")
    }
}

/// What the checker knows of one committed index.
#[derive(Clone, Copy, Debug)]
struct Committed {
    /// Its term; 0 for an index known committed only as part of a snapshot whose last
    /// entry is later (a placeholder: the term is recorded at its first sighting).
    term: Term,
    /// The entry, once seen in a log (not only as a snapshot's last index).
    entry: Option<Entry>,
    /// The lowest current term of a node seen holding it committed: it was committed in
    /// this term or an earlier one.
    by_term: Term,
}

/// A node's durable state as last seen: what a restart must not take back.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    term: Term,
    vote: Option<NodeId>,
    log_term: Term,
}

/// What the checker remembers between inputs.
pub struct Checker {
    /// The leader seen in each term.
    leaders: BTreeMap<Term, u16>,
    /// Every index seen committed (`committed[i]` is index `i + 1`).
    committed: Vec<Committed>,
    /// The term, vote and log term last seen on each node, kept across its restarts.
    seen: Vec<Seen>,
    /// Each node's log as last seen, for log matching.
    logs: Vec<Vec<(LogIndex, Entry)>>,
}

impl Checker {
    /// A checker for `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Self {
            leaders: BTreeMap::new(),
            committed: Vec::new(),
            seen: vec![Seen::default(); nodes],
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

    /// A node (re)started: its persisted term, vote and log term must be what it had.
    ///
    /// # Errors
    ///
    /// The broken invariant.
    pub fn on_start<S: Storage, const M: usize, const L: usize>(
        &mut self,
        n: u16,
        node: &Node<S, M, L>,
    ) -> Result<(), Violation> {
        self.check_durable(n, node)
    }

    /// Checks everything about node `n` after it handled an input at local time `now`.
    ///
    /// # Errors
    ///
    /// The broken invariant.
    pub fn on_event<S: Storage, const M: usize, const L: usize>(
        &mut self,
        n: u16,
        node: &Node<S, M, L>,
        now: Instant,
    ) -> Result<(), Violation> {
        self.check_durable(n, node)?;
        let status = node.status(now);
        if status.failed {
            if status.goose {
                return Err(Violation::GooseAfterFailure { node: n });
            }
            // Its log holds entries from leaders all the same: log matching still holds.
            self.record_log(n, node);
            return self.check_log_matching(n);
        }
        if status.goose && status.raft != RaftRole::Leader {
            return Err(Violation::GooseNotLeader {
                node: n,
                role: status.raft,
            });
        }
        if matches!(status.raft, RaftRole::PreCandidate | RaftRole::Candidate)
            && !node.members().iter().any(|m| m.id.get() == n && m.voter)
        {
            return Err(Violation::CampaignOutsideMembership { node: n });
        }
        if status.raft == RaftRole::Leader {
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

    fn check_durable<S: Storage, const M: usize, const L: usize>(
        &mut self,
        n: u16,
        node: &Node<S, M, L>,
    ) -> Result<(), Violation> {
        let seen = &mut self.seen[usize::from(n) - 1];
        let (term, vote, log_term) = (node.term(), node.voted_for(), node.log_term());
        if term < seen.term {
            return Err(Violation::TermWentBack {
                node: n,
                terms: (seen.term, term),
            });
        }
        if term == seen.term && seen.vote.is_some() && vote != seen.vote {
            return Err(Violation::VoteChanged { node: n, term });
        }
        if log_term < seen.log_term {
            return Err(Violation::LogTermWentBack {
                node: n,
                log_terms: (seen.log_term, log_term),
            });
        }
        if log_term > term {
            return Err(Violation::LogTermAboveTerm {
                node: n,
                terms: (log_term, term),
            });
        }
        *seen = Seen {
            term,
            vote,
            log_term,
        };
        Ok(())
    }

    fn record_log<S: Storage, const M: usize, const L: usize>(
        &mut self,
        n: u16,
        node: &Node<S, M, L>,
    ) {
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

    fn check_committed<S: Storage, const M: usize, const L: usize>(
        &mut self,
        n: u16,
        node: &Node<S, M, L>,
    ) -> Result<(), Violation> {
        let snapshot = node.snapshot();
        let first = snapshot.index.0 + 1;
        let (commit, term) = (node.commit(), node.term());
        // The snapshot's last entry is committed: its term must match the record.
        if snapshot.index.0 > 0 {
            self.agree(n, snapshot.index, (snapshot.term, None), term)?;
        }
        for index in first..=commit.0 {
            let Some(entry) = node.entries().get((index - first) as usize) else {
                return Err(Violation::CommitBeyondLog { node: n, commit });
            };
            self.agree(n, LogIndex(index), (entry.term, Some(*entry)), term)?;
        }
        Ok(())
    }

    /// Records that node `n`, in term `node_term`, holds `index` committed with `term`
    /// (and `entry`, when in its log), or finds that it differs from the record.
    fn agree(
        &mut self,
        n: u16,
        index: LogIndex,
        (term, entry): (Term, Option<Entry>),
        node_term: Term,
    ) -> Result<(), Violation> {
        let position = (index.0 - 1) as usize;
        if position >= self.committed.len() {
            // Known committed only through a snapshot whose prefix was never seen: hold
            // placeholders, filled in by their first sighting.
            let placeholder = Committed {
                term: Term(0),
                entry: None,
                by_term: Term(u64::MAX),
            };
            self.committed.resize(position, placeholder);
            self.committed.push(Committed {
                term,
                entry,
                by_term: node_term,
            });
            return Ok(());
        }
        let known = &mut self.committed[position];
        if known.term == Term(0) {
            known.term = term;
        }
        let entry_differs = matches!((known.entry, entry), (Some(a), Some(b)) if a != b);
        if known.term != term || entry_differs {
            return Err(Violation::CommittedEntryChanged { node: n, index });
        }
        known.entry = known.entry.or(entry);
        known.by_term = known.by_term.min(node_term);
        Ok(())
    }

    fn check_leader_complete<S: Storage, const M: usize, const L: usize>(
        &self,
        n: u16,
        node: &Node<S, M, L>,
    ) -> Result<(), Violation> {
        let snapshot = node.snapshot();
        let leader_term = node.term();
        for (position, known) in self.committed.iter().enumerate() {
            let index = position as u64 + 1;
            if known.term == Term(0) || known.by_term >= leader_term {
                // Unknown yet, or maybe committed in this term or a later one.
                continue;
            }
            let held = if index < snapshot.index.0 {
                // Folded into the snapshot: only its last entry's term is kept.
                true
            } else if index == snapshot.index.0 {
                snapshot.term == known.term
            } else {
                let position = (index - snapshot.index.0 - 1) as usize;
                node.entries()
                    .get(position)
                    .is_some_and(|e| e.term == known.term)
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
