//! TCP repair: an established connection moves from one kernel socket to another with bytes
//! in flight both ways, and the peer never notices (byte-exact, no reset, no early EOF).
//! Needs root (CAP_NET_ADMIN) and builds its own two-namespace topology.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use accel_tools::topology::Topology;
use libaccel::repair;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(131).wrapping_add(seed) ^ (i >> 10) as u8)
        .collect()
}

#[test]
fn a_connection_moves_to_another_socket_with_bytes_in_flight_both_ways() {
    let topo = Topology::new(1).expect("topology (needs root)");
    let server_addr = SocketAddrV4::new(topo.addr_a, 7911);
    let up = pattern(200_000, 3);
    let down = pattern(3_000_000, 7);
    let (listening_tx, listening_rx) = mpsc::channel::<()>();
    let (up_sent_tx, up_sent_rx) = mpsc::channel::<()>();
    let (moved_tx, moved_rx) = mpsc::channel::<()>();

    // The server, in A.
    let ns_a = topo.ns_a.clone();
    let (up_s, down_s) = (up.clone(), down.clone());
    let server = std::thread::spawn(move || {
        Topology::in_netns(&ns_a, move || {
            let l = TcpListener::bind(server_addr).expect("bind");
            // Big enough for everything the client sends before the move.
            nix::sys::socket::setsockopt(&l, nix::sys::socket::sockopt::RcvBuf, &(1 << 20))
                .expect("SO_RCVBUF");
            listening_tx.send(()).unwrap();
            let (old, _) = l.accept().expect("accept");
            up_sent_rx.recv().unwrap();
            // Fill the send queue: the client is not reading, so part of it stays unsent and
            // part sent and not acknowledged.
            old.set_nonblocking(true).unwrap();
            let mut written = 0;
            loop {
                match (&old).write(&down_s[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("write: {e}"),
                }
            }
            // Every byte of `up` is in the receive queue before the move.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let mut probe = vec![0u8; up_s.len()];
                let got = nix::sys::socket::recv(
                    old.as_raw_fd(),
                    &mut probe,
                    nix::sys::socket::MsgFlags::MSG_PEEK | nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                )
                .unwrap_or(0);
                if got == up_s.len() {
                    break;
                }
                assert!(Instant::now() < deadline, "the client's bytes arrive");
                std::thread::yield_now();
            }
            // The move.
            let snap = repair::dump(old.as_fd()).expect("dump");
            assert!(!snap.recv_queue.is_empty() && !snap.send_queue.is_empty());
            let fresh: OwnedFd = nix::sys::socket::socket(
                nix::sys::socket::AddressFamily::Inet,
                nix::sys::socket::SockType::Stream,
                nix::sys::socket::SockFlag::SOCK_CLOEXEC,
                None,
            )
            .expect("socket");
            // Gone first (in repair mode: no FIN, no RST), or its 4-tuple is still taken.
            drop(old);
            repair::restore(fresh.as_fd(), &snap, false).expect("restore");
            let mut new = TcpStream::from(fresh);
            moved_tx.send(()).unwrap();
            assert_eq!(
                new.local_addr().unwrap().to_string(),
                server_addr.to_string()
            );
            new.write_all(&down_s[written..]).expect("the rest of down");
            new.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            new.read_to_end(&mut got).expect("up, to the client's FIN");
            assert!(
                got == up_s,
                "up arrived exact ({} of {} bytes)",
                got.len(),
                up_s.len()
            );
            (snap.recv_queue.len(), snap.send_queue.len(), snap.sent)
        })
        .unwrap()
    });

    // The client, in B.
    let ns_b = topo.ns_b.clone();
    let (up_c, down_c) = (up.clone(), down.clone());
    let client = std::thread::spawn(move || {
        Topology::in_netns(&ns_b, move || {
            listening_rx.recv().unwrap();
            let mut c = TcpStream::connect(server_addr).expect("connect");
            nix::sys::socket::setsockopt(&c, nix::sys::socket::sockopt::RcvBuf, &65536)
                .expect("SO_RCVBUF");
            c.write_all(&up_c).unwrap();
            up_sent_tx.send(()).unwrap();
            moved_rx.recv().unwrap();
            // (Not before the move: a FIN received would make the server's side CLOSE-WAIT.)
            c.shutdown(std::net::Shutdown::Write).unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).expect("down, to the server's FIN");
            assert!(
                got == down_c,
                "down arrived exact ({} of {} bytes)",
                got.len(),
                down_c.len()
            );
        })
        .unwrap()
    });
    client.join().unwrap();
    let (inq, outq, sent) = server.join().unwrap();
    eprintln!("moved with {inq} bytes received unread, {outq} queued to send ({sent} sent, unacknowledged)");
}
