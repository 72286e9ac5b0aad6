//! The C boundary: the interposed libc functions. Each decodes its arguments, asks whether the
//! fd is accelerated (one atomic load for a kernel fd), calls a safe function of the layers
//! below, and encodes the result as the C function returns it (`-1` + `errno`). Everything
//! else goes to the real function with the same arguments.
//!
//! # Safety
//!
//! Interposers receive raw pointers from C callers. They turn them into slices only after the
//! checks the kernel makes (NULL with a non-zero length is EFAULT, lengths are bounded), and
//! only for the duration of the call ([`args`]). A pointer that is non-NULL but invalid cannot
//! be checked in user space: it faults here where the kernel would return EFAULT (as with any
//! user-space stack). Every interposer is an `unsafe extern "C" fn` whose contract is the
//! libc function's own; every `unsafe` block states what it relies on.
//!
//! Interposers never recurse: while accel's own code runs on a thread (`sys::guard`), every
//! interposer on that thread goes straight to the real function.
#![allow(unsafe_code)]

mod args;
pub mod data;
pub mod exec;
pub mod fdctl;
pub mod ready;
pub mod signal;
pub mod socket;

use std::sync::Arc;

use libc::{c_int, ssize_t};

use crate::errno::{Errno, Res};
use crate::socket::{Endpoint, SOCKETS};
use crate::sys::{guard, next};

fn set_errno(e: Errno) {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = e.0 };
}

fn ret_int(r: Res<c_int>) -> c_int {
    match r {
        Ok(v) => v,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

fn ret_size(r: Res<usize>) -> ssize_t {
    match r {
        Ok(v) => v as ssize_t,
        Err(e) => {
            set_errno(e);
            -1
        }
    }
}

/// The endpoint of `fd` if it is accelerated and we are not inside accel's own code.
#[inline(always)]
fn ours(fd: c_int) -> Option<Arc<Endpoint>> {
    // The fast path for kernel fds is this one bitmap load; everything else (the thread-local
    // guard, whose access is a function call in a shared library) stays out of line.
    if !SOCKETS.contains(fd) {
        return None;
    }
    ours_slow(fd)
}

#[cold]
#[inline(never)]
fn ours_slow(fd: c_int) -> Option<Arc<Endpoint>> {
    if guard::passthrough() {
        return None;
    }
    let ep = SOCKETS.get(fd)?;
    // A socket a forked child inherited is adopted on the child's first call.
    if ep.from_another_process() && !run(|| crate::socket::inherit::adopt(&ep, fd)) {
        return None;
    }
    Some(ep)
}

/// Runs accel's code for one call with the recursion guard set.
fn run<R>(f: impl FnOnce() -> R) -> R {
    guard::guarded(f)
}

/// `write` through accel's interposer, as a program calls it (for the overhead benchmark).
pub fn write_interposed(fd: c_int, b: &[u8]) -> isize {
    // SAFETY: `b` is valid for its length; the interposer has write(2)'s contract.
    unsafe { data::write(fd, b.as_ptr().cast(), b.len()) }
}

/// `write` straight to the real libc function (for the overhead benchmark).
pub fn write_direct(fd: c_int, b: &[u8]) -> isize {
    // SAFETY: `b` is valid for its length.
    unsafe { next::write(fd, b.as_ptr().cast(), b.len()) }
}
