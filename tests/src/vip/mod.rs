//! A virtual IP moved by goose or by keepalived, side by side, on the same network.
//!
//! Three node namespaces and a client namespace on one bridge ([`crate::netns`]); the
//! address [`VIP`] in the nodes' subnet. Each node runs a watcher and the client probes the
//! address every millisecond ([`watch`]); a [`contender::Contender`] moves the address
//! (goose with `--vip`, goose with hooks by hand, or keepalived at a given advertisement
//! interval); the [`scenario`] driver cuts links, cuts election traffic, stops, hands off
//! and kills processes, and [`analysis`] turns the record into figures: failover times,
//! time with two holders, what the client saw. [`tables`] prints them side by side, one markdown table per fault.
//!
//! `cargo run --release -p flock-tests --bin bench_vip` runs the full comparison;
//! `tests/tests/vip.rs` a short one with assertions. Both need root.

pub mod analysis;
pub mod contender;
pub mod scenario;
pub mod watch;

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use analysis::{ms, percentile, TwoHolders};
use scenario::{Outcome, Plan, Stop};
use watch::Micros;

/// The virtual IP, in the nodes' subnet (10.77.0.0/24) and outside their addresses.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
/// Its prefix length.
pub const VIP_PREFIX: u8 = 24;
/// The interface it goes on, in each node's namespace.
pub const VIP_DEV: &str = "eth0";
/// Nodes 1 to this.
pub const NODES: u16 = 3;

/// The figures of `outcomes` (one per contender, in columns), one markdown table per fault.
pub fn tables(plan: &Plan, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let header = |out: &mut String, title: &str| {
        let _ = write!(out, "| {title} |");
        for outcome in outcomes {
            let _ = write!(out, " {} |", outcome.kind.label());
        }
        out.push_str("\n| --- |");
        for _ in outcomes {
            out.push_str(" ---: |");
        }
        out.push('\n');
    };
    let row = |out: &mut String, name: &str, cell: &dyn Fn(&Outcome) -> String| {
        let _ = write!(out, "| {name} |");
        for outcome in outcomes {
            let _ = write!(out, " {} |", cell(outcome));
        }
        out.push('\n');
    };

    if plan.link_cuts > 0 {
        header(
            &mut out,
            &format!("holder's link cut ({} cuts)", plan.link_cuts),
        );
        row(
            &mut out,
            "failover p50 / max (ms): cut → first answer from the new holder",
            &|o| {
                let times: Vec<Micros> = o.link_cuts.iter().filter_map(|c| c.failover).collect();
                p50_max(&times)
            },
        );
        row(&mut out, "cuts with no new holder within 15 s", &|o| {
            o.link_cuts
                .iter()
                .filter(|c| c.failover.is_none())
                .count()
                .to_string()
        });
        row(
            &mut out,
            "two holders at once (cut-off node included), definite / possible: cuts with any; \
             longest (ms)",
            &|o| overlaps(o.link_cuts.iter().map(|c| c.two_holders)),
        );
        row(
            &mut out,
            "answers from another node after the new holder's first",
            &|o| {
                o.link_cuts
                    .iter()
                    .map(|c| c.strays)
                    .sum::<usize>()
                    .to_string()
            },
        );
        row(
            &mut out,
            "longest silence after the link came back (ms)",
            &|o| {
                ms(o.link_cuts
                    .iter()
                    .map(|c| c.silence_after_restore)
                    .max()
                    .unwrap_or(0))
            },
        );
        out.push('\n');
    }

    if plan.election_cuts > 0 {
        header(
            &mut out,
            &format!(
                "holder's election traffic cut for {} s ({} cut{})",
                plan.election_cut_for.as_secs_f64(),
                plan.election_cuts,
                if plan.election_cuts == 1 { "" } else { "s" }
            ),
        );
        let each = |o: &Outcome, f: &dyn Fn(&scenario::ElectionCut) -> String| {
            o.election_cuts.iter().map(f).collect::<Vec<_>>().join(", ")
        };
        row(
            &mut out,
            "two holders at once, definite / possible (ms)",
            &|o| {
                each(o, &|c| {
                    format!(
                        "{} / {}",
                        ms(c.two_holders.definite.total),
                        ms(c.two_holders.possible.total)
                    )
                })
            },
        );
        row(
            &mut out,
            "cut → first answer from another node (ms)",
            &|o| each(o, &|c| c.failover.map_or("none".to_owned(), ms)),
        );
        row(&mut out, "answers while cut, by node", &|o| {
            each(o, &|c| by_node(c.owner, &c.during))
        });
        row(
            &mut out,
            "answers from the heal until settled, by node",
            &|o| each(o, &|c| by_node(c.owner, &c.after)),
        );
        row(&mut out, "changes of the answering node", &|o| {
            each(o, &|c| c.switches.to_string())
        });
        row(&mut out, "longest silence while cut (ms)", &|o| {
            each(o, &|c| ms(c.silence_during))
        });
        row(&mut out, "longest silence after the heal (ms)", &|o| {
            each(o, &|c| ms(c.silence_after))
        });
        row(&mut out, "heal → settled (ms)", &|o| {
            each(o, &|c| c.settled_after.map_or("never".to_owned(), ms))
        });
        out.push('\n');
    }

    let handoffs = |out: &mut String,
                    title: &str,
                    cause: &str,
                    of: &dyn Fn(&Outcome) -> &[Stop]| {
        header(out, title);
        let none = |o: &Outcome| of(o).is_empty();
        row(
            out,
            &format!("failover p50 / max (ms): {cause} → first answer from the new holder"),
            &|o| {
                let times: Vec<Micros> = of(o).iter().filter_map(|s| s.failover).collect();
                p50_max(&times)
            },
        );
        row(
            out,
            &format!("two holders at once, definite / possible: {cause}s with any; longest (ms)"),
            &|o| {
                if none(o) {
                    return "-".to_owned();
                }
                overlaps(of(o).iter().map(|s| s.two_holders))
            },
        );
        row(
            out,
            "answers from another node after the new holder's first",
            &|o| {
                if none(o) {
                    return "-".to_owned();
                }
                of(o).iter().map(|s| s.strays).sum::<usize>().to_string()
            },
        );
        row(out, "longest silence (ms)", &|o| {
            of(o)
                .iter()
                .map(|s| s.silence)
                .max()
                .map_or("-".to_owned(), ms)
        });
    };
    if plan.stops > 0 {
        handoffs(
            &mut out,
            &format!(
                "holder's service stopped (SIGTERM), restarted after the failover ({} stop{})",
                plan.stops,
                if plan.stops == 1 { "" } else { "s" }
            ),
            "SIGTERM",
            &|o| &o.stops,
        );
        row(&mut out, "killed after the grace period", &|o| {
            o.stops.iter().filter(|s| !s.exited).count().to_string()
        });
        out.push('\n');
    }

    if plan.transfers > 0 {
        handoffs(
            &mut out,
            &format!(
                "holder handed off (`ctl transfer`; {} transfer{}; keepalived has none)",
                plan.transfers,
                if plan.transfers == 1 { "" } else { "s" }
            ),
            "transfer",
            &|o| &o.transfers,
        );
        row(&mut out, "transfers not answered `ok`", &|o| {
            if o.transfers.is_empty() {
                return "-".to_owned();
            }
            o.transfers.iter().filter(|s| !s.exited).count().to_string()
        });
        out.push('\n');
    }

    if plan.kills > 0 {
        header(
            &mut out,
            &format!(
                "holder's processes killed with SIGKILL, restarted 1 s after the failover ({} kill{})",
                plan.kills,
                if plan.kills == 1 { "" } else { "s" }
            ),
        );
        row(
            &mut out,
            "failover p50 / max (ms): kill → first answer from the new holder",
            &|o| {
                let times: Vec<Micros> = o.kills.iter().filter_map(|k| k.failover).collect();
                p50_max(&times)
            },
        );
        row(
            &mut out,
            "the dead holder's address stayed while another claimed it",
            &|o| {
                format!(
                    "{} of {}",
                    o.kills.iter().filter(|k| k.held_when_replaced).count(),
                    o.kills.len()
                )
            },
        );
        row(
            &mut out,
            "two holders at once, definite / possible: longest (ms)",
            &|o| {
                let longest = |of: fn(&TwoHolders) -> Micros| {
                    ms(o.kills
                        .iter()
                        .map(|k| of(&k.two_holders))
                        .max()
                        .unwrap_or(0))
                };
                format!(
                    "{} / {}",
                    longest(|t| t.definite.longest),
                    longest(|t| t.possible.longest)
                )
            },
        );
        row(
            &mut out,
            "the restarted service removed the stale address: restart → removed (ms)",
            &|o| {
                o.kills
                    .iter()
                    .map(|k| match (k.held_when_replaced, k.released_after_restart) {
                        (false, _) => "nothing stale".to_owned(),
                        (true, Some(after)) => ms(after),
                        (true, None) => format!(
                            "no (removed by hand after {} s)",
                            scenario::RELEASE_WITHIN.as_secs()
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        out.push('\n');
    }
    if outcomes.iter().any(|o| o.truncated) {
        out.push_str("(the observers hit a bound: some figures are incomplete)\n");
    }
    out
}

/// `0 / 2; 0.0 / 3.2`: of these faults, how many had two holders certainly / possibly, and
/// the longest stretch of each kind.
fn overlaps(faults: impl Iterator<Item = TwoHolders>) -> String {
    let (mut with, mut longest) = ([0_usize; 2], [0; 2]);
    for fault in faults {
        for (kind, overlap) in [fault.definite, fault.possible].iter().enumerate() {
            with[kind] += usize::from(overlap.total > 0);
            longest[kind] = longest[kind].max(overlap.longest);
        }
    }
    format!(
        "{} / {}; {} / {}",
        with[0],
        with[1],
        ms(longest[0]),
        ms(longest[1])
    )
}

fn p50_max(times: &[Micros]) -> String {
    match (percentile(times, 0.5), times.iter().max()) {
        (Some(p50), Some(&max)) => format!("{} / {}", ms(p50), ms(max)),
        _ => "-".to_owned(),
    }
}

/// `n1 (cut) 5, n2 4,321`: answers per node, the cut node marked.
fn by_node(owner: u16, counts: &std::collections::BTreeMap<u16, usize>) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(node, count)| {
            let mark = if *node == owner { " (cut)" } else { "" };
            format!("n{node}{mark} {count}")
        })
        .collect::<Vec<_>>()
        .join(" · ")
}
