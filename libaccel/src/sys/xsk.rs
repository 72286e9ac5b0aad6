//! AF_XDP sockets and one process's queue over a UMEM that several processes share.
//!
//! [`XskSocket`] is the socket itself: creation, UMEM registration (over a memfd mapping, so
//! other processes can map the same frames), ring sizes and their mmap, bind (copy or zero-copy,
//! need-wakeup, or `XDP_SHARED_UMEM` to the queue's UMEM owner), kicks and statistics. The
//! helper makes every socket; a client only maps and uses the ones it was given.
//!
//! [`XskQueue`] is a client's socket on one queue as a stack [`Link`].
//!
//! # Safety: which frames this process may touch
//!
//! The frame bytes of the UMEM are shared with the kernel and with every process on the queue.
//! This file touches a frame's bytes only while the frame is in one of this queue's private
//! lists, which hold frames nobody else owns (see `share/ctl.rs` for the whole protocol):
//!
//! - `rx_batch[rx_pos..rx_len]`: consumed from our own RX ring (the kernel gave them to us);
//! - `to_fill`: received frames the stack is done with, waiting for the fill ring;
//! - `cache`: taken from the shared free stack or the completion ring under the queue's mutex;
//! - `pending_tx`: filled by the stack, waiting for our TX ring;
//! - a token being consumed (moved out of one list and into another before it returns).
//!
//! A frame leaves these lists only through a commit point (a ring index or the stack length)
//! after which this process no longer touches it. [`XskQueue::frames_accounted`] checks that the
//! lists add up to what the control area says this process holds; the tests assert it.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use stack::link::{Link, RxFrame, TxFrame};
use stack::Instant;

use super::ring::{Entry, RingMem, RingOffsets};
use super::shm::Region;
use crate::desc::BadDesc;
use crate::kick::{KickPolicy, KICK_BATCH};
use crate::ring::{Consumer, Desc, Producer};
use crate::share::ctl::{QueueCtl, Shape};

/// The kernel's headroom in front of each received frame (copy mode and most drivers).
pub const XDP_PACKET_HEADROOM: u32 = 256;
/// How many descriptors move between the RX ring and our lists in one call.
const BATCH: usize = 64;
/// Received frames wait until this many can go back to the fill ring in one locked batch.
const FILL_BATCH: usize = 32;
/// Most frames a queue keeps for transmitting (the local cache).
pub const CACHE_MAX: usize = 256;
/// Frames a locked refill brings into an empty cache.
const CACHE_REFILL: usize = 64;
/// Below this many frames in the fill ring, a locked batch tops it up from the free stack.
const FILL_LOW: u32 = 512;
/// Most kicks one push makes (copy mode: each takes at most [`KICK_BATCH`] frames), enough for a
/// full TX ring; a kick that took nothing ends it earlier.
const MAX_KICKS: u32 = 2048 / KICK_BATCH + 1;
/// How long the data path waits for the queue's mutex before it gives up for this round (a
/// process stopped while holding it must not stop the others).
const LOCK_TIMEOUT: Duration = Duration::from_millis(20);

const SOL_XDP: libc::c_int = 283;
const XDP_MMAP_OFFSETS: libc::c_int = 1;
const XDP_RX_RING: libc::c_int = 2;
const XDP_TX_RING: libc::c_int = 3;
const XDP_UMEM_REG: libc::c_int = 4;
const XDP_UMEM_FILL_RING: libc::c_int = 5;
const XDP_UMEM_COMPLETION_RING: libc::c_int = 6;
const XDP_STATISTICS: libc::c_int = 7;
const XDP_OPTIONS: libc::c_int = 8;
const XDP_OPTIONS_ZEROCOPY: u32 = 1;

/// Bind flags (`sxdp_flags`).
pub(crate) const XDP_SHARED_UMEM: u16 = 1 << 0;
pub(crate) const XDP_COPY: u16 = 1 << 1;
pub(crate) const XDP_ZEROCOPY: u16 = 1 << 2;
pub(crate) const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;

/// Whether the socket copies frames or shares them with the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    ZeroCopy,
    Copy,
}

/// One of a socket's four rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RingKind {
    Rx,
    Tx,
    Fill,
    Completion,
}

impl RingKind {
    fn sockopt(self) -> libc::c_int {
        match self {
            RingKind::Rx => XDP_RX_RING,
            RingKind::Tx => XDP_TX_RING,
            RingKind::Fill => XDP_UMEM_FILL_RING,
            RingKind::Completion => XDP_UMEM_COMPLETION_RING,
        }
    }

    fn pgoff(self) -> u64 {
        match self {
            RingKind::Rx => 0,
            RingKind::Tx => 0x8000_0000,
            RingKind::Fill => 0x1_0000_0000,
            RingKind::Completion => 0x1_8000_0000,
        }
    }

    fn entry(self) -> Entry {
        match self {
            RingKind::Rx | RingKind::Tx => Entry::Desc,
            RingKind::Fill | RingKind::Completion => Entry::Addr,
        }
    }
}

/// `struct xdp_statistics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStats {
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// An AF_XDP socket.
#[derive(Debug)]
pub(crate) struct XskSocket {
    fd: OwnedFd,
}

impl XskSocket {
    /// A new, unbound AF_XDP socket (needs CAP_NET_RAW).
    pub(crate) fn new() -> io::Result<XskSocket> {
        // SAFETY: plain socket(2); a non-negative result is a new fd nobody else owns.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: raw is a new, valid fd.
        Ok(XskSocket {
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// A socket another process made (received over SCM_RIGHTS).
    pub(crate) fn from_fd(fd: OwnedFd) -> XskSocket {
        XskSocket { fd }
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn setopt<T: Copy>(&self, name: libc::c_int, v: &T) -> io::Result<()> {
        // SAFETY: `v` is a valid T for the call and its exact size is passed.
        cvt(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                SOL_XDP,
                name,
                (v as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    fn getopt<T: Copy + Default>(&self, name: libc::c_int) -> io::Result<T> {
        let mut v = T::default();
        let mut len = size_of::<T>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `v`, a valid T.
        cvt(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_XDP,
                name,
                (&mut v as *mut T).cast(),
                &mut len,
            )
        })?;
        Ok(v)
    }

    /// Registers `umem` (a memfd mapping) as this socket's UMEM, in frames of `frame_size`.
    pub(crate) fn register_umem(&self, umem: &Region, frame_size: u32) -> io::Result<()> {
        // struct xdp_umem_reg (with the tx_metadata_len the kernel accepts zero for).
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct UmemReg {
            addr: u64,
            len: u64,
            chunk_size: u32,
            headroom: u32,
            flags: u32,
            tx_metadata_len: u32,
        }
        self.setopt(
            XDP_UMEM_REG,
            &UmemReg {
                addr: umem.addr(),
                len: umem.len() as u64,
                chunk_size: frame_size,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            },
        )
    }

    /// Sets the number of entries of one ring (a power of two), before bind.
    pub(crate) fn set_ring_size(&self, kind: RingKind, size: u32) -> io::Result<()> {
        self.setopt(kind.sockopt(), &(size as libc::c_int))
    }

    fn offsets(&self, kind: RingKind) -> io::Result<RingOffsets> {
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Off {
            producer: u64,
            consumer: u64,
            desc: u64,
            flags: u64,
        }
        #[repr(C)]
        #[derive(Clone, Copy, Default)]
        struct Offsets {
            rx: Off,
            tx: Off,
            fr: Off,
            cr: Off,
        }
        let o: Offsets = self.getopt(XDP_MMAP_OFFSETS)?;
        let r = match kind {
            RingKind::Rx => o.rx,
            RingKind::Tx => o.tx,
            RingKind::Fill => o.fr,
            RingKind::Completion => o.cr,
        };
        Ok(RingOffsets {
            producer: r.producer,
            consumer: r.consumer,
            desc: r.desc,
            flags: r.flags,
        })
    }

    /// Maps one ring of `size` entries. The fill and completion rings of a bound socket are
    /// its UMEM's (for a socket bound with `XDP_SHARED_UMEM` on the same queue, the owner's).
    pub(crate) fn map_ring(&self, kind: RingKind, size: u32) -> io::Result<RingMem> {
        let off = self.offsets(kind)?;
        let len = off.map_len(size, kind.entry().words());
        let region = Region::map(self.fd.as_fd(), len, kind.pgoff())?;
        RingMem::new(Arc::new(region), off, size, kind.entry())
    }

    /// Binds to (ifindex, queue) with `flags`; `shared`: the UMEM owner's socket.
    pub(crate) fn bind(
        &self,
        ifindex: u32,
        queue: u32,
        flags: u16,
        shared: Option<BorrowedFd<'_>>,
    ) -> io::Result<()> {
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: shared.map_or(0, |fd| fd.as_raw_fd() as u32),
        };
        // SAFETY: addr is a fully initialised sockaddr_xdp and its exact size is passed.
        cvt(unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Whether the bound socket runs in zero-copy mode.
    pub(crate) fn zero_copy(&self) -> io::Result<bool> {
        let v: u32 = self.getopt(XDP_OPTIONS)?;
        Ok(v & XDP_OPTIONS_ZEROCOPY != 0)
    }

    pub(crate) fn statistics(&self) -> io::Result<XdpStats> {
        self.getopt(XDP_STATISTICS)
    }

    /// Tells the kernel to transmit what is on the TX ring (copy mode needs one per batch).
    pub(crate) fn kick_tx(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto with null buffer and address, which AF_XDP defines as
        // "process the TX ring".
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Wakes the driver to take frames from the fill ring (when it said it needs it).
    pub(crate) fn kick_rx(&self) -> io::Result<()> {
        // SAFETY: a zero-length recvfrom with null buffer and address, AF_XDP's wake-up call.
        let r = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Counters of one queue. Plain integers: one thread owns a queue.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueueCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames the stack wanted to send while every TX frame was in flight.
    pub tx_no_frame: u64,
    /// Frames longer than the UMEM frame (cannot happen with a sane MTU; counted, not sent).
    pub tx_too_long: u64,
    /// TX kicks (sendto) issued.
    pub tx_kicks: u64,
    /// Flushes that may batch which held frames back for a later kick (see `crate::kick`).
    pub tx_held: u64,
    /// Kicks a push made for frames held back: the program waited or went back to its event
    /// loop, or the progress thread came.
    pub tx_held_pushed: u64,
    /// Fill-ring wake-ups issued.
    pub fill_wakeups: u64,
    /// RX descriptors whose address or length fall outside our UMEM or their frame (never
    /// from a sane kernel): dropped before their bytes are read.
    pub rx_bad_desc: u64,
    /// Times the queue's mutex was taken (fill batches, cache refills).
    pub locks: u64,
    /// Times the mutex could not be had within the data path's patience.
    pub lock_timeouts: u64,
}

/// The rings of one client socket (its own RX and TX, the queue's shared fill and
/// completion rings).
pub(crate) struct Rings {
    pub(crate) rx: RingMem,
    pub(crate) tx: RingMem,
    pub(crate) fill: RingMem,
    pub(crate) completion: RingMem,
}

/// What a client needs to serve one queue: its socket (none in the unit tests, which play
/// the kernel themselves), its rings, the shared UMEM and the queue's control block.
pub(crate) struct QueueParts {
    pub(crate) socket: Option<XskSocket>,
    pub(crate) rings: Rings,
    pub(crate) umem: Arc<Region>,
    pub(crate) ctl: QueueCtl,
    pub(crate) slot: usize,
    pub(crate) queue_id: u32,
    pub(crate) mode: CopyMode,
    pub(crate) mtu: usize,
}

/// A client's AF_XDP socket on one queue of a UMEM shared with other processes.
pub struct XskQueue {
    socket: Option<XskSocket>,
    rx: Consumer,
    tx: Producer,
    fill: Producer,
    completion: Consumer,
    umem: Arc<Region>,
    shape: Shape,
    ctl: QueueCtl,
    slot: usize,
    queue_id: u32,
    mode: CopyMode,
    mtu: usize,
    rx_batch: Vec<Desc>,
    rx_pos: usize,
    rx_len: usize,
    to_fill: Vec<u64>,
    cache: Vec<u64>,
    pending_tx: Vec<Desc>,
    /// Scratch list for topping the fill ring up from the free stack.
    spare: Vec<u64>,
    /// Frames lost to RX descriptors that named no frame of the UMEM (see `rx_bad_desc`).
    lost_frames: usize,
    /// Copy mode: descriptors on the TX ring that no kick covered yet (put there since the
    /// last kick, or left by it).
    tx_unkicked: u32,
    /// When the queue kicks (see `crate::kick`).
    kick: KickPolicy,
    /// The time of the last flush that may batch (for kicks made between two polls).
    now: Instant,
    /// Scratch space for a reply the stack builds while no TX frame is free (dropped, counted).
    scratch: Vec<u8>,
    /// The process that joined: a forked child's copy must not touch the shared state.
    pid: u32,
    pub counters: QueueCounters,
}

/// Why a queue could not be set up.
#[derive(Debug)]
pub struct XskError {
    pub what: &'static str,
    pub source: Option<io::Error>,
}

impl std::fmt::Display for XskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(e) => write!(f, "{}: {}", self.what, e),
            None => f.write_str(self.what),
        }
    }
}

impl std::error::Error for XskError {}

impl XskQueue {
    pub(crate) fn new(p: QueueParts) -> Result<XskQueue, XskError> {
        let shape = p.ctl.shape();
        let frame = shape.frame_size as usize;
        if p.mtu + 14 > frame.saturating_sub(XDP_PACKET_HEADROOM as usize) {
            return Err(XskError {
                what: "interface MTU is larger than an AF_XDP frame (about 3800 bytes): lower it with `ip link set dev IF mtu 1500`",
                source: None,
            });
        }
        if (p.umem.len() as u64) < shape.len() || shape.len() > u64::from(u32::MAX) {
            return Err(XskError {
                what: "the shared UMEM does not match the control area",
                source: None,
            });
        }
        let cap = shape.frame_count as usize;
        Ok(XskQueue {
            rx: Consumer::new(p.rings.rx),
            tx: Producer::new(p.rings.tx),
            fill: Producer::new(p.rings.fill),
            completion: Consumer::new(p.rings.completion),
            socket: p.socket,
            umem: p.umem,
            shape,
            ctl: p.ctl,
            slot: p.slot,
            queue_id: p.queue_id,
            mode: p.mode,
            mtu: p.mtu,
            rx_batch: vec![Desc::default(); BATCH],
            rx_pos: 0,
            rx_len: 0,
            to_fill: Vec::with_capacity(cap),
            cache: Vec::with_capacity(cap),
            pending_tx: Vec::with_capacity(cap),
            spare: Vec::with_capacity(CACHE_REFILL),
            lost_frames: 0,
            tx_unkicked: 0,
            kick: KickPolicy::default(),
            now: Instant::ZERO,
            scratch: vec![0; frame],
            pid: std::process::id(),
            counters: QueueCounters::default(),
        })
    }

    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    pub fn copy_mode(&self) -> CopyMode {
        self.mode
    }

    /// This process's slot on the queue (the same on every queue of the interface).
    pub fn slot(&self) -> usize {
        self.slot
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// The socket's fd: readable when frames arrived (sleep on it).
    ///
    /// # Panics
    /// On a queue built over test memory (no socket).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket
            .as_ref()
            .expect("a queue joined through the helper has a socket")
            .fd()
    }

    /// Frames this process holds privately, as the control area counts them (RX ring consumer
    /// index, minus TX ring producer index, plus what it took from the shared rings and stack).
    pub fn frames_held(&self) -> u32 {
        self.rx
            .index()
            .wrapping_sub(self.tx.index())
            .wrapping_add(self.ctl.net(self.slot))
    }

    /// Whether this process's lists add up to what the control area says it holds: every frame
    /// in exactly one place (see the module header).
    pub fn frames_accounted(&self) -> bool {
        let local = (self.rx_len - self.rx_pos)
            + self.to_fill.len()
            + self.cache.len()
            + self.pending_tx.len()
            + self.lost_frames;
        local as u64 == u64::from(self.frames_held())
    }

    /// Frames ready for transmit in the local cache.
    pub fn free_frames(&self) -> usize {
        self.cache.len()
    }

    /// Kernel statistics of the socket: (dropped, RX ring full, fill ring empty).
    pub fn kernel_stats(&self) -> Option<(u64, u64, u64)> {
        let s = self.socket.as_ref()?.statistics().ok()?;
        Some((s.rx_dropped, s.rx_ring_full, s.rx_fill_ring_empty_descs))
    }

    fn kick_rx(&mut self) {
        if let Some(s) = &self.socket {
            self.counters.fill_wakeups += 1;
            let _ = s.kick_rx();
        }
    }

    /// Whether the completion ring holds frames (any process's) nobody took yet.
    fn completions_waiting(&self) -> bool {
        let m = self.completion.mem();
        m.producer().load(std::sync::atomic::Ordering::Acquire)
            != m.consumer().load(std::sync::atomic::Ordering::Acquire)
    }

    /// One locked batch with the queue's shared state, waiting at most `wait` for the mutex
    /// (zero: only if it is free now): received frames go back to the fill ring (topped up
    /// from the free stack when it runs low), completed TX frames come into the cache (up to
    /// its bound, most recent on top, so a ping-pong keeps reusing a frame that is warm), and
    /// with `need_tx` an empty cache is refilled from the free stack. Returns whether the cache
    /// has a frame.
    fn exchange(&mut self, wait: Duration, need_tx: bool) -> bool {
        let mut s = match self
            .ctl
            .lock(self.slot, &mut self.fill, &mut self.completion, wait)
        {
            Ok(s) => s,
            Err(_) => {
                if !wait.is_zero() {
                    self.counters.lock_timeouts += 1;
                }
                return !self.cache.is_empty();
            }
        };
        self.counters.locks += 1;
        if !self.to_fill.is_empty() {
            s.fill(&mut self.fill, &mut self.to_fill);
        }
        let room = CACHE_MAX.saturating_sub(self.cache.len());
        s.drain_completions(&mut self.completion, room, &mut self.cache);
        if need_tx && self.cache.len() < CACHE_REFILL {
            s.take_free(CACHE_REFILL - self.cache.len(), &mut self.cache);
        }
        if self.fill.outstanding() < FILL_LOW {
            s.take_free(CACHE_REFILL, &mut self.spare);
            s.fill(&mut self.fill, &mut self.spare);
            // The fill ring holds every frame, so nothing stays behind; if it ever did, the
            // frames go back to the stack rather than stay unaccounted.
            if !self.spare.is_empty() {
                s.give_free(&mut self.spare);
            }
        }
        drop(s);
        if self.fill.needs_wakeup() {
            self.kick_rx();
        }
        !self.cache.is_empty()
    }

    /// Refills an empty transmit cache: completed frames first, then the free stack.
    fn refill_cache(&mut self) -> bool {
        self.exchange(LOCK_TIMEOUT, true)
    }

    /// Whether a received frame is waiting (pulls the next batch from the RX ring if needed).
    pub fn has_rx(&mut self) -> bool {
        self.fetch()
    }

    /// No frame received and waiting, none queued for TX or waiting for a kick (zero-copy: or
    /// still on the TX ring). Copy-mode frames the kernel took but has not completed need no
    /// poll: they come back through the completion ring when a cache refill drains it.
    pub fn idle(&mut self) -> bool {
        let tx_idle = match self.mode {
            CopyMode::Copy => self.tx_unkicked == 0,
            CopyMode::ZeroCopy => self.tx.outstanding() == 0,
        };
        !self.fetch() && self.pending_tx.is_empty() && tx_idle
    }

    /// Pulls the next batch from the RX ring into `rx_batch`.
    fn fetch(&mut self) -> bool {
        if self.rx_pos < self.rx_len {
            return true;
        }
        if self.to_fill.len() >= FILL_BATCH {
            self.exchange(LOCK_TIMEOUT, false);
        }
        let n = self.rx.available(BATCH as u32);
        for i in 0..n {
            self.rx_batch[i as usize] = self.rx.read_desc(i);
        }
        // Commit point: the frames are ours (private) from here.
        self.rx.release(n);
        self.rx_pos = 0;
        self.rx_len = n as usize;
        if n == 0 && self.fill.needs_wakeup() {
            self.kick_rx();
        }
        n > 0
    }

    /// Puts pending TX frames on the TX ring and kicks what waits there, as `how` says.
    fn flush_tx(&mut self, how: Kick) {
        if !self.pending_tx.is_empty() {
            let n = (self.pending_tx.len() as u32).min(self.tx.free(self.pending_tx.len() as u32));
            if n > 0 {
                for (i, d) in self.pending_tx[..n as usize].iter().enumerate() {
                    self.tx.write_desc(i as u32, *d);
                }
                // Commit point: the frames belong to the kernel from here.
                self.tx.submit(n);
                self.pending_tx.drain(..n as usize);
                if self.mode == CopyMode::Copy {
                    self.tx_unkicked += n;
                }
            }
        }
        let waiting = self.tx_waiting();
        match how {
            Kick::Policy(now) => {
                self.now = now;
                if self.kick.kick_now(waiting, now) {
                    self.kick_tx(waiting);
                } else if waiting > 0 {
                    self.counters.tx_held += 1;
                }
            }
            Kick::All => {
                if waiting > 0 {
                    self.kick_tx(waiting);
                }
            }
            Kick::Settle => {
                if waiting > 0 {
                    if self.kick.burst() > 0 {
                        self.counters.tx_held_pushed += 1;
                    }
                    self.kick_tx(waiting);
                }
                self.kick.settle();
            }
        }
    }

    /// Frames on the TX ring that need a kick to leave. Copy mode transmits only in a system
    /// call, and only what is on the TX ring: frames the kernel took but has not completed yet
    /// (the peer's socket still holds the skb) need none (kicking for them was a third of
    /// nginx's sendto calls). Zero-copy drivers take the ring by themselves unless they say
    /// they need a wake-up.
    fn tx_waiting(&mut self) -> u32 {
        match self.mode {
            CopyMode::Copy => self.tx_unkicked,
            CopyMode::ZeroCopy if self.tx.needs_wakeup() => self.tx.outstanding(),
            CopyMode::ZeroCopy => 0,
        }
    }

    /// Kicks the kernel for the `waiting` frames on the TX ring. Copy mode: one `sendto` takes
    /// at most [`KICK_BATCH`] of them, so it kicks again while a kick made progress and frames
    /// are left; what a busy device left is kicked on a later flush.
    fn kick_tx(&mut self, waiting: u32) {
        self.kick.kicked(waiting, self.now);
        let Some(s) = &self.socket else {
            // Test memory: the test plays the kernel and takes the ring when it likes.
            self.counters.tx_kicks += 1;
            self.tx_unkicked = 0;
            return;
        };
        let mut left = self.tx.outstanding();
        for _ in 0..MAX_KICKS {
            self.counters.tx_kicks += 1;
            if let Err(e) = s.kick_tx() {
                // EAGAIN: the call's budget ran out with frames left (copy mode).
                if e.raw_os_error() != Some(libc::EAGAIN) {
                    tracing::debug!(queue = self.queue_id, error = %e, "TX kick failed");
                    break;
                }
            }
            if self.mode == CopyMode::ZeroCopy {
                // The driver transmits on its own from here.
                break;
            }
            let now_left = self.tx.outstanding();
            let progress = now_left < left;
            left = now_left;
            if left == 0 || !progress {
                break;
            }
        }
        self.tx_unkicked = match self.mode {
            CopyMode::Copy => left,
            CopyMode::ZeroCopy => 0,
        };
    }

    /// Gives every private frame back (to the fill ring or the free stack) in one locked batch;
    /// the frames still on our rings are the helper's to recover when the socket goes.
    fn give_back_all(&mut self) {
        if self.pid != std::process::id() {
            // A forked child's copy: the frames are the parent's.
            return;
        }
        self.to_fill.extend(
            self.rx_batch[self.rx_pos..self.rx_len]
                .iter()
                .filter_map(|d| self.shape.frame_of(d.addr)),
        );
        self.rx_pos = self.rx_len;
        self.cache.extend(self.pending_tx.drain(..).map(|d| d.addr));
        let Ok(mut s) = self.ctl.lock(
            self.slot,
            &mut self.fill,
            &mut self.completion,
            Duration::from_millis(200),
        ) else {
            return;
        };
        s.fill(&mut self.fill, &mut self.to_fill);
        s.give_free(&mut self.to_fill);
        s.give_free(&mut self.cache);
    }
}

impl XskQueue {
    /// For the recovery test: takes the queue's mutex, takes frames from the free stack and
    /// stops right after the commit point of that change, calls `announce`, and then never
    /// returns (the test kills the process: it dies holding the mutex, its journal open).
    #[cfg(feature = "test-hooks")]
    pub fn freeze_in_shared_change(&mut self, announce: impl FnOnce()) -> ! {
        let mut s = self
            .ctl
            .lock(
                self.slot,
                &mut self.fill,
                &mut self.completion,
                Duration::from_secs(5),
            )
            .expect("the queue's mutex");
        s.take_free_and_stop_at_the_commit(CACHE_REFILL, &mut self.cache);
        announce();
        loop {
            std::thread::park();
        }
    }
}

impl Drop for XskQueue {
    fn drop(&mut self) {
        self.give_back_all();
    }
}

/// A received frame handed to the stack. Consumed or dropped, the frame goes back to the fill
/// list exactly once.
pub struct XskRx<'a> {
    umem: &'a Region,
    frame: u64,
    desc: Option<Desc>,
    to_fill: &'a mut Vec<u64>,
}

impl RxFrame for XskRx<'_> {
    fn consume<R>(mut self, f: impl FnOnce(&[u8]) -> R) -> R {
        let desc = self
            .desc
            .take()
            .expect("an RX token holds its frame until consumed");
        // SAFETY: the frame came from our RX ring and is in `rx`'s private hands (no ring, no
        // other list); the kernel does not write it until it goes back to the fill ring, after
        // `f` returns. Its address and length were checked in `receive` to lie inside one frame
        // of this UMEM.
        let data = unsafe { self.umem.bytes(desc.addr as usize, desc.len as usize) }.unwrap_or(&[]);
        let r = f(data);
        self.to_fill.push(self.frame);
        r
    }
}

impl Drop for XskRx<'_> {
    fn drop(&mut self) {
        // A token dropped unconsumed (or during a panic in `f`) still returns its frame.
        if self.desc.take().is_some() {
            self.to_fill.push(self.frame);
        }
    }
}

/// A transmit slot handed to the stack.
pub struct XskTx<'a> {
    umem: &'a Region,
    frame_size: usize,
    cache: &'a mut Vec<u64>,
    pending_tx: &'a mut Vec<Desc>,
    scratch: &'a mut Vec<u8>,
    counters: &'a mut QueueCounters,
}

impl TxFrame for XskTx<'_> {
    fn consume<R>(self, len: usize, f: impl FnOnce(&mut [u8]) -> (R, bool)) -> R {
        if len > self.frame_size {
            self.counters.tx_too_long += 1;
            let n = len.min(self.scratch.len());
            return f(&mut self.scratch[..n]).0;
        }
        let Some(frame) = self.cache.pop() else {
            // Every frame is in flight: let the stack build the packet, then drop it. TCP
            // retransmits; the drop is counted.
            self.counters.tx_no_frame += 1;
            let n = len.min(self.scratch.len());
            return f(&mut self.scratch[..n]).0;
        };
        // SAFETY: `frame` was taken from the cache, so no ring and no other list or token
        // refers to it; `frame + len` stays inside it (len <= frame size, frames are aligned).
        let Some(data) = (unsafe { self.umem.bytes_mut(frame as usize, len) }) else {
            self.cache.push(frame);
            self.counters.tx_too_long += 1;
            let n = len.min(self.scratch.len());
            return f(&mut self.scratch[..n]).0;
        };
        let (r, send) = f(data);
        if send {
            self.counters.tx_frames += 1;
            self.counters.tx_bytes += len as u64;
            self.pending_tx.push(Desc {
                addr: frame,
                len: len as u32,
                options: 0,
            });
        } else {
            self.cache.push(frame);
        }
        r
    }
}

impl Link for XskQueue {
    type Rx<'a> = XskRx<'a>;
    type Tx<'a> = XskTx<'a>;

    fn receive(&mut self) -> Option<(XskRx<'_>, XskTx<'_>)> {
        let (desc, frame) = loop {
            if !self.fetch() {
                return None;
            }
            let desc = self.rx_batch[self.rx_pos];
            self.rx_pos += 1;
            match (
                self.shape.rx_range(desc.addr, desc.len),
                self.shape.frame_of(desc.addr),
            ) {
                (Ok(_), Some(frame)) => break (desc, frame),
                (Err(BadDesc::CrossesFrame), Some(frame)) => {
                    // Runs past its frame: never read, but the frame is ours to give back.
                    self.counters.rx_bad_desc += 1;
                    self.to_fill.push(frame);
                }
                _ => {
                    // Names no frame of ours (and the kernel would refuse it back).
                    self.counters.rx_bad_desc += 1;
                    self.lost_frames += 1;
                }
            }
        };
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += u64::from(desc.len);
        if self.cache.is_empty() {
            self.refill_cache();
        }
        Some((
            XskRx {
                umem: &self.umem,
                frame,
                desc: Some(desc),
                to_fill: &mut self.to_fill,
            },
            XskTx {
                umem: &self.umem,
                frame_size: self.shape.frame_size as usize,
                cache: &mut self.cache,
                pending_tx: &mut self.pending_tx,
                scratch: &mut self.scratch,
                counters: &mut self.counters,
            },
        ))
    }

    fn transmit(&mut self) -> Option<XskTx<'_>> {
        if self.cache.is_empty() && !self.refill_cache() {
            // Push what is queued so completions can come back.
            self.flush_tx(Kick::All);
            if !self.refill_cache() {
                return None;
            }
        }
        Some(XskTx {
            umem: &self.umem,
            frame_size: self.shape.frame_size as usize,
            cache: &mut self.cache,
            pending_tx: &mut self.pending_tx,
            scratch: &mut self.scratch,
            counters: &mut self.counters,
        })
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn flush(&mut self) {
        self.flush_tx(Kick::Settle);
        self.after_flush();
    }

    fn flush_batched(&mut self, now: Instant) {
        self.flush_tx(Kick::Policy(now));
        self.after_flush();
    }

    fn tx_held(&mut self) -> bool {
        !self.pending_tx.is_empty() || self.tx_waiting() > 0
    }

    fn idle(&mut self) -> bool {
        XskQueue::idle(self)
    }
}

impl XskQueue {
    /// The end of a poll's flush: received frames back to the fill ring, completed ones into
    /// the cache.
    fn after_flush(&mut self) {
        if self.to_fill.len() >= FILL_BATCH {
            self.exchange(LOCK_TIMEOUT, false);
        } else if self.cache.len() < CACHE_MAX && self.completions_waiting() {
            // Completed frames are back: take them while they are warm, if the mutex is free
            // (one uncontended lock per poll that sent something).
            self.exchange(Duration::ZERO, false);
        }
    }
}

/// How a flush kicks the frames it put on the TX ring.
#[derive(Clone, Copy, Debug)]
enum Kick {
    /// By the policy (`crate::kick`), at this time: a send or receive call that completed at
    /// once.
    Policy(Instant),
    /// All of them (the queue needs its completions back).
    All,
    /// All of them, and the program waits next: a new burst starts.
    Settle,
}

#[cfg(test)]
mod tests {
    //! A queue over test memory, with the tests playing the kernel: frames go from the fill
    //! ring to an RX ring, from a TX ring to the completion ring. After every step every frame
    //! of the UMEM must be in exactly one place, and the control area's counts must agree.

    use super::*;
    use crate::ring::tests::test_ring;
    use crate::share::account::{self, Departure, MemberRings, Retired};
    use crate::share::ctl::{Ctl, HELPER_SLOT};
    use crate::sys::shm::memfd;
    use std::os::fd::AsFd;

    const FRAMES: u32 = 128;
    const FS: u32 = 4096;
    const RING: u32 = 32;

    /// The test's kernel: the other end of every ring.
    struct Kernel {
        fq: Consumer,
        cq: Producer,
        rx: Vec<Producer>,
        tx: Vec<Consumer>,
        /// Taken from the fill ring, not delivered yet.
        held: Vec<u64>,
        /// Taken from a TX ring, not completed yet.
        sent: Vec<u64>,
        umem: Arc<Region>,
    }

    impl Kernel {
        /// Delivers one frame with `payload` to client `i`; false if no frame or no room.
        fn deliver(&mut self, i: usize, payload: &[u8]) -> bool {
            if self.held.is_empty() {
                if self.fq.available(1) == 0 {
                    return false;
                }
                self.held.push(self.fq.read_addr(0));
                self.fq.release(1);
            }
            if self.rx[i].free(1) == 0 {
                return false;
            }
            let frame = self.held.pop().unwrap();
            let addr = frame + u64::from(XDP_PACKET_HEADROOM);
            // SAFETY: the frame was taken from the fill ring: the kernel (this test) owns it.
            let data = unsafe { self.umem.bytes_mut(addr as usize, payload.len()) }.unwrap();
            data.copy_from_slice(payload);
            self.rx[i].write_desc(
                0,
                Desc {
                    addr,
                    len: payload.len() as u32,
                    options: 0,
                },
            );
            self.rx[i].submit(1);
            true
        }

        /// Takes what client `i` put on its TX ring.
        fn transmit(&mut self, i: usize) -> usize {
            let n = self.tx[i].available(RING);
            for k in 0..n {
                let d = self.tx[i].read_desc(k);
                assert_eq!(d.addr % u64::from(FS), 0, "TX frames start at a frame");
                self.sent.push(d.addr);
            }
            self.tx[i].release(n);
            n as usize
        }

        /// Completes up to `n` sent frames.
        fn complete(&mut self, n: usize) {
            let n = n.min(self.sent.len()) as u32;
            let n = n.min(self.cq.free(n));
            for k in 0..n {
                let a = self.sent.remove(0);
                self.cq.write_addr(k, a);
            }
            self.cq.submit(n);
        }
    }

    struct World {
        ctl: QueueCtl,
        fill: Producer,
        completion: Consumer,
        rx_mems: Vec<RingMem>,
        tx_mems: Vec<RingMem>,
        kernel: Kernel,
        retired: Retired,
        /// Frames counted as leaked so far (for the one-place check).
        leaked: Vec<u64>,
        /// Polls ended (flushes) per client.
        flushes: Vec<u64>,
        _ctl_area: Ctl,
    }

    fn world(clients: usize) -> (World, Vec<XskQueue>) {
        let shape = Shape {
            frame_size: FS,
            frame_count: FRAMES,
        };
        let (_fd, area) = Ctl::create(1, shape, 1).unwrap();
        let ctl = area.init_queue(0).unwrap();
        let fq = test_ring(FRAMES, Entry::Addr);
        let cq = test_ring(FRAMES, Entry::Addr);
        let ufd = memfd("accel-test-umem", (FRAMES * FS) as usize).unwrap();
        let umem = Arc::new(Region::map(ufd.as_fd(), (FRAMES * FS) as usize, 0).unwrap());
        let mut fill = Producer::new(fq.clone());
        let mut completion = Consumer::new(cq.clone());
        {
            let mut s = ctl
                .lock(
                    HELPER_SLOT,
                    &mut fill,
                    &mut completion,
                    Duration::from_secs(1),
                )
                .unwrap();
            let mut to_fill: Vec<u64> = (0..FRAMES / 2).map(|i| u64::from(i * FS)).collect();
            let mut to_free: Vec<u64> = (FRAMES / 2..FRAMES).map(|i| u64::from(i * FS)).collect();
            s.seed_fill(&mut fill, &mut to_fill);
            s.seed(&mut to_free);
        }
        let mut queues = Vec::new();
        let (mut rx_mems, mut tx_mems, mut krx, mut ktx) = (vec![], vec![], vec![], vec![]);
        for slot in 0..clients {
            let rx = test_ring(RING, Entry::Desc);
            let tx = test_ring(RING, Entry::Desc);
            krx.push(Producer::new(rx.clone()));
            ktx.push(Consumer::new(tx.clone()));
            rx_mems.push(rx.clone());
            tx_mems.push(tx.clone());
            queues.push(
                XskQueue::new(QueueParts {
                    socket: None,
                    rings: Rings {
                        rx,
                        tx,
                        fill: fq.clone(),
                        completion: cq.clone(),
                    },
                    umem: Arc::clone(&umem),
                    ctl: area.queue(0).unwrap(),
                    slot,
                    queue_id: 0,
                    mode: CopyMode::Copy,
                    mtu: 1500,
                })
                .unwrap(),
            );
        }
        let kernel = Kernel {
            fq: Consumer::new(fq),
            cq: Producer::new(cq),
            rx: krx,
            tx: ktx,
            held: Vec::new(),
            sent: Vec::new(),
            umem,
        };
        (
            World {
                ctl,
                fill,
                completion,
                rx_mems,
                tx_mems,
                kernel,
                retired: Retired::default(),
                leaked: Vec::new(),
                flushes: vec![0; clients],
                _ctl_area: area,
            },
            queues,
        )
    }

    /// The frames in ring `mem` (of `entry`s) between its consumer and producer indexes.
    fn ring_frames(mem: &RingMem, entry: Entry, out: &mut Vec<u64>) {
        let c = Consumer::new(mem.clone());
        let n = mem
            .producer()
            .load(std::sync::atomic::Ordering::Acquire)
            .wrapping_sub(c.index());
        for i in 0..n {
            let a = match entry {
                Entry::Addr => c.read_addr(i),
                Entry::Desc => c.read_desc(i).addr,
            };
            out.push(a - a % u64::from(FS));
        }
    }

    /// The helper's retirement of slot `slot`'s rings (its process gone), recovering what they
    /// hold.
    fn retire_slot(w: &mut World, slot: usize) -> account::Left {
        account::retire(
            &w.ctl,
            &mut w.fill,
            &mut w.completion,
            &MemberRings {
                slot: slot as u8,
                rx: &w.rx_mems[slot],
                tx: &w.tx_mems[slot],
            },
            Departure {
                recover: true,
                zero_copy: false,
                timeout: Duration::from_secs(1),
            },
            &mut w.retired,
        )
        .unwrap()
    }

    /// Asserts every frame is in exactly one place, and the census and each queue agree.
    #[track_caller]
    fn check(w: &World, queues: &[Option<XskQueue>]) {
        let mut all = Vec::new();
        // The free stack, read through a helper session.
        let stack_len = w.ctl.counts().free as usize;
        let mut fill = Producer::new(w.fill.mem().clone());
        let mut completion = Consumer::new(w.completion.mem().clone());
        {
            let mut s = w
                .ctl
                .lock(
                    HELPER_SLOT,
                    &mut fill,
                    &mut completion,
                    Duration::from_secs(1),
                )
                .unwrap();
            let mut free = Vec::new();
            // Take and put back: the helper slot's net count does not move for a net zero.
            s.take_free(stack_len, &mut free);
            all.extend_from_slice(&free);
            s.give_free(&mut free);
        }
        ring_frames(w.fill.mem(), Entry::Addr, &mut all);
        ring_frames(w.completion.mem(), Entry::Addr, &mut all);
        all.extend_from_slice(&w.kernel.held);
        all.extend_from_slice(&w.kernel.sent);
        all.extend_from_slice(&w.leaked);
        let mut members = Vec::new();
        for (i, q) in queues.iter().enumerate() {
            let Some(q) = q else { continue };
            assert!(
                q.frames_accounted(),
                "queue {i}'s lists disagree with the control area"
            );
            ring_frames(&w.rx_mems[i], Entry::Desc, &mut all);
            ring_frames(&w.tx_mems[i], Entry::Desc, &mut all);
            all.extend(
                q.rx_batch[q.rx_pos..q.rx_len]
                    .iter()
                    .map(|d| d.addr - d.addr % u64::from(FS)),
            );
            all.extend_from_slice(&q.to_fill);
            all.extend_from_slice(&q.cache);
            all.extend(q.pending_tx.iter().map(|d| d.addr));
            members.push(MemberRings {
                slot: i as u8,
                rx: &w.rx_mems[i],
                tx: &w.tx_mems[i],
            });
        }
        all.sort_unstable();
        let want: Vec<u64> = (0..FRAMES).map(|i| u64::from(i * FS)).collect();
        assert_eq!(all, want, "every frame in exactly one place");
        let c = account::census(
            0,
            &w.ctl,
            w.fill.mem(),
            w.completion.mem(),
            members,
            w.retired,
        );
        assert!(c.accounted, "census: {c:?}");
        assert_eq!(c.kernel_rx as usize, w.kernel.held.len(), "{c:?}");
        assert_eq!(c.kernel_tx as usize, w.kernel.sent.len(), "{c:?}");
    }

    /// A tiny deterministic generator (xorshift).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// One random step of client `i` or the kernel.
    fn step(w: &mut World, queues: &mut [Option<XskQueue>], rng: &mut Rng) {
        let n = queues.len() as u64;
        let i = rng.next(n) as usize;
        match rng.next(7) {
            0 | 1 => {
                w.kernel.deliver(i, &[i as u8; 60]);
            }
            2 => {
                let Some(q) = queues[i].as_mut() else { return };
                if let Some((rx, tx)) = q.receive() {
                    let len = rx.consume(|b| {
                        assert_eq!(b, &[i as u8; 60][..], "the frame holds what was delivered");
                        b.len()
                    });
                    let send = rng.next(4) != 0;
                    tx.consume(len, |out| {
                        out.fill(0xee);
                        ((), send)
                    });
                }
            }
            3 => {
                let Some(q) = queues[i].as_mut() else { return };
                if let Some(tx) = q.transmit() {
                    tx.consume(100, |out| {
                        out.fill(1);
                        ((), true)
                    });
                }
            }
            4 => {
                if let Some(q) = queues[i].as_mut() {
                    // A poll's end, pushing or batching (which may leave frames unkicked).
                    if rng.next(2) == 0 {
                        q.flush();
                    } else {
                        q.flush_batched(Instant::from_micros(w.flushes[i] as i64 * 7));
                    }
                    w.flushes[i] += 1;
                }
            }
            5 => {
                w.kernel.transmit(i);
            }
            _ => {
                let k = rng.next(8) as usize;
                w.kernel.complete(k);
            }
        }
    }

    #[test]
    fn random_traffic_keeps_every_frame_in_one_place() {
        let (mut w, queues) = world(2);
        let mut queues: Vec<Option<XskQueue>> = queues.into_iter().map(Some).collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        check(&w, &queues);
        for _ in 0..20_000 {
            step(&mut w, &mut queues, &mut rng);
            check(&w, &queues);
        }
        let q = queues[0].as_ref().unwrap();
        let c = q.counters;
        assert!(c.rx_frames > 1000 && c.tx_frames > 1000, "{c:?}");
        // At most one lock per poll (flush), plus one per batch of received frames or of
        // frames to send; never one per frame.
        let most =
            w.flushes[0] + c.rx_frames / FILL_BATCH as u64 + c.tx_frames / CACHE_REFILL as u64 + 2;
        assert!(c.locks <= most, "{} locks, at most {most}: {c:?}", c.locks);
        assert!(c.locks < c.rx_frames / 2, "not a lock per frame: {c:?}");
    }

    /// Sends one 100-byte frame through `q`.
    fn send_one(q: &mut XskQueue) {
        q.transmit().expect("a TX frame").consume(100, |out| {
            out.fill(1);
            ((), true)
        });
    }

    /// The test's kernel takes what a kick covered and completes it at once.
    fn on_kick(w: &mut World, q: &mut XskQueue, kicks: &mut u64) -> bool {
        if q.counters.tx_kicks == *kicks {
            return false;
        }
        *kicks = q.counters.tx_kicks;
        let n = w.kernel.transmit(0);
        w.kernel.complete(n);
        true
    }

    #[test]
    fn a_ping_pong_kicks_each_frame_at_once() {
        let (mut w, mut queues) = world(1);
        let q = &mut queues[0];
        let mut kicks = 0;
        for i in 0..100 {
            send_one(q);
            q.flush_batched(Instant::from_micros(i * 5));
            assert!(on_kick(&mut w, q, &mut kicks), "frame {i} held back");
            // The program waits for the answer: its wait pushes.
            q.flush();
        }
        assert_eq!(q.counters.tx_kicks, 100);
        assert_eq!(q.counters.tx_held, 0);
        let queues: Vec<Option<XskQueue>> = queues.into_iter().map(Some).collect();
        check(&w, &queues);
    }

    #[test]
    fn a_burst_is_kicked_in_batches_and_its_rest_when_the_program_waits() {
        use crate::kick::{IDLE_GAP, IMMEDIATE};
        let (mut w, mut queues) = world(1);
        let q = &mut queues[0];
        let mut kicks = 0;
        let mut kicked_frames = Vec::new();
        let mut since = 0;
        // Two batches and five more, a microsecond apart, the program never waiting.
        let n = IMMEDIATE + 2 * KICK_BATCH + 5;
        for i in 0..n {
            send_one(q);
            since += 1;
            q.flush_batched(Instant::from_micros(i64::from(i)));
            if on_kick(&mut w, q, &mut kicks) {
                kicked_frames.push(since);
                since = 0;
            }
        }
        assert_eq!(
            kicked_frames,
            vec![1, 1, 1, KICK_BATCH, KICK_BATCH],
            "the first frames at once, then batches"
        );
        assert_eq!(q.counters.tx_held, u64::from(n) - 5);
        assert!(!q.idle(), "five frames wait for a kick");
        assert_eq!(w.kernel.tx[0].available(RING), 5, "on the ring, not kicked");
        // A poll that may batch, once the last kick is IDLE_GAP old, kicks them.
        let last = i64::from(n - 1);
        q.flush_batched(Instant::from_micros(last + 1));
        assert!(!on_kick(&mut w, q, &mut kicks));
        q.flush_batched(Instant::from_micros(last) + IDLE_GAP);
        assert!(
            on_kick(&mut w, q, &mut kicks),
            "kicked once the ring went idle"
        );
        // Another burst, ended by the program waiting: the push kicks what was held.
        for i in 0..10 {
            send_one(q);
            q.flush_batched(Instant::from_micros(last + 100 + i));
            on_kick(&mut w, q, &mut kicks);
        }
        assert!(!q.idle());
        let pushed = q.counters.tx_held_pushed;
        q.flush();
        assert!(on_kick(&mut w, q, &mut kicks), "the push kicked");
        assert_eq!(q.counters.tx_held_pushed, pushed + 1);
        assert!(q.idle(), "nothing waits after a push");
        // After the program waited, the next frame leaves at once.
        send_one(q);
        q.flush_batched(Instant::from_micros(last + 200));
        assert!(on_kick(&mut w, q, &mut kicks));
        let queues: Vec<Option<XskQueue>> = queues.into_iter().map(Some).collect();
        check(&w, &queues);
    }

    #[test]
    fn a_dead_client_leaks_what_it_held_and_its_rings_come_back() {
        let (mut w, queues) = world(2);
        let mut queues: Vec<Option<XskQueue>> = queues.into_iter().map(Some).collect();
        let mut rng = Rng(12345);
        for round in 0..20 {
            for _ in 0..500 {
                step(&mut w, &mut queues, &mut rng);
            }
            check(&w, &queues);
            // Client 1 dies (no drop runs: SIGKILL), then a new one takes its slot.
            let dead = queues[1].take().unwrap();
            let mut private: Vec<u64> = Vec::new();
            private.extend(
                dead.rx_batch[dead.rx_pos..dead.rx_len]
                    .iter()
                    .map(|d| d.addr - d.addr % u64::from(FS)),
            );
            private.extend_from_slice(&dead.to_fill);
            private.extend_from_slice(&dead.cache);
            private.extend(dead.pending_tx.iter().map(|d| d.addr));
            let held = dead.frames_held();
            std::mem::forget(dead);
            let left = retire_slot(&mut w, 1);
            assert_eq!(left.leaked, held, "round {round}");
            assert_eq!(left.leaked as usize, private.len());
            w.leaked.extend(private);
            // A fresh socket for the slot (new rings), as the helper would make.
            let rx = test_ring(RING, Entry::Desc);
            let tx = test_ring(RING, Entry::Desc);
            w.kernel.rx[1] = Producer::new(rx.clone());
            w.kernel.tx[1] = Consumer::new(tx.clone());
            w.rx_mems[1] = rx.clone();
            w.tx_mems[1] = tx.clone();
            queues[1] = Some(
                XskQueue::new(QueueParts {
                    socket: None,
                    rings: Rings {
                        rx,
                        tx,
                        fill: w.fill.mem().clone(),
                        completion: w.completion.mem().clone(),
                    },
                    umem: Arc::clone(&w.kernel.umem),
                    ctl: w._ctl_area.queue(0).unwrap(),
                    slot: 1,
                    queue_id: 0,
                    mode: CopyMode::Copy,
                    mtu: 1500,
                })
                .unwrap(),
            );
            check(&w, &queues);
        }
        assert!(
            w.ctl.counts().recovered > 0,
            "some frames came back from dead rings"
        );
    }

    #[test]
    fn dropping_a_queue_gives_every_private_frame_back() {
        let (mut w, queues) = world(2);
        let mut queues: Vec<Option<XskQueue>> = queues.into_iter().map(Some).collect();
        let mut rng = Rng(777);
        for _ in 0..3000 {
            step(&mut w, &mut queues, &mut rng);
        }
        drop(queues[1].take());
        let left = retire_slot(&mut w, 1);
        assert_eq!(left.leaked, 0, "a clean exit leaks nothing");
        // Slot 1 is gone; the census of the rest still adds up.
        w.rx_mems.truncate(1);
        w.tx_mems.truncate(1);
        queues.truncate(1);
        check(&w, &queues);
    }
}
