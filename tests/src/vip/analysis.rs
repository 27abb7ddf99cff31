//! Figures from a [`Record`]: pure functions of what the observers saw, so that they are
//! tested on made-up records here and trusted on real ones.

use std::collections::BTreeMap;

use super::watch::{Answer, Micros, Record, Sample};

/// Time during which two or more nodes held the address at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overlap {
    /// In all, within the window asked about.
    pub total: Micros,
    /// The longest single stretch.
    pub longest: Micros,
}

/// Two holders at once, bounded from both sides by the watchers' samples ([`two_holders`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TwoHolders {
    /// Time two or more nodes certainly held the address together: a lower bound that no
    /// delay of a watcher can inflate. Greater than zero only for a real overlap.
    pub definite: Overlap,
    /// Time two or more nodes may have held it together: an upper bound, inflated by every
    /// late sample around a handover.
    pub possible: Overlap,
}

/// What one node's samples prove about one run of holding the address.
///
/// A sample's check ran at some moment in `[before, after]`. The run's first held sample
/// therefore saw the address at a moment `≤ first.after`, its last held sample at a moment
/// `≥ last.before`. Between two consecutive held samples (a millisecond apart, or a few
/// when the watcher was delayed) we take the node to have held the address throughout: a
/// removal and a new claim within that gap, both unseen, would need the node to lose and
/// win the goose's lease in a few milliseconds, which the lease's length rules out. So
/// the node **certainly** held the address over `[first.after, last.before]` (nothing if
/// that is empty: a run seen once, or brackets that overlap).
///
/// The sample before the run (not held) checked at a moment `≥ before`, so the claim came
/// after `prev.before`; the sample after the run (not held) checked at a moment `≤
/// after`, so the release came before `next.after`. The node **possibly** held the address
/// over `[prev.before, next.after]`: from time 0 if no sample precedes the run, and without
/// end if none follows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    certain: Option<(Micros, Micros)>,
    possible: (Micros, Micros),
}

/// Each run of held samples in `samples` ([`Record::holds`]: a run's first and last
/// sample, or its only one).
fn runs(samples: &[Sample]) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut index = 0;
    while index < samples.len() {
        if !samples[index].held {
            index += 1;
            continue;
        }
        let first = index;
        while index + 1 < samples.len() && samples[index + 1].held {
            index += 1;
        }
        let last = index;
        let (start, end) = (samples[first].after, samples[last].before);
        runs.push(Run {
            certain: (start < end).then_some((start, end)),
            possible: (
                first.checked_sub(1).map_or(0, |prev| samples[prev].before),
                samples.get(last + 1).map_or(Micros::MAX, |next| next.after),
            ),
        });
        index += 1;
    }
    runs
}

/// When two or more nodes held the address during `[from, to)`: certainly, and possibly
/// (see [`Run`] for what a node's samples prove).
pub fn two_holders(record: &Record, from: Micros, to: Micros) -> TwoHolders {
    let per_node = |of: fn(&Run) -> Option<(Micros, Micros)>| -> Vec<Vec<(Micros, Micros)>> {
        record
            .holds
            .iter()
            .map(|samples| runs(samples).iter().filter_map(of).collect())
            .collect()
    };
    TwoHolders {
        definite: overlap(per_node(|run| run.certain), from, to),
        possible: overlap(per_node(|run| Some(run.possible)), from, to),
    }
}

/// The time within `[from, to)` covered by intervals of two or more nodes at once (each
/// node's own intervals merged first: one node never overlaps itself).
fn overlap(nodes: Vec<Vec<(Micros, Micros)>>, from: Micros, to: Micros) -> Overlap {
    let mut changes: Vec<(Micros, i64)> = Vec::new();
    for mut intervals in nodes {
        intervals.sort_unstable();
        let mut merged: Vec<(Micros, Micros)> = Vec::new();
        for (start, end) in intervals {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        for (start, end) in merged {
            let (start, end) = (start.max(from), end.min(to));
            if start < end {
                changes.push((start, 1));
                changes.push((end, -1));
            }
        }
    }
    // Ends before starts at the same instant: intervals that only touch do not overlap.
    changes.sort_unstable();
    let mut holders: i64 = 0;
    let mut overlap = Overlap::default();
    let mut since: Option<Micros> = None;
    for (at, change) in changes {
        holders += change;
        match (since, holders >= 2) {
            (None, true) => since = Some(at),
            (Some(start), false) => {
                overlap.total += at - start;
                overlap.longest = overlap.longest.max(at - start);
                since = None;
            }
            _ => {}
        }
    }
    overlap
}

/// The nodes that certainly held the address at some moment in `[from, to)` ([`Run`]).
pub fn certain_holders(record: &Record, from: Micros, to: Micros) -> Vec<u16> {
    record
        .holds
        .iter()
        .enumerate()
        .filter(|(_, samples)| {
            runs(samples)
                .iter()
                .filter_map(|run| run.certain)
                .any(|(start, end)| start < to && end > from)
        })
        .map(|(index, _)| u16::try_from(index + 1).unwrap_or(u16::MAX))
        .collect()
}

/// Whether node `node`'s latest sample finished by `at` found it holding the address.
pub fn held_at(record: &Record, node: u16, at: Micros) -> bool {
    let Some(samples) = record.holds.get(usize::from(node).wrapping_sub(1)) else {
        return false;
    };
    samples
        .iter()
        .take_while(|sample| sample.after <= at)
        .last()
        .is_some_and(|sample| sample.held)
}

/// When node `node` had certainly stopped holding the address, for the first release seen
/// by a sample finished at or after `after`: that sample's `after`.
pub fn released_after(record: &Record, node: u16, after: Micros) -> Option<Micros> {
    let samples = record.holds.get(usize::from(node).wrapping_sub(1))?;
    samples
        .windows(2)
        .find(|pair| pair[0].held && !pair[1].held && pair[1].after >= after)
        .map(|pair| pair[1].after)
}

/// Answers from `old` to probes sent after the first probe of `[from, to)` that another
/// node answered: the old holder still reached after the new one had been. The client's
/// own view of two holders, which no watcher's timing can bend (probes are ordered by
/// when they were sent, not when their answers came).
pub fn stale_answers(record: &Record, from: Micros, to: Micros, old: u16) -> usize {
    let answers = answers_in(record, from, to);
    let Some(first_other) = answers
        .iter()
        .filter(|answer| answer.node != old)
        .map(|answer| answer.seq)
        .min()
    else {
        return 0;
    };
    answers
        .iter()
        .filter(|answer| answer.node == old && answer.seq > first_other)
        .count()
}

/// The answers that arrived during `[from, to)`.
pub fn answers_in(record: &Record, from: Micros, to: Micros) -> &[Answer] {
    let answers = &record.answers;
    let start = answers.partition_point(|answer| answer.at < from);
    let end = answers.partition_point(|answer| answer.at < to);
    &answers[start..end.max(start)]
}

/// The first answer at or after `after` from a node other than `not`.
pub fn first_answer_from_other(record: &Record, after: Micros, not: u16) -> Option<Answer> {
    answers_in(record, after, Micros::MAX)
        .iter()
        .find(|answer| answer.node != not)
        .copied()
}

/// Answers per node.
pub fn per_node(answers: &[Answer]) -> BTreeMap<u16, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        *counts.entry(answer.node).or_insert(0) += 1;
    }
    counts
}

/// How often the answering node changed from one answer to the next.
pub fn switches(answers: &[Answer]) -> usize {
    answers
        .windows(2)
        .filter(|pair| pair[0].node != pair[1].node)
        .count()
}

/// The longest stretch of `[from, to)` in which no answer arrived.
pub fn longest_silence(record: &Record, from: Micros, to: Micros) -> Micros {
    let mut last = from;
    let mut longest = 0;
    for answer in answers_in(record, from, to) {
        longest = longest.max(answer.at - last);
        last = answer.at;
    }
    longest.max(to.saturating_sub(last))
}

/// What happened during `[from, to)`, one line per change, times in ms since `from`: each
/// node's claims and releases of the address (at the last sample before, with when the next
/// sample saw it done), and runs of answers from one node
/// (`answers n2 ×1234 12.0–1246.0`), for reading one fault closely.
pub fn timeline(record: &Record, from: Micros, to: Micros) -> String {
    let mut lines: Vec<(Micros, String)> = Vec::new();
    for (index, samples) in record.holds.iter().enumerate() {
        let mut previous: Option<&Sample> = None;
        for sample in samples {
            let changed = previous.map_or(sample.held, |previous| previous.held != sample.held);
            // At the last sample that saw the old state: the change came after it.
            let at = previous.map_or(0, |previous| previous.before);
            if changed && at >= from && at < to {
                let (verb, state) = if sample.held {
                    ("claims", "held")
                } else {
                    ("releases", "gone")
                };
                lines.push((
                    at,
                    format!(
                        "n{} {verb} the address ({state} at {})",
                        index + 1,
                        ms(sample.after.saturating_sub(from))
                    ),
                ));
            }
            previous = Some(sample);
        }
    }
    let answers = answers_in(record, from, to);
    let mut start = 0;
    for end in 1..=answers.len() {
        if end == answers.len() || answers[end].node != answers[start].node {
            let (first, last) = (answers[start].at, answers[end - 1].at);
            lines.push((
                first,
                format!(
                    "answers n{} ×{} until {}",
                    answers[start].node,
                    end - start,
                    ms(last - from)
                ),
            ));
            start = end;
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    lines
        .into_iter()
        .map(|(at, line)| format!("  {:>9} {line}\n", ms(at - from)))
        .collect()
}

/// The value at fraction `p` (0 to 1) of `values` (nearest rank), `None` if empty.
pub fn percentile(values: &[Micros], p: f64) -> Option<Micros> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let last = sorted.len().checked_sub(1)?;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p.clamp(0.0, 1.0) * last as f64).round() as usize).min(last);
    Some(sorted[rank])
}

/// Microseconds as milliseconds, for tables: `12.3` below 100 ms, whole above.
pub fn ms(micros: Micros) -> String {
    if micros < 100_000 {
        format!("{:.1}", micros as f64 / 1000.0)
    } else {
        format!("{}", (micros + 500) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(holds: Vec<Vec<Sample>>, answers: &[(u16, Micros)]) -> Record {
        Record {
            holds,
            sent: Vec::new(),
            answers: answers
                .iter()
                .enumerate()
                .map(|(seq, &(node, at))| Answer {
                    seq: u32::try_from(seq).unwrap_or(u32::MAX),
                    node,
                    at,
                })
                .collect(),
            truncated: false,
        }
    }

    /// A sample whose check took 10 µs.
    fn at(before: Micros, held: bool) -> Sample {
        Sample {
            before,
            after: before + 10,
            held,
        }
    }

    /// Samples at these instants, held from `claim` up to (not including) `release`, as a
    /// watcher keeps them (the ends of each run).
    fn node(instants: &[Micros], claim: Micros, release: Micros) -> Vec<Sample> {
        let all: Vec<Sample> = instants
            .iter()
            .map(|&t| at(t, t >= claim && t < release))
            .collect();
        (0..all.len())
            .filter(|&i| {
                let differs = |j: Option<usize>| j.and_then(|j| all.get(j)).map(|s| s.held);
                differs(i.checked_sub(1)) != Some(all[i].held)
                    || differs(Some(i + 1)) != Some(all[i].held)
            })
            .map(|i| all[i])
            .collect()
    }

    fn every_ms(from: Micros, to: Micros) -> Vec<Micros> {
        (from / 1000..to / 1000).map(|t| t * 1000).collect()
    }

    #[test]
    fn a_late_release_sample_is_a_possible_overlap_never_a_definite_one() {
        // The transfer the old measure called 0.3 ms of two holders: node 1 checked at
        // 4.0 ms (held), then its watcher was not scheduled until 10.5 ms (gone: the
        // release came somewhere in between, in fact at 4.2); node 2 checked at 10.0 ms
        // (not yet) and 10.3 ms (held).
        let mut one: Vec<Micros> = every_ms(0, 5_000);
        one.extend([10_500, 11_500]);
        let two: Vec<Micros> = every_ms(0, 11_000)
            .into_iter()
            .chain([10_300, 11_300])
            .collect();
        let r = record(
            vec![node(&one, 1_000, 4_200), node(&two, 10_300, Micros::MAX)],
            &[],
        );
        let seen = two_holders(&r, 0, 20_000);
        assert_eq!(seen.definite, Overlap::default());
        // Possible: node 1 until its late sample's end (10.51), node 2 from its last "not
        // held" sample's start (10.0).
        assert_eq!(
            seen.possible,
            Overlap {
                total: 510,
                longest: 510
            }
        );
        assert_eq!(certain_holders(&r, 0, 20_000), vec![1, 2]);
        assert_eq!(certain_holders(&r, 5_000, 20_000), vec![2]);
    }

    #[test]
    fn a_preempted_claim_sample_is_no_definite_overlap() {
        // Node 2's watcher read the clock at 3.0 ms, was preempted, and checked (held) at
        // 9.0 ms; node 1 let go at 4.5 ms. A stamp taken before the check would have put
        // the claim at 3.0 ms, 1.5 ms before the release.
        let r = record(
            vec![
                vec![
                    at(0, false),
                    at(1_000, true),
                    at(4_000, true),
                    at(5_000, false),
                ],
                vec![
                    at(0, false),
                    at(2_000, false),
                    Sample {
                        before: 3_000,
                        after: 9_000,
                        held: true,
                    },
                    at(12_000, true),
                ],
            ],
            &[],
        );
        let seen = two_holders(&r, 0, 20_000);
        assert_eq!(seen.definite, Overlap::default());
        // Possible: node 1 until 5.01, node 2 from 2.0.
        assert_eq!(seen.possible.total, 3_010);
    }

    #[test]
    fn a_real_overlap_is_definite() {
        // Node 1 holds 1 to 6 ms, node 2 from 3 ms on, both sampled every millisecond.
        let r = record(
            vec![
                node(&every_ms(0, 10_000), 1_000, 6_000),
                node(&every_ms(0, 10_000), 3_000, Micros::MAX),
            ],
            &[],
        );
        let seen = two_holders(&r, 0, 10_000);
        // Certainly: node 1 over [1.01, 5.0], node 2 over [3.01, 9.0]: 3.01 to 5.0.
        assert_eq!(
            seen.definite,
            Overlap {
                total: 1_990,
                longest: 1_990
            }
        );
        // Possibly: node 1 over [0, 6.01], node 2 from 2.0: 2.0 to 6.01.
        assert_eq!(seen.possible.total, 4_010);
        // Only what lies in the window counts.
        assert_eq!(two_holders(&r, 4_000, 10_000).definite.total, 1_000);
        assert_eq!(two_holders(&r, 5_500, 10_000).definite.total, 0);
    }

    #[test]
    fn overlaps_of_three_nodes_and_open_ends() {
        let r = record(
            vec![
                node(&every_ms(0, 1_000_000), 100_000, 500_000),
                node(&every_ms(0, 1_000_000), 400_000, 900_000),
                {
                    let mut three = node(&every_ms(0, 800_000), 450_000, 470_000);
                    three.extend([at(800_000, true), at(999_000, true)]);
                    three
                },
            ],
            &[],
        );
        // Certain: n1 [100.01, 499], n2 [400.01, 899], n3 [450.01, 469] and [800.01, 999]:
        // two or more over [400.01, 499] and [800.01, 899].
        let seen = two_holders(&r, 0, 1_000_000);
        assert_eq!(
            seen.definite,
            Overlap {
                total: 98_990 + 98_990,
                longest: 98_990
            }
        );
        // Still holding at the end of the record: counted up to the window's end.
        let open = record(
            vec![
                vec![at(0, false), at(10, true), at(500, true)],
                vec![at(0, false), at(20, true), at(600, true)],
            ],
            &[],
        );
        assert_eq!(two_holders(&open, 0, 1_000).possible.total, 1_000);
        assert_eq!(two_holders(&open, 0, 1_000).definite.total, 500 - 30);
    }

    #[test]
    fn one_node_never_overlaps_itself_and_a_clean_handover_is_none() {
        // A node seen without the address for one sample: its two runs' possible intervals
        // overlap each other, and are merged, not counted as two holders.
        let alone = record(
            vec![vec![
                at(0, false),
                at(1_000, true),
                at(3_000, true),
                at(4_000, false),
                at(5_000, true),
                at(9_000, true),
            ]],
            &[],
        );
        assert_eq!(two_holders(&alone, 0, 10_000), TwoHolders::default());
        // Node 1 releases between its samples at 49 and 50 ms, node 2 claims between 51 and
        // 52: a gap, no overlap either way.
        let r = record(
            vec![
                node(&every_ms(0, 100_000), 10_000, 50_000),
                node(&every_ms(0, 100_000), 52_000, Micros::MAX),
            ],
            &[],
        );
        assert_eq!(two_holders(&r, 0, 100_000), TwoHolders::default());
        assert!(held_at(&r, 1, 49_500) && !held_at(&r, 1, 50_010) && held_at(&r, 2, 52_010));
        assert_eq!(released_after(&r, 1, 20_000), Some(50_010));
        assert_eq!(released_after(&r, 2, 20_000), None);
    }

    #[test]
    fn client_figures() {
        let r = record(
            vec![],
            &[(1, 10), (1, 11), (2, 300), (1, 301), (2, 302), (2, 303)],
        );
        assert_eq!(answers_in(&r, 11, 302).len(), 3);
        assert_eq!(first_answer_from_other(&r, 0, 1).map(|a| a.at), Some(300));
        assert_eq!(switches(answers_in(&r, 0, 1000)), 3);
        assert_eq!(per_node(answers_in(&r, 0, 1000)).get(&1), Some(&3));
        assert_eq!(longest_silence(&r, 0, 1000), 1000 - 303);
        assert_eq!(longest_silence(&r, 5, 304), 300 - 11);
        // Node 1 answered probe 3, sent after probe 2 that node 2 answered: stale.
        assert_eq!(stale_answers(&r, 0, 1000, 1), 1);
        assert_eq!(stale_answers(&r, 0, 301, 1), 0);
        // By when probes were sent, not when answers came: the old holder's late answer to
        // an earlier probe is not stale, its early answer to a later probe is.
        let sent_answered = |answers: [(u32, u16, Micros); 3]| Record {
            answers: answers
                .iter()
                .map(|&(seq, node, at)| Answer { seq, node, at })
                .collect(),
            ..Record::default()
        };
        let late = sent_answered([(0, 1, 10), (2, 2, 20), (1, 1, 25)]);
        assert_eq!(stale_answers(&late, 0, 1000, 1), 0);
        let early = sent_answered([(0, 1, 10), (2, 1, 19), (1, 2, 20)]);
        assert_eq!(stale_answers(&early, 0, 1000, 1), 1);
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[5, 1, 3], 0.5), Some(3));
        assert_eq!(percentile(&[5, 1, 3], 1.0), Some(5));
        assert_eq!(ms(12_345), "12.3");
        assert_eq!(ms(2_345_678), "2346");
    }
}
