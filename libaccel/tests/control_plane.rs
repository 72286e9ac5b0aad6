//! Control plane and port reservation against a real kernel: two network namespaces joined by a
//! veth pair (docs/ARCHITECTURE.md, "Testing"). Needs root; fails, never skips, when it cannot set up.
//!
//! Every test builds its own namespaces (named with the test's tag and the pid) and runs the code
//! under test on a thread that joined namespace A with setns(CLONE_NEWNET); `ip -n` drives the
//! kernel from outside. The guard deletes both namespaces (and with them the veth) on drop, panic
//! included.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::time::{Duration, Instant};

use libaccel::control::{self, ControlPlane, Error};
use libaccel::ports::{reserve, Proto};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, CloneFlags};
use stack::link::{NextHop, Resolver};

const A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const A_MAC: [u8; 6] = [0x02, 0xac, 0xce, 0x10, 0x00, 0x01];
const B_MAC: [u8; 6] = [0x02, 0xac, 0xce, 0x10, 0x00, 0x02];
const DEADLINE: Duration = Duration::from_secs(10);

fn mac_str(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Runs `ip ARGS`, panicking with its stderr when it fails.
#[track_caller]
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run `ip {}`: {e} (is iproute2 installed?)",
            args.join(" ")
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed: {} (these tests need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces, `a` and `b`, joined by veth `if_a` <-> `if_b`:
/// A 198.18.0.1/24, MAC A_MAC, MTU 1400, 4 RX / 2 TX queues; B 198.18.0.2/24, MAC B_MAC.
struct Topology {
    a: String,
    b: String,
    if_a: String,
    if_b: String,
}

impl Topology {
    #[track_caller]
    fn new(tag: &str) -> Topology {
        let pid = std::process::id();
        let t = Topology {
            a: format!("accel-t-{pid}-ctl{tag}-a"),
            b: format!("accel-t-{pid}-ctl{tag}-b"),
            // IFNAMSIZ: at most 15 characters.
            if_a: format!("{tag}a{pid}"),
            if_b: format!("{tag}b{pid}"),
        };
        assert!(t.if_a.len() <= 15, "interface name {} too long", t.if_a);
        // The guard exists before the first namespace does, so a failed step still cleans up.
        ip(&["netns", "add", &t.a]);
        ip(&["netns", "add", &t.b]);
        ip(&[
            "link",
            "add",
            &t.if_a,
            "netns",
            &t.a,
            "numrxqueues",
            "4",
            "numtxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            &t.if_b,
            "netns",
            &t.b,
        ]);
        ip(&[
            "-n",
            &t.a,
            "link",
            "set",
            &t.if_a,
            "address",
            &mac_str(A_MAC),
            "mtu",
            "1400",
        ]);
        ip(&[
            "-n",
            &t.b,
            "link",
            "set",
            &t.if_b,
            "address",
            &mac_str(B_MAC),
            "mtu",
            "1400",
        ]);
        ip(&["-n", &t.a, "addr", "add", "198.18.0.1/24", "dev", &t.if_a]);
        ip(&["-n", &t.b, "addr", "add", "198.18.0.2/24", "dev", &t.if_b]);
        for (ns, dev) in [(&t.a, &t.if_a), (&t.b, &t.if_b)] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        t
    }

    /// Runs `f` on a thread inside namespace A and returns its result (its panic, re-raised).
    #[track_caller]
    fn in_a<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.a);
        let thread = std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns({path}): {e}"));
            f()
        });
        thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Refreshes `cp` until `cond` holds, waiting on its notification socket; panics at DEADLINE.
#[track_caller]
fn wait_for(cp: &mut ControlPlane, what: &str, mut cond: impl FnMut(&mut ControlPlane) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        cp.refresh().expect("refresh");
        if cond(cp) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        // Wake on the next notification, or after a while for conditions that need us to act.
        let ms = left.min(Duration::from_millis(50)).as_millis() as u16;
        let mut fds = [PollFd::new(cp.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(ms)).expect("poll");
    }
}

#[test]
fn open_reads_the_interface() {
    let t = Topology::new("op");
    let line = ip(&["-n", &t.a, "-o", "link", "show", "dev", &t.if_a]);
    let index: u32 = line.split(':').next().unwrap().trim().parse().unwrap();
    let name = t.if_a.clone();
    let cp = t.in_a(move || ControlPlane::open(&name).expect("open"));
    let i = cp.interface();
    assert_eq!(i.index, index, "index (ip says: {line})");
    assert_eq!(i.name, t.if_a);
    assert_eq!(i.mac, A_MAC);
    assert_eq!(i.mtu, 1400);
    assert!(i.up && i.ethernet);
    assert_eq!(i.addrs, vec![(A_IP, 24)]);
    assert_eq!((i.rx_queues, i.tx_queues), (4, 2));
    let r = cp.route(B_IP).expect("on-link route to the peer");
    assert_eq!(
        (r.gateway, r.prefix, r.src),
        (None, (Ipv4Addr::new(198, 18, 0, 0), 24), Some(A_IP))
    );
    assert_eq!(
        cp.route(Ipv4Addr::new(198, 19, 0, 1)),
        None,
        "no default route in A"
    );

    // interfaces() lists the same link (and lo) in that namespace.
    let all = t.in_a(|| control::interfaces().expect("interfaces"));
    let mine = all
        .iter()
        .find(|i| i.index == index)
        .expect("veth in interfaces()");
    assert_eq!(
        (mine.mac, mine.mtu, &mine.addrs),
        (A_MAC, 1400, &vec![(A_IP, 24)])
    );
    assert!(all.iter().any(|i| i.name == "lo" && !i.ethernet));
}

#[test]
fn refresh_follows_kernel_changes() {
    let t = Topology::new("rf");
    let name = t.if_a.clone();
    let mut cp = t.in_a(move || ControlPlane::open(&name).expect("open"));
    let g0 = cp.changes();
    assert!(!cp.refresh().unwrap(), "nothing changed yet");

    ip(&["-n", &t.a, "addr", "add", "198.18.1.1/24", "dev", &t.if_a]);
    ip(&["-n", &t.a, "link", "set", "dev", &t.if_a, "mtu", "1300"]);
    ip(&[
        "-n",
        &t.a,
        "route",
        "add",
        "198.19.0.0/16",
        "via",
        "198.18.0.2",
        "dev",
        &t.if_a,
    ]);
    let new = (Ipv4Addr::new(198, 18, 1, 1), 24);
    wait_for(&mut cp, "address, MTU and route", |cp| {
        cp.interface().addrs.contains(&new)
            && cp.interface().mtu == 1300
            && cp.route(Ipv4Addr::new(198, 19, 3, 4)).is_some()
    });
    assert!(cp.changes() > g0);
    assert_eq!(
        cp.route(Ipv4Addr::new(198, 19, 3, 4)).unwrap().gateway,
        Some(B_IP)
    );

    ip(&["-n", &t.a, "addr", "del", "198.18.1.1/24", "dev", &t.if_a]);
    ip(&["-n", &t.a, "link", "set", "dev", &t.if_a, "down"]);
    wait_for(&mut cp, "address removal and link down", |cp| {
        !cp.interface().addrs.contains(&new) && !cp.interface().up
    });
    assert_eq!(cp.next_hop(B_IP), NextHop::Unreachable, "interface down");
}

/// More notifications than the socket buffer holds between two refreshes: the kernel drops
/// them (ENOBUFS) and the mirror must re-read everything rather than miss changes.
#[test]
fn overrun_rereads_everything() {
    let t = Topology::new("ov");
    let name = t.if_a.clone();
    let mut cp = t.in_a(move || ControlPlane::open(&name).expect("open"));
    // 20000 host routes in 198.19.0.0/16 (never used for traffic), added while we do not read.
    let n: u32 = 20_000;
    let mut batch = String::new();
    for i in 0..n {
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i);
        batch.push_str(&format!(
            "route add {dst}/32 via 198.18.0.2 dev {}\n",
            t.if_a
        ));
    }
    let file = std::env::temp_dir().join(format!("{}.batch", t.a));
    std::fs::write(&file, batch).unwrap();
    ip(&["-n", &t.a, "-batch", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    let last = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + n - 1);
    wait_for(&mut cp, "all routes", |cp| {
        cp.route(last).is_some_and(|r| r.prefix == (last, 32))
    });
    assert!(
        cp.resyncs() >= 1,
        "{n} notifications did not overrun; the test proves nothing"
    );
    for i in (0..n).step_by(997) {
        let dst = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 0)) + i);
        assert_eq!(
            cp.route(dst).map(|r| (r.gateway, r.prefix)),
            Some((Some(B_IP), (dst, 32)))
        );
    }
    // Still following changes after the re-read.
    ip(&["-n", &t.a, "link", "set", "dev", &t.if_a, "mtu", "1280"]);
    wait_for(&mut cp, "MTU after re-read", |cp| {
        cp.interface().mtu == 1280
    });
}

#[test]
fn kernel_resolves_on_request() {
    let t = Topology::new("rs");
    let name = t.if_a.clone();
    let mut cp = t.in_a(move || ControlPlane::open(&name).expect("open"));
    assert_eq!(
        cp.neighbour(B_IP),
        None,
        "fresh namespace has no neighbours"
    );
    // The first lookup asks the kernel (NTF_USE) and reports Pending; the kernel ARPs, B
    // answers, and the neighbour notification makes the next lookups return the MAC.
    assert_eq!(cp.next_hop(B_IP), NextHop::Pending);
    wait_for(&mut cp, "the kernel to resolve the peer", |cp| {
        cp.next_hop(B_IP) == NextHop::Mac(B_MAC)
    });
    assert_eq!(cp.neighbour(B_IP), Some(B_MAC));
    let shown = ip(&["-n", &t.a, "neigh", "show", "198.18.0.2", "dev", &t.if_a]);
    assert!(
        shown.contains(&mac_str(B_MAC)),
        "kernel neighbour table: {shown}"
    );
    // No route: unreachable, nothing asked.
    assert_eq!(
        cp.next_hop(Ipv4Addr::new(198, 19, 0, 1)),
        NextHop::Unreachable
    );
}

#[test]
fn open_explains_unusable_interfaces() {
    let t = Topology::new("er");
    let pid = std::process::id();
    let missing = format!("nosuch{pid}");
    let dummy = format!("erd{pid}");
    // A second veth pair inside A (no dummy driver in this kernel): Ethernet, down, no address.
    ip(&[
        "-n",
        &t.a,
        "link",
        "add",
        &dummy,
        "type",
        "veth",
        "peer",
        "name",
        &format!("erp{pid}"),
    ]);
    let (m, d) = (missing.clone(), dummy.clone());
    let results = t.in_a(move || {
        let missing = ControlPlane::open(&m).err();
        let lo = ControlPlane::open("lo").err();
        let down = ControlPlane::open(&d).err();
        (missing, lo, down)
    });
    match results.0 {
        Some(e @ Error::NoSuchInterface { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&missing) && msg.contains("ip link"), "{msg}");
        }
        other => panic!("expected NoSuchInterface, got {other:?}"),
    }
    assert!(
        matches!(results.1, Some(Error::NotEthernet { .. })),
        "{:?}",
        results.1
    );
    match results.2 {
        Some(e @ Error::InterfaceDown { .. }) => {
            assert!(
                e.to_string().contains(&format!("ip link set {dummy} up")),
                "{e}"
            )
        }
        other => panic!("expected InterfaceDown, got {other:?}"),
    }
    ip(&["-n", &t.a, "link", "set", &dummy, "up"]);
    let d = dummy.clone();
    match t.in_a(move || ControlPlane::open(&d).err()) {
        Some(e @ Error::NoIpv4Address { .. }) => assert!(e.to_string().contains("ip addr add")),
        other => panic!("expected NoIpv4Address, got {other:?}"),
    }
}

#[test]
fn reservations_and_kernel_sockets_exclude_each_other() {
    let t = Topology::new("pt");
    t.in_a(|| {
        // A kernel listener holds a port: reserving it fails like a second kernel bind would.
        let l = TcpListener::bind((A_IP, 0)).unwrap();
        let std::net::SocketAddr::V4(held) = l.local_addr().unwrap() else {
            unreachable!()
        };
        let e = reserve(Proto::Tcp, held).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
        let u = UdpSocket::bind((A_IP, 0)).unwrap();
        let std::net::SocketAddr::V4(held) = u.local_addr().unwrap() else {
            unreachable!()
        };
        let e = reserve(Proto::Udp, held).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");

        // A reservation holds a port: kernel binds to it (specific or wildcard) fail.
        for proto in [Proto::Tcp, Proto::Udp] {
            let r = reserve(proto, SocketAddrV4::new(A_IP, 0)).unwrap();
            assert_ne!(r.local().port(), 0, "port 0 gives an ephemeral port");
            assert_eq!(*r.local().ip(), A_IP);
            for addr in [
                r.local(),
                SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, r.local().port()),
            ] {
                let e = match proto {
                    Proto::Tcp => TcpListener::bind(addr).map(drop).unwrap_err(),
                    Proto::Udp => UdpSocket::bind(addr).map(drop).unwrap_err(),
                };
                assert_eq!(
                    e.raw_os_error(),
                    Some(libc::EADDRINUSE),
                    "{proto} {addr}: {e}"
                );
            }
            // Reserving an explicit free port works and gives exactly that port.
            let port = r.local().port();
            drop(r);
            let again = reserve(proto, SocketAddrV4::new(A_IP, port)).unwrap();
            assert_eq!(again.local(), SocketAddrV4::new(A_IP, port));
        }
    });
}
