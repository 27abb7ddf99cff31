//! Datagrams in batches, one system call per batch: `recvmmsg(2)` into fixed buffers and
//! `sendmmsg(2)` from a fixed queue. Every buffer is allocated once, when the port is
//! bound; nothing here allocates afterwards.
//!
//! The `mmsghdr` arrays point into the batch's own boxed buffers; the pointers are written
//! afresh before every call, so no pointer outlives the call it was written for.

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr;

use socket2::{SockAddr, SockAddrStorage};

/// Datagrams one `recvmmsg` reads and one `sendmmsg` sends, at most: enough that a flood
/// costs one system call per 32 datagrams, few enough that a batch of text never keeps
/// peer frames waiting long (the port reads the peer queue again after every text batch).
pub(super) const BATCH_SIZE: usize = 32;
/// One receive buffer: larger than any valid frame or text request, so a too-long frame
/// arrives whole and is counted as too long rather than undecodable.
pub(super) const RECEIVE_BUFFER_SIZE: usize = 2048;
/// Bytes queued for one `sendmmsg`: a batch of probe answers and heartbeats, and always
/// room for one reply of `TEXT_REPLY_SIZE_MAX` (a full `ctl status`). A datagram that does
/// not fit sends the queue first.
pub(super) const SEND_QUEUE_SIZE: usize = 16 * 1024;

const _: () = assert!(goose_core::text::TEXT_REPLY_SIZE_MAX <= SEND_QUEUE_SIZE);
const _: () = assert!(goose_core::limits::FRAME_SIZE_MAX < RECEIVE_BUFFER_SIZE);

/// `BATCH_SIZE` as the system calls take it.
const BATCH_LENGTH: libc::c_uint = BATCH_SIZE as libc::c_uint;
/// The size of a `sockaddr_storage`, as the system calls take it.
const NAME_SIZE: libc::socklen_t = size_of::<libc::sockaddr_storage>() as libc::socklen_t;

/// A `mmsghdr` with every pointer null and every length zero, filled in before each call.
fn empty_header() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are valid (null
    // pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

/// What one `recvmmsg` read: up to [`BATCH_SIZE`] datagrams and their sources.
pub(super) struct ReceiveBatch {
    buffers: Box<[[u8; RECEIVE_BUFFER_SIZE]]>,
    names: Box<[libc::sockaddr_storage]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    /// The source and size of each datagram the last [`ReceiveBatch::receive`] read.
    received: Vec<(SocketAddr, usize)>,
}

impl ReceiveBatch {
    pub(super) fn new() -> Self {
        // SAFETY: sockaddr_storage is a plain C struct; all-zero bytes are valid.
        let name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let iovec = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            buffers: vec![[0; RECEIVE_BUFFER_SIZE]; BATCH_SIZE].into_boxed_slice(),
            names: vec![name; BATCH_SIZE].into_boxed_slice(),
            iovecs: vec![iovec; BATCH_SIZE].into_boxed_slice(),
            headers: vec![empty_header(); BATCH_SIZE].into_boxed_slice(),
            received: Vec::with_capacity(BATCH_SIZE),
        }
    }

    /// Reads the datagrams waiting on `socket`, up to [`BATCH_SIZE`], without blocking:
    /// how many (0 if none was waiting). A datagram longer than [`RECEIVE_BUFFER_SIZE`]
    /// is cut to it, as `recv` would.
    ///
    /// # Errors
    ///
    /// The socket's error when no datagram could be read (an ICMP error queued on it, for
    /// instance); `WouldBlock` is not one.
    pub(super) fn receive(&mut self, socket: RawFd) -> io::Result<usize> {
        self.received.clear();
        for index in 0..BATCH_SIZE {
            self.iovecs[index] = libc::iovec {
                iov_base: self.buffers[index].as_mut_ptr().cast(),
                iov_len: RECEIVE_BUFFER_SIZE,
            };
            let header = &mut self.headers[index];
            *header = empty_header();
            header.msg_hdr.msg_name = ptr::from_mut(&mut self.names[index]).cast();
            header.msg_hdr.msg_namelen = NAME_SIZE;
            header.msg_hdr.msg_iov = ptr::from_mut(&mut self.iovecs[index]);
            header.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `headers` holds BATCH_SIZE headers, each pointing at its own name
        // storage of the size it states and at one iovec that covers its own buffer; all of
        // them are boxed fields of `self`, alive and unmoved for the whole call. A null
        // timeout is allowed.
        let count = unsafe {
            libc::recvmmsg(
                socket,
                self.headers.as_mut_ptr(),
                BATCH_LENGTH,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        let Ok(count) = usize::try_from(count) else {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(error),
            };
        };
        for index in 0..count.min(BATCH_SIZE) {
            let header = &self.headers[index];
            let size = usize::try_from(header.msg_len).map_or(0, |s| s.min(RECEIVE_BUFFER_SIZE));
            let mut storage = SockAddrStorage::zeroed();
            // SAFETY: SockAddrStorage is a sockaddr_storage; the kernel wrote the source
            // there and its length into msg_namelen, which SockAddr::new checks against.
            let source = unsafe {
                *storage.view_as::<libc::sockaddr_storage>() = self.names[index];
                SockAddr::new(storage, header.msg_hdr.msg_namelen.min(NAME_SIZE))
            };
            // A UDP socket of either family only ever reports an IP source.
            if let Some(source) = source.as_socket() {
                self.received.push((source, size));
            }
        }
        Ok(self.received.len())
    }

    /// The source of datagram `index` of the last batch.
    pub(super) fn source(&self, index: usize) -> Option<SocketAddr> {
        self.received.get(index).map(|(source, _)| *source)
    }

    /// Datagram `index` of the last batch (empty past its end).
    pub(super) fn datagram(&self, index: usize) -> &[u8] {
        match (self.received.get(index), self.buffers.get(index)) {
            (Some(&(_, size)), Some(buffer)) => &buffer[..size],
            _ => &[],
        }
    }
}

/// Datagrams waiting for one `sendmmsg`, each tagged with `T` for whoever counts them.
pub(super) struct SendQueue<T> {
    bytes: Box<[u8]>,
    /// Bytes of `bytes` in use.
    used: usize,
    /// Each queued datagram: where it goes, where it starts in `bytes`, its size and tag.
    queued: Vec<(SockAddr, usize, usize, T)>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
}

impl<T: Copy> SendQueue<T> {
    pub(super) fn new() -> Self {
        let iovec = libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            bytes: vec![0; SEND_QUEUE_SIZE].into_boxed_slice(),
            used: 0,
            queued: Vec::with_capacity(BATCH_SIZE),
            iovecs: vec![iovec; BATCH_SIZE].into_boxed_slice(),
            headers: vec![empty_header(); BATCH_SIZE].into_boxed_slice(),
        }
    }

    /// Whether `size` more bytes would fit without sending first.
    pub(super) fn has_room(&self, size: usize) -> bool {
        self.queued.len() < BATCH_SIZE && self.used + size <= SEND_QUEUE_SIZE
    }

    /// Queues `datagram` for `target`; `false` (nothing queued) if it does not fit (see
    /// [`SendQueue::has_room`]: send first).
    pub(super) fn push(&mut self, datagram: &[u8], target: SocketAddr, tag: T) -> bool {
        if !self.has_room(datagram.len()) {
            return false;
        }
        let start = self.used;
        self.bytes[start..start + datagram.len()].copy_from_slice(datagram);
        self.used += datagram.len();
        self.queued
            .push((SockAddr::from(target), start, datagram.len(), tag));
        true
    }

    /// Whether nothing is queued.
    pub(super) fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Sends every queued datagram through `socket` (non-blocking: a full socket buffer
    /// fails the datagram rather than wait) and empties the queue, telling `outcome` what
    /// became of each: the bytes sent, or the error. At most one system call per datagram,
    /// one for all of them when none fails.
    pub(super) fn send(
        &mut self,
        socket: RawFd,
        mut outcome: impl FnMut(T, SocketAddr, io::Result<usize>),
    ) {
        let count = self.queued.len();
        for (index, (target, start, size, _)) in self.queued.iter().enumerate() {
            self.iovecs[index] = libc::iovec {
                iov_base: self.bytes[*start..].as_mut_ptr().cast(),
                iov_len: *size,
            };
            let header = &mut self.headers[index];
            *header = empty_header();
            // The kernel only reads the name of a datagram it sends.
            header.msg_hdr.msg_name = target.as_ptr().cast_mut().cast();
            header.msg_hdr.msg_namelen = target.len();
            header.msg_hdr.msg_iov = ptr::from_mut(&mut self.iovecs[index]);
            header.msg_hdr.msg_iovlen = 1;
        }
        let mut next = 0;
        // Bounded: every pass settles at least one datagram.
        while next < count {
            let length = libc::c_uint::try_from(count - next).unwrap_or(BATCH_LENGTH);
            // SAFETY: headers[next..count] were filled above, each pointing at a target
            // address owned by `queued` and at one iovec over bytes of `bytes`, all fields
            // of `self` left untouched until the call returns.
            let sent = unsafe {
                libc::sendmmsg(
                    socket,
                    self.headers[next..].as_mut_ptr(),
                    length,
                    libc::MSG_DONTWAIT,
                )
            };
            let settled = match usize::try_from(sent) {
                Ok(sent) if sent > 0 => sent.min(count - next),
                _ => {
                    // The first datagram failed; the rest are tried again.
                    let (target, _, _, tag) = &self.queued[next];
                    let target = target.as_socket();
                    if let Some(target) = target {
                        outcome(*tag, target, Err(io::Error::last_os_error()));
                    }
                    next += 1;
                    continue;
                }
            };
            for index in next..next + settled {
                let (target, _, _, tag) = &self.queued[index];
                if let Some(target) = target.as_socket() {
                    let bytes = usize::try_from(self.headers[index].msg_len).unwrap_or(0);
                    outcome(*tag, target, Ok(bytes));
                }
            }
            next += settled;
        }
        self.queued.clear();
        self.used = 0;
    }
}
