//! Memory footprint: the embedded configuration must fit a small board's RAM.
//!
//! The target is a `Node` of at most 8 KiB for a 5-node flock with a 32-entry log,
//! so it fits beside smoltcp's buffers in a 64 KiB part. Storage is zero-sized here: a
//! real storage adds its own size on top.

use std::mem::size_of;

use goose_core::limits::{
    EMBEDDED_LOG_ENTRIES_MAX, EMBEDDED_MEMBERS_MAX, FRAME_SIZE_MAX, LOG_ENTRIES_MAX, MEMBERS_MAX,
};
use goose_core::{Node, PersistentState, Storage, StorageError};

/// The target for the embedded configuration.
const EMBEDDED_NODE_SIZE_MAX: usize = 8 * 1024;

struct Nothing;

impl Storage for Nothing {
    fn save(&mut self, _state: &PersistentState<'_>) -> Result<(), StorageError> {
        Ok(())
    }
}

type EmbeddedNode = Node<Nothing, EMBEDDED_MEMBERS_MAX, EMBEDDED_LOG_ENTRIES_MAX>;
type DesktopNode = Node<Nothing, MEMBERS_MAX, LOG_ENTRIES_MAX>;

#[test]
fn embedded_node_fits_in_8_kib() {
    let size = size_of::<EmbeddedNode>();
    println!("size_of::<Node<_, 5, 32>>() = {size} bytes");
    assert_eq!(EMBEDDED_MEMBERS_MAX, 5);
    assert_eq!(EMBEDDED_LOG_ENTRIES_MAX, 32);
    assert!(size <= EMBEDDED_NODE_SIZE_MAX, "{size} bytes");
    // With the one frame buffer a driver needs, it still fits.
    assert!(
        size + FRAME_SIZE_MAX <= EMBEDDED_NODE_SIZE_MAX,
        "{size} bytes"
    );
}

#[test]
fn node_size_grows_with_its_capacities_only() {
    let desktop = size_of::<DesktopNode>();
    println!("size_of::<Node<_, 64, 64>>() = {desktop} bytes");
    // The capacities are the state: a bigger build is bigger, and nothing is on the heap
    // to hide behind a pointer.
    assert!(desktop > size_of::<EmbeddedNode>());
    assert!(size_of::<Node<Nothing, 5, 64>>() > size_of::<EmbeddedNode>());
    assert!(size_of::<Node<Nothing, 6, 32>>() > size_of::<EmbeddedNode>());
}
