//! Exhaustion in memory: the stack's socket memory limit. Each case ends with the service
//! back and nothing lost.

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
