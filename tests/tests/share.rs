//! Several processes on one interface's queues, through the accel-helper: each accelerated,
//! a listener's connections spread over the processes that accept on it, a killed process
//! leaks a bounded number of frames and the others keep serving, and when all are gone the
//! interface is left as it was and no helper remains. Runs as root (CI is root); a setup
//! failure fails the test, it never skips.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use accel_tests::{
    helper_status, helpers_in, parse_counters, peer, start_echo, tool, wait_helper_gone,
    xdp_attached, Proc, Topology,
};
use libaccel::share::Status;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(60);

#[track_caller]
fn topo(queues: u32) -> Topology {
    Topology::new(queues).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"))
}

/// Runs `f` on a thread of its own inside namespace `ns` (the caller goes on).
fn spawn_in<F, R>(ns: &str, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let file = File::open(format!("/run/netns/{ns}")).expect("namespace");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

#[track_caller]
fn status(t: &Topology) -> Status {
    helper_status(&t.ns_a).expect("a helper serves namespace A")
}

/// Stops a process and returns its counters; it must exit cleanly.
#[track_caller]
fn stop(p: &mut Proc) -> (Vec<String>, std::collections::HashMap<String, u64>) {
    let (st, lines, err) = p.stop(Signal::SIGTERM, T);
    assert!(st.success(), "exit {st}: {err}");
    let c = parse_counters(&lines);
    (lines, c)
}

#[track_caller]
fn all_gone(t: &Topology) {
    wait_helper_gone(&t.ns_a, Duration::from_secs(5));
    assert!(
        !xdp_attached(&t.ns_a, &t.if_a),
        "XDP program left on {} after every process left",
        t.if_a
    );
}

/// Two unrelated processes on a one-queue interface (what a container gets): both
/// accelerated, each gets only its own traffic, and A's kernel sees none of it.
#[test]
fn two_processes_on_one_queue_are_both_accelerated() {
    let t = topo(1);
    let a = SocketAddrV4::new(t.addr_a, 7100);
    let b = SocketAddrV4::new(t.addr_a, 7101);
    let mut one = start_echo(&t, a.port(), &[]);
    let mut two = start_echo(&t, b.port(), &[]);
    let s = status(&t);
    assert_eq!(s.interfaces.len(), 1, "{s:?}");
    let iface = &s.interfaces[0];
    let pids: Vec<u32> = iface.clients.iter().map(|c| c.pid).collect();
    assert_eq!(
        pids.len(),
        2,
        "both processes are the helper's clients: {s:?}"
    );
    assert!(
        iface.clients.iter().all(|c| c.program == "accel-echo"),
        "{s:?}"
    );
    // accel-stat shows them as the helper serves them: a line per process with its slot.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &t.ns_a])
        .arg(tool("accel-stat"))
        .arg("--helper")
        .output()
        .expect("ip netns exec accel-stat");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "accel-stat --helper: {text}");
    for c in &iface.clients {
        let line = format!("slot {:>2}: pid {} accel-echo queues [0]", c.slot, c.pid);
        assert!(text.contains(&line), "no `{line}` in:\n{text}");
    }
    assert!(text.contains(&format!("  {} (program ", t.if_a)), "{text}");
    let before = t.snmp_a().expect("snmp");
    for server in [a, b] {
        let r = t
            .in_b(move || peer::udp_echo(server, 2_000, 256, 16, Duration::from_secs(5)))
            .unwrap()
            .expect("UDP echo");
        assert_eq!((r.received, r.corrupted), (2_000, 0), "{server}: {r:?}");
        let r = t
            .in_b(move || peer::tcp_echo(server, 2_000_000, 7, T))
            .unwrap()
            .expect("TCP echo");
        assert_eq!(r.sent_checksum, r.echoed_checksum, "{server}");
    }
    let d = t.snmp_a().expect("snmp").since(&before);
    assert_eq!(
        (d.ip_in_receives, d.tcp_in_segs, d.udp_in_datagrams),
        (0, 0, 0),
        "A's kernel carried some of it: {d:?}"
    );
    for (p, other) in [(&mut one, b), (&mut two, a)] {
        let (lines, c) = stop(p);
        assert_eq!(
            c.get("echo.udp_datagrams_echoed"),
            Some(&2_000),
            "{lines:?}"
        );
        assert_eq!(
            c.get("echo.tcp_bytes_echoed"),
            Some(&2_000_000),
            "{lines:?}"
        );
        assert_eq!(
            c.get("echo.connections_accepted"),
            Some(&1),
            "only its own: {lines:?}"
        );
        assert_eq!(c.get("queue0.frames_accounted"), Some(&1), "{lines:?}");
        assert_eq!(
            c.get("stack.udp_rx_drop_no_socket"),
            Some(&0),
            "saw datagrams for {other}: {lines:?}"
        );
    }
    all_gone(&t);
}

/// UDP echo in a loop from B until told to stop; says on `started` once 100 came back.
fn udp_load(
    ns: &str,
    server: SocketAddrV4,
    stop: Arc<AtomicBool>,
    started: mpsc::Sender<()>,
) -> JoinHandle<u64> {
    spawn_in(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 2048];
        let mut echoed = 0u64;
        let mut said = false;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..16 {
                let _ = s.send_to(&[7u8; 1000], server);
            }
            while let Ok((n, _)) = s.recv_from(&mut buf) {
                if n == 1000 {
                    echoed += 1;
                }
                if echoed >= 100 && !said {
                    let _ = started.send(());
                    said = true;
                }
            }
        }
        echoed
    })
}

/// A process SIGKILLed in the middle of traffic: the other keeps serving, the helper takes
/// its slot back, recovers what its rings held and counts what it held itself as leaked,
/// within the bound; every frame is accounted for once traffic stops.
#[test]
fn a_killed_process_leaks_a_bounded_number_and_the_other_keeps_serving() {
    let t = topo(1);
    let victim_addr = SocketAddrV4::new(t.addr_a, 7200);
    let other_addr = SocketAddrV4::new(t.addr_a, 7201);
    let mut victim = start_echo(&t, victim_addr.port(), &[]);
    let mut other = start_echo(&t, other_addr.port(), &[]);
    let stop_load = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let loads = [
        udp_load(&t.ns_b, victim_addr, Arc::clone(&stop_load), tx.clone()),
        udp_load(&t.ns_b, other_addr, Arc::clone(&stop_load), tx),
    ];
    for _ in 0..2 {
        rx.recv_timeout(T).expect("both processes echo under load");
    }
    let pid = victim.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    let (st, _, _) = victim.wait(T);
    assert!(!st.success(), "killed");
    // The helper notices at once (pidfd); the other process serves on, fully.
    let r = t
        .in_b(move || peer::udp_echo(other_addr, 3_000, 512, 32, Duration::from_secs(5)))
        .unwrap()
        .expect("UDP echo after the kill");
    assert_eq!(r.received, 3_000, "{r:?}");
    let r = t
        .in_b(move || peer::tcp_echo(other_addr, 1_000_000, 3, T))
        .unwrap()
        .expect("TCP echo after the kill");
    assert_eq!(r.sent_checksum, r.echoed_checksum);
    stop_load.store(true, Ordering::Relaxed);
    for l in loads {
        l.join().expect("load thread");
    }
    let s = status(&t);
    let iface = &s.interfaces[0];
    assert_eq!(
        iface.clients.len(),
        1,
        "the killed process's slot is free: {s:?}"
    );
    let q = iface.queues[0];
    eprintln!("queue 0 after the kill: {q:?}");
    // What the killed process held privately at most: its cache, a received batch, frames
    // waiting for the fill ring, frames the stack queued; the rest of its rings came back.
    let bound = libaccel::queue::CACHE_MAX as u32 + 2 * 64 + 256;
    assert!(q.leaked <= bound, "leaked {} > {bound}: {q:?}", q.leaked);
    assert!(q.accounted, "every frame accounted for at rest: {q:?}");
    assert_eq!(q.repairs, 0, "it did not die holding the mutex here: {q:?}");
    // No victim flow is left: its port goes to the kernel now.
    assert!(
        iface.shared_flows.iter().all(|f| !f.flow.contains(":7200")),
        "{s:?}"
    );
    let (lines, c) = stop(&mut other);
    assert_eq!(c.get("queue0.frames_accounted"), Some(&1), "{lines:?}");
    all_gone(&t);
}

/// Sends one byte on `c` and expects it back.
fn ping(c: &mut TcpStream, b: u8) -> std::io::Result<()> {
    c.write_all(&[b])?;
    let mut r = [0u8; 1];
    c.read_exact(&mut r)?;
    if r[0] != b {
        return Err(std::io::Error::other("wrong byte"));
    }
    Ok(())
}

/// Opens `n` connections to `server` from B, each checked with one echoed byte.
fn open(t: &Topology, server: SocketAddrV4, n: usize) -> Vec<TcpStream> {
    t.in_b(move || {
        (0..n)
            .map(|i| {
                let mut c = TcpStream::connect_timeout(&server.into(), Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connection {i}: {e}"));
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                ping(&mut c, i as u8).unwrap_or_else(|e| panic!("connection {i}: {e}"));
                c
            })
            .collect()
    })
    .unwrap()
}

#[track_caller]
fn all_echo(conns: &mut [TcpStream], what: &str) {
    for (i, c) in conns.iter_mut().enumerate() {
        ping(c, 0x5a).unwrap_or_else(|e| panic!("connection {i} broke {what}: {e}"));
    }
}

fn accepted(c: &std::collections::HashMap<String, u64>) -> u64 {
    c.get("echo.connections_accepted").copied().unwrap_or(0)
}

/// Processes accepting on one port (SO_REUSEPORT): the XDP program pins each new connection
/// to one of them at its SYN, spread by source; a process that joins later gets new
/// connections and takes none of the old ones; one that drains gets no new ones and keeps
/// serving its own; one that exits takes only its own connections with it.
#[test]
fn connections_spread_over_processes_and_stay_with_them() {
    let t = topo(1);
    let server = SocketAddrV4::new(t.addr_a, 7300);
    let p = server.port();
    let mut e1 = start_echo(&t, p, &["--reuse-port"]);
    let mut e2 = start_echo(&t, p, &["--reuse-port"]);
    let before = t.snmp_a().expect("snmp");
    let mut conns = open(&t, server, 32);
    let s = status(&t);
    let flows = &s.interfaces[0].shared_flows;
    let tcp = flows
        .iter()
        .find(|f| f.flow.starts_with("TCP") && f.flow.contains(":7300"))
        .unwrap_or_else(|| panic!("the listener's set: {flows:?}"));
    assert_eq!(tcp.slots.len(), 2, "both accept: {flows:?}");

    // A third process joins the set: the connections there are stay where they are.
    let mut e3 = start_echo(&t, p, &["--reuse-port"]);
    all_echo(&mut conns, "when a third process joined");
    conns.extend(open(&t, server, 32));

    // The first drains: no new connections, the ones it has still served.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(e1.pid() as i32), Signal::SIGUSR1).unwrap();
    let line = e1.wait_for_line("draining", T);
    let drained_at: u64 = line
        .split("accepted ")
        .nth(1)
        .and_then(|r| r.trim_end_matches(" so far)").parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    conns.extend(open(&t, server, 32));
    all_echo(&mut conns, "when the first process drained");

    assert_eq!(status(&t).interfaces[0].pins, 96, "one pin per connection");

    // The second exits: only its own connections end, with a FIN.
    let (lines2, c2) = stop(&mut e2);
    let mut ended = 0;
    for c in conns.iter_mut() {
        match ping(c, 1) {
            Ok(()) => {}
            Err(_) => ended += 1,
        }
    }
    assert_eq!(
        ended,
        accepted(&c2),
        "only the exited process's connections ended: {lines2:?}"
    );
    // Its pins went with it (the helper); the others' go once their connections are closed
    // (accel-echo removes them in a batch 2 s after the close).
    drop(conns);
    let deadline = std::time::Instant::now() + T;
    loop {
        let pins = status(&t).interfaces[0].pins;
        if pins == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{pins} pins left");
        std::thread::sleep(Duration::from_millis(50)); // polling for the processes' cleanup
    }
    let (lines1, c1) = stop(&mut e1);
    let (lines3, c3) = stop(&mut e3);
    let d = t.snmp_a().expect("snmp").since(&before);
    assert_eq!(d.tcp_passive_opens, 0, "the kernel accepted some: {d:?}");
    assert_eq!(accepted(&c1) + accepted(&c2) + accepted(&c3), 96);
    assert_eq!(
        accepted(&c1),
        drained_at,
        "no new connection after draining: {lines1:?}"
    );
    for (c, lines) in [(&c1, &lines1), (&c2, &lines2), (&c3, &lines3)] {
        assert!(accepted(c) > 0, "each process got connections: {lines:?}");
    }
    all_gone(&t);
}

/// `accel-helper --foreground` serves as a service: processes use it (none is started on
/// demand), it stays when they are gone (the interface detached), a second one refuses to
/// start, and SIGTERM ends it.
#[test]
fn the_helper_runs_as_a_service() {
    let t = topo(1);
    let mut svc = Proc::spawn({
        let mut c = t.command_a(tool("accel-helper").to_str().unwrap());
        c.arg("--foreground");
        c
    });
    // It listens once a status request answers.
    let deadline = std::time::Instant::now() + T;
    while helper_status(&t.ns_a).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the service never listened"
        );
        std::thread::sleep(Duration::from_millis(5)); // polling for readiness
    }
    assert_eq!(helpers_in(&t.ns_a), vec![svc.pid()]);
    let mut second = Proc::spawn({
        let mut c = t.command_a(tool("accel-helper").to_str().unwrap());
        c.arg("--foreground");
        c
    });
    let (st, _, err) = second.wait(T);
    assert!(
        !st.success() && err.contains("already serves"),
        "{st}: {err}"
    );

    let server = SocketAddrV4::new(t.addr_a, 7400);
    let mut echo = start_echo(&t, server.port(), &[]);
    assert_eq!(
        helpers_in(&t.ns_a),
        vec![svc.pid()],
        "no helper started on demand"
    );
    let r = t
        .in_b(move || peer::udp_echo(server, 500, 64, 8, Duration::from_secs(5)))
        .unwrap()
        .expect("UDP echo");
    assert_eq!(r.received, 500);
    stop(&mut echo);
    let deadline = std::time::Instant::now() + T;
    while xdp_attached(&t.ns_a, &t.if_a) {
        assert!(
            std::time::Instant::now() < deadline,
            "the interface stayed attached"
        );
        std::thread::sleep(Duration::from_millis(5)); // polling for the detach
    }
    assert_eq!(helpers_in(&t.ns_a), vec![svc.pid()], "the service stays");
    assert_eq!(status(&t).interfaces.len(), 0);
    let (st, _, err) = svc.stop(Signal::SIGTERM, T);
    assert!(st.success(), "{st}: {err}");
    all_gone(&t);
}

// ---------------------------------------------------------------------------------------------
// A process that dies holding a queue's mutex, in the middle of a change: this test binary
// re-run as a client that joins through the helper, takes frames from the free stack, and
// freezes right after the commit point (its journal entry open) until it is SIGKILLed.

const FROZEN_NS: &str = "ACCEL_SHARE_TEST_FROZEN_NS";
const FROZEN_IF: &str = "ACCEL_SHARE_TEST_FROZEN_IF";

/// Only does something when run as the frozen client (see the test below).
#[test]
fn frozen_client() {
    let (Ok(ns), Ok(ifname)) = (std::env::var(FROZEN_NS), std::env::var(FROZEN_IF)) else {
        return;
    };
    let file = File::open(format!("/run/netns/{ns}")).expect("namespace");
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    let control = libaccel::control::ControlPlane::open(&ifname).expect("control plane");
    let mut att = libaccel::attach::Attachment::open(
        control,
        &libaccel::attach::Options {
            helper: Some(tool("accel-helper")),
            ..Default::default()
        },
    )
    .expect("join");
    att.freeze_in_shared_change(|| {
        println!("FROZEN");
        let _ = std::io::stdout().flush();
    });
}

/// The mutex-owner-death recovery, end to end: while a client is frozen holding queue 0's
/// mutex the other process waits at most its patience per batch (it does not hang), and
/// once the frozen one is killed the next locker repairs the change it left half done, the
/// helper counts the frames it took as leaked, the census adds up, and service is whole again.
#[test]
fn a_process_killed_holding_the_queue_mutex_does_not_stop_the_others() {
    let t = topo(1);
    let server = SocketAddrV4::new(t.addr_a, 7500);
    let mut echo = start_echo(&t, server.port(), &[]);
    let r = t
        .in_b(move || peer::udp_echo(server, 500, 256, 16, Duration::from_secs(5)))
        .unwrap()
        .expect("UDP echo before");
    assert_eq!(r.received, 500);
    let mut frozen = Proc::spawn({
        let mut c = std::process::Command::new(std::env::current_exe().unwrap());
        c.args([
            "--exact",
            "frozen_client",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FROZEN_NS, &t.ns_a)
        .env(FROZEN_IF, &t.if_a);
        c
    });
    frozen.wait_for_line("FROZEN", T);
    // The survivor's batches wait for the mutex in vain, then go on without it.
    let during = t
        .in_b(move || peer::udp_echo(server, 300, 256, 16, Duration::from_millis(500)))
        .unwrap()
        .expect("UDP echo while frozen");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(frozen.pid() as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let (st, _, _) = frozen.wait(T);
    assert!(!st.success());
    // More than a cache's worth: the survivor needs the mutex again for every refill.
    let r = t
        .in_b(move || peer::udp_echo(server, 5_000, 256, 16, Duration::from_secs(5)))
        .unwrap()
        .expect("UDP echo after");
    assert_eq!(r.received, 5_000, "served in full after the kill: {r:?}");
    let s = status(&t);
    let q = s.interfaces[0].queues[0];
    eprintln!(
        "queue 0 after the kill: {q:?}; echoed while frozen: {}",
        during.received
    );
    assert_eq!(s.interfaces[0].clients.len(), 1, "{s:?}");
    assert_eq!(q.repairs, 1, "the open journal entry was closed: {q:?}");
    assert!(
        q.leaked >= 64,
        "the 64 frames it took count as leaked: {q:?}"
    );
    assert!(q.accounted, "{q:?}");
    let (lines, c) = stop(&mut echo);
    assert!(
        c.get("queue0.lock_timeouts").copied().unwrap_or(0) > 0,
        "{lines:?}"
    );
    assert_eq!(c.get("queue0.frames_accounted"), Some(&1), "{lines:?}");
    all_gone(&t);
}
