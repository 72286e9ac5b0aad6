//! The workloads: real tools on a throwaway [`Topology`], once on the kernel stack and once
//! under `accel-run`. Servers run in namespace A, clients in B. Every process is started by pid
//! and killed (by that pid) when its handle drops, also when a run fails; readiness is seen in
//! the server's output or by a bounded connect retry, never by a fixed sleep.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::parse;
use super::report::{self, Variant};
use crate::topology::{run, Snmp, Topology};

/// Every workload, in the order they run.
pub const ALL: &[&str] = &[
    "floor",
    "pingpong-tcp",
    "pingpong-udp",
    "msgrate-udp",
    "nginx",
    "nginx-workers",
    "conn-rate",
    "redis",
    "iperf3",
];

/// The client counts the `nginx` workload runs (each as its own workload, `nginx-cN`).
pub const NGINX_CONNS: &[u32] = &[32, 400, 2000];

/// The workloads `name` stands for: `nginx` is one `nginx-cN` per count in `conns`; any other
/// known name (or `nginx-cN` itself) stands for itself.
pub fn expand(name: &str, conns: &[u32]) -> Result<Vec<String>> {
    if name == "nginx" {
        return Ok(conns.iter().map(|c| format!("nginx-c{c}")).collect());
    }
    if nginx_conns(name).is_some() || ALL.contains(&name) {
        return Ok(vec![name.to_string()]);
    }
    bail!(
        "unknown workload {name:?}; known: {} (nginx-cN for N clients)",
        ALL.join(" ")
    )
}

/// The variants workload `name` runs in each repetition, in the order of an even repetition
/// (an odd one runs them reversed, so slow drift favours none). The floor has no kernel
/// variant (its runs are filed as accel's); ping-pong also runs the kernel with both ends
/// spinning; every other workload runs the kernel as programs use it, and accel.
pub fn variants(name: &str) -> &'static [Variant] {
    if name == report::FLOOR {
        &[Variant::Accel]
    } else if report::is_pingpong(name) {
        &[Variant::Kernel, Variant::KernelSpinning, Variant::Accel]
    } else {
        &[Variant::Kernel, Variant::Accel]
    }
}

/// N of `nginx-cN`.
fn nginx_conns(name: &str) -> Option<u32> {
    name.strip_prefix("nginx-c")?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// One measured value: metric name, unit, whether higher is better, value.
pub type Sample = (&'static str, &'static str, bool, f64);

const START: Duration = Duration::from_secs(15);

/// A started program. Its stdout and stderr are read as they come; dropping it kills it by pid
/// (SIGKILL) and reaps it.
pub struct Proc {
    name: String,
    child: Option<Child>,
    rx: mpsc::Receiver<String>,
    out: Vec<String>,
}

fn reader<R: Read + Send + 'static>(r: R, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches('\n')
                        .to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

impl Proc {
    pub fn start(name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let (tx, rx) = mpsc::channel();
        reader(child.stdout.take().expect("piped"), tx.clone());
        reader(child.stderr.take().expect("piped"), tx);
        Ok(Proc {
            name: name.into(),
            child: Some(child),
            rx,
            out: Vec::new(),
        })
    }

    /// The program's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn printed(&self) -> String {
        let n = self.out.len();
        self.out[n.saturating_sub(12)..].join("\n")
    }

    /// Waits for a line containing `needle` and returns it; fails if the program exits first
    /// or on timeout.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        if let Some(l) = self.out.iter().find(|l| l.contains(needle)) {
            return Ok(l.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.out.push(line.clone());
                    if hit {
                        return Ok(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!(
                    "{} exited before printing {needle:?}:\n{}",
                    self.name,
                    self.printed()
                ),
                Err(mpsc::RecvTimeoutError::Timeout) => bail!(
                    "{} printed no {needle:?} within {timeout:?}:\n{}",
                    self.name,
                    self.printed()
                ),
            }
        }
    }

    fn drain(&mut self) {
        while let Ok(l) = self.rx.try_recv() {
            self.out.push(l);
        }
    }

    /// Connects from B to `addr` until it works (bounded); fails early if the program exits.
    pub fn wait_tcp(
        &mut self,
        topo: &Topology,
        addr: SocketAddrV4,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                std::thread::sleep(Duration::from_millis(100));
                self.drain();
                bail!(
                    "{} exited ({st}) before accepting on {addr}:\n{}",
                    self.name,
                    self.printed()
                );
            }
            let r = topo.in_b(move || {
                TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500))
            })?;
            if r.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.drain();
                bail!(
                    "{} did not accept on {addr} within {timeout:?} ({r:?}):\n{}",
                    self.name,
                    self.printed()
                );
            }
            // Retry interval of a bounded poll (a refusal comes back at once).
            std::thread::sleep(Duration::from_millis(20));
            self.drain();
        }
    }

    /// Waits (bounded) for the program to exit; returns all it printed. Fails if it exits
    /// non-zero or runs past `timeout` (then it is killed).
    pub fn finish(mut self, timeout: Duration) -> Result<String> {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.rx.recv_timeout(Duration::from_millis(20)) {
                Ok(l) => {
                    self.out.push(l);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
            }
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.drain();
                bail!(
                    "{} did not finish within {timeout:?} (killed):\n{}",
                    self.name,
                    self.printed()
                );
            }
        };
        let drain_deadline = Instant::now() + Duration::from_secs(3);
        while let Ok(l) = self
            .rx
            .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
        {
            self.out.push(l);
        }
        if !status.success() {
            bail!("{} failed ({status}):\n{}", self.name, self.printed());
        }
        Ok(self.out.join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Which namespace a program runs in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// The bench context: the topology, accel-run's path, durations, a scratch directory.
pub struct Bench {
    pub topo: Topology,
    /// accel-bench itself (it runs the floor's two ends).
    pub exe: PathBuf,
    pub accel_run: PathBuf,
    /// Seconds each timed client runs.
    pub secs: u32,
    /// redis-benchmark requests per test.
    pub redis_requests: u32,
    pub scratch: PathBuf,
    /// A's kernel counters over the client phase of the last nginx or ping-pong run: from
    /// when the server was ready (its readiness probes, which may reach A's kernel before the
    /// server listens, excluded) to when the client finished.
    pub client_kernel: Cell<Snmp>,
}

static PORT: AtomicU16 = AtomicU16::new(20000);

/// A fresh port per run, so no run meets an earlier run's TIME_WAIT or late packets.
fn port() -> u16 {
    PORT.fetch_add(1, Ordering::Relaxed)
}

impl Bench {
    /// Builds the topology and prepares B for many short connections (conn-rate).
    pub fn new(exe: PathBuf, accel_run: PathBuf, quick: bool) -> Result<Bench> {
        // wrk -c2000 and nginx with as many clients need more fds than the usual soft limit
        // of 1024; the programs started here inherit it.
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
        let topo = Topology::new(1).context("cannot build the topology")?;
        for kv in [
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=10000 65000",
        ] {
            run("ip", &["netns", "exec", &topo.ns_b, "sysctl", "-qw", kv])?;
        }
        let scratch = std::env::temp_dir().join(format!("accel-bench-{}", std::process::id()));
        std::fs::create_dir_all(scratch.join("www"))?;
        std::fs::write(scratch.join("www/1k.html"), vec![b'x'; 1024])?;
        Ok(Bench {
            topo,
            exe,
            accel_run,
            secs: if quick { 2 } else { 5 },
            redis_requests: if quick { 20_000 } else { 100_000 },
            scratch,
            client_kernel: Cell::new(Snmp::default()),
        })
    }

    /// `prog args` in `side`, under accel-run (latency profile) when `accel`.
    fn cmd(&self, side: Side, accel: bool, prog: &str, args: &[&str]) -> Command {
        self.cmd_on(side, accel, None, prog, args)
    }

    /// The CPU each end of a ping-pong runs on: the server on CPU 0, the client on CPU 1 (as a
    /// latency-minded user pins them), so that two ends that spin never share one core and
    /// wait out each other's time slice (a round trip of milliseconds instead of
    /// microseconds, seen now and then on a 2-core machine, on the kernel as under accel).
    /// `None` on a single CPU, and for ends that block (`spin` false: the kernel's default),
    /// which are woken fastest on the core where their peer ran.
    fn pingpong_cpu(side: Side, spin: bool) -> Option<usize> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        (spin && cpus >= 2).then_some(match side {
            Side::A => 0,
            Side::B => 1,
        })
    }

    /// [`Bench::cmd`], pinned to `cpu` (with util-linux's `taskset`) when given.
    fn cmd_on(
        &self,
        side: Side,
        accel: bool,
        cpu: Option<usize>,
        prog: &str,
        args: &[&str],
    ) -> Command {
        let (ns, ifname) = match side {
            Side::A => (&self.topo.ns_a, &self.topo.if_a),
            Side::B => (&self.topo.ns_b, &self.topo.if_b),
        };
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        if let Some(cpu) = cpu {
            c.args(["taskset", "-c", &cpu.to_string()]);
        }
        if accel {
            c.arg(&self.accel_run)
                .args(["--interface", ifname, "--profile", "latency", "--"]);
        }
        c.arg(prog).args(args);
        c
    }

    fn addr_a(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.topo.addr_a, port)
    }

    fn client_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.secs) + 30)
    }

    /// Runs workload `name` once, as `variant`. Besides the tool's numbers it reports how
    /// many IPv4 packets A's kernel received meanwhile (/proc/net/snmp): with accel it stays near
    /// zero when the workload's traffic bypassed the kernel (docs/ARCHITECTURE.md, "Testing").
    pub fn run(&self, name: &str, variant: Variant) -> Result<Vec<Sample>> {
        if !variants(name).contains(&variant) {
            bail!("workload {name} has no {} variant", variant.label());
        }
        let before = self.topo.snmp_a()?;
        let mut v = self.run_tool(name, variant)?;
        if name == "nginx-workers" {
            // On a topology of its own: its A is not this one.
            let d = self.client_kernel.get();
            v.push(("A kernel IPv4 rx", "pkts", false, d.ip_in_receives as f64));
            return Ok(v);
        }
        let d = self.topo.snmp_a()?.since(&before);
        v.push(("A kernel IPv4 rx", "pkts", false, d.ip_in_receives as f64));
        Ok(v)
    }

    fn run_tool(&self, name: &str, variant: Variant) -> Result<Vec<Sample>> {
        let accel = variant == Variant::Accel;
        let spinning = variant == Variant::KernelSpinning;
        match name {
            "floor" => self.floor(),
            "pingpong-tcp" => self.pingpong(true, accel, spinning),
            "pingpong-udp" => self.pingpong(false, accel, spinning),
            "msgrate-udp" => self.msgrate(accel),
            "nginx" => self.nginx(accel, false, 32),
            "nginx-workers" => self.nginx_workers(accel),
            "conn-rate" => self.nginx(accel, true, 32),
            n if nginx_conns(n).is_some() => self.nginx(accel, false, nginx_conns(n).unwrap_or(32)),
            "redis" => self.redis(accel),
            "iperf3" => self.iperf3(accel),
            other => Err(anyhow!("unknown workload {other:?}")),
        }
    }

    fn mac(&self, ns: &str, ifname: &str) -> Result<String> {
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "cat",
                &format!("/sys/class/net/{ifname}/address"),
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The raw AF_XDP ping-pong (see [`super::floor`]); there is no kernel variant.
    fn floor(&self) -> Result<Vec<Sample>> {
        let port = port();
        let local_a = SocketAddrV4::new(self.topo.addr_a, port).to_string();
        let local_b = SocketAddrV4::new(self.topo.addr_b, port).to_string();
        let exe = self.exe.to_string_lossy().to_string();
        let mut refl = Proc::start(
            "floor reflector",
            self.cmd(
                Side::A,
                false,
                &exe,
                &["__floor", "reflect", &self.topo.if_a, &local_a],
            ),
        )?;
        refl.wait_for("floor reflector ready", START)?;
        let (mac_a, mac_b) = (
            self.mac(&self.topo.ns_a, &self.topo.if_a)?,
            self.mac(&self.topo.ns_b, &self.topo.if_b)?,
        );
        let secs = self.secs.to_string();
        let args = [
            "__floor",
            "ping",
            &self.topo.if_b,
            &local_b,
            &local_a,
            &mac_b,
            &mac_a,
            &secs,
        ];
        let out = Proc::start("floor pinger", self.cmd(Side::B, false, &exe, &args))?
            .finish(self.client_timeout())?;
        drop(refl);
        let s = super::floor::parse_summary(&out)?;
        let mut v = vec![
            ("avg", "usec", false, s.avg_usec),
            ("p50", "usec", false, s.p50_usec),
            ("p99", "usec", false, s.p99_usec),
            ("p99.9", "usec", false, s.p999_usec),
        ];
        // The message-rate floor: what msgrate-udp could reach with no stack at all, with one
        // TX kick per frame (as a sendto per message gets) and with 32 frames per kick.
        for (metric, batch) in [
            ("msg rate, 1 per kick", "1"),
            ("msg rate, 32 per kick", "32"),
        ] {
            let mut sink = Proc::start(
                "floor sink",
                self.cmd(
                    Side::A,
                    false,
                    &exe,
                    &["__floor", "sink", &self.topo.if_a, &local_a, &secs],
                ),
            )?;
            sink.wait_for("floor sink ready", START)?;
            let args = [
                "__floor",
                "blast",
                &self.topo.if_b,
                &local_b,
                &local_a,
                &mac_b,
                &mac_a,
                batch,
            ];
            let blaster = Proc::start("floor blaster", self.cmd(Side::B, false, &exe, &args))?;
            let line = sink.wait_for("floor-rate:", self.client_timeout())?;
            // The sink goes on taking frames until the blaster is gone, so none reach A's
            // kernel.
            drop(blaster);
            drop(sink);
            v.push((metric, "msg/s", true, super::floor::parse_rate(&line)?));
        }
        Ok(v)
    }

    fn sockperf_server(&self, tcp: bool, accel: bool, port: u16, nonblocked: bool) -> Result<Proc> {
        let (a, p) = (self.topo.addr_a.to_string(), port.to_string());
        let mut args = vec!["server", "-i", &a, "-p", &p];
        if tcp {
            args.insert(1, "--tcp");
        }
        if nonblocked {
            args.push("--nonblocked");
        }
        let mut srv = Proc::start(
            "sockperf server",
            self.cmd_on(
                Side::A,
                accel,
                Self::pingpong_cpu(Side::A, accel || nonblocked),
                "sockperf",
                &args,
            ),
        )?;
        srv.wait_for("to block on socket", START)?;
        Ok(srv)
    }

    /// sockperf ping-pong with 64-byte messages, both ends on one stack: under accel-run when
    /// `accel`, else on the kernel, blocking in their receive calls or, with `nonblocked`
    /// (sockperf --nonblocked), spinning on non-blocking sockets as a latency-minded user
    /// would run them.
    pub fn pingpong(&self, tcp: bool, accel: bool, nonblocked: bool) -> Result<Vec<Sample>> {
        let port = port();
        let _srv = self.sockperf_server(tcp, accel, port, nonblocked)?;
        let (a, p, t) = (
            self.topo.addr_a.to_string(),
            port.to_string(),
            self.secs.to_string(),
        );
        let mut args = vec!["ping-pong", "-i", &a, "-p", &p, "-m", "64", "-t", &t];
        if tcp {
            args.insert(1, "--tcp");
        }
        if nonblocked {
            args.push("--nonblocked");
        }
        let before = self.topo.snmp_a()?;
        let out = Proc::start(
            "sockperf ping-pong",
            self.cmd_on(
                Side::B,
                accel,
                Self::pingpong_cpu(Side::B, accel || nonblocked),
                "sockperf",
                &args,
            ),
        )?
        .finish(self.client_timeout())?;
        self.client_kernel.set(self.topo.snmp_a()?.since(&before));
        let s = parse::sockperf_pingpong(&out)?;
        Ok(vec![
            ("avg", "usec", false, s.avg_usec),
            ("p50", "usec", false, s.p50_usec),
            ("p99", "usec", false, s.p99_usec),
            ("p99.9", "usec", false, s.p999_usec),
        ])
    }

    fn msgrate(&self, accel: bool) -> Result<Vec<Sample>> {
        let port = port();
        let _srv = self.sockperf_server(false, accel, port, false)?;
        let (a, p, t) = (
            self.topo.addr_a.to_string(),
            port.to_string(),
            self.secs.to_string(),
        );
        let args = ["throughput", "-i", &a, "-p", &p, "-m", "64", "-t", &t];
        let out = Proc::start(
            "sockperf throughput",
            self.cmd(Side::B, accel, "sockperf", &args),
        )?
        .finish(self.client_timeout())?;
        Ok(vec![(
            "msg rate",
            "msg/s",
            true,
            parse::sockperf_throughput(&out)?,
        )])
    }

    /// nginx in A serving a 1 KiB page to `wrk -c<conns>` (one thread) from B for `secs`
    /// seconds; `close`: a new connection per request (conn-rate).
    pub fn nginx(&self, accel: bool, close: bool, conns: u32) -> Result<Vec<Sample>> {
        let port = port();
        let dir = self.scratch.join(format!("nginx-{port}"));
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1;\n\
             error_log {d}/error.log; pid {d}/nginx.pid;\n\
             worker_rlimit_nofile {};\n\
             events {{ worker_connections {}; }}\n\
             http {{ access_log off; keepalive_timeout {}; keepalive_requests 1000000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {}; root {}; }} }}\n",
            conns * 2 + 1024,
            (conns * 2).max(4096),
            if close { "0" } else { "65" },
            self.addr_a(port),
            self.scratch.join("www").display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let conf_s = conf_path.to_string_lossy().to_string();
        let dir_s = dir.to_string_lossy().to_string();
        let mut srv = Proc::start(
            "nginx",
            self.cmd(Side::A, accel, "nginx", &["-c", &conf_s, "-p", &dir_s]),
        )?;
        srv.wait_tcp(&self.topo, self.addr_a(port), START)?;
        let url = format!("http://{}/1k.html", self.addr_a(port));
        let d = format!("{}s", self.secs);
        let c = format!("-c{conns}");
        let mut args = vec!["-t1", &c, "-d", &d, "--latency"];
        if close {
            args.extend(["-H", "Connection: close"]);
        }
        args.push(&url);
        let before = self.topo.snmp_a()?;
        let out = Proc::start("wrk", self.cmd(Side::B, false, "wrk", &args))?
            .finish(self.client_timeout())?;
        self.client_kernel.set(self.topo.snmp_a()?.since(&before));
        drop(srv);
        let w = parse::wrk(&out)?;
        if w.non_2xx_3xx > 0 {
            bail!(
                "nginx answered {} requests with an error status",
                w.non_2xx_3xx
            );
        }
        let mut v = vec![(
            if close { "connections" } else { "requests" },
            if close { "conn/s" } else { "req/s" },
            true,
            w.requests_per_sec,
        )];
        v.push(("p99 latency", "usec", false, w.p99_usec));
        v.push(("socket errors", "count", false, w.socket_errors as f64));
        Ok(v)
    }

    /// nginx as it ships (a master and two workers) on its own topology with a 2-queue veth,
    /// `wrk -c64` from B. The master stops with SIGQUIT (its workers with it).
    pub fn nginx_workers(&self, accel: bool) -> Result<Vec<Sample>> {
        let topo = Topology::new(2).context("cannot build the 2-queue topology")?;
        let port = port();
        let listen = SocketAddrV4::new(topo.addr_a, port);
        let dir = self.scratch.join(format!("nginx-workers-{port}"));
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process on; worker_processes 2;\n\
             error_log {d}/error.log; pid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_timeout 65; keepalive_requests 1000000;\n\
               client_body_temp_path {d}; proxy_temp_path {d}; fastcgi_temp_path {d};\n\
               uwsgi_temp_path {d}; scgi_temp_path {d};\n\
               server {{ listen {listen}; root {}; }} }}\n",
            self.scratch.join("www").display()
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let (conf_s, dir_s) = (
            conf_path.to_string_lossy().to_string(),
            dir.to_string_lossy().to_string(),
        );
        let in_ns = |ns: &str, accel: bool, prog: &str, args: &[&str]| {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]);
            if accel {
                c.arg(&self.accel_run).args([
                    "--interface",
                    &topo.if_a,
                    "--profile",
                    "latency",
                    "--",
                ]);
            }
            c.arg(prog).args(args);
            c
        };
        let mut srv = Proc::start(
            "nginx (master + 2 workers)",
            in_ns(&topo.ns_a, accel, "nginx", &["-c", &conf_s, "-p", &dir_s]),
        )?;
        srv.wait_tcp(&topo, listen, START)?;
        let url = format!("http://{listen}/1k.html");
        let secs = format!("{}s", self.secs);
        let before = topo.snmp_a()?;
        let out = Proc::start(
            "wrk",
            in_ns(
                &topo.ns_b,
                false,
                "wrk",
                &["-t2", "-c64", "-d", &secs, "--latency", &url],
            ),
        )?
        .finish(self.client_timeout())?;
        self.client_kernel.set(topo.snmp_a()?.since(&before));
        if let Some(pid) = srv.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGQUIT,
            );
        }
        let _ = srv.finish(Duration::from_secs(10));
        let w = parse::wrk(&out)?;
        if w.non_2xx_3xx > 0 {
            bail!(
                "nginx answered {} requests with an error status",
                w.non_2xx_3xx
            );
        }
        Ok(vec![
            ("requests", "req/s", true, w.requests_per_sec),
            ("p99 latency", "usec", false, w.p99_usec),
            ("socket errors", "count", false, w.socket_errors as f64),
        ])
    }

    fn redis(&self, accel: bool) -> Result<Vec<Sample>> {
        let port = port();
        let (a, p) = (self.topo.addr_a.to_string(), port.to_string());
        let args = [
            "--port",
            &p,
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--bind",
            &a,
        ];
        let mut srv = Proc::start(
            "redis-server",
            self.cmd(Side::A, accel, "redis-server", &args),
        )?;
        srv.wait_tcp(&self.topo, self.addr_a(port), START)?;
        let n = self.redis_requests.to_string();
        let args = ["-h", &a, "-p", &p, "-q", "-t", "get,set", "-n", &n];
        let out = Proc::start(
            "redis-benchmark",
            self.cmd(Side::B, false, "redis-benchmark", &args),
        )?
        .finish(self.client_timeout() + Duration::from_secs(60))?;
        drop(srv);
        let r = parse::redis_benchmark(&out)?;
        let get = |t: &str| {
            r.iter()
                .find(|(n, _)| n == t)
                .map(|(_, v)| *v)
                .ok_or_else(|| anyhow!("redis-benchmark printed no {t} result:\n{out}"))
        };
        Ok(vec![
            ("GET", "req/s", true, get("GET")?),
            ("SET", "req/s", true, get("SET")?),
        ])
    }

    fn iperf3(&self, accel: bool) -> Result<Vec<Sample>> {
        let mut v = Vec::new();
        for (reverse, metric) in [(false, "B->A"), (true, "A->B")] {
            let port = port();
            let (p, a) = (port.to_string(), self.topo.addr_a.to_string());
            // -B: without it iperf3 listens on an IPv6 dual-stack socket, which accel leaves
            // to the kernel.
            let srv_args = ["-s", "-1", "-B", &a, "-p", &p, "--forceflush"];
            let mut srv = Proc::start(
                "iperf3 server",
                self.cmd(Side::A, accel, "iperf3", &srv_args),
            )?;
            srv.wait_for("Server listening", START)?;
            let (a, t) = (self.topo.addr_a.to_string(), self.secs.to_string());
            let mut args = vec!["-c", &a, "-p", &p, "-t", &t, "-J"];
            if reverse {
                args.push("-R");
            }
            let out = Proc::start("iperf3 client", self.cmd(Side::B, false, "iperf3", &args))?
                .finish(self.client_timeout())?;
            drop(srv);
            v.push((metric, "Gbit/s", true, parse::iperf3(&out)?));
        }
        Ok(v)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// The release binaries next to `exe`: accel-run, checked together with the preload library.
pub fn find_accel_run(exe: &Path) -> Result<PathBuf> {
    let dir = exe
        .parent()
        .context("accel-bench's own path has no directory")?;
    let run = dir.join("accel-run");
    let lib = dir.join("libaccel_preload.so");
    for p in [&run, &lib] {
        if !p.is_file() {
            bail!(
                "{} is missing: accel-bench uses the binaries next to it; build them with \
                 `cargo build --release --workspace`",
                p.display()
            );
        }
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_expands_to_one_workload_per_client_count() {
        assert_eq!(
            expand("nginx", NGINX_CONNS).unwrap(),
            ["nginx-c32", "nginx-c400", "nginx-c2000"]
        );
        assert_eq!(expand("nginx", &[8]).unwrap(), ["nginx-c8"]);
        assert_eq!(expand("nginx-c100", NGINX_CONNS).unwrap(), ["nginx-c100"]);
        assert_eq!(expand("redis", NGINX_CONNS).unwrap(), ["redis"]);
        for bad in ["nginx-c0", "nginx-cx", "ngnix"] {
            assert!(expand(bad, NGINX_CONNS).is_err(), "{bad}");
        }
    }

    #[test]
    fn pingpong_runs_three_variants_floor_one_the_others_two() {
        use Variant::*;
        let all = expand_all();
        for name in &all {
            let v = variants(name);
            match name.as_str() {
                "floor" => assert_eq!(v, [Accel]),
                "pingpong-tcp" | "pingpong-udp" => {
                    assert_eq!(v, [Kernel, KernelSpinning, Accel])
                }
                _ => assert_eq!(v, [Kernel, Accel], "{name}"),
            }
        }
        assert!(all.iter().any(|n| n == "pingpong-tcp") && all.iter().any(|n| n == "floor"));
    }

    fn expand_all() -> Vec<String> {
        ALL.iter()
            .flat_map(|n| expand(n, NGINX_CONNS).unwrap())
            .collect()
    }
}
