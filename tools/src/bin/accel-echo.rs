//! accel-echo: TCP and UDP echo on one port, served by accel's stack over AF_XDP (no preload).
//!
//! It busy-polls one stack over every selected queue of the interface and prints its counters
//! when it gets SIGINT or SIGTERM. Failures that a user can fix are reported in one line that
//! names the cause and the fix, with a non-zero exit; nothing is left on the interface.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use libaccel::attach::{Attachment, Options};
use libaccel::control::ControlPlane;
use libaccel::ports::{self, Proto as PortProto};
use libaccel::share::FlowOp;
use libaccel::xdp::{FlowKey, Proto, XdpMode};

use accel_tools::echo::{EchoCounters, EchoService};
use stack::engine::Engine;

/// How long a closed connection's pin stays (its last ACKs and retransmitted FINs).
const PIN_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

/// Serve TCP echo and UDP echo on PORT through accel's userspace stack over AF_XDP.
#[derive(Parser, Debug)]
#[command(name = "accel-echo", version)]
struct Args {
    /// Interface to accelerate (it must have an IPv4 address).
    #[arg(long, short = 'i')]
    interface: String,
    /// Port for both TCP and UDP echo.
    #[arg(long, short = 'p')]
    port: u16,
    /// Serve only this RX queue (default: every queue of the interface).
    #[arg(long, short = 'q')]
    queue: Option<u32>,
    /// XDP attach mode: native (driver), generic (skb), or auto (native, else generic).
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: Mode,
    /// Pending connections the listener holds before accept.
    #[arg(long, default_value_t = 512)]
    backlog: usize,
    /// Local address to serve on (default: the interface's first IPv4 address).
    #[arg(long)]
    address: Option<Ipv4Addr>,
    /// Share the port with other accel-echo processes started with this option (SO_REUSEPORT):
    /// the XDP program spreads new connections and UDP peers over them.
    #[arg(long)]
    reuse_port: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-echo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    if let Ok(filter) = std::env::var("ACCEL_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    // SIGUSR1: drain. Stop taking new connections and UDP peers (other processes on the port
    // get them), keep serving the ones there are.
    let drain = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&drain))?;

    let control = ControlPlane::open(&args.interface)?;
    let info = control.interface().clone();
    let addr = match args.address {
        Some(a) if info.addrs.iter().any(|(x, _)| *x == a) => a,
        Some(a) => anyhow::bail!(
            "{a} is not an address of {}: pick one of {:?} with --address, or add it with `ip addr add {a}/24 dev {}`",
            info.name, info.addrs.iter().map(|(a, _)| a).collect::<Vec<_>>(), info.name
        ),
        None => info.addrs.first().map(|(a, _)| *a).ok_or_else(|| {
            anyhow::anyhow!("{} has no IPv4 address: add one with `ip addr add ADDR/PREFIX dev {}`", info.name, info.name)
        })?,
    };
    let prefix_len = info
        .addrs
        .iter()
        .find(|(a, _)| *a == addr)
        .map(|(_, p)| *p)
        .unwrap_or(32);
    let local = SocketAddrV4::new(addr, args.port);

    // Hold the port in the kernel first: if it is taken we stop before touching the interface.
    let reserve = if args.reuse_port {
        ports::reserve_shared
    } else {
        ports::reserve
    };
    let _tcp_port = reserve(PortProto::Tcp, local).map_err(|e| port_error(e, "TCP", local))?;
    let _udp_port = reserve(PortProto::Udp, local).map_err(|e| port_error(e, "UDP", local))?;

    let mode = match args.xdp_mode {
        Mode::Auto => XdpMode::Auto,
        Mode::Native => XdpMode::Native,
        Mode::Generic => XdpMode::Generic,
    };
    let opts = Options {
        queues: args.queue.map(|q| vec![q]),
        mode,
        helper: None,
    };
    let att = Attachment::open(control, &opts)?;

    let epoch = Instant::now();
    let now = || stack::Instant::from_micros(epoch.elapsed().as_micros() as i64);
    let mut config = stack::Config::new(info.mac, addr, prefix_len);
    config.mtu = info.mtu as usize;
    config.random_seed = random_seed();
    // veth: frames from its kernel peer may carry partial checksums (stack Config docs).
    config.partial_checksums = info.software_link();
    config.gateway = att
        .control
        .route(Ipv4Addr::new(0, 0, 0, 0))
        .and_then(|r| r.gateway);
    let described = att.describe();
    // The same engine the preload runs per interface: it polls the stack over the queues and
    // refreshes the control-plane mirror as it goes.
    let mut engine: Engine<Attachment> = Engine::new(stack::Stack::new(config, now()), att, now());
    let mut echo = EchoService::new(engine.stack_mut(), local, args.backlog)?;
    let flows = [
        FlowKey::listening(Proto::Tcp, local),
        FlowKey::listening(Proto::Udp, local),
    ];
    for f in &flows {
        engine.add_flow(f)?;
    }
    // Closed connections whose pins go when their time comes, oldest first.
    let mut closed: std::collections::VecDeque<(Instant, FlowKey)> = Default::default();
    println!("accel-echo: serving TCP and UDP echo on {local} ({described})");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    while !stop.load(Ordering::Relaxed) {
        if drain.swap(false, Ordering::Relaxed) {
            for f in &flows {
                if let Err(e) = engine.backend().shared_flow(FlowOp::Leave, f) {
                    eprintln!("accel-echo: cannot leave {f}: {e}");
                }
            }
            println!(
                "accel-echo: draining: no new connections (accepted {} so far)",
                echo.counters.connections_accepted
            );
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        engine.poll(now());
        if echo.serve(engine.stack_mut()) {
            // Replies were queued: push them out now rather than on the next turn.
            engine.poll(now());
            // The XDP program pinned each accepted connection to this process at its SYN;
            // the pin goes once the connection's last packets are surely through.
            let until = Instant::now() + PIN_GRACE;
            closed.extend(
                echo.take_closed()
                    .into_iter()
                    .map(|peer| (until, FlowKey::connected(Proto::Tcp, local, peer))),
            );
        }
        if closed.front().is_some_and(|(t, _)| *t <= Instant::now()) {
            let now = Instant::now();
            let mut due = Vec::new();
            while closed.front().is_some_and(|(t, _)| *t <= now) {
                due.extend(closed.pop_front().map(|(_, k)| k));
            }
            if let Err(e) = engine.backend().remove_pinned(&due) {
                tracing::warn!(error = %e, "removing closed connections' pins");
            }
        }
    }

    // Close what is open and let queued bytes, FINs and UDP replies go out (for at most a
    // second) before the sockets and the flows disappear.
    let echo_counters = echo.counters;
    let open_connections = echo.open_connections();
    echo.close(engine.stack_mut());
    let drain_until = Instant::now() + Duration::from_secs(1);
    while engine.stack().socket_count() > 0 && Instant::now() < drain_until {
        engine.poll(now());
    }
    print_counters(
        engine.stack(),
        &echo_counters,
        open_connections,
        engine.backend(),
    );
    for f in flows {
        engine.release_flow(f, stack::Duration::ZERO);
    }
    Ok(())
}

/// A seed for TCP initial sequence numbers that differs between runs.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok()
    {
        return u64::from_le_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn port_error(e: std::io::Error, proto: &str, local: SocketAddrV4) -> anyhow::Error {
    if e.raw_os_error() == Some(libc::EADDRINUSE) {
        anyhow::anyhow!(
            "{proto} port {} is already in use on {}: stop the program that holds it (see `ss -lntup 'sport = :{}'`) or pick another --port",
            local.port(), local.ip(), local.port()
        )
    } else if e.raw_os_error() == Some(libc::EACCES) {
        anyhow::anyhow!("no permission to bind {proto} port {}: ports below 1024 need root or CAP_NET_BIND_SERVICE", local.port())
    } else {
        anyhow::anyhow!(
            "cannot reserve {proto} port {} on {}: {e}",
            local.port(),
            local.ip()
        )
    }
}

fn print_counters(
    stack: &stack::Stack,
    e: &EchoCounters,
    open_connections: usize,
    att: &Attachment,
) {
    let mut out = String::new();
    out.push_str("accel-echo: counters\n");
    for q in att.queues.queues() {
        let c = &q.counters;
        out.push_str(&format!(
            "  queue {}: rx_frames {} tx_frames {} rx_bytes {} tx_bytes {} tx_no_frame {} tx_kicks {} tx_kick_held {} locks {} lock_timeouts {} slot {} frames_held {} frames_accounted {}",
            q.queue_id(), c.rx_frames, c.tx_frames, c.rx_bytes, c.tx_bytes, c.tx_no_frame, c.tx_kicks, c.tx_held,
            c.locks, c.lock_timeouts, q.slot(), q.frames_held(), u8::from(q.frames_accounted())
        ));
        if let Some((dropped, ring_full, fill_empty)) = q.kernel_stats() {
            out.push_str(&format!(" kernel_rx_dropped {dropped} kernel_rx_ring_full {ring_full} kernel_fill_empty {fill_empty}"));
        }
        out.push('\n');
    }
    for (name, value) in stack.counters_now().iter() {
        out.push_str(&format!("  stack {name} {value}\n"));
    }
    out.push_str(&format!(
        "  echo connections_accepted {} connections_closed {} connections_reset {} connections_open {} tcp_bytes_echoed {} udp_datagrams_echoed {} udp_send_failed {}\n",
        e.connections_accepted, e.connections_closed, e.connections_reset, open_connections,
        e.tcp_bytes_echoed, e.udp_datagrams_echoed, e.udp_send_failed
    ));
    print!("{out}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
