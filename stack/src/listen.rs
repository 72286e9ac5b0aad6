//! Listen backlogs. smoltcp has no accept queue: a listening socket becomes the connection. So
//! each listener owns at most one idle listening smoltcp socket plus a queue of sockets that left
//! LISTEN (SYN-RECEIVED, then ESTABLISHED). When a SYN arrives and the idle socket is gone, a new
//! one is created only while fewer than `backlog` queued connections are established and fewer
//! than `backlog` are still in their handshake (see `has_room`); otherwise the SYN is dropped before
//! smoltcp sees it (smoltcp would answer it with an RST), as the kernel drops SYNs when the
//! backlog is full. Allocation happens per connection, never per packet.

use std::collections::VecDeque;

use core::net::SocketAddrV4;

use crate::sockets::{Handle as SocketHandle, Sockets};
use smoltcp::socket::tcp;
use smoltcp::wire::IpListenEndpoint;

use crate::budget::{self, Budget};
use crate::{endpoint_v4, Entry, Error, SocketId, Stack, MAX_BACKLOG};

pub(crate) struct Listener {
    pub local: SocketAddrV4,
    pub backlog: usize,
    /// The listening socket the next SYN lands on.
    pub idle: Option<SocketHandle>,
    /// Sockets that left LISTEN, in arrival order, not yet accepted.
    pub pending: VecDeque<SocketHandle>,
}

pub(crate) enum Admit {
    Ready,
    Full,
    /// The stack's socket memory has no room for another connection.
    NoMemory,
}

fn acceptable(socket: &tcp::Socket) -> bool {
    matches!(
        socket.state(),
        tcp::State::Established | tcp::State::CloseWait
    )
}

impl Listener {
    pub fn has_acceptable(&self, sockets: &Sockets) -> bool {
        self.pending
            .iter()
            .any(|h| acceptable(sockets.get::<tcp::Socket>(*h)))
    }

    /// Whether another SYN may come in. Like the kernel, the backlog bounds the connections
    /// established and not yet accepted, and, apart, the handshakes under way (the kernel's
    /// SYN queue, as long as the backlog, overflows into SYN cookies; here the SYN is dropped
    /// and retransmitted). Counting both against one backlog dropped SYNs of a burst of
    /// clients whose handshakes would complete within a round trip (nginx under 2,000 new
    /// connections at once).
    fn has_room(&self, sockets: &Sockets) -> bool {
        let established = self
            .pending
            .iter()
            .filter(|h| acceptable(sockets.get::<tcp::Socket>(**h)))
            .count();
        let handshaking = self.pending.len() - established;
        established < self.backlog && handshaking < self.backlog
    }

    pub fn into_handles(self) -> impl Iterator<Item = SocketHandle> {
        self.idle.into_iter().chain(self.pending)
    }

    /// Moves a woken idle socket to the queue; drops queued connections that were reset
    /// (a reset SYN-RECEIVED socket goes back to LISTEN: it becomes the idle one again).
    fn sweep(&mut self, sockets: &mut Sockets, mem: &mut Budget) {
        if let Some(h) = self.idle {
            if sockets.get::<tcp::Socket>(h).state() != tcp::State::Listen {
                self.pending.push_back(h);
                self.idle = None;
            }
        }
        let idle = &mut self.idle;
        self.pending.retain(|&h| {
            let socket = sockets.get::<tcp::Socket>(h);
            match socket.state() {
                tcp::State::Listen if idle.is_none() => {
                    // Reset in SYN-RECEIVED: listening again, without its 4-tuple.
                    sockets.clear_key(h);
                    *idle = Some(h);
                    false
                }
                tcp::State::Listen => {
                    budget::remove(sockets, h, mem);
                    false
                }
                tcp::State::Closed if socket.remote_endpoint().is_none() => {
                    budget::remove(sockets, h, mem);
                    false
                }
                tcp::State::SynReceived | tcp::State::Closed => true,
                _ => {
                    // Established (or later): it waits for accept without a timeout (its
                    // next poll, the timeout's timer gone, is worked out again).
                    let socket = sockets.get_mut::<tcp::Socket>(h);
                    if socket.timeout().is_some() {
                        socket.set_timeout(None);
                        sockets.queue(h);
                    }
                    true
                }
            }
        });
    }
}

impl Stack {
    /// Listens on `local` (address unspecified or ours) with room for `backlog` connections
    /// not yet accepted (clamped to 1..=[`MAX_BACKLOG`]).
    pub fn tcp_listen(&mut self, local: SocketAddrV4, backlog: usize) -> Result<SocketId, Error> {
        if local.port() == 0 {
            return Err(Error::InvalidState);
        }
        if !local.ip().is_unspecified() && *local.ip() != self.config.addr {
            return Err(Error::Unaddressable);
        }
        if self.listeners.contains_key(&local.port()) {
            return Err(Error::AddrInUse);
        }
        let id = self.insert(Entry::Listener(Listener {
            local,
            backlog: backlog.clamp(1, MAX_BACKLOG),
            idle: None,
            pending: VecDeque::new(),
        }));
        self.listeners.insert(local.port(), id.0);
        // Without room for it now, the idle socket is made when a SYN comes and room is there.
        let _ = self.ensure_idle(id.0);
        Ok(id)
    }

    /// The oldest queued connection that is established, with its peer's address.
    pub fn tcp_accept(&mut self, listener: SocketId) -> Result<(SocketId, SocketAddrV4), Error> {
        let l = match self.table.get_mut(&listener.0) {
            Some(Entry::Listener(l)) => l,
            Some(_) => return Err(Error::InvalidState),
            None => return Err(Error::InvalidSocket),
        };
        l.sweep(&mut self.sockets, &mut self.budget);
        let sockets = &self.sockets;
        let pos = l
            .pending
            .iter()
            .position(|h| acceptable(sockets.get::<tcp::Socket>(*h)))
            .ok_or(Error::WouldBlock)?;
        let Some(handle) = l.pending.remove(pos) else {
            return Err(Error::WouldBlock);
        };
        let socket = self.sockets.get::<tcp::Socket>(handle);
        let remote = socket.remote_endpoint().and_then(endpoint_v4);
        let Some(remote) = remote else {
            // Cannot happen for an established socket; do not leak it.
            budget::remove(&mut self.sockets, handle, &mut self.budget);
            return Err(Error::WouldBlock);
        };
        let id = self.insert_conn(handle, false);
        self.counters.tcp_accepted += 1;
        let _ = self.ensure_idle(listener.0);
        Ok((id, remote))
    }

    pub(crate) fn prepare_listener(&mut self, listener: u64) -> Admit {
        let Some(Entry::Listener(l)) = self.table.get_mut(&listener) else {
            return Admit::Ready;
        };
        l.sweep(&mut self.sockets, &mut self.budget);
        // A retransmitted SYN for a connection already queued never comes here: ingress finds
        // that connection by its 4-tuple first (and drops the SYN as a duplicate).
        match self.ensure_idle(listener) {
            Ok(true) => Admit::Ready,
            Ok(false) => Admit::Full,
            Err(_) => Admit::NoMemory,
        }
    }

    pub(crate) fn after_syn(&mut self, listener: u64) {
        if let Some(Entry::Listener(l)) = self.table.get_mut(&listener) {
            l.sweep(&mut self.sockets, &mut self.budget);
        }
    }

    /// Makes sure the listener has an idle listening socket if its backlog allows; returns
    /// whether it has one, or `NoBufferSpace` when the stack's socket memory has no room.
    fn ensure_idle(&mut self, listener: u64) -> Result<bool, Error> {
        let local = match self.table.get(&listener) {
            Some(Entry::Listener(l)) if l.idle.is_some() => return Ok(true),
            Some(Entry::Listener(l)) if l.has_room(&self.sockets) => l.local,
            _ => return Ok(false),
        };
        let mut socket = self.new_tcp_socket()?;
        // A SYN-RECEIVED connection whose peer went silent is dropped, like the kernel does
        // after its SYN-ACK retries (tcp_synack_retries = 5: ~63 s); cleared once established.
        socket.set_timeout(Some(crate::SYN_RECEIVED_TIMEOUT));
        let endpoint = IpListenEndpoint {
            addr: (!local.ip().is_unspecified()).then(|| (*local.ip()).into()),
            port: local.port(),
        };
        if socket.listen(endpoint).is_err() {
            self.budget.sub(budget::tcp_bytes(&socket));
            return Ok(false);
        }
        let handle = self.sockets.add(socket);
        // Until accepted, its progress is the listener's readiness.
        self.sockets.set_owner(handle, listener);
        if let Some(Entry::Listener(l)) = self.table.get_mut(&listener) {
            l.idle = Some(handle);
        }
        Ok(true)
    }
}
