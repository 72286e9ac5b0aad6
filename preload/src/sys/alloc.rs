//! The preload's memory allocator: large blocks come straight from the kernel as anonymous
//! mappings, everything else from the C library's malloc.
//!
//! Why: smoltcp allocates a socket's buffers whole when the socket is made (64 KiB each way by
//! default), and most of a buffer is never touched by an idle connection. A fresh anonymous
//! mapping is zero and costs no memory until a page is first written, so a connection costs
//! the pages its data actually passed through, and a closed connection's buffers go back to
//! the system at once. glibc's malloc gives no such promise: past its first frees it serves
//! blocks of this size from its heap, zeroes them page by page on `calloc` (every page of
//! every buffer resident at once), and keeps freed ones. The program's own malloc is not
//! touched: this is the allocator of accel's Rust code only.
//!
//! Whether a block is mapped depends on its layout alone (size at least [`MAP_AT`], alignment
//! at most a page), so `dealloc` and `realloc`, which get the layout back, know where it came
//! from.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of this many bytes or more are mapped.
pub const MAP_AT: usize = 32 * 1024;

/// mmap's granule and alignment on every Linux architecture (larger pages are multiples).
const PAGE: usize = 4096;

pub struct Allocator;

fn mapped(l: &Layout) -> bool {
    l.size() >= MAP_AT && l.align() <= PAGE
}

fn round(size: usize) -> usize {
    size.div_ceil(PAGE) * PAGE
}

/// A fresh zeroed mapping of at least `size` bytes, or null.
fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing: no pointer
    // is passed in, and no existing memory is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            round(size),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

// SAFETY: every block handed out is either System's (passed back to System with the same
// layout) or a mapping of at least the layout's size, page-aligned (which satisfies any
// alignment up to a page), unmapped only by `dealloc` or moved by `realloc` with the size it
// was made with; `mapped` decides which from the layout alone, so each block goes back to
// where it came from.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if mapped(&l) {
            map(l.size())
        } else {
            // SAFETY: the caller's layout contract is System's.
            unsafe { System.alloc(l) }
        }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if mapped(&l) {
            // A fresh mapping is zero: nothing to write.
            map(l.size())
        } else {
            // SAFETY: as in `alloc`.
            unsafe { System.alloc_zeroed(l) }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if mapped(&l) {
            // SAFETY: `p` is a mapping of `round(l.size())` bytes made by `map` or `mremap`
            // for this layout, and the caller gives up every reference into it.
            unsafe { libc::munmap(p.cast(), round(l.size())) };
        } else {
            // SAFETY: `p` came from System with `l`.
            unsafe { System.dealloc(p, l) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded to `l.align()`, does not overflow.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, l.align()) };
        match (mapped(&l), mapped(&new)) {
            // SAFETY: `p` came from System with `l`.
            (false, false) => unsafe { System.realloc(p, l, new_size) },
            (true, true) => {
                // SAFETY: `p` is a mapping of `round(l.size())` bytes; the kernel moves or
                // grows it in place and keeps its contents; the old address is not used
                // after a success, and stays valid after a failure.
                let q = unsafe {
                    libc::mremap(
                        p.cast(),
                        round(l.size()),
                        round(new_size),
                        libc::MREMAP_MAYMOVE,
                    )
                };
                if q == libc::MAP_FAILED {
                    std::ptr::null_mut()
                } else {
                    q.cast()
                }
            }
            _ => {
                // SAFETY: `new` has a non-zero size (the caller's contract).
                let q = unsafe { self.alloc(new) };
                if !q.is_null() {
                    // SAFETY: both blocks are live, distinct, and at least this long.
                    unsafe {
                        std::ptr::copy_nonoverlapping(p, q, l.size().min(new_size));
                        self.dealloc(p, l);
                    }
                }
                q
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_zeroed_kept_and_moved_intact() {
        let a = Allocator;
        let l = Layout::from_size_align(MAP_AT + 100, 8).unwrap();
        // SAFETY: non-zero layouts; each block is freed once with the layout it has.
        unsafe {
            let p = a.alloc_zeroed(l);
            assert!(!p.is_null());
            assert!(std::slice::from_raw_parts(p, l.size())
                .iter()
                .all(|&b| b == 0));
            for i in 0..l.size() {
                *p.add(i) = i as u8;
            }
            // Grows as a mapping, shrinks back to malloc, grows again: the bytes follow.
            let p = a.realloc(p, l, 4 * MAP_AT);
            assert!(!p.is_null());
            let l2 = Layout::from_size_align(4 * MAP_AT, 8).unwrap();
            let p = a.realloc(p, l2, 1000);
            let l3 = Layout::from_size_align(1000, 8).unwrap();
            for i in 0..1000 {
                assert_eq!(*p.add(i), i as u8);
            }
            let p = a.realloc(p, l3, MAP_AT);
            let l4 = Layout::from_size_align(MAP_AT, 8).unwrap();
            for i in 0..1000 {
                assert_eq!(*p.add(i), i as u8);
            }
            a.dealloc(p, l4);
        }
    }

    #[test]
    fn small_or_over_aligned_blocks_stay_with_malloc() {
        assert!(!mapped(&Layout::from_size_align(MAP_AT - 1, 8).unwrap()));
        assert!(!mapped(&Layout::from_size_align(MAP_AT, 2 * PAGE).unwrap()));
        assert!(mapped(&Layout::from_size_align(MAP_AT, PAGE).unwrap()));
    }
}
