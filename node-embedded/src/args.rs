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
    /// The board a parsed command line describes, with its control token: under QEMU's
    /// user networking ([`BoardConfig::qemu`]), or at its `--address` on a LAN, where no
    /// host stands in for loopback (control from other machines then needs the token, or
    /// the cluster key). The key is `None`: the caller reads it from
    /// [`BoardArgs::key_file`] or the configuration page.
    ///
    /// # Errors
    /// [`BoardError::MembersOverCapacity`], which a parsed line never has.
    pub fn from_args(args: BoardArgs<'_>) -> Result<Self, BoardError> {
        let mut config = Self::qemu(args.node, args.port, &args.members, args.seed)?;
        config.control_token = args.control_token;
        if let Some(lan) = args.lan {
            config.address = lan.address;
            config.prefix_len = lan.prefix_len;
            config.gateway = lan.gateway;
            config.host = None;
        }
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

    #[test]
    fn a_line_with_an_address_configures_a_board_on_a_lan() {
        let line = "--id 4 --port 9900 --peer 1=192.168.1.51:9900 --address 192.168.1.54/24 \
                    --gateway 192.168.1.1";
        let config = BoardConfig::from_args(parse(line.split(' ')).unwrap()).unwrap();
        assert_eq!(config.address, core::net::Ipv4Addr::new(192, 168, 1, 54));
        assert_eq!(config.prefix_len, 24);
        assert_eq!(
            config.gateway,
            Some(core::net::Ipv4Addr::new(192, 168, 1, 1))
        );
        assert_eq!(config.host, None, "no slirp: nobody stands in for loopback");
        assert_eq!(config.mac, [0x02, 0, 0, 0, 0, 4]);
    }

    /// The board answers to the MAC address QEMU gives its NIC.
    #[test]
    fn the_board_takes_the_mac_qemu_gives_it() {
        for id in (1..=u16::MAX).filter_map(NodeId::new) {
            assert_eq!(BoardConfig::mac_for(id), qemu::mac_for(id), "{id}");
        }
    }
}
