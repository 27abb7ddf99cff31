//! The board's command line: [`goose_board_args`]'s parser and writer, re-exported, and the
//! [`BoardConfig`] a parsed line describes ([`BoardConfig::from_args`]).
//!
//! The line lives in that small crate so a launcher (`goose board`) writes exactly what the
//! firmware parses without building smoltcp and the flash store.

pub use goose_board_args::{
    default_seed, is_plain_path, parse, write, ArgsError, BoardArgs, KEY_FILE_SIZE_MAX,
    PATH_SIZE_MAX, USAGE,
};

use crate::board::{BoardConfig, BoardError};

impl BoardConfig {
    /// The board a parsed command line describes, under QEMU's user networking
    /// ([`BoardConfig::qemu`]), with its control token. The key is `None`: the caller reads
    /// it from [`BoardArgs::key_file`].
    ///
    /// # Errors
    /// [`BoardError::MembersOverCapacity`], which a parsed line never has.
    pub fn from_args(args: BoardArgs<'_>) -> Result<Self, BoardError> {
        let mut config = Self::qemu(args.node, args.port, &args.members, args.seed)?;
        config.control_token = args.control_token;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use goose_board_args::qemu;
    use goose_core::NodeId;

    use super::*;

    #[test]
    fn a_parsed_line_configures_the_board_qemu_networks() {
        let line = "--id 4 --port 9903 --seed 77 --peer 1=127.0.0.1:9900 \
                    --control-token s3cret --key-file /etc/goose/cluster.key";
        let args = parse(line.split(' ')).unwrap();
        let config = BoardConfig::from_args(args.clone()).unwrap();
        assert_eq!(config.node, args.node);
        assert_eq!((config.port, config.seed), (9903, 77));
        assert_eq!(config.members, args.members);
        assert_eq!(config.control_token.as_deref(), Some("s3cret"));
        assert_eq!(config.mac, [0x02, 0, 0, 0, 0, 4]);
        assert_eq!(config.address, BoardConfig::QEMU_ADDRESS);
        assert_eq!(config.host, Some(BoardConfig::QEMU_HOST));
        assert!(config.key.is_none(), "the key is read from the file, later");
    }

    /// The board answers to the MAC address QEMU gives its NIC.
    #[test]
    fn the_board_takes_the_mac_qemu_gives_it() {
        for id in (1..=u16::MAX).filter_map(NodeId::new) {
            assert_eq!(BoardConfig::mac_for(id), qemu::mac_for(id), "{id}");
        }
    }
}
