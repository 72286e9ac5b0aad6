//! Socket semantics over an in-memory interface: no root, no NIC, no namespace.
//!
//! The accelerated side is the real preload code (socket layer, runtime, wait primitive,
//! engine, stack) over `stack::memory`'s wire instead of AF_XDP queues, with real kernel
//! sockets holding the fd numbers and ports (bound to 127.0.0.2, which any process may use).
//! The peer at 127.0.0.3 is a plain stack driven through its API. A pump thread polls both
//! ends every 100 us, as the progress thread and a NIC would; tests wait on conditions, never
//! on time alone.

mod readiness;
mod tcp;
mod udp;

use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libaccel::xdp::FlowKey;
use stack::engine::Engine;
use stack::memory::{sync_wire, MemoryBackend, SyncLink};
use stack::testing::{MapResolver, MAC_A, MAC_B};
use stack::{SocketId, Stack};

use super::{data, options, setup, Endpoint, SOCKETS};
use crate::addr::{parse_v4, SockAddrBuf};
use crate::config::Config;
use crate::errno::{Errno, Res};
use crate::runtime::{Nic, Runtime};
use crate::sys::kernel;

/// The accelerated interface's address.
pub const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The peer's address.
pub const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// The peer: a stack of its own on the other end of the wire.
pub struct Peer {
    pub stack: Stack,
    link: SyncLink,
    resolver: MapResolver,
    epoch: Instant,
}

impl Peer {
    fn poll(&mut self) {
        let now = stack::Instant::from_micros(self.epoch.elapsed().as_micros() as i64);
        self.stack.poll(now, &mut self.link, &mut self.resolver);
    }
}

/// An in-memory interface under a runtime, its peer, and the pump that drives both.
pub struct Net {
    pub rt: Runtime,
    pub nic: Arc<Nic>,
    peer: Arc<Mutex<Peer>>,
    stop: Arc<AtomicBool>,
    pump: Option<JoinHandle<()>>,
    next_port: u16,
}

impl Net {
    /// With the default profile (spin 50 us, then sleep).
    pub fn new() -> Net {
        Net::with_config(Config::from_lookup(|_| None).expect("default config"))
    }

    pub fn with_config(config: Config) -> Net {
        let (a, b) = sync_wire();
        let epoch = Instant::now();
        let t0 = stack::Instant::from_micros(0);
        let mut ca = stack::Config::new(MAC_A, A, 8);
        ca.random_seed = 1;
        let backend: MemoryBackend<FlowKey> = MemoryBackend::new(a, &[(B, MAC_B)]);
        let engine = Engine::new(Stack::new(ca, t0), backend, t0);
        let nic = Arc::new(Nic::new("mem0", A, 8, engine, epoch));
        let mut cb = stack::Config::new(MAC_B, B, 8);
        cb.random_seed = 2;
        let peer = Arc::new(Mutex::new(Peer {
            stack: Stack::new(cb, t0),
            link: b,
            resolver: MapResolver::new(&[(A, MAC_A)]),
            epoch,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let pump = {
            let (nic, peer, stop) = (nic.clone(), peer.clone(), stop.clone());
            std::thread::spawn(move || {
                crate::sys::guard::enter_guard();
                while !stop.load(Ordering::Relaxed) {
                    lock(&peer).poll();
                    nic.poll_now();
                    lock(&peer).poll();
                    std::thread::sleep(Duration::from_micros(100));
                }
            })
        };
        Net {
            rt: Runtime::new(config, vec![nic.clone()]),
            nic,
            peer,
            stop,
            pump: Some(pump),
            next_port: 40000,
        }
    }

    /// Runs `f` on the peer (then polls it, so what `f` queued leaves).
    pub fn peer<R>(&self, f: impl FnOnce(&mut Stack) -> R) -> R {
        let mut p = lock(&self.peer);
        let r = f(&mut p.stack);
        p.poll();
        r
    }

    /// Waits until `cond` holds on the peer, at most 5 s (then the test fails naming `what`).
    #[track_caller]
    pub fn until(&self, what: &str, mut cond: impl FnMut(&mut Stack) -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if self.peer(&mut cond) {
                return;
            }
            std::thread::yield_now();
        }
        panic!("timed out waiting for: {what}");
    }

    /// A port for the peer's own sockets.
    pub fn peer_port(&mut self) -> u16 {
        self.next_port += 1;
        self.next_port
    }

    /// The peer connects from a port of its own to `to`.
    pub fn peer_connect(&mut self, to: SocketAddrV4) -> SocketId {
        let from = SocketAddrV4::new(B, self.peer_port());
        self.peer(|s| s.tcp_connect(from, to))
            .expect("peer connect")
    }

    /// The peer listens on a port of its own.
    pub fn peer_listen(&mut self, backlog: usize) -> (SocketId, SocketAddrV4) {
        let at = SocketAddrV4::new(B, self.peer_port());
        let id = self
            .peer(|s| s.tcp_listen(at, backlog))
            .expect("peer listen");
        (id, at)
    }

    /// The peer's next accepted connection, waiting for it.
    #[track_caller]
    pub fn peer_accept(&self, id: SocketId) -> SocketId {
        let mut got = None;
        self.until("the peer accepts", |s| {
            got = s.tcp_accept(id).ok().map(|(c, _)| c);
            got.is_some()
        });
        got.unwrap()
    }

    /// Reads everything the peer has for `id` until `n` bytes arrived.
    #[track_caller]
    pub fn peer_read(&self, id: SocketId, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        self.until("the peer reads the bytes", |s| {
            while let Ok(k) = s.tcp_recv(id, &mut buf) {
                if k == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..k]);
            }
            out.len() >= n
        });
        out
    }

    /// The peer sends all of `data` on `id` (as the send buffer drains).
    #[track_caller]
    pub fn peer_write(&self, id: SocketId, data: &[u8]) {
        let mut sent = 0;
        self.until("the peer sends the bytes", |s| {
            while sent < data.len() {
                match s.tcp_send(id, &data[sent..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => sent += k,
                }
            }
            sent == data.len()
        });
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The accelerated side, as the abi layer calls the socket layer.

/// An fd and its endpoint.
pub struct Sock {
    pub fd: RawFd,
    pub ep: Arc<Endpoint>,
}

impl std::fmt::Debug for Sock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sock(fd {})", self.fd)
    }
}

impl Sock {
    pub fn new(net: &Net, ty: i32) -> Sock {
        let fd = kernel::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0).expect("socket");
        setup::on_socket(Some(&net.rt), fd, libc::AF_INET, ty, 0);
        let ep = super::get(fd).expect("tracked");
        Sock { fd, ep }
    }

    pub fn tcp(net: &Net) -> Sock {
        Sock::new(net, libc::SOCK_STREAM)
    }

    pub fn udp(net: &Net) -> Sock {
        Sock::new(net, libc::SOCK_DGRAM)
    }

    pub fn bind(&self, net: &Net, ip: Ipv4Addr, port: u16) -> Res<()> {
        setup::bind(&net.rt, &self.ep, self.fd, sa(ip, port).as_bytes())
    }

    /// The local address the kernel socket holds.
    pub fn local(&self) -> SocketAddrV4 {
        let a = options::getsockname(&self.ep, self.fd).expect("getsockname");
        parse_v4(a.as_bytes()).expect("v4")
    }

    /// A TCP listener on A at a port the kernel picked.
    pub fn listener(net: &Net, backlog: i32) -> Sock {
        let s = Sock::tcp(net);
        s.bind(net, A, 0).expect("bind");
        setup::listen(&net.rt, &s.ep, s.fd, backlog).expect("listen");
        s
    }

    pub fn accept(&self, net: &Net) -> Res<(Sock, SocketAddrV4)> {
        let (fd, a) = setup::accept(&net.rt, &self.ep, self.fd, libc::SOCK_CLOEXEC)?;
        let ep = super::get(fd).expect("accepted fd tracked");
        Ok((Sock { fd, ep }, parse_v4(a.as_bytes()).expect("v4")))
    }

    pub fn connect(&self, net: &Net, to: SocketAddrV4) -> Res<()> {
        setup::connect(&net.rt, &self.ep, self.fd, SockAddrBuf::v4(to).as_bytes())
    }

    pub fn send(&self, net: &Net, data: &[u8]) -> Res<usize> {
        self.send_flags(net, data, libc::MSG_NOSIGNAL)
    }

    pub fn send_flags(&self, net: &Net, data: &[u8], flags: i32) -> Res<usize> {
        data::send(
            &net.rt,
            &self.ep,
            self.fd,
            &[IoSlice::new(data)],
            flags,
            None,
        )
    }

    pub fn send_to(&self, net: &Net, data: &[u8], to: SocketAddrV4) -> Res<usize> {
        let a = SockAddrBuf::v4(to);
        data::send(
            &net.rt,
            &self.ep,
            self.fd,
            &[IoSlice::new(data)],
            0,
            Some(a.as_bytes()),
        )
    }

    pub fn recv(&self, net: &Net, buf: &mut [u8]) -> Res<usize> {
        self.recv_flags(net, buf, 0).map(|r| r.len)
    }

    pub fn recv_flags(&self, net: &Net, buf: &mut [u8], flags: i32) -> Res<data::Received> {
        data::recv(
            &net.rt,
            &self.ep,
            self.fd,
            &mut [IoSliceMut::new(buf)],
            flags,
        )
    }

    /// Reads until `n` bytes or EOF.
    pub fn read_exact(&self, net: &Net, n: usize) -> Vec<u8> {
        let mut out = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match self.recv(net, &mut out[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) => panic!("recv after {got} of {n} bytes: {e:?}"),
            }
        }
        out.truncate(got);
        out
    }

    pub fn set_nonblocking(&self, on: bool) {
        self.ep.set_nonblocking(on);
    }

    pub fn so_error(&self) -> i32 {
        let mut v = [0u8; 4];
        options::getsockopt(&self.ep, self.fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut v)
            .expect("SO_ERROR");
        i32::from_ne_bytes(v)
    }

    pub fn set_timeout(&self, name: i32, d: Duration) {
        let mut tv = [0u8; 16];
        tv[..8].copy_from_slice(&(d.as_secs() as i64).to_ne_bytes());
        tv[8..].copy_from_slice(&(d.subsec_micros() as i64).to_ne_bytes());
        options::setsockopt(&self.ep, self.fd, libc::SOL_SOCKET, name, &tv).expect("timeout");
    }

    /// Closes the fd as the program's close() does.
    pub fn close(self) {
        crate::ready::epoll::forget(self.fd);
        crate::fd::ops::close(&SOCKETS, self.fd).expect("close");
    }
}

pub fn sa(ip: Ipv4Addr, port: u16) -> SockAddrBuf {
    SockAddrBuf::v4(SocketAddrV4::new(ip, port))
}

/// A byte pattern that shows reordering and loss.
pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Whether `r` failed with `e`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: Res<T>, e: i32) {
    match r {
        Err(got) => assert_eq!(got, Errno(e), "expected errno {e}, got {got:?}"),
        Ok(v) => panic!("expected errno {e}, got Ok({v:?})"),
    }
}
