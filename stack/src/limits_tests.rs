//! Exhaustion in memory: the stack's socket memory limit and a link that runs out of TX
//! frames. Each case ends with the service back and nothing lost.

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::socket::tcp::State;
use smoltcp::time::Duration;

use crate::testing::{Pair, IP_A, IP_B};
use crate::{errno, Error, SocketId};

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Bytes of one TCP socket's buffers in these tests.
const TCP_SOCKET: usize = 2 * 4096;

#[track_caller]
fn budget_is_exact(p: &Pair) {
    for (name, s) in [("A", &p.a.stack), ("B", &p.b.stack)] {
        assert_eq!(
            s.buffer_bytes(),
            s.buffer_bytes_recounted(),
            "{name}: the running count of socket memory drifted"
        );
    }
}

/// A byte stream that differs at every offset.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

#[test]
fn a_listener_out_of_socket_memory_drops_syns_then_takes_them_again() {
    // Room for three sockets on B: the listener's idle one becomes the first connection, and
    // so on; the fourth SYN finds no room.
    let mut p = Pair::with_config(|c| {
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
    });
    p.b.stack.set_mem_max(Some(3 * TCP_SOCKET));
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 16)
            .unwrap();
    let clients: Vec<SocketId> = (0..4)
        .map(|i| {
            p.a.stack
                .tcp_connect(sa(IP_A, 40000 + i), sa(IP_B, 80))
                .unwrap()
        })
        .collect();
    let established = |p: &Pair| {
        clients
            .iter()
            .filter(|c| p.a.stack.tcp_state(**c) == Some(State::Established))
            .count()
    };
    assert!(p.run_until(secs(2), |p| established(p) == 3));
    p.settle_and_advance(Duration::from_millis(10));
    assert_eq!(established(&p), 3);
    assert_eq!(p.a.stack.tcp_state(clients[3]), Some(State::SynSent));
    // Dropped, not refused: the client keeps trying.
    assert!(p.b.stack.counters().syn_dropped_no_memory >= 1);
    assert_eq!(p.b.stack.counters().syn_dropped_backlog_full, 0);
    assert_eq!(p.a.stack.counters().tcp_rx_rst, 0);
    assert_eq!(p.b.stack.buffer_bytes(), 3 * TCP_SOCKET);
    budget_is_exact(&p);

    // One connection ends: its memory comes back and the next SYN retransmission gets in.
    let (s0, _) = p.b.stack.tcp_accept(l).unwrap();
    p.a.stack.close(clients[0]);
    assert!(p.run_until(secs(5), |p| p.b.stack.readiness(s0).hangup));
    p.b.stack.close(s0);
    assert!(p.run_until(secs(10), |p| p.a.stack.tcp_state(clients[3])
        == Some(State::Established)));
    assert_eq!(p.a.stack.counters().tcp_rx_rst, 0);
    let accepted: Vec<SocketAddrV4> = (0..3).map(|_| p.b.stack.tcp_accept(l).unwrap().1).collect();
    assert_eq!(
        accepted,
        vec![sa(IP_A, 40001), sa(IP_A, 40002), sa(IP_A, 40003)]
    );
    assert!(p.b.stack.buffer_bytes() <= 3 * TCP_SOCKET);
    budget_is_exact(&p);
}

#[test]
fn connect_and_udp_bind_beyond_the_socket_memory_are_refused_with_enobufs() {
    let udp_bytes = {
        let p = Pair::with_config(|c| c.set_udp_buffers(4096, 4096));
        let mut s = p.a.stack;
        s.udp_bind(sa(IP_A, 5000)).unwrap();
        s.buffer_bytes()
    };
    let mut p = Pair::with_config(|c| {
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
        c.set_udp_buffers(4096, 4096);
    });
    p.a.stack.set_mem_max(Some(TCP_SOCKET + udp_bytes));
    let _l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 16)
            .unwrap();
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, 40000), sa(IP_B, 80))
            .unwrap();
    let u = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    let refused = p.a.stack.tcp_connect(sa(IP_A, 40001), sa(IP_B, 80));
    assert_eq!(refused, Err(Error::NoBufferSpace));
    assert_eq!(Error::NoBufferSpace.errno(), errno::ENOBUFS);
    assert_eq!(
        p.a.stack.udp_bind(sa(IP_A, 5001)),
        Err(Error::NoBufferSpace)
    );
    assert_eq!(p.a.stack.counters().socket_refused_no_memory, 2);
    budget_is_exact(&p);

    // Closing the UDP socket makes room for another; closing the connection for another.
    p.a.stack.close(u);
    p.a.stack.udp_bind(sa(IP_A, 5001)).unwrap();
    assert!(p.run_until(secs(2), |p| p.a.stack.readiness(c).writable));
    p.a.stack.abort(c);
    p.settle_and_advance(Duration::from_millis(10));
    let c2 =
        p.a.stack
            .tcp_connect(sa(IP_A, 40001), sa(IP_B, 80))
            .unwrap();
    assert!(p.run_until(secs(2), |p| p.a.stack.tcp_state(c2)
        == Some(State::Established)));
    budget_is_exact(&p);
}

#[test]
fn socket_memory_comes_back_after_many_connections() {
    let mut p = Pair::with_config(|c| {
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
    });
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 64)
            .unwrap();
    let base = p.b.stack.buffer_bytes();
    assert_eq!(base, TCP_SOCKET, "the listener's idle socket");
    for round in 0..5u16 {
        let clients: Vec<SocketId> = (0..40)
            .map(|i| {
                p.a.stack
                    .tcp_connect(sa(IP_A, 20000 + round * 100 + i), sa(IP_B, 80))
                    .unwrap()
            })
            .collect();
        let mut servers = Vec::new();
        assert!(p.run_until(secs(5), |p| {
            while let Ok((s, _)) = p.b.stack.tcp_accept(l) {
                servers.push(s);
            }
            servers.len() == clients.len()
        }));
        budget_is_exact(&p);
        for s in servers {
            p.b.stack.close(s);
        }
        for c in clients {
            p.a.stack.close(c);
        }
        p.settle_and_advance(secs(1));
        p.settle_and_advance(secs(11));
        budget_is_exact(&p);
    }
    // What is left: the idle socket and the spares (at most 32), on each side.
    assert!(p.b.stack.buffer_bytes() <= base + 32 * TCP_SOCKET);
    assert!(p.a.stack.buffer_bytes() <= 32 * TCP_SOCKET);
    assert_eq!(p.a.stack.socket_count(), 0);
}

#[test]
fn tx_frames_run_out_a_megabyte_waits_for_them_and_arrives_intact() {
    let mut p = Pair::new();
    // A has 8 TX frames; each comes back once B took it off the wire.
    p.a.link.tx_limit = Some(8);
    let l =
        p.b.stack
            .tcp_listen(sa(Ipv4Addr::UNSPECIFIED, 80), 16)
            .unwrap();
    let c =
        p.a.stack
            .tcp_connect(sa(IP_A, 40000), sa(IP_B, 80))
            .unwrap();
    let mut s = None;
    assert!(p.run_until(secs(2), |p| {
        s = s.or_else(|| p.b.stack.tcp_accept(l).ok().map(|a| a.0));
        s.is_some()
    }));
    let s = s.unwrap();
    let data = pattern(1 << 20, 7);
    let (mut sent, mut got) = (0, Vec::with_capacity(data.len()));
    let mut would_block = 0u32;
    let mut buf = vec![0u8; 16384];
    assert!(p.run_until(secs(60), |p| {
        match p.a.stack.tcp_send(c, &data[sent..]) {
            Ok(n) => sent += n,
            Err(Error::WouldBlock) => would_block += 1,
            Err(e) => panic!("send: {e}"),
        }
        while let Ok(n) = p.b.stack.tcp_recv(s, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got.len() == data.len()
    }));
    assert!(got == data, "the bytes arrived changed or out of order");
    // The send buffer filled while frames were short: sends waited, nothing was dropped.
    assert!(would_block > 0);
    assert!(p.a.link.tx_refused > 0);
    assert!(p.a.stack.counters().tx_drop_no_tx_frame > 0);
    assert_eq!(p.a.stack.counters().tcp_rx_rst, 0);
}

#[test]
fn tx_frames_run_out_a_udp_burst_stays_queued_and_every_datagram_leaves() {
    let mut p = Pair::with_config(|c| c.set_udp_buffers(64 * 1024, 64 * 1024));
    p.a.link.tx_limit = Some(4);
    let ua = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
    let ub = p.b.stack.udp_bind(sa(IP_B, 6000)).unwrap();
    // A burst far larger than the frames: what the socket takes it sends, in order; the rest
    // is refused with EAGAIN, never dropped.
    let mut accepted = 0u32;
    let mut refused = 0u32;
    for i in 0..1000u32 {
        let mut d = [0u8; 200];
        d[..4].copy_from_slice(&i.to_be_bytes());
        match p.a.stack.udp_send_to(ua, &d, sa(IP_B, 6000)) {
            Ok(_) => {
                assert_eq!(refused, 0, "datagram {i} taken after one was refused");
                accepted += 1;
            }
            Err(Error::WouldBlock) => refused += 1,
            Err(e) => panic!("send_to: {e}"),
        }
    }
    assert!(refused > 0 && accepted > 4);
    let mut next = 0u32;
    let mut buf = [0u8; 256];
    assert!(p.run_until(secs(5), |p| {
        while let Ok((n, from)) = p.b.stack.udp_recv_from(ub, &mut buf) {
            assert_eq!((n, from), (200, sa(IP_A, 5000)));
            assert_eq!(u32::from_be_bytes(buf[..4].try_into().unwrap()), next);
            next += 1;
        }
        next == accepted
    }));
    assert!(p.a.stack.counters().tx_drop_no_tx_frame > 0);
    assert!(p.a.stack.readiness(ua).writable);
}
