//! shutdown(2), and what closing the last fd of a socket does.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Endpoint, State};
use crate::errno::{Errno, Res};
use crate::fd::InternalFd;
use crate::sys::kernel;

/// How long the flow of a closed connection stays, so its FIN handshake and TIME-WAIT still
/// receive their packets (the stack reaps orphans after 60 s).
pub const CLOSED_FLOW_GRACE: stack::Duration = stack::Duration::from_secs(70);

pub fn shutdown(ep: &Endpoint, fd: RawFd, how: i32) -> Res<()> {
    if !(0..=2).contains(&how) {
        return Err(Errno::EINVAL);
    }
    let mut st = ep.state();
    match &mut *st {
        State::Conn {
            on,
            rd_shut,
            wr_shut,
            ..
        } => {
            if how == libc::SHUT_RD || how == libc::SHUT_RDWR {
                *rd_shut = true;
                ep.restated();
            }
            if how == libc::SHUT_WR || how == libc::SHUT_RDWR {
                *wr_shut = true;
                let mut g = on.nic.lock();
                on.nic.poll(&mut g);
                g.stack_mut()
                    .tcp_shutdown_write(on.id)
                    .map_err(Errno::from)?;
                on.nic.poll(&mut g);
            }
            Ok(())
        }
        State::Fresh => {
            drop(st);
            kernel::shutdown(fd, how)
        }
        _ => Err(Errno::ENOTCONN),
    }
}

/// `fd`, one of the fds of `ep`, is closing: with the last one, the stack sockets go (the
/// caller closes the kernel fd right after).
pub fn release(ep: Arc<Endpoint>, fd: RawFd) {
    if ep.refs.fetch_sub(1, Ordering::AcqRel) > 1 {
        return;
    }
    let abort = ep.linger_abort.load(Ordering::Relaxed);
    let st = std::mem::replace(&mut *ep.state(), State::Fresh);
    if super::inherit::names_another_process(&st) {
        // A forked child closing what it inherited: the parent's socket lives on.
        return;
    }
    match st {
        State::Listener { on, flows, .. } => {
            // The listener lets go of its flow; connections it accepted still hold it.
            for (o, (_, flow)) in on.iter().zip(flows) {
                let mut g = o.nic.lock();
                o.nic.poll(&mut g);
                g.engine.tcp_unlisten(o.id, flow);
            }
        }
        State::Conn { .. } if super::handoff::shared_with_a_child(&ep) => {
            // A child that inherited it lives and may use it: the connection goes on in the
            // kernel socket they share (the kernel closes it with the last fd, as always).
            *ep.state() = st;
            ep.restated();
            ep.refs.fetch_add(1, Ordering::AcqRel);
            if let Err(e) = super::handoff::hand_over(&ep, fd) {
                tracing::warn!(
                    errno = e.0,
                    "handing a connection a child shares to the kernel"
                );
            }
        }
        State::Conn {
            on, flow, accepted, ..
        } => {
            // No poll before: the FIN (after any queued data) leaves in this call's only TX
            // kick. A peer that reads a response and closes at once (wrk, curl) otherwise
            // often closes first and keeps the TIME-WAIT the server should keep.
            let mut g = on.nic.lock();
            g.engine
                .tcp_close(on.id, flow, accepted, abort, CLOSED_FLOW_GRACE);
            on.nic.poll(&mut g);
            if accepted {
                // It rode its listener's flow and port: nothing of its own to hold (and a
                // server closing thousands of connections a second must not keep thousands
                // of fds).
                return;
            }
            // The kernel socket held this connection's port; the stack still uses it for the
            // close handshake and TIME-WAIT, so keep it held (a copy of the fd, accel's own)
            // until the flow goes, or the kernel would hand the port to the next connect.
            if let Ok(held) = kernel::dup_owned_above(fd, 500) {
                g.engine.hold(InternalFd::new(held), CLOSED_FLOW_GRACE);
            }
        }
        State::Udp { on, flow, .. } => {
            let mut g = on.nic.lock();
            g.engine.udp_close(on.id, flow);
            on.nic.poll(&mut g);
        }
        State::Fresh | State::Bound { .. } => {}
    }
}
