//! Issue 13's loss-recovery acceptance: accel's TCP over a lossy link against the kernel's, on
//! the same topology, in the same test.
//!
//! The fault injector (accel_tools::faults) on B's veth drops, duplicates, reorders and
//! corrupts the frames of one flow, both ways. A kernel client in B sends a stream to an echo
//! server in A and checks every byte that comes back, so A receives and sends as much as B.
//! The server is one small C program (tests/c/echo_server.c), run on the kernel and under
//! `accel-run` (release build, default profile) in turn, with the same faults (same seed):
//! the same program, the same CPUs, only the stack differs. Every accelerated run is proven
//! accelerated: accel's counters moved and A's kernel saw none of its packets.
//!
//! Runs as root; a setup failure fails the test. Timings are wall-clock, on a machine others
//! may be using: the bounds compare totals over alternated runs.

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::time::Duration;

use accel_tests::apps::{self, App, Side, TempDir};
use accel_tests::{peer, Topology};
use accel_tools::faults::{FaultSpec, Faults, FlowMatch};
use accel_tools::topology::run;

const ACCEL_PORT: u16 = 7300;
const KERNEL_PORT: u16 = 7301;
const T: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

/// Loss, duplication, reordering, corruption, in parts per million of the flow's frames.
type Rates = (u32, u32, u32, u32);

struct Bench {
    topo: Topology,
    faults: Faults,
    server: PathBuf,
    _dir: TempDir,
}

#[track_caller]
fn bench() -> Bench {
    let topo = Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    let faults = Faults::attach(&topo, &FaultSpec::default())
        .unwrap_or_else(|e| panic!("cannot attach the fault injector: {e:#}"));
    // Linux's TCP builds GSO packets whatever the device offers, and the injector's egress
    // program sees them before they are cut into frames: one drop would take up to 44 of B's
    // frames at once. One segment per packet makes every fault hit one frame, as on a wire.
    run(
        "ip",
        &[
            "-n",
            &topo.ns_b,
            "link",
            "set",
            "dev",
            &topo.if_b,
            "gso_max_segs",
            "1",
        ],
    )
    .unwrap_or_else(|e| panic!("cannot set gso_max_segs on B's veth: {e:#}"));
    let dir = TempDir::new("loss");
    let server = apps::compile_c("echo_server", dir.path());
    Bench {
        topo,
        faults,
        server,
        _dir: dir,
    }
}

fn spec((drop_ppm, dup_ppm, reorder_ppm, corrupt_ppm): Rates, port: u16, seed: u64) -> FaultSpec {
    FaultSpec {
        drop_ppm,
        dup_ppm,
        reorder_ppm,
        corrupt_ppm,
        flow: FlowMatch::tcp(port),
        seed,
        ..FaultSpec::default()
    }
}

/// What one run of the echo server under a workload gave.
struct Run {
    took: Duration,
    /// accel's counters at exit (accelerated runs).
    accel: Option<apps::AccelStats>,
}

impl Bench {
    /// Starts the echo server in A (under accel or on the kernel) for `count` connections,
    /// runs `work` against it from B with `rates` of faults, then lets it exit and checks it
    /// did so cleanly; an accelerated run is proven accelerated.
    #[track_caller]
    fn run(
        &self,
        accel: bool,
        rates: Rates,
        seed: u64,
        count: u64,
        work: impl FnOnce(&Topology, SocketAddrV4) -> Duration,
    ) -> Run {
        let topo = &self.topo;
        let port = if accel { ACCEL_PORT } else { KERNEL_PORT };
        let addr = SocketAddrV4::new(topo.addr_a, port);
        // One connection more than the workload makes: the server exits after a last, clean
        // one, so its exit never races the workload's last bytes.
        let args = [
            topo.addr_a.to_string(),
            port.to_string(),
            (count + 1).to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (name, cmd) = if accel {
            let cmd = apps::accelerated(topo, Side::A, None, &self.server, &args);
            ("echo_server under accel-run", cmd)
        } else {
            (
                "echo_server",
                apps::kernel(topo, Side::A, &self.server, &args),
            )
        };
        // The previous run's connections may still be closing (a FIN retransmitted after a
        // loss): their packets must not land in this run's kernel counters.
        settle(topo);
        let mut app = App::start(name, cmd);
        app.wait_for("listening", Duration::from_secs(30));
        let before = apps::snmp_a(topo);
        self.faults
            .set(&spec(rates, port, seed))
            .expect("fault injector");
        let took = work(topo, addr);
        self.faults.pause().expect("fault injector");
        let kernel = apps::snmp_a(topo).since(&before);
        echo_from_b(topo, addr, 1, 0);
        let fin = app.finish(T).success();
        let accel = accel.then(|| {
            apps::assert_accelerated(name, &topo.if_a, &fin, &kernel, &["tcp_accepted"]);
            apps::accel_stats_for(name, &topo.if_a, &fin)
        });
        Run { took, accel }
    }

    /// The same workload on the kernel and under accel, alternated `reps` times, each pair
    /// with the same faults: (kernel times, accel times, accel's counters summed).
    #[track_caller]
    fn kernel_and_accel(
        &self,
        rates: Rates,
        reps: u64,
        count: u64,
        work: impl Fn(&Topology, SocketAddrV4) -> Duration,
    ) -> (Vec<Duration>, Vec<Duration>, Counters) {
        let (mut kernel, mut accel, mut counters) = (Vec::new(), Vec::new(), Counters::default());
        for rep in 0..reps {
            let seed = 13 + rep;
            kernel.push(self.run(false, rates, seed, count, &work).took);
            let r = self.run(true, rates, seed, count, &work);
            accel.push(r.took);
            counters.add(r.accel.as_ref());
            eprintln!(
                "rep {rep}: kernel {:?}, accel {:?}",
                kernel.last().unwrap(),
                r.took
            );
        }
        (kernel, accel, counters)
    }
}

/// accel's loss-recovery counters, summed over runs.
#[derive(Debug, Default)]
struct Counters {
    tcp_retransmits: u64,
    tcp_timeouts: u64,
    tcp_recoveries: u64,
    tcp_loss_probes: u64,
    rx_drop_bad_checksum: u64,
    rx_drop_malformed: u64,
}

impl Counters {
    fn add(&mut self, s: Option<&apps::AccelStats>) {
        let Some(s) = s else { return };
        self.tcp_retransmits += s.get("tcp_retransmits");
        self.tcp_timeouts += s.get("tcp_timeouts");
        self.tcp_recoveries += s.get("tcp_recoveries");
        self.tcp_loss_probes += s.get("tcp_loss_probes");
        self.rx_drop_bad_checksum += s.get("rx_drop_bad_checksum");
        self.rx_drop_malformed += s.get("rx_drop_malformed");
    }
}

/// Waits until neither kernel has a TCP connection that may still send (anything but a
/// listener, TIME-WAIT or FIN-WAIT-2), for at most 30 s.
#[track_caller]
fn settle(topo: &Topology) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut busy = Vec::new();
        for ns in [&topo.ns_a, &topo.ns_b] {
            let out = run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "ss",
                    "-Htn",
                    "state",
                    "syn-sent",
                    "state",
                    "syn-recv",
                    "state",
                    "established",
                    "state",
                    "fin-wait-1",
                    "state",
                    "close-wait",
                    "state",
                    "last-ack",
                    "state",
                    "closing",
                ],
            )
            .expect("ss");
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if !text.is_empty() {
                busy.push(format!("{ns}: {text}"));
            }
        }
        if busy.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "connections still closing after 30 s: {busy:?}"
        );
        // Polling the sockets' state, not synchronising on time.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One echo of `bytes` from B to `server`, checked byte for byte; its wall time.
#[track_caller]
fn echo_from_b(topo: &Topology, server: SocketAddrV4, bytes: u64, seed: u64) -> Duration {
    topo.in_b(move || peer::tcp_echo(server, bytes, seed, T))
        .expect("namespace B")
        .unwrap_or_else(|e| panic!("echo of {bytes} bytes with {server}: {e:#}"))
        .elapsed
}

/// `n` connections one after the other from B: connect, `bytes` each way (checked), close.
#[track_caller]
fn short_connections(topo: &Topology, server: SocketAddrV4, n: u64, bytes: u64) -> Duration {
    topo.in_b(move || -> Result<Duration, String> {
        let start = std::time::Instant::now();
        for i in 0..n {
            peer::tcp_echo(server, bytes, 1000 + i, T)
                .map_err(|e| format!("connection {i} with {server}: {e:#}"))?;
        }
        Ok(start.elapsed())
    })
    .expect("namespace B")
    .unwrap_or_else(|e| panic!("{e}"))
}

fn total(runs: &[Duration]) -> Duration {
    runs.iter().sum()
}

/// 20 MiB each way (B sends, A echoes) at 2% loss both ways: byte-exact, in at most twice the
/// kernel's time (totals over two alternated pairs of runs).
#[test]
fn twenty_mib_each_way_at_two_percent_loss_in_at_most_twice_the_kernels_time() {
    let b = bench();
    let (kernel, accel, c) = b.kernel_and_accel((20_000, 0, 0, 0), 2, 1, |t, s| {
        echo_from_b(t, s, 20 * MIB, 5)
    });
    let f = b.faults.counters().expect("counters");
    eprintln!(
        "20 MiB each way at 2% loss: kernel {:?} {kernel:?}, accel {:?} {accel:?}; accel {c:?}; \
         faults {f:?}",
        total(&kernel),
        total(&accel)
    );
    assert!(f.to_b.dropped > 0 && f.from_b.dropped > 0, "{f:?}");
    assert_eq!(f.link_drops, 0, "the veth itself dropped frames: {f:?}");
    // Repaired by recovery, not by timeouts.
    assert!(c.tcp_recoveries > 100, "{c:?}");
    assert!(
        total(&accel) <= total(&kernel) * 2,
        "accel took {accel:?}, the kernel {kernel:?}"
    );
}

/// 20 MiB each way at 5% loss both ways: completes, byte-exact.
#[test]
fn twenty_mib_each_way_at_five_percent_loss_completes() {
    let b = bench();
    let r = b.run(true, (50_000, 0, 0, 0), 5, 1, |t, s| {
        echo_from_b(t, s, 20 * MIB, 5)
    });
    let f = b.faults.counters().expect("counters");
    let mut c = Counters::default();
    c.add(r.accel.as_ref());
    eprintln!(
        "20 MiB each way at 5% loss: accel {:?}; {c:?}; faults {f:?}",
        r.took
    );
    assert!(f.to_b.dropped > 0 && f.from_b.dropped > 0, "{f:?}");
    assert!(c.tcp_recoveries > 0, "{c:?}");
}

/// 1% each of loss, duplication, reordering and corruption, both ways: byte-exact, and every
/// corrupted frame that reached accel was dropped by its checksum.
#[test]
fn twenty_mib_each_way_with_one_percent_of_every_fault_is_exact() {
    let b = bench();
    let r = b.run(true, (10_000, 10_000, 10_000, 10_000), 7, 1, |t, s| {
        echo_from_b(t, s, 20 * MIB, 7)
    });
    let f = b.faults.counters().expect("counters");
    let mut c = Counters::default();
    c.add(r.accel.as_ref());
    eprintln!(
        "20 MiB each way, 1% of each fault: accel {:?}; {c:?}; faults {f:?}",
        r.took
    );
    for (name, d) in [("to A", f.from_b), ("to B", f.to_b)] {
        assert!(
            d.dropped > 0 && d.duplicated > 0 && d.delayed > 0 && d.corrupted > 0,
            "{name}: {f:?}"
        );
    }
    assert_eq!(
        f.to_b.errors + f.from_b.errors + f.delay_line_errors,
        0,
        "{f:?}"
    );
    // A corrupted frame may also be duplicated: at least one drop each (by a checksum, or as
    // malformed when the byte changed was a length).
    assert!(
        c.rx_drop_bad_checksum + c.rx_drop_malformed >= f.from_b.corrupted,
        "{c:?} {f:?}"
    );
}

/// 100 connections one after the other (connect, 10 KB each way, close) at 2% loss both ways:
/// all byte-exact, in at most twice the kernel's time. A lost SYN or SYN-ACK costs either
/// stack a second (the initial RTO, the same in both) and a run sees a few of them, so one
/// run's time is mostly chance: the totals are over five alternated pairs of runs.
#[test]
fn hundred_short_connections_at_two_percent_loss_in_at_most_twice_the_kernels_time() {
    let b = bench();
    let (kernel, accel, c) = b.kernel_and_accel((20_000, 0, 0, 0), 5, 100, |t, s| {
        short_connections(t, s, 100, 10_000)
    });
    let f = b.faults.counters().expect("counters");
    eprintln!(
        "100 connections (x5) at 2% loss: kernel {:?} {kernel:?}, accel {:?} {accel:?}; accel \
         {c:?}; faults {f:?}",
        total(&kernel),
        total(&accel)
    );
    assert!(f.to_b.dropped > 0 && f.from_b.dropped > 0, "{f:?}");
    assert!(
        total(&accel) <= total(&kernel) * 2,
        "accel took {accel:?}, the kernel {kernel:?}"
    );
}
