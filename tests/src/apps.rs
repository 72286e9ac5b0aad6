//! Helpers for the preload acceptance tests (tests/tests/preload_apps.rs, preload_misuse.rs):
//! unmodified Debian programs run under `accel-run` in namespace A, kernel peers in namespace B.
//!
//! # Contracts these tests rely on (issue 3)
//!
//! - `accel-run` is a binary of this workspace, found with [`crate::tool`] (target/<profile>/,
//!   built by `cargo build --workspace --bins`). Usage:
//!   `accel-run [--interface IF] [--profile latency|balanced] -- PROGRAM ARGS...`. It execs the
//!   program (no fork), so the pid we start is the program's pid and signals reach it directly.
//!   We run it inside a namespace as `ip netns exec NS accel-run --interface IF -- PROGRAM ...`
//!   (`ip netns exec` execs too).
//! - With `ACCEL_STATS=1` in its environment, the preloaded program prints to stderr, when it
//!   exits (normal exit, or SIGTERM/SIGINT handled by the program), one line per accelerated
//!   interface:
//!   `accel-stats: interface=veth-a rx_frames=N tx_frames=N tcp_accepted=N tcp_connected=N
//!   udp_rx_datagrams=N udp_tx_datagrams=N` (more `key=value` pairs may follow; values that
//!   are not numbers are kept out of the counters). See [`parse_accel_stats`].
//! - A socket is accelerated from the moment the call that sets it up returns: once `listen()`
//!   (TCP) or `bind()` (UDP) returned and the program said so (or a probe connection from B got
//!   through), every packet of its flows goes to accel, none to A's kernel.
//! - Acceleration proof ([`assert_accelerated`]): the program's accel counters moved
//!   (`rx_frames > 0`, `tx_frames > 0` and the counters relevant to the workload > 0) AND A's
//!   kernel saw no IPv4 packet of the workload (`/proc/net/snmp` in A: Ip InReceives, Tcp
//!   InSegs/OutSegs/ActiveOpens/PassiveOpens, Udp InDatagrams/OutDatagrams/NoPorts unchanged
//!   between a snapshot taken after the server is ready and one taken when the workload is
//!   done). Readiness probes happen before the first snapshot. For a program that exits on
//!   its own (a client, a one-shot server), the window ends after it exited, so its closing
//!   handshakes count: a preload that exits before its last FIN is acknowledged lets the
//!   peer's late packets reach A's kernel (which answers them with a RST), and that fails the
//!   proof. A server we stop with a signal is stopped after the second snapshot.
//!
//! # Developing the harness without the preload
//!
//! `ACCEL_TEST_KERNEL_ONLY=1` runs every "accelerated" program directly (no `accel-run`) and,
//! instead of the acceleration proof, checks the opposite: that the kernel in A carried the
//! workload (which proves the snapshots bracket the traffic). It exists only to show the
//! harness itself works; by default (and in CI) the full assertions run.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use accel_tools::topology::run;

use crate::{Snmp, Topology};

/// Whether the harness runs in kernel-only development mode (see the module doc).
pub fn kernel_only() -> bool {
    std::env::var("ACCEL_TEST_KERNEL_ONLY").is_ok_and(|v| v == "1")
}

/// Absolute path of an installed program, or a panic naming the Debian package that has it.
#[track_caller]
pub fn need(program: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    for dir in dirs {
        let p = dir.join(program);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{program}` is not installed: install the Debian package `{package}` \
         (scripts/setup.sh, run by scripts/test.sh, installs it)"
    );
}

/// Which namespace of the topology a program runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// `PROGRAM ARGS` in namespace `side`, under `accel-run --interface <side's veth>` with
/// `ACCEL_STATS=1` (plainly in kernel-only mode).
pub fn accelerated(
    topo: &Topology,
    side: Side,
    profile: Option<&str>,
    program: &Path,
    args: &[&str],
) -> Command {
    if kernel_only() {
        return kernel(topo, side, program, args);
    }
    // The release build: what users run, and what a fair look at real programs needs (a
    // debug stack makes redis-benchmark's 1.7 M requests outlast the test's deadline).
    let run = crate::release_tool("accel-run");
    let (mut cmd, ifname) = match side {
        Side::A => (
            topo.command_a(run.to_str().expect("utf-8 path")),
            &topo.if_a,
        ),
        Side::B => (
            topo.command_b(run.to_str().expect("utf-8 path")),
            &topo.if_b,
        ),
    };
    cmd.args(["--interface", ifname]);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    cmd.arg("--")
        .arg(program)
        .args(args)
        .env("ACCEL_STATS", "1");
    cmd
}

/// `PROGRAM ARGS` in namespace `side`, on the kernel stack.
pub fn kernel(topo: &Topology, side: Side, program: &Path, args: &[&str]) -> Command {
    let mut cmd = match side {
        Side::A => topo.command_a(program.to_str().expect("utf-8 path")),
        Side::B => topo.command_b(program.to_str().expect("utf-8 path")),
    };
    cmd.args(args);
    cmd
}

/// The kernel's counters in namespace B.
pub fn snmp_b(topo: &Topology) -> Snmp {
    let out = run(
        "ip",
        &["netns", "exec", &topo.ns_b, "cat", "/proc/net/snmp"],
    )
    .unwrap_or_else(|e| panic!("cannot read /proc/net/snmp in B: {e:#}"));
    Snmp::parse(&String::from_utf8_lossy(&out.stdout)).expect("/proc/net/snmp in B")
}

/// The kernel's counters in namespace A.
pub fn snmp_a(topo: &Topology) -> Snmp {
    topo.snmp_a()
        .unwrap_or_else(|e| panic!("cannot read /proc/net/snmp in A: {e:#}"))
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// A program we started, by pid. Both stdout and stderr are read as they come (so readiness can
/// be seen on either); it is killed (SIGKILL) and reaped when dropped, also when a test panics.
pub struct App {
    name: String,
    child: Option<Child>,
    lines: mpsc::Receiver<(Stream, String)>,
    out: Vec<String>,
    err: Vec<String>,
    started: Instant,
}

/// How a program ended.
#[derive(Debug)]
pub struct Finished {
    pub name: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    /// Fails unless the program exited 0.
    #[track_caller]
    pub fn success(self) -> Finished {
        assert!(
            self.status.success(),
            "{} failed: {}",
            self.name,
            self.describe()
        );
        self
    }

    /// Status and output, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}) after {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.name,
            self.status,
            self.elapsed,
            tail(&self.stdout, 60),
            tail(&self.stderr, 60)
        )
    }
}

/// The last `n` lines of `text` (long outputs stay readable in failure messages).
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() <= n {
        return text.to_string();
    }
    format!(
        "[... {} lines ...]\n{}",
        lines.len() - n,
        lines[lines.len() - n..].join("\n")
    )
}

fn reader<R: Read + Send + 'static>(r: R, which: Stream, tx: mpsc::Sender<(Stream, String)>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if tx.send((which, line)).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

impl App {
    /// Starts `cmd` with stdin from /dev/null and stdout/stderr read by the harness.
    #[track_caller]
    pub fn start(name: &str, cmd: Command) -> App {
        App::start_io(name, cmd, None, None)
    }

    /// Starts `cmd` with stdin from `stdin` and stdout to `stdout` when given (stderr is always
    /// read by the harness).
    #[track_caller]
    pub fn start_io(
        name: &str,
        mut cmd: Command,
        stdin: Option<File>,
        stdout: Option<File>,
    ) -> App {
        cmd.stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
        let piped_out = stdout.is_none();
        cmd.stdout(stdout.map(Stdio::from).unwrap_or_else(Stdio::piped));
        cmd.stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let (tx, rx) = mpsc::channel();
        if piped_out {
            reader(
                child.stdout.take().expect("stdout"),
                Stream::Out,
                tx.clone(),
            );
        }
        reader(child.stderr.take().expect("stderr"), Stream::Err, tx);
        App {
            name: name.to_string(),
            child: Some(child),
            lines: rx,
            out: Vec::new(),
            err: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    fn keep(&mut self, (which, line): (Stream, String)) {
        match which {
            Stream::Out => self.out.push(line),
            Stream::Err => self.err.push(line),
        }
    }

    /// Everything printed so far (for failure messages).
    fn printed(&self) -> String {
        format!(
            "--- stdout:\n{}\n--- stderr:\n{}",
            tail(&self.out.join("\n"), 60),
            tail(&self.err.join("\n"), 60)
        )
    }

    /// Whether the program has exited (without reaping its output).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Waits for a line containing `needle` on stdout or stderr and returns it. Fails with
    /// everything printed if the program exits first or `timeout` passes.
    #[track_caller]
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        // Lines printed before this call count too.
        if let Some(l) = self
            .out
            .iter()
            .chain(&self.err)
            .find(|l| l.contains(needle))
        {
            return l.clone();
        }
        self.wait_for_next_until(needle, deadline, timeout)
    }

    /// Waits for the next line containing `needle` that no earlier wait has seen (a program
    /// answering commands one by one may print the same kind of line many times).
    #[track_caller]
    pub fn wait_for_next(&mut self, needle: &str, timeout: Duration) -> String {
        self.wait_for_next_until(needle, Instant::now() + timeout, timeout)
    }

    #[track_caller]
    fn wait_for_next_until(
        &mut self,
        needle: &str,
        deadline: Instant,
        timeout: Duration,
    ) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(item) => {
                    let hit = item.1.contains(needle).then(|| item.1.clone());
                    self.keep(item);
                    if let Some(l) = hit {
                        return l;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the program exited.
                    let st = self.child.as_mut().map(|c| c.wait());
                    panic!(
                        "{} exited ({st:?}) before printing {needle:?}\n{}",
                        self.name,
                        self.printed()
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{} printed no line with {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.printed()
                ),
            }
        }
    }

    /// Sends `sig` to the program.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Waits for the program to exit on its own, then returns its status and all its output.
    /// Kills it and fails if it is still running after `timeout`.
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let mut child = self.child.take().expect("already finished");
        let deadline = Instant::now() + timeout;
        let status = loop {
            // Keep draining output so a chatty program never blocks on a full pipe.
            match self.lines.recv_timeout(Duration::from_millis(20)) {
                Ok(item) => {
                    self.keep(item);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both pipes closed: the exit status follows (polled, bounded by `deadline`).
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
            }
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                while let Ok(item) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    self.keep(item);
                }
                panic!(
                    "{} did not finish within {timeout:?} (killed)\n{}",
                    self.name,
                    self.printed()
                );
            }
        };
        // The readers end at EOF. A grandchild that kept the pipes open would stall this:
        // bounded, and none of our programs leaves one.
        let drain_deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(item) = self
            .lines
            .recv_timeout(drain_deadline.saturating_duration_since(Instant::now()))
        {
            self.keep(item);
        }
        Finished {
            name: self.name.clone(),
            status,
            stdout: self.out.join("\n"),
            stderr: self.err.join("\n"),
            elapsed: self.started.elapsed(),
        }
    }

    /// Sends `sig` and waits for the program to exit (see [`App::finish`]).
    #[track_caller]
    pub fn stop(self, sig: nix::sys::signal::Signal, timeout: Duration) -> Finished {
        self.signal(sig);
        self.finish(timeout)
    }

    /// Connects from namespace B to `addr` until a connection succeeds (then closes it), with
    /// a bounded deadline; fails early if this program exits.
    #[track_caller]
    pub fn wait_tcp_ready(&mut self, topo: &Topology, addr: SocketAddrV4, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                while let Ok(item) = self.lines.recv_timeout(Duration::from_millis(500)) {
                    self.keep(item);
                }
                panic!(
                    "{} exited ({st}) before accepting connections on {addr}\n{}",
                    self.name,
                    self.printed()
                );
            }
            let r = topo
                .in_b(move || TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)))
                .expect("namespace B");
            if r.is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not accept connections on {addr} within {timeout:?}: {r:?}\n{}",
                    self.name,
                    self.printed()
                );
            }
            // Retry interval of a bounded poll (refusals come back at once).
            std::thread::sleep(Duration::from_millis(20));
            while let Ok(item) = self.lines.try_recv() {
                self.keep(item);
            }
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs a program to completion (bounded) and returns how it ended.
#[track_caller]
pub fn run_app(name: &str, cmd: Command, timeout: Duration) -> Finished {
    App::start(name, cmd).finish(timeout)
}

// ---------------------------------------------------------------------------------------------
// accel's counters and the acceleration proof
// ---------------------------------------------------------------------------------------------

/// One `accel-stats:` line: the interface and its numeric counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccelStats {
    pub interface: String,
    pub counters: HashMap<String, u64>,
}

impl AccelStats {
    /// A counter's value (0 when the line does not have it).
    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }
}

/// Parses the `accel-stats: interface=IF key=N ...` lines a program printed to stderr under
/// `ACCEL_STATS=1`, in order. Other lines are ignored; in a stats line, pairs whose value is
/// not a number (other than `interface`) and words without `=` are skipped.
pub fn parse_accel_stats(stderr: &str) -> Vec<AccelStats> {
    let mut all = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.trim().strip_prefix("accel-stats:") else {
            continue;
        };
        let mut s = AccelStats::default();
        for word in rest.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            if k == "interface" {
                s.interface = v.to_string();
            } else if let Ok(n) = v.parse::<u64>() {
                s.counters.insert(k.to_string(), n);
            }
        }
        all.push(s);
    }
    all
}

/// The `accel-stats` counters `fin` printed at exit for `ifname`; panics (naming the cause)
/// when there is no such line: the program was not accelerated there.
#[track_caller]
pub fn accel_stats_for(what: &str, ifname: &str, fin: &Finished) -> AccelStats {
    parse_accel_stats(&fin.stderr)
        .into_iter()
        .find(|s| s.interface == ifname)
        .unwrap_or_else(|| {
            panic!(
                "{what}: no `accel-stats: interface={ifname} ...` line at exit: the program was \
                 not accelerated (or ACCEL_STATS=1 is not honoured)\n{}",
                fin.describe()
            )
        })
}

/// The kernel counters that must not move in an accelerated namespace, by name.
fn kernel_moves(d: &Snmp) -> Vec<(&'static str, u64)> {
    [
        ("Ip InReceives", d.ip_in_receives),
        ("Ip InDelivers", d.ip_in_delivers),
        ("Tcp InSegs", d.tcp_in_segs),
        ("Tcp OutSegs", d.tcp_out_segs),
        ("Tcp ActiveOpens", d.tcp_active_opens),
        ("Tcp PassiveOpens", d.tcp_passive_opens),
        ("Udp InDatagrams", d.udp_in_datagrams),
        ("Udp OutDatagrams", d.udp_out_datagrams),
        ("Udp NoPorts", d.udp_no_ports),
    ]
    .into_iter()
    .filter(|(_, v)| *v > 0)
    .collect()
}

/// The acceleration proof for `what` (docs/ARCHITECTURE.md, "Testing"): the program's accel counters for
/// `ifname` moved (`rx_frames`, `tx_frames` and each of `counters` > 0), and `kernel` (the
/// difference of the namespace's /proc/net/snmp around the workload) did not.
///
/// In kernel-only mode, checks the opposite instead: the kernel carried the workload.
#[track_caller]
pub fn assert_accelerated(
    what: &str,
    ifname: &str,
    fin: &Finished,
    kernel: &Snmp,
    counters: &[&str],
) {
    if kernel_only() {
        eprintln!("{what}: kernel-only mode, kernel counters during the workload: {kernel:?}");
        assert!(
            kernel.ip_in_receives > 0,
            "{what}: kernel-only mode, yet the kernel counters did not move: the snapshots do \
             not bracket the workload ({kernel:?})"
        );
        return;
    }
    let s = accel_stats_for(what, ifname, fin);
    eprintln!(
        "{what}: accel counters {:?}; kernel counters during the workload: {kernel:?}",
        s.counters
    );
    for name in ["rx_frames", "tx_frames"].iter().chain(counters) {
        assert!(
            s.get(name) > 0,
            "{what}: accel counter {name} did not move on {ifname}: {:?}",
            s.counters
        );
    }
    let moved = kernel_moves(kernel);
    assert!(
        moved.is_empty(),
        "{what}: the kernel carried traffic that should have gone through accel: {moved:?} \
         (accel counters {:?})",
        s.counters
    );
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A directory of this test run under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    #[track_caller]
    pub fn new(tag: &str) -> TempDir {
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("accel-apps-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `size` bytes of the seeded pattern (tools' peer::Pattern) to `path`.
#[track_caller]
pub fn write_pattern_file(path: &Path, size: u64, seed: u64) {
    let mut f = std::io::BufWriter::new(
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display())),
    );
    let mut pat = crate::peer::Pattern::new(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        pat.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).expect("write test file");
        left -= n as u64;
    }
    f.flush().expect("flush test file");
}

/// sha256 of a file (coreutils' sha256sum: fast also in a debug build of the tests).
#[track_caller]
pub fn sha256(path: &Path) -> String {
    let out = run("sha256sum", &[path.to_str().expect("utf-8 path")])
        .unwrap_or_else(|e| panic!("sha256sum {}: {e:#}", path.display()));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Fails unless `got` has exactly the bytes of `want`: sizes, sha256, and the offset of the
/// first difference when they differ.
#[track_caller]
pub fn assert_same_file(what: &str, want: &Path, got: &Path) {
    let ws = std::fs::metadata(want).map(|m| m.len()).unwrap_or(0);
    let gs = std::fs::metadata(got)
        .unwrap_or_else(|e| panic!("{what}: {} missing: {e}", got.display()))
        .len();
    let (wh, gh) = (sha256(want), sha256(got));
    if ws == gs && wh == gh {
        eprintln!("{what}: {gs} bytes, sha256 {gh} equal");
        return;
    }
    let a = std::fs::read(want).expect("read");
    let b = std::fs::read(got).expect("read");
    let first = a.iter().zip(&b).position(|(x, y)| x != y);
    panic!(
        "{what}: received file differs: {gs} bytes (sha256 {gh}) instead of {ws} (sha256 {wh}); \
         first differing byte at {first:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// nginx
// ---------------------------------------------------------------------------------------------

/// A minimal nginx.conf in `dir`: one process in the foreground, everything it writes in
/// `dir`, serving `dir` on `listen`.
pub fn nginx_conf(dir: &Path, listen: SocketAddrV4) -> std::path::PathBuf {
    let d = dir.display();
    let conf = format!(
        "daemon off;\n\
         master_process off;\n\
         worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   client_body_temp_path {d}/body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         \x20   default_type application/octet-stream;\n\
         \x20   sendfile on;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   server {{ listen {listen}; root {d}; }}\n\
         }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("write nginx.conf");
    path
}

// ---------------------------------------------------------------------------------------------
// C test programs
// ---------------------------------------------------------------------------------------------

/// Compiles tests/c/NAME.c with `cc` into `dir` and returns the executable's path.
#[track_caller]
pub fn compile_c(name: &str, dir: &Path) -> PathBuf {
    let cc = need("cc", "gcc");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("c")
        .join(format!("{name}.c"));
    let exe = dir.join(name);
    let out = Command::new(cc)
        .args([
            "-std=gnu11",
            "-O2",
            "-g",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
            "-o",
        ])
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "cannot compile {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

// ---------------------------------------------------------------------------------------------
// Kernel peers written in Rust (in namespace B)
// ---------------------------------------------------------------------------------------------

/// What a [`KernelServer`] does with each connection it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Echoes everything until the client closes.
    Echo,
    /// Closes at once with SO_LINGER 0: the client gets a RST.
    Reset,
}

/// A kernel TCP server in namespace B, ready when returned (the socket listens), stopped when
/// dropped (its accept loop and every connection are shut down and joined).
pub struct KernelServer {
    pub addr: SocketAddrV4,
    listener: Arc<TcpListener>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KernelServer {
    #[track_caller]
    pub fn start(topo: &Topology, port: u16, behaviour: Behaviour) -> KernelServer {
        let addr = SocketAddrV4::new(topo.addr_b, port);
        let listener = topo
            .in_b(move || TcpListener::bind(addr))
            .expect("namespace B")
            .unwrap_or_else(|e| panic!("kernel server on {addr} in B: {e}"));
        let listener = Arc::new(listener);
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::<TcpStream>::new()));
        let accepted = Arc::new(AtomicU32::new(0));
        let thread = {
            let (listener, stop, conns, accepted) = (
                listener.clone(),
                stop.clone(),
                conns.clone(),
                accepted.clone(),
            );
            std::thread::spawn(move || {
                let mut workers = Vec::new();
                loop {
                    let res = listener.accept();
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok((s, _)) = res else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    match behaviour {
                        Behaviour::Reset => {
                            let _ = nix::sys::socket::setsockopt(
                                &s,
                                nix::sys::socket::sockopt::Linger,
                                &libc::linger {
                                    l_onoff: 1,
                                    l_linger: 0,
                                },
                            );
                            drop(s);
                        }
                        Behaviour::Echo => {
                            if let Ok(c) = s.try_clone() {
                                conns.lock().expect("lock").push(c);
                            }
                            workers.push(std::thread::spawn(move || {
                                let mut s = s;
                                let mut buf = [0u8; 64 * 1024];
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
                                // The clone kept for Drop holds the socket open: close it
                                // for real so the client sees our FIN.
                                let _ = s.shutdown(std::net::Shutdown::Both);
                            }));
                        }
                    }
                }
                for w in workers {
                    let _ = w.join();
                }
            })
        };
        KernelServer {
            addr,
            listener,
            stop,
            conns,
            accepted,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u32 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for KernelServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // shutdown() on a listening socket wakes a blocked accept() (Linux).
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        for c in self.conns.lock().expect("lock").iter() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output parsers
// ---------------------------------------------------------------------------------------------

/// The tools' outputs are read by accel-bench's parsers (tools/src/bench/parse.rs): one set of
/// parsers for the benchmarks and the tests.
pub use accel_tools::bench::parse::{
    redis_benchmark, sockperf_messages, sockperf_pingpong, strip_ansi, wrk,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accel_stats_lines_parse() {
        let err = "some program output\n\
                   accel-stats: interface=veth-a rx_frames=10 tx_frames=9 tcp_accepted=2 tcp_connected=0 udp_rx_datagrams=0 udp_tx_datagrams=0 queue=0 mode=native\n\
                   other: x=1\n\
                   \taccel-stats: interface=eth1 rx_frames=0 tx_frames=0 weird\n";
        let s = parse_accel_stats(err);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].interface, "veth-a");
        assert_eq!(s[0].get("rx_frames"), 10);
        assert_eq!(s[0].get("tx_frames"), 9);
        assert_eq!(s[0].get("tcp_accepted"), 2);
        assert_eq!(s[0].get("queue"), 0);
        assert!(
            !s[0].counters.contains_key("mode"),
            "non-numeric values are not counters"
        );
        assert_eq!(s[0].get("missing"), 0);
        assert_eq!(s[1].interface, "eth1");
        assert_eq!(s[1].counters.len(), 2);
        assert!(parse_accel_stats("no stats here\n").is_empty());
    }

    #[test]
    #[should_panic(expected = "install the Debian package `accel-no-such-package`")]
    fn a_missing_program_names_its_package() {
        need("accel-no-such-program", "accel-no-such-package");
    }
}
