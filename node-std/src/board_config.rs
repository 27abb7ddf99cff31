//! `goose board-config`: the configuration page of a real board (the NUCLEO-F429ZI
//! firmware in `node-embedded/nucleo-f429zi`), written to a file for `probe-rs download`.
//!
//! The page holds the board's command line, in the very words `goose board` gives a QEMU
//! board and parsed by the same parser (`goose_board_args`), so what this command accepts
//! the firmware accepts, and the cluster key file's bytes, read by the firmware by the
//! desktop's key-file rule. The layout is `goose_board_args::page`.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use goose_board_args::page::{self, PAGE_SIZE};
use goose_core::NodeId;

use crate::{key_file, parse_node_id, parse_token, usage_error, PeerArg, TimingArgs};

/// Where the NUCLEO-F429ZI firmware reads its page (flash sector 21; its memory.x).
pub(crate) const NUCLEO_F429ZI_PAGE_ADDRESS: u32 = 0x081A_0000;

#[derive(Debug, Args)]
pub(crate) struct BoardConfigArgs {
    /// This board's node id, 1..65535.
    #[arg(long, value_parser = parse_node_id)]
    id: NodeId,
    /// The UDP port the board listens on.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// The board's own IPv4 address and prefix length on its LAN, e.g. 192.168.1.54/24;
    /// its member address is <address>:<port>.
    #[arg(long, value_name = "IP/PREFIX")]
    address: String,
    /// The router for members outside the board's subnet.
    #[arg(long, value_name = "IP")]
    gateway: Option<String>,
    /// Another member of the flock, as the board reaches it; repeat for each (at most 4).
    #[arg(long = "peer", value_name = "ID=IP:PORT")]
    peers: Vec<PeerArg>,
    /// Accept control datagrams that carry `token=<T>` (at most 64 bytes); without it and
    /// without a key, a board on a LAN takes no control at all.
    #[arg(long, value_name = "T", value_parser = parse_token)]
    control_token: Option<String>,
    /// The flock's cluster key file: its bytes go into the page (which is then as secret as
    /// the key: it is written with mode 0600).
    #[arg(long, value_name = "FILE")]
    cluster_key_file: Option<PathBuf>,
    /// The page file to write (an existing one is replaced).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    timing: TimingArgs,
}

/// Runs `goose board-config`: exit 0 with the page written, 2 on a usage error, 1 if a
/// file cannot be read or written.
pub(crate) fn run(args: BoardConfigArgs) -> ExitCode {
    let usage = |message: &str| -> ! { usage_error("board-config", message) };
    let config = args
        .timing
        .config(args.id)
        .unwrap_or_else(|message| usage(&message));
    let mut line = format!(
        "--id {} --port {} --heartbeat-ms {} --election-timeout-ms {}-{} --address {}",
        args.id,
        args.port,
        config.heartbeat_interval.millis(),
        config.election_timeout_min.millis(),
        config.election_timeout_max.millis(),
        args.address
    );
    if let Some(gateway) = &args.gateway {
        line.push_str(&format!(" --gateway {gateway}"));
    }
    for peer in &args.peers {
        line.push_str(&format!(" --peer {}={}", peer.id, peer.addr));
    }
    if let Some(token) = &args.control_token {
        line.push_str(&format!(" --control-token {token}"));
    }
    let board =
        goose_board_args::parse(line.split(' ')).unwrap_or_else(|error| usage(&format!("{error}")));
    let key = match &args.cluster_key_file {
        Some(path) => {
            let text = path.to_string_lossy();
            if let Err(error) = key_file::parse_key_file(&text) {
                usage(&format!("--cluster-key-file {text}: {error}"));
            }
            match std::fs::read(path) {
                Ok(bytes) => Some(bytes),
                Err(error) => {
                    eprintln!("goose board-config: cannot read {text}: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let mut bytes = [0; PAGE_SIZE];
    let size = page::write_page(&board, key.as_deref(), &mut bytes)
        .unwrap_or_else(|error| usage(&format!("{error}")));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&args.out)
        .and_then(|mut file| {
            file.write_all(&bytes[..size])
                .and_then(|()| file.sync_all())
        });
    if let Err(error) = written {
        eprintln!(
            "goose board-config: cannot write {}: {error}",
            args.out.display()
        );
        return ExitCode::FAILURE;
    }
    let mut summary = String::new();
    if let Ok(read) = page::read_page(&bytes[..size]) {
        // Writing into a String cannot fail.
        let _ = page::describe(&mut summary, &read);
    }
    let _ = writeln!(
        io::stdout(),
        "{}: {size} bytes: {summary}\nflash it (the NUCLEO-F429ZI's page is sector 21): \
         probe-rs download --chip STM32F429ZITx --binary-format bin --base-address \
         {NUCLEO_F429ZI_PAGE_ADDRESS:#010x} {}",
        args.out.display(),
        args.out.display()
    );
    ExitCode::SUCCESS
}
