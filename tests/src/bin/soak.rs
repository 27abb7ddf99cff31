//! The long randomized fault soak: real `goose` processes in network namespaces, a nemesis
//! and probers, then the history checker (see `flock_tests::soak`). Needs root.
//!
//! ```text
//! cargo run --release -p flock-tests --bin soak -- --secs 3600 [--seed S] [--bound-ms B]
//!     [--probers P] [--history FILE]
//! ```
//!
//! Prints the duration, faults injected by kind, probes, violations (each with the history
//! around it) and the longest goose gap after a heal. Exit 0 when the checker found nothing
//! and no node exited on its own, 1 otherwise, 2 on bad flags, 3 on a harness failure.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flock_tests::procs::goose_binary;
use flock_tests::soak::{self, SoakConfig};

const USAGE: &str =
    "usage: soak [--secs N] [--seed S] [--bound-ms B] [--probers P] [--history FILE]";

struct Flags {
    secs: u64,
    seed: Option<u64>,
    bound_ms: Option<u64>,
    probers: Option<u16>,
    history: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Flags, String> {
    let mut flags = Flags {
        secs: 3600,
        seed: None,
        bound_ms: None,
        probers: None,
        history: None,
    };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {value}"))
        };
        match flag.as_str() {
            "--secs" => flags.secs = number()?,
            "--seed" => flags.seed = Some(number()?),
            "--bound-ms" => flags.bound_ms = Some(number()?),
            "--probers" => {
                flags.probers =
                    Some(u16::try_from(number()?).map_err(|_| "--probers: too many".to_owned())?);
            }
            "--history" => flags.history = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(flags)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flags = match parse(&args) {
        Ok(flags) => flags,
        Err(error) => {
            eprintln!("soak: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let seed = flags.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut config = SoakConfig::new(
        goose_binary().to_path_buf(),
        Duration::from_secs(flags.secs),
        seed,
    );
    if let Some(bound) = flags.bound_ms {
        config.liveness_bound = Duration::from_millis(bound);
    }
    if let Some(probers) = flags.probers {
        config.probers = probers;
    }
    eprintln!(
        "soak: {} s of faults on {} nodes, seed {seed} (replay the schedule with --seed {seed})",
        flags.secs, config.nodes
    );
    let report = match soak::run(&config) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("soak: harness failure: {error}");
            return ExitCode::from(3);
        }
    };
    if let Some(path) = &flags.history {
        let written = std::fs::File::create(path).and_then(|file| {
            let mut out = std::io::BufWriter::new(file);
            report.history.write_to(&mut out)?;
            out.flush()
        });
        if let Err(error) = written {
            eprintln!("soak: could not write {}: {error}", path.display());
        }
    }
    print!("{}", report.violations_with_excerpts());
    for exit in &report.unexpected_exits {
        println!("UNEXPECTED EXIT {exit}");
    }
    println!("{report}");
    if report.verdict.violations_count() == 0 && report.unexpected_exits.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
