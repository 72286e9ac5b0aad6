//! In-memory links and resolvers for tests: two stacks back to back over two frame queues, with
//! optional fault injection (drop or corrupt every Nth received frame). No clock: the [`Pair`]
//! harness steps an explicit [`Instant`], jumping to the next timer when the wire is idle.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use core::net::Ipv4Addr;

use crate::link::{Link, Mac, NextHop, Resolver, RxFrame, TxFrame};
use crate::{Config, Instant, Stack};

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;

/// Faults applied to frames as a [`QueueLink`] receives them.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Drop every Nth received frame.
    pub drop_every: Option<u64>,
    /// Flip the last byte of every Nth received frame (which a checksum covers).
    pub corrupt_every: Option<u64>,
    /// Leave only the pseudo-header sum in every received TCP/UDP packet's checksum field, as
    /// a veth peer with TX checksum offload hands it over (the kernel's CHECKSUM_PARTIAL).
    pub partial_checksums: bool,
    pub seen: u64,
    pub dropped: u64,
    pub corrupted: u64,
    /// Packets `partial_checksums` rewrote.
    pub made_partial: u64,
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

/// One end of an in-memory Ethernet wire.
pub struct QueueLink {
    rx: Queue,
    tx: Queue,
    pub mtu: usize,
    pub faults: Faults,
    pub flushes: u64,
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
}

pub struct VecRx(Vec<u8>);

impl RxFrame for VecRx {
    fn consume<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.0)
    }
}

pub struct QueueTx(Queue);

impl TxFrame for QueueTx {
    fn consume<R>(self, len: usize, f: impl FnOnce(&mut [u8]) -> (R, bool)) -> R {
        let mut frame = vec![0u8; len];
        let (r, send) = f(&mut frame);
        if send {
            self.0.borrow_mut().push_back(frame);
        }
        r
    }
}

impl Link for QueueLink {
    type Rx<'a> = VecRx;
    type Tx<'a> = QueueTx;

    fn receive(&mut self) -> Option<(VecRx, QueueTx)> {
        loop {
            let mut frame = self.rx.borrow_mut().pop_front()?;
            let f = &mut self.faults;
            f.seen += 1;
            if f.drop_every
                .is_some_and(|n| f.seen.checked_rem(n) == Some(0))
            {
                f.dropped += 1;
                continue;
            }
            if f.partial_checksums && make_partial(&mut frame) {
                f.made_partial += 1;
            }
            if f.corrupt_every
                .is_some_and(|n| f.seen.checked_rem(n) == Some(0))
            {
                if let Some(last) = frame.last_mut() {
                    *last ^= 0x5a;
                    f.corrupted += 1;
                }
            }
            return Some((VecRx(frame), QueueTx(self.tx.clone())));
        }
    }

    fn transmit(&mut self) -> Option<QueueTx> {
        Some(QueueTx(self.tx.clone()))
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn flush(&mut self) {
        self.flushes += 1;
    }

    fn idle(&mut self) -> bool {
        self.rx.borrow().is_empty()
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
