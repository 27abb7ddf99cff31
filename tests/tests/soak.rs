//! The short randomized fault soak (CI): real `goose` processes, each in its own network
//! namespace behind a bridge, a nemesis (kill -9 and restart, SIGSTOP/SIGCONT, `ctl stop`,
//! `ctl partition`, link cuts) and probers; the history checker must find nothing. See
//! `flock_tests::soak`. `SOAK_SECS` sets the fault phase (default 90 s); the long run is
//! `cargo run --release -p flock-tests --bin soak -- --secs 3600`.
//!
//! Needs root for the namespaces, and fails (never skips) without it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flock_tests::procs::goose_binary;
use flock_tests::soak::check::{check, Rule};
use flock_tests::soak::history::{EventKind, History, Outcome};
use flock_tests::soak::nemesis::FaultKind;
use flock_tests::soak::{self, SoakConfig};

#[test]
fn soak_random_faults_real_processes_namespaces() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .map(|value| value.parse().expect("SOAK_SECS is a number of seconds"))
        .unwrap_or(90);
    let seed: u64 = std::env::var("SOAK_SEED").ok().map_or_else(
        || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |value| value.parse().expect("SOAK_SEED is a number"),
    );
    let config = SoakConfig::new(
        goose_binary().to_path_buf(),
        Duration::from_secs(secs),
        seed,
    );
    let report = soak::run(&config).unwrap_or_else(|error| panic!("soak harness: {error}"));
    println!("{report}");

    // Everything it made is gone.
    let leftovers: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(&report.namespaces))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        leftovers.is_empty(),
        "namespaces left behind: {leftovers:?}"
    );

    assert_eq!(
        report.verdict.violations_count(),
        0,
        "seed {seed}: the checker found violations:\n{}\n{report}",
        report.violations_with_excerpts()
    );
    assert!(
        report.unexpected_exits.is_empty(),
        "seed {seed}: nodes exited on their own:\n{}",
        report.unexpected_exits.join("\n")
    );
    // The soak really did something.
    for kind in FaultKind::ALL {
        assert!(
            report.faults.get(&kind).copied().unwrap_or(0) > 0,
            "seed {seed}: no {} fault injected in {secs} s: {report}",
            kind.name()
        );
    }
    assert!(report.verdict.heal_gaps.len() >= 2, "{report}");
    assert!(report.verdict.goose_answers > 0, "{report}");
    assert!(
        report.verdict.answers > 1_000,
        "too few probes answered: {report}"
    );

    let bound = u64::try_from(config.liveness_bound.as_micros()).unwrap();
    checker_catches_mutations_of(&report.history, bound);
}

/// The checker is not vacuous on a real history: one planted lie of each kind is caught.
fn checker_catches_mutations_of(history: &History, bound: u64) {
    let answered: Vec<usize> = (0..history.probes.len())
        .filter(|&i| history.probes[i].answer().is_some())
        .collect();
    let goose_answers: Vec<usize> = answered
        .iter()
        .copied()
        .filter(|&i| history.probes[i].answer().unwrap().1.goose)
        .collect();
    let set_answer = |history: &mut History, index: usize, goose: bool, term: u64| {
        let node = history.probes[index].node;
        if let Outcome::Reply { answer, .. } = &mut history.probes[index].outcome {
            answer.goose = goose;
            answer.term = term;
            answer.leader = goose.then_some(node);
        }
    };

    // 1. Another node answers goose in a goose's term, long after.
    let first = goose_answers[0];
    let (_, goose) = history.probes[first].answer().unwrap();
    let later = *answered
        .iter()
        .find(|&&i| {
            history.probes[i].node != goose.id
                && history.probes[i].sent > history.probes[first].sent
        })
        .unwrap();
    let mut lied = history.clone();
    set_answer(&mut lied, later, true, goose.term);
    assert!(check(&lied, bound).counts.get(&Rule::TwoGeeseInOneTerm) >= Some(&1));

    // 2. A node answers goose in term 0 after a goose of a higher term was received.
    let (received, _) = history.probes[first].answer().unwrap();
    let later = *answered
        .iter()
        .find(|&&i| history.probes[i].node != goose.id && history.probes[i].sent > received)
        .unwrap();
    let mut lied = history.clone();
    set_answer(&mut lied, later, true, 0);
    assert!(check(&lied, bound).counts.get(&Rule::StaleGoose) >= Some(&1));

    // 3. The last answer of a node that answered before says term 0.
    let last = *answered.last().unwrap();
    let mut lied = history.clone();
    set_answer(&mut lied, last, false, 0);
    assert!(check(&lied, bound).counts.get(&Rule::TermWentBack) >= Some(&1));

    // 4. Every goose answer after the last heal becomes a duck's.
    let healed = history
        .events
        .iter()
        .rev()
        .find(|event| event.kind == EventKind::AllHealed)
        .unwrap()
        .at;
    let mut lied = history.clone();
    for &index in &goose_answers {
        if lied.probes[index].sent >= healed {
            let (_, answer) = lied.probes[index].answer().unwrap();
            set_answer(&mut lied, index, false, answer.term);
        }
    }
    assert!(check(&lied, bound).counts.get(&Rule::NoGooseAfterHeal) >= Some(&1));
}
