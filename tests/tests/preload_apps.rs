//! Acceptance of `accel-run` (issue 3): unmodified Debian programs run under accel-run in
//! namespace A, their peers on the kernel in namespace B, and every flow of the workload went
//! through accel (its counters moved, A's kernel counters did not).
//!
//! Runs as root (CI is root); a missing program or a setup failure fails the test, it never
//! skips. Contracts and the kernel-only development mode: see `accel_tests::apps`.

use std::fs::File;
use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use accel_tests::apps::{
    accelerated, assert_accelerated, assert_same_file, compile_c, kernel, need, nginx_conf,
    redis_benchmark, run_app, snmp_a, snmp_b, sockperf_messages, sockperf_pingpong,
    write_pattern_file, wrk as parse_wrk, App, Behaviour, Finished, KernelServer, Side, TempDir,
};
use accel_tests::Topology;
use nix::sys::signal::Signal;

/// Time for a program to come up, or to exit after being told to.
const START: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(15);

#[track_caller]
fn topo() -> Topology {
    Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"))
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

// ---------------------------------------------------------------------------------------------
// sockperf
// ---------------------------------------------------------------------------------------------

/// `sockperf server` under accel-run in A, ready (its sockets are bound/listening when it says
/// it blocks on them).
fn sockperf_server(t: &Topology, port: u16, tcp: bool) -> App {
    let sockperf = need("sockperf", "sockperf");
    let mut args = vec![s("server"), s("-i"), s(t.addr_a), s("-p"), s(port)];
    if tcp {
        args.insert(1, s("--tcp"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut app = App::start(
        "sockperf server (under accel-run)",
        accelerated(t, Side::A, Some("latency"), &sockperf, &args),
    );
    app.wait_for("to block on socket", START);
    app
}

/// `sockperf ping-pong` for 3 s with 64-byte messages from B (under accel-run when
/// `client_accelerated`); checks its summary and returns how it ended.
#[track_caller]
fn sockperf_ping_pong(t: &Topology, port: u16, tcp: bool, client_accelerated: bool) -> Finished {
    let sockperf = need("sockperf", "sockperf");
    let mut args = vec![
        s("ping-pong"),
        s("-i"),
        s(t.addr_a),
        s("-p"),
        s(port),
        s("-t"),
        s(3),
        s("-m"),
        s(64),
    ];
    if tcp {
        args.insert(1, s("--tcp"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let cmd = if client_accelerated {
        accelerated(t, Side::B, Some("latency"), &sockperf, &args)
    } else {
        kernel(t, Side::B, &sockperf, &args)
    };
    let fin = run_app("sockperf ping-pong", cmd, Duration::from_secs(30)).success();
    let sum =
        sockperf_pingpong(&fin.stdout).unwrap_or_else(|e| panic!("{e:#}\n{}", fin.describe()));
    let msgs =
        sockperf_messages(&fin.stdout).unwrap_or_else(|e| panic!("{e:#}\n{}", fin.describe()));
    eprintln!(
        "sockperf ping-pong ({}): {sum:?} {msgs:?}",
        if tcp { "TCP" } else { "UDP" }
    );
    assert!(sum.observations > 0, "no observations: {sum:?}");
    assert!(msgs.received > 0, "no message came back: {msgs:?}");
    assert_eq!(
        (msgs.dropped, msgs.duplicated, msgs.out_of_order),
        (0, 0, 0),
        "lost, duplicated or reordered messages: {msgs:?}"
    );
    fin
}

fn sockperf_from_kernel_client(port: u16, tcp: bool) {
    let t = topo();
    let server = sockperf_server(&t, port, tcp);
    let before = snmp_a(&t);
    sockperf_ping_pong(&t, port, tcp, false);
    let d = snmp_a(&t).since(&before);
    let fin = server.stop(Signal::SIGINT, STOP).success();
    let counter = if tcp {
        "tcp_accepted"
    } else {
        "udp_rx_datagrams"
    };
    let extra = if tcp {
        "tcp_accepted"
    } else {
        "udp_tx_datagrams"
    };
    assert_accelerated("sockperf server", &t.if_a, &fin, &d, &[counter, extra]);
}

#[test]
fn sockperf_tcp_ping_pong_from_a_kernel_client() {
    sockperf_from_kernel_client(7000, true);
}

#[test]
fn sockperf_udp_ping_pong_from_a_kernel_client() {
    sockperf_from_kernel_client(7001, false);
}

/// Both ends under accel-run: the server in A, the client in B (B's veth gets XDP too); the
/// kernel carries nothing on either side.
#[test]
fn sockperf_ping_pong_between_two_accelerated_programs() {
    let t = topo();
    for (port, tcp) in [(7002, true), (7003, false)] {
        let server = sockperf_server(&t, port, tcp);
        let (before_a, before_b) = (snmp_a(&t), snmp_b(&t));
        let client = sockperf_ping_pong(&t, port, tcp, true);
        let (da, db) = (snmp_a(&t).since(&before_a), snmp_b(&t).since(&before_b));
        let fin = server.stop(Signal::SIGINT, STOP).success();
        let (srv, cli): (&[&str], &[&str]) = if tcp {
            (&["tcp_accepted"], &["tcp_connected"])
        } else {
            (
                &["udp_rx_datagrams", "udp_tx_datagrams"],
                &["udp_rx_datagrams", "udp_tx_datagrams"],
            )
        };
        let proto = if tcp { "TCP" } else { "UDP" };
        assert_accelerated(
            &format!("sockperf server ({proto})"),
            &t.if_a,
            &fin,
            &da,
            srv,
        );
        assert_accelerated(
            &format!("sockperf client ({proto})"),
            &t.if_b,
            &client,
            &db,
            cli,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// iperf3
// ---------------------------------------------------------------------------------------------

fn iperf3(port: u16, reverse: bool) {
    let t = topo();
    let iperf3 = need("iperf3", "iperf3");
    let p = s(port);
    let a = s(t.addr_a);
    let mut server = App::start(
        "iperf3 -s -1 (under accel-run)",
        accelerated(
            &t,
            Side::A,
            None,
            &iperf3,
            &["-s", "-1", "-B", &a, "-p", &p, "--forceflush"],
        ),
    );
    server.wait_for("Server listening on", START);
    let before = snmp_a(&t);
    let mut args = vec!["-c", &a, "-p", &p, "-t", "10", "-J"];
    if reverse {
        args.push("-R");
    }
    let client = run_app(
        "iperf3 client",
        kernel(&t, Side::B, &iperf3, &args),
        Duration::from_secs(40),
    );
    let client = client.success();
    // The server exits by itself after the one test (-1): its closing handshakes are part of
    // the window.
    let fin = server.finish(STOP);
    let d = snmp_a(&t).since(&before);
    let j: serde_json::Value = serde_json::from_str(&client.stdout)
        .unwrap_or_else(|e| panic!("iperf3 -J output is not JSON ({e})\n{}", client.describe()));
    if let Some(err) = j.get("error") {
        panic!("iperf3 reported an error: {err}\n{}", client.describe());
    }
    let received = j["end"]["sum_received"]["bytes"]
        .as_f64()
        .unwrap_or_else(|| panic!("no end.sum_received.bytes\n{}", client.describe()));
    let sent = j["end"]["sum_sent"]["bytes"].as_f64().unwrap_or(0.0);
    eprintln!(
        "iperf3{}: sent {sent} bytes, received {received} bytes",
        if reverse { " -R" } else { "" }
    );
    assert!(
        received > 0.0 && sent > 0.0,
        "iperf3 moved no data: sent {sent}, received {received}"
    );
    let fin = fin.success();
    assert_accelerated("iperf3 server", &t.if_a, &fin, &d, &["tcp_accepted"]);
}

#[test]
fn iperf3_from_a_kernel_client() {
    iperf3(7010, false);
}

#[test]
fn iperf3_reverse_to_a_kernel_client() {
    iperf3(7011, true);
}

// ---------------------------------------------------------------------------------------------
// socat / nc: 100 MB each way, both roles
// ---------------------------------------------------------------------------------------------

const FILE_SIZE: u64 = 100 * 1024 * 1024;
const TRANSFER: Duration = Duration::from_secs(40);

/// A socat that listens on `addr` and either receives into `dst` or sends `src`, ready.
fn socat_listener(name: &str, cmd: Command, wait: &str) -> App {
    let mut app = App::start(name, cmd);
    app.wait_for(wait, START);
    app
}

/// accel as the server: socat listens under accel-run in A; a kernel socat in B sends (A
/// receives) or receives (A sends).
fn socat_accel_server(port: u16, accel_receives: bool) {
    let t = topo();
    let dir = TempDir::new("socat");
    let socat = need("socat", "socat");
    let (src, dst) = (dir.join("src.bin"), dir.join("dst.bin"));
    write_pattern_file(&src, FILE_SIZE, port as u64);
    let listen = format!("TCP4-LISTEN:{port},bind={},reuseaddr", t.addr_a);
    let connect = format!("TCP4:{}:{port}", t.addr_a);
    let (srcs, dsts) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let (a_args, b_args) = if accel_receives {
        (
            vec![s("-d"), s("-d"), s("-u"), listen, format!("CREATE:{dsts}")],
            vec![s("-u"), format!("OPEN:{srcs},rdonly"), connect],
        )
    } else {
        (
            vec![
                s("-d"),
                s("-d"),
                s("-u"),
                format!("OPEN:{srcs},rdonly"),
                listen,
            ],
            vec![s("-u"), connect, format!("CREATE:{dsts}")],
        )
    };
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let server = socat_listener(
        "socat server (under accel-run)",
        accelerated(&t, Side::A, None, &socat, &a_args),
        "listening on",
    );
    let before = snmp_a(&t);
    let client = run_app(
        "socat client in B",
        kernel(&t, Side::B, &socat, &b_args),
        TRANSFER,
    )
    .success();
    let fin = server.finish(STOP).success();
    let d = snmp_a(&t).since(&before);
    eprintln!("socat client took {:?}", client.elapsed);
    assert_same_file("100 MB through accel", &src, &dst);
    assert_accelerated("socat server", &t.if_a, &fin, &d, &["tcp_accepted"]);
}

/// accel as the client: nc under accel-run in A connects to a kernel socat in B and sends
/// (stdin from the file) or receives (stdout to the file).
fn nc_accel_client(port: u16, accel_sends: bool) {
    let t = topo();
    let dir = TempDir::new("nc");
    let socat = need("socat", "socat");
    let nc = need("nc", "netcat-openbsd");
    let (src, dst) = (dir.join("src.bin"), dir.join("dst.bin"));
    write_pattern_file(&src, FILE_SIZE, port as u64);
    let listen = format!("TCP4-LISTEN:{port},bind={},reuseaddr", t.addr_b);
    let b_args = if accel_sends {
        vec![
            s("-d"),
            s("-d"),
            s("-u"),
            listen,
            format!("CREATE:{}", dst.display()),
        ]
    } else {
        vec![
            s("-d"),
            s("-d"),
            s("-u"),
            format!("OPEN:{},rdonly", src.display()),
            listen,
        ]
    };
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let server = socat_listener(
        "socat server in B",
        kernel(&t, Side::B, &socat, &b_args),
        "listening on",
    );
    let (b, p) = (s(t.addr_b), s(port));
    let before = snmp_a(&t);
    let client = if accel_sends {
        // -N: shut the connection down for writing at the end of stdin.
        App::start_io(
            "nc client (under accel-run)",
            accelerated(&t, Side::A, None, &nc, &["-N", &b, &p]),
            Some(File::open(&src).expect("open source file")),
            None,
        )
    } else {
        // -d: do not read stdin; exit when the server closes.
        App::start_io(
            "nc client (under accel-run)",
            accelerated(&t, Side::A, None, &nc, &["-d", &b, &p]),
            None,
            Some(File::create(&dst).expect("create destination file")),
        )
    };
    let fin = client.finish(TRANSFER).success();
    let d = snmp_a(&t).since(&before);
    server.finish(STOP).success();
    eprintln!("nc took {:?}", fin.elapsed);
    assert_same_file("100 MB through accel", &src, &dst);
    assert_accelerated("nc client", &t.if_a, &fin, &d, &["tcp_connected"]);
}

#[test]
fn socat_server_receives_100mb_from_a_kernel_client() {
    socat_accel_server(7020, true);
}

#[test]
fn socat_server_sends_100mb_to_a_kernel_client() {
    socat_accel_server(7021, false);
}

#[test]
fn nc_client_sends_100mb_to_a_kernel_server() {
    nc_accel_client(7022, true);
}

#[test]
fn nc_client_receives_100mb_from_a_kernel_server() {
    nc_accel_client(7023, false);
}

// ---------------------------------------------------------------------------------------------
// nginx and curl
// ---------------------------------------------------------------------------------------------

/// nginx serving `dir` on `listen`, in `side`, under accel-run when `accel`.
fn nginx(t: &Topology, side: Side, accel: bool, dir: &TempDir, listen: SocketAddrV4) -> App {
    let nginx = need("nginx", "nginx-light");
    let conf = nginx_conf(dir.path(), listen);
    let (p, c, e) = (
        dir.path().display().to_string(),
        conf.display().to_string(),
        dir.join("error.log").display().to_string(),
    );
    let args = ["-p", &p, "-c", &c, "-e", &e];
    let name = if accel {
        "nginx (under accel-run)"
    } else {
        "nginx (kernel)"
    };
    let cmd = if accel {
        accelerated(t, side, None, &nginx, &args)
    } else {
        kernel(t, side, &nginx, &args)
    };
    let mut app = App::start(name, cmd);
    app.wait_tcp_ready(t, listen, START);
    app
}

/// curl in B fetches `url` into `out`.
#[track_caller]
fn curl_from_b(t: &Topology, url: &str, out: &Path) {
    let curl = need("curl", "curl");
    run_app(
        "curl in B",
        kernel(
            t,
            Side::B,
            &curl,
            &[
                "-sS",
                "--fail",
                "--max-time",
                "30",
                "-o",
                out.to_str().unwrap(),
                url,
            ],
        ),
        Duration::from_secs(40),
    )
    .success();
}

/// curl under accel-run in A fetches 50 MB from a kernel nginx in B.
#[test]
fn curl_fetches_50mb_from_a_kernel_nginx() {
    let t = topo();
    let dir = TempDir::new("curl");
    let curl = need("curl", "curl");
    let src = dir.join("50m.bin");
    write_pattern_file(&src, 50 * 1024 * 1024, 50);
    let listen = SocketAddrV4::new(t.addr_b, 7030);
    let server = nginx(&t, Side::B, false, &dir, listen);
    let dst = dir.join("got.bin");
    let url = format!("http://{listen}/50m.bin");
    let before = snmp_a(&t);
    let fin = run_app(
        "curl (under accel-run)",
        accelerated(
            &t,
            Side::A,
            None,
            &curl,
            &[
                "-sS",
                "--fail",
                "--max-time",
                "30",
                "-o",
                dst.to_str().unwrap(),
                &url,
            ],
        ),
        Duration::from_secs(40),
    )
    .success();
    let d = snmp_a(&t).since(&before);
    server.stop(Signal::SIGTERM, STOP);
    assert_same_file("50 MB over HTTP", &src, &dst);
    assert_accelerated("curl", &t.if_a, &fin, &d, &["tcp_connected"]);
}

/// nginx under accel-run in A: wrk from B for 10 s without a socket error or a non-2xx
/// answer, and curl from B gets byte-exact files.
#[test]
fn nginx_serves_wrk_and_curl() {
    let t = topo();
    let dir = TempDir::new("nginx");
    let wrk = need("wrk", "wrk");
    let small = dir.join("1k.bin");
    let large = dir.join("1m.bin");
    write_pattern_file(&small, 1024, 1);
    write_pattern_file(&large, 1024 * 1024, 2);
    let listen = SocketAddrV4::new(t.addr_a, 7040);
    let server = nginx(&t, Side::A, true, &dir, listen);
    let before = snmp_a(&t);
    let url = format!("http://{listen}/1k.bin");
    let out = run_app(
        "wrk",
        kernel(
            &t,
            Side::B,
            &wrk,
            &["-t1", "-c16", "-d10s", "--latency", &url],
        ),
        Duration::from_secs(30),
    )
    .success();
    let sum = parse_wrk(&out.stdout).unwrap_or_else(|e| panic!("{e:#}\n{}", out.describe()));
    eprintln!("wrk: {sum:?}");
    assert!(sum.requests > 0, "wrk made no request: {sum:?}");
    assert_eq!(sum.socket_errors, 0, "wrk socket errors: {}", out.stdout);
    assert_eq!(
        sum.non_2xx_3xx, 0,
        "wrk non-2xx/3xx responses: {}",
        out.stdout
    );
    for (name, file) in [("1k.bin", &small), ("1m.bin", &large)] {
        let got = dir.join(&format!("got-{name}"));
        curl_from_b(&t, &format!("http://{listen}/{name}"), &got);
        assert_same_file(name, file, &got);
    }
    let d = snmp_a(&t).since(&before);
    let fin = server.stop(Signal::SIGTERM, STOP).success();
    assert_accelerated("nginx", &t.if_a, &fin, &d, &["tcp_accepted"]);
}

// ---------------------------------------------------------------------------------------------
// redis
// ---------------------------------------------------------------------------------------------

/// The tests `redis-benchmark -q` runs by default (redis 7).
const REDIS_TESTS: &[&str] = &[
    "PING_INLINE",
    "PING_MBULK",
    "SET",
    "GET",
    "INCR",
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "SADD",
    "HSET",
    "SPOP",
    "ZADD",
    "ZPOPMIN",
    "LPUSH (needed to benchmark LRANGE)",
    "LRANGE_100 (first 100 elements)",
    "LRANGE_300 (first 300 elements)",
    "LRANGE_500 (first 500 elements)",
    "LRANGE_600 (first 600 elements)",
    "MSET (10 keys)",
];

/// redis-server under accel-run in A; every default redis-benchmark test from B completes
/// without an error. (`-P 16 -n 30000`: pipelined, 30,000 requests per test, half a million in
/// all: what is checked is that each completes, not how fast; at 100,000 each the suite
/// outlasted the bound on a busy two-core machine. accel-bench measures the rates.)
#[test]
fn redis_benchmark_completes_every_test() {
    let t = topo();
    let dir = TempDir::new("redis");
    let server_bin = need("redis-server", "redis-server");
    let bench = need("redis-benchmark", "redis-tools");
    let port = 7050u16;
    let (a, p, d) = (s(t.addr_a), s(port), dir.path().display().to_string());
    let mut server = App::start(
        "redis-server (under accel-run)",
        accelerated(
            &t,
            Side::A,
            None,
            &server_bin,
            &[
                "--port",
                &p,
                "--bind",
                &a,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                &d,
            ],
        ),
    );
    server.wait_tcp_ready(&t, SocketAddrV4::new(t.addr_a, port), START);
    let before = snmp_a(&t);
    let out = run_app(
        "redis-benchmark",
        kernel(
            &t,
            Side::B,
            &bench,
            &["-h", &a, "-p", &p, "-q", "-n", "30000", "-P", "16"],
        ),
        Duration::from_secs(50),
    )
    .success();
    let delta = snmp_a(&t).since(&before);
    let results =
        redis_benchmark(&out.stdout).unwrap_or_else(|e| panic!("{e:#}\n{}", out.describe()));
    for (test, rate) in &results {
        eprintln!("redis-benchmark {test}: {rate} requests/s");
    }
    assert!(
        !out.stderr.to_lowercase().contains("error") && !out.stdout.contains("ERR"),
        "redis-benchmark reported errors\n{}",
        out.describe()
    );
    let names: Vec<&str> = results.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(names, REDIS_TESTS, "tests run by redis-benchmark");
    assert!(results.iter().all(|(_, r)| *r > 0.0), "{results:?}");
    let fin = server.stop(Signal::SIGTERM, STOP).success();
    assert_accelerated("redis-server", &t.if_a, &fin, &delta, &["tcp_accepted"]);
}

// ---------------------------------------------------------------------------------------------
// One epoll set, kernel and accelerated fds
// ---------------------------------------------------------------------------------------------

/// tests/c/mixed_epoll.c under accel-run: eventfd, pipe, Unix socketpair, timerfd and an
/// accelerated TCP socket (to a kernel echo server in B) in one epoll set; every event comes.
#[test]
fn epoll_mixes_kernel_and_accelerated_fds() {
    let t = topo();
    let dir = TempDir::new("epoll");
    let exe = compile_c("mixed_epoll", dir.path());
    let echo = KernelServer::start(&t, 7060, Behaviour::Echo);
    let before = snmp_a(&t);
    let fin = run_app(
        "mixed_epoll (under accel-run)",
        accelerated(&t, Side::A, None, &exe, &[&s(t.addr_b), "7060"]),
        Duration::from_secs(30),
    );
    let d = snmp_a(&t).since(&before);
    eprintln!("{}", fin.stdout);
    let fin = fin.success();
    assert!(fin.stdout.contains("mixed_epoll: ok"), "{}", fin.describe());
    assert_eq!(echo.accepted(), 1, "connections the echo server accepted");
    assert_accelerated("mixed_epoll", &t.if_a, &fin, &d, &["tcp_connected"]);
}

/// Threads and fork(): sockets used across threads, two threads blocked on two sockets at
/// once, and a forked child that closes one inherited connection (the parent's stays open)
/// and writes to the other, which reaches the peer as with the kernel: the parent hands that
/// connection to the kernel socket they share (TCP repair) when the child first uses it.
#[test]
fn threads_share_sockets_and_a_forked_child_shares_a_connection_as_with_the_kernel() {
    let t = topo();
    let dir = TempDir::new("threads_fork");
    let exe = compile_c("threads_fork", dir.path());
    let echo = KernelServer::start(&t, 7070, Behaviour::Echo);
    let before = snmp_a(&t);
    let fin = run_app(
        "threads_fork (under accel-run)",
        accelerated(&t, Side::A, None, &exe, &[&s(t.addr_b), "7070"]),
        Duration::from_secs(30),
    );
    let d = snmp_a(&t).since(&before);
    let fin = fin.success();
    assert!(
        fin.stdout.contains("threads_fork: ok"),
        "{}",
        fin.describe()
    );
    assert_eq!(echo.accepted(), 2, "connections the echo server accepted");
    // Both connections were opened by accel (A's kernel opened none); after the fork, b is
    // the kernel's, so its segments from then on are counted there.
    let stats = accel_tests::apps::accel_stats_for("threads_fork", &t.if_a, &fin);
    assert_eq!(stats.counters.get("tcp_connected"), Some(&2), "{stats:?}");
    assert_eq!(
        d.tcp_active_opens, 0,
        "A's kernel opened a connection: {d:?}"
    );
}

/// exec(): an accelerated connection whose fd survives exec keeps working in the new program,
/// byte-exact in both directions (accel hands it to its kernel socket before the exec).
#[test]
fn a_connection_survives_exec_byte_exact() {
    let t = topo();
    let python = need("python3", "python3");
    let dir = TempDir::new("exec");
    let echo = KernelServer::start(&t, 7077, Behaviour::Echo);
    let script = dir.join("exec.py");
    std::fs::write(
        &script,
        format!(
            "import os, socket, sys\n\
             def echo(s, m):\n\
             \x20   s.sendall(m); got = b''\n\
             \x20   while len(got) < len(m):\n\
             \x20       b = s.recv(len(m) - len(got))\n\
             \x20       if not b: sys.exit('the peer closed')\n\
             \x20       got += b\n\
             \x20   if got != m: sys.exit('echo differs')\n\
             if len(sys.argv) > 1:\n\
             \x20   s = socket.socket(fileno=int(sys.argv[1]))\n\
             \x20   echo(s, bytes(range(256)) * 64)\n\
             \x20   print('after exec: ok', flush=True)\n\
             \x20   sys.exit(0)\n\
             s = socket.create_connection(('{}', 7077))\n\
             echo(s, b'before exec')\n\
             os.set_inheritable(s.fileno(), True)\n\
             os.execv(sys.executable, [sys.executable, __file__, str(s.fileno())])\n",
            t.addr_b
        ),
    )
    .unwrap();
    let before = snmp_a(&t);
    let fin = run_app(
        "exec (under accel-run)",
        accelerated(&t, Side::A, None, &python, &[script.to_str().unwrap()]),
        Duration::from_secs(30),
    );
    let d = snmp_a(&t).since(&before);
    let fin = fin.success();
    assert!(fin.stdout.contains("after exec: ok"), "{}", fin.describe());
    assert_eq!(echo.accepted(), 1, "one connection, kept across exec");
    // accel opened it (A's kernel opened none); after the exec it is the kernel's.
    assert_eq!(
        d.tcp_active_opens, 0,
        "A's kernel opened a connection: {d:?}"
    );
    assert!(d.tcp_in_segs > 0, "the kernel carries it after exec: {d:?}");
}

/// A program that closes every fd it did not open (a close() loop and close_range) keeps
/// working: accel's own fds (AF_XDP sockets, BPF objects, netlink sockets, eventfds) are not
/// the program's to close.
#[test]
fn a_program_closing_all_other_fds_keeps_working() {
    let t = topo();
    let dir = TempDir::new("closefrom");
    let exe = compile_c("closefrom", dir.path());
    let echo = KernelServer::start(&t, 7075, Behaviour::Echo);
    let before = snmp_a(&t);
    let fin = run_app(
        "closefrom (under accel-run)",
        accelerated(&t, Side::A, None, &exe, &[&s(t.addr_b), "7075"]),
        Duration::from_secs(30),
    );
    let d = snmp_a(&t).since(&before);
    let fin = fin.success();
    assert!(fin.stdout.contains("closefrom: ok"), "{}", fin.describe());
    assert_eq!(echo.accepted(), 1, "connections the echo server accepted");
    assert_accelerated("closefrom", &t.if_a, &fin, &d, &["tcp_connected"]);
}

/// An accelerated listener on the wildcard address is reached from B through accel and
/// through loopback on its kernel socket, which is in the kernel's epoll set too: each time
/// epoll_wait reports it once (regression: accel also looked at the kernel socket itself, a
/// poll() per round, and could report the fd twice in one result).
#[test]
fn an_epoll_listener_is_reported_once_whichever_way_a_connection_comes() {
    let t = topo();
    let dir = TempDir::new("listener_epoll");
    let exe = compile_c("listener_epoll", dir.path());
    let before = snmp_a(&t);
    let mut app = App::start(
        "listener_epoll (under accel-run)",
        accelerated(&t, Side::A, None, &exe, &["7095"]),
    );
    app.wait_for("listening", Duration::from_secs(20));
    let server = std::net::SocketAddrV4::new(t.addr_a, 7095);
    t.in_b(move || std::net::TcpStream::connect_timeout(&server.into(), Duration::from_secs(10)))
        .expect("namespace B")
        .expect("connect from B");
    let fin = app.finish(Duration::from_secs(20));
    let d = snmp_a(&t).since(&before);
    let fin = fin.success();
    assert!(
        fin.stdout.contains("listener_epoll: ok"),
        "{}",
        fin.describe()
    );
    if accel_tests::apps::kernel_only() {
        return;
    }
    // The connection from B went through accel; A's kernel saw only the loopback pair.
    let s = accel_tests::apps::accel_stats_for("listener_epoll", &t.if_a, &fin);
    assert_eq!(s.get("tcp_accepted"), 1, "{}", fin.describe());
    assert_eq!(d.tcp_passive_opens, 1, "kernel passive opens in A: {d:?}");
    assert_eq!(d.tcp_active_opens, 1, "kernel active opens in A: {d:?}");
}

/// A readiness change that sends no packet (shutdown(SHUT_RD) by another thread) is reported by
/// an epoll_wait already spinning: a spinning round looks at its members only when the
/// interfaces moved, and every 64th round whatever happened.
#[test]
fn epoll_wait_sees_another_threads_shutdown_that_sends_nothing() {
    let t = topo();
    let dir = TempDir::new("epoll_shutdown");
    let exe = compile_c("epoll_shutdown", dir.path());
    let mut app = App::start(
        "epoll_shutdown (under accel-run)",
        // Latency: epoll_wait spins for ever (a balanced one would sleep and look on waking).
        accelerated(&t, Side::A, Some("latency"), &exe, &[&s(t.addr_a), "7097"]),
    );
    app.wait_for("listening", Duration::from_secs(20));
    let server = std::net::SocketAddrV4::new(t.addr_a, 7097);
    // Held open, silent, until the program is done.
    let _conn = t
        .in_b(move || std::net::TcpStream::connect_timeout(&server.into(), Duration::from_secs(10)))
        .expect("namespace B")
        .expect("connect from B");
    let fin = app.finish(Duration::from_secs(20)).success();
    assert!(
        fin.stdout.contains("epoll_shutdown: ok"),
        "{}",
        fin.describe()
    );
    if accel_tests::apps::kernel_only() {
        return;
    }
    let s = accel_tests::apps::accel_stats_for("epoll_shutdown", &t.if_a, &fin);
    assert_eq!(s.get("tcp_accepted"), 1, "{}", fin.describe());
}

/// An accepted connection outlives its listener: the accelerated server closes the listening
/// socket right after accept and keeps echoing; a kernel client in B sees every echo.
#[test]
fn an_accepted_connection_outlives_its_listener() {
    let t = topo();
    let dir = TempDir::new("listener_close");
    let exe = compile_c("listener_close", dir.path());
    let before = snmp_a(&t);
    let mut app = App::start(
        "listener_close (under accel-run)",
        accelerated(&t, Side::A, None, &exe, &[&s(t.addr_a), "7085"]),
    );
    app.wait_for("listening", Duration::from_secs(20));
    let server = std::net::SocketAddrV4::new(t.addr_a, 7085);
    // 200 round trips on the one connection, the listener long closed after the first.
    let r = t
        .in_b(move || accel_tests::peer::tcp_echo(server, 200 * 1000, 9, Duration::from_secs(20)))
        .expect("namespace B");
    let r = r.expect("echo through the accepted connection");
    assert_eq!(r.sent_checksum, r.echoed_checksum);
    let fin = app.finish(Duration::from_secs(20));
    let d = snmp_a(&t).since(&before);
    let fin = fin.success();
    assert!(
        fin.stdout.contains("listener_close: ok"),
        "{}",
        fin.describe()
    );
    assert_accelerated("listener_close", &t.if_a, &fin, &d, &["tcp_accepted"]);
}

/// An accelerated client connects, exchanges a byte and closes 2,000 times in a row to one
/// kernel server: every connect succeeds (ports of connections still closing stay held).
#[test]
fn an_accelerated_client_connects_and_closes_2000_times() {
    let t = topo();
    let dir = TempDir::new("conn_loop");
    let exe = compile_c("conn_loop", dir.path());
    let echo = KernelServer::start(&t, 7090, Behaviour::Echo);
    let before = snmp_a(&t);
    let fin = run_app(
        "conn_loop (under accel-run)",
        accelerated(&t, Side::A, None, &exe, &[&s(t.addr_b), "7090", "2000"]),
        Duration::from_secs(50),
    );
    let d = snmp_a(&t).since(&before);
    let fin = fin.success();
    assert!(
        fin.stdout.contains("conn_loop: ok 2000"),
        "{}",
        fin.describe()
    );
    assert_eq!(
        echo.accepted(),
        2000,
        "connections the echo server accepted"
    );
    assert_accelerated("conn_loop", &t.if_a, &fin, &d, &["tcp_connected"]);
}
