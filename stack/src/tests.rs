//! Two stacks back to back over the in-memory wire (see `testing`); explicit time only.

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::socket::tcp::State;
use smoltcp::time::Duration;

use crate::testing::{Pair, IP_A, IP_B, MAC_A, MAC_B};
use crate::{Error, SocketId};

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

const SECOND: Duration = Duration::from_secs(1);

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Listens on B:port, connects from A:cport, accepts. Returns (client, server, listener).
#[track_caller]
fn connected(p: &mut Pair, port: u16, cport: u16) -> (SocketId, SocketId, SocketId) {
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, port), 16)
            .unwrap();
    let (c, s) = connect_to(p, l, port, cport);
    (c, s, l)
}

#[track_caller]
fn connect_to(p: &mut Pair, l: SocketId, port: u16, cport: u16) -> (SocketId, SocketId) {
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, cport), sa(IP_B, port))
            .unwrap();
    let mut accepted = None;
    assert!(p.run_until(secs(10), |p| {
        if accepted.is_none() {
            accepted = p.b.stack.tcp_accept(l).ok();
        }
        accepted.is_some() && p.a.stack.readiness(c).writable
    }));
    let (s, remote) = accepted.unwrap();
    assert_eq!(remote, sa(IP_A, cport));
    (c, s)
}

fn fnv(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    h
}

#[test]
fn tx_frames_carry_our_ethernet_header() {
    let mut p = Pair::new();
    let u = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    p.a.stack.udp_send_to(u, b"hello", sa(IP_B, 6000)).unwrap();
    p.a.poll(p.now);
    let frames = p.a.link.take_sent();
    assert_eq!(frames.len(), 1);
    let f = &frames[0];
    assert_eq!(&f[0..6], &MAC_B);
    assert_eq!(&f[6..12], &MAC_A);
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    assert_eq!(f[14] >> 4, 4);
    assert_eq!(&f[30..34], &IP_B.octets());
    assert_eq!(f.len(), 14 + 20 + 8 + 5);
    assert_eq!(p.a.stack.counters().tx_frames, 1);
    assert_eq!(p.a.stack.counters().tx_bytes, f.len() as u64);
    assert_eq!(p.a.link.flushes, 1);
}

#[test]
fn rx_wrong_mac_non_ipv4_and_runt_frames_are_dropped_and_counted() {
    let mut p = Pair::new();
    let ub = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    p.a.stack.udp_send_to(ua, b"x", sa(IP_B, 6000)).unwrap();
    p.a.poll(p.now);
    let good = p.a.link.take_sent().pop().unwrap();
    let mut wrong_mac = good.clone();
    wrong_mac[5] ^= 1;
    let mut arp = good.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    let mut broadcast = good.clone();
    broadcast[0..6].copy_from_slice(&[0xff; 6]);
    for f in [wrong_mac, arp, vec![0u8; 10], good, broadcast] {
        p.b.link.inject(f);
    }
    p.b.poll(p.now);
    let c = p.b.stack.counters();
    assert_eq!(c.rx_frames, 5);
    assert_eq!(c.rx_drop_wrong_mac, 1);
    assert_eq!(c.rx_drop_not_ipv4, 1);
    assert_eq!(c.rx_drop_malformed, 1);
    let mut buf = [0u8; 8];
    assert_eq!(
        p.b.stack.udp_recv_from(ub, &mut buf),
        Ok((1, sa(IP_A, 5000)))
    );
    assert_eq!(
        p.b.stack.udp_recv_from(ub, &mut buf),
        Ok((1, sa(IP_A, 5000)))
    );
    assert_eq!(
        p.b.stack.udp_recv_from(ub, &mut buf),
        Err(Error::WouldBlock)
    );
}

/// Fixes the IPv4 and TCP/UDP checksums of a frame the test edited.
fn refill_checksums(f: &mut [u8]) {
    use smoltcp::wire::{IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.fill_checksum();
    let (src, dst, proto) = (ip.src_addr(), ip.dst_addr(), ip.next_header());
    let l4 = ip.payload_mut();
    match proto {
        IpProtocol::Tcp => TcpPacket::new_unchecked(l4).fill_checksum(&src.into(), &dst.into()),
        IpProtocol::Udp => UdpPacket::new_unchecked(l4).fill_checksum(&src.into(), &dst.into()),
        _ => {}
    }
}

#[test]
fn rx_fragments_and_unparsable_tcp_are_dropped_and_counted() {
    let mut p = Pair::new();
    p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    let (c, _s, _l) = connected(&mut p, 80, 40000);
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    p.a.stack.udp_send_to(ua, b"x", sa(IP_B, 6000)).unwrap();
    p.a.stack.tcp_send(c, b"abc").unwrap();
    p.a.poll(p.now);
    let sent = p.a.link.take_sent();
    let udp = sent.iter().find(|f| f[23] == 17).unwrap().clone();
    let tcp = sent.iter().find(|f| f[23] == 6).unwrap().clone();
    let mut fragment = udp.clone();
    fragment[20] |= 0x20; // more fragments
    refill_checksums(&mut fragment);
    let mut syn_fin = tcp.clone();
    syn_fin[47] |= 0x03;
    refill_checksums(&mut syn_fin);
    let mut port_zero = tcp.clone();
    port_zero[34..36].copy_from_slice(&[0, 0]);
    refill_checksums(&mut port_zero);
    // Data offset 6: one option word, an MSS option claiming 40 bytes.
    let mut options = tcp[..54].to_vec();
    options[46] = 0x60 | (options[46] & 0x0f);
    options.extend_from_slice(&[2, 40, 0x05, 0xb4]);
    options.extend_from_slice(&tcp[54..]);
    let total = (options.len() - 14) as u16;
    options[16..18].copy_from_slice(&total.to_be_bytes());
    refill_checksums(&mut options);
    let before = p.b.stack.counters().clone();
    for f in [fragment, syn_fin, port_zero, options] {
        p.b.link.inject(f);
    }
    p.b.poll(p.now);
    let c = p.b.stack.counters();
    assert_eq!(c.rx_frames, before.rx_frames + 4);
    assert_eq!(c.rx_drop_fragment, before.rx_drop_fragment + 1);
    assert_eq!(c.rx_drop_bad_tcp, before.rx_drop_bad_tcp + 3);
    assert_eq!(c.rx_drop_bad_checksum, before.rx_drop_bad_checksum);
    assert_eq!(c.udp_rx_datagrams, before.udp_rx_datagrams);
}

#[test]
fn tcp_echo_one_megabyte_over_lossy_corrupting_link() {
    let mut p = Pair::new();
    p.a.link.faults.drop_every = Some(41);
    p.b.link.faults.drop_every = Some(29);
    p.b.link.faults.corrupt_every = Some(53);
    let (c, s, _) = connected(&mut p, 80, 40000);
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut sent, mut echoed, mut got) = (0usize, Vec::new(), Vec::new());
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 65536];
    assert!(p.run_until(secs(600), |p| {
        if sent < data.len() {
            if let Ok(n) = p.a.stack.tcp_send(c, &data[sent..]) {
                sent += n;
            }
        }
        // Server echoes what it reads, keeping what the send buffer did not take.
        if carry.is_empty() {
            if let Ok(n) = p.b.stack.tcp_recv(s, &mut buf) {
                carry.extend_from_slice(&buf[..n]);
            }
        }
        if !carry.is_empty() {
            if let Ok(n) = p.b.stack.tcp_send(s, &carry) {
                echoed.extend_from_slice(&carry[..n]);
                carry.drain(..n);
            }
        }
        while let Ok(n) = p.a.stack.tcp_recv(c, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.len() == data.len()
    }));
    assert_eq!(
        fnv(&got, 0xcbf29ce484222325),
        fnv(&data, 0xcbf29ce484222325)
    );
    assert!(p.a.link.faults.dropped > 0 && p.b.link.faults.dropped > 0);
    assert!(p.b.link.faults.corrupted > 0);
    assert_eq!(
        p.b.stack.counters().rx_drop_bad_checksum,
        p.b.link.faults.corrupted
    );
}

#[test]
fn backlog_five_clients_connect_before_any_accept() {
    let mut p = Pair::new();
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 8)
            .unwrap();
    let clients: Vec<_> = (0..5)
        .map(|i| {
            p.a.stack
                .tcp_connect(sa(IP_A, 40000 + i), sa(IP_B, 80))
                .unwrap()
        })
        .collect();
    assert!(p.run_until(secs(5), |p| clients
        .iter()
        .all(|c| p.a.stack.tcp_state(*c) == Some(State::Established))));
    assert!(p.b.stack.readiness(l).readable);
    for i in 0..5 {
        let (s, remote) = p.b.stack.tcp_accept(l).unwrap();
        assert_eq!(remote, sa(IP_A, 40000 + i));
        assert_eq!(p.b.stack.tcp_state(s), Some(State::Established));
    }
    assert_eq!(p.b.stack.tcp_accept(l), Err(Error::WouldBlock));
    assert!(!p.b.stack.readiness(l).readable);
    assert_eq!(p.b.stack.counters().tcp_accepted, 5);
    assert_eq!(p.a.stack.counters().tcp_connected, 5);
}

#[test]
fn backlog_full_drops_syn_and_client_gets_in_after_accept() {
    let mut p = Pair::new();
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 2)
            .unwrap();
    let c: Vec<_> = (0..3)
        .map(|i| {
            p.a.stack
                .tcp_connect(sa(IP_A, 40000 + i), sa(IP_B, 80))
                .unwrap()
        })
        .collect();
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.tcp_state(c[0]), Some(State::Established));
    assert_eq!(p.a.stack.tcp_state(c[1]), Some(State::Established));
    // The third SYN was dropped silently: no RST, the client is still trying.
    assert_eq!(p.a.stack.tcp_state(c[2]), Some(State::SynSent));
    assert_eq!(p.b.stack.counters().syn_dropped_backlog_full, 1);
    assert_eq!(p.a.stack.counters().tcp_rx_rst, 0);
    assert!(p.a.stack.poll_at(p.now).is_some());
    let (first, _) = p.b.stack.tcp_accept(l).unwrap();
    assert!(p.run_until(secs(10), |p| p.a.stack.tcp_state(c[2])
        == Some(State::Established)));
    let (_, r1) = p.b.stack.tcp_accept(l).unwrap();
    let (_, r2) = p.b.stack.tcp_accept(l).unwrap();
    assert_eq!((r1, r2), (sa(IP_A, 40001), sa(IP_A, 40002)));
    assert!(p.b.stack.tcp_state(first).is_some());
}

#[test]
fn close_exchanges_fin_and_both_sockets_are_reaped() {
    let mut p = Pair::new();
    let (c, s, l) = connected(&mut p, 80, 40000);
    let base_a = 0;
    let base_b = 1; // the listener's idle socket
    p.a.stack.close(c);
    assert!(p.run_until(secs(5), |p| p.b.stack.readiness(s).hangup));
    let mut buf = [0u8; 4];
    assert_eq!(p.b.stack.tcp_recv(s, &mut buf), Ok(0));
    p.b.stack.close(s);
    assert!(p.run_until(secs(30), |p| p.a.stack.socket_count() == base_a
        && p.b.stack.socket_count() == base_b));
    assert_eq!(p.a.stack.counters().tcp_closed, 1);
    assert_eq!(p.b.stack.counters().tcp_closed, 1);
    assert_eq!(p.a.stack.tcp_send(c, b"x"), Err(Error::InvalidSocket));
    assert_eq!(p.b.stack.tcp_recv(s, &mut buf), Err(Error::InvalidSocket));
    assert_eq!(
        p.a.stack.counters().tcp_rx_rst + p.b.stack.counters().tcp_rx_rst,
        0
    );
    p.b.stack.close(l);
    assert_eq!(p.b.stack.socket_count(), 0);
}

#[test]
fn close_with_unread_data_resets_and_peer_sees_connection_reset() {
    let mut p = Pair::new();
    let (c, s, _) = connected(&mut p, 80, 40000);
    p.a.stack.tcp_send(c, b"unread").unwrap();
    assert!(p.run_until(SECOND, |p| p.b.stack.tcp_recv_queue(s) == Some(6)));
    p.b.stack.close(s);
    assert!(p.run_until(secs(5), |p| p.a.stack.readiness(c).error));
    let r = p.a.stack.readiness(c);
    assert!(r.hangup && r.readable);
    let mut buf = [0u8; 8];
    assert_eq!(p.a.stack.tcp_recv(c, &mut buf), Err(Error::ConnectionReset));
    assert_eq!(p.a.stack.tcp_send(c, b"x"), Err(Error::BrokenPipe));
    assert_eq!(p.a.stack.tcp_recv(c, &mut buf), Ok(0));
    assert_eq!(p.a.stack.counters().tcp_rx_rst, 1);
}

#[test]
fn connect_to_port_without_listener_is_refused() {
    let mut p = Pair::new();
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, 40000), sa(IP_B, 81))
            .unwrap();
    assert!(p.run_until(secs(5), |p| p.a.stack.readiness(c).error));
    assert!(p.a.stack.readiness(c).writable);
    assert_eq!(p.a.stack.take_error(c), Ok(Some(Error::ConnectionRefused)));
    assert_eq!(p.a.stack.take_error(c), Ok(None));
    assert_eq!(p.a.stack.counters().tcp_reset, 1);
    assert_eq!(p.a.stack.counters().tcp_connected, 0);
    let c2 =
        p.a.stack
            .tcp_connect(sa(IP_A, 40001), sa(IP_B, 81))
            .unwrap();
    assert!(p.run_until(secs(5), |p| p.a.stack.readiness(c2).error));
    let mut buf = [0u8; 1];
    assert_eq!(
        p.a.stack.tcp_recv(c2, &mut buf),
        Err(Error::ConnectionRefused)
    );
}

#[test]
fn thousand_connect_close_cycles_keep_socket_count_flat() {
    let mut p = Pair::with_config(|c| {
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
    });
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 16)
            .unwrap();
    let mut peak = (0, 0);
    for i in 0..1000u16 {
        let (c, s) = connect_to(&mut p, l, 80, 20000 + i);
        p.a.stack.tcp_send(c, b"ping").unwrap();
        let mut buf = [0u8; 8];
        assert!(p.run_until(SECOND, |p| p.b.stack.tcp_recv(s, &mut buf) == Ok(4)));
        p.a.stack.close(c);
        assert!(p.run_until(SECOND, |p| p.b.stack.readiness(s).hangup));
        p.b.stack.close(s);
        p.settle_and_advance(Duration::from_millis(100));
        peak.0 = peak.0.max(p.a.stack.socket_count());
        peak.1 = peak.1.max(p.b.stack.socket_count());
    }
    // TIME-WAIT (10 s in smoltcp) on the active closer bounds A at ~100 sockets here.
    assert!(peak.0 <= 120 && peak.1 <= 4, "peak {peak:?}");
    p.settle_and_advance(Duration::from_secs(11));
    p.settle_and_advance(Duration::from_secs(1));
    assert_eq!(p.a.stack.socket_count(), 0);
    assert_eq!(p.b.stack.socket_count(), 1);
    assert_eq!(p.a.stack.open_ids(), 0);
    assert_eq!(p.b.stack.open_ids(), 1);
    assert_eq!(p.b.stack.counters().tcp_accepted, 1000);
    assert_eq!(p.a.stack.counters().tcp_closed, 1000);
}

#[test]
fn udp_both_ways_truncation_and_unbound_port() {
    let mut p = Pair::new();
    let ua = p.a.stack.udp_bind(sa(Ipv4Addr::UNSPECIFIED, 5000)).unwrap();
    let ub = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    assert_eq!(p.b.stack.udp_bind(sa(IP_B, 6000)), Err(Error::AddrInUse));
    p.a.stack
        .udp_send_to(ua, b"from a", sa(IP_B, 6000))
        .unwrap();
    p.b.stack
        .udp_send_to(ub, b"from b, longer", sa(IP_A, 5000))
        .unwrap();
    p.a.stack
        .udp_send_to(ua, b"nobody", sa(IP_B, 7000))
        .unwrap();
    p.settle_and_advance(Duration::from_millis(0));
    assert!(p.b.stack.readiness(ub).readable);
    let mut buf = [0u8; 64];
    assert_eq!(
        p.b.stack.udp_recv_from(ub, &mut buf),
        Ok((6, sa(IP_A, 5000)))
    );
    assert_eq!(&buf[..6], b"from a");
    let mut small = [0u8; 6];
    assert_eq!(
        p.a.stack.udp_recv_from(ua, &mut small),
        Ok((6, sa(IP_B, 6000)))
    );
    assert_eq!(&small, b"from b");
    assert_eq!(
        p.a.stack.udp_recv_from(ua, &mut buf),
        Err(Error::WouldBlock)
    );
    assert_eq!(p.b.stack.counters().udp_rx_drop_no_socket, 1);
    assert_eq!(p.b.stack.counters().udp_rx_datagrams, 1);
    // No ICMP port-unreachable went back.
    assert_eq!(p.a.stack.counters().rx_frames, 1);
    let big = vec![0u8; 1473];
    assert_eq!(
        p.a.stack.udp_send_to(ua, &big, sa(IP_B, 6000)),
        Err(Error::MessageTooLong)
    );
    assert_eq!(
        p.a.stack.udp_send_to(ua, &big[..1472], sa(IP_B, 6000)),
        Ok(1472)
    );
    p.a.stack.close(ua);
    assert_eq!(
        p.a.stack.udp_send_to(ua, b"x", sa(IP_B, 6000)),
        Err(Error::InvalidSocket)
    );
}

#[test]
fn pending_next_hop_holds_the_syn_then_sends_it() {
    let mut p = Pair::new();
    p.a.resolver.pending = true;
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 4)
            .unwrap();
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, 40000), sa(IP_B, 80))
            .unwrap();
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.counters().tx_held_no_neighbour, 1);
    assert_eq!(p.a.stack.counters().tx_frames, 0);
    assert_eq!(p.a.stack.tcp_state(c), Some(State::SynSent));
    // Held packets make the stack look again soon, not at the next retransmission.
    let at = p.a.stack.poll_at(p.now).unwrap();
    assert!(at <= p.now + Duration::from_millis(1), "{at}");
    p.a.resolver.pending = false;
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.tcp_state(c), Some(State::Established));
    assert_eq!(p.a.stack.counters().tx_drop_no_neighbour, 0);
    assert!(p.b.stack.tcp_accept(l).is_ok());
}

/// Regression: the first datagram to a neighbour the kernel had not resolved yet was dropped,
/// and sockperf's UDP ping-pong (one request, then wait) waited for ever. The kernel queues
/// such packets until the neighbour answers; so do we, in order.
#[test]
fn first_datagrams_to_an_unresolved_neighbour_are_held_not_lost() {
    let mut p = Pair::new();
    p.a.resolver.pending = true;
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    let ub = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    for i in 0..10u8 {
        p.a.stack
            .udp_send_to(ua, &[i; 100], sa(IP_B, 6000))
            .unwrap();
    }
    p.settle_and_advance(Duration::from_millis(500));
    assert_eq!(p.a.stack.counters().tx_held_no_neighbour, 10);
    assert!(!p.b.stack.readiness(ub).readable);
    p.a.resolver.pending = false;
    // A datagram sent now must not overtake the held ones.
    p.a.stack
        .udp_send_to(ua, &[10; 100], sa(IP_B, 6000))
        .unwrap();
    p.settle_and_advance(Duration::from_millis(0));
    let mut buf = [0u8; 200];
    for i in 0..11u8 {
        assert_eq!(
            p.b.stack.udp_recv_from(ub, &mut buf),
            Ok((100, sa(IP_A, 5000)))
        );
        assert_eq!(buf[..100], [i; 100], "datagram {i} out of order");
    }
    assert_eq!(p.a.stack.counters().tx_drop_no_neighbour, 0);
    assert_eq!(p.a.stack.poll_at(p.now), None);
}

#[test]
fn held_packets_expire_after_three_seconds_and_the_queue_is_bounded() {
    let mut p = Pair::new();
    p.a.resolver.pending = true;
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    let _ub = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    let mut sent = 0u64;
    for _ in 0..3 {
        // smoltcp's UDP buffer holds fewer datagrams than the queue: send in rounds.
        for _ in 0..60 {
            if p.a
                .stack
                .udp_send_to(ua, &[7; 1000], sa(IP_B, 6000))
                .is_ok()
            {
                sent += 1;
            }
        }
        p.settle_and_advance(Duration::from_millis(10));
    }
    let c = p.a.stack.counters().clone();
    assert_eq!(c.tx_held_no_neighbour + c.tx_drop_no_neighbour, sent);
    assert!(c.tx_drop_no_neighbour > 0, "queue never filled: {c:?}");
    assert!(c.tx_held_no_neighbour <= 128);
    assert!(p.run_until(secs(4), |p| p.a.stack.poll_at(p.now).is_none()));
    assert_eq!(p.a.stack.counters().tx_drop_no_neighbour, sent);
    assert_eq!(p.a.stack.counters().tx_frames, 0);
}

#[test]
fn poll_at_reports_pending_retransmission() {
    let mut p = Pair::new();
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, 40000), sa(IP_B, 80))
            .unwrap();
    let start = p.now;
    p.a.poll(p.now);
    p.a.link.take_sent(); // the SYN is lost
    let at = p.a.stack.poll_at(p.now).expect("retransmit timer");
    assert!(at > start && at <= start + Duration::from_secs(3), "{at}");
    p.a.poll(at);
    assert_eq!(p.a.link.sent_len(), 1);
    assert_eq!(p.a.stack.tcp_state(c), Some(State::SynSent));
    // Nothing to do: no timer on an idle stack.
    let idle = Pair::new();
    let mut s = idle.a.stack;
    assert_eq!(s.poll_at(idle.now), None);
}

#[test]
fn ids_of_reaped_sockets_are_invalid_and_not_reused() {
    let mut p = Pair::new();
    let u = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    p.a.stack.close(u);
    let u2 = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    assert_ne!(u, u2);
    let mut buf = [0u8; 4];
    assert_eq!(
        p.a.stack.udp_recv_from(u, &mut buf),
        Err(Error::InvalidSocket)
    );
    assert_eq!(p.a.stack.tcp_recv(u, &mut buf), Err(Error::InvalidSocket));
    assert_eq!(p.a.stack.tcp_state(u), None);
    assert_eq!(p.a.stack.local_addr(u), None);
    assert!(p.a.stack.readiness(u).error);
    let (c, _, _) = connected(&mut p, 80, 40000);
    p.a.stack.abort(c);
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.tcp_send(c, b"x"), Err(Error::InvalidSocket));
    assert_eq!(p.a.stack.socket_count(), 1); // u2 only
}

#[test]
fn listener_close_resets_unaccepted_connections() {
    let mut p = Pair::new();
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 4)
            .unwrap();
    assert_eq!(
        p.b.stack.tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 4),
        Err(Error::AddrInUse)
    );
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, 40000), sa(IP_B, 80))
            .unwrap();
    assert!(p.run_until(secs(5), |p| p.a.stack.tcp_state(c)
        == Some(State::Established)));
    p.b.stack.close(l);
    assert!(p.run_until(secs(5), |p| p.a.stack.readiness(c).error));
    let mut buf = [0u8; 1];
    assert_eq!(p.a.stack.tcp_recv(c, &mut buf), Err(Error::ConnectionReset));
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.b.stack.socket_count(), 0);
}

/// Regression (10,000 connections end to end counted 20,001 closes for 20,000): closing a
/// listener lets its idle listening socket go without counting it as a closed connection (it
/// never was one), and that socket, kept as a spare, serves the next listener.
#[test]
fn closing_a_listener_counts_no_close_for_its_idle_socket() {
    let mut p = Pair::new();
    let (c, s, l) = connected(&mut p, 80, 40000);
    p.b.stack.close(l);
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(
        p.b.stack.counters().tcp_closed,
        0,
        "no connection closed yet"
    );
    assert_eq!(p.b.stack.socket_count(), 1, "the accepted connection alone");
    // The accepted connection outlives its listener and closes once.
    p.b.stack.close(s);
    assert!(p.run_until(secs(1), |p| p.a.stack.readiness(c).hangup));
    p.a.stack.close(c);
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.b.stack.counters().tcp_closed, 1);
    // A new listener on the port (from the spare) takes a connection.
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 16)
            .unwrap();
    let (c, s) = connect_to(&mut p, l, 80, 40001);
    p.a.stack.tcp_send(c, b"again").unwrap();
    assert!(p.run_until(secs(1), |p| p.b.stack.readiness(s).readable));
    let mut buf = [0u8; 8];
    assert_eq!(p.b.stack.tcp_recv(s, &mut buf), Ok(5));
}

/// Regression (conn-rate benchmark at 0.06x the kernel): smoltcp keeps a socket 10 s in
/// TIME-WAIT and scans every socket for every packet, so a server that closed ~1000
/// connections a second spent its time scanning. The socket goes as soon as the close
/// handshake is done (the last ACK out); its 4-tuple stays in TIME-WAIT, 60 s as in the
/// kernel, in a table of its own: a connect to it is refused until then.
#[test]
fn time_wait_is_kept_without_its_socket_and_the_last_ack_went_out() {
    let mut p = Pair::new();
    let (c, s, _) = connected(&mut p, 80, 40000);
    let b_sockets = p.b.stack.socket_count();
    p.a.stack.close(c);
    assert!(p.run_until(secs(1), |p| p.b.stack.readiness(s).hangup));
    p.b.stack.close(s);
    p.settle_and_advance(Duration::from_millis(0));
    // A went through TIME-WAIT and is gone; B got the last ACK (no retransmitted FIN, no RST).
    assert_eq!(p.a.stack.socket_count(), 0);
    assert_eq!(p.a.stack.time_wait_count(), 1);
    assert_eq!(p.a.stack.counters().tcp_time_wait, 1);
    assert_eq!(p.b.stack.socket_count(), b_sockets - 1);
    assert_eq!(
        p.b.stack.time_wait_count(),
        0,
        "the passive closer keeps none"
    );
    assert_eq!(p.a.stack.counters().tcp_closed, 1);
    assert_eq!(p.b.stack.counters().tcp_rx_rst, 0);
    assert_eq!(p.a.stack.counters().tcp_rx_rst, 0);
    assert_eq!(
        p.a.stack.tcp_connect(sa(IP_A, 40000), sa(IP_B, 80)),
        Err(Error::Unaddressable),
        "the 4-tuple is in TIME-WAIT"
    );
    p.settle_and_advance(crate::TIME_WAIT);
    p.settle_and_advance(Duration::from_millis(0));
    assert!(p.a.stack.tcp_connect(sa(IP_A, 40000), sa(IP_B, 80)).is_ok());
    p.a.poll(p.now);
    assert_eq!(p.a.stack.time_wait_count(), 0, "expired");
}

#[test]
fn a_server_closing_connections_keeps_no_sockets_behind() {
    let mut p = Pair::new();
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 8)
            .unwrap();
    for i in 0..200u16 {
        let c =
            p.a.stack
                .tcp_connect(sa(IP_A, 30000 + i), sa(IP_B, 80))
                .unwrap();
        assert!(p.run_until(secs(1), |p| p.b.stack.readiness(l).readable));
        let s = p.b.stack.tcp_accept(l).unwrap().0;
        // The server answers and closes first (HTTP with Connection: close).
        p.b.stack.tcp_send(s, b"bye").unwrap();
        p.b.stack.close(s);
        assert!(p.run_until(secs(1), |p| p.a.stack.readiness(c).hangup));
        let mut buf = [0u8; 8];
        assert_eq!(p.a.stack.tcp_recv(c, &mut buf), Ok(3));
        p.a.stack.close(c);
        p.settle_and_advance(Duration::from_millis(0));
    }
    // Only the listener's pool is left on B; nothing on A.
    assert_eq!(p.a.stack.socket_count(), 0);
    assert!(
        p.b.stack.socket_count() <= 9,
        "{}",
        p.b.stack.socket_count()
    );
    assert_eq!(p.b.stack.counters().tcp_closed, 200);
    assert_eq!(
        p.a.stack.counters().tcp_rx_rst + p.b.stack.counters().tcp_rx_rst,
        0
    );
}

/// Regression (review): handshake timeouts were off, so a connect to a silent peer never ended.
#[test]
fn connect_to_a_silent_peer_times_out_like_the_kernel() {
    let mut p = Pair::new();
    // B hears nothing: every frame it would receive is dropped.
    p.b.link.faults.drop_every = Some(1);
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, 40000), sa(IP_B, 80))
            .unwrap();
    assert!(!p.run_until(secs(120), |p| p.a.stack.readiness(c).error));
    assert!(p.run_until(secs(20), |p| p.a.stack.readiness(c).error));
    assert_eq!(p.a.stack.take_error(c), Ok(Some(Error::TimedOut)));
}

/// An Ethernet frame carrying a TCP SYN from `src` to `dst` (valid checksums).
fn syn_frame(src: SocketAddrV4, dst: SocketAddrV4, dst_mac: [u8; 6]) -> Vec<u8> {
    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::wire::{
        IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
    };
    let tcp = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control: TcpControl::Syn,
        seq_number: TcpSeqNumber(1000),
        ack_number: None,
        window_len: 64240,
        window_scale: None,
        max_seg_size: Some(1460),
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut frame = vec![0u8; 14 + ip.buffer_len() + tcp.buffer_len()];
    frame[..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let caps = ChecksumCapabilities::default();
    let mut ipp = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.emit(&mut ipp, &caps);
    let mut tcpp = TcpPacket::new_unchecked(ipp.payload_mut());
    tcp.emit(&mut tcpp, &(*src.ip()).into(), &(*dst.ip()).into(), &caps);
    frame
}

/// Regression (review): a half-open connection (a SYN from a host that never answers) held its
/// backlog slot forever; it now leaves after the SYN-RECEIVED timeout (63 s, as the kernel).
#[test]
fn half_open_connection_leaves_the_backlog() {
    let mut p = Pair::new();
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 1)
            .unwrap();
    // A spoofed SYN from a host that does not exist (B cannot even resolve it).
    let spoofed = sa(Ipv4Addr::new(198, 18, 0, 99), 1234);
    p.b.link.inject(syn_frame(spoofed, sa(IP_B, 80), MAC_B));
    p.settle_and_advance(secs(55));
    // At 55 s the slot is still held: a real client's SYN is dropped (backlog full)...
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, 40001), sa(IP_B, 80))
            .unwrap();
    p.settle_and_advance(Duration::from_millis(0));
    assert!(p.b.stack.counters().syn_dropped_backlog_full >= 1);
    // ...and once the half-open connection timed out the client's retry gets in.
    let mut accepted = None;
    assert!(p.run_until(secs(30), |p| {
        if accepted.is_none() {
            accepted = p.b.stack.tcp_accept(l).ok();
        }
        accepted.is_some() && p.a.stack.readiness(c).writable
    }));
    assert_eq!(accepted.unwrap().1, sa(IP_A, 40001));
}

/// Regression (review): closing a UDP socket threw away datagrams a send had accepted.
#[test]
fn udp_close_still_sends_accepted_datagrams() {
    let mut p = Pair::new();
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    let ub = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    for i in 0..3u8 {
        p.a.stack.udp_send_to(ua, &[i; 32], sa(IP_B, 6000)).unwrap();
    }
    p.a.stack.close(ua);
    // The port is free at once, as with the kernel.
    let ua2 = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    p.settle_and_advance(Duration::from_millis(0));
    let mut buf = [0u8; 64];
    for i in 0..3u8 {
        let (n, from) = p.b.stack.udp_recv_from(ub, &mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&[i; 32][..], sa(IP_A, 5000)));
    }
    p.a.stack.close(ua2);
    let baseline = p.a.stack.socket_count();
    assert_eq!(
        baseline, 0,
        "closed UDP sockets are reaped once their queue is empty"
    );
}

/// One poll takes at most RX_BUDGET frames, then runs egress and flushes.
#[test]
fn poll_takes_a_bounded_batch_and_flushes() {
    let mut p = Pair::new();
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    let _ub = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    for _ in 0..(crate::RX_BUDGET + 44) {
        p.a.stack.udp_send_to(ua, &[1; 16], sa(IP_B, 6000)).unwrap();
    }
    p.a.poll(p.now);
    let flushes = p.b.link.flushes;
    assert!(p.b.poll(p.now));
    assert_eq!(p.b.stack.counters().rx_frames, crate::RX_BUDGET as u64);
    assert_eq!(p.b.link.flushes, flushes + 1);
    assert!(p.b.poll(p.now));
    assert_eq!(p.b.stack.counters().rx_frames, crate::RX_BUDGET as u64 + 44);
}

/// Socket options the preload maps: keep-alive probes an idle connection, the TTL is written.
#[test]
fn keepalive_probes_and_ttl_is_written() {
    use crate::TcpOption;
    let mut p = Pair::new();
    let (c, _s, _l) = connected(&mut p, 80, 40000);
    p.settle_and_advance(Duration::from_millis(0));
    p.a.stack
        .tcp_set_option(c, TcpOption::HopLimit(Some(7)))
        .unwrap();
    p.a.stack
        .tcp_set_option(
            c,
            TcpOption::KeepAlive(Some(core::time::Duration::from_secs(1))),
        )
        .unwrap();
    let sent = p.a.stack.counters().tx_frames;
    // Nothing to send; only keep-alive makes A talk within 2 s of idle time (A alone is
    // polled, so its frames stay on the wire for us to read).
    for _ in 0..20 {
        p.now += Duration::from_millis(100);
        p.a.poll(p.now);
        if p.a.stack.counters().tx_frames > sent {
            break;
        }
    }
    assert!(
        p.a.stack.counters().tx_frames > sent,
        "no keep-alive probe within 2 s"
    );
    let frames = p.a.link.take_sent();
    let probe = frames.last().expect("a keep-alive probe");
    assert_eq!(probe[14 + 8], 7, "IPv4 TTL of the probe");
    assert_eq!(
        p.a.stack
            .tcp_set_option(SocketId(u64::MAX), TcpOption::NoDelay(true)),
        Err(Error::InvalidSocket)
    );
}

/// Regression (misuse test flake): a connection reset right after its handshake still counts
/// as established, so connect() succeeds and the reset is the next call's error (kernel).
#[test]
fn reset_right_after_the_handshake_is_the_next_calls_error() {
    let mut p = Pair::new();
    let (c, s, _l) = connected(&mut p, 80, 40000);
    p.b.stack.abort(s);
    assert!(p.run_until(secs(1), |p| p.a.stack.readiness(c).error));
    assert!(p.a.stack.tcp_established_once(c));
    assert_eq!(p.a.stack.take_error(c), Ok(Some(Error::ConnectionReset)));
    // A refused connect never was established.
    let r =
        p.a.stack
            .tcp_connect(sa(IP_A, 40001), sa(IP_B, 81))
            .unwrap();
    assert!(p.run_until(secs(5), |p| p.a.stack.readiness(r).error));
    assert!(!p.a.stack.tcp_established_once(r));
}

/// Reaped sockets are reused (no 512 KiB of zeroed buffers per accept); nothing of the old
/// connection may leak into the new one: options go back to their defaults.
#[test]
fn a_reused_socket_starts_with_default_options() {
    let mut p = Pair::new();
    let (c, s, _) = connected(&mut p, 80, 40000);
    p.a.stack
        .tcp_set_option(c, crate::TcpOption::HopLimit(Some(5)))
        .unwrap();
    p.a.stack.close(c);
    assert!(p.run_until(secs(1), |p| p.b.stack.readiness(s).hangup));
    p.b.stack.close(s);
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.socket_count(), 0);
    let c2 =
        p.a.stack
            .tcp_connect(sa(IP_A, 40001), sa(IP_B, 80))
            .unwrap();
    p.a.poll(p.now);
    let sent = p.a.link.take_sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][14 + 8], 64, "TTL of the new connection's SYN");
    assert_eq!(p.a.stack.tcp_state(c2), Some(State::SynSent));
}

/// A spinning wait polls millions of times a second: a poll with nothing arrived, no call
/// since the last one and no timer due must do nothing (no socket walk, no flush), and must
/// still see a call's output, an arriving frame and a due timer.
#[test]
fn idle_polls_are_skipped_but_nothing_is_missed() {
    let mut p = Pair::new();
    let (c, s, _) = connected(&mut p, 80, 40000);
    p.settle_and_advance(Duration::from_millis(0));
    let flushes = p.a.link.flushes;
    for _ in 0..100 {
        assert!(!p.a.poll(p.now));
    }
    assert_eq!(p.a.link.flushes, flushes, "idle polls flushed");
    assert!(p.a.stack.quiet(&mut p.a.link), "idle, no timer: quiet");
    // A call's output goes out on the next poll.
    p.a.stack.tcp_send(c, b"ping").unwrap();
    assert!(!p.a.stack.quiet(&mut p.a.link), "a call made it not quiet");
    assert!(p.a.poll(p.now));
    assert_eq!(p.a.link.flushes, flushes + 1);
    // An arriving frame is processed.
    assert!(p.b.poll(p.now));
    let mut buf = [0u8; 8];
    assert_eq!(p.b.stack.tcp_recv(s, &mut buf), Ok(4));
    p.b.stack.tcp_send(s, b"pong").unwrap();
    p.b.poll(p.now);
    assert!(!p.a.stack.quiet(&mut p.a.link), "a frame waits: not quiet");
    assert!(p.a.poll(p.now));
    assert_eq!(p.a.stack.tcp_recv(c, &mut buf), Ok(4));
    // A due timer runs: data lost on the wire is retransmitted without any call.
    p.settle_and_advance(Duration::from_millis(0));
    p.a.stack.tcp_send(c, b"lost").unwrap();
    p.a.poll(p.now);
    assert_eq!(p.a.link.take_sent().len(), 1);
    let at = p.a.stack.poll_at(p.now).expect("retransmission timer");
    assert!(!p.a.stack.quiet(&mut p.a.link), "a timer is set: not quiet");
    assert!(
        p.a.stack.quiet_until(p.now, &mut p.a.link),
        "the timer is not due now"
    );
    assert!(!p.a.stack.quiet_until(at, &mut p.a.link), "due at `at`");
    assert!(!p.a.poll(p.now));
    p.a.poll(at);
    assert_eq!(
        p.a.link.take_sent().len(),
        1,
        "no retransmission at the timer"
    );
}

/// A receive that finds nothing changes nothing on the wire, so it leaves the stack quiet (a
/// spinning receive makes one per attempt); a read that takes TCP bytes opens the window, and
/// a send queues data: both make the next poll run.
#[test]
fn an_empty_receive_keeps_the_stack_quiet() {
    let mut p = Pair::new();
    let (c, s, _) = connected(&mut p, 80, 40000);
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    let ub = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    p.settle_and_advance(Duration::from_millis(0));
    assert!(p.a.stack.quiet(&mut p.a.link));
    let mut buf = [0u8; 8];
    assert_eq!(p.a.stack.tcp_recv(c, &mut buf), Err(Error::WouldBlock));
    assert_eq!(
        p.a.stack.udp_recv_with(ua, |d, _| d.len()),
        Err(Error::WouldBlock)
    );
    assert!(
        p.a.stack.quiet(&mut p.a.link),
        "an empty receive woke the stack"
    );
    p.b.stack.udp_send_to(ub, b"dgram", sa(IP_A, 5000)).unwrap();
    assert!(!p.b.stack.quiet(&mut p.b.link), "a UDP send must be polled");
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.udp_recv_with(ua, |d, _| d.len()), Ok(5));
    assert!(
        p.a.stack.quiet(&mut p.a.link),
        "a datagram read woke the stack"
    );
    p.b.stack.tcp_send(s, b"data").unwrap();
    assert!(!p.b.stack.quiet(&mut p.b.link), "a TCP send must be polled");
    // Past A's delayed ACK, so no timer is left.
    p.settle_and_advance(Duration::from_millis(500));
    p.settle_and_advance(Duration::from_millis(0));
    assert!(p.a.stack.quiet(&mut p.a.link));
    assert_eq!(p.a.stack.tcp_recv(c, &mut buf), Ok(4));
    assert!(!p.a.stack.quiet(&mut p.a.link), "a TCP read must be polled");
}

/// A poll after calls on a few connections, or after packets for them, deals with those
/// connections alone (found by the egress queue or their 4-tuple, not by a walk of every
/// socket), and everything about a connection must still work that way: the bytes both ways,
/// the retransmission timer, the close; the other connections are left as they were.
#[test]
fn connections_polled_alone_keep_working() {
    let mut p = Pair::new();
    let (c1, s1, l) = connected(&mut p, 80, 40000);
    let (c2, s2) = connect_to(&mut p, l, 80, 40001);
    p.settle_and_advance(Duration::from_millis(0));
    let visits = p.a.stack.sockets.visits;
    // Lost on the wire: only the retransmission timer can deliver it.
    p.a.stack.tcp_send(c2, b"alone").unwrap();
    assert!(p.a.poll(p.now));
    assert_eq!(p.a.link.take_sent().len(), 1, "the segment went out");
    assert_eq!(
        p.a.stack.sockets.visits - visits,
        1,
        "sent visiting c2 alone"
    );
    let at = p.a.stack.poll_at(p.now).expect("retransmission timer");
    assert!(p.run_until(secs(5), |p| p.b.stack.readiness(s2).readable));
    assert!(p.now >= at);
    let mut buf = [0u8; 16];
    assert_eq!(p.b.stack.tcp_recv(s2, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"alone");
    // The reply reaches c2 by its addresses.
    let visits = p.a.stack.sockets.visits;
    p.b.stack.tcp_send(s2, b"reply").unwrap();
    assert!(p.run_until(secs(1), |p| p.a.stack.readiness(c2).readable));
    assert!(p.a.stack.sockets.visits > visits, "received by c2");
    assert_eq!(p.a.stack.tcp_recv(c2, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"reply");
    // The other connection saw none of it and still works.
    assert!(!p.a.stack.readiness(c1).readable);
    p.b.stack.tcp_send(s1, b"other").unwrap();
    assert!(p.run_until(secs(1), |p| p.a.stack.readiness(c1).readable));
    assert_eq!(p.a.stack.tcp_recv(c1, &mut buf), Ok(5));
    assert_eq!(&buf[..5], b"other");
    for (c, s) in [(c1, s1), (c2, s2)] {
        p.a.stack.close(c);
        assert!(p.run_until(secs(1), |p| p.b.stack.readiness(s).hangup));
        p.b.stack.close(s);
    }
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.socket_count(), 0);
}

/// (TCP destination port, flags) of an Ethernet/IPv4/TCP frame.
fn tcp_port_flags(f: &[u8]) -> (u16, u8) {
    let tcp = &f[14 + 20..];
    (u16::from_be_bytes([tcp[2], tcp[3]]), tcp[13])
}

/// What a call queued leaves in the next poll ahead of the frames that arrived meanwhile: the
/// server's FIN does not wait behind what the stack answers to them (a client that has the
/// reply long before the FIN closes first, and keeps the TIME-WAIT the server should keep).
#[test]
fn a_close_sends_its_fin_before_the_poll_takes_in_new_frames() {
    let mut p = Pair::new();
    let (_c1, s1, _l) = connected(&mut p, 80, 40000);
    p.settle_and_advance(Duration::from_millis(10));
    // A SYN to a port nobody listens on waits in B's queue when B's server closes s1; taking
    // it in answers at once with an RST.
    let _refused =
        p.a.stack
            .tcp_connect(sa(IP_A, 40001), sa(IP_B, 81))
            .unwrap();
    p.a.poll(p.now);
    p.b.stack.close(s1);
    assert!(p.b.poll(p.now));
    let sent: Vec<(u16, u8)> =
        p.b.link
            .take_sent()
            .iter()
            .map(|f| tcp_port_flags(f))
            .collect();
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    assert_eq!(sent.len(), 2, "the FIN and the RST: {sent:?}");
    assert_eq!(
        sent[0].0, 40000,
        "first out: to the closed connection's client"
    );
    assert_ne!(sent[0].1 & FIN, 0, "first out is the FIN: {sent:?}");
    assert_eq!(sent[1].0, 40001);
    assert_ne!(sent[1].1 & RST, 0, "then the RST: {sent:?}");
}

/// A connection closed by its application whose peer never closes (FIN-WAIT-2 for ever) is
/// aborted after ORPHAN_TIMEOUT, as the kernel's tcp_fin_timeout does, also when nothing
/// else happens on the stack: the deadline is a timer like smoltcp's own (poll_at reports
/// it, and an otherwise idle poll at that time is not skipped).
#[test]
fn an_orphan_in_fin_wait_2_is_aborted_on_time_even_when_idle() {
    let mut p = Pair::new();
    let (c, _s, _) = connected(&mut p, 80, 40000);
    p.a.stack.close(c);
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.socket_count(), 1, "FIN-WAIT-2");
    let at =
        p.a.stack
            .poll_at(p.now)
            .expect("the orphan deadline is a timer");
    assert!(at <= p.now + crate::ORPHAN_TIMEOUT, "{at}");
    p.now = at;
    p.a.poll(p.now);
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.socket_count(), 0, "orphan not aborted");
}

/// What the stack noted as changed since `cursor`, and the count to read from next.
fn noted(stack: &crate::Stack, cursor: u64) -> (Vec<SocketId>, u64) {
    let mut seen = Vec::new();
    let next = stack.changed_since(cursor, |s| seen.push(s)).unwrap();
    (seen, next)
}

#[test]
fn the_stack_notes_the_sockets_whose_readiness_it_changed() {
    let mut p = Pair::new();
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 16)
            .unwrap();
    let from = p.b.stack.changes_head();
    // A connection established in the listener's queue: the listener is noted.
    let (c1, s1) = connect_to(&mut p, l, 80, 40001);
    let (seen, from) = noted(&p.b.stack, from);
    assert!(seen.contains(&l), "{seen:?}");
    let (c2, s2) = connect_to(&mut p, l, 80, 40002);
    // Delayed ACKs and the like done: both connections idle.
    p.settle_and_advance(secs(1));
    p.settle_and_advance(secs(1));
    let (_, from) = noted(&p.b.stack, from);

    // Data for one connection: that one is noted, not the other, nor the listener.
    p.a.stack.tcp_send(c1, b"request").unwrap();
    assert!(p.run_until(secs(1), |p| p.b.stack.readiness(s1).readable));
    let (seen, from) = noted(&p.b.stack, from);
    assert!(seen.contains(&s1), "{seen:?}");
    assert!(!seen.contains(&s2) && !seen.contains(&l), "{seen:?}");

    // The peer's reset: noted (readable, hangup).
    p.a.stack.abort(c2);
    assert!(p.run_until(secs(1), |p| p.b.stack.readiness(s2).error));
    let (seen, from) = noted(&p.b.stack, from);
    assert!(seen.contains(&s2), "{seen:?}");

    // A datagram for a UDP socket.
    let u = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    p.a.stack.udp_send_to(ua, b"d", sa(IP_B, 6000)).unwrap();
    assert!(p.run_until(secs(1), |p| p.b.stack.readiness(u).readable));
    let (seen, _) = noted(&p.b.stack, from);
    assert!(seen.contains(&u), "{seen:?}");
}
