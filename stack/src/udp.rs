//! UDP sockets: bind, send_to, recv_from (truncating like the kernel).

use core::net::SocketAddrV4;

use crate::sockets::{Handle as SocketHandle, Sockets};
use smoltcp::socket::udp::{self, PacketBuffer, PacketMetadata, SendError};
use smoltcp::wire::IpListenEndpoint;

use crate::budget;
use crate::{endpoint, endpoint_v4, Entry, Error, Readiness, SocketId, Stack};

/// IPv4 (20) + UDP (8) headers.
const UDP_OVERHEAD: usize = 28;

pub(crate) struct UdpSock {
    pub handle: SocketHandle,
    pub local: SocketAddrV4,
}

impl UdpSock {
    pub fn readiness(&self, sockets: &Sockets) -> Readiness {
        let socket = sockets.get::<udp::Socket>(self.handle);
        Readiness {
            readable: socket.can_recv(),
            writable: socket.can_send(),
            ..Readiness::default()
        }
    }
}

impl Stack {
    /// The UDP socket `s`. Callers that queue anything to send mark the stack dirty; a read
    /// does not (a spinning receive makes one per attempt).
    fn udp_socket(&mut self, s: SocketId) -> Result<&mut udp::Socket<'static>, Error> {
        match self.table.get(&s.0) {
            Some(Entry::Udp(u)) => Ok(self.sockets.get_mut::<udp::Socket>(u.handle)),
            Some(_) => Err(Error::InvalidState),
            None => Err(Error::InvalidSocket),
        }
    }

    /// Binds a UDP socket to `local` (unspecified address or ours; port chosen by the caller).
    pub fn udp_bind(&mut self, local: SocketAddrV4) -> Result<SocketId, Error> {
        if local.port() == 0 {
            return Err(Error::InvalidState);
        }
        if !local.ip().is_unspecified() && *local.ip() != self.config.addr {
            return Err(Error::Unaddressable);
        }
        if self.udp_ports.contains_key(&local.port()) {
            return Err(Error::AddrInUse);
        }
        let c = &self.config;
        let need = c.udp_rx_buffer + c.udp_tx_buffer + 2 * c.udp_packets * budget::UDP_SLOT_BYTES;
        if let Err(e) = self.make_room(need) {
            self.counters.socket_refused_no_memory += 1;
            return Err(e);
        }
        let c = &self.config;
        let buffer = |bytes: usize| {
            PacketBuffer::new(vec![PacketMetadata::EMPTY; c.udp_packets], vec![0u8; bytes])
        };
        let mut socket = udp::Socket::new(buffer(c.udp_rx_buffer), buffer(c.udp_tx_buffer));
        let endpoint = IpListenEndpoint {
            addr: (!local.ip().is_unspecified()).then(|| (*local.ip()).into()),
            port: local.port(),
        };
        socket.bind(endpoint).map_err(|_| Error::InvalidState)?;
        self.budget.add(budget::udp_bytes(&socket));
        let handle = self.sockets.add(socket);
        let id = self.insert(Entry::Udp(UdpSock { handle, local }));
        self.sockets.set_owner(handle, id.0);
        self.udp_ports.insert(local.port(), id.0);
        Ok(id)
    }

    /// Queues one datagram. Datagrams larger than one IP packet are refused with
    /// `MessageTooLong` (no IP fragmentation).
    pub fn udp_send_to(
        &mut self,
        s: SocketId,
        data: &[u8],
        dst: SocketAddrV4,
    ) -> Result<usize, Error> {
        let max = self.config.mtu.saturating_sub(UDP_OVERHEAD);
        self.touch(s);
        let socket = self.udp_socket(s)?;
        if data.len() > max {
            return Err(Error::MessageTooLong);
        }
        if dst.port() == 0 || dst.ip().is_unspecified() {
            return Err(Error::Unaddressable);
        }
        match socket.send_slice(data, endpoint(dst)) {
            Ok(()) => {
                self.counters.udp_tx_datagrams += 1;
                Ok(data.len())
            }
            Err(SendError::BufferFull) => Err(Error::WouldBlock),
            Err(SendError::Unaddressable) => Err(Error::Unaddressable),
        }
    }

    /// Receives one datagram into `buf`, truncating it if longer; returns the bytes copied and
    /// the sender.
    pub fn udp_recv_from(
        &mut self,
        s: SocketId,
        buf: &mut [u8],
    ) -> Result<(usize, SocketAddrV4), Error> {
        self.udp_recv_with(s, |payload, from| {
            let n = payload.len().min(buf.len());
            buf[..n].copy_from_slice(&payload[..n]);
            (n, from)
        })
    }

    /// Receives one datagram by handing its payload and sender to `f`, which copies what it
    /// needs straight from the socket's buffer (no intermediate buffer).
    pub fn udp_recv_with<T>(
        &mut self,
        s: SocketId,
        f: impl FnOnce(&[u8], SocketAddrV4) -> T,
    ) -> Result<T, Error> {
        let socket = self.udp_socket(s)?;
        let (payload, meta) = socket.recv().map_err(|_| Error::WouldBlock)?;
        let from = endpoint_v4(meta.endpoint).ok_or(Error::InvalidState)?;
        Ok(f(payload, from))
    }
}
