//! The control area: the memory (one memfd per interface) through which the processes sharing
//! an interface's queues agree on who holds which frame.
//!
//! # Frames of a queue and where they are
//!
//! Each queue's UMEM has `frame_count` frames. At any moment each frame is in exactly one of:
//!
//! - the shared **free stack** (here, under the queue's mutex);
//! - the **fill ring** or the kernel's receive path (it took the frame from the fill ring and has
//!   not put it in an RX ring yet);
//! - a client's **RX ring** (received, not consumed);
//! - a client's **private** lists (consumed from its RX ring, taken from the free stack or the
//!   completion ring, and not yet given back);
//! - a client's **TX ring**, the kernel's transmit path, or the **completion ring**;
//! - **leaked**: held by a process that died, counted by the helper.
//!
//! The fill ring, the completion ring and the free stack are shared by every process on the
//! queue; they are changed only under the queue's robust mutex. A client's RX and TX rings are
//! its own and need no lock.
//!
//! # Knowing what a dead process held
//!
//! A process can die at any instruction, so what it holds must be known from memory it cannot
//! leave half written. Every change of a ring or of the free stack has one commit point: the
//! single store of the ring's producer or consumer index, or of the stack's length. A client's
//! private frames are then
//!
//! ```text
//! private = rx_consumed - tx_produced + net
//! ```
//!
//! where `rx_consumed` and `tx_produced` are its RX ring's consumer index and its TX ring's
//! producer index (commit points the kernel shares with the helper), and `net` is the frames it
//! took minus those it gave through the shared rings and stack, kept here per (queue, slot).
//! `net` changes after a commit point, so each change under the mutex is journaled first:
//! which index, its value before and after, and `net` before and after. If the process dies
//! between the commit and the end of the journal entry, the next process to take the mutex gets
//! EOWNERDEAD, finds the journal still open, looks at the index and sets `net` to its "after"
//! value if the commit happened and to its "before" value if not. The repair is idempotent, so
//! a repairer that dies too is repaired in turn.
//!
//! Everything a client reads here was written by other processes: lengths and addresses are
//! checked (a frame address must lie in the UMEM) before use.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ring::{Consumer, Producer};
use crate::sys::shm::{self, Locked, MutexGuard, Region, RobustMutex, MUTEX_SPACE};

/// `b"accelctl"`: the first word of a control area.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"accelctl");
/// Layout version; a client refuses a control area of another version.
pub(crate) const VERSION: u32 = 1;
/// Client slots per interface (the same slot on every queue).
pub const SLOTS: usize = 16;
/// The slot the helper uses for its own changes (recovering a dead client's ring frames).
pub(crate) const HELPER_SLOT: usize = SLOTS;

const HEADER: usize = 256;
// Header fields.
const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_FRAME_SIZE: usize = 12;
const H_FRAME_COUNT: usize = 16;
const H_QUEUES: usize = 20;
const H_SLOTS: usize = 24;
const H_BLOCK: usize = 28;
const H_HELPER_PID: usize = 32;

// A queue block.
const Q_MUTEX: usize = 0;
const Q_STATE: usize = MUTEX_SPACE;
const Q_FREE_LEN: usize = Q_STATE + 4;
const Q_LEAKED: usize = Q_STATE + 8;
const Q_RECOVERED: usize = Q_STATE + 12;
const Q_BAD: usize = Q_STATE + 16;
const Q_REPAIRS: usize = Q_STATE + 20;
const Q_SLOTS: usize = 128;
/// One cache line per slot: slots are written by different processes.
const SLOT_LEN: usize = 64;
const Q_FREE: usize = Q_SLOTS + (SLOTS + 1) * SLOT_LEN;

// A slot's words.
const S_NET: usize = 0;
const S_J_ACTIVE: usize = 4;
const S_J_WHICH: usize = 8;
const S_J_BEFORE: usize = 12;
const S_J_AFTER: usize = 16;
const S_J_NET_BEFORE: usize = 20;
const S_J_NET_AFTER: usize = 24;

const STATE_READY: u32 = 1;

/// Which shared index a journal entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
enum Which {
    FreeStack = 1,
    Fill = 2,
    Completion = 3,
}

fn einval(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn block_len(frame_count: u32) -> usize {
    (Q_FREE + frame_count as usize * 4).next_multiple_of(64)
}

/// The shape of one queue's UMEM (frame count and size), as the control area records it.
pub(crate) use crate::desc::UmemLayout as Shape;

/// A mapped control area.
#[derive(Debug, Clone)]
pub(crate) struct Ctl {
    region: Arc<Region>,
    shape: Shape,
    queues: u32,
    block: usize,
}

impl Ctl {
    /// A new control area for `queues` queues (the helper): zeroed, header written; queues are
    /// set up one by one with [`Ctl::init_queue`].
    pub(crate) fn create(queues: u32, shape: Shape, helper_pid: u32) -> io::Result<(OwnedFd, Ctl)> {
        let block = block_len(shape.frame_count);
        let len = HEADER + block * queues as usize;
        let fd = shm::memfd("accel-ctl", len)?;
        let region = Arc::new(Region::map(fd.as_fd(), len, 0)?);
        let w = |off: usize, v: u32| {
            region
                .u32_at(off)
                .expect("header fields are inside the header")
                .store(v, Ordering::Relaxed)
        };
        w(H_VERSION, VERSION);
        w(H_FRAME_SIZE, shape.frame_size);
        w(H_FRAME_COUNT, shape.frame_count);
        w(H_QUEUES, queues);
        w(H_SLOTS, SLOTS as u32);
        w(H_BLOCK, block as u32);
        w(H_HELPER_PID, helper_pid);
        region
            .u64_at(H_MAGIC)
            .expect("magic is inside the header")
            .store(MAGIC, Ordering::Release);
        Ok((
            fd,
            Ctl {
                region,
                shape,
                queues,
                block,
            },
        ))
    }

    /// Maps a control area another process made and checks its header.
    pub(crate) fn open(fd: BorrowedFd<'_>) -> io::Result<Ctl> {
        let len = shm::file_size(fd)?;
        if len < HEADER {
            return Err(einval("control area too small"));
        }
        let region = Arc::new(Region::map(fd, len, 0)?);
        let r = |off: usize| {
            region
                .u32_at(off)
                .map(|a| a.load(Ordering::Relaxed))
                .unwrap_or(0)
        };
        if region.u64_at(H_MAGIC).map(|m| m.load(Ordering::Acquire)) != Some(MAGIC) {
            return Err(einval("not an accel control area"));
        }
        if r(H_VERSION) != VERSION {
            return Err(einval("control area of another accel version"));
        }
        let shape = Shape {
            frame_size: r(H_FRAME_SIZE),
            frame_count: r(H_FRAME_COUNT),
        };
        let queues = r(H_QUEUES);
        let block = r(H_BLOCK) as usize;
        if shape.frame_size == 0
            || shape.frame_count == 0
            || r(H_SLOTS) as usize != SLOTS
            || block != block_len(shape.frame_count)
            || HEADER + block * queues as usize > len
        {
            return Err(einval("control area header does not match its size"));
        }
        Ok(Ctl {
            region,
            shape,
            queues,
            block,
        })
    }

    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    pub(crate) fn queues(&self) -> u32 {
        self.queues
    }

    fn base(&self, queue: u32) -> io::Result<usize> {
        if queue >= self.queues {
            return Err(einval("queue beyond the control area"));
        }
        Ok(HEADER + self.block * queue as usize)
    }

    /// Sets queue `queue` up (the helper, before anyone uses it): a fresh mutex, no frames on
    /// the free stack, every slot's counters zero.
    pub(crate) fn init_queue(&self, queue: u32) -> io::Result<QueueCtl> {
        let base = self.base(queue)?;
        let mutex = RobustMutex::init(&self.region, base + Q_MUTEX)?;
        let q = QueueCtl {
            region: Arc::clone(&self.region),
            base,
            shape: self.shape,
            mutex,
        };
        for off in [Q_FREE_LEN, Q_LEAKED, Q_RECOVERED, Q_BAD, Q_REPAIRS] {
            q.word(off).store(0, Ordering::Relaxed);
        }
        for s in 0..=SLOTS {
            q.reset_slot(s);
        }
        q.word(Q_STATE).store(STATE_READY, Ordering::Release);
        Ok(q)
    }

    /// Queue `queue` as the helper set it up.
    pub(crate) fn queue(&self, queue: u32) -> io::Result<QueueCtl> {
        let base = self.base(queue)?;
        let word = self
            .region
            .u32_at(base + Q_STATE)
            .ok_or_else(|| einval("queue block outside the control area"))?;
        if word.load(Ordering::Acquire) != STATE_READY {
            return Err(einval("queue not set up in the control area"));
        }
        Ok(QueueCtl {
            region: Arc::clone(&self.region),
            base,
            shape: self.shape,
            mutex: RobustMutex::attach(&self.region, base + Q_MUTEX)?,
        })
    }
}

/// Counters of one queue in the control area.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct QueueCounts {
    pub(crate) free: u32,
    pub(crate) leaked: u32,
    pub(crate) recovered: u32,
    /// Addresses refused from the free stack or the completion ring (outside the UMEM).
    pub(crate) bad: u32,
    /// Journal entries repaired after a process died holding the mutex.
    pub(crate) repairs: u32,
}

/// One queue's part of the control area: its mutex, free stack and per-slot counters.
#[derive(Debug)]
pub(crate) struct QueueCtl {
    region: Arc<Region>,
    base: usize,
    shape: Shape,
    mutex: RobustMutex,
}

impl QueueCtl {
    #[inline]
    fn word(&self, off: usize) -> &AtomicU32 {
        self.region
            .u32_at(self.base + off)
            .expect("queue block fields lie inside the checked block")
    }

    #[inline]
    fn slot_word(&self, slot: usize, off: usize) -> &AtomicU32 {
        debug_assert!(slot <= SLOTS);
        self.word(Q_SLOTS + slot.min(SLOTS) * SLOT_LEN + off)
    }

    fn stack(&self) -> &[AtomicU32] {
        self.region
            .u32s(self.base + Q_FREE, self.shape.frame_count as usize)
            .expect("the free stack lies inside the checked block")
    }

    pub(crate) fn shape(&self) -> Shape {
        self.shape
    }

    /// The frames `slot` took minus those it gave through the shared rings and stack.
    pub(crate) fn net(&self, slot: usize) -> u32 {
        self.slot_word(slot, S_NET).load(Ordering::Acquire)
    }

    /// Zeroes `slot`'s counters and journal (the helper, when the slot is free).
    pub(crate) fn reset_slot(&self, slot: usize) {
        for off in [
            S_NET,
            S_J_ACTIVE,
            S_J_WHICH,
            S_J_BEFORE,
            S_J_AFTER,
            S_J_NET_BEFORE,
            S_J_NET_AFTER,
        ] {
            self.slot_word(slot, off).store(0, Ordering::Release);
        }
    }

    pub(crate) fn counts(&self) -> QueueCounts {
        let r = |off| self.word(off).load(Ordering::Acquire);
        QueueCounts {
            free: r(Q_FREE_LEN),
            leaked: r(Q_LEAKED),
            recovered: r(Q_RECOVERED),
            bad: r(Q_BAD),
            repairs: r(Q_REPAIRS),
        }
    }

    /// Takes the queue's mutex for `slot`, repairing what a dead owner left half done, and
    /// brings the shared rings' cached indexes up to date. Waits at most `timeout`.
    pub(crate) fn lock<'a>(
        &'a self,
        slot: usize,
        fill: &mut Producer,
        completion: &mut Consumer,
        timeout: Duration,
    ) -> io::Result<Session<'a>> {
        if slot > SLOTS {
            return Err(einval("slot out of range"));
        }
        let guard = self.mutex.lock_within(timeout)?;
        if guard.how() == Locked::OwnerDied {
            self.repair(fill, completion);
        }
        fill.resync();
        completion.resync();
        Ok(Session {
            q: self,
            slot,
            _guard: guard,
        })
    }

    /// Closes the journal entries a dead mutex owner left open (see the module header).
    fn repair(&self, fill: &Producer, completion: &Consumer) {
        let len = self.word(Q_FREE_LEN);
        if len.load(Ordering::Acquire) > self.shape.frame_count {
            // Never written so by our code: keep the stack within its memory at least.
            len.store(self.shape.frame_count, Ordering::Release);
        }
        for s in 0..=SLOTS {
            if self.slot_word(s, S_J_ACTIVE).load(Ordering::Acquire) == 0 {
                continue;
            }
            let which = self.slot_word(s, S_J_WHICH).load(Ordering::Acquire);
            let now = match which {
                w if w == Which::FreeStack as u32 => len.load(Ordering::Acquire),
                w if w == Which::Fill as u32 => fill.published(),
                w if w == Which::Completion as u32 => completion.published(),
                _ => {
                    self.slot_word(s, S_J_ACTIVE).store(0, Ordering::Release);
                    continue;
                }
            };
            let committed = now == self.slot_word(s, S_J_AFTER).load(Ordering::Acquire);
            let net = if committed {
                self.slot_word(s, S_J_NET_AFTER).load(Ordering::Acquire)
            } else {
                self.slot_word(s, S_J_NET_BEFORE).load(Ordering::Acquire)
            };
            tracing::info!(
                slot = s,
                which,
                committed,
                "repairing a shared-ring change a dead process left open"
            );
            self.slot_word(s, S_NET).store(net, Ordering::Release);
            self.slot_word(s, S_J_ACTIVE).store(0, Ordering::Release);
            self.word(Q_REPAIRS).fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The queue's mutex, held by one slot: the only way to change the shared rings and stack.
#[derive(Debug)]
pub(crate) struct Session<'a> {
    q: &'a QueueCtl,
    slot: usize,
    _guard: MutexGuard<'a>,
}

impl Session<'_> {
    /// Opens the journal entry for a change of `which` from `before` to `after` that moves
    /// this slot's net count by `delta` (wrapping).
    fn begin(&self, which: Which, before: u32, after: u32, delta: u32) -> u32 {
        let q = self.q;
        let s = self.slot;
        let net = q.slot_word(s, S_NET).load(Ordering::Acquire);
        let net_after = net.wrapping_add(delta);
        q.slot_word(s, S_J_WHICH)
            .store(which as u32, Ordering::Release);
        q.slot_word(s, S_J_BEFORE).store(before, Ordering::Release);
        q.slot_word(s, S_J_AFTER).store(after, Ordering::Release);
        q.slot_word(s, S_J_NET_BEFORE).store(net, Ordering::Release);
        q.slot_word(s, S_J_NET_AFTER)
            .store(net_after, Ordering::Release);
        q.slot_word(s, S_J_ACTIVE).store(1, Ordering::Release);
        net_after
    }

    /// Closes the journal entry after its commit point.
    fn end(&self, net_after: u32) {
        let q = self.q;
        q.slot_word(self.slot, S_NET)
            .store(net_after, Ordering::Release);
        q.slot_word(self.slot, S_J_ACTIVE)
            .store(0, Ordering::Release);
    }

    /// Frames on the free stack now.
    pub(crate) fn free_len(&self) -> u32 {
        self.q
            .word(Q_FREE_LEN)
            .load(Ordering::Acquire)
            .min(self.q.shape.frame_count)
    }

    /// Moves up to `want` frames from the free stack to `out`. Returns how many came.
    pub(crate) fn take_free(&mut self, want: usize, out: &mut Vec<u64>) -> usize {
        let len = self.free_len();
        let m = (want as u32).min(len);
        if m == 0 {
            return 0;
        }
        let stack = self.q.stack();
        let start = out.len();
        let mut bad = 0;
        for e in &stack[(len - m) as usize..len as usize] {
            match self.q.shape.frame_of(u64::from(e.load(Ordering::Relaxed))) {
                Some(f) => out.push(f),
                None => bad += 1,
            }
        }
        let got = out.len() - start;
        let net = self.begin(Which::FreeStack, len, len - m, got as u32);
        self.q.word(Q_FREE_LEN).store(len - m, Ordering::Release);
        self.end(net);
        if bad > 0 {
            self.q.word(Q_BAD).fetch_add(bad, Ordering::Relaxed);
        }
        got
    }

    /// Moves every frame of `frames` (emptied) onto the free stack.
    pub(crate) fn give_free(&mut self, frames: &mut Vec<u64>) {
        self.push_free(frames, true);
    }

    fn push_free(&mut self, frames: &mut Vec<u64>, counted: bool) -> u32 {
        let len = self.free_len();
        let room = self.q.shape.frame_count - len;
        let m = (frames.len() as u32).min(room);
        if m == 0 {
            return 0;
        }
        let stack = self.q.stack();
        let from = frames.len() - m as usize;
        for (i, &f) in frames[from..].iter().enumerate() {
            // Frame addresses fit in u32: the UMEM is far smaller than 4 GiB (checked at setup).
            stack[len as usize + i].store(f as u32, Ordering::Relaxed);
        }
        let delta = if counted { 0u32.wrapping_sub(m) } else { 0 };
        let net = self.begin(Which::FreeStack, len, len + m, delta);
        self.q.word(Q_FREE_LEN).store(len + m, Ordering::Release);
        self.end(net);
        frames.truncate(from);
        m
    }

    /// Produces every frame of `frames` (emptied) to the fill ring, as far as it has room
    /// (it always does when it holds every frame of the UMEM). Returns how many went.
    pub(crate) fn fill(&mut self, fq: &mut Producer, frames: &mut Vec<u64>) -> usize {
        self.produce_fill(fq, frames, true)
    }

    /// The helper, setting a queue up: puts frames in the fill ring (not counted to any slot).
    pub(crate) fn seed_fill(&mut self, fq: &mut Producer, frames: &mut Vec<u64>) -> usize {
        self.produce_fill(fq, frames, false)
    }

    fn produce_fill(&mut self, fq: &mut Producer, frames: &mut Vec<u64>, counted: bool) -> usize {
        let n = (frames.len() as u32).min(fq.free(frames.len() as u32));
        if n == 0 {
            return 0;
        }
        let from = frames.len() - n as usize;
        for (i, &f) in frames[from..].iter().enumerate() {
            fq.write_addr(i as u32, f);
        }
        let before = fq.index();
        let delta = if counted { 0u32.wrapping_sub(n) } else { 0 };
        let net = self.begin(Which::Fill, before, before.wrapping_add(n), delta);
        fq.submit(n);
        self.end(net);
        frames.truncate(from);
        n as usize
    }

    /// Moves up to `max` completed TX frames from the completion ring to `out`.
    pub(crate) fn drain_completions(
        &mut self,
        cq: &mut Consumer,
        max: usize,
        out: &mut Vec<u64>,
    ) -> usize {
        let n = cq.available(max as u32);
        if n == 0 {
            return 0;
        }
        let start = out.len();
        let mut bad = 0;
        for i in 0..n {
            match self.q.shape.frame_of(cq.read_addr(i)) {
                Some(f) => out.push(f),
                None => bad += 1,
            }
        }
        let got = out.len() - start;
        let before = cq.index();
        let net = self.begin(
            Which::Completion,
            before,
            before.wrapping_add(n),
            got as u32,
        );
        cq.release(n);
        self.end(net);
        if bad > 0 {
            self.q.word(Q_BAD).fetch_add(bad, Ordering::Relaxed);
        }
        got
    }

    /// For the recovery test: takes up to `want` frames from the free stack like
    /// [`Session::take_free`] but stops right after its commit point, the journal entry still
    /// open (what a process killed at that instruction leaves).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn take_free_and_stop_at_the_commit(&mut self, want: usize, out: &mut Vec<u64>) {
        let len = self.free_len();
        let m = (want as u32).min(len);
        let stack = self.q.stack();
        for e in &stack[(len - m) as usize..len as usize] {
            out.extend(self.q.shape.frame_of(u64::from(e.load(Ordering::Relaxed))));
        }
        self.begin(Which::FreeStack, len, len - m, m);
        self.q.word(Q_FREE_LEN).store(len - m, Ordering::Release);
    }

    /// The helper: puts frames it recovered from a dead client's rings back on the free stack
    /// (they count as recovered, not as anyone's).
    pub(crate) fn recover(&mut self, frames: &mut Vec<u64>) -> u32 {
        debug_assert_eq!(self.slot, HELPER_SLOT);
        let n = self.push_free(frames, false);
        self.q.word(Q_RECOVERED).fetch_add(n, Ordering::Relaxed);
        n
    }

    /// The helper: counts frames a dead client held as leaked.
    pub(crate) fn count_leaked(&mut self, n: u32) {
        self.q.word(Q_LEAKED).fetch_add(n, Ordering::Relaxed);
    }

    /// The helper, setting a queue up: puts the UMEM's frames on the free stack (not counted to
    /// any slot).
    pub(crate) fn seed(&mut self, frames: &mut Vec<u64>) {
        self.push_free(frames, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::tests::test_ring;
    use crate::sys::ring::Entry;

    const SHAPE: Shape = Shape {
        frame_size: 4096,
        frame_count: 64,
    };

    struct Fixture {
        ctl: Ctl,
        fd: OwnedFd,
        q: QueueCtl,
        fq: Producer,
        cq: Consumer,
    }

    fn fixture() -> Fixture {
        let (fd, ctl) = Ctl::create(2, SHAPE, 1).unwrap();
        let q = ctl.init_queue(1).unwrap();
        let fq = Producer::new(test_ring(64, Entry::Addr));
        let cq = Consumer::new(test_ring(64, Entry::Addr));
        Fixture { ctl, fd, q, fq, cq }
    }

    fn lock<'a>(
        f: &'a mut Fixture,
        slot: usize,
    ) -> (Session<'a>, &'a mut Producer, &'a mut Consumer) {
        let s =
            f.q.lock(slot, &mut f.fq, &mut f.cq, Duration::from_secs(5))
                .unwrap();
        (s, &mut f.fq, &mut f.cq)
    }

    #[test]
    fn a_client_opens_what_the_helper_made_and_refuses_other_memory() {
        let f = fixture();
        let other = Ctl::open(f.fd.as_fd()).unwrap();
        assert_eq!(other.shape(), SHAPE);
        assert_eq!(other.queues(), 2);
        assert!(other.queue(1).is_ok());
        assert!(other.queue(0).is_err(), "queue 0 was never set up");
        assert!(other.queue(2).is_err(), "beyond the area");
        let junk = shm::memfd("junk", 4096).unwrap();
        assert!(Ctl::open(junk.as_fd()).is_err());
        drop(f.ctl);
    }

    #[test]
    fn frames_move_between_stack_and_slots_with_net_counts() {
        let mut f = fixture();
        let mut all: Vec<u64> = (0..64).map(|i| i * 4096).collect();
        {
            let (mut s, _, _) = lock(&mut f, HELPER_SLOT);
            s.seed(&mut all);
            assert_eq!(s.free_len(), 64);
        }
        let mut mine = Vec::new();
        {
            let (mut s, fq, _) = lock(&mut f, 3);
            assert_eq!(s.take_free(10, &mut mine), 10);
            let mut to_fill: Vec<u64> = mine.drain(..4).collect();
            assert_eq!(s.fill(fq, &mut to_fill), 4);
            assert!(to_fill.is_empty());
        }
        assert_eq!(f.q.net(3), 6, "took 10, gave 4");
        assert_eq!(f.q.counts().free, 54);
        {
            let (mut s, _, _) = lock(&mut f, 3);
            s.give_free(&mut mine);
        }
        assert_eq!(f.q.net(3), 0);
        assert_eq!(f.q.counts().free, 60);
        assert_eq!(f.q.net(HELPER_SLOT), 0, "seeding counts to nobody");
    }

    #[test]
    fn completions_and_bad_addresses() {
        let mut f = fixture();
        // The kernel completed two good frames and one address outside the UMEM.
        let mut kernel = Producer::new(f.cq.mem().clone());
        for (i, a) in [4096u64, 64 * 4096, 8192 + 100].iter().enumerate() {
            kernel.write_addr(i as u32, *a);
        }
        kernel.submit(3);
        let mut out = Vec::new();
        {
            let (mut s, _, cq) = lock(&mut f, 0);
            assert_eq!(s.drain_completions(cq, 64, &mut out), 2);
        }
        assert_eq!(out, vec![4096, 8192], "addresses become frame starts");
        assert_eq!(f.q.net(0), 2);
        assert_eq!(f.q.counts().bad, 1);
        assert_eq!(f.cq.published(), 3, "all three consumed");
    }

    /// Simulates a process that died between a commit point and the end of its journal entry,
    /// and one that died before the commit point: the next locker sets `net` right.
    #[test]
    fn journal_repair_after_an_owner_death() {
        for committed in [false, true] {
            for which in [Which::FreeStack, Which::Fill, Which::Completion] {
                let mut f = fixture();
                let mut all: Vec<u64> = (0..64).map(|i| i * 4096).collect();
                {
                    let (mut s, _, _) = lock(&mut f, HELPER_SLOT);
                    s.seed(&mut all);
                }
                let q = Arc::new(f.ctl.queue(1).unwrap());
                // A thread of "process" 5 takes the lock, opens an entry, maybe commits, dies.
                let fq_mem = f.fq.mem().clone();
                let cq_mem = f.cq.mem().clone();
                let q2 = Arc::clone(&q);
                std::thread::spawn(move || {
                    let mut fq = Producer::new(fq_mem);
                    let mut cq = Consumer::new(cq_mem);
                    let s = q2
                        .lock(5, &mut fq, &mut cq, Duration::from_secs(5))
                        .unwrap();
                    let (before, after, delta) = match which {
                        Which::FreeStack => (64, 60, 4),
                        Which::Fill => (0, 3, 0u32.wrapping_sub(3)),
                        Which::Completion => (0, 0, 0),
                    };
                    s.begin(which, before, after, delta);
                    if committed {
                        match which {
                            Which::FreeStack => q2.word(Q_FREE_LEN).store(after, Ordering::Release),
                            Which::Fill => fq.submit(3),
                            Which::Completion => {}
                        }
                    }
                    std::mem::forget(s); // dies holding the lock, journal open
                })
                .join()
                .unwrap();
                let (s, _, _) = lock(&mut f, 0);
                drop(s);
                let want = match (which, committed) {
                    (Which::FreeStack, true) => 4,
                    (Which::Fill, true) => 0u32.wrapping_sub(3),
                    // A completion entry whose index did not move is "not committed" either way.
                    _ => 0,
                };
                assert_eq!(f.q.net(5), want, "{which:?} committed={committed}");
                assert_eq!(f.q.counts().repairs, 1);
                // The repair is done once: the next lock finds nothing open.
                drop(lock(&mut f, 0));
                assert_eq!(f.q.counts().repairs, 1);
            }
        }
    }

    #[test]
    fn recovered_frames_go_to_the_stack_counted_as_recovered() {
        let mut f = fixture();
        let mut frames = vec![0, 4096, 8192];
        let (mut s, _, _) = lock(&mut f, HELPER_SLOT);
        assert_eq!(s.recover(&mut frames), 3);
        s.count_leaked(2);
        drop(s);
        let c = f.q.counts();
        assert_eq!((c.free, c.recovered, c.leaked), (3, 3, 2));
        assert_eq!(f.q.net(HELPER_SLOT), 0);
    }
}
