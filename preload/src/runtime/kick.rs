//! The progress thread's kick: an eventfd that makes it look again at what it watches (a
//! thread going to sleep while it left the queues to a polling program; a new child's channel).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fd::InternalFd;
use crate::sys::kernel;

/// The kick eventfd and the process generation that made it, packed (generation << 32 | fd):
/// a forked child's copy names its parent's eventfd, which the fork handler closed (and the
/// program may have reused the number since): the child makes its own. One atomic word, so
/// a child never finds it locked by a thread of its parent.
static KICK: AtomicU64 = AtomicU64::new(0);

fn pack(gen: u64, fd: RawFd) -> u64 {
    (gen & 0xffff_ffff) << 32 | (fd as u32 as u64) | 1 << 63
}

/// The kick eventfd of this process (made on first use).
pub fn fd() -> Option<RawFd> {
    let gen = super::lineage::generation();
    let cur = KICK.load(Ordering::Acquire);
    if cur & 1 << 63 != 0 && (cur >> 32) & 0x7fff_ffff == gen & 0x7fff_ffff {
        return Some(cur as u32 as RawFd);
    }
    let made = InternalFd::new(kernel::eventfd()?);
    let new = pack(gen & 0x7fff_ffff, made.raw());
    match KICK.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // Kept for the life of the process (its number lives in KICK).
            let fd = made.raw();
            std::mem::forget(made);
            Some(fd)
        }
        // Another thread made it meanwhile: ours closes on drop.
        Err(now) => Some(now as u32 as RawFd),
    }
}

/// Makes the progress thread look again now.
pub fn kick() {
    if let Some(k) = fd() {
        kernel::eventfd_signal(k);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_kick_fd_is_made_once_per_process() {
        let a = super::fd().expect("eventfd");
        assert_eq!(super::fd(), Some(a));
    }
}
