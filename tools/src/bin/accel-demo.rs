//! accel-demo: the README's main job. Real programs on a throwaway two-namespace veth topology,
//! on the kernel and under accel-run, side by side:
//!
//! - nginx in namespace A, wrk in B: requests per second and p99 latency;
//! - sockperf ping-pong (64-byte messages, TCP and UDP) with both ends under accel-run, against
//!   both ends on the kernel blocking in their receive calls and both ends on the kernel
//!   spinning (`sockperf --nonblocked`), which is what a latency-minded user runs.
//!
//! Then a short table of medians and ratios, and the proof that A's kernel carried none of
//! accel's traffic (its IPv4, TCP and UDP counters before and after). The workloads, the tools'
//! parsers and the topology are accel-bench's (`accel_tools::bench`); everything is removed at
//! the end, also on failure.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use accel_tools::bench::report::{median, Variant};
use accel_tools::bench::workloads::{find_accel_run, Bench, Sample};
use accel_tools::topology::Snmp;
use anyhow::{bail, Context, Result};
use clap::Parser;

/// Run nginx and sockperf on the kernel and under accel on a throwaway veth topology, and show
/// the difference. Needs root and the release build (accel-run and the preload library next to
/// this program).
#[derive(Parser, Debug)]
#[command(name = "accel-demo", version)]
struct Args {
    /// Runs of each variant (alternating kernel and accel); the table shows medians.
    #[arg(long, default_value_t = 2)]
    reps: u32,
    /// Seconds each client (wrk, sockperf ping-pong) runs.
    #[arg(long, default_value_t = 3)]
    secs: u32,
}

/// What the demo runs: nginx (kernel, accel), then TCP and UDP ping-pong (kernel, kernel
/// spinning, accel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    Nginx,
    PingPong { tcp: bool },
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Nginx => "nginx (wrk -c32 from B)",
            Workload::PingPong { tcp: true } => "sockperf TCP ping-pong",
            Workload::PingPong { tcp: false } => "sockperf UDP ping-pong",
        }
    }

    fn variants(self) -> &'static [Variant] {
        match self {
            Workload::Nginx => &[Variant::Kernel, Variant::Accel],
            Workload::PingPong { .. } => {
                &[Variant::Kernel, Variant::KernelSpinning, Variant::Accel]
            }
        }
    }

    fn run(self, bench: &Bench, v: Variant) -> Result<Vec<Sample>> {
        let accel = v == Variant::Accel;
        match self {
            Workload::Nginx => bench.nginx(accel, false, 32),
            Workload::PingPong { tcp } => bench.pingpong(tcp, accel, v == Variant::KernelSpinning),
        }
    }
}

const WORKLOADS: [Workload; 3] = [
    Workload::Nginx,
    Workload::PingPong { tcp: true },
    Workload::PingPong { tcp: false },
];

/// Every sample of one workload: (variant, metric, value).
#[derive(Default)]
struct Samples(Vec<(Variant, &'static str, f64)>);

impl Samples {
    fn median(&self, v: Variant, metric: &str) -> Option<f64> {
        let xs: Vec<f64> = self
            .0
            .iter()
            .filter(|(x, m, _)| *x == v && *m == metric)
            .map(|(_, _, val)| *val)
            .collect();
        median(&xs)
    }
}

/// A's kernel counters added up over the runs of one stack.
#[derive(Default)]
struct KernelSeen {
    ip_in: u64,
    tcp_in: u64,
    udp_in: u64,
    udp_no_ports: u64,
}

impl KernelSeen {
    fn add(&mut self, d: &Snmp) {
        self.ip_in += d.ip_in_receives;
        self.tcp_in += d.tcp_in_segs;
        self.udp_in += d.udp_in_datagrams;
        self.udp_no_ports += d.udp_no_ports;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.reps == 0 || args.secs == 0 {
        bail!("--reps and --secs must be at least 1");
    }
    let exe: PathBuf = std::env::current_exe().context("cannot find accel-demo's own path")?;
    let accel_run = find_accel_run(&exe)?;
    let started = Instant::now();
    let mut bench = Bench::new(exe, accel_run, false)?;
    bench.secs = args.secs;
    let topo = &bench.topo;
    println!(
        "accel-demo: nginx and sockperf on the kernel and under accel-run, on a throwaway veth \
         pair between namespaces A ({}) and B ({}); servers in A, clients in B",
        topo.addr_a, topo.addr_b
    );
    let total: usize =
        WORKLOADS.iter().map(|w| w.variants().len()).sum::<usize>() * args.reps as usize;
    let mut step = 0;
    let mut results: Vec<(Workload, Samples)> = Vec::new();
    let (mut kernel_seen, mut accel_seen) = (KernelSeen::default(), KernelSeen::default());
    for w in WORKLOADS {
        let mut samples = Samples::default();
        for rep in 0..args.reps {
            // Alternate the order, so slow drift favours no variant.
            let mut order = w.variants().to_vec();
            if rep % 2 == 1 {
                order.reverse();
            }
            for v in order {
                step += 1;
                eprint!(
                    "[{step}/{total}] {}, {}, run {}/{} ... ",
                    w.name(),
                    v.label(),
                    rep + 1,
                    args.reps
                );
                let t = Instant::now();
                let got = w
                    .run(&bench, v)
                    .with_context(|| format!("{}, {}", w.name(), v.label()))?;
                let d = bench.client_kernel.get();
                match v {
                    Variant::Accel => accel_seen.add(&d),
                    _ => kernel_seen.add(&d),
                }
                let shown: Vec<String> = got
                    .iter()
                    .filter(|(m, ..)| ["requests", "p50", "p99", "p99 latency"].contains(m))
                    .map(|(m, u, _, val)| format!("{m} {val:.1} {u}"))
                    .collect();
                eprintln!("{} ({:.1} s)", shown.join(", "), t.elapsed().as_secs_f64());
                for (m, _, _, val) in got {
                    samples.0.push((v, m, val));
                }
            }
        }
        results.push((w, samples));
    }
    drop(bench);
    print_table(&results, args.reps);
    println!();
    println!(
        "A's kernel while accel's clients ran: IPv4 packets received +{}, TCP segments +{}, \
         UDP datagrams +{} (to no UDP port +{}): it carried none of accel's traffic.",
        accel_seen.ip_in, accel_seen.tcp_in, accel_seen.udp_in, accel_seen.udp_no_ports
    );
    println!(
        "A's kernel while the kernel's clients ran, for comparison: IPv4 packets received +{}, \
         TCP segments +{}, UDP datagrams +{}.",
        kernel_seen.ip_in, kernel_seen.tcp_in, kernel_seen.udp_in
    );
    println!(
        "({:.0} s; medians of {} run(s) of {} s each; for the full set of workloads and \
         repetitions run accel-bench)",
        started.elapsed().as_secs_f64(),
        args.reps,
        args.secs
    );
    if accel_seen.ip_in + accel_seen.tcp_in + accel_seen.udp_in > 0 {
        bail!("A's kernel received IPv4 traffic while accel served: acceleration was not complete");
    }
    Ok(())
}

/// One line of the table: a metric of a workload, kernel (blocking or spinning) against accel.
fn row(label: &str, kernel: Option<f64>, accel: Option<f64>, higher_is_better: bool) {
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    let ratio = match (kernel, accel) {
        (Some(k), Some(a)) if k > 0.0 && a > 0.0 => {
            if higher_is_better {
                format!("{:.2}x", a / k)
            } else {
                format!("{:.2}x", k / a)
            }
        }
        _ => "-".to_owned(),
    };
    println!(
        "{label:<50} {:>10} {:>10} {ratio:>11}",
        cell(kernel),
        cell(accel)
    );
}

fn print_table(results: &[(Workload, Samples)], reps: u32) {
    println!();
    println!(
        "{:<50} {:>10} {:>10} {:>11}",
        format!("median of {reps}"),
        "kernel",
        "accel",
        "accel gain"
    );
    for (w, s) in results {
        match w {
            Workload::Nginx => {
                let get = |v, m| s.median(v, m);
                row(
                    "nginx requests/s (wrk -c32 from B)",
                    get(Variant::Kernel, "requests"),
                    get(Variant::Accel, "requests"),
                    true,
                );
                row(
                    "nginx p99 latency, us",
                    get(Variant::Kernel, "p99 latency"),
                    get(Variant::Accel, "p99 latency"),
                    false,
                );
            }
            Workload::PingPong { tcp } => {
                let proto = if *tcp { "TCP" } else { "UDP" };
                for pct in ["p50", "p99"] {
                    for (kernel, how) in [
                        (Variant::Kernel, "kernel blocking"),
                        (Variant::KernelSpinning, "kernel spinning"),
                    ] {
                        row(
                            &format!("sockperf {proto} ping-pong {pct}, us ({how})"),
                            s.median(kernel, pct),
                            s.median(Variant::Accel, pct),
                            false,
                        );
                    }
                }
            }
        }
    }
    println!(
        "(ping-pong: half round trip, 64-byte messages, both ends on the same stack; accel gain: \
         how many times more requests, or how many times lower the latency)"
    );
}
