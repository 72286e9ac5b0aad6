//! Socket options, names and queue sizes. The kernel socket stores every option (and
//! validates it with the kernel's errno); the endpoint honours those that mean something to
//! the stack.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use stack::SocketId;

use super::{lock, Endpoint, State};
use crate::addr::SockAddrBuf;
use crate::errno::{Errno, Res};
use crate::runtime::NicInner;
use crate::sys::kernel;

pub fn getsockname(ep: &Endpoint, fd: RawFd) -> Res<SockAddrBuf> {
    match &*ep.state() {
        State::Conn { local, .. } | State::Udp { local, .. } | State::Listener { local, .. } => {
            Ok(SockAddrBuf::v4(*local))
        }
        _ => kernel::getsockname(fd),
    }
}

pub fn getpeername(ep: &Endpoint, fd: RawFd) -> Res<SockAddrBuf> {
    match &*ep.state() {
        State::Conn { remote, .. } => Ok(SockAddrBuf::v4(*remote)),
        State::Udp { peer: Some(p), .. } => Ok(SockAddrBuf::v4(*p)),
        State::Fresh => kernel::getpeername(fd),
        _ => Err(Errno::ENOTCONN),
    }
}

fn int_bytes(out: &mut [u8], v: i32) -> usize {
    let b = v.to_ne_bytes();
    let n = out.len().min(4);
    out[..n].copy_from_slice(&b[..n]);
    n
}

/// getsockopt: what the stack knows, else the kernel socket's answer (it stores every option).
pub fn getsockopt(ep: &Endpoint, fd: RawFd, level: i32, name: i32, out: &mut [u8]) -> Res<usize> {
    if ep.is_fresh() {
        return kernel::getsockopt(fd, level, name, out);
    }
    if level == libc::SOL_SOCKET {
        match name {
            libc::SO_ERROR => {
                let err = match &*ep.state() {
                    State::Conn { on, .. } => {
                        let mut g = on.nic.lock();
                        on.nic.poll(&mut g);
                        match g.stack_mut().take_error(on.id) {
                            Ok(Some(e)) => Errno::from(e).0,
                            _ => 0,
                        }
                    }
                    _ => 0,
                };
                return Ok(int_bytes(out, err));
            }
            libc::SO_ACCEPTCONN => {
                let v = matches!(*ep.state(), State::Listener { .. }) as i32;
                return Ok(int_bytes(out, v));
            }
            _ => {}
        }
    }
    kernel::getsockopt(fd, level, name, out)
}

/// The stack-relevant socket options of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOpts {
    /// TCP_NODELAY as the program set it (`None`: never set; accel then runs without Nagle).
    nodelay: Option<bool>,
    keepalive: bool,
    /// TCP_KEEPIDLE (the kernel's default is two hours).
    keepidle: Duration,
    ttl: Option<u8>,
}

impl Default for TcpOpts {
    fn default() -> Self {
        TcpOpts {
            nodelay: None,
            keepalive: false,
            keepidle: Duration::from_secs(7200),
            ttl: None,
        }
    }
}

impl TcpOpts {
    fn apply(&self, g: &mut NicInner, id: SocketId) {
        use stack::TcpOption;
        let stack = g.stack_mut();
        // Nagle stays off unless the program turned TCP_NODELAY off explicitly (accel is a
        // latency shim; the kernel's default would be on).
        let _ = stack.tcp_set_option(id, TcpOption::NoDelay(self.nodelay.unwrap_or(true)));
        let _ = stack.tcp_set_option(
            id,
            TcpOption::KeepAlive(self.keepalive.then_some(self.keepidle)),
        );
        let _ = stack.tcp_set_option(id, TcpOption::HopLimit(self.ttl));
    }
}

fn opt_int(val: &[u8]) -> Option<i32> {
    val.get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Applies the endpoint's options to its connection, if it has one now.
pub(super) fn apply(ep: &Endpoint) {
    let opts = *lock(&ep.tcp_opts);
    if let State::Conn { on, .. } = &*ep.state() {
        opts.apply(&mut on.nic.lock(), on.id);
    }
}

/// setsockopt: stored on the kernel socket (which validates it with the kernel's errno) and
/// honoured by the endpoint where it means something to the stack.
pub fn setsockopt(ep: &Endpoint, fd: RawFd, level: i32, name: i32, val: &[u8]) -> Res<()> {
    kernel::setsockopt(fd, level, name, val)?;
    {
        let mut o = lock(&ep.tcp_opts);
        let before = *o;
        match (level, name, opt_int(val)) {
            (libc::IPPROTO_TCP, libc::TCP_NODELAY, Some(v)) => o.nodelay = Some(v != 0),
            (libc::SOL_SOCKET, libc::SO_KEEPALIVE, Some(v)) => o.keepalive = v != 0,
            (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, Some(v)) if v > 0 => {
                o.keepidle = Duration::from_secs(v as u64)
            }
            (libc::IPPROTO_IP, libc::IP_TTL, Some(v)) => {
                o.ttl = (1..=255).contains(&v).then_some(v as u8)
            }
            _ => {}
        }
        if before != *o {
            drop(o);
            apply(ep);
        }
    }
    if level == libc::SOL_SOCKET {
        match name {
            libc::SO_RCVTIMEO | libc::SO_SNDTIMEO if val.len() >= 16 => {
                let secs = i64::from_ne_bytes(val[..8].try_into().unwrap_or([0; 8]));
                let usecs = i64::from_ne_bytes(val[8..16].try_into().unwrap_or([0; 8]));
                let d = Duration::from_secs(secs.max(0) as u64)
                    + Duration::from_micros(usecs.max(0) as u64);
                let slot = if name == libc::SO_RCVTIMEO {
                    &ep.rcvtimeo
                } else {
                    &ep.sndtimeo
                };
                *lock(slot) = (!d.is_zero()).then_some(d);
            }
            libc::SO_LINGER if val.len() >= 8 => {
                let onoff = i32::from_ne_bytes(val[..4].try_into().unwrap_or([0; 4]));
                let secs = i32::from_ne_bytes(val[4..8].try_into().unwrap_or([0; 4]));
                ep.linger_abort
                    .store(onoff != 0 && secs == 0, Ordering::Relaxed);
            }
            _ => {}
        }
    }
    Ok(())
}

/// FIONREAD / SIOCINQ.
pub fn inq(ep: &Endpoint) -> Res<i32> {
    match &*ep.state() {
        State::Conn { on, .. } => {
            let mut g = on.nic.lock();
            on.nic.poll(&mut g);
            Ok(g.stack().tcp_recv_queue(on.id).unwrap_or(0) as i32)
        }
        State::Listener { .. } => Err(Errno::EINVAL),
        _ => Ok(0),
    }
}

/// SIOCOUTQ.
pub fn outq(ep: &Endpoint) -> Res<i32> {
    match &*ep.state() {
        State::Conn { on, .. } => {
            let mut g = on.nic.lock();
            on.nic.poll(&mut g);
            Ok(g.stack().tcp_send_queue(on.id).unwrap_or(0) as i32)
        }
        State::Listener { .. } => Err(Errno::EINVAL),
        _ => Ok(0),
    }
}
