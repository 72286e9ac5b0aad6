//! Interposers of the exec family the program calls directly (execve, execv, execvp, execvpe,
//! fexecve): before the new program replaces this one, accelerated connections whose fd it
//! keeps go to their kernel sockets (the new program knows nothing of accel's stacks), and
//! frames held back for a batched TX kick leave. `_exit` and `_Exit` (no atexit handlers run)
//! send those frames too, and remove the process's accel-stat snapshot as exit does.
//! glibc's variadic execl* and posix_spawn reach the kernel without these; their connections
//! are not handed over (documented in the README's limits).

use libc::{c_char, c_int};

use super::run;
use crate::runtime::exit;
use crate::socket::handoff;
use crate::sys::{guard, next};

fn before() {
    if !guard::passthrough() {
        run(|| {
            handoff::before_exec();
            exit::image_ends();
        });
    }
}

/// _exit(2): what the program's last sends queued leaves before the process ends, and its
/// accel-stat snapshot goes.
#[no_mangle]
pub extern "C" fn _exit(status: c_int) -> ! {
    if !guard::passthrough() {
        run(exit::image_ends);
    }
    next::_exit(status);
    end(status)
}

/// _Exit(2), as [`_exit`].
#[no_mangle]
pub extern "C" fn _Exit(status: c_int) -> ! {
    if !guard::passthrough() {
        run(exit::image_ends);
    }
    next::_Exit(status);
    end(status)
}

/// Ends the process as _exit does, when the real one could not be found.
fn end(status: c_int) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and does not return.
        unsafe { libc::syscall(libc::SYS_exit_group, status) };
    }
}

/// execve(2).
///
/// # Safety
///
/// As execve(2): NUL-terminated `path`, NULL-terminated `argv` and `envp`.
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    before();
    // SAFETY: same arguments.
    unsafe { next::execve(path, argv, envp) }
}

/// execv(3).
///
/// # Safety
///
/// As execv(3).
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    before();
    // SAFETY: same arguments.
    unsafe { next::execv(path, argv) }
}

/// execvp(3).
///
/// # Safety
///
/// As execvp(3).
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    before();
    // SAFETY: same arguments.
    unsafe { next::execvp(file, argv) }
}

/// execvpe(3).
///
/// # Safety
///
/// As execvpe(3).
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    before();
    // SAFETY: same arguments.
    unsafe { next::execvpe(file, argv, envp) }
}

/// fexecve(3).
///
/// # Safety
///
/// As fexecve(3).
#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    before();
    // SAFETY: same arguments.
    unsafe { next::fexecve(fd, argv, envp) }
}
