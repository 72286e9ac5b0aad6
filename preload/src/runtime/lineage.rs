//! Which process an object belongs to: a generation counted up in every forked child, so an
//! object made by an earlier generation (an interface, an endpoint, a thread's eventfd) is
//! known to be an ancestor's copy.

use std::sync::atomic::{AtomicU64, Ordering};

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// This process's generation (0 in the process accel-run started; a forked child's is higher).
#[inline]
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// A forked child begins (its fork handler calls this first).
pub(super) fn next() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}
