//! The README's three "am I goose" examples (shell, Python, Rust) run against a real flock:
//! on the goose each prints `goose term=<its term> for <s> s more`, on a duck `duck`. The
//! Rust one is `examples/am_i_goose.rs`, shown in the README word for word.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use flock_tests::procs::{self, Flock, Timing};

const README: &str = include_str!("../../README.md");
const EXAMPLE: &str = include_str!("../examples/am_i_goose.rs");
const SETTLE: Duration = Duration::from_secs(15);

/// The code block of `language` in the README's "Am I goose" section.
fn block(language: &str) -> String {
    let section = README
        .split("### Am I goose, with which fencing token, until when?")
        .nth(1)
        .expect("the README's section")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    let fence = format!("```{language}\n");
    let start = section.find(&fence).expect("a block") + fence.len();
    let end = start + section[start..].find("```").expect("its end");
    section[start..end].to_owned()
}

/// The example binary cargo built beside this test (`target/<profile>/examples/`).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this test");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile.join("examples").join("am_i_goose")
}

/// Runs `program args` with `GOOSE_NODE=node`; its trimmed standard output.
fn run(program: &Path, args: &[&str], node: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .env("GOOSE_NODE", node)
        .env("PATH", path_with_goose())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program:?}: {e}"));
    assert!(out.status.success(), "{program:?} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// PATH with the `goose` binary's folder first, for the shell example's `goose whois`.
fn path_with_goose() -> String {
    let goose = procs::goose_binary();
    let folder = goose.parent().expect("a folder").display().to_string();
    format!("{folder}:{}", std::env::var("PATH").unwrap_or_default())
}

#[test]
fn the_readme_examples_tell_goose_term_and_lease() {
    assert_eq!(
        block("rust"),
        EXAMPLE,
        "the README shows examples/am_i_goose.rs"
    );
    let flock = Flock::start(
        3,
        Timing {
            heartbeat_ms: 20,
            election_timeout_ms_min: 300,
            election_timeout_ms_max: 600,
        },
    );
    let (goose, term) = flock.wait_stable(SETTLE).expect("a goose");
    let duck = (goose + 1) % 3;
    let dir = procs::TempDir::new("readme");
    let shell = dir.path().join("example.sh");
    let python = dir.path().join("example.py");
    std::fs::write(&shell, block("sh")).unwrap();
    std::fs::write(&python, block("python")).unwrap();
    let (sh, python3) = (Path::new("sh"), Path::new("python3"));
    let (shell, python) = (shell.display().to_string(), python.display().to_string());
    let rust = example_binary();
    for (index, expect_goose) in [(goose, true), (duck, false)] {
        let node = flock.addr(index).to_string();
        for said in [
            run(sh, &[&shell], &node),
            run(python3, &[&python], &node),
            run(&rust, &[], &node),
        ] {
            let last = said.lines().last().unwrap_or_default().to_owned();
            if !expect_goose {
                assert_eq!(last, "duck", "{said}");
                continue;
            }
            let prefix = format!("goose term={term} for ");
            let left: f64 = last
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(" s more"))
                .and_then(|seconds| seconds.parse().ok())
                .unwrap_or_else(|| panic!("{said:?} is not {prefix}<s> s more"));
            // The lease is at most the goose's: 300 ms × 0.99 − 30 ms.
            assert!((0.0..=0.3).contains(&left), "{said}");
        }
    }
}
