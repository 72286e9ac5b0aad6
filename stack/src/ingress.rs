//! Every received frame passes here before smoltcp sees it: Ethernet is checked and stripped,
//! and the IP packet is pre-parsed so the stack can decide per packet what smoltcp cannot
//! (a SYN to a listener whose backlog is full is dropped silently instead of answered with an
//! RST; a datagram to an unbound UDP port is dropped, not answered with ICMP).
//!
//! IPv4, TCP and UDP checksums are verified here, once, so that corrupted packets are counted
//! (`rx_drop_bad_checksum`); smoltcp's own RX verification for these is switched off to avoid
//! checksumming every packet twice (ICMP is still verified by smoltcp). On a software link a
//! TCP/UDP checksum field holding the pseudo-header partial sum is accepted (see `checksum`).

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::time::Instant;
use smoltcp::wire::{IpProtocol, Ipv4Packet, TcpOption, TcpPacket, UdpPacket};

use crate::checksum;
use crate::device::{self, EthDrop, IngressDevice};
use crate::link::{Resolver, TxFrame};
use crate::Stack;

/// What to do with one received IP packet.
enum Verdict {
    Drop,
    /// To smoltcp, which finds the socket (walking all of them); `tcp`: it may leave TCP
    /// output anywhere (a listener's connection, a closing socket), so the poll's egress is
    /// a full one.
    Deliver {
        tcp: bool,
    },
    /// To this application connection alone (found by its addresses in `conns`).
    DeliverTo(u64),
    /// A SYN to this listener: deliver, then move the socket it woke into the accept queue.
    DeliverSyn(u64),
}

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
        let verdict = self.classify(packet);
        match verdict {
            Verdict::Drop => return,
            Verdict::DeliverTo(id) => {
                if let Some(alone) = self.swap_alone(id) {
                    self.deliver(now, packet, tx, resolver, true);
                    // Its timers may have moved (a delayed ACK armed, a retransmission
                    // cancelled); the stack's next deadline can only come earlier.
                    if let Some(until) = self.idle_until {
                        let at = self.iface.poll_at(now, &self.scratch);
                        self.idle_until = Some(crate::earliest(until, at));
                    }
                    self.swap(alone);
                    // What it has to send (an ACK, data the peer's window now lets out)
                    // goes in this poll's egress.
                    self.touch_alone(alone);
                    return;
                }
                // Not in the table any more (cannot happen: `conns` follows it).
                self.touch_all();
            }
            Verdict::Deliver { tcp: true } | Verdict::DeliverSyn(_) => self.touch_all(),
            Verdict::Deliver { tcp: false } => {}
        }
        self.deliver(now, packet, tx, resolver, false);
        if let Verdict::DeliverSyn(listener) = verdict {
            self.after_syn(listener);
        }
    }

    /// Hands one IP packet to smoltcp, with the socket swapped in alone (`alone`) or with
    /// every socket.
    fn deliver<T: TxFrame, R: Resolver>(
        &mut self,
        now: Instant,
        packet: &[u8],
        tx: T,
        resolver: &mut R,
        alone: bool,
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
        let sockets = if alone {
            &mut self.scratch
        } else {
            &mut self.sockets
        };
        self.iface.poll_ingress_single(now, &mut dev, sockets);
    }

    fn classify(&mut self, packet: &[u8]) -> Verdict {
        let Ok(ip) = Ipv4Packet::new_checked(packet) else {
            self.counters.rx_drop_malformed += 1;
            return Verdict::Drop;
        };
        if !ip.verify_checksum() {
            self.counters.rx_drop_bad_checksum += 1;
            return Verdict::Drop;
        }
        if ip.more_frags() || ip.frag_offset() != 0 {
            // No reassembly (smoltcp would drop them too, without a trace).
            self.counters.rx_drop_fragment += 1;
            return Verdict::Drop;
        }
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        match ip.next_header() {
            IpProtocol::Tcp => {
                let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
                    self.counters.rx_drop_malformed += 1;
                    return Verdict::Drop;
                };
                let len = ip.payload().len();
                if !self.l4_checksum(src, dst, IpProtocol::Tcp, len, tcp.checksum(), || {
                    tcp.verify_checksum(&src.into(), &dst.into())
                }) {
                    return Verdict::Drop;
                }
                if !tcp_parses(&tcp) {
                    self.counters.rx_drop_bad_tcp += 1;
                    return Verdict::Drop;
                }
                if tcp.rst() {
                    self.counters.tcp_rx_rst += 1;
                }
                if tcp.syn() && !tcp.ack() && !tcp.rst() && dst == self.config.addr {
                    if let Some(&listener) = self.listeners.get(&tcp.dst_port()) {
                        let remote = SocketAddrV4::new(src, tcp.src_port());
                        return self.admit_syn(listener, remote);
                    }
                }
                if dst == self.config.addr {
                    let remote = SocketAddrV4::new(src, tcp.src_port());
                    if let Some(&id) = self.conns.get(&(tcp.dst_port(), remote)) {
                        return Verdict::DeliverTo(id);
                    }
                }
                Verdict::Deliver { tcp: true }
            }
            IpProtocol::Udp => {
                let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
                    self.counters.rx_drop_malformed += 1;
                    return Verdict::Drop;
                };
                let len = usize::from(udp.len());
                if !self.l4_checksum(src, dst, IpProtocol::Udp, len, udp.checksum(), || {
                    udp.verify_checksum(&src.into(), &dst.into())
                }) {
                    return Verdict::Drop;
                }
                if self.udp_ports.contains_key(&udp.dst_port()) {
                    self.counters.udp_rx_datagrams += 1;
                    Verdict::Deliver { tcp: false }
                } else {
                    self.counters.udp_rx_drop_no_socket += 1;
                    Verdict::Drop
                }
            }
            _ => Verdict::Deliver { tcp: false },
        }
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

    /// A SYN for a listening port: make sure a listening socket is there to take it, or drop
    /// it when the backlog is full (the client retransmits, as with the kernel).
    fn admit_syn(&mut self, listener: u64, remote: SocketAddrV4) -> Verdict {
        match self.prepare_listener(listener, remote) {
            listen::Admit::Ready => Verdict::DeliverSyn(listener),
            listen::Admit::Duplicate => {
                self.counters.syn_dropped_duplicate += 1;
                Verdict::Drop
            }
            listen::Admit::Full => {
                self.counters.syn_dropped_backlog_full += 1;
                Verdict::Drop
            }
            listen::Admit::NoMemory => {
                self.counters.syn_dropped_no_memory += 1;
                Verdict::Drop
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
