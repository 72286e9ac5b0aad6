//! The only place in libaccel with `unsafe` code: the FFI to libbpf (our XDP program and its
//! maps, and other BPF programs the tools load), AF_XDP sockets and their rings, shared memory
//! (memfd mappings, robust mutexes), the helper's Unix sockets and daemon spawn, and AF_PACKET
//! sockets.
//!
//! # Safety
//!
//! Each submodule wraps one kernel or C interface behind a safe API. Every `unsafe` block states
//! the invariant it relies on in a `// SAFETY:` line; the invariants are local to the submodule
//! (who owns an fd, which frames are in which ring) so a reader can check them in one file.
#![allow(unsafe_code)]

pub(crate) mod bpf;
pub(crate) mod packet;
pub(crate) mod repair;
pub(crate) mod ring;
pub(crate) mod shm;
pub(crate) mod unix;
pub(crate) mod xsk;
