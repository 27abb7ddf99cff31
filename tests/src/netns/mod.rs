//! Network namespaces for tests with real processes on a real (virtual) Ethernet: one
//! namespace per node, one for the client (probers, a nemesis, the VIP client), and one
//! holding a bridge that connects them, each attached by a veth pair. Addresses live in
//! 10.77.0.0/24 inside these namespaces only; nothing is routed anywhere else, and the host's
//! own namespace never sees an address or an interface. The soak ([`crate::soak`]) and the
//! virtual-IP harness ([`crate::vip`]) both build their networks here.
//!
//! ```text
//!   ns <p>-n1: eth0 10.77.0.1 ──veth── p1 ┐
//!   …                                      ├─ br0 (ns <p>-br)
//!   ns <p>-n5: eth0 10.77.0.5 ──veth── p5 ┤
//!   ns <p>-c:  eth0 10.77.0.100 ─veth── pc ┘
//! ```
//!
//! A link cut sets the node's bridge port down: frames in and out of that node are lost
//! (the node's own interface loses carrier; its sends may fail or vanish), as if the machine
//! had vanished from the network. This kernel has no `sch_netem` and no tc classifiers, so
//! cuts are link state, not `tc` loss; a cut of one kind of traffic only is an nftables
//! rule inside the node's namespace ([`Fabric::filter`]).
//!
//! Names are `ddg<kind>-<pid>-<run>…`: they carry the pid and a per-run number, so two runs
//! never collide. Dropping the [`Fabric`] (also while panicking) deletes every namespace it
//! created, which destroys the veths and the bridge inside; [`Fabric::sweep_stale`] deletes
//! those of runs whose process is gone (killed too hard to drop anything).

pub mod process;

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The start of every namespace name a fabric creates (then its kind, then `-<pid>-`).
pub const NAME_PREFIX: &str = "ddg";
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

/// The namespaces, veths and bridge of one run; see the module docs.
#[derive(Debug)]
pub struct Fabric {
    prefix: String,
    /// Namespaces created so far, deleted on drop in reverse order.
    created: Vec<String>,
    nodes: Vec<u16>,
}

impl Fabric {
    /// Builds the network for nodes `nodes` (ids in 1..=[`NODE_ID_MAX`]); `kind` (letters
    /// only: `soak`, `vip`) names what it is for in the namespaces' names.
    ///
    /// # Errors
    ///
    /// Why it could not: not root, or an `ip` command failed (with its stderr). What was
    /// built so far is torn down.
    pub fn new(kind: &str, nodes: &[u16]) -> Result<Self, String> {
        require_root(kind)?;
        if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_lowercase()) {
            return Err(format!("fabric kind {kind:?} is not lowercase letters"));
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
                "{NAME_PREFIX}{kind}-{}-{}{}",
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

    /// Node `id`'s IPv4 address.
    pub fn node_ip(&self, id: u16) -> Ipv4Addr {
        node_ip(id)
    }

    /// Loads nftables `ruleset` (the text `nft -f` reads) inside node `id`'s namespace: a
    /// cut of one kind of traffic, leaving the rest (and the link) up. Undo it with
    /// [`Fabric::unfilter`], which deletes the tables named `table`.
    ///
    /// # Errors
    ///
    /// `nft`'s failure, with its stderr.
    pub fn filter(&self, id: u16, ruleset: &str) -> Result<(), String> {
        run_in(&self.node_ns(id), "nft", &["-f", "-"], Some(ruleset))
    }

    /// Deletes nftables table `table` (of family `inet`) in node `id`'s namespace.
    ///
    /// # Errors
    ///
    /// `nft`'s failure, with its stderr (also when the table does not exist).
    pub fn unfilter(&self, id: u16, table: &str) -> Result<(), String> {
        run_in(
            &self.node_ns(id),
            "nft",
            &["delete", "table", "inet", table],
            None,
        )
    }

    /// Deletes the namespaces of earlier runs whose process no longer exists (a run killed
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
                .and_then(|rest| rest.split('-').nth(1))
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
                eprintln!("netns: could not delete network namespace {name}: {error}");
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

/// Fails, saying so, unless this process runs as root: namespaces, veths and the programs
/// started in them need it. Tests call it so that they fail loudly rather than skip.
///
/// # Errors
///
/// Not root: what needs it and what to do.
pub fn require_root(what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and no side effects.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        Ok(())
    } else {
        Err(format!(
            "the {what} test needs root for network namespaces (euid is {euid}); run it as root"
        ))
    }
}

/// A root tool's binary: the first of the usual places that exists, else `name` on `PATH`
/// (Debian puts `ip`, `nft`, `keepalived` in /usr/sbin, which a user's `PATH` may lack).
pub fn sbin(name: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .into_iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs `ip <args>`.
///
/// # Errors
///
/// The command line and its stderr if it could not run or failed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new(sbin("ip")).args(args), "ip", args, None)
}

/// Runs `program <args>` inside namespace `ns` (with `ip netns exec`), `stdin` on its
/// standard input.
///
/// # Errors
///
/// The command line and its stderr if it could not run or failed.
pub fn run_in(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<(), String> {
    let binary = sbin(program);
    let mut command = Command::new(sbin("ip"));
    command.args(["netns", "exec", ns]).arg(&binary).args(args);
    run(&mut command, program, args, stdin)
}

/// Runs `binary <args>` (a path, not a name looked up) inside namespace `ns`, to its end.
///
/// # Errors
///
/// The command line and its stderr if it could not run or failed.
pub fn exec_in(ns: &str, binary: &Path, args: &[&str]) -> Result<(), String> {
    let mut command = Command::new(sbin("ip"));
    command.args(["netns", "exec", ns]).arg(binary).args(args);
    run(&mut command, &binary.display().to_string(), args, None)
}

/// Runs `command` (named `program <args>` in errors) to its end.
fn run(
    command: &mut Command,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(), String> {
    let line = || format!("{program} {}", args.join(" "));
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", line()))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{}: writing its input: {e}", line()))?;
    } // the pipe closes here: the program sees the end of its input
    let output = child
        .wait_with_output()
        .map_err(|e| format!("{}: {e}", line()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            line(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}
