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
//!
//! - [`setup`]: socket, bind, listen, accept, connect.
//! - [`data`]: send and receive in all their forms.
//! - [`options`]: socket options, names, queue sizes.
//! - [`close`]: shutdown and the release of the last fd.
//! - [`describe`]: rows for accel-stat.
//! - [`inherit`], [`handoff`], [`listeners`]: sockets shared with forked children.

pub mod close;
pub mod data;
pub mod describe;
pub mod handoff;
pub mod inherit;
pub mod listeners;
pub mod options;
pub mod setup;
#[cfg(test)]
mod tests;

use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use libaccel::xdp::{FlowKey, Proto as FlowProto};
use stack::SocketId;

use crate::errno::{Errno, Res};
use crate::fd;
use crate::runtime::{self, Nic, Runtime};
use crate::sys::kernel;

pub use options::TcpOpts;

/// Every accelerated fd and the endpoint it refers to.
pub static SOCKETS: fd::Table<Endpoint> = fd::Table::new();

/// The endpoint of `fd`, if it is accelerated.
#[inline]
pub fn get(fd: RawFd) -> Option<Arc<Endpoint>> {
    SOCKETS.get(fd)
}

/// The runtime, started on first use with this layer's hooks.
pub fn runtime() -> Option<&'static Runtime> {
    runtime::get_or_start(runtime::Hooks {
        rows: describe::rows,
        handoff: handoff::serve_child,
        at_exit: handoff::at_exit,
        forked: listeners::after_fork_in_parent,
    })
}

/// The running runtime, for a call on an accelerated fd (which exists only when it runs).
pub fn rt() -> Res<&'static Runtime> {
    runtime::current().ok_or(Errno::EBADF)
}

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
        /// As listen() asked (a forked child listening again asks the same).
        backlog: usize,
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

impl State {
    /// Calls `f` with each interface the socket is served on (none while fresh or bound).
    pub fn each_nic(&self, mut f: impl FnMut(&Arc<Nic>)) {
        match self {
            State::Listener { on, .. } => on.iter().for_each(|o| f(&o.nic)),
            State::Conn { on, .. } | State::Udp { on, .. } => f(&on.nic),
            _ => {}
        }
    }
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
    /// The process generation this endpoint belongs to (see `inherit`): older in a forked
    /// child until the child adopts it.
    process: AtomicU64,
    /// Names it across fork (a child asks its parent for the connection with this serial).
    pub serial: u64,
    /// Forks the process had made when it was created: a child of a later fork may hold it.
    pub forks_before: u64,
    /// A listener whose process takes a share of its connections (see `listeners`).
    serving: AtomicBool,
    /// A listener this process accepted on or waited on.
    used: AtomicBool,
    /// In an epoll set (see [`restated`]).
    watched: AtomicBool,
}

/// Changes of watched endpoints' states that no stack notes for them (a connect or a listen
/// on a socket already in an epoll set, shutdown(SHUT_RD), a hand-over to the kernel): an
/// epoll set that sees this count move looks at every member once. Stacks note what they
/// change themselves (`Stack::changed_since`).
static RESTATED: AtomicU64 = AtomicU64::new(0);

/// The count of [`Endpoint::restated`] calls on watched endpoints.
pub fn restated() -> u64 {
    RESTATED.load(Ordering::Acquire)
}

/// Serials of endpoints (unique in a process tree: a child continues its parent's count
/// from the copy it inherited, and numbers only new endpoints, which the parent never sees).
static SERIAL: AtomicU64 = AtomicU64::new(1);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Endpoint {
    pub fn new(proto: Proto, nonblock: bool) -> Endpoint {
        Endpoint {
            proto,
            state: Mutex::new(State::Fresh),
            nonblock: AtomicBool::new(nonblock),
            rcvtimeo: Mutex::new(None),
            sndtimeo: Mutex::new(None),
            linger_abort: AtomicBool::new(false),
            tcp_opts: Mutex::new(TcpOpts::default()),
            refs: AtomicUsize::new(1),
            process: AtomicU64::new(runtime::generation()),
            serial: SERIAL.fetch_add(1, Ordering::Relaxed),
            forks_before: runtime::family::forks(),
            serving: AtomicBool::new(false),
            used: AtomicBool::new(false),
            watched: AtomicBool::new(false),
        }
    }

    /// It joins an epoll set: changes of its state are counted from now (see [`restated`]).
    pub fn watch(&self) {
        self.watched.store(true, Ordering::SeqCst);
    }

    /// Its state changed in a way its readiness may follow (call after the change).
    pub fn restated(&self) {
        if self.watched.load(Ordering::SeqCst) {
            RESTATED.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Whether this endpoint came from an ancestor process and was not adopted yet (one load).
    #[inline]
    pub fn from_another_process(&self) -> bool {
        self.process.load(Ordering::Acquire) != runtime::generation()
    }

    fn mark_adopted(&self) {
        self.process.store(runtime::generation(), Ordering::Release);
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

    /// The interfaces the socket is served on.
    pub fn nics(&self) -> Vec<Arc<Nic>> {
        let mut v = Vec::new();
        self.state().each_nic(|n| v.push(n.clone()));
        v
    }

    fn rcvtimeo(&self) -> Option<Duration> {
        *lock(&self.rcvtimeo)
    }

    fn sndtimeo(&self) -> Option<Duration> {
        *lock(&self.sndtimeo)
    }
}

impl fd::Shared for Endpoint {
    fn add_ref(&self) {
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    fn release(self: Arc<Self>, fd: RawFd) {
        close::release(self, fd)
    }
}

/// Gives `fd` to the kernel for good (its endpoint is forgotten).
fn to_kernel(fd: RawFd) {
    SOCKETS.remove(fd);
}

/// Makes the kernel socket non-blocking (the endpoint keeps the application's mode).
fn kernel_nonblocking(fd: RawFd) {
    if let Ok(fl) = kernel::getfl(fd) {
        let _ = kernel::setfl(fd, fl | libc::O_NONBLOCK);
    }
}

pub(crate) fn flow_key(proto: Proto, local: SocketAddrV4, remote: Option<SocketAddrV4>) -> FlowKey {
    let p = match proto {
        Proto::Tcp => FlowProto::Tcp,
        Proto::Udp => FlowProto::Udp,
    };
    match remote {
        Some(r) => FlowKey::connected(p, local, r),
        None => FlowKey::listening(p, local),
    }
}

/// Whether the stack or the flow filter had no room for a socket: the stack's socket memory
/// is used up (its limit, `ACCEL_MEM_MAX`), or the XDP flow map is full. Such a socket is left
/// to the kernel, which serves it as if accel were not there (its kernel socket is already
/// bound or listening).
fn no_room<E: std::fmt::Display>(e: &stack::engine::OpenError<E>) -> bool {
    match e {
        stack::engine::OpenError::Stack(stack::Error::NoBufferSpace) => true,
        stack::engine::OpenError::Stack(_) => false,
        stack::engine::OpenError::Flow(e) => {
            tracing::warn!(error = %e, "the XDP filter takes no more flows: the socket stays on the kernel");
            true
        }
    }
}

/// The errno for a socket that could not be opened with its flow.
fn open_error<E: std::fmt::Display>(e: stack::engine::OpenError<E>) -> Errno {
    match e {
        stack::engine::OpenError::Stack(e) => e.into(),
        stack::engine::OpenError::Flow(e) => {
            tracing::warn!(error = %e, "adding a flow to the XDP filter");
            Errno::EADDRINUSE
        }
    }
}
