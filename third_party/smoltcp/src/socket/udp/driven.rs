//! Entry points for a stack that finds the socket of each datagram itself (by port) and
//! sends only what sockets with queued datagrams hold (accel, third_party/smoltcp/README.md).
//! They are the crate-private methods the interface uses, under public names.

use super::Socket;
use crate::iface::Context;
use crate::phy::PacketMeta;
use crate::wire::{IpRepr, UdpRepr};

impl<'a> Socket<'a> {
    /// Whether this socket takes the datagram (its port, and its address when bound to one).
    pub fn stack_accepts(&self, cx: &mut Context, ip_repr: &IpRepr, repr: &UdpRepr) -> bool {
        self.accepts(cx, ip_repr, repr)
    }

    /// Queues a datagram this socket accepts (dropped when the receive buffer is full).
    pub fn stack_process(
        &mut self,
        cx: &mut Context,
        meta: PacketMeta,
        ip_repr: &IpRepr,
        repr: &UdpRepr,
        payload: &[u8],
    ) {
        self.process(cx, meta, ip_repr, repr, payload)
    }

    /// Emits the oldest queued datagram through `emit`; an error from `emit` keeps it queued.
    pub fn stack_dispatch<F, E>(&mut self, cx: &mut Context, emit: F) -> Result<(), E>
    where
        F: FnOnce(&mut Context, PacketMeta, (IpRepr, UdpRepr, &[u8])) -> Result<(), E>,
    {
        self.dispatch(cx, emit)
    }
}
