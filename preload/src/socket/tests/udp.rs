//! UDP: bind, send, receive, connected sockets, truncation, as the kernel answers them.

use std::net::SocketAddrV4;

use super::{assert_errno, Net, Sock, A, B};
use crate::addr::parse_v4;

/// A UDP socket on the peer.
fn peer_udp(net: &mut Net) -> (stack::SocketId, SocketAddrV4) {
    let at = SocketAddrV4::new(B, net.peer_port());
    (net.peer(|s| s.udp_bind(at)).expect("peer bind"), at)
}

#[track_caller]
fn peer_recv(net: &Net, id: stack::SocketId) -> (Vec<u8>, SocketAddrV4) {
    let mut got = None;
    net.until("a datagram at the peer", |s| {
        let mut buf = [0u8; 2048];
        got = s
            .udp_recv_from(id, &mut buf)
            .ok()
            .map(|(n, from)| (buf[..n].to_vec(), from));
        got.is_some()
    });
    got.unwrap()
}

#[test]
fn recvfrom_gets_the_datagram_and_its_sender() {
    let mut net = Net::new();
    let u = Sock::udp(&net);
    u.bind(&net, A, 0).unwrap();
    let (p, from) = peer_udp(&mut net);
    net.peer(|s| s.udp_send_to(p, b"hello", u.local())).unwrap();
    let mut buf = [0u8; 64];
    let r = u.recv_flags(&net, &mut buf, 0).unwrap();
    assert_eq!(&buf[..r.len], b"hello");
    assert_eq!(parse_v4(r.from.unwrap().as_bytes()).unwrap(), from);
    assert!(!r.truncated);
}

#[test]
fn sendto_reaches_the_peer_from_the_bound_port() {
    let mut net = Net::new();
    let u = Sock::udp(&net);
    u.bind(&net, A, 0).unwrap();
    let (p, at) = peer_udp(&mut net);
    assert_eq!(u.send_to(&net, b"datagram", at), Ok(8));
    let (data, from) = peer_recv(&net, p);
    assert_eq!(data, b"datagram");
    assert_eq!(from, u.local());
}

#[test]
fn a_fresh_socket_that_sends_binds_through_the_interface() {
    let mut net = Net::new();
    let u = Sock::udp(&net);
    let (p, at) = peer_udp(&mut net);
    assert_eq!(u.send_to(&net, b"first", at), Ok(5));
    assert!(!u.ep.is_fresh(), "accelerated by the send");
    let (data, from) = peer_recv(&net, p);
    assert_eq!(data, b"first");
    assert_eq!(*from.ip(), A);
    assert_ne!(from.port(), 0);
}

#[test]
fn a_connected_socket_receives_only_from_its_peer() {
    let mut net = Net::new();
    let u = Sock::udp(&net);
    let (p1, at1) = peer_udp(&mut net);
    let (p2, _at2) = peer_udp(&mut net);
    u.connect(&net, at1).unwrap();
    let local = u.local();
    net.peer(|s| s.udp_send_to(p2, b"stranger", local)).unwrap();
    net.peer(|s| s.udp_send_to(p1, b"friend", local)).unwrap();
    let mut buf = [0u8; 64];
    let n = u.recv(&net, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"friend");
    // send without an address goes to the connected peer.
    assert_eq!(u.send(&net, b"reply"), Ok(5));
    assert_eq!(peer_recv(&net, p1).0, b"reply");
}

#[test]
fn a_datagram_larger_than_the_buffer_is_truncated_and_says_so() {
    let mut net = Net::new();
    let u = Sock::udp(&net);
    u.bind(&net, A, 0).unwrap();
    let (p, _) = peer_udp(&mut net);
    let local = u.local();
    net.peer(|s| s.udp_send_to(p, &[7u8; 100], local)).unwrap();
    net.peer(|s| s.udp_send_to(p, &[8u8; 100], local)).unwrap();
    let mut small = [0u8; 10];
    let r = u.recv_flags(&net, &mut small, 0).unwrap();
    assert_eq!((r.len, r.truncated), (10, true));
    // MSG_TRUNC returns the datagram's real length.
    let r = u.recv_flags(&net, &mut small, libc::MSG_TRUNC).unwrap();
    assert_eq!((r.len, r.truncated), (100, true));
    assert_eq!(
        small, [8u8; 10],
        "the rest of the first datagram was dropped"
    );
}

#[test]
fn send_without_a_destination_on_an_unconnected_socket_is_edestaddrreq() {
    let net = Net::new();
    let u = Sock::udp(&net);
    u.bind(&net, A, 0).unwrap();
    assert_errno(u.send(&net, b"where to?"), libc::EDESTADDRREQ);
}

#[test]
fn a_nonblocking_recv_with_no_datagram_is_eagain() {
    let net = Net::new();
    let u = Sock::udp(&net);
    u.bind(&net, A, 0).unwrap();
    u.set_nonblocking(true);
    let mut buf = [0u8; 16];
    assert_errno(u.recv(&net, &mut buf), libc::EAGAIN);
}

#[test]
fn a_datagram_larger_than_the_mtu_is_emsgsize() {
    let mut net = Net::new();
    let u = Sock::udp(&net);
    u.bind(&net, A, 0).unwrap();
    let (_p, at) = peer_udp(&mut net);
    assert_errno(u.send_to(&net, &[0u8; 2000], at), libc::EMSGSIZE);
}

#[test]
fn closing_a_udp_socket_removes_its_flow_and_frees_the_port() {
    let net = Net::new();
    let u = Sock::udp(&net);
    u.bind(&net, A, 0).unwrap();
    let local = u.local();
    let flow = libaccel::xdp::FlowKey::listening(libaccel::xdp::Proto::Udp, local);
    assert!(net.nic.lock().engine.backend().has_flow(&flow));
    u.close();
    assert!(!net.nic.lock().engine.backend().has_flow(&flow));
    // The same port binds again, on the kernel and in the stack.
    let again = Sock::udp(&net);
    again.bind(&net, A, local.port()).unwrap();
    assert!(net.nic.lock().engine.backend().has_flow(&flow));
}
