//! Many processes on one interface (issue 11): nginx as it ships (daemon, master + workers),
//! several programs on one queue, fork-per-connection and pre-fork servers, a worker killed
//! under load. Every test runs as root on its own topology and none is skipped. Where the
//! connections stay accelerated, the tests prove it with counters (accel's moved, A's kernel
//! TCP counters did not); a fork-per-connection server's connections are accepted by accel
//! and handed to the kernel for the child that serves them (TCP repair), which the tests
//! check byte for byte.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use accel_tests::apps::{
    accelerated, assert_same_file, kernel, need, run_app, snmp_a, sockperf_messages, App, Side,
    TempDir,
};
use accel_tests::Topology;
use accel_tools::topology::Options;
use libaccel::stats::Snapshot;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const START: Duration = Duration::from_secs(20);

fn s(v: impl ToString) -> String {
    v.to_string()
}

#[track_caller]
fn topo(queues: u32) -> Topology {
    Topology::with(Options {
        queues: Some(queues),
        ..Options::default()
    })
    .unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"))
}

/// Every accelerated process's snapshot in `dir` (as accel-stat --json prints them).
fn snapshots(t: &Topology, dir: &Path) -> Vec<Snapshot> {
    let stat = accel_tests::release_tool("accel-stat");
    let out = t
        .command_a(stat.to_str().unwrap())
        .args(["--json", "--dir", dir.to_str().unwrap()])
        .output()
        .expect("accel-stat");
    assert!(out.status.success(), "accel-stat: {:?}", out);
    libaccel::stats::parse_list(&String::from_utf8_lossy(&out.stdout)).expect("accel-stat JSON")
}

fn counter(s: &Snapshot, name: &str) -> u64 {
    s.stacks
        .iter()
        .map(|st| st.counters.get(name).copied().unwrap_or(0))
        .sum()
}

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Waits for `cond`, at most `d`; returns whether it held.
fn wait_until(d: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

// ---------------------------------------------------------------------------------------------
// nginx as it ships: daemon on, a master and two workers

/// nginx started as a daemon under accel-run; stopped through its pid file when dropped
/// (SIGQUIT, then SIGKILL to the pids it started that are still there).
struct Nginx {
    dir: TempDir,
    stat_dir: PathBuf,
    conf: PathBuf,
    listen: SocketAddrV4,
    started: Vec<i32>,
}

impl Nginx {
    fn start(t: &Topology, listen: SocketAddrV4) -> Nginx {
        let dir = TempDir::new("nginx-workers");
        // accel makes it, writable by the workers (they run as nobody).
        let stat_dir = dir.join("stat");
        let d = dir.path().display();
        let conf = format!(
            "daemon on;\n\
             master_process on;\n\
             worker_processes 2;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
             \x20   access_log off;\n\
             \x20   client_body_temp_path {d}/body;\n\
             \x20   proxy_temp_path {d}/proxy;\n\
             \x20   fastcgi_temp_path {d}/fastcgi;\n\
             \x20   uwsgi_temp_path {d}/uwsgi;\n\
             \x20   scgi_temp_path {d}/scgi;\n\
             \x20   default_type application/octet-stream;\n\
             \x20   keepalive_requests 1000000;\n\
             \x20   server {{ listen {listen}; root {d}; }}\n\
             }}\n"
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        accel_tests::apps::write_pattern_file(&dir.join("64k.bin"), 64 * 1024, 64);
        let nginx = need("nginx", "nginx-light");
        let mut cmd = accelerated(
            t,
            Side::A,
            None,
            &nginx,
            &["-c", conf_path.to_str().unwrap(), "-p", &s(d)],
        );
        cmd.env("ACCEL_STAT_DIR", &stat_dir);
        // The daemon's parent returns once the master runs.
        run_app("nginx (daemon, under accel-run)", cmd, START).success();
        let mut n = Nginx {
            dir,
            stat_dir,
            conf: conf_path,
            listen,
            started: Vec::new(),
        };
        assert!(
            wait_until(START, || n.master().is_some()),
            "nginx wrote no pid file"
        );
        n.wait_workers(t, 2);
        n
    }

    fn master(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The workers' snapshots (the accelerated nginx processes but the master).
    fn workers(&self, t: &Topology) -> Vec<Snapshot> {
        let master = self.master();
        snapshots(t, &self.stat_dir)
            .into_iter()
            .filter(|s| s.program == "nginx" && Some(s.pid as i32) != master)
            .collect()
    }

    fn wait_workers(&mut self, t: &Topology, n: usize) {
        let mut found = Vec::new();
        let ok = wait_until(START, || {
            found = self.workers(t);
            found.len() >= n
        });
        assert!(ok, "{n} accelerated workers (accel-stat shows {found:?})");
        for w in found {
            if !self.started.contains(&(w.pid as i32)) {
                self.started.push(w.pid as i32);
            }
        }
        if let Some(m) = self.master() {
            if !self.started.contains(&m) {
                self.started.push(m);
            }
        }
    }

    fn signal(&self, t: &Topology, what: &str) {
        let nginx = need("nginx", "nginx-light");
        run_app(
            &format!("nginx -s {what}"),
            kernel(
                t,
                Side::A,
                &nginx,
                &[
                    "-c",
                    self.conf.to_str().unwrap(),
                    "-p",
                    self.dir.path().to_str().unwrap(),
                    "-s",
                    what,
                ],
            ),
            START,
        )
        .success();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(m) = self.master() {
            let _ = kill(Pid::from_raw(m), Signal::SIGQUIT);
        }
        let pids = self.started.clone();
        if !wait_until(Duration::from_secs(5), || pids.iter().all(|p| !alive(*p))) {
            for p in &pids {
                let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
            }
        }
    }
}

/// 100 curls of the 64 KiB file from B, each byte-exact.
fn curls(t: &Topology, n: &Nginx, count: usize) {
    let curl = need("curl", "curl");
    let url = format!("http://{}/64k.bin", n.listen);
    let want = n.dir.join("64k.bin");
    for i in 0..count {
        let got = n.dir.join(&format!("got-{i}"));
        run_app(
            "curl",
            kernel(
                t,
                Side::B,
                &curl,
                &["-sS", "--max-time", "10", "-o", got.to_str().unwrap(), &url],
            ),
            Duration::from_secs(15),
        )
        .success();
        assert_same_file("64 KiB from nginx's workers", &want, &got);
        let _ = std::fs::remove_file(&got);
    }
}

/// wrk from B for `secs`; returns its summary (zero socket errors asserted).
fn wrk(t: &Topology, n: &Nginx, secs: u32, conns: u32) -> accel_tools::bench::parse::Wrk {
    let wrk = need("wrk", "wrk");
    let url = format!("http://{}/64k.bin", n.listen);
    let out = run_app(
        "wrk",
        kernel(
            t,
            Side::B,
            &wrk,
            &[
                "-t2",
                &format!("-c{conns}"),
                &format!("-d{secs}s"),
                "--latency",
                &url,
            ],
        ),
        Duration::from_secs(u64::from(secs) + 20),
    )
    .success();
    let w =
        accel_tests::apps::wrk(&out.stdout).unwrap_or_else(|e| panic!("{e:#}\n{}", out.describe()));
    assert_eq!(w.socket_errors, 0, "wrk socket errors:\n{}", out.stdout);
    assert_eq!(w.non_2xx_3xx, 0, "wrk non-2xx responses:\n{}", out.stdout);
    w
}

fn nginx_workers(queues: u32) {
    let t = topo(queues);
    let listen = SocketAddrV4::new(t.addr_a, 8080);
    let mut n = Nginx::start(&t, listen);
    let before = snmp_a(&t);
    curls(&t, &n, 100);
    let w = wrk(&t, &n, 4, 64);
    let d = snmp_a(&t).since(&before);
    assert_eq!(
        (d.tcp_in_segs, d.tcp_passive_opens),
        (0, 0),
        "A's kernel carried nginx's TCP ({d:?})"
    );
    // Both workers served connections.
    let workers = n.workers(&t);
    let accepted: Vec<u64> = workers.iter().map(|w| counter(w, "tcp_accepted")).collect();
    assert!(
        accepted.len() == 2 && accepted.iter().all(|&a| a > 0),
        "both workers accepted connections: {accepted:?} ({} requests)",
        w.requests
    );
    // The master accepts none.
    let master = n.master().unwrap();
    let master_snap = snapshots(&t, &n.stat_dir)
        .into_iter()
        .find(|s| s.pid as i32 == master);
    if let Some(m) = master_snap {
        assert_eq!(
            counter(&m, "tcp_accepted"),
            0,
            "the master accepted connections"
        );
    }

    // Reload: new workers, still accelerated.
    let old: Vec<u32> = workers.iter().map(|w| w.pid).collect();
    n.signal(&t, "reload");
    let ok = wait_until(START, || {
        let now: Vec<u32> = n.workers(&t).iter().map(|w| w.pid).collect();
        now.len() >= 2 && now.iter().all(|p| !old.contains(p))
    });
    assert!(ok, "nginx -s reload made two new accelerated workers");
    n.wait_workers(&t, 2);
    let before = snmp_a(&t);
    curls(&t, &n, 20);
    let d = snmp_a(&t).since(&before);
    assert_eq!(
        d.tcp_in_segs, 0,
        "after reload A's kernel carried TCP ({d:?})"
    );

    // Quit: every nginx process gone within 2 s, the port the kernel's within 1 s after.
    let pids = n.started.clone();
    n.signal(&t, "quit");
    assert!(
        wait_until(Duration::from_secs(2), || pids.iter().all(|p| !alive(*p))),
        "nginx processes left 2 s after nginx -s quit"
    );
    let port = listen;
    let reachable = t
        .in_a(move || {
            let l = std::net::TcpListener::bind(port)?;
            l.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(l)
        })
        .unwrap()
        .expect("a kernel listener binds nginx's port at once");
    let ok = wait_until(Duration::from_secs(1), || {
        t.in_b(move || {
            std::net::TcpStream::connect_timeout(&port.into(), Duration::from_millis(200))
        })
        .unwrap()
        .is_ok()
    });
    drop(reachable);
    assert!(
        ok,
        "a kernel listener on nginx's port is reachable within 1 s"
    );
}

#[test]
fn nginx_master_and_two_workers_on_two_queues() {
    nginx_workers(2);
}

#[test]
fn nginx_master_and_two_workers_on_one_queue() {
    nginx_workers(1);
}

#[test]
fn a_worker_killed_under_load_leaves_the_other_serving() {
    let t = topo(1);
    let listen = SocketAddrV4::new(t.addr_a, 8081);
    let n = Nginx::start(&t, listen);
    let victim = n.workers(&t)[0].pid as i32;
    std::thread::scope(|sc| {
        let load = sc.spawn(|| {
            // Connections of the killed worker fail; the test asserts on what follows.
            let wrk = need("wrk", "wrk");
            let url = format!("http://{}/64k.bin", n.listen);
            run_app(
                "wrk (load while a worker dies)",
                kernel(&t, Side::B, &wrk, &["-t1", "-c16", "-d3s", &url]),
                Duration::from_secs(30),
            )
        });
        std::thread::sleep(Duration::from_millis(800));
        kill(Pid::from_raw(victim), Signal::SIGKILL).unwrap();
        let _ = load.join();
    });
    // nginx's master starts a new worker; whoever serves, every request now succeeds.
    curls(&t, &n, 20);
    wrk(&t, &n, 2, 16);
    // The helper took the killed worker's slot back and counted what it held as leaked: at
    // most its frame cache, a received batch, frames on their way to the fill ring and what
    // its stack queued (the rest of its rings came back).
    let s = accel_tests::helper_status(&t.ns_a).expect("a helper serves namespace A");
    let q = s.interfaces[0].queues[0];
    let bound = libaccel::queue::CACHE_MAX as u32 + 2 * 64 + 256;
    assert!(q.leaked <= bound, "leaked {} > {bound}: {q:?}", q.leaked);
    assert!(
        s.interfaces[0]
            .clients
            .iter()
            .all(|c| c.pid as i32 != victim),
        "the killed worker's slot is free: {s:?}"
    );

    // SIGKILL of every nginx process: the interface is left as it was (no XDP program, no
    // helper) and the port is the kernel's.
    let mut pids: Vec<i32> = n.workers(&t).iter().map(|w| w.pid as i32).collect();
    pids.extend(n.master());
    for p in &pids {
        let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
    }
    assert!(
        wait_until(Duration::from_secs(2), || pids.iter().all(|p| !alive(*p))),
        "nginx processes left after SIGKILL"
    );
    accel_tests::wait_helper_gone(&t.ns_a, Duration::from_secs(5));
    assert!(
        !accel_tests::xdp_attached(&t.ns_a, &t.if_a),
        "XDP program left on {} after every nginx process was killed",
        t.if_a
    );
}

// ---------------------------------------------------------------------------------------------
// Two programs on one queue

#[test]
fn two_sockperf_servers_share_one_queue() {
    let t = topo(1);
    let sockperf = need("sockperf", "sockperf");
    let stat = TempDir::new("two-sockperf");
    let start = |tcp: bool, port: u16| {
        let mut args = vec![s("server"), s("-i"), s(t.addr_a), s("-p"), s(port)];
        if tcp {
            args.insert(1, s("--tcp"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = accelerated(&t, Side::A, Some("latency"), &sockperf, &args);
        cmd.env("ACCEL_STAT_DIR", stat.path());
        let mut app = App::start("sockperf server (under accel-run)", cmd);
        app.wait_for("to block on socket", START);
        app
    };
    let tcp = start(true, 21001);
    let udp = start(false, 21002);
    let before = snmp_a(&t);
    for (proto_tcp, port) in [(true, 21001u16), (false, 21002u16)] {
        let mut args = vec![
            s("ping-pong"),
            s("-i"),
            s(t.addr_a),
            s("-p"),
            s(port),
            s("-t"),
            s(2),
            s("-m"),
            s(64),
        ];
        if proto_tcp {
            args.insert(1, s("--tcp"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let fin = run_app(
            "sockperf ping-pong",
            kernel(&t, Side::B, &sockperf, &args),
            Duration::from_secs(30),
        )
        .success();
        let m = sockperf_messages(&fin.stdout).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(m.received > 0, "{m:?}");
        assert_eq!(
            (m.dropped, m.duplicated, m.out_of_order),
            (0, 0, 0),
            "{m:?}"
        );
    }
    let d = snmp_a(&t).since(&before);
    assert_eq!(
        d.tcp_in_segs + d.udp_in_datagrams,
        0,
        "A's kernel carried it ({d:?})"
    );
    let snaps = snapshots(&t, stat.path());
    assert_eq!(snaps.len(), 2, "both servers accelerated: {snaps:?}");
    let tcp_snap = snaps.iter().find(|s| counter(s, "tcp_accepted") > 0);
    let udp_snap = snaps.iter().find(|s| counter(s, "udp_rx_datagrams") > 0);
    assert!(tcp_snap.is_some() && udp_snap.is_some(), "{snaps:?}");
    drop((tcp, udp));
}

// ---------------------------------------------------------------------------------------------
// Fork-per-connection and pre-fork servers

/// 50 connections from B, each sending 1 MB and reading it back, byte-exact.
fn echo_50_connections(t: &Topology, port: u16) {
    let python = need("python3", "python3");
    let client = format!(
        "import socket, threading\n\
         data = bytes((i * 7 + i // 251) % 256 for i in range(1 << 20))\n\
         def one(k):\n\
         \x20   s = socket.create_connection(('{}', {port}))\n\
         \x20   def send(): s.sendall(data); s.shutdown(socket.SHUT_WR)\n\
         \x20   w = threading.Thread(target=send); w.start()\n\
         \x20   got = bytearray()\n\
         \x20   while True:\n\
         \x20       b = s.recv(65536)\n\
         \x20       if not b: break\n\
         \x20       got += b\n\
         \x20   w.join(); s.close()\n\
         \x20   assert bytes(got) == data, (k, len(got))\n\
         for batch in range(10):\n\
         \x20   ts = [threading.Thread(target=one, args=(batch * 5 + i,)) for i in range(5)]\n\
         \x20   [x.start() for x in ts]; [x.join() for x in ts]\n\
         print('50 echoes exact')\n",
        t.addr_a
    );
    let fin = run_app(
        "50 echo clients in B",
        kernel(t, Side::B, &python, &["-c", &client]),
        Duration::from_secs(120),
    )
    .success();
    assert!(fin.stdout.contains("50 echoes exact"), "{}", fin.describe());
}

#[test]
fn socat_fork_per_connection_echoes_each_of_50_connections() {
    let t = topo(1);
    let socat = need("socat", "socat");
    let port = 21100;
    let listen = format!("TCP4-LISTEN:{port},bind={},reuseaddr,fork", t.addr_a);
    let mut server = App::start(
        "socat fork server (under accel-run)",
        accelerated(
            &t,
            Side::A,
            None,
            &socat,
            &["-d", "-d", &listen, "EXEC:cat"],
        ),
    );
    server.wait_for("listening on", START);
    echo_50_connections(&t, port);
}

#[test]
fn python_forking_tcp_server_echoes_each_of_50_connections() {
    let t = topo(1);
    let python = need("python3", "python3");
    let port = 21101;
    let code = format!(
        "import socketserver, sys\n\
         class H(socketserver.StreamRequestHandler):\n\
         \x20   def handle(self):\n\
         \x20       while True:\n\
         \x20           b = self.request.recv(65536)\n\
         \x20           if not b: break\n\
         \x20           self.request.sendall(b)\n\
         socketserver.ForkingTCPServer.allow_reuse_address = True\n\
         s = socketserver.ForkingTCPServer(('{}', {port}), H)\n\
         print('serving', flush=True)\n\
         s.serve_forever()\n",
        t.addr_a
    );
    let mut server = App::start(
        "ForkingTCPServer (under accel-run)",
        accelerated(&t, Side::A, None, &python, &["-c", &code]),
    );
    server.wait_for("serving", START);
    echo_50_connections(&t, port);
}

#[test]
fn a_pre_fork_server_serves_from_both_children() {
    let t = topo(1);
    let python = need("python3", "python3");
    let port = 21102;
    let stat = TempDir::new("prefork");
    let code = format!(
        "import os, socket, sys\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('{}', {port})); l.listen(64)\n\
         kids = []\n\
         for _ in range(2):\n\
         \x20   pid = os.fork()\n\
         \x20   if pid == 0:\n\
         \x20       while True:\n\
         \x20           c, _ = l.accept()\n\
         \x20           c.sendall(str(os.getpid()).encode()); c.close()\n\
         \x20   kids.append(pid)\n\
         print('children', *kids, flush=True)\n\
         os.wait()\n",
        t.addr_a
    );
    let mut cmd = accelerated(&t, Side::A, None, &python, &["-c", &code]);
    cmd.env("ACCEL_STAT_DIR", stat.path());
    let mut server = App::start("pre-fork server (under accel-run)", cmd);
    let line = server.wait_for("children", START);
    let kids: Vec<String> = line
        .split_whitespace()
        .skip_while(|w| *w != "children")
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(kids.len(), 2, "{line}");
    let before = snmp_a(&t);
    let client = format!(
        "import socket\n\
         seen = set()\n\
         for _ in range(60):\n\
         \x20   s = socket.create_connection(('{}', {port}))\n\
         \x20   seen.add(s.recv(32).decode()); s.close()\n\
         print(' '.join(sorted(seen)))\n",
        t.addr_a
    );
    let fin = run_app(
        "60 connections from B",
        kernel(&t, Side::B, &python, &["-c", &client]),
        Duration::from_secs(60),
    )
    .success();
    let served: Vec<&str> = fin.stdout.split_whitespace().collect();
    for k in &kids {
        assert!(
            served.contains(&k.as_str()),
            "child {k} served none: {served:?}"
        );
    }
    let d = snmp_a(&t).since(&before);
    assert_eq!(
        d.tcp_in_segs, 0,
        "A's kernel carried the connections ({d:?})"
    );
    for k in &kids {
        let _ = kill(Pid::from_raw(k.parse().unwrap()), Signal::SIGKILL);
    }
}
