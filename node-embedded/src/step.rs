//! [`Board::step`]: one turn of a board's loop, the same on every board: poll, then log and
//! act on what the node did. Each firmware keeps only what differs (its driver, clock,
//! flash, configuration, where a log line goes and how it halts).

use core::fmt::{self, Write};

use embedded_storage::nor_flash::NorFlash;
use goose_core::text::write_decimal;
use goose_core::{Event, Instant, NodeId, Term};
use heapless::String;
use smoltcp::phy::Device;

use crate::board::{Board, Clock};

/// Events [`Board::step`] logs per turn; the core keeps at most
/// `goose_core::limits::EVENTS_MAX` waiting anyway, and the rest are logged next turn.
pub const EVENTS_PER_STEP_MAX: usize = 16;

/// Bytes of the longest line [`Board::step`] logs (without its `\n`).
const EVENT_LINE_SIZE_MAX: usize = 96;

const _: () = assert!(
    "node 65535 term 18446744073709551615: leadership transfer found no target".len()
        <= EVENT_LINE_SIZE_MAX
);

/// Why a board's loop ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    /// `ctl remove` removed the board from the flock (the desktop node exits 0).
    Removed,
    /// Its storage failed and the node stopped for good (fail-stop; the desktop node
    /// exits 1).
    Failed,
}

impl<F: NorFlash> Board<'_, F> {
    /// One turn of the loop: [`Board::poll`], then each event the node acted on, logged
    /// through `log` as one line in the desktop node's words (`node 4 term 2: goose
    /// (leader)`). Returns when to poll next without a new frame, as [`Board::poll`] does.
    ///
    /// # Errors
    /// [`Halt`] when the board must stop: its line has been logged; the firmware halts.
    pub fn step<D: Device + ?Sized>(
        &mut self,
        device: &mut D,
        clock: &impl Clock,
        log: &mut impl FnMut(&str),
    ) -> Result<Option<Instant>, Halt> {
        let wake = self.poll(device, clock);
        for _ in 0..EVENTS_PER_STEP_MAX {
            let Some(event) = self.poll_event() else {
                break;
            };
            let mut line: String<EVENT_LINE_SIZE_MAX> = String::new();
            // The line fits (see EVENT_LINE_SIZE_MAX); were it cut, the log would say less.
            let _ = write_event(&mut line, self.node().id(), self.node().term(), &event);
            log(&line);
            match event {
                // The contract: a removed node logs it and exits 0.
                Event::Removed => return Err(Halt::Removed),
                Event::Failed => return Err(Halt::Failed),
                _ => {}
            }
        }
        Ok(wake)
    }
}

/// Writes the log line of `event` in the desktop node's words, a piece at a time: the
/// numbers by the core's digit writer, so a board's log lines link none of `core::fmt`'s
/// integer printing. `term` is the node's, for events that do not carry their own.
fn write_event(out: &mut impl Write, id: NodeId, term: Term, event: &Event) -> fmt::Result {
    let term = match event {
        Event::Changed(observed) => observed.term,
        _ => term,
    };
    out.write_str("node ")?;
    write_decimal(out, u64::from(id.get()))?;
    out.write_str(" term ")?;
    write_decimal(out, term.0)?;
    out.write_str(": ")?;
    match event {
        Event::Changed(observed) => {
            out.write_str(if observed.goose { "goose (" } else { "duck (" })?;
            out.write_str(observed.raft.as_str())?;
            match (observed.goose, observed.leader) {
                (true, _) => {}
                (false, Some(leader)) if leader == id => out.write_str(", not yet goose")?,
                (false, Some(leader)) => {
                    out.write_str(" of ")?;
                    write_decimal(out, u64::from(leader.get()))?;
                }
                (false, None) => out.write_str(", no leader")?,
            }
            out.write_char(')')
        }
        Event::TransferSent { to } => {
            out.write_str("leadership handed to ")?;
            write_decimal(out, u64::from(to.get()))
        }
        Event::TransferFailed => out.write_str("leadership transfer found no target"),
        Event::Removed => out.write_str("removed from the flock, exiting"),
        Event::Failed => out.write_str("storage failed; fail-stop"),
    }
}

#[cfg(test)]
mod tests {
    use core::fmt::Write;

    use goose_core::{Cause, Event, NodeId, Observed, RaftRole, Term};
    use heapless::String;

    use super::{write_event, EVENT_LINE_SIZE_MAX};

    /// Each event's line as `Board::step` wrote it with `format_args!`.
    fn by_format(id: NodeId, term: Term, event: &Event) -> String<256> {
        let mut line = String::new();
        match event {
            Event::Changed(observed) => {
                let term = observed.term;
                let raft = observed.raft.as_str();
                match (observed.goose, observed.leader) {
                    (true, _) => write!(line, "node {id} term {term}: goose ({raft})"),
                    (false, Some(leader)) if leader == id => {
                        write!(line, "node {id} term {term}: duck ({raft}, not yet goose)")
                    }
                    (false, Some(leader)) => {
                        write!(line, "node {id} term {term}: duck ({raft} of {leader})")
                    }
                    (false, None) => {
                        write!(line, "node {id} term {term}: duck ({raft}, no leader)")
                    }
                }
            }
            Event::TransferSent { to } => {
                write!(line, "node {id} term {term}: leadership handed to {to}")
            }
            Event::TransferFailed => write!(
                line,
                "node {id} term {term}: leadership transfer found no target"
            ),
            Event::Removed => write!(
                line,
                "node {id} term {term}: removed from the flock, exiting"
            ),
            Event::Failed => write!(line, "node {id} term {term}: storage failed; fail-stop"),
        }
        .unwrap();
        line
    }

    #[test]
    fn event_lines_are_written_as_the_format_machinery_would() {
        let mut checked = 0;
        for (me, term) in [(1, 0), (7, 42), (65535, u64::MAX)] {
            let id = NodeId::new(me).unwrap();
            let mut events = heapless::Vec::<Event, 40>::new();
            for event in [
                Event::Failed,
                Event::Removed,
                Event::TransferFailed,
                Event::TransferSent { to: id },
                Event::TransferSent {
                    to: NodeId::new(65535).unwrap(),
                },
            ] {
                events.push(event).unwrap();
            }
            for raft in [
                RaftRole::Leader,
                RaftRole::Follower,
                RaftRole::Candidate,
                RaftRole::Learner,
            ] {
                for goose in [false, true] {
                    for leader in [None, Some(id), NodeId::new(1), NodeId::new(65535)] {
                        let observed = Observed {
                            raft,
                            goose,
                            term: Term(u64::MAX - term),
                            leader,
                            cause: Cause::Started,
                        };
                        events.push(Event::Changed(observed)).unwrap();
                    }
                }
            }
            for event in events {
                let mut line: String<EVENT_LINE_SIZE_MAX> = String::new();
                write_event(&mut line, id, Term(term), &event).unwrap();
                assert_eq!(line.as_str(), by_format(id, Term(term), &event).as_str());
                checked += 1;
            }
        }
        assert_eq!(checked, 3 * (5 + 4 * 2 * 4));
    }
}
