//! Typed socket errors, with the errno the kernel gives for the same situation.
//! Conversion to `-1` + `errno` happens only at the preload boundary.

/// Why a socket call failed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    #[error("operation would block")]
    WouldBlock,
    #[error("no such socket")]
    InvalidSocket,
    #[error("address already in use")]
    AddrInUse,
    #[error("invalid argument or socket state")]
    InvalidState,
    #[error("socket is not connected")]
    NotConnected,
    #[error("connection reset by peer")]
    ConnectionReset,
    #[error("connection refused")]
    ConnectionRefused,
    #[error("connection timed out")]
    TimedOut,
    #[error("broken pipe")]
    BrokenPipe,
    #[error("message too long")]
    MessageTooLong,
    #[error("no buffer space available")]
    NoBufferSpace,
    #[error("address not available or unreachable")]
    Unaddressable,
}

/// Linux errno values (asm-generic, identical on x86_64 and aarch64).
pub mod errno {
    pub const EBADF: i32 = 9;
    pub const EAGAIN: i32 = 11;
    pub const EINVAL: i32 = 22;
    pub const EPIPE: i32 = 32;
    pub const EMSGSIZE: i32 = 90;
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ECONNRESET: i32 = 104;
    pub const ENOBUFS: i32 = 105;
    pub const ENOTCONN: i32 = 107;
    pub const ETIMEDOUT: i32 = 110;
    pub const ECONNREFUSED: i32 = 111;
}

impl Error {
    /// The errno the kernel would return for the same failure.
    pub fn errno(&self) -> i32 {
        match self {
            Error::WouldBlock => errno::EAGAIN,
            Error::InvalidSocket => errno::EBADF,
            Error::AddrInUse => errno::EADDRINUSE,
            Error::InvalidState => errno::EINVAL,
            Error::NotConnected => errno::ENOTCONN,
            Error::ConnectionReset => errno::ECONNRESET,
            Error::ConnectionRefused => errno::ECONNREFUSED,
            Error::TimedOut => errno::ETIMEDOUT,
            Error::BrokenPipe => errno::EPIPE,
            Error::MessageTooLong => errno::EMSGSIZE,
            Error::NoBufferSpace => errno::ENOBUFS,
            Error::Unaddressable => errno::EADDRNOTAVAIL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_match_linux() {
        assert_eq!(Error::WouldBlock.errno(), 11);
        assert_eq!(Error::ConnectionRefused.errno(), 111);
        assert_eq!(Error::BrokenPipe.errno(), 32);
        assert_eq!(
            Error::ConnectionReset.to_string(),
            "connection reset by peer"
        );
    }
}
