//! Which fds are accelerated, and what each refers to.
//!
//! Every accelerated socket is backed by a real kernel socket with the same fd number (it holds
//! the port and serves the kernel path), so fd numbers never collide and dup/fork/exec keep
//! working. The check every interposed call makes first — "is this fd ours?" — must cost next to
//! nothing for kernel fds: one relaxed atomic load from a bitmap indexed by fd. Only fds whose
//! bit is set take the map's lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// fds at or above this are never accelerated (the bitmap would be too large); such sockets
/// stay on the kernel.
pub const MAX_FD: usize = 1 << 20;

/// Word and bit of `fd` in a bitmap of [`MAX_FD`] bits.
pub(crate) fn slot(fd: i32) -> Option<(usize, u64)> {
    let fd = usize::try_from(fd).ok().filter(|&f| f < MAX_FD)?;
    Some((fd / 64, 1u64 << (fd % 64)))
}

/// fd -> `T`, with the bitmap in front. Const-constructible: a static table is usable from
/// the first interposed call, before any allocation.
pub struct Table<T> {
    bits: [AtomicU64; MAX_FD / 64],
    map: RwLock<BTreeMap<i32, Arc<T>>>,
}

impl<T> Table<T> {
    #[allow(clippy::new_without_default)] // const, for statics
    pub const fn new() -> Table<T> {
        Table {
            bits: [const { AtomicU64::new(0) }; MAX_FD / 64],
            map: RwLock::new(BTreeMap::new()),
        }
    }

    /// Fast check: whether `fd` may be in the table (false for every kernel fd).
    #[inline]
    pub fn contains(&self, fd: i32) -> bool {
        match slot(fd) {
            Some((word, bit)) => self.bits[word].load(Ordering::Relaxed) & bit != 0,
            None => false,
        }
    }

    /// What `fd` refers to, if it is in the table.
    #[inline]
    pub fn get(&self, fd: i32) -> Option<Arc<T>> {
        if !self.contains(fd) {
            return None;
        }
        self.map.read().ok()?.get(&fd).cloned()
    }

    /// Makes `fd` refer to `v`. Returns false when the fd is too large to track (the caller
    /// leaves it on the kernel).
    pub fn insert(&self, fd: i32, v: Arc<T>) -> bool {
        let Some((word, bit)) = slot(fd) else {
            return false;
        };
        if let Ok(mut map) = self.map.write() {
            map.insert(fd, v);
            self.bits[word].fetch_or(bit, Ordering::Release);
            true
        } else {
            false
        }
    }

    /// Forgets `fd` (closed, or decided to stay on the kernel). Returns what it referred to.
    pub fn remove(&self, fd: i32) -> Option<Arc<T>> {
        let (word, bit) = slot(fd)?;
        let mut map = self.map.write().ok()?;
        self.bits[word].fetch_and(!bit, Ordering::Release);
        map.remove(&fd)
    }

    /// Every fd in the table and what it refers to.
    pub fn all(&self) -> Vec<(i32, Arc<T>)> {
        self.map
            .read()
            .map(|m| m.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_fd_is_in_the_table_from_insert_to_remove() {
        static T: Table<u32> = Table::new();
        assert!(!T.contains(7));
        assert!(T.insert(7, Arc::new(70)));
        assert!(T.contains(7) && !T.contains(6) && !T.contains(8));
        assert_eq!(T.get(7).as_deref(), Some(&70));
        assert_eq!(T.remove(7).as_deref(), Some(&70));
        assert!(!T.contains(7) && T.get(7).is_none());
    }

    #[test]
    fn fds_out_of_range_stay_on_the_kernel() {
        static T: Table<u32> = Table::new();
        assert!(!T.insert(-1, Arc::new(1)));
        assert!(!T.insert(MAX_FD as i32, Arc::new(1)));
        assert!(!T.contains(MAX_FD as i32));
    }
}
