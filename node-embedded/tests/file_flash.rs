//! The QEMU board's storage path on a real file: a `FileFlash` over `std::fs::File` (the
//! firmware does the same over semihosting), a state map on it, and a node restarted on
//! the same file keeps its term and vote.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr};

use goose_core::{Config, Instant, Member, Node, NodeId};
use goose_embedded::flash::{FileFlash, FileIo, FlashError, FLASH_SIZE};
use goose_embedded::store::{FlashStorage, FlashStore, LoadError};
use goose_embedded::{LOG_ENTRIES_MAX, MEMBERS_MAX};

struct StdFile(File);

impl FileIo for StdFile {
    fn read_at(&mut self, offset: u32, buffer: &mut [u8]) -> Result<usize, FlashError> {
        self.0
            .seek(SeekFrom::Start(offset.into()))
            .map_err(|_| FlashError::Io)?;
        let mut total = 0;
        while total < buffer.len() {
            match self
                .0
                .read(&mut buffer[total..])
                .map_err(|_| FlashError::Io)?
            {
                0 => break,
                count => total += count,
            }
        }
        Ok(total)
    }

    fn write_at(&mut self, offset: u32, data: &[u8]) -> Result<(), FlashError> {
        self.0
            .seek(SeekFrom::Start(offset.into()))
            .map_err(|_| FlashError::Io)?;
        self.0.write_all(data).map_err(|_| FlashError::Io)
    }

    fn size(&mut self) -> Result<u32, FlashError> {
        let size = self.0.metadata().map_err(|_| FlashError::Io)?.len();
        u32::try_from(size).map_err(|_| FlashError::Io)
    }
}

fn open(path: &std::path::Path) -> FlashStore<FileFlash<StdFile>> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    let file = StdFile(options.open(path).unwrap());
    FlashStore::new(FileFlash::open(file).unwrap()).unwrap()
}

type TestNode<'a> = Node<FlashStorage<'a, FileFlash<StdFile>>, MEMBERS_MAX, LOG_ENTRIES_MAX>;

fn start<'a>(store: &'a RefCell<FlashStore<FileFlash<StdFile>>>, now: Instant) -> TestNode<'a> {
    let id = NodeId::new(1).unwrap();
    let me = Member {
        id,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9910)),
        voter: true,
    };
    let mut flash = store.borrow_mut();
    let saved = flash.load().unwrap();
    Node::new(&Config::new(id), FlashStorage(store), saved, &[me], 9, now).unwrap()
}

#[test]
fn a_node_restarted_on_its_file_keeps_its_term() {
    let dir = std::env::temp_dir().join(format!("goose-embedded-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("board.flash");
    let _ = std::fs::remove_file(&path);

    let store = RefCell::new(open(&path));
    let mut node = start(&store, Instant::ZERO);
    // A flock of one elects itself: each election is a new term, saved before it counts.
    let mut now = Instant::ZERO;
    let mut frame = [0; goose_core::limits::FRAME_SIZE_MAX];
    while !node.is_goose(now) {
        now = node.poll_timeout().unwrap();
        node.handle_timeout(now);
        while node.poll_transmit(now, &mut frame).is_some() {}
    }
    let term = node.term();
    assert!(term.0 >= 1);
    drop(node);
    drop(store);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), FLASH_SIZE as u64);

    let store = RefCell::new(open(&path));
    let node = start(&store, Instant::ZERO);
    assert_eq!(node.term(), term, "the term came back from the file");
    assert_eq!(node.voted_for(), NodeId::new(1));
    drop(node);
    drop(store);

    // A file that is not a flash image is refused, never reset.
    std::fs::write(&path, vec![0u8; FLASH_SIZE]).unwrap();
    let mut store = open(&path);
    assert_eq!(store.load(), Err(LoadError::Corrupt));
    std::fs::remove_dir_all(&dir).unwrap();
}
