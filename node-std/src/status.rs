//! One status model, three readings: the snapshot of a node that `--http` serves as JSON
//! (`/status`), Prometheus metrics (`/metrics`) and a page (`/`), and that `goose
//! cluster`'s dashboard reads for each node.
//!
//! Its core is the `ctl status` line itself, written by the service
//! ([`goose_core::service::Service::write_status_line`]) and read back with the core's reply
//! parser ([`Fields::parse`]): so `ctl status`, `/status` and `/metrics` cannot disagree on
//! a field or a counter. A running node adds what only it knows ([`Snapshot`]): members with
//! their addresses, when each was last heard from and, on the leader, how far each lags;
//! the history of terms; its version and uptime. The dashboard has the line alone (it asks
//! every node `ctl status`).

use std::fmt::Write as _;

use goose_core::text::Reply;
use serde::Serialize;

/// The keys of `ctl status` that are not counters, in the order the line gives them.
/// Every other key is a counter.
pub(crate) const FIELDS: [&str; 15] = [
    "role",
    "raft",
    "id",
    "term",
    "goose",
    "state",
    "commit",
    "members",
    "voters",
    "learners",
    "lease_ms",
    "cause",
    "cause_node",
    "changed_ms",
    "vips",
];

/// Terms the history keeps: the newest; older ones are dropped.
pub(crate) const HISTORY_MAX: usize = 32;

/// A `ctl status` line's pairs, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    /// The pairs of a `ctl status` answer (`ok key=value…`); `None` for any other reply.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let Ok(Reply::Ok(pairs)) = Reply::parse(line) else {
            return None;
        };
        let pairs = pairs.iter().map(|(k, v)| (k.to_owned(), v.to_owned()));
        Some(Self(pairs.collect()))
    }

    /// The value of `key`, if the line has it.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` as a number.
    pub(crate) fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// Whether the node answers goose.
    pub(crate) fn is_goose(&self) -> bool {
        self.get("role") == Some("goose")
    }

    /// Whether the node was stopped (`ctl stop`, or leaving).
    pub(crate) fn is_stopped(&self) -> bool {
        self.get("state") == Some("stopped")
    }

    /// The goose this node names (itself, or the leader it follows), if any.
    pub(crate) fn goose(&self) -> Option<u16> {
        self.get("goose")?.parse().ok()
    }

    /// Healthy for `/healthz`: running, and goose or following a goose.
    pub(crate) fn is_healthy(&self) -> bool {
        !self.is_stopped() && self.goose().is_some()
    }

    /// The counters: every pair that is not one of [`FIELDS`], with a number.
    pub(crate) fn counters(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0
            .iter()
            .filter(|(key, _)| !FIELDS.contains(&key.as_str()))
            .filter_map(|(key, value)| Some((key.as_str(), value.parse().ok()?)))
    }

    /// The `--vip` addresses the node holds now (`10.0.0.100/24@eth0`); empty for a node
    /// that holds none, or has no `--vip`.
    pub(crate) fn vips(&self) -> Vec<&str> {
        self.get("vips")
            .map(|list| list.split(',').filter(|vip| !vip.is_empty()).collect())
            .unwrap_or_default()
    }

    /// The line's reason for the last change, in a few words: `higher-term 3`.
    pub(crate) fn cause(&self) -> String {
        match (self.get("cause"), self.get("cause_node")) {
            (Some(cause), Some(node)) => format!("{cause} {node}"),
            (Some(cause), None) => cause.to_owned(),
            (None, _) => "-".to_owned(),
        }
    }
}

/// One member as this node sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub(crate) struct MemberView {
    pub(crate) id: u16,
    pub(crate) addr: String,
    /// `voter` or `learner`.
    pub(crate) kind: &'static str,
    /// `goose`, `leader` (not goose), `self` or `duck`, as this node sees it.
    pub(crate) role: &'static str,
    /// Milliseconds since a frame from it arrived; `None`: never since this node started
    /// (and for this node itself).
    pub(crate) last_heard_ms: Option<u64>,
    /// On the leader: the highest index it is known to hold.
    pub(crate) match_index: Option<u64>,
    /// On the leader: how many entries it lags behind the leader's last.
    pub(crate) lag: Option<u64>,
}

/// One term this node saw, and whom it knew as goose in it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub(crate) struct TermView {
    pub(crate) term: u64,
    /// The goose seen in the term (this node or the leader it followed), if any.
    pub(crate) goose: Option<u16>,
    /// Seconds after this node started that the term was first seen.
    pub(crate) since_s: f64,
    /// Why this node entered it (a [`goose_core::Cause`] word).
    pub(crate) cause: &'static str,
}

/// What a running node publishes for its `--http` endpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// `ctl status`, as the service wrote it.
    pub(crate) fields: Fields,
    pub(crate) listen: String,
    pub(crate) uptime_s: f64,
    pub(crate) members: Vec<MemberView>,
    pub(crate) history: Vec<TermView>,
}

impl Snapshot {
    /// `/status`: every `ctl status` pair (numbers as numbers, the id lists and the held
    /// `vips` as arrays), the members, the term history, version and uptime.
    pub(crate) fn to_json(&self) -> String {
        let mut status = serde_json::Map::new();
        for (key, value) in &self.fields.0 {
            let json = match (key.as_str(), value.parse::<u64>()) {
                ("members" | "voters" | "learners", _) => {
                    let ids = value.split(',').filter_map(|id| id.parse::<u64>().ok());
                    serde_json::Value::from(ids.collect::<Vec<u64>>())
                }
                ("vips", _) => serde_json::Value::from(self.fields.vips()),
                (_, Ok(number)) => serde_json::Value::from(number),
                _ => serde_json::Value::from(value.as_str()),
            };
            status.insert(key.clone(), json);
        }
        let document = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "listen": self.listen,
            "uptime_s": self.uptime_s,
            "healthy": self.fields.is_healthy(),
            "status": status,
            "members": self.members,
            "history": self.history,
        });
        document.to_string()
    }

    /// `/metrics`: the Prometheus text format (version 0.0.4).
    pub(crate) fn to_metrics(&self) -> String {
        let fields = &self.fields;
        let mut out = String::new();
        let mut gauge = |name: &str, help: &str, value: f64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} gauge");
            let _ = writeln!(out, "{name} {value}");
        };
        gauge(
            "goose_is_goose",
            "1 while this node answers goose, else 0.",
            f64::from(u8::from(fields.is_goose())),
        );
        gauge(
            "goose_is_stopped",
            "1 while this node is stopped (ctl stop, or leaving).",
            f64::from(u8::from(fields.is_stopped())),
        );
        gauge(
            "goose_healthy",
            "1 while running and goose or following a goose (as /healthz).",
            f64::from(u8::from(fields.is_healthy())),
        );
        let number = |key| fields.number(key).unwrap_or(0) as f64;
        gauge(
            "goose_term",
            "The node's current Raft term.",
            number("term"),
        );
        gauge("goose_commit_index", "The commit index.", number("commit"));
        gauge(
            "goose_lease_seconds",
            "Lease left as goose, in seconds; 0 when not goose.",
            number("lease_ms") / 1000.0,
        );
        let count = |key| {
            fields
                .get(key)
                .map_or(0, |list| list.split(',').filter(|s| !s.is_empty()).count())
        };
        gauge(
            "goose_members",
            "Members of the flock, voters and learners.",
            count("members") as f64,
        );
        gauge(
            "goose_voters",
            "Voting members of the flock.",
            count("voters") as f64,
        );
        gauge(
            "goose_uptime_seconds",
            "Seconds since this node's process started.",
            self.uptime_s,
        );
        if fields.get("vips").is_some() {
            gauge(
                "goose_vips_held",
                "--vip addresses this node holds now (0 unless goose).",
                fields.vips().len() as f64,
            );
        }
        let _ = writeln!(out, "# HELP goose_elections_total Terms this node entered since it started (each new term is an election).");
        let _ = writeln!(out, "# TYPE goose_elections_total counter");
        let _ = writeln!(
            out,
            "goose_elections_total {}",
            self.history.len().saturating_sub(1)
        );
        for (name, value) in fields.counters() {
            let metric = format!("goose_{name}_total");
            let _ = writeln!(
                out,
                "# HELP {metric} The ctl status counter {name} (docs/interface.md)."
            );
            let _ = writeln!(out, "# TYPE {metric} counter");
            let _ = writeln!(out, "{metric} {value}");
        }
        out
    }

    /// `/`: a small page of the flock as this node sees it, reloaded every second.
    pub(crate) fn to_html(&self) -> String {
        let fields = &self.fields;
        let id = fields.get("id").unwrap_or("?");
        let mut page = String::new();
        let _ = write!(
            page,
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"1\"><title>goose node {id}</title>\
             <style>{STYLE}</style></head><body>"
        );
        let _ = write!(
            page,
            "<h1>node {id} <span class=\"{role}\">{role}</span></h1>\
             <p>term {term} · raft {raft} · {state} · goose {goose} · lease {lease} ms · \
             commit {commit} · last change: {cause} · up {up:.0} s · {listen}</p>",
            role = fields.get("role").unwrap_or("?"),
            term = fields.get("term").unwrap_or("?"),
            raft = fields.get("raft").unwrap_or("?"),
            state = fields.get("state").unwrap_or("?"),
            goose = fields.get("goose").unwrap_or("?"),
            lease = fields.get("lease_ms").unwrap_or("0"),
            commit = fields.get("commit").unwrap_or("?"),
            cause = escape(&fields.cause()),
            up = self.uptime_s,
            listen = escape(&self.listen),
        );
        if fields.get("vips").is_some() {
            let vips = fields.vips();
            let held = if vips.is_empty() {
                "none".to_owned()
            } else {
                escape(&vips.join(", "))
            };
            let _ = write!(page, "<p id=\"vips\">virtual addresses held: {held}</p>");
        }
        page.push_str(
            "<h2>members</h2><table id=\"members\"><tr><th>id</th><th>address</th>\
             <th>kind</th><th>role</th><th>last heard</th><th>match</th><th>lag</th></tr>",
        );
        let or_dash = |value: Option<u64>, unit: &str| {
            value.map_or_else(|| "-".to_owned(), |v| format!("{v}{unit}"))
        };
        for member in &self.members {
            let _ = write!(
                page,
                "<tr class=\"{role}\" data-id=\"{id}\"><td>{id}</td><td>{addr}</td>\
                 <td>{kind}</td><td>{role}</td><td>{heard}</td><td>{matched}</td>\
                 <td>{lag}</td></tr>",
                role = member.role,
                id = member.id,
                addr = escape(&member.addr),
                kind = member.kind,
                heard = or_dash(member.last_heard_ms, " ms ago"),
                matched = or_dash(member.match_index, ""),
                lag = or_dash(member.lag, ""),
            );
        }
        page.push_str(
            "</table><h2>terms</h2><table id=\"terms\"><tr><th>term</th><th>goose</th>\
             <th>since</th><th>why</th></tr>",
        );
        for term in self.history.iter().rev() {
            let goose = term
                .goose
                .map_or_else(|| "none".to_owned(), |g| g.to_string());
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{goose}</td><td>{:.3} s</td><td>{}</td></tr>",
                term.term, term.since_s, term.cause
            );
        }
        page.push_str("</table></body></html>\n");
        page
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:2px 8px}tr.goose,span.goose{background:#fc6;\
font-weight:bold}tr.self{font-style:italic}";

/// Text for HTML: `<`, `>`, `&` and `"` escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "ok role=goose raft=leader id=2 term=7 goose=2 state=running commit=4 \
                        members=1,2,3 voters=1,2,3 learners= lease_ms=120 cause=elected \
                        changed_ms=50 drop_short=3 drop_sticky=0 peer_frames_in=10";

    #[test]
    fn one_line_read_three_ways() {
        let fields = Fields::parse(LINE).unwrap();
        assert!(fields.is_goose() && fields.is_healthy() && !fields.is_stopped());
        let counters: Vec<(&str, u64)> = fields.counters().collect();
        assert_eq!(
            counters,
            [
                ("drop_short", 3),
                ("drop_sticky", 0),
                ("peer_frames_in", 10)
            ]
        );
        let snapshot = Snapshot {
            fields,
            listen: "127.0.0.1:9901".into(),
            uptime_s: 2.5,
            ..Snapshot::default()
        };
        let json: serde_json::Value = serde_json::from_str(&snapshot.to_json()).unwrap();
        assert_eq!(json["status"]["term"], 7);
        assert_eq!(json["status"]["voters"], serde_json::json!([1, 2, 3]));
        assert_eq!(json["status"]["learners"], serde_json::json!([]));
        assert_eq!(json["status"]["cause"], "elected");
        assert_eq!(json["healthy"], true);
        let metrics = snapshot.to_metrics();
        assert!(metrics.contains("\ngoose_is_goose 1\n"), "{metrics}");
        assert!(
            metrics.contains("\ngoose_lease_seconds 0.12\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\ngoose_drop_short_total 3\n"),
            "{metrics}"
        );
        assert!(
            metrics.contains("\ngoose_peer_frames_in_total 10\n"),
            "{metrics}"
        );
        assert!(
            !metrics.contains("goose_term_total"),
            "a field is no counter"
        );
        let html = snapshot.to_html();
        assert!(
            html.contains("<span class=\"goose\">goose</span>"),
            "{html}"
        );
    }

    #[test]
    fn held_vips_are_a_list_in_json_a_gauge_and_a_line_on_the_page() {
        let line = LINE.replace(
            " drop_short=3",
            " vips=10.0.0.100/24@eth0,fd00::100/64@eth0 drop_short=3",
        );
        let fields = Fields::parse(&line).unwrap();
        assert_eq!(fields.counters().count(), 3, "vips is no counter");
        let snapshot = Snapshot {
            fields,
            ..Snapshot::default()
        };
        let json: serde_json::Value = serde_json::from_str(&snapshot.to_json()).unwrap();
        assert_eq!(
            json["status"]["vips"],
            serde_json::json!(["10.0.0.100/24@eth0", "fd00::100/64@eth0"])
        );
        let metrics = snapshot.to_metrics();
        assert!(metrics.contains("\ngoose_vips_held 2\n"), "{metrics}");
        let html = snapshot.to_html();
        assert!(
            html.contains("held: 10.0.0.100/24@eth0, fd00::100/64@eth0</p>"),
            "{html}"
        );

        // A duck with --vip holds none: an empty list, not a missing key.
        let duck = LINE.replace(" drop_short=3", " vips= drop_short=3");
        let snapshot = Snapshot {
            fields: Fields::parse(&duck).unwrap(),
            ..Snapshot::default()
        };
        let json: serde_json::Value = serde_json::from_str(&snapshot.to_json()).unwrap();
        assert_eq!(json["status"]["vips"], serde_json::json!([]));
        assert!(snapshot.to_metrics().contains("\ngoose_vips_held 0\n"));
        // Without --vip: no key, no gauge.
        let plain = Snapshot {
            fields: Fields::parse(LINE).unwrap(),
            ..Snapshot::default()
        };
        assert!(!plain.to_json().contains("vips"));
        assert!(!plain.to_metrics().contains("vips"));
    }

    #[test]
    fn a_duck_without_a_goose_is_unhealthy() {
        let line = LINE
            .replace("role=goose", "role=duck")
            .replace("goose=2", "goose=none");
        assert!(!Fields::parse(&line).unwrap().is_healthy());
        let stopped = LINE
            .replace("role=goose", "role=duck")
            .replace("goose=2", "goose=none")
            .replace("state=running", "state=stopped");
        assert!(!Fields::parse(&stopped).unwrap().is_healthy());
        assert_eq!(Fields::parse("err busy"), None);
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
    }
}
