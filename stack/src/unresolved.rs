//! Packets waiting for their next hop's Ethernet address: the kernel's "unresolved queue"
//! (`neigh->arp_queue`). Without it the first datagram to a fresh neighbour would be lost, and a
//! UDP request/response program that sends once and waits (sockperf ping-pong) would wait for
//! ever. Packets keep their order per destination, are sent on the first poll after the kernel
//! resolved the neighbour, and are dropped (counted) when the queue is full, when the destination
//! becomes unreachable, or after [`MAX_AGE`] (the kernel gives up after 3 probes, 1 s apart).

use std::collections::VecDeque;

use core::net::Ipv4Addr;

use smoltcp::time::{Duration, Instant};

use crate::counters::Counters;
use crate::device::{write_header, ETH_HEADER_LEN};
use crate::link::{Link, Mac, NextHop, Resolver, TxFrame};

/// Most packets held (the kernel holds up to `unres_qlen_bytes` = 208 KiB per neighbour).
pub(crate) const MAX_PACKETS: usize = 128;
/// Most bytes held, over all destinations.
pub(crate) const MAX_BYTES: usize = 256 * 1024;
/// How long a packet may wait for its neighbour.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(3);
/// How often a stack with held packets looks again at the neighbour table.
pub(crate) const RECHECK: Duration = Duration::from_millis(1);

struct Held {
    since: Instant,
    dst: Ipv4Addr,
    packet: Vec<u8>,
}

#[derive(Default)]
pub(crate) struct Unresolved {
    held: VecDeque<Held>,
    bytes: usize,
}

impl Unresolved {
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Holds a copy of the IP packet `packet` for `dst`; false (and counted) when full.
    pub(crate) fn hold(
        &mut self,
        now: Instant,
        dst: Ipv4Addr,
        packet: &[u8],
        counters: &mut Counters,
    ) -> bool {
        if self.held.len() >= MAX_PACKETS || self.bytes + packet.len() > MAX_BYTES {
            counters.tx_drop_no_neighbour += 1;
            return false;
        }
        self.bytes += packet.len();
        counters.tx_held_no_neighbour += 1;
        self.held.push_back(Held {
            since: now,
            dst,
            packet: packet.to_vec(),
        });
        true
    }

    /// Whether a packet for `dst` is already waiting (a newer one must queue behind it).
    pub(crate) fn holds_for(&self, dst: Ipv4Addr) -> bool {
        self.held.iter().any(|h| h.dst == dst)
    }

    /// When the stack should look again (held packets wait for a neighbour update).
    pub(crate) fn poll_at(&self, now: Instant) -> Option<Instant> {
        (!self.is_empty()).then(|| now + RECHECK)
    }

    /// Sends every held packet whose next hop is now known, in order; drops those that became
    /// unreachable or waited too long. Stops when the link has no TX frame. Returns whether
    /// anything was sent or dropped.
    pub(crate) fn flush<L: Link, R: Resolver>(
        &mut self,
        now: Instant,
        link: &mut L,
        resolver: &mut R,
        mac: &Mac,
        counters: &mut Counters,
    ) -> bool {
        let mut moved = false;
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            let verdict = match resolver.next_hop(h.dst) {
                NextHop::Mac(next) => Some(next),
                NextHop::Unreachable => {
                    counters.tx_drop_unreachable += 1;
                    None
                }
                NextHop::Pending if now >= h.since + MAX_AGE => {
                    counters.tx_drop_no_neighbour += 1;
                    None
                }
                NextHop::Pending => {
                    i += 1;
                    continue;
                }
            };
            let Some(h) = self.held.remove(i) else {
                break;
            };
            self.bytes -= h.packet.len();
            moved = true;
            let Some(next) = verdict else {
                continue;
            };
            let Some(tx) = link.transmit() else {
                // Put it back where it was; the rest waits for the next poll.
                self.bytes += h.packet.len();
                self.held.insert(i, h);
                counters.tx_drop_no_tx_frame += 1;
                break;
            };
            let len = ETH_HEADER_LEN + h.packet.len();
            tx.consume(len, |frame| {
                let (header, ip) = frame.split_at_mut(ETH_HEADER_LEN);
                write_header(header, &next, mac);
                ip.copy_from_slice(&h.packet);
                counters.tx_frames += 1;
                counters.tx_bytes += len as u64;
                ((), true)
            });
        }
        moved
    }
}
