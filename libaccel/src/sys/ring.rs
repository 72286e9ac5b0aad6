//! The memory of one AF_XDP ring (fill, completion, RX or TX), or of a ring laid out the same
//! way in test memory: a producer index, a consumer index, a flags word, and a power-of-two
//! array of entries. Entries are u64 addresses (fill, completion) or `struct xdp_desc` (RX, TX:
//! a u64 address, then a u32 length and u32 options, read and written as two u64 words).
//!
//! # Safety
//!
//! [`RingMem::new`] checks every offset against its [`Region`] (bounds and alignment) once, and
//! keeps the region alive through an `Arc`; the accessors then turn the stored pointers into
//! references that borrow `self`, so they never dangle. All ring memory is read and written
//! through atomics (the kernel and other processes write it concurrently).

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use super::shm::Region;

/// Where a ring's parts are in its mapping (`struct xdp_ring_offset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RingOffsets {
    pub(crate) producer: u64,
    pub(crate) consumer: u64,
    pub(crate) desc: u64,
    pub(crate) flags: u64,
}

impl RingOffsets {
    /// How many bytes a ring of `size` entries of `words` u64s each occupies.
    pub(crate) fn map_len(&self, size: u32, words: u32) -> usize {
        self.desc as usize + size as usize * words as usize * 8
    }
}

/// Whether ring entries are u64 addresses or `struct xdp_desc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    Addr,
    Desc,
}

impl Entry {
    pub(crate) fn words(self) -> u32 {
        match self {
            Entry::Addr => 1,
            Entry::Desc => 2,
        }
    }
}

/// One ring's memory. Cloning shares it (both clones see the same ring).
#[derive(Debug, Clone)]
pub(crate) struct RingMem {
    /// Keeps the mapping the pointers point into alive.
    _region: Arc<Region>,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<AtomicU64>,
    mask: u32,
    words: u32,
}

// SAFETY: the pointers point into `region` (kept alive by the Arc) and are only used to make
// references to atomics, which any thread may use.
unsafe impl Send for RingMem {}
// SAFETY: as above.
unsafe impl Sync for RingMem {}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl RingMem {
    /// The ring of `size` entries (a power of two) described by `off` in `region`.
    pub(crate) fn new(
        region: Arc<Region>,
        off: RingOffsets,
        size: u32,
        entry: Entry,
    ) -> io::Result<RingMem> {
        if !size.is_power_of_two() {
            return Err(einval());
        }
        let words = entry.words();
        let at32 = |o: u64| -> io::Result<NonNull<AtomicU32>> {
            let r = region
                .u32_at(usize::try_from(o).map_err(|_| einval())?)
                .ok_or_else(einval)?;
            Ok(NonNull::from(r))
        };
        let producer = at32(off.producer)?;
        let consumer = at32(off.consumer)?;
        let flags = at32(off.flags)?;
        let n = size as usize * words as usize;
        let entries = region
            .u64s(usize::try_from(off.desc).map_err(|_| einval())?, n)
            .ok_or_else(einval)?;
        let entries = NonNull::from(&entries[0]);
        Ok(RingMem {
            producer,
            consumer,
            flags,
            entries,
            mask: size - 1,
            words,
            _region: region,
        })
    }

    pub(crate) fn size(&self) -> u32 {
        self.mask + 1
    }

    #[inline]
    pub(crate) fn producer(&self) -> &AtomicU32 {
        // SAFETY: checked in `new` to lie in the region, which self keeps alive.
        unsafe { self.producer.as_ref() }
    }

    #[inline]
    pub(crate) fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as in producer.
        unsafe { self.consumer.as_ref() }
    }

    #[inline]
    pub(crate) fn flags(&self) -> &AtomicU32 {
        // SAFETY: as in producer.
        unsafe { self.flags.as_ref() }
    }

    /// Word `w` (0, or 1 for descriptors) of the entry at ring index `idx` (taken modulo the
    /// ring size).
    #[inline]
    pub(crate) fn word(&self, idx: u32, w: u32) -> &AtomicU64 {
        let i = (idx & self.mask) as usize * self.words as usize + (w % self.words) as usize;
        // SAFETY: i < size * words, the number of u64s checked in `new`; the region lives.
        unsafe { &*self.entries.as_ptr().add(i) }
    }
}
