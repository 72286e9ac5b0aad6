//! TCP: listen, accept, connect, data, shutdown, close, options, as the kernel answers them.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::{assert_errno, pattern, Net, Sock, A, B};
use crate::socket::{close, options};

/// A connection accepted from the peer: (accelerated side, peer's socket).
fn accepted_pair(net: &mut Net) -> (Sock, stack::SocketId, Sock) {
    let l = Sock::listener(net, 8);
    let peer = net.peer_connect(l.local());
    let (c, _) = l.accept(net).expect("accept");
    (c, peer, l)
}

/// A connection the accelerated side opened to the peer's listener.
fn connected_pair(net: &mut Net) -> (Sock, stack::SocketId) {
    let (lid, at) = net.peer_listen(8);
    let s = Sock::tcp(net);
    s.connect(net, at).expect("connect");
    let peer = net.peer_accept(lid);
    (s, peer)
}

#[test]
fn accept_waits_for_the_peers_connection_and_reports_its_address() {
    let mut net = Net::new();
    let l = Sock::listener(&net, 8);
    let from = SocketAddrV4::new(B, net.peer_port());
    net.peer(|s| s.tcp_connect(from, l.local())).unwrap();
    let (c, addr) = l.accept(&net).expect("accept");
    assert_eq!(addr, from);
    assert_eq!(
        options::getpeername(&c.ep, c.fd).unwrap(),
        super::sa(B, from.port())
    );
    assert_eq!(
        options::getsockname(&c.ep, c.fd).unwrap(),
        super::sa(A, l.local().port())
    );
}

#[test]
fn connections_are_accepted_in_the_order_they_arrived() {
    let mut net = Net::new();
    let l = Sock::listener(&net, 8);
    let mut ports = Vec::new();
    for _ in 0..3 {
        let from = SocketAddrV4::new(B, net.peer_port());
        net.peer(|s| s.tcp_connect(from, l.local())).unwrap();
        ports.push(from.port());
        // Each handshake completes before the next SYN leaves.
        net.until("established", |s| {
            s.counters().tcp_connected as usize == ports.len()
        });
    }
    let got: Vec<u16> = (0..3)
        .map(|_| l.accept(&net).expect("accept").1.port())
        .collect();
    assert_eq!(got, ports);
}

#[test]
fn a_full_backlog_holds_further_connections_until_one_is_accepted() {
    let mut net = Net::new();
    let l = Sock::listener(&net, 2);
    l.set_nonblocking(true);
    for _ in 0..4 {
        net.peer_connect(l.local());
    }
    net.until("two handshakes", |s| s.counters().tcp_connected >= 2);
    // The SYNs past the backlog were dropped, as the kernel drops them: two wait to be
    // accepted, the other two are still connecting.
    let a = l.accept(&net).expect("first");
    let b = l.accept(&net).expect("second");
    assert_ne!(a.1, b.1);
    assert_eq!(net.peer(|s| s.counters().tcp_connected), 2);
    // Room again: the retransmitted SYNs get in (smoltcp's peer retries after its RTO).
    l.set_nonblocking(false);
    let c = l.accept(&net).expect("third");
    let d = l.accept(&net).expect("fourth");
    let mut all = vec![a.1, b.1, c.1, d.1];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4);
}

#[test]
fn a_nonblocking_accept_with_nothing_pending_is_eagain() {
    let net = Net::new();
    let l = Sock::listener(&net, 8);
    l.set_nonblocking(true);
    assert_errno(l.accept(&net), libc::EAGAIN);
}

#[test]
fn accept_on_a_socket_that_does_not_listen_is_einval() {
    let net = Net::new();
    let s = Sock::tcp(&net);
    s.bind(&net, A, 0).unwrap();
    assert_errno(s.accept(&net), libc::EINVAL);
}

#[test]
fn a_nonblocking_connect_is_einprogress_then_writable_then_so_error_zero() {
    let mut net = Net::new();
    let (lid, at) = net.peer_listen(8);
    let s = Sock::tcp(&net);
    s.set_nonblocking(true);
    assert_errno(s.connect(&net, at), libc::EINPROGRESS);
    // While the handshake runs, connect() again says EALREADY (or it already completed).
    let mut ready = 0;
    let end = Instant::now() + Duration::from_secs(5);
    while ready & libc::POLLOUT == 0 && Instant::now() < end {
        let mut p = [libc::pollfd {
            fd: s.fd,
            events: libc::POLLOUT,
            revents: 0,
        }];
        crate::ready::poll::poll(&net.rt, &mut p, 100).unwrap();
        ready = p[0].revents;
    }
    assert!(ready & libc::POLLOUT != 0, "writable once connected");
    assert_eq!(s.so_error(), 0);
    // The first connect() after completion reports success, later ones EISCONN.
    assert_eq!(s.connect(&net, at), Ok(()));
    assert_errno(s.connect(&net, at), libc::EISCONN);
    net.peer_accept(lid);
}

#[test]
fn connect_to_a_port_nobody_listens_on_is_econnrefused() {
    let net = Net::new();
    let s = Sock::tcp(&net);
    assert_errno(s.connect(&net, SocketAddrV4::new(B, 9)), libc::ECONNREFUSED);
}

#[test]
fn a_refused_nonblocking_connect_reports_econnrefused_in_so_error() {
    let net = Net::new();
    let s = Sock::tcp(&net);
    s.set_nonblocking(true);
    assert_errno(s.connect(&net, SocketAddrV4::new(B, 9)), libc::EINPROGRESS);
    let end = Instant::now() + Duration::from_secs(5);
    let mut err = 0;
    while err == 0 && Instant::now() < end {
        let mut p = [libc::pollfd {
            fd: s.fd,
            events: libc::POLLOUT,
            revents: 0,
        }];
        crate::ready::poll::poll(&net.rt, &mut p, 100).unwrap();
        if p[0].revents & libc::POLLERR != 0 {
            err = s.so_error();
        }
    }
    assert_eq!(err, libc::ECONNREFUSED);
    // SO_ERROR is read once, as in the kernel.
    assert_eq!(s.so_error(), 0);
}

#[test]
fn bytes_arrive_in_order_and_exact_both_ways() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted_pair(&mut net);
    let up = pattern(300_000, 7);
    let down = pattern(200_000, 9);
    let sender = {
        let up = up.clone();
        std::thread::scope(|sc| {
            let h = sc.spawn(|| {
                let mut sent = 0;
                while sent < up.len() {
                    sent += c.send(&net, &up[sent..]).expect("send");
                }
            });
            let got = net.peer_read(peer, up.len());
            h.join().unwrap();
            got
        })
    };
    assert_eq!(sender, up);
    // More than both buffers hold: the program reads while the peer still writes.
    let got = std::thread::scope(|sc| {
        let h = sc.spawn(|| c.read_exact(&net, down.len()));
        net.peer_write(peer, &down);
        h.join().unwrap()
    });
    assert_eq!(got, down);
}

#[test]
fn recv_after_the_peers_fin_returns_what_was_sent_then_zero() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted_pair(&mut net);
    net.peer_write(peer, b"last words");
    net.peer(|s| s.tcp_shutdown_write(peer)).unwrap();
    assert_eq!(c.read_exact(&net, 10), b"last words");
    let mut buf = [0u8; 16];
    assert_eq!(c.recv(&net, &mut buf), Ok(0));
    assert_eq!(c.recv(&net, &mut buf), Ok(0), "EOF stays EOF");
}

#[test]
fn recv_after_the_peers_reset_is_econnreset() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted_pair(&mut net);
    net.peer(|s| s.abort(peer));
    let mut buf = [0u8; 16];
    assert_errno(c.recv(&net, &mut buf), libc::ECONNRESET);
}

#[test]
fn send_after_the_peers_reset_is_econnreset_then_epipe() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted_pair(&mut net);
    net.peer(|s| s.abort(peer));
    // Wait until the reset arrived (the socket reports an error).
    let end = Instant::now() + Duration::from_secs(5);
    while crate::ready::readiness(&c.ep, c.fd, false).unwrap_or(0) & libc::POLLERR == 0 {
        assert!(Instant::now() < end, "the reset arrives");
        net.nic.poll_now();
    }
    assert_errno(c.send(&net, b"x"), libc::ECONNRESET);
    assert_errno(c.send(&net, b"x"), libc::EPIPE);
}

#[test]
fn send_after_shutdown_wr_is_epipe_and_the_peer_sees_eof() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted_pair(&mut net);
    close::shutdown(&c.ep, c.fd, libc::SHUT_WR).unwrap();
    assert_errno(c.send(&net, b"x"), libc::EPIPE);
    net.until("the peer sees our FIN", |s| {
        let mut b = [0u8; 4];
        matches!(s.tcp_recv(peer, &mut b), Ok(0))
    });
    // The other direction still works.
    net.peer_write(peer, b"still open");
    assert_eq!(c.read_exact(&net, 10), b"still open");
}

#[test]
fn after_shutdown_rd_recv_returns_what_is_queued_then_zero_without_waiting() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted_pair(&mut net);
    net.peer_write(peer, b"queued");
    let end = Instant::now() + Duration::from_secs(5);
    while options::inq(&c.ep).unwrap() < 6 {
        assert!(Instant::now() < end, "the bytes arrive");
    }
    close::shutdown(&c.ep, c.fd, libc::SHUT_RD).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(c.recv(&net, &mut buf), Ok(6));
    assert_eq!(&buf[..6], b"queued");
    let t = Instant::now();
    assert_eq!(c.recv(&net, &mut buf), Ok(0));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "no wait after SHUT_RD"
    );
}

#[test]
fn shutdown_with_a_bad_how_is_einval_and_on_a_listener_enotconn() {
    let mut net = Net::new();
    let (c, _peer, l) = accepted_pair(&mut net);
    assert_errno(close::shutdown(&c.ep, c.fd, 7), libc::EINVAL);
    assert_errno(
        close::shutdown(&l.ep, l.fd, libc::SHUT_RDWR),
        libc::ENOTCONN,
    );
}

#[test]
fn so_rcvtimeo_ends_a_blocking_recv_with_eagain_after_the_timeout() {
    let mut net = Net::new();
    let (c, _peer, _l) = accepted_pair(&mut net);
    c.set_timeout(libc::SO_RCVTIMEO, Duration::from_millis(200));
    let t = Instant::now();
    let mut buf = [0u8; 16];
    assert_errno(c.recv(&net, &mut buf), libc::EAGAIN);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(2),
        "took {took:?}"
    );
}

#[test]
fn so_sndtimeo_ends_a_blocked_send_with_what_was_queued() {
    let mut net = Net::new();
    let (c, _peer, _l) = accepted_pair(&mut net);
    c.set_timeout(libc::SO_SNDTIMEO, Duration::from_millis(200));
    // The peer never reads: its window and our send buffer fill, then the timeout.
    let big = vec![0x5au8; 4 << 20];
    let t = Instant::now();
    let sent = c.send(&net, &big).expect("a partial count, not an error");
    assert!(sent > 0 && sent < big.len(), "sent {sent}");
    assert!(t.elapsed() >= Duration::from_millis(200));
    // Nothing more fits now: the next send times out with nothing queued.
    assert_errno(c.send(&net, &big), libc::EAGAIN);
}

#[test]
fn a_nonblocking_recv_with_nothing_there_is_eagain() {
    let mut net = Net::new();
    let (c, _peer, _l) = accepted_pair(&mut net);
    c.set_nonblocking(true);
    let mut buf = [0u8; 16];
    assert_errno(c.recv(&net, &mut buf), libc::EAGAIN);
    // MSG_DONTWAIT does the same on a blocking socket.
    c.set_nonblocking(false);
    assert_errno(
        c.recv_flags(&net, &mut buf, libc::MSG_DONTWAIT),
        libc::EAGAIN,
    );
}

#[test]
fn msg_waitall_waits_for_the_whole_buffer() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted_pair(&mut net);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let mut buf = [0u8; 12];
            let r = c.recv_flags(&net, &mut buf, libc::MSG_WAITALL).unwrap();
            (r.len, buf)
        });
        net.peer_write(peer, b"hello ");
        net.peer_write(peer, b"world!");
        let (n, buf) = h.join().unwrap();
        assert_eq!(n, 12);
        assert_eq!(&buf, b"hello world!");
    });
}

#[test]
fn connection_names_and_listener_options_are_the_kernels() {
    let mut net = Net::new();
    let (c, _peer, l) = accepted_pair(&mut net);
    assert_errno(options::getpeername(&l.ep, l.fd), libc::ENOTCONN);
    let mut v = [0u8; 4];
    options::getsockopt(&l.ep, l.fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, &mut v).unwrap();
    assert_eq!(i32::from_ne_bytes(v), 1);
    options::getsockopt(&c.ep, c.fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, &mut v).unwrap();
    assert_eq!(i32::from_ne_bytes(v), 0);
    assert_eq!(c.so_error(), 0);
    // An option the stack does not know is stored and answered by the kernel socket.
    let one = 1i32.to_ne_bytes();
    options::setsockopt(&c.ep, c.fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &one).unwrap();
    options::getsockopt(&c.ep, c.fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, &mut v).unwrap();
    assert_eq!(i32::from_ne_bytes(v), 1);
    // And a bad one gets the kernel's errno.
    assert_errno(
        options::setsockopt(&c.ep, c.fd, libc::SOL_SOCKET, 9999, &one),
        libc::ENOPROTOOPT,
    );
}

#[test]
fn fionread_counts_the_bytes_waiting() {
    let mut net = Net::new();
    let (c, peer, l) = accepted_pair(&mut net);
    net.peer_write(peer, &[1u8; 1000]);
    let end = Instant::now() + Duration::from_secs(5);
    while options::inq(&c.ep).unwrap() < 1000 {
        assert!(Instant::now() < end, "the bytes arrive");
    }
    assert_eq!(options::inq(&c.ep), Ok(1000));
    assert_errno(options::inq(&l.ep), libc::EINVAL);
}

#[test]
fn a_connection_closes_with_its_last_fd() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted_pair(&mut net);
    let copy = crate::fd::ops::dup(&crate::socket::SOCKETS, c.fd).unwrap();
    c.close();
    // Still open through the copy: data flows.
    let ep = crate::socket::get(copy).expect("the copy is accelerated");
    let s = Sock { fd: copy, ep };
    net.peer_write(peer, b"ping");
    assert_eq!(s.read_exact(&net, 4), b"ping");
    s.close();
    net.until("the peer sees our FIN", |st| {
        let mut b = [0u8; 4];
        matches!(st.tcp_recv(peer, &mut b), Ok(0))
    });
}

#[test]
fn a_connection_outlives_its_listener_and_keeps_its_flow() {
    let mut net = Net::new();
    let (c, peer, l) = accepted_pair(&mut net);
    let port = l.local().port();
    let flow = libaccel::xdp::FlowKey::listening(libaccel::xdp::Proto::Tcp, l.local());
    l.close();
    assert!(net.nic.lock().engine.backend().has_flow(&flow));
    net.peer_write(peer, b"after");
    assert_eq!(c.read_exact(&net, 5), b"after");
    c.close();
    // The last user released it: gone (now, the grace is for the closing handshake).
    let _ = port;
    assert_eq!(net.nic.lock().engine.shared_users(&flow), 0);
}

#[test]
fn an_active_open_has_a_flow_of_its_own_that_outlives_the_close_for_the_handshake() {
    let mut net = Net::new();
    let (s, peer) = connected_pair(&mut net);
    let flow = libaccel::xdp::FlowKey::connected(
        libaccel::xdp::Proto::Tcp,
        s.local(),
        SocketAddrV4::new(B, 0),
    );
    let remote =
        crate::addr::parse_v4(options::getpeername(&s.ep, s.fd).unwrap().as_bytes()).unwrap();
    let flow = libaccel::xdp::FlowKey {
        remote: Some(remote),
        ..flow
    };
    assert!(net.nic.lock().engine.backend().has_flow(&flow));
    s.close();
    net.until("the peer sees our FIN", |st| {
        let mut b = [0u8; 4];
        matches!(st.tcp_recv(peer, &mut b), Ok(0))
    });
    assert!(
        net.nic.lock().engine.backend().has_flow(&flow),
        "kept for the closing handshake"
    );
}

#[test]
fn bind_twice_is_einval_and_listen_on_udp_is_eopnotsupp() {
    let net = Net::new();
    let s = Sock::tcp(&net);
    s.bind(&net, A, 0).unwrap();
    assert_errno(s.bind(&net, A, 0), libc::EINVAL);
    let u = Sock::udp(&net);
    u.bind(&net, A, 0).unwrap();
    assert_errno(
        crate::socket::setup::listen(&net.rt, &u.ep, u.fd, 8),
        libc::EOPNOTSUPP,
    );
}

#[test]
fn a_socket_bound_elsewhere_goes_to_the_kernel_for_good() {
    let net = Net::new();
    let s = Sock::tcp(&net);
    s.bind(&net, std::net::Ipv4Addr::LOCALHOST, 0).unwrap();
    assert!(crate::socket::get(s.fd).is_none(), "forgotten by the table");
}
