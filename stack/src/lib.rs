//! accel's userspace TCP/UDP stack (being written).
pub mod link;
