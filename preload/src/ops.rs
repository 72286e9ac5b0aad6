//! Socket semantics for accelerated fds, as the kernel would give them.
//!
//! An AF_INET TCP or UDP socket starts `Fresh`: only the kernel socket exists and every call
//! goes to it. It becomes accelerated when it is bound to, connects through or sends through an
//! accelerated interface; it is handed to the kernel for good (forgotten by the fd table) when
//! it binds to or connects to anything else (loopback, another interface).
//!
//! Accelerated sockets keep their kernel socket: it holds the port and the fd number, and for
//! listeners and UDP sockets it serves the kernel path too (a connection over loopback reaches
//! the same listener). That kernel socket is kept non-blocking; the application's blocking mode
//! lives in the endpoint.

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use libaccel::xdp::{FlowKey, Proto as FlowProto};
use stack::{Error as StackError, SocketId};

use crate::abi::kernel;
use crate::addr::{parse_v4, SockAddrBuf};
use crate::errno::{Errno, Res};
use crate::fdtable;
use crate::runtime::{self, Nic, NicInner, Runtime};

/// How long the flow of a closed connection stays, so its FIN handshake and TIME-WAIT still
/// receive their packets (the stack reaps orphans after 60 s).
const CLOSED_FLOW_GRACE: Duration = Duration::from_secs(70);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A stack socket on one interface.
#[derive(Clone)]
pub struct On {
    pub nic: Arc<Nic>,
    pub id: SocketId,
}

pub enum State {
    /// Only the kernel socket exists; every call goes to it.
    Fresh,
    /// TCP bound to an accelerated (or the wildcard) address, not listening or connected yet.
    Bound { local: SocketAddrV4 },
    Listener {
        on: Vec<On>,
        flows: Vec<(Arc<Nic>, FlowKey)>,
        local: SocketAddrV4,
    },
    Conn {
        on: On,
        flow: FlowKey,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        rd_shut: bool,
        wr_shut: bool,
        /// A non-blocking connect whose outcome connect() has not reported yet.
        connect_pending: bool,
        /// Accepted from a listener (it rides the listener's flow and port), not connected.
        accepted: bool,
    },
    Udp {
        on: On,
        flow: FlowKey,
        local: SocketAddrV4,
        peer: Option<SocketAddrV4>,
    },
}

/// What the application sees as one socket (shared by dup'ed fds).
pub struct Endpoint {
    pub proto: Proto,
    state: Mutex<State>,
    nonblock: AtomicBool,
    rcvtimeo: Mutex<Option<Duration>>,
    sndtimeo: Mutex<Option<Duration>>,
    linger_abort: AtomicBool,
    /// Socket options the stack honours (TCP_NODELAY, SO_KEEPALIVE, IP_TTL), applied when a
    /// connection exists and inherited by the connections a listener accepts.
    tcp_opts: Mutex<TcpOpts>,
    /// fds referring to this endpoint (dup); the stack socket closes with the last.
    refs: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Endpoint {
    fn new(proto: Proto, nonblock: bool) -> Endpoint {
        Endpoint {
            proto,
            state: Mutex::new(State::Fresh),
            nonblock: AtomicBool::new(nonblock),
            rcvtimeo: Mutex::new(None),
            sndtimeo: Mutex::new(None),
            linger_abort: AtomicBool::new(false),
            tcp_opts: Mutex::new(TcpOpts::default()),
            refs: AtomicUsize::new(1),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether every call still goes to the kernel socket.
    pub fn is_fresh(&self) -> bool {
        matches!(*self.state(), State::Fresh)
    }

    pub fn nonblocking(&self) -> bool {
        self.nonblock.load(Ordering::Relaxed)
    }

    pub fn set_nonblocking(&self, on: bool) {
        self.nonblock.store(on, Ordering::Relaxed);
    }

    /// Another fd now refers to this endpoint (dup).
    pub fn add_ref(&self) {
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    fn nics(&self) -> Vec<Arc<Nic>> {
        let mut v = Vec::new();
        self.state().each_nic(|n| v.push(n.clone()));
        v
    }
}

impl State {
    /// Calls `f` with each interface the socket is served on (none while fresh or bound).
    fn each_nic(&self, mut f: impl FnMut(&Arc<Nic>)) {
        match self {
            State::Listener { on, .. } => on.iter().for_each(|o| f(&o.nic)),
            State::Conn { on, .. } | State::Udp { on, .. } => f(&on.nic),
            _ => {}
        }
    }
}

fn rt() -> Res<&'static Runtime> {
    runtime::get().ok_or(Errno::EBADF)
}

// ---------------------------------------------------------------------------------------------
// Creation, binding, listening, connecting.

/// After the kernel created `fd`: track AF_INET TCP/UDP sockets when accel runs.
pub fn on_socket(fd: RawFd, domain: i32, ty: i32, protocol: i32) {
    if domain != libc::AF_INET {
        return;
    }
    let proto = match (ty & 0xf, protocol) {
        (libc::SOCK_STREAM, 0) | (libc::SOCK_STREAM, libc::IPPROTO_TCP) => Proto::Tcp,
        (libc::SOCK_DGRAM, 0) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Proto::Udp,
        _ => return,
    };
    if runtime::get().is_none() {
        return;
    }
    fdtable::insert(
        fd,
        Arc::new(Endpoint::new(proto, ty & libc::SOCK_NONBLOCK != 0)),
    );
}

/// Gives `fd` to the kernel for good (its endpoint is forgotten).
fn to_kernel(fd: RawFd) {
    fdtable::remove(fd);
}

/// Makes the kernel socket non-blocking (the endpoint keeps the application's mode).
fn kernel_nonblocking(fd: RawFd) {
    if let Ok(fl) = kernel::getfl(fd) {
        let _ = kernel::setfl(fd, fl | libc::O_NONBLOCK);
    }
}

fn flow_key(proto: Proto, local: SocketAddrV4, remote: Option<SocketAddrV4>) -> FlowKey {
    let p = match proto {
        Proto::Tcp => FlowProto::Tcp,
        Proto::Udp => FlowProto::Udp,
    };
    match remote {
        Some(r) => FlowKey::connected(p, local, r),
        None => FlowKey::listening(p, local),
    }
}

fn add_flow(g: &mut NicInner, key: &FlowKey) -> Res<()> {
    g.add_flow(key).map_err(|e| {
        tracing::warn!(error = %e, "adding a flow to the XDP filter");
        Errno::EADDRINUSE
    })
}

/// The interfaces a wildcard or specific local address covers.
fn nics_for_local(rt: &Runtime, ip: Ipv4Addr) -> Vec<Arc<Nic>> {
    if ip.is_unspecified() {
        rt.nics.clone()
    } else {
        rt.nic_for_local(ip).cloned().into_iter().collect()
    }
}

pub fn bind(ep: &Endpoint, fd: RawFd, addr: &[u8]) -> Res<()> {
    if !ep.is_fresh() {
        return Err(Errno::EINVAL); // already bound
    }
    // The kernel socket holds the port and answers every misuse as the kernel does.
    kernel::bind(fd, addr)?;
    let local = parse_v4(kernel::getsockname(fd)?.as_bytes())?;
    let rt = rt()?;
    let nics = nics_for_local(rt, *local.ip());
    if nics.is_empty() {
        to_kernel(fd);
        return Ok(());
    }
    match ep.proto {
        Proto::Tcp => *ep.state() = State::Bound { local },
        Proto::Udp => udp_open(ep, fd, &nics[0], local, None)?,
    }
    Ok(())
}

fn udp_open(
    ep: &Endpoint,
    fd: RawFd,
    nic: &Arc<Nic>,
    local: SocketAddrV4,
    peer: Option<SocketAddrV4>,
) -> Res<()> {
    let bound = SocketAddrV4::new(
        if local.ip().is_unspecified() {
            nic.addr
        } else {
            *local.ip()
        },
        local.port(),
    );
    let flow = flow_key(Proto::Udp, local, None);
    let mut g = nic.lock();
    let id = g.stack.udp_bind(bound).map_err(Errno::from)?;
    if let Err(e) = add_flow(&mut g, &flow) {
        g.stack.close(id);
        return Err(e);
    }
    drop(g);
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
    Ok(())
}

pub fn listen(ep: &Endpoint, fd: RawFd, backlog: i32) -> Res<()> {
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
    let nics = nics_for_local(rt()?, *local.ip());
    if nics.is_empty() {
        to_kernel(fd);
        return Ok(());
    }
    let backlog = usize::try_from(backlog)
        .unwrap_or(1)
        .clamp(1, stack::MAX_BACKLOG);
    let mut on: Vec<On> = Vec::new();
    let mut flows: Vec<(Arc<Nic>, FlowKey)> = Vec::new();
    let undo = |on: &[On], flows: &[(Arc<Nic>, FlowKey)]| {
        for o in on {
            o.nic.lock().stack.close(o.id);
        }
        for (nic, f) in flows {
            nic.lock_only().release_shared_flow(*f, Duration::ZERO);
        }
    };
    for nic in &nics {
        let flow = flow_key(Proto::Tcp, local, None);
        let mut g = nic.lock();
        let id = match g.stack.tcp_listen(local, backlog) {
            Ok(id) => id,
            Err(e) => {
                drop(g);
                undo(&on, &flows);
                return Err(e.into());
            }
        };
        if let Err(e) = g.add_shared_flow(&flow) {
            tracing::warn!(error = %e, "adding a listening flow to the XDP filter");
            g.stack.close(id);
            drop(g);
            undo(&on, &flows);
            return Err(Errno::EADDRINUSE);
        }
        on.push(On {
            nic: nic.clone(),
            id,
        });
        flows.push((nic.clone(), flow));
    }
    kernel_nonblocking(fd);
    *ep.state() = State::Listener { on, flows, local };
    Ok(())
}

/// Blocks as the kernel would block a call on this socket, until `attempt` answers.
///
/// `attempt` locks (and so polls) the interfaces it needs. Before sleeping, this thread's
/// eventfd is registered with every interface and the attempt made once more, so a poll that
/// moves anything after the check wakes us. `kernel_fd`, if given, also wakes us (kernel path).
fn wait<T>(
    nics: &[Arc<Nic>],
    nonblock: bool,
    timeout: Option<Duration>,
    kernel_fd: Option<RawFd>,
    mut attempt: impl FnMut(bool) -> Option<Res<T>>,
) -> Res<T> {
    let rt = rt()?;
    let timeout = timeout.filter(|t| !t.is_zero());
    // The clock is read once the first attempt failed (most calls succeed at once), and only
    // when a timeout or a spin limit needs it: a call that spins for ever reads none.
    let timed = timeout.is_some() || rt.config.spin.is_some();
    let mut started: Option<Instant> = None;
    let interrupts = runtime::interrupts();
    let mut tries: u32 = 0;
    let mut woke = false;
    loop {
        // Whether this attempt also looks at the kernel socket, which costs a syscall: a
        // non-blocking call's only attempt, the first after a sleep, and every
        // KERNEL_CHECK_EVERY-th of a spin (a few microseconds apart). Not the first of a
        // blocking call: it is nearly always followed by a spin, and a syscall per call was a
        // tenth of a ping-pong's round trip.
        tries = tries.wrapping_add(1);
        let thorough = nonblock || woke || tries.is_multiple_of(KERNEL_CHECK_EVERY);
        woke = false;
        if let Some(r) = attempt(thorough) {
            return r;
        }
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        if runtime::interrupts() != interrupts {
            return Err(Errno::EINTR);
        }
        if !timed {
            runtime::make_way(nics);
            continue;
        }
        let started = *started.get_or_insert_with(Instant::now);
        let deadline = timeout.map(|t| started + t);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Errno::EAGAIN);
        }
        if runtime::should_spin(rt, started) {
            runtime::make_way(nics);
            continue;
        }
        let waiting = runtime::Waiting::register(nics).ok_or(Errno::ENOMEM)?;
        let efd = waiting.efd;
        if let Some(r) = attempt(true) {
            return r;
        }
        let ms = deadline.map_or(50, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(50) as i32
        });
        let mut fds = [
            libc::pollfd {
                fd: efd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: kernel_fd.unwrap_or(-1),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let _ = kernel::poll(&mut fds, ms);
        drop(waiting);
        woke = true;
        // A handler that interrupted the poll is seen at the top of the loop (EINTR unless it
        // was installed with SA_RESTART, in which case the wait goes on, as in the kernel).
    }
}

fn rcvtimeo(ep: &Endpoint) -> Option<Duration> {
    *lock(&ep.rcvtimeo)
}

fn sndtimeo(ep: &Endpoint) -> Option<Duration> {
    *lock(&ep.sndtimeo)
}

/// A new fd for an accepted or connected stack socket: a kernel socket that only holds the
/// number (never bound, never used for traffic).
fn new_fd(flags: i32) -> Res<RawFd> {
    let ty = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | (flags & libc::SOCK_CLOEXEC);
    kernel::socket(libc::AF_INET, ty, 0)
}

pub fn accept(ep: &Endpoint, fd: RawFd, flags: i32) -> Res<(RawFd, SockAddrBuf)> {
    if ep.proto != Proto::Tcp {
        return Err(Errno::EOPNOTSUPP);
    }
    let (on, listen_local) = match &*ep.state() {
        State::Listener { on, local, .. } => (on.clone(), *local),
        _ => return Err(Errno::EINVAL),
    };
    let nics: Vec<Arc<Nic>> = on.iter().map(|o| o.nic.clone()).collect();
    let got = wait(
        &nics,
        ep.nonblocking(),
        rcvtimeo(ep),
        Some(fd),
        |thorough| {
            for o in &on {
                let mut g = o.nic.lock();
                if let Ok((id, remote)) = g.stack.tcp_accept(o.id) {
                    return Some(Ok(Accepted::Stack(
                        o.nic.clone(),
                        id,
                        remote,
                        g.stack.local_addr(id),
                    )));
                }
            }
            if !thorough {
                return None;
            }
            match kernel::accept4(fd, flags) {
                Ok((kfd, addr)) => Some(Ok(Accepted::Kernel(kfd, addr))),
                Err(e) if e == Errno::EAGAIN => None,
                Err(e) => Some(Err(e)),
            }
        },
    )?;
    match got {
        Accepted::Kernel(kfd, addr) => Ok((kfd, addr)),
        Accepted::Stack(nic, id, remote, local) => {
            let local = local.unwrap_or(SocketAddrV4::new(nic.addr, 0));
            // The listener's flow carries the connection; holding it keeps it in the filter
            // after the listener closes (a connection outlives its listener, as in the kernel).
            let flow = flow_key(Proto::Tcp, listen_local, None);
            nic.lock_only().hold_shared_flow(&flow);
            let nfd = match new_fd(flags) {
                Ok(f) => f,
                Err(e) => {
                    let mut g = nic.lock_only();
                    g.stack.abort(id);
                    g.release_shared_flow(flow, Duration::ZERO);
                    return Err(e);
                }
            };
            let child = Endpoint::new(Proto::Tcp, flags & libc::SOCK_NONBLOCK != 0);
            // Options set on the listener carry over to the connections it accepts.
            *lock(&child.tcp_opts) = *lock(&ep.tcp_opts);
            *lock(&child.rcvtimeo) = rcvtimeo(ep);
            *lock(&child.sndtimeo) = sndtimeo(ep);
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
            apply_opts(&child);
            fdtable::insert(nfd, Arc::new(child));
            Ok((nfd, SockAddrBuf::v4(remote)))
        }
    }
}

enum Accepted {
    Stack(Arc<Nic>, SocketId, SocketAddrV4, Option<SocketAddrV4>),
    Kernel(RawFd, SockAddrBuf),
}

pub fn connect(ep: &Endpoint, fd: RawFd, addr: &[u8]) -> Res<()> {
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
        return udp_connect(ep, fd, dst, addr);
    }
    let bound = match &*ep.state() {
        State::Fresh => Ok(None),
        State::Bound { local } => Ok(Some(*local)),
        State::Conn { .. } => Err(true),
        _ => Err(false),
    };
    let bound = match bound {
        Ok(b) => b,
        Err(true) => return conn_connect_again(ep),
        Err(false) => return Err(Errno::EINVAL),
    };
    let rt = rt()?;
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
        add_flow(&mut g, &flow)?;
        match g.stack.tcp_connect(local, dst) {
            Ok(id) => {
                nic.poll_locked(&mut g); // the SYN goes out now
                id
            }
            Err(e) => {
                g.remove_flow_later(flow, Duration::ZERO);
                return Err(e.into());
            }
        }
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
    apply_opts(ep);
    if nonblock {
        return Err(Errno::EINPROGRESS);
    }
    wait_connected(ep, &nic, id)
}

/// connect() on a socket that already has a connection (or an attempt in progress), as
/// Linux answers it: EALREADY while the handshake runs; after a non-blocking connect, the
/// first call once it completed reports its outcome (0 or the error), later ones EISCONN.
fn conn_connect_again(ep: &Endpoint) -> Res<()> {
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
    match g.stack.tcp_state(on.id) {
        Some(stack::TcpState::SynSent) | Some(stack::TcpState::SynReceived) => Err(Errno::EALREADY),
        _ => {
            if let Ok(Some(e)) = g.stack.take_error(on.id) {
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

fn wait_connected(ep: &Endpoint, nic: &Arc<Nic>, id: SocketId) -> Res<()> {
    wait(std::slice::from_ref(nic), false, sndtimeo(ep), None, |_| {
        let mut g = nic.lock();
        if g.stack.tcp_established_once(id) {
            // The handshake completed: connect() succeeded. A reset that came right after
            // is for the next call to report, as the kernel does.
            return Some(Ok(()));
        }
        let r = g.stack.readiness(id);
        if r.error {
            return Some(match g.stack.take_error(id) {
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

fn udp_connect(ep: &Endpoint, fd: RawFd, dst: SocketAddrV4, addr: &[u8]) -> Res<()> {
    let fresh = ep.is_fresh();
    if fresh {
        let rt = rt()?;
        let Some(nic) = rt.nic_for_remote(*dst.ip()).cloned() else {
            to_kernel(fd);
            return kernel::connect(fd, addr);
        };
        let sa = SockAddrBuf::v4(SocketAddrV4::new(nic.addr, 0));
        kernel::bind(fd, sa.as_bytes())?;
        let local = parse_v4(kernel::getsockname(fd)?.as_bytes())?;
        return udp_open(ep, fd, &nic, local, Some(dst));
    }
    match &mut *ep.state() {
        State::Udp { peer, .. } => {
            *peer = Some(dst);
            Ok(())
        }
        _ => Err(Errno::EINVAL),
    }
}

// ---------------------------------------------------------------------------------------------
// Data.

/// send/sendto/sendmsg/write on an accelerated socket. `dst` is sendto's address, if any.
pub fn send(
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
        return fresh_send(ep, fd, bufs, flags, dst);
    };
    match udp_peer {
        None => {
            if wr_shut {
                return Err(epipe(flags, Errno::EPIPE));
            }
            tcp_send(ep, &on, bufs, flags, nonblock)
        }
        Some(peer) => {
            let to = match dst {
                Some(d) if !d.is_empty() => parse_v4(d)?,
                _ => peer.ok_or(Errno::EDESTADDRREQ)?,
            };
            udp_send(ep, fd, &on, bufs, to, nonblock)
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
    ep: &Endpoint,
    fd: RawFd,
    bufs: &[IoSlice<'_>],
    flags: i32,
    dst: Option<&[u8]>,
) -> Res<usize> {
    let data: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
    if ep.proto == Proto::Udp {
        if let Some(d) = dst.filter(|d| !d.is_empty()) {
            let to = parse_v4(d)?;
            let rt = rt()?;
            if let Some(nic) = rt.nic_for_remote(*to.ip()).cloned() {
                let sa = SockAddrBuf::v4(SocketAddrV4::new(nic.addr, 0));
                kernel::bind(fd, sa.as_bytes())?;
                let local = parse_v4(kernel::getsockname(fd)?.as_bytes())?;
                udp_open(ep, fd, &nic, local, None)?;
                return send(ep, fd, bufs, flags, dst);
            }
        }
    }
    // Everything else on a fresh socket is the kernel's (unconnected TCP: EPIPE, ...).
    to_kernel(fd);
    kernel::sendto(fd, &data, flags, dst)
}

fn tcp_send(
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
    let r = wait(
        std::slice::from_ref(&nic),
        nonblock,
        sndtimeo(ep),
        None,
        |_| {
            // No poll before queueing (the poll after sends it, and takes in ACKs that make
            // room for the next attempt).
            let mut g = nic.lock_only();
            let mut skip = sent;
            for b in bufs {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                match g.stack.tcp_send(on.id, &b[skip..]) {
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
            nic.poll_locked(&mut g);
            if sent == total || (sent > 0 && nonblock) {
                Some(Ok(sent))
            } else {
                None
            }
        },
    );
    match r {
        Ok(n) => Ok(n),
        // What was queued before a timeout or a signal is reported, never sent twice.
        Err(e) if (e == Errno::EAGAIN || e == Errno::EINTR) && sent > 0 => Ok(sent),
        Err(e) => Err(epipe(flags, e)),
    }
}

fn udp_send(
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
    if to.ip().is_loopback() || rt()?.nic_for_remote(*to.ip()).is_none() {
        // Not through this interface: the kernel socket (bound to the same port) sends it.
        return kernel::sendto(fd, data, 0, Some(SockAddrBuf::v4(to).as_bytes()));
    }
    let nic = on.nic.clone();
    wait(
        std::slice::from_ref(&nic),
        nonblock,
        sndtimeo(ep),
        None,
        |_| {
            let mut g = nic.lock_only();
            match g.stack.udp_send_to(on.id, data, to) {
                Ok(n) => {
                    nic.poll_locked(&mut g);
                    Some(Ok(n))
                }
                Err(StackError::WouldBlock) | Err(StackError::NoBufferSpace) => {
                    // Full: sending what is queued makes room for the next attempt.
                    nic.poll_locked(&mut g);
                    None
                }
                Err(e) => Some(Err(e.into())),
            }
        },
    )
}

/// What a receive returned.
pub struct Received {
    pub len: usize,
    pub from: Option<SockAddrBuf>,
    pub truncated: bool,
}

/// recv/recvfrom/recvmsg/read on an accelerated socket.
pub fn recv(ep: &Endpoint, fd: RawFd, bufs: &mut [IoSliceMut<'_>], flags: i32) -> Res<Received> {
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
        (Some(on), true, false) => match tcp_recv(ep, &on, bufs, flags, true) {
            Err(e) if e == Errno::EAGAIN => Ok(Received {
                len: 0,
                from: None,
                truncated: false,
            }),
            r => r,
        },
        (Some(on), _, false) => tcp_recv(ep, &on, bufs, flags, nonblock),
        (Some(on), _, true) => udp_recv(ep, fd, &on, udp_peer, bufs, flags, nonblock),
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
    ep: &Endpoint,
    on: &On,
    bufs: &mut [IoSliceMut<'_>],
    flags: i32,
    nonblock: bool,
) -> Res<Received> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    if total == 0 {
        return Ok(Received {
            len: 0,
            from: None,
            truncated: false,
        });
    }
    let waitall = flags & libc::MSG_WAITALL != 0;
    let nic = on.nic.clone();
    let mut got = 0usize;
    let r = wait(
        std::slice::from_ref(&nic),
        nonblock,
        rcvtimeo(ep),
        None,
        |_| {
            let mut g = nic.lock();
            let window_low = g.stack.tcp_recv_window_low(on.id);
            let before = got;
            let mut skip = got;
            let mut eof = false;
            for b in bufs.iter_mut() {
                if skip >= b.len() {
                    skip -= b.len();
                    continue;
                }
                let want = b.len() - skip;
                match g.stack.tcp_recv(on.id, &mut b[skip..]) {
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
            // Reading a buffer that was half full or more opened the window: tell the peer
            // now. (After a smaller read the next ACK carries the window; polling here on
            // every attempt would only double the cost of a spinning receive.)
            if got > before && window_low {
                nic.poll_locked(&mut g);
            }
            if got == total || eof || (got > 0 && !waitall) {
                Some(Ok(got))
            } else {
                None
            }
        },
    );
    match r {
        Ok(n) => Ok(Received {
            len: n,
            from: None,
            truncated: false,
        }),
        // What was read before a timeout or a signal is returned, never lost.
        Err(e) if (e == Errno::EAGAIN || e == Errno::EINTR) && got > 0 => Ok(Received {
            len: got,
            from: None,
            truncated: false,
        }),
        Err(e) => Err(e),
    }
}

/// How often (in attempts) a spinning wait also looks at the kernel socket.
const KERNEL_CHECK_EVERY: u32 = 64;

/// How often (in rounds) a spinning epoll_wait reads the clock for its timeout.
const DEADLINE_CHECK_EVERY: u32 = 16;

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

fn udp_recv(
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
    let (n, from) = wait(
        std::slice::from_ref(&nic),
        nonblock,
        rcvtimeo(ep),
        Some(fd),
        |thorough| loop {
            let mut g = nic.lock();
            // Copied straight from the stack's buffer into the caller's (n = the datagram's
            // full length, so a truncation is seen and reported).
            match g.stack.udp_recv_with(on.id, |payload, from| {
                if from_peer(from) {
                    scatter(payload, bufs);
                }
                (payload.len(), from)
            }) {
                Ok((n, from)) if from_peer(from) => return Some(Ok((n, SockAddrBuf::v4(from)))),
                Ok(_) => continue,
                Err(StackError::WouldBlock) => {}
                Err(e) => return Some(Err(e.into())),
            }
            drop(g);
            // Datagrams that came through the kernel (loopback, ...) wait on the kernel socket
            // (see `wait` for when an attempt looks; a sleeping wait is woken by it directly).
            if !thorough {
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
        },
    )?;
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

pub fn shutdown(ep: &Endpoint, fd: RawFd, how: i32) -> Res<()> {
    if !(0..=2).contains(&how) {
        return Err(Errno::EINVAL);
    }
    let mut st = ep.state();
    match &mut *st {
        State::Conn {
            on,
            rd_shut,
            wr_shut,
            ..
        } => {
            if how == libc::SHUT_RD || how == libc::SHUT_RDWR {
                *rd_shut = true;
            }
            if how == libc::SHUT_WR || how == libc::SHUT_RDWR {
                *wr_shut = true;
                let mut g = on.nic.lock();
                g.stack.tcp_shutdown_write(on.id).map_err(Errno::from)?;
                on.nic.poll_locked(&mut g);
            }
            Ok(())
        }
        State::Fresh => {
            drop(st);
            kernel::shutdown(fd, how)
        }
        _ => Err(Errno::ENOTCONN),
    }
}

/// The last fd of `ep` is being closed: release its stack sockets. The caller closes the fd.
/// `fd` is the number being closed (the caller closes it right after).
pub fn close(ep: Arc<Endpoint>, fd: RawFd) {
    if ep.refs.fetch_sub(1, Ordering::AcqRel) > 1 {
        return;
    }
    let abort = ep.linger_abort.load(Ordering::Relaxed);
    let st = std::mem::replace(&mut *ep.state(), State::Fresh);
    match st {
        State::Listener { on, flows, .. } => {
            for o in on {
                o.nic.lock().stack.close(o.id);
            }
            // The listener lets go of its flow; connections it accepted still hold it.
            for (nic, f) in flows {
                nic.lock_only().release_shared_flow(f, Duration::ZERO);
            }
        }
        State::Conn {
            on, flow, accepted, ..
        } => {
            // No poll before: the FIN (after any queued data) leaves in this call's only TX
            // kick. A peer that reads a response and closes at once (wrk, curl) otherwise
            // often closes first and keeps the TIME-WAIT the server should keep.
            let mut g = on.nic.lock_only();
            if abort {
                g.stack.abort(on.id);
            } else {
                g.stack.close(on.id);
            }
            on.nic.poll_locked(&mut g);
            if accepted {
                // It rode its listener's flow and port: nothing of its own to hold (and a
                // server closing thousands of connections a second must not queue
                // thousands of delayed removals or keep thousands of fds).
                g.release_shared_flow(flow, CLOSED_FLOW_GRACE);
                return;
            }
            g.remove_flow_later(flow, CLOSED_FLOW_GRACE);
            // The kernel socket held this connection's port; the stack still uses it for the
            // close handshake and TIME-WAIT, so keep it held (a copy of the fd, accel's own)
            // until the flow goes, or the kernel would hand the port to the next connect.
            if let Ok(held) = kernel::dup_cloexec_above(fd, 500) {
                fdtable::mark_internal(held);
                g.close_fd_later(held, CLOSED_FLOW_GRACE);
            }
        }
        State::Udp { on, flow, .. } => {
            let mut g = on.nic.lock();
            g.stack.close(on.id);
            on.nic.poll_locked(&mut g);
            let _ = g.att.filter.remove_flow(&flow);
        }
        State::Fresh | State::Bound { .. } => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses and options.

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
                    State::Conn { on, .. } => match on.nic.lock().stack.take_error(on.id) {
                        Ok(Some(e)) => Errno::from(e).0,
                        _ => 0,
                    },
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

/// setsockopt: stored on the kernel socket (which validates it with the kernel's errno) and
/// honoured by the endpoint where it means something to the stack.
/// The stack-relevant socket options of an endpoint.
#[derive(Clone, Copy, Debug)]
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
        // Nagle stays off unless the program turned TCP_NODELAY off explicitly (accel is a
        // latency shim; the kernel's default would be on).
        let _ = g
            .stack
            .tcp_set_option(id, TcpOption::NoDelay(self.nodelay.unwrap_or(true)));
        let _ = g.stack.tcp_set_option(
            id,
            TcpOption::KeepAlive(self.keepalive.then_some(self.keepidle)),
        );
        let _ = g.stack.tcp_set_option(id, TcpOption::HopLimit(self.ttl));
    }
}

fn opt_int(val: &[u8]) -> Option<i32> {
    val.get(..4)
        .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// Applies the endpoint's options to its connection, if it has one now.
fn apply_opts(ep: &Endpoint) {
    let opts = *lock(&ep.tcp_opts);
    if let State::Conn { on, .. } = &*ep.state() {
        opts.apply(&mut on.nic.lock_only(), on.id);
    }
}

pub fn setsockopt(ep: &Endpoint, fd: RawFd, level: i32, name: i32, val: &[u8]) -> Res<()> {
    kernel::setsockopt(fd, level, name, val)?;
    {
        let mut o = lock(&ep.tcp_opts);
        let before = (o.nodelay, o.keepalive, o.keepidle, o.ttl);
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
        if before != (o.nodelay, o.keepalive, o.keepidle, o.ttl) {
            drop(o);
            apply_opts(ep);
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
pub fn inq(ep: &Endpoint, fd: RawFd) -> Res<i32> {
    match &*ep.state() {
        State::Conn { on, .. } => Ok(on.nic.lock().stack.tcp_recv_queue(on.id).unwrap_or(0) as i32),
        State::Listener { .. } => Err(Errno::EINVAL),
        _ => {
            let _ = fd;
            Ok(0)
        }
    }
}

/// SIOCOUTQ.
pub fn outq(ep: &Endpoint) -> Res<i32> {
    match &*ep.state() {
        State::Conn { on, .. } => Ok(on.nic.lock().stack.tcp_send_queue(on.id).unwrap_or(0) as i32),
        State::Listener { .. } => Err(Errno::EINVAL),
        _ => Ok(0),
    }
}

// ---------------------------------------------------------------------------------------------
// Readiness (poll, select, epoll).

/// poll(2) bits for an accelerated endpoint, from the stack's state as of its last poll (the
/// callers poll each interface once per round). `None` for a fresh socket (the kernel socket
/// answers). `kernel_side`: also look at the kernel socket of a listener or UDP socket (they
/// serve the kernel path too), unless the caller's kernel epoll set already reports it.
pub fn readiness(ep: &Endpoint, fd: RawFd, kernel_side: bool) -> Option<i16> {
    let st = ep.state();
    let mut bits: i16 = 0;
    match &*st {
        State::Fresh => return None,
        State::Bound { .. } => return Some(libc::POLLOUT | libc::POLLHUP),
        State::Listener { on, .. } => {
            for o in on {
                if o.nic.lock_only().stack.readiness(o.id).readable {
                    bits |= libc::POLLIN;
                }
            }
            drop(st);
            if kernel_side {
                bits |= kernel_pollin(fd);
            }
        }
        State::Conn { on, rd_shut, .. } => {
            let r = on.nic.lock_only().stack.readiness(on.id);
            if r.readable || *rd_shut {
                bits |= libc::POLLIN;
            }
            if r.writable {
                bits |= libc::POLLOUT;
            }
            if r.hangup {
                bits |= libc::POLLRDHUP | libc::POLLIN;
            }
            if r.error {
                bits |= libc::POLLERR | libc::POLLHUP;
            }
        }
        State::Udp { on, .. } => {
            let r = on.nic.lock_only().stack.readiness(on.id);
            if r.readable {
                bits |= libc::POLLIN;
            }
            if r.writable {
                bits |= libc::POLLOUT;
            }
            drop(st);
            if kernel_side {
                bits |= kernel_pollin(fd);
            }
        }
    }
    Some(bits)
}

fn kernel_pollin(fd: RawFd) -> i16 {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    match kernel::poll(&mut p, 0) {
        Ok(n) if n > 0 => p[0].revents & libc::POLLIN,
        _ => 0,
    }
}

/// poll(2) over a mix of accelerated and kernel fds.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> Res<usize> {
    let eps: Vec<Option<Arc<Endpoint>>> = fds
        .iter()
        .map(|p| fdtable::get(p.fd).filter(|e| !e.is_fresh()))
        .collect();
    let mut nics: Vec<Arc<Nic>> = Vec::new();
    for ep in eps.iter().flatten() {
        for n in ep.nics() {
            if !nics.iter().any(|x| Arc::ptr_eq(x, &n)) {
                nics.push(n);
            }
        }
    }
    let rt = rt()?;
    let started = Instant::now();
    let deadline = (timeout_ms >= 0).then(|| started + Duration::from_millis(timeout_ms as u64));
    let mut waiting: Option<runtime::Waiting> = None;
    // poll and select are never restarted after a handler (SA_RESTART or not): EINTR.
    let signals = runtime::signals_seen();
    loop {
        if runtime::signals_seen() != signals {
            return Err(Errno::EINTR);
        }
        for nic in &nics {
            drop(nic.lock());
        }
        // Kernel fds first, without waiting.
        let mut kfds: Vec<libc::pollfd> = fds
            .iter()
            .zip(&eps)
            .map(|(p, e)| libc::pollfd {
                fd: if e.is_some() { -1 } else { p.fd },
                events: p.events,
                revents: 0,
            })
            .collect();
        kernel::poll(&mut kfds, 0)?;
        let mut ready = 0;
        for ((p, k), e) in fds.iter_mut().zip(&kfds).zip(&eps) {
            p.revents = match e {
                Some(ep) => {
                    let bits = readiness(ep, p.fd, true).unwrap_or(0);
                    bits & (p.events | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL)
                }
                None => k.revents,
            };
            if p.revents != 0 {
                ready += 1;
            }
        }
        if ready > 0 || timeout_ms == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(ready);
        }
        if runtime::should_spin(rt, started) {
            runtime::make_way(&nics);
            continue;
        }
        if waiting.is_none() {
            // Register, then check once more before sleeping (no lost wake-up).
            waiting = Some(runtime::Waiting::register(&nics).ok_or(Errno::ENOMEM)?);
            continue;
        }
        let efd = waiting.as_ref().map_or(-1, |w| w.efd);
        let mut sleep: Vec<libc::pollfd> = kfds
            .iter()
            .map(|k| libc::pollfd {
                fd: k.fd,
                events: k.events,
                revents: 0,
            })
            .collect();
        // Kernel-path readiness of accelerated listeners and UDP sockets wakes us too.
        for (p, e) in fds.iter().zip(&eps) {
            if let Some(ep) = e {
                if matches!(*ep.state(), State::Listener { .. } | State::Udp { .. }) {
                    sleep.push(libc::pollfd {
                        fd: p.fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
            }
        }
        sleep.push(libc::pollfd {
            fd: efd,
            events: libc::POLLIN,
            revents: 0,
        });
        let cap = if nics.is_empty() { timeout_ms } else { 50 };
        let ms = match deadline {
            Some(d) => (d.saturating_duration_since(Instant::now()).as_millis() as i32)
                .min(if cap < 0 { i32::MAX } else { cap }),
            None => cap,
        };
        let r = kernel::poll(&mut sleep, ms);
        waiting = None;
        if r == Err(Errno::EINTR) {
            return Err(Errno::EINTR);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// epoll: accelerated fds are tracked here, kernel fds stay in the kernel's epoll set.

struct Interest {
    fd: RawFd,
    events: u32,
    data: u64,
    ep: Arc<Endpoint>,
    /// EPOLLONESHOT fired: silent until EPOLL_CTL_MOD.
    disabled: bool,
    /// Whether the fd is also in the kernel's set (fresh sockets; listeners and UDP sockets for
    /// their kernel path).
    in_kernel: bool,
    /// For EPOLLET: the interfaces' progress count when this interest last fired.
    last_gen: u64,
}

static EPOLLS: Mutex<std::collections::BTreeMap<RawFd, Vec<Interest>>> =
    Mutex::new(std::collections::BTreeMap::new());
static ANY_EPOLL: AtomicBool = AtomicBool::new(false);

fn wants_kernel(ep: &Endpoint) -> bool {
    state_wants_kernel(&ep.state())
}

/// Whether a socket in this state belongs in the kernel's epoll set too (fresh sockets, and
/// listeners and UDP sockets for their kernel path).
fn state_wants_kernel(st: &State) -> bool {
    matches!(
        st,
        State::Fresh | State::Listener { .. } | State::Udp { .. }
    )
}

pub fn epoll_ctl(
    epfd: RawFd,
    op: i32,
    fd: RawFd,
    ep: Arc<Endpoint>,
    ev: Option<libc::epoll_event>,
) -> Res<()> {
    let mut all = lock(&EPOLLS);
    // A set that already holds interests was checked to be an epoll fd (an fd that is
    // closed leaves EPOLLS): no readlink of /proc/self/fd per EPOLL_CTL_ADD.
    let known_epoll = all.get(&epfd).is_some_and(|s| !s.is_empty());
    let set = all.entry(epfd).or_default();
    let pos = set.iter().position(|i| i.fd == fd);
    match op {
        libc::EPOLL_CTL_ADD => {
            if pos.is_some() {
                return Err(Errno(libc::EEXIST));
            }
            let ev = ev.ok_or(Errno::EFAULT)?;
            let in_kernel = wants_kernel(&ep);
            if in_kernel {
                kernel::epoll_ctl(epfd, op, fd, Some(ev))?;
            } else if !known_epoll && !kernel::is_epoll(epfd) {
                return Err(Errno::EINVAL);
            }
            set.push(Interest {
                fd,
                events: ev.events,
                data: ev.u64,
                ep,
                disabled: false,
                in_kernel,
                last_gen: 0,
            });
            ANY_EPOLL.store(true, Ordering::Relaxed);
        }
        libc::EPOLL_CTL_MOD => {
            let i = pos.ok_or(Errno(libc::ENOENT))?;
            let ev = ev.ok_or(Errno::EFAULT)?;
            if set[i].in_kernel {
                kernel::epoll_ctl(epfd, op, fd, Some(ev))?;
            }
            let it = &mut set[i];
            it.events = ev.events;
            it.data = ev.u64;
            it.disabled = false;
            it.last_gen = 0;
        }
        libc::EPOLL_CTL_DEL => {
            let i = pos.ok_or(Errno(libc::ENOENT))?;
            if set[i].in_kernel {
                let _ = kernel::epoll_ctl(epfd, op, fd, None);
            }
            set.remove(i);
        }
        _ => return Err(Errno::EINVAL),
    }
    Ok(())
}

/// An fd was closed: forget its interests (the kernel drops it from its sets by itself), and
/// the set itself if it was an epoll fd.
pub fn on_close(fd: RawFd) {
    if !ANY_EPOLL.load(Ordering::Relaxed) {
        return;
    }
    let mut all = lock(&EPOLLS);
    all.remove(&fd);
    for set in all.values_mut() {
        set.retain(|i| i.fd != fd);
    }
}

fn poll_to_epoll(bits: i16) -> u32 {
    let b = bits as u16 as u32;
    let mut e = 0;
    if b & libc::POLLIN as u32 != 0 {
        e |= libc::EPOLLIN as u32;
    }
    if b & libc::POLLOUT as u32 != 0 {
        e |= libc::EPOLLOUT as u32;
    }
    if b & libc::POLLERR as u32 != 0 {
        e |= libc::EPOLLERR as u32;
    }
    if b & libc::POLLHUP as u32 != 0 {
        e |= libc::EPOLLHUP as u32;
    }
    if b & libc::POLLRDHUP as u32 != 0 {
        e |= libc::EPOLLRDHUP as u32;
    }
    e
}

/// Accelerated events of one epoll set, written to `out`; the nics involved in `nics`.
/// Polls every interface once: readiness (read by [`collect`]) then reflects what arrived.
/// Returns their summed progress counts.
fn poll_all() -> u64 {
    let Some(rt) = runtime::current() else {
        return 0;
    };
    rt.nics
        .iter()
        .map(|nic| {
            drop(nic.lock());
            nic.generation()
        })
        .sum()
}

/// The ready accelerated members of set `epfd`, written to `out`; `nics` gets the interfaces
/// they are served on.
fn collect(epfd: RawFd, out: &mut [libc::epoll_event], nics: &mut Vec<Arc<Nic>>) -> usize {
    let mut all = lock(&EPOLLS);
    let Some(set) = all.get_mut(&epfd) else {
        return 0;
    };
    let mut n = 0;
    for it in set.iter_mut() {
        // One look at the socket's state for all of this (a lock, no allocation): this runs
        // for every member on every round of a spinning epoll_wait.
        let (fresh, leaves_kernel, gen) = {
            let st = it.ep.state();
            let fresh = matches!(*st, State::Fresh);
            let mut gen = 0u64;
            st.each_nic(|nic| {
                gen = gen.wrapping_add(nic.generation());
                if !nics.iter().any(|x| Arc::ptr_eq(x, nic)) {
                    nics.push(nic.clone());
                }
            });
            (fresh, it.in_kernel && !state_wants_kernel(&st), gen)
        };
        // Sockets that became accelerated while in the set: a connection leaves the kernel's
        // set (its unconnected kernel socket would report bogus events).
        if leaves_kernel {
            let _ = kernel::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, it.fd, None);
            it.in_kernel = false;
        }
        if fresh {
            continue;
        }
        if it.disabled || n >= out.len() {
            continue;
        }
        // The kernel side of a listener or UDP socket in the kernel's set is reported by the
        // kernel's epoll_wait; looking here too cost a poll() per interest per round and
        // could report the fd twice.
        let bits = readiness(&it.ep, it.fd, !it.in_kernel)
            .map(poll_to_epoll)
            .unwrap_or(0);
        let mask = it.events | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32;
        let fired = bits & mask;
        if fired == 0 {
            continue;
        }
        if it.events & libc::EPOLLET as u32 != 0 {
            if gen == it.last_gen {
                continue;
            }
            it.last_gen = gen;
        }
        if it.events & libc::EPOLLONESHOT as u32 != 0 {
            it.disabled = true;
        }
        out[n] = libc::epoll_event {
            events: fired,
            u64: it.data,
        };
        n += 1;
    }
    n
}

/// epoll_wait over a set with accelerated members; `None` when it has none (the kernel waits).
pub fn epoll_wait(
    epfd: RawFd,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> Option<Res<usize>> {
    if !ANY_EPOLL.load(Ordering::Relaxed) || lock(&EPOLLS).get(&epfd).is_none_or(|s| s.is_empty()) {
        return None;
    }
    Some(epoll_wait_inner(epfd, events, timeout_ms))
}

fn epoll_wait_inner(epfd: RawFd, events: &mut [libc::epoll_event], timeout_ms: i32) -> Res<usize> {
    let rt = rt()?;
    let started = Instant::now();
    let deadline = (timeout_ms >= 0).then(|| started + Duration::from_millis(timeout_ms as u64));
    let mut waiting: Option<runtime::Waiting> = None;
    // epoll_wait is never restarted after a handler (SA_RESTART or not): EINTR.
    let signals = runtime::signals_seen();
    let mut rounds: u32 = 0;
    let mut nics = Vec::new();
    // The interfaces' progress count at a round that found nothing ready: until it moves, a
    // spinning round only polls. Readiness changes that move no count (a timer that closes
    // a socket without sending, another thread's call) are seen by the full look every
    // KERNEL_CHECK_EVERY rounds.
    let mut idle_at: Option<u64> = None;
    loop {
        if runtime::signals_seen() != signals {
            return Err(Errno::EINTR);
        }
        let progress = poll_all();
        let look = idle_at != Some(progress) || rounds.is_multiple_of(KERNEL_CHECK_EVERY);
        let mut n = 0;
        if look {
            nics.clear();
            n = collect(epfd, events, &mut nics);
            idle_at = (n == 0).then_some(progress);
        }
        // The program's kernel fds cost a syscall to look at: every call looks once, a
        // spinning call then every KERNEL_CHECK_EVERY rounds (a sleeping one waits on them).
        if n < events.len() && rounds.is_multiple_of(KERNEL_CHECK_EVERY) {
            n += kernel::epoll_wait(epfd, &mut events[n..], 0)?;
        }
        // The clock is read every DEADLINE_CHECK_EVERY rounds of a spin (a round without
        // work is a few dozen ns; a clock read on each was an eighth of nginx's time).
        let timed_out = rounds.is_multiple_of(DEADLINE_CHECK_EVERY)
            && deadline.is_some_and(|d| Instant::now() >= d);
        rounds = rounds.wrapping_add(1);
        if n > 0 || timeout_ms == 0 || timed_out {
            return Ok(n);
        }
        if !nics.is_empty() && runtime::should_spin(rt, started) {
            runtime::make_way(&nics);
            continue;
        }
        if waiting.is_none() && !nics.is_empty() {
            // Register, then look once more before sleeping (no lost wake-up).
            waiting = Some(runtime::Waiting::register(&nics).ok_or(Errno::ENOMEM)?);
            idle_at = None;
            continue;
        }
        // Sleep in this thread's private epoll, which holds our eventfd, with the program's
        // epoll fd nested in it for the nap: either wakes us; the program's set is untouched.
        let private = runtime::thread_epoll().ok_or(Errno::ENOMEM)?;
        let nest = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: epfd as u64,
        };
        match kernel::epoll_ctl(private, libc::EPOLL_CTL_ADD, epfd, Some(nest)) {
            Ok(()) => {}
            Err(e) if e == Errno(libc::EEXIST) => {}
            Err(e) => return Err(e),
        }
        let cap = if nics.is_empty() { 1000 } else { 50 };
        let ms = match deadline {
            Some(d) => (d.saturating_duration_since(Instant::now()).as_millis() as i32).min(cap),
            None => cap,
        };
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 2];
        let r = kernel::epoll_wait(private, &mut ev, ms);
        let _ = kernel::epoll_ctl(private, libc::EPOLL_CTL_DEL, epfd, None);
        waiting = None;
        r?;
        // Whatever woke us is looked at next round, kernel fds included.
        rounds = 0;
    }
}

/// One accelerated socket for accel-stat: its interface and the row describing it.
pub fn describe(fd: RawFd, ep: &Endpoint) -> Option<(String, libaccel::stats::Socket)> {
    let proto = match ep.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let row =
        |state: String, local: SocketAddrV4, remote: Option<SocketAddrV4>, rq: usize, sq: usize| {
            libaccel::stats::Socket {
                fd,
                proto: proto.into(),
                state,
                local: local.to_string(),
                remote: remote.map(|r| r.to_string()),
                recv_queue: rq as u64,
                send_queue: sq as u64,
            }
        };
    match &*ep.state() {
        State::Listener { on, local, .. } => Some((
            on.first()?.nic.name.clone(),
            row("LISTEN".into(), *local, None, 0, 0),
        )),
        State::Conn {
            on, local, remote, ..
        } => {
            let g = on.nic.lock_only();
            let state = g.stack.tcp_state(on.id).map_or("CLOSED".into(), |s| {
                format!("{s}").to_uppercase().replace('-', "_")
            });
            let rq = g.stack.tcp_recv_queue(on.id).unwrap_or(0);
            let sq = g.stack.tcp_send_queue(on.id).unwrap_or(0);
            Some((
                on.nic.name.clone(),
                row(state, *local, Some(*remote), rq, sq),
            ))
        }
        State::Udp {
            on, local, peer, ..
        } => Some((on.nic.name.clone(), row("UDP".into(), *local, *peer, 0, 0))),
        _ => None,
    }
}
