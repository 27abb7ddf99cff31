//! The soak's network: one network namespace per node, one for the probers and the
//! nemesis (the client), and one holding a bridge that connects them, each attached by a
//! veth pair. Addresses live in 10.77.0.0/24 inside these namespaces only; nothing is routed
//! anywhere else, and the host's own namespace never sees an address or an interface.
//!
//! ```text
//!   ns <p>-n1: eth0 10.77.0.1 ──veth── p1 ┐
//!   …                                      ├─ br0 (ns <p>-br)
//!   ns <p>-n5: eth0 10.77.0.5 ──veth── p5 ┤
//!   ns <p>-c:  eth0 10.77.0.100 ─veth── pc ┘
//! ```
//!
//! A link cut sets the node's bridge port down: frames in and out of that node are lost
//! (the node's own interface loses carrier; its sends may fail or vanish). This kernel has
//! no `sch_netem` and no tc classifiers, so cuts are link state, not `tc` loss.
//!
//! Names carry the pid and a per-run number, so two runs never collide. Dropping the
//! [`Fabric`] (also while panicking) deletes every namespace it created, which destroys
//! the veths and the bridge inside; [`Fabric::sweep_stale`] deletes those of runs whose
//! process is gone (killed too hard to drop anything).

use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The start of every namespace name a soak creates.
pub const NAME_PREFIX: &str = "ddgsoak-";
/// Where `ip netns` keeps its named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The client's (probers' and nemesis') address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
/// Node ids must stay below the client's host number.
pub const NODE_ID_MAX: u16 = 99;

/// Node `id`'s address: 10.77.0.`id`.
///
/// # Panics
///
/// If `id` is 0 or above [`NODE_ID_MAX`] (a harness bug, not input).
pub fn node_ip(id: u16) -> Ipv4Addr {
    assert!(
        (1..=NODE_ID_MAX).contains(&id),
        "node id {id} out of 1..={NODE_ID_MAX}"
    );
    Ipv4Addr::new(10, 77, 0, u8::try_from(id).unwrap_or(u8::MAX))
}

/// The namespaces, veths and bridge of one soak; see the module docs.
#[derive(Debug)]
pub struct Fabric {
    prefix: String,
    /// Namespaces created so far, deleted on drop in reverse order.
    created: Vec<String>,
    nodes: Vec<u16>,
}

impl Fabric {
    /// Builds the network for nodes `nodes` (ids in 1..=[`NODE_ID_MAX`]).
    ///
    /// # Errors
    ///
    /// Why it could not: not root, or an `ip` command failed (with its stderr). What was
    /// built so far is torn down.
    pub fn new(nodes: &[u16]) -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions and no side effects.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(format!(
                "the soak needs root for network namespaces (euid is {euid}); run it as root"
            ));
        }
        if let Some(&bad) = nodes.iter().find(|&&id| id == 0 || id > NODE_ID_MAX) {
            return Err(format!("node id {bad} out of 1..={NODE_ID_MAX}"));
        }
        static RUN: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let mut fabric = Self {
            prefix: format!(
                "{NAME_PREFIX}{}-{}{}",
                std::process::id(),
                RUN.fetch_add(1, Ordering::Relaxed),
                nanos % 10_000
            ),
            created: Vec::new(),
            nodes: nodes.to_vec(),
        };
        fabric.build()?; // on error, dropping `fabric` removes what was made
        Ok(fabric)
    }

    fn build(&mut self) -> Result<(), String> {
        let bridge = self.bridge_ns();
        self.add_namespace(&bridge)?;
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        let client = self.client_ns();
        self.add_namespace(&client)?;
        attach(&bridge, "pc", &client, CLIENT_IP)?;
        for id in self.nodes.clone() {
            let ns = self.node_ns(id);
            self.add_namespace(&ns)?;
            attach(&bridge, &format!("p{id}"), &ns, node_ip(id))?;
        }
        Ok(())
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.created.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// The bridge's namespace.
    pub fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// The client's namespace.
    pub fn client_ns(&self) -> String {
        format!("{}-c", self.prefix)
    }

    /// Node `id`'s namespace.
    pub fn node_ns(&self, id: u16) -> String {
        format!("{}-n{id}", self.prefix)
    }

    /// The file that names namespace `name` (for `setns`).
    pub fn ns_path(name: &str) -> PathBuf {
        Path::new(NETNS_DIR).join(name)
    }

    /// Cuts node `id`'s link: its bridge port goes down.
    ///
    /// # Errors
    ///
    /// The `ip` command's failure.
    pub fn cut(&self, id: u16) -> Result<(), String> {
        ip(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            &format!("p{id}"),
            "down",
        ])
    }

    /// Restores node `id`'s link.
    ///
    /// # Errors
    ///
    /// The `ip` command's failure.
    pub fn restore(&self, id: u16) -> Result<(), String> {
        ip(&[
            "-n",
            &self.bridge_ns(),
            "link",
            "set",
            &format!("p{id}"),
            "up",
        ])
    }

    /// Moves the calling thread (only it) into the client namespace: sockets it creates
    /// from then on live there, and keep living there whichever thread uses them.
    ///
    /// # Errors
    ///
    /// If the namespace file cannot be opened or `setns` fails.
    pub fn enter_client(&self) -> io::Result<()> {
        enter(&Self::ns_path(&self.client_ns()))
    }

    /// Deletes the namespaces of earlier soaks whose process no longer exists (a run killed
    /// with SIGKILL cannot drop its fabric). Returns the names deleted.
    pub fn sweep_stale() -> Vec<String> {
        let Ok(entries) = fs::read_dir(NETNS_DIR) else {
            return Vec::new();
        };
        let mut swept = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(NAME_PREFIX)
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let alive = Path::new("/proc").join(pid.to_string()).exists();
            if !alive && ip(&["netns", "del", &name]).is_ok() {
                swept.push(name);
            }
        }
        swept
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for name in self.created.iter().rev() {
            if let Err(error) = ip(&["netns", "del", name]) {
                eprintln!("soak: could not delete network namespace {name}: {error}");
            }
        }
    }
}

/// Joins namespace `ns` to the bridge: a veth pair, `port` on the bridge, `eth0` with
/// `address`/24 in `ns`. Both ends are created directly inside their namespaces, so the
/// host's namespace never holds either name.
fn attach(bridge: &str, port: &str, ns: &str, address: Ipv4Addr) -> Result<(), String> {
    ip(&[
        "-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["-n", bridge, "link", "set", port, "master", "br0"])?;
    ip(&["-n", bridge, "link", "set", port, "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{address}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])
}

/// Moves the calling thread into the network namespace named by `path`.
///
/// # Errors
///
/// If the file cannot be opened or `setns` fails.
pub fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns(2) on a valid open fd of a namespace file; it changes only the calling
    // thread's network namespace.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `ip` binary: the first of the usual places that exists, else `ip` on `PATH`.
fn ip_binary() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("ip")
}

/// Runs `ip <args>`.
///
/// # Errors
///
/// The command line and its stderr if it could not run or failed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new(ip_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
