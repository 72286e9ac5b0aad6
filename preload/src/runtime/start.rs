//! Start-up: which interfaces to accelerate, bringing accel up on each, and hiding accel's own
//! fds from the program. When accel cannot start, one line says why and the program runs on
//! the kernel.

use std::sync::Arc;

#[cfg(not(test))]
use super::attach::open_nic;
use super::nic::Nic;
use super::{exit, progress, Hooks, Runtime};
use crate::config::Config;
use crate::fd::internal;
use crate::sys::kernel;

/// One line on the program's stderr.
pub(super) fn warn(msg: &str) {
    let line = format!("accel: {msg}\n");
    kernel::write_stderr(line.as_bytes());
}

/// The runtime for this process, or `None` (after one warning line saying why) when it does
/// not accelerate.
pub(super) fn start(hooks: Hooks) -> Option<Runtime> {
    // Only a program started with the library in LD_PRELOAD (accel-run) accelerates: a test or
    // bench binary that links the crate gets plain pass-through interposers.
    if !crate::sys::env::var("LD_PRELOAD").is_some_and(|v| v.contains("libaccel_preload")) {
        return None;
    }
    // As accel-run set them, even if the program cleared its environment since (sys::env).
    let config = match Config::from_lookup(crate::sys::env::var) {
        Ok(c) => c,
        Err(e) => {
            warn(&format!("not accelerating: {e}"));
            return None;
        }
    };
    let before = internal::open_fds();
    if let Some(filter) = &config.log {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let names: Vec<String> = if config.interfaces.is_empty() {
        match libaccel::control::interfaces() {
            Ok(all) => all
                .into_iter()
                .filter(|i| i.up && i.ethernet && !i.addrs.is_empty() && i.name != "lo")
                .map(|i| i.name)
                .collect(),
            Err(e) => {
                warn(&format!("not accelerating: cannot list interfaces: {e}"));
                return None;
            }
        }
    } else {
        config.interfaces.clone()
    };
    let mut nics: Vec<Arc<Nic>> = Vec::new();
    // A forked child joins through the connection its parent made for it (it may lack the
    // privileges to connect itself), and asks for more through it.
    let mut inherited = super::family::take_inherited_conn();
    let delegated = inherited.is_some();
    for name in &names {
        let conn = match (inherited.take(), nics.first()) {
            (Some(c), _) => Some(c),
            (None, Some(first)) if delegated => {
                use super::nic::Serves;
                first.lock().engine.backend().spare_conn()
            }
            _ => None,
        };
        match open_nic(name, &config.buffers, conn) {
            Ok(n) => nics.push(Arc::new(n)),
            Err(e) => warn(&format!(
                "not accelerating {name}, its sockets use the kernel: {e}"
            )),
        }
    }
    if nics.is_empty() {
        if names.is_empty() {
            warn("not accelerating: no up Ethernet interface with an IPv4 address (pass one with accel-run --interface)");
        }
        return None;
    }
    let mut rt = Runtime::new(config, nics);
    rt.hooks = Some(hooks);
    exit::keep_stderr();
    // Makes the progress thread's kick eventfd now, so it is hidden with the rest.
    super::kick::kick();
    // What was opened since `before` and is surely accel's own: AF_XDP sockets and BPF objects
    // (libaccel owns them). Not every netlink socket: another thread's getaddrinfo may have
    // opened one meanwhile; the control planes' are marked where they are opened.
    for fd in internal::open_fds() {
        if !before.contains(&fd) && kernel::is_accel_kind(fd) {
            internal::mark(fd);
        }
    }
    // Made now, while this process may still be privileged (see `stats::publish`).
    super::stats::ensure_dir();
    progress::spawn(rt.nics.clone(), hooks);
    kernel::at_exit(exit::at_exit);
    Some(rt)
}

/// The crate's unit tests build their interfaces in memory (`socket::tests`), never here.
#[cfg(test)]
fn open_nic(
    name: &str,
    _: &crate::config::Buffers,
    _: Option<std::os::fd::OwnedFd>,
) -> Result<Nic, String> {
    Err(format!(
        "{name}: the unit tests accelerate in-memory interfaces only"
    ))
}
