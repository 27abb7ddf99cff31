//! The soak's history checker: pure functions from a [`History`] to a [`Verdict`].
//!
//! What it proves, from probes alone (timeouts prove nothing and are skipped):
//!
//! 1. **One goose per term**: no two different nodes answer `goose` with the same term.
//! 2. **The goose is linearizable**: if node A's `goose term=Ta` reply was *received* before
//!    a probe to another node B was *sent*, B must not answer `goose` with a term below Ta.
//!    (The lease guarantees it: B's lease of its older term lapsed before A could be goose,
//!    and B decided on the later probe after A had answered.) Probes that overlap in time
//!    are concurrent and may be ordered either way.
//! 3. **No term goes back**: for two probes to one node that do not overlap (the first
//!    reply received before the second probe was sent), the second term is at least the
//!    first, across restarts on the same data dir.
//! 4. **A goose after every heal**: after each [`EventKind::AllHealed`] at `t`, some probe
//!    sent at or after `t` is answered `goose` by `t + bound`.
//!
//! And from the contract: every answer carries the id of the node it was sent to, every
//! reply is well-formed, and no two answers of one term name different geese in `goose=`
//! (Raft's election safety, read from ducks too: a duck names only the leader of its own
//! term).
//!
//! All sweeps are O(n log n) in the number of probes. Nothing here panics on any history.

use std::collections::BTreeMap;
use std::fmt;

use super::history::{show, Answer, EventKind, History, Micros, Outcome, ProbeRecord};

/// Violations kept per rule (every one is counted); the first ones tell the story.
pub const VIOLATIONS_KEPT_PER_RULE_MAX: usize = 20;

/// The rules, as counted in [`Verdict::counts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Rule 1.
    TwoGeeseInOneTerm,
    /// Rule 2.
    StaleGoose,
    /// Rule 3.
    TermWentBack,
    /// Rule 4.
    NoGooseAfterHeal,
    /// Two answers of one term name different geese in `goose=`.
    TwoLeadersInOneTerm,
    /// An answer's `id=` is not the node probed.
    WrongId,
    /// A reply broke the contract's format.
    Malformed,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Self; 7] = [
        Self::TwoGeeseInOneTerm,
        Self::StaleGoose,
        Self::TermWentBack,
        Self::NoGooseAfterHeal,
        Self::TwoLeadersInOneTerm,
        Self::WrongId,
        Self::Malformed,
    ];
}

/// One broken promise, with the records that prove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Two nodes answered `goose` in one term.
    TwoGeeseInOneTerm {
        /// The term.
        term: u64,
        /// One goose answer.
        first: ProbeRecord,
        /// Another node's goose answer of the same term.
        second: ProbeRecord,
    },
    /// A goose answer from a probe sent after a higher-term goose answer of another node
    /// had been received.
    StaleGoose {
        /// The higher-term goose answer, received first.
        newer: ProbeRecord,
        /// The lower-term goose answer to a probe sent afterwards.
        older: ProbeRecord,
    },
    /// A node answered a lower term to a probe sent after it had answered a higher one.
    TermWentBack {
        /// The earlier answer (higher term).
        before: ProbeRecord,
        /// The later answer (lower term).
        after: ProbeRecord,
    },
    /// No goose within the bound after a heal.
    NoGooseAfterHeal {
        /// When everything was healed.
        healed: Micros,
        /// The bound.
        bound: Micros,
        /// The first goose answer to a probe sent after the heal, if any.
        first_goose: Option<ProbeRecord>,
    },
    /// Two answers in one term name different geese.
    TwoLeadersInOneTerm {
        /// The term.
        term: u64,
        /// One answer.
        first: ProbeRecord,
        /// One naming another goose.
        second: ProbeRecord,
    },
    /// An answer carried another node's id.
    WrongId {
        /// The probe.
        probe: ProbeRecord,
    },
    /// A malformed reply.
    Malformed {
        /// The probe.
        probe: ProbeRecord,
    },
}

impl Violation {
    /// Its rule.
    pub fn rule(&self) -> Rule {
        match self {
            Self::TwoGeeseInOneTerm { .. } => Rule::TwoGeeseInOneTerm,
            Self::StaleGoose { .. } => Rule::StaleGoose,
            Self::TermWentBack { .. } => Rule::TermWentBack,
            Self::NoGooseAfterHeal { .. } => Rule::NoGooseAfterHeal,
            Self::TwoLeadersInOneTerm { .. } => Rule::TwoLeadersInOneTerm,
            Self::WrongId { .. } => Rule::WrongId,
            Self::Malformed { .. } => Rule::Malformed,
        }
    }

    /// The nodes the evidence is about (for a history excerpt).
    pub fn nodes(&self) -> Vec<u16> {
        match self {
            Self::TwoGeeseInOneTerm { first, second, .. }
            | Self::TwoLeadersInOneTerm { first, second, .. }
            | Self::StaleGoose {
                newer: first,
                older: second,
            }
            | Self::TermWentBack {
                before: first,
                after: second,
            } => vec![first.node, second.node],
            Self::NoGooseAfterHeal { .. } => Vec::new(),
            Self::WrongId { probe } | Self::Malformed { probe } => vec![probe.node],
        }
    }

    /// The time span the evidence covers (for a history excerpt).
    pub fn span(&self) -> (Micros, Micros) {
        let ends = |record: &ProbeRecord| match record.outcome {
            Outcome::Reply { received, .. } | Outcome::Malformed { received, .. } => received,
            Outcome::Timeout => record.sent,
        };
        match self {
            Self::TwoGeeseInOneTerm { first, second, .. }
            | Self::TwoLeadersInOneTerm { first, second, .. } => {
                (first.sent.min(second.sent), ends(first).max(ends(second)))
            }
            Self::StaleGoose { newer, older } => (newer.sent, ends(older)),
            Self::TermWentBack { before, after } => (before.sent, ends(after)),
            Self::NoGooseAfterHeal { healed, bound, .. } => {
                (*healed, healed.saturating_add(*bound))
            }
            Self::WrongId { probe } | Self::Malformed { probe } => (probe.sent, ends(probe)),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TwoGeeseInOneTerm {
                term,
                first,
                second,
            } => write!(f, "two geese in term {term}:\n  {first}\n  {second}"),
            Self::StaleGoose { newer, older } => write!(
                f,
                "stale goose: a lower-term goose answered a probe sent after a higher-term \
                 goose had answered:\n  {newer}\n  {older}"
            ),
            Self::TermWentBack { before, after } => {
                write!(f, "term went back:\n  {before}\n  {after}")
            }
            Self::NoGooseAfterHeal {
                healed,
                bound,
                first_goose,
            } => {
                write!(
                    f,
                    "no goose within {} ms of the heal at {}",
                    bound / 1000,
                    show(*healed)
                )?;
                match first_goose {
                    Some(record) => write!(f, "; first goose: {record}"),
                    None => write!(f, "; none at all afterwards"),
                }
            }
            Self::TwoLeadersInOneTerm {
                term,
                first,
                second,
            } => write!(
                f,
                "two leaders named in term {term}:\n  {first}\n  {second}"
            ),
            Self::WrongId { probe } => write!(f, "answer with another node's id: {probe}"),
            Self::Malformed { probe } => write!(f, "malformed reply: {probe}"),
        }
    }
}

/// How long a goose took to appear after one heal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealGap {
    /// When everything was healed.
    pub healed: Micros,
    /// From the heal to the arrival of the first goose answer to a probe sent after it;
    /// `None` if there was none.
    pub gap: Option<Micros>,
}

/// The checker's findings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The first violations of each rule (up to [`VIOLATIONS_KEPT_PER_RULE_MAX`] each).
    pub violations: Vec<Violation>,
    /// Every violation, counted by rule.
    pub counts: BTreeMap<Rule, u64>,
    /// One gap per heal, in heal order.
    pub heal_gaps: Vec<HealGap>,
    /// Probes answered well-formed.
    pub answers: u64,
    /// Probes answered `goose`.
    pub goose_answers: u64,
    /// Probes that timed out.
    pub timeouts: u64,
}

impl Verdict {
    /// Violations found, all rules.
    pub fn violations_count(&self) -> u64 {
        self.counts.values().sum()
    }

    /// The longest heal gap (`None` if there were no heals); a heal without a goose counts
    /// as `Micros::MAX`.
    pub fn heal_gap_max(&self) -> Option<Micros> {
        self.heal_gaps
            .iter()
            .map(|h| h.gap.unwrap_or(Micros::MAX))
            .max()
    }

    fn add(&mut self, violation: Violation) {
        let rule = violation.rule();
        let count = self.counts.entry(rule).or_insert(0);
        *count += 1;
        if *count <= VIOLATIONS_KEPT_PER_RULE_MAX as u64 {
            self.violations.push(violation);
        }
    }
}

/// One well-formed answer, flattened for the sweeps.
#[derive(Clone, Copy, Debug)]
struct Row {
    index: usize,
    node: u16,
    sent: Micros,
    received: Micros,
    answer: Answer,
}

/// Checks `history` against every rule; `bound` is rule 4's liveness bound.
pub fn check(history: &History, bound: Micros) -> Verdict {
    let mut verdict = Verdict::default();
    let mut rows = Vec::with_capacity(history.probes.len());
    for (index, probe) in history.probes.iter().enumerate() {
        match &probe.outcome {
            Outcome::Reply { received, answer } => {
                verdict.answers += 1;
                verdict.goose_answers += u64::from(answer.goose);
                if answer.id != probe.node || (answer.goose && answer.leader != Some(answer.id)) {
                    verdict.add(Violation::WrongId {
                        probe: probe.clone(),
                    });
                }
                rows.push(Row {
                    index,
                    node: probe.node,
                    sent: probe.sent,
                    received: *received,
                    answer: *answer,
                });
            }
            Outcome::Malformed { .. } => verdict.add(Violation::Malformed {
                probe: probe.clone(),
            }),
            Outcome::Timeout => verdict.timeouts += 1,
        }
    }
    // Sorting by (time, index) makes every sweep deterministic.
    rows.sort_by_key(|row| (row.sent, row.index));
    check_one_per_term(history, &rows, &mut verdict);
    check_stale_goose(history, &rows, &mut verdict);
    check_term_monotonic(history, &rows, &mut verdict);
    check_liveness(history, &rows, bound, &mut verdict);
    verdict
}

/// Rule 1 and the `goose=` agreement, in send order.
fn check_one_per_term(history: &History, rows: &[Row], verdict: &mut Verdict) {
    let mut goose_of_term: BTreeMap<u64, &Row> = BTreeMap::new();
    let mut leader_of_term: BTreeMap<u64, &Row> = BTreeMap::new();
    for row in rows {
        let term = row.answer.term;
        if row.answer.goose {
            match goose_of_term.get(&term) {
                Some(first) if first.answer.id != row.answer.id => {
                    verdict.add(Violation::TwoGeeseInOneTerm {
                        term,
                        first: history.probes[first.index].clone(),
                        second: history.probes[row.index].clone(),
                    });
                }
                Some(_) => {}
                None => {
                    goose_of_term.insert(term, row);
                }
            }
        }
        let Some(leader) = row.answer.leader else {
            continue;
        };
        match leader_of_term.get(&term) {
            Some(first) if first.answer.leader != Some(leader) => {
                // Two geese in one term already say it; do not count that twice.
                let both_geese = first.answer.goose && row.answer.goose;
                if !both_geese {
                    verdict.add(Violation::TwoLeadersInOneTerm {
                        term,
                        first: history.probes[first.index].clone(),
                        second: history.probes[row.index].clone(),
                    });
                }
            }
            Some(_) => {}
            None => {
                leader_of_term.insert(term, row);
            }
        }
    }
}

/// The highest term of two different nodes among the answers seen so far: `best` overall,
/// and `other`, the highest of any node but `best`'s.
#[derive(Clone, Copy, Default)]
struct TopTwo {
    best: Option<Row>,
    other: Option<Row>,
}

impl TopTwo {
    fn add(&mut self, row: Row) {
        let term = row.answer.term;
        match self.best {
            None => self.best = Some(row),
            Some(best) if best.node == row.node => {
                if term > best.answer.term {
                    self.best = Some(row);
                }
            }
            Some(best) if term > best.answer.term => {
                self.other = Some(best);
                self.best = Some(row);
            }
            Some(_) => {
                if self.other.is_none_or(|other| term > other.answer.term) {
                    self.other = Some(row);
                }
            }
        }
    }

    /// The highest-term answer of a node other than `node`.
    fn excluding(&self, node: u16) -> Option<Row> {
        match self.best {
            Some(best) if best.node != node => Some(best),
            _ => self.other,
        }
    }
}

/// Rule 2: sweep goose answers by send time, folding in those received strictly before.
fn check_stale_goose(history: &History, rows: &[Row], verdict: &mut Verdict) {
    let geese: Vec<Row> = rows.iter().copied().filter(|r| r.answer.goose).collect();
    let mut by_received = geese.clone();
    by_received.sort_by_key(|row| (row.received, row.index));
    let mut seen = TopTwo::default();
    let mut next = 0;
    for row in &geese {
        while next < by_received.len() && by_received[next].received < row.sent {
            seen.add(by_received[next]);
            next += 1;
        }
        if let Some(newer) = seen.excluding(row.node) {
            if newer.answer.term > row.answer.term {
                verdict.add(Violation::StaleGoose {
                    newer: history.probes[newer.index].clone(),
                    older: history.probes[row.index].clone(),
                });
            }
        }
    }
}

/// Rule 3: per node, sweep answers by send time, folding in those received strictly before.
fn check_term_monotonic(history: &History, rows: &[Row], verdict: &mut Verdict) {
    let mut by_node: BTreeMap<u16, Vec<Row>> = BTreeMap::new();
    for row in rows {
        by_node.entry(row.node).or_default().push(*row);
    }
    for sent_order in by_node.values() {
        let mut by_received = sent_order.clone();
        by_received.sort_by_key(|row| (row.received, row.index));
        let mut highest: Option<Row> = None;
        let mut next = 0;
        for row in sent_order {
            while next < by_received.len() && by_received[next].received < row.sent {
                let candidate = by_received[next];
                if highest.is_none_or(|h| candidate.answer.term > h.answer.term) {
                    highest = Some(candidate);
                }
                next += 1;
            }
            if let Some(before) = highest {
                if row.answer.term < before.answer.term {
                    verdict.add(Violation::TermWentBack {
                        before: history.probes[before.index].clone(),
                        after: history.probes[row.index].clone(),
                    });
                }
            }
        }
    }
}

/// Rule 4: for each heal, the first goose answer to a probe sent at or after it.
fn check_liveness(history: &History, rows: &[Row], bound: Micros, verdict: &mut Verdict) {
    let geese: Vec<Row> = rows.iter().copied().filter(|r| r.answer.goose).collect();
    for event in &history.events {
        if event.kind != EventKind::AllHealed {
            continue;
        }
        let healed = event.at;
        let start = geese.partition_point(|row| row.sent < healed);
        let first = geese[start..].iter().min_by_key(|row| row.received);
        let gap = first.map(|row| row.received.saturating_sub(healed));
        verdict.heal_gaps.push(HealGap { healed, gap });
        if gap.is_none_or(|gap| gap > bound) {
            verdict.add(Violation::NoGooseAfterHeal {
                healed,
                bound,
                first_goose: first.map(|row| history.probes[row.index].clone()),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::soak::history::Event;

    /// `goose`/`duck` answer of `node` in `term` following `leader`, sent at `sent`,
    /// received at `received`.
    fn answer(
        node: u16,
        role: &str,
        term: u64,
        leader: Option<u16>,
        sent: u64,
        received: u64,
    ) -> ProbeRecord {
        ProbeRecord {
            node,
            prober: 0,
            sent,
            outcome: Outcome::Reply {
                received,
                answer: Answer {
                    goose: role == "goose",
                    id: node,
                    term,
                    leader,
                    stopped: false,
                },
            },
        }
    }

    fn goose(node: u16, term: u64, sent: u64, received: u64) -> ProbeRecord {
        answer(node, "goose", term, Some(node), sent, received)
    }

    fn duck(node: u16, term: u64, leader: Option<u16>, sent: u64, received: u64) -> ProbeRecord {
        answer(node, "duck", term, leader, sent, received)
    }

    fn timeout(node: u16, sent: u64) -> ProbeRecord {
        ProbeRecord {
            node,
            prober: 0,
            sent,
            outcome: Outcome::Timeout,
        }
    }

    fn history(probes: Vec<ProbeRecord>, events: Vec<(u64, EventKind)>) -> History {
        History {
            probes,
            events: events
                .into_iter()
                .map(|(at, kind)| Event { at, kind })
                .collect(),
        }
    }

    const BOUND: u64 = 1_000;

    fn rules(verdict: &Verdict) -> Vec<Rule> {
        verdict.violations.iter().map(Violation::rule).collect()
    }

    fn assert_clean(history: &History) -> Verdict {
        let verdict = check(history, BOUND);
        assert!(
            verdict.violations.is_empty(),
            "unexpected: {:#?}",
            verdict.violations
        );
        assert_eq!(verdict.violations_count(), 0);
        verdict
    }

    fn assert_flags(history: &History, rule: Rule) -> Verdict {
        let verdict = check(history, BOUND);
        assert_eq!(rules(&verdict), vec![rule], "{:#?}", verdict.violations);
        assert_eq!(verdict.counts.get(&rule), Some(&1));
        verdict
    }

    // --- histories that must pass -----------------------------------------------------------

    #[test]
    fn check_passes_a_stable_goose_and_its_ducks() {
        let h = history(
            vec![
                goose(1, 3, 10, 20),
                duck(2, 3, Some(1), 12, 22),
                duck(3, 3, None, 14, 25),
                goose(1, 3, 30, 40),
                timeout(4, 50),
            ],
            vec![],
        );
        let verdict = assert_clean(&h);
        assert_eq!(verdict.answers, 4);
        assert_eq!(verdict.goose_answers, 2);
        assert_eq!(verdict.timeouts, 1);
    }

    #[test]
    fn check_passes_a_handoff_between_terms() {
        // Goose 1 of term 3, then (strictly later) goose 2 of term 4; 1 answers duck after.
        let h = history(
            vec![
                goose(1, 3, 10, 20),
                goose(2, 4, 30, 40),
                duck(1, 4, Some(2), 50, 60),
            ],
            vec![],
        );
        assert_clean(&h);
    }

    #[test]
    fn check_passes_overlapping_goose_answers_of_two_terms() {
        // Node 1's old-term goose answer was sent (100) before node 2's newer goose answer
        // was received (200): the two probes are concurrent, either order is linearizable.
        let h = history(vec![goose(2, 6, 90, 200), goose(1, 5, 100, 300)], vec![]);
        assert_clean(&h);
    }

    #[test]
    fn check_passes_a_probe_sent_the_same_microsecond_a_newer_goose_was_received() {
        // Strictly after is required: equal instants are concurrent.
        let h = history(vec![goose(2, 6, 90, 200), goose(1, 5, 200, 300)], vec![]);
        assert_clean(&h);
    }

    #[test]
    fn check_passes_overlapping_probes_to_one_node_answered_out_of_order() {
        // q was sent (200) before p's reply arrived (400): concurrent, no order to keep.
        let h = history(
            vec![duck(1, 7, None, 100, 400), duck(1, 6, None, 200, 300)],
            vec![],
        );
        assert_clean(&h);
    }

    #[test]
    fn check_passes_a_restart_that_keeps_its_term() {
        let h = history(
            vec![
                duck(1, 7, None, 100, 110),
                duck(1, 7, None, 300, 310),
                duck(1, 8, None, 400, 410),
            ],
            vec![
                (150, EventKind::Killed { node: 1 }),
                (200, EventKind::Restarted { node: 1, pid: 9 }),
            ],
        );
        assert_clean(&h);
    }

    #[test]
    fn check_measures_the_goose_gap_after_a_heal() {
        let h = history(
            vec![
                goose(1, 3, 1_000, 1_100), // sent before the heal: does not count
                duck(2, 4, None, 1_300, 1_310),
                goose(2, 4, 1_700, 1_750),
                goose(2, 4, 1_600, 1_800),
            ],
            vec![(1_050, EventKind::AllHealed)],
        );
        let verdict = assert_clean(&h);
        assert_eq!(
            verdict.heal_gaps,
            vec![HealGap {
                healed: 1_050,
                gap: Some(700)
            }]
        );
        assert_eq!(verdict.heal_gap_max(), Some(700));
    }

    // --- histories that must be flagged -----------------------------------------------------

    #[test]
    fn check_flags_two_geese_in_one_term() {
        // Far apart in time and never overlapping in any other way: the term alone condemns.
        let h = history(vec![goose(1, 5, 10, 20), goose(2, 5, 1_000, 1_010)], vec![]);
        let verdict = assert_flags(&h, Rule::TwoGeeseInOneTerm);
        assert!(verdict.violations[0]
            .to_string()
            .contains("two geese in term 5"));
    }

    #[test]
    fn check_flags_two_geese_in_one_term_even_when_concurrent() {
        let h = history(vec![goose(1, 5, 10, 30), goose(2, 5, 10, 30)], vec![]);
        assert_flags(&h, Rule::TwoGeeseInOneTerm);
    }

    #[test]
    fn check_flags_a_stale_goose() {
        // Node 2's goose term 6 arrived at 200; a probe sent at 250 finds node 1 still goose
        // in term 5. (Node 1 is probed only once, so no other rule is involved.)
        let h = history(vec![goose(2, 6, 100, 200), goose(1, 5, 250, 260)], vec![]);
        let verdict = assert_flags(&h, Rule::StaleGoose);
        let Violation::StaleGoose { newer, older } = &verdict.violations[0] else {
            panic!("{:?}", verdict.violations);
        };
        assert_eq!((newer.node, older.node), (2, 1));
    }

    #[test]
    fn check_flags_a_stale_goose_behind_a_newer_goose_of_its_own() {
        // The highest term seen is node 1's own (7), which does not condemn node 1; node 2's
        // term 6, received before, does.
        let h = history(
            vec![
                goose(2, 6, 100, 150),
                goose(1, 7, 160, 170),
                goose(1, 5, 300, 310),
            ],
            vec![],
        );
        let verdict = check(&h, BOUND);
        assert_eq!(verdict.counts.get(&Rule::StaleGoose), Some(&1));
        let stale = verdict
            .violations
            .iter()
            .find(|v| v.rule() == Rule::StaleGoose)
            .unwrap();
        let Violation::StaleGoose { newer, .. } = stale else {
            unreachable!()
        };
        assert_eq!(newer.node, 2);
        // Its own term going back from 7 to 5 is rule 3's.
        assert_eq!(verdict.counts.get(&Rule::TermWentBack), Some(&1));
    }

    #[test]
    fn check_flags_a_term_that_goes_back_across_a_restart() {
        let h = history(
            vec![duck(1, 7, None, 100, 110), duck(1, 3, None, 300, 310)],
            vec![
                (150, EventKind::Killed { node: 1 }),
                (200, EventKind::Restarted { node: 1, pid: 9 }),
            ],
        );
        let verdict = assert_flags(&h, Rule::TermWentBack);
        let Violation::TermWentBack { before, after } = &verdict.violations[0] else {
            unreachable!()
        };
        assert_eq!((before.sent, after.sent), (100, 300));
    }

    #[test]
    fn check_flags_a_term_that_goes_back_behind_an_overlapping_pair() {
        // 100–400 and 200–300 overlap (fine), but 500 comes after both and says 5.
        let h = history(
            vec![
                duck(1, 7, None, 100, 400),
                duck(1, 6, None, 200, 300),
                duck(1, 5, None, 500, 510),
            ],
            vec![],
        );
        let verdict = check(&h, BOUND);
        assert_eq!(rules(&verdict), vec![Rule::TermWentBack]);
    }

    #[test]
    fn check_flags_no_goose_after_a_heal() {
        let h = history(
            vec![goose(1, 3, 100, 110), duck(1, 3, None, 600, 610)],
            vec![(500, EventKind::AllHealed)],
        );
        let verdict = assert_flags(&h, Rule::NoGooseAfterHeal);
        assert_eq!(
            verdict.heal_gaps,
            vec![HealGap {
                healed: 500,
                gap: None
            }]
        );
    }

    #[test]
    fn check_flags_a_goose_too_late_after_a_heal() {
        let h = history(
            vec![goose(2, 4, 1_400, 1_600)],
            vec![(500, EventKind::AllHealed)],
        );
        let verdict = assert_flags(&h, Rule::NoGooseAfterHeal);
        assert_eq!(verdict.heal_gap_max(), Some(1_100));
    }

    #[test]
    fn check_does_not_count_a_goose_probed_before_the_heal() {
        // Received after the heal, but sent before it: it says nothing about the healed flock.
        let h = history(
            vec![goose(2, 4, 400, 600)],
            vec![(500, EventKind::AllHealed)],
        );
        assert_flags(&h, Rule::NoGooseAfterHeal);
    }

    #[test]
    fn check_flags_ducks_naming_two_leaders_in_one_term() {
        let h = history(
            vec![duck(1, 4, Some(2), 100, 110), duck(3, 4, Some(5), 200, 210)],
            vec![],
        );
        assert_flags(&h, Rule::TwoLeadersInOneTerm);
    }

    #[test]
    fn check_flags_an_answer_with_another_id() {
        let mut record = duck(1, 4, None, 100, 110);
        if let Outcome::Reply { answer, .. } = &mut record.outcome {
            answer.id = 2;
        }
        assert_flags(&history(vec![record], vec![]), Rule::WrongId);
    }

    #[test]
    fn check_flags_a_malformed_reply() {
        let record = ProbeRecord {
            node: 1,
            prober: 0,
            sent: 100,
            outcome: Outcome::Malformed {
                received: 110,
                why: "\"gooze\"".to_owned(),
            },
        };
        assert_flags(&history(vec![record], vec![]), Rule::Malformed);
    }

    #[test]
    fn check_keeps_a_bounded_number_of_violations_but_counts_all() {
        let probes = (0..100u64)
            .flat_map(|t| {
                [
                    goose(1, t, t * 10, t * 10 + 1),
                    goose(2, t, t * 10 + 2, t * 10 + 3),
                ]
            })
            .collect();
        let verdict = check(&history(probes, vec![]), BOUND);
        assert_eq!(verdict.counts.get(&Rule::TwoGeeseInOneTerm), Some(&100));
        assert_eq!(verdict.violations.len(), VIOLATIONS_KEPT_PER_RULE_MAX);
    }

    #[test]
    fn excerpt_lists_probes_and_events_in_time_order() {
        let h = history(
            vec![goose(1, 3, 300, 310), duck(2, 3, Some(1), 100, 110)],
            vec![(200, EventKind::Paused { node: 3 })],
        );
        let text = h.excerpt(0, 1_000, &[], 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("node 2"));
        assert!(lines[1].contains("Paused"));
        assert!(lines[2].starts_with("probe p0 -> node 1"));

        // Filtered by node and cut to the last probe: the event stays.
        let text = h.excerpt(0, 1_000, &[1, 2], 1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("1 earlier probes left out"));
        assert!(lines[1].contains("Paused"));
        assert!(lines[2].contains("node 1"));

        let mut out = Vec::new();
        h.write_to(&mut out).unwrap();
        let written = String::from_utf8(out).unwrap();
        assert_eq!(written, h.excerpt(0, u64::MAX, &[], usize::MAX) + "\n");
    }
}
