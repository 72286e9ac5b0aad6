//! Exhaustion (issue 13): the fd limit, a full listen backlog, the stack's socket memory, a
//! peer that never reads, and 10,000 connections. Each is answered as the kernel answers it
//! (its errno, SYNs dropped rather than reset, sends that wait), nothing crashes, and service
//! resumes once the load drops.
//!
//! tests/c/limits_server.c is the server, on the kernel or under accel-run in A, driven line by
//! line on its stdin; clients are kernel sockets in B. Runs as root; a setup failure fails
//! the test. Every wait is bounded.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use accel_tests::apps::{
    accel_stats_for, accelerated, assert_accelerated, compile_c, kernel, snmp_a, App, Behaviour,
    Finished, KernelServer, Side, TempDir,
};
use accel_tests::Topology;

const START: Duration = Duration::from_secs(20);
/// How long one command of the server may take (SYN retransmissions included).
const STEP: Duration = Duration::from_secs(30);

#[track_caller]
fn topo() -> Topology {
    Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"))
}

/// limits_server, answering commands on its stdin.
struct Server {
    app: App,
    input: File,
}

impl Server {
    #[track_caller]
    fn start(
        t: &Topology,
        accel: bool,
        exe: &std::path::Path,
        port: u16,
        backlog: u32,
        env: &[(&str, &str)],
    ) -> Server {
        let args = [t.addr_a.to_string(), port.to_string(), backlog.to_string()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = if accel {
            accelerated(t, Side::A, None, exe, &args)
        } else {
            kernel(t, Side::A, exe, &args)
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let name = if accel {
            "limits_server (under accel-run)"
        } else {
            "limits_server (kernel)"
        };
        let mut app = App::start_io(name, cmd, Some(File::from(r)), None);
        app.wait_for("listening", START);
        Server {
            app,
            input: File::from(w),
        }
    }

    /// Sends `cmd` and returns the next line containing `answer`.
    #[track_caller]
    fn ask(&mut self, cmd: &str, answer: &str) -> String {
        writeln!(self.input, "{cmd}").expect("the server's stdin");
        self.app.wait_for_next(answer, STEP)
    }

    /// Ends every connection cleanly while the server runs: the clients close, the server
    /// reads each EOF and closes too, then quits (nothing of these connections reaches the
    /// kernel once the server is gone).
    #[track_caller]
    fn close_all_and_quit(mut self, clients: Vec<TcpStream>) -> Finished {
        let n = clients.len();
        drop(clients);
        assert_eq!(self.ask("eof", "eof "), format!("eof {n}"));
        assert_eq!(self.ask("close 1000000", "closed"), format!("closed {n}"));
        self.quit()
    }

    #[track_caller]
    fn quit(mut self) -> Finished {
        writeln!(self.input, "quit").expect("the server's stdin");
        self.app.finish(STEP).success()
    }
}

/// `n` non-blocking connects from B to `to` (each EINPROGRESS or done).
#[track_caller]
fn connect_from_b(t: &Topology, to: SocketAddrV4, n: usize) -> Vec<TcpStream> {
    t.in_b(move || {
        use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
        (0..n)
            .map(|i| {
                let fd: OwnedFd = socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                    None,
                )
                .expect("socket in B");
                match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)) {
                    Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => {}
                    Err(e) => panic!("connect {i} to {to}: {e}"),
                }
                TcpStream::from(fd)
            })
            .collect()
    })
    .expect("namespace B")
}

/// How many of `conns` completed their handshake (getpeername works once established).
fn established(conns: &[TcpStream]) -> usize {
    conns.iter().filter(|c| c.peer_addr().is_ok()).count()
}

/// Waits (bounded) until `cond` holds, looking every 20 ms.
#[track_caller]
fn until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        // The interval of a bounded poll of the kernel's socket state.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The kernel's TCP counters in namespace B, by name (/proc/net/snmp).
fn tcp_b(t: &Topology) -> HashMap<String, u64> {
    let out =
        accel_tools::topology::run("ip", &["netns", "exec", &t.ns_b, "cat", "/proc/net/snmp"])
            .expect("/proc/net/snmp in B");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    let [head, vals] = lines[..] else {
        panic!("no Tcp lines in B's /proc/net/snmp:\n{text}");
    };
    head.split_whitespace()
        .zip(vals.split_whitespace())
        .skip(1)
        .map(|(k, v)| (k.to_string(), v.parse().unwrap_or(0)))
        .collect()
}

/// Counter-wise `after - before` of the names given.
fn grew(before: &HashMap<String, u64>, after: &HashMap<String, u64>, name: &str) -> u64 {
    after[name] - before[name]
}

/// Byte `i` of the stream limits_server sends to the peer on `port` (its `pattern`).
fn pattern(port: u16, i: u64) -> u8 {
    (i.wrapping_mul(7) + u64::from(port) * 13 + (i >> 10)) as u8
}

/// Writes `msg` on every connection and checks each echoes it back.
#[track_caller]
fn echo_through(srv: &mut Server, conns: &mut [TcpStream], msg: &[u8]) {
    for c in conns.iter_mut() {
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(STEP)).unwrap();
        c.write_all(msg).expect("client write");
    }
    let n = conns.len();
    srv.ask("echo", "echoed");
    for (i, c) in conns.iter_mut().enumerate() {
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back)
            .unwrap_or_else(|e| panic!("echo on connection {i} of {n}: {e}"));
        assert_eq!(back, msg, "echo on connection {i}");
    }
}

// ---------------------------------------------------------------------------------------------
// The fd limit
// ---------------------------------------------------------------------------------------------

/// The fd-limit scenario on one stack; returns the answers to compare.
fn fd_limit_run(
    t: &Topology,
    exe: &std::path::Path,
    accel: bool,
    port: u16,
) -> (Vec<String>, Finished) {
    let to = SocketAddrV4::new(t.addr_a, port);
    let mut srv = Server::start(t, accel, exe, port, 16, &[]);
    let mut first = connect_from_b(t, to, 1);
    srv.ask("accept 1", "accepted 1");
    let mut answers = Vec::new();
    answers.push(srv.ask("limit 64", "limit"));
    answers.push(srv.ask("fill", "filled"));
    // A connection waits in the queue while the process has no fd left.
    let mut second = connect_from_b(t, to, 1);
    until("the second connection is established", STEP, || {
        established(&second) == 1
    });
    answers.push(srv.ask("accept_once", "accept ret="));
    answers.push(srv.ask("accept_nb", "accept ret="));
    answers.push(srv.ask("socket_once", "socket ret="));
    // The queued connection was not reset: nothing to read yet, no error.
    let mut b = [0u8; 1];
    second[0].set_nonblocking(true).unwrap();
    match second[0].read(&mut b) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the queued connection saw {other:?} while accept had no fd"),
    }
    // fds come back: accept takes the connection that waited.
    answers.push(srv.ask("release 4", "released"));
    answers.push(srv.ask("accept_once", "accept ret="));
    // A blocking receive on a new thread while the process is at its limit again.
    answers.push(srv.ask("fill", "filled"));
    srv.ask("recv_thread", "recv_waiting");
    first[0].write_all(b"ping").unwrap();
    answers.push(srv.app.wait_for_next("recv ret=", STEP));
    srv.ask("join", "joined");
    answers.push(srv.ask("release 8", "released"));
    let mut both: Vec<TcpStream> = first.into_iter().chain(second).collect();
    // The first connection's "ping" was read by the thread; one message each now.
    echo_through(&mut srv, &mut both, b"after the limit");
    (answers, srv.close_all_and_quit(both))
}

/// At the fd limit, accept (with a connection waiting, blocking or not) and socket fail with
/// EMFILE as on the kernel; the waiting connection is neither lost nor reset, and accept
/// takes it once fds are free. A blocking receive on a thread that starts at the limit waits
/// and gets its data (accel's own wake-up fd cannot be made then).
#[test]
fn the_fd_limit_gives_emfile_as_the_kernel_does_and_service_resumes() {
    let t = topo();
    let dir = TempDir::new("limits_fd");
    let exe = compile_c("limits_server", dir.path());
    let (on_kernel, _) = fd_limit_run(&t, &exe, false, 7301);
    assert_eq!(
        on_kernel,
        vec![
            "limit 64",
            "filled errno=EMFILE",
            "accept ret=-1 errno=EMFILE",
            "accept ret=-1 errno=EMFILE",
            "socket ret=-1 errno=EMFILE",
            "released 4",
            "accept ret=fd errno=0",
            "filled errno=EMFILE",
            "recv ret=4 errno=0",
            "released 8",
        ],
        "the kernel's answers (what this test expects of accel)"
    );
    // Its own topology, so the kernel run's closing packets cannot count.
    let t = topo();
    let before = snmp_a(&t);
    let (on_accel, fin) = fd_limit_run(&t, &exe, true, 7302);
    let d = snmp_a(&t).since(&before);
    assert_eq!(on_accel, on_kernel, "accel answers as the kernel does");
    assert_accelerated("fd limit", &t.if_a, &fin, &d, &["tcp_accepted"]);
    let s = accel_stats_for("fd limit", &t.if_a, &fin);
    assert_eq!(s.get("tcp_accepted"), 2, "{:?}", s.counters);
}

// ---------------------------------------------------------------------------------------------
// A full listen backlog
// ---------------------------------------------------------------------------------------------

/// With the backlog full and nobody accepting, further SYNs are dropped: the clients are not
/// reset, they retransmit, and once the program accepts they all get in and work.
#[test]
fn a_full_backlog_drops_syns_without_a_reset_and_accept_resumes() {
    let t = topo();
    let dir = TempDir::new("limits_backlog");
    let exe = compile_c("limits_server", dir.path());
    let port = 7310;
    let to = SocketAddrV4::new(t.addr_a, port);
    let before = snmp_a(&t);
    let mut srv = Server::start(&t, true, &exe, port, 2, &[]);
    let b0 = tcp_b(&t);
    let mut clients = connect_from_b(&t, to, 6);
    until("two connections fill the backlog", STEP, || {
        established(&clients) == 2
    });
    // The others keep trying: B retransmits their SYNs, no RST comes back.
    until("B retransmits the dropped SYNs", STEP, || {
        grew(&b0, &tcp_b(&t), "RetransSegs") >= 4
    });
    assert_eq!(established(&clients), 2, "the backlog of 2 took more");
    for c in &clients {
        assert!(c.take_error().unwrap().is_none(), "a client saw an error");
    }
    srv.ask("accept 6", "accepted 6");
    assert_eq!(established(&clients), 6);
    echo_through(&mut srv, &mut clients, b"in at last");
    let b1 = tcp_b(&t);
    assert_eq!(
        grew(&b0, &b1, "AttemptFails"),
        0,
        "a SYN was answered with RST"
    );
    assert_eq!(grew(&b0, &b1, "EstabResets"), 0);
    let fin = srv.close_all_and_quit(clients);
    let d = snmp_a(&t).since(&before);
    assert_accelerated("backlog", &t.if_a, &fin, &d, &["syn_dropped_backlog_full"]);
    let s = accel_stats_for("backlog", &t.if_a, &fin);
    assert_eq!(s.get("tcp_accepted"), 6, "{:?}", s.counters);
}

// ---------------------------------------------------------------------------------------------
// The stack's socket memory
// ---------------------------------------------------------------------------------------------

/// With the stack's socket memory used up (`ACCEL_MEM_MAX`), a listener drops further SYNs
/// (the clients retransmit, nobody is reset) and new active opens and UDP sockets are served
/// by the kernel instead; once connections close, the waiting clients get in.
#[test]
fn out_of_socket_memory_syns_wait_and_new_sockets_go_to_the_kernel() {
    let t = topo();
    let dir = TempDir::new("limits_mem");
    let exe = compile_c("limits_server", dir.path());
    let port = 7320;
    let to = SocketAddrV4::new(t.addr_a, port);
    let echo = KernelServer::start(&t, 7321, Behaviour::Echo);
    let b_addr = t.addr_b;
    let udp_echo = t
        .in_b(move || UdpSocket::bind(SocketAddrV4::new(b_addr, 7322)))
        .expect("namespace B")
        .expect("UDP echo in B");
    let udp_thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        udp_echo.set_read_timeout(Some(STEP)).unwrap();
        let (n, from) = udp_echo.recv_from(&mut buf).expect("a datagram from A");
        udp_echo.send_to(&buf[..n], from).unwrap();
    });
    // 8 KiB per TCP socket; room for four.
    let env = [
        ("ACCEL_TCP_RMEM", "4K"),
        ("ACCEL_TCP_WMEM", "4K"),
        ("ACCEL_UDP_RMEM", "4K"),
        ("ACCEL_UDP_WMEM", "4K"),
        ("ACCEL_MEM_MAX", "32K"),
    ];
    let a0 = snmp_a(&t);
    let mut srv = Server::start(&t, true, &exe, port, 16, &env);
    let b0 = tcp_b(&t);
    let mut clients = connect_from_b(&t, to, 6);
    until("four connections take the memory", STEP, || {
        established(&clients) == 4
    });
    until("B retransmits the dropped SYNs", STEP, || {
        grew(&b0, &tcp_b(&t), "RetransSegs") >= 2
    });
    assert_eq!(established(&clients), 4);
    srv.ask("accept 4", "accepted 4");
    // No room for these on the stack: the kernel serves them.
    let a1 = snmp_a(&t);
    assert_eq!(
        srv.ask(&format!("connect {} 7321", t.addr_b), "connect "),
        "connect ok"
    );
    assert_eq!(srv.ask(&format!("udp {} 7322", t.addr_b), "udp "), "udp ok");
    udp_thread.join().unwrap();
    let a2 = snmp_a(&t).since(&a1);
    assert_eq!(
        a2.tcp_active_opens, 1,
        "the kernel made the connection: {a2:?}"
    );
    assert_eq!(
        a2.udp_out_datagrams, 1,
        "the kernel sent the datagram: {a2:?}"
    );
    assert_eq!(echo.accepted(), 1);
    // Two connections end (the server closes, the clients close): the waiting ones get in.
    srv.ask("close 2", "closed 2");
    let mut rest = clients.split_off(2);
    for c in &mut clients {
        c.set_nonblocking(false).unwrap();
        c.set_read_timeout(Some(STEP)).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).expect("EOF from the server"), 0);
    }
    drop(clients);
    until("the waiting clients get in", STEP, || {
        established(&rest) == 4
    });
    srv.ask("accept 2", "accepted 2");
    echo_through(&mut srv, &mut rest, b"room again");
    let b1 = tcp_b(&t);
    assert_eq!(
        grew(&b0, &b1, "AttemptFails"),
        0,
        "a SYN was answered with RST"
    );
    let fin = srv.close_all_and_quit(rest);
    let s = accel_stats_for("socket memory", &t.if_a, &fin);
    eprintln!("socket memory: accel counters {:?}", s.counters);
    assert_eq!(s.get("tcp_accepted"), 6);
    assert!(s.get("syn_dropped_no_memory") > 0);
    assert_eq!(
        s.get("socket_refused_no_memory"),
        2,
        "the connect and the UDP bind"
    );
    // Only what was left to it went through A's kernel.
    let d = snmp_a(&t).since(&a0);
    assert_eq!(d.tcp_passive_opens, 0, "{d:?}");
}

// ---------------------------------------------------------------------------------------------
// A peer that never reads
// ---------------------------------------------------------------------------------------------

/// Connections whose peers do not read: non-blocking sends fill the buffers and then answer
/// EAGAIN, a blocking send with SO_SNDTIMEO answers EAGAIN after it, nothing is dropped or
/// reset; when the peers read, every byte arrives in order and the rest goes out.
#[test]
fn a_peer_that_never_reads_fills_the_send_buffers_and_nothing_is_lost() {
    let t = topo();
    let dir = TempDir::new("limits_noread");
    let exe = compile_c("limits_server", dir.path());
    let port = 7330;
    let n = 64;
    let total: u64 = 4 << 20;
    let to = SocketAddrV4::new(t.addr_a, port);
    let before = snmp_a(&t);
    let mut srv = Server::start(&t, true, &exe, port, 128, &[]);
    let clients = connect_from_b(&t, to, n);
    srv.ask(&format!("accept {n}"), "accepted");
    assert_eq!(
        srv.ask("fill_send", "fill_send"),
        format!("fill_send conns={n} eagain={n}")
    );
    assert_eq!(srv.ask("timed_send", "timed"), "timed ret=-1 errno=EAGAIN");
    // Now the peers read, while the server sends the rest.
    writeln!(srv.input, "send_total {total}").unwrap();
    let reader = std::thread::spawn(move || {
        let mut clients = clients;
        let mut got = vec![0u64; clients.len()];
        let ports: Vec<u16> = clients
            .iter()
            .map(|c| c.local_addr().unwrap().port())
            .collect();
        let mut buf = vec![0u8; 65536];
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.iter().any(|g| *g < total) {
            assert!(
                Instant::now() < deadline,
                "reading: got {got:?} of {total} each"
            );
            let mut idle = true;
            for (i, c) in clients.iter_mut().enumerate() {
                c.set_nonblocking(true).unwrap();
                match c.read(&mut buf) {
                    Ok(0) => panic!("connection {i}: EOF after {} bytes", got[i]),
                    Ok(k) => {
                        idle = false;
                        for (j, b) in buf[..k].iter().enumerate() {
                            let at = got[i] + j as u64;
                            assert_eq!(*b, pattern(ports[i], at), "connection {i}, byte {at}");
                        }
                        got[i] += k as u64;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("connection {i}: {e} after {} bytes", got[i]),
                }
            }
            if idle {
                // Nothing readable on any connection: wait for one (bounded).
                use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                use std::os::fd::AsFd;
                let mut fds: Vec<PollFd> = clients
                    .iter()
                    .map(|c| PollFd::new(c.as_fd(), PollFlags::POLLIN))
                    .collect();
                let _ = poll(&mut fds, PollTimeout::from(100u16));
            }
        }
        (got, clients)
    });
    srv.app
        .wait_for_next(&format!("sent_total {total}"), Duration::from_secs(60));
    let (got, clients) = reader.join().expect("the reader");
    assert!(got.iter().all(|g| *g == total));
    let fin = srv.close_all_and_quit(clients);
    let d = snmp_a(&t).since(&before);
    assert_accelerated("peer never reads", &t.if_a, &fin, &d, &["tcp_accepted"]);
    let s = accel_stats_for("peer never reads", &t.if_a, &fin);
    eprintln!(
        "peer never reads: tx_drop_no_tx_frame={} (times egress found no free UMEM frame)",
        s.get("tx_drop_no_tx_frame")
    );
    assert_eq!(s.get("tcp_reset"), 0);
}

// ---------------------------------------------------------------------------------------------
// 10,000 connections
// ---------------------------------------------------------------------------------------------

/// 10,000 concurrent connections from B to an accelerated server: all established, each
/// carries 4 KiB each way (checked byte for byte), all closed cleanly (the server reads EOF on
/// each), then 10,000 more, idle; an idle connection costs a small part of its buffers.
/// Memory per connection is printed beside the kernel's.
#[test]
fn ten_thousand_connections_are_established_used_and_closed() {
    let t = topo();
    for kv in [
        "net.ipv4.ip_local_port_range=10000 65000",
        "net.ipv4.tcp_tw_reuse=1",
    ] {
        accel_tools::topology::run("ip", &["netns", "exec", &t.ns_b, "sysctl", "-qw", kv])
            .expect("sysctl in B");
    }
    let bench = accel_tests::release_tool("accel-bench");
    let run = accel_tests::release_tool("accel-run");
    let n = 10_000;
    let before = snmp_a(&t);
    let r = accel_tools::memory::hold_once(&t, &bench, Some(&run), 7340, n, 4, &[])
        .unwrap_or_else(|e| panic!("10,000 connections under accel: {e:#}"));
    let d = snmp_a(&t).since(&before);
    // Two rounds of N (the second after the first closed).
    assert_eq!(r.counter("tcp_accepted"), 2 * n as u64, "{:?}", r.stats);
    assert_eq!(r.counter("tcp_closed"), 2 * n as u64, "{:?}", r.stats);
    assert_eq!(r.counter("tcp_reset"), 0, "{:?}", r.stats);
    // An idle connection costs a fraction of its buffers (64 KiB each way by default), also
    // in a server that had as many before: the pages no data touched are not memory.
    for (phase, s) in [("idle", &r.idle), ("idle again", &r.idle_again)] {
        let per = r.per_conn(s);
        assert!(
            per < 32.0 * 1024.0,
            "{phase}: {per:.0} bytes per idle connection under accel"
        );
    }
    assert_eq!(d.tcp_passive_opens, 0, "A's kernel took connections: {d:?}");
    let k = accel_tools::memory::hold_once(&t, &bench, None, 7341, n, 4, &[])
        .unwrap_or_else(|e| panic!("10,000 connections on the kernel: {e:#}"));
    eprintln!(
        "10,000 connections: {:.1} s to connect under accel, {:.1} s on the kernel",
        r.connect_secs, k.connect_secs
    );
    eprintln!("{}", accel_tools::memory::report(&[k, r]));
}
