//! The helper's frame accounting for one queue: what a departing client leaves behind, and a
//! census of where every frame is (see `ctl.rs` for the places a frame can be).

use std::io;
use std::sync::atomic::Ordering::Acquire;
use std::time::Duration;

use super::ctl::{QueueCtl, HELPER_SLOT};
use super::proto::QueueStatus;
use crate::ring::{Consumer, Producer};
use crate::sys::ring::RingMem;

/// Sums over the clients that left a queue (wrapping), so the kernel's share of the frames
/// still adds up after their sockets are gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Retired {
    pub(crate) rx_prod: u32,
    pub(crate) tx_cons: u32,
}

/// What a client left on a queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Left {
    /// Frames taken back from its RX ring (and, in copy mode, its unsent TX ring).
    pub(crate) recovered: u32,
    /// Frames it held privately (and unsent zero-copy TX frames): lost, counted.
    pub(crate) leaked: u32,
}

/// How a client leaves.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Departure {
    /// Take back the frames on its rings and count what it held (false when the helper
    /// itself stops, and its clients may still run).
    pub(crate) recover: bool,
    /// The queue runs zero-copy: unsent TX frames may still go out, so they are not taken.
    pub(crate) zero_copy: bool,
    /// How long to wait for the queue's mutex.
    pub(crate) timeout: Duration,
}

/// A client's socket rings on the queue (the helper maps them).
pub(crate) struct MemberRings<'a> {
    pub(crate) slot: u8,
    pub(crate) rx: &'a RingMem,
    pub(crate) tx: &'a RingMem,
}

/// Accounts for a client leaving the queue: under the queue's mutex (repairing what it left
/// half done if it died holding it), puts the frames on its RX ring back on the free stack, and
/// its unsent TX frames too unless `zero_copy` (the driver may still take those), counts what
/// it held privately as leaked, folds its ring indexes into `retired` and zeroes its slot.
///
/// Call it after the client's socket left the XSKMAP (so the kernel stops filling its RX
/// ring) and before the helper's fd to the socket closes.
pub(crate) fn retire(
    ctl: &QueueCtl,
    fill: &mut Producer,
    completion: &mut Consumer,
    member: &MemberRings<'_>,
    how: Departure,
    retired: &mut Retired,
) -> io::Result<Left> {
    let mut s = ctl.lock(HELPER_SLOT, fill, completion, how.timeout)?;
    let rx_prod = member.rx.producer().load(Acquire);
    let rx_cons = member.rx.consumer().load(Acquire);
    let tx_prod = member.tx.producer().load(Acquire);
    let tx_cons = member.tx.consumer().load(Acquire);
    let shape = ctl.shape();
    let slot = member.slot as usize;
    let private = rx_cons.wrapping_sub(tx_prod).wrapping_add(ctl.net(slot));
    let private = if private > shape.frame_count {
        tracing::warn!(
            slot,
            private,
            "a client's counters make no sense; counting nothing"
        );
        0
    } else {
        private
    };
    let mut left = Left::default();
    if how.recover {
        let mut frames = Vec::new();
        let rxc = Consumer::new(member.rx.clone());
        for i in 0..rx_prod.wrapping_sub(rx_cons).min(member.rx.size()) {
            if let Some(f) = shape.frame_of(rxc.read_desc(i).addr) {
                frames.push(f);
            }
        }
        let unsent = tx_prod.wrapping_sub(tx_cons).min(member.tx.size());
        if how.zero_copy {
            s.count_leaked(unsent);
            left.leaked += unsent;
        } else {
            let txc = Consumer::new(member.tx.clone());
            for i in 0..unsent {
                if let Some(f) = shape.frame_of(txc.read_desc(i).addr) {
                    frames.push(f);
                }
            }
        }
        left.recovered = s.recover(&mut frames);
        s.count_leaked(private);
        left.leaked += private;
    }
    retired.rx_prod = retired.rx_prod.wrapping_add(rx_prod);
    retired.tx_cons = retired.tx_cons.wrapping_add(tx_cons);
    drop(s);
    ctl.reset_slot(slot);
    Ok(left)
}

/// Where every frame of the queue is now: exact while nothing moves (no traffic, no client in
/// the middle of a batch); a snapshot otherwise.
pub(crate) fn census<'a>(
    queue: u32,
    ctl: &QueueCtl,
    fill: &RingMem,
    completion: &RingMem,
    members: impl IntoIterator<Item = MemberRings<'a>>,
    retired: Retired,
) -> QueueStatus {
    let c = ctl.counts();
    let fq_prod = fill.producer().load(Acquire);
    let fq_cons = fill.consumer().load(Acquire);
    let cq_prod = completion.producer().load(Acquire);
    let cq_cons = completion.consumer().load(Acquire);
    let (mut rx_prod_sum, mut rx_rings, mut private, mut tx_rings, mut tx_cons_sum) =
        (0u32, 0u32, 0u32, 0u32, 0u32);
    for m in members {
        let rp = m.rx.producer().load(Acquire);
        let rc = m.rx.consumer().load(Acquire);
        let tp = m.tx.producer().load(Acquire);
        let tc = m.tx.consumer().load(Acquire);
        rx_prod_sum = rx_prod_sum.wrapping_add(rp);
        rx_rings = rx_rings.wrapping_add(rp.wrapping_sub(rc));
        private = private.wrapping_add(rc.wrapping_sub(tp).wrapping_add(ctl.net(m.slot as usize)));
        tx_rings = tx_rings.wrapping_add(tp.wrapping_sub(tc));
        tx_cons_sum = tx_cons_sum.wrapping_add(tc);
    }
    let fill_n = fq_prod.wrapping_sub(fq_cons);
    let kernel_rx = fq_cons
        .wrapping_sub(rx_prod_sum)
        .wrapping_sub(retired.rx_prod);
    let kernel_tx = tx_cons_sum
        .wrapping_add(retired.tx_cons)
        .wrapping_sub(cq_prod);
    let completion_n = cq_prod.wrapping_sub(cq_cons);
    let frames = ctl.shape().frame_count;
    let parts = [
        c.free,
        fill_n,
        kernel_rx,
        rx_rings,
        private,
        tx_rings,
        kernel_tx,
        completion_n,
        c.leaked,
    ];
    // Each part is a count of frames: one beyond the UMEM is a wrapped negative (a snapshot
    // taken mid-change), never a real count.
    let sane = parts.iter().all(|&p| p <= frames);
    let total = parts.iter().fold(0u32, |a, b| a.wrapping_add(*b));
    QueueStatus {
        queue,
        frames,
        free: c.free,
        fill: fill_n,
        kernel_rx,
        rx_rings,
        private,
        tx_rings,
        kernel_tx,
        completion: completion_n,
        leaked: c.leaked,
        recovered: c.recovered,
        bad: c.bad,
        repairs: c.repairs,
        accounted: sane && total == frames,
    }
}
