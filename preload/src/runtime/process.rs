//! One runtime per process, and what fork() changes.
//!
//! A child made by fork() gets a copy of its parent's memory, the parent's runtime included,
//! and copies of its fds, accel's own among them (AF_XDP sockets, BPF objects, the helper
//! connection, eventfds). None of that is the child's to use: the AF_XDP rings are shared
//! memory with the parent, and an fd the child keeps open keeps the parent's objects alive
//! after the parent has gone. So in the child, before anything else runs, accel closes those
//! copies, forgets the parent's runtime (leaked: dropping it would undo the parent's state) and
//! counts a new process generation. The child starts a runtime of its own on its first socket
//! call, and sockets it inherited are adopted by it then (`socket::inherit`).
//!
//! Everything here runs in the fork handler too, so it uses atomics only: no lock a thread of
//! the parent may have held at the fork, no allocation.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Once;

use super::{family, start, Hooks, Runtime};
use crate::fd::internal;
use crate::sys::leak::Published;
use crate::sys::{guard, kernel};

const IDLE: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;
const OFF: u8 = 3;

static STATE: AtomicU8 = AtomicU8::new(IDLE);
static RUNTIME: Published<Runtime> = Published::new();
/// The runtime, started on first use (`hooks` are the socket layer's); `None` when
/// acceleration is off (then one warning line said why, and every socket stays on the kernel).
pub fn get_or_start(hooks: Hooks) -> Option<&'static Runtime> {
    loop {
        match STATE.load(Ordering::Acquire) {
            RUNNING => return current(),
            OFF => return None,
            IDLE => {
                if STATE
                    .compare_exchange(IDLE, STARTING, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let started = guard::guarded(|| start::start(hooks));
                    return match started {
                        Some(rt) => {
                            let rt = RUNTIME.publish(rt);
                            STATE.store(RUNNING, Ordering::Release);
                            watch_forks();
                            Some(rt)
                        }
                        None => {
                            STATE.store(OFF, Ordering::Release);
                            None
                        }
                    };
                }
            }
            // Another thread is starting it (it takes milliseconds, once).
            _ => std::thread::yield_now(),
        }
    }
}

/// The runtime if it runs in this process (never starts it).
#[inline]
pub fn current() -> Option<&'static Runtime> {
    RUNTIME.get()
}

/// Registers the fork handler once per process image.
fn watch_forks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| kernel::at_fork(family::prepare, family::in_parent, after_fork_in_child));
}

/// In the child, right after fork(), before anything else runs (async-signal-safe work only).
extern "C" fn after_fork_in_child() {
    super::lineage::next();
    let keep = family::in_child();
    if STATE.load(Ordering::Relaxed) == RUNNING {
        internal::close_inherited(&keep);
    }
    // The parent's runtime is forgotten, not dropped.
    RUNTIME.forget();
    STATE.store(IDLE, Ordering::Release);
}
