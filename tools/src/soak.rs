//! `accel-bench soak`: accelerated servers under real clients for minutes, over a lossy link
//! (the fault injector), counting every error and sampling the servers' resident memory; and
//! `accel-bench lossy-transfer`: one bulk transfer each way, kernel and accel side by side,
//! over a link that drops a given share of frames.
//!
//! Each accelerated server gets its own throwaway topology (accel runs one process per
//! interface queue set), with the injector on B's end dropping `loss_ppm` of TCP frames both
//! ways. Clients run in B on the kernel, in loops until the time is up:
//!
//! - nginx under accel-run, `wrk -c16` in 30 s rounds: socket errors and non-2xx answers;
//! - redis-server under accel-run, `redis-benchmark -t get,set` rounds: failed rounds;
//! - accel-echo, 16 MiB echoed per connection and checked byte for byte: failed transfers.
//!
//! Errors must be 0 and each server's resident memory, UMEM aside, flat (see [`flat`]).

use std::io::Write;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::parse;
use crate::bench::workloads::Proc;
use crate::faults::{FaultSpec, Faults, FlowMatch, Proto};
use crate::peer;
use crate::topology::{run, Topology};

const START: Duration = Duration::from_secs(20);

/// What `soak` does.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub duration: Duration,
    /// Frames of TCP dropped per million, each way.
    pub loss_ppm: u32,
    /// How often resident memory is sampled.
    pub sample_every: Duration,
    pub seed: u64,
}

/// One server's life in the soak.
struct Server {
    name: &'static str,
    proc: Proc,
    /// (seconds since start, resident KiB without the UMEM).
    rss: Vec<(u64, u64)>,
    /// Resident KiB of the UMEM mappings at the last sample.
    umem: u64,
}

/// Totals of one client loop.
#[derive(Default)]
struct Tally {
    rounds: AtomicU64,
    units: AtomicU64,
    errors: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }
}

fn ns_cmd(ns: &str, prog: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(prog).args(args);
    c
}

fn accel_cmd(topo: &Topology, accel_run: &Path, prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &topo.ns_a])
        .arg(accel_run)
        .args(["--interface", &topo.if_a, "--"])
        .arg(prog)
        .args(args);
    c
}

/// A topology with the injector dropping `loss_ppm` of TCP frames both ways.
fn lossy_topology(loss_ppm: u32, seed: u64) -> Result<(Topology, Faults)> {
    let topo = Topology::new(1).context("cannot build a topology")?;
    for kv in [
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.ip_local_port_range=10000 65000",
    ] {
        run("ip", &["netns", "exec", &topo.ns_b, "sysctl", "-qw", kv])?;
    }
    let flow = FlowMatch {
        proto: Some(Proto::Tcp),
        port: None,
    };
    let faults = Faults::attach(&topo, &FaultSpec::loss(loss_ppm, flow, seed))?;
    Ok((topo, faults))
}

/// Resident memory of `pid` in KiB (VmRSS), and how much of it is UMEM: mappings of exactly
/// a queue's UMEM size (`libaccel::queue::UMEM_LAYOUT`), fixed in size, whose pages become
/// resident as the kernel and the stack first touch each frame. That fills over minutes under
/// a light load and is not growth; the rest must stay flat.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS line")?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))
        .with_context(|| format!("reading /proc/{pid}/smaps"))?;
    let umem_kib = libaccel::queue::UMEM_LAYOUT.len() / 1024;
    let (mut umem, mut in_umem) = (0, false);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        match (
            words.next(),
            words.next().and_then(|v| v.parse::<u64>().ok()),
        ) {
            (Some("Size:"), Some(kib)) => in_umem = kib == umem_kib,
            (Some("Rss:"), Some(kib)) if in_umem => umem += kib,
            _ => {}
        }
    }
    Ok((rss, umem))
}

/// Whether resident memory stayed flat: over the second half of the run (the first is
/// warm-up: pools, connection tables and caches fill), it grew by at most 2 % or 1 MiB,
/// whichever is larger. A series still climbing at the end fails, however slowly.
pub fn flat(samples: &[(u64, u64)]) -> bool {
    let Some(&(end, last)) = samples.last() else {
        return false;
    };
    let Some(&(_, mid)) = samples.iter().rev().find(|(t, _)| *t <= end / 2) else {
        return false;
    };
    let peak = samples
        .iter()
        .filter(|(t, _)| *t >= end / 2)
        .map(|s| s.1)
        .max()
        .unwrap_or(last);
    peak <= mid + (mid / 50).max(1024)
}

/// Runs the soak; prints the report; returns whether it passed (no error, flat memory).
pub fn soak(bin_dir: &Path, opts: &SoakOptions) -> Result<bool> {
    let accel_run = bin_dir.join("accel-run");
    let accel_echo = bin_dir.join("accel-echo");
    for p in [
        &accel_run,
        &accel_echo,
        &bin_dir.join("libaccel_preload.so"),
    ] {
        if !p.is_file() {
            bail!(
                "{} is missing: build with `cargo build --release --workspace`",
                p.display()
            );
        }
    }
    let scratch = std::env::temp_dir().join(format!("accel-soak-{}", std::process::id()));
    std::fs::create_dir_all(scratch.join("www"))?;
    std::fs::write(scratch.join("www/1k.html"), vec![b'x'; 1024])?;
    let _cleanup = RemoveDir(scratch.clone());

    let (web, web_faults) = lossy_topology(opts.loss_ppm, opts.seed)?;
    let (kv, kv_faults) = lossy_topology(opts.loss_ppm, opts.seed + 1)?;
    let (bulk, bulk_faults) = lossy_topology(opts.loss_ppm, opts.seed + 2)?;

    // Servers.
    let web_addr = SocketAddrV4::new(web.addr_a, 8080);
    let nginx = start_nginx(&web, &accel_run, &scratch, web_addr)?;
    let kv_addr = SocketAddrV4::new(kv.addr_a, 6379);
    let (ka, kp) = (kv.addr_a.to_string(), "6379".to_string());
    let mut redis = Proc::start(
        "redis-server",
        accel_cmd(
            &kv,
            &accel_run,
            "redis-server",
            &[
                "--port",
                &kp,
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--bind",
                &ka,
            ],
        ),
    )?;
    redis.wait_tcp(&kv, kv_addr, START)?;
    let bulk_addr = SocketAddrV4::new(bulk.addr_a, 7000);
    let mut echo = Proc::start(
        "accel-echo",
        ns_cmd(
            &bulk.ns_a,
            &accel_echo,
            &["--interface", &bulk.if_a, "--port", "7000"],
        ),
    )?;
    echo.wait_for("accel-echo: serving", START)?;
    let mut servers = vec![
        Server {
            name: "nginx",
            proc: nginx,
            rss: Vec::new(),
            umem: 0,
        },
        Server {
            name: "redis-server",
            proc: redis,
            rss: Vec::new(),
            umem: 0,
        },
        Server {
            name: "accel-echo",
            proc: echo,
            rss: Vec::new(),
            umem: 0,
        },
    ];
    println!(
        "accel-bench soak: {:?} of wrk -> nginx, redis-benchmark -> redis-server, 16 MiB echoes \
         -> accel-echo, each over its own veth dropping {} ppm of TCP frames each way",
        opts.duration, opts.loss_ppm
    );

    let stop = Arc::new(AtomicBool::new(false));
    let wrk_t = Arc::new(Tally::default());
    let redis_t = Arc::new(Tally::default());
    let echo_t = Arc::new(Tally::default());
    let start = Instant::now();
    let end = start + opts.duration;
    let clients = vec![
        {
            let (stop, t, ns) = (stop.clone(), wrk_t.clone(), web.ns_b.clone());
            std::thread::spawn(move || wrk_loop(&ns, web_addr, end, &stop, &t))
        },
        {
            let (stop, t, ns) = (stop.clone(), redis_t.clone(), kv.ns_b.clone());
            std::thread::spawn(move || redis_loop(&ns, kv_addr, end, &stop, &t))
        },
        {
            let (stop, t, ns) = (stop.clone(), echo_t.clone(), bulk.ns_b.clone());
            std::thread::spawn(move || echo_loop(&ns, bulk_addr, end, &stop, &t))
        },
    ];

    // Sample memory until the time is up (a fixed cadence: this is a measurement, not a wait
    // for an event).
    let mut next = start;
    while Instant::now() < end {
        for s in &mut servers {
            let pid = s.proc.pid().context("server exited")?;
            match rss_kib(pid) {
                Ok((kib, umem)) => {
                    s.rss.push((start.elapsed().as_secs(), kib - umem.min(kib)));
                    s.umem = umem;
                }
                Err(e) => bail!("{} died during the soak: {e:#}", s.name),
            }
        }
        let t = start.elapsed().as_secs();
        println!(
            "  {:>5} s  KiB resident (+ UMEM): {}  | wrk requests {} errors {} | redis rounds {} errors {} | echo MiB {} errors {}",
            t,
            servers
                .iter()
                .map(|s| format!(
                    "{} {} (+{})",
                    s.name,
                    s.rss.last().map_or(0, |r| r.1),
                    s.umem
                ))
                .collect::<Vec<_>>()
                .join(", "),
            wrk_t.units.load(Ordering::Relaxed),
            wrk_t.errors.load(Ordering::Relaxed),
            redis_t.rounds.load(Ordering::Relaxed),
            redis_t.errors.load(Ordering::Relaxed),
            echo_t.units.load(Ordering::Relaxed) >> 20,
            echo_t.errors.load(Ordering::Relaxed),
        );
        next += opts.sample_every;
        let now = Instant::now();
        if next > now {
            std::thread::sleep((next - now).min(end.saturating_duration_since(now)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.join();
    }
    for s in &mut servers {
        if let Some(pid) = s.proc.pid() {
            if let Ok((kib, umem)) = rss_kib(pid) {
                s.rss.push((start.elapsed().as_secs(), kib - umem.min(kib)));
                s.umem = umem;
            }
        }
    }

    let injected = [&web_faults, &kv_faults, &bulk_faults]
        .iter()
        .map(|f| f.counters().map(|c| c.to_b.dropped + c.from_b.dropped))
        .sum::<Result<u64>>()?;
    println!("\naccel-bench soak: report after {:?}", start.elapsed());
    println!("  frames dropped by the injector: {injected}");
    let mut ok = injected > 0;
    // Errors: wrk's socket errors and error answers, failed redis-benchmark rounds, failed
    // echoes.
    for (name, t, unit) in [
        ("wrk -> nginx", &wrk_t, "requests"),
        ("redis-benchmark -> redis-server", &redis_t, "requests"),
        ("echo -> accel-echo", &echo_t, "bytes"),
    ] {
        let errors = t.errors.load(Ordering::Relaxed);
        println!(
            "  {name}: {} rounds, {} {unit}, {errors} errors{}",
            t.rounds.load(Ordering::Relaxed),
            t.units.load(Ordering::Relaxed),
            t.last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        );
        ok &= errors == 0 && t.rounds.load(Ordering::Relaxed) > 0;
    }
    for s in &servers {
        let first = s.rss.first().map_or(0, |r| r.1);
        let last = s.rss.last().map_or(0, |r| r.1);
        let max = s.rss.iter().map(|r| r.1).max().unwrap_or(0);
        let is_flat = flat(&s.rss);
        println!(
            "  {} resident memory without UMEM: first {first} KiB, last {last} KiB, max {max} KiB \
             (UMEM {} KiB resident): {}",
            s.name,
            s.umem,
            if is_flat { "flat" } else { "GROWING" }
        );
        ok &= is_flat;
    }
    println!("accel-bench soak: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start_nginx(
    topo: &Topology,
    accel_run: &Path,
    scratch: &Path,
    addr: SocketAddrV4,
) -> Result<Proc> {
    let dir = scratch.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1;\n\
         error_log {d}/error.log; pid {d}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_timeout 65; keepalive_requests 1000000;\n\
           client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
           uwsgi_temp_path {d}; scgi_temp_path {d};\n\
           server {{ listen {addr}; root {}; }} }}\n",
        scratch.join("www").display()
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let (c, p) = (conf_path.to_string_lossy(), dir.to_string_lossy());
    let mut srv = Proc::start(
        "nginx",
        accel_cmd(topo, accel_run, "nginx", &["-c", &c, "-p", &p]),
    )?;
    srv.wait_tcp(topo, addr, START)?;
    Ok(srv)
}

fn wrk_loop(ns: &str, addr: SocketAddrV4, end: Instant, stop: &AtomicBool, t: &Tally) {
    let url = format!("http://{addr}/1k.html");
    while !stop.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now()).as_secs();
        if left < 2 {
            break;
        }
        let d = format!("{}s", left.min(30));
        let cmd = ns_cmd(
            ns,
            Path::new("wrk"),
            &["-t1", "-c16", "-d", &d, "--latency", &url],
        );
        let out = Proc::start("wrk", cmd).and_then(|p| p.finish(Duration::from_secs(120)));
        t.rounds.fetch_add(1, Ordering::Relaxed);
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                t.error(format!("{e:#}"));
                continue;
            }
        };
        match parse::wrk(&out) {
            Ok(w) => {
                t.units.fetch_add(w.requests, Ordering::Relaxed);
                if w.socket_errors + w.non_2xx_3xx > 0 {
                    let line = out
                        .lines()
                        .find(|l| l.contains("Socket errors"))
                        .unwrap_or("")
                        .trim();
                    t.error(format!("{line}; {} error answers", w.non_2xx_3xx));
                    t.errors
                        .fetch_add(w.socket_errors + w.non_2xx_3xx - 1, Ordering::Relaxed);
                }
            }
            Err(e) => t.error(format!("{e:#}")),
        }
    }
}

fn redis_loop(ns: &str, addr: SocketAddrV4, end: Instant, stop: &AtomicBool, t: &Tally) {
    let (h, p) = (addr.ip().to_string(), addr.port().to_string());
    const N: u64 = 20_000;
    let n = N.to_string();
    while !stop.load(Ordering::Relaxed) && Instant::now() + Duration::from_secs(5) < end {
        let cmd = ns_cmd(
            ns,
            Path::new("redis-benchmark"),
            &[
                "-h", &h, "-p", &p, "-q", "-t", "get,set", "-n", &n, "-c", "16",
            ],
        );
        let out =
            Proc::start("redis-benchmark", cmd).and_then(|p| p.finish(Duration::from_secs(120)));
        t.rounds.fetch_add(1, Ordering::Relaxed);
        match out.and_then(|o| parse::redis_benchmark(&o)) {
            Ok(r) if r.len() == 2 => {
                t.units.fetch_add(2 * N, Ordering::Relaxed);
            }
            Ok(r) => t.error(format!("results for {r:?} only")),
            Err(e) => t.error(format!("{e:#}")),
        }
    }
}

fn echo_loop(ns: &str, addr: SocketAddrV4, end: Instant, stop: &AtomicBool, t: &Tally) {
    const BYTES: u64 = 16 << 20;
    let mut seed = 1;
    while !stop.load(Ordering::Relaxed) && Instant::now() + Duration::from_secs(5) < end {
        seed += 1;
        let r = Topology::in_netns(ns, move || {
            peer::tcp_echo(addr, BYTES, seed, Duration::from_secs(60))
        });
        t.rounds.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(Ok(e)) if e.bytes == BYTES && e.sent_checksum == e.echoed_checksum => {
                t.units.fetch_add(BYTES, Ordering::Relaxed);
            }
            Ok(Ok(e)) => t.error(format!("echo came back different: {e:?}")),
            Ok(Err(e)) | Err(e) => t.error(format!("{e:#}")),
        }
    }
}

/// `accel-bench lossy-transfer`: `mib` MiB from A to B (accel sends) and from B to A (accel
/// receives), on the kernel and under accel-run, over a link dropping `loss_ppm` of the
/// transfer's frames each way; each run is bounded by `limit`. Prints the times.
pub fn lossy_transfer(
    bin_dir: &Path,
    mib: u64,
    loss_ppm: u32,
    seed: u64,
    limit: Duration,
) -> Result<()> {
    let accel_run = bin_dir.join("accel-run");
    if !accel_run.is_file() {
        bail!(
            "{} is missing: build with `cargo build --release --workspace`",
            accel_run.display()
        );
    }
    let port = 5201;
    let (topo, faults) = lossy_topology(0, seed)?;
    faults.set(&FaultSpec::loss(loss_ppm, FlowMatch::tcp(port), seed))?;
    let addr = SocketAddrV4::new(topo.addr_a, port);
    let bytes = mib << 20;
    println!(
        "accel-bench lossy-transfer: {mib} MiB each way over veth dropping {loss_ppm} ppm of \
         the transfer's frames each way, {limit:?} at most per run"
    );
    for accel_sends in [true, false] {
        for accel in [false, true] {
            let before = faults.counters()?;
            let r = transfer_once(&topo, &accel_run, addr, accel, accel_sends, bytes, limit);
            let after = faults.counters()?;
            let dropped = after.to_b.dropped + after.from_b.dropped
                - before.to_b.dropped
                - before.from_b.dropped;
            let what = format!(
                "{} {}",
                if accel { "accel " } else { "kernel" },
                if accel_sends { "sends   " } else { "receives" }
            );
            match r {
                Ok(d) => println!(
                    "  {what}: {:.2} s ({dropped} frames dropped)",
                    d.as_secs_f64()
                ),
                Err(e) => println!("  {what}: FAILED ({dropped} frames dropped): {e:#}"),
            }
        }
    }
    Ok(())
}

/// One transfer between a server in A (under accel-run when `accel`; it sends when
/// `server_sends`) and a kernel client in B; checks the bytes and returns the client's time.
fn transfer_once(
    topo: &Topology,
    accel_run: &Path,
    addr: SocketAddrV4,
    accel: bool,
    server_sends: bool,
    bytes: u64,
    limit: Duration,
) -> Result<Duration> {
    let dir = std::env::temp_dir().join(format!("accel-lossy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveDir(dir.clone());
    let (src, dst) = (dir.join("src.bin"), dir.join("dst.bin"));
    let mut pat = peer::Pattern::new(bytes);
    let mut f = std::fs::File::create(&src)?;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..(bytes >> 20) {
        pat.fill(&mut buf);
        f.write_all(&buf)?;
    }
    drop(f);
    let listen = format!("TCP4-LISTEN:{},bind={},reuseaddr", addr.port(), addr.ip());
    let connect = format!("TCP4:{addr}");
    let (srcs, dsts) = (src.to_string_lossy(), dst.to_string_lossy());
    let d = || ["-d".to_string(), "-d".to_string(), "-u".to_string()];
    let (server_args, client_args) = if server_sends {
        (
            [&d()[..], &[format!("OPEN:{srcs},rdonly"), listen]].concat(),
            vec!["-u".to_string(), connect, format!("CREATE:{dsts}")],
        )
    } else {
        (
            [&d()[..], &[listen, format!("CREATE:{dsts}")]].concat(),
            vec!["-u".to_string(), format!("OPEN:{srcs},rdonly"), connect],
        )
    };
    let sa: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let ca: Vec<&str> = client_args.iter().map(String::as_str).collect();
    let server_cmd = if accel {
        accel_cmd(topo, accel_run, "socat", &sa)
    } else {
        ns_cmd(&topo.ns_a, Path::new("socat"), &sa)
    };
    let mut server = Proc::start("socat server", server_cmd)?;
    server.wait_for("listening on", START)?;
    let start = Instant::now();
    Proc::start("socat client", ns_cmd(&topo.ns_b, Path::new("socat"), &ca))?.finish(limit)?;
    let took = start.elapsed();
    server.finish(Duration::from_secs(10))?;
    let same = std::fs::read(&src)? == std::fs::read(&dst)?;
    if !same {
        bail!("the received file differs from the sent one");
    }
    Ok(took)
}

#[cfg(test)]
mod tests {
    use super::flat;

    #[test]
    fn memory_that_levels_off_after_warm_up_is_flat() {
        let s: Vec<(u64, u64)> = (0..=40)
            .map(|i| {
                (
                    i * 15,
                    if i < 10 {
                        20_000 + i * 1_000
                    } else {
                        30_000 + i % 3 * 100
                    },
                )
            })
            .collect();
        assert!(flat(&s));
    }

    #[test]
    fn memory_still_climbing_in_the_second_half_is_not_flat() {
        // nginx in a 10-minute soak: 38 MiB at 300 s, 40 MiB at 585 s.
        let s = [
            (0, 28_220),
            (150, 31_992),
            (300, 38_076),
            (450, 38_824),
            (585, 40_164),
        ];
        assert!(!flat(&s));
        assert!(!flat(&[]));
    }
}
