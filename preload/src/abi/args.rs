//! Turning C arguments into Rust values, with the kernel's checks first (NULL with a length
//! is EFAULT, lengths are bounded). The slices live only for the call that made them.

use std::io::{IoSlice, IoSliceMut};

use libc::{c_int, c_void, iovec, size_t, sockaddr, socklen_t};

use crate::addr::SockAddrBuf;
use crate::errno::{Errno, Res};

/// The caller's input buffer.
///
/// # Safety
///
/// `p` points to `n` readable bytes (the C contract of the call) that nothing writes while the
/// slice lives.
pub(super) unsafe fn in_buf<'a>(p: *const c_void, n: size_t) -> Res<&'a [u8]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the caller passed `n` readable bytes at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) })
}

/// The caller's output buffer.
///
/// # Safety
///
/// `p` points to `n` writable bytes that nothing else touches while the slice lives.
pub(super) unsafe fn out_buf<'a>(p: *mut c_void, n: size_t) -> Res<&'a mut [u8]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the caller passed `n` writable bytes at `p`, not aliased during the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) })
}

/// The caller's address, as bytes (checked by the parsers later).
///
/// # Safety
///
/// A non-NULL `p` points to `len` readable bytes.
pub(super) unsafe fn in_addr<'a>(p: *const sockaddr, len: socklen_t) -> Res<&'a [u8]> {
    if len as usize > std::mem::size_of::<libc::sockaddr_storage>() {
        return Err(Errno::EINVAL);
    }
    if p.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Errno::EFAULT)
        };
    }
    // SAFETY: the caller passed `len` readable bytes of address at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) })
}

/// Copies an address out as the kernel does: truncated to the caller's length, which is then
/// set to the full length. NULL `p` means the caller does not want it.
///
/// # Safety
///
/// A non-NULL `p` has `*len` writable bytes; a non-NULL `len` is the caller's in/out length.
pub(super) unsafe fn out_addr(a: &SockAddrBuf, p: *mut sockaddr, len: *mut socklen_t) -> Res<()> {
    if p.is_null() {
        return Ok(());
    }
    if len.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: `len` is the caller's in/out length, `p` has that many writable bytes.
    unsafe {
        let room = *len as i32;
        if room < 0 {
            return Err(Errno::EINVAL);
        }
        let n = (room as usize).min(a.len);
        std::ptr::copy_nonoverlapping(a.bytes.as_ptr(), p.cast::<u8>(), n);
        *len = a.len as socklen_t;
    }
    Ok(())
}

/// The caller's gather list.
///
/// # Safety
///
/// `iov` has `n` entries, each describing a readable buffer (see [`in_buf`]).
pub(super) unsafe fn iov_in<'a>(iov: *const iovec, n: c_int) -> Res<Vec<IoSlice<'a>>> {
    if !(0..=1024).contains(&n) {
        return Err(Errno::EINVAL);
    }
    if n > 0 && iov.is_null() {
        return Err(Errno::EFAULT);
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `iov` has `n` entries (the C contract); each describes a readable buffer.
        let e = unsafe { *iov.add(i) };
        v.push(IoSlice::new(unsafe { in_buf(e.iov_base, e.iov_len)? }));
    }
    Ok(v)
}

/// The caller's scatter list.
///
/// # Safety
///
/// `iov` has `n` entries, each describing a writable buffer (see [`out_buf`]), none
/// overlapping another (legal in C, meaningless for a read; we rely on callers not passing
/// them).
pub(super) unsafe fn iov_out<'a>(iov: *const iovec, n: c_int) -> Res<Vec<IoSliceMut<'a>>> {
    if !(0..=1024).contains(&n) {
        return Err(Errno::EINVAL);
    }
    if n > 0 && iov.is_null() {
        return Err(Errno::EFAULT);
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `iov` has `n` entries, each a writable buffer.
        let e = unsafe { *iov.add(i) };
        v.push(IoSliceMut::new(unsafe { out_buf(e.iov_base, e.iov_len)? }));
    }
    Ok(v)
}

/// The caller's pollfd array.
///
/// # Safety
///
/// `fds` has `n` pollfds that nothing else touches during the call.
pub(super) unsafe fn poll_slice<'a>(
    fds: *mut libc::pollfd,
    n: libc::nfds_t,
) -> Res<&'a mut [libc::pollfd]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if fds.is_null() {
        return Err(Errno::EFAULT);
    }
    if n > 1 << 20 {
        return Err(Errno::EINVAL);
    }
    // SAFETY: the caller passed `n` pollfds at `fds`.
    Ok(unsafe { std::slice::from_raw_parts_mut(fds, n as usize) })
}

/// The caller's epoll_event array.
///
/// # Safety
///
/// `evs` has room for `max` events.
pub(super) unsafe fn events_slice<'a>(
    evs: *mut libc::epoll_event,
    max: c_int,
) -> Res<&'a mut [libc::epoll_event]> {
    if max <= 0 {
        return Err(Errno::EINVAL);
    }
    if evs.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the caller passed room for `max` events.
    Ok(unsafe { std::slice::from_raw_parts_mut(evs, max as usize) })
}

/// A timespec timeout in milliseconds, rounded up (-1 for NULL: no timeout).
///
/// # Safety
///
/// A non-NULL `t` points to the caller's timespec.
pub(super) unsafe fn timespec_ms(t: *const libc::timespec) -> Res<c_int> {
    if t.is_null() {
        return Ok(-1);
    }
    // SAFETY: a non-NULL timeout points to the caller's timespec.
    let t = unsafe { *t };
    if t.tv_sec < 0 || !(0..1_000_000_000).contains(&t.tv_nsec) {
        return Err(Errno::EINVAL);
    }
    let ms = t
        .tv_sec
        .saturating_mul(1000)
        .saturating_add((t.tv_nsec + 999_999) / 1_000_000);
    Ok(ms.min(i32::MAX as i64) as c_int)
}

/// Runs `f` with the signal mask `mask` in place (ppoll/pselect/epoll_pwait semantics; the
/// swap is not atomic with the wait, a documented limitation).
///
/// # Safety
///
/// A non-NULL `mask` points to the caller's sigset.
pub(super) unsafe fn with_mask<R>(mask: *const libc::sigset_t, f: impl FnOnce() -> R) -> R {
    if mask.is_null() {
        return f();
    }
    // SAFETY: `old` is a local sigset, zeroed and then filled by the call.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `mask` is the caller's sigset, `old` ours.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, &mut old) };
    let r = f();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}
