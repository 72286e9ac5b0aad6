//! Sending and receiving: send/sendto/sendmsg/write and recv/recvfrom/recvmsg/read on an
//! accelerated socket (the abi layer turns every form into these two).

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddrV4;
use std::os::fd::RawFd;

use stack::Error as StackError;

use super::{setup, to_kernel, Endpoint, On, Proto, State};
use crate::addr::{parse_v4, SockAddrBuf};
use crate::errno::{Errno, Res};
use crate::runtime::wait::{wait, Wait};
use crate::runtime::Runtime;
use crate::sys::kernel;

/// send/sendto/sendmsg/write on an accelerated socket. `dst` is sendto's address, if any.
pub fn send(
    rt: &Runtime,
    ep: &Endpoint,
    fd: RawFd,
    bufs: &[IoSlice<'_>],
    flags: i32,
    dst: Option<&[u8]>,
) -> Res<usize> {
    let nonblock = ep.nonblocking() || flags & libc::MSG_DONTWAIT != 0;
    let snapshot = match &*ep.state() {
        State::Conn { on, wr_shut, .. } => Some((on.clone(), *wr_shut, None)),
        State::Udp { on, peer, .. } => Some((on.clone(), false, Some(*peer))),
        State::Listener { .. } | State::Bound { .. } => {
            return Err(epipe(flags, Errno(libc::EPIPE)))
        }
        State::Fresh => None,
    };
    let Some((on, wr_shut, udp_peer)) = snapshot else {
        // A fresh UDP socket that sends: it binds now, through the interface the
        // destination is reached by (or stays on the kernel).
        return fresh_send(rt, ep, fd, bufs, flags, dst);
    };
    match udp_peer {
        None => {
            if wr_shut {
                return Err(epipe(flags, Errno::EPIPE));
            }
            tcp_send(rt, ep, &on, bufs, flags, nonblock)
        }
        Some(peer) => {
            let to = match dst {
                Some(d) if !d.is_empty() => parse_v4(d)?,
                _ => peer.ok_or(Errno::EDESTADDRREQ)?,
            };
            udp_send(rt, ep, fd, &on, bufs, to, nonblock)
        }
    }
}

/// EPIPE raises SIGPIPE unless MSG_NOSIGNAL, as the kernel does.
fn epipe(flags: i32, e: Errno) -> Errno {
    if e == Errno::EPIPE && flags & libc::MSG_NOSIGNAL == 0 {
        kernel::raise_sigpipe();
    }
    e
}

fn fresh_send(
    rt: &Runtime,
    ep: &Endpoint,
    fd: RawFd,
    bufs: &[IoSlice<'_>],
    flags: i32,
    dst: Option<&[u8]>,
) -> Res<usize> {
    if ep.proto == Proto::Udp {
        if let Some(d) = dst.filter(|d| !d.is_empty()) {
            let to = parse_v4(d)?;
            if let Some(nic) = rt.nic_for_remote(*to.ip()).cloned() {
                let sa = SockAddrBuf::v4(SocketAddrV4::new(nic.addr, 0));
                kernel::bind(fd, sa.as_bytes())?;
                let local = parse_v4(kernel::getsockname(fd)?.as_bytes())?;
                if setup::udp_open(ep, fd, &nic, local, None)? {
                    return send(rt, ep, fd, bufs, flags, dst);
                }
                // No room on the stack: the kernel socket sends it (below), and the rest.
            }
        }
    }
    // Everything else on a fresh socket is the kernel's (unconnected TCP: EPIPE, ...).
    to_kernel(fd);
    let data: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
    kernel::sendto(fd, &data, flags, dst)
}

fn tcp_send(
    rt: &Runtime,
    ep: &Endpoint,
    on: &On,
    bufs: &[IoSlice<'_>],
    flags: i32,
    nonblock: bool,
) -> Res<usize> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total == 0 {
        return Ok(0);
    }
    let mut sent = 0usize;
    let nic = on.nic.clone();
    // Blocking sockets queue everything (like the kernel); non-blocking ones what fits.
    let how = Wait::socket(std::slice::from_ref(&nic), nonblock, ep.sndtimeo());
    let r = wait(rt, how, |round| {
        // No poll before queueing (the poll after sends it, and takes in ACKs that make
        // room for the next attempt; a first attempt's may hold the segments back for a
        // batched kick, see `Nic::poll_in_round`).
        let mut g = nic.lock();
        let mut skip = sent;
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            match g.stack_mut().tcp_send(on.id, &b[skip..]) {
                Ok(n) => {
                    sent += n;
                    if n < b.len() - skip {
                        break;
                    }
                    skip = 0;
                }
                Err(StackError::WouldBlock) => break,
                Err(e) => return Some(if sent > 0 { Ok(sent) } else { Err(e.into()) }),
            }
        }
        if sent == total || (sent > 0 && nonblock) {
            nic.poll_in_round(&mut g, round.n);
            Some(Ok(sent))
        } else {
            // The call waits (or fails with EAGAIN): what was queued leaves now (it makes room
            // for the next attempt).
            nic.poll(&mut g);
            None
        }
    });
    match r {
        Ok(n) => Ok(n),
        // What was queued before a timeout or a signal is reported, never sent twice.
        Err(e) if (e == Errno::EAGAIN || e == Errno::EINTR) && sent > 0 => Ok(sent),
        Err(e) => Err(epipe(flags, e)),
    }
}

fn udp_send(
    rt: &Runtime,
    ep: &Endpoint,
    fd: RawFd,
    on: &On,
    bufs: &[IoSlice<'_>],
    to: SocketAddrV4,
    nonblock: bool,
) -> Res<usize> {
    let joined: Vec<u8>;
    let data: &[u8] = match bufs {
        [one] => one,
        _ => {
            joined = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            &joined
        }
    };
    if rt.nic_for_remote(*to.ip()).is_none() {
        // Not through this interface: the kernel socket (bound to the same port) sends it.
        return kernel::sendto(fd, data, 0, Some(SockAddrBuf::v4(to).as_bytes()));
    }
    let nic = on.nic.clone();
    let how = Wait::socket(std::slice::from_ref(&nic), nonblock, ep.sndtimeo());
    wait(rt, how, |round| {
        let mut g = nic.lock();
        match g.stack_mut().udp_send_to(on.id, data, to) {
            Ok(n) => {
                nic.poll_in_round(&mut g, round.n);
                Some(Ok(n))
            }
            Err(StackError::WouldBlock) | Err(StackError::NoBufferSpace) => {
                // Full: sending what is queued makes room for the next attempt.
                nic.poll(&mut g);
                None
            }
            Err(e) => Some(Err(e.into())),
        }
    })
}

/// What a receive returned.
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub from: Option<SockAddrBuf>,
    pub truncated: bool,
}

impl Received {
    fn bytes(len: usize) -> Received {
        Received {
            len,
            from: None,
            truncated: false,
        }
    }
}

/// recv/recvfrom/recvmsg/read on an accelerated socket.
pub fn recv(
    rt: &Runtime,
    ep: &Endpoint,
    fd: RawFd,
    bufs: &mut [IoSliceMut<'_>],
    flags: i32,
) -> Res<Received> {
    let nonblock = ep.nonblocking() || flags & libc::MSG_DONTWAIT != 0;
    if flags & libc::MSG_PEEK != 0 || flags & libc::MSG_OOB != 0 {
        return Err(Errno::EOPNOTSUPP);
    }
    let mut udp_peer = None;
    let snapshot = match &*ep.state() {
        State::Conn { on, rd_shut, .. } => (Some(on.clone()), *rd_shut, false),
        State::Udp { on, peer, .. } => {
            udp_peer = *peer;
            (Some(on.clone()), false, true)
        }
        State::Listener { .. } | State::Bound { .. } => return Err(Errno::ENOTCONN),
        State::Fresh => (None, false, false),
    };
    match snapshot {
        (None, _, _) => {
            // Fresh: the kernel socket answers (ENOTCONN for TCP, a kernel datagram for UDP).
            to_kernel(fd);
            let mut tmp = vec![0u8; bufs.iter().map(|b| b.len()).sum()];
            let (n, from) = kernel::recvfrom(fd, &mut tmp, flags)?;
            scatter(&tmp[..n], bufs);
            Ok(Received {
                len: n,
                from: Some(from),
                truncated: false,
            })
        }
        // After SHUT_RD: what is queued still reads, then EOF (no waiting).
        (Some(on), true, false) => match tcp_recv(rt, ep, &on, bufs, flags, true) {
            Err(e) if e == Errno::EAGAIN => Ok(Received::bytes(0)),
            r => r,
        },
        (Some(on), _, false) => tcp_recv(rt, ep, &on, bufs, flags, nonblock),
        (Some(on), _, true) => udp_recv(rt, ep, fd, &on, udp_peer, bufs, flags, nonblock),
    }
}

fn scatter(data: &[u8], bufs: &mut [IoSliceMut<'_>]) {
    let mut off = 0;
    for b in bufs.iter_mut() {
        if off >= data.len() {
            break;
        }
        let n = b.len().min(data.len() - off);
        b[..n].copy_from_slice(&data[off..off + n]);
        off += n;
    }
}

fn tcp_recv(
    rt: &Runtime,
    ep: &Endpoint,
    on: &On,
    bufs: &mut [IoSliceMut<'_>],
    flags: i32,
    nonblock: bool,
) -> Res<Received> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total == 0 {
        return Ok(Received::bytes(0));
    }
    let waitall = flags & libc::MSG_WAITALL != 0;
    let nic = on.nic.clone();
    let mut got = 0usize;
    let how = Wait::socket(std::slice::from_ref(&nic), nonblock, ep.rcvtimeo());
    let r = wait(rt, how, |round| {
        let mut g = nic.lock();
        nic.poll_in_round(&mut g, round.n);
        let window_low = g.stack().tcp_recv_window_low(on.id);
        let before = got;
        let mut skip = got;
        let mut eof = false;
        for b in bufs.iter_mut() {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            let want = b.len() - skip;
            match g.stack_mut().tcp_recv(on.id, &mut b[skip..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    got += n;
                    if n < want {
                        break;
                    }
                    skip = 0;
                }
                Err(StackError::WouldBlock) => break,
                Err(e) => return Some(if got > 0 { Ok(got) } else { Err(e.into()) }),
            }
        }
        // Reading a buffer that was half full or more opened the window: tell the peer now.
        // (After a smaller read the next ACK carries the window; polling here on every
        // attempt would only double the cost of a spinning receive.)
        if got > before && window_low {
            nic.poll_in_round(&mut g, round.n);
        }
        if got == total || eof || (got > 0 && !waitall) {
            Some(Ok(got))
        } else {
            // The call waits (its later attempts poll with a push) or fails with EAGAIN.
            if round.n == 1 {
                nic.missed(&mut g);
            }
            None
        }
    });
    match r {
        Ok(n) => Ok(Received::bytes(n)),
        // What was read before a timeout or a signal is returned, never lost.
        Err(e) if (e == Errno::EAGAIN || e == Errno::EINTR) && got > 0 => Ok(Received::bytes(got)),
        Err(e) => Err(e),
    }
}

/// One datagram that came through the kernel socket, scattered into `bufs`; returns its full
/// length and sender. EAGAIN when there is none (looked at without allocating).
fn kernel_udp_recv(fd: RawFd, bufs: &mut [IoSliceMut<'_>]) -> Res<(usize, SockAddrBuf)> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC;
    let (len, _) = kernel::recvfrom(fd, &mut [], flags | libc::MSG_PEEK)?;
    let mut tmp = vec![0u8; len];
    let (n, from) = kernel::recvfrom(fd, &mut tmp, flags)?;
    scatter(&tmp[..n.min(tmp.len())], bufs);
    Ok((n, from))
}

#[allow(clippy::too_many_arguments)]
fn udp_recv(
    rt: &Runtime,
    ep: &Endpoint,
    fd: RawFd,
    on: &On,
    peer: Option<SocketAddrV4>,
    bufs: &mut [IoSliceMut<'_>],
    flags: i32,
    nonblock: bool,
) -> Res<Received> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let nic = on.nic.clone();
    let from_peer = |from: SocketAddrV4| match peer {
        // A connected UDP socket receives only from its peer, as in the kernel.
        Some(p) => p == from,
        None => true,
    };
    let how = Wait::socket(std::slice::from_ref(&nic), nonblock, ep.rcvtimeo()).or_fd(fd);
    let (n, from) = wait(rt, how, |round| loop {
        let mut g = nic.lock();
        nic.poll_in_round(&mut g, round.n);
        // Copied straight from the stack's buffer into the caller's (n = the datagram's full
        // length, so a truncation is seen and reported).
        match g.stack_mut().udp_recv_with(on.id, |payload, from| {
            if from_peer(from) {
                scatter(payload, bufs);
            }
            (payload.len(), from)
        }) {
            Ok((n, from)) if from_peer(from) => return Some(Ok((n, SockAddrBuf::v4(from)))),
            Ok(_) => continue,
            // The call waits (its later attempts poll with a push) or fails with EAGAIN.
            Err(StackError::WouldBlock) if round.n == 1 => nic.missed(&mut g),
            Err(StackError::WouldBlock) => {}
            Err(e) => return Some(Err(e.into())),
        }
        drop(g);
        // Datagrams that came through the kernel (loopback, ...) wait on the kernel socket
        // (see `Round::thorough` for when an attempt looks; a sleeping wait is woken by it).
        if !round.thorough {
            return None;
        }
        match kernel_udp_recv(fd, bufs) {
            Ok((n, from)) if parse_v4(from.as_bytes()).is_ok_and(from_peer) => {
                return Some(Ok((n, from)))
            }
            Ok(_) => continue,
            Err(e) if e == Errno::EAGAIN => return None,
            Err(e) => return Some(Err(e)),
        }
    })?;
    let copied = n.min(total);
    Ok(Received {
        // recv(MSG_TRUNC) returns the datagram's real length, as the kernel does.
        len: if flags & libc::MSG_TRUNC != 0 {
            n
        } else {
            copied
        },
        from: Some(from),
        truncated: n > total,
    })
}

/// sendfile(2) to an accelerated socket: up to 256 KiB of `in_fd` (from `offset`, or from its
/// file position) is read and sent. Returns the bytes sent; a file position moves only past
/// what was sent, as the kernel leaves it.
pub fn sendfile(
    rt: &Runtime,
    ep: &Endpoint,
    out_fd: RawFd,
    in_fd: RawFd,
    offset: Option<i64>,
    count: usize,
) -> Res<usize> {
    let mut buf = vec![0u8; count.min(256 * 1024)];
    let n = match offset {
        Some(off) => kernel::pread(in_fd, &mut buf, off)?,
        None => kernel::read(in_fd, &mut buf)?,
    };
    if n == 0 {
        return Ok(0);
    }
    let sent = send(rt, ep, out_fd, &[IoSlice::new(&buf[..n])], 0, None);
    if offset.is_none() {
        // Give back what was read but not sent (the file position moved past it).
        let unsent = n - *sent.as_ref().unwrap_or(&0);
        if unsent > 0 {
            let _ = kernel::lseek(in_fd, -(unsent as i64), libc::SEEK_CUR);
        }
    }
    sent
}
