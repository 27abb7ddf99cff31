//! A randomized fault soak with real `goose` processes, and the checker that judges it.
//!
//! [`run`] builds a [`Fabric`] (a network namespace per node, one for the client, a
//! bridge between them), starts `goose node` processes in their namespaces, and lets
//! probers ([`prober`]) record every `whois-goose` while the [`nemesis`] kills, pauses,
//! stops, partitions and cuts links for the set duration. Then it heals everything, waits
//! for a goose, and hands the whole [`history::History`] to [`check::check`], which proves
//! one goose per term, a linearizable goose, terms that never go back, and a goose within
//! the bound after every heal.
//!
//! Needs root (namespaces); without it [`run`] fails with a clear error rather than
//! skipping. Everything it creates (namespaces, veths, the bridge, processes, the data
//! folder) is removed when it returns or unwinds.

pub mod check;
pub mod history;
pub mod nemesis;
pub mod prober;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::process::{NodeProcess, NodeSpec};
use crate::netns::{self as net, Fabric};
use crate::procs::{TempDir, Timing};
use check::{Rule, Verdict};
use history::{History, Micros};
use nemesis::{FaultKind, Nemesis, NemesisConfig};
use prober::{ProberConfig, Sightings};

/// Every node listens on this port, each at its own address in its own namespace.
pub const NODE_PORT: u16 = 7000;
/// Probe lines printed before each violation's evidence (plus every fault in the window).
pub const EXCERPT_PROBE_LINES_MAX: usize = 80;
/// How far back the excerpt of a violation reaches (faults long before still show).
pub const EXCERPT_BEFORE: Micros = 3_000_000;

/// What to run.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// The `goose` binary.
    pub binary: PathBuf,
    /// Nodes in the flock.
    pub nodes: u16,
    /// How long the nemesis injects faults (startup and the final heal come on top).
    pub duration: Duration,
    /// Seed of the nemesis's and probers' choices (the processes' timing is not seeded, so
    /// a seed replays the schedule, not the run).
    pub seed: u64,
    /// The nodes' heartbeat and election timeout.
    pub timing: Timing,
    /// A goose must answer within this long of every heal.
    pub liveness_bound: Duration,
    /// Prober threads.
    pub probers: u16,
    /// How long a prober waits for a reply.
    pub probe_timeout: Duration,
    /// A prober's pause between probes.
    pub probe_pause: Duration,
    /// The nemesis's knobs.
    pub faults_active_max: usize,
    /// A burst of faults lasts at most this long before a full heal.
    pub burst_max: Duration,
}

impl SoakConfig {
    /// Five nodes at the contract's default timing, a 5 s liveness bound, six probers.
    pub fn new(binary: PathBuf, duration: Duration, seed: u64) -> Self {
        Self {
            binary,
            nodes: 5,
            duration,
            seed,
            timing: Timing::DEFAULT,
            liveness_bound: Duration::from_secs(5),
            probers: 6,
            probe_timeout: Duration::from_millis(300),
            probe_pause: Duration::from_millis(2),
            faults_active_max: 3,
            burst_max: Duration::from_secs(8),
        }
    }
}

/// What a soak did and what the checker found.
#[derive(Debug)]
pub struct Report {
    /// The settings.
    pub config: SoakConfig,
    /// Wall time from the first node's start to the last probe.
    pub elapsed: Duration,
    /// Everything recorded.
    pub history: History,
    /// The checker's findings.
    pub verdict: Verdict,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Processes that exited without being killed, with their log tails.
    pub unexpected_exits: Vec<String>,
    /// The namespaces' common prefix (for the record).
    pub namespaces: String,
}

impl Report {
    /// Faults injected, all kinds.
    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Every violation, each with the history around it.
    pub fn violations_with_excerpts(&self) -> String {
        let mut text = String::new();
        for violation in &self.verdict.violations {
            let (from, to) = violation.span();
            let (from, to) = (
                from.saturating_sub(EXCERPT_BEFORE),
                to.saturating_add(50_000),
            );
            let nodes = violation.nodes();
            text.push_str(&format!(
                "VIOLATION {violation}\n--- history {}..{}, probes to nodes {nodes:?} ---\n{}\n\n",
                history::show(from),
                history::show(to),
                self.history
                    .excerpt(from, to, &nodes, EXCERPT_PROBE_LINES_MAX)
            ));
        }
        text
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.verdict;
        writeln!(
            f,
            "soak: {} nodes, timing {}, seed {}, namespaces {}*",
            self.config.nodes, self.config.timing, self.config.seed, self.namespaces
        )?;
        writeln!(
            f,
            "duration: {:.1} s of faults, {:.1} s in all",
            self.config.duration.as_secs_f64(),
            self.elapsed.as_secs_f64()
        )?;
        let kinds: Vec<String> = FaultKind::ALL
            .iter()
            .map(|kind| format!("{} {}", kind.name(), self.faults.get(kind).unwrap_or(&0)))
            .collect();
        writeln!(f, "faults: {} ({})", self.faults_total(), kinds.join(", "))?;
        writeln!(
            f,
            "probes: {} ({} answered, {} goose, {} without reply)",
            self.history.probes.len(),
            v.answers,
            v.goose_answers,
            v.timeouts
        )?;
        let rules: Vec<String> = Rule::ALL
            .iter()
            .map(|rule| format!("{rule:?} {}", v.counts.get(rule).unwrap_or(&0)))
            .collect();
        writeln!(
            f,
            "violations: {} ({})",
            v.violations_count(),
            rules.join(", ")
        )?;
        let gaps: Vec<Micros> = v.heal_gaps.iter().filter_map(|h| h.gap).collect();
        let mean = if gaps.is_empty() {
            0
        } else {
            gaps.iter().sum::<Micros>() / gaps.len() as Micros
        };
        writeln!(
            f,
            "goose after heal: {} heals, gap max {} ms, mean {} ms (bound {} ms)",
            v.heal_gaps.len(),
            v.heal_gap_max().map_or("-".to_owned(), |g| {
                if g == Micros::MAX {
                    "none".to_owned()
                } else {
                    (g / 1000).to_string()
                }
            }),
            mean / 1000,
            self.config.liveness_bound.as_millis()
        )?;
        write!(f, "unexpected exits: {}", self.unexpected_exits.len())
    }
}

/// Runs one soak; see the module docs.
///
/// # Errors
///
/// A harness failure: not root, a namespace or process that could not be made, a signal
/// that could not be sent. (Violations are not errors: they are in the report.)
pub fn run(config: &SoakConfig) -> Result<Report, String> {
    let swept = Fabric::sweep_stale();
    if !swept.is_empty() {
        eprintln!("soak: removed stale namespaces of dead runs: {swept:?}");
    }
    if config.nodes == 0 || config.nodes > net::NODE_ID_MAX {
        return Err(format!("nodes must be in 1..={}", net::NODE_ID_MAX));
    }
    let ids: Vec<u16> = (1..=config.nodes).collect();
    let fabric = Fabric::new("soak", &ids)?;
    let folder = TempDir::new("soak");
    let token = format!("soak{:x}", config.seed ^ u64::from(std::process::id()));
    let addrs: Vec<SocketAddr> = ids
        .iter()
        .map(|&id| SocketAddr::from((net::node_ip(id), NODE_PORT)))
        .collect();
    let nodes: Vec<NodeProcess> = ids
        .iter()
        .map(|&id| NodeProcess::new(node_spec(config, &fabric, &folder, &addrs, id, &token)))
        .collect();
    let start = Instant::now();
    let client = Fabric::ns_path(&fabric.client_ns());
    let outcome = thread::scope(|scope| {
        thread::Builder::new()
            .name("nemesis".to_owned())
            .spawn_scoped(scope, || {
                drive(
                    config,
                    &fabric,
                    nodes,
                    &addrs,
                    token.clone(),
                    start,
                    &client,
                )
            })
            .map_err(|e| format!("spawn nemesis: {e}"))?
            .join()
            .map_err(|_| "the nemesis thread panicked".to_owned())?
    });
    let (history, unexpected_exits) = outcome?;
    let elapsed = start.elapsed();
    let verdict = check::check(
        &history,
        Micros::try_from(config.liveness_bound.as_micros()).unwrap_or(Micros::MAX),
    );
    let mut faults = BTreeMap::new();
    for event in &history.events {
        if let Some(kind) = FaultKind::of(&event.kind) {
            *faults.entry(kind).or_insert(0) += 1;
        }
    }
    let namespaces = fabric.bridge_ns().trim_end_matches("-br").to_owned();
    drop(fabric);
    Ok(Report {
        config: config.clone(),
        elapsed,
        history,
        verdict,
        faults,
        unexpected_exits,
        namespaces,
    })
}

fn node_spec(
    config: &SoakConfig,
    fabric: &Fabric,
    folder: &TempDir,
    addrs: &[SocketAddr],
    id: u16,
    token: &str,
) -> NodeSpec {
    let mut args: Vec<String> = vec![
        "node".into(),
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        addrs[usize::from(id - 1)].to_string(),
        "--data-dir".into(),
        folder.path().join(id.to_string()).display().to_string(),
        "--control-token".into(),
        token.to_owned(),
    ];
    for (index, addr) in addrs.iter().enumerate() {
        if index + 1 != usize::from(id) {
            args.push("--peer".into());
            args.push(format!("{}={addr}", index + 1));
        }
    }
    args.extend(config.timing.flags());
    NodeSpec {
        id,
        namespace: Fabric::ns_path(&fabric.node_ns(id)),
        binary: config.binary.clone(),
        args,
        log: folder.path().join(format!("node-{id}.log")),
    }
}

/// The nemesis thread: enters the client namespace, starts probers and nodes, runs the
/// faults, stops the probers and kills the nodes (they die with this thread in any case).
fn drive(
    config: &SoakConfig,
    fabric: &Fabric,
    nodes: Vec<NodeProcess>,
    addrs: &[SocketAddr],
    token: String,
    start: Instant,
    client: &std::path::Path,
) -> Result<(History, Vec<String>), String> {
    net::enter(client).map_err(|e| format!("setns into {}: {e}", client.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    let sightings = Arc::new(Sightings::default());
    let targets: Vec<(u16, SocketAddr)> = addrs
        .iter()
        .enumerate()
        .map(|(index, &addr)| (u16::try_from(index + 1).unwrap_or(u16::MAX), addr))
        .collect();
    let configs = (0..config.probers)
        .map(|prober| ProberConfig {
            prober,
            targets: targets.clone(),
            timeout: config.probe_timeout,
            pause: config.probe_pause,
            seed: config.seed.wrapping_add(u64::from(prober) + 1),
        })
        .collect();
    let handles = prober::spawn_all(
        configs,
        client.to_path_buf(),
        start,
        stop.clone(),
        sightings.clone(),
    )?;
    let nemesis_config = NemesisConfig {
        faults_active_max: config.faults_active_max,
        burst_max: config.burst_max,
        liveness_bound: config.liveness_bound,
    };
    let mut nemesis = Nemesis::new(
        fabric,
        nodes,
        addrs.to_vec(),
        token,
        nemesis_config,
        start,
        config.seed,
        &sightings,
    );
    let outcome = nemesis
        .start_all()
        .and_then(|()| nemesis.run_until(Instant::now() + config.duration));
    // Stop and collect the probers whatever happened, so none outlives the soak.
    stop.store(true, Ordering::Relaxed);
    let mut history = History::default();
    let mut prober_errors = Vec::new();
    for handle in handles {
        match handle.join() {
            Ok(Ok(records)) => history.probes.extend(records),
            Ok(Err(error)) => prober_errors.push(error),
            Err(_) => prober_errors.push("a prober panicked".to_owned()),
        }
    }
    let unexpected_exits = std::mem::take(&mut nemesis.unexpected_exits);
    history.events = std::mem::take(&mut nemesis.events);
    drop(nemesis.into_nodes()); // SIGKILL by pid and reap, before the namespaces go
    outcome?;
    if let Some(error) = prober_errors.into_iter().next() {
        return Err(error);
    }
    Ok((history, unexpected_exits))
}
