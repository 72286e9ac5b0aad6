//! One AF_XDP socket on (interface, queue), its UMEM and its frame pool, over xsk-rs.
//!
//! # Safety
//!
//! xsk-rs marks ring and UMEM access `unsafe` because the caller must guarantee that a frame is
//! never in two places at once (a ring and a user buffer, or two rings). This file keeps that
//! invariant by ownership: every `FrameDesc` lives in exactly one of
//!
//! - the kernel (fill ring -> RX ring, or TX ring -> completion ring), counted in
//!   `in_fill` and `in_tx`;
//! - `rx_batch[rx_pos..rx_len]` (received, not yet handed to the stack);
//! - `to_fill` (handed to the stack and given back, waiting for the fill ring);
//! - `free` (ours, available to transmit);
//! - `pending_tx` (filled by the stack, waiting for the TX ring);
//! - a token that is being consumed (moved out of one list and into another before the token
//!   returns).
//!
//! `frames_accounted()` checks the sum, and the tests assert it after every step.

use std::ffi::CString;
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, BorrowedFd};

use stack::link::{Link, RxFrame, TxFrame};

use crate::desc::{BadDesc, UmemLayout};
use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, TxQueue, Umem};

/// Frames per queue: half start in the fill ring, half are free for transmit.
const FRAME_COUNT: u32 = 4096;
/// Ring sizes (power of two). The fill ring holds every RX frame; the others match it.
const RING_SIZE: u32 = 2048;
/// One page per frame: room for XDP headroom plus a jumbo-ish MTU.
const FRAME_SIZE: u32 = 4096;
/// The kernel's headroom in front of each received frame.
const XDP_PACKET_HEADROOM: u32 = 256;
/// The frame memory of one queue, which the kernel pins (and charges to the locked-memory
/// limit of a process without CAP_IPC_LOCK).
pub const UMEM_BYTES: u64 = FRAME_COUNT as u64 * FRAME_SIZE as u64;
/// How many descriptors move between a ring and our lists in one call.
const BATCH: usize = 64;

/// Whether the socket copies frames or shares them with the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyMode {
    ZeroCopy,
    Copy,
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
    /// Fill-ring wake-ups issued.
    pub fill_wakeups: u64,
    /// RX descriptors whose address or length fall outside our UMEM or their frame (never
    /// from a sane kernel): dropped before their bytes are read.
    pub rx_bad_desc: u64,
}

/// Why an AF_XDP socket could not be opened.
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

/// An AF_XDP socket bound to one (interface, queue) with its own UMEM.
pub struct XskQueue {
    // Field order matters for Drop: queues hold the socket, which holds the UMEM.
    rx: RxQueue,
    tx: TxQueue,
    fq: FillQueue,
    cq: CompQueue,
    umem: Umem,
    queue_id: u32,
    mode: CopyMode,
    mtu: usize,
    free: Vec<FrameDesc>,
    to_fill: Vec<FrameDesc>,
    pending_tx: Vec<FrameDesc>,
    rx_batch: Vec<FrameDesc>,
    rx_pos: usize,
    rx_len: usize,
    cq_batch: Vec<FrameDesc>,
    in_fill: usize,
    in_tx: usize,
    /// Frames lost to RX descriptors that named no frame of the UMEM (see `rx_bad_desc`).
    lost_frames: usize,
    /// Copy mode: descriptors were put on the TX ring that no kick has seen the kernel take.
    tx_unsent: bool,
    /// Scratch space for a reply the stack builds while no TX frame is free (dropped, counted).
    scratch: Vec<u8>,
    pub counters: QueueCounters,
}

fn umem_config() -> Result<UmemConfig, XskError> {
    let size = |n| {
        QueueSize::new(n).map_err(|_| XskError {
            what: "bad ring size",
            source: None,
        })
    };
    UmemConfig::builder()
        .frame_size(FrameSize::new(FRAME_SIZE).map_err(|_| XskError {
            what: "bad frame size",
            source: None,
        })?)
        .fill_queue_size(size(RING_SIZE)?)
        .comp_queue_size(size(RING_SIZE)?)
        .build()
        .map_err(|_| XskError {
            what: "bad UMEM configuration",
            source: None,
        })
}

fn socket_config(bind: BindFlags) -> Result<SocketConfig, XskError> {
    let size = |n| {
        QueueSize::new(n).map_err(|_| XskError {
            what: "bad ring size",
            source: None,
        })
    };
    Ok(SocketConfig::builder()
        .rx_queue_size(size(RING_SIZE)?)
        .tx_queue_size(size(RING_SIZE)?)
        // Our own XDP program (libaccel::xdp) steers flows; libxdp's default program would take
        // the whole queue away from the kernel.
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind | BindFlags::XDP_USE_NEED_WAKEUP)
        .build())
}

/// Pulls the errno out of xsk-rs's error text (it keeps the io::Error private).
fn io_error_of(e: &(dyn std::error::Error + 'static)) -> Option<io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(ioe) = err.downcast_ref::<io::Error>() {
            return Some(match ioe.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(ioe.kind(), ioe.to_string()),
            });
        }
        cur = err.source();
    }
    None
}

impl XskQueue {
    /// Opens an AF_XDP socket on `ifname` queue `queue_id`. With `try_zero_copy`, zero-copy is
    /// tried first and copy mode used when the driver has none (veth has none).
    pub fn open(
        ifname: &str,
        queue_id: u32,
        mtu: usize,
        try_zero_copy: bool,
    ) -> Result<XskQueue, XskError> {
        if mtu + 14 > (FRAME_SIZE - XDP_PACKET_HEADROOM) as usize {
            return Err(XskError {
                what: "interface MTU is larger than an AF_XDP frame (about 3800 bytes): lower it with `ip link set dev IF mtu 1500`",
                source: None,
            });
        }
        if try_zero_copy {
            match Self::open_with(
                ifname,
                queue_id,
                mtu,
                BindFlags::XDP_ZEROCOPY,
                CopyMode::ZeroCopy,
            ) {
                Ok(q) => return Ok(q),
                Err(e) => {
                    tracing::debug!(ifname, queue_id, error = %e, "zero-copy bind failed, using copy mode")
                }
            }
        }
        Self::open_with(ifname, queue_id, mtu, BindFlags::XDP_COPY, CopyMode::Copy)
    }

    fn open_with(
        ifname: &str,
        queue_id: u32,
        mtu: usize,
        bind: BindFlags,
        mode: CopyMode,
    ) -> Result<XskQueue, XskError> {
        let name = CString::new(ifname).map_err(|_| XskError {
            what: "interface name contains a NUL byte",
            source: None,
        })?;
        let count = NonZeroU32::new(FRAME_COUNT).expect("FRAME_COUNT is not zero");
        let (umem, mut descs) = Umem::new(umem_config()?, count, false).map_err(|e| XskError {
            what: "cannot create the UMEM (AF_XDP frame memory)",
            source: io_error_of(&e),
        })?;
        // SAFETY: the UMEM is new and not shared with any other socket, so there is no earlier
        // binding of this (interface, queue) pair on it; the inhibit flag is set anyway.
        let (tx, rx, rings) = unsafe {
            xsk_rs::Socket::new(socket_config(bind)?, &umem, &Interface::new(name), queue_id)
        }
        .map_err(|e| XskError {
            what: "cannot create the AF_XDP socket",
            source: io_error_of(&e),
        })?;
        let (mut fq, cq) = rings.ok_or(XskError {
            what: "AF_XDP socket came without fill and completion rings",
            source: None,
        })?;

        let fill: Vec<FrameDesc> = descs.split_off(descs.len() - RING_SIZE as usize);
        // SAFETY: the fill descriptors were just split off the UMEM's fresh list; nothing else
        // refers to those frames (the rest stay in `descs`, which becomes `free`).
        let n = unsafe { fq.produce(&fill) };
        if n != fill.len() {
            return Err(XskError {
                what: "fill ring refused the initial frames",
                source: None,
            });
        }
        let mut q = XskQueue {
            rx,
            tx,
            fq,
            cq,
            umem,
            queue_id,
            mode,
            mtu,
            free: descs,
            to_fill: Vec::with_capacity(FRAME_COUNT as usize),
            pending_tx: Vec::with_capacity(FRAME_COUNT as usize),
            rx_batch: vec![FrameDesc::default(); BATCH],
            rx_pos: 0,
            rx_len: 0,
            cq_batch: vec![FrameDesc::default(); BATCH],
            in_fill: n,
            in_tx: 0,
            lost_frames: 0,
            tx_unsent: false,
            scratch: vec![0; FRAME_SIZE as usize],
            counters: QueueCounters::default(),
        };
        q.free.reserve(FRAME_COUNT as usize);
        Ok(q)
    }

    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    pub fn copy_mode(&self) -> CopyMode {
        self.mode
    }

    /// The socket's fd, to register in the XSKMAP.
    pub fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by the socket inside `self.rx`, which lives as long as `self`,
        // and the returned borrow cannot outlive `self`.
        unsafe { BorrowedFd::borrow_raw(self.rx.fd().as_raw_fd()) }
    }

    /// Whether every frame of the UMEM is in exactly one place (see the module header), less
    /// those lost to descriptors that named no frame.
    pub fn frames_accounted(&self) -> bool {
        self.lost_frames
            + self.in_fill
            + (self.rx_len - self.rx_pos)
            + self.to_fill.len()
            + self.free.len()
            + self.pending_tx.len()
            + self.in_tx
            == FRAME_COUNT as usize
    }

    /// Frames currently free for transmit (after reclaiming completions).
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Kernel statistics of the socket (drops for a full RX ring or an empty fill ring).
    pub fn kernel_stats(&self) -> Option<(u64, u64, u64)> {
        let s = self.rx.fd().xdp_statistics().ok()?;
        Some((
            s.rx_dropped(),
            s.rx_ring_full(),
            s.rx_fill_ring_empty_descs(),
        ))
    }

    /// Moves completed TX frames back to `free`.
    fn reclaim(&mut self) {
        while self.in_tx > 0 {
            // SAFETY: descriptors come back from the kernel's completion ring, so the kernel
            // no longer uses them; they go to `free`, their only place.
            let n = unsafe { self.cq.consume(&mut self.cq_batch) };
            if n == 0 {
                break;
            }
            self.in_tx -= n;
            self.free.extend_from_slice(&self.cq_batch[..n]);
        }
    }

    /// Gives received-and-processed frames back to the fill ring.
    fn refill(&mut self) {
        if self.to_fill.is_empty() {
            return;
        }
        let room = self.fq.nb_free(self.to_fill.len() as u32) as usize;
        let n = room.min(self.to_fill.len());
        if n > 0 {
            let start = self.to_fill.len() - n;
            // SAFETY: frames in `to_fill` were handed back by the stack and are referenced by
            // nothing else; after produce they belong to the kernel (counted in `in_fill`).
            let done = unsafe { self.fq.produce(&self.to_fill[start..]) };
            self.to_fill.truncate(self.to_fill.len() - done);
            self.in_fill += done;
        }
        if self.fq.needs_wakeup() {
            self.counters.fill_wakeups += 1;
            let _ = self.fq.wakeup(self.rx.fd_mut(), 0);
        }
    }

    /// Whether a received frame is waiting (pulls the next batch from the RX ring if needed).
    pub fn has_rx(&mut self) -> bool {
        self.fetch()
    }

    /// No frame received and waiting, none queued for TX or waiting for a kick (zero-copy: or
    /// still with the kernel). Copy-mode frames the kernel took but has not completed need no
    /// poll: they come back when the next transmit or flush reclaims them.
    pub fn idle(&mut self) -> bool {
        let tx_idle = match self.mode {
            CopyMode::Copy => !self.tx_unsent,
            CopyMode::ZeroCopy => self.in_tx == 0,
        };
        !self.fetch() && self.pending_tx.is_empty() && tx_idle
    }

    /// Pulls the next batch from the RX ring into `rx_batch`.
    fn fetch(&mut self) -> bool {
        if self.rx_pos < self.rx_len {
            return true;
        }
        self.refill();
        // SAFETY: descriptors consumed from the RX ring are ours until we put them in
        // `to_fill`; `rx_batch[..n]` is overwritten only after every earlier entry was
        // handed out (rx_pos == rx_len).
        let n = unsafe { self.rx.consume(&mut self.rx_batch) };
        self.in_fill -= n;
        self.rx_pos = 0;
        self.rx_len = n;
        if n == 0 && self.fq.needs_wakeup() {
            self.counters.fill_wakeups += 1;
            let _ = self.fq.wakeup(self.rx.fd_mut(), 0);
        }
        n > 0
    }

    /// Pushes pending TX frames into the TX ring and kicks the kernel when it asks for it.
    pub fn flush_tx(&mut self) {
        if !self.pending_tx.is_empty() {
            let room = self.tx.nb_free(self.pending_tx.len() as u32) as usize;
            let n = room.min(self.pending_tx.len());
            if n > 0 {
                // SAFETY: frames in `pending_tx` were filled by the stack and referenced by
                // nothing else; after produce they belong to the kernel (counted in `in_tx`).
                let done = unsafe { self.tx.produce(&self.pending_tx[..n]) };
                self.pending_tx.drain(..done);
                self.in_tx += done;
                self.tx_unsent |= done > 0;
            }
        }
        // Copy mode transmits only on a syscall, and only what is on the TX ring: frames the
        // kernel took but has not completed yet (the peer's socket still holds the skb) need
        // none, and kicking for them was a third of nginx's sendto calls. Zero-copy drivers
        // say when they need one.
        let kick = match self.mode {
            CopyMode::Copy => self.tx_unsent,
            CopyMode::ZeroCopy => self.in_tx > 0 && self.tx.needs_wakeup(),
        };
        if kick {
            self.counters.tx_kicks += 1;
            if let Err(e) = self.tx.wakeup() {
                tracing::debug!(queue = self.queue_id, error = %e, "TX kick failed");
            }
            // What the kernel left on the ring (a full completion ring, a busy device, its
            // per-call budget) is kicked again on the next flush.
            self.tx_unsent = self.tx.nb_free_exact() < RING_SIZE;
        }
        self.reclaim();
    }
}

/// A received frame handed to the stack. Consumed or dropped, the frame goes back to the fill
/// list exactly once.
pub struct XskRx<'a> {
    umem: &'a Umem,
    desc: Option<FrameDesc>,
    to_fill: &'a mut Vec<FrameDesc>,
}

/// The UMEM's shape, for checking descriptors (see `crate::desc`).
pub const LAYOUT: UmemLayout = UmemLayout {
    frame_count: FRAME_COUNT,
    frame_size: FRAME_SIZE,
};

impl RxFrame for XskRx<'_> {
    fn consume<R>(mut self, f: impl FnOnce(&[u8]) -> R) -> R {
        let desc = self
            .desc
            .take()
            .expect("an RX token holds its frame until consumed");
        // SAFETY: `desc` came from this UMEM's RX ring and is in no ring now; the kernel does
        // not write it until we give it back to the fill ring below, after `f` returns. Its
        // address and length were checked in `receive` to lie inside one frame of this UMEM,
        // which is the memory `data` turns into a slice.
        let data = unsafe { self.umem.data(&desc) };
        let r = f(data.contents());
        self.to_fill.push(desc);
        r
    }
}

impl Drop for XskRx<'_> {
    fn drop(&mut self) {
        // A token dropped unconsumed (or during a panic in `f`) still returns its frame.
        if let Some(desc) = self.desc.take() {
            self.to_fill.push(desc);
        }
    }
}

/// A transmit slot handed to the stack.
pub struct XskTx<'a> {
    umem: &'a Umem,
    free: &'a mut Vec<FrameDesc>,
    pending_tx: &'a mut Vec<FrameDesc>,
    scratch: &'a mut Vec<u8>,
    counters: &'a mut QueueCounters,
}

impl TxFrame for XskTx<'_> {
    fn consume<R>(self, len: usize, f: impl FnOnce(&mut [u8]) -> (R, bool)) -> R {
        let Some(mut desc) = self.free.pop() else {
            // Every frame is in flight: let the stack build the packet, then drop it. TCP
            // retransmits; the drop is counted.
            self.counters.tx_no_frame += 1;
            let n = len.min(self.scratch.len());
            return f(&mut self.scratch[..n]).0;
        };
        // SAFETY: `desc` was taken from `free`, so no ring and no other token refers to it.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        let fits = {
            let mut cursor = data.cursor();
            let fits = len <= cursor.buf_len();
            if fits {
                // Sets the frame's data length, i.e. the length the TX descriptor carries.
                cursor.set_pos(len);
            }
            fits
        };
        if !fits {
            self.free.push(desc);
            self.counters.tx_too_long += 1;
            let n = len.min(self.scratch.len());
            return f(&mut self.scratch[..n]).0;
        }
        let (r, send) = f(&mut data.contents_mut()[..len]);
        if send {
            self.counters.tx_frames += 1;
            self.counters.tx_bytes += len as u64;
            self.pending_tx.push(desc);
        } else {
            self.free.push(desc);
        }
        r
    }
}

impl Link for XskQueue {
    type Rx<'a> = XskRx<'a>;
    type Tx<'a> = XskTx<'a>;

    fn receive(&mut self) -> Option<(XskRx<'_>, XskTx<'_>)> {
        let desc = loop {
            if !self.fetch() {
                return None;
            }
            let desc = self.rx_batch[self.rx_pos];
            self.rx_pos += 1;
            match LAYOUT.rx_range(desc.addr() as u64, desc.lengths().data() as u32) {
                Ok(_) => break desc,
                Err(bad) => {
                    self.counters.rx_bad_desc += 1;
                    // A frame we can name goes back to the fill ring; an address outside the
                    // UMEM names none (and the kernel would refuse it).
                    if bad == BadDesc::CrossesFrame {
                        self.to_fill.push(desc);
                    } else {
                        self.lost_frames += 1;
                    }
                }
            }
        };
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += desc.lengths().data() as u64;
        if self.free.is_empty() {
            self.reclaim();
        }
        Some((
            XskRx {
                umem: &self.umem,
                desc: Some(desc),
                to_fill: &mut self.to_fill,
            },
            XskTx {
                umem: &self.umem,
                free: &mut self.free,
                pending_tx: &mut self.pending_tx,
                scratch: &mut self.scratch,
                counters: &mut self.counters,
            },
        ))
    }

    fn transmit(&mut self) -> Option<XskTx<'_>> {
        if self.free.is_empty() {
            self.reclaim();
            if self.free.is_empty() {
                // Push what is queued so completions can come back.
                self.flush_tx();
                if self.free.is_empty() {
                    return None;
                }
            }
        }
        Some(XskTx {
            umem: &self.umem,
            free: &mut self.free,
            pending_tx: &mut self.pending_tx,
            scratch: &mut self.scratch,
            counters: &mut self.counters,
        })
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn flush(&mut self) {
        self.flush_tx();
        self.refill();
    }
}
