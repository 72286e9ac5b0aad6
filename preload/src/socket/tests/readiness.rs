//! poll and epoll on accelerated sockets: level-triggered, edge-triggered and one-shot, with
//! the kernel's timeouts.

use std::time::{Duration, Instant};

use super::{assert_errno, Net, Sock};
use crate::ready::{epoll, poll};
use crate::sys::kernel;

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// An epoll instance the test owns.
struct Epoll(std::os::fd::OwnedFd);

impl Epoll {
    fn new() -> Epoll {
        Epoll(kernel::epoll_create().expect("epoll_create"))
    }

    fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }

    fn add(&self, s: &Sock, events: u32, data: u64) {
        let ev = libc::epoll_event { events, u64: data };
        epoll::epoll_ctl(self.fd(), libc::EPOLL_CTL_ADD, s.fd, s.ep.clone(), Some(ev)).unwrap();
    }

    fn wait(&self, net: &Net, timeout_ms: i32) -> Vec<(u32, u64)> {
        self.wait_max(net, timeout_ms, 8)
    }

    /// epoll_wait with room for `max` events.
    fn wait_max(&self, net: &Net, timeout_ms: i32, max: usize) -> Vec<(u32, u64)> {
        let mut evs = vec![libc::epoll_event { events: 0, u64: 0 }; max];
        let n = epoll::epoll_wait(&net.rt, self.fd(), &mut evs, timeout_ms).unwrap();
        evs[..n].iter().map(|e| (e.events, e.u64)).collect()
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        epoll::forget(self.fd());
    }
}

fn accepted(net: &mut Net) -> (Sock, stack::SocketId, Sock) {
    let l = Sock::listener(net, 8);
    let peer = net.peer_connect(l.local());
    let (c, _) = l.accept(net).unwrap();
    (c, peer, l)
}

#[test]
fn poll_reports_pollin_when_data_arrives_while_it_waits() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted(&mut net);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let mut p = [pollfd(c.fd, libc::POLLIN)];
            let n = poll::poll(&net.rt, &mut p, 5000).unwrap();
            (n, p[0].revents)
        });
        net.peer_write(peer, b"wake");
        let (n, rev) = h.join().unwrap();
        assert_eq!(n, 1);
        assert!(rev & libc::POLLIN != 0);
    });
}

#[test]
fn poll_with_nothing_ready_times_out_with_zero() {
    let mut net = Net::new();
    let (c, _peer, _l) = accepted(&mut net);
    let mut p = [pollfd(c.fd, libc::POLLIN)];
    let t = Instant::now();
    assert_eq!(poll::poll(&net.rt, &mut p, 150), Ok(0));
    assert!(t.elapsed() >= Duration::from_millis(150));
    assert_eq!(p[0].revents, 0);
    // A zero timeout answers at once.
    assert_eq!(poll::poll(&net.rt, &mut p, 0), Ok(0));
}

#[test]
fn poll_reports_the_peers_fin_as_pollin_and_pollrdhup() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted(&mut net);
    net.peer(|s| s.tcp_shutdown_write(peer)).unwrap();
    let mut p = [pollfd(c.fd, libc::POLLIN | libc::POLLRDHUP)];
    assert_eq!(poll::poll(&net.rt, &mut p, 5000), Ok(1));
    assert!(p[0].revents & libc::POLLIN != 0);
    assert!(p[0].revents & libc::POLLRDHUP != 0);
}

#[test]
fn poll_reports_a_reset_as_pollerr_and_pollhup_even_unasked() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted(&mut net);
    net.peer(|s| s.abort(peer));
    let mut p = [pollfd(c.fd, 0)];
    assert_eq!(poll::poll(&net.rt, &mut p, 5000), Ok(1));
    assert_eq!(
        p[0].revents & (libc::POLLERR | libc::POLLHUP),
        libc::POLLERR | libc::POLLHUP
    );
}

#[test]
fn level_triggered_epoll_reports_until_the_data_is_read() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted(&mut net);
    let ep = Epoll::new();
    ep.add(&c, libc::EPOLLIN as u32, 42);
    net.peer_write(peer, b"abc");
    assert_eq!(ep.wait(&net, 5000), vec![(libc::EPOLLIN as u32, 42)]);
    assert_eq!(ep.wait(&net, 0), vec![(libc::EPOLLIN as u32, 42)], "again");
    let mut buf = [0u8; 8];
    assert_eq!(c.recv(&net, &mut buf), Ok(3));
    assert_eq!(ep.wait(&net, 50), vec![], "nothing once read");
}

#[test]
fn edge_triggered_epoll_reports_arrivals_not_unread_data() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted(&mut net);
    let ep = Epoll::new();
    ep.add(&c, (libc::EPOLLIN | libc::EPOLLET) as u32, 7);
    net.peer_write(peer, b"one");
    assert_eq!(ep.wait(&net, 5000), vec![(libc::EPOLLIN as u32, 7)]);
    // The data stays unread: level-triggered would report it on every call. Edge-triggered
    // reports again only after the stack changed this socket (accel's edge is any change the
    // stack notes for it: an ACK going out may repeat the event, once it is quiet it stops).
    let end = Instant::now() + Duration::from_secs(5);
    while !ep.wait(&net, 20).is_empty() {
        assert!(Instant::now() < end, "edge-triggered stops repeating");
    }
    assert_eq!(ep.wait(&net, 50), vec![], "quiet: no event for unread data");
    net.peer_write(peer, b"two");
    assert_eq!(ep.wait(&net, 5000), vec![(libc::EPOLLIN as u32, 7)]);
    let mut buf = [0u8; 8];
    assert_eq!(c.recv(&net, &mut buf), Ok(6), "both arrivals are there");
}

#[test]
fn oneshot_epoll_reports_once_until_rearmed() {
    let mut net = Net::new();
    let (c, peer, _l) = accepted(&mut net);
    let ep = Epoll::new();
    ep.add(&c, (libc::EPOLLIN | libc::EPOLLONESHOT) as u32, 9);
    net.peer_write(peer, b"x");
    assert_eq!(ep.wait(&net, 5000), vec![(libc::EPOLLIN as u32, 9)]);
    assert_eq!(ep.wait(&net, 50), vec![], "disarmed");
    let ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLONESHOT) as u32,
        u64: 10,
    };
    epoll::epoll_ctl(ep.fd(), libc::EPOLL_CTL_MOD, c.fd, c.ep.clone(), Some(ev)).unwrap();
    assert_eq!(ep.wait(&net, 5000), vec![(libc::EPOLLIN as u32, 10)]);
}

#[test]
fn a_listener_is_readable_in_epoll_when_a_connection_waits() {
    let mut net = Net::new();
    let l = Sock::listener(&net, 8);
    let ep = Epoll::new();
    ep.add(&l, libc::EPOLLIN as u32, 1);
    assert_eq!(ep.wait(&net, 50), vec![]);
    net.peer_connect(l.local());
    assert_eq!(ep.wait(&net, 5000), vec![(libc::EPOLLIN as u32, 1)]);
    l.accept(&net).unwrap();
}

#[test]
fn epoll_ctl_answers_as_the_kernel_does() {
    let mut net = Net::new();
    let (c, _peer, _l) = accepted(&mut net);
    let ep = Epoll::new();
    ep.add(&c, libc::EPOLLIN as u32, 1);
    let ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: 1,
    };
    assert_eq!(
        epoll::epoll_ctl(ep.fd(), libc::EPOLL_CTL_ADD, c.fd, c.ep.clone(), Some(ev)),
        Err(crate::errno::Errno(libc::EEXIST))
    );
    epoll::epoll_ctl(ep.fd(), libc::EPOLL_CTL_DEL, c.fd, c.ep.clone(), None).unwrap();
    assert_eq!(
        epoll::epoll_ctl(ep.fd(), libc::EPOLL_CTL_DEL, c.fd, c.ep.clone(), None),
        Err(crate::errno::Errno(libc::ENOENT))
    );
    // Not an epoll fd: EINVAL.
    let not_epoll = kernel::eventfd().unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(
        epoll::epoll_ctl(
            not_epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            c.fd,
            c.ep.clone(),
            Some(ev)
        ),
        Err(crate::errno::Errno(libc::EINVAL))
    );
}

#[test]
fn epoll_wait_with_nothing_ready_times_out_with_zero() {
    let mut net = Net::new();
    let (c, _peer, _l) = accepted(&mut net);
    let ep = Epoll::new();
    ep.add(&c, libc::EPOLLIN as u32, 1);
    let t = Instant::now();
    assert_eq!(ep.wait(&net, 150), vec![]);
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[test]
fn a_sleeping_epoll_wait_wakes_when_data_arrives() {
    // The balanced profile spins 50 us, then sleeps: the pump's poll must wake it.
    let mut net = Net::new();
    let (c, peer, _l) = accepted(&mut net);
    let ep = Epoll::new();
    ep.add(&c, libc::EPOLLIN as u32, 5);
    std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let t = Instant::now();
            (ep.wait(&net, 10_000), t.elapsed())
        });
        // Once it sleeps (registered as a sleeper on the interface), data arrives.
        let end = Instant::now() + Duration::from_secs(5);
        while net.nic.sleepers() == 0 {
            assert!(Instant::now() < end, "the waiter goes to sleep");
            std::thread::yield_now();
        }
        net.peer_write(peer, b"zz");
        let (got, took) = h.join().unwrap();
        assert_eq!(got, vec![(libc::EPOLLIN as u32, 5)]);
        assert!(took < Duration::from_secs(5), "woken, not timed out");
    });
}

#[test]
fn edge_triggered_epoll_is_not_woken_by_another_sockets_traffic() {
    let mut net = Net::new();
    let l = Sock::listener(&net, 8);
    let (pa, pb) = (net.peer_connect(l.local()), net.peer_connect(l.local()));
    let (a, _) = l.accept(&net).unwrap();
    let (b, _) = l.accept(&net).unwrap();
    let ep = Epoll::new();
    ep.add(&a, (libc::EPOLLIN | libc::EPOLLET) as u32, 1);
    ep.add(&b, (libc::EPOLLIN | libc::EPOLLET) as u32, 2);
    net.peer_write(pa, b"for a");
    assert_eq!(ep.wait(&net, 5000), vec![(libc::EPOLLIN as u32, 1)]);
    let end = Instant::now() + Duration::from_secs(5);
    while !ep.wait(&net, 20).is_empty() {
        assert!(Instant::now() < end, "edge-triggered stops repeating");
    }
    // Traffic on b only: a's unread data is not reported again.
    for _ in 0..3 {
        net.peer_write(pb, b"for b");
        let got = ep.wait(&net, 5000);
        assert_eq!(got, vec![(libc::EPOLLIN as u32, 2)], "only b");
    }
}

#[test]
fn a_full_epoll_wait_serves_the_ready_members_in_turn() {
    // More members ready than maxevents: like the kernel's, each wait reports those that
    // waited longest, so none starves while the others stay ready.
    let mut net = Net::new();
    let l = Sock::listener(&net, 8);
    let peers: Vec<_> = (0..5).map(|_| net.peer_connect(l.local())).collect();
    let socks: Vec<_> = (0..5).map(|_| l.accept(&net).unwrap().0).collect();
    let ep = Epoll::new();
    for (i, s) in socks.iter().enumerate() {
        ep.add(s, libc::EPOLLIN as u32, i as u64);
    }
    for p in &peers {
        net.peer_write(*p, b"x");
    }
    // Every member ready before the turns are counted.
    let end = Instant::now() + Duration::from_secs(5);
    while socks.iter().any(|s| {
        let mut p = [pollfd(s.fd, libc::POLLIN)];
        poll::poll(&net.rt, &mut p, 0) != Ok(1)
    }) {
        assert!(Instant::now() < end, "all five readable");
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let got = ep.wait_max(&net, 5000, 2);
        assert_eq!(got.len(), 2);
        seen.extend(got.into_iter().map(|(_, d)| d));
    }
    let mut first_five = seen[..5].to_vec();
    first_five.sort();
    assert_eq!(first_five, [0, 1, 2, 3, 4], "in turn: {seen:?}");
    // The one served first comes round again.
    assert_eq!(seen[5], seen[0], "{seen:?}");
}

#[test]
fn a_socket_that_connects_after_joining_the_set_is_reported() {
    let mut net = Net::new();
    let (pl, to) = net.peer_listen(4);
    let c = Sock::tcp(&net);
    c.set_nonblocking(true);
    let ep = Epoll::new();
    ep.add(&c, libc::EPOLLOUT as u32, 3);
    assert_errno(c.connect(&net, to), libc::EINPROGRESS);
    net.peer_accept(pl);
    assert_eq!(ep.wait(&net, 5000), vec![(libc::EPOLLOUT as u32, 3)]);
    assert_eq!(c.so_error(), 0);
}
