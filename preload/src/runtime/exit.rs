//! A process's exit: data it wrote (and its FINs) still reach the peer, and ACCEL_STATS=1
//! prints the counters on the stderr the user gave.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use super::stats;
use crate::fd::internal;
use crate::sys::{guard, kernel};

/// How long an exiting process keeps its stacks running so data it wrote (and its FINs)
/// reach the peer: after exit nothing retransmits for it.
const EXIT_DRAIN: Duration = Duration::from_secs(2);

/// A copy of stderr taken when accel starts: programs such as nginx later point fd 2 at their
/// own log, and ACCEL_STATS lines belong on the stderr the user gave. (A raw number: it lives
/// as long as the process, hidden from the program.)
static STDERR_COPY: AtomicI32 = AtomicI32::new(2);

pub(super) fn keep_stderr() {
    if STDERR_COPY.load(Ordering::Relaxed) != 2 {
        return; // a child keeps its parent's copy
    }
    // F_DUPFD_CLOEXEC at or above 500: out of the way of the program's own low fds.
    if let Ok(fd) = kernel::dup_cloexec_above(2, 500) {
        STDERR_COPY.store(fd, Ordering::Relaxed);
        internal::mark(fd);
        // A forked child's ACCEL_STATS lines go where its parent's go.
        internal::keep_across_fork(fd);
    }
}

fn stderr_copy() -> RawFd {
    STDERR_COPY.load(Ordering::Relaxed)
}

/// The process image ends without its atexit handlers (`_exit`, exec): frames a batched TX kick
/// held back leave now, as the kernel would have sent what the program's sends accepted, and
/// the accel-stat snapshot of stacks that end with it goes. Not in a vfork child, which runs
/// in its parent's memory (the parent's next call sends them).
pub fn image_ends() {
    let Some(rt) = super::current() else { return };
    if rt.pid != std::process::id() {
        return;
    }
    for nic in &rt.nics {
        if let Some(mut g) = nic.try_lock_briefly() {
            nic.poll(&mut g);
        }
    }
    stats::unpublish();
}

pub(super) extern "C" fn at_exit() {
    let Some(rt) = super::current() else { return };
    guard::guarded(|| {
        if let Some(h) = rt.hooks {
            (h.at_exit)();
        }
        let until = Instant::now() + EXIT_DRAIN;
        for nic in &rt.nics {
            while let Some(mut g) = nic.try_lock_briefly() {
                nic.poll(&mut g);
                if !g.stack().has_unacked_output() || Instant::now() >= until {
                    break;
                }
                drop(g);
                std::thread::yield_now();
            }
        }
        stats::unpublish();
        if rt.config.stats_at_exit {
            for line in stats::lines(&rt.nics) {
                kernel::write_fd(stderr_copy(), format!("{line}\n").as_bytes());
            }
        }
    });
}
