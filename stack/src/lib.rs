//! accel's userspace TCP/UDP stack: one smoltcp [`Interface`] (IP medium) and its sockets over a
//! [`link::Link`] that carries Ethernet frames. The stack strips and writes the Ethernet header
//! itself, looks at every packet before smoltcp does (listen backlogs, unbound UDP ports), keeps
//! a socket table with ids that are never reused, and reaps closed sockets. It does no I/O and
//! reads no clock: [`Stack::poll`] is driven with the current time and [`Stack::poll_at`] says
//! when the next timer is due.
//!
//! Where a packet goes: `device` (Ethernet in/out) -> `ingress` (pre-parse, per-packet
//! decisions) -> smoltcp -> `tcp` / `listen` / `udp` (socket API).

use rustc_hash::FxHashMap as HashMap;

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::tcp;

use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpEndpoint};

pub use smoltcp::socket::tcp::State as TcpState;
pub use smoltcp::time::{Duration, Instant};

mod budget;
mod checksum;
mod counters;
mod device;
pub mod engine;
mod error;
mod ingress;
pub mod link;
mod listen;
mod tcp_api;
mod udp;
mod unresolved;

#[cfg(test)]
mod fault_runs;
#[cfg(test)]
mod limits_tests;
#[cfg(any(test, feature = "testing"))]
pub mod memory;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use counters::Counters;
pub use error::{errno, Error};
pub use tcp_api::TcpOption;

use listen::Listener;
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

/// A closed socket that smoltcp still needs (FIN handshake, TIME-WAIT, an RST to send).
struct Closing {
    handle: SocketHandle,
    deadline: Instant,
}

/// One userspace TCP/UDP stack.
pub struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
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
    closing: Vec<Closing>,
    /// Closed UDP sockets whose accepted datagrams are still queued for sending.
    udp_closing: Vec<Closing>,
    /// Time of the last poll (or creation): when a close started, for the orphan timeout.
    now: Instant,
    /// Packets waiting for the kernel to resolve their next hop.
    unresolved: unresolved::Unresolved,
    /// Reaped TCP sockets kept with their buffers for the next connection: a new socket costs
    /// two buffer allocations that glibc zeroes (512 KiB by default), per accept.
    spare_tcp: Vec<tcp::Socket<'static>>,
    /// Bytes of socket buffers held, against `config.mem_max`.
    budget: budget::Budget,
    /// An API call changed socket state since the last full poll (it may have output).
    dirty: bool,
    /// The sockets calls and arrived packets changed since the last poll, when that is all
    /// that changed (`touched_all`: not known, or too many): with no timer due, the poll then
    /// only needs their output, not a walk of every socket (see [`Stack::egress_touched`]).
    touched: Vec<Alone>,
    touched_all: bool,
    /// Where a socket is polled alone: one placeholder TCP and one UDP socket, swapped with
    /// the real one for the time of the poll (see [`Stack::swap_alone`]).
    scratch: SocketSet<'static>,
    scratch_tcp: SocketHandle,
    scratch_udp: SocketHandle,
    /// Application TCP connections by (local port, remote): a packet for one of them is
    /// delivered to it alone, not to smoltcp's search of every socket.
    conns: HashMap<(u16, SocketAddrV4), u64>,
    /// Sockets swapped in alone so far (tests: the targeted paths were taken).
    #[cfg(test)]
    pub(crate) alone_swaps: u64,
    /// When the stack next needs a poll if nothing arrives (inner `None`: never): worked out
    /// (a walk of every socket) at the end of a full poll, and brought forward by the timers
    /// of sockets polled alone since; `None` only before the first poll.
    idle_until: Option<Option<Instant>>,
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
        let mut scratch = SocketSet::new(Vec::new());
        let scratch_tcp = scratch.add(tcp::Socket::new(
            tcp::SocketBuffer::new(Vec::new()),
            tcp::SocketBuffer::new(Vec::new()),
        ));
        let scratch_udp = scratch.add(smoltcp::socket::udp::Socket::new(
            smoltcp::socket::udp::PacketBuffer::new(Vec::new(), Vec::new()),
            smoltcp::socket::udp::PacketBuffer::new(Vec::new(), Vec::new()),
        ));
        let mem_max = config.mem_max;
        Stack {
            iface,
            sockets: SocketSet::new(Vec::new()),
            caps,
            config,
            counters: Counters::default(),
            next_id: 1,
            table: HashMap::default(),
            listeners: HashMap::default(),
            udp_ports: HashMap::default(),
            connecting: Vec::new(),
            closing: Vec::new(),
            udp_closing: Vec::new(),
            now,
            unresolved: Default::default(),
            spare_tcp: Vec::new(),
            budget: budget::Budget {
                used: 0,
                max: mem_max,
            },
            dirty: true,
            touched: Vec::new(),
            touched_all: true,
            scratch,
            scratch_tcp,
            scratch_udp,
            conns: HashMap::default(),
            #[cfg(test)]
            alone_swaps: 0,
            idle_until: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Processes every received frame, runs timers and transmits what is due. Returns whether
    /// anything happened. Calls `link.flush()` once at the end.
    pub fn poll<L: link::Link, R: link::Resolver>(
        &mut self,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
    ) -> bool {
        self.now = now;
        // Nothing arrived, no call changed anything, no timer is due: nothing to do. This is
        // what a spinning wait sees between packets, so it costs a ring peek, not a walk of
        // every socket.
        if self.nothing_to_do(Some(now), link) {
            return false;
        }
        let mut active = false;
        // What calls queued leaves first, ahead of the frames that arrived meanwhile: a reply,
        // and the FIN after it, must not wait behind a batch of new requests (a client that
        // has the reply long before the FIN closes first, and keeps the TIME-WAIT that the
        // closing server should keep).
        if !self.touched.is_empty() {
            if let Some(sent) = self.egress_touched(now, link, resolver) {
                active |= sent;
            }
        }
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
        let full = match self.egress_touched(now, link, resolver) {
            Some(sent) => {
                active |= sent;
                false
            }
            None => {
                active |= self.egress(now, link, resolver);
                true
            }
        };
        // Walks only the sockets being opened or closed: a connection closed and polled
        // alone is reaped here too.
        self.after_poll(now);
        if full {
            // Worked out now, before calls touch sockets: a touched socket's own 'poll now'
            // must not read as a timer due (the poll that follows only needs its output, and
            // adds its new timers).
            self.idle_until = Some(self.poll_at(now));
        }
        self.dirty = false;
        self.touched.clear();
        self.touched_all = false;
        link.flush();
        active
    }

    /// Where socket `s` sits in the main set (tests: a poll of its own may move it).
    #[cfg(test)]
    pub(crate) fn handle_of(&self, s: SocketId) -> Option<SocketHandle> {
        match self.table.get(&s.0)? {
            Entry::Tcp(c) => Some(c.handle),
            Entry::Udp(u) => Some(u.handle),
            Entry::Listener(_) => None,
        }
    }

    /// A call changed application socket `s` (and nothing else): the next poll must send its
    /// output.
    pub(crate) fn touch(&mut self, s: SocketId) {
        match self.table.get(&s.0) {
            Some(Entry::Tcp(c)) => self.touch_alone(Alone::Tcp(c.handle)),
            Some(Entry::Udp(u)) => self.touch_alone(Alone::Udp(u.handle)),
            _ => self.touch_all(),
        }
    }

    /// Socket `a` changed (and nothing else). It must stay in the main set until the next
    /// poll: whatever removes a socket outside a poll calls [`Stack::touch_all`] (then the
    /// touched list is not used).
    pub(crate) fn touch_alone(&mut self, a: Alone) {
        self.dirty = true;
        // Repeats are removed when the poll sends (a request read and answered touches its
        // connection three times).
        if !self.touched_all {
            if self.touched.len() < TOUCHED_MAX {
                self.touched.push(a);
            } else {
                self.touched_all = true;
            }
        }
    }

    /// A call changed something beyond one socket's output: the next poll is a full one.
    pub(crate) fn touch_all(&mut self) {
        self.dirty = true;
        self.touched_all = true;
    }

    /// Sends the output of the sockets calls and arrived packets touched, each polled alone
    /// (see [`Stack::swap_alone`]), when nothing else needs a poll: no other change, nothing
    /// waiting for a neighbour, no active open to follow, no timer due. A server with many
    /// connections then does not walk all of them (twice: smoltcp sends one segment per socket
    /// per walk, and a walk that sent anything is followed by another) for each reply.
    /// `None` when the full egress is needed.
    fn egress_touched<L: link::Link, R: link::Resolver>(
        &mut self,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
    ) -> Option<bool> {
        if self.touched_all || !self.unresolved.is_empty() || !self.connecting.is_empty() {
            return None;
        }
        let until = self.next_deadline(now);
        if until.is_some_and(|t| t <= now) {
            return None;
        }
        let mut next = until;
        let mut active = false;
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for &alone in &touched {
            self.swap(alone);
            active |= egress_set(
                &mut self.iface,
                &mut self.scratch,
                &mut self.counters,
                &mut self.unresolved,
                &self.caps,
                self.config.mac,
                now,
                &mut *link,
                &mut *resolver,
            );
            // The socket's own next timer (a retransmission armed by what it just sent).
            next = earliest(next, self.iface.poll_at(now, &self.scratch));
            self.swap(alone);
        }
        touched.clear();
        self.touched = touched;
        // Still valid for every other socket: nothing happened to them.
        self.idle_until = Some(next);
        Some(active)
    }

    /// Swaps application socket `id` with the placeholder of its kind in `scratch`, so that a
    /// poll of `scratch` sees it alone; its slot in the main set keeps the placeholder (and its
    /// handle) until [`Stack::swap`] puts it back. `None` if `id` is no TCP connection or UDP
    /// socket.
    fn swap_alone(&mut self, id: u64) -> Option<Alone> {
        let alone = match self.table.get(&id)? {
            Entry::Tcp(c) => Alone::Tcp(c.handle),
            Entry::Udp(u) => Alone::Udp(u.handle),
            Entry::Listener(_) => return None,
        };
        self.swap(alone);
        Some(alone)
    }

    /// Swaps socket `alone` with its placeholder in `scratch`: twice is a no-op.
    pub(crate) fn swap(&mut self, alone: Alone) {
        #[cfg(test)]
        {
            self.alone_swaps += 1;
        }
        match alone {
            Alone::Tcp(h) => std::mem::swap(
                self.sockets.get_mut::<tcp::Socket>(h),
                self.scratch.get_mut::<tcp::Socket>(self.scratch_tcp),
            ),
            Alone::Udp(h) => std::mem::swap(
                self.sockets.get_mut::<smoltcp::socket::udp::Socket>(h),
                self.scratch
                    .get_mut::<smoltcp::socket::udp::Socket>(self.scratch_udp),
            ),
        }
    }

    /// The stack's next deadline (see `idle_until`); worked out here (a walk of every socket)
    /// only before the first poll.
    fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        match self.idle_until {
            Some(u) => u,
            None => {
                let u = self.poll_at(now);
                self.idle_until = Some(u);
                u
            }
        }
    }

    /// Whether a poll at `now` (at any time: `None`) would surely do nothing: no call changed
    /// anything since the last poll, no timer is due, nothing waits for a neighbour (those
    /// packets go out on the first poll that finds it, not only at the recheck), and the link
    /// is idle.
    fn nothing_to_do<L: link::Link>(&mut self, now: Option<Instant>, link: &mut L) -> bool {
        if self.dirty || !self.unresolved.is_empty() || !link.idle() {
            return false;
        }
        let last = self.now;
        let until = self.next_deadline(last);
        match now {
            Some(now) => until.is_none_or(|t| t > now),
            None => until.is_none(),
        }
    }

    /// When the stack next needs a poll if nothing arrives (`None`: only on RX or an API call):
    /// the earliest of smoltcp's timers, our own deadlines for closed sockets (orphans, UDP
    /// sends left at close) and the recheck of packets held for a neighbour.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let ours = self
            .closing
            .iter()
            .chain(&self.udp_closing)
            .map(|c| c.deadline)
            .chain(self.unresolved.poll_at(now))
            .min();
        earliest(self.iface.poll_at(now, &self.sockets), ours)
    }

    fn egress<L: link::Link, R: link::Resolver>(
        &mut self,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
    ) -> bool {
        egress_set(
            &mut self.iface,
            &mut self.sockets,
            &mut self.counters,
            &mut self.unresolved,
            &self.caps,
            self.config.mac,
            now,
            link,
            resolver,
        )
    }

    /// Bookkeeping after each poll: finished active opens, reaping closed sockets.
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
                    // Established: an idle connection must not time out (the kernel keeps it).
                    socket.set_timeout(None);
                    counters.tcp_connected += 1;
                    false
                }
            }
        });
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
        let (sockets, counters, spare, mem) = (
            &mut self.sockets,
            &mut self.counters,
            &mut self.spare_tcp,
            &mut self.budget,
        );
        self.closing.retain(|c| {
            let socket = sockets.get_mut::<tcp::Socket>(c.handle);
            let done = match socket.state() {
                tcp::State::Closed => socket.remote_endpoint().is_none(),
                // Both FINs were exchanged and acknowledged (our ACK went out in this poll's
                // egress). smoltcp would keep the socket 10 s, and every socket it keeps is
                // scanned for every packet: a server closing thousands of connections a
                // second would slow to a crawl. Without TIME-WAIT, a retransmitted FIN (our
                // ACK lost) is answered with RST, which ends the peer's LAST-ACK just as well.
                tcp::State::TimeWait => true,
                _ => false,
            };
            if done {
                count_recovery(counters, socket);
                // A spare keeps its buffers, and its place in the stack's memory.
                match sockets.remove(c.handle) {
                    smoltcp::socket::Socket::Tcp(t) if spare.len() < SPARE_TCP_SOCKETS => {
                        spare.push(t)
                    }
                    other => mem.sub(budget::socket_bytes(&other)),
                }
                counters.tcp_closed += 1;
                return false;
            }
            if now >= c.deadline && socket.state() != tcp::State::Closed {
                socket.abort();
            }
            true
        });
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
        self.sockets.iter().count()
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

    /// Application-visible sockets (ids that are valid now).
    pub fn open_ids(&self) -> usize {
        self.table.len()
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

    fn release(&mut self, s: SocketId, abort: bool) {
        let Some(entry) = self.table.remove(&s.0) else {
            self.touch_all();
            return;
        };
        let deadline = self.now + ORPHAN_TIMEOUT;
        match entry {
            Entry::Tcp(conn) => {
                // Unless a newer connection with the same addresses took the key over.
                if let Some(key) = conn.key {
                    if self.conns.get(&key) == Some(&s.0) {
                        self.conns.remove(&key);
                    }
                }
                self.connecting.retain(|(id, _)| *id != s.0);
                let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
                if abort || socket.recv_queue() > 0 {
                    socket.abort();
                } else {
                    socket.close();
                }
                // Nothing will be piggybacked any more: acknowledge at once, so the ACK of
                // the peer's FIN is out before the socket is reaped in TIME-WAIT (below).
                socket.set_ack_delay(None);
                self.closing.push(Closing {
                    handle: conn.handle,
                    deadline,
                });
                // The FIN (or RST) goes in the next poll's egress of this socket alone; the
                // orphan deadline joins the known ones.
                self.touch_alone(Alone::Tcp(conn.handle));
                if let Some(until) = self.idle_until {
                    self.idle_until = Some(earliest(until, Some(deadline)));
                }
            }
            Entry::Listener(l) => {
                self.touch_all();
                self.listeners.remove(&l.local.port());
                for handle in l.into_handles() {
                    self.sockets.get_mut::<tcp::Socket>(handle).abort();
                    self.closing.push(Closing { handle, deadline });
                }
            }
            Entry::Udp(u) => {
                self.touch_all();
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
        // Sockets with nothing left to send go now. A removed one may be touched (a send
        // before the peer's reset): the next poll then must not use the touched list.
        let (sockets, mem, counters) = (&mut self.sockets, &mut self.budget, &mut self.counters);
        let mut removed = false;
        self.closing.retain(|c| {
            let socket = sockets.get::<tcp::Socket>(c.handle);
            if socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none() {
                count_recovery(counters, socket);
                budget::remove(sockets, c.handle, mem);
                removed = true;
                false
            } else {
                true
            }
        });
        if removed {
            self.touch_all();
        }
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

    /// Enters the connection in `handle` into the table and, by (local port, remote), into
    /// `conns`.
    pub(crate) fn insert_conn(&mut self, handle: SocketHandle, connecting: bool) -> SocketId {
        let socket = self.sockets.get::<tcp::Socket>(handle);
        let key = socket
            .local_endpoint()
            .zip(socket.remote_endpoint().and_then(endpoint_v4))
            .map(|(l, r)| (l.port, r));
        let mut conn = TcpConn::new(handle, connecting);
        conn.key = key;
        let id = self.insert(Entry::Tcp(conn));
        if let Some(key) = key {
            self.conns.insert(key, id.0);
        }
        id
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

/// Touches (calls and packets on one socket, repeats counted) a poll deals with socket by
/// socket; more make it a full poll. Alone, a socket costs two swaps and its own egress; a
/// full poll costs two walks of every socket.
const TOUCHED_MAX: usize = 512;

/// A socket that can be polled alone (swapped into the scratch set), by its handle in the
/// main set.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Alone {
    Tcp(SocketHandle),
    Udp(SocketHandle),
}

/// Sends what the sockets of `sockets` have to send: smoltcp sends at most one segment per
/// socket per walk, so walks repeat until one sends nothing (or TX frames ran out).
#[allow(clippy::too_many_arguments)]
fn egress_set<L: link::Link, R: link::Resolver>(
    iface: &mut Interface,
    sockets: &mut SocketSet<'static>,
    counters: &mut Counters,
    unresolved: &mut unresolved::Unresolved,
    caps: &DeviceCapabilities,
    mac: link::Mac,
    now: Instant,
    link: &mut L,
    resolver: &mut R,
) -> bool {
    let mut active = false;
    loop {
        let starved = counters.tx_drop_no_tx_frame;
        let mut dev = device::EgressDevice {
            link: &mut *link,
            path: device::TxPath {
                resolver: &mut *resolver,
                counters: &mut *counters,
                unresolved: &mut *unresolved,
                mac,
                now,
            },
            caps,
        };
        match iface.poll_egress(now, &mut dev, sockets) {
            smoltcp::iface::PollResult::None => break,
            smoltcp::iface::PollResult::SocketStateChanged => active = true,
        }
        if counters.tx_drop_no_tx_frame != starved {
            break;
        }
    }
    active
}

/// Adds what loss recovery did on a connection about to be reaped to the stack's counters.
fn count_recovery(counters: &mut Counters, socket: &tcp::Socket) {
    let r = socket.recovery_stats();
    counters.tcp_retransmits += r.retransmitted;
    counters.tcp_timeouts += r.timeouts;
    counters.tcp_recoveries += r.recoveries;
    counters.tcp_loss_probes += r.loss_probes;
}

/// The earlier of two deadlines (`None`: never).
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
