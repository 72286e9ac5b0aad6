//! Which fds are accelerated, and their endpoints.
//!
//! Every accelerated socket is backed by a real kernel socket with the same fd number (it holds
//! the port and serves the kernel path), so fd numbers never collide and dup/fork/exec keep
//! working. The check every interposed call makes first — "is this fd ours?" — must cost next to
//! nothing for kernel fds: one relaxed atomic load from a bitmap indexed by fd. Only fds whose
//! bit is set take the map's lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::ops::Endpoint;

/// fds at or above this are never accelerated (the bitmap would be too large); such sockets
/// stay on the kernel.
pub const MAX_FD: usize = 1 << 20;

struct Table {
    bits: [AtomicU64; MAX_FD / 64],
    map: RwLock<BTreeMap<i32, Arc<Endpoint>>>,
}

/// Zero-initialised at load time (no allocation, usable from the first interposed call).
static TABLE: Table = Table {
    bits: [const { AtomicU64::new(0) }; MAX_FD / 64],
    map: RwLock::new(BTreeMap::new()),
};

fn table() -> &'static Table {
    &TABLE
}

fn slot(fd: i32) -> Option<(usize, u64)> {
    let fd = usize::try_from(fd).ok().filter(|&f| f < MAX_FD)?;
    Some((fd / 64, 1u64 << (fd % 64)))
}

/// Fast check: whether `fd` may be accelerated (false for every kernel fd).
#[inline]
pub fn is_ours(fd: i32) -> bool {
    match slot(fd) {
        Some((word, bit)) => table().bits[word].load(Ordering::Relaxed) & bit != 0,
        None => false,
    }
}

/// The endpoint behind `fd`, if it is accelerated.
#[inline]
pub fn get(fd: i32) -> Option<Arc<Endpoint>> {
    if !is_ours(fd) {
        return None;
    }
    table().map.read().ok()?.get(&fd).cloned()
}

/// Makes `fd` refer to `ep` (a new socket, or a dup of an accelerated fd). Returns false when
/// the fd is too large to track (the caller leaves it on the kernel).
pub fn insert(fd: i32, ep: Arc<Endpoint>) -> bool {
    let Some((word, bit)) = slot(fd) else {
        return false;
    };
    let t = table();
    if let Ok(mut map) = t.map.write() {
        map.insert(fd, ep);
        t.bits[word].fetch_or(bit, Ordering::Release);
        true
    } else {
        false
    }
}

/// Forgets `fd` (closed, or decided to stay on the kernel). Returns its endpoint.
pub fn remove(fd: i32) -> Option<Arc<Endpoint>> {
    let (word, bit) = slot(fd)?;
    let t = table();
    let mut map = t.map.write().ok()?;
    t.bits[word].fetch_and(!bit, Ordering::Release);
    map.remove(&fd)
}

/// Every accelerated fd and its endpoint (for stats and fork handling).
pub fn all() -> Vec<(i32, Arc<Endpoint>)> {
    table()
        .map
        .read()
        .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
        .unwrap_or_default()
}

/// fds accel opened for itself (AF_XDP and netlink sockets, BPF objects, eventfds): the
/// program never opened them, so to the program they do not exist (close() says EBADF, and
/// close_range() passes over them).
static INTERNAL: [AtomicU64; MAX_FD / 64] = [const { AtomicU64::new(0) }; MAX_FD / 64];

pub fn mark_internal(fd: i32) {
    if let Some((word, bit)) = slot(fd) {
        INTERNAL[word].fetch_or(bit, Ordering::Release);
    }
}

/// The number is free again (accel closed it): the program may get it next.
pub fn unmark_internal(fd: i32) {
    if let Some((word, bit)) = slot(fd) {
        INTERNAL[word].fetch_and(!bit, Ordering::Release);
    }
}

/// An fd of accel's own: marked while open, unmarked before it closes.
pub struct InternalFd(std::os::fd::OwnedFd);

impl InternalFd {
    pub fn new(fd: std::os::fd::OwnedFd) -> InternalFd {
        use std::os::fd::AsRawFd;
        mark_internal(fd.as_raw_fd());
        InternalFd(fd)
    }

    pub fn raw(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }
}

impl Drop for InternalFd {
    fn drop(&mut self) {
        unmark_internal(self.raw());
    }
}

#[inline]
pub fn is_internal(fd: i32) -> bool {
    match slot(fd) {
        Some((word, bit)) => INTERNAL[word].load(Ordering::Relaxed) & bit != 0,
        None => false,
    }
}

/// The fds open in this process now (from /proc/self/fd).
pub fn open_fds() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}
