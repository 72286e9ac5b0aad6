//! What dup, dup2, dup3, fcntl(F_DUPFD), close and close_range mean for an accelerated fd, as
//! the kernel means them for a socket: several fds may refer to one socket, which closes with
//! the last of them; dup2/dup3 onto an open fd close it first; accel's own fds do not exist for
//! the program.
//!
//! The kernel fd under each accelerated one is duplicated and closed for real in every case;
//! these functions keep the table in step with it.

use std::os::fd::RawFd;
use std::sync::Arc;

use super::internal;
use super::table::Table;
use crate::errno::{Errno, Res};
use crate::sys::kernel;

/// What accelerated fds refer to: shared by dup'ed fds, released with the last one.
pub trait Shared {
    /// Another fd now refers to this.
    fn add_ref(&self);
    /// `fd`, one of the fds referring to this, is closing (the kernel fd is closed by the
    /// caller right after).
    fn release(self: Arc<Self>, fd: RawFd);
}

/// `new` is now a copy of `old` (after the kernel's dup): it refers to the same socket.
pub fn duplicated<T: Shared>(table: &Table<T>, old: RawFd, new: RawFd) {
    if let Some(v) = table.get(old) {
        v.add_ref();
        table.insert(new, v);
    }
}

/// The program closes `fd`. (The abi layer calls these for the program only: accel's own
/// calls go straight to the kernel.)
pub fn close<T: Shared>(table: &Table<T>, fd: RawFd) -> Res<()> {
    if internal::is_internal(fd) {
        // accel's own fd: the program never opened it (a closefrom-style loop, say).
        return Err(Errno::EBADF);
    }
    if let Some(v) = table.remove(fd) {
        v.release(fd);
    }
    kernel::close(fd)
}

pub fn dup<T: Shared>(table: &Table<T>, fd: RawFd) -> Res<RawFd> {
    let n = kernel::dup(fd)?;
    if table.contains(fd) {
        duplicated(table, fd, n);
    }
    Ok(n)
}

/// dup2 (`flags` `None`) or dup3 (`Some(flags)`).
pub fn dup_onto<T: Shared>(
    table: &Table<T>,
    fd: RawFd,
    newfd: RawFd,
    flags: Option<i32>,
) -> Res<RawFd> {
    let real = |fd, newfd| match flags {
        None => kernel::dup2(fd, newfd),
        Some(f) => kernel::dup3(fd, newfd, f),
    };
    // The kernel closes an open `newfd` first, and leaves it alone when `fd` is not open (or
    // is `newfd` itself): so do we.
    if fd != newfd && kernel::getfd(fd).is_ok() {
        if let Some(v) = table.remove(newfd) {
            v.release(newfd);
        }
    }
    let n = real(fd, newfd)?;
    if fd != newfd && table.contains(fd) {
        duplicated(table, fd, n);
    }
    Ok(n)
}

/// close_range(2): the program's fds in the range close (accelerated ones release their
/// sockets first), accel's own are passed over. With CLOSE_RANGE_CLOEXEC nothing closes now.
pub fn close_range<T: Shared>(table: &Table<T>, first: u32, last: u32, flags: i32) -> Res<()> {
    let in_range = |fd: RawFd| fd >= 0 && (fd as u32) >= first && (fd as u32) <= last;
    if flags & libc::CLOSE_RANGE_CLOEXEC as i32 == 0 {
        for (fd, _) in table.all() {
            if in_range(fd) {
                if let Some(v) = table.remove(fd) {
                    v.release(fd);
                }
            }
        }
    }
    // The kernel closes the gaps between accel's own fds.
    let mut start = first;
    let hidden = (first..=last.min(super::table::MAX_FD as u32 - 1))
        .filter(|&fd| internal::is_internal(fd as RawFd));
    for fd in hidden {
        if fd > start {
            kernel::close_range(start, fd - 1, flags)?;
        }
        start = match fd.checked_add(1) {
            Some(s) => s,
            None => return Ok(()),
        };
    }
    if start <= last {
        kernel::close_range(start, last, flags)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// Counts its references and records the fds released.
    #[derive(Default)]
    struct Probe {
        refs: AtomicUsize,
        released: Mutex<Vec<RawFd>>,
    }

    impl Shared for Probe {
        fn add_ref(&self) {
            self.refs.fetch_add(1, Ordering::Relaxed);
        }
        fn release(self: Arc<Self>, fd: RawFd) {
            self.refs.fetch_sub(1, Ordering::Relaxed);
            self.released.lock().unwrap().push(fd);
        }
    }

    fn kernel_fd() -> RawFd {
        // A kernel fd whose number the test owns (leaked from the OwnedFd; closed by the test).
        let fd = crate::sys::kernel::eventfd().expect("eventfd");
        let raw = fd.as_raw_fd();
        std::mem::forget(fd);
        raw
    }

    fn tracked(table: &Table<Probe>) -> (RawFd, Arc<Probe>) {
        let fd = kernel_fd();
        let p = Arc::new(Probe::default());
        p.refs.store(1, Ordering::Relaxed);
        table.insert(fd, p.clone());
        (fd, p)
    }

    #[test]
    fn a_dup_refers_to_the_same_socket_which_closes_with_the_last_fd() {
        static T: Table<Probe> = Table::new();
        let (fd, p) = tracked(&T);
        let d = dup(&T, fd).unwrap();
        assert!(Arc::ptr_eq(&T.get(d).unwrap(), &p));
        assert_eq!(p.refs.load(Ordering::Relaxed), 2);
        close(&T, fd).unwrap();
        assert_eq!(p.refs.load(Ordering::Relaxed), 1);
        assert!(T.get(fd).is_none() && T.get(d).is_some());
        close(&T, d).unwrap();
        assert_eq!(p.refs.load(Ordering::Relaxed), 0);
        assert_eq!(*p.released.lock().unwrap(), vec![fd, d]);
    }

    #[test]
    fn dup2_onto_an_accelerated_fd_releases_it_first() {
        static T: Table<Probe> = Table::new();
        let (a, pa) = tracked(&T);
        let (b, pb) = tracked(&T);
        assert_eq!(dup_onto(&T, a, b, None).unwrap(), b);
        assert_eq!(*pb.released.lock().unwrap(), vec![b]);
        assert!(Arc::ptr_eq(&T.get(b).unwrap(), &pa));
        assert_eq!(pa.refs.load(Ordering::Relaxed), 2);
        close(&T, a).unwrap();
        close(&T, b).unwrap();
    }

    #[test]
    fn dup2_from_a_closed_fd_leaves_the_target_alone() {
        static T: Table<Probe> = Table::new();
        let (b, pb) = tracked(&T);
        let closed = kernel_fd();
        kernel::close(closed).unwrap();
        assert_eq!(dup_onto(&T, closed, b, None), Err(Errno::EBADF));
        assert!(pb.released.lock().unwrap().is_empty());
        assert!(T.get(b).is_some());
        close(&T, b).unwrap();
    }

    #[test]
    fn dup3_onto_itself_is_einval_and_dup2_onto_itself_changes_nothing() {
        static T: Table<Probe> = Table::new();
        let (a, pa) = tracked(&T);
        assert_eq!(dup_onto(&T, a, a, Some(0)), Err(Errno::EINVAL));
        assert_eq!(dup_onto(&T, a, a, None), Ok(a));
        assert_eq!(pa.refs.load(Ordering::Relaxed), 1);
        assert!(pa.released.lock().unwrap().is_empty());
        close(&T, a).unwrap();
    }

    #[test]
    fn accels_own_fds_do_not_exist_for_the_program() {
        static T: Table<Probe> = Table::new();
        let own = internal::InternalFd::new(crate::sys::kernel::eventfd().unwrap());
        assert_eq!(close(&T, own.raw()), Err(Errno::EBADF));
        // Still open: accel's own close works.
        assert!(kernel::getfd(own.raw()).is_ok());
    }

    #[test]
    fn close_range_releases_accelerated_fds_and_passes_over_accels_own() {
        static T: Table<Probe> = Table::new();
        // Three consecutive numbers the test owns: dup them above 900 where nothing else is.
        let base = 900 + (std::process::id() % 50) as RawFd * 2;
        let (a, pa) = tracked(&T);
        let a2 = kernel::dup_cloexec_above(a, base).unwrap();
        T.insert(a2, T.remove(a).unwrap());
        kernel::close(a).unwrap();
        let own = kernel::dup_cloexec_above(a2, a2 + 1).unwrap();
        internal::mark(own);
        let plain = kernel::dup_cloexec_above(a2, own + 1).unwrap();
        close_range(&T, a2 as u32, plain as u32, 0).unwrap();
        assert_eq!(*pa.released.lock().unwrap(), vec![a2]);
        assert_eq!(kernel::getfd(a2), Err(Errno::EBADF));
        assert_eq!(kernel::getfd(plain), Err(Errno::EBADF));
        assert!(kernel::getfd(own).is_ok(), "accel's own fd stays open");
        internal::unmark(own);
        kernel::close(own).unwrap();
    }
}
