//! Readiness: poll(2)/select(2) over a mix of accelerated and kernel fds ([`poll`]), and epoll
//! ([`epoll`]), whose accelerated members are tracked here while kernel members stay in the
//! kernel's set.

pub mod epoll;
pub mod poll;

use std::os::fd::RawFd;

use crate::socket::{Endpoint, State};
use crate::sys::kernel;

/// poll(2) bits for an accelerated endpoint, from the stack's state as of its last poll (the
/// callers poll each interface once per round). `None` for a fresh socket (the kernel socket
/// answers). `kernel_side`: also look at the kernel socket of a listener or UDP socket (they
/// serve the kernel path too), unless the caller's kernel epoll set already reports it.
pub fn readiness(ep: &Endpoint, fd: RawFd, kernel_side: bool) -> Option<i16> {
    let st = ep.state();
    let mut bits: i16 = 0;
    match &*st {
        State::Fresh => return None,
        State::Bound { .. } => return Some(libc::POLLOUT | libc::POLLHUP),
        State::Listener { on, .. } => {
            for o in on {
                if o.nic.lock().stack().readiness(o.id).readable {
                    bits |= libc::POLLIN;
                }
            }
            drop(st);
            // Waiting on a listener is using it.
            crate::socket::listeners::in_use(ep);
            if kernel_side {
                bits |= kernel_pollin(fd);
            }
        }
        State::Conn { on, rd_shut, .. } => {
            let r = on.nic.lock().stack().readiness(on.id);
            if r.readable || *rd_shut {
                bits |= libc::POLLIN;
            }
            if r.writable {
                bits |= libc::POLLOUT;
            }
            if r.hangup {
                bits |= libc::POLLRDHUP | libc::POLLIN;
            }
            if r.error {
                bits |= libc::POLLERR | libc::POLLHUP;
            }
        }
        State::Udp { on, .. } => {
            let r = on.nic.lock().stack().readiness(on.id);
            if r.readable {
                bits |= libc::POLLIN;
            }
            if r.writable {
                bits |= libc::POLLOUT;
            }
            drop(st);
            if kernel_side {
                bits |= kernel_pollin(fd);
            }
        }
    }
    Some(bits)
}

fn kernel_pollin(fd: RawFd) -> i16 {
    let mut p = [libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }];
    match kernel::poll(&mut p, 0) {
        Ok(n) if n > 0 => p[0].revents & libc::POLLIN,
        _ => 0,
    }
}

/// Whether a socket in this state belongs in the kernel's epoll set or poll set too (fresh
/// sockets, and listeners and UDP sockets for their kernel path).
pub fn wants_kernel(st: &State) -> bool {
    matches!(
        st,
        State::Fresh | State::Listener { .. } | State::Udp { .. }
    )
}
