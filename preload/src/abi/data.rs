//! Interposers of the data calls: every form of send and receive becomes one call of
//! `socket::data::send` or `socket::data::recv`.

use std::io::{IoSlice, IoSliceMut};

use libc::{
    c_int, c_uint, c_void, iovec, mmsghdr, msghdr, off_t, size_t, sockaddr, socklen_t, ssize_t,
};

use super::args::{in_addr, in_buf, iov_in, iov_out, out_addr, out_buf};
use super::{ours, ret_int, ret_size, run};
use crate::errno::{Errno, Res};
use crate::socket::{self, data, Endpoint};
use crate::sys::next;

fn send_common(
    ep: &Endpoint,
    fd: c_int,
    bufs: &[IoSlice<'_>],
    flags: c_int,
    dst: Option<&[u8]>,
) -> ssize_t {
    ret_size(run(|| data::send(socket::rt()?, ep, fd, bufs, flags, dst)))
}

fn recv_common(
    ep: &Endpoint,
    fd: c_int,
    bufs: &mut [IoSliceMut<'_>],
    flags: c_int,
) -> Res<data::Received> {
    run(|| data::recv(socket::rt()?, ep, fd, bufs, flags))
}

/// write(2).
///
/// # Safety
///
/// As write(2): `buf` has `n` readable bytes.
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

/// send(2).
///
/// # Safety
///
/// As send(2): `buf` has `n` readable bytes.
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

/// sendto(2).
///
/// # Safety
///
/// As sendto(2): `buf` has `n` readable bytes, a non-NULL `addr` `len`.
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

/// writev(2).
///
/// # Safety
///
/// As writev(2): `iov` has `n` entries describing readable buffers.
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

/// sendmsg(2).
///
/// # Safety
///
/// As sendmsg(2): `msg` is a valid header whose iov and name describe readable buffers.
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

/// sendmmsg(2): each message in turn, until one fails.
///
/// # Safety
///
/// As sendmmsg(2): `msgs` has `n` valid entries.
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

/// read(2).
///
/// # Safety
///
/// As read(2): `buf` has `n` writable bytes.
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

/// recv(2).
///
/// # Safety
///
/// As recv(2): `buf` has `n` writable bytes.
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

/// recvfrom(2).
///
/// # Safety
///
/// As recvfrom(2): `buf` has `n` writable bytes, a non-NULL `addr` `*len`.
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

/// readv(2).
///
/// # Safety
///
/// As readv(2): `iov` has `n` entries describing writable, non-overlapping buffers.
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

/// recvmsg(2).
///
/// # Safety
///
/// As recvmsg(2): `msg` is a valid, writable header whose iov and name describe writable
/// buffers.
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

/// recvmmsg(2): the first message as recvmsg would wait for it, then only what is there.
///
/// # Safety
///
/// As recvmmsg(2): `msgs` has `n` valid entries.
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

/// sendfile(2) to an accelerated socket: read from `in_fd`, then sent.
///
/// # Safety
///
/// As sendfile(2): a non-NULL `offset` points to the caller's offset.
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
    // SAFETY: a non-NULL `offset` is the caller's file offset.
    let off = (!offset.is_null()).then(|| unsafe { *offset });
    let r = run(|| data::sendfile(socket::rt()?, &ep, out_fd, in_fd, off, count));
    if let (Ok(sent), Some(off)) = (&r, off) {
        // SAFETY: as above.
        unsafe { *offset = off + *sent as off_t };
    }
    ret_size(r)
}

/// sendfile64: sendfile with a 64-bit offset (the same on x86-64).
///
/// # Safety
///
/// As sendfile(2).
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

/// glibc's _FORTIFY_SOURCE read.
///
/// # Safety
///
/// As read(2), with `buflen` the size of `buf`.
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

/// glibc's _FORTIFY_SOURCE recv.
///
/// # Safety
///
/// As recv(2), with `buflen` the size of `buf`.
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

/// glibc's _FORTIFY_SOURCE recvfrom.
///
/// # Safety
///
/// As recvfrom(2), with `buflen` the size of `buf`.
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
