//! accel-stat: what accel accelerates right now (like OpenOnload's `onload_stackdump`).
//!
//! Reads the snapshots accelerated processes publish (see `accel_tools::stats` for the
//! contract and schema) and prints, per process and interface, the queues, the sockets and the
//! counters; `--json` prints the snapshots themselves. Then what the accel-helper of this
//! network namespace serves: every process it serves (whether it publishes snapshots or not)
//! with its slot, and where each queue's frames are; `--helper` shows only that.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use accel_tools::stats::{self, Snapshot};
use clap::Parser;
use libaccel::share::Status;

/// A snapshot older than this, from a process that still runs, is flagged (it should be
/// rewritten every ~100 ms; the pid may have been reused, or the process is stuck).
const STALE_MS: u64 = 5_000;

/// Show the processes running under accel: their stacks, sockets and counters.
#[derive(Parser, Debug)]
#[command(name = "accel-stat", version)]
struct Args {
    /// Print a JSON array of the processes' snapshots instead of tables.
    #[arg(long)]
    json: bool,

    /// Where the snapshots are [default: $ACCEL_STAT_DIR, else /run/accel].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,

    /// Show only what the accel-helper of this network namespace serves (with --json: its
    /// status as JSON).
    #[arg(long)]
    helper: bool,
}

/// The live processes' snapshots (by pid), and a warning line for each file that could not be
/// used. Files of processes that are gone are skipped, and removed when `remove_stale`.
fn load(dir: &Path, remove_stale: bool) -> (Vec<Snapshot>, Vec<String>) {
    let mut snaps = Vec::new();
    let mut warnings = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        // No directory: no process has published anything yet.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (snaps, warnings),
        Err(e) => {
            warnings.push(format!("cannot read {}: {e}", dir.display()));
            return (snaps, warnings);
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(stats::pid_of_file_name) else {
            continue;
        };
        let path = entry.path();
        if !Path::new(&format!("/proc/{pid}")).exists() {
            if remove_stale {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // Removed by its process between listing and reading: it exited.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                warnings.push(format!("cannot read {}: {e}", path.display()));
                continue;
            }
        };
        match Snapshot::from_json(&text) {
            Ok(s) if s.version != stats::VERSION => warnings.push(format!(
                "{} has format version {}, this accel-stat reads version {}: use the \
                 accel-stat of the same accel build",
                path.display(),
                s.version,
                stats::VERSION
            )),
            Ok(s) => snaps.push(s),
            Err(e) => warnings.push(format!("{} is not a valid snapshot: {e}", path.display())),
        }
    }
    snaps.sort_by_key(|s| s.pid);
    (snaps, warnings)
}

/// The text report: one block per process.
fn render(snaps: &[Snapshot], now_ms: u64) -> String {
    let mut out = String::new();
    for s in snaps {
        let age = now_ms.saturating_sub(s.updated_unix_ms);
        let _ = write!(out, "pid {} {}", s.pid, s.program);
        if age > STALE_MS {
            let _ = write!(
                out,
                " (snapshot {:.1} s old: the process may be stuck, or its pid reused)",
                age as f64 / 1000.0
            );
        }
        out.push('\n');
        if s.stacks.is_empty() {
            out.push_str("  no accelerated interface\n");
        }
        for st in &s.stacks {
            let q: Vec<String> = st.queues.iter().map(|q| q.to_string()).collect();
            let _ = writeln!(
                out,
                "  {} queues [{}] {} XDP, {}",
                st.interface,
                q.join(","),
                st.xdp_mode,
                st.copy_mode
            );
            if st.sockets.is_empty() {
                out.push_str("    no sockets\n");
            } else {
                let rows: Vec<[String; 7]> = st
                    .sockets
                    .iter()
                    .map(|k| {
                        [
                            k.fd.to_string(),
                            k.proto.clone(),
                            k.state.clone(),
                            k.local.clone(),
                            k.remote.clone().unwrap_or_else(|| "*".into()),
                            k.recv_queue.to_string(),
                            k.send_queue.to_string(),
                        ]
                    })
                    .collect();
                let head = [
                    "fd", "proto", "state", "local", "remote", "recv-q", "send-q",
                ];
                let mut w = head.map(str::len);
                for r in &rows {
                    for (i, c) in r.iter().enumerate() {
                        w[i] = w[i].max(c.len());
                    }
                }
                let line = |cells: [&str; 7]| {
                    let mut l = String::from("   ");
                    for (i, c) in cells.iter().enumerate() {
                        // Numbers right-aligned, words left-aligned.
                        if i == 0 || i >= 5 {
                            let _ = write!(l, " {c:>w$}", w = w[i]);
                        } else {
                            let _ = write!(l, " {c:<w$}", w = w[i]);
                        }
                    }
                    l.trim_end().to_owned() + "\n"
                };
                out.push_str(&line(head));
                for r in &rows {
                    out.push_str(&line(r.each_ref().map(String::as_str)));
                }
            }
            if !st.counters.is_empty() {
                out.push_str("    counters:");
                for (k, v) in &st.counters {
                    let _ = write!(out, " {k} {v}");
                }
                out.push('\n');
                // How well TX kicks (system calls in copy mode) are batched.
                if let (Some(&frames), Some(&kicks)) =
                    (st.counters.get("tx_frames"), st.counters.get("tx_kicks"))
                {
                    if kicks > 0 {
                        let _ = writeln!(
                            out,
                            "    tx frames per kick: {:.1}",
                            frames as f64 / kicks as f64
                        );
                    }
                }
            }
        }
    }
    out
}

/// The helper's status as text: its processes, each queue's frames, the shared flows.
fn render_helper(s: &Status) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "accel-helper pid {}", s.pid);
    if s.interfaces.is_empty() {
        out.push_str("  no interface served\n");
    }
    for i in &s.interfaces {
        let _ = writeln!(
            out,
            "  {} (program {}, {} XDP, {}): {} exact flows, {} pins",
            i.ifname,
            i.prog_id,
            if i.native { "native" } else { "generic" },
            if i.zero_copy { "zero-copy" } else { "copy" },
            i.exact_flows,
            i.pins
        );
        for c in &i.clients {
            let q: Vec<String> = c.queues.iter().map(|q| q.to_string()).collect();
            let _ = writeln!(
                out,
                "    slot {:>2}: pid {} {} queues [{}]",
                c.slot,
                c.pid,
                c.program,
                q.join(",")
            );
        }
        for q in &i.queues {
            let _ = writeln!(
                out,
                "    queue {} frames {}: free {} fill {} kernel-rx {} rx-rings {} held {} tx-rings {} kernel-tx {} completion {} leaked {} (recovered {}, repairs {}){}",
                q.queue,
                q.frames,
                q.free,
                q.fill,
                q.kernel_rx,
                q.rx_rings,
                q.private,
                q.tx_rings,
                q.kernel_tx,
                q.completion,
                q.leaked,
                q.recovered,
                q.repairs,
                if q.accounted { "" } else { " (moving: not all counted)" }
            );
        }
        for f in &i.shared_flows {
            let _ = writeln!(
                out,
                "    {}: slots {:?}, held by {:?}",
                f.flow, f.slots, f.holders
            );
        }
    }
    out
}

fn helper_status() -> Option<Status> {
    match libaccel::share::status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("accel-stat: warning: the accel-helper did not answer: {e}");
            None
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.helper {
        let Some(s) = helper_status() else {
            println!("no accel-helper runs in this network namespace");
            return ExitCode::SUCCESS;
        };
        if args.json {
            match serde_json::to_string_pretty(&s) {
                Ok(j) => println!("{j}"),
                Err(e) => {
                    eprintln!("accel-stat: cannot encode JSON: {e}");
                    return ExitCode::from(1);
                }
            }
        } else {
            print!("{}", render_helper(&s));
        }
        return ExitCode::SUCCESS;
    }
    let dir = args.dir.clone().unwrap_or_else(stats::dir);
    let root = nix::unistd::Uid::effective().is_root();
    let (snaps, warnings) = load(&dir, root);
    for w in &warnings {
        eprintln!("accel-stat: warning: {w}");
    }
    if args.json {
        match serde_json::to_string_pretty(&snaps) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("accel-stat: cannot encode JSON: {e}");
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    let helper = helper_status().filter(|s| !s.interfaces.is_empty());
    if snaps.is_empty() && helper.is_none() {
        println!("no process is running under accel");
        return ExitCode::SUCCESS;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    print!("{}", render(&snaps, now));
    if let Some(h) = helper {
        print!("{}", render_helper(&h));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_tools::stats::{Socket, Stack};

    fn snap(pid: u32, at: u64) -> Snapshot {
        Snapshot {
            version: stats::VERSION,
            pid,
            program: "nginx".into(),
            updated_unix_ms: at,
            stacks: vec![Stack {
                interface: "veth-a".into(),
                queues: vec![0, 1],
                xdp_mode: "native".into(),
                copy_mode: "copy".into(),
                counters: [
                    ("rx_frames".to_string(), 12),
                    ("tx_frames".to_string(), 30),
                    ("tx_kicks".to_string(), 4),
                ]
                .into_iter()
                .collect(),
                sockets: vec![Socket {
                    fd: 5,
                    proto: "tcp".into(),
                    state: "ESTABLISHED".into(),
                    local: "198.18.0.1:80".into(),
                    remote: Some("198.18.0.2:40000".into()),
                    recv_queue: 10,
                    send_queue: 2000,
                }],
            }],
        }
    }

    #[test]
    fn text_shows_stacks_sockets_and_counters() {
        let t = render(&[snap(42, 1000)], 1100);
        assert!(t.starts_with("pid 42 nginx\n"), "{t}");
        assert!(t.contains("veth-a queues [0,1] native XDP, copy"), "{t}");
        assert!(t.contains("ESTABLISHED"), "{t}");
        assert!(t.contains("198.18.0.2:40000"), "{t}");
        assert!(t.contains(" 2000"), "{t}");
        assert!(
            t.contains("counters: rx_frames 12 tx_frames 30 tx_kicks 4"),
            "{t}"
        );
        assert!(t.contains("tx frames per kick: 7.5"), "{t}");
        assert!(!t.contains("old"), "{t}");
    }

    #[test]
    fn the_helper_block_shows_processes_frames_and_sets() {
        use libaccel::share::proto::{
            ClientStatus, InterfaceStatus, QueueStatus, SharedFlowStatus,
        };
        let s = Status {
            pid: 9,
            interfaces: vec![InterfaceStatus {
                ifname: "veth-a".into(),
                ifindex: 2,
                prog_id: 77,
                native: true,
                zero_copy: false,
                clients: vec![ClientStatus {
                    pid: 100,
                    slot: 3,
                    program: "nginx".into(),
                    queues: vec![0],
                }],
                queues: vec![QueueStatus {
                    queue: 0,
                    frames: 4096,
                    free: 2000,
                    fill: 2048,
                    private: 16,
                    leaked: 32,
                    accounted: true,
                    ..Default::default()
                }],
                shared_flows: vec![SharedFlowStatus {
                    flow: "TCP 198.18.0.1:80 (any remote)".into(),
                    slots: vec![3],
                    holders: vec![3],
                }],
                exact_flows: 1,
                pins: 5,
            }],
        };
        let t = render_helper(&s);
        assert!(t.starts_with("accel-helper pid 9\n"), "{t}");
        assert!(
            t.contains("veth-a (program 77, native XDP, copy): 1 exact flows, 5 pins"),
            "{t}"
        );
        assert!(t.contains("slot  3: pid 100 nginx queues [0]"), "{t}");
        assert!(
            t.contains("queue 0 frames 4096: free 2000 fill 2048"),
            "{t}"
        );
        assert!(t.contains("held 16") && t.contains("leaked 32"), "{t}");
        assert!(!t.contains("moving"), "{t}");
        assert!(
            t.contains("TCP 198.18.0.1:80 (any remote): slots [3]"),
            "{t}"
        );
    }

    #[test]
    fn an_old_snapshot_is_flagged() {
        let t = render(&[snap(42, 1000)], 1000 + STALE_MS + 1);
        assert!(t.contains("s old"), "{t}");
    }
}
