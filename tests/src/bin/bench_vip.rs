//! `bench_vip`: a virtual IP moved by goose and by keepalived, side by side, in one run, on
//! the same network namespaces and the same client (see `flock_tests::vip`). Needs root.
//!
//! ```text
//! cargo run --release -p flock-tests --bin bench_vip -- [--cuts N] [--election-cuts N]
//!     [--election-secs S] [--stops N] [--transfers N] [--kills N] [--adverts 1,0.1,0.01]
//!     [--no-goose] [--no-hooks] [--goose <path>] [--timelines]
//! ```
//!
//! Each contender gets a fresh fabric (three nodes, a client probing the address every
//! millisecond) and the same faults: `--cuts` link cuts of the holder (default 20),
//! `--election-cuts` cuts of its election traffic alone for `--election-secs` (default 1 of
//! 5 s), `--stops` graceful stops of its service (SIGTERM, then a restart; default 10),
//! `--transfers` planned handoffs (`ctl transfer`, goose only; default 10), `--kills`
//! SIGKILLs of its processes, then a restart (default 3). The contenders: goose at its
//! default timing with `--vip`, run from a config file as the systemd unit runs it (a kill is
//! followed by the unit's `ExecStopPost`), and again for the kills alone without that stop
//! logic, so that only the restarted node removes the address; goose with
//! `--on-goose`/`--on-duck` hooks that move the address by hand (`--no-hooks` leaves it
//! out; `--no-goose` leaves out every goose), and keepalived at each advertisement interval of
//! `--adverts` (seconds; default its default 1, the common 0.1, and the shortest it
//! accepts, 0.01). Prints one markdown table per fault, two holders at once as *definite*
//! (certainly both holding: a lower bound) / *possible* (an upper bound that every late
//! watcher sample inflates; see `flock_tests::vip::analysis`) (and with `--timelines`, on stderr,
//! what happened in each fault: claims, releases and runs of answers, in ms). Exit 0 when every contender ran, 1
//! if one could not be run (its error is printed), 2 on bad flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use flock_tests::procs;
use flock_tests::vip::contender::Kind;
use flock_tests::vip::scenario::{self, Outcome, Plan};
use flock_tests::vip::tables;

const USAGE: &str = "usage: bench_vip [--cuts N] [--election-cuts N] [--election-secs S] \
                     [--stops N] [--transfers N] [--kills N] [--adverts 1,0.1,0.01] [--no-goose] \
                     [--no-hooks] [--goose <path>] [--timelines]";
/// More faults of one kind than this is a typo, not a benchmark.
const FAULTS_MAX: usize = 1000;
/// Advertisement intervals keepalived accepts, in centiseconds.
const ADVERT_CS_MIN: u16 = 1;
const ADVERT_CS_MAX: u16 = 25_500;

struct Args {
    plan: Plan,
    timelines: bool,
    contenders: Vec<Kind>,
    goose: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut plan = Plan {
        link_cuts: 20,
        election_cuts: 1,
        election_cut_for: Duration::from_secs(5),
        stops: 10,
        transfers: 10,
        kills: 3,
    };
    let mut goose = true;
    let mut hooks = true;
    let mut adverts = vec![
        Kind::KEEPALIVED_DEFAULT,
        Kind::Keepalived { advert_cs: 10 },
        Kind::KEEPALIVED_FASTEST,
    ];
    let mut goose_binary = None;
    let mut timelines = false;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--no-goose" {
            goose = false;
            continue;
        }
        if flag == "--no-hooks" {
            hooks = false;
            continue;
        }
        if flag == "--timelines" {
            timelines = true;
            continue;
        }
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let count = || -> Result<usize, String> {
            value
                .parse::<usize>()
                .ok()
                .filter(|&n| n <= FAULTS_MAX)
                .ok_or_else(|| format!("{flag}: not a number up to {FAULTS_MAX}: {value}"))
        };
        match flag.as_str() {
            "--cuts" => plan.link_cuts = count()?,
            "--election-cuts" => plan.election_cuts = count()?,
            "--stops" => plan.stops = count()?,
            "--transfers" => plan.transfers = count()?,
            "--kills" => plan.kills = count()?,
            "--election-secs" => {
                plan.election_cut_for = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| (0.0..=600.0).contains(s))
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| format!("{flag}: not seconds from 0 to 600: {value}"))?;
            }
            "--adverts" => {
                adverts = value
                    .split(',')
                    .filter(|part| !part.is_empty())
                    .map(|part| {
                        part.parse::<f64>()
                            .ok()
                            .map(|s| (s * 100.0).round())
                            .filter(|cs| {
                                (f64::from(ADVERT_CS_MIN)..=f64::from(ADVERT_CS_MAX)).contains(cs)
                            })
                            .map(|cs| Kind::Keepalived {
                                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                                advert_cs: cs as u16,
                            })
                            .ok_or_else(|| {
                                format!("--adverts: {part} is not seconds from 0.01 to 255")
                            })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--goose" => goose_binary = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let mut contenders = Vec::new();
    if goose {
        contenders.push(Kind::GooseVip { unit: true });
        if hooks {
            contenders.push(Kind::GooseHooks);
        }
    }
    contenders.extend(adverts);
    Ok(Args {
        plan,
        timelines,
        contenders,
        goose: goose_binary,
    })
}

/// Every fault's timeline, for `--timelines`.
fn timelines(outcome: &Outcome) -> String {
    let label = outcome.kind.label();
    let mut text = String::new();
    for (index, cut) in outcome.link_cuts.iter().enumerate() {
        text += &format!(
            "{label}: link cut {index} of n{}\n{}",
            cut.owner, cut.timeline
        );
    }
    for (index, cut) in outcome.election_cuts.iter().enumerate() {
        text += &format!(
            "{label}: election cut {index} of n{}\n{}",
            cut.owner, cut.timeline
        );
    }
    for (index, stop) in outcome.stops.iter().enumerate() {
        text += &format!(
            "{label}: stop {index} of n{}\n{}",
            stop.owner, stop.timeline
        );
    }
    for (index, transfer) in outcome.transfers.iter().enumerate() {
        text += &format!(
            "{label}: transfer {index} of n{}\n{}",
            transfer.owner, transfer.timeline
        );
    }
    for (index, kill) in outcome.kills.iter().enumerate() {
        text += &format!(
            "{label}: kill {index} of n{}\n{}",
            kill.owner, kill.timeline
        );
    }
    text
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("bench_vip: {error}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = &args.goose {
        procs::use_goose_binary(path);
    }
    let goose = procs::goose_binary();
    // goose --vip without the unit's stop logic differs from it in kills alone.
    let kills_only = Plan {
        link_cuts: 0,
        election_cuts: 0,
        stops: 0,
        transfers: 0,
        ..args.plan
    };
    let no_unit = Kind::GooseVip { unit: false };
    let mut runs: Vec<(Kind, Plan)> = args.contenders.iter().map(|k| (*k, args.plan)).collect();
    if args.contenders.contains(&Kind::GooseVip { unit: true }) && args.plan.kills > 0 {
        runs.push((no_unit, kills_only));
    }
    let mut outcomes = Vec::new();
    let mut kill_outcomes = Vec::new();
    let mut failed = false;
    for (kind, plan) in &runs {
        eprintln!("bench_vip: {} …", kind.label());
        match scenario::run(*kind, plan, goose) {
            Ok(outcome) => {
                eprintln!(
                    "bench_vip: {}: settled {} ms after start",
                    kind.label(),
                    outcome.startup / 1000
                );
                if args.timelines {
                    eprint!("{}", timelines(&outcome));
                }
                if *kind == no_unit {
                    kill_outcomes.push(outcome);
                } else {
                    outcomes.push(outcome);
                }
            }
            Err(error) => {
                eprintln!("bench_vip: {}: {error}", kind.label());
                failed = true;
            }
        }
    }
    println!("{}", tables(&args.plan, &outcomes));
    if !kill_outcomes.is_empty() {
        println!("{}", tables(&kills_only, &kill_outcomes));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
