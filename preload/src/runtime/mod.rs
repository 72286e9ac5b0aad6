//! The process's accelerated interfaces and how threads share them.
//!
//! - [`nic`]: one interface: an engine (stack + AF_XDP queues + flows + mirror) behind a lock.
//! - [`wait`]: the one wait primitive every blocking call uses (spin, then sleep with no lost
//!   wake-up).
//! - [`progress`]: the thread that runs timers and takes frames while the program does not.
//! - [`signals`], [`stats`], start-up ([`start`]), exit and fork handling.
//!
//! Locking and wake-up rules:
//! - Each interface has one mutex around its engine. Whoever polls (a program thread in a call,
//!   or the progress thread) does it under that lock and, when the poll moved anything,
//!   signals the eventfd of every registered sleeper.
//! - A sleeper registers its eventfd first and checks its condition after, so a wake-up cannot
//!   fall between the two.
//! - A spinning thread makes way for a thread blocked on the lock (the mutex does not hand
//!   over by itself).
//! - While the program polls an interface, the progress thread stays off it; a thread going to
//!   sleep kicks the progress thread back on.
//! - No lock is taken in a signal handler path: the handler trampoline only bumps
//!   thread-local counters.

#[cfg(not(test))]
mod attach;
pub mod exit;
pub mod family;
mod kick;
pub mod lineage;
pub mod nic;
pub mod process;
pub mod progress;
pub mod signals;
mod start;
pub mod stats;
pub mod wait;

use std::net::Ipv4Addr;
use std::sync::Arc;

pub use nic::{Nic, NicInner};

use crate::config::Config;

/// The accelerated interfaces of this process.
pub struct Runtime {
    pub config: Config,
    pub nics: Vec<Arc<Nic>>,
    /// The process that started it (a vfork child runs in its parent's memory, and sees it).
    pub pid: u32,
    /// The socket layer's hooks (none in the unit tests' runtimes).
    pub hooks: Option<Hooks>,
}

/// What the runtime asks of the socket layer above it (it does not know what a socket is).
#[derive(Clone, Copy)]
pub struct Hooks {
    /// Lists the process's sockets for accel-stat.
    pub rows: stats::Rows,
    /// Hands the connection with this serial to its kernel socket (a child asked); whether it
    /// did.
    pub handoff: fn(u64) -> bool,
    /// At exit, before the stacks stop: hands over what living children share.
    pub at_exit: fn(),
    /// In the parent, right after fork().
    pub forked: fn(),
}

pub use lineage::generation;
pub use process::{current, get_or_start};

impl Runtime {
    pub fn new(config: Config, nics: Vec<Arc<Nic>>) -> Runtime {
        Runtime {
            config,
            nics,
            pid: std::process::id(),
            hooks: None,
        }
    }

    /// The interface that owns local address `ip` (`None` for addresses accel does not serve).
    pub fn nic_for_local(&self, ip: Ipv4Addr) -> Option<&Arc<Nic>> {
        self.nics.iter().find(|n| n.addr == ip)
    }

    /// The interfaces a wildcard or specific local address covers.
    pub fn nics_for_local(&self, ip: Ipv4Addr) -> Vec<Arc<Nic>> {
        if ip.is_unspecified() {
            self.nics.clone()
        } else {
            self.nic_for_local(ip).cloned().into_iter().collect()
        }
    }

    /// The interface a packet to `dst` leaves through, if accel serves it (on-link or routed
    /// through that interface; loopback, our own addresses and unknown destinations stay on the
    /// kernel).
    pub fn nic_for_remote(&self, dst: Ipv4Addr) -> Option<&Arc<Nic>> {
        if dst.is_unspecified() || dst.is_multicast() || dst.is_broadcast() {
            return None;
        }
        if self.nics.iter().any(|n| n.addr == dst) {
            return None; // our own address: the kernel's loopback path
        }
        self.nics.iter().find(|n| n.reaches(dst))
    }

    /// Counters of every interface, one line each, for ACCEL_STATS=1.
    pub fn stats_lines(&self) -> Vec<String> {
        stats::lines(&self.nics)
    }
}
