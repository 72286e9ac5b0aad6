//! The socket calls TCP repair mode needs: integer and struct socket options, queue sizes, and
//! sends and peeks on a chosen queue.
//!
//! # Safety
//!
//! Every call passes pointers derived from Rust references or slices that live for the call,
//! with their true sizes; the kernel reads or writes nothing outside them. fds are borrowed.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// setsockopt with a plain value (an int, or a `repr(C)` struct of ints).
pub fn set<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` is a valid `T` for the call and its size is passed with it.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// setsockopt with a slice of `repr(C)` values (TCP_REPAIR_OPTIONS).
pub fn set_slice<T: Copy>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    v: &[T],
) -> io::Result<()> {
    // SAFETY: `v` is valid for `size_of_val(v)` bytes for the call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            v.as_ptr().cast(),
            std::mem::size_of_val(v) as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// getsockopt into a plain value; returns it and the length the kernel wrote.
pub fn get<T: Copy + Default>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<(T, usize)> {
    let mut v = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is writable for `len` bytes and `len` says so.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut v as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok((v, len as usize))
}

/// An ioctl that writes one int (SIOCINQ, SIOCOUTQ, SIOCOUTQNSD).
pub fn ioctl_int(fd: BorrowedFd<'_>, req: libc::c_ulong) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: these requests write one int to the pointer given.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v as *mut libc::c_int) })?;
    Ok(v)
}

/// send(2) of `data` with `flags`; returns how much the kernel took.
pub fn send(fd: BorrowedFd<'_>, data: &[u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `data` is readable for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// recv(2) into `buf` with `flags`; returns how much the kernel wrote.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// bind(2) or connect(2) to an IPv4 address.
pub fn bind_or_connect(
    fd: BorrowedFd<'_>,
    addr: std::net::SocketAddrV4,
    connect: bool,
) -> io::Result<()> {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let p = (&sa as *const libc::sockaddr_in).cast();
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: `sa` is a valid sockaddr_in for the call and `len` is its size.
    check(unsafe {
        if connect {
            libc::connect(fd.as_raw_fd(), p, len)
        } else {
            libc::bind(fd.as_raw_fd(), p, len)
        }
    })
    .map(|_| ())
}

/// The local address of a socket.
pub fn local_addr(fd: BorrowedFd<'_>) -> io::Result<std::net::SocketAddrV4> {
    name(fd, false)
}

/// The peer's address of a connected socket.
pub fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<std::net::SocketAddrV4> {
    name(fd, true)
}

fn name(fd: BorrowedFd<'_>, peer: bool) -> io::Result<std::net::SocketAddrV4> {
    let mut sa = libc::sockaddr_in {
        sin_family: 0,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let p = (&mut sa as *mut libc::sockaddr_in).cast();
    // SAFETY: `sa` is writable for `len` bytes and `len` says so.
    check(unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    })?;
    Ok(std::net::SocketAddrV4::new(
        u32::from_be(sa.sin_addr.s_addr).into(),
        u16::from_be(sa.sin_port),
    ))
}
