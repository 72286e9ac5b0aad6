//! `accel-bench conn-memory`: what holding N TCP connections costs a server, on the kernel and
//! under accel-run, side by side on one throwaway topology.
//!
//! The server (`accel-bench __hold`, in namespace A, on the kernel or under accel-run) accepts
//! N connections from a client in B (this process, on the kernel) and goes through phases on
//! the bench's word (a line on its stdin), the bench sampling memory after each:
//!
//! - `base`: listening, no connection yet;
//! - `idle`: N connections established, nothing sent;
//! - `busy`: each connection holds KIB KiB the server received and has not read, and KIB KiB
//!   it sent that the client has not read (the bench sees both in B's socket queues);
//! - `after`: both sides read everything (checked byte for byte): what a connection keeps
//!   once its traffic is over;
//! - `closed`: the client closed every connection, the server read each EOF and closed too:
//!   what the server keeps of connections that are gone;
//! - `idle again`: N new connections, nothing sent: what idle connections cost a server that
//!   has had as many before (its allocator's free memory is reused).
//!
//! Then those close too and the server must exit 0: every connection was established, usable
//! and closed cleanly.
//!
//! What is counted per connection:
//!
//! - the server's resident memory (VmRSS) above `base`, less the UMEM (a fixed mapping per
//!   queue whose pages become resident as frames are first used, shown apart);
//! - the kernel's buffer memory of the server's TCP sockets in A (`ss -tm`: receive queue
//!   `r` + send queue `w`, as the kernel charges them; accel's sockets have none);
//! - the kernel's per-socket objects, the same for both (accel keeps a kernel socket behind
//!   every fd): the `TCP`, `sock_inode_cache`, `filp` and `dentry` slab objects of
//!   /proc/slabinfo.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::peer::Pattern;
use crate::topology::{run, Topology};

/// How long one phase may take (10,000 connections included).
const PHASE: Duration = Duration::from_secs(120);

/// Seeds of the bytes each side sends on connection `i`.
fn seed(server: bool, i: usize) -> u64 {
    (i as u64) << 1 | u64::from(server)
}

/// Raises this process's open-file limit to at least `n` (root may raise the hard limit too).
pub fn raise_nofile(n: u64) -> Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= n {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, n, hard.max(n)).with_context(|| {
        format!("cannot raise the open-file limit to {n} (RLIMIT_NOFILE; needs root above {hard})")
    })
}

// ---------------------------------------------------------------------------------------------
// The server: `accel-bench __hold LISTEN N KIB`
// ---------------------------------------------------------------------------------------------

/// The holding server (see the module doc). Prints `listening`, then answers each command on
/// stdin: `accept` (N connections) -> `idle N`, `send` -> `sent`, `drain` -> `drained`,
/// `close` (every connection must end with the client's EOF) -> `closed`, `quit`.
pub fn hold_main(args: &[String]) -> Result<()> {
    let [listen, n, kib] = args else {
        bail!("usage: accel-bench __hold ADDR:PORT CONNECTIONS KIB");
    };
    let listen: SocketAddrV4 = listen.parse().context("ADDR:PORT")?;
    let n: usize = n.parse().context("CONNECTIONS")?;
    let bytes: usize = kib.parse::<usize>().context("KIB")? * 1024;
    raise_nofile(n as u64 + 256)?;
    let listener = listen_with_backlog(listen, 4096)?;
    say("listening");
    let mut conns: Vec<TcpStream> = Vec::with_capacity(n);
    let mut stdin = BufReader::new(std::io::stdin());
    let mut buf = vec![0u8; bytes];
    let mut want = vec![0u8; bytes];
    loop {
        let mut cmd = String::new();
        if stdin.read_line(&mut cmd)? == 0 {
            bail!("stdin closed before `quit`");
        }
        match cmd.trim() {
            "accept" => {
                while conns.len() < n {
                    let (s, _) = listener.accept().context("accept")?;
                    conns.push(s);
                }
                say(&format!("idle {n}"));
            }
            "send" => {
                for (i, c) in conns.iter_mut().enumerate() {
                    Pattern::new(seed(true, i)).fill(&mut buf);
                    c.write_all(&buf)
                        .with_context(|| format!("write on connection {i}"))?;
                }
                say("sent");
            }
            "drain" => {
                for (i, c) in conns.iter_mut().enumerate() {
                    c.read_exact(&mut buf)
                        .with_context(|| format!("read on connection {i}"))?;
                    Pattern::new(seed(false, i)).fill(&mut want);
                    if let Some(at) = buf.iter().zip(&want).position(|(a, b)| a != b) {
                        bail!("connection {i}: byte {at} differs from what the client sent");
                    }
                }
                say("drained");
            }
            "close" => {
                // The client closed first: each connection must end with EOF, not an error.
                for (i, c) in conns.iter_mut().enumerate() {
                    match c.read(&mut buf[..1]) {
                        Ok(0) => {}
                        Ok(_) => bail!("connection {i}: bytes after the exchange"),
                        Err(e) => bail!("connection {i}: {e} instead of EOF"),
                    }
                }
                conns.clear();
                say("closed");
            }
            "quit" => return Ok(()),
            other => bail!("unknown command {other:?}"),
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A listening socket with a backlog of `backlog` (std's is 128).
fn listen_with_backlog(addr: SocketAddrV4, backlog: i32) -> Result<TcpListener> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(addr),
    )
    .with_context(|| format!("bind {addr}"))?;
    listen(&fd, Backlog::new(backlog)?)?;
    Ok(TcpListener::from(fd))
}

// ---------------------------------------------------------------------------------------------
// Memory as the bench sees it
// ---------------------------------------------------------------------------------------------

/// Resident memory of `pid` in KiB (VmRSS), and how much of it is UMEM: mappings of exactly
/// a queue's UMEM size (`libaccel::queue::UMEM_LAYOUT`), whose pages become resident as the
/// kernel and the stack first touch each frame.
pub fn rss_kib(pid: u32) -> Result<(u64, u64)> {
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

/// Sums of `ss -tm` over a namespace's established sockets on local port `port`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketMem {
    pub sockets: u64,
    /// Receive queue memory (`skmem r`), bytes.
    pub rmem: u64,
    /// Send queue memory (`skmem w`), bytes.
    pub wmem: u64,
}

/// Parses `ss -tmnH` output: one socket per line, its `skmem:(r..,rb..,t..,tb..,f..,w..,...)`
/// on the same line or the next.
pub fn parse_skmem(text: &str) -> SocketMem {
    let mut m = SocketMem::default();
    for field in text.split_whitespace() {
        let Some(inner) = field
            .strip_prefix("skmem:(")
            .and_then(|s| s.strip_suffix(')'))
        else {
            continue;
        };
        m.sockets += 1;
        for kv in inner.split(',') {
            let (k, v) = kv.split_at(kv.find(|c: char| c.is_ascii_digit()).unwrap_or(kv.len()));
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "r" => m.rmem += v,
                "w" => m.wmem += v,
                _ => {}
            }
        }
    }
    m
}

fn ss_mem(ns: &str, port: u16, local: bool) -> Result<SocketMem> {
    let filter = format!("( {} = :{port} )", if local { "sport" } else { "dport" });
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "ss",
            "-tmnH",
            "state",
            "established",
            &filter,
        ],
    )?;
    Ok(parse_skmem(&String::from_utf8_lossy(&out.stdout)))
}

/// Bytes queued in B's sockets to `port`: (unread received, unacknowledged sent), from the
/// Recv-Q and Send-Q columns of `ss -tn`.
fn b_queues(topo: &Topology, port: u16) -> Result<(u64, u64)> {
    let filter = format!("( dport = :{port} )");
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            &topo.ns_b,
            "ss",
            "-tnH",
            "state",
            "established",
            &filter,
        ],
    )?;
    let (mut recv, mut send) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut w = line.split_whitespace();
        let r: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let s: u64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        recv += r;
        send += s;
    }
    Ok((recv, send))
}

/// B's established connections to `port`.
fn b_queues_count(topo: &Topology, port: u16) -> Result<usize> {
    let filter = format!("( dport = :{port} )");
    let out = run(
        "ip",
        &[
            "netns",
            "exec",
            &topo.ns_b,
            "ss",
            "-tnH",
            "state",
            "established",
            &filter,
        ],
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

/// Object sizes (bytes) of the slab caches every TCP socket with an fd uses: `TCP`,
/// `sock_inode_cache`, `filp`, `dentry`. `None` when /proc/slabinfo cannot be read (not root).
pub fn socket_slab_bytes() -> Option<(u64, Vec<(String, u64)>)> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let mut parts = Vec::new();
    for name in ["TCP", "sock_inode_cache", "filp", "dentry"] {
        let size = text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == name).then_some(())?;
            // name active_objs num_objs objsize ...
            w.nth(2)?.parse::<u64>().ok()
        })?;
        parts.push((name.to_string(), size));
    }
    Some((parts.iter().map(|p| p.1).sum(), parts))
}

/// Memory at one phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub rss_kib: u64,
    pub umem_kib: u64,
    pub kernel: SocketMem,
    /// The server's memory mappings (lines of /proc/PID/maps; the kernel's limit is
    /// vm.max_map_count).
    pub maps: usize,
}

/// One server's run through the phases.
#[derive(Clone, Debug)]
pub struct HoldRun {
    pub accel: bool,
    pub conns: usize,
    pub kib: usize,
    pub base: Sample,
    /// N connections, nothing sent, in a process that had none before.
    pub idle: Sample,
    pub busy: Sample,
    pub after: Sample,
    /// Every connection closed.
    pub closed: Sample,
    /// N new connections, nothing sent, after the first N came and went (what a server that
    /// has run a while pays: memory its allocator kept is reused).
    pub idle_again: Sample,
    /// The server's `accel-stats:` line at exit (accel only).
    pub stats: Option<String>,
    /// Seconds to establish every connection.
    pub connect_secs: f64,
}

impl HoldRun {
    /// Bytes per connection at `s`: the server's resident memory above `base` (UMEM apart)
    /// plus the kernel's buffer memory of its sockets.
    pub fn per_conn(&self, s: &Sample) -> f64 {
        let rss = (s.rss_kib - s.umem_kib.min(s.rss_kib)) as f64
            - (self.base.rss_kib - self.base.umem_kib.min(self.base.rss_kib)) as f64;
        (rss * 1024.0 + (s.kernel.rmem + s.kernel.wmem) as f64) / self.conns as f64
    }

    /// The counter `name` of the server's accel-stats line (0 without one).
    pub fn counter(&self, name: &str) -> u64 {
        self.stats
            .as_deref()
            .and_then(|l| {
                l.split_whitespace().find_map(|w| {
                    let (k, v) = w.split_once('=')?;
                    (k == name).then(|| v.parse().ok())?
                })
            })
            .unwrap_or(0)
    }
}

/// The server process, its stdin and its lines.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(mut cmd: Command) -> Result<Server> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let stdin = child.stdin.take().context("stdin")?;
        let (tx, rx) = mpsc::channel();
        for r in [
            Box::new(child.stdout.take().context("stdout")?) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().context("stderr")?),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Server {
            child,
            stdin: Some(stdin),
            lines: rx,
            seen: Vec::new(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn tell(&mut self, cmd: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the server's stdin is closed")?;
        writeln!(stdin, "{cmd}").context("the server's stdin")?;
        stdin.flush().context("the server's stdin")
    }

    /// Waits (bounded) for a line starting with `what`; fails with what the server printed if
    /// it exits first.
    fn expect(&mut self, what: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(what) {
                        return Ok(l);
                    }
                }
                Err(_) => bail!(
                    "the server printed no {what:?} within {timeout:?}; it printed:\n{}",
                    self.printed()
                ),
            }
        }
    }

    fn printed(&self) -> String {
        let n = self.seen.len();
        self.seen[n.saturating_sub(20)..].join("\n")
    }

    /// Waits (bounded) for the server to exit 0; returns everything it printed.
    fn finish(mut self, timeout: Duration) -> Result<Vec<String>> {
        self.stdin = None;
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(l);
                continue;
            }
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("the server did not exit within {timeout:?}");
            }
        };
        // The pipes end with the process (bounded: it has no children).
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(l);
        }
        if !status.success() {
            bail!("the server failed ({status}):\n{}", self.seen.join("\n"));
        }
        Ok(std::mem::take(&mut self.seen))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (bounded) until `cond` holds, looking every 50 ms; fails with `what` and the last
/// value seen.
fn poll_until<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T>,
    cond: impl Fn(&T) -> bool,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        let v = probe()?;
        if cond(&v) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not reached within {timeout:?} (last seen {v:?})");
        }
        // The interval of a bounded poll of another process's state.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the server (`exe __hold`, under `accel_run` when given) on `port` of `topo`'s A through
/// the phases with `conns` connections from B exchanging `kib` KiB each way.
pub fn hold_once(
    topo: &Topology,
    exe: &Path,
    accel_run: Option<&Path>,
    port: u16,
    conns: usize,
    kib: usize,
    env: &[(&str, &str)],
) -> Result<HoldRun> {
    let addr = SocketAddrV4::new(topo.addr_a, port);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &topo.ns_a]);
    if let Some(run) = accel_run {
        cmd.arg(run).args(["--interface", &topo.if_a, "--"]);
        cmd.env("ACCEL_STATS", "1");
    }
    cmd.arg(exe)
        .arg("__hold")
        .arg(addr.to_string())
        .arg(conns.to_string())
        .arg(kib.to_string());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut srv = Server::start(cmd)?;
    srv.expect("listening", Duration::from_secs(20))?;
    let sample = |srv: &Server| -> Result<Sample> {
        let (rss_kib, umem_kib) = rss_kib(srv.pid())?;
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", srv.pid()))
            .map(|m| m.lines().count())
            .unwrap_or(0);
        Ok(Sample {
            rss_kib,
            umem_kib,
            kernel: ss_mem(&topo.ns_a, port, true)?,
            maps,
        })
    };
    let base = sample(&srv)?;

    // The client: N connections from B, opened one after the other.
    raise_nofile(conns as u64 + 1024)?;
    let connect_all = || -> Result<Vec<TcpStream>> {
        topo.in_b(move || -> Result<Vec<TcpStream>> {
            let mut v = Vec::with_capacity(conns);
            for i in 0..conns {
                let s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(10))
                    .with_context(|| format!("connection {i} of {conns} to {addr}"))?;
                v.push(s);
            }
            Ok(v)
        })?
    };
    srv.tell("accept")?;
    let t0 = Instant::now();
    let mut clients = connect_all()?;
    srv.expect("idle", PHASE)?;
    let connect_secs = t0.elapsed().as_secs_f64();
    let idle = sample(&srv)?;

    // Busy: KIB each way, unread on both sides.
    let bytes = kib * 1024;
    srv.tell("send")?;
    write_all_nonblocking(&mut clients, bytes)?;
    srv.expect("sent", PHASE)?;
    let want = (conns * bytes) as u64;
    poll_until(
        "B holds every byte the server sent, and the server acknowledged every byte B sent",
        PHASE,
        || b_queues(topo, port),
        |&(recv, send)| recv == want && send == 0,
    )?;
    let busy = sample(&srv)?;

    // After: both sides read everything.
    srv.tell("drain")?;
    let mut buf = vec![0u8; bytes];
    let mut expect = vec![0u8; bytes];
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_nonblocking(false)?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        c.read_exact(&mut buf)
            .with_context(|| format!("reading connection {i}"))?;
        Pattern::new(seed(true, i)).fill(&mut expect);
        if let Some(at) = buf.iter().zip(&expect).position(|(a, b)| a != b) {
            bail!("connection {i}: byte {at} differs from what the server sent");
        }
    }
    srv.expect("drained", PHASE)?;
    let after = sample(&srv)?;

    // Close: the client first, then the server reads each EOF and closes.
    drop(clients);
    srv.tell("close")?;
    srv.expect("closed", PHASE)?;
    poll_until(
        "every connection of the first round is gone from B",
        PHASE,
        || b_queues_count(topo, port),
        |&n| n == 0,
    )?;
    let closed = sample(&srv)?;

    // N connections again, in a server that has had N before.
    srv.tell("accept")?;
    let clients = connect_all()?;
    srv.expect("idle", PHASE)?;
    let idle_again = sample(&srv)?;
    drop(clients);
    srv.tell("close")?;
    srv.expect("closed", PHASE)?;
    srv.tell("quit")?;
    let printed = srv.finish(Duration::from_secs(30))?;
    let stats = printed
        .iter()
        .find(|l| l.starts_with("accel-stats:"))
        .cloned();
    if accel_run.is_some() && stats.is_none() {
        bail!(
            "the server under accel-run printed no accel-stats line: it was not accelerated\n{}",
            printed.join("\n")
        );
    }
    Ok(HoldRun {
        accel: accel_run.is_some(),
        conns,
        kib,
        base,
        idle,
        busy,
        after,
        closed,
        idle_again,
        stats,
        connect_secs,
    })
}

/// Writes `bytes` of each connection's pattern on every connection, in rounds of what each
/// socket takes, until all is written (bounded).
fn write_all_nonblocking(conns: &mut [TcpStream], bytes: usize) -> Result<()> {
    let mut left: Vec<usize> = vec![bytes; conns.len()];
    let mut data = vec![0u8; bytes];
    let deadline = Instant::now() + PHASE;
    for c in conns.iter() {
        c.set_nonblocking(true)?;
    }
    let mut pending = conns.len();
    while pending > 0 {
        for (i, c) in conns.iter_mut().enumerate() {
            if left[i] == 0 {
                continue;
            }
            // Regenerated per connection (the pattern depends on it); kept small in memory.
            Pattern::new(seed(false, i)).fill(&mut data);
            let off = bytes - left[i];
            match c.write(&data[off..]) {
                Ok(n) => {
                    left[i] -= n;
                    if left[i] == 0 {
                        pending -= 1;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(anyhow!(e).context(format!("writing connection {i}"))),
            }
        }
        if pending > 0 && Instant::now() > deadline {
            bail!("{pending} connections could not take {bytes} bytes within {PHASE:?}");
        }
    }
    Ok(())
}

/// `accel-bench conn-memory`: each count on the kernel then under accel, one table.
pub fn conn_memory(
    exe: &Path,
    accel_run: &Path,
    counts: &[usize],
    kib: usize,
    env: &[(&str, &str)],
) -> Result<Vec<HoldRun>> {
    let topo = Topology::new(1).context("cannot build a topology")?;
    for kv in [
        "net.ipv4.ip_local_port_range=10000 65000",
        "net.ipv4.tcp_tw_reuse=1",
    ] {
        run("ip", &["netns", "exec", &topo.ns_b, "sysctl", "-qw", kv])?;
    }
    let mut runs = Vec::new();
    let mut port = 21000;
    for &n in counts {
        for accel in [false, true] {
            port += 1;
            eprint!(
                "conn-memory: {n} connections, {} ... ",
                if accel { "accel" } else { "kernel" }
            );
            let r = hold_once(&topo, exe, accel.then_some(accel_run), port, n, kib, env)?;
            eprintln!("ok ({:.1} s to connect)", r.connect_secs);
            runs.push(r);
        }
    }
    Ok(runs)
}

/// The table `conn-memory` prints.
pub fn report(runs: &[HoldRun]) -> String {
    let mut s = String::new();
    let kib = runs.first().map_or(0, |r| r.kib);
    s.push_str(&format!(
        "bytes per connection held by the server (resident memory above the listening \
         server, UMEM apart, plus the kernel's socket buffers in A); busy = {kib} KiB unread \
         each way\n\n"
    ));
    s.push_str(
        "| connections | stack | idle | busy | after traffic | closed | idle again | UMEM resident (KiB) | mappings (busy) |\n",
    );
    s.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        s.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |\n",
            r.conns,
            if r.accel { "accel" } else { "kernel" },
            r.per_conn(&r.idle),
            r.per_conn(&r.busy),
            r.per_conn(&r.after),
            r.per_conn(&r.closed),
            r.per_conn(&r.idle_again),
            r.after.umem_kib,
            r.busy.maps,
        ));
    }
    s.push_str(
        "\n(closed: what the server still holds, per connection it had, once all closed; idle \
         again: N new idle connections after the first N came and went)\n",
    );
    if let Some((total, parts)) = socket_slab_bytes() {
        s.push_str(&format!(
            "\nplus, for both stacks, the kernel objects of each socket's fd: {total} bytes ({})\n",
            parts
                .iter()
                .map(|(n, b)| format!("{n} {b}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skmem_sums_receive_and_send_queues() {
        let text = "0 0 198.18.0.1:21001 198.18.0.2:40000\n\t skmem:(r0,rb131072,t0,tb46080,f0,w0,o0,bl0,d0)\n\
                    0 0 198.18.0.1:21001 198.18.0.2:40002 skmem:(r33280,rb131072,t0,tb46080,f3584,w36864,o0,bl0,d0)\n";
        let m = parse_skmem(text);
        assert_eq!(m.sockets, 2);
        assert_eq!(m.rmem, 33280);
        assert_eq!(m.wmem, 36864);
    }
}
