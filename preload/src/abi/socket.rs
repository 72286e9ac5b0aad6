//! Interposers of the socket set-up calls, names and options.

use libc::{c_int, c_void, sockaddr, socklen_t};

use super::args::{in_addr, in_buf, out_addr, out_buf};
use super::{ours, ret_int, run};
use crate::errno::Errno;
use crate::fd;
use crate::ready::epoll;
use crate::socket::{self, options, setup, SOCKETS};
use crate::sys::{guard, next};

/// socket(2): AF_INET TCP and UDP sockets are tracked (still fresh: on the kernel until they
/// bind, connect or send through an accelerated interface).
///
/// # Safety
///
/// As socket(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: same arguments as the caller's.
    let fd = unsafe { next::socket(domain, ty, protocol) };
    if fd >= 0 && !guard::passthrough() {
        run(|| setup::on_socket(socket::runtime(), fd, domain, ty, protocol));
    }
    fd
}

/// socketpair(2): always the kernel's (AF_UNIX).
///
/// # Safety
///
/// As socketpair(2): `sv` has room for two ints.
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: same arguments.
    unsafe { next::socketpair(domain, ty, protocol, sv) }
}

/// bind(2).
///
/// # Safety
///
/// As bind(2): `addr` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::bind(fd, addr, len) };
    };
    // SAFETY: see in_addr.
    let a = unsafe { in_addr(addr, len) };
    ret_int(run(|| setup::bind(socket::rt()?, &ep, fd, a?)).map(|_| 0))
}

/// listen(2).
///
/// # Safety
///
/// As listen(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: no pointers.
        return unsafe { next::listen(fd, backlog) };
    };
    ret_int(run(|| setup::listen(socket::rt()?, &ep, fd, backlog)).map(|_| 0))
}

/// accept(2).
///
/// # Safety
///
/// As accept(2): a non-NULL `addr` has `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: forwarded with the same contract.
    unsafe { accept4(fd, addr, len, 0) }
}

/// accept4(2).
///
/// # Safety
///
/// As accept4(2): a non-NULL `addr` has `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::accept4(fd, addr, len, flags) };
    };
    if flags & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) != 0 {
        return ret_int(Err(Errno::EINVAL));
    }
    let r = run(|| setup::accept(socket::rt()?, &ep, fd, flags));
    ret_int(r.and_then(|(nfd, a)| {
        // SAFETY: see out_addr.
        unsafe { out_addr(&a, addr, len) }?;
        Ok(nfd)
    }))
}

/// connect(2).
///
/// # Safety
///
/// As connect(2): `addr` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::connect(fd, addr, len) };
    };
    // SAFETY: see in_addr.
    let a = unsafe { in_addr(addr, len) };
    ret_int(run(|| setup::connect(socket::rt()?, &ep, fd, a?)).map(|_| 0))
}

/// shutdown(2).
///
/// # Safety
///
/// As shutdown(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: no pointers.
        return unsafe { next::shutdown(fd, how) };
    };
    ret_int(run(|| socket::close::shutdown(&ep, fd, how)).map(|_| 0))
}

/// close(2): an accelerated socket closes with its last fd; accel's own fds do not exist for
/// the program.
///
/// # Safety
///
/// As close(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if guard::in_accel() {
        // SAFETY: no pointers.
        return unsafe { next::close(fd) };
    }
    ret_int(
        run(|| {
            epoll::forget(fd);
            fd::ops::close(&SOCKETS, fd)
        })
        .map(|_| 0),
    )
}

/// getsockopt(2).
///
/// # Safety
///
/// As getsockopt(2): `len` is the caller's in/out length and `val` has that many writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::getsockopt(fd, level, name, val, len) };
    };
    if len.is_null() {
        return ret_int(Err(Errno::EFAULT));
    }
    // SAFETY: `len` is the caller's in/out length.
    let room = unsafe { *len } as usize;
    // SAFETY: see out_buf; `val` has `room` writable bytes.
    let r = unsafe { out_buf(val, room.min(1024)) }
        .and_then(|b| run(|| options::getsockopt(&ep, fd, level, name, b)));
    ret_int(r.map(|n| {
        // SAFETY: as above.
        unsafe { *len = n as socklen_t };
        0
    }))
}

/// setsockopt(2).
///
/// # Safety
///
/// As setsockopt(2): `val` has `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::setsockopt(fd, level, name, val, len) };
    };
    // SAFETY: see in_buf.
    let v = unsafe { in_buf(val, len as usize) };
    ret_int(v.and_then(|b| run(|| options::setsockopt(&ep, fd, level, name, b)).map(|_| 0)))
}

/// getsockname(2).
///
/// # Safety
///
/// As getsockname(2): `addr` has `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::getsockname(fd, addr, len) };
    };
    if addr.is_null() || len.is_null() {
        return ret_int(Err(Errno::EFAULT));
    }
    let a = run(|| options::getsockname(&ep, fd));
    // SAFETY: see out_addr.
    ret_int(
        a.and_then(|a| unsafe { out_addr(&a, addr, len) })
            .map(|_| 0),
    )
}

/// getpeername(2).
///
/// # Safety
///
/// As getpeername(2): `addr` has `*len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::getpeername(fd, addr, len) };
    };
    if addr.is_null() || len.is_null() {
        return ret_int(Err(Errno::EFAULT));
    }
    let a = run(|| options::getpeername(&ep, fd));
    // SAFETY: see out_addr.
    ret_int(
        a.and_then(|a| unsafe { out_addr(&a, addr, len) })
            .map(|_| 0),
    )
}
