//! Producer and consumer ends of an AF_XDP ring, over its shared memory (`sys::ring::RingMem`).
//!
//! The kernel's protocol: the producer writes entries, then publishes its index with a release
//! store; the consumer reads the producer index with an acquire load, reads the entries, then
//! publishes its own index with a release store. Both ends cache the other's index and reread
//! it only when the cached value says the ring is full (producer) or empty (consumer).
//!
//! A ring shared by several processes (the fill and completion rings of a shared UMEM) has
//! several producers or consumers; they take turns under the queue's mutex and call
//! [`Producer::resync`] / [`Consumer::resync`] after taking it, because another process may
//! have moved the index since this one last held it.
//!
//! Indexes are free-running u32s (they wrap); differences are taken with wrapping arithmetic.

use std::sync::atomic::Ordering;

use crate::sys::ring::RingMem;

/// An RX or TX descriptor (`struct xdp_desc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Desc {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) options: u32,
}

/// The producing end of a ring.
#[derive(Debug)]
pub(crate) struct Producer {
    mem: RingMem,
    cached_prod: u32,
    cached_cons: u32,
}

impl Producer {
    pub(crate) fn new(mem: RingMem) -> Producer {
        let cached_prod = mem.producer().load(Ordering::Acquire);
        let cached_cons = mem.consumer().load(Ordering::Acquire);
        Producer {
            mem,
            cached_prod,
            cached_cons,
        }
    }

    /// Rereads the producer index (another process produced since; call under the lock that
    /// serialises the producers).
    pub(crate) fn resync(&mut self) {
        self.cached_prod = self.mem.producer().load(Ordering::Acquire);
        self.cached_cons = self.mem.consumer().load(Ordering::Acquire);
    }

    /// Free entries, rereading the consumer index if fewer than `want` seem free.
    #[inline]
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let size = self.mem.size();
        let free = size.wrapping_sub(self.cached_prod.wrapping_sub(self.cached_cons));
        if free >= want {
            return free;
        }
        self.cached_cons = self.mem.consumer().load(Ordering::Acquire);
        size.wrapping_sub(self.cached_prod.wrapping_sub(self.cached_cons))
            .min(size)
    }

    /// Entries produced and not yet consumed, as last seen (rereads the consumer index).
    pub(crate) fn outstanding(&mut self) -> u32 {
        self.cached_cons = self.mem.consumer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Writes address entry `i` past the producer index (not visible until `submit`).
    #[inline]
    pub(crate) fn write_addr(&mut self, i: u32, addr: u64) {
        self.mem
            .word(self.cached_prod.wrapping_add(i), 0)
            .store(addr, Ordering::Relaxed);
    }

    /// Writes descriptor entry `i` past the producer index (not visible until `submit`).
    #[inline]
    pub(crate) fn write_desc(&mut self, i: u32, d: Desc) {
        let idx = self.cached_prod.wrapping_add(i);
        self.mem.word(idx, 0).store(d.addr, Ordering::Relaxed);
        self.mem.word(idx, 1).store(
            u64::from(d.len) | u64::from(d.options) << 32,
            Ordering::Relaxed,
        );
    }

    /// Publishes `n` written entries: the commit point of a production.
    #[inline]
    pub(crate) fn submit(&mut self, n: u32) {
        self.cached_prod = self.cached_prod.wrapping_add(n);
        self.mem
            .producer()
            .store(self.cached_prod, Ordering::Release);
    }

    /// The producer index (entries ever produced, wrapping).
    pub(crate) fn index(&self) -> u32 {
        self.cached_prod
    }

    /// The shared producer index as it is in memory now.
    pub(crate) fn published(&self) -> u32 {
        self.mem.producer().load(Ordering::Acquire)
    }

    /// Whether the kernel asked to be woken (XDP_RING_NEED_WAKEUP).
    #[inline]
    pub(crate) fn needs_wakeup(&self) -> bool {
        self.mem.flags().load(Ordering::Relaxed) & 1 != 0
    }

    pub(crate) fn mem(&self) -> &RingMem {
        &self.mem
    }
}

/// The consuming end of a ring.
#[derive(Debug)]
pub(crate) struct Consumer {
    mem: RingMem,
    cached_prod: u32,
    cached_cons: u32,
}

impl Consumer {
    pub(crate) fn new(mem: RingMem) -> Consumer {
        let cached_cons = mem.consumer().load(Ordering::Acquire);
        let cached_prod = mem.producer().load(Ordering::Acquire);
        Consumer {
            mem,
            cached_prod,
            cached_cons,
        }
    }

    /// Rereads the consumer index (another process consumed since; call under the lock that
    /// serialises the consumers).
    pub(crate) fn resync(&mut self) {
        self.cached_cons = self.mem.consumer().load(Ordering::Acquire);
        self.cached_prod = self.mem.producer().load(Ordering::Acquire);
    }

    /// Entries ready, at most `max`; rereads the producer index when none seem ready.
    #[inline]
    pub(crate) fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached_prod.wrapping_sub(self.cached_cons);
        if n == 0 {
            self.cached_prod = self.mem.producer().load(Ordering::Acquire);
            n = self.cached_prod.wrapping_sub(self.cached_cons);
        }
        n.min(max).min(self.mem.size())
    }

    /// Address entry `i` past the consumer index.
    #[inline]
    pub(crate) fn read_addr(&self, i: u32) -> u64 {
        self.mem
            .word(self.cached_cons.wrapping_add(i), 0)
            .load(Ordering::Relaxed)
    }

    /// Descriptor entry `i` past the consumer index.
    #[inline]
    pub(crate) fn read_desc(&self, i: u32) -> Desc {
        let idx = self.cached_cons.wrapping_add(i);
        let addr = self.mem.word(idx, 0).load(Ordering::Relaxed);
        let w = self.mem.word(idx, 1).load(Ordering::Relaxed);
        Desc {
            addr,
            len: w as u32,
            options: (w >> 32) as u32,
        }
    }

    /// Gives `n` read entries back to the producer: the commit point of a consumption.
    #[inline]
    pub(crate) fn release(&mut self, n: u32) {
        self.cached_cons = self.cached_cons.wrapping_add(n);
        self.mem
            .consumer()
            .store(self.cached_cons, Ordering::Release);
    }

    /// The consumer index (entries ever consumed, wrapping).
    pub(crate) fn index(&self) -> u32 {
        self.cached_cons
    }

    /// The shared consumer index as it is in memory now.
    pub(crate) fn published(&self) -> u32 {
        self.mem.consumer().load(Ordering::Acquire)
    }

    pub(crate) fn mem(&self) -> &RingMem {
        &self.mem
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sys::ring::{Entry, RingOffsets};
    use crate::sys::shm::{memfd, Region};
    use std::os::fd::AsFd;
    use std::sync::Arc;

    /// A ring laid out like the kernel's (indexes on their own cache lines) in a fresh memfd.
    pub(crate) fn test_ring(size: u32, entry: Entry) -> RingMem {
        let off = RingOffsets {
            producer: 0,
            consumer: 64,
            flags: 128,
            desc: 192,
        };
        let len = off.map_len(size, entry.words());
        let fd = memfd("accel-test-ring", len).unwrap();
        let region = Arc::new(Region::map(fd.as_fd(), len, 0).unwrap());
        RingMem::new(region, off, size, entry).unwrap()
    }

    #[test]
    fn entries_go_through_in_order_and_wrap() {
        let mem = test_ring(8, Entry::Addr);
        let mut p = Producer::new(mem.clone());
        let mut c = Consumer::new(mem);
        let mut next_in = 0u64;
        let mut next_out = 0u64;
        for round in 0..50 {
            let want = (round % 7 + 1) as u32;
            let free = p.free(want);
            let n = want.min(free);
            for i in 0..n {
                p.write_addr(i, next_in);
                next_in += 1;
            }
            assert_eq!(c.available(64), c.available(64), "available is stable");
            p.submit(n);
            let got = c.available(5);
            for i in 0..got {
                assert_eq!(c.read_addr(i), next_out);
                next_out += 1;
            }
            c.release(got);
            assert!(p.free(0) <= 8);
        }
        assert!(next_out > 8 * 3, "the ring wrapped several times");
    }

    #[test]
    fn a_full_ring_refuses_more_until_consumed() {
        let mem = test_ring(4, Entry::Desc);
        let mut p = Producer::new(mem.clone());
        let mut c = Consumer::new(mem);
        assert_eq!(p.free(4), 4);
        for i in 0..4 {
            p.write_desc(
                i,
                Desc {
                    addr: u64::from(i) * 4096,
                    len: 60 + i,
                    options: 0,
                },
            );
        }
        p.submit(4);
        assert_eq!(p.free(1), 0);
        assert_eq!(p.outstanding(), 4);
        assert_eq!(c.available(64), 4);
        assert_eq!(
            c.read_desc(3),
            Desc {
                addr: 3 * 4096,
                len: 63,
                options: 0
            }
        );
        c.release(1);
        assert_eq!(p.free(1), 1);
    }

    #[test]
    fn indexes_wrap_around_u32() {
        let mem = test_ring(4, Entry::Addr);
        mem.producer().store(u32::MAX - 1, Ordering::Relaxed);
        mem.consumer().store(u32::MAX - 1, Ordering::Relaxed);
        let mut p = Producer::new(mem.clone());
        let mut c = Consumer::new(mem);
        for i in 0..3 {
            p.write_addr(i, 100 + u64::from(i));
        }
        p.submit(3);
        assert_eq!(p.index(), 1);
        assert_eq!(c.available(8), 3);
        assert_eq!(c.read_addr(2), 102);
        c.release(3);
        assert_eq!(c.index(), 1);
        assert_eq!(p.free(4), 4);
    }

    #[test]
    fn two_producers_taking_turns_resync_first() {
        let mem = test_ring(16, Entry::Addr);
        let mut a = Producer::new(mem.clone());
        let mut b = Producer::new(mem.clone());
        let mut c = Consumer::new(mem);
        a.write_addr(0, 1);
        a.submit(1);
        b.resync();
        b.write_addr(0, 2);
        b.submit(1);
        a.resync();
        a.write_addr(0, 3);
        a.submit(1);
        assert_eq!(c.available(16), 3);
        assert_eq!([c.read_addr(0), c.read_addr(1), c.read_addr(2)], [1, 2, 3]);
    }
}
