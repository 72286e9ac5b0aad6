//! In-memory links and resolvers for tests: two stacks back to back over two frame queues, with
//! optional fault injection (drop, duplicate, reorder, corrupt: at exact positions or at seeded
//! random rates, see [`Faults`]). No clock: the [`Pair`] harness steps an explicit [`Instant`],
//! jumping to the next timer when the wire is idle.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use core::net::Ipv4Addr;

use crate::device::ETH_HEADER_LEN;
use crate::link::{Link, Mac, NextHop, Resolver, RxFrame, TxFrame};
use crate::{Config, Instant, Stack};

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// Faults applied to frames as a [`QueueLink`] receives them (so one link's faults are one
/// direction's). Two kinds, which combine:
///
/// - every Nth frame (`drop_every`, `corrupt_every`): exact positions, for tests that need them;
/// - random rates (`drop`, `duplicate`, `reorder`, `corrupt`, each a probability per frame),
///   drawn from a seeded generator: the same seed and traffic give the same faults, run after
///   run, so a failure can be replayed.
///
/// The counters say what was injected.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Drop every Nth received frame.
    pub drop_every: Option<u64>,
    /// Flip the last byte of every Nth received frame (which a checksum covers).
    pub corrupt_every: Option<u64>,
    /// Leave only the pseudo-header sum in every received TCP/UDP packet's checksum field, as
    /// a veth peer with TX checksum offload hands it over (the kernel's CHECKSUM_PARTIAL).
    pub partial_checksums: bool,
    /// Probability that a frame is dropped.
    pub drop: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame is held back and delivered after 1 to 3 later frames (or at the
    /// end of the batch the link has, if fewer follow).
    pub reorder: f64,
    /// Probability that one byte of the frame's IP packet is changed (which the IPv4 or the
    /// TCP/UDP checksum covers, so the stack must drop it).
    pub corrupt: f64,
    rng: Rng,
    /// Frames held back for reordering, each with how many later frames must pass first.
    held: Vec<(Vec<u8>, u32)>,
    /// Frames that passed the faults, in delivery order.
    ready: VecDeque<Vec<u8>>,
    pub seen: u64,
    pub dropped: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Packets `partial_checksums` rewrote.
    pub made_partial: u64,
}

impl Faults {
    /// Random faults at these rates (probabilities per frame), drawn from `seed`.
    pub fn random(seed: u64, drop: f64, duplicate: f64, reorder: f64, corrupt: f64) -> Faults {
        Faults {
            drop,
            duplicate,
            reorder,
            corrupt,
            rng: Rng(seed),
            ..Faults::default()
        }
    }

    /// Frames delivered to the stack so far (duplicates included, drops not).
    pub fn delivered(&self) -> u64 {
        self.seen + self.duplicated - self.dropped
    }

    /// The next frame to deliver: frames are taken from `wire` and put through the faults
    /// until one comes out; when the wire is empty, frames held back for reordering go.
    pub(crate) fn take(&mut self, mut wire: impl FnMut() -> Option<Vec<u8>>) -> Option<Vec<u8>> {
        loop {
            if let Some(frame) = self.ready.pop_front() {
                return Some(frame);
            }
            match wire() {
                Some(frame) => self.admit(frame),
                None if self.held.is_empty() => return None,
                None => self.ready.extend(self.held.drain(..).map(|(f, _)| f)),
            }
        }
    }

    fn admit(&mut self, mut frame: Vec<u8>) {
        self.seen += 1;
        if self
            .drop_every
            .is_some_and(|n| self.seen.checked_rem(n) == Some(0))
        {
            self.dropped += 1;
            return;
        }
        if self.partial_checksums && make_partial(&mut frame) {
            self.made_partial += 1;
        }
        if self
            .corrupt_every
            .is_some_and(|n| self.seen.checked_rem(n) == Some(0))
        {
            if let Some(last) = frame.last_mut() {
                *last ^= 0x5a;
                self.corrupted += 1;
            }
        }
        if self.rng.chance(self.drop) {
            self.dropped += 1;
            return;
        }
        // The copy goes first and intact: a corrupted frame is then one frame to drop.
        if self.rng.chance(self.duplicate) {
            self.duplicated += 1;
            self.pass(frame.clone());
        }
        if self.rng.chance(self.corrupt) && frame.len() > ETH_HEADER_LEN {
            let at =
                ETH_HEADER_LEN + self.rng.below((frame.len() - ETH_HEADER_LEN) as u64) as usize;
            // Any change of one byte: never a no-op.
            frame[at] ^= 1 + self.rng.below(255) as u8;
            self.corrupted += 1;
        }
        if self.rng.chance(self.reorder) {
            self.reordered += 1;
            let after = 1 + self.rng.below(3) as u32;
            self.held.push((frame, after));
            return;
        }
        self.pass(frame);
    }

    /// `frame` goes in line; frames held back long enough go right after it.
    fn pass(&mut self, frame: Vec<u8>) {
        self.ready.push_back(frame);
        let mut i = 0;
        while i < self.held.len() {
            self.held[i].1 -= 1;
            if self.held[i].1 == 0 {
                let (due, _) = self.held.remove(i);
                self.ready.push_back(due);
            } else {
                i += 1;
            }
        }
    }

    fn holding(&self) -> bool {
        !self.held.is_empty() || !self.ready.is_empty()
    }
}

/// Writes the pseudo-header partial sum into the checksum field of the TCP or UDP packet in
/// Ethernet frame `frame`; returns whether there was one.
fn make_partial(frame: &mut [u8]) -> bool {
    use smoltcp::wire::{checksum, IpProtocol, Ipv4Packet};
    let Some(ip) = frame.get_mut(14..) else {
        return false;
    };
    let Ok(ip) = Ipv4Packet::new_checked(ip) else {
        return false;
    };
    let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.next_header());
    let (start, end) = (usize::from(ip.header_len()), usize::from(ip.total_len()));
    let at = match proto {
        IpProtocol::Tcp => 16,
        IpProtocol::Udp => 6,
        _ => return false,
    };
    let ip = ip.into_inner();
    let Some(l4) = ip.get_mut(start..end) else {
        return false;
    };
    let sum = checksum::pseudo_header_v4(&src, &dst, proto, l4.len() as u32);
    match l4.get_mut(at..at + 2) {
        Some(field) => {
            field.copy_from_slice(&sum.to_be_bytes());
            true
        }
        None => false,
    }
}

/// splitmix64: a small generator whose sequence is fixed by its seed, so fault runs repeat
/// exactly (a crate's generator may change its sequence between versions).
#[derive(Clone, Debug, Default)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `p` (no draw when `p` is 0, so unused faults do not shift the
    /// sequence of the others).
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Uniform in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// One end of an in-memory Ethernet wire.
pub struct QueueLink {
    rx: Queue,
    tx: Queue,
    pub mtu: usize,
    pub faults: Faults,
    pub flushes: u64,
    /// At most this many frames on the wire from this end (`None`: no limit): like a UMEM
    /// whose TX frames come back only once the peer took them. `transmit` has none to give
    /// while the peer has not taken them, and a reply built on receipt is dropped (counted in
    /// `tx_refused`), as the AF_XDP queue drops it.
    pub tx_limit: Option<usize>,
    /// Frames refused or dropped for `tx_limit`.
    pub tx_refused: u64,
}

/// Two links joined back to back.
pub fn wire() -> (QueueLink, QueueLink) {
    let (a, b) = (Queue::default(), Queue::default());
    let link = |rx: &Queue, tx: &Queue| QueueLink {
        rx: rx.clone(),
        tx: tx.clone(),
        mtu: 1500,
        faults: Faults::default(),
        flushes: 0,
        tx_limit: None,
        tx_refused: 0,
    };
    (link(&a, &b), link(&b, &a))
}

impl QueueLink {
    /// Puts a raw frame on this link's receive queue.
    pub fn inject(&self, frame: Vec<u8>) {
        self.rx.borrow_mut().push_back(frame);
    }

    /// Takes the frames this link has sent and the peer has not received yet.
    pub fn take_sent(&self) -> Vec<Vec<u8>> {
        self.tx.borrow_mut().drain(..).collect()
    }

    pub fn sent_len(&self) -> usize {
        self.tx.borrow().len()
    }

    fn tx_full(&self) -> bool {
        self.tx_limit.is_some_and(|n| self.tx.borrow().len() >= n)
    }
}

pub struct VecRx(Vec<u8>);

impl RxFrame for VecRx {
    fn consume<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.0)
    }
}

/// A transmit slot; `None`: no frame was free (the frame is built, then dropped).
pub struct QueueTx(Option<Queue>);

impl TxFrame for QueueTx {
    fn consume<R>(self, len: usize, f: impl FnOnce(&mut [u8]) -> (R, bool)) -> R {
        let mut frame = vec![0u8; len];
        let (r, send) = f(&mut frame);
        if let (true, Some(q)) = (send, self.0) {
            q.borrow_mut().push_back(frame);
        }
        r
    }
}

impl Link for QueueLink {
    type Rx<'a> = VecRx;
    type Tx<'a> = QueueTx;

    fn receive(&mut self) -> Option<(VecRx, QueueTx)> {
        let rx = &self.rx;
        let frame = self.faults.take(|| rx.borrow_mut().pop_front())?;
        let tx = if self.tx_full() {
            self.tx_refused += 1;
            None
        } else {
            Some(self.tx.clone())
        };
        Some((VecRx(frame), QueueTx(tx)))
    }

    fn transmit(&mut self) -> Option<QueueTx> {
        if self.tx_full() {
            self.tx_refused += 1;
            return None;
        }
        Some(QueueTx(Some(self.tx.clone())))
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn flush(&mut self) {
        self.flushes += 1;
    }

    fn idle(&mut self) -> bool {
        self.rx.borrow().is_empty() && !self.faults.holding()
    }
}

/// A resolver backed by a table; `pending` makes it answer `Pending` for everything.
#[derive(Clone, Debug, Default)]
pub struct MapResolver {
    pub table: HashMap<Ipv4Addr, Mac>,
    pub pending: bool,
    pub asked: u64,
}

impl MapResolver {
    pub fn new(entries: &[(Ipv4Addr, Mac)]) -> MapResolver {
        MapResolver {
            table: entries.iter().copied().collect(),
            ..MapResolver::default()
        }
    }
}

impl Resolver for MapResolver {
    fn next_hop(&mut self, dst: Ipv4Addr) -> NextHop {
        self.asked += 1;
        if self.pending {
            return NextHop::Pending;
        }
        match self.table.get(&dst) {
            Some(mac) => NextHop::Mac(*mac),
            None => NextHop::Unreachable,
        }
    }
}

pub const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
pub const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0x0b];
pub const IP_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const IP_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// One stack with its link and resolver.
pub struct Host {
    pub stack: Stack,
    pub link: QueueLink,
    pub resolver: MapResolver,
}

impl Host {
    pub fn poll(&mut self, now: Instant) -> bool {
        self.stack.poll(now, &mut self.link, &mut self.resolver)
    }
}

/// Two stacks (A = 198.18.0.1, B = 198.18.0.2, /24) on one wire, and the current time.
pub struct Pair {
    pub a: Host,
    pub b: Host,
    pub now: Instant,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with_config(|_| {})
    }

    pub fn with_config(tweak: impl Fn(&mut Config)) -> Pair {
        let now = Instant::from_micros(1_000_000);
        let (la, lb) = wire();
        let mut ca = Config::new(MAC_A, IP_A, 24);
        let mut cb = Config::new(MAC_B, IP_B, 24);
        tweak(&mut ca);
        tweak(&mut cb);
        Pair {
            a: Host {
                stack: Stack::new(ca, now),
                link: la,
                resolver: MapResolver::new(&[(IP_B, MAC_B)]),
            },
            b: Host {
                stack: Stack::new(cb, now),
                link: lb,
                resolver: MapResolver::new(&[(IP_A, MAC_A)]),
            },
            now,
        }
    }

    /// Polls both stacks once; returns whether either did anything.
    pub fn step(&mut self) -> bool {
        let a = self.a.poll(self.now);
        let b = self.b.poll(self.now);
        a | b
    }

    /// Polls until nothing moves, then advances time by `by`.
    pub fn settle_and_advance(&mut self, by: smoltcp::time::Duration) {
        for _ in 0..10_000 {
            if !self.step() {
                break;
            }
            self.now += smoltcp::time::Duration::from_micros(10);
        }
        self.now += by;
    }

    /// Runs until `done` holds, at most `limit` of simulated time. While frames move, time
    /// advances 10 us per step; when the wire is idle it jumps to the next timer. Returns
    /// whether `done` held.
    pub fn run_until(
        &mut self,
        limit: smoltcp::time::Duration,
        mut done: impl FnMut(&mut Pair) -> bool,
    ) -> bool {
        let end = self.now + limit;
        while self.now <= end {
            let active = self.step();
            if done(self) {
                return true;
            }
            if active {
                self.now += smoltcp::time::Duration::from_micros(10);
                continue;
            }
            let next = [
                self.a.stack.poll_at(self.now),
                self.b.stack.poll_at(self.now),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t > self.now => self.now = t,
                Some(_) => self.now += smoltcp::time::Duration::from_micros(10),
                None => return done(self),
            }
        }
        false
    }
}

impl Default for Pair {
    fn default() -> Self {
        Pair::new()
    }
}

/// Fault runs: seeded, deterministic transfers over a faulty wire, in simulated time.
impl Pair {
    /// The same random faults in both directions (each direction with its own seed).
    pub fn set_faults(&mut self, seed: u64, drop: f64, duplicate: f64, reorder: f64, corrupt: f64) {
        self.b.link.faults = Faults::random(seed, drop, duplicate, reorder, corrupt);
        self.a.link.faults = Faults::random(!seed, drop, duplicate, reorder, corrupt);
    }

    /// Connects A:`cport` to a listener on B:`port` and accepts: (client, server).
    pub fn open(
        &mut self,
        listener: crate::SocketId,
        port: u16,
        cport: u16,
        limit: smoltcp::time::Duration,
    ) -> Result<(crate::SocketId, crate::SocketId), String> {
        let c = self
            .a
            .stack
            .tcp_connect(
                core::net::SocketAddrV4::new(IP_A, cport),
                core::net::SocketAddrV4::new(IP_B, port),
            )
            .map_err(|e| format!("connect: {e:?}"))?;
        let mut accepted = None;
        let started = self.now;
        let done = self.run_until(limit, |p| {
            if accepted.is_none() {
                accepted = p.b.stack.tcp_accept(listener).ok().map(|(s, _)| s);
            }
            accepted.is_some() && p.a.stack.tcp_established_once(c)
        });
        match accepted {
            Some(s) if done => Ok((c, s)),
            _ => Err(format!(
                "port {cport}: not connected after {}",
                self.now - started
            )),
        }
    }

    /// Sends `a_to_b` from A to B and `b_to_a` from B to A over the connection (`c` on A, `s`
    /// on B) at the same time, both directions checked byte for byte as they arrive; then A
    /// closes and B sees the end of the stream and closes. Returns the simulated time taken.
    pub fn exchange(
        &mut self,
        (c, s): (crate::SocketId, crate::SocketId),
        a_to_b: &[u8],
        b_to_a: &[u8],
        limit: smoltcp::time::Duration,
    ) -> Result<smoltcp::time::Duration, String> {
        let started = self.now;
        let (mut sent_ab, mut sent_ba) = (0usize, 0usize);
        let (mut got_ab, mut got_ba) = (0usize, 0usize);
        let mut closed = false;
        let mut eof = false;
        let mut error = None;
        let mut buf = vec![0u8; 65536];
        let done = self.run_until(limit, |p| {
            for (host, id, data, sent) in [
                (&mut p.a, c, a_to_b, &mut sent_ab),
                (&mut p.b, s, b_to_a, &mut sent_ba),
            ] {
                while *sent < data.len() {
                    match host.stack.tcp_send(id, &data[*sent..]) {
                        Ok(n) => *sent += n,
                        Err(_) => break,
                    }
                }
            }
            for (host, id, data, got, name) in [
                (&mut p.b, s, a_to_b, &mut got_ab, "A->B"),
                (&mut p.a, c, b_to_a, &mut got_ba, "B->A"),
            ] {
                while let Ok(n) = host.stack.tcp_recv(id, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    let want = data.get(*got..*got + n);
                    if want != Some(&buf[..n]) {
                        error = Some(format!("{name}: wrong bytes at offset {}", *got));
                        return true;
                    }
                    *got += n;
                }
            }
            if got_ab == a_to_b.len() && got_ba == b_to_a.len() && !closed {
                p.a.stack.close(c);
                closed = true;
            }
            if closed && !eof && p.b.stack.readiness(s).hangup {
                eof = p.b.stack.tcp_recv(s, &mut buf) == Ok(0);
                if eof {
                    p.b.stack.close(s);
                }
            }
            eof
        });
        if let Some(e) = error {
            return Err(e);
        }
        if !done {
            return Err(format!(
                "not done after {}: A->B {}/{} bytes, B->A {}/{} bytes, closed {closed}",
                self.now - started,
                got_ab,
                a_to_b.len(),
                got_ba,
                b_to_a.len()
            ));
        }
        Ok(self.now - started)
    }
}

/// `len` bytes that differ from run to run of `seed` (so a misplaced segment cannot go
/// unnoticed).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut data = Vec::with_capacity(len + 8);
    while data.len() < len {
        data.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    data.truncate(len);
    data
}
