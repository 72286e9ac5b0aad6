//! accel-demo: the README's main job on an embedded default.
//!
//! Builds a throwaway two-namespace veth topology, runs accel-echo (AF_XDP + accel's stack) in
//! namespace A and a kernel echo server beside it on another port, drives both from kernel
//! clients in namespace B with the same workloads, and prints what it measured side by side,
//! with the proof that the kernel in A did not carry accel's flows. Everything is removed at
//! the end, also on failure.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, UdpSocket};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use accel_tools::peer::{self, percentile};
use accel_tools::topology::Topology;

/// Run accel-echo on a throwaway two-namespace topology and compare it with the kernel.
#[derive(Parser, Debug)]
#[command(name = "accel-demo", version)]
struct Args {
    /// RX/TX queues on each veth end.
    #[arg(long, default_value_t = 1)]
    queues: u32,
    /// Bytes for the TCP echo.
    #[arg(long, default_value_t = 20_000_000)]
    tcp_bytes: u64,
    /// Datagrams for the UDP round-trip test (one in flight at a time).
    #[arg(long, default_value_t = 20_000)]
    udp_count: u64,
}

const ACCEL_PORT: u16 = 7000;
const KERNEL_PORT: u16 = 7001;
const T: Duration = Duration::from_secs(60);

/// Kills accel-echo by its pid if the demo stops early.
struct EchoChild(Option<Child>);

impl Drop for EchoChild {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("accel-demo: {e:#}");
        std::process::exit(1);
    }
}

struct Measured {
    tcp_mbps: f64,
    udp_p50: u64,
    udp_p99: u64,
    udp_lost: u64,
}

fn measure(topo: &Topology, server: SocketAddrV4, args: &Args) -> Result<Measured> {
    let bytes = args.tcp_bytes;
    let tcp = topo.in_b(move || peer::tcp_echo(server, bytes, 42, T))??;
    if tcp.sent_checksum != tcp.echoed_checksum {
        bail!("TCP echo from {server} differs from what was sent");
    }
    let count = args.udp_count;
    let udp = topo.in_b(move || peer::udp_echo(server, count, 64, 1, Duration::from_secs(2)))??;
    if udp.corrupted > 0 {
        bail!("{} corrupted UDP echoes from {server}", udp.corrupted);
    }
    Ok(Measured {
        tcp_mbps: (tcp.bytes as f64 * 8.0) / tcp.elapsed.as_secs_f64() / 1e6,
        udp_p50: percentile(&udp.rtts_us, 50.0),
        udp_p99: percentile(&udp.rtts_us, 99.0),
        udp_lost: udp.lost,
    })
}

/// A plain kernel echo server (TCP and UDP) in namespace A, for the side-by-side numbers.
fn start_kernel_echo(topo: &Topology, port: u16) -> Result<()> {
    let (tcp, udp) = topo.in_a(move || -> std::io::Result<(TcpListener, UdpSocket)> {
        Ok((
            TcpListener::bind(("0.0.0.0", port))?,
            UdpSocket::bind(("0.0.0.0", port))?,
        ))
    })??;
    std::thread::spawn(move || {
        for s in tcp.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    let echo_bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("accel-echo"))
        .context("cannot locate accel-echo")?;
    if !echo_bin.exists() {
        bail!(
            "{} is missing: build it with `cargo build --release --bins`",
            echo_bin.display()
        );
    }
    println!("accel-demo: building a throwaway topology (two namespaces, veth, {} queue(s), 198.18.0.0/24)", args.queues);
    let topo = Topology::new(args.queues)?;
    start_kernel_echo(&topo, KERNEL_PORT)?;

    let mut child = topo
        .command_a(echo_bin.to_str().context("path is not UTF-8")?)
        .args(["--interface", &topo.if_a, "--port", &ACCEL_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start accel-echo")?;
    let mut stdout = child.stdout.take().context("accel-echo stdout")?;
    let mut guard = EchoChild(Some(child));
    let mut first = Vec::new();
    let mut byte = [0u8; 1];
    while stdout.read(&mut byte)? == 1 && byte[0] != b'\n' {
        first.push(byte[0]);
    }
    let ready = String::from_utf8_lossy(&first).to_string();
    if !ready.contains("serving") {
        bail!("accel-echo did not start (see its error above)");
    }
    println!("{ready}");

    let kernel = measure(&topo, SocketAddrV4::new(topo.addr_a, KERNEL_PORT), args)?;
    let before = topo.snmp_a()?;
    let accel = measure(&topo, SocketAddrV4::new(topo.addr_a, ACCEL_PORT), args)?;
    let after = topo.snmp_a()?;
    let d = after.since(&before);

    let child = guard.0.as_mut().context("accel-echo")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let _ = child.wait();
    guard.0 = None;

    println!();
    println!(
        "{:<34} {:>12} {:>12} {:>8}",
        "metric (kernel client in B)", "kernel A", "accel A", "ratio"
    );
    let row =
        |name: &str, k: f64, a: f64| println!("{name:<34} {k:>12.1} {a:>12.1} {:>8.2}", a / k);
    row(
        "TCP echo throughput, Mbit/s",
        kernel.tcp_mbps,
        accel.tcp_mbps,
    );
    row(
        "UDP 64 B round trip p50, us",
        kernel.udp_p50 as f64,
        accel.udp_p50 as f64,
    );
    row(
        "UDP 64 B round trip p99, us",
        kernel.udp_p99 as f64,
        accel.udp_p99 as f64,
    );
    println!(
        "UDP datagrams lost: kernel {}, accel {}",
        kernel.udp_lost, accel.udp_lost
    );
    println!();
    println!(
        "kernel counters in A while accel served: TCP InSegs +{}, UDP InDatagrams +{} (0 means the kernel carried none of it)",
        d.tcp_in_segs, d.udp_in_datagrams
    );
    print!("{rest}");
    println!("(the client side is the kernel in both columns; round trips include its cost)");
    Ok(())
}
