//! Helpers for accel's integration tests: find the built tools, run accel-echo inside a test
//! namespace, wait for it to be ready (by reading what it prints, never by sleeping), and stop
//! it by its pid whatever happens.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub mod apps;
pub use accel_tools::peer;
pub use accel_tools::topology::{Snmp, Topology};

/// Path of a binary of this workspace, built next to the test executable
/// (`target/<profile>/NAME`). The README's test command builds them before the tests run.
#[track_caller]
pub fn tool(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/test-xxxx -> target/<profile>/NAME
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the tools first (`cargo build --workspace --bins`, as the README's test command does)",
        path.display()
    );
    path
}

/// Path of a release-built binary of this workspace (`target/release/NAME`); the README's test
/// command builds them too.
#[track_caller]
pub fn release_tool(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .parent()
        .and_then(|d| d.parent())
        .and_then(|d| d.parent())
        .expect("target dir");
    let path = target.join("release").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the release tools first (`cargo build --release --workspace`, as the README's test command does)",
        path.display()
    );
    path
}

/// A process we started, stopped by its pid (SIGKILL) when dropped if it still runs.
pub struct Proc {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    pub seen: Vec<String>,
}

impl Proc {
    /// Spawns `cmd` with piped stdout/stderr; stdout lines arrive through `next_line`.
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Proc {
            child: Some(child),
            lines: rx,
            stderr: Some(err),
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits for a stdout line containing `needle`; fails with everything printed so far.
    #[track_caller]
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => {
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.try_wait().ok().flatten());
                    if let Some(c) = self.child.as_mut() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    let err = self.take_stderr();
                    panic!(
                        "no line with {needle:?} within {timeout:?} (exit status {status:?})\nstdout:\n{}\nstderr:\n{err}",
                        self.seen.join("\n"),
                    );
                }
            }
        }
    }

    /// Sends `sig`, waits for exit and returns (status, all stdout lines, stderr).
    #[track_caller]
    pub fn stop(
        &mut self,
        sig: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> (std::process::ExitStatus, Vec<String>, String) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
        self.wait(timeout)
    }

    /// Waits for the process to exit; returns (status, stdout lines, stderr). Kills it and
    /// fails if it is still running after `timeout`.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<String>, String) {
        let mut child = self.child.take().expect("process already stopped");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("process {} did not exit within {timeout:?}", child.id());
            }
            std::thread::sleep(Duration::from_millis(5)); // polling the exit status, not a sync sleep
        };
        // The reader threads end at EOF (the process has exited); collect what is left.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.seen.push(line);
        }
        let err = self.take_stderr();
        (status, self.seen.clone(), err)
    }

    /// Everything the process wrote to stderr (it has exited, so the pipe is at EOF).
    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
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

/// Starts accel-echo in namespace A of `topo` and waits until it serves.
#[track_caller]
pub fn start_echo(topo: &Topology, port: u16, extra: &[&str]) -> Proc {
    let mut cmd = topo.command_a(tool("accel-echo").to_str().expect("utf-8 path"));
    cmd.args(["--interface", &topo.if_a, "--port", &port.to_string()])
        .args(extra);
    let mut p = Proc::spawn(cmd);
    p.wait_for_line("accel-echo: serving", Duration::from_secs(30));
    p
}

/// accel-echo's counters from the lines it printed at exit: "queue N" lines keyed
/// `queueN.name`, stack lines `stack.name`, echo lines `echo.name`.
pub fn parse_counters(lines: &[String]) -> HashMap<String, u64> {
    let mut map = HashMap::new();
    for line in lines {
        let line = line.trim();
        let (scope, rest) = if let Some(r) = line.strip_prefix("queue ") {
            let (q, r) = r.split_once(':').unwrap_or(("?", r));
            (format!("queue{q}"), r.to_string())
        } else if let Some(r) = line.strip_prefix("stack ") {
            ("stack".to_string(), r.to_string())
        } else if let Some(r) = line.strip_prefix("echo ") {
            ("echo".to_string(), r.to_string())
        } else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        for pair in words.chunks(2) {
            if let [name, value] = pair {
                if let Ok(v) = value.parse::<u64>() {
                    map.insert(format!("{scope}.{name}"), v);
                }
            }
        }
    }
    map
}

/// The pids of the accel-helper processes that run in network namespace `ns`.
pub fn helpers_in(ns: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(want) = std::fs::metadata(format!("/run/netns/{ns}")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "accel-helper" {
            continue;
        }
        if let Ok(net) = std::fs::metadata(format!("/proc/{pid}/ns/net")) {
            if (net.dev(), net.ino()) == (want.dev(), want.ino()) {
                out.push(pid);
            }
        }
    }
    out
}

/// Waits until no accel-helper runs in namespace `ns` (an on-demand helper exits once its last
/// client is gone, after detaching everything); fails after `timeout` naming those left.
#[track_caller]
pub fn wait_helper_gone(ns: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = helpers_in(ns);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "accel-helper {left:?} still runs in {ns} {timeout:?} after its last client left"
        );
        std::thread::sleep(Duration::from_millis(5)); // polling for an exit, not a sync sleep
    }
}

/// What the accel-helper of namespace `ns` serves (`None`: no helper runs there).
#[track_caller]
pub fn helper_status(ns: &str) -> Option<libaccel::share::Status> {
    Topology::in_netns(ns, libaccel::share::status)
        .expect("enter the namespace")
        .unwrap_or_else(|e| panic!("helper status in {ns}: {e}"))
}

/// Whether an XDP program is attached to `ifname` in namespace `ns` (fails if it cannot look).
pub fn xdp_attached(ns: &str, ifname: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", ifname])
        .output()
        .expect("ip link show");
    assert!(
        out.status.success(),
        "cannot inspect {ifname} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.contains("prog/xdp")
        || text.contains(" xdp ")
        || text.contains("xdpgeneric")
        || text.contains("xdpdrv")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_parse() {
        let lines: Vec<String> = [
            "accel-echo: counters",
            "  queue 2: rx_frames 10 tx_frames 9",
            "  stack tcp_accepted 3",
            "  echo connections_accepted 3 udp_datagrams_echoed 7",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = parse_counters(&lines);
        assert_eq!(c["queue2.rx_frames"], 10);
        assert_eq!(c["queue2.tx_frames"], 9);
        assert_eq!(c["stack.tcp_accepted"], 3);
        assert_eq!(c["echo.udp_datagrams_echoed"], 7);
    }
}
