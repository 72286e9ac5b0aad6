//! accel-echo end to end: accel-echo on AF_XDP in namespace A, kernel clients in namespace B.
//! Runs as root (CI is root); a setup failure fails the test, it never skips.

use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use accel_tests::{parse_counters, peer, start_echo, wait_helper_gone, xdp_attached, Topology};
use accel_tools::topology::Options;
use nix::sys::signal::Signal;

const PORT: u16 = 7007;
const T: Duration = Duration::from_secs(60);

#[track_caller]
fn topo(queues: u32) -> Topology {
    Topology::new(queues).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"))
}

/// The four workloads of the acceptance list, run from namespace B against `server`.
fn workloads(topo: &Topology, server: SocketAddrV4) {
    // 10 MB over one connection, every byte checked, checksums equal.
    let r = topo
        .in_b(move || peer::tcp_echo(server, 10_000_000, 1, T))
        .unwrap()
        .expect("10 MB TCP echo");
    assert_eq!(r.bytes, 10_000_000);
    assert_eq!(r.sent_checksum, r.echoed_checksum);

    // 100 concurrent connections, 64 KiB each.
    let r = topo
        .in_b(move || {
            let handles: Vec<_> = (0..100u64)
                .map(|i| std::thread::spawn(move || peer::tcp_echo(server, 64 * 1024, 100 + i, T)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect::<Vec<_>>()
        })
        .unwrap();
    for (i, res) in r.into_iter().enumerate() {
        let e = res.unwrap_or_else(|e| panic!("connection {i}: {e:#}"));
        assert_eq!(e.bytes, 64 * 1024, "connection {i}");
        assert_eq!(e.sent_checksum, e.echoed_checksum, "connection {i}");
    }

    // 10,000 datagrams, none corrupted, none lost, none duplicated.
    let r = topo
        .in_b(move || peer::udp_echo(server, 10_000, 512, 32, Duration::from_secs(5)))
        .unwrap()
        .expect("UDP echo");
    assert_eq!(r.corrupted, 0, "corrupted datagrams");
    assert_eq!(r.duplicated, 0, "duplicated datagrams");
    assert_eq!(r.received, 10_000, "echoed datagrams (lost {})", r.lost);

    // 1,000 connect/send/close in a row.
    topo.in_b(move || peer::connect_send_close(server, 1_000, T))
        .unwrap()
        .expect("1,000 connections");
}

/// `peer_offload_off`: B's TX checksum offload is off, so every frame carries a complete
/// checksum; otherwise (the kernel's default) B's frames carry partial ones.
fn check_served_by_accel(topo: &Topology, queues: u32, peer_offload_off: bool) {
    let server = SocketAddrV4::new(topo.addr_a, PORT);
    let mut echo = start_echo(topo, PORT, &[]);
    let before = topo.snmp_a().expect("snmp");
    workloads(topo, server);
    let after = topo.snmp_a().expect("snmp");
    let (status, lines, stderr) = echo.stop(Signal::SIGTERM, T);
    assert!(status.success(), "accel-echo exit {status}: {stderr}");
    let c = parse_counters(&lines);
    let d = after.since(&before);
    eprintln!("kernel counters in A during the workloads: {d:?}");
    eprintln!("accel-echo at exit:\n{}", lines.join("\n"));
    // The kernel in A carried none of it: no IPv4 packet reached it at all.
    assert_eq!(
        d.ip_in_receives, 0,
        "kernel IP InReceives moved in A: {d:?}"
    );
    assert_eq!(d.tcp_in_segs, 0, "kernel TCP InSegs moved in A: {d:?}");
    assert_eq!(
        d.tcp_passive_opens, 0,
        "kernel TCP PassiveOpens moved in A: {d:?}"
    );
    assert_eq!(
        d.udp_in_datagrams, 0,
        "kernel UDP InDatagrams moved in A: {d:?}"
    );
    assert_eq!(d.udp_no_ports, 0, "kernel UDP NoPorts moved in A: {d:?}");
    // accel-echo did.
    assert!(
        c.get("echo.connections_accepted").copied().unwrap_or(0) >= 1 + 100 + 1000,
        "{c:?}"
    );
    assert!(
        c.get("echo.udp_datagrams_echoed").copied().unwrap_or(0) >= 10_000,
        "{c:?}"
    );
    assert!(
        c.get("echo.tcp_bytes_echoed").copied().unwrap_or(0) >= 10_000_000 + 100 * 65536 + 1000 * 9,
        "{c:?}"
    );
    // Checksums: none bad; partial ones when B offloads them. A complete checksum equals the
    // pseudo-header sum once in 65536 packets (it is accepted either way, counted as partial),
    // so without offload a few may be counted: far fewer than one in a thousand.
    assert_eq!(c.get("stack.rx_drop_bad_checksum"), Some(&0), "{c:?}");
    let partial = c.get("stack.rx_partial_checksum").copied().unwrap_or(0);
    let frames = c.get("stack.rx_frames").copied().unwrap_or(0);
    if peer_offload_off {
        assert!(
            partial * 1000 <= frames,
            "complete checksums counted as partial: {c:?}"
        );
    } else {
        assert!(
            partial * 2 > frames,
            "B's partial checksums not seen: {c:?}"
        );
    }
    let mut busy_queues = 0;
    for q in 0..queues {
        // No UMEM frame leaked: each is in a ring, the free pool or a pending list.
        assert_eq!(
            c.get(&format!("queue{q}.frames_accounted")),
            Some(&1),
            "queue {q}: {c:?}"
        );
        let rx = c.get(&format!("queue{q}.rx_frames")).copied().unwrap_or(0);
        if rx > 0 {
            busy_queues += 1;
        }
    }
    // Every queue carried flows (the peer's flow hash spreads 1,100 connections over all).
    assert_eq!(busy_queues, queues, "queues with traffic: {c:?}");
    wait_helper_gone(&topo.ns_a, Duration::from_secs(5));
    assert!(
        !xdp_attached(&topo.ns_a, &topo.if_a),
        "XDP program left on {} after exit",
        topo.if_a
    );
}

/// The one test with B's checksum offload off: the complete-checksum path end to end.
#[test]
fn echo_served_by_accel_on_one_queue_with_complete_checksums() {
    let t = Topology::with(Options {
        queues: Some(1),
        peer_checksum_offload_off: true,
    })
    .unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    check_served_by_accel(&t, 1, true);
}

#[test]
fn echo_served_by_accel_on_four_queues() {
    let t = topo(4);
    check_served_by_accel(&t, 4, false);
}

/// A veth made without `numrxqueues` (as Docker makes them) can have a queue per CPU but uses
/// one; accel serves the one in use.
#[test]
fn echo_served_by_accel_on_a_default_veth() {
    let t = Topology::with(Options::default())
        .unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    check_served_by_accel(&t, 1, false);
}

/// A datagram whose IP header carries options (the XDP filter reads its ports at a variable
/// offset then, through a helper) is served by accel like any other.
#[test]
fn a_datagram_with_ip_options_is_served_by_accel() {
    let t = topo(1);
    let mut echo = start_echo(&t, PORT, &[]);
    let before = t.snmp_a().expect("snmp");
    // IP_OPTIONS: three NOPs and an end-of-list, so the header is 24 bytes (IHL 6).
    let out = t
        .command_b("socat")
        .args([
            "-d",
            "-d",
            "-d",
            "-d",
            "-t2",
            "-",
            &format!("UDP4:{}:{PORT},ip-options=x01010100", t.addr_a),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(b"options\n")?;
            c.wait_with_output()
        })
        .expect("socat (Debian package socat)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(", 0, 4, {0x10101}, 4)") && err.contains("setsockopt() -> 0"),
        "socat did not set IP_OPTIONS: {err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "options\n", "{err}");
    let d = t.snmp_a().expect("snmp").since(&before);
    let (_, lines, _) = echo.stop(Signal::SIGTERM, T);
    let c = parse_counters(&lines);
    assert_eq!(d.ip_in_receives, 0, "A's kernel saw the datagram: {d:?}");
    assert_eq!(c.get("echo.udp_datagrams_echoed"), Some(&1), "{c:?}");
}

#[test]
fn kernel_keeps_serving_other_traffic_in_a() {
    let t = topo(1);
    let _echo = start_echo(&t, PORT, &[]);
    // ping from B reaches A's kernel.
    let st = t
        .command_b("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "2", &t.addr_a.to_string()])
        .output()
        .expect("ping");
    assert!(
        st.status.success(),
        "ping A from B failed: {}",
        String::from_utf8_lossy(&st.stdout)
    );
    // A kernel TCP server on another port in A serves B.
    let listener = t
        .in_a(|| TcpListener::bind("0.0.0.0:7100"))
        .unwrap()
        .expect("kernel listener in A");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 5];
        std::io::Read::read_exact(&mut s, &mut buf).expect("read");
        std::io::Write::write_all(&mut s, &buf).expect("write");
    });
    let addr = SocketAddrV4::new(t.addr_a, 7100);
    let got = t
        .in_b(move || -> std::io::Result<[u8; 5]> {
            let mut s = TcpStream::connect_timeout(&addr.into(), T)?;
            std::io::Write::write_all(&mut s, b"hello")?;
            let mut buf = [0u8; 5];
            std::io::Read::read_exact(&mut s, &mut buf)?;
            Ok(buf)
        })
        .unwrap()
        .expect("kernel server in A");
    assert_eq!(&got, b"hello");
    server.join().expect("server thread");
}

/// After accel-echo exits, a kernel listener can take the port within a second and B reaches it.
fn port_returns_to_kernel(sig: Signal) {
    let t = topo(1);
    let mut echo = start_echo(&t, PORT, &[]);
    // Prove the port was served by accel first.
    let server = SocketAddrV4::new(t.addr_a, PORT);
    t.in_b(move || peer::connect_send_close(server, 1, T))
        .unwrap()
        .expect("echo before exit");
    let _ = echo.stop(sig, T);
    let exited = Instant::now();
    let listener = t
        .in_a(move || loop {
            match TcpListener::bind(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, PORT)) {
                Ok(l) => return Ok(l),
                Err(e) if exited.elapsed() < Duration::from_secs(1) => {
                    let _ = e;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        })
        .unwrap()
        .expect("kernel listener on the port within a second");
    let acceptor = std::thread::spawn(move || listener.accept().map(|_| ()));
    let reached = t
        .in_b(move || loop {
            match TcpStream::connect_timeout(&server.into(), Duration::from_millis(200)) {
                Ok(_) => return Ok(exited.elapsed()),
                Err(e) if exited.elapsed() < Duration::from_secs(1) => {
                    let _ = e;
                }
                Err(e) => return Err(e),
            }
        })
        .unwrap()
        .expect("B reaches the kernel listener within a second");
    assert!(reached <= Duration::from_secs(1), "took {reached:?}");
    acceptor.join().expect("acceptor").expect("accept");
    wait_helper_gone(&t.ns_a, Duration::from_secs(5));
    assert!(
        !xdp_attached(&t.ns_a, &t.if_a),
        "XDP program left behind after {sig:?}"
    );
}

#[test]
fn port_returns_to_kernel_after_sigterm() {
    port_returns_to_kernel(Signal::SIGTERM);
}

#[test]
fn port_returns_to_kernel_after_sigkill() {
    port_returns_to_kernel(Signal::SIGKILL);
}

/// Runs `f` in namespace B on a thread pinned to `cpu` (with `steer_b_tx_by_cpu`, what it
/// sends lands on A's RX queue `cpu`).
fn on_queue<F, R>(t: &Topology, cpu: usize, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    t.in_b(move || {
        let mut set = nix::sched::CpuSet::new();
        set.set(cpu).expect("cpu index");
        nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
            .unwrap_or_else(|e| panic!("cannot pin to CPU {cpu} (the test needs 2 CPUs): {e}"));
        f()
    })
    .expect("namespace B")
}

/// Processes accelerating on one interface share the XDP program, each on the queues it asks
/// for: a flow arriving on a queue its process does not serve goes to the kernel, never to
/// another process; a third process on an already served queue shares it and is served too;
/// each keeps serving while the others come and go; the interface is left as it was when all
/// are gone, and the helper with them.
#[test]
fn processes_share_the_filter_and_the_queues() {
    let t = topo(2);
    t.steer_b_tx_by_cpu().expect("XPS in B");
    let first = SocketAddrV4::new(t.addr_a, PORT);
    let second = SocketAddrV4::new(t.addr_a, PORT + 1);
    let third = SocketAddrV4::new(t.addr_a, PORT + 2);
    let mut one = start_echo(&t, PORT, &["--queue", "0"]);
    let mut two = start_echo(&t, PORT + 1, &["--queue", "1"]);
    // A third process on queue 0, which the first one serves already: it shares it.
    let mut three = start_echo(&t, PORT + 2, &["--queue", "0"]);

    for (cpu, server) in [(0, first), (1, second), (0, third)] {
        let r = on_queue(&t, cpu, move || {
            peer::udp_echo(server, 200, 64, 8, Duration::from_secs(5))
        })
        .expect("udp");
        assert_eq!(r.received, 200, "{server} via queue {cpu}: {r:?}");
    }
    // The first process's flow arriving on the second process's queue: not redirected there.
    let before = t.snmp_a().expect("snmp");
    let r = on_queue(&t, 1, move || {
        peer::udp_echo(first, 10, 64, 10, Duration::from_millis(300))
    })
    .expect("udp");
    assert_eq!(
        r.received, 0,
        "a flow of process one was served on process two's queue: {r:?}"
    );
    let d = t.snmp_a().expect("snmp").since(&before);
    assert_eq!(
        d.ip_in_delivers, 10,
        "the misplaced datagrams should reach A's kernel: {d:?}"
    );

    let (status, lines, err) = one.stop(Signal::SIGTERM, T);
    assert!(status.success(), "{err}");
    assert_eq!(
        parse_counters(&lines).get("echo.udp_datagrams_echoed"),
        Some(&200),
        "{lines:?}"
    );
    assert!(
        xdp_attached(&t.ns_a, &t.if_a),
        "the program left while the other processes still use it"
    );
    for (cpu, server) in [(1, second), (0, third)] {
        let r = on_queue(&t, cpu, move || {
            peer::udp_echo(server, 200, 64, 8, Duration::from_secs(5))
        })
        .expect("udp");
        assert_eq!(r.received, 200, "{server} after the first left: {r:?}");
    }
    for (p, want) in [(&mut two, 400), (&mut three, 400)] {
        let (status, lines, err) = p.stop(Signal::SIGTERM, T);
        assert!(status.success(), "{err}");
        let c = parse_counters(&lines);
        assert_eq!(c.get("echo.udp_datagrams_echoed"), Some(&want), "{lines:?}");
        assert_eq!(
            c.get("stack.udp_rx_drop_no_socket"),
            Some(&0),
            "a process saw another's datagrams: {lines:?}"
        );
    }
    wait_helper_gone(&t.ns_a, Duration::from_secs(5));
    assert!(
        !xdp_attached(&t.ns_a, &t.if_a),
        "XDP program left behind after all exited"
    );
}
