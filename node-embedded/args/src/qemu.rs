//! The QEMU command line that runs one board, for launchers (`goose board`) and tests:
//!
//! ```text
//! qemu-system-arm -M lm3s6965evb -nographic -monitor none \
//!     -semihosting-config enable=on,target=native \
//!     -nic user,model=stellaris,mac=02:00:00:00:00:04,hostfwd=udp:127.0.0.1:9903-:9903 \
//!     -kernel <firmware elf> -append "<write output>"
//! ```
//!
//! [`PROGRAM`], then [`FIXED_ARGS`], then `-nic` and [`write_nic`]'s value, then `-kernel`
//! and the firmware, then `-append` and [`crate::write`]'s line. Each value is one
//! argument (no shell involved). The guest's port equals the host's, so the board's own
//! member address `127.0.0.1:<port>` is what every other node dials.
//!
//! ```
//! use core::net::{Ipv4Addr, SocketAddr};
//! use goose_board_args::{self as args, qemu, BoardArgs};
//! use goose_core::{Config, Member, NodeId};
//!
//! let member = |id: u16| Member {
//!     id: NodeId::new(id).unwrap(),
//!     addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9899 + id)),
//!     voter: true,
//! };
//! let id = NodeId::new(4).unwrap();
//! let members = [member(1), member(2), member(3), member(4), member(5)];
//! let board = BoardArgs {
//!     node: Config::new(id),
//!     port: 9903,
//!     members: heapless::Vec::from_slice(&members).unwrap(),
//!     seed: 77,
//!     control_token: None,
//!     state: Some("data/4/board.flash"),
//!     key_file: None,
//!     lan: None,
//! };
//! let (mut nic, mut append) = (heapless::String::<128>::new(), heapless::String::<512>::new());
//! qemu::write_nic(&mut nic, id, 9903).unwrap();
//! args::write(&mut append, &board).unwrap();
//! assert_eq!(nic, "user,model=stellaris,mac=02:00:00:00:00:04,hostfwd=udp:127.0.0.1:9903-:9903");
//! assert_eq!(
//!     append,
//!     "--id 4 --port 9903 --seed 77 --heartbeat-ms 50 --election-timeout-ms 150-300 \
//!      --peer 1=127.0.0.1:9900 --peer 2=127.0.0.1:9901 --peer 3=127.0.0.1:9902 \
//!      --peer 5=127.0.0.1:9904 --state data/4/board.flash"
//! );
//! // A launcher runs: PROGRAM, FIXED_ARGS…, "-nic", nic, "-kernel", <elf>, "-append", append.
//! assert_eq!(qemu::PROGRAM, "qemu-system-arm");
//! ```

use core::fmt::{self, Write};

use goose_core::NodeId;

/// The emulator.
pub const PROGRAM: &str = "qemu-system-arm";

/// Arguments that never change: the board, no display or monitor (the process is a plain
/// child that a signal stops), semihosting on (command line, state file, log lines).
pub const FIXED_ARGS: [&str; 7] = [
    "-M",
    "lm3s6965evb",
    "-nographic",
    "-monitor",
    "none",
    "-semihosting-config",
    "enable=on,target=native",
];

/// The firmware a `cargo build --release` in `node-embedded/firmware` produces, relative to
/// the workspace root.
pub const FIRMWARE_PATH: &str =
    "node-embedded/firmware/target/thumbv7m-none-eabi/release/goose-firmware";

/// The MAC address of board `id`: locally administered, unicast, `02:00:00:00:hi:lo`. QEMU
/// gives the board's NIC this address ([`write_nic`]) and the board answers to it.
pub const fn mac_for(id: NodeId) -> [u8; 6] {
    let [high, low] = id.get().to_be_bytes();
    [0x02, 0, 0, 0, high, low]
}

/// Writes the `-nic` value: slirp user networking with the Stellaris model, the board's
/// MAC, and the host's `127.0.0.1:<port>` forwarded to the board's `<port>`.
///
/// # Errors
/// Only those of `out`.
pub fn write_nic(out: &mut impl Write, id: NodeId, port: u16) -> fmt::Result {
    let mac = mac_for(id);
    write!(
        out,
        "user,model=stellaris,mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x},\
         hostfwd=udp:127.0.0.1:{port}-:{port}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

#[cfg(test)]
mod tests {
    use heapless::String;

    use super::*;

    #[test]
    fn nic_forwards_the_port_and_sets_the_mac() {
        let mut nic: String<128> = String::new();
        write_nic(&mut nic, NodeId::new(0x1234).unwrap(), 9903).unwrap();
        assert_eq!(
            nic,
            "user,model=stellaris,mac=02:00:00:00:12:34,hostfwd=udp:127.0.0.1:9903-:9903"
        );
    }
}
