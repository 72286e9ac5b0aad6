//! The C boundary of the preload library: the interposed libc functions, the real ones they
//! fall back to, and safe wrappers of the real ones for the rest of the crate.
//!
//! # Safety
//!
//! Interposers receive raw pointers from C callers. They turn them into slices only after the
//! checks the kernel makes (NULL with a non-zero length is EFAULT, lengths are bounded), and only
//! for the duration of the call. The real functions are resolved with `dlsym(RTLD_NEXT)` and
//! called with the arguments they were given. Every `unsafe` block states what it relies on.
//!
//! Interposers never recurse: while accel's own code runs on a thread (the guard is set), every
//! interposer on that thread goes straight to the real function, so libaccel, libbpf and std
//! can use sockets, poll and write freely.
#![allow(unsafe_code)]

pub mod interpose;
pub mod kernel;
pub mod next;

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
