//! Interposers of the readiness calls: poll, ppoll, select, pselect and the epoll family.

use libc::{c_int, size_t};

use super::args::{events_slice, poll_slice, timespec_ms, with_mask};
use super::{ours, ret_int, run, set_errno};
use crate::errno::Errno;
use crate::ready::{epoll, poll as rpoll};
use crate::socket::{self, SOCKETS};
use crate::sys::{guard, next};

/// Whether a poll set holds an accelerated socket that is not fresh (else the kernel answers).
fn any_ours(fds: &[libc::pollfd]) -> bool {
    !guard::passthrough() && fds.iter().any(|p| SOCKETS.contains(p.fd)) && rpoll::any_ours(fds)
}

/// poll(2) over a mix of accelerated and kernel fds.
///
/// # Safety
///
/// As poll(2): `fds` has `n` pollfds.
#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int {
    // SAFETY: see poll_slice.
    let Ok(slice) = (unsafe { poll_slice(fds, n) }) else {
        // SAFETY: same arguments (the kernel reports the fault).
        return unsafe { next::poll(fds, n, timeout) };
    };
    if !any_ours(slice) {
        // SAFETY: same arguments.
        return unsafe { next::poll(fds, n, timeout) };
    }
    ret_int(run(|| rpoll::poll(socket::rt()?, slice, timeout)).map(|r| r as c_int))
}

/// ppoll(2).
///
/// # Safety
///
/// As ppoll(2): `fds` has `n` pollfds; `t` and `mask`, if non-NULL, are the caller's.
#[no_mangle]
pub unsafe extern "C" fn ppoll(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    t: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: see poll_slice.
    let Ok(slice) = (unsafe { poll_slice(fds, n) }) else {
        // SAFETY: same arguments.
        return unsafe { next::ppoll(fds, n, t, mask) };
    };
    if !any_ours(slice) {
        // SAFETY: same arguments.
        return unsafe { next::ppoll(fds, n, t, mask) };
    }
    // SAFETY: a non-NULL timeout is the caller's timespec.
    let ms = match unsafe { timespec_ms(t) } {
        Ok(ms) => ms,
        Err(e) => return ret_int(Err(e)),
    };
    ret_int(
        unsafe { with_mask(mask, || run(|| rpoll::poll(socket::rt()?, slice, ms))) }
            .map(|r| r as c_int),
    )
}

/// glibc's _FORTIFY_SOURCE poll.
///
/// # Safety
///
/// As poll(2), with `fdslen` the size of `fds`.
#[no_mangle]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    timeout: c_int,
    fdslen: size_t,
) -> c_int {
    if (fdslen / std::mem::size_of::<libc::pollfd>()) < n as usize {
        // SAFETY: let glibc report the overflow as it would.
        return unsafe { next::__poll_chk(fds, n, timeout, fdslen) };
    }
    // SAFETY: checked like glibc; same contract as poll.
    unsafe { poll(fds, n, timeout) }
}

/// glibc's _FORTIFY_SOURCE ppoll.
///
/// # Safety
///
/// As ppoll(2), with `fdslen` the size of `fds`.
#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
    t: *const libc::timespec,
    mask: *const libc::sigset_t,
    fdslen: size_t,
) -> c_int {
    if (fdslen / std::mem::size_of::<libc::pollfd>()) < n as usize {
        // SAFETY: let glibc report the overflow as it would.
        return unsafe { next::__ppoll_chk(fds, n, t, mask, fdslen) };
    }
    // SAFETY: checked like glibc; same contract as ppoll.
    unsafe { ppoll(fds, n, t, mask) }
}

/// select via poll: the fd_sets become pollfds and back (`None`: no accelerated fd in them,
/// the kernel's select answers).
///
/// # Safety
///
/// Non-NULL sets are the caller's fd_sets; a non-NULL `mask` is the caller's sigset.
unsafe fn select_common(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    ms: c_int,
    mask: *const libc::sigset_t,
) -> Option<c_int> {
    if !(0..=libc::FD_SETSIZE as c_int).contains(&nfds) {
        return None;
    }
    let mut pfds = Vec::new();
    for fd in 0..nfds {
        let mut ev = 0;
        // SAFETY: non-NULL sets are the caller's fd_sets; fd < FD_SETSIZE.
        unsafe {
            if !r.is_null() && libc::FD_ISSET(fd, r) {
                ev |= libc::POLLIN;
            }
            if !w.is_null() && libc::FD_ISSET(fd, w) {
                ev |= libc::POLLOUT;
            }
            if !e.is_null() && libc::FD_ISSET(fd, e) {
                ev |= libc::POLLPRI;
            }
        }
        if ev != 0 {
            pfds.push(libc::pollfd {
                fd,
                events: ev,
                revents: 0,
            });
        }
    }
    if !any_ours(&pfds) {
        return None;
    }
    // SAFETY: a non-NULL mask is the caller's sigset.
    let res = unsafe { with_mask(mask, || run(|| rpoll::poll(socket::rt()?, &mut pfds, ms))) };
    let n = match res {
        Ok(_) => {
            let mut count = 0;
            // SAFETY: as above; clearing and setting bits of the caller's sets.
            unsafe {
                for set in [r, w, e] {
                    if !set.is_null() {
                        libc::FD_ZERO(set);
                    }
                }
                for p in &pfds {
                    if p.revents & libc::POLLNVAL != 0 {
                        set_errno(Errno::EBADF);
                        return Some(-1);
                    }
                    if !r.is_null()
                        && p.events & libc::POLLIN != 0
                        && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
                    {
                        libc::FD_SET(p.fd, r);
                        count += 1;
                    }
                    if !w.is_null()
                        && p.events & libc::POLLOUT != 0
                        && p.revents & (libc::POLLOUT | libc::POLLERR) != 0
                    {
                        libc::FD_SET(p.fd, w);
                        count += 1;
                    }
                    if !e.is_null()
                        && p.events & libc::POLLPRI != 0
                        && p.revents & libc::POLLPRI != 0
                    {
                        libc::FD_SET(p.fd, e);
                        count += 1;
                    }
                }
            }
            count
        }
        Err(err) => {
            set_errno(err);
            -1
        }
    };
    Some(n)
}

/// select(2), through poll.
///
/// # Safety
///
/// As select(2): non-NULL sets and timeout are the caller's.
#[no_mangle]
pub unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    t: *mut libc::timeval,
) -> c_int {
    let ms = if t.is_null() {
        -1
    } else {
        // SAFETY: the caller's timeval.
        let tv = unsafe { *t };
        if tv.tv_sec < 0 || tv.tv_usec < 0 {
            return ret_int(Err(Errno::EINVAL));
        }
        (tv.tv_sec.saturating_mul(1000) + (tv.tv_usec + 999) / 1000).min(i32::MAX as i64) as c_int
    };
    // SAFETY: same arguments, see select_common.
    match unsafe { select_common(nfds, r, w, e, ms, std::ptr::null()) } {
        Some(n) => n,
        // SAFETY: same arguments.
        None => unsafe { next::select(nfds, r, w, e, t) },
    }
}

/// pselect(2), through poll.
///
/// # Safety
///
/// As pselect(2): non-NULL sets, timeout and mask are the caller's.
#[no_mangle]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    t: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    // SAFETY: a non-NULL timeout is the caller's timespec.
    let ms = match unsafe { timespec_ms(t) } {
        Ok(ms) => ms,
        Err(err) => return ret_int(Err(err)),
    };
    // SAFETY: same arguments, see select_common.
    match unsafe { select_common(nfds, r, w, e, ms, mask) } {
        Some(n) => n,
        // SAFETY: same arguments.
        None => unsafe { next::pselect(nfds, r, w, e, t, mask) },
    }
}

/// epoll_create(2): the kernel's.
///
/// # Safety
///
/// As epoll_create(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // SAFETY: no pointers.
    unsafe { next::epoll_create(size) }
}

/// epoll_create1(2): the kernel's.
///
/// # Safety
///
/// As epoll_create1(2) (no pointers).
#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // SAFETY: no pointers.
    unsafe { next::epoll_create1(flags) }
}

/// epoll_ctl(2): accelerated members are tracked by accel.
///
/// # Safety
///
/// As epoll_ctl(2): a non-NULL `ev` is the caller's event.
#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    ev: *mut libc::epoll_event,
) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::epoll_ctl(epfd, op, fd, ev) };
    };
    // SAFETY: a non-NULL event is the caller's.
    let e = if ev.is_null() {
        None
    } else {
        Some(unsafe { *ev })
    };
    ret_int(run(|| epoll::epoll_ctl(epfd, op, fd, ep, e)).map(|_| 0))
}

/// epoll_wait(2).
///
/// # Safety
///
/// As epoll_wait(2): `evs` has room for `max` events.
#[no_mangle]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    // SAFETY: same contract as epoll_pwait with no mask.
    unsafe { epoll_pwait(epfd, evs, max, timeout, std::ptr::null()) }
}

/// epoll_pwait(2).
///
/// # Safety
///
/// As epoll_pwait(2): `evs` has room for `max` events; a non-NULL `mask` is the caller's.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    if !guard::passthrough() && epoll::has_members(epfd) {
        // SAFETY: see events_slice.
        if let Ok(slice) = unsafe { events_slice(evs, max) } {
            // SAFETY: a non-NULL mask is the caller's sigset.
            let r = unsafe {
                with_mask(mask, || {
                    run(|| epoll::epoll_wait(socket::rt()?, epfd, slice, timeout))
                })
            };
            return ret_int(r.map(|n| n as c_int));
        }
    }
    // SAFETY: same arguments.
    unsafe { next::epoll_pwait(epfd, evs, max, timeout, mask) }
}

/// epoll_pwait2(2).
///
/// # Safety
///
/// As epoll_pwait2(2): `evs` has room for `max` events; non-NULL `t` and `mask` are the
/// caller's.
#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    t: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    if !guard::passthrough() && epoll::has_members(epfd) {
        // SAFETY: a non-NULL timeout is the caller's timespec.
        let ms = match unsafe { timespec_ms(t) } {
            Ok(ms) => ms,
            Err(e) => return ret_int(Err(e)),
        };
        // SAFETY: see events_slice.
        if let Ok(slice) = unsafe { events_slice(evs, max) } {
            // SAFETY: a non-NULL mask is the caller's sigset.
            let r = unsafe {
                with_mask(mask, || {
                    run(|| epoll::epoll_wait(socket::rt()?, epfd, slice, ms))
                })
            };
            return ret_int(r.map(|n| n as c_int));
        }
    }
    // SAFETY: same arguments.
    unsafe { next::epoll_pwait2(epfd, evs, max, t, mask) }
}
