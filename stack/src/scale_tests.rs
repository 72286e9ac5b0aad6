//! The stack at scale, in memory: a packet and a timer visit their own connection alone,
//! idle connections cost no timer, 10,000 connections, and TIME-WAIT kept as the kernel keeps
//! it (see `sockets` and `time_wait`).

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::time::Duration;
use smoltcp::wire::{
    IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use crate::testing::{Pair, IP_A, IP_B, MAC_B};
use crate::{Error, SocketId};

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// `n` connections from A (ports 10000..) to B:80, accepted. Returns (clients, servers).
#[track_caller]
fn many(p: &mut Pair, n: usize) -> (Vec<SocketId>, Vec<SocketId>) {
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 4096)
            .unwrap();
    let (mut clients, mut servers) = (Vec::new(), Vec::new());
    let mut port = 10000u16;
    while clients.len() < n {
        let batch = (n - clients.len()).min(1000);
        for _ in 0..batch {
            clients.push(p.a.stack.tcp_connect(sa(IP_A, port), sa(IP_B, 80)).unwrap());
            port += 1;
        }
        let want = clients.len();
        assert!(p.run_until(Duration::from_secs(10), |p| {
            while let Ok((s, _)) = p.b.stack.tcp_accept(l) {
                servers.push(s);
            }
            servers.len() == want
        }));
    }
    p.settle_and_advance(Duration::from_millis(0));
    assert!(clients.iter().all(|c| p.a.stack.readiness(*c).writable));
    (clients, servers)
}

/// Sockets B visits to take one segment of data on connection `i` and send its ACK.
fn visits_for_one_segment(n: usize) -> u64 {
    let mut p = Pair::new();
    let (clients, servers) = many(&mut p, n);
    let i = n / 2;
    p.a.stack.tcp_send(clients[i], b"request").unwrap();
    assert!(p.a.poll(p.now));
    let before = p.b.stack.sockets.visits;
    assert!(p.b.poll(p.now));
    let mut buf = [0u8; 16];
    assert_eq!(p.b.stack.tcp_recv(servers[i], &mut buf), Ok(7));
    // Its delayed ACK.
    p.now += Duration::from_millis(2);
    assert!(p.b.poll(p.now));
    assert_eq!(p.a.link.sent_len(), 0);
    p.b.stack.sockets.visits - before
}

#[test]
fn a_segment_visits_its_connection_alone_among_many() {
    let few = visits_for_one_segment(10);
    let more = visits_for_one_segment(500);
    // Ingress, then the delayed ACK's timer: two visits of that one connection.
    assert_eq!(few, 2);
    assert_eq!(more, few, "the cost of a segment grew with the connections");
}

#[test]
fn a_timer_fires_for_a_connection_nobody_touched() {
    let mut p = Pair::new();
    let (clients, servers) = many(&mut p, 50);
    assert_eq!(
        p.a.stack.sockets.timer_count(),
        0,
        "idle connections set no timer"
    );
    p.a.stack.tcp_send(clients[7], b"lost").unwrap();
    assert!(p.a.poll(p.now));
    assert_eq!(p.a.link.take_sent().len(), 1, "sent, then lost on the wire");
    assert_eq!(
        p.a.stack.sockets.timer_count(),
        1,
        "its retransmission timer alone"
    );
    let at = p.a.stack.poll_at(p.now).expect("a retransmission timer");
    assert!(at > p.now);
    // Nothing touches A until then: no call, no packet.
    assert!(!p.a.poll(p.now));
    let before = p.a.stack.sockets.visits;
    assert!(p.a.poll(at));
    assert_eq!(
        p.a.stack.sockets.visits - before,
        1,
        "only the due socket was visited"
    );
    assert_eq!(p.a.link.sent_len(), 1, "retransmitted at the timer");
    p.now = at;
    assert!(p.run_until(Duration::from_secs(1), |p| p
        .b
        .stack
        .readiness(servers[7])
        .readable));
    let mut buf = [0u8; 8];
    assert_eq!(p.b.stack.tcp_recv(servers[7], &mut buf), Ok(4));
}

#[test]
fn ten_thousand_connections_in_memory() {
    let mut p = Pair::with_config(|c| {
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
    });
    let (clients, servers) = many(&mut p, 10_000);
    assert_eq!(p.b.stack.open_ids(), 10_001);
    assert_eq!(
        p.b.stack.sockets.keyed(),
        10_000,
        "every connection by its 4-tuple"
    );
    assert_eq!(
        p.b.stack.sockets.timer_count(),
        0,
        "idle connections set no timer"
    );
    // The first, the last and one between still talk, each visited alone.
    let mut buf = [0u8; 8];
    for i in [0, 5_000, 9_999] {
        p.a.stack.tcp_send(clients[i], b"ping").unwrap();
        let before = p.b.stack.sockets.visits;
        assert!(p.run_until(Duration::from_secs(1), |p| {
            p.b.stack.readiness(servers[i]).readable
        }));
        assert!(p.b.stack.sockets.visits - before <= 2);
        assert_eq!(p.b.stack.tcp_recv(servers[i], &mut buf), Ok(4));
    }
    // All of them close (A first: A keeps 10,000 TIME-WAITs and no socket).
    for c in &clients {
        p.a.stack.close(*c);
    }
    p.settle_and_advance(Duration::from_millis(0));
    for s in &servers {
        p.b.stack.close(*s);
    }
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.a.stack.socket_count(), 0);
    assert_eq!(p.a.stack.time_wait_count(), 10_000);
    assert_eq!(p.b.stack.socket_count(), 1, "the listener's idle socket");
    assert_eq!(p.b.stack.counters().tcp_rx_rst, 0);
}

/// A TCP segment from A to B as an Ethernet frame (valid checksums).
fn frame_to_b(src_port: u16, control: TcpControl, seq: TcpSeqNumber) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port: 80,
        control,
        seq_number: seq,
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
        src_addr: IP_A,
        dst_addr: IP_B,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut frame = vec![0u8; 14 + ip.buffer_len() + tcp.buffer_len()];
    frame[..6].copy_from_slice(&MAC_B);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let caps = ChecksumCapabilities::default();
    let mut ipp = Ipv4Packet::new_unchecked(&mut frame[14..]);
    ip.emit(&mut ipp, &caps);
    let mut tcpp = TcpPacket::new_unchecked(ipp.payload_mut());
    tcp.emit(&mut tcpp, &IP_A.into(), &IP_B.into(), &caps);
    frame
}

fn tcp_of(frame: &[u8]) -> TcpPacket<&[u8]> {
    TcpPacket::new_checked(&frame[14 + 20..]).unwrap()
}

/// B (the server) closes first and keeps TIME-WAIT. Returns the pair, the listener and the
/// sequence number B expects next from A (RCV.NXT, past A's FIN).
fn server_in_time_wait() -> (Pair, SocketId, TcpSeqNumber) {
    let mut p = Pair::new();
    let (clients, servers) = many(&mut p, 1);
    let (c, s) = (clients[0], servers[0]);
    p.b.stack.close(s);
    assert!(p.run_until(Duration::from_secs(1), |p| p.a.stack.readiness(c).hangup));
    p.a.stack.close(c);
    assert!(p.a.poll(p.now));
    let sent = p.a.link.take_sent();
    let fin = sent.iter().find(|f| tcp_of(f).fin()).expect("A's FIN");
    let rcv_nxt = tcp_of(fin).seq_number() + 1;
    for f in sent {
        p.b.link.inject(f);
    }
    p.settle_and_advance(Duration::from_millis(0));
    assert_eq!(p.b.stack.time_wait_count(), 1);
    assert_eq!(
        p.a.stack.time_wait_count(),
        0,
        "the passive closer keeps none"
    );
    let l = SocketId(1);
    (p, l, rcv_nxt)
}

#[test]
fn a_retransmitted_fin_in_time_wait_gets_its_ack_not_a_reset() {
    let mut p = Pair::new();
    let (clients, servers) = many(&mut p, 1);
    let (c, s) = (clients[0], servers[0]);
    p.a.stack.close(c);
    assert!(p.run_until(Duration::from_secs(1), |p| p.b.stack.readiness(s).hangup));
    p.b.stack.close(s);
    // B's FIN reaches A, which acknowledges it and keeps TIME-WAIT; that ACK is lost.
    assert!(p.b.poll(p.now));
    assert!(p.a.poll(p.now));
    let lost = p.a.link.take_sent();
    assert_eq!(lost.len(), 1);
    assert!(!tcp_of(&lost[0]).fin() && tcp_of(&lost[0]).ack());
    assert_eq!(p.a.stack.socket_count(), 0, "A's socket is gone");
    assert_eq!(p.a.stack.time_wait_count(), 1);
    // B sends its FIN again at its RTO; A answers from TIME-WAIT.
    let b_sockets = p.b.stack.socket_count();
    assert!(
        p.run_until(Duration::from_secs(5), |p| p.b.stack.socket_count()
            < b_sockets)
    );
    assert_eq!(p.a.stack.counters().tcp_time_wait_acks, 1);
    assert_eq!(p.b.stack.counters().tcp_rx_rst, 0, "no reset");
    assert_eq!(p.b.stack.counters().tcp_reset, 0);
}

#[test]
fn a_syn_past_the_old_sequence_reopens_a_time_wait_four_tuple() {
    let (mut p, l, rcv_nxt) = server_in_time_wait();
    p.b.link
        .inject(frame_to_b(10000, TcpControl::Syn, rcv_nxt + 100_000));
    assert!(p.b.poll(p.now));
    let sent = p.b.link.take_sent();
    assert_eq!(sent.len(), 1);
    assert!(
        tcp_of(&sent[0]).syn() && tcp_of(&sent[0]).ack(),
        "a SYN-ACK"
    );
    assert_eq!(p.b.stack.counters().tcp_time_wait_reopened, 1);
    assert_eq!(p.b.stack.time_wait_count(), 0);
    assert_eq!(
        p.b.stack.tcp_accept(l).err(),
        Some(Error::WouldBlock),
        "half open"
    );
}

#[test]
fn an_old_syn_on_a_time_wait_four_tuple_gets_an_ack() {
    let (mut p, _, rcv_nxt) = server_in_time_wait();
    p.b.link
        .inject(frame_to_b(10000, TcpControl::Syn, rcv_nxt - 1_000));
    assert!(p.b.poll(p.now));
    let sent = p.b.link.take_sent();
    assert_eq!(sent.len(), 1);
    let t = tcp_of(&sent[0]);
    assert!(t.ack() && !t.syn() && !t.rst(), "the TIME-WAIT ACK");
    assert_eq!(t.ack_number(), rcv_nxt);
    assert_eq!(p.b.stack.counters().tcp_time_wait_acks, 1);
    assert_eq!(p.b.stack.time_wait_count(), 1, "still in TIME-WAIT");
}
