//! What the stack needs from below: a link that carries Ethernet frames, and a way to find the
//! Ethernet address of the next hop. libaccel implements both over AF_XDP queues and the kernel's
//! neighbour table; tests implement them in memory.
//!
//! The shape mirrors smoltcp's `phy::Device` one layer down (Ethernet frames instead of IP
//! packets), so the stack can wrap a `Link` into a smoltcp device without copying.

use core::net::Ipv4Addr;

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// A link that receives and transmits whole Ethernet frames (no FCS).
pub trait Link {
    type Rx<'a>: RxFrame
    where
        Self: 'a;
    type Tx<'a>: TxFrame
    where
        Self: 'a;

    /// One received frame and, beside it, a transmit slot for an immediate reply.
    /// `None` when no frame is waiting.
    fn receive(&mut self) -> Option<(Self::Rx<'_>, Self::Tx<'_>)>;

    /// A transmit slot, or `None` when every TX frame is in flight.
    fn transmit(&mut self) -> Option<Self::Tx<'_>>;

    /// Largest IP packet the link carries (the interface MTU).
    fn mtu(&self) -> usize;

    /// Called once at the end of a stack poll ([`crate::Stack::poll`]): push every queued TX
    /// frame to the wire now (kick). Also where a link that batches its kicks learns that the
    /// program waits or went back to its event loop: what it sends next starts a new burst.
    fn flush(&mut self) {}

    /// Called once at the end of a poll that may leave frames for a later kick
    /// ([`crate::Stack::poll_batched`]: a send or receive call that completed at once, the
    /// program about to make the next): the link kicks now or holds them back by its own
    /// policy (libaccel's `kick`), knowing that a [`Link::flush`] comes before the program
    /// waits. `now` is the poll's time. The default pushes at once.
    fn flush_batched(&mut self, now: crate::Instant) {
        let _ = now;
        self.flush();
    }

    /// Whether sent frames wait for a kick that a batched flush held back (the caller makes
    /// sure a [`Link::flush`] comes in time). The default holds nothing back.
    fn tx_held(&mut self) -> bool {
        false
    }

    /// Whether nothing waits on the link: no received frame, nothing still to push. A stack
    /// with no work of its own skips a poll while its link is idle (a spinning wait polls
    /// millions of times a second). The default, never idle, is always correct.
    fn idle(&mut self) -> bool {
        false
    }
}

/// A received Ethernet frame.
pub trait RxFrame {
    /// Hands the frame's bytes to `f`; the frame returns to its pool afterwards.
    fn consume<R>(self, f: impl FnOnce(&[u8]) -> R) -> R;
}

/// A transmit slot.
pub trait TxFrame {
    /// Lets `f` fill a frame of exactly `len` bytes. `f` returns its result and whether the frame
    /// is to be sent (`true`) or given back unsent (`false`, e.g. no next hop yet).
    fn consume<R>(self, len: usize, f: impl FnOnce(&mut [u8]) -> (R, bool)) -> R;
}

/// What the stack learns about a next hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NextHop {
    /// Send to this Ethernet address.
    Mac(Mac),
    /// Not known yet; resolution was asked for. The stack holds the packet (bounded, like the
    /// kernel's unresolved queue) and asks again on its next polls.
    Pending,
    /// No route to this destination.
    Unreachable,
}

/// Resolves IPv4 destinations to the Ethernet address of their next hop (route + neighbour).
/// Implementations may ask the kernel to resolve a missing neighbour; they never block.
pub trait Resolver {
    fn next_hop(&mut self, dst: Ipv4Addr) -> NextHop;
}
