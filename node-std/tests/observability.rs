//! Seeing the flock, with real `goose` processes on 127.0.0.1: `--http` (its JSON, metrics
//! checked by `promtool` and scraped by a real Prometheus, `/healthz` flipping when the node
//! is stopped or partitioned away, the page in headless Chromium), `goose whois` and
//! `goose ctl` exit codes and signed answers, the reasons in the logs, and the dashboard
//! driven in tmux.
//!
//! Every child is killed by pid (the harness's flocks, Prometheus, Chromium) or ends with
//! its tmux session; every wait is bounded. The tests run one at a time (a lock).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use flock_tests::procs::{self, Flock, TempDir, Timing};

const GOOSE: &str = env!("CARGO_BIN_EXE_goose");
const QUICK: Timing = Timing {
    heartbeat_ms: 20,
    election_timeout_ms_min: 100,
    election_timeout_ms_max: 200,
};
/// Generous bound for an election, a restart or a page to show on a loaded machine.
const SETTLE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    procs::use_goose_binary(Path::new(GOOSE));
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `check` every [`POLL`] until it returns something, for at most `within`.
fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        thread::sleep(POLL);
    }
}

/// `GET path` over HTTP/1.0: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// A child the test started, killed by pid when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A flock of 3 whose node 1 serves `--http`, made goose by a transfer.
fn flock_with_http() -> (Flock, SocketAddr) {
    let mut flock = Flock::start(3, QUICK);
    flock.wait_stable(SETTLE).expect("a goose");
    let http: SocketAddr = format!("127.0.0.1:{}", procs::free_port_range(1))
        .parse()
        .unwrap();
    flock.kill9(0);
    flock
        .args_mut(0)
        .extend(["--http".to_owned(), http.to_string()]);
    flock.restart(0);
    flock.wait_listening(&[0]);
    eventually(SETTLE, "node 1 to become goose", || {
        let (goose, _) = flock.wait_stable(SETTLE)?;
        if goose == 0 {
            return Some(());
        }
        let _ = flock.ctl(goose, "transfer 1");
        None
    });
    (flock, http)
}

fn healthz(http: SocketAddr) -> Option<u16> {
    get(http, "/healthz").map(|(code, _)| code)
}

#[test]
fn http_status_metrics_health_and_page() {
    let _serial = serial();
    let (flock, http) = flock_with_http();
    let (code, body) = eventually(SETTLE, "a goose's /status", || {
        let (code, body) = get(http, "/status")?;
        body.contains("\"role\":\"goose\"").then_some((code, body))
    });
    assert_eq!(code, 200);
    let status = flock.status(0);
    assert!(body.contains(&format!("\"id\":{}", status["id"])), "{body}");
    assert!(body.contains("\"members\":[1,2,3]"), "{body}");
    assert!(body.contains("\"cause\":"), "{body}");
    // The goose sees every duck and how far it lags.
    assert_eq!(body.matches("\"match_index\":").count(), 3, "{body}");
    assert!(body.contains("\"lag\":0"), "{body}");

    let (code, metrics) = get(http, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("\ngoose_is_goose 1\n"), "{metrics}");
    assert!(metrics.contains("goose_drop_magic_total 0"), "{metrics}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/ci/prereqs.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(get(http, "/nowhere").map(|r| r.0), Some(404));

    // The page, in a real browser: the goose's row is marked goose.
    let folder = TempDir::new("chromium");
    let dom = chromium(&folder, &format!("http://{http}/"), "--dump-dom");
    assert!(dom.contains("<tr class=\"goose\" data-id=\"1\">"), "{dom}");
    assert!(dom.contains("<span class=\"goose\">goose</span>"), "{dom}");
    let png = folder.path().join("page.png");
    let screenshot = format!("--screenshot={}", png.display());
    chromium(&folder, &format!("http://{http}/"), &screenshot);
    let image = fs::read(&png).expect("a screenshot");
    assert!(image.starts_with(b"\x89PNG"), "not a PNG");
    if let Some(keep) = std::env::var_os("GOOSE_KEEP_SCREENSHOT") {
        fs::copy(&png, keep).unwrap();
    }

    // /healthz: 200 while goose; 503 while stopped; 200 again once started.
    assert_eq!(healthz(http), Some(200));
    assert_eq!(flock.ctl(0, "stop").as_deref(), Some("ok"));
    eventually(SETTLE, "503 once stopped", || {
        (healthz(http)? == 503).then_some(())
    });
    assert_eq!(flock.ctl(0, "start").as_deref(), Some("ok"));
    eventually(SETTLE, "200 once following a goose again", || {
        (healthz(http)? == 200).then_some(())
    });
    // Partitioned away: no goose to follow, 503; healed: 200.
    assert_eq!(flock.ctl(0, "partition 2,3").as_deref(), Some("ok"));
    assert_eq!(flock.ctl(1, "partition 1").as_deref(), Some("ok"));
    assert_eq!(flock.ctl(2, "partition 1").as_deref(), Some("ok"));
    eventually(SETTLE, "503 once partitioned away", || {
        (healthz(http)? == 503).then_some(())
    });
    for index in 0..3 {
        assert_eq!(flock.ctl(index, "heal").as_deref(), Some("ok"));
    }
    eventually(SETTLE, "200 once healed", || {
        (healthz(http)? == 200).then_some(())
    });

    // A real Prometheus scrapes it.
    let folder = TempDir::new("prometheus");
    let web = procs::free_port_range(1);
    let config = folder.path().join("prometheus.yml");
    fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: goose\n    \
             static_configs:\n      - targets: ['{http}']\n"
        ),
    )
    .unwrap();
    let prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            folder.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(fs::File::create(folder.path().join("log")).unwrap())
        .spawn()
        .expect("prometheus (Debian package prometheus)");
    let _prometheus = Killed(prometheus);
    let api: SocketAddr = format!("127.0.0.1:{web}").parse().unwrap();
    let answer = eventually(
        Duration::from_secs(30),
        "Prometheus to scrape goose_term",
        || {
            let (_, body) = get(api, "/api/v1/query?query=goose_term")?;
            body.contains("\"job\":\"goose\"").then_some(body)
        },
    );
    let term = flock.status(0)["term"].clone();
    assert!(
        answer.contains(&format!("\"{term}\"]")),
        "{answer} (term {term})"
    );
}

/// Runs headless Chromium on `url` with `action` (`--dump-dom`, `--screenshot=…`) and a
/// fresh profile; returns its standard output. Bounded: killed after 60 s.
fn chromium(folder: &TempDir, url: &str, action: &str) -> String {
    let profile = folder.path().join(format!("profile-{}", action.len()));
    let child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1000,600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(action)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium (Debian package chromium; scripts/ci/prereqs.sh installs it)");
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "chromium took over 60 s");
        thread::sleep(POLL);
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.0.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    out
}

#[test]
fn whois_and_ctl_exit_codes_and_signed_answers() {
    let _serial = serial();
    let folder = TempDir::new("keys");
    let key = folder.path().join("flock.key");
    let other = folder.path().join("other.key");
    for file in [&key, &other] {
        let made = procs::run_goose(&["keygen", "--out", &file.display().to_string()], SETTLE);
        assert_eq!(made.code(), Some(0), "{made:?}");
    }
    let flock = Flock::start_keyed(3, QUICK, &key);
    let (goose, _) = flock.wait_stable(SETTLE).expect("a goose");
    let addrs: Vec<String> = (0..3).map(|i| flock.addr(i).to_string()).collect();
    let dead = format!("127.0.0.1:{}", procs::free_port_range(1));
    let mut args: Vec<&str> = vec!["whois"];
    args.extend(addrs.iter().map(String::as_str));
    args.push(&dead);
    let whois = procs::run_goose(&args, SETTLE);
    assert_eq!(whois.code(), Some(0), "{whois:?}");
    let expected: Vec<String> = (0..3)
        .map(|i| {
            format!(
                "{}: {}",
                addrs[i],
                if i == goose { "goose" } else { "duck" }
            )
        })
        .chain([format!("{dead}: -")])
        .collect();
    assert_eq!(whois.stdout.lines().collect::<Vec<_>>(), expected);
    // No goose among the addresses asked: exit 1.
    let ducks: Vec<&str> = (0..3)
        .filter(|&i| i != goose)
        .map(|i| addrs[i].as_str())
        .collect();
    let whois = procs::run_goose(&[&["whois"], ducks.as_slice()].concat(), SETTLE);
    assert_eq!(whois.code(), Some(1), "{whois:?}");

    // Signed: with the flock's key the goose's answer verifies; with another key, none.
    let key_flag = key.display().to_string();
    let signed = ["whois", "--cluster-key-file", &key_flag, &addrs[goose]];
    let whois = procs::run_goose(&signed, SETTLE);
    assert_eq!(whois.code(), Some(0), "{whois:?}");
    assert_eq!(whois.stdout.trim(), format!("{}: goose", addrs[goose]));
    let other_flag = other.display().to_string();
    let forged = ["whois", "--cluster-key-file", &other_flag, &addrs[goose]];
    let whois = procs::run_goose(&forged, SETTLE);
    assert_eq!(whois.code(), Some(1), "{whois:?}");
    assert_eq!(whois.stdout.trim(), format!("{}: -", addrs[goose]));
    assert!(whois.stderr.contains("bad signature"), "{whois:?}");

    // ctl: 0 for ok, 1 for err, 3 for no reply.
    let status = [
        "ctl",
        "--cluster-key-file",
        &key_flag,
        &addrs[goose],
        "status",
    ];
    assert_eq!(procs::run_goose(&status, SETTLE).code(), Some(0));
    let unsigned = procs::run_goose(&["ctl", &addrs[goose], "status"], SETTLE);
    assert_eq!(unsigned.code(), Some(1), "err forbidden: {unsigned:?}");
    let silent = procs::run_goose(&["ctl", &dead, "status"], SETTLE);
    assert_eq!(silent.code(), Some(3), "{silent:?}");
    assert!(silent.stderr.contains("no reply"), "{silent:?}");
}

#[test]
fn logs_say_why_roles_change() {
    let _serial = serial();
    let mut flock = Flock::start(3, QUICK);
    let (goose, _) = flock.wait_stable(SETTLE).expect("a goose");
    let log = flock.log_tail(goose);
    assert!(log.contains(": promoted to goose: "), "{log}");
    // Timestamps to the millisecond: `[2026-01-02T03:04:05.678Z INFO …`.
    let stamp = log.lines().next().unwrap_or_default();
    assert_eq!(
        stamp.find('.').map(|dot| &stamp[dot + 4..dot + 5]),
        Some("Z"),
        "{stamp}"
    );
    // Cut the goose off: it says its lease lapsed, then that it lost its majority.
    let others: Vec<String> = (0..3)
        .filter(|&i| i != goose)
        .map(|i| (i + 1).to_string())
        .collect();
    assert_eq!(
        flock
            .ctl(goose, &format!("partition {}", others.join(",")))
            .as_deref(),
        Some("ok")
    );
    eventually(SETTLE, "the goose to log why it stepped down", || {
        let log = flock.log_tail(goose);
        (log.contains("demoted to duck (leader): lease lapsed")
            && log.contains("lost its majority"))
        .then_some(())
    });
    // The new goose says it was promoted; the others heard it.
    let survivor = (0..3).find(|&i| i != goose).unwrap();
    eventually(SETTLE, "another goose", || {
        let round = flock.probe_round(&[survivor], Duration::from_millis(50));
        round
            .reply(survivor)?
            .leader
            .filter(|&l| usize::from(l) != goose + 1)
    });
    flock.kill9(goose);
}

#[test]
fn dashboard_in_tmux_shows_a_kill_and_a_partition() {
    let _serial = serial();
    let folder = TempDir::new("dashboard");
    let base = procs::free_port_range(3);
    let session = format!("goose-dashboard-{}", std::process::id());
    let command = format!(
        "{GOOSE} cluster --nodes 3 --base-port {base} --data-dir {} --heartbeat-ms 20 \
         --election-timeout-ms 100-200",
        folder.path().display()
    );
    let session_guard = Session::start(&session, &command);
    let screen = || session_guard.screen();
    let row = |screen: &str, id: u16| -> Option<String> {
        let address = format!("127.0.0.1:{}", base + id - 1);
        screen
            .lines()
            .find(|l| l.contains(&address))
            .map(str::to_owned)
    };
    let goose_of = |screen: &str| -> Option<u16> {
        (1..=3).find(|&id| row(screen, id).is_some_and(|r| r.contains("GOOSE")))
    };
    let first = eventually(SETTLE, "the dashboard to show a goose", || {
        goose_of(&screen())
    });
    let keys = |keys: &[&str]| {
        let sent = Command::new("tmux")
            .args(["send-keys", "-t", &session])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(sent.success());
    };
    // Kill the goose with the dashboard's key: its row says so, another node is goose.
    keys(&[&first.to_string(), "k"]);
    let (shown, second) = eventually(SETTLE, "a kill and a new goose on screen", || {
        let shown = screen();
        let killed = row(&shown, first)?.contains("killed (kill -9)");
        let second = goose_of(&shown).filter(|&id| id != first)?;
        killed.then_some((shown, second))
    });
    assert!(shown.contains("failover gaps: 1"), "{shown}");
    assert!(shown.contains(&format!("goose {second} term")), "{shown}");
    // Partition the new goose away: the screen says so, and nobody is goose (one left).
    keys(&[&second.to_string(), "p"]);
    let shown = eventually(SETTLE, "the partition on screen", || {
        let shown = screen();
        let cut = row(&shown, second)?.contains("partitioned");
        (cut && goose_of(&shown).is_none()).then_some(shown)
    });
    assert!(shown.contains("geese now: 0"), "{shown}");
    // Restart the killed node and heal: a goose again.
    keys(&[&first.to_string(), "r", "h"]);
    eventually(SETTLE, "a goose after restart and heal", || {
        goose_of(&screen())
    });
    keys(&["q"]);
    eventually(SETTLE, "the launcher to stop the flock and exit", || {
        let alive = Command::new("tmux")
            .args(["has-session", "-t", &session])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        (!alive).then_some(())
    });
    // Each node wrote its log under its data dir.
    let log = fs::read_to_string(folder.path().join("1").join("node.log")).unwrap();
    assert!(log.contains("node 1 term"), "{log}");
    drop(session_guard);
}

/// A tmux session the test created, killed by its name when dropped (it may be gone).
struct Session(String);

impl Session {
    /// Runs `command` in a new detached 160×40 session named `name`.
    fn start(name: &str, command: &str) -> Self {
        let started = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                name,
                "-x",
                "160",
                "-y",
                "40",
                command,
            ])
            .status()
            .expect("tmux (scripts/ci/prereqs.sh installs it)");
        assert!(started.success());
        Self(name.to_owned())
    }

    /// What the session's pane shows.
    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// The pids of the `goose` processes whose command line names `folder`: a launcher and
/// its nodes (the test then waits on those pids; it never signals by name).
fn processes_under(folder: &Path) -> Vec<u32> {
    let goose = fs::canonicalize(GOOSE).ok();
    let needle = folder.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/exe")).ok() == goose)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
        .collect()
}

/// Whether `pid` still runs (a zombie has ended).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        state != Some(Some('Z'))
    })
}

#[test]
fn dashboard_whose_terminal_closes_stops_its_flock() {
    // A closed window or a dropped ssh session: the terminal hangs up. The launcher must
    // stop its nodes and exit, not keep them running behind a dashboard nobody sees
    // (crossterm, asked for keys by a terminal that is gone, spins on a core for ever).
    let _serial = serial();
    let folder = TempDir::new("dashboard-hangup");
    let base = procs::free_port_range(3);
    let session = format!("goose-hangup-{}", std::process::id());
    let command = format!(
        "exec {GOOSE} cluster --nodes 3 --base-port {base} --data-dir {}",
        folder.path().display()
    );
    let session_guard = Session::start(&session, &command);
    eventually(SETTLE, "the dashboard to show a goose", || {
        session_guard.screen().contains("GOOSE").then_some(())
    });
    let launched = processes_under(folder.path());
    let _killer = KillOnDrop(launched.clone());
    // The launcher and its three nodes.
    assert_eq!(launched.len(), 4, "{launched:?}");
    drop(session_guard); // kill-session: the terminal hangs up
    eventually(SETTLE, "the launcher and every node to exit", || {
        let left: Vec<u32> = launched.iter().copied().filter(|&p| running(p)).collect();
        left.is_empty().then_some(())
    });
}

/// Kills its pids when dropped: what a failed test leaves running.
struct KillOnDrop(Vec<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if running(pid) {
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: kill has no memory effects; the pid is one this test
                    // launched (by way of tmux) and saw running.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

#[test]
fn launcher_whose_output_closes_stops_its_flock_and_exits_0() {
    // `goose cluster | head -3`: the reader goes once it has its lines. The launcher must
    // not panic on the closed pipe (it did, with a backtrace); it stops the flock as on
    // SIGTERM and exits 0.
    let _serial = serial();
    let folder = TempDir::new("launcher-pipe");
    let base = procs::free_port_range(3);
    let errors = folder.path().join("stderr");
    let mut launcher = Command::new(GOOSE)
        .args(["cluster", "--nodes", "3", "--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(folder.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&errors).expect("a file for its stderr"))
        .spawn()
        .expect("spawn goose cluster");
    let launcher_pid = launcher.id();
    let mut nodes = Vec::new();
    {
        let stdout = launcher.stdout.take().expect("piped");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        // `node 1 127.0.0.1:<port> pid <pid>`, one per node, then the reader goes away.
        for _ in 0..3 {
            let line = lines.next().and_then(Result::ok).unwrap_or_default();
            let pid = line
                .rsplit_once(" pid ")
                .and_then(|(_, pid)| pid.parse().ok());
            nodes.push(pid.unwrap_or_else(|| panic!("a node's line: {line:?}")));
        }
    }
    let _killer = KillOnDrop(nodes.iter().copied().chain([launcher_pid]).collect());
    let status = eventually(SETTLE, "the launcher to exit", || {
        launcher.try_wait().ok().flatten()
    });
    let stderr = fs::read_to_string(&errors).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    eventually(SETTLE, "every node to exit", || {
        nodes.iter().all(|&pid| !running(pid)).then_some(())
    });
}
