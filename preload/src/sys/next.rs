//! The real libc functions, found with `dlsym(RTLD_NEXT)` on first use and cached.
//!
//! Each wrapper transmutes the resolved address to the C prototype of that very symbol (as
//! glibc declares it) and calls it with the caller's arguments; callers uphold that function's
//! own contract. An unresolvable symbol makes the call fail with ENOSYS.

use libc::{
    c_char, c_int, c_uint, c_ulong, c_void, iovec, mmsghdr, msghdr, off_t, size_t, sockaddr,
    socklen_t, ssize_t,
};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Finds the symbol and caches it in `slot` (out of line: it runs once per symbol).
#[cold]
#[inline(never)]
fn resolve(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    // SAFETY: `name` is a NUL-terminated symbol name (see the macro); dlsym has no other
    // precondition and returns NULL when the symbol is absent.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) as usize };
    if p == 0 {
        // SAFETY: __errno_location returns this thread's errno slot.
        unsafe { *libc::__errno_location() = libc::ENOSYS };
    } else {
        slot.store(p, Ordering::Relaxed);
    }
    p
}

macro_rules! real {
    ($( fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) -> $ret:ty; )*) => {
        $(
            #[doc = concat!("The real `", stringify!($name), "`.")]
            ///
            /// # Safety
            ///
            /// The libc function's own contract: every pointer argument valid for what that
            /// function reads or writes through it, for the duration of the call.
            #[inline]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                static PTR: AtomicUsize = AtomicUsize::new(0);
                let mut p = PTR.load(Ordering::Relaxed);
                if p == 0 {
                    p = resolve(&PTR, concat!(stringify!($name), "\0").as_bytes());
                    if p == 0 {
                        return -1 as $ret;
                    }
                }
                // SAFETY: `p` is the address of the libc symbol of this name, whose C
                // prototype is the one spelled here.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: the caller upholds the function's contract.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

real! {
    fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    fn socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int;
    fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fn shutdown(fd: c_int, how: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t;
    fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t;
    fn readv(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t;
    fn writev(fd: c_int, iov: *const iovec, n: c_int) -> ssize_t;
    fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t;
    fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;
    fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    fn recvmmsg(fd: c_int, msgs: *mut mmsghdr, n: c_uint, flags: c_int, timeout: *mut libc::timespec) -> c_int;
    fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t;
    fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t;
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, n: c_uint, flags: c_int) -> c_int;
    fn sendfile(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t;
    fn sendfile64(out_fd: c_int, in_fd: c_int, offset: *mut off_t, count: size_t) -> ssize_t;
    fn getsockopt(fd: c_int, level: c_int, name: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int;
    fn setsockopt(fd: c_int, level: c_int, name: c_int, val: *const c_void, len: socklen_t) -> c_int;
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int;
    fn dup(fd: c_int) -> c_int;
    fn dup2(fd: c_int, newfd: c_int) -> c_int;
    fn dup3(fd: c_int, newfd: c_int, flags: c_int) -> c_int;
    fn poll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int) -> c_int;
    fn ppoll(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: *const libc::timespec, mask: *const libc::sigset_t) -> c_int;
    fn select(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *mut libc::timeval) -> c_int;
    fn pselect(n: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, e: *mut libc::fd_set, timeout: *const libc::timespec, mask: *const libc::sigset_t) -> c_int;
    fn epoll_create(size: c_int) -> c_int;
    fn epoll_create1(flags: c_int) -> c_int;
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut libc::epoll_event) -> c_int;
    fn epoll_wait(epfd: c_int, evs: *mut libc::epoll_event, max: c_int, timeout: c_int) -> c_int;
    fn epoll_pwait(epfd: c_int, evs: *mut libc::epoll_event, max: c_int, timeout: c_int, mask: *const libc::sigset_t) -> c_int;
    fn epoll_pwait2(epfd: c_int, evs: *mut libc::epoll_event, max: c_int, timeout: *const libc::timespec, mask: *const libc::sigset_t) -> c_int;
    fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t;
    fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    fn __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t;
    fn __poll_chk(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: c_int, fdslen: size_t) -> c_int;
    fn __ppoll_chk(fds: *mut libc::pollfd, n: libc::nfds_t, timeout: *const libc::timespec, mask: *const libc::sigset_t, fdslen: size_t) -> c_int;
    fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t;
    fn sigaction(sig: c_int, act: *const libc::sigaction, old: *mut libc::sigaction) -> c_int;
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn execv(path: *const c_char, argv: *const *const c_char) -> c_int;
    fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int;
    fn execvpe(file: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
    fn fexecve(fd: c_int, argv: *const *const c_char, envp: *const *const c_char) -> c_int;
}

/// The real `_exit`; returns only if it cannot be found.
pub fn _exit(status: c_int) {
    static PTR: AtomicUsize = AtomicUsize::new(0);
    call_exit(&PTR, b"_exit\0", status)
}

/// The real `_Exit`; returns only if it cannot be found.
#[allow(non_snake_case)]
pub fn _Exit(status: c_int) {
    static PTR: AtomicUsize = AtomicUsize::new(0);
    call_exit(&PTR, b"_Exit\0", status)
}

fn call_exit(slot: &AtomicUsize, name: &'static [u8], status: c_int) {
    let mut p = slot.load(Ordering::Relaxed);
    if p == 0 {
        p = resolve(slot, name);
        if p == 0 {
            return;
        }
    }
    // SAFETY: `p` is the address of the libc symbol `name`, `void name(int)`.
    let f: unsafe extern "C" fn(c_int) = unsafe { std::mem::transmute(p) };
    // SAFETY: an integer argument; the function ends the process.
    unsafe { f(status) }
}
