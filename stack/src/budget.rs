//! The stack's socket memory: the bytes of socket buffers it holds (every live smoltcp socket
//! and the spare TCP sockets kept for reuse), against an optional limit
//! ([`crate::Config::mem_max`]).
//!
//! smoltcp allocates a socket's buffers whole when the socket is made, so what a connection
//! may cost is known then: a socket that would take the stack over its limit is not made
//! (spare sockets are let go first). The caller learns it as `Error::NoBufferSpace` (ENOBUFS,
//! what the kernel's connect answers when it cannot allocate); a listener that cannot make its
//! next socket drops the SYN, which the client retries, as the kernel drops SYNs it has no
//! room for. Without a limit, a server with many busy connections grows until the system's
//! OOM killer ends it.

use crate::sockets::{Handle as SocketHandle, Sockets};
use smoltcp::socket::{tcp, udp, Socket};

/// Bytes a UDP socket's metadata ring takes per datagram slot (smoltcp's packet metadata: the
/// sender's endpoint, our address, the payload size).
pub(crate) const UDP_SLOT_BYTES: usize = core::mem::size_of::<udp::PacketMetadata>();

#[derive(Debug, Default)]
pub(crate) struct Budget {
    /// Bytes of buffers held now.
    pub used: usize,
    /// The limit (`None`: none).
    pub max: Option<usize>,
}

impl Budget {
    /// Whether `bytes` more stay within the limit.
    pub fn fits(&self, bytes: usize) -> bool {
        self.max
            .is_none_or(|m| self.used.saturating_add(bytes) <= m)
    }

    pub fn add(&mut self, bytes: usize) {
        self.used += bytes;
    }

    pub fn sub(&mut self, bytes: usize) {
        self.used = self.used.saturating_sub(bytes);
    }
}

/// The buffer bytes of a TCP socket.
pub(crate) fn tcp_bytes(s: &tcp::Socket) -> usize {
    s.recv_capacity() + s.send_capacity()
}

/// The buffer bytes of a UDP socket (payload and metadata rings, both ways).
pub(crate) fn udp_bytes(s: &udp::Socket) -> usize {
    s.payload_recv_capacity()
        + s.payload_send_capacity()
        + (s.packet_recv_capacity() + s.packet_send_capacity()) * UDP_SLOT_BYTES
}

pub(crate) fn socket_bytes(s: &Socket) -> usize {
    match s {
        Socket::Tcp(t) => tcp_bytes(t),
        Socket::Udp(u) => udp_bytes(u),
        #[allow(unreachable_patterns)]
        _ => 0,
    }
}

/// Removes socket `h` from `sockets` and gives its buffers back to `budget`.
pub(crate) fn remove(
    sockets: &mut Sockets,
    h: SocketHandle,
    budget: &mut Budget,
) -> Socket<'static> {
    let s = sockets.remove(h);
    budget.sub(socket_bytes(&s));
    s
}
