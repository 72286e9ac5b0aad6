//! Sharing an interface's queues between processes.
//!
//! [`ctl`]: the control area through which the processes on a queue agree on who holds which
//! frame (the queue's robust mutex, free-frame stack and per-slot counts); [`account`]: what a
//! departing process leaves and a census of every frame; [`proto`]: the messages between a
//! process and the helper that owns the queues.

// Used by the helper and the queues (next change); until then only by their tests.
#[allow(dead_code)]
pub(crate) mod account;
#[allow(dead_code)]
pub(crate) mod ctl;
#[allow(dead_code)]
pub mod proto;

pub use ctl::SLOTS;
