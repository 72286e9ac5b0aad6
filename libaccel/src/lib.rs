//! libaccel: everything in accel that touches the kernel.
//!
//! - [`queue`]: this process's AF_XDP sockets on (interface, queue), over UMEMs shared with
//!   other processes, as the stack's link.
//! - [`share`]: sharing an interface's queues between processes: the accel-helper that owns
//!   them, the protocol to join it, the control area that accounts for every frame.
//! - [`xdp`]: our XDP flow filter (C source in `bpf/`), shared by every accelerating process on an
//!   interface, and the map API that says which flows go to which queue.
//! - [`control`]: a mirror of the kernel's view of an interface (index, MAC, MTU, addresses,
//!   routes, neighbours) kept current through netlink.
//! - [`ports`]: kernel sockets that hold the ports accelerated sockets use.
//! - [`repair`]: handing an established TCP connection to a kernel socket (TCP repair mode).
//! - [`bpf`]: loading and attaching other BPF programs (the tests' fault injector) with the same
//!   loader.
//! - [`desc`]: checks on AF_XDP ring descriptors before their bytes are read.
//! - [`kick`]: when a queue kicks the kernel to transmit (at once, batched, or all at once).
//! - [`raw`]: raw Ethernet frames on an interface (AF_PACKET), for tests and tools.
//! - [`stats`]: the snapshot an accelerated process publishes for `accel-stat` (JSON schema).
//!
//! All unsafe code and FFI lives in [`sys`] (private); the rest is safe Rust over it.

mod sys;

pub mod attach;
pub mod bpf;
pub mod control;
pub mod desc;
pub mod kick;
pub mod ports;
pub mod queue;
pub mod raw;
pub mod repair;
mod ring;
pub mod share;
pub mod stats;
pub mod xdp;
