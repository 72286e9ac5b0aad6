//! accel's userspace TCP/UDP stack: one smoltcp [`Interface`] (IP medium) and its sockets over a
//! [`link::Link`] that carries Ethernet frames. The stack strips and writes the Ethernet header
//! itself, looks at every packet before smoltcp does (listen backlogs, unbound UDP ports), keeps
//! a socket table with ids that are never reused, and reaps closed sockets. It does no I/O and
//! reads no clock: [`Stack::poll`] is driven with the current time and [`Stack::poll_at`] says
//! when the next timer is due.
//!
//! Where a packet goes: `device` (Ethernet in/out) -> `ingress` (parse, find the one socket by
//! 4-tuple or port in `sockets`, or `time_wait`) -> smoltcp's TCP/UDP for that socket alone ->
//! `tcp_api` / `listen` / `udp` (socket API). Egress and timers visit only the sockets that
//! need it (`sockets`).

use rustc_hash::FxHashMap as HashMap;

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::iface::{Interface, SocketSet};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::tcp;

use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

pub use smoltcp::socket::tcp::State as TcpState;
pub use smoltcp::time::{Duration, Instant};

mod budget;
pub mod changes;
mod checksum;
mod counters;
mod device;
pub mod engine;
mod error;
mod ingress;
pub mod link;
mod listen;
mod sockets;
mod tcp_api;
mod time_wait;
mod udp;
mod unresolved;

#[cfg(test)]
mod fault_runs;
#[cfg(test)]
mod limits_tests;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
#[cfg(test)]
mod scale_tests;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use counters::Counters;
pub use error::{errno, Error};
/// A connection as a kernel needs it to take over (see [`Stack::tcp_snapshot`]).
pub use smoltcp::socket::tcp::RepairState as TcpSnapshot;
pub use tcp_api::TcpOption;
pub use time_wait::TIME_WAIT;

use listen::Listener;
use sockets::{Handle as SocketHandle, Sockets};
use tcp_api::TcpConn;
use udp::UdpSock;

/// Reaped TCP sockets kept for reuse (at most this many times the two buffers' size; they count
/// in the stack's socket memory, and go first when a new socket needs room).
const SPARE_TCP_SOCKETS: usize = 32;

/// Largest backlog honoured (the kernel's default `somaxconn`).
pub const MAX_BACKLOG: usize = 4096;

/// How long a socket closed by the application may linger (e.g. in FIN-WAIT-2 waiting for a
/// peer that never closes) before it is aborted; the kernel's `tcp_fin_timeout` is 60 s.
pub const ORPHAN_TIMEOUT: Duration = Duration::from_secs(60);

/// Delayed-ACK timeout given to every TCP socket: long enough for a reply to carry the ACK,
/// short enough not to stall a peer that runs Nagle.
pub const ACK_DELAY: Duration = Duration::from_millis(1);

/// An active open that got no answer is abandoned after this (the kernel's 6 SYN retries).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(127);

/// A half-open connection whose peer went silent is dropped after this (the kernel's 5 SYN-ACK
/// retries), so spoofed SYNs cannot hold the backlog forever.
pub const SYN_RECEIVED_TIMEOUT: Duration = Duration::from_secs(63);

/// Frames one poll takes from the link before it runs egress and flushes.
pub const RX_BUDGET: usize = 256;

/// TCP buffer bytes per socket and direction unless set otherwise: 64 KiB, so that 10,000
/// connections may take 1.25 GiB at most (the kernel starts a socket at 128 KiB to receive and
/// 16 KiB to send and grows them, which smoltcp cannot). On a veth link, bulk transfers ran
/// as fast with 64 KiB as with 256 KiB; a link with a larger bandwidth-delay product needs
/// more (`ACCEL_TCP_RMEM`, `ACCEL_TCP_WMEM`).
pub const DEFAULT_TCP_BUFFER: usize = 64 * 1024;

/// UDP payload bytes per socket and direction unless set otherwise (the kernel's
/// `rmem_default` is 208 KiB).
pub const DEFAULT_UDP_BUFFER: usize = 256 * 1024;

/// UDP payload bytes per datagram slot: a socket holds as many datagrams as its buffer holds
/// of 256-byte ones (the kernel charges a small datagram about a kilobyte of its buffer).
pub const UDP_BYTES_PER_SLOT: usize = 256;

/// How a stack is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub mac: link::Mac,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    /// Default gateway. Next hops are the [`link::Resolver`]'s business; this only tells smoltcp
    /// that off-link destinations are reachable.
    pub gateway: Option<Ipv4Addr>,
    /// Largest IP packet (interface MTU); fixed at creation.
    pub mtu: usize,
    /// TCP bytes buffered per socket: receiving (also the largest window advertised) and
    /// sending (the most in flight). Allocated whole with the socket (smoltcp's buffers do
    /// not grow), so they bound what a connection costs; how much of them is memory depends
    /// on the allocator (the preload's maps them: a page is memory once data touched it).
    pub tcp_rx_buffer: usize,
    pub tcp_tx_buffer: usize,
    /// UDP payload bytes buffered per socket and direction.
    pub udp_rx_buffer: usize,
    pub udp_tx_buffer: usize,
    /// UDP datagrams (metadata slots) buffered per socket and direction.
    pub udp_packets: usize,
    /// Most bytes of socket buffers the stack holds (TCP and UDP, both ways, spare sockets
    /// included); `None`: no limit. A socket that would go over is not made (see `budget`).
    pub mem_max: Option<usize>,
    /// Seed for smoltcp's initial sequence numbers; give each stack a random one.
    pub random_seed: u64,
    /// The link is a software link (veth) whose kernel peer may hand over TCP/UDP packets
    /// with only the pseudo-header partial sum in their checksum field (the kernel's
    /// CHECKSUM_PARTIAL: checksum offload to a device that never puts the frame on a wire).
    /// Such packets are then accepted (and counted in `rx_partial_checksum`); every other
    /// packet is verified in full. Never set it for a NIC: a frame from a wire must carry its
    /// full checksum.
    pub partial_checksums: bool,
}

impl Config {
    /// Sets the UDP payload bytes buffered per socket and direction, with a datagram slot per
    /// [`UDP_BYTES_PER_SLOT`] of the larger (at least 16, at most 4096).
    pub fn set_udp_buffers(&mut self, rx: usize, tx: usize) {
        self.udp_rx_buffer = rx;
        self.udp_tx_buffer = tx;
        self.udp_packets = (rx.max(tx) / UDP_BYTES_PER_SLOT).clamp(16, 4096);
    }

    pub fn new(mac: link::Mac, addr: Ipv4Addr, prefix_len: u8) -> Config {
        let mut seed = u64::from(addr.to_bits());
        for b in mac {
            seed = seed.rotate_left(8) ^ u64::from(b);
        }
        Config {
            mac,
            addr,
            prefix_len,
            gateway: None,
            mtu: 1500,
            tcp_rx_buffer: DEFAULT_TCP_BUFFER,
            tcp_tx_buffer: DEFAULT_TCP_BUFFER,
            udp_rx_buffer: DEFAULT_UDP_BUFFER,
            udp_tx_buffer: DEFAULT_UDP_BUFFER,
            udp_packets: DEFAULT_UDP_BUFFER / UDP_BYTES_PER_SLOT,
            mem_max: None,
            random_seed: seed,
            partial_checksums: false,
        }
    }
}

/// Names a socket of this stack. Never reused for another socket.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SocketId(u64);

/// What a socket is ready for (poll/epoll events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer closed its side or reset the connection.
    pub hangup: bool,
    pub error: bool,
}

pub(crate) enum Entry {
    Tcp(TcpConn),
    Listener(Listener),
    Udp(UdpSock),
}

/// A closed UDP socket whose accepted datagrams are still queued for sending.
struct Closing {
    handle: SocketHandle,
    deadline: Instant,
}

/// One userspace TCP/UDP stack.
pub struct Stack {
    iface: Interface,
    /// Every TCP and UDP socket, with the 4-tuple map, the timers and the egress queue that
    /// drive them one by one (see `sockets`).
    sockets: Sockets,
    /// Given to smoltcp with packets of other protocols (ICMP): it answers them itself.
    no_sockets: SocketSet<'static>,
    caps: DeviceCapabilities,
    config: Config,
    counters: Counters,
    next_id: u64,
    table: HashMap<u64, Entry>,
    /// Listening port -> listener id.
    listeners: HashMap<u16, u64>,
    /// Bound UDP port -> socket id.
    udp_ports: HashMap<u16, u64>,
    /// Active opens not yet established or refused, with the time each started.
    connecting: Vec<(u64, Instant)>,
    /// Closed UDP sockets whose accepted datagrams are still queued for sending.
    udp_closing: Vec<Closing>,
    /// Connections in TIME-WAIT, without their sockets.
    time_wait: time_wait::TimeWaits,
    /// Time of the last poll (or creation): when a close started, for the orphan timeout.
    now: Instant,
    /// Packets waiting for the kernel to resolve their next hop.
    unresolved: unresolved::Unresolved,
    /// Reaped TCP sockets kept with their buffers for the next connection: a new socket costs
    /// two buffer allocations that glibc zeroes (512 KiB by default), per accept.
    spare_tcp: Vec<tcp::Socket<'static>>,
    /// Bytes of socket buffers held, against `config.mem_max`.
    budget: budget::Budget,
    /// Application sockets the stack changed, for readiness waiters (see `changes`).
    changes: changes::Changes,
}

impl Stack {
    pub fn new(config: Config, now: Instant) -> Stack {
        let caps = device::capabilities(config.mtu);
        let mut iface_config = smoltcp::iface::Config::new(HardwareAddress::Ip);
        iface_config.random_seed = config.random_seed;
        let mut iface = Interface::new(iface_config, &mut device::CapsOnly(caps.clone()), now);
        iface.update_ip_addrs(|addrs| {
            // One address; the vector has room for it.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(config.addr), config.prefix_len));
        });
        // With Medium::Ip smoltcp only needs to know a destination is routable; the real next
        // hop comes from the Resolver, so a default route always exists.
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(config.gateway.unwrap_or(config.addr));
        let mem_max = config.mem_max;
        Stack {
            iface,
            sockets: Sockets::default(),
            no_sockets: SocketSet::new(Vec::new()),
            caps,
            config,
            counters: Counters::default(),
            next_id: 1,
            table: HashMap::default(),
            listeners: HashMap::default(),
            udp_ports: HashMap::default(),
            connecting: Vec::new(),
            udp_closing: Vec::new(),
            time_wait: Default::default(),
            now,
            unresolved: Default::default(),
            spare_tcp: Vec::new(),
            budget: budget::Budget {
                used: 0,
                max: mem_max,
            },
            changes: Default::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Processes every received frame, runs timers and transmits what is due. Returns whether
    /// anything happened. Calls `link.flush()` once at the end (every frame leaves now).
    pub fn poll<L: link::Link, R: link::Resolver>(
        &mut self,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
    ) -> bool {
        self.poll_with(now, link, resolver, false)
    }

    /// [`Stack::poll`] for a call that may leave its frames to a later kick: ends with
    /// `link.flush_batched(now)` (see [`link::Link::flush_batched`]). The caller makes a
    /// [`Stack::poll`] before the program waits.
    pub fn poll_batched<L: link::Link, R: link::Resolver>(
        &mut self,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
    ) -> bool {
        self.poll_with(now, link, resolver, true)
    }

    fn poll_with<L: link::Link, R: link::Resolver>(
        &mut self,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
        batched: bool,
    ) -> bool {
        self.now = now;
        // Nothing arrived, no call queued anything, no timer is due: nothing to do. This is
        // what a spinning wait sees between packets, so it costs a ring peek.
        if self.nothing_to_do(Some(now), link) {
            return false;
        }
        // What calls queued leaves first, ahead of the frames that arrived meanwhile: a reply,
        // and the FIN after it, must not wait behind a batch of new requests (a client that
        // has the reply long before the FIN closes first, and keeps the TIME-WAIT that the
        // closing server should keep).
        let mut active = self.egress(now, link, resolver);
        // A budget, so a sustained inflow cannot keep egress (ACKs, replies) and the TX kick
        // waiting: what is left is taken on the next poll (we report activity).
        let mut budget = RX_BUDGET;
        while budget > 0 {
            let Some((rx, tx)) = link.receive() else {
                break;
            };
            budget -= 1;
            active = true;
            link::RxFrame::consume(rx, |frame| self.ingress(now, frame, tx, resolver));
        }
        if !self.unresolved.is_empty() {
            active |=
                self.unresolved
                    .flush(now, link, resolver, &self.config.mac, &mut self.counters);
        }
        active |= self.egress(now, link, resolver);
        self.after_poll(now);
        if batched {
            link.flush_batched(now);
        } else {
            link.flush();
        }
        active
    }

    /// A call changed application socket `s` (and nothing else): the next poll must send its
    /// output.
    pub(crate) fn touch(&mut self, s: SocketId) {
        match self.table.get(&s.0) {
            Some(Entry::Tcp(c)) => self.sockets.queue(c.handle),
            Some(Entry::Udp(u)) => self.sockets.queue(u.handle),
            _ => {}
        }
    }

    /// Sends what the queued sockets have to send, and what the sockets whose timer is due
    /// have (a retransmission, a delayed ACK, a keep-alive, an orphan's abort), visiting only
    /// those: each is dispatched until it has nothing more to send now, then its next timer is
    /// set (or it is reaped). Stops when the link runs out of TX frames (the socket keeps its
    /// turn for the next poll).
    fn egress<L: link::Link, R: link::Resolver>(
        &mut self,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
    ) -> bool {
        // A timer that ran may have changed a socket's state without sending (smoltcp's own
        // close timer): report it, so waiters look again.
        let mut active = self.sockets.queue_due(now);
        while let Some(h) = self.sockets.next_ready() {
            let (sent, starved) = self.dispatch(h, now, link, resolver);
            active |= sent > 0;
            if starved {
                self.sockets.requeue_first(h);
                break;
            }
            self.settle(h, now);
        }
        active
    }

    /// Dispatches socket `h` until it has nothing to send (or [`DISPATCH_BURST`] segments
    /// went: it is queued again behind the others). Returns the packets sent and whether the
    /// link ran out of TX frames.
    fn dispatch<L: link::Link, R: link::Resolver>(
        &mut self,
        h: SocketHandle,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
    ) -> (usize, bool) {
        struct NoFrame;
        let cx = self.iface.context_at(now);
        let mut path = device::TxPath {
            resolver,
            counters: &mut self.counters,
            unresolved: &mut self.unresolved,
            mac: self.config.mac,
            now,
        };
        let caps = &self.caps.checksum;
        let mut sent = 0;
        let socket = self.sockets.socket_mut(h);
        while sent < DISPATCH_BURST {
            let mut emitted = false;
            let r = match &mut *socket {
                smoltcp::socket::Socket::Tcp(t) => t.stack_dispatch(cx, |_, _, (ip, tcp)| {
                    let tx = link.transmit().ok_or(NoFrame)?;
                    device::send(tx, path.reborrow(), ip.buffer_len(), |buf| {
                        device::emit_tcp(&ip, &tcp, caps, buf)
                    });
                    emitted = true;
                    Ok::<(), NoFrame>(())
                }),
                smoltcp::socket::Socket::Udp(u) => u.stack_dispatch(cx, |_, _, (ip, udp, data)| {
                    let tx = link.transmit().ok_or(NoFrame)?;
                    device::send(tx, path.reborrow(), ip.buffer_len(), |buf| {
                        device::emit_udp(&ip, &udp, data, caps, buf)
                    });
                    emitted = true;
                    Ok(())
                }),
                #[allow(unreachable_patterns)]
                _ => Ok(()),
            };
            if r.is_err() {
                path.counters.tx_drop_no_tx_frame += 1;
                return (sent, true);
            }
            if !emitted {
                return (sent, false);
            }
            sent += 1;
        }
        self.sockets.queue(h);
        (sent, false)
    }

    /// After socket `h` was processed or dispatched: a closed one that is done is reaped (into
    /// TIME-WAIT if it closed first), an orphan past its deadline is aborted, and the others
    /// get their next poll (queued for egress, or a timer).
    fn settle(&mut self, h: SocketHandle, now: Instant) {
        if !self.sockets.contains(h) {
            return;
        }
        self.changes.note(self.sockets.owner(h));
        enum Then {
            Schedule(Option<Instant>),
            Reap(Option<tcp::TimeWaitState>),
            Aborted,
        }
        let cx = self.iface.context_at(now);
        let closing = self.sockets.closing(h);
        let then = match self.sockets.socket_mut(h) {
            smoltcp::socket::Socket::Tcp(t) => {
                let at = t.stack_poll_at(cx);
                let sending = at.is_some_and(|a| a <= now);
                match (closing, t.state()) {
                    (None, _) => Then::Schedule(at),
                    (Some(_), tcp::State::Closed) if t.remote_endpoint().is_none() => {
                        Then::Reap(None)
                    }
                    // Both FINs were exchanged and our last ACK is out: the 4-tuple stays in
                    // TIME-WAIT without the socket.
                    (Some(_), tcp::State::TimeWait) if !sending => Then::Reap(t.stack_time_wait()),
                    (Some(deadline), state) if now >= deadline && state != tcp::State::Closed => {
                        t.abort();
                        Then::Aborted
                    }
                    _ => Then::Schedule(at),
                }
            }
            // UDP has no timers: it has datagrams to send or not.
            smoltcp::socket::Socket::Udp(u) => Then::Schedule((u.send_queue() > 0).then_some(now)),
            #[allow(unreachable_patterns)]
            _ => Then::Schedule(None),
        };
        match then {
            Then::Schedule(at) => self.sockets.schedule(h, at, now),
            Then::Reap(tw) => {
                if let Some(tw) = tw {
                    if self.time_wait.insert(&tw, now).is_some() {
                        self.counters.tcp_time_wait += 1;
                    }
                }
                self.reap(h);
            }
            Then::Aborted => self.sockets.queue(h),
        }
    }

    /// Removes closed TCP socket `h`, keeping it as a spare if there is room.
    fn reap(&mut self, h: SocketHandle) {
        self.discard(h);
        self.counters.tcp_closed += 1;
    }

    /// Removes TCP socket `h`, keeping it as a spare if there is room, without counting it
    /// as a closed connection (a listener's idle socket never was one).
    fn discard(&mut self, h: SocketHandle) {
        let socket = self.sockets.remove(h);
        if let smoltcp::socket::Socket::Tcp(t) = &socket {
            count_recovery(&mut self.counters, t);
        }
        match socket {
            smoltcp::socket::Socket::Tcp(t) if self.spare_tcp.len() < SPARE_TCP_SOCKETS => {
                self.spare_tcp.push(t)
            }
            other => self.budget.sub(budget::socket_bytes(&other)),
        }
    }

    /// The next deadline of the stack's own (not a socket's): UDP sends left at close, the
    /// recheck of packets held for a neighbour.
    fn own_deadline(&mut self, now: Instant) -> Option<Instant> {
        let udp = self.udp_closing.iter().map(|c| c.deadline).min();
        if self.unresolved.is_empty() {
            udp
        } else {
            earliest(udp, self.unresolved.poll_at(now))
        }
    }

    /// Whether a poll at `now` (at any time: `None`) would surely do nothing: no call queued
    /// anything since the last poll, no timer is due, nothing waits for a neighbour (those
    /// packets go out on the first poll that finds it, not only at the recheck), and the link
    /// is idle.
    fn nothing_to_do<L: link::Link>(&mut self, now: Option<Instant>, link: &mut L) -> bool {
        if self.sockets.has_ready() || !self.unresolved.is_empty() || !link.idle() {
            return false;
        }
        let last = self.now;
        let until = earliest(self.sockets.next_timer(), self.own_deadline(last));
        match now {
            Some(now) => until.is_none_or(|t| t > now),
            None => until.is_none(),
        }
    }

    /// When the stack next needs a poll if nothing arrives (`None`: only on RX or an API call):
    /// the earliest socket timer (now if a socket has something to send), our own deadlines
    /// (UDP sends left at close) and the recheck of packets held for a neighbour.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let queued = self.sockets.has_ready().then_some(now);
        earliest(
            earliest(queued, self.sockets.next_timer()),
            self.own_deadline(now),
        )
    }

    /// Bookkeeping after each poll: finished active opens, UDP sockets closed with datagrams
    /// queued, TIME-WAIT expiries.
    fn after_poll(&mut self, now: Instant) {
        let (table, sockets, counters) = (&mut self.table, &mut self.sockets, &mut self.counters);
        self.connecting.retain(|(id, started)| {
            let Some(Entry::Tcp(conn)) = table.get_mut(id) else {
                return false;
            };
            let socket = sockets.get_mut::<tcp::Socket>(conn.handle);
            match socket.state() {
                tcp::State::SynSent | tcp::State::SynReceived => true,
                tcp::State::Closed => {
                    conn.connecting = false;
                    // smoltcp closes a socket both on RST and when the handshake timer ran out.
                    conn.error = Some(if now >= *started + CONNECT_TIMEOUT {
                        Error::TimedOut
                    } else {
                        Error::ConnectionRefused
                    });
                    counters.tcp_reset += 1;
                    false
                }
                _ => {
                    conn.connecting = false;
                    // Established: an idle connection must not time out (the kernel keeps it);
                    // its next poll is worked out again without that timer.
                    socket.set_timeout(None);
                    sockets.queue(conn.handle);
                    counters.tcp_connected += 1;
                    false
                }
            }
        });
        if !self.udp_closing.is_empty() {
            let (sockets, deadline_now, mem) = (&mut self.sockets, now, &mut self.budget);
            self.udp_closing.retain(|c| {
                let socket = sockets.get::<smoltcp::socket::udp::Socket>(c.handle);
                if socket.send_queue() == 0 || deadline_now >= c.deadline {
                    budget::remove(sockets, c.handle, mem);
                    false
                } else {
                    true
                }
            });
        }
        self.time_wait.expire(now);
    }

    /// Whether a poll now would surely do nothing, whatever the time: no call changed
    /// anything since the last poll, no timer is set, nothing waits for a neighbour, and the
    /// link is idle. (A caller that spins can skip reading the clock.)
    pub fn quiet<L: link::Link>(&mut self, link: &mut L) -> bool {
        self.nothing_to_do(None, link)
    }

    /// Like [`Stack::quiet`], for a caller that knows the time is not past `until`: a timer
    /// set for after `until` does not count.
    pub fn quiet_until<L: link::Link>(&mut self, until: Instant, link: &mut L) -> bool {
        self.nothing_to_do(Some(until), link)
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The counters, with what loss recovery did on connections still open added (the
    /// stack adds a connection's to [`Stack::counters`] when it reaps it): what accel-stat and
    /// the exit line report.
    pub fn counters_now(&self) -> Counters {
        let mut c = self.counters.clone();
        let r = self.tcp_recovery();
        c.tcp_retransmits = r.retransmitted;
        c.tcp_timeouts = r.timeouts;
        c.tcp_recoveries = r.recoveries;
        c.tcp_loss_probes = r.loss_probes;
        c
    }

    /// What TCP loss recovery did on every connection of this stack, open and reaped.
    pub fn tcp_recovery(&self) -> tcp::RecoveryStats {
        let c = &self.counters;
        let mut total = tcp::RecoveryStats {
            retransmitted: c.tcp_retransmits,
            timeouts: c.tcp_timeouts,
            recoveries: c.tcp_recoveries,
            loss_probes: c.tcp_loss_probes,
        };
        for (_, s) in self.sockets.iter() {
            if let Some(t) = <tcp::Socket as smoltcp::socket::AnySocket>::downcast(s) {
                let r = t.recovery_stats();
                total.retransmitted += r.retransmitted;
                total.timeouts += r.timeouts;
                total.recoveries += r.recoveries;
                total.loss_probes += r.loss_probes;
            }
        }
        total
    }

    /// smoltcp sockets alive: application sockets, idle listening sockets, connections not yet
    /// accepted, and closed sockets still finishing their handshake.
    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// Whether any TCP socket (open or closing) still has bytes or a FIN the peer has not
    /// acknowledged, or was closed and still waits for the peer's FIN (FIN-WAIT-2): a process
    /// about to exit waits for this to clear (bounded), since nothing answers for it
    /// afterwards (the kernel would answer the peer's late FIN with a reset).
    pub fn has_unacked_output(&self) -> bool {
        self.sockets.iter().any(|(_, s)| {
            <tcp::Socket as smoltcp::socket::AnySocket>::downcast(s).is_some_and(|t| {
                t.send_queue() > 0
                    || matches!(
                        t.state(),
                        tcp::State::FinWait1
                            | tcp::State::FinWait2
                            | tcp::State::Closing
                            | tcp::State::LastAck
                    )
            })
        })
    }

    /// Connections in TIME-WAIT (held without a socket; see [`TIME_WAIT`]).
    pub fn time_wait_count(&self) -> usize {
        self.time_wait.len()
    }

    /// Application-visible sockets (ids that are valid now).
    pub fn open_ids(&self) -> usize {
        self.table.len()
    }

    /// Notes made so far of sockets the stack changed: a reader's starting point for
    /// [`Stack::changed_since`].
    pub fn changes_head(&self) -> u64 {
        self.changes.head()
    }

    /// Calls `f` with each application socket (a connection, a listener whose connection
    /// progressed, a UDP socket) the stack changed since note count `cursor`, possibly more
    /// than once, and returns the count to read from next time. `None`: notes after `cursor`
    /// were lost (more than [`changes::CAPACITY`]); look at every socket.
    pub fn changed_since(&self, cursor: u64, f: impl FnMut(SocketId)) -> Option<u64> {
        self.changes.since(cursor, f)
    }

    pub fn readiness(&self, s: SocketId) -> Readiness {
        match self.table.get(&s.0) {
            Some(Entry::Tcp(conn)) => {
                tcp_api::readiness(conn, self.sockets.get::<tcp::Socket>(conn.handle))
            }
            Some(Entry::Listener(l)) => Readiness {
                readable: l.has_acceptable(&self.sockets),
                ..Readiness::default()
            },
            Some(Entry::Udp(u)) => u.readiness(&self.sockets),
            None => Readiness {
                error: true,
                hangup: true,
                ..Readiness::default()
            },
        }
    }

    /// Releases a socket. TCP: FIN after queued data (RST if unread data is pending, like the
    /// kernel); smoltcp keeps it until the close handshake is done, then it is reaped.
    /// Listener: resets its connections not yet accepted. UDP: gone now. The id is invalid after.
    pub fn close(&mut self, s: SocketId) {
        self.release(s, false);
    }

    /// Like [`Stack::close`], but a TCP connection is reset (SO_LINGER 0).
    pub fn abort(&mut self, s: SocketId) {
        self.release(s, true);
    }

    /// Removes a TCP connection another TCP has taken over (a kernel socket, by repair)
    /// without sending anything: no FIN, no RST. See [`Stack::tcp_snapshot`].
    pub fn tcp_forget(&mut self, s: SocketId) {
        let Some(Entry::Tcp(_)) = self.table.get(&s.0) else {
            return;
        };
        if let Some(Entry::Tcp(conn)) = self.table.get(&s.0) {
            let handle = conn.handle;
            self.sockets.get_mut::<tcp::Socket>(handle).forget();
        }
        // Closed with no peer: release() reaps it at once, sending nothing.
        self.release(s, false);
    }

    fn release(&mut self, s: SocketId, abort: bool) {
        let Some(entry) = self.table.remove(&s.0) else {
            return;
        };
        let now = self.now;
        let deadline = now + ORPHAN_TIMEOUT;
        match entry {
            Entry::Tcp(conn) => {
                self.connecting.retain(|(id, _)| *id != s.0);
                let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
                if abort || socket.recv_queue() > 0 {
                    socket.abort();
                } else {
                    socket.close();
                }
                // Nothing will be piggybacked any more: acknowledge at once, so the ACK of
                // the peer's FIN is out before the socket is reaped in TIME-WAIT.
                socket.set_ack_delay(None);
                self.close_socket(conn.handle, deadline);
            }
            Entry::Listener(l) => {
                self.listeners.remove(&l.local.port());
                for handle in l.into_handles() {
                    let socket = self.sockets.get_mut::<tcp::Socket>(handle);
                    let listening = socket.state() == tcp::State::Listen;
                    socket.abort();
                    if listening {
                        // The idle listening socket: never a connection, nothing to send.
                        self.discard(handle);
                    } else {
                        self.close_socket(handle, deadline);
                    }
                }
            }
            Entry::Udp(u) => {
                self.udp_ports.remove(&u.local.port());
                // Datagrams a send accepted still go out, as with the kernel; the port is free
                // for a new bind at once (the closing socket only transmits).
                if self
                    .sockets
                    .get::<smoltcp::socket::udp::Socket>(u.handle)
                    .send_queue()
                    == 0
                {
                    budget::remove(&mut self.sockets, u.handle, &mut self.budget);
                } else {
                    self.udp_closing.push(Closing {
                        handle: u.handle,
                        deadline,
                    });
                }
            }
        }
    }

    /// TCP socket `h`, closed or aborted by the application: reaped now if it has nothing left
    /// to do, otherwise its FIN (or RST) goes in the next poll's egress and it is reaped when
    /// done, or aborted at `deadline`.
    fn close_socket(&mut self, h: SocketHandle, deadline: Instant) {
        let socket = self.sockets.get::<tcp::Socket>(h);
        if socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none() {
            self.reap(h);
            return;
        }
        self.sockets.set_closing(h, deadline);
        self.sockets.queue(h);
    }

    pub fn local_addr(&self, s: SocketId) -> Option<SocketAddrV4> {
        match self.table.get(&s.0)? {
            Entry::Tcp(conn) => endpoint_v4(
                self.sockets
                    .get::<tcp::Socket>(conn.handle)
                    .local_endpoint()?,
            ),
            Entry::Listener(l) => Some(l.local),
            Entry::Udp(u) => Some(u.local),
        }
    }

    pub fn peer_addr(&self, s: SocketId) -> Option<SocketAddrV4> {
        match self.table.get(&s.0)? {
            Entry::Tcp(conn) => endpoint_v4(
                self.sockets
                    .get::<tcp::Socket>(conn.handle)
                    .remote_endpoint()?,
            ),
            _ => None,
        }
    }

    /// Enters the connection in `handle` into the table (its 4-tuple is filed already).
    pub(crate) fn insert_conn(&mut self, handle: SocketHandle, connecting: bool) -> SocketId {
        let id = self.insert(Entry::Tcp(TcpConn::new(handle, connecting)));
        self.sockets.set_owner(handle, id.0);
        id
    }

    /// Files TCP socket `h` under its 4-tuple, for ingress to find it.
    pub(crate) fn file_conn(&mut self, h: SocketHandle) {
        let socket = self.sockets.get::<tcp::Socket>(h);
        let key = socket
            .local_endpoint()
            .zip(socket.remote_endpoint().and_then(endpoint_v4))
            .map(|(l, r)| (l.port, r));
        if let Some(key) = key {
            self.sockets.set_key(h, key);
        }
    }

    fn insert(&mut self, entry: Entry) -> SocketId {
        let id = self.next_id;
        self.next_id += 1;
        self.table.insert(id, entry);
        SocketId(id)
    }

    /// A TCP socket with the stack's defaults: a spare one (CLOSED or TIME-WAIT, which
    /// `listen`/`connect` reset, buffers included) or a new one, if the stack's socket memory
    /// has room for it (spares are let go to make room); `NoBufferSpace` otherwise.
    fn new_tcp_socket(&mut self) -> Result<tcp::Socket<'static>, Error> {
        let socket = match self.spare_tcp.pop() {
            Some(s) => s,
            None => {
                let (rx, tx) = (self.config.tcp_rx_buffer, self.config.tcp_tx_buffer);
                self.make_room(rx + tx)?;
                self.budget.add(rx + tx);
                tcp::Socket::new(
                    tcp::SocketBuffer::new(vec![0u8; rx]),
                    tcp::SocketBuffer::new(vec![0u8; tx]),
                )
            }
        };
        Ok(Self::with_defaults(socket))
    }

    /// Makes sure `bytes` more socket memory fit in the limit, letting spare sockets go.
    pub(crate) fn make_room(&mut self, bytes: usize) -> Result<(), Error> {
        while !self.budget.fits(bytes) {
            let Some(spare) = self.spare_tcp.pop() else {
                return Err(Error::NoBufferSpace);
            };
            self.budget.sub(budget::tcp_bytes(&spare));
        }
        Ok(())
    }

    /// Changes the socket memory limit (see [`Config::mem_max`]); sockets already made stay.
    pub fn set_mem_max(&mut self, max: Option<usize>) {
        self.config.mem_max = max;
        self.budget.max = max;
    }

    /// Bytes of socket buffers the stack holds now (see [`Config::mem_max`]).
    pub fn buffer_bytes(&self) -> usize {
        self.budget.used
    }

    /// The socket memory counted afresh from every socket and spare (tests: the running
    /// count never drifts from it).
    #[cfg(test)]
    pub(crate) fn buffer_bytes_recounted(&self) -> usize {
        self.sockets
            .iter()
            .map(|(_, s)| budget::socket_bytes(s))
            .chain(self.spare_tcp.iter().map(budget::tcp_bytes))
            .sum()
    }

    /// `socket` with every option an application can change back to its default.
    fn with_defaults(mut socket: tcp::Socket<'static>) -> tcp::Socket<'static> {
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(Some(ACK_DELAY));
        socket.set_timeout(None);
        socket.set_keep_alive(None);
        socket.set_hop_limit(None);
        socket
    }
}

pub(crate) fn endpoint_v4(ep: IpEndpoint) -> Option<SocketAddrV4> {
    #[allow(unreachable_patterns)]
    match ep.addr {
        IpAddress::Ipv4(a) => Some(SocketAddrV4::new(a, ep.port)),
        _ => None,
    }
}

pub(crate) fn endpoint(addr: SocketAddrV4) -> IpEndpoint {
    IpEndpoint::new(IpAddress::Ipv4(*addr.ip()), addr.port())
}

/// Segments one socket sends in a row before the others get their turn.
const DISPATCH_BURST: usize = 64;

/// Adds what loss recovery did on a connection about to be reaped to the stack's counters.
fn count_recovery(counters: &mut Counters, socket: &tcp::Socket) {
    let r = socket.recovery_stats();
    counters.tcp_retransmits += r.retransmitted;
    counters.tcp_timeouts += r.timeouts;
    counters.tcp_recoveries += r.recoveries;
    counters.tcp_loss_probes += r.loss_probes;
}

use sockets::earliest;
