//! Creating, binding, listening, accepting and connecting.

use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use stack::SocketId;

use super::{
    flow_key, kernel_nonblocking, lock, no_room, open_error, options, to_kernel, Endpoint, On,
    Proto, State, SOCKETS,
};
use crate::addr::{parse_v4, SockAddrBuf};
use crate::errno::{Errno, Res};
use crate::runtime::wait::{wait, Wait};
use crate::runtime::{Nic, Runtime};
use crate::sys::kernel;

/// After the kernel created `fd`: track AF_INET TCP/UDP sockets when accel runs.
pub fn on_socket(rt: Option<&Runtime>, fd: RawFd, domain: i32, ty: i32, protocol: i32) {
    if domain != libc::AF_INET || rt.is_none() {
        return;
    }
    let proto = match (ty & 0xf, protocol) {
        (libc::SOCK_STREAM, 0) | (libc::SOCK_STREAM, libc::IPPROTO_TCP) => Proto::Tcp,
        (libc::SOCK_DGRAM, 0) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Proto::Udp,
        _ => return,
    };
    SOCKETS.insert(
        fd,
        Arc::new(Endpoint::new(proto, ty & libc::SOCK_NONBLOCK != 0)),
    );
}

pub fn bind(rt: &Runtime, ep: &Endpoint, fd: RawFd, addr: &[u8]) -> Res<()> {
    if !ep.is_fresh() {
        return Err(Errno::EINVAL); // already bound
    }
    // The kernel socket holds the port and answers every misuse as the kernel does.
    kernel::bind(fd, addr)?;
    let local = parse_v4(kernel::getsockname(fd)?.as_bytes())?;
    let nics = rt.nics_for_local(*local.ip());
    if nics.is_empty() {
        to_kernel(fd);
        return Ok(());
    }
    match ep.proto {
        Proto::Tcp => {
            *ep.state() = State::Bound { local };
            ep.restated();
        }
        Proto::Udp => {
            udp_open(ep, fd, &nics[0], local, None)?;
        }
    }
    Ok(())
}

/// Serves a UDP socket bound to `local` (maybe the wildcard) on `nic`. Returns false when the
/// stack had no room for it: the socket is then the kernel's for good (see `no_room`).
pub(super) fn udp_open(
    ep: &Endpoint,
    fd: RawFd,
    nic: &Arc<Nic>,
    local: SocketAddrV4,
    peer: Option<SocketAddrV4>,
) -> Res<bool> {
    let ip = if local.ip().is_unspecified() {
        nic.addr
    } else {
        *local.ip()
    };
    let bound = SocketAddrV4::new(ip, local.port());
    let flow = flow_key(Proto::Udp, local, None);
    let opened = nic.lock().engine.udp_open(bound, &flow);
    let id = match opened {
        Ok(id) => id,
        Err(e) if no_room(&e) => {
            to_kernel(fd);
            return Ok(false);
        }
        Err(e) => return Err(open_error(e)),
    };
    kernel_nonblocking(fd);
    *ep.state() = State::Udp {
        on: On {
            nic: nic.clone(),
            id,
        },
        flow,
        local: bound,
        peer,
    };
    ep.restated();
    Ok(true)
}

pub fn listen(rt: &Runtime, ep: &Endpoint, fd: RawFd, backlog: i32) -> Res<()> {
    if ep.proto != Proto::Tcp {
        return Err(Errno::EOPNOTSUPP);
    }
    let local = match &*ep.state() {
        State::Bound { local } => Some(*local),
        State::Fresh => None,
        // listen() again only changes the backlog: the kernel's answer.
        State::Listener { .. } => return kernel::listen(fd, backlog),
        _ => return Err(Errno::EINVAL),
    };
    // The kernel listener serves connections that come through the kernel (loopback, ...).
    kernel::listen(fd, backlog)?;
    let local = match local {
        Some(l) => l,
        None => parse_v4(kernel::getsockname(fd)?.as_bytes())?, // auto-bound 0.0.0.0:port
    };
    let nics = rt.nics_for_local(*local.ip());
    if nics.is_empty() {
        to_kernel(fd);
        return Ok(());
    }
    let backlog = usize::try_from(backlog)
        .unwrap_or(1)
        .clamp(1, stack::MAX_BACKLOG);
    if let Err(e) = listen_in_stacks(ep, &nics, local, backlog) {
        if no_room(&e) {
            // The kernel socket listens already: it serves the port instead.
            to_kernel(fd);
            return Ok(());
        }
        return Err(open_error(e));
    }
    kernel_nonblocking(fd);
    Ok(())
}

/// The engine's error for a socket it could not open on a preload interface.
pub(super) type NicOpenError = stack::engine::OpenError<
    <crate::runtime::nic::NicBackend as stack::engine::Backend>::FlowError,
>;

/// Makes `ep` a listener on `local` in the stack of each of `nics`, serving its flow (see
/// `listeners`); on an error, the stacks already listening stop again and nothing changes.
/// listen(), and a forked child listening again on what it inherited, both come here.
pub(super) fn listen_in_stacks(
    ep: &Endpoint,
    nics: &[Arc<Nic>],
    local: SocketAddrV4,
    backlog: usize,
) -> Result<(), NicOpenError> {
    let flow = flow_key(Proto::Tcp, local, None);
    let mut on: Vec<On> = Vec::new();
    for nic in nics {
        let opened = nic.lock().engine.tcp_listen(local, backlog, &flow);
        match opened {
            Ok(id) => on.push(On {
                nic: nic.clone(),
                id,
            }),
            Err(e) => {
                for o in &on {
                    o.nic.lock().engine.tcp_unlisten(o.id, flow);
                }
                return Err(e);
            }
        }
    }
    let flows = nics.iter().map(|n| (n.clone(), flow)).collect();
    *ep.state() = State::Listener {
        on,
        flows,
        local,
        backlog,
    };
    ep.restated();
    ep.serving.store(true, Ordering::Release);
    Ok(())
}

/// A new fd for an accepted or connected stack socket: a kernel socket that only holds the
/// number (never bound, never used for traffic).
fn new_fd(flags: i32) -> Res<RawFd> {
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | (flags & libc::SOCK_CLOEXEC);
    kernel::socket(libc::AF_INET, ty, 0)
}

enum Accepted {
    Stack(Arc<Nic>, SocketId, SocketAddrV4, Option<SocketAddrV4>),
    Kernel(RawFd, SockAddrBuf),
}

pub fn accept(rt: &Runtime, ep: &Endpoint, fd: RawFd, flags: i32) -> Res<(RawFd, SockAddrBuf)> {
    if ep.proto != Proto::Tcp {
        return Err(Errno::EOPNOTSUPP);
    }
    let (on, listen_local) = match &*ep.state() {
        State::Listener { on, local, .. } => (on.clone(), *local),
        _ => return Err(Errno::EINVAL),
    };
    super::listeners::in_use(ep);
    let nics: Vec<Arc<Nic>> = on.iter().map(|o| o.nic.clone()).collect();
    let nonblock = ep.nonblocking();
    // The new connection's fd is taken before a connection leaves the queue, as the kernel's
    // accept takes a descriptor first: at the fd limit accept fails with EMFILE and every
    // connection stays queued for a later accept (none is reset). A blocking accept takes it
    // before it waits (EMFILE at once, as in the kernel); a non-blocking one only once a
    // connection is there (an empty queue costs no syscall).
    let mut nfd: Option<RawFd> = if nonblock { None } else { Some(new_fd(flags)?) };
    let how = Wait::socket(&nics, nonblock, ep.rcvtimeo()).or_fd(fd);
    let got = wait(rt, how, |round| {
        for o in &on {
            let mut g = o.nic.lock();
            o.nic.poll(&mut g);
            if !g.stack().readiness(o.id).readable {
                continue;
            }
            if nfd.is_none() {
                drop(g);
                match new_fd(flags) {
                    Ok(f) => nfd = Some(f),
                    Err(e) => return Some(Err(e)),
                }
                g = o.nic.lock();
            }
            if let Ok((id, remote)) = g.stack_mut().tcp_accept(o.id) {
                let local = g.stack().local_addr(id);
                return Some(Ok(Accepted::Stack(o.nic.clone(), id, remote, local)));
            }
        }
        if !round.thorough {
            return None;
        }
        match kernel::accept4(fd, flags) {
            Ok((kfd, addr)) => Some(Ok(Accepted::Kernel(kfd, addr))),
            Err(e) if e == Errno::EAGAIN => None,
            Err(e) => Some(Err(e)),
        }
    });
    let (nic, id, remote, local, nfd) = match (got, nfd) {
        (Ok(Accepted::Stack(nic, id, remote, local)), Some(nfd)) => (nic, id, remote, local, nfd),
        (got, nfd) => {
            if let Some(unused) = nfd {
                let _ = kernel::close(unused);
            }
            return match got? {
                Accepted::Kernel(kfd, addr) => Ok((kfd, addr)),
                // A stack connection is only taken with an fd in hand.
                Accepted::Stack(..) => Err(Errno(libc::EIO)),
            };
        }
    };
    let local = local.unwrap_or(SocketAddrV4::new(nic.addr, 0));
    // The listener's flow carries the connection; holding it keeps it in the filter after the
    // listener closes (a connection outlives its listener, as in the kernel).
    let flow = flow_key(Proto::Tcp, listen_local, None);
    nic.lock().engine.hold_shared_flow(&flow);
    let child = Endpoint::new(Proto::Tcp, flags & libc::SOCK_NONBLOCK != 0);
    // Options set on the listener carry over to the connections it accepts.
    *lock(&child.tcp_opts) = *lock(&ep.tcp_opts);
    *lock(&child.rcvtimeo) = ep.rcvtimeo();
    *lock(&child.sndtimeo) = ep.sndtimeo();
    *child.state() = State::Conn {
        on: On { nic, id },
        flow,
        local,
        remote,
        rd_shut: false,
        wr_shut: false,
        connect_pending: false,
        accepted: true,
    };
    options::apply(&child);
    SOCKETS.insert(nfd, Arc::new(child));
    Ok((nfd, SockAddrBuf::v4(remote)))
}

pub fn connect(rt: &Runtime, ep: &Endpoint, fd: RawFd, addr: &[u8]) -> Res<()> {
    let dst = match parse_v4(addr) {
        Ok(d) => d,
        // Let the kernel give its answer (AF_UNSPEC disconnects a UDP socket, for example).
        Err(_) if ep.is_fresh() => {
            to_kernel(fd);
            return kernel::connect(fd, addr);
        }
        Err(e) => return Err(e),
    };
    if ep.proto == Proto::Udp {
        return udp_connect(rt, ep, fd, dst, addr);
    }
    // (The state's lock is let go before connect_again takes it again.)
    let bound = match &*ep.state() {
        State::Fresh => Ok(None),
        State::Bound { local } => Ok(Some(*local)),
        State::Conn { .. } => Err(true),
        _ => Err(false),
    };
    let bound = match bound {
        Ok(b) => b,
        Err(true) => return connect_again(ep),
        Err(false) => return Err(Errno::EINVAL),
    };
    let Some(nic) = rt.nic_for_remote(*dst.ip()).cloned() else {
        // Not through an accelerated interface: the kernel connects it, for good.
        // (A socket bound to one of our addresses may still reach it through the kernel.)
        to_kernel(fd);
        return kernel::connect(fd, addr);
    };
    let local = match bound {
        Some(l) if !l.ip().is_unspecified() => l,
        Some(l) => SocketAddrV4::new(nic.addr, l.port()),
        None => {
            // An ephemeral port the kernel will not hand to anyone else.
            let sa = SockAddrBuf::v4(SocketAddrV4::new(nic.addr, 0));
            kernel::bind(fd, sa.as_bytes())?;
            parse_v4(kernel::getsockname(fd)?.as_bytes())?
        }
    };
    let flow = flow_key(Proto::Tcp, local, Some(dst));
    let id = {
        let mut g = nic.lock();
        let id = match g.engine.tcp_connect(local, dst, &flow) {
            Ok(id) => id,
            Err(e) if no_room(&e) => {
                // The kernel connects it instead, from the port it holds.
                drop(g);
                to_kernel(fd);
                return kernel::connect(fd, addr);
            }
            Err(e) => return Err(open_error(e)),
        };
        nic.poll(&mut g); // the SYN goes out now
        id
    };
    kernel_nonblocking(fd);
    let nonblock = ep.nonblocking();
    *ep.state() = State::Conn {
        on: On {
            nic: nic.clone(),
            id,
        },
        flow,
        local,
        remote: dst,
        rd_shut: false,
        wr_shut: false,
        connect_pending: nonblock,
        accepted: false,
    };
    ep.restated();
    options::apply(ep);
    if nonblock {
        return Err(Errno::EINPROGRESS);
    }
    wait_connected(rt, ep, &nic, id)
}

/// connect() on a socket that already has a connection (or an attempt in progress), as
/// Linux answers it: EALREADY while the handshake runs; after a non-blocking connect, the
/// first call once it completed reports its outcome (0 or the error), later ones EISCONN.
fn connect_again(ep: &Endpoint) -> Res<()> {
    let mut st = ep.state();
    let State::Conn {
        on,
        connect_pending,
        ..
    } = &mut *st
    else {
        return Err(Errno::EINVAL);
    };
    let mut g = on.nic.lock();
    on.nic.poll(&mut g);
    match g.stack().tcp_state(on.id) {
        Some(stack::TcpState::SynSent) | Some(stack::TcpState::SynReceived) => Err(Errno::EALREADY),
        _ => {
            if let Ok(Some(e)) = g.stack_mut().take_error(on.id) {
                *connect_pending = false;
                return Err(e.into());
            }
            if std::mem::take(connect_pending) {
                Ok(())
            } else {
                Err(Errno::EISCONN)
            }
        }
    }
}

fn wait_connected(rt: &Runtime, ep: &Endpoint, nic: &Arc<Nic>, id: SocketId) -> Res<()> {
    let how = Wait::socket(std::slice::from_ref(nic), false, ep.sndtimeo());
    wait(rt, how, |_| {
        let mut g = nic.lock();
        nic.poll(&mut g);
        if g.stack().tcp_established_once(id) {
            // The handshake completed: connect() succeeded. A reset that came right after
            // is for the next call to report, as the kernel does.
            return Some(Ok(()));
        }
        let r = g.stack().readiness(id);
        if r.error {
            return Some(match g.stack_mut().take_error(id) {
                Ok(Some(e)) => Err(e.into()),
                _ => Err(Errno(libc::ECONNREFUSED)),
            });
        }
        r.writable.then_some(Ok(()))
    })
    .map_err(|e| {
        if e == Errno::EAGAIN {
            Errno(libc::ETIMEDOUT)
        } else {
            e
        }
    })
}

fn udp_connect(rt: &Runtime, ep: &Endpoint, fd: RawFd, dst: SocketAddrV4, addr: &[u8]) -> Res<()> {
    if ep.is_fresh() {
        let Some(nic) = rt.nic_for_remote(*dst.ip()).cloned() else {
            to_kernel(fd);
            return kernel::connect(fd, addr);
        };
        let sa = SockAddrBuf::v4(SocketAddrV4::new(nic.addr, 0));
        kernel::bind(fd, sa.as_bytes())?;
        let local = parse_v4(kernel::getsockname(fd)?.as_bytes())?;
        if !udp_open(ep, fd, &nic, local, Some(dst))? {
            return kernel::connect(fd, addr);
        }
        return Ok(());
    }
    match &mut *ep.state() {
        State::Udp { peer, .. } => {
            *peer = Some(dst);
            Ok(())
        }
        _ => Err(Errno::EINVAL),
    }
}
