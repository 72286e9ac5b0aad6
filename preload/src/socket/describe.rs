//! Rows for accel-stat: one per accelerated socket of the process.

use std::net::SocketAddrV4;
use std::os::fd::RawFd;

use super::{Endpoint, Proto, State, SOCKETS};

/// Every accelerated socket of the process, with the interface it is served on.
pub fn rows() -> Vec<(String, libaccel::stats::Socket)> {
    SOCKETS
        .all()
        .iter()
        .filter_map(|(fd, ep)| describe(*fd, ep))
        .collect()
}

/// One accelerated socket for accel-stat: its interface and the row describing it.
pub fn describe(fd: RawFd, ep: &Endpoint) -> Option<(String, libaccel::stats::Socket)> {
    let proto = match ep.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    let row =
        |state: String, local: SocketAddrV4, remote: Option<SocketAddrV4>, rq: usize, sq: usize| {
            libaccel::stats::Socket {
                fd,
                proto: proto.into(),
                state,
                local: local.to_string(),
                remote: remote.map(|r| r.to_string()),
                recv_queue: rq as u64,
                send_queue: sq as u64,
            }
        };
    let st = ep.state();
    if super::inherit::names_another_process(&st) {
        return None; // the parent's, not this process's
    }
    match &*st {
        State::Listener { on, local, .. } => Some((
            on.first()?.nic.name.clone(),
            row("LISTEN".into(), *local, None, 0, 0),
        )),
        State::Conn {
            on, local, remote, ..
        } => {
            let g = on.nic.lock();
            let state = g.stack().tcp_state(on.id).map_or("CLOSED".into(), |s| {
                format!("{s}").to_uppercase().replace('-', "_")
            });
            let rq = g.stack().tcp_recv_queue(on.id).unwrap_or(0);
            let sq = g.stack().tcp_send_queue(on.id).unwrap_or(0);
            Some((
                on.nic.name.clone(),
                row(state, *local, Some(*remote), rq, sq),
            ))
        }
        State::Udp {
            on, local, peer, ..
        } => Some((on.nic.name.clone(), row("UDP".into(), *local, *peer, 0, 0))),
        _ => None,
    }
}
