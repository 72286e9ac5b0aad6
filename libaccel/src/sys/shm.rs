//! Memory shared between processes and with the kernel: memfd files, their mappings (the UMEM,
//! the control area, AF_XDP rings mapped from a socket), and the robust process-shared mutex
//! that guards the rings and the free-frame stack several processes share.
//!
//! # Safety
//!
//! A [`Region`] owns one `mmap` and unmaps it on drop; every view it hands out (atomics, byte
//! slices) is bounds- and alignment-checked against the mapping and borrows the region, so no view
//! outlives it. Memory that other processes and the kernel write is only read and written through
//! atomics, except frame bytes ([`Region::bytes`], [`Region::bytes_mut`]), which are `unsafe`:
//! the caller proves it owns the frame (see `xsk.rs`, where the frame-ownership invariant lives).
//!
//! A [`RobustMutex`] lives inside a region (which it keeps alive through an `Arc`); the pthread
//! calls get a pointer into that mapping, which stays valid while the region does.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A new memfd of `len` bytes (zeroed), close-on-exec, sealed against shrinking and growing: a
/// process it is passed to cannot truncate it under the others (whose mappings would fault).
pub(crate) fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    let cname = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: cname is a NUL-terminated string valid for the call.
    let raw = check(unsafe {
        libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
    })?;
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len_off =
        libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: plain syscalls on an fd we own.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), len_off) })?;
    // SAFETY: as above; F_ADD_SEALS takes an int argument.
    check(unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    })?;
    Ok(fd)
}

/// The size of the file behind `fd` (a memfd received from another process).
pub(crate) fn file_size(fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: stat is a plain C struct for which zero bytes are valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer for the call.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    usize::try_from(st.st_size).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))
}

/// One shared, read-write mapping of a file (a memfd, or an AF_XDP socket's ring).
#[derive(Debug)]
pub(crate) struct Region {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; every access goes through atomics or through the
// `unsafe` byte views whose callers prove exclusive ownership of the bytes.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    /// Maps `len` bytes of `fd` at `offset` (MAP_SHARED, populated now so the data path never
    /// faults a page in).
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize, offset: u64) -> io::Result<Region> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a fresh mapping chosen by the kernel (addr NULL); nothing aliases it yet.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EFAULT))?;
        let region = Region { ptr, len };
        // A forked child does not get the mapping: it joins with mappings of its own, and an
        // inherited mapping of an AF_XDP ring keeps the socket alive (a mapping holds its
        // file) after every fd is closed, and with it the queue: nginx's master, a daemon's
        // child of the process that first joined, would keep the queue busy for good.
        // SAFETY: advice on the whole mapping just made (owned by `region`, unmapped on drop
        // on any error path); MADV_DONTFORK changes no content.
        if unsafe { libc::madvise(p, len, libc::MADV_DONTFORK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(region)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The mapping's address in this process (what XDP_UMEM_REG registers).
    pub(crate) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn check(&self, off: usize, size: usize, align: usize) -> Option<*mut u8> {
        let end = off.checked_add(size)?;
        if end > self.len || !(self.ptr.as_ptr() as usize + off).is_multiple_of(align) {
            return None;
        }
        // SAFETY: off + size <= len, so the pointer stays inside the mapping.
        Some(unsafe { self.ptr.as_ptr().add(off) })
    }

    /// The u32 at `off`, as an atomic; `None` if out of bounds or misaligned.
    pub(crate) fn u32_at(&self, off: usize) -> Option<&AtomicU32> {
        let p = self.check(off, 4, 4)?;
        // SAFETY: p is in bounds and 4-aligned (checked); AtomicU32 has u32's layout and any bit
        // pattern is valid; the reference borrows self, so the mapping outlives it.
        Some(unsafe { &*p.cast::<AtomicU32>() })
    }

    /// The u64 at `off`, as an atomic; `None` if out of bounds or misaligned.
    pub(crate) fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        let p = self.check(off, 8, 8)?;
        // SAFETY: as in u32_at, for 8 bytes.
        Some(unsafe { &*p.cast::<AtomicU64>() })
    }

    /// `n` u32s from `off`, as atomics.
    pub(crate) fn u32s(&self, off: usize, n: usize) -> Option<&[AtomicU32]> {
        let p = self.check(off, n.checked_mul(4)?, 4)?;
        // SAFETY: n u32s from p are in bounds and aligned (checked); see u32_at.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<AtomicU32>(), n) })
    }

    /// `n` u64s from `off`, as atomics.
    pub(crate) fn u64s(&self, off: usize, n: usize) -> Option<&[AtomicU64]> {
        let p = self.check(off, n.checked_mul(8)?, 8)?;
        // SAFETY: n u64s from p are in bounds and aligned (checked); see u64_at.
        Some(unsafe { std::slice::from_raw_parts(p.cast::<AtomicU64>(), n) })
    }

    /// The bytes `off..off + len`; `None` if out of bounds.
    ///
    /// # Safety
    /// Nobody (another thread, process, or the kernel) may write these bytes while the slice
    /// lives: the caller owns them (a received frame it holds).
    pub(crate) unsafe fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        let p = self.check(off, len, 1)?;
        // SAFETY: in bounds (checked); exclusivity is the caller's promise.
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }

    /// The bytes `off..off + len`, writable; `None` if out of bounds.
    ///
    /// # Safety
    /// Nobody else may read or write these bytes while the slice lives, and no other view of
    /// them may exist in this process: the caller owns them (a TX frame it holds).
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes_mut(&self, off: usize, len: usize) -> Option<&mut [u8]> {
        let p = self.check(off, len, 1)?;
        // SAFETY: in bounds (checked); exclusivity is the caller's promise.
        Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly the mapping made in `map`; every view borrows self, so
        // none is alive now (RobustMutex holds an Arc<Region>, so it is gone too).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// Size of the space reserved for a [`RobustMutex`] (glibc's pthread_mutex_t is 40 bytes on
/// 64-bit Linux; the rest keeps what follows on its own cache line).
pub(crate) const MUTEX_SPACE: usize = 64;
const _: () = assert!(std::mem::size_of::<libc::pthread_mutex_t>() <= MUTEX_SPACE);

/// How a lock was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The previous owner unlocked it.
    Clean,
    /// The previous owner died holding it (EOWNERDEAD): the data it guards may be half
    /// changed; repair it before unlocking (the guard marks the mutex consistent on drop).
    OwnerDied,
}

/// A robust, process-shared, error-checking pthread mutex in shared memory. When its owner dies
/// (any thread exit, SIGKILL included), the kernel marks it and the next `lock` returns
/// [`Locked::OwnerDied`] instead of hanging. Relocking by the owning thread fails (EDEADLK)
/// instead of deadlocking.
#[derive(Debug)]
pub(crate) struct RobustMutex {
    ptr: NonNull<libc::pthread_mutex_t>,
    _region: Arc<Region>,
}

// SAFETY: a process-shared pthread mutex is meant to be used from any thread (and process).
unsafe impl Send for RobustMutex {}
// SAFETY: as above; every method takes &self and goes through pthread calls.
unsafe impl Sync for RobustMutex {}

fn errno_of(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(r))
    }
}

impl RobustMutex {
    fn place(region: &Arc<Region>, off: usize) -> io::Result<NonNull<libc::pthread_mutex_t>> {
        let p = region
            .check(off, std::mem::size_of::<libc::pthread_mutex_t>(), 8)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        NonNull::new(p.cast()).ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }

    /// Initialises a mutex at `off` of `region`. Nobody may use that memory meanwhile (the
    /// helper does this before handing the region to anyone).
    pub(crate) fn init(region: &Arc<Region>, off: usize) -> io::Result<RobustMutex> {
        let ptr = Self::place(region, off)?;
        // SAFETY: attr is initialised by pthread_mutexattr_init before any other use and
        // destroyed after; ptr points into the live mapping, at memory nobody else uses yet.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            errno_of(libc::pthread_mutexattr_init(&mut attr))?;
            let r = (|| {
                errno_of(libc::pthread_mutexattr_setpshared(
                    &mut attr,
                    libc::PTHREAD_PROCESS_SHARED,
                ))?;
                errno_of(libc::pthread_mutexattr_setrobust(
                    &mut attr,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))?;
                errno_of(libc::pthread_mutexattr_settype(
                    &mut attr,
                    libc::PTHREAD_MUTEX_ERRORCHECK,
                ))?;
                errno_of(libc::pthread_mutex_init(ptr.as_ptr(), &attr))
            })();
            libc::pthread_mutexattr_destroy(&mut attr);
            r?;
        }
        Ok(RobustMutex {
            ptr,
            _region: Arc::clone(region),
        })
    }

    /// The mutex another process initialised at `off` of `region`.
    pub(crate) fn attach(region: &Arc<Region>, off: usize) -> io::Result<RobustMutex> {
        Ok(RobustMutex {
            ptr: Self::place(region, off)?,
            _region: Arc::clone(region),
        })
    }

    fn taken(&self, r: libc::c_int) -> io::Result<MutexGuard<'_>> {
        match r {
            0 => Ok(MutexGuard {
                m: self,
                how: Locked::Clean,
            }),
            libc::EOWNERDEAD => Ok(MutexGuard {
                m: self,
                how: Locked::OwnerDied,
            }),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Locks if that is possible now (EBUSY otherwise; EDEADLK if this thread holds it;
    /// ENOTRECOVERABLE if an earlier owner death was never repaired).
    pub(crate) fn try_lock(&self) -> io::Result<MutexGuard<'_>> {
        // SAFETY: ptr points at an initialised process-shared mutex in the live mapping.
        let r = unsafe { libc::pthread_mutex_trylock(self.ptr.as_ptr()) };
        self.taken(r)
    }

    /// Locks, waiting at most `timeout` (ETIMEDOUT then): a process stopped while holding the
    /// lock (SIGSTOP, a debugger) must not stop the others for good. A zero `timeout` only
    /// tries, with no system call when the lock is taken.
    pub(crate) fn lock_within(&self, timeout: Duration) -> io::Result<MutexGuard<'_>> {
        match self.try_lock() {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            other => return other,
        }
        if timeout.is_zero() {
            return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
        }
        // pthread_mutex_timedlock measures against CLOCK_REALTIME.
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
        let mut nsec = now.tv_nsec + i64::from(timeout.subsec_nanos());
        let mut sec = now.tv_sec + timeout.as_secs() as i64;
        if nsec >= 1_000_000_000 {
            sec += 1;
            nsec -= 1_000_000_000;
        }
        let until = libc::timespec {
            tv_sec: sec as libc::time_t,
            tv_nsec: nsec as _,
        };
        // SAFETY: as in lock; `until` lives across the call.
        let r = unsafe { libc::pthread_mutex_timedlock(self.ptr.as_ptr(), &until) };
        self.taken(r)
    }
}

/// A held [`RobustMutex`]; unlocks on drop (marking it consistent first if the previous owner
/// died: the caller repairs what it guards before dropping the guard).
#[derive(Debug)]
pub(crate) struct MutexGuard<'a> {
    m: &'a RobustMutex,
    how: Locked,
}

impl MutexGuard<'_> {
    pub(crate) fn how(&self) -> Locked {
        self.how
    }
}

impl Drop for MutexGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: this thread holds the mutex (the guard exists only after a successful lock);
        // marking it consistent after an owner death is what makes it usable again, and the
        // guard's owner repaired the data before dropping it.
        unsafe {
            if self.how == Locked::OwnerDied {
                libc::pthread_mutex_consistent(self.m.ptr.as_ptr());
            }
            libc::pthread_mutex_unlock(self.m.ptr.as_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

    fn region(len: usize) -> (OwnedFd, Arc<Region>) {
        let fd = memfd("accel-test", len).expect("memfd");
        let r = Region::map(fd.as_fd(), len, 0).expect("map");
        (fd, Arc::new(r))
    }

    #[test]
    fn views_are_bounds_and_alignment_checked() {
        let (_fd, r) = region(4096);
        assert!(r.u32_at(4092).is_some());
        assert!(r.u32_at(4093).is_none(), "misaligned");
        assert!(r.u32_at(4096).is_none(), "past the end");
        assert!(r.u64_at(4088).is_some());
        assert!(r.u64_at(4092).is_none());
        assert!(r.u32s(0, 1024).is_some());
        assert!(r.u32s(4, 1024).is_none());
        assert!(r.u64s(0, usize::MAX).is_none(), "overflow");
        // SAFETY: nothing else uses this test mapping.
        assert!(unsafe { r.bytes(4000, 97) }.is_none());
    }

    #[test]
    fn two_mappings_of_one_memfd_share_memory() {
        let (fd, a) = region(8192);
        let b = Region::map(fd.as_fd(), 8192, 0).unwrap();
        a.u64_at(4096).unwrap().store(0xfeed, Ordering::Release);
        assert_eq!(b.u64_at(4096).unwrap().load(Ordering::Acquire), 0xfeed);
        assert_eq!(file_size(fd.as_fd()).unwrap(), 8192);
    }

    #[test]
    fn a_memfd_cannot_be_shrunk_by_whoever_receives_it() {
        let (fd, _r) = region(4096);
        // SAFETY: plain syscall on our fd.
        let r = unsafe { libc::ftruncate(fd.as_raw_fd(), 0) };
        assert_eq!(r, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn relocking_fails_instead_of_deadlocking() {
        let (_fd, r) = region(4096);
        let m = RobustMutex::init(&r, 0).unwrap();
        let g = m.lock_within(Duration::from_secs(5)).unwrap();
        assert_eq!(g.how(), Locked::Clean);
        assert_eq!(
            m.try_lock().unwrap_err().raw_os_error(),
            Some(libc::EDEADLK)
        );
        drop(g);
        assert_eq!(m.try_lock().unwrap().how(), Locked::Clean);
    }

    #[test]
    fn a_thread_that_dies_holding_the_lock_does_not_hang_the_next() {
        let (_fd, r) = region(4096);
        let m = Arc::new(RobustMutex::init(&r, 64).unwrap());
        let m2 = Arc::clone(&m);
        std::thread::spawn(move || {
            std::mem::forget(m2.lock_within(Duration::from_secs(5)).unwrap());
        })
        .join()
        .unwrap();
        let g = m
            .lock_within(Duration::from_secs(5))
            .expect("lock after owner death");
        assert_eq!(g.how(), Locked::OwnerDied);
        drop(g); // marks it consistent
        assert_eq!(
            m.lock_within(Duration::from_secs(5)).unwrap().how(),
            Locked::Clean
        );
    }

    #[test]
    fn a_process_killed_holding_the_lock_does_not_hang_the_next() {
        let (fd, r) = region(4096);
        let m = RobustMutex::init(&r, 0).unwrap();
        let flag = r.u32_at(128).unwrap();
        // SAFETY: the child only locks the shared mutex, stores to shared memory and kills
        // itself; it never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            // A process of its own that maps the memfd again, as a client would.
            let mine = Arc::new(Region::map(fd.as_fd(), 4096, 0).unwrap());
            let cm = RobustMutex::attach(&mine, 0).unwrap();
            std::mem::forget(cm.lock_within(Duration::from_secs(5)).unwrap());
            mine.u32_at(128).unwrap().store(1, Ordering::Release);
            // SAFETY: kills this (child) process only.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            unreachable!();
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFSIGNALED(status), "child status {status:#x}");
        assert_eq!(flag.load(Ordering::Acquire), 1, "child held the lock");
        let g = m
            .lock_within(Duration::from_secs(5))
            .expect("lock after the owner was killed");
        assert_eq!(g.how(), Locked::OwnerDied);
        drop(g);
        assert_eq!(
            m.lock_within(Duration::from_secs(5)).unwrap().how(),
            Locked::Clean
        );
    }

    #[test]
    fn lock_within_times_out_while_another_thread_holds_it() {
        let (_fd, r) = region(4096);
        let m = Arc::new(RobustMutex::init(&r, 0).unwrap());
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let m2 = Arc::clone(&m);
        let t = std::thread::spawn(move || {
            let _g = m2.lock_within(Duration::from_secs(5)).unwrap();
            held_tx.send(()).unwrap();
            let _ = done_rx.recv();
        });
        held_rx.recv().unwrap();
        let e = m.lock_within(Duration::from_millis(20)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
        let e = m.lock_within(Duration::ZERO).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT), "zero: only tries");
        done_tx.send(()).unwrap();
        t.join().unwrap();
        assert_eq!(
            m.lock_within(Duration::from_secs(5)).unwrap().how(),
            Locked::Clean
        );
    }
}
