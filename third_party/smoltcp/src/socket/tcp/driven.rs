//! Entry points for a stack that finds the socket of each packet itself (a 4-tuple hash, a
//! listener by port) and keeps each socket's next poll time in its own timer structure,
//! instead of `Interface::poll`'s walks of every socket (accel, third_party/smoltcp/README.md).
//! They are the crate-private methods the interface uses, under public names, plus what the
//! stack needs to keep TIME-WAIT itself.

use super::{Socket, State};
use crate::iface::Context;
use crate::phy::PacketMeta;
use crate::socket::PollAt;
use crate::time::Instant;
use crate::wire::{IpEndpoint, IpRepr, TcpRepr, TcpSeqNumber};

/// What a connection in TIME-WAIT needs to answer its peer once the socket is gone: its
/// endpoints, the next sequence number it would send and the next one it expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWaitState {
    pub local: IpEndpoint,
    pub remote: IpEndpoint,
    /// SND.NXT: the sequence number of an ACK sent now.
    pub seq: TcpSeqNumber,
    /// RCV.NXT: the peer's FIN included.
    pub ack: TcpSeqNumber,
    /// The receive window last advertised (already scaled).
    pub window: u16,
}

impl<'a> Socket<'a> {
    /// Whether this socket takes the segment (its 4-tuple, or its listen endpoint for a SYN).
    pub fn stack_accepts(&self, cx: &mut Context, ip_repr: &IpRepr, repr: &TcpRepr) -> bool {
        self.accepts(cx, ip_repr, repr)
    }

    /// Processes a segment this socket accepts; returns the segment to send at once in reply
    /// (an ACK, an RST), if any. Everything else it has to send goes out through
    /// [`Socket::stack_dispatch`].
    pub fn stack_process(
        &mut self,
        cx: &mut Context,
        ip_repr: &IpRepr,
        repr: &TcpRepr,
    ) -> Option<(IpRepr, TcpRepr<'static>)> {
        self.process(cx, ip_repr, repr)
    }

    /// Emits at most one segment the socket has to send (data, a flag, an ACK, a probe), through
    /// `emit`; an error from `emit` leaves the segment to the next call.
    pub fn stack_dispatch<F, E>(&mut self, cx: &mut Context, emit: F) -> Result<(), E>
    where
        F: FnOnce(&mut Context, PacketMeta, (IpRepr, TcpRepr)) -> Result<(), E>,
    {
        self.dispatch(cx, emit)
    }

    /// When the socket next needs [`Socket::stack_dispatch`]: `Some(t)` with `t` at or before
    /// now when it has something to send now (`Instant::ZERO` then), a later `t` for a timer,
    /// `None` when only a packet or a call can give it something to do.
    pub fn stack_poll_at(&self, cx: &mut Context) -> Option<Instant> {
        match self.poll_at(cx) {
            PollAt::Now => Some(Instant::ZERO),
            PollAt::Time(t) => Some(t),
            PollAt::Ingress => None,
        }
    }

    /// The RST that answers a segment no socket takes (as the interface sends it).
    pub fn stack_rst_reply(ip_repr: &IpRepr, repr: &TcpRepr) -> (IpRepr, TcpRepr<'static>) {
        Self::rst_reply(ip_repr, repr)
    }

    /// In TIME-WAIT, what answering the peer needs; `None` in any other state.
    pub fn stack_time_wait(&self) -> Option<TimeWaitState> {
        if self.state != State::TimeWait {
            return None;
        }
        let tuple = self.tuple?;
        Some(TimeWaitState {
            local: tuple.local,
            remote: tuple.remote,
            seq: self.remote_last_seq,
            ack: self.remote_seq_no + self.rx_buffer.len(),
            window: self.remote_last_win,
        })
    }
}
