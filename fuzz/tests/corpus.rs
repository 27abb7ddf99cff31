//! Every seed, committed or generated, passes its target's checks; every generated script
//! decodes back to itself; and each scenario ends with the goose it was written for.
//!
//! Regenerate `corpus/` after changing the seeds or the wire format:
//! `GOOSE_FUZZ_WRITE_CORPUS=1 cargo test --test corpus`.

use std::fs;
use std::path::Path;

use goose_fuzz::flock::{decode_script, encode_script};
use goose_fuzz::seeds::{corpus, play, scenarios};

fn run_target(target: &str, bytes: &[u8]) {
    match target {
        "frame_decode" => goose_fuzz::frame_decode(bytes),
        "text_parse" => goose_fuzz::text::run(bytes),
        "auth_open" => goose_fuzz::auth::run(bytes),
        "node_sequences" => goose_fuzz::flock::Flock::run(bytes),
        "node_frames" => goose_fuzz::single::run(bytes),
        other => panic!("unknown target {other}"),
    }
}

#[test]
fn scenarios_decode_to_themselves_and_end_with_their_goose() {
    for scenario in scenarios() {
        let bytes = encode_script(&scenario.setup, &scenario.actions);
        let (setup, actions) = decode_script(&bytes);
        assert_eq!(setup, scenario.setup, "{}", scenario.name);
        assert_eq!(actions, scenario.actions, "{}", scenario.name);
        let (flock, _) = play(&scenario);
        let geese: Vec<usize> = flock.geese().iter().map(|n| n + 1).collect();
        assert_eq!(geese, Vec::from_iter(scenario.goose), "{}", scenario.name);
    }
}

#[test]
fn frame_scripts_decode_to_themselves_and_the_election_is_won() {
    let frames = goose_fuzz::seeds::frames_by_kind();
    for (name, ops, goose) in goose_fuzz::seeds::frame_scripts(&frames) {
        let mut bytes = Vec::new();
        for op in &ops {
            goose_fuzz::flock::Encode::encode(op, &mut bytes);
        }
        assert_eq!(goose_fuzz::single::decode_ops(&bytes), ops, "{name}");
        let status = goose_fuzz::single::final_status(&bytes);
        assert_eq!(status.goose, goose, "{name}: {status:?}");
    }
}

#[test]
fn auth_scripts_decode_to_themselves() {
    let frames = goose_fuzz::seeds::frames_by_kind();
    for (name, ops) in goose_fuzz::seeds::auth_scripts(&frames) {
        let mut bytes = Vec::new();
        for op in &ops {
            goose_fuzz::flock::Encode::encode(op, &mut bytes);
        }
        assert_eq!(goose_fuzz::auth::decode_ops(&bytes), ops, "{name}");
    }
}

#[test]
fn frames_of_every_kind_are_seeded() {
    let kinds = corpus()
        .iter()
        .filter(|s| s.target == "frame_decode")
        .count();
    assert_eq!(kinds, 9, "one seed per message kind");
}

/// Every committed seed passes its target, and so does every generated one. The committed
/// files may lag the generator (a change to the core's behaviour changes the frames a
/// scenario sends); they stay valid seeds, and the drift is only reported.
#[test]
fn committed_corpus_passes_and_is_regenerated_on_request() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = std::env::var_os("GOOSE_FUZZ_WRITE_CORPUS").is_some();
    let seeds = corpus();
    if write {
        let _ = fs::remove_dir_all(&root);
    }
    for seed in &seeds {
        run_target(seed.target, &seed.bytes);
        let path = root.join(seed.target).join(&seed.name);
        if write {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &seed.bytes).unwrap();
        } else if fs::read(&path).ok().as_ref() != Some(&seed.bytes) {
            eprintln!(
                "{} differs from the generator: GOOSE_FUZZ_WRITE_CORPUS=1 cargo test --test corpus",
                path.display()
            );
        }
    }
    for target in fs::read_dir(&root).unwrap() {
        let target = target.unwrap();
        for file in fs::read_dir(target.path()).unwrap() {
            let path = file.unwrap().path();
            run_target(
                target.file_name().to_str().unwrap(),
                &fs::read(&path).unwrap(),
            );
        }
    }
}

#[test]
fn regressions_still_pass() {
    // fuzz/regressions/<target>/<name>: inputs that once crashed a target, kept once fixed.
    // (fuzz/regressions/open/ holds those of open issues, if any: not replayed here.)
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let Ok(targets) = fs::read_dir(&root) else {
        return;
    };
    for target in targets {
        let target = target.unwrap();
        if target.file_name() == "open" || target.path().is_file() {
            continue;
        }
        let Ok(files) = fs::read_dir(target.path()) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                continue;
            }
            run_target(
                target.file_name().to_str().unwrap(),
                &fs::read(&path).unwrap(),
            );
        }
    }
}
