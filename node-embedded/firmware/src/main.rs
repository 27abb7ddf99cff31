//! Duck Duck Goose on QEMU's lm3s6965evb: one [`Board`] on the Stellaris MAC, the host's
//! monotonic clock (see `clock`) and a state file on the host.
//!
//! Start-up: the command line (`-append "…"`, read through semihosting; see
//! `goose_embedded::args`), the cluster key file if `--key-file` names one (read through
//! semihosting: the key itself is never on QEMU's command line, which any `ps` shows), the
//! state file (semihosting file I/O behind a `FileFlash`), the MAC with the id's address,
//! the clock (and SysTick's wake-ups), then the board at 10.0.2.15/24 behind slirp's
//! 10.0.2.2 (with a key, after the boot epoch on the flash has been advanced). Then the
//! loop: poll the board, log its events, and sleep (WFI) until the next 1 ms tick when no
//! frame waits and nothing is due.
//! A bad command line exits 2; a key file that cannot be read or holds no key, or a state
//! or epoch that cannot be read or trusted, or a host clock that cannot be read, exits 1,
//! and so does a storage or clock failure later (fail-stop, as the desktop node does).
//!
//! There is no `#[global_allocator]`: if any crate in the graph linked `alloc`, this would
//! not link, which is how the build proves the node allocates nothing.
#![no_std]
#![no_main]

mod clock;
mod host_file;
mod mac;
mod panic;
#[cfg(feature = "report")]
mod report;

use core::cell::RefCell;
use core::ffi::CStr;
use core::fmt::{self, Write as _};

use cortex_m_rt::entry;
// The chip's interrupt vector table and memory.x: linked in, never called.
use goose_core::auth::key::ClusterKey;
use goose_core::text::write_decimal;
use goose_core::{Instant, NodeId};
use goose_embedded::args;
use goose_embedded::flash::FileFlash;
use goose_embedded::store::FlashStore;
use goose_embedded::{check_node, Board, BoardConfig, Buffers, Clock, Halt, Payloads, Prepared};
use heapless::String;
use lm3s6965 as _;
use semihosting::io::Write as _;
use static_cell::{ConstStaticCell, StaticCell};

use crate::clock::HostClock;
use crate::host_file::HostFile;
use crate::mac::Mac;

/// Bytes of the command line read through semihosting: a 5-node flock's line with a long
/// state path is about 250.
const COMMAND_LINE_SIZE_MAX: usize = 1024;
/// Bytes of the state file's path, and of the key file's, with its NUL.
const PATH_BUFFER_SIZE: usize = args::PATH_SIZE_MAX + 1;
/// Bytes of one log line (the usage line is the longest, about 230); longer ones are cut.
const LOG_LINE_SIZE_MAX: usize = 256;

type Flash = FileFlash<HostFile>;

static BUFFERS: ConstStaticCell<Buffers<'static>> = ConstStaticCell::new(Buffers::new());
static PAYLOADS: ConstStaticCell<Payloads> = ConstStaticCell::new(Payloads::new());
static MAC: ConstStaticCell<Mac> = ConstStaticCell::new(Mac::new());
static STORE: StaticCell<RefCell<FlashStore<Flash>>> = StaticCell::new();

/// Writes one line to the host's stderr (one semihosting call per line).
fn log(text: &str) {
    Line::new(text).log();
}

/// One log line, built a piece at a time: numbers by the core's digit writer, so the
/// firmware links none of `core::fmt`'s integer printing. Once a piece does not fit, the
/// rest is dropped, as `write!` into the same buffer would.
struct Line {
    text: String<LOG_LINE_SIZE_MAX>,
    cut: bool,
}

impl Line {
    fn new(text: &str) -> Self {
        let mut line = Self {
            text: String::new(),
            cut: false,
        };
        line.str(text);
        line
    }

    /// `node <id>: `, how most lines start.
    fn node(id: NodeId) -> Self {
        let mut line = Self::new("node ");
        line.id(id).str(": ");
        line
    }

    fn str(&mut self, text: &str) -> &mut Self {
        self.cut = self.cut || self.text.push_str(text).is_err();
        self
    }

    fn number(&mut self, value: u64) -> &mut Self {
        self.cut = self.cut || write_decimal(&mut self.text, value).is_err();
        self
    }

    fn id(&mut self, id: NodeId) -> &mut Self {
        self.number(u64::from(id.get()))
    }

    /// An error's own words: the one piece still written through `core::fmt`.
    fn error(&mut self, error: &impl fmt::Display) -> &mut Self {
        self.cut = self.cut || write!(self.text, "{error}").is_err();
        self
    }

    /// A value's `Debug` words, through `core::fmt` too.
    fn debug(&mut self, value: &impl fmt::Debug) -> &mut Self {
        self.cut = self.cut || write!(self.text, "{value:?}").is_err();
        self
    }

    /// Writes the line and its `\n` to the host's stderr, in one call.
    fn log(&mut self) {
        if self.text.push('\n').is_err() {
            self.text.pop();
            let _ = self.text.push('\n');
        }
        if let Ok(mut stderr) = semihosting::io::stderr() {
            let _ = stderr.write_all(self.text.as_bytes());
        }
    }

    /// Logs the line and ends QEMU with `code`.
    fn fail(&mut self, code: i32) -> ! {
        self.log();
        semihosting::process::exit(code)
    }
}

#[entry]
fn main() -> ! {
    #[cfg(feature = "report")]
    report::paint_stack();
    let (config, path, store, mac, clock) = start();
    // The board lives in this frame, which never returns, rather than in a static: a call's
    // result is built where its caller keeps it, so the board (8.9 KB) is built once, in
    // place, where filling a static would build it on the stack first and copy it. (The
    // node inside it is copied in once, from the frame of `Node::start`.)
    let mut board = assemble(config, &path, mac, store, &clock);
    listening(&board, &path);
    run(&mut board, mac, &clock)
}

/// The board, returned into `main`'s frame as it is built; exits 1 if it cannot start.
/// What it builds the board from lives in this frame, gone before the loop runs.
#[inline(never)]
fn assemble(
    config: BoardConfig,
    path: &str,
    mac: &mut Mac,
    store: &'static RefCell<FlashStore<Flash>>,
    clock: &HostClock,
) -> Board<'static, Flash> {
    let checked = check_node(&config, store);
    let checked = match &checked {
        Ok(checked) => checked,
        Err(error) => Line::node(config.node.id)
            .error(error)
            .str("; refusing to start (state file ")
            .str(path)
            .str(" is never reset automatically)")
            .fail(1),
    };
    let prepared = prepare(config, mac, store, clock);
    Board::build(prepared, checked, clock.now())
}

/// Everything before the board. Each step that needs a large frame is a call of its own,
/// so their frames never stack up.
#[inline(never)]
fn start() -> (
    BoardConfig,
    String<PATH_BUFFER_SIZE>,
    &'static RefCell<FlashStore<Flash>>,
    &'static mut Mac,
    HostClock,
) {
    let (config, path) = configure();
    let id = config.node.id;
    let store = open_store(id, &path);
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        Line::node(id).str("core peripherals already taken").fail(1);
    };
    let mac = MAC.take();
    if !mac.start(config.mac) {
        Line::node(id).str("MAC already started").fail(1);
    }
    let Some(clock) = HostClock::start(peripherals.SYST) else {
        Line::node(id)
            .str("no host clock (semihosting SYS_ELAPSED and SYS_TICKFREQ): run under QEMU")
            .fail(1);
    };
    (config, path, store, mac, clock)
}

/// The board's interface, and with a key its boot epoch; exits 1 if they fail.
#[inline(never)]
fn prepare(
    config: BoardConfig,
    mac: &mut Mac,
    store: &'static RefCell<FlashStore<Flash>>,
    clock: &HostClock,
) -> Prepared<'static, Flash> {
    let id = config.node.id;
    let (buffers, payloads) = (BUFFERS.take(), PAYLOADS.take());
    match Board::prepare(config, mac, buffers, payloads, store, clock.now()) {
        Ok(prepared) => prepared,
        Err(error) => Line::node(id).error(&error).fail(1),
    }
}

/// Says where the board listens.
#[inline(never)]
fn listening(board: &Board<'static, Flash>, path: &str) {
    let node = board.node();
    let port = u64::from(board.config().port);
    let mut line = Line::new("node ");
    line.id(node.id()).str(" term ").number(node.term().0);
    line.str(": board listening on 10.0.2.15:").number(port);
    line.str(" (host 127.0.0.1:")
        .number(port)
        .str("), state ")
        .str(path);
    line.str(", ")
        .number(node.members().len() as u64)
        .str(" members");
    if let Some(epoch) = board.epoch() {
        line.str(", sealed with the cluster key, boot epoch ")
            .number(u64::from(epoch));
    }
    line.log();
}

#[inline(never)]
fn configure() -> (BoardConfig, String<PATH_BUFFER_SIZE>) {
    let Ok(command_line) = semihosting::experimental::env::args::<COMMAND_LINE_SIZE_MAX>() else {
        Line::new("goose-firmware: no command line (run QEMU with -append \"…\")").fail(2);
    };
    // The first words are the kernel's path (which may hold spaces): flags start at "--".
    let words = (&command_line)
        .map(|word| word.unwrap_or("--invalid-utf8"))
        .skip_while(|word| !word.starts_with("--"));
    let parsed = match args::parse(words) {
        Ok(parsed) => parsed,
        Err(error) => {
            Line::new("goose-firmware: ").error(&error).log();
            Line::new(args::USAGE).fail(2)
        }
    };
    let (state, key_file) = (parsed.state, parsed.key_file);
    let mut config = match BoardConfig::from_args(parsed) {
        Ok(config) => config,
        Err(error) => Line::new("goose-firmware: ").error(&error).fail(2),
    };
    let mut path: String<PATH_BUFFER_SIZE> = String::new();
    let written = match state {
        Some(state) => path.push_str(state).map_err(|()| fmt::Error),
        None => path
            .push_str("goose-board-")
            .map_err(|()| fmt::Error)
            .and_then(|()| write_decimal(&mut path, u64::from(config.node.id.get())))
            .and_then(|()| path.push_str(".flash").map_err(|()| fmt::Error)),
    };
    // Room for the NUL the host call needs.
    if written.is_err() || path.len() >= PATH_BUFFER_SIZE {
        Line::new("goose-firmware: --state path too long").fail(2);
    }
    if let Some(key_file) = key_file {
        config.key = Some(read_key(config.node.id, key_file));
    }
    (config, path)
}

/// The cluster key in the host file `path`; exits 2 if the path is too long, 1 if the file
/// cannot be read or does not hold a key.
#[inline(never)]
fn read_key(id: NodeId, path: &str) -> ClusterKey {
    let mut bytes = [0; PATH_BUFFER_SIZE];
    let Some(slot) = bytes
        .get_mut(..path.len())
        .filter(|_| path.len() < PATH_BUFFER_SIZE)
    else {
        Line::new("goose-firmware: --key-file path too long").fail(2);
    };
    slot.copy_from_slice(path.as_bytes());
    let Ok(path_c) = CStr::from_bytes_until_nul(&bytes) else {
        Line::new("goose-firmware: --key-file path holds a NUL").fail(2);
    };
    let mut text = [0; args::KEY_FILE_SIZE_MAX];
    let Some(text) = host_file::read_small(path_c, &mut text) else {
        Line::node(id)
            .str("cannot read key file ")
            .str(path)
            .str(" (missing, unreadable or too long)")
            .fail(1);
    };
    match ClusterKey::from_file_bytes(text) {
        Ok(key) => key,
        Err(error) => Line::node(id)
            .str("key file ")
            .str(path)
            .str(": ")
            .error(&error)
            .str(" (or exactly 32 raw bytes)")
            .fail(1),
    }
}

/// The state map on the host file `path` (created if missing); exits 1 if it cannot be
/// opened or holds something that is not a state map.
#[inline(never)]
fn open_store(id: NodeId, path: &str) -> &'static RefCell<FlashStore<Flash>> {
    let mut bytes = [0; PATH_BUFFER_SIZE];
    bytes[..path.len()].copy_from_slice(path.as_bytes());
    let Ok(path_c) = CStr::from_bytes_until_nul(&bytes) else {
        Line::new("goose-firmware: --state path too long").fail(2);
    };
    let Some(file) = HostFile::open(path_c) else {
        Line::node(id)
            .str("cannot open state file ")
            .str(path)
            .fail(1);
    };
    let flash = match FileFlash::open(file) {
        Ok(flash) => flash,
        Err(error) => Line::node(id)
            .str("state file ")
            .str(path)
            .str(": ")
            .debug(&error)
            .fail(1),
    };
    match FlashStore::new(flash) {
        Ok(store) => STORE.init(RefCell::new(store)),
        Err(error) => Line::node(id)
            .str("state file ")
            .str(path)
            .str(": ")
            .error(&error)
            .fail(1),
    }
}

fn run(board: &mut Board<'static, Flash>, mac: &mut Mac, clock: &HostClock) -> ! {
    #[cfg(feature = "report")]
    let mut report = report::Report::new(clock.now(), board.node().id());
    loop {
        #[cfg(feature = "report")]
        let turn_start = clock.now();
        let wake = match board.step(mac, clock, &mut log) {
            Ok(wake) => wake,
            // The contract: a removed node exits 0; a failed one fail-stops, exit 1.
            Err(Halt::Removed) => semihosting::process::exit(0),
            Err(Halt::Failed) => semihosting::process::exit(1),
        };
        #[cfg(feature = "report")]
        report.turn(turn_start, clock.now(), board.node().id());
        let idle = wake.is_none_or(|wake: Instant| wake > clock.now());
        if idle && !mac.has_frame() {
            // SysTick wakes the core every millisecond; frames wait in the MAC's FIFO.
            cortex_m::asm::wfi();
        }
    }
}
