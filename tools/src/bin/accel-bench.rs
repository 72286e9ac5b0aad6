//! accel-bench: the same workloads on the kernel stack and under accel-run, side by side
//! (docs/ARCHITECTURE.md, "Testing"). See `accel-bench --help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use accel_tools::bench::plot::{latency_svg, LatencyGroup};
use accel_tools::bench::report::{self, Results, Variant, Workload};
use accel_tools::bench::workloads::{expand, find_accel_run, variants, Bench, ALL, NGINX_CONNS};
use anyhow::{bail, Context, Result};
use clap::Parser;

/// Runs each workload with the kernel stack and under `accel-run --profile latency`,
/// alternating, and reports medians and the accel/kernel ratio; ping-pong also runs on the
/// kernel with both ends spinning (`sockperf --nonblocked`) and is compared with it and with
/// the raw AF_XDP floor, and its p50's spread over the repetitions is shown. Needs root (it
/// builds a throwaway two-namespace veth topology) and the release build next to it.
#[derive(Parser)]
#[command(name = "accel-bench")]
struct Args {
    /// One repetition with short runs (the whole run takes under two minutes).
    #[arg(long)]
    quick: bool,
    /// Where results.json, results.md and latency.svg go.
    #[arg(long, default_value = "accel-bench-results")]
    out: PathBuf,
    /// Repetitions (each runs every variant once: kernel, kernel spinning for ping-pong,
    /// accel); default 5, or 1 with --quick.
    #[arg(long)]
    reps: Option<u32>,
    /// Client counts of the nginx workload (comma-separated): `nginx` runs as one workload
    /// per count, `nginx-cN`.
    #[arg(long, value_delimiter = ',', default_values_t = NGINX_CONNS.to_vec())]
    nginx_conns: Vec<u32>,
    /// Workloads to run (default: all): floor pingpong-tcp pingpong-udp msgrate-udp nginx
    /// (nginx-cN for N clients) nginx-workers conn-rate redis iperf3.
    workloads: Vec<String>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let result = match argv.get(1).map(String::as_str) {
        // One end of the floor workload, started by accel-bench itself.
        Some("__floor") => accel_tools::bench::floor::main(&argv[2..]),
        Some("soak") => soak(SoakArgs::parse_from(&argv[1..])),
        Some("lossy-transfer") => lossy(LossyArgs::parse_from(&argv[1..])),
        Some("conn-memory") => conn_memory(ConnMemoryArgs::parse_from(&argv[1..])),
        // The server conn-memory runs (on the kernel and under accel-run).
        Some("__hold") => accel_tools::memory::hold_main(&argv[2..]),
        _ => run(Args::parse()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `accel-bench soak`: nginx (wrk), redis-server (redis-benchmark) and accel-echo (16 MiB
/// echoes) under load for MINUTES over links that drop a share of TCP frames; reports errors
/// (must be 0) and each server's resident memory over time (must stay flat). Exits non-zero
/// when either fails.
#[derive(Parser)]
#[command(name = "accel-bench soak")]
struct SoakArgs {
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// TCP frames dropped per million, each way (10000 = 1 %).
    #[arg(long, default_value_t = 10_000)]
    loss_ppm: u32,
    /// Seconds between two memory samples.
    #[arg(long, default_value_t = 15)]
    sample_secs: u64,
}

/// `accel-bench lossy-transfer`: MIB MiB each way between a server in A and a kernel client
/// in B, on the kernel and under accel-run, over a link dropping LOSS_PPM of the transfer's
/// frames each way; prints each run's time (a run is stopped after LIMIT_SECS).
#[derive(Parser)]
#[command(name = "accel-bench lossy-transfer")]
struct LossyArgs {
    #[arg(long, default_value_t = 20)]
    mib: u64,
    #[arg(long, default_value_t = 20_000)]
    loss_ppm: u32,
    #[arg(long, default_value_t = 60)]
    limit_secs: u64,
    /// Seed of the injector's drop decisions.
    #[arg(long, default_value_t = 13)]
    seed: u64,
}

/// `accel-bench conn-memory`: what holding N TCP connections costs a server, on the kernel
/// and under accel-run: bytes per connection idle, busy (KIB KiB unread each way) and after
/// the traffic, for each N. Every connection must be established, carry its bytes intact and
/// close cleanly, or the command fails.
#[derive(Parser)]
#[command(name = "accel-bench conn-memory")]
struct ConnMemoryArgs {
    /// Connection counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    conns: Vec<usize>,
    /// KiB each side sends and leaves unread in the busy phase.
    #[arg(long, default_value_t = 32)]
    kib: usize,
}

fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find accel-bench's own path")?;
    find_accel_run(&exe)?;
    Ok(exe.parent().map(PathBuf::from).unwrap_or_default())
}

fn conn_memory(args: ConnMemoryArgs) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find accel-bench's own path")?;
    let accel_run = find_accel_run(&exe)?;
    if args.conns.is_empty() || args.conns.contains(&0) {
        bail!("--conns takes positive counts, e.g. 10,1000,10000");
    }
    let runs = accel_tools::memory::conn_memory(&exe, &accel_run, &args.conns, args.kib, &[])?;
    println!("{}", accel_tools::memory::report(&runs));
    Ok(())
}

fn soak(args: SoakArgs) -> Result<()> {
    let opts = accel_tools::soak::SoakOptions {
        duration: std::time::Duration::from_secs_f64(args.minutes * 60.0),
        loss_ppm: args.loss_ppm,
        sample_every: std::time::Duration::from_secs(args.sample_secs.max(1)),
        seed: 1,
    };
    if accel_tools::soak::soak(&bin_dir()?, &opts)? {
        Ok(())
    } else {
        bail!("the soak failed (see the report above)")
    }
}

fn lossy(args: LossyArgs) -> Result<()> {
    accel_tools::soak::lossy_transfer(
        &bin_dir()?,
        args.mib,
        args.loss_ppm,
        args.seed,
        std::time::Duration::from_secs(args.limit_secs),
    )
}

fn run(args: Args) -> Result<()> {
    let given: Vec<String> = if args.workloads.is_empty() {
        ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.workloads.clone()
    };
    let mut names = Vec::new();
    for n in &given {
        names.extend(expand(n, &args.nginx_conns)?);
    }
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 5 });
    if reps == 0 {
        bail!("--reps must be at least 1");
    }
    let exe = std::env::current_exe().context("cannot find accel-bench's own path")?;
    let accel_run = find_accel_run(&exe)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let bench = Bench::new(exe, accel_run, args.quick)?;
    let started = Instant::now();
    let mut results = Results {
        reps,
        quick: args.quick,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        ..Results::default()
    };
    let total: usize = names.iter().map(|n| variants(n).len()).sum::<usize>() * reps as usize;
    let mut step = 0;
    for name in &names {
        let mut w = Workload {
            name: name.clone(),
            ..Workload::default()
        };
        for rep in 0..reps {
            // Alternate the order of the variants, so slow drift favours none of them.
            let mut order = variants(name).to_vec();
            if rep % 2 == 1 {
                order.reverse();
            }
            for variant in order {
                step += 1;
                let label = variant.label();
                eprint!(
                    "[{step}/{total}] {name} rep {}/{reps} {label} ... ",
                    rep + 1
                );
                let t = Instant::now();
                match bench.run(name, variant) {
                    Ok(samples) => {
                        let summary: Vec<String> = samples
                            .iter()
                            .map(|(m, u, _, v)| format!("{m}={v:.3} {u}"))
                            .collect();
                        eprintln!(
                            "{} ({:.1} s)",
                            summary.join(", "),
                            t.elapsed().as_secs_f64()
                        );
                        for (m, u, hib, v) in samples {
                            w.add(m, u, hib, variant, v);
                        }
                    }
                    Err(e) => {
                        eprintln!("FAILED ({:.1} s): {e:#}", t.elapsed().as_secs_f64());
                        w.errors.push(format!("rep {} {label}: {e:#}", rep + 1));
                    }
                }
            }
        }
        w.finish();
        results.workloads.push(w);
    }
    results.finish();
    results.elapsed_sec = started.elapsed().as_secs_f64();
    drop(bench);

    let table = report::text_table(&results);
    println!("{table}");
    let json = report::to_json(&results)?;
    std::fs::write(args.out.join("results.json"), json)?;
    std::fs::write(args.out.join("results.md"), report::markdown(&results))?;
    std::fs::write(
        args.out.join("latency.svg"),
        latency_svg(&latency_groups(&results)),
    )?;
    eprintln!(
        "wrote results.json, results.md and latency.svg to {} ({:.0} s)",
        args.out.display(),
        results.elapsed_sec
    );
    Ok(())
}

/// The ping-pong workloads and the floor, with each variant's p50, p99 and p99.9 medians
/// (a variant that did not run, or lacks one of them, is left out).
fn latency_groups(r: &Results) -> Vec<LatencyGroup> {
    r.workloads
        .iter()
        .filter(|w| report::is_pingpong(&w.name) || w.name == report::FLOOR)
        .filter_map(|w| {
            let pcts = |v: Variant| -> Option<[f64; 3]> {
                let get = |m: &str| w.metrics.iter().find(|x| x.name == m)?.median(v);
                Some([get("p50")?, get("p99")?, get("p99.9")?])
            };
            Some(LatencyGroup {
                workload: w.name.clone(),
                kernel: pcts(Variant::Kernel),
                kernel_spinning: pcts(Variant::KernelSpinning),
                accel: pcts(Variant::Accel)?,
            })
        })
        .collect()
}
