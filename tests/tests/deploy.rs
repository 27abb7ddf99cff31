//! `deploy/` and the README's "Three machines" guide, checked: three `goose node`s, each in
//! its own network namespace as on its own machine, started the way the guide starts them
//! (`goose keygen`, then `goose node --config` with `deploy/goose.toml` given its id and
//! address), elect one goose of a keyed flock, reload on SIGHUP (`systemctl reload`) and
//! hand off on SIGTERM (`systemctl stop`). The unit file passes `systemd-analyze verify`.
//!
//! Needs root (network namespaces) and `systemd-analyze` (scripts/ci/prereqs.sh); without
//! them these tests fail, they never skip. Everything is removed when a test ends or
//! unwinds: the processes by pid, then the namespaces.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flock_tests::netns::{node_ip, Fabric};
use flock_tests::procs::{self, goose_binary, TempDir};

/// The port the example config listens on.
const PORT: u16 = 9900;
/// How long a wait may take: the example's timing elects within a few seconds.
const WITHIN: Duration = Duration::from_secs(15);
/// How often a condition is polled.
const POLL: Duration = Duration::from_millis(100);

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A process started in a namespace, killed by pid (SIGKILL) and reaped when dropped.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `goose <args>` inside namespace `ns` (`ip netns exec` execs it: the pid is goose's).
fn goose_in(ns: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).arg(goose_binary());
    command
}

/// `goose <args>` in namespace `ns`, its stdout, bounded by `within` (`timeout` kills it).
fn run_in(ns: &str, args: &[&str], within: Duration) -> String {
    let seconds = format!("{:.1}", within.as_secs_f64());
    let output = Command::new("timeout")
        .args(["-s", "KILL", &seconds, "ip", "netns", "exec", ns])
        .arg(goose_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("goose {args:?} in {ns}: {error}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The guide's config for node `id`: `deploy/goose.toml` with its id and address, the data
/// dir and key where this test keeps them, and the namespaces' addresses for the example's.
fn config_for(id: u16, data_dir: &Path, key: &Path) -> String {
    let template = fs::read_to_string(repo_file("deploy/goose.toml")).expect("deploy/goose.toml");
    for line in [
        "id = 1\n",
        "listen = \"10.0.0.1:9900\"\n",
        "/var/lib/goose",
        "/etc/goose/flock.key",
    ] {
        assert!(template.contains(line), "deploy/goose.toml lacks {line:?}");
    }
    template
        .replace("id = 1\n", &format!("id = {id}\n"))
        .replace(
            "listen = \"10.0.0.1:9900\"",
            &format!("listen = \"10.0.0.{id}:9900\""),
        )
        .replace("/var/lib/goose", &data_dir.display().to_string())
        .replace("/etc/goose/flock.key", &key.display().to_string())
        .replace("10.0.0.", "10.77.0.")
}

/// Which of the three nodes answer `goose`, as `goose whois` from the client namespace sees
/// them (one line per address, in order).
fn geese(client: &str) -> Vec<u16> {
    let addrs: Vec<String> = (1..=3)
        .map(|id| format!("{}:{PORT}", node_ip(id)))
        .collect();
    let mut args = vec!["whois"];
    args.extend(addrs.iter().map(String::as_str));
    let out = run_in(client, &args, Duration::from_secs(3));
    out.lines()
        .zip(1..)
        .filter(|(line, _)| line.trim_end().ends_with(": goose"))
        .map(|(_, id)| id)
        .collect()
}

fn wait_one_goose(client: &str, except: Option<u16>) -> u16 {
    let mut last = Vec::new();
    let found = procs::eventually(WITHIN, POLL, || {
        last = geese(client);
        last.len() == 1 && Some(last[0]) != except
    });
    assert!(found, "no single goose (besides {except:?}): {last:?}");
    last[0]
}

#[test]
fn three_machines_from_the_guide_elect_one_keyed_goose_reload_and_hand_off() {
    let fabric =
        Fabric::new("deploy", &[1, 2, 3]).expect("network namespaces (run the tests as root)");
    let folder = TempDir::new("deploy");
    // "On one machine: goose keygen --out flock.key; copy it to every machine."
    let key = folder.path().join("flock.key");
    let keygen = Command::new(goose_binary())
        .args(["keygen", "--out"])
        .arg(&key)
        .status()
        .expect("goose keygen");
    assert!(keygen.success());
    let mut nodes = Vec::new();
    for id in 1..=3u16 {
        let data_dir = folder.path().join(format!("var-lib-goose-{id}"));
        let config = folder.path().join(format!("goose-{id}.toml"));
        fs::write(&config, config_for(id, &data_dir, &key)).expect("config");
        let log = folder.path().join(format!("node-{id}.log"));
        let child = goose_in(&fabric.node_ns(id))
            .args(["node", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("log"))
            .spawn()
            .expect("goose node in its namespace");
        nodes.push(Running { child, log });
    }
    let client = fabric.client_ns();
    let goose = wait_one_goose(&client, None);

    // "goose ctl --cluster-key-file /etc/goose/flock.key <address> status"
    let key_path = key.display().to_string();
    let goose_addr = format!("{}:{PORT}", node_ip(goose));
    let ctl = [
        "ctl",
        "--cluster-key-file",
        key_path.as_str(),
        goose_addr.as_str(),
        "status",
    ];
    let status = run_in(&client, &ctl, Duration::from_secs(5));
    assert!(status.contains(" members=1,2,3 "), "{status}");
    assert!(status.contains(" drop_bad_mac=0 "), "{status}");
    let unsigned = run_in(&client, &["ctl", &goose_addr, "status"], WITHIN);
    assert!(unsigned.starts_with("err forbidden"), "{unsigned}");

    // "systemctl reload goose": SIGHUP; the node reads its file again and runs on.
    let node = &nodes[usize::from(goose) - 1];
    procs::send_signal(node.child.id(), libc::SIGHUP).expect("SIGHUP");
    assert!(
        procs::eventually(WITHIN, POLL, || node.log().contains("SIGHUP: reloaded")),
        "{}",
        node.log()
    );
    assert_eq!(geese(&client), vec![goose], "the goose kept its role");

    // "systemctl stop goose" on the goose: SIGTERM, a handoff, exit 0.
    let handed = Instant::now();
    procs::send_signal(node.child.id(), libc::SIGTERM).expect("SIGTERM");
    let next = wait_one_goose(&client, Some(goose));
    let took = handed.elapsed();
    let node = &mut nodes[usize::from(goose) - 1];
    let mut status = None;
    procs::eventually(WITHIN, POLL, || {
        status = node.child.try_wait().ok().flatten();
        status.is_some()
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", node.log());
    eprintln!("goose {goose} handed off to {next} in {took:?}");
    drop(nodes);
    drop(fabric);
}

#[test]
fn bare_goose_says_what_it_runs_and_how_to_stop_it() {
    // In a namespace of its own, so that its fixed ports 9900-9904 are free.
    let fabric = Fabric::new("deploy", &[1]).expect("network namespaces (run the tests as root)");
    let folder = TempDir::new("bare");
    let mut child = goose_in(&fabric.node_ns(1))
        .current_dir(folder.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("goose");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    let read = BufReader::new(stdout).read_line(&mut first);
    let _ = procs::send_signal(child.id(), libc::SIGTERM);
    let stopped = procs::eventually(WITHIN, POLL, || child.try_wait().ok().flatten().is_some());
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(read.is_ok_and(|n| n > 0), "no first line");
    assert!(first.contains("local demo flock"), "{first}");
    assert!(first.contains("Ctrl-C stops it"), "{first}");
    assert!(stopped, "goose did not stop on SIGTERM");
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let folder = TempDir::new("unit");
    let unit = fs::read_to_string(repo_file("deploy/goose.service")).expect("deploy/goose.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/goose node --config /etc/goose/goose.toml"));
    // verify checks that ExecStart's program exists: the built one stands in for the
    // installed one.
    let binary = goose_binary().display().to_string();
    let path = folder.path().join("goose.service");
    fs::write(&path, unit.replace("/usr/local/bin/goose", &binary)).expect("unit");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (scripts/ci/prereqs.sh installs it)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // An unknown key is only a warning: none is allowed.
    assert!(stderr.trim().is_empty(), "{stderr}");
}
