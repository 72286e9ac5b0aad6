//! `struct sockaddr_in` to and from bytes, checked like the kernel checks them.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::errno::{Errno, Res};

/// Size of `struct sockaddr_in`.
pub const SOCKADDR_IN_LEN: usize = 16;

/// An address in the C layout, to copy back to a caller's buffer (with truncation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockAddrBuf {
    pub bytes: [u8; SOCKADDR_IN_LEN],
    pub len: usize,
}

impl SockAddrBuf {
    pub fn v4(a: SocketAddrV4) -> SockAddrBuf {
        let mut bytes = [0u8; SOCKADDR_IN_LEN];
        bytes[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        bytes[2..4].copy_from_slice(&a.port().to_be_bytes());
        bytes[4..8].copy_from_slice(&a.ip().octets());
        SockAddrBuf {
            bytes,
            len: SOCKADDR_IN_LEN,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The address family field of a sockaddr (`None` if too short to hold one).
pub fn family(bytes: &[u8]) -> Option<u16> {
    bytes.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

/// Parses an IPv4 socket address as bind/connect/sendto take it: too short -> EINVAL, another
/// family -> EAFNOSUPPORT (the kernel's answers for an AF_INET socket).
pub fn parse_v4(bytes: &[u8]) -> Res<SocketAddrV4> {
    if bytes.len() < SOCKADDR_IN_LEN {
        return Err(Errno::EINVAL);
    }
    if family(bytes) != Some(libc::AF_INET as u16) {
        return Err(Errno::EAFNOSUPPORT);
    }
    let port = u16::from_be_bytes([bytes[2], bytes[3]]);
    let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
    Ok(SocketAddrV4::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let a = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 1), 8080);
        let b = SockAddrBuf::v4(a);
        assert_eq!(parse_v4(b.as_bytes()), Ok(a));
        assert_eq!(parse_v4(&b.bytes[..8]), Err(Errno::EINVAL));
        let mut v6 = b.bytes;
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        assert_eq!(parse_v4(&v6), Err(Errno::EAFNOSUPPORT));
    }
}
