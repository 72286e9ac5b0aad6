//! The progress thread: runs timers and picks up frames while no program thread polls, and
//! publishes the process's snapshot for accel-stat.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::nic::Nic;
use super::stats;
use crate::sys::{guard, kernel};

/// How often the process publishes its snapshot for accel-stat.
pub const SNAPSHOT_EVERY: Duration = Duration::from_millis(100);

/// Starts the progress thread over `nics`; `rows` lists the process's sockets for accel-stat.
pub fn spawn(nics: Vec<Arc<Nic>>, hooks: super::Hooks) {
    let kick = super::kick::fd();
    let _ = std::thread::Builder::new()
        .name("accel-progress".into())
        .spawn(move || {
            guard::enter_guard();
            let mut last_snapshot = Instant::now() - SNAPSHOT_EVERY;
            loop {
                let mut fds: Vec<RawFd> = kick.into_iter().collect();
                let mut until: Option<Instant> = None;
                for nic in &nics {
                    // Off the queues first, then look for sleepers: a thread going to sleep
                    // counts itself first, then looks at `watched` (see `Waiting::register`),
                    // so one of the two always sees the other.
                    nic.watched.store(false, Ordering::SeqCst);
                    nic.tx_alarm.store(false, Ordering::Relaxed);
                    if nic.program_polls() {
                        // The program polls the queues and runs the timers (every stack poll
                        // does). Taking the lock here would only stall it, and worse if this
                        // thread lost its CPU while holding it. Look again in a while in case
                        // it stopped polling without going to sleep: when its last poll is
                        // APP_RECHECK old (not APP_RECHECK from now, which let a program that
                        // blocked elsewhere wait up to twice that for frames it left held
                        // back for a batched TX kick, see `Nic::poll_batched`).
                        // (At least a millisecond away: the poll below counts whole ones.)
                        let t = nic
                            .program_recheck_at()
                            .max(Instant::now() + Duration::from_millis(1));
                        until = Some(until.map_or(t, |u| u.min(t)));
                        continue;
                    }
                    nic.watched.store(true, Ordering::SeqCst);
                    let mut g = nic.lock();
                    nic.poll_for_progress(&mut g);
                    if let Some(t) = nic.next_timer(&mut g) {
                        until = Some(until.map_or(t, |u| u.min(t)));
                    }
                    fds.extend_from_slice(&nic.wake_fds);
                }
                // Forked children asking for the connections they share with this process.
                let kids = super::family::child_fds();
                fds.extend_from_slice(&kids);
                let cap = Instant::now() + SNAPSHOT_EVERY;
                let until = until.map_or(cap, |u| u.min(cap));
                let ms = until.saturating_duration_since(Instant::now()).as_millis() as i32;
                kernel::poll_readable(&fds, ms);
                for fd in kids {
                    super::family::serve(fd, hooks.handoff);
                }
                if let Some(k) = kick {
                    kernel::eventfd_drain(k);
                }
                if last_snapshot.elapsed() >= SNAPSHOT_EVERY {
                    last_snapshot = Instant::now();
                    stats::publish(&nics, hooks.rows);
                }
            }
        });
}
