//! Figures from a [`Record`]: pure functions of what the observers saw, so that they are
//! tested on made-up records here and trusted on real ones.

use std::collections::BTreeMap;

use super::watch::{Answer, Micros, Record};

/// Time during which two or more nodes held the address at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overlap {
    /// In all, within the window asked about.
    pub total: Micros,
    /// The longest single stretch.
    pub longest: Micros,
}

/// When two or more nodes held the address during `[from, to)`, by the watchers' samples.
pub fn two_holders(record: &Record, from: Micros, to: Micros) -> Overlap {
    // Only real changes count: each node's record starts with "not held" at time 0.
    let mut changes: Vec<(Micros, bool)> = Vec::new();
    for node in &record.holds {
        let mut held = false;
        for &(at, now) in node {
            if now != held {
                changes.push((at, now));
                held = now;
            }
        }
    }
    // Releases before claims at the same instant: a handover within one sample is not an
    // overlap the samples can show.
    changes.sort_by_key(|&(at, held)| (at, held));
    let mut holders: i64 = 0;
    let mut overlap = Overlap::default();
    let mut since: Option<Micros> = None;
    let close = |since: Micros, until: Micros, overlap: &mut Overlap| {
        let (start, end) = (since.max(from), until.min(to));
        if end > start {
            overlap.total += end - start;
            overlap.longest = overlap.longest.max(end - start);
        }
    };
    for (at, held) in changes {
        holders += if held { 1 } else { -1 };
        match (since, holders >= 2) {
            (None, true) => since = Some(at),
            (Some(start), false) => {
                close(start, at, &mut overlap);
                since = None;
            }
            _ => {}
        }
    }
    if let Some(start) = since {
        close(start, to, &mut overlap);
    }
    overlap
}

/// Whether node `node` held the address at time `at`.
pub fn held_at(record: &Record, node: u16, at: Micros) -> bool {
    let Some(changes) = record.holds.get(usize::from(node).wrapping_sub(1)) else {
        return false;
    };
    changes
        .iter()
        .take_while(|&&(when, _)| when <= at)
        .last()
        .is_some_and(|&(_, held)| held)
}

/// When node `node` next stopped holding the address at or after `after`, if it did.
pub fn released_after(record: &Record, node: u16, after: Micros) -> Option<Micros> {
    record
        .holds
        .get(usize::from(node).wrapping_sub(1))?
        .iter()
        .find(|&&(when, held)| when >= after && !held)
        .map(|&(when, _)| when)
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
/// node's claims and releases of the address, and runs of answers from one node
/// (`answers n2 ×1234 12.0–1246.0`), for reading one fault closely.
pub fn timeline(record: &Record, from: Micros, to: Micros) -> String {
    let mut lines: Vec<(Micros, String)> = Vec::new();
    for (index, node) in record.holds.iter().enumerate() {
        for &(at, held) in node.iter().filter(|&&(at, _)| at >= from && at < to) {
            let verb = if held { "claims" } else { "releases" };
            lines.push((at, format!("n{} {verb} the address", index + 1)));
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

    fn record(holds: Vec<Vec<(Micros, bool)>>, answers: &[(u16, Micros)]) -> Record {
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

    #[test]
    fn two_holders_counts_only_overlaps_inside_the_window() {
        let r = record(
            vec![
                vec![(0, false), (100, true), (500, false)],
                vec![(0, false), (400, true), (900, false)],
                vec![(0, false), (450, true), (470, false), (800, true)],
            ],
            &[],
        );
        // 400..500 (nodes 1, 2; node 3 too during 450..470), 800..900 (nodes 2, 3).
        assert_eq!(
            two_holders(&r, 0, 1000),
            Overlap {
                total: 200,
                longest: 100
            }
        );
        assert_eq!(
            two_holders(&r, 450, 850),
            Overlap {
                total: 100,
                longest: 50
            }
        );
        // Still overlapping at the end of the record: counted up to the window's end.
        let open = record(
            vec![vec![(0, false), (10, true)], vec![(0, false), (20, true)]],
            &[],
        );
        assert_eq!(two_holders(&open, 0, 120).total, 100);
    }

    #[test]
    fn a_handover_at_one_instant_is_no_overlap() {
        let r = record(
            vec![
                vec![(0, false), (10, true), (50, false)],
                vec![(0, false), (50, true)],
            ],
            &[],
        );
        assert_eq!(two_holders(&r, 0, 100), Overlap::default());
        assert!(held_at(&r, 1, 49) && !held_at(&r, 1, 50) && held_at(&r, 2, 50));
        assert_eq!(released_after(&r, 1, 20), Some(50));
        assert_eq!(released_after(&r, 2, 20), None);
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
