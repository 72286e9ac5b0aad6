//! Synchronous rtnetlink I/O over netlink-sys sockets, messages built and parsed by
//! netlink-packet-route: requests with their replies (dumps included), non-blocking draining of
//! notifications. Nothing here knows what the messages mean; the table does.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_DUMP_INTR,
    NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Large enough for any single datagram the kernel sends on an rtnetlink socket (dump batches
/// are at most a few pages; notifications are one message each).
const RECV_BUF: usize = 256 * 1024;

/// Kernel receive buffer for the notification socket: absorbs bursts (a route flap, an ARP storm)
/// between two `refresh` calls; an overrun still falls back to a full re-dump.
const EVENT_RCVBUF: usize = 4 * 1024 * 1024;

pub(crate) struct NlSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// What a receive attempt found.
pub(crate) enum Recv {
    /// One datagram is in the buffer.
    Data,
    /// Nothing waiting (non-blocking).
    Empty,
}

impl AsFd for NlSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl NlSocket {
    /// A socket for requests and their replies.
    pub(crate) fn for_requests() -> io::Result<NlSocket> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Errors of requests we fire and forget carry their seq; extended acks are not needed.
        Ok(NlSocket {
            sock,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// A non-blocking socket subscribed to the given `RTNLGRP_*` groups.
    pub(crate) fn subscribe(groups: &[u32]) -> io::Result<NlSocket> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        if let Err(e) = sock.set_rx_buf_sz(EVENT_RCVBUF) {
            tracing::debug!("netlink SO_RCVBUF {EVENT_RCVBUF}: {e}");
        }
        for &g in groups {
            sock.add_membership(g)?;
        }
        sock.set_non_blocking(true)?;
        Ok(NlSocket {
            sock,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// Sends `msg` with `flags` (NLM_F_REQUEST is added) and returns its sequence number.
    /// `MSG_DONTWAIT` when `nonblocking`.
    pub(crate) fn send(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        nonblocking: bool,
    ) -> io::Result<u32> {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        let f = if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        self.sock.send(&bytes, f)?;
        Ok(seq)
    }

    /// Receives one datagram into the internal buffer.
    pub(crate) fn recv(&mut self, nonblocking: bool) -> io::Result<Recv> {
        self.buf.clear();
        let mut flags = libc::MSG_TRUNC;
        if nonblocking {
            flags |= libc::MSG_DONTWAIT;
        }
        match self.sock.recv(&mut self.buf, flags) {
            Ok(n) if n > self.buf.len() => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("netlink datagram of {n} bytes exceeds the {RECV_BUF}-byte buffer"),
            )),
            Ok(_) => Ok(Recv::Data),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Recv::Empty),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => self.recv(nonblocking),
            Err(e) => Err(e),
        }
    }

    /// The messages of the last received datagram. Undecodable messages (a kernel newer than the
    /// parser) are logged and skipped: one odd attribute must not stop the mirror.
    pub(crate) fn messages(&self) -> Messages<'_> {
        Messages::new(&self.buf)
    }

    /// The bytes of the last received datagram.
    pub(crate) fn datagram(&self) -> &[u8] {
        &self.buf
    }

    /// Sends a request and hands every reply message to `f` until the request completes (DONE
    /// for a dump, the single reply or ACK otherwise). A kernel error ends it with that error.
    /// Returns `Ok(false)` when a dump was interrupted by a concurrent change (NLM_F_DUMP_INTR):
    /// the caller should retry.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut f: impl FnMut(RouteNetlinkMessage),
    ) -> io::Result<bool> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let seq = self.send(msg, flags, false)?;
        let mut consistent = true;
        loop {
            self.recv(false)?;
            let mut finished = false;
            let mut replies = Vec::new();
            for m in self.messages() {
                let (header, payload) = m.into_parts();
                if header.sequence_number != seq {
                    log_stray(header.sequence_number, &payload);
                    continue;
                }
                if header.flags & NLM_F_DUMP_INTR != 0 {
                    consistent = false;
                }
                match payload {
                    NetlinkPayload::Done(_) => finished = true,
                    NetlinkPayload::Error(e) => match e.code {
                        Some(_) => return Err(e.to_io()),
                        None => finished = true,
                    },
                    NetlinkPayload::InnerMessage(inner) => {
                        replies.push(inner);
                        if !dump && header.flags & NLM_F_MULTIPART == 0 {
                            finished = true;
                        }
                    }
                    _ => {}
                }
            }
            replies.into_iter().for_each(&mut f);
            if finished {
                return Ok(consistent);
            }
        }
    }
}

/// Logs a message that answers an earlier fire-and-forget request (or nothing we know).
pub(crate) fn log_stray(seq: u32, payload: &NetlinkPayload<RouteNetlinkMessage>) {
    match payload {
        NetlinkPayload::Error(e) if e.code.is_some() => {
            tracing::warn!("netlink request {seq} failed: {}", e.to_io())
        }
        _ => tracing::trace!("netlink: ignoring reply to request {seq}"),
    }
}

/// Iterator over the netlink messages of one datagram.
pub(crate) struct Messages<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> Messages<'a> {
    /// The messages of a datagram's bytes.
    pub(crate) fn new(buf: &'a [u8]) -> Messages<'a> {
        Messages { buf, off: 0 }
    }
}

impl Iterator for Messages<'_> {
    type Item = NetlinkMessage<RouteNetlinkMessage>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let rest = self.buf.get(self.off..)?;
            if rest.is_empty() {
                return None;
            }
            let len = match NetlinkBuffer::new_checked(rest) {
                Ok(b) => b.length() as usize,
                Err(e) => {
                    tracing::warn!(
                        "netlink: malformed message ({} bytes left): {e}",
                        rest.len()
                    );
                    return None;
                }
            };
            if len < 16 {
                tracing::warn!("netlink: message length {len} is shorter than its header");
                return None;
            }
            self.off += (len + 3) & !3;
            match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rest[..len]) {
                Ok(m) => return Some(m),
                Err(e) => tracing::warn!("netlink: undecodable message skipped: {e}"),
            }
        }
    }
}
