//! The interposed libc functions. Each checks whether the fd is accelerated (one atomic load
//! for a kernel fd) and otherwise calls the real function with the same arguments.
//!
//! Pointer arguments become slices only after the kernel's checks (NULL with a length is
//! EFAULT). A pointer that is non-NULL but invalid cannot be checked in user space: it faults
//! here where the kernel would return EFAULT (as with any user-space stack).
#![allow(clippy::missing_safety_doc)]

use std::io::{IoSlice, IoSliceMut};
use std::sync::Arc;

use libc::{
    c_int, c_uint, c_ulong, c_void, iovec, mmsghdr, msghdr, off_t, size_t, sockaddr, socklen_t,
    ssize_t,
};

use super::{in_accel, next};
use crate::addr::SockAddrBuf;
use crate::errno::{Errno, Res};
use crate::fdtable;
use crate::ops::{self, Endpoint};

fn set_errno(e: Errno) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e.0 };
}

fn ret_int(r: Res<c_int>) -> c_int {
    match r {
        Ok(v) => v,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

fn ret_size(r: Res<usize>) -> ssize_t {
    match r {
        Ok(v) => v as ssize_t,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// The endpoint of `fd` if it is accelerated and we are not inside accel's own code.
#[inline(always)]
fn ours(fd: c_int) -> Option<Arc<Endpoint>> {
    // The fast path for kernel fds is this one bitmap load; everything else (the thread-local
    // guard, whose access is a function call in a shared library) stays out of line.
    if !fdtable::is_ours(fd) {
        return None;
    }
    ours_slow(fd)
}

#[cold]
#[inline(never)]
fn ours_slow(fd: c_int) -> Option<Arc<Endpoint>> {
    if in_accel() || crate::runtime::is_forked_child() {
        return None;
    }
    fdtable::get(fd)
}

/// Runs accel's code for one call with the recursion guard set.
fn run<R>(f: impl FnOnce() -> R) -> R {
    super::guarded(f)
}

unsafe fn in_buf<'a>(p: *const c_void, n: size_t) -> Res<&'a [u8]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the caller passed `n` readable bytes at `p` (the C contract of the call).
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n) })
}

unsafe fn out_buf<'a>(p: *mut c_void, n: size_t) -> Res<&'a mut [u8]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the caller passed `n` writable bytes at `p`, not aliased during the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), n) })
}

unsafe fn in_addr<'a>(p: *const sockaddr, len: socklen_t) -> Res<&'a [u8]> {
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
unsafe fn out_addr(a: &SockAddrBuf, p: *mut sockaddr, len: *mut socklen_t) -> Res<()> {
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

unsafe fn iov_in<'a>(iov: *const iovec, n: c_int) -> Res<Vec<IoSlice<'a>>> {
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

unsafe fn iov_out<'a>(iov: *const iovec, n: c_int) -> Res<Vec<IoSliceMut<'a>>> {
    if !(0..=1024).contains(&n) {
        return Err(Errno::EINVAL);
    }
    if n > 0 && iov.is_null() {
        return Err(Errno::EFAULT);
    }
    let mut v = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        // SAFETY: `iov` has `n` entries, each a writable buffer. Overlapping iovecs (legal in
        // C, meaningless for a read) would alias; we rely on callers not passing them.
        let e = unsafe { *iov.add(i) };
        v.push(IoSliceMut::new(unsafe { out_buf(e.iov_base, e.iov_len)? }));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Sockets.

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: same arguments as the caller's.
    let fd = unsafe { next::socket(domain, ty, protocol) };
    if fd >= 0 && !in_accel() && !crate::runtime::is_forked_child() {
        run(|| ops::on_socket(fd, domain, ty, protocol));
    }
    fd
}

#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: AF_UNIX pairs are always the kernel's; same arguments.
    unsafe { next::socketpair(domain, ty, protocol, sv) }
}

#[no_mangle]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::bind(fd, addr, len) };
    };
    // SAFETY: see in_addr.
    ret_int(
        unsafe { in_addr(addr, len) }
            .and_then(|a| run(|| ops::bind(&ep, fd, a)))
            .map(|_| 0),
    )
}

#[no_mangle]
pub unsafe extern "C" fn listen(fd: c_int, backlog: c_int) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: no pointers.
        return unsafe { next::listen(fd, backlog) };
    };
    ret_int(run(|| ops::listen(&ep, fd, backlog)).map(|_| 0))
}

#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: forwarded with the same contract.
    unsafe { accept4(fd, addr, len, 0) }
}

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
    ret_int(run(|| ops::accept(&ep, fd, flags)).and_then(|(nfd, a)| {
        // SAFETY: see out_addr.
        unsafe { out_addr(&a, addr, len) }?;
        Ok(nfd)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::connect(fd, addr, len) };
    };
    // SAFETY: see in_addr.
    ret_int(
        unsafe { in_addr(addr, len) }
            .and_then(|a| run(|| ops::connect(&ep, fd, a)))
            .map(|_| 0),
    )
}

#[no_mangle]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: no pointers.
        return unsafe { next::shutdown(fd, how) };
    };
    ret_int(run(|| ops::shutdown(&ep, fd, how)).map(|_| 0))
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    if !in_accel() && fdtable::is_internal(fd) {
        // accel's own fd: the program never opened it (a closefrom-style loop, say).
        return ret_int(Err(Errno::EBADF));
    }
    // A forked child only ever closes its own copy of the kernel fd: the parent's stacks,
    // flows and tables (shared memory pages, shared BPF maps) are not its to touch.
    if !in_accel() && !crate::runtime::is_forked_child() {
        if let Some(ep) = if fdtable::is_ours(fd) {
            fdtable::remove(fd)
        } else {
            None
        } {
            run(|| ops::close(ep, fd));
        }
        run(|| ops::on_close(fd));
    }
    // SAFETY: no pointers; the kernel fd closes in every case.
    unsafe { next::close(fd) }
}

// ---------------------------------------------------------------------------------------------
// Data.

fn send_common(
    ep: &Endpoint,
    fd: c_int,
    bufs: &[IoSlice<'_>],
    flags: c_int,
    dst: Option<&[u8]>,
) -> ssize_t {
    ret_size(run(|| ops::send(ep, fd, bufs, flags, dst)))
}

fn recv_common(
    ep: &Endpoint,
    fd: c_int,
    bufs: &mut [IoSliceMut<'_>],
    flags: c_int,
) -> Res<ops::Received> {
    run(|| ops::recv(ep, fd, bufs, flags))
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::write(fd, buf, n) };
    };
    // SAFETY: see in_buf.
    match unsafe { in_buf(buf, n) } {
        Ok(b) => send_common(&ep, fd, &[IoSlice::new(b)], 0, None),
        Err(e) => ret_size(Err(e)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::send(fd, buf, n, flags) };
    };
    // SAFETY: see in_buf.
    match unsafe { in_buf(buf, n) } {
        Ok(b) => send_common(&ep, fd, &[IoSlice::new(b)], flags, None),
        Err(e) => ret_size(Err(e)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: size_t,
    flags: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::sendto(fd, buf, n, flags, addr, len) };
    };
    // SAFETY: see in_buf and in_addr.
    match unsafe { in_buf(buf, n).and_then(|b| Ok((b, in_addr(addr, len)?))) } {
        Ok((b, a)) => send_common(
            &ep,
            fd,
            &[IoSlice::new(b)],
            flags,
            (!a.is_empty()).then_some(a),
        ),
        Err(e) => ret_size(Err(e)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::writev(fd, iov, n) };
    };
    // SAFETY: see iov_in.
    match unsafe { iov_in(iov, n) } {
        Ok(v) => send_common(&ep, fd, &v, 0, None),
        Err(e) => ret_size(Err(e)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::sendmsg(fd, msg, flags) };
    };
    if msg.is_null() {
        return ret_size(Err(Errno::EFAULT));
    }
    // SAFETY: `msg` is the caller's message header; its iov and name describe its buffers.
    let r = unsafe {
        let m = &*msg;
        iov_in(m.msg_iov, m.msg_iovlen as c_int)
            .and_then(|v| Ok((v, in_addr(m.msg_name.cast(), m.msg_namelen)?)))
    };
    match r {
        Ok((v, a)) => send_common(&ep, fd, &v, flags, (!a.is_empty()).then_some(a)),
        Err(e) => ret_size(Err(e)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, n: c_uint, flags: c_int) -> c_int {
    if ours(fd).is_none() {
        // SAFETY: same arguments.
        return unsafe { next::sendmmsg(fd, msgs, n, flags) };
    }
    if msgs.is_null() && n > 0 {
        return ret_int(Err(Errno::EFAULT));
    }
    let mut done = 0;
    for i in 0..n.min(1024) as usize {
        // SAFETY: `msgs` has `n` entries (the C contract).
        let m = unsafe { &mut *msgs.add(i) };
        // SAFETY: the entry's header describes the caller's buffers.
        let r = unsafe { sendmsg(fd, &m.msg_hdr, flags) };
        if r < 0 {
            return if done > 0 { done } else { -1 };
        }
        m.msg_len = r as c_uint;
        done += 1;
    }
    done
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::read(fd, buf, n) };
    };
    // SAFETY: see out_buf.
    match unsafe { out_buf(buf, n) } {
        Ok(b) => ret_size(recv_common(&ep, fd, &mut [IoSliceMut::new(b)], 0).map(|r| r.len)),
        Err(e) => ret_size(Err(e)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::recv(fd, buf, n, flags) };
    };
    // SAFETY: see out_buf.
    match unsafe { out_buf(buf, n) } {
        Ok(b) => ret_size(recv_common(&ep, fd, &mut [IoSliceMut::new(b)], flags).map(|r| r.len)),
        Err(e) => ret_size(Err(e)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::recvfrom(fd, buf, n, flags, addr, len) };
    };
    // SAFETY: see out_buf.
    let r = unsafe { out_buf(buf, n) }
        .and_then(|b| recv_common(&ep, fd, &mut [IoSliceMut::new(b)], flags));
    ret_size(r.and_then(|r| {
        if let Some(from) = r.from {
            // SAFETY: see out_addr.
            unsafe { out_addr(&from, addr, len) }?;
        } else if !len.is_null() && !addr.is_null() {
            // A connected TCP socket reports no address: length 0, as the kernel does.
            // SAFETY: `len` is the caller's in/out length.
            unsafe { *len = 0 };
        }
        Ok(r.len)
    }))
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::readv(fd, iov, n) };
    };
    // SAFETY: see iov_out.
    match unsafe { iov_out(iov, n) } {
        Ok(mut v) => ret_size(recv_common(&ep, fd, &mut v, 0).map(|r| r.len)),
        Err(e) => ret_size(Err(e)),
    }
}

#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::recvmsg(fd, msg, flags) };
    };
    if msg.is_null() {
        return ret_size(Err(Errno::EFAULT));
    }
    // SAFETY: `msg` is the caller's header, writable; its iov describe its buffers.
    let m = unsafe { &mut *msg };
    // SAFETY: see iov_out.
    let r = unsafe { iov_out(m.msg_iov, m.msg_iovlen as c_int) }
        .and_then(|mut v| recv_common(&ep, fd, &mut v, flags));
    ret_size(r.map(|r| {
        m.msg_flags = if r.truncated { libc::MSG_TRUNC } else { 0 };
        m.msg_controllen = 0;
        match r.from {
            Some(from) if !m.msg_name.is_null() => {
                let room = m.msg_namelen as usize;
                let n = room.min(from.len);
                // SAFETY: msg_name has msg_namelen writable bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(from.bytes.as_ptr(), m.msg_name.cast::<u8>(), n)
                };
                m.msg_namelen = from.len as socklen_t;
            }
            _ => m.msg_namelen = 0,
        }
        r.len
    }))
}

#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    n: c_uint,
    flags: c_int,
    timeout: *mut libc::timespec,
) -> c_int {
    if ours(fd).is_none() {
        // SAFETY: same arguments.
        return unsafe { next::recvmmsg(fd, msgs, n, flags, timeout) };
    }
    if msgs.is_null() && n > 0 {
        return ret_int(Err(Errno::EFAULT));
    }
    let mut done: c_int = 0;
    for i in 0..n.min(1024) as usize {
        // After the first datagram, take only what is already there (MSG_WAITFORONE-like).
        let f = if done > 0 {
            flags | libc::MSG_DONTWAIT
        } else {
            flags
        };
        // SAFETY: `msgs` has `n` entries (the C contract).
        let m = unsafe { &mut *msgs.add(i) };
        // SAFETY: the entry's header describes the caller's buffers.
        let r = unsafe { recvmsg(fd, &mut m.msg_hdr, f & !libc::MSG_WAITFORONE) };
        if r < 0 {
            return if done > 0 { done } else { -1 };
        }
        m.msg_len = r as c_uint;
        done += 1;
    }
    done
}

#[no_mangle]
pub unsafe extern "C" fn sendfile(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    let Some(ep) = ours(out_fd) else {
        // SAFETY: same arguments.
        return unsafe { next::sendfile(out_fd, in_fd, offset, count) };
    };
    let mut buf = vec![0u8; count.min(256 * 1024)];
    let got = if offset.is_null() {
        run(|| super::kernel::read(in_fd, &mut buf))
    } else {
        // SAFETY: `offset` is the caller's file offset.
        let off = unsafe { *offset };
        run(|| super::kernel::pread(in_fd, &mut buf, off))
    };
    let n = match got {
        Ok(n) => n,
        Err(e) => return ret_size(Err(e)),
    };
    if n == 0 {
        return 0;
    }
    let sent = run(|| ops::send(&ep, out_fd, &[IoSlice::new(&buf[..n])], 0, None));
    match sent {
        Ok(s) => {
            if !offset.is_null() {
                // SAFETY: as above.
                unsafe { *offset += s as off_t };
            } else if s < n {
                // Give back what was read but not sent (the file position moved past it).
                // SAFETY: lseek on the caller's file; no pointers.
                unsafe { libc::lseek(in_fd, -((n - s) as off_t), libc::SEEK_CUR) };
            }
            s as ssize_t
        }
        Err(e) => {
            if offset.is_null() {
                // SAFETY: as above.
                unsafe { libc::lseek(in_fd, -(n as off_t), libc::SEEK_CUR) };
            }
            ret_size(Err(e))
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn sendfile64(
    out_fd: c_int,
    in_fd: c_int,
    offset: *mut off_t,
    count: size_t,
) -> ssize_t {
    if ours(out_fd).is_none() {
        // SAFETY: same arguments.
        return unsafe { next::sendfile64(out_fd, in_fd, offset, count) };
    }
    // SAFETY: off_t is 64-bit here; same contract.
    unsafe { sendfile(out_fd, in_fd, offset, count) }
}

// ---------------------------------------------------------------------------------------------
// Options, names, fd control.

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
    // SAFETY: `len` is the caller's in/out length; `val` has that many writable bytes.
    let room = unsafe { *len } as usize;
    // SAFETY: see out_buf.
    let r = unsafe { out_buf(val, room.min(1024)) }
        .and_then(|b| run(|| ops::getsockopt(&ep, fd, level, name, b)));
    ret_int(r.map(|n| {
        // SAFETY: as above.
        unsafe { *len = n as socklen_t };
        0
    }))
}

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
    ret_int(
        unsafe { in_buf(val, len as usize) }
            .and_then(|b| run(|| ops::setsockopt(&ep, fd, level, name, b)))
            .map(|_| 0),
    )
}

#[no_mangle]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::getsockname(fd, addr, len) };
    };
    if addr.is_null() || len.is_null() {
        return ret_int(Err(Errno::EFAULT));
    }
    // SAFETY: see out_addr.
    ret_int(
        run(|| ops::getsockname(&ep, fd))
            .and_then(|a| unsafe { out_addr(&a, addr, len) })
            .map(|_| 0),
    )
}

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let Some(ep) = ours(fd) else {
        // SAFETY: same arguments.
        return unsafe { next::getpeername(fd, addr, len) };
    };
    if addr.is_null() || len.is_null() {
        return ret_int(Err(Errno::EFAULT));
    }
    // SAFETY: see out_addr.
    ret_int(
        run(|| ops::getpeername(&ep, fd))
            .and_then(|a| unsafe { out_addr(&a, addr, len) })
            .map(|_| 0),
    )
}

/// fcntl on an accelerated fd: the kernel fd keeps every flag but O_NONBLOCK, which the
/// endpoint holds (the kernel socket stays non-blocking underneath).
fn fcntl_ours(
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
                ep.add_ref();
                fdtable::insert(nfd, ep.clone());
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
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    match ours(fd) {
        Some(ep) => fcntl_ours(&ep, fd, cmd, arg, next::fcntl),
        // SAFETY: same arguments.
        None => unsafe { next::fcntl(fd, cmd, arg) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    match ours(fd) {
        Some(ep) => fcntl_ours(&ep, fd, cmd, arg, next::fcntl64),
        // SAFETY: same arguments.
        None => unsafe { next::fcntl64(fd, cmd, arg) },
    }
}

/// Makes the kernel socket non-blocking without the endpoint noticing (ops use it).
pub fn set_kernel_flags(fd: c_int, flags: c_int) -> c_int {
    // SAFETY: F_SETFL takes an integer.
    unsafe { next::fcntl(fd, libc::F_SETFL, flags as c_ulong) }
}

const SIOCOUTQ: c_ulong = libc::TIOCOUTQ;

/// `ioctl(int fd, unsigned long req, ...)`: see fcntl for the variadic argument.
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
                run(|| ops::inq(&ep, fd))
            } else {
                run(|| ops::outq(&ep))
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

fn after_dup(old: c_int, newfd: c_int) {
    if let Some(ep) = fdtable::get(old) {
        ep.add_ref();
        fdtable::insert(newfd, ep);
    }
}

#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: no pointers.
    let n = unsafe { next::dup(fd) };
    if n >= 0 && !in_accel() && !crate::runtime::is_forked_child() && fdtable::is_ours(fd) {
        after_dup(fd, n);
    }
    n
}

/// dup2/dup3 onto an accelerated fd closes it first, as the kernel does.
fn before_dup_onto(old: c_int, newfd: c_int) {
    // The kernel leaves `newfd` alone when `old` is not open: so do we.
    // SAFETY: F_GETFD takes no argument.
    let old_open = unsafe { next::fcntl(old, libc::F_GETFD, 0) } >= 0;
    if old_open && old != newfd && fdtable::is_ours(newfd) {
        if let Some(ep) = fdtable::remove(newfd) {
            run(|| ops::close(ep, newfd));
        }
        run(|| ops::on_close(newfd));
    }
}

#[no_mangle]
pub unsafe extern "C" fn dup2(fd: c_int, newfd: c_int) -> c_int {
    if in_accel() || crate::runtime::is_forked_child() {
        // SAFETY: no pointers.
        return unsafe { next::dup2(fd, newfd) };
    }
    before_dup_onto(fd, newfd);
    // SAFETY: no pointers.
    let n = unsafe { next::dup2(fd, newfd) };
    if n >= 0 && fd != newfd && fdtable::is_ours(fd) {
        after_dup(fd, n);
    }
    n
}

#[no_mangle]
pub unsafe extern "C" fn dup3(fd: c_int, newfd: c_int, flags: c_int) -> c_int {
    if in_accel() || crate::runtime::is_forked_child() {
        // SAFETY: no pointers.
        return unsafe { next::dup3(fd, newfd, flags) };
    }
    before_dup_onto(fd, newfd);
    // SAFETY: no pointers.
    let n = unsafe { next::dup3(fd, newfd, flags) };
    if n >= 0 && fdtable::is_ours(fd) {
        after_dup(fd, n);
    }
    n
}

// ---------------------------------------------------------------------------------------------
// Waiting: poll, select, epoll.

fn any_ours(fds: &[libc::pollfd]) -> bool {
    !in_accel()
        && !crate::runtime::is_forked_child()
        && fds
            .iter()
            .any(|p| fdtable::is_ours(p.fd) && fdtable::get(p.fd).is_some_and(|e| !e.is_fresh()))
}

fn timespec_ms(t: *const libc::timespec) -> Res<c_int> {
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
fn with_mask<R>(mask: *const libc::sigset_t, f: impl FnOnce() -> R) -> R {
    if mask.is_null() {
        return f();
    }
    // SAFETY: `mask` is the caller's sigset; `old` is a local sigset.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, &mut old) };
    let r = f();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

unsafe fn poll_slice<'a>(fds: *mut libc::pollfd, n: libc::nfds_t) -> Res<&'a mut [libc::pollfd]> {
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
    ret_int(run(|| ops::poll(slice, timeout)).map(|r| r as c_int))
}

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
    let ms = match timespec_ms(t) {
        Ok(ms) => ms,
        Err(e) => return ret_int(Err(e)),
    };
    ret_int(with_mask(mask, || run(|| ops::poll(slice, ms))).map(|r| r as c_int))
}

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

/// select via poll: the fd_sets become pollfds and back.
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
    let res = with_mask(mask, || run(|| ops::poll(&mut pfds, ms)));
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

#[no_mangle]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut libc::fd_set,
    w: *mut libc::fd_set,
    e: *mut libc::fd_set,
    t: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    let ms = match timespec_ms(t) {
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

#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    // SAFETY: no pointers.
    unsafe { next::epoll_create(size) }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    // SAFETY: no pointers.
    unsafe { next::epoll_create1(flags) }
}

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
    ret_int(run(|| ops::epoll_ctl(epfd, op, fd, ep, e)).map(|_| 0))
}

unsafe fn events_slice<'a>(
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

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const libc::sigset_t,
) -> c_int {
    if !in_accel() && !crate::runtime::is_forked_child() {
        // SAFETY: see events_slice.
        if let Ok(slice) = unsafe { events_slice(evs, max) } {
            if let Some(r) = with_mask(mask, || run(|| ops::epoll_wait(epfd, slice, timeout))) {
                return ret_int(r.map(|n| n as c_int));
            }
        }
    }
    // SAFETY: same arguments.
    unsafe { next::epoll_pwait(epfd, evs, max, timeout, mask) }
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    evs: *mut libc::epoll_event,
    max: c_int,
    t: *const libc::timespec,
    mask: *const libc::sigset_t,
) -> c_int {
    if !in_accel() && !crate::runtime::is_forked_child() {
        let ms = match timespec_ms(t) {
            Ok(ms) => ms,
            Err(e) => return ret_int(Err(e)),
        };
        // SAFETY: see events_slice.
        if let Ok(slice) = unsafe { events_slice(evs, max) } {
            if let Some(r) = with_mask(mask, || run(|| ops::epoll_wait(epfd, slice, ms))) {
                return ret_int(r.map(|n| n as c_int));
            }
        }
    }
    // SAFETY: same arguments.
    unsafe { next::epoll_pwait2(epfd, evs, max, t, mask) }
}

// ---------------------------------------------------------------------------------------------
// _FORTIFY_SOURCE variants: glibc-compiled programs call these instead of read/recv/recvfrom.

#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen || ours(fd).is_none() {
        // SAFETY: glibc checks and reports the overflow (or reads from a kernel fd).
        return unsafe { next::__read_chk(fd, buf, n, buflen) };
    }
    // SAFETY: checked like glibc; same contract as read.
    unsafe { read(fd, buf, n) }
}

#[no_mangle]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
) -> ssize_t {
    if n > buflen || ours(fd).is_none() {
        // SAFETY: as __read_chk.
        return unsafe { next::__recv_chk(fd, buf, n, buflen, flags) };
    }
    // SAFETY: checked like glibc; same contract as recv.
    unsafe { recv(fd, buf, n, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn __recvfrom_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
) -> ssize_t {
    if n > buflen || ours(fd).is_none() {
        // SAFETY: as __read_chk.
        return unsafe { next::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len) };
    }
    // SAFETY: checked like glibc; same contract as recvfrom.
    unsafe { recvfrom(fd, buf, n, flags, addr, len) }
}

// ---------------------------------------------------------------------------------------------
// Signals: a handler that runs while a call waits in accel must interrupt it as it would
// interrupt the kernel's wait (EINTR unless the handler was installed with SA_RESTART). accel
// spins in user space, where no signal interrupts anything, so it installs its own trampoline
// in front of the program's handlers and counts the interrupting ones.

const NSIG: usize = 65;

/// The program's handler per signal (address; 0 = none of ours) and its sigaction flags.
static HANDLERS: [std::sync::atomic::AtomicUsize; NSIG] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; NSIG];
static FLAGS: [std::sync::atomic::AtomicI32; NSIG] =
    [const { std::sync::atomic::AtomicI32::new(0) }; NSIG];

extern "C" fn trampoline(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let i = sig as usize;
    if i >= NSIG {
        return;
    }
    let flags = FLAGS[i].load(std::sync::atomic::Ordering::Relaxed);
    crate::runtime::note_signal();
    if flags & libc::SA_RESTART == 0 {
        crate::runtime::note_interrupt();
    }
    let h = HANDLERS[i].load(std::sync::atomic::Ordering::Relaxed);
    if h == 0 || h == libc::SIG_IGN || h == libc::SIG_DFL {
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed this address as an SA_SIGINFO handler.
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the program installed this address as a plain handler.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let i = sig as usize;
    if in_accel() || !(1..NSIG).contains(&i) {
        // SAFETY: same arguments.
        return unsafe { next::sigaction(sig, act, old) };
    }
    let prev_h = HANDLERS[i].load(std::sync::atomic::Ordering::Relaxed);
    let prev_f = FLAGS[i].load(std::sync::atomic::Ordering::Relaxed);
    let r = if act.is_null() {
        // SAFETY: a query; same arguments.
        unsafe { next::sigaction(sig, act, old) }
    } else {
        // SAFETY: `act` is the caller's sigaction.
        let mut a = unsafe { *act };
        let h = a.sa_sigaction;
        if h == libc::SIG_IGN || h == libc::SIG_DFL {
            HANDLERS[i].store(0, std::sync::atomic::Ordering::Relaxed);
            // SAFETY: same arguments.
            unsafe { next::sigaction(sig, act, old) }
        } else {
            HANDLERS[i].store(h, std::sync::atomic::Ordering::Relaxed);
            FLAGS[i].store(a.sa_flags, std::sync::atomic::Ordering::Relaxed);
            a.sa_sigaction = trampoline as *const () as usize;
            a.sa_flags |= libc::SA_SIGINFO;
            // SAFETY: a valid sigaction built from the caller's, with our trampoline.
            unsafe { next::sigaction(sig, &a, old) }
        }
    };
    if r == 0 && !old.is_null() && prev_h != 0 {
        // SAFETY: `old` is the caller's out-parameter, just filled by the kernel.
        let o = unsafe { &mut *old };
        if o.sa_sigaction == trampoline as *const () as usize {
            // Report the program's own handler, not our trampoline.
            o.sa_sigaction = prev_h;
            o.sa_flags = prev_f;
        }
    }
    r
}

/// glibc's signal(): BSD semantics (SA_RESTART), through our sigaction.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: zeroed sigaction is a valid starting point; fields set below.
    let mut a: libc::sigaction = unsafe { std::mem::zeroed() };
    a.sa_sigaction = handler;
    a.sa_flags = libc::SA_RESTART;
    // SAFETY: `a.sa_mask` is ours to initialise.
    unsafe { libc::sigemptyset(&mut a.sa_mask) };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to locals.
    if unsafe { sigaction(sig, &a, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}

/// close_range(2): closes the program's fds in the range, passing over accel's own.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if in_accel() {
        // SAFETY: no pointers.
        return unsafe { next::close_range(first, last, flags) };
    }
    let internal: Vec<c_uint> = (0..fdtable::MAX_FD as c_uint)
        .filter(|&fd| fd >= first && fd <= last && fdtable::is_internal(fd as c_int))
        .collect();
    // Accelerated fds in the range release their stack sockets first.
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        for (fd, _) in fdtable::all() {
            if fd >= 0 && (fd as c_uint) >= first && (fd as c_uint) <= last {
                if let Some(ep) = fdtable::remove(fd) {
                    if !crate::runtime::is_forked_child() {
                        run(|| ops::close(ep, fd));
                    }
                }
            }
        }
    }
    let mut start = first;
    for fd in internal {
        if fd > start {
            // SAFETY: no pointers.
            let r = unsafe { next::close_range(start, fd - 1, flags) };
            if r != 0 {
                return r;
            }
        }
        start = fd.saturating_add(1);
        if start == 0 {
            return 0;
        }
    }
    if start <= last {
        // SAFETY: no pointers.
        return unsafe { next::close_range(start, last, flags) };
    }
    0
}
