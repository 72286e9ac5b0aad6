//! The preload library: `accel-run PROGRAM` puts it in `LD_PRELOAD`, and the program's AF_INET
//! TCP and UDP sockets move onto accel's stack over AF_XDP, while everything else (Unix
//! sockets, pipes, loopback, other interfaces, anything the stack cannot serve) stays on the
//! kernel, unnoticed.
//!
//! - [`abi`]: the interposed C functions and the real ones behind them (the only unsafe code).
//! - [`fdtable`]: which fds are accelerated (one atomic load per call for kernel fds).
//! - [`ops`]: socket semantics of accelerated fds, with the kernel's errno values.
//! - [`runtime`]: one stack per accelerated interface, the progress thread, waiting.
//! - [`config`]: the `ACCEL_*` environment.

pub mod abi;
pub mod addr;
pub mod config;
pub mod errno;
pub mod fdtable;
pub mod ops;
pub mod runtime;
