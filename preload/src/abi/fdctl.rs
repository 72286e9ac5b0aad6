//! Interposers of the fd-control calls: fcntl, ioctl, dup, dup2, dup3, close_range.

use std::sync::Arc;

use libc::{c_int, c_uint, c_ulong};

use super::{ours, ret_int, run};
use crate::errno::Errno;
use crate::fd;
use crate::socket::{options, Endpoint, SOCKETS};
use crate::sys::{guard, next};

/// fcntl on an accelerated fd: the kernel fd keeps every flag but O_NONBLOCK, which the
/// endpoint holds (the kernel socket stays non-blocking underneath).
///
/// # Safety
///
/// `real` is fcntl or fcntl64 and `arg` is what the caller passed for `cmd`.
unsafe fn fcntl_ours(
    ep: &Arc<Endpoint>,
    fd: c_int,
    cmd: c_int,
    arg: c_ulong,
    real: unsafe fn(c_int, c_int, c_ulong) -> c_int,
) -> c_int {
    match cmd {
        libc::F_GETFL if !ep.is_fresh() => {
            // SAFETY: F_GETFL has no pointer argument.
            let fl = unsafe { real(fd, cmd, 0) };
            if fl < 0 {
                return fl;
            }
            let nb = if ep.nonblocking() {
                libc::O_NONBLOCK
            } else {
                0
            };
            (fl & !libc::O_NONBLOCK) | nb
        }
        libc::F_SETFL => {
            let want_nb = arg as c_int & libc::O_NONBLOCK != 0;
            let arg = if ep.is_fresh() {
                arg
            } else {
                arg | libc::O_NONBLOCK as c_ulong
            };
            // SAFETY: F_SETFL takes an integer.
            let r = unsafe { real(fd, cmd, arg) };
            if r == 0 {
                ep.set_nonblocking(want_nb);
            }
            r
        }
        libc::F_DUPFD | libc::F_DUPFD_CLOEXEC => {
            // SAFETY: integer argument.
            let nfd = unsafe { real(fd, cmd, arg) };
            if nfd >= 0 {
                fd::ops::duplicated(&SOCKETS, fd, nfd);
            }
            nfd
        }
        // SAFETY: every other command with the caller's argument (pointer or integer).
        _ => unsafe { real(fd, cmd, arg) },
    }
}

/// `fcntl(int fd, int cmd, ...)`: on x86-64 the variadic argument arrives in the same register
/// as a third fixed one, so reading it as `unsigned long` is what the callee of a variadic call
/// sees (integer and pointer arguments alike).
///
/// # Safety
///
/// As fcntl(2): `arg` is what `cmd` expects (an integer, or a pointer valid for it).
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    match ours(fd) {
        // SAFETY: same arguments, the real fcntl.
        Some(ep) => unsafe { fcntl_ours(&ep, fd, cmd, arg, next::fcntl) },
        // SAFETY: same arguments.
        None => unsafe { next::fcntl(fd, cmd, arg) },
    }
}

/// fcntl64: see [`fcntl`].
///
/// # Safety
///
/// As fcntl(2).
#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    match ours(fd) {
        // SAFETY: same arguments, the real fcntl64.
        Some(ep) => unsafe { fcntl_ours(&ep, fd, cmd, arg, next::fcntl64) },
        // SAFETY: same arguments.
        None => unsafe { next::fcntl64(fd, cmd, arg) },
    }
}

const SIOCOUTQ: c_ulong = libc::TIOCOUTQ;

/// `ioctl(int fd, unsigned long req, ...)`: see fcntl for the variadic argument.
///
/// # Safety
///
/// As ioctl(2): `arg` is what `req` expects.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::ioctl(fd, req, arg) };
    };
    let out = arg as *mut c_int;
    match req {
        libc::FIONBIO => {
            if out.is_null() {
                return ret_int(Err(Errno::EFAULT));
            }
            // SAFETY: FIONBIO passes a pointer to an int.
            let on = unsafe { *out } != 0;
            if ep.is_fresh() {
                // SAFETY: same arguments.
                let r = unsafe { next::ioctl(fd, req, arg) };
                if r == 0 {
                    ep.set_nonblocking(on);
                }
                return r;
            }
            ep.set_nonblocking(on);
            0
        }
        libc::FIONREAD | SIOCOUTQ if !ep.is_fresh() => {
            if out.is_null() {
                return ret_int(Err(Errno::EFAULT));
            }
            let r = if req == libc::FIONREAD {
                run(|| options::inq(&ep))
            } else {
                run(|| options::outq(&ep))
            };
            ret_int(r.map(|v| {
                // SAFETY: these requests pass a pointer to an int.
                unsafe { *out = v };
                0
            }))
        }
        // SAFETY: same arguments.
        _ => unsafe { next::ioctl(fd, req, arg) },
    }
}

/// dup(2): a copy of an accelerated fd refers to the same socket.
///
/// # Safety
///
/// As dup(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    if guard::passthrough() {
        // SAFETY: no pointers.
        return unsafe { next::dup(fd) };
    }
    ret_int(run(|| fd::ops::dup(&SOCKETS, fd)))
}

/// dup2(2): onto an accelerated fd closes it first, as the kernel does.
///
/// # Safety
///
/// As dup2(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, newfd: c_int) -> c_int {
    if guard::passthrough() {
        // SAFETY: no pointers.
        return unsafe { next::dup2(fd, newfd) };
    }
    ret_int(run(|| fd::ops::dup_onto(&SOCKETS, fd, newfd, None)))
}

/// dup3(2): as dup2, with flags.
///
/// # Safety
///
/// As dup3(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, newfd: c_int, flags: c_int) -> c_int {
    if guard::passthrough() {
        // SAFETY: no pointers.
        return unsafe { next::dup3(fd, newfd, flags) };
    }
    ret_int(run(|| fd::ops::dup_onto(&SOCKETS, fd, newfd, Some(flags))))
}

/// close_range(2): closes the program's fds in the range, passing over accel's own.
///
/// # Safety
///
/// As close_range(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if guard::in_accel() {
        // SAFETY: no pointers.
        return unsafe { next::close_range(first, last, flags) };
    }
    ret_int(run(|| fd::ops::close_range(&SOCKETS, first, last, flags)).map(|_| 0))
}
