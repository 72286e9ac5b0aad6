//! The only place in libaccel with `unsafe` code: the FFI to libbpf (our XDP program and its
//! maps), to xsk-rs (AF_XDP rings and UMEM), and shared memory (memfd mappings, robust mutexes,
//! AF_XDP ring memory).
//!
//! # Safety
//!
//! Each submodule wraps one kernel or C interface behind a safe API. Every `unsafe` block states
//! the invariant it relies on in a `// SAFETY:` line; the invariants are local to the submodule
//! (who owns an fd, which frames are in which ring) so a reader can check them in one file.
#![allow(unsafe_code)]

pub(crate) mod bpf;
pub(crate) mod repair;
// Used by the shared queues (next change); until then only by their tests.
#[allow(dead_code)]
pub(crate) mod ring;
#[allow(dead_code)]
pub(crate) mod shm;
pub(crate) mod xsk;
