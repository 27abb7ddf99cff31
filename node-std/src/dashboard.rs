//! `goose cluster` on a terminal: a live dashboard of the flock (ratatui), with keys that do
//! the classic demo on the spot.
//!
//! Every [`REFRESH_EVERY`] it asks each node `ctl status` (signed with the flock's key, if
//! it has one) and reads the line with the same model `--http` serves
//! ([`crate::status::Fields`]). The screen:
//!
//! - one row per node: id, address, process (running, stopped by `ctl stop`, killed,
//!   exited, partitioned by the dashboard), role, Raft role, term, lease left, commit, the
//!   last change and its reason, how long ago, the `--vip` addresses it holds;
//! - the goose timeline: who was goose from when, the elections (terms) seen, and the
//!   failover gaps (time without a goose between two geese);
//! - the selected node's log (its `node.log`, where a dashboard sends each node's output).
//!
//! Keys act on the selected node (↑/↓ or its id's digit): `s` stop/start (`ctl stop`,
//! `ctl start`), `k` kill -9, `r` restart a node that is not running (on its data dir),
//! `p` partition it away from every other node, `h` heal every partition, `t` transfer the
//! goose to it; `q` or Ctrl-C stops the flock (ducks first, the goose last) and exits.
//! Every action is bounded by the ctl timeouts of [`crate::client`].

use std::collections::BTreeSet;
use std::io;
use std::time::{Duration, Instant};

use goose_core::auth::key::ClusterKey;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::client::{self, ControlAuth};
use crate::cluster::{self, Launched, Restart};
use crate::status::Fields;

/// How often the dashboard asks every node its status.
const REFRESH_EVERY: Duration = Duration::from_millis(200);
/// Keys handled per turn at most, before the screen is drawn again.
const KEYS_PER_TURN_MAX: usize = 64;
/// How long one status round waits for answers.
const STATUS_TIMEOUT: Duration = Duration::from_millis(150);
/// Lines of the goose timeline kept (the newest).
const TIMELINE_MAX: usize = 64;
/// Lines of the selected node's log shown.
const LOG_LINES: usize = 12;
/// Bytes read from the end of a node's log for its tail.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// What the dashboard knows of one node besides its status line.
#[derive(Debug, Default)]
struct Seen {
    fields: Option<Fields>,
    /// Why the process is not running, if it is not.
    gone: Option<String>,
}

/// The flock as the dashboard has seen it so far.
struct Model {
    started: Instant,
    seen: Vec<Seen>,
    /// Indices of nodes the dashboard partitioned away.
    partitioned: BTreeSet<usize>,
    /// Who was goose from when: (seconds since start, goose id, term).
    timeline: Vec<(f64, Option<u16>, u64)>,
    terms: BTreeSet<u64>,
    /// Gaps without a goose between two geese, in milliseconds.
    gaps: Vec<u64>,
    /// When the flock last had no goose after having one.
    gap_since: Option<Instant>,
    selected: usize,
    /// The last action and what came of it.
    message: String,
}

/// Runs the dashboard until `q`, Ctrl-C, SIGINT, SIGTERM, SIGHUP or its terminal hangs up;
/// the caller stops the flock.
///
/// # Errors
/// If the terminal cannot be set up or drawn on.
pub(crate) fn run(
    nodes: &mut [Launched],
    restart: &Restart<'_>,
    key: Option<&ClusterKey>,
) -> io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let shown = show(&mut terminal, nodes, restart, key);
    ratatui::restore();
    shown
}

fn show(
    terminal: &mut ratatui::DefaultTerminal,
    nodes: &mut [Launched],
    restart: &Restart<'_>,
    key: Option<&ClusterKey>,
) -> io::Result<()> {
    let auth = key.map_or(ControlAuth::None, ControlAuth::Key);
    let mut model = Model {
        started: Instant::now(),
        seen: nodes.iter().map(|_| Seen::default()).collect(),
        partitioned: BTreeSet::new(),
        timeline: Vec::new(),
        terms: BTreeSet::new(),
        gaps: Vec::new(),
        gap_since: None,
        selected: 0,
        message: "keys: ↑↓ or 1-9 select · s stop/start · k kill -9 · r restart · \
                  p partition away · h heal · t transfer here · q quit"
            .to_owned(),
    };
    let mut next_refresh = Instant::now();
    while !restart.stop.load(std::sync::atomic::Ordering::SeqCst) {
        if Instant::now() >= next_refresh {
            next_refresh = Instant::now() + REFRESH_EVERY;
            refresh(&mut model, nodes, auth);
        }
        terminal.draw(|frame| draw(frame, &model, nodes))?;
        let wait = next_refresh.saturating_duration_since(Instant::now());
        match wait_for_input(wait) {
            Input::Quiet => continue,
            // The terminal went away (a closed window, a dropped ssh): nobody is left to
            // watch or to press `q`, so the flock stops as if they had.
            Input::Gone => return Ok(()),
            Input::Ready => {}
        }
        // Every key read so far: crossterm may have parsed several from one read.
        for _ in 0..KEYS_PER_TURN_MAX {
            if !event::poll(Duration::ZERO)? {
                break;
            }
            let Event::Key(press) = event::read()? else {
                continue;
            };
            if press.kind != KeyEventKind::Press {
                continue;
            }
            let ctrl_c =
                press.modifiers.contains(KeyModifiers::CONTROL) && press.code == KeyCode::Char('c');
            if ctrl_c || press.code == KeyCode::Char('q') {
                return Ok(());
            }
            act(&mut model, nodes, restart, auth, press.code);
            next_refresh = Instant::now();
        }
    }
    Ok(())
}

/// What the terminal had for the dashboard within a wait.
enum Input {
    Quiet,
    Ready,
    /// Hung up or closed: it will never have a key again.
    Gone,
}

/// Waits up to `wait` for the terminal (standard input) to have a key, or to hang up.
/// Asked of the terminal here, not of crossterm: once its terminal is gone, crossterm's
/// `poll` sees input forever, reads nothing, and spins without returning, and a dashboard
/// whose window was closed would burn a core and keep its flock running.
fn wait_for_input(wait: Duration) -> Input {
    let mut terminal = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(wait.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one pollfd, alive for the call, and its count says one.
    let ready = unsafe { libc::poll(&raw mut terminal, 1, millis) };
    if ready <= 0 {
        // Nothing, or interrupted by a signal: the loop looks at its flags and waits again.
        return Input::Quiet;
    }
    if terminal.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Input::Gone
    } else {
        Input::Ready
    }
}

/// Reaps exited children, asks every running node its status, and extends the timeline.
fn refresh(model: &mut Model, nodes: &mut [Launched], auth: ControlAuth<'_>) {
    for (node, seen) in nodes.iter_mut().zip(&mut model.seen) {
        if let Some(child) = node.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                seen.gone = Some(cluster::describe(status));
                node.child = None;
            }
        }
    }
    let addrs: Vec<_> = nodes.iter().map(|node| node.addr).collect();
    let lines: Vec<Option<String>> = std::thread::scope(|scope| {
        let asks: Vec<_> = addrs
            .iter()
            .map(|&addr| {
                scope.spawn(move || client::ask(addr, auth, "status", STATUS_TIMEOUT).ok())
            })
            .collect();
        asks.into_iter()
            .map(|ask| ask.join().ok().flatten())
            .collect()
    });
    for (seen, line) in model.seen.iter_mut().zip(lines) {
        seen.fields = line.as_deref().and_then(Fields::parse);
    }
    let geese: Vec<(u16, u64)> = model
        .seen
        .iter()
        .filter_map(|seen| seen.fields.as_ref().filter(|f| f.is_goose()))
        .filter_map(|f| Some((f.number("id")? as u16, f.number("term")?)))
        .collect();
    let goose = geese.first().copied();
    for term in model
        .seen
        .iter()
        .filter_map(|s| s.fields.as_ref()?.number("term"))
    {
        model.terms.insert(term);
    }
    let last = model.timeline.last().map(|entry| (entry.1, entry.2));
    let now_goose = (goose.map(|g| g.0), goose.map_or(0, |g| g.1));
    if last.map(|l| l.0) != Some(now_goose.0) || (goose.is_some() && last != Some(now_goose)) {
        let at = model.started.elapsed().as_secs_f64();
        match (last.and_then(|l| l.0), now_goose.0) {
            (Some(_), None) => model.gap_since = Some(Instant::now()),
            (None, Some(_)) => {
                if let Some(since) = model.gap_since.take() {
                    model.gaps.push(since.elapsed().as_millis() as u64);
                }
            }
            _ => {}
        }
        if model.timeline.len() == TIMELINE_MAX {
            model.timeline.remove(0);
        }
        model.timeline.push((at, now_goose.0, now_goose.1));
    }
    if geese.len() > 1 {
        // Never expected: the lease forbids it. Shown loudly if it ever happens.
        model.message = format!("TWO GEESE: {geese:?}");
    }
}

/// Carries out one key.
fn act(
    model: &mut Model,
    nodes: &mut [Launched],
    restart: &Restart<'_>,
    auth: ControlAuth<'_>,
    key: KeyCode,
) {
    let count = nodes.len();
    let index = model.selected;
    let node_id = nodes[index].id;
    let ctl = |index: usize, command: &str| -> String {
        match client::ask(nodes[index].addr, auth, command, Duration::from_secs(1)) {
            Ok(reply) => reply,
            Err(error) => format!("no reply ({error})"),
        }
    };
    model.message = match key {
        KeyCode::Up => {
            model.selected = (index + count - 1) % count;
            return;
        }
        KeyCode::Down => {
            model.selected = (index + 1) % count;
            return;
        }
        KeyCode::Char(digit @ '1'..='9') => {
            let id = u16::from(digit as u8 - b'0');
            if let Some(found) = nodes.iter().position(|node| node.id == id) {
                model.selected = found;
            }
            return;
        }
        KeyCode::Char('s') => {
            let stopped = model.seen[index]
                .fields
                .as_ref()
                .is_some_and(Fields::is_stopped);
            let command = if stopped { "start" } else { "stop" };
            format!("node {node_id}: ctl {command}: {}", ctl(index, command))
        }
        KeyCode::Char('k') => match nodes[index].child.as_mut() {
            Some(child) => {
                let _ = child.kill();
                let _ = child.wait();
                nodes[index].child = None;
                model.seen[index].gone = Some("killed (kill -9)".to_owned());
                format!("node {node_id}: killed with SIGKILL")
            }
            None => format!("node {node_id} is not running"),
        },
        KeyCode::Char('r') if nodes[index].child.is_none() => {
            match cluster::respawn(&mut nodes[index], restart, true) {
                Ok(()) => {
                    model.seen[index].gone = None;
                    format!("node {node_id}: restarted on its data dir")
                }
                Err(error) => error,
            }
        }
        KeyCode::Char('r') => format!("node {node_id} is running: kill or stop it first"),
        KeyCode::Char('p') => {
            model.partitioned.insert(index);
            let replies = apply_partitions(model, nodes, auth);
            format!("node {node_id} partitioned away: {replies}")
        }
        KeyCode::Char('h') => {
            model.partitioned.clear();
            let replies = apply_partitions(model, nodes, auth);
            format!("healed: {replies}")
        }
        KeyCode::Char('t') => {
            let goose = model
                .seen
                .iter()
                .position(|seen| seen.fields.as_ref().is_some_and(Fields::is_goose));
            match goose {
                Some(goose) if goose == index => format!("node {node_id} is goose already"),
                Some(goose) => format!(
                    "transfer to {node_id}: {}",
                    ctl(goose, &format!("transfer {node_id}"))
                ),
                None => "no goose to transfer from".to_owned(),
            }
        }
        _ => return,
    };
}

/// Tells every node the partition the dashboard keeps: a partitioned node drops every
/// other node, the others drop every partitioned node. Returns the replies in short.
fn apply_partitions(model: &Model, nodes: &[Launched], auth: ControlAuth<'_>) -> String {
    let ids = |filter: &dyn Fn(usize) -> bool| -> String {
        let list: Vec<String> = (0..nodes.len())
            .filter(|&i| filter(i))
            .map(|i| nodes[i].id.to_string())
            .collect();
        list.join(",")
    };
    let mut replies = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        let peers = match model.partitioned.contains(&index) {
            true => ids(&|other| other != index),
            false => ids(&|other| model.partitioned.contains(&other)),
        };
        let command = format!("partition {peers}");
        let reply = client::ask(node.addr, auth, command.trim_end(), Duration::from_secs(1));
        replies.push(format!(
            "{}:{}",
            node.id,
            reply.unwrap_or_else(|_| "-".into())
        ));
    }
    replies.join(" ")
}

fn draw(frame: &mut Frame<'_>, model: &Model, nodes: &[Launched]) {
    let [top, table, timeline, log, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(nodes.len() as u16 + 3),
        Constraint::Length(8),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let geese = model
        .seen
        .iter()
        .filter(|seen| seen.fields.as_ref().is_some_and(Fields::is_goose))
        .count();
    let title = format!(
        "goose cluster · {} nodes · {} up · geese now: {geese} · launcher pid {}",
        nodes.len(),
        format_seconds(model.started.elapsed().as_secs_f64()),
        std::process::id()
    );
    frame.render_widget(Paragraph::new(title), top);
    draw_nodes(frame, model, nodes, table);
    draw_timeline(frame, model, timeline);
    let tail = log_tail(&nodes[model.selected]);
    let title = format!(" node {} log ", nodes[model.selected].id);
    frame.render_widget(
        Paragraph::new(tail).block(Block::default().borders(Borders::ALL).title(title)),
        log,
    );
    frame.render_widget(Paragraph::new(model.message.as_str()), help);
}

fn draw_nodes(
    frame: &mut Frame<'_>,
    model: &Model,
    nodes: &[Launched],
    area: ratatui::layout::Rect,
) {
    let header = Row::new([
        "id",
        "address",
        "process",
        "role",
        "raft",
        "term",
        "lease",
        "commit",
        "last change",
        "ago",
        "vips",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = nodes
        .iter()
        .zip(&model.seen)
        .enumerate()
        .map(|(index, (node, seen))| {
            let fields = seen.fields.as_ref();
            let get = |key| fields.and_then(|f| f.get(key)).unwrap_or("-").to_owned();
            let process = match (&seen.gone, node.child.is_some(), fields) {
                (Some(gone), false, _) => gone.clone(),
                (_, false, _) => "exited".to_owned(),
                _ if model.partitioned.contains(&index) => "partitioned".to_owned(),
                (_, true, Some(f)) if f.is_stopped() => "stopped".to_owned(),
                (_, true, Some(_)) => "running".to_owned(),
                (_, true, None) => "no answer".to_owned(),
            };
            let lease = fields
                .and_then(|f| f.number("lease_ms"))
                .filter(|&ms| ms > 0)
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms"));
            let ago = fields
                .and_then(|f| f.number("changed_ms"))
                .map_or_else(|| "-".to_owned(), |ms| format_seconds(ms as f64 / 1000.0));
            let role = fields.map_or("-".to_owned(), |f| {
                if f.is_goose() {
                    "GOOSE".to_owned()
                } else {
                    get("role")
                }
            });
            let style = match fields {
                Some(f) if f.is_goose() => Style::default().fg(Color::Black).bg(Color::Yellow),
                _ if node.child.is_none() => Style::default().fg(Color::DarkGray),
                _ => Style::default(),
            };
            Row::new([
                node.id.to_string(),
                node.addr.to_string(),
                process,
                role,
                get("raft"),
                get("term"),
                lease,
                get("commit"),
                fields.map_or_else(|| "-".to_owned(), Fields::cause),
                ago,
                fields.map_or_else(|| "-".to_owned(), |f| f.vips().join(" ")),
            ])
            .style(style)
        });
    let widths = [
        Constraint::Length(3),
        Constraint::Length(16),
        Constraint::Length(18),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(5),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(20),
        Constraint::Length(8),
        Constraint::Min(4),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(" flock "))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default().with_selected(Some(model.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_timeline(frame: &mut Frame<'_>, model: &Model, area: ratatui::layout::Rect) {
    let elections = model.terms.iter().filter(|&&term| term > 0).count();
    let gaps = match model.gaps.as_slice() {
        [] => "none yet".to_owned(),
        gaps => {
            let last = gaps[gaps.len() - 1];
            let max = gaps.iter().max().copied().unwrap_or(0);
            format!("{} (last {last} ms, longest {max} ms)", gaps.len())
        }
    };
    let mut lines = vec![Line::from(format!(
        "terms seen: {elections} · failover gaps: {gaps}"
    ))];
    let shown = usize::from(area.height.saturating_sub(3));
    let start = model.timeline.len().saturating_sub(shown);
    for (at, goose, term) in &model.timeline[start..] {
        let who = match goose {
            Some(id) => format!("goose {id} term {term}"),
            None => "goose none".to_owned(),
        };
        lines.push(Line::from(format!("[{:>9}] {who}", format_seconds(*at))));
    }
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" goose timeline ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// The last [`LOG_LINES`] lines of the node's `node.log`.
fn log_tail(node: &Launched) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(node.log_path()) else {
        return "(no log yet)".to_owned();
    };
    let size = file.metadata().map_or(0, |m| m.len());
    let _ = file.seek(SeekFrom::Start(size.saturating_sub(LOG_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_LINES)..].join("\n")
}

fn format_seconds(seconds: f64) -> String {
    format!("{seconds:.3}s")
}
