//! What a soak records: every probe (send time, receive time, node, reply) and every
//! lifecycle event the nemesis caused, all on one clock, in microseconds since the soak
//! started. Pure data; [`super::check`] judges it.

use std::fmt;
use std::io::{self, Write};

/// Microseconds since the soak started (one monotonic clock for probers and nemesis).
pub type Micros = u64;

/// A node's answer to `whois-goose`, as parsed from its reply line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// It answered `goose`.
    pub goose: bool,
    /// Its `id=`.
    pub id: u16,
    /// Its `term=`.
    pub term: u64,
    /// Its `goose=`: the goose it follows (itself for a goose), `None` for `none`.
    pub leader: Option<u16>,
    /// It said `state=stopped`.
    pub stopped: bool,
}

/// How a probe ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A well-formed reply arrived at `received`.
    Reply {
        /// When the reply arrived.
        received: Micros,
        /// What it said.
        answer: Answer,
    },
    /// A reply arrived that breaks the contract's format.
    Malformed {
        /// When the reply arrived.
        received: Micros,
        /// Why it is malformed, with the text.
        why: String,
    },
    /// No reply within the prober's timeout: the probe may or may not have been seen, so it
    /// proves nothing.
    Timeout,
}

/// One `whois-goose` datagram sent to one node, and what came back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    /// The node it was sent to.
    pub node: u16,
    /// Which prober sent it.
    pub prober: u16,
    /// When it was sent (taken just before `send_to`).
    pub sent: Micros,
    /// What came back.
    pub outcome: Outcome,
}

impl ProbeRecord {
    /// The reply's arrival time and answer, for a well-formed reply.
    pub fn answer(&self) -> Option<(Micros, Answer)> {
        match self.outcome {
            Outcome::Reply { received, answer } => Some((received, answer)),
            _ => None,
        }
    }
}

impl fmt::Display for ProbeRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "probe p{} -> node {} sent {}",
            self.prober,
            self.node,
            show(self.sent)
        )?;
        match &self.outcome {
            Outcome::Reply { received, answer } => {
                write!(
                    f,
                    " recv {}: {} id={} term={} goose=",
                    show(*received),
                    if answer.goose { "goose" } else { "duck" },
                    answer.id,
                    answer.term
                )?;
                match answer.leader {
                    Some(id) => write!(f, "{id}")?,
                    None => write!(f, "none")?,
                }
                if answer.stopped {
                    write!(f, " state=stopped")?;
                }
                Ok(())
            }
            Outcome::Malformed { received, why } => {
                write!(f, " recv {}: malformed ({why})", show(*received))
            }
            Outcome::Timeout => write!(f, ": timeout"),
        }
    }
}

/// Something the nemesis did (or the harness, for the first start).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// The node's process was started (first start) with this pid.
    Started {
        /// Node id.
        node: u16,
        /// Its pid.
        pid: u32,
    },
    /// `kill -9`.
    Killed {
        /// Node id.
        node: u16,
    },
    /// Started again on its data dir after a kill.
    Restarted {
        /// Node id.
        node: u16,
        /// Its new pid.
        pid: u32,
    },
    /// SIGSTOP.
    Paused {
        /// Node id.
        node: u16,
    },
    /// SIGCONT.
    Resumed {
        /// Node id.
        node: u16,
    },
    /// `ctl stop` (acknowledged or not).
    CtlStopped {
        /// Node id.
        node: u16,
        /// It answered `ok`.
        acked: bool,
    },
    /// `ctl start`.
    CtlStarted {
        /// Node id.
        node: u16,
        /// It answered `ok`.
        acked: bool,
    },
    /// `ctl partition` sent to every node: each node drops the peers outside its group.
    Partitioned {
        /// The groups, by id.
        groups: Vec<Vec<u16>>,
        /// Nodes that answered `ok`.
        acked: Vec<u16>,
    },
    /// `ctl heal` sent to every node.
    PartitionHealed {
        /// Nodes that answered `ok`.
        acked: Vec<u16>,
    },
    /// An isolated pause begins: a partition of the node alone, then SIGSTOP (both logged
    /// next as their own events).
    IsolatedPause {
        /// Node id.
        node: u16,
    },
    /// The node's veth port on the bridge was set down: no frame in or out.
    LinkCut {
        /// Node id.
        node: u16,
    },
    /// The port was set up again.
    LinkRestored {
        /// Node id.
        node: u16,
    },
    /// The node's process exited on its own (not a fault the nemesis injected).
    Exited {
        /// Node id.
        node: u16,
        /// How it exited.
        status: String,
    },
    /// Every fault has ended: all nodes run, none paused or stopped, every link up, every
    /// partition healed (each node acknowledged `ctl heal`). A goose is due within the
    /// liveness bound.
    AllHealed,
}

/// A lifecycle event and when it was complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// When the action was done (after the command returned).
    pub at: Micros,
    /// What was done.
    pub kind: EventKind,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {}: {:?}", show(self.at), self.kind)
    }
}

/// Everything one soak recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// Every probe, in no particular order.
    pub probes: Vec<ProbeRecord>,
    /// Every lifecycle event, in time order.
    pub events: Vec<Event>,
}

impl History {
    /// Probes and events that touch `from..=to` (a probe touches it if its send-to-receive
    /// span overlaps it), one per line, in time order. Only probes to `nodes` are listed
    /// (all if `nodes` is empty), and only the last `probe_lines_max` of them: the evidence
    /// of a violation sits at the end of its window. Every event in the window is listed.
    pub fn excerpt(
        &self,
        from: Micros,
        to: Micros,
        nodes: &[u16],
        probe_lines_max: usize,
    ) -> String {
        let mut probes: Vec<&ProbeRecord> = self
            .probes
            .iter()
            .filter(|probe| nodes.is_empty() || nodes.contains(&probe.node))
            .filter(|probe| {
                let end = match &probe.outcome {
                    Outcome::Reply { received, .. } | Outcome::Malformed { received, .. } => {
                        *received
                    }
                    Outcome::Timeout => probe.sent,
                };
                end >= from && probe.sent <= to
            })
            .collect();
        probes.sort_by_key(|probe| probe.sent);
        let skipped = probes.len().saturating_sub(probe_lines_max);
        let mut lines: Vec<(Micros, String)> = probes[skipped..]
            .iter()
            .map(|probe| (probe.sent, probe.to_string()))
            .collect();
        for event in &self.events {
            if event.at >= from && event.at <= to {
                lines.push((event.at, event.to_string()));
            }
        }
        // Stable, by time only: events of one instant keep the order they happened in.
        lines.sort_by_key(|(at, _)| *at);
        let mut text = Vec::with_capacity(lines.len() + 1);
        if skipped > 0 {
            text.push(format!("… {skipped} earlier probes left out"));
        }
        text.extend(lines.into_iter().map(|(_, line)| line));
        text.join("\n")
    }

    /// Writes the whole history as text, one probe (by send time) or event per line in time
    /// order, without building it in memory first (an hour's soak has millions of probes).
    ///
    /// # Errors
    ///
    /// The writer's.
    pub fn write_to(&self, out: &mut impl Write) -> io::Result<()> {
        let mut order: Vec<usize> = (0..self.probes.len()).collect();
        order.sort_by_key(|&index| (self.probes[index].sent, index));
        let mut events = self.events.iter().peekable();
        for index in order {
            let probe = &self.probes[index];
            while let Some(event) = events.next_if(|event| event.at < probe.sent) {
                writeln!(out, "{event}")?;
            }
            writeln!(out, "{probe}")?;
        }
        for event in events {
            writeln!(out, "{event}")?;
        }
        Ok(())
    }
}

/// `12.345678s`.
pub fn show(at: Micros) -> String {
    format!("{}.{:06}s", at / 1_000_000, at % 1_000_000)
}
