//! AF_XDP queues as links for the stack.
//!
//! [`Queue`] is this process's AF_XDP socket on (interface, queue), over the queue's UMEM that
//! other processes may share (see `crate::share`); it implements [`stack::link::Link`]. [`QueueSet`] puts several queues of one interface behind one link, so a
//! single stack can serve every queue a multi-queue NIC spreads flows over (RSS picks the RX
//! queue; any queue may transmit).

use stack::link::Link;

pub use crate::sys::xsk::{
    CopyMode, QueueCounters, XdpStats, XskError as QueueError, XskQueue as Queue, CACHE_MAX,
    XDP_PACKET_HEADROOM,
};

use crate::desc::UmemLayout;
use crate::share::helper::SIZES;

/// The shape of every queue's UMEM, as the helper makes them (RX descriptors are checked
/// against it).
pub const UMEM_LAYOUT: UmemLayout = UmemLayout {
    frame_count: SIZES.frame_count,
    frame_size: SIZES.frame_size,
};

/// The frame memory of one queue, which the kernel pins (and charges to the locked-memory
/// limit of the helper's user when it lacks CAP_IPC_LOCK).
pub const UMEM_BYTES: u64 = SIZES.frame_count as u64 * SIZES.frame_size as u64;

/// Several queues of one interface behind one [`Link`].
pub struct QueueSet {
    queues: Vec<Queue>,
    next_rx: usize,
    mtu: usize,
}

impl QueueSet {
    /// # Panics
    /// If `queues` is empty.
    pub fn new(queues: Vec<Queue>) -> QueueSet {
        assert!(!queues.is_empty(), "a QueueSet needs at least one queue");
        let mtu = queues.iter().map(|q| q.mtu()).min().unwrap_or(1500);
        QueueSet {
            queues,
            next_rx: 0,
            mtu,
        }
    }

    pub fn queues(&self) -> &[Queue] {
        &self.queues
    }

    pub fn queues_mut(&mut self) -> &mut [Queue] {
        &mut self.queues
    }

    /// Whether every frame of every queue is in exactly one place.
    pub fn frames_accounted(&self) -> bool {
        self.queues.iter().all(|q| q.frames_accounted())
    }
}

impl Link for QueueSet {
    type Rx<'a> = <Queue as Link>::Rx<'a>;
    type Tx<'a> = <Queue as Link>::Tx<'a>;

    fn receive(&mut self) -> Option<(Self::Rx<'_>, Self::Tx<'_>)> {
        let n = self.queues.len();
        // Round-robin so one busy queue cannot starve the others.
        let found = (0..n)
            .map(|i| (self.next_rx + i) % n)
            .find(|&i| self.queues[i].has_rx())?;
        self.next_rx = (found + 1) % n;
        self.queues[found].receive()
    }

    fn transmit(&mut self) -> Option<Self::Tx<'_>> {
        let n = self.queues.len();
        let start = self.next_rx % n;
        let found = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| self.queues[i].free_frames() > 0)
            .unwrap_or(start);
        self.queues[found].transmit()
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn flush(&mut self) {
        for q in &mut self.queues {
            q.flush();
        }
    }

    fn flush_batched(&mut self, now: stack::Instant) {
        for q in &mut self.queues {
            q.flush_batched(now);
        }
    }

    fn tx_held(&mut self) -> bool {
        self.queues.iter_mut().any(|q| q.tx_held())
    }

    fn idle(&mut self) -> bool {
        self.queues.iter_mut().all(|q| q.idle())
    }
}
