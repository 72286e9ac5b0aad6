//! Raw Ethernet frames on one interface (AF_PACKET), for tests and tools: frames no socket API
//! would build (malformed, hostile), and the fault injector's delay line. The socket lives in
//! the network namespace of the thread that opens it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use crate::sys::packet;

/// A raw socket bound to one interface: sends whole Ethernet frames out of it and receives the
/// frames that arrive on it (not the ones sent from this host).
#[derive(Debug)]
pub struct RawSocket {
    sock: packet::PacketSocket,
}

impl RawSocket {
    /// Opens a socket on `ifname` (in the calling thread's network namespace). Needs
    /// CAP_NET_RAW. `nonblocking`: `recv` fails with WouldBlock instead of waiting.
    pub fn open(ifname: &str, nonblocking: bool) -> io::Result<RawSocket> {
        let ifindex = nix::net::if_::if_nametoindex(ifname).map_err(io::Error::from)?;
        Ok(RawSocket {
            sock: packet::PacketSocket::open(ifindex, nonblocking)?,
        })
    }

    /// Sends one Ethernet frame (header included) as it is.
    pub fn send(&self, frame: &[u8]) -> io::Result<usize> {
        self.sock.send(frame)
    }

    /// Receives one frame into `buf` and returns its length (cut to `buf`'s).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf)
    }
}

impl AsFd for RawSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}
