//! What the process shows of itself: the snapshot accel-stat reads (published by the progress
//! thread), and the `accel-stats:` counter lines ACCEL_STATS=1 prints at exit.

use std::sync::{Arc, Mutex};

use super::nic::{Nic, NicInner, Serves};

/// Lists the process's accelerated sockets (interface name, row): the socket layer's, handed
/// to the runtime at start so the runtime need not know what a socket is.
pub type Rows = fn() -> Vec<(String, libaccel::stats::Socket)>;

/// This process's snapshot for accel-stat (libaccel::stats schema).
fn snapshot(nics: &[Arc<Nic>], rows: Rows) -> libaccel::stats::Snapshot {
    use libaccel::stats::{Snapshot, Stack as StackInfo, VERSION};
    let mut stacks: Vec<StackInfo> = nics
        .iter()
        .map(|nic| {
            let g = nic.lock();
            let (queues, xdp_mode, copy_mode) = g.engine.backend().stats_info();
            StackInfo {
                interface: nic.name.clone(),
                queues,
                xdp_mode,
                copy_mode,
                counters: all_counters(&g)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                sockets: Vec::new(),
            }
        })
        .collect();
    for (nic_name, sock) in rows() {
        if let Some(st) = stacks.iter_mut().find(|s| s.interface == nic_name) {
            st.sockets.push(sock);
        }
    }
    Snapshot {
        version: VERSION,
        pid: std::process::id(),
        program: std::fs::read_to_string("/proc/self/comm")
            .unwrap_or_default()
            .trim()
            .to_string(),
        updated_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        stacks,
    }
}

/// Writes the snapshot atomically (temp file + rename) and keeps a copy of the first
/// interface's counters line for an exit that cannot take the lock. Failures are silent
/// (accel-stat is an observer, the program must not notice).
pub fn publish(nics: &[Arc<Nic>], rows: Rows) {
    if let Some(nic) = nics.first() {
        let line = counters_line(nic, &nic.lock());
        *LAST_STATS.lock().unwrap_or_else(|p| p.into_inner()) = Some(line);
    }
    let dir = dir();
    if libaccel::stats::ensure_dir(&dir).is_err() {
        return;
    }
    let snap = snapshot(nics, rows);
    let Ok(text) = serde_json::to_string(&snap) else {
        return;
    };
    let tmp = libaccel::stats::temp_path_for(&dir, snap.pid);
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, libaccel::stats::path_for(&dir, snap.pid));
    }
}

/// The snapshot directory, as accel-run set it (the program may have cleared its
/// environment since).
fn dir() -> std::path::PathBuf {
    libaccel::stats::dir_from(crate::sys::env::var(libaccel::stats::DIR_ENV))
}

/// Makes the snapshot directory if it is missing (best effort: accel-stat is optional).
pub fn ensure_dir() {
    let _ = libaccel::stats::ensure_dir(&dir());
}

/// Removes this process's snapshot (at exit).
pub fn unpublish() {
    let dir = dir();
    let _ = std::fs::remove_file(libaccel::stats::path_for(&dir, std::process::id()));
}

/// Counters of every interface, one line each.
pub fn lines(nics: &[Arc<Nic>]) -> Vec<String> {
    nics.iter()
        .map(|nic| match nic.try_lock_briefly() {
            Some(g) => {
                let line = counters_line(nic, &g);
                *LAST_STATS.lock().unwrap_or_else(|p| p.into_inner()) = Some(line.clone());
                line
            }
            // Held by the code this thread was running when a signal handler called exit():
            // the progress thread's last copy (at most 100 ms old).
            None => LAST_STATS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| format!("accel-stats: interface={}", nic.name)),
        })
        .collect()
}

/// The last counters line made (for an exit that cannot take the lock).
static LAST_STATS: Mutex<Option<String>> = Mutex::new(None);

/// The stack's counters, then the link's (TX kicks).
fn all_counters(g: &NicInner) -> Vec<(&'static str, u64)> {
    let mut all: Vec<(&'static str, u64)> = g.stack().counters_now().iter().collect();
    all.extend(g.engine.backend().link_counters());
    all
}

fn counters_line(nic: &Nic, g: &NicInner) -> String {
    let mut line = format!("accel-stats: interface={}", nic.name);
    for (name, value) in all_counters(g) {
        line.push_str(&format!(" {name}={value}"));
    }
    line
}
