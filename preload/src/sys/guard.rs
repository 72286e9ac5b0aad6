//! When interposers pass straight through to the kernel: while accel's own code runs on a
//! thread, so libaccel, libbpf and std can use sockets, poll and write freely, and no
//! interposer ever recurses.

use std::cell::Cell;

thread_local! {
    static IN_ACCEL: Cell<bool> = const { Cell::new(false) };
}

/// Whether accel's own code is running on this thread (interposers pass straight through).
#[inline]
pub fn in_accel() -> bool {
    IN_ACCEL.with(|g| g.get())
}

/// Runs `f` with the guard set (restored afterwards, also if it was set already).
pub fn guarded<R>(f: impl FnOnce() -> R) -> R {
    let was = IN_ACCEL.with(|g| g.replace(true));
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            let v = self.0;
            IN_ACCEL.with(|g| g.set(v));
        }
    }
    let _r = Restore(was);
    f()
}

/// Sets the guard for the rest of this thread's life (accel's own threads).
pub fn enter_guard() {
    IN_ACCEL.with(|g| g.set(true));
}

/// Whether interposers pass straight through now, on this thread.
#[inline]
pub fn passthrough() -> bool {
    in_accel()
}
