//! An accelerated program SIGKILLed in the middle of a transfer: the peer gets a reset (or a
//! timeout), never hangs; within a second the port is the kernel's again (a kernel listener
//! binds it and a client from B reaches it); nothing is left on the interface. For accel-echo
//! (the stack without the preload) and for socat under accel-run (the preload).
//! Runs as root; a setup failure fails the test.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use accel_tests::apps::{accelerated, need, App, Side};
use accel_tests::{start_echo, wait_helper_gone, xdp_attached, Topology};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(30);

/// How the peer's transfer ended.
#[derive(Debug)]
struct Ended {
    moved: u64,
    /// What the reader saw, and what the writer saw (the kernel reports a reset to the first
    /// call on the socket; the other one then sees the end of the stream or a broken pipe).
    read_error: ErrorKind,
    write_error: ErrorKind,
    at: Instant,
}

/// A kernel client in B that streams to an echo server and reads the echo until the
/// connection fails; `moved` counts echoed bytes as they come back.
fn stream_until_error(
    topo: &Topology,
    server: SocketAddrV4,
    moved: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Ended> {
    let stream = topo
        .in_b(move || TcpStream::connect_timeout(&server.into(), T))
        .unwrap()
        .expect("connect to the accelerated server");
    // A hang would show as these timeouts (WouldBlock / TimedOut), which the test refuses.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::spawn(move || {
        let mut w = stream.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let buf = vec![0x5au8; 16 * 1024];
            loop {
                if let Err(e) = w.write_all(&buf) {
                    return e.kind();
                }
            }
        });
        let mut r = stream;
        let mut buf = vec![0u8; 64 * 1024];
        let error = loop {
            match r.read(&mut buf) {
                Ok(0) => break ErrorKind::UnexpectedEof,
                Ok(n) => {
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => break e.kind(),
            }
        };
        let at = Instant::now();
        // The reader saw the end; the writer sees it on its next write (or already has).
        let _ = r.shutdown(std::net::Shutdown::Both);
        let write_error = writer.join().unwrap_or(ErrorKind::Other);
        Ended {
            moved: moved.load(Ordering::Relaxed),
            read_error: error,
            write_error,
            at,
        }
    })
}

/// Waits until the client has had `bytes` echoed.
#[track_caller]
fn wait_moved(moved: &AtomicU64, bytes: u64) {
    let deadline = Instant::now() + T;
    while moved.load(Ordering::Relaxed) < bytes {
        assert!(Instant::now() < deadline, "the transfer did not get going");
        std::thread::sleep(Duration::from_millis(5)); // polling a counter
    }
}

/// After the kill: the peer's end, the port back with the kernel, a clean interface.
#[track_caller]
fn check_after_kill(
    topo: &Topology,
    port: u16,
    killed: Instant,
    client: std::thread::JoinHandle<Ended>,
) {
    // The port is the kernel's again: a listener binds it and B reaches it, within 1 s.
    let addr = SocketAddrV4::new(topo.addr_a, port);
    let back = loop {
        let bound = topo
            .in_a(move || -> std::io::Result<(TcpListener, UdpSocket)> {
                Ok((TcpListener::bind(addr)?, UdpSocket::bind(addr)?))
            })
            .unwrap();
        if let Ok((listener, _udp)) = bound {
            // The port is free in the kernel as soon as the process is dead, but its flow
            // steers to its (dead) AF_XDP socket until the accel-helper, woken by the death,
            // removes it: a SYN sent in between is lost. So B tries fresh connections, each
            // given 100 ms, until one reaches the kernel listener (within the 1 s below).
            let mut c = loop {
                let tried = topo
                    .in_b(move || {
                        TcpStream::connect_timeout(&addr.into(), Duration::from_millis(100))
                    })
                    .unwrap();
                match tried {
                    Ok(c) => break c,
                    Err(e) => assert!(
                        killed.elapsed() < Duration::from_secs(5),
                        "B cannot reach the kernel listener on port {port} 5 s after the kill: {e}"
                    ),
                }
            };
            // The connection B made (an attempt that gave up may have completed meanwhile).
            let me = c.local_addr().unwrap();
            let mut conn = loop {
                let (conn, from) = listener.accept().expect("accept from B");
                if from == me {
                    break conn;
                }
            };
            c.write_all(b"kernel").unwrap();
            let mut got = [0u8; 6];
            conn.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"kernel");
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "port {port} still taken 5 s after the kill: {:?}",
            bound.err()
        );
        std::thread::sleep(Duration::from_millis(10)); // retrying a bind, not synchronising
    };
    eprintln!("port {port} served by the kernel {back:?} after the kill");
    assert!(
        back < Duration::from_secs(1),
        "the port took {back:?} to come back"
    );

    let end = client.join().expect("client thread");
    let after = end.at.saturating_duration_since(killed);
    eprintln!("peer: {end:?}, {after:?} after the kill");
    assert!(
        end.moved >= 2 << 20,
        "killed before the transfer got going: {end:?}"
    );
    assert!(
        [end.read_error, end.write_error].contains(&ErrorKind::ConnectionReset),
        "the peer's transfer ended without a reset: {end:?}"
    );
    assert!(after < Duration::from_secs(3), "the reset took {after:?}");
    wait_helper_gone(&topo.ns_a, Duration::from_secs(5));
    assert!(
        !xdp_attached(&topo.ns_a, &topo.if_a),
        "XDP program left on {}",
        topo.if_a
    );
}

#[test]
fn killed_accel_echo_resets_its_peer_and_gives_the_port_back() {
    const PORT: u16 = 7011;
    let topo = Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    let mut echo = start_echo(&topo, PORT, &[]);
    let server = SocketAddrV4::new(topo.addr_a, PORT);
    let idle = idle_peer_with_keepalive(&topo, server);
    let moved = Arc::new(AtomicU64::new(0));
    let client = stream_until_error(
        &topo,
        SocketAddrV4::new(topo.addr_a, PORT),
        Arc::clone(&moved),
    );
    wait_moved(&moved, 2 << 20);
    // Timed from the signal: what the peer and the port see includes the reaping.
    let killed = Instant::now();
    let (status, _, _) = echo.stop(Signal::SIGKILL, T);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "accel-echo was not killed: {status}"
    );
    check_after_kill(&topo, PORT, killed, client);
    // A peer with nothing to send learns it from its keepalive probe, which A's kernel resets.
    let (kind, at) = idle.join().expect("idle peer");
    let after = at.saturating_duration_since(killed);
    eprintln!("idle peer with keepalive: {kind:?} {after:?} after the kill");
    assert_eq!(
        kind,
        ErrorKind::ConnectionReset,
        "the idle peer was not reset"
    );
    assert!(
        after < Duration::from_secs(5),
        "the idle peer took {after:?}"
    );
}

/// A connection from B that sends nothing and waits to read, with keepalive probes every
/// second of idleness; returns how its read ended and when.
fn idle_peer_with_keepalive(
    topo: &Topology,
    server: SocketAddrV4,
) -> std::thread::JoinHandle<(ErrorKind, Instant)> {
    use nix::sys::socket::{setsockopt, sockopt};
    let stream = topo
        .in_b(move || TcpStream::connect_timeout(&server.into(), T))
        .unwrap()
        .expect("connect the idle peer");
    setsockopt(&stream, sockopt::KeepAlive, &true).unwrap();
    setsockopt(&stream, sockopt::TcpKeepIdle, &1).unwrap();
    setsockopt(&stream, sockopt::TcpKeepInterval, &1).unwrap();
    setsockopt(&stream, sockopt::TcpKeepCount, &3).unwrap();
    // Beyond the keepalive's reach: a read still blocked then is a hang.
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    std::thread::spawn(move || {
        let mut s = stream;
        let mut b = [0u8; 16];
        let kind = match s.read(&mut b) {
            Ok(n) => panic!("the idle peer read {n} bytes"),
            Err(e) => e.kind(),
        };
        (kind, Instant::now())
    })
}

#[test]
fn killed_program_under_accel_run_resets_its_peer_and_gives_the_port_back() {
    const PORT: u16 = 7012;
    let topo = Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    let socat = need("socat", "socat");
    let listen = format!("TCP4-LISTEN:{PORT},bind={},reuseaddr", topo.addr_a);
    let mut app = App::start(
        "socat echo under accel-run",
        accelerated(&topo, Side::A, None, &socat, &["-d", "-d", &listen, "PIPE"]),
    );
    app.wait_for("listening on", T);
    let moved = Arc::new(AtomicU64::new(0));
    let client = stream_until_error(
        &topo,
        SocketAddrV4::new(topo.addr_a, PORT),
        Arc::clone(&moved),
    );
    wait_moved(&moved, 2 << 20);
    let killed = Instant::now();
    let fin = app.stop(Signal::SIGKILL, T);
    eprintln!("socat: {}", fin.describe());
    check_after_kill(&topo, PORT, killed, client);
}
