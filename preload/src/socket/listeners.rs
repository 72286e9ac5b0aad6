//! Which processes take a listener's new connections.
//!
//! Processes that share a listener (a forked child inherited it, or each bound its own with
//! SO_REUSEPORT) share its flow: the XDP filter spreads new connections among the processes
//! that serve it, and each connection stays with the process its SYN went to. Only a process
//! that accepts should get connections, since accel's listen queue is per process (the
//! kernel's is one queue that every holder accepts from):
//!
//! - `listen()` serves the flow at once (a program that listens and accepts, the common case).
//! - A process that forks stops serving the listeners it has not accepted on nor waited on yet:
//!   nginx's master, a pre-fork server's parent, a daemon's first process keep the port but
//!   leave the connections to their children.
//! - A process serves a listener again (a child, the first time) when it accepts on it or
//!   waits for it to be readable (poll, select, epoll).
//!
//! Connections that reached a process's listen queue before it stopped serving stay there, for
//! its next accept; SYNs that arrive while no process serves go to the kernel listener, which
//! every accelerated listener keeps, so they are served, through the kernel.

use std::sync::atomic::Ordering;

use super::{Endpoint, State, SOCKETS};

/// The listener `ep` is accepted on or waited on: its process takes a share of its
/// connections from now on.
#[inline]
pub fn in_use(ep: &Endpoint) {
    ep.used.store(true, Ordering::Relaxed);
    if ep.serving.load(Ordering::Acquire) {
        return;
    }
    serve(ep, true);
}

/// Joins (`serve`) or leaves the slot set of every flow of the listener `ep`.
fn serve(ep: &Endpoint, on: bool) {
    let flows = match &*ep.state() {
        State::Listener { flows, .. } => flows.clone(),
        _ => return,
    };
    if ep.serving.swap(on, Ordering::AcqRel) == on {
        return; // another thread did it
    }
    for (nic, flow) in flows {
        if let Err(e) = nic.lock().engine.serve_shared_flow(&flow, on) {
            tracing::warn!(error = %e, serve = on, "changing a listener's share of its connections");
        }
    }
}

/// In a parent, right after fork(): listeners it has not used stop taking connections (see
/// the module header).
pub fn after_fork_in_parent() {
    for (_, ep) in SOCKETS.all() {
        if ep.serving.load(Ordering::Acquire)
            && !ep.used.load(Ordering::Relaxed)
            && !ep.from_another_process()
        {
            serve(&ep, false);
        }
    }
}
