//! Every received frame passes here: Ethernet is checked and stripped, the IP packet is parsed
//! and checked, and the segment or datagram goes to the one socket it belongs to, found without
//! looking at any other: a TCP segment by its 4-tuple (the connection), else by its 4-tuple in
//! TIME-WAIT, else (a SYN) by its port (the listener); a UDP datagram by its port. Per packet the
//! stack also decides what smoltcp cannot: a SYN to a listener whose backlog is full is dropped
//! silently instead of answered with an RST; a datagram to an unbound UDP port is dropped, not
//! answered with ICMP. A segment no socket takes is answered with an RST, as smoltcp would.
//! Other protocols (ICMP) go to smoltcp, which answers them itself.
//!
//! IPv4, TCP and UDP checksums are verified here, once, so that corrupted packets are counted
//! (`rx_drop_bad_checksum`); smoltcp's own RX verification for these is switched off to avoid
//! checksumming every packet twice (ICMP is still verified by smoltcp). On a software link a
//! TCP/UDP checksum field holding the pseudo-header partial sum is accepted (see `checksum`).

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::PacketMeta;
use smoltcp::socket::{tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    IpProtocol, IpRepr, Ipv4Packet, Ipv4Repr, TcpControl, TcpOption, TcpPacket, TcpRepr, UdpPacket,
    UdpRepr,
};

use crate::checksum;
use crate::device::{self, EthDrop, IngressDevice};
use crate::link::{Resolver, TxFrame};
use crate::sockets::Handle;
use crate::time_wait::Action;
use crate::Stack;

impl Stack {
    pub(crate) fn ingress<T: TxFrame, R: Resolver>(
        &mut self,
        now: Instant,
        frame: &[u8],
        tx: T,
        resolver: &mut R,
    ) {
        self.counters.rx_frames += 1;
        self.counters.rx_bytes += frame.len() as u64;
        let packet = match device::strip_ethernet(frame, &self.config.mac) {
            Ok(packet) => packet,
            Err(EthDrop::Malformed) => return self.counters.rx_drop_malformed += 1,
            Err(EthDrop::WrongMac) => return self.counters.rx_drop_wrong_mac += 1,
            Err(EthDrop::NotIpv4) => return self.counters.rx_drop_not_ipv4 += 1,
        };
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            return self.counters.rx_drop_malformed += 1;
        };
        if !ip.verify_checksum() {
            return self.counters.rx_drop_bad_checksum += 1;
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            // No reassembly (smoltcp would drop them too, without a trace).
            return self.counters.rx_drop_fragment += 1;
        }
        match ip.next_header() {
            IpProtocol::Tcp => self.tcp_ingress(now, &ip, tx, resolver),
            IpProtocol::Udp => self.udp_ingress(now, &ip),
            _ => self.smoltcp_ingress(now, packet, tx, resolver),
        }
    }

    /// Hands a packet of another protocol to smoltcp (it answers ICMP echo itself), with no
    /// socket to search.
    fn smoltcp_ingress<T: TxFrame, R: Resolver>(
        &mut self,
        now: Instant,
        packet: &[u8],
        tx: T,
        resolver: &mut R,
    ) {
        let mut dev = IngressDevice {
            packet: Some((packet, tx)),
            path: device::TxPath {
                resolver,
                counters: &mut self.counters,
                unresolved: &mut self.unresolved,
                mac: self.config.mac,
                now,
            },
            caps: &self.caps,
        };
        self.iface
            .poll_ingress_single(now, &mut dev, &mut self.no_sockets);
    }

    /// The IP header as smoltcp represents it; `None` (counted) unless it is for us from a
    /// unicast source.
    fn ip_repr(&mut self, ip: &Ipv4Packet<&[u8]>) -> Option<Ipv4Repr> {
        let Ok(repr) = Ipv4Repr::parse(ip, &self.caps.checksum) else {
            self.counters.rx_drop_malformed += 1;
            return None;
        };
        let src = repr.src_addr;
        if src.is_broadcast() || src.is_multicast() || src.is_unspecified() {
            self.counters.rx_drop_malformed += 1;
            return None;
        }
        Some(repr)
    }

    fn tcp_ingress<T: TxFrame, R: Resolver>(
        &mut self,
        now: Instant,
        ip: &Ipv4Packet<&[u8]>,
        tx: T,
        resolver: &mut R,
    ) {
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let Ok(packet) = TcpPacket::new_checked(ip.payload()) else {
            return self.counters.rx_drop_malformed += 1;
        };
        let len = ip.payload().len();
        if !self.l4_checksum(src, dst, IpProtocol::Tcp, len, packet.checksum(), || {
            packet.verify_checksum(&src.into(), &dst.into())
        }) {
            return;
        }
        if !tcp_parses(&packet) {
            return self.counters.rx_drop_bad_tcp += 1;
        }
        if packet.rst() {
            self.counters.tcp_rx_rst += 1;
        }
        if dst != self.config.addr {
            // Not ours (smoltcp drops it too): a flow filter steers only our address here.
            return self.counters.rx_drop_malformed += 1;
        }
        let Some(ipv4) = self.ip_repr(ip) else {
            return;
        };
        let ip_repr = IpRepr::Ipv4(ipv4);
        let Ok(seg) = TcpRepr::parse(&packet, &src.into(), &dst.into(), &self.caps.checksum) else {
            return self.counters.rx_drop_bad_tcp += 1;
        };
        let key = (seg.dst_port, SocketAddrV4::new(src, seg.src_port));
        let syn = seg.control == TcpControl::Syn && seg.ack_number.is_none();
        // The connection, by its 4-tuple.
        if let Some(h) = self.sockets.find(&key) {
            let socket = self.sockets.get::<tcp::Socket>(h);
            if socket.remote_endpoint() == Some(crate::endpoint(key.1)) {
                if syn && socket.state() == tcp::State::SynReceived {
                    // A retransmitted SYN for a connection already queued: its SYN-ACK is on
                    // its own retransmit timer.
                    return self.counters.syn_dropped_duplicate += 1;
                }
                if self.accepts_tcp(now, h, &ip_repr, &seg) {
                    return self.deliver_tcp(now, h, &ip_repr, &seg, tx, resolver);
                }
                // It did not take it (closed, or left listening after a reset): not its any
                // more.
            }
            if self.sockets.contains(h) {
                self.sockets.clear_key(h);
            }
            return self.tcp_unclaimed(now, key, &ip_repr, &seg, tx, resolver);
        }
        self.tcp_unclaimed(now, key, &ip_repr, &seg, tx, resolver)
    }

    /// A segment no connection holds: TIME-WAIT, a listener (SYN), or an RST.
    fn tcp_unclaimed<T: TxFrame, R: Resolver>(
        &mut self,
        now: Instant,
        key: crate::sockets::Key,
        ip_repr: &IpRepr,
        seg: &TcpRepr,
        tx: T,
        resolver: &mut R,
    ) {
        match self.time_wait.segment(&key, ip_repr, seg, now) {
            Some(Action::Ack(ip, tcp)) => {
                self.counters.tcp_time_wait_acks += 1;
                return self.send_tcp(now, tx, resolver, &ip, &tcp);
            }
            Some(Action::Drop) => return,
            Some(Action::Reopen) => self.counters.tcp_time_wait_reopened += 1,
            None => {}
        }
        let syn = seg.control == TcpControl::Syn && seg.ack_number.is_none();
        if syn {
            if let Some(&listener) = self.listeners.get(&seg.dst_port) {
                return self.tcp_syn(now, listener, ip_repr, seg, tx, resolver);
            }
        }
        if seg.control != TcpControl::Rst {
            let (ip, tcp) = tcp::Socket::stack_rst_reply(ip_repr, seg);
            self.send_tcp(now, tx, resolver, &ip, &tcp);
        }
    }

    /// A SYN for a listening port: to the listener's idle socket, which becomes the
    /// connection (filed by its 4-tuple, queued for accept), or dropped when the backlog is
    /// full (the client retransmits, as with the kernel).
    fn tcp_syn<T: TxFrame, R: Resolver>(
        &mut self,
        now: Instant,
        listener: u64,
        ip_repr: &IpRepr,
        seg: &TcpRepr,
        tx: T,
        resolver: &mut R,
    ) {
        match self.prepare_listener(listener) {
            listen::Admit::Ready => {}
            listen::Admit::Full => return self.counters.syn_dropped_backlog_full += 1,
            listen::Admit::NoMemory => return self.counters.syn_dropped_no_memory += 1,
        }
        let Some(crate::Entry::Listener(l)) = self.table.get(&listener) else {
            return;
        };
        let Some(idle) = l.idle else {
            return;
        };
        if self.accepts_tcp(now, idle, ip_repr, seg) {
            self.deliver_tcp(now, idle, ip_repr, seg, tx, resolver);
            self.file_conn(idle);
        }
        self.after_syn(listener);
    }

    /// Whether TCP socket `h` takes segment `seg`.
    fn accepts_tcp(&mut self, now: Instant, h: Handle, ip_repr: &IpRepr, seg: &TcpRepr) -> bool {
        let cx = self.iface.context_at(now);
        self.sockets
            .get::<tcp::Socket>(h)
            .stack_accepts(cx, ip_repr, seg)
    }

    /// Gives segment `seg` to TCP socket `h` alone (it accepts it), sends its immediate reply
    /// (an ACK, an RST) in `tx`, and settles it (queued if it has more to send, its timer set,
    /// reaped if done).
    fn deliver_tcp<T: TxFrame, R: Resolver>(
        &mut self,
        now: Instant,
        h: Handle,
        ip_repr: &IpRepr,
        seg: &TcpRepr,
        tx: T,
        resolver: &mut R,
    ) {
        #[cfg(test)]
        {
            self.sockets.visits += 1;
        }
        let cx = self.iface.context_at(now);
        let socket = self.sockets.get_mut::<tcp::Socket>(h);
        if let Some((ip, tcp)) = socket.stack_process(cx, ip_repr, seg) {
            self.send_tcp(now, tx, resolver, &ip, &tcp);
        }
        self.settle(h, now);
    }

    /// Sends one TCP segment in the frame `tx` (the reply slot of the frame being received).
    fn send_tcp<T: TxFrame, R: Resolver>(
        &mut self,
        now: Instant,
        tx: T,
        resolver: &mut R,
        ip: &IpRepr,
        tcp: &TcpRepr,
    ) {
        let path = device::TxPath {
            resolver,
            counters: &mut self.counters,
            unresolved: &mut self.unresolved,
            mac: self.config.mac,
            now,
        };
        let caps = &self.caps.checksum;
        device::send(tx, path, ip.buffer_len(), |buf| {
            device::emit_tcp(ip, tcp, caps, buf)
        });
    }

    fn udp_ingress(&mut self, now: Instant, ip: &Ipv4Packet<&[u8]>) {
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let Ok(packet) = UdpPacket::new_checked(ip.payload()) else {
            return self.counters.rx_drop_malformed += 1;
        };
        let len = usize::from(packet.len());
        if !self.l4_checksum(src, dst, IpProtocol::Udp, len, packet.checksum(), || {
            packet.verify_checksum(&src.into(), &dst.into())
        }) {
            return;
        }
        let Some(&id) = self.udp_ports.get(&packet.dst_port()) else {
            return self.counters.udp_rx_drop_no_socket += 1;
        };
        let Some(crate::Entry::Udp(u)) = self.table.get(&id) else {
            return self.counters.udp_rx_drop_no_socket += 1;
        };
        let h = u.handle;
        let Some(ipv4) = self.ip_repr(ip) else {
            return;
        };
        let ip_repr = IpRepr::Ipv4(ipv4);
        let Ok(repr) = UdpRepr::parse(&packet, &src.into(), &dst.into(), &self.caps.checksum)
        else {
            return self.counters.rx_drop_malformed += 1;
        };
        #[cfg(test)]
        {
            self.sockets.visits += 1;
        }
        let cx = self.iface.context_at(now);
        let socket = self.sockets.get_mut::<udp::Socket>(h);
        if !socket.stack_accepts(cx, &ip_repr, &repr) {
            // Bound to an address this datagram is not for.
            return self.counters.udp_rx_drop_no_socket += 1;
        }
        self.counters.udp_rx_datagrams += 1;
        socket.stack_process(cx, PacketMeta::default(), &ip_repr, &repr, packet.payload());
        self.changes.note(id);
    }

    /// Whether a TCP/UDP packet's checksum lets it in (counting partial and bad ones).
    fn l4_checksum(
        &mut self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: IpProtocol,
        len: usize,
        field: u16,
        complete: impl FnOnce() -> bool,
    ) -> bool {
        let allowed = self.config.partial_checksums;
        match checksum::verdict(allowed, src, dst, proto, len, field, complete) {
            checksum::Verdict::Complete => true,
            checksum::Verdict::Partial => {
                self.counters.rx_partial_checksum += 1;
                true
            }
            checksum::Verdict::Bad => {
                self.counters.rx_drop_bad_checksum += 1;
                false
            }
        }
    }
}

use crate::listen;

/// Whether smoltcp's TCP parser will take the segment (it drops what it cannot parse without
/// a trace, so the stack checks first and counts): nonzero ports, at most one of SYN, FIN and
/// RST, options whose lengths fit.
fn tcp_parses(tcp: &TcpPacket<&[u8]>) -> bool {
    if tcp.src_port() == 0 || tcp.dst_port() == 0 {
        return false;
    }
    if u8::from(tcp.syn()) + u8::from(tcp.fin()) + u8::from(tcp.rst()) > 1 {
        return false;
    }
    let mut options = tcp.options();
    while !options.is_empty() {
        match TcpOption::parse(options) {
            Ok((_, TcpOption::EndOfList)) => break,
            Ok((rest, _)) => options = rest,
            Err(_) => return false,
        }
    }
    true
}
