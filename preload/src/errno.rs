//! Errors as the kernel reports them: an errno value, converted to `-1` + `errno` only at the
//! C boundary (abi).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

pub type Res<T> = Result<T, Errno>;

impl Errno {
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const EFAULT: Errno = Errno(libc::EFAULT);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const ENOTCONN: Errno = Errno(libc::ENOTCONN);
    pub const EISCONN: Errno = Errno(libc::EISCONN);
    pub const EPIPE: Errno = Errno(libc::EPIPE);
    pub const EINPROGRESS: Errno = Errno(libc::EINPROGRESS);
    pub const EALREADY: Errno = Errno(libc::EALREADY);
    pub const EOPNOTSUPP: Errno = Errno(libc::EOPNOTSUPP);
    pub const EAFNOSUPPORT: Errno = Errno(libc::EAFNOSUPPORT);
    pub const EADDRINUSE: Errno = Errno(libc::EADDRINUSE);
    pub const ENOPROTOOPT: Errno = Errno(libc::ENOPROTOOPT);
    pub const EMSGSIZE: Errno = Errno(libc::EMSGSIZE);
    pub const EDESTADDRREQ: Errno = Errno(libc::EDESTADDRREQ);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const EBUSY: Errno = Errno(libc::EBUSY);

    /// The errno of the last failed libc call on this thread.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }
}

impl From<stack::Error> for Errno {
    fn from(e: stack::Error) -> Errno {
        Errno(e.errno())
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}
