//! Safe wrappers of the real (kernel) calls, for the rest of the crate: slices in, `Res` out.
//!
//! Each wrapper passes pointers derived from Rust references that live for the call, with
//! their true lengths, so the kernel never reads or writes outside them.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use libc::{c_int, c_void, sockaddr, socklen_t};

use super::next;
use crate::addr::{SockAddrBuf, SOCKADDR_IN_LEN};
use crate::errno::{Errno, Res};

fn check(r: c_int) -> Res<c_int> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

fn check_size(r: isize) -> Res<usize> {
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as usize)
    }
}

/// CLOCK_MONOTONIC_COARSE: the monotonic clock as of the last tick, which the vDSO returns
/// without reading the TSC (a few nanoseconds). Behind CLOCK_MONOTONIC by at most
/// [`coarse_resolution`].
pub fn coarse_clock() -> Option<std::time::Duration> {
    // SAFETY: clock_gettime writes one timespec into the local it is given.
    timespec_of(|ts| unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, ts) })
}

/// The step of [`coarse_clock`] (one tick).
pub fn coarse_resolution() -> Option<std::time::Duration> {
    // SAFETY: clock_getres writes one timespec into the local it is given.
    timespec_of(|ts| unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, ts) })
}

fn timespec_of(call: impl FnOnce(&mut libc::timespec) -> c_int) -> Option<std::time::Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    (call(&mut ts) == 0).then(|| std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Writes to stderr (best effort, for accel's one-line warnings).
pub fn write_stderr(b: &[u8]) {
    // SAFETY: `b` is a valid slice for its length.
    let _ = unsafe { next::write(2, b.as_ptr().cast(), b.len()) };
}

pub fn eventfd() -> Option<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local u64.
    let _ = unsafe { next::write(fd, (&one as *const u64).cast(), 8) };
}

pub fn eventfd_drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a local u64.
    let _ = unsafe { next::read(fd, (&mut v as *mut u64).cast(), 8) };
}

/// Sleeps until one of `fds` is readable or `timeout_ms` passes (errors ignored: a wake-up).
pub fn poll_readable(fds: &[RawFd], timeout_ms: i32) {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let _ = poll(&mut p, timeout_ms);
}

pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Res<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds.
    check(unsafe { next::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) })
        .map(|n| n as usize)
}

pub fn random_u64() -> u64 {
    let mut v: u64 = 0;
    // SAFETY: writes at most 8 bytes into a local u64.
    let n = unsafe { libc::getrandom((&mut v as *mut u64).cast(), 8, 0) };
    if n != 8 {
        v = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
    }
    v
}

pub fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with the C ABI that stays valid for the process's life.
    let _ = unsafe { libc::atexit(f) };
}

pub fn bind(fd: RawFd, addr: &[u8]) -> Res<()> {
    // SAFETY: `addr` is valid for its length.
    check(unsafe {
        next::bind(
            fd,
            addr.as_ptr().cast::<sockaddr>(),
            addr.len() as socklen_t,
        )
    })
    .map(|_| ())
}

pub fn listen(fd: RawFd, backlog: c_int) -> Res<()> {
    // SAFETY: no pointers.
    check(unsafe { next::listen(fd, backlog) }).map(|_| ())
}

/// accept4 on a kernel socket; the address as the kernel gave it.
pub fn accept4(fd: RawFd, flags: c_int) -> Res<(RawFd, SockAddrBuf)> {
    let mut buf = SockAddrBuf {
        bytes: [0; SOCKADDR_IN_LEN],
        len: SOCKADDR_IN_LEN,
    };
    let mut len = SOCKADDR_IN_LEN as socklen_t;
    // SAFETY: the address buffer is 16 bytes and `len` says so.
    let r = check(unsafe { next::accept4(fd, buf.bytes.as_mut_ptr().cast(), &mut len, flags) })?;
    buf.len = (len as usize).min(SOCKADDR_IN_LEN);
    Ok((r, buf))
}

pub fn connect(fd: RawFd, addr: &[u8]) -> Res<()> {
    // SAFETY: `addr` is valid for its length.
    check(unsafe {
        next::connect(
            fd,
            addr.as_ptr().cast::<sockaddr>(),
            addr.len() as socklen_t,
        )
    })
    .map(|_| ())
}

pub fn getsockname(fd: RawFd) -> Res<SockAddrBuf> {
    let mut buf = SockAddrBuf {
        bytes: [0; SOCKADDR_IN_LEN],
        len: SOCKADDR_IN_LEN,
    };
    let mut len = SOCKADDR_IN_LEN as socklen_t;
    // SAFETY: the address buffer is 16 bytes and `len` says so.
    check(unsafe { next::getsockname(fd, buf.bytes.as_mut_ptr().cast(), &mut len) })?;
    buf.len = (len as usize).min(SOCKADDR_IN_LEN);
    Ok(buf)
}

pub fn setsockopt(fd: RawFd, level: c_int, name: c_int, val: &[u8]) -> Res<()> {
    // SAFETY: `val` is valid for its length.
    check(unsafe {
        next::setsockopt(
            fd,
            level,
            name,
            val.as_ptr().cast::<c_void>(),
            val.len() as socklen_t,
        )
    })
    .map(|_| ())
}

pub fn getsockopt(fd: RawFd, level: c_int, name: c_int, out: &mut [u8]) -> Res<usize> {
    let mut len = out.len() as socklen_t;
    // SAFETY: `out` is writable for its length and `len` says so.
    check(unsafe {
        next::getsockopt(fd, level, name, out.as_mut_ptr().cast::<c_void>(), &mut len)
    })?;
    Ok(len as usize)
}

pub fn getfl(fd: RawFd) -> Res<c_int> {
    // SAFETY: F_GETFL takes no argument.
    check(unsafe { next::fcntl(fd, libc::F_GETFL, 0) })
}

/// recvfrom on a kernel socket (non-blocking per `flags`).
pub fn recvfrom(fd: RawFd, buf: &mut [u8], flags: c_int) -> Res<(usize, SockAddrBuf)> {
    let mut from = SockAddrBuf {
        bytes: [0; SOCKADDR_IN_LEN],
        len: SOCKADDR_IN_LEN,
    };
    let mut len = SOCKADDR_IN_LEN as socklen_t;
    // SAFETY: `buf` and the 16-byte address buffer are writable for the lengths passed.
    let n = check_size(unsafe {
        next::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
            from.bytes.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    from.len = (len as usize).min(SOCKADDR_IN_LEN);
    Ok((n, from))
}

pub fn sendto(fd: RawFd, buf: &[u8], flags: c_int, dst: Option<&[u8]>) -> Res<usize> {
    let (p, l) = dst.map_or((std::ptr::null(), 0), |d| (d.as_ptr(), d.len()));
    // SAFETY: `buf` and `dst` are valid for their lengths (NULL/0 when there is no address).
    check_size(unsafe {
        next::sendto(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            flags,
            p.cast(),
            l as socklen_t,
        )
    })
}

pub fn shutdown(fd: RawFd, how: c_int) -> Res<()> {
    // SAFETY: no pointers.
    check(unsafe { next::shutdown(fd, how) }).map(|_| ())
}

pub fn epoll_ctl(epfd: RawFd, op: c_int, fd: RawFd, ev: Option<libc::epoll_event>) -> Res<()> {
    let mut e = ev.unwrap_or(libc::epoll_event { events: 0, u64: 0 });
    let p = if ev.is_some() {
        &mut e as *mut libc::epoll_event
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: `p` is NULL or points to a local event for the call.
    check(unsafe { next::epoll_ctl(epfd, op, fd, p) }).map(|_| ())
}

pub fn epoll_wait(epfd: RawFd, evs: &mut [libc::epoll_event], timeout_ms: c_int) -> Res<usize> {
    if evs.is_empty() {
        return Ok(0);
    }
    // SAFETY: `evs` is writable for `evs.len()` events.
    check(unsafe { next::epoll_wait(epfd, evs.as_mut_ptr(), evs.len() as c_int, timeout_ms) })
        .map(|n| n as usize)
}

pub fn read(fd: RawFd, buf: &mut [u8]) -> Res<usize> {
    // SAFETY: `buf` is writable for its length.
    check_size(unsafe { next::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

pub fn pread(fd: RawFd, buf: &mut [u8], off: i64) -> Res<usize> {
    // SAFETY: `buf` is writable for its length.
    check_size(unsafe { next::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) })
}

pub fn close(fd: RawFd) -> Res<()> {
    // SAFETY: no pointers; the caller owns `fd`.
    check(unsafe { next::close(fd) }).map(|_| ())
}

/// Raises SIGPIPE on this thread (a write to a closed connection without MSG_NOSIGNAL).
pub fn raise_sigpipe() {
    // SAFETY: no pointers.
    let _ = unsafe { libc::raise(libc::SIGPIPE) };
}

pub fn socket(domain: c_int, ty: c_int, protocol: c_int) -> Res<RawFd> {
    // SAFETY: no pointers.
    check(unsafe { next::socket(domain, ty, protocol) })
}

pub fn setfl(fd: RawFd, flags: c_int) -> Res<()> {
    // SAFETY: F_SETFL takes an integer argument.
    check(unsafe { next::fcntl(fd, libc::F_SETFL, flags as libc::c_ulong) }).map(|_| ())
}

pub fn getpeername(fd: RawFd) -> Res<SockAddrBuf> {
    let mut buf = SockAddrBuf {
        bytes: [0; SOCKADDR_IN_LEN],
        len: SOCKADDR_IN_LEN,
    };
    let mut len = SOCKADDR_IN_LEN as socklen_t;
    // SAFETY: the address buffer is 16 bytes and `len` says so.
    check(unsafe { next::getpeername(fd, buf.bytes.as_mut_ptr().cast(), &mut len) })?;
    buf.len = (len as usize).min(SOCKADDR_IN_LEN);
    Ok(buf)
}

/// Whether `fd` is an epoll instance (an epoll_ctl on it with a bad op says EINVAL, not EBADF).
pub fn is_epoll(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|p| p.to_string_lossy().contains("eventpoll"))
}

/// Registers fork handlers: before fork (in the parent), after it in the parent, and after it
/// in the child.
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: plain C-ABI functions valid for the process's life.
    let _ = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// F_DUPFD_CLOEXEC: a close-on-exec copy of `fd` numbered `min` or above.
pub fn dup_cloexec_above(fd: RawFd, min: c_int) -> Res<RawFd> {
    // SAFETY: integer arguments only.
    check(unsafe { next::fcntl(fd, libc::F_DUPFD_CLOEXEC, min as libc::c_ulong) })
}

/// Writes all of `b` to `fd` (best effort).
pub fn write_fd(fd: RawFd, b: &[u8]) {
    // SAFETY: `b` is valid for its length.
    let _ = unsafe { next::write(fd, b.as_ptr().cast(), b.len()) };
}

/// A new epoll instance (close-on-exec) watching `fd` for input.
pub fn epoll_with(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: epoll_create1 has no pointer arguments.
    let ep = unsafe { next::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return None;
    }
    // SAFETY: `ep` is a new descriptor nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(ep) };
    epoll_ctl(
        ep,
        libc::EPOLL_CTL_ADD,
        fd,
        Some(libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        }),
    )
    .ok()?;
    Some(owned)
}

/// Whether `fd` is an AF_XDP socket or a BPF object (map, program, link).
pub fn is_accel_kind(fd: RawFd) -> bool {
    if std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|p| p.to_string_lossy().starts_with("anon_inode:bpf"))
    {
        return true;
    }
    let mut v = [0u8; 4];
    matches!(
        getsockopt(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, &mut v),
        Ok(4)
    ) && i32::from_ne_bytes(v) == libc::AF_XDP
}

pub fn dup(fd: RawFd) -> Res<RawFd> {
    // SAFETY: no pointers.
    check(unsafe { next::dup(fd) })
}

pub fn dup2(fd: RawFd, newfd: RawFd) -> Res<RawFd> {
    // SAFETY: no pointers.
    check(unsafe { next::dup2(fd, newfd) })
}

pub fn dup3(fd: RawFd, newfd: RawFd, flags: c_int) -> Res<RawFd> {
    // SAFETY: no pointers.
    check(unsafe { next::dup3(fd, newfd, flags) })
}

/// F_GETFD: the fd's flags (EBADF when it is not open).
pub fn getfd(fd: RawFd) -> Res<c_int> {
    // SAFETY: F_GETFD takes no argument.
    check(unsafe { next::fcntl(fd, libc::F_GETFD, 0) })
}

pub fn close_range(first: u32, last: u32, flags: c_int) -> Res<()> {
    // SAFETY: no pointers.
    check(unsafe { next::close_range(first, last, flags) }).map(|_| ())
}

/// lseek on the program's file (sendfile gives back what it read but did not send).
pub fn lseek(fd: RawFd, off: i64, whence: c_int) -> Res<i64> {
    // SAFETY: no pointers.
    let r = unsafe { libc::lseek(fd, off, whence) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// A close-on-exec copy of `fd` numbered `min` or above, owned by the caller.
pub fn dup_owned_above(fd: RawFd, min: c_int) -> Res<OwnedFd> {
    let n = dup_cloexec_above(fd, min)?;
    // SAFETY: `n` is a new descriptor the kernel just made for this call; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A new epoll instance (close-on-exec), owned by the caller.
pub fn epoll_create() -> Res<OwnedFd> {
    // SAFETY: no pointers.
    let ep = check(unsafe { next::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: `ep` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ep) })
}

/// A connected pair of SOCK_SEQPACKET Unix sockets, close-on-exec (raw: they cross fork's
/// handlers in atomics; the caller takes ownership with [`own_raw`]).
pub fn seqpacket_pair() -> Res<(RawFd, RawFd)> {
    let mut sv = [-1 as c_int; 2];
    // SAFETY: `sv` has room for the two fds socketpair writes.
    check(unsafe {
        next::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    })?;
    Ok((sv[0], sv[1]))
}

/// Takes ownership of `fd`, one this process made or received for accel (a
/// [`seqpacket_pair`] end, a connection to accel's helper) and nothing else owns. `None` for a
/// negative number.
pub fn own_raw(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: by the contract above, `fd` is open and owned by no other object.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the other end of a socket hung up (looked at without waiting).
pub fn hung_up(fd: RawFd) -> Res<bool> {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    }];
    poll(&mut p, 0)?;
    Ok(p[0].revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL) != 0)
}

/// Sends one message (a datagram on a SOCK_SEQPACKET socket).
pub fn send_all(fd: RawFd, b: &[u8]) -> Res<()> {
    sendto(fd, b, libc::MSG_NOSIGNAL, None).map(|_| ())
}

/// Receives one message without waiting (EAGAIN when there is none).
pub fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> Res<usize> {
    recvfrom(fd, buf, libc::MSG_DONTWAIT).map(|(n, _)| n)
}

/// Receives one message, waiting at most `d` (EAGAIN after it; 0 when the peer hung up).
pub fn recv_timeout(fd: RawFd, buf: &mut [u8], d: std::time::Duration) -> Res<usize> {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    if poll(&mut p, d.as_millis().min(i32::MAX as u128) as i32)? == 0 {
        return Err(Errno::EAGAIN);
    }
    recv_nonblocking(fd, buf).or_else(|e| if e == Errno::EAGAIN { Ok(0) } else { Err(e) })
}

/// Runs `f` with `fd` borrowed (libaccel takes `BorrowedFd`s); the borrow ends with `f`.
/// `fd` is one accel holds open meanwhile (an accelerated socket's kernel fd, under its
/// endpoint's lock).
pub fn with_fd<R>(fd: RawFd, f: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> R) -> R {
    // SAFETY: `fd` is open for the duration of `f` (see above), and the borrow cannot escape
    // `f`; BorrowedFd never closes it.
    f(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
}
