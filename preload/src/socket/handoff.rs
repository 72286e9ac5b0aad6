//! Handing an accelerated TCP connection to its kernel socket, for good: when a forked child
//! uses a connection its parent serves, when the parent closes one that a living child
//! inherited, and before exec. The peer never notices (TCP repair: see libaccel::repair).
//!
//! The steps, under the endpoint's lock: the filter drops the connection's packets (the peer
//! retransmits them); the stack takes in what already arrived, then a snapshot of the
//! connection (sequence numbers, windows, options, queued bytes both ways); the kernel socket
//! becomes that connection; the filter passes the connection's packets to the kernel; the stack
//! forgets the connection without a FIN or a RST; every fd of the endpoint becomes a plain
//! kernel fd, in the program's blocking mode.

use std::os::fd::RawFd;
use std::sync::Arc;

use super::{Endpoint, State, SOCKETS};
use crate::errno::{Errno, Res};
use crate::sys::kernel;

/// A child asked for the connection with this serial (the progress thread runs this).
pub fn serve_child(serial: u64) -> bool {
    let found = SOCKETS
        .all()
        .into_iter()
        .find(|(_, ep)| ep.serial == serial);
    match found {
        Some((fd, ep)) => hand_over(&ep, fd).is_ok(),
        None => false,
    }
}

/// Whether closing `ep` must hand its connection over instead (a child that may hold it is
/// alive).
pub fn shared_with_a_child(ep: &Endpoint) -> bool {
    crate::runtime::family::child_alive_since(ep.forks_before)
}

/// Hands the connection of `ep` (whose fd `fd` is one of) to the kernel socket under it.
pub fn hand_over(ep: &Arc<Endpoint>, fd: RawFd) -> Res<()> {
    let mut st = ep.state();
    let State::Conn {
        on,
        flow,
        local,
        remote,
        accepted,
        ..
    } = &*st
    else {
        return Err(Errno::EINVAL);
    };
    let (on, flow, local, remote, accepted) = (on.clone(), *flow, *local, *remote, *accepted);
    let mut g = on.nic.lock();
    let exact = libaccel::xdp::FlowKey::connected(libaccel::xdp::Proto::Tcp, local, remote);
    g.engine
        .steer(&exact, stack::engine::Steer::Drop)
        .map_err(|_| Errno::EBUSY)?;
    on.nic.poll(&mut g);
    let snap = match g.stack().tcp_snapshot(on.id) {
        Some(s) => s,
        None => {
            // Not in a state the kernel can take (a close under way): it stays here.
            let _ = g.engine.steer(&exact, stack::engine::Steer::Stack);
            return Err(Errno::EINVAL);
        }
    };
    let snapshot = libaccel::repair::Snapshot {
        local,
        remote,
        snd_una: snap.snd_una,
        send_queue: snap.send_queue,
        sent: snap.sent,
        rcv_nxt: snap.rcv_nxt,
        recv_queue: snap.recv_queue,
        mss: snap.mss,
        wscale: snap
            .wscale
            .map(|(snd, rcv)| libaccel::repair::WindowScale { snd, rcv }),
        sack_permitted: snap.sack_permitted,
        timestamp: None,
        // The window was last updated by the segment at RCV.NXT, and advertised from there.
        window: libaccel::repair::Window {
            snd_wl1: snap.rcv_nxt,
            snd_wnd: snap.snd_wnd,
            max_window: snap.snd_wnd,
            rcv_wnd: snap.rcv_wnd,
            rcv_wup: snap.rcv_nxt,
        },
    };
    // `fd` stays open meanwhile: the caller holds the endpoint, whose fd it is.
    let restored = kernel::with_fd(fd, |k| libaccel::repair::restore(k, &snapshot, !accepted));
    if let Err(e) = restored {
        tracing::warn!(error = %e, "handing a connection to the kernel");
        let _ = g.engine.steer(&exact, stack::engine::Steer::Stack);
        return Err(Errno::from(e));
    }
    let _ = g.engine.steer(&exact, stack::engine::Steer::Kernel);
    g.stack_mut().tcp_forget(on.id);
    if !accepted {
        // Its own flow is the exact one, which passes to the kernel now.
    } else {
        g.engine.release_shared_flow(flow, stack::Duration::ZERO);
    }
    drop(g);
    *st = State::Fresh;
    drop(st);
    ep.restated();
    // Every fd of the endpoint is the kernel's now.
    for (f, e) in SOCKETS.all() {
        if Arc::ptr_eq(&e, ep) {
            SOCKETS.remove(f);
            if !ep.nonblocking() {
                if let Ok(fl) = kernel::getfl(f) {
                    let _ = kernel::setfl(f, fl & !libc::O_NONBLOCK);
                }
            }
        }
    }
    Ok(())
}

/// Before exec: connections whose fd survives it (no FD_CLOEXEC) go to their kernel sockets,
/// which the new program gets (it knows nothing of accel's stacks). Inherited ones are handed
/// over by the parent that serves them.
pub fn before_exec() {
    for (fd, ep) in SOCKETS.all() {
        if kernel::getfd(fd).is_ok_and(|f| f & libc::FD_CLOEXEC != 0) {
            continue;
        }
        if !matches!(*ep.state(), State::Conn { .. }) {
            continue;
        }
        if ep.from_another_process() {
            super::inherit::adopt(&ep, fd);
        } else if let Err(e) = hand_over(&ep, fd) {
            tracing::warn!(
                errno = e.0,
                "handing a connection to the kernel before exec"
            );
        }
    }
}

/// At exit: connections a living child inherited go to the kernel sockets they share.
pub fn at_exit() {
    for (fd, ep) in SOCKETS.all() {
        if matches!(*ep.state(), State::Conn { .. })
            && !ep.from_another_process()
            && shared_with_a_child(&ep)
        {
            let _ = hand_over(&ep, fd);
        }
    }
}
