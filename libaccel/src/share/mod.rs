//! Sharing an interface's queues between processes.
//!
//! One helper per network namespace (`accel-helper`, [`helper`]) owns everything privileged
//! and shared: the XDP filter, each queue's UMEM (memfd) and its owner socket, the control
//! area ([`ctl`]: the queues' robust mutexes, free-frame stacks and per-slot counters). A
//! process joins through it ([`client::HelperConn`]) and gets a slot on the interface and,
//! per queue, its own AF_XDP socket bound to the shared UMEM, plus the fds to map the UMEM,
//! the control area and the flow map. From then on the data path is the process's own: its RX
//! and TX rings need no lock; the shared fill and completion rings and the free stack are taken
//! in batches under the queue's mutex. `crate::attach::Attachment` is the API over all this.
//!
//! When a process goes (exit, SIGKILL, exec), the helper takes its slot out of the XDP maps,
//! puts the frames left in its rings back, and counts what it held privately as leaked.

pub(crate) mod account;
pub(crate) mod client;
pub(crate) mod ctl;
pub mod helper;
pub mod proto;

pub use client::{helper_path, status, HelperConn, RequestError, HELPER_ENV};
pub use ctl::SLOTS;
pub use proto::{FlowOp, Sizes, Status};

/// The helper's abstract Unix socket address (`@accel-helper`): one per network namespace.
pub const HELPER_ADDRESS: &[u8] = b"accel-helper";
