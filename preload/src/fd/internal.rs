//! fds accel opened for itself (AF_XDP and netlink sockets, BPF objects, eventfds, copies of
//! kernel sockets that hold a closed connection's port): the program never opened them, so to
//! the program they do not exist (close() says EBADF, close_range() passes over them).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use super::table::{slot, MAX_FD};

static INTERNAL: [AtomicU64; MAX_FD / 64] = [const { AtomicU64::new(0) }; MAX_FD / 64];

/// Marks an fd accel owns elsewhere (libaccel's sockets and BPF objects, which close
/// themselves): hidden from the program until [`unmark`].
pub fn mark(fd: RawFd) {
    if let Some((word, bit)) = slot(fd) {
        INTERNAL[word].fetch_or(bit, Ordering::Release);
    }
}

/// The number is free again (accel closed it): the program may get it next.
pub fn unmark(fd: RawFd) {
    if let Some((word, bit)) = slot(fd) {
        INTERNAL[word].fetch_and(!bit, Ordering::Release);
    }
}

#[inline]
pub fn is_internal(fd: RawFd) -> bool {
    match slot(fd) {
        Some((word, bit)) => INTERNAL[word].load(Ordering::Relaxed) & bit != 0,
        None => false,
    }
}

/// An fd of accel's own: hidden from the program while open, closed (and unhidden) on drop.
#[derive(Debug)]
pub struct InternalFd(OwnedFd);

impl InternalFd {
    pub fn new(fd: OwnedFd) -> InternalFd {
        mark(fd.as_raw_fd());
        InternalFd(fd)
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Drop for InternalFd {
    fn drop(&mut self) {
        // Unhidden first: the number is the program's again once the OwnedFd closes it.
        unmark(self.raw());
    }
}

/// Hidden fds a forked child keeps (the copy of the user's stderr accel writes its stats to).
static KEPT: [std::sync::atomic::AtomicI32; 4] =
    [const { std::sync::atomic::AtomicI32::new(-1) }; 4];

/// Keeps `fd` (hidden) in forked children too; false when there is no room (it is not kept).
pub fn keep_across_fork(fd: RawFd) -> bool {
    KEPT.iter().any(|k| {
        k.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    })
}

/// In a child right after fork(): closes the copies of every fd accel's parent had hidden
/// (its AF_XDP sockets, BPF objects, eventfds: the parent's, not the child's) but those in `keep`, and
/// unhides the numbers. Async-signal-safe: a walk of the bitmap and close(2).
pub fn close_inherited(keep: &[RawFd]) {
    for (word, bits) in INTERNAL.iter().enumerate() {
        let mut b = bits.load(Ordering::Relaxed);
        while b != 0 {
            let bit = b.trailing_zeros() as usize;
            b &= b - 1;
            let fd = (word * 64 + bit) as RawFd;
            let kept = KEPT.iter().any(|k| k.load(Ordering::Relaxed) == fd);
            if !kept && !keep.contains(&fd) {
                let _ = crate::sys::kernel::close(fd);
                unmark(fd);
            }
        }
    }
}

/// The fds open in this process now (from /proc/self/fd).
pub fn open_fds() -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_fd_is_hidden_while_open() {
        let fd = crate::sys::kernel::eventfd().expect("eventfd");
        let raw = fd.as_raw_fd();
        let owned = InternalFd::new(fd);
        assert!(is_internal(raw));
        drop(owned);
        assert!(!is_internal(raw));
    }
}
