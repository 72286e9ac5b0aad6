//! Kernel sockets that hold the ports accelerated sockets use.
//!
//! Every accelerated bind also binds a kernel socket to the same protocol, address and port, so
//! the kernel's port allocator and every kernel program see the port as taken (they get
//! EADDRINUSE) and port 0 is chosen by the kernel, from its own ephemeral range, so accel's
//! ephemeral ports never collide with the kernel's. No SO_REUSEADDR / SO_REUSEPORT: a port that is
//! already in use gives the kernel's own EADDRINUSE, which the preload layer can return as is.
//! [`reserve_shared`] is the exception: SO_REUSEPORT, for a port several processes serve
//! together (their accelerated listeners share it through the XDP program's slot sets).
//!
//! TCP reservations are bound, not listening: how kernel-side connections reach an accelerated
//! listener is decided elsewhere.

use std::fmt;
use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

/// Transport protocol of a reserved port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A kernel socket bound to a port on behalf of an accelerated socket; dropping it frees the port.
#[derive(Debug)]
pub struct Reservation {
    fd: OwnedFd,
    proto: Proto,
    local: SocketAddrV4,
}

impl Reservation {
    /// The bound address, with the port the kernel chose when 0 was asked for.
    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    pub fn proto(&self) -> Proto {
        self.proto
    }
}

impl AsFd for Reservation {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Binds a kernel socket of `proto` to `local` (port 0: the kernel picks an ephemeral port).
/// An address in use fails with the kernel's EADDRINUSE; an address not on this host with
/// EADDRNOTAVAIL, and so on: the error is the kernel's own.
pub fn reserve(proto: Proto, local: SocketAddrV4) -> io::Result<Reservation> {
    reserve_with(proto, local, false)
}

/// Like [`reserve`], with SO_REUSEPORT: other sockets of the same user that set it too may
/// hold the same port (processes that serve one port together).
pub fn reserve_shared(proto: Proto, local: SocketAddrV4) -> io::Result<Reservation> {
    reserve_with(proto, local, true)
}

fn reserve_with(proto: Proto, local: SocketAddrV4, shared: bool) -> io::Result<Reservation> {
    let ty = match proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)?;
    if shared {
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReusePort, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrIn::from(local))?;
    let bound: SockaddrIn = getsockname(fd.as_raw_fd())?;
    let local = SocketAddrV4::from(bound);
    tracing::debug!(%proto, %local, "port reserved");
    Ok(Reservation { fd, proto, local })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener, UdpSocket};

    // Loopback exists in every namespace and needs no privilege.
    const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

    #[test]
    fn port_zero_gets_an_ephemeral_port() {
        for proto in [Proto::Tcp, Proto::Udp] {
            let r = reserve(proto, SocketAddrV4::new(LO, 0)).unwrap();
            assert_ne!(r.local().port(), 0);
            assert_eq!(*r.local().ip(), LO);
            assert_eq!(r.proto(), proto);
        }
    }

    #[test]
    fn reserved_port_is_taken_for_the_kernel_and_freed_on_drop() {
        let r = reserve(Proto::Tcp, SocketAddrV4::new(LO, 0)).unwrap();
        let e = TcpListener::bind(r.local()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
        let addr = r.local();
        drop(r);
        TcpListener::bind(addr).unwrap();

        let u = reserve(Proto::Udp, SocketAddrV4::new(LO, 0)).unwrap();
        let e = UdpSocket::bind(u.local()).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
    }

    #[test]
    fn port_in_use_by_kernel_gives_eaddrinuse() {
        let l = TcpListener::bind((LO, 0)).unwrap();
        let std::net::SocketAddr::V4(addr) = l.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        let e = reserve(Proto::Tcp, addr).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
    }
}
