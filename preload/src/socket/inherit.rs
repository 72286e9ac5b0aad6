//! Sockets a forked child inherited: the child's copy of an endpoint still names its parent's
//! interfaces (stacks, queues) which are not the child's to touch. Before the child's first
//! call on such a socket, it is adopted:
//!
//! - a listener listens again in the child's own stack, on the same address (the kernel
//!   listener, shared with the parent since fork, still holds the port);
//! - a UDP socket is bound again in the child's stack, on the same address;
//! - a connection stays where it is served (it is one connection, not two): the child uses
//!   its kernel socket, into which the parent hands the connection over (TCP repair);
//! - anything the child cannot serve goes to the kernel, as it would without accel.
//!
//! Adoption happens once per endpoint and process; closing an inherited socket in the child
//! releases nothing of the parent's.

use std::net::SocketAddrV4;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::Endpoint;
use super::{kernel_nonblocking, open_error, State, SOCKETS};
use crate::errno::Res;
use crate::runtime::Runtime;
use crate::sys::kernel;

/// Whether `st` names interfaces of another process (an ancestor's).
pub fn names_another_process(st: &State) -> bool {
    let mut other = false;
    st.each_nic(|n| other |= n.inherited());
    other
}

/// Makes an endpoint this process's own if it came from its parent (see the module header).
/// Returns false when it went to the kernel for good (the fd is no longer accelerated).
pub fn adopt(ep: &Arc<Endpoint>, fd: RawFd) -> bool {
    if !ep.from_another_process() {
        return true;
    }
    let mut st = ep.state();
    if !ep.from_another_process() {
        return true; // another thread adopted it meanwhile
    }
    ep.mark_adopted();
    if !names_another_process(&st) {
        return true; // fresh or bound: nothing of the parent's in it
    }
    // The parent's state is forgotten (its stack objects are the parent's, left alone).
    let old = std::mem::replace(&mut *st, State::Fresh);
    drop(st);
    let rt = super::runtime();
    let kept = match (old, rt) {
        (State::Listener { local, backlog, .. }, Some(rt)) => {
            relisten(rt, ep, local, backlog).is_ok()
        }
        (State::Udp { local, peer, .. }, Some(rt)) => rebind_udp(rt, ep, fd, local, peer).is_ok(),
        (State::Conn { .. }, _) => {
            // Served by the parent's stack: the parent hands it to the kernel socket they
            // share, and the child works on that.
            if let Err(e) = crate::runtime::family::ask_parent(ep.serial) {
                tracing::warn!(errno = e.0, "asking the parent for an inherited connection");
            }
            false
        }
        _ => false,
    };
    if !kept {
        to_kernel_for_good(ep, fd);
    }
    kept
}

/// The fd leaves accel: the kernel socket under it is the socket, in the program's blocking
/// mode.
fn to_kernel_for_good(ep: &Endpoint, fd: RawFd) {
    SOCKETS.remove(fd);
    if !ep.nonblocking() {
        if let Ok(fl) = kernel::getfl(fd) {
            let _ = kernel::setfl(fd, fl & !libc::O_NONBLOCK);
        }
    }
}

/// A listener of the parent's, listening again in this process's stacks.
fn relisten(rt: &Runtime, ep: &Endpoint, local: SocketAddrV4, backlog: usize) -> Res<()> {
    let nics = rt.nics_for_local(*local.ip());
    if nics.is_empty() {
        return Err(crate::errno::Errno::EINVAL);
    }
    super::setup::listen_in_stacks(ep, &nics, local, backlog).map_err(open_error)?;
    // This process has not used the listener yet (see `listeners`).
    ep.used.store(false, std::sync::atomic::Ordering::Relaxed);
    Ok(())
}

/// A UDP socket of the parent's, bound again in this process's stack.
fn rebind_udp(
    rt: &Runtime,
    ep: &Endpoint,
    fd: RawFd,
    local: SocketAddrV4,
    peer: Option<SocketAddrV4>,
) -> Res<()> {
    let nic = rt
        .nic_for_local(*local.ip())
        .cloned()
        .ok_or(crate::errno::Errno::EINVAL)?;
    super::setup::udp_open(ep, fd, &nic, local, peer)?;
    kernel_nonblocking(fd);
    Ok(())
}
