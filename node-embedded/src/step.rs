//! [`Board::step`]: one turn of a board's loop, the same on every board: poll, then log and
//! act on what the node did. Each firmware keeps only what differs (its driver, clock,
//! flash, configuration, where a log line goes and how it halts).

use core::fmt;

use embedded_storage::nor_flash::NorFlash;
use goose_core::{Event, Instant};
use smoltcp::phy::Device;

use crate::board::{Board, Clock};

/// Events [`Board::step`] logs per turn; the core keeps at most
/// `goose_core::limits::EVENTS_MAX` waiting anyway, and the rest are logged next turn.
pub const EVENTS_PER_STEP_MAX: usize = 16;

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
        log: &mut impl FnMut(fmt::Arguments<'_>),
    ) -> Result<Option<Instant>, Halt> {
        let wake = self.poll(device, clock);
        for _ in 0..EVENTS_PER_STEP_MAX {
            let Some(event) = self.poll_event() else {
                break;
            };
            let (id, term) = (self.node().id(), self.node().term());
            match event {
                Event::Changed(observed) => {
                    let term = observed.term;
                    let raft = observed.raft.as_str();
                    match (observed.goose, observed.leader) {
                        (true, _) => log(format_args!("node {id} term {term}: goose ({raft})")),
                        (false, Some(leader)) if leader == id => {
                            log(format_args!(
                                "node {id} term {term}: duck ({raft}, not yet goose)"
                            ));
                        }
                        (false, Some(leader)) => {
                            log(format_args!(
                                "node {id} term {term}: duck ({raft} of {leader})"
                            ));
                        }
                        (false, None) => {
                            log(format_args!(
                                "node {id} term {term}: duck ({raft}, no leader)"
                            ));
                        }
                    }
                }
                Event::TransferSent { to } => {
                    log(format_args!(
                        "node {id} term {term}: leadership handed to {to}"
                    ));
                }
                Event::TransferFailed => log(format_args!(
                    "node {id} term {term}: leadership transfer found no target"
                )),
                // The contract: a removed node logs it and exits 0.
                Event::Removed => {
                    log(format_args!(
                        "node {id} term {term}: removed from the flock, exiting"
                    ));
                    return Err(Halt::Removed);
                }
                Event::Failed => {
                    log(format_args!(
                        "node {id} term {term}: storage failed; fail-stop"
                    ));
                    return Err(Halt::Failed);
                }
            }
        }
        Ok(wake)
    }
}
