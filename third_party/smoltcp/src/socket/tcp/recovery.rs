//! Sender-side loss recovery (an accel patch, see README.md).
//!
//! - A SACK scoreboard (RFC 2018): the ranges above SND.UNA the peer reported.
//! - Loss marking: everything not SACKed below a point is lost once more than
//!   (DupThresh - 1) * SMSS bytes are SACKed above it (RFC 6675's IsLost), or once a reordering
//!   window has passed since data sent after it was SACKed (RACK, RFC 8985, in the simple
//!   form that needs no per-segment send times: what lies below SACKed data was sent before
//!   it). Without SACK, the third duplicate ACK marks the first segment lost (RFC 5681), and so
//!   does each partial ACK during recovery (NewReno, RFC 6582).
//! - Retransmissions are remembered with the highest sequence number sent at that time, so a
//!   lost retransmission is recognised like a lost original: by data sent after it being
//!   SACKed (what Linux's RACK does with send times).
//! - A tail loss probe (RFC 8985 section 7, as Linux sends it): when data is outstanding and
//!   nothing comes back for about two RTTs, one segment goes out (new data, or the last segment
//!   again) so that a loss at the tail of a flight is found through the SACKs it draws instead
//!   of by the retransmission timer.
//! - `next_rtx` picks what to retransmit (RFC 6675's NextSeg, rule 1: the first lost range not
//!   yet retransmitted); `pipe` is the data in flight the congestion window is compared with
//!   (RFC 6675's SetPipe: SACKed and lost bytes are not in flight, retransmitted ones are).
//!
//! The tables are fixed-size: with more SACKed ranges than fit, the highest are forgotten (the
//! data is sent again); with more retransmissions than fit, the oldest are (they may be sent
//! once more). Both cost bandwidth, never correctness.

use heapless::Vec;

use crate::time::{Duration, Instant};
use crate::wire::TcpSeqNumber;

/// SACKed ranges kept.
const MAX_SACKED: usize = 16;
/// Retransmitted ranges remembered.
const MAX_RTX: usize = 16;
/// RFC 6675's DupThresh.
const DUP_THRESH: usize = 3;

/// What loss recovery did on one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecoveryStats {
    /// Data (or FIN) segments sent again: by recovery, after a timeout, as a tail loss probe.
    pub retransmitted: u64,
    /// Retransmission timeouts (the handshake's included).
    pub timeouts: u64,
    /// Loss episodes found without a timeout (SACKs, duplicate or partial ACKs).
    pub recoveries: u64,
    /// Tail loss probes sent.
    pub loss_probes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Range {
    start: TcpSeqNumber,
    end: TcpSeqNumber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Rtx {
    start: TcpSeqNumber,
    end: TcpSeqNumber,
    /// The highest sequence number sent when this range was retransmitted: data SACKed at or
    /// above it was sent after the retransmission.
    after: TcpSeqNumber,
    /// Order among retransmissions (from 1): one delivered after an older one still missing
    /// says the older one was lost.
    order: u32,
    /// Bytes of the same retransmission (sent after this part: a burst goes out in sequence
    /// order) that have arrived.
    delivered_above: usize,
    /// Lost again: to be retransmitted again.
    lost: bool,
}

// `repr(C)`: the fields read on every packet (is anything tracked?) come first, in one cache
// line, ahead of the tables.
#[derive(Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(C)]
pub(super) struct Recovery {
    /// Whether either table below holds anything.
    tables_used: bool,
    /// The probe timer fired: the next segment sent is the probe.
    probe_due: bool,
    /// The peer reported (D-SACK, RFC 2883) receiving data twice since the probe.
    dsack: bool,
    /// Bytes below this that are not SACKed are lost (`None`: none are).
    lost_end: Option<TcpSeqNumber>,
    /// In recovery until SND.UNA reaches this (RFC 6675's RecoveryPoint).
    recovery_point: Option<TcpSeqNumber>,
    /// A probe is out: the highest sequence number sent with it, and whether it was a
    /// retransmission. No other probe goes until an ACK covers it.
    probe_out: Option<(TcpSeqNumber, bool)>,
    /// When the reordering window ends for what the SACKs received so far show missing.
    reo_deadline: Option<Instant>,
    /// When the tail loss probe is due.
    probe_at: Option<Instant>,
    next_order: u32,
    /// Order of the latest retransmission known to have arrived.
    delivered_order: u32,
    pub(super) stats: RecoveryStats,
    /// Sorted, disjoint, above SND.UNA.
    sacked: Vec<Range, MAX_SACKED>,
    /// Sorted, disjoint, above SND.UNA, not SACKed.
    rtx: Vec<Rtx, MAX_RTX>,
}

impl Recovery {
    /// Back to the state of a new connection (in place: no allocation).
    pub(super) fn reset(&mut self) {
        *self = Recovery::default();
    }

    /// Whether a loss episode (fast recovery, or the retransmissions after an RTO) is under
    /// way.
    #[inline]
    pub(super) fn in_recovery(&self) -> bool {
        self.recovery_point.is_some()
    }

    /// Whether there is nothing to track: the fast paths apply.
    #[inline]
    pub(super) fn idle(&self) -> bool {
        !self.tables_used && self.lost_end.is_none() && self.recovery_point.is_none()
    }

    /// Notes whether the tables hold anything (after every change to them).
    fn sync_tables(&mut self) {
        self.tables_used = !self.sacked.is_empty() || !self.rtx.is_empty();
    }

    /// When a timer of ours is due (the end of a reordering window, the tail loss probe).
    #[inline]
    pub(super) fn poll_at(&self) -> Option<Instant> {
        match (self.reo_deadline, self.probe_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arms the tail loss probe for `at`, unless one is out already; `None` disarms it.
    #[inline]
    pub(super) fn schedule_probe(&mut self, at: Option<Instant>) {
        if at.is_none() || self.probe_out.is_some() || self.in_recovery() {
            self.probe_at = None;
            self.probe_due = false;
        } else {
            self.probe_at = at;
        }
    }

    /// Whether the next segment sent is a tail loss probe.
    #[inline]
    pub(super) fn probe_due(&self) -> bool {
        self.probe_due
    }

    /// The probe went out; `high` is the highest sequence number sent.
    pub(super) fn on_probe_sent(&mut self, high: TcpSeqNumber, retransmission: bool) {
        self.probe_due = false;
        self.probe_at = None;
        self.probe_out = Some((high, retransmission));
        self.dsack = false;
        self.stats.loss_probes += 1;
        self.stats.retransmitted += retransmission as u64;
    }

    /// An ACK arrived: `una` is the (new) SND.UNA, `blocks` the SACK blocks it carried,
    /// `high` the highest sequence number sent, `mss` the segment size.
    pub(super) fn on_ack(
        &mut self,
        now: Instant,
        una: TcpSeqNumber,
        advanced: bool,
        blocks: &[Option<(u32, u32)>],
        high: TcpSeqNumber,
        mss: usize,
        reo_wnd: Duration,
    ) -> bool {
        // The common case, an ACK with nothing lost, SACKed or probed: nothing to do.
        if self.idle()
            && self.probe_out.is_none()
            && self.reo_deadline.is_none()
            && blocks.iter().all(Option::is_none)
        {
            return false;
        }
        self.forget_below(una);
        // RFC 2883: a first block below the cumulative ACK reports data received twice.
        if let Some(Some((left, _))) = blocks.first() {
            if TcpSeqNumber(*left as i32) < una {
                self.dsack = true;
            }
        }
        // RFC 8985 7.4.2: a probe that was a retransmission and is acknowledged with no
        // D-SACK repaired a loss, which congestion control must hear of.
        let mut probe_repaired = false;
        if let Some((probe_high, retransmission)) = self.probe_out {
            if una >= probe_high {
                probe_repaired = retransmission && !self.dsack;
                self.probe_out = None;
            }
        }
        if let Some(point) = self.recovery_point {
            if una >= point {
                self.recovery_point = None;
            } else if advanced {
                // NewReno (RFC 6582): a partial ACK means the segment now at SND.UNA was lost
                // too (retransmitted unless a retransmission of it is already in flight).
                self.mark_lost_to((una + mss).min(high));
            }
        }
        for &(left, right) in blocks.iter().flatten() {
            let (left, right) = (TcpSeqNumber(left as i32), TcpSeqNumber(right as i32));
            // Not above SND.UNA (a D-SACK, RFC 2883, or old), or never sent: ignored.
            if left >= right || right <= una || right > high {
                continue;
            }
            self.add_sacked(left.max(una), right);
        }
        // IsLost: more than (DupThresh - 1) * SMSS bytes SACKed above.
        let threshold = (DUP_THRESH - 1) * mss;
        let mut above = 0;
        for range in self.sacked.iter().rev() {
            above += range.end - range.start;
            if above > threshold {
                let start = range.start;
                self.mark_lost_to(start);
                break;
            }
        }
        let sacked = &self.sacked;
        for rtx in self.rtx.iter_mut().filter(|r| !r.lost) {
            if sacked_above(sacked, rtx.after) > threshold || rtx.delivered_above > threshold {
                rtx.lost = true;
            }
        }
        if self.reordering_evidence() {
            self.reo_deadline.get_or_insert(now + reo_wnd);
        } else {
            self.reo_deadline = None;
        }
        self.sync_tables();
        probe_repaired
    }

    /// Without SACK: the third duplicate ACK says the segment at SND.UNA was lost.
    pub(super) fn on_dup_acks(&mut self, una: TcpSeqNumber, high: TcpSeqNumber, mss: usize) {
        self.mark_lost_to((una + mss).min(high));
    }

    /// Time passed: at the end of the reordering window, what SACKed data sent later shows
    /// missing is lost.
    pub(super) fn on_time(&mut self, now: Instant) {
        if self.probe_at.is_some_and(|t| t <= now) {
            self.probe_at = None;
            self.probe_due = true;
        }
        if self.reo_deadline.is_none_or(|t| t > now) {
            return;
        }
        self.reo_deadline = None;
        if let Some(top) = self.sacked.last() {
            let start = top.start;
            self.mark_lost_to(start);
        }
        let (top, delivered) = (self.top_sacked(), self.delivered_order);
        for rtx in self.rtx.iter_mut() {
            if rtx.sent_before(top, delivered) {
                rtx.lost = true;
            }
        }
    }

    /// Starts a loss episode if something is to be retransmitted and none is under way;
    /// returns whether it did (the congestion controller is to be told).
    pub(super) fn enter_if_lost(&mut self, una: TcpSeqNumber, high: TcpSeqNumber) -> bool {
        if self.recovery_point.is_none() && self.next_rtx(una, high).is_some() {
            self.recovery_point = Some(high);
            self.schedule_probe(None);
            self.probe_out = None;
            self.stats.recoveries += 1;
            return true;
        }
        false
    }

    /// The retransmission timer fired: everything not SACKed is lost, retransmissions
    /// included. `forget_sacks` (a repeated timeout) also drops the scoreboard, in case the
    /// peer threw away data it had SACKed (RFC 2018 allows it).
    pub(super) fn on_rto(&mut self, high: TcpSeqNumber, forget_sacks: bool) {
        if forget_sacks {
            self.sacked.clear();
        }
        self.rtx.clear();
        self.lost_end = Some(high);
        self.recovery_point = Some(high);
        self.reo_deadline = None;
        self.probe_out = None;
        self.schedule_probe(None);
        self.sync_tables();
    }

    /// The first range to retransmit, `[start, end)` (RFC 6675's NextSeg, rule 1): lost, not
    /// SACKed, not retransmitted since (or retransmitted and lost again).
    pub(super) fn next_rtx(
        &self,
        una: TcpSeqNumber,
        high: TcpSeqNumber,
    ) -> Option<(TcpSeqNumber, TcpSeqNumber)> {
        if self.idle() {
            return None;
        }
        let lost_end = self.lost_end.unwrap_or(una).min(high);
        let mut hole_start = una;
        for i in 0..=self.sacked.len() {
            let hole_end = self.sacked.get(i).map_or(high, |r| r.start).min(high);
            let mut at = hole_start;
            while at < hole_end {
                match self.rtx.iter().find(|r| r.start <= at && at < r.end) {
                    Some(r) if r.lost => return Some((at, r.end.min(hole_end))),
                    Some(r) => at = r.end,
                    None if at < lost_end => {
                        let next_rtx = self
                            .rtx
                            .iter()
                            .map(|r| r.start)
                            .find(|&s| s > at)
                            .unwrap_or(hole_end);
                        return Some((at, hole_end.min(lost_end).min(next_rtx)));
                    }
                    None => {
                        // Not lost: only a lost retransmission further up may need sending.
                        at = self
                            .rtx
                            .iter()
                            .filter(|r| r.lost)
                            .map(|r| r.start)
                            .find(|&s| s > at)
                            .unwrap_or(hole_end);
                    }
                }
            }
            match self.sacked.get(i) {
                Some(r) if r.end < high => hole_start = r.end,
                _ => break,
            }
        }
        None
    }

    /// `[start, end)` was retransmitted; `high` is the highest sequence number sent.
    pub(super) fn on_retransmit(
        &mut self,
        start: TcpSeqNumber,
        end: TcpSeqNumber,
        high: TcpSeqNumber,
    ) {
        self.record_retransmit(start, end, high);
        self.sync_tables();
    }

    fn record_retransmit(&mut self, start: TcpSeqNumber, end: TcpSeqNumber, high: TcpSeqNumber) {
        if start >= end {
            return;
        }
        self.stats.retransmitted += 1;
        self.remove_rtx(start, end, false);
        self.next_order += 1;
        let new = Rtx {
            start,
            end,
            after: high,
            order: self.next_order,
            delivered_above: 0,
            lost: false,
        };
        let at = self.rtx.iter().position(|r| r.start > start);
        let at = at.unwrap_or(self.rtx.len());
        // A burst of back-to-back retransmissions is one range.
        if let Some(prev) = at.checked_sub(1).map(|i| &mut self.rtx[i]) {
            if prev.end == start && !prev.lost && prev.after == high {
                prev.end = end;
                return;
            }
        }
        if self.rtx.is_full() {
            // Forget the oldest: it may be sent once more.
            let oldest = (0..self.rtx.len()).min_by_key(|&i| self.rtx[i].order);
            if let Some(i) = oldest {
                self.rtx.remove(i);
            }
        }
        let at = self
            .rtx
            .iter()
            .position(|r| r.start > start)
            .unwrap_or(self.rtx.len());
        let _ = self.rtx.insert(at, new);
    }

    /// Data in flight (RFC 6675's pipe), for `[una, high)` sent.
    #[inline]
    pub(super) fn pipe(&self, una: TcpSeqNumber, high: TcpSeqNumber) -> usize {
        if high <= una {
            return 0;
        }
        if self.idle() {
            return high - una;
        }
        self.pipe_tracked(una, high)
    }

    fn pipe_tracked(&self, una: TcpSeqNumber, high: TcpSeqNumber) -> usize {
        let lost_end = self.lost_end.unwrap_or(una).max(una).min(high);
        // Not SACKed and not lost...
        let mut pipe = (high - lost_end) - sacked_above(&self.sacked, lost_end);
        // ...and retransmitted, not lost again.
        for r in self.rtx.iter().filter(|r| !r.lost) {
            let end = r.end.min(lost_end);
            if end > r.start {
                pipe += end - r.start;
            }
        }
        pipe
    }

    /// Bytes SACKed (tests).
    #[cfg(test)]
    fn sacked_bytes(&self) -> usize {
        self.sacked.iter().map(|r| r.end - r.start).sum()
    }

    fn top_sacked(&self) -> Option<TcpSeqNumber> {
        self.sacked.last().map(|r| r.end)
    }

    /// SACKed data lies above bytes not yet known lost (a hole, or a retransmission with data
    /// sent after it SACKed): once the reordering window passes, they are.
    fn reordering_evidence(&self) -> bool {
        let Some(top) = self.sacked.last() else {
            return false;
        };
        let unmarked_hole = self.lost_end.is_none_or(|e| e < top.start);
        unmarked_hole
            || self
                .rtx
                .iter()
                .any(|r| !r.lost && r.sent_before(Some(top.end), self.delivered_order))
    }

    fn mark_lost_to(&mut self, end: TcpSeqNumber) {
        self.lost_end = Some(self.lost_end.map_or(end, |e| e.max(end)));
    }

    fn forget_below(&mut self, una: TcpSeqNumber) {
        self.sacked.retain(|r| r.end > una);
        for r in self.sacked.iter_mut() {
            r.start = r.start.max(una);
        }
        let mut delivered = self.delivered_order;
        self.rtx.retain(|r| {
            if r.end <= una {
                delivered = delivered.max(r.order);
                false
            } else {
                true
            }
        });
        self.delivered_order = delivered;
        for r in self.rtx.iter_mut() {
            r.start = r.start.max(una);
        }
        if self.lost_end.is_some_and(|e| e <= una) {
            self.lost_end = None;
        }
        if self.sacked.is_empty() && self.rtx.is_empty() {
            self.reo_deadline = None;
        }
    }

    fn add_sacked(&mut self, start: TcpSeqNumber, end: TcpSeqNumber) {
        // Merge with every range it touches.
        let (mut start, mut end) = (start, end);
        self.sacked.retain(|r| {
            if r.end < start || r.start > end {
                true
            } else {
                start = start.min(r.start);
                end = end.max(r.end);
                false
            }
        });
        let at = self
            .sacked
            .iter()
            .position(|r| r.start > start)
            .unwrap_or(self.sacked.len());
        if self.sacked.is_full() {
            // Keep the lowest ranges: they say which holes come first.
            if at == self.sacked.len() {
                return;
            }
            self.sacked.pop();
        }
        let _ = self.sacked.insert(at, Range { start, end });
        self.remove_rtx(start, end, true);
    }

    /// Takes `[start, end)` out of the retransmitted ranges; `delivered`: because it arrived.
    fn remove_rtx(&mut self, start: TcpSeqNumber, end: TcpSeqNumber, delivered: bool) {
        let mut i = 0;
        while i < self.rtx.len() {
            let r = self.rtx[i];
            if r.end <= start || r.start >= end {
                i += 1;
                continue;
            }
            if delivered {
                self.delivered_order = self.delivered_order.max(r.order);
            }
            let overlap = r.end.min(end) - r.start.max(start);
            let low = Rtx {
                end: start,
                delivered_above: r.delivered_above + if delivered { overlap } else { 0 },
                ..r
            };
            let high = Rtx { start: end, ..r };
            self.rtx.remove(i);
            if high.start < high.end {
                let _ = self.rtx.insert(i, high);
            }
            if low.start < low.end {
                let _ = self.rtx.insert(i, low);
                i += 1;
            }
            if high.start < high.end {
                i += 1;
            }
        }
    }
}

impl Rtx {
    /// Whether something sent after this retransmission has arrived: SACKed data at or above
    /// `after` (`top`: the highest SACKed), a later retransmission, or a later part of this
    /// one.
    fn sent_before(&self, top: Option<TcpSeqNumber>, delivered_order: u32) -> bool {
        top.is_some_and(|t| t > self.after)
            || delivered_order > self.order
            || self.delivered_above > 0
    }
}

/// Bytes of `sacked` at or above `seq`.
fn sacked_above(sacked: &[Range], seq: TcpSeqNumber) -> usize {
    sacked
        .iter()
        .filter(|r| r.end > seq)
        .map(|r| r.end - r.start.max(seq))
        .sum()
}

#[cfg(test)]
mod test {
    use super::*;

    const MSS: usize = 100;
    const NOW: Instant = Instant::from_millis_const(0);
    const REO: Duration = Duration::from_micros(10);

    fn seq(n: usize) -> TcpSeqNumber {
        // Close to the wrap-around, so the arithmetic is checked there too.
        TcpSeqNumber(i32::MAX - 250) + n
    }

    fn block(start: usize, end: usize) -> Option<(u32, u32)> {
        Some((seq(start).0 as u32, seq(end).0 as u32))
    }

    fn ack(r: &mut Recovery, una: usize, blocks: &[Option<(u32, u32)>], high: usize) {
        r.on_ack(NOW, seq(una), false, blocks, seq(high), MSS, REO);
    }

    #[test]
    fn no_sack_no_loss_pipe_is_flight() {
        let mut r = Recovery::default();
        ack(&mut r, 0, &[], 1000);
        assert_eq!(r.pipe(seq(0), seq(1000)), 1000);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), None);
        assert!(!r.enter_if_lost(seq(0), seq(1000)));
    }

    #[test]
    fn three_segments_sacked_above_a_hole_mark_it_lost() {
        let mut r = Recovery::default();
        // Segment 0 lost, 1 and 2 SACKed: 200 bytes above, not more than 2 MSS.
        ack(&mut r, 0, &[block(100, 300)], 1000);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), None);
        assert_eq!(r.pipe(seq(0), seq(1000)), 800);
        // The third: 300 bytes above the hole.
        ack(&mut r, 0, &[block(100, 400)], 1000);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(0), seq(100))));
        assert!(r.enter_if_lost(seq(0), seq(1000)));
        assert!(r.in_recovery());
        // Not in flight: the lost hole, the SACKed bytes.
        assert_eq!(r.pipe(seq(0), seq(1000)), 600);
        r.on_retransmit(seq(0), seq(100), seq(1000));
        assert_eq!(r.pipe(seq(0), seq(1000)), 700);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), None);
        // The cumulative ACK passes the recovery point: over.
        r.on_ack(NOW, seq(1000), true, &[], seq(1000), MSS, REO);
        assert!(!r.in_recovery());
        assert!(r.idle());
    }

    #[test]
    fn only_holes_are_retransmitted() {
        let mut r = Recovery::default();
        ack(
            &mut r,
            0,
            &[block(800, 1000), block(300, 500), block(100, 200)],
            1000,
        );
        assert_eq!(r.sacked_bytes(), 500);
        assert!(r.enter_if_lost(seq(0), seq(1000)));
        let mut sent = std::vec::Vec::new();
        while let Some((s, e)) = r.next_rtx(seq(0), seq(1000)) {
            r.on_retransmit(s, e, seq(1000));
            sent.push((s - seq(0), e - seq(0)));
        }
        // [500, 800) has only 200 bytes SACKed above: not lost yet.
        assert_eq!(sent, [(0, 100), (200, 300)]);
        // The reordering window passes: the last hole is lost too.
        assert_eq!(r.poll_at(), Some(NOW + REO));
        r.on_time(NOW + REO);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(500), seq(800))));
    }

    #[test]
    fn a_sack_above_a_hole_marks_it_after_the_reordering_window() {
        let mut r = Recovery::default();
        // The last segment but one is lost: one segment SACKed above it.
        ack(&mut r, 0, &[block(400, 500)], 500);
        assert_eq!(r.next_rtx(seq(0), seq(500)), None);
        r.on_time(NOW + REO / 2);
        assert_eq!(r.next_rtx(seq(0), seq(500)), None);
        r.on_time(NOW + REO);
        assert_eq!(r.next_rtx(seq(0), seq(500)), Some((seq(0), seq(400))));
        assert_eq!(r.poll_at(), None);
    }

    #[test]
    fn a_lost_retransmission_is_sent_again() {
        let mut r = Recovery::default();
        ack(&mut r, 0, &[block(100, 500)], 500);
        assert!(r.enter_if_lost(seq(0), seq(500)));
        r.on_retransmit(seq(0), seq(100), seq(500));
        // New data goes out after the retransmission, and is SACKed: the retransmission
        // was sent before it, so after the reordering window it is lost.
        ack(&mut r, 0, &[block(100, 600)], 600);
        assert_eq!(r.next_rtx(seq(0), seq(600)), None);
        r.on_time(NOW + REO);
        assert_eq!(r.next_rtx(seq(0), seq(600)), Some((seq(0), seq(100))));
        // With more than 2 MSS SACKed above what was sent after it, at once.
        r.on_retransmit(seq(0), seq(100), seq(600));
        ack(&mut r, 0, &[block(100, 900)], 900);
        assert_eq!(r.next_rtx(seq(0), seq(900)), Some((seq(0), seq(100))));
    }

    #[test]
    fn a_retransmission_overtaken_by_a_later_one_is_lost() {
        let mut r = Recovery::default();
        ack(&mut r, 0, &[block(500, 1000), block(100, 200)], 1000);
        assert!(r.enter_if_lost(seq(0), seq(1000)));
        r.on_retransmit(seq(0), seq(100), seq(1000));
        let (s, e) = r.next_rtx(seq(0), seq(1000)).unwrap();
        assert_eq!((s, e), (seq(200), seq(500)));
        r.on_retransmit(seq(200), seq(300), seq(1000));
        // The second retransmission arrives, the first does not.
        ack(&mut r, 0, &[block(200, 300)], 1000);
        r.on_time(NOW + REO);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(0), seq(100))));
    }

    #[test]
    fn a_lost_part_of_a_retransmission_burst_is_sent_again() {
        let mut r = Recovery::default();
        ack(&mut r, 0, &[block(900, 1000)], 1000);
        r.on_rto(seq(1000), false);
        // One burst, in sequence order: [0, 900) goes out as one range.
        r.on_retransmit(seq(0), seq(400), seq(1000));
        r.on_retransmit(seq(400), seq(900), seq(1000));
        assert_eq!(r.rtx.len(), 1);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), None);
        // [0, 100) is lost, [100, 200) arrives: sent after it.
        ack(&mut r, 0, &[block(100, 200)], 1000);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), None);
        r.on_time(NOW + REO);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(0), seq(100))));
        // More than 2 MSS of the burst above the loss: at once.
        let mut r = Recovery::default();
        r.on_rto(seq(1000), false);
        r.on_retransmit(seq(0), seq(1000), seq(1000));
        ack(&mut r, 0, &[block(100, 400)], 1000);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(0), seq(100))));
    }

    #[test]
    fn newreno_partial_acks_retransmit_the_next_segment() {
        let mut r = Recovery::default();
        r.on_dup_acks(seq(0), seq(1000), MSS);
        assert!(r.enter_if_lost(seq(0), seq(1000)));
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(0), seq(100))));
        r.on_retransmit(seq(0), seq(100), seq(1000));
        assert_eq!(r.next_rtx(seq(0), seq(1000)), None);
        // Partial ACK: the segment at 300 was lost too.
        r.on_ack(NOW, seq(300), true, &[], seq(1000), MSS, REO);
        assert!(r.in_recovery());
        assert_eq!(r.next_rtx(seq(300), seq(1000)), Some((seq(300), seq(400))));
        r.on_retransmit(seq(300), seq(400), seq(1000));
        r.on_ack(NOW, seq(1000), true, &[], seq(1000), MSS, REO);
        assert!(!r.in_recovery());
    }

    #[test]
    fn rto_retransmits_all_but_the_sacked() {
        let mut r = Recovery::default();
        ack(&mut r, 0, &[block(200, 400)], 1000);
        r.on_rto(seq(1000), false);
        assert!(r.in_recovery());
        assert_eq!(r.pipe(seq(0), seq(1000)), 0);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(0), seq(200))));
        r.on_retransmit(seq(0), seq(100), seq(1000));
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(100), seq(200))));
        r.on_retransmit(seq(100), seq(200), seq(1000));
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(400), seq(1000))));
        assert_eq!(r.pipe(seq(0), seq(1000)), 200);
        // A repeated timeout forgets the SACKs.
        r.on_rto(seq(1000), true);
        assert_eq!(r.next_rtx(seq(0), seq(1000)), Some((seq(0), seq(1000))));
    }

    #[test]
    fn one_probe_until_it_is_acknowledged() {
        let mut r = Recovery::default();
        r.schedule_probe(Some(NOW + REO));
        assert_eq!(r.poll_at(), Some(NOW + REO));
        r.on_time(NOW);
        assert!(!r.probe_due());
        r.on_time(NOW + REO);
        assert!(r.probe_due());
        assert_eq!(r.poll_at(), None);
        r.on_probe_sent(seq(1000), true);
        assert!(!r.probe_due());
        r.schedule_probe(Some(NOW + REO * 2));
        assert_eq!(r.poll_at(), None);
        // The ACK covering it says the retransmitted segment was lost (no D-SACK).
        assert!(r.on_ack(NOW, seq(1000), true, &[], seq(1000), MSS, REO));
        r.schedule_probe(Some(NOW + REO * 2));
        assert_eq!(r.poll_at(), Some(NOW + REO * 2));
        // A D-SACK says the original had arrived: no loss.
        r.on_time(NOW + REO * 2);
        r.on_probe_sent(seq(2000), true);
        assert!(!r.on_ack(
            NOW,
            seq(2000),
            true,
            &[block(1900, 2000)],
            seq(2000),
            MSS,
            REO
        ));
    }

    #[test]
    fn dsack_and_unsent_ranges_are_ignored() {
        let mut r = Recovery::default();
        ack(&mut r, 500, &[block(100, 200), block(900, 1200)], 1000);
        assert_eq!(r.sacked_bytes(), 0);
        assert!(r.idle());
    }

    #[test]
    fn full_tables_cost_retransmissions_not_correctness() {
        let mut r = Recovery::default();
        // Every other segment SACKed: more ranges than the table holds.
        let blocks: std::vec::Vec<_> = (0..40)
            .map(|i| block(i * 200 + 100, i * 200 + 200))
            .collect();
        for chunk in blocks.chunks(3) {
            ack(&mut r, 0, chunk, 8000);
        }
        assert_eq!(r.sacked.len(), MAX_SACKED);
        assert!(r.enter_if_lost(seq(0), seq(8000)));
        let mut n = 0;
        while let Some((s, e)) = r.next_rtx(seq(0), seq(8000)) {
            r.on_retransmit(s, e, seq(8000));
            n += 1;
            assert!(n < 100);
        }
        // Everything below the lost point not SACKed was sent again, once.
        assert!(r.rtx.len() <= MAX_RTX);
        assert!(r.pipe(seq(0), seq(8000)) > 0);
    }
}
