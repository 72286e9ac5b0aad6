//! The fault injector (accel_tools::faults) on real traffic: each kind of fault happens at about
//! its rate, its counters agree with what the receiver saw, and other flows pass untouched.
//! Kernel sockets on both ends (the injector is for testing accel, but it must be proven on a
//! path whose behaviour we know). Runs as root; a setup failure fails the test.

use std::collections::HashSet;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use accel_tests::Topology;
use accel_tools::faults::{Directions, FaultSpec, Faults, FlowMatch};
use accel_tools::topology::run;

const FAULTY: u16 = 9000;
const CLEAN: u16 = 9001;
const N: u64 = 20_000;
const RATE_PPM: u32 = 50_000;

#[track_caller]
fn topo() -> Topology {
    Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"))
}

/// One counter of /proc/net/snmp in `ns` ("Udp", "InCsumErrors").
#[track_caller]
fn snmp(ns: &str, proto: &str, name: &str) -> u64 {
    let out = run("ip", &["netns", "exec", ns, "cat", "/proc/net/snmp"]).expect("snmp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        if let [head, vals] = pair {
            if head.starts_with(&format!("{proto}:")) {
                for (h, v) in head.split_whitespace().zip(vals.split_whitespace()) {
                    if h == name {
                        return v.parse().expect("counter value");
                    }
                }
            }
        }
    }
    panic!("no {proto} {name} in /proc/net/snmp");
}

/// What a receiver saw of a numbered stream.
#[derive(Debug, Default)]
struct Seen {
    distinct: u64,
    extra_copies: u64,
    reordered: u64,
}

/// Sends `N` numbered 64-byte datagrams from `tx` to `to`.
fn send_numbered(tx: &UdpSocket, to: SocketAddrV4) {
    let mut buf = [0u8; 64];
    for i in 0..N {
        buf[..8].copy_from_slice(&i.to_be_bytes());
        tx.send_to(&buf, to).expect("send");
        if i % 32 == 31 {
            // Pace: with XDP on B's veth, frames to B queue on a 256-frame ring that a sender
            // blasting from another CPU overflows (counted in link_drops, checked below).
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}

/// Receives until the stream has been quiet for `quiet` (UDP has no end: the sender finished
/// and the delay line is empty before this is called, so quiet means everything arrived).
fn receive_numbered(rx: &UdpSocket, quiet: Duration) -> Seen {
    rx.set_read_timeout(Some(quiet)).expect("timeout");
    let mut seen = HashSet::new();
    let mut s = Seen::default();
    let mut highest = None;
    let mut buf = [0u8; 128];
    while let Ok(n) = rx.recv(&mut buf) {
        assert_eq!(n, 64, "datagram length");
        let i = u64::from_be_bytes(buf[..8].try_into().unwrap());
        assert!(buf[8..64].iter().all(|&b| b == 0), "payload of {i} changed");
        if !seen.insert(i) {
            s.extra_copies += 1;
        } else if highest.is_some_and(|h| i < h) {
            s.reordered += 1;
        }
        highest = highest.max(Some(i));
    }
    s.distinct = seen.len() as u64;
    s
}

#[track_caller]
fn assert_near(what: &str, got: u64, trials: u64, ppm: u32) {
    let p = f64::from(ppm) / 1e6;
    let mean = trials as f64 * p;
    let sd = (trials as f64 * p * (1.0 - p)).sqrt();
    // 5 standard deviations: fails by chance once in millions of runs.
    assert!(
        (got as f64 - mean).abs() <= 5.0 * sd + 1.0,
        "{what}: {got} of {trials}, expected about {mean:.0} (+-{:.0})",
        5.0 * sd
    );
}

fn udp_in(topo: &Topology, a_side: bool, port: u16) -> UdpSocket {
    let addr = if a_side { topo.addr_a } else { topo.addr_b };
    let sock = if a_side {
        topo.in_a(move || UdpSocket::bind(SocketAddrV4::new(addr, port)))
    } else {
        topo.in_b(move || UdpSocket::bind(SocketAddrV4::new(addr, port)))
    };
    let sock = sock.expect("namespace").expect("bind");
    // Big enough for the whole stream: no drop may come from the receiver's buffer.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(32 << 20))
        .expect("SO_RCVBUFFORCE");
    sock
}

/// Waits until every delayed frame came back out of the delay line.
#[track_caller]
fn wait_delay_line_empty(f: &Faults) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let c = f.counters().expect("counters");
        let delayed = c.to_b.delayed + c.from_b.delayed;
        if c.delay_line_sent >= delayed && c.to_b.returned + c.from_b.returned >= delayed {
            return;
        }
        assert!(Instant::now() < deadline, "delay line did not drain: {c:?}");
        std::thread::sleep(Duration::from_millis(10)); // polling a counter, not synchronising
    }
}

#[test]
fn fault_injector_hits_each_kind_at_its_rate_and_spares_other_flows() {
    let topo = topo();
    // A's kernel must compute full UDP checksums for B to see corruption (see faults.c).
    run(
        "ip",
        &[
            "netns", "exec", &topo.ns_a, "ethtool", "-K", &topo.if_a, "tx", "off",
        ],
    )
    .expect("ethtool");
    let faults = Faults::attach(
        &topo,
        &FaultSpec {
            drop_ppm: RATE_PPM,
            dup_ppm: RATE_PPM,
            corrupt_ppm: RATE_PPM,
            reorder_ppm: RATE_PPM,
            reorder_delay: Duration::from_millis(2),
            seed: 42,
            flow: FlowMatch::udp(FAULTY),
            directions: Directions::Both,
        },
    )
    .unwrap_or_else(|e| panic!("cannot attach the fault injector: {e:#}"));

    // Faulty and clean streams, both ways.
    let b_faulty = udp_in(&topo, false, FAULTY);
    let b_clean = udp_in(&topo, false, CLEAN);
    let a_faulty = udp_in(&topo, true, FAULTY);
    let a_clean = udp_in(&topo, true, CLEAN);
    // InErrors: bad checksum, or a length field the corruption hit (then the kernel drops it
    // as a short datagram before looking at the checksum). RcvbufErrors (also in InErrors) must
    // stay 0 for the sums below to hold.
    let err_b0 = snmp(&topo.ns_b, "Udp", "InErrors");
    let err_a0 = snmp(&topo.ns_a, "Udp", "InErrors");
    let buf_b0 = snmp(&topo.ns_b, "Udp", "RcvbufErrors");
    let buf_a0 = snmp(&topo.ns_a, "Udp", "RcvbufErrors");

    // Faulty streams: to port FAULTY on each side; clean ones: CLEAN to CLEAN (a frame matches
    // by its source or destination port).
    let faulty_b = SocketAddrV4::new(topo.addr_b, FAULTY);
    let faulty_a = SocketAddrV4::new(topo.addr_a, FAULTY);
    let clean_b = SocketAddrV4::new(topo.addr_b, CLEAN);
    let clean_a = SocketAddrV4::new(topo.addr_a, CLEAN);
    std::thread::scope(|s| {
        s.spawn(|| send_numbered(&a_clean, faulty_b));
        s.spawn(|| send_numbered(&b_clean, faulty_a));
        s.spawn(|| send_numbered(&a_clean, clean_b));
        s.spawn(|| send_numbered(&b_clean, clean_a));
    });
    wait_delay_line_empty(&faults);
    let quiet = Duration::from_millis(500);
    let (seen_b, seen_a, clean_at_b, clean_at_a) = std::thread::scope(|s| {
        let x = s.spawn(|| receive_numbered(&b_faulty, quiet));
        let y = s.spawn(|| receive_numbered(&a_faulty, quiet));
        let z = s.spawn(|| receive_numbered(&b_clean, quiet));
        let w = s.spawn(|| receive_numbered(&a_clean, quiet));
        (
            x.join().unwrap(),
            y.join().unwrap(),
            z.join().unwrap(),
            w.join().unwrap(),
        )
    });
    let c = faults.counters().expect("counters");
    let csum_b = snmp(&topo.ns_b, "Udp", "InErrors") - err_b0;
    let csum_a = snmp(&topo.ns_a, "Udp", "InErrors") - err_a0;
    assert_eq!(
        snmp(&topo.ns_b, "Udp", "RcvbufErrors"),
        buf_b0,
        "B's receive buffer overflowed"
    );
    assert_eq!(
        snmp(&topo.ns_a, "Udp", "RcvbufErrors"),
        buf_a0,
        "A's receive buffer overflowed"
    );
    eprintln!("counters: {c:#?}");
    eprintln!(
        "at B: {seen_b:?}, broken (UDP InErrors) {csum_b}; at A: {seen_a:?}, broken {csum_a}"
    );
    eprintln!("clean at B: {clean_at_b:?}; clean at A: {clean_at_a:?}");

    assert_eq!(c.to_b.errors + c.from_b.errors, 0, "helper failures: {c:?}");
    assert_eq!(c.delay_line_errors, 0, "delay line: {c:?}");
    assert_eq!(c.link_drops, 0, "the veth itself dropped frames: {c:?}");
    for (name, d, seen, csum) in [
        ("to B", c.to_b, &seen_b, csum_b),
        ("from B", c.from_b, &seen_a, csum_a),
    ] {
        assert_eq!(
            d.matched, N,
            "{name}: every datagram of the flow was seen once"
        );
        assert_near(&format!("{name} dropped"), d.dropped, N, RATE_PPM);
        assert_near(
            &format!("{name} corrupted"),
            d.corrupted,
            N - d.dropped,
            RATE_PPM,
        );
        // Duplicates and delays apply after XDP's drop for arrivals, after the drop otherwise.
        let second = if name == "to B" {
            assert_eq!(
                d.matched_tc,
                N - d.dropped,
                "{name}: tc saw what XDP passed"
            );
            d.matched_tc
        } else {
            N - d.dropped
        };
        assert_near(
            &format!("{name} duplicated"),
            d.duplicated,
            second,
            RATE_PPM,
        );
        assert_near(&format!("{name} delayed"), d.delayed, second, RATE_PPM);
        assert_eq!(
            d.returned, d.delayed,
            "{name}: the delay line gave back every frame"
        );
        // The receiver agrees with the counters exactly: every frame neither dropped nor
        // corrupted arrived; corrupted ones (and their duplicates) failed the checksum.
        assert_eq!(
            seen.distinct,
            N - d.dropped - d.corrupted,
            "{name}: distinct datagrams"
        );
        assert!(
            csum >= d.corrupted && csum <= d.corrupted + d.duplicated,
            "{name}: {csum} broken datagrams for {} corrupted",
            d.corrupted
        );
        assert_eq!(
            seen.extra_copies + (csum - d.corrupted),
            d.duplicated,
            "{name}: every duplicate arrived (or was rejected with its corrupted original)"
        );
        assert!(
            seen.reordered > 0,
            "{name}: no datagram arrived out of order"
        );
        assert!(
            d.other > 0,
            "{name}: the clean stream went through the programs"
        );
    }
    for (name, seen) in [("to B", &clean_at_b), ("from B", &clean_at_a)] {
        assert_eq!(seen.distinct, N, "clean stream {name} lost datagrams");
        assert_eq!(seen.extra_copies, 0, "clean stream {name} duplicated");
        assert_eq!(seen.reordered, 0, "clean stream {name} reordered");
    }
    drop(faults);
    let out = run(
        "ip",
        &["-n", &topo.ns_b, "-d", "link", "show", "dev", &topo.if_b],
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("prog/xdp"), "XDP left on B's veth: {text}");
    let out = run("ip", &["-n", &topo.ns_b, "link", "show"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("fdl0"),
        "delay line left in B"
    );
}

#[test]
fn fault_injector_is_deterministic_for_a_seed() {
    // The same seed and the same frames: the same frames dropped.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let topo = topo();
        let faults = Faults::attach(
            &topo,
            &FaultSpec {
                drop_ppm: 100_000,
                seed: 7,
                flow: FlowMatch::udp(FAULTY),
                directions: Directions::ToB,
                ..FaultSpec::default()
            },
        )
        .unwrap_or_else(|e| panic!("cannot attach the fault injector: {e:#}"));
        let rx = udp_in(&topo, false, FAULTY);
        let tx = udp_in(&topo, true, CLEAN);
        let to = SocketAddrV4::new(topo.addr_b, FAULTY);
        // One at a time, each either received or counted as dropped before the next, so the
        // frames meet the injector in a fixed order.
        rx.set_nonblocking(true).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        let mut dropped = 0;
        for i in 0..500u64 {
            buf[..8].copy_from_slice(&i.to_be_bytes());
            tx.send_to(&buf, to).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if rx.recv(&mut buf).is_ok() {
                    got.push(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                    break;
                }
                let now_dropped = faults.counters().unwrap().to_b.dropped;
                if now_dropped > dropped {
                    dropped = now_dropped;
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "datagram {i} neither arrived nor dropped"
                );
            }
        }
        let c = faults.counters().unwrap();
        assert_eq!(c.to_b.dropped as usize, 500 - got.len(), "{c:?}");
        runs.push(got);
    }
    assert_eq!(runs[0], runs[1], "same seed, different frames dropped");
}
