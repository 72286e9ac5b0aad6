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
