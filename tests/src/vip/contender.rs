//! What moves the virtual IP: a goose flock (with `--vip`, or with hooks that move it by
//! hand), or keepalived. Each runs one process per node
//! namespace, started, killed and restarted by pid, with its files (data dirs, configs, pid
//! files, logs) in the run's temporary folder. Nothing outlives a run killed too hard to
//! drop: every process gets SIGKILL when the thread that started it ends
//! ([`crate::netns::process`]), and keepalived's VRRP child asks for the same when its
//! parent dies.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::process::{NodeProcess, NodeSpec};
use crate::netns::{self, sbin, Fabric};
use crate::procs::Timing;

use super::{NODES, VIP, VIP_DEV, VIP_PREFIX};

/// The port goose nodes listen on (peer frames, probes, control), at their own addresses.
pub const GOOSE_PORT: u16 = 7000;
/// The control token goose nodes take commands with from the client's namespace
/// (`ctl transfer`): control from anywhere but loopback needs one.
pub const CONTROL_TOKEN: &str = "ddgvip";
/// The systemd unit whose `ExecStopPost` the `goose --vip` contender runs after a kill, as
/// systemd would: the repository's own, so the test checks the line users install.
const UNIT_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/goose.service");
/// The binary and config file the unit names, replaced by the run's own.
const UNIT_BINARY: &str = "/usr/local/bin/goose";
const UNIT_CONFIG: &str = "/etc/goose/goose.toml";
/// The nftables table (family `inet`) that holds an election cut.
pub const FILTER_TABLE: &str = "ddgvip";
/// How long a process may take to exit after SIGTERM before it is killed: a goose hands off
/// within `election_timeout_max` and waits for its duck hook; keepalived sends its last
/// advertisement and removes the address at once.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// The pause between two checks of whether a stopped process has exited.
const STOP_POLL: Duration = Duration::from_millis(2);
/// keepalived's virtual router id (any; one router on this bridge).
const VRID: u8 = 51;
/// keepalived's priority on node `id` is `PRIORITY_BASE + PRIORITY_STEP × id`: distinct, as
/// its documentation recommends, with `nopreempt` so that a node coming back does not take
/// the address back (one move per fault, as with goose). With equal priorities both
/// backups took over at the same instant when the master stopped, and the announcements of
/// the one that then yielded, arriving last, sent the client to a node without the address
/// until the winner's second announcement five seconds later: a configuration keepalived
/// advises against, so not the one compared.
const PRIORITY_BASE: u8 = 50;
const PRIORITY_STEP: u8 = 50;

/// Which mechanism moves the address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `goose node` at the contract's default timing, with `--on-goose`/`--on-duck` hooks
    /// that add and remove the address with `ip` and announce it with `arping`: what a user
    /// can do by hand today.
    GooseHooks,
    /// `goose node --vip` at the contract's default timing, from a config file as the
    /// systemd unit runs it. With `unit`, a kill is followed by the unit's `ExecStopPost`
    /// (`goose vip-release`), as systemd runs it once the node has gone; without, only the
    /// restarted node removes what the killed one held.
    GooseVip {
        /// Whether the unit's stop logic runs after a kill.
        unit: bool,
    },
    /// keepalived (VRRP) advertising every `advert_cs` centiseconds: 100 is its default
    /// (VRRPv2, whole seconds only); below 100 it runs VRRPv3, whose interval keepalived
    /// accepts down to 1 centisecond.
    Keepalived {
        /// The advertisement interval, in centiseconds.
        advert_cs: u16,
    },
}

impl Kind {
    /// keepalived at its default advertisement interval, 1 s.
    pub const KEEPALIVED_DEFAULT: Self = Self::Keepalived { advert_cs: 100 };
    /// keepalived at the shortest interval it accepts, 0.01 s (VRRPv3).
    pub const KEEPALIVED_FASTEST: Self = Self::Keepalived { advert_cs: 1 };

    /// Its name in tables.
    pub fn label(&self) -> String {
        match self {
            Self::GooseHooks => "goose with hooks (by hand)".to_owned(),
            Self::GooseVip { unit: true } => "goose --vip (systemd unit)".to_owned(),
            Self::GooseVip { unit: false } => "goose --vip, no ExecStopPost".to_owned(),
            Self::Keepalived { advert_cs } => {
                format!("keepalived, advert {}", seconds(*advert_cs))
            }
        }
    }

    /// The nftables ruleset that cuts its election traffic, and nothing else (not the
    /// client's probes, not ARP), when loaded in a node's namespace.
    pub fn election_cut(&self) -> String {
        let matches: &[&str] = match self {
            Self::GooseHooks | Self::GooseVip { .. } => &["udp dport 7000", "udp sport 7000"],
            // VRRP is IP protocol 112, unicast or multicast alike.
            Self::Keepalived { .. } => &["meta l4proto 112"],
        };
        let mut rules = String::new();
        for chain in ["input", "output"] {
            let _ = write!(
                rules,
                "  chain {chain} {{ type filter hook {chain} priority 0; policy accept;"
            );
            for m in matches {
                let _ = write!(rules, " {m} drop;");
            }
            rules.push_str(" }\n");
        }
        format!("table inet {FILTER_TABLE} {{\n{rules}}}\n")
    }

    /// Whether it has a planned handoff (`ctl transfer`): goose does, keepalived not.
    pub fn transfers(&self) -> bool {
        !matches!(self, Self::Keepalived { .. })
    }

    /// How long a failover may take at most when the holder vanishes, by the mechanism's
    /// own rules (not a measured figure).
    pub fn failover_expected_max(&self) -> Duration {
        match self {
            // Voters wait out the loyalty window, then their own election timeout; a split
            // vote costs one more.
            Self::GooseHooks | Self::GooseVip { .. } => Timing::DEFAULT.election_timeout_max() * 2,
            // Master_Down_Interval = 3 × advert + skew (skew < advert).
            Self::Keepalived { advert_cs } => Duration::from_millis(u64::from(*advert_cs) * 10 * 4),
        }
    }
}

fn seconds(centis: u16) -> String {
    if centis.is_multiple_of(100) {
        format!("{} s", centis / 100)
    } else {
        format!("{} s", f64::from(centis) / 100.0)
    }
}

/// The processes of one contender, one per node.
#[derive(Debug)]
pub struct Contender {
    kind: Kind,
    /// Node `i + 1` at index `i`.
    procs: Vec<NodeProcess>,
    folder: PathBuf,
    /// The goose binary.
    goose: PathBuf,
    /// Node `i + 1`'s namespace at index `i`.
    namespaces: Vec<String>,
}

impl Contender {
    /// Writes its files into `folder` and starts it on every node of `fabric`.
    ///
    /// # Errors
    ///
    /// A file that could not be written or a process that could not be started (those
    /// started are killed when the half-built contender drops).
    pub fn start(kind: Kind, fabric: &Fabric, folder: &Path, goose: &Path) -> Result<Self, String> {
        let mut contender = Self {
            kind,
            procs: Vec::new(),
            folder: folder.to_path_buf(),
            goose: goose.to_path_buf(),
            namespaces: (1..=NODES).map(|id| fabric.node_ns(id)).collect(),
        };
        for id in 1..=NODES {
            let spec = match kind {
                Kind::GooseHooks => goose_spec(fabric, folder, goose, id),
                Kind::GooseVip { .. } => goose_vip_spec(fabric, folder, goose, id)?,
                Kind::Keepalived { advert_cs } => keepalived_spec(fabric, folder, id, advert_cs)?,
            };
            let mut process = NodeProcess::new(spec);
            process.spawn()?;
            contender.procs.push(process);
        }
        Ok(contender)
    }

    /// Which mechanism it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Kills everything it runs on node `id` with SIGKILL, as a crash or the OOM killer
    /// would: nothing of it gets to remove the address. For `goose --vip` under the unit,
    /// the unit's `ExecStopPost` then runs, as systemd runs it once the process is reaped.
    ///
    /// # Errors
    ///
    /// A signal that could not be sent; the unit's stop logic failing.
    pub fn kill9(&mut self, id: u16) -> Result<(), String> {
        let process = self.process(id)?;
        if let Kind::Keepalived { .. } = self.kind {
            // Freeze the parent first, or it would respawn the VRRP child it sees die.
            process.signal(libc::SIGSTOP)?;
            self.kill_vrrp_child(id);
        }
        self.process_mut(id)?.kill9()?;
        if self.kind == (Kind::GooseVip { unit: true }) {
            self.stop_post(id)?;
        }
        Ok(())
    }

    /// The unit's `ExecStopPost` for node `id`, from the repository's unit file, with the
    /// run's binary and node `id`'s config file in place of the installed ones.
    fn stop_post(&self, id: u16) -> Result<(), String> {
        let unit = fs::read_to_string(UNIT_FILE).map_err(|e| format!("{UNIT_FILE}: {e}"))?;
        let line = unit
            .lines()
            .find_map(|line| line.strip_prefix("ExecStopPost="))
            .ok_or_else(|| format!("{UNIT_FILE} has no ExecStopPost"))?;
        let config = goose_vip_config(&self.folder, id).display().to_string();
        let mut words = line.split_whitespace();
        if words.next() != Some(UNIT_BINARY) {
            return Err(format!(
                "{UNIT_FILE}: ExecStopPost does not run {UNIT_BINARY}"
            ));
        }
        let args: Vec<&str> = words
            .map(|word| if word == UNIT_CONFIG { &config } else { word })
            .collect();
        let ns = self
            .namespaces
            .get(usize::from(id).wrapping_sub(1))
            .ok_or_else(|| format!("no node {id}"))?;
        netns::exec_in(ns, &self.goose, &args)
    }

    /// Hands the goose off from node `id` (`goose ctl … transfer` from the client's
    /// namespace, as an operator would); returns whether it answered `ok`.
    ///
    /// # Errors
    ///
    /// keepalived (no handoff), or `goose ctl` could not run.
    pub fn transfer(&self, fabric: &Fabric, id: u16) -> Result<bool, String> {
        if !self.kind.transfers() {
            return Err(format!("{} has no handoff", self.kind.label()));
        }
        let addr = format!("{}:{GOOSE_PORT}", fabric.node_ip(id));
        let args = ["ctl", "--token", CONTROL_TOKEN, &addr, "transfer"];
        Ok(netns::exec_in(&fabric.client_ns(), &self.goose, &args).is_ok())
    }

    /// Stops node `id`'s process as a service manager does: SIGTERM, then SIGKILL if it
    /// has not exited within [`STOP_GRACE`]. A goose hands off; keepalived advertises
    /// priority 0 and removes the address. Returns whether it exited on its own.
    ///
    /// # Errors
    ///
    /// A signal that could not be sent.
    pub fn stop(&mut self, id: u16) -> Result<bool, String> {
        let process = self.process_mut(id)?;
        process.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if process.exited().is_some() {
                return Ok(true);
            }
            thread::sleep(STOP_POLL);
        }
        self.kill9(id)?;
        Ok(false)
    }

    /// Starts node `id`'s process again (as systemd's `Restart=` would), on its old files.
    ///
    /// # Errors
    ///
    /// It could not be started (or is running).
    pub fn restart(&mut self, id: u16) -> Result<(), String> {
        if let Kind::Keepalived { .. } = self.kind {
            for file in pid_files(&self.folder, id) {
                let _ = fs::remove_file(file);
            }
        }
        self.process_mut(id)?.spawn().map(drop)
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u16, lines: usize) -> String {
        self.process(id)
            .map(|process| process.log_tail(lines))
            .unwrap_or_default()
    }

    fn process(&self, id: u16) -> Result<&NodeProcess, String> {
        self.procs
            .get(usize::from(id).wrapping_sub(1))
            .ok_or_else(|| format!("no node {id}"))
    }

    fn process_mut(&mut self, id: u16) -> Result<&mut NodeProcess, String> {
        self.procs
            .get_mut(usize::from(id).wrapping_sub(1))
            .ok_or_else(|| format!("no node {id}"))
    }

    /// SIGKILL to keepalived's VRRP child on node `id`, by the pid its pid file names, if
    /// that pid is still a child of our keepalived there (a stale file names nothing).
    fn kill_vrrp_child(&self, id: u16) {
        let Some(parent) = self.process(id).ok().and_then(NodeProcess::pid) else {
            return;
        };
        let [_, vrrp, _] = pid_files(&self.folder, id);
        let Some(pid) = fs::read_to_string(&vrrp)
            .ok()
            .and_then(|text| text.trim().parse::<libc::pid_t>().ok())
        else {
            return;
        };
        if parent_of(pid) == Some(parent) {
            // SAFETY: kill(2) on a pid whose parent is our own unreaped child: it is that
            // child's VRRP process, not a reused pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if let Kind::Keepalived { .. } = self.kind {
            for id in 1..=NODES {
                if let Ok(process) = self.process(id) {
                    let _ = process.signal(libc::SIGSTOP);
                }
                self.kill_vrrp_child(id);
            }
        }
        // Dropping the processes kills each by pid and reaps it.
        self.procs.clear();
    }
}

/// The parent pid of `pid`, from /proc.
fn parent_of(pid: libc::pid_t) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid …; comm may hold spaces and parentheses, so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn goose_spec(fabric: &Fabric, folder: &Path, binary: &Path, id: u16) -> NodeSpec {
    let ip = sbin("ip").display().to_string();
    let arping = sbin("arping").display().to_string();
    let address = format!("{VIP}/{VIP_PREFIX}");
    let mut args: Vec<String> = vec![
        "node".into(),
        "--id".into(),
        id.to_string(),
        "--listen".into(),
        format!("{}:{GOOSE_PORT}", fabric.node_ip(id)),
        "--data-dir".into(),
        folder.join(format!("goose-{id}")).display().to_string(),
        "--control-token".into(),
        CONTROL_TOKEN.into(),
        // The hooks by hand: add the address and announce it once (in the background, so
        // that arping's one-second wait for replies never delays a duck hook waiting
        // behind); remove it.
        "--on-goose".into(),
        format!("{ip} addr replace {address} dev {VIP_DEV} && {{ {arping} -q -U -c 1 -I {VIP_DEV} {VIP} & }}"),
        "--on-duck".into(),
        format!("{ip} addr del {address} dev {VIP_DEV}"),
    ];
    for peer in (1..=NODES).filter(|&peer| peer != id) {
        args.push("--peer".into());
        args.push(format!("{peer}={}:{GOOSE_PORT}", fabric.node_ip(peer)));
    }
    args.extend(Timing::DEFAULT.flags());
    NodeSpec {
        id,
        namespace: Fabric::ns_path(&fabric.node_ns(id)),
        binary: binary.to_path_buf(),
        args,
        log: folder.join(format!("goose-{id}.log")),
    }
}

/// Node `id`'s config file under `goose --vip`.
fn goose_vip_config(folder: &Path, id: u16) -> PathBuf {
    folder.join(format!("goose-{id}.toml"))
}

/// `goose node --config <file>` with `vip` and `vip-dev` in the file, as the systemd unit
/// runs it (the unit's stop logic reads the same file).
fn goose_vip_spec(
    fabric: &Fabric,
    folder: &Path,
    binary: &Path,
    id: u16,
) -> Result<NodeSpec, String> {
    let peers: Vec<String> = (1..=NODES)
        .map(|peer| format!("\"{peer}={}:{GOOSE_PORT}\"", fabric.node_ip(peer)))
        .collect();
    let data_dir = folder.join(format!("goose-{id}"));
    let timing = Timing::DEFAULT;
    let config = format!(
        "id = {id}\nlisten = \"{}:{GOOSE_PORT}\"\npeer = [{}]\ndata-dir = {:?}\n\
         control-token = \"{CONTROL_TOKEN}\"\nheartbeat-ms = {}\n\
         election-timeout-ms = \"{}-{}\"\nvip = [\"{VIP}/{VIP_PREFIX}\"]\n\
         vip-dev = [\"{VIP_DEV}\"]\n",
        fabric.node_ip(id),
        peers.join(", "),
        data_dir.display().to_string(),
        timing.heartbeat_ms,
        timing.election_timeout_ms_min,
        timing.election_timeout_ms_max,
    );
    let file = goose_vip_config(folder, id);
    fs::write(&file, config).map_err(|e| format!("write {}: {e}", file.display()))?;
    Ok(NodeSpec {
        id,
        namespace: Fabric::ns_path(&fabric.node_ns(id)),
        binary: binary.to_path_buf(),
        args: vec!["node".into(), "--config".into(), file.display().to_string()],
        log: folder.join(format!("goose-{id}.log")),
    })
}

/// keepalived's three pid files on node `id`: parent, VRRP child, checker child.
fn pid_files(folder: &Path, id: u16) -> [PathBuf; 3] {
    ["pid", "vrrp.pid", "checkers.pid"]
        .map(|suffix| folder.join(format!("keepalived-{id}.{suffix}")))
}

fn keepalived_spec(
    fabric: &Fabric,
    folder: &Path,
    id: u16,
    advert_cs: u16,
) -> Result<NodeSpec, String> {
    let peers: String = (1..=NODES)
        .filter(|&peer| peer != id)
        .map(|peer| format!("    {}\n", fabric.node_ip(peer)))
        .collect();
    let version = if advert_cs.is_multiple_of(100) { 2 } else { 3 };
    let config = format!(
        "global_defs {{\n  router_id node{id}\n  vrrp_version {version}\n}}\n\
         vrrp_instance VIP {{\n  state BACKUP\n  nopreempt\n  interface {VIP_DEV}\n  \
         virtual_router_id {VRID}\n  priority {}\n  advert_int {}\n  \
         unicast_src_ip {}\n  unicast_peer {{\n{peers}  }}\n  \
         virtual_ipaddress {{\n    {VIP}/{VIP_PREFIX} dev {VIP_DEV}\n  }}\n}}\n",
        PRIORITY_BASE
            .saturating_add(PRIORITY_STEP.saturating_mul(u8::try_from(id).unwrap_or(u8::MAX))),
        seconds(advert_cs).trim_end_matches(" s"),
        fabric.node_ip(id),
    );
    let file = folder.join(format!("keepalived-{id}.conf"));
    fs::write(&file, config).map_err(|e| format!("write {}: {e}", file.display()))?;
    let [parent, vrrp, checkers] = pid_files(folder, id);
    let path = |p: &PathBuf| p.display().to_string();
    Ok(NodeSpec {
        id,
        namespace: Fabric::ns_path(&fabric.node_ns(id)),
        binary: sbin("keepalived"),
        args: vec![
            "--use-file".into(),
            path(&file),
            "--vrrp".into(),
            "--dont-fork".into(),
            "--log-console".into(),
            "--log-detail".into(),
            "--no-syslog".into(),
            "--pid".into(),
            path(&parent),
            "--vrrp_pid".into(),
            path(&vrrp),
            "--checkers_pid".into(),
            path(&checkers),
        ],
        log: folder.join(format!("keepalived-{id}.log")),
    })
}
