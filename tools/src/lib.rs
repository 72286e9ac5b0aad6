//! Shared code of accel's tools: the throwaway two-namespace topology ([`topology`]) and the
//! kernel-side echo clients ([`peer`]) that the demo, the tests and later accel-bench use.

pub mod check;
pub mod echo;
pub mod faults;
pub mod memory;
pub mod peer;
pub mod soak;
pub use libaccel::stats;
pub mod bench;
pub mod topology;
