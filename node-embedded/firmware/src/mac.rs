//! A smoltcp [`Device`] for the LM3S6965's Ethernet MAC (QEMU model `stellaris`), polled.
//!
//! Register facts come from the LM3S6965 datasheet's Ethernet chapter and from QEMU's
//! model of it (`hw/net/stellaris_enet.c`), checked against that model. The driver is
//! written for both the QEMU model and the silicon:
//!
//! - interrupts are masked (`IM = 0`) and the FIFO is polled: an enabled line with no
//!   handler would storm;
//! - receive: `NP` counts frames waiting; the first `DATA` word holds the length (frame +
//!   2 length bytes + 4 FCS bytes) in its low half and frame bytes 0–1 in its high half,
//!   then the rest follows as little-endian words; the FCS is dropped before smoltcp sees
//!   the frame. A frame of impossible length resets the FIFO rather than being parsed;
//! - transmit: first word = payload length (frame − 14) | bytes 0–1 << 16, then the rest
//!   as words, then `TR.NEWTX`. The silicon needs `TCTL.TXEN` (with padding and CRC
//!   generation on, as set here) and clears `NEWTX` when done, so the driver offers no
//!   transmit token while `NEWTX` is set; QEMU transmits at once and ignores `TCTL`.
//!
//! Porting to the real chip also needs the PHY (the integrated one autonegotiates; set
//! `TCTL.DUPLEX` from its result) and the system clock; see the README.

use core::sync::atomic::{AtomicBool, Ordering};

use goose_embedded::ETHERNET_FRAME_SIZE_MAX;
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

/// The MAC's registers.
const BASE: usize = 0x4004_8000;
const RIS_IACK: usize = 0x00;
const IM: usize = 0x04;
const RCTL: usize = 0x08;
const TCTL: usize = 0x0c;
const DATA: usize = 0x10;
const IA0: usize = 0x14;
const IA1: usize = 0x18;
const NP: usize = 0x34;
const TR: usize = 0x38;

const RCTL_RXEN: u32 = 1 << 0;
const RCTL_BADCRC: u32 = 1 << 3;
const RCTL_RSTFIFO: u32 = 1 << 4;
const TCTL_TXEN: u32 = 1 << 0;
const TCTL_PADEN: u32 = 1 << 1;
const TCTL_CRC: u32 = 1 << 2;
const TR_NEWTX: u32 = 1 << 0;
const NP_MASK: u32 = 0x3f;
/// Every interrupt cause, for acknowledging.
const INTERRUPTS_ALL: u32 = 0x7f;

/// System control: run-mode clock gating 2, with the MAC's and PHY's bits.
const SYSCTL_RCGC2: usize = 0x400F_E108;
const RCGC2_EMAC0: u32 = 1 << 28;
const RCGC2_EPHY0: u32 = 1 << 30;

/// An Ethernet header: a payload length is the frame's length less this.
const ETHERNET_HEADER_SIZE: usize = 14;
/// Bytes a received length counts besides the frame: 2 length bytes and the 4-byte FCS.
const RX_OVERHEAD_SIZE: usize = 6;
/// The receive FIFO's size: no valid length exceeds it.
const RX_FIFO_SIZE: usize = 2048;
/// Polls of `TR.NEWTX` before a transmit is given up (the silicon sends a full frame in
/// about 120 µs at 100 Mbit/s; this is well over that at 12.5–50 MHz).
const TX_BUSY_POLLS_MAX: u32 = 100_000;

/// Frames and drops, for debugging a port.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MacStats {
    /// Frames handed to smoltcp.
    pub(crate) received: u32,
    /// Frames too short or too long for an Ethernet frame, dropped (either way).
    pub(crate) dropped: u32,
    /// Frames sent.
    pub(crate) sent: u32,
    /// Frames given up because the transmitter stayed busy.
    pub(crate) busy: u32,
}

fn register(offset: usize) -> *mut u32 {
    (BASE + offset) as *mut u32
}

fn read(offset: usize) -> u32 {
    // SAFETY: BASE + offset is one of the MAC's 32-bit registers listed above: always mapped
    // on this chip (and in QEMU's model) and 4-byte aligned. Only the one `Mac` (see
    // `Mac::take`) touches them, from thread mode.
    unsafe { register(offset).read_volatile() }
}

fn write(offset: usize, value: u32) {
    // SAFETY: as in `read`; writes to these registers affect only the MAC.
    unsafe { register(offset).write_volatile(value) }
}

/// The Ethernet MAC, with one receive and one transmit frame buffer.
pub(crate) struct Mac {
    rx: [u8; ETHERNET_FRAME_SIZE_MAX],
    tx: [u8; ETHERNET_FRAME_SIZE_MAX],
    pub(crate) stats: MacStats,
}

static TAKEN: AtomicBool = AtomicBool::new(false);

impl Mac {
    /// Buffers for the MAC, `const` so they can live in a `static`; [`Mac::start`] programs
    /// the hardware.
    pub(crate) const fn new() -> Self {
        Self {
            rx: [0; ETHERNET_FRAME_SIZE_MAX],
            tx: [0; ETHERNET_FRAME_SIZE_MAX],
            stats: MacStats {
                received: 0,
                dropped: 0,
                sent: 0,
                busy: 0,
            },
        }
    }

    /// Clocks the MAC, masks its interrupts, sets its address and starts it. Only the first
    /// call does so and returns `true`: there is one MAC.
    pub(crate) fn start(&mut self, mac: [u8; 6]) -> bool {
        if TAKEN.swap(true, Ordering::AcqRel) {
            return false;
        }
        // SAFETY: RCGC2 is the system controller's 32-bit clock-gating register, always
        // mapped; setting the MAC and PHY bits only starts their clocks.
        unsafe {
            let rcgc2 = SYSCTL_RCGC2 as *mut u32;
            rcgc2.write_volatile(rcgc2.read_volatile() | RCGC2_EMAC0 | RCGC2_EPHY0);
        }
        // The datasheet asks for a few cycles before the MAC is touched.
        cortex_m::asm::delay(16);
        write(IM, 0);
        write(RCTL, 0);
        write(RCTL, RCTL_RSTFIFO);
        write(RIS_IACK, INTERRUPTS_ALL);
        write(IA0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        write(IA1, u32::from_le_bytes([mac[4], mac[5], 0, 0]));
        write(TCTL, TCTL_TXEN | TCTL_PADEN | TCTL_CRC);
        write(RCTL, RCTL_RXEN | RCTL_BADCRC);
        true
    }

    /// Whether a frame is waiting (the loop sleeps only when none is).
    pub(crate) fn has_frame(&self) -> bool {
        read(NP) & NP_MASK != 0
    }

    fn transmitter_busy() -> bool {
        read(TR) & TR_NEWTX != 0
    }

    /// Reads the next frame into `rx` and returns its length without the FCS, or `None` if
    /// none is waiting or it was dropped.
    fn receive_frame(&mut self) -> Option<usize> {
        if !self.has_frame() {
            return None; // reading DATA now would underflow the FIFO
        }
        let first = read(DATA);
        let count = (first & 0xffff) as usize;
        let [_, _, byte0, byte1] = first.to_le_bytes();
        let words = count.div_ceil(4);
        if count > RX_FIFO_SIZE {
            // Not a length the FIFO can hold: out of step with it. Start afresh.
            write(RCTL, RCTL_RSTFIFO);
            write(RCTL, RCTL_RXEN | RCTL_BADCRC);
            self.stats.dropped = self.stats.dropped.wrapping_add(1);
            return None;
        }
        let frame_size = count.saturating_sub(RX_OVERHEAD_SIZE);
        let valid = (ETHERNET_HEADER_SIZE..=self.rx.len()).contains(&frame_size);
        // Bytes 2.. of the frame with its FCS, word by word; keep what fits the frame.
        let mut at = 2;
        if valid {
            self.rx[0] = byte0;
            self.rx[1] = byte1;
        }
        for _ in 1..words {
            let word = read(DATA).to_le_bytes();
            for byte in word {
                if valid && at < frame_size {
                    self.rx[at] = byte;
                }
                at += 1;
            }
        }
        write(RIS_IACK, INTERRUPTS_ALL);
        if valid {
            self.stats.received = self.stats.received.wrapping_add(1);
            Some(frame_size)
        } else {
            self.stats.dropped = self.stats.dropped.wrapping_add(1);
            None
        }
    }
}

/// A received frame, borrowed from the driver.
pub(crate) struct MacRx<'a>(&'a [u8]);

/// Room to build one frame, sent on `consume`.
pub(crate) struct MacTx<'a> {
    tx: &'a mut [u8; ETHERNET_FRAME_SIZE_MAX],
    stats: &'a mut MacStats,
}

impl RxToken for MacRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl TxToken for MacTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp never asks for more than the MTU, which is the buffer's size.
        let len = len.min(self.tx.len());
        let result = f(&mut self.tx[..len]);
        transmit(&self.tx[..len], self.stats);
        result
    }
}

/// Hands `frame` to the MAC. Out of line: `consume` is built once per smoltcp caller, and
/// this part is the same in each.
#[inline(never)]
fn transmit(frame: &[u8], stats: &mut MacStats) {
    let mut polls = 0;
    while Mac::transmitter_busy() {
        polls += 1;
        if polls >= TX_BUSY_POLLS_MAX {
            stats.busy = stats.busy.wrapping_add(1);
            return;
        }
    }
    let len = frame.len();
    if len < ETHERNET_HEADER_SIZE {
        stats.dropped = stats.dropped.wrapping_add(1);
        return;
    }
    let payload_size = (len - ETHERNET_HEADER_SIZE) as u32; // len ≤ 1514
    write(
        DATA,
        payload_size | u32::from(frame[0]) << 16 | u32::from(frame[1]) << 24,
    );
    for chunk in frame[2..].chunks(4) {
        let mut word = [0; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        write(DATA, u32::from_le_bytes(word));
    }
    write(TR, TR_NEWTX);
    stats.sent = stats.sent.wrapping_add(1);
}

impl Device for Mac {
    type RxToken<'a> = MacRx<'a>;
    type TxToken<'a> = MacTx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(MacRx<'_>, MacTx<'_>)> {
        let size = self.receive_frame()?;
        let rx = MacRx(&self.rx[..size]);
        let tx = MacTx {
            tx: &mut self.tx,
            stats: &mut self.stats,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<MacTx<'_>> {
        if Self::transmitter_busy() {
            return None;
        }
        Some(MacTx {
            tx: &mut self.tx,
            stats: &mut self.stats,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = ETHERNET_FRAME_SIZE_MAX;
        capabilities.max_burst_size = Some(1);
        capabilities
    }
}
