//! `--http <ip:port>`: a read-only HTTP endpoint on its own thread, serving the snapshot the
//! event loop publishes ([`crate::status`]), so no request ever waits on the loop or the
//! loop on a request.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /status` | JSON: the `ctl status` pairs, members, term history, version, uptime |
//! | `GET /metrics` | the Prometheus text format |
//! | `GET /healthz` | 200 `ok` while running and goose or following a goose, else 503 |
//! | `GET /` | a small page of the flock as this node sees it, reloaded every second |
//!
//! Anything else is 404 (405 for another method). The loop publishes at most every
//! [`PUBLISH_EVERY`] and at every role change, so an answer is at most that old (the
//! page and `/status` say how long the lease had left when it was taken). One thread
//! answers one request at a time: the endpoint is for a monitor and a person, not for
//! load.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant as StdInstant;

use goose_core::{Duration, Instant, Observed};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::status::{Snapshot, TermView, HISTORY_MAX};

/// How often at most the loop publishes a new snapshot (besides every role change).
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The snapshot shared between the loop (writer) and the HTTP thread (reader): the loop
/// swaps in a new `Arc`, the thread clones the one it finds; neither holds the lock longer
/// than that.
type Shared = Arc<Mutex<Arc<Snapshot>>>;

/// The loop's side: what it keeps to build snapshots, and where it publishes them.
#[derive(Debug)]
pub(crate) struct Publisher {
    shared: Shared,
    listen: SocketAddr,
    started: StdInstant,
    history: VecDeque<TermView>,
    /// When the next snapshot is due; `None`: now (something changed).
    next: Option<Instant>,
}

impl Publisher {
    /// Whether a snapshot is due at `now`; if so, the next one is due after
    /// [`PUBLISH_EVERY`].
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        self.next = Some(now + PUBLISH_EVERY);
        true
    }

    /// A role change: a term not seen yet starts a line of the history; the goose seen in
    /// the current term is noted. Publishes at the next turn.
    pub(crate) fn changed(&mut self, observed: &Observed) {
        self.next = None;
        let term = observed.term.0;
        // The leader a node follows, or itself as leader: the goose of the term as this
        // node knew it.
        let goose = observed.leader.map(|id| id.get());
        match self.history.back_mut() {
            Some(last) if last.term == term => last.goose = last.goose.or(goose),
            _ => {
                if self.history.len() == HISTORY_MAX {
                    self.history.pop_front();
                }
                self.history.push_back(TermView {
                    term,
                    goose,
                    since_s: self.started.elapsed().as_secs_f64(),
                    cause: observed.cause.as_str(),
                });
            }
        }
    }

    /// Replaces the published snapshot with `snapshot` (its uptime, address and history
    /// filled in here).
    pub(crate) fn publish(&mut self, mut snapshot: Snapshot) {
        snapshot.listen = self.listen.to_string();
        snapshot.uptime_s = self.started.elapsed().as_secs_f64();
        snapshot.history = self.history.iter().cloned().collect();
        let snapshot = Arc::new(snapshot);
        match self.shared.lock() {
            Ok(mut slot) => *slot = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }
}

/// Binds `addr` and starts the thread that answers; returns the loop's side.
///
/// # Errors
/// If `addr` cannot be bound (in use, not local) or the thread cannot start.
pub(crate) fn serve(addr: SocketAddr, listen: SocketAddr) -> io::Result<Publisher> {
    let server = Server::http(addr).map_err(|error| io::Error::other(error.to_string()))?;
    let shared: Shared = Arc::new(Mutex::new(Arc::new(Snapshot::default())));
    let reader = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("goose-http".to_owned())
        .spawn(move || {
            // Ends with the process: the node's exit ends every thread.
            for request in server.incoming_requests() {
                answer(request, &reader);
            }
        })?;
    Ok(Publisher {
        shared,
        listen,
        started: StdInstant::now(),
        history: VecDeque::with_capacity(HISTORY_MAX),
        next: None,
    })
}

/// Answers one request from the snapshot last published.
fn answer(request: Request, shared: &Shared) {
    let snapshot = match shared.lock() {
        Ok(slot) => Arc::clone(&slot),
        Err(poisoned) => Arc::clone(&poisoned.into_inner()),
    };
    let (status, content_type, body) = match (request.method(), request.url()) {
        (Method::Get | Method::Head, url) => match url.split('?').next().unwrap_or("") {
            "/" => (200, "text/html; charset=utf-8", snapshot.to_html()),
            "/status" => (200, "application/json", snapshot.to_json()),
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                snapshot.to_metrics(),
            ),
            "/healthz" if snapshot.fields.is_healthy() => (200, "text/plain", "ok\n".into()),
            "/healthz" => (503, "text/plain", "unhealthy\n".into()),
            _ => (
                404,
                "text/plain",
                "not found: try /, /status, /metrics or /healthz\n".into(),
            ),
        },
        _ => (405, "text/plain", "read-only: GET only\n".into()),
    };
    let mut response = Response::from_string(body).with_status_code(status);
    if let Ok(header) = Header::from_bytes("Content-Type", content_type) {
        response.add_header(header);
    }
    if let Err(error) = request.respond(response) {
        log::debug!("http: answer not sent: {error}");
    }
}
