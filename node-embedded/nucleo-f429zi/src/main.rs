//! Duck Duck Goose on a NUCLEO-F429ZI: one `goose_embedded::Board` on the STM32F429's
//! Ethernet MAC (stm32-eth's rings, `eth`), TIM2 extended to 64 bits (`clock`), two
//! sectors of its flash (`flash`), and the configuration page `goose board-config` writes.
//!
//! Start-up: clocks (168 MHz from the ST-LINK's 8 MHz), the watchdog, the clock, the
//! configuration page (the board's command line and the cluster key; refused unless whole
//! and valid), the seed from the hardware RNG, the state map on its two sectors, the
//! Ethernet MAC and its PHY (waiting for a link), then the board (with a key, after the
//! boot epoch on the flash has been advanced). Then the loop: one `Board::step` a turn,
//! the watchdog fed after each, and WFI until the next 1 ms SysTick when nothing waits.
//!
//! Whatever stops the board (a bad page, a flash it cannot trust, `ctl remove`, a storage
//! failure) is logged over RTT, lights the red LED (LD3) and parks the core: it never
//! sends again, and feeds the watchdog so that it is not reset into the same state over
//! and over. Attach probe-rs (`probe-rs attach`) to read why.
#![no_std]
#![no_main]

mod clock;
mod eth;
mod flash;

use core::cell::RefCell;
use core::fmt;

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use defmt_rtt as _;
use goose_board_args::page::{self, Page, PAGE_SIZE};
use goose_core::auth::key::ClusterKey;
use goose_core::Instant;
use goose_embedded::flash::Region;
use goose_embedded::store::FlashStore;
use goose_embedded::{check_node, Board, BoardConfig, Buffers, Clock, Halt, Payloads};
use panic_probe as _;
use rand_core::RngCore;
use static_cell::{ConstStaticCell, StaticCell};
use stm32_eth::dma::{RxRingEntry, TxRingEntry};
use stm32_eth::mac::phy::lan87xxa::LAN8742A;
use stm32_eth::mac::phy::PhySpeed;
use stm32_eth::mac::{Phy, Speed};
use stm32_eth::{EthPins, Parts, PartsIn};
use stm32f4xx_hal::flash::LockedFlash;
use stm32f4xx_hal::gpio::{Output, PushPull, PB14};
use stm32f4xx_hal::pac;
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rng::RngExt;
use stm32f4xx_hal::watchdog::IndependentWatchdog;

use crate::clock::TimerClock;
use crate::eth::Eth;
use crate::flash::InternalFlash;

/// The PHY's address on the MDIO bus (the NUCLEO's LAN8742A).
const PHY_ADDRESS: u8 = 0;
/// How long start-up waits for an Ethernet link before it runs without one (the link may
/// come later; the loop checks the PHY every [`PHY_CHECK_EVERY_MS`]).
const LINK_WAIT_MS: u32 = 5_000;
/// How often the loop asks the PHY for the link's speed and duplex, and sets the MAC's.
const PHY_CHECK_EVERY_MS: u64 = 1_000;
/// The independent watchdog's period: longer than the longest stall a turn of the loop can
/// take (a 128 KiB sector erase, at most 4 s), far shorter than the clock's wrap (71.6 min).
const WATCHDOG_MS: u32 = 8_000;
/// Receive and transmit DMA descriptors (each with a 1522-byte buffer).
const RX_DESCRIPTORS: usize = 4;
const TX_DESCRIPTORS: usize = 4;
/// RNG words drawn before the seed gives up on the RNG (it can report a clock or seed
/// error); the seed then falls back to the id's default mixed with the clock.
const RNG_ATTEMPTS_MAX: usize = 8;
/// SysTick wakes the loop from WFI this often (ms): an idle board looks at its timers.
const WAKE_EVERY_MS: u32 = 1;
/// The core clock.
const SYSCLK_HZ: u32 = 168_000_000;

type StateFlash = Region<InternalFlash>;

static RX_RING: ConstStaticCell<[RxRingEntry; RX_DESCRIPTORS]> =
    ConstStaticCell::new([const { RxRingEntry::RX_INIT }; RX_DESCRIPTORS]);
static TX_RING: ConstStaticCell<[TxRingEntry; TX_DESCRIPTORS]> =
    ConstStaticCell::new([const { TxRingEntry::INIT }; TX_DESCRIPTORS]);
static PAGE: ConstStaticCell<[u8; PAGE_SIZE]> = ConstStaticCell::new([0; PAGE_SIZE]);
static BUFFERS: ConstStaticCell<Buffers<'static>> = ConstStaticCell::new(Buffers::new());
static PAYLOADS: ConstStaticCell<Payloads> = ConstStaticCell::new(Payloads::new());
static STORE: StaticCell<RefCell<FlashStore<StateFlash>>> = StaticCell::new();
static ETH: StaticCell<Eth<'static, 'static>> = StaticCell::new();

extern "C" {
    /// The configuration page's sector (memory.x).
    static __goose_config_start: u8;
    /// The state's two sectors (memory.x).
    static __goose_state_start: u8;
    static __goose_state_end: u8;
}

/// The flash's base address: the HAL's offsets count from it.
const FLASH_BASE: usize = 0x0800_0000;

/// One line of the board's log.
fn log(line: &str) {
    defmt::info!("{=str}", line);
}

/// What the board needs to park: the red LED and the watchdog.
struct Park {
    led: PB14<Output<PushPull>>,
    watchdog: IndependentWatchdog,
}

impl Park {
    /// Logs why, lights the red LED and stops for good (module docs).
    fn halt(mut self, args: fmt::Arguments<'_>) -> ! {
        defmt::error!("{}", defmt::Display2Format(&args));
        self.led.set_high();
        loop {
            self.watchdog.feed();
            cortex_m::asm::wfi();
        }
    }
}

#[entry]
fn main() -> ! {
    let (Some(chip), Some(mut core)) = (pac::Peripherals::take(), cortex_m::Peripherals::take())
    else {
        // Only a second call of `main` could get here.
        loop {
            cortex_m::asm::wfi();
        }
    };
    // The NUCLEO's 8 MHz comes from the ST-LINK's MCO, hence the bypass. The RNG needs the
    // 48 MHz clock; Ethernet needs HCLK of at least 25 MHz.
    let clocks = chip
        .RCC
        .constrain()
        .cfgr
        .use_hse(8.MHz())
        .bypass_hse_oscillator()
        .sysclk(SYSCLK_HZ.Hz())
        .hclk(SYSCLK_HZ.Hz())
        .require_pll48clk()
        .freeze();
    let mut watchdog = IndependentWatchdog::new(chip.IWDG);
    watchdog.start(WATCHDOG_MS.millis());
    let gpiob = chip.GPIOB.split();
    let mut park = Park {
        led: gpiob.pb14.into_push_pull_output(),
        watchdog,
    };
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(SYSCLK_HZ / 1_000 * WAKE_EVERY_MS - 1);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();
    let Some(clock) = TimerClock::start(chip.TIM2, &clocks) else {
        park.halt(format_args!("TIM2's clock is not a whole number of MHz"));
    };

    let mut internal = LockedFlash::new(chip.FLASH);
    let page = read_page(&mut internal);
    let page = match page::read_page(page) {
        Ok(page) => page,
        Err(error) => park.halt(format_args!("goose: {error}")),
    };
    let Page { args, key_file } = page;
    let mut config = match BoardConfig::from_args(args) {
        Ok(config) => config,
        Err(error) => park.halt(format_args!("goose: {error}")),
    };
    if config.host.is_some() {
        park.halt(format_args!(
            "goose: the page has no --address: a real board needs its own (goose board-config)"
        ));
    }
    if let Some(key_file) = key_file {
        match ClusterKey::from_file_bytes(key_file) {
            Ok(key) => config.key = Some(key),
            Err(error) => park.halt(format_args!("goose: configuration page key: {error}")),
        }
    }
    config.seed = seed(chip.RNG, &clocks, config.seed, &clock);
    let id = config.node.id;

    let Some(region) = state_region(internal) else {
        park.halt(format_args!(
            "node {id}: the state sectors in memory.x are not whole sectors of this flash"
        ));
    };
    let store = match FlashStore::new(region) {
        Ok(store) => STORE.init(RefCell::new(store)),
        Err(error) => park.halt(format_args!("node {id}: state flash: {error}")),
    };

    let gpioa = chip.GPIOA.split();
    let gpioc = chip.GPIOC.split();
    let gpiog = chip.GPIOG.split();
    let pins = EthPins {
        ref_clk: gpioa.pa1,
        crs: gpioa.pa7,
        tx_en: gpiog.pg11,
        tx_d0: gpiog.pg13,
        tx_d1: gpiob.pb13,
        rx_d0: gpioc.pc4,
        rx_d1: gpioc.pc5,
    };
    let mdio = gpioa.pa2.into_alternate();
    let mdc = gpioc.pc1.into_alternate();
    let parts = PartsIn {
        mac: chip.ETHERNET_MAC,
        mmc: chip.ETHERNET_MMC,
        dma: chip.ETHERNET_DMA,
    };
    let started = stm32_eth::new_with_mii(
        parts,
        RX_RING.take(),
        TX_RING.take(),
        clocks,
        pins,
        mdio,
        mdc,
    );
    let Ok(Parts { mac, dma }) = started else {
        park.halt(format_args!(
            "node {id}: Ethernet refused the clock (HCLK under 25 MHz)"
        ));
    };
    let mut phy = LAN8742A::new(mac, PHY_ADDRESS);
    phy.phy_init();
    let link_wait_start = clock.now();
    while !phy.link_established()
        && clock.now().saturating_since(link_wait_start).millis() < u64::from(LINK_WAIT_MS)
    {
        park.watchdog.feed();
    }
    set_speed(&mut phy);
    let eth = ETH.init(Eth::new(dma));

    // The node's state, the interface, then the board with the node built in place in it:
    // each result stays where it is returned (see `goose_embedded::Board::build`).
    let checked = check_node(&config, store);
    let checked = match &checked {
        Ok(checked) => checked,
        Err(error) => park.halt(format_args!(
            "node {id}: {error}; refusing to start (erase the state sectors to start afresh: \
             probe-rs erase)"
        )),
    };
    let (address, port) = (config.address, config.port);
    let prepared = Board::prepare(
        config,
        eth,
        BUFFERS.take(),
        PAYLOADS.take(),
        store,
        clock.now(),
    );
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(error) => park.halt(format_args!("node {id}: {error}")),
    };
    let mut board = Board::build(prepared, checked, clock.now());
    defmt::info!(
        "{}",
        defmt::Display2Format(&format_args!(
            "node {id} term {}: board listening on {address}:{port}, {} members{}",
            board.node().term(),
            board.node().members().len(),
            if board.epoch().is_some() {
                ", sealed with the cluster key"
            } else {
                ""
            }
        ))
    );

    let mut next_phy_check = clock.now();
    loop {
        let wake = match board.step(eth, &clock, &mut log) {
            Ok(wake) => wake,
            Err(Halt::Removed) => park.halt(format_args!("node {id}: removed; parked")),
            Err(Halt::Failed) => park.halt(format_args!("node {id}: storage failed; parked")),
        };
        // Right after a turn, whose clock readings bound the time since the last one.
        park.watchdog.feed();
        let now = clock.now();
        if now >= next_phy_check {
            next_phy_check = now + goose_core::Duration::from_millis(PHY_CHECK_EVERY_MS);
            set_speed(&mut phy);
        }
        let idle = wake.is_none_or(|wake: Instant| wake > clock.now());
        if idle && !eth.has_frame() {
            cortex_m::asm::wfi();
        }
    }
}

/// Only wakes the core from WFI; time comes from TIM2 (`clock`).
#[exception]
fn SysTick() {}

/// The configuration page's bytes, read from its sector into a static buffer.
fn read_page(flash: &mut LockedFlash) -> &'static [u8; PAGE_SIZE] {
    let page = PAGE.take();
    let start = core::ptr::addr_of!(__goose_config_start) as usize - FLASH_BASE;
    // A failed read leaves the buffer zeroed, which the page reader refuses (no magic).
    let _ = embedded_storage::nor_flash::ReadNorFlash::read(flash, start as u32, page);
    page
}

/// The state's two sectors (memory.x) as a flash of their own.
fn state_region(flash: LockedFlash) -> Option<StateFlash> {
    let start = core::ptr::addr_of!(__goose_state_start) as usize - FLASH_BASE;
    let end = core::ptr::addr_of!(__goose_state_end) as usize - FLASH_BASE;
    Region::new(
        InternalFlash(flash),
        u32::try_from(start).ok()?,
        u32::try_from(end - start).ok()?,
    )
}

/// A fresh seed from the hardware RNG; if it keeps failing, `fallback` mixed with the clock
/// (the seed only spreads election timeouts: a poor one costs split votes, not safety).
fn seed(
    rng: pac::RNG,
    clocks: &stm32f4xx_hal::rcc::Clocks,
    fallback: u64,
    clock: &TimerClock,
) -> u64 {
    let mut rng = rng.constrain(clocks);
    let mut bytes = [0; 8];
    for _ in 0..RNG_ATTEMPTS_MAX {
        if rng.try_fill_bytes(&mut bytes).is_ok() {
            return u64::from_le_bytes(bytes);
        }
    }
    defmt::warn!("goose: the RNG failed; seeding from the id and the clock");
    fallback ^ clock.now().micros()
}

/// Sets the MAC's speed and duplex to the link's, if there is one.
fn set_speed<
    M: stm32_eth::mac::Miim + core::ops::DerefMut<Target = stm32_eth::mac::EthernetMAC>,
>(
    phy: &mut LAN8742A<M>,
) {
    let Some(speed) = phy.link_speed() else {
        return;
    };
    let speed = match speed {
        PhySpeed::HalfDuplexBase10T => Speed::HalfDuplexBase10T,
        PhySpeed::FullDuplexBase10T => Speed::FullDuplexBase10T,
        PhySpeed::HalfDuplexBase100Tx => Speed::HalfDuplexBase100Tx,
        PhySpeed::FullDuplexBase100Tx => Speed::FullDuplexBase100Tx,
    };
    let mac = phy.get_miim();
    if mac.get_speed() != speed {
        mac.set_speed(speed);
    }
}
