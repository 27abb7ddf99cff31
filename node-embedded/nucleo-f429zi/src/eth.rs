//! The STM32F4's Ethernet MAC as a smoltcp [`Device`]: stm32-eth's DMA descriptor rings,
//! one frame per token.
//!
//! stm32-eth brings its own adapter, for smoltcp 0.12; the board runs smoltcp 0.14, whose
//! `Device` trait is the same shape, so this is that adapter over the rings' public API
//! (`RxRing::recv_next`, `TxRing::send_next`), with two differences:
//!
//! - checksums: the MAC inserts the IPv4 and UDP checksums of every frame it sends (its
//!   descriptors ask for it), but stm32-eth has it pass frames whose checksums are wrong;
//!   smoltcp checks those in software (`Checksum::Rx`) and drops the bad ones;
//! - a token is handed out only when its ring has a free descriptor, so `consume` can
//!   always take one; if it cannot all the same, the frame is dropped and counted, never a
//!   panic.

use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use stm32_eth::dma::{EthernetDMA, RxRing, TxRing};

use goose_embedded::ETHERNET_FRAME_SIZE_MAX;

/// Frames and drops, for a debugger or a log line.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EthStats {
    /// Frames the DMA flagged (errors, or too long for a descriptor), dropped.
    pub(crate) rx_errors: u32,
    /// Frames smoltcp wanted to send when no descriptor was free after all, dropped.
    pub(crate) tx_dropped: u32,
}

/// The MAC's DMA and a scratch frame for a send that finds no descriptor.
pub(crate) struct Eth<'rx, 'tx> {
    dma: EthernetDMA<'rx, 'tx>,
    scratch: [u8; ETHERNET_FRAME_SIZE_MAX],
    pub(crate) stats: EthStats,
}

impl<'rx, 'tx> Eth<'rx, 'tx> {
    pub(crate) fn new(dma: EthernetDMA<'rx, 'tx>) -> Self {
        Self {
            dma,
            scratch: [0; ETHERNET_FRAME_SIZE_MAX],
            stats: EthStats::default(),
        }
    }

    /// Whether a received frame waits (the loop sleeps only when none does).
    pub(crate) fn has_frame(&mut self) -> bool {
        self.dma.rx_available()
    }
}

/// A received frame, read when consumed.
pub(crate) struct EthRx<'a, 'rx> {
    ring: &'a mut RxRing<'rx>,
    errors: &'a mut u32,
}

/// Room for one frame to send.
pub(crate) struct EthTx<'a, 'tx> {
    ring: &'a mut TxRing<'tx>,
    scratch: &'a mut [u8; ETHERNET_FRAME_SIZE_MAX],
    dropped: &'a mut u32,
}

impl RxToken for EthRx<'_, '_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        match self.ring.recv_next(None) {
            Ok(packet) => {
                let result = f(&packet);
                packet.free();
                result
            }
            Err(_) => {
                *self.errors = self.errors.wrapping_add(1);
                // An empty frame: smoltcp cannot parse it and drops it.
                f(&[])
            }
        }
    }
}

impl TxToken for EthTx<'_, '_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // smoltcp asks for at most the MTU below, which every descriptor holds.
        let len = len.min(ETHERNET_FRAME_SIZE_MAX);
        match self.ring.send_next(len, None) {
            Ok(mut packet) => {
                let result = f(&mut packet);
                packet.send();
                result
            }
            Err(_) => {
                *self.dropped = self.dropped.wrapping_add(1);
                f(&mut self.scratch[..len])
            }
        }
    }
}

impl<'rx, 'tx> Device for Eth<'rx, 'tx> {
    type RxToken<'a>
        = EthRx<'a, 'rx>
    where
        Self: 'a;
    type TxToken<'a>
        = EthTx<'a, 'tx>
    where
        Self: 'a;

    fn receive(&mut self, _: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !(self.dma.rx_available() && self.dma.tx_available()) {
            return None;
        }
        let (rx, tx) = self.dma.split();
        let rx = EthRx {
            ring: rx,
            errors: &mut self.stats.rx_errors,
        };
        let tx = EthTx {
            ring: tx,
            scratch: &mut self.scratch,
            dropped: &mut self.stats.tx_dropped,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _: Instant) -> Option<Self::TxToken<'_>> {
        if !self.dma.tx_available() {
            return None;
        }
        let (_, tx) = self.dma.split();
        Some(EthTx {
            ring: tx,
            scratch: &mut self.scratch,
            dropped: &mut self.stats.tx_dropped,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut capabilities = DeviceCapabilities::default();
        capabilities.medium = Medium::Ethernet;
        capabilities.max_transmission_unit = ETHERNET_FRAME_SIZE_MAX;
        capabilities.max_burst_size = Some(1);
        // The MAC computes these on the way out; smoltcp checks them on the way in.
        capabilities.checksum.ipv4 = Checksum::Rx;
        capabilities.checksum.udp = Checksum::Rx;
        capabilities.checksum.icmpv4 = Checksum::Rx;
        capabilities
    }
}
