//! The preload library: `accel-run PROGRAM` puts it in `LD_PRELOAD`, and the program's AF_INET
//! TCP and UDP sockets move onto accel's stack over AF_XDP, while everything else (Unix
//! sockets, pipes, loopback, other interfaces, anything the stack cannot serve) stays on the
//! kernel, unnoticed.
//!
//! Layers, each using only those listed before it (`tests/layers.rs` checks it):
//!
//! - [`errno`], [`addr`], [`config`]: errors as the kernel reports them, `sockaddr_in`, the
//!   `ACCEL_*` environment.
//! - [`sys`]: the real libc functions behind the interposers, and safe wrappers of them.
//! - [`fd`]: which fds are accelerated or accel's own, and dup/close semantics.
//! - [`runtime`]: the accelerated interfaces (an engine each), the one wait primitive, the
//!   progress thread, signals, stats, start-up, exit and fork.
//! - [`socket`]: socket semantics of accelerated fds, with the kernel's errno values.
//! - [`ready`]: poll, select and epoll over accelerated and kernel fds.
//! - [`abi`]: the interposed C functions.
//!
//! Unsafe code lives in `sys` and `abi` only.

pub mod abi;
pub mod addr;
pub mod config;
pub mod errno;
pub mod fd;
pub mod ready;
pub mod runtime;
pub mod socket;
pub mod sys;

/// accel's Rust code takes large blocks (socket buffers) as fresh mappings: a connection costs
/// the pages its data touched, not its whole buffers (see `sys::alloc`).
#[global_allocator]
static ALLOCATOR: sys::alloc::Allocator = sys::alloc::Allocator;
