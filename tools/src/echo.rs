//! The echo service behind `accel-echo`: TCP echo and UDP echo on one port, over a [`Stack`].
//!
//! It owns no I/O: [`EchoService::serve`] is called after every stack poll and moves bytes
//! between the stack's sockets. Bytes read but not yet accepted by the send buffer wait in a
//! per-connection backlog, so a full send buffer never loses data.

use std::collections::HashMap;
use std::net::SocketAddrV4;

use stack::{Error, SocketId, Stack};

/// Bytes a connection has read and not yet written back.
struct Conn {
    peer: SocketAddrV4,
    backlog: Vec<u8>,
    sent: usize,
    eof: bool,
}

/// Counters the echo service keeps (the stack keeps its own).
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoCounters {
    pub connections_accepted: u64,
    pub connections_closed: u64,
    pub connections_reset: u64,
    pub tcp_bytes_echoed: u64,
    pub udp_datagrams_echoed: u64,
    pub udp_send_failed: u64,
}

pub struct EchoService {
    listener: SocketId,
    udp: SocketId,
    conns: HashMap<SocketId, Conn>,
    buf: Vec<u8>,
    /// A datagram read but not yet sent (the UDP send buffer was full).
    udp_pending: Option<(usize, SocketAddrV4)>,
    udp_buf: Vec<u8>,
    /// Peers of connections that ended since [`EchoService::take_closed`] last ran.
    closed: Vec<SocketAddrV4>,
    pub counters: EchoCounters,
}

impl EchoService {
    /// Listens (TCP, with `backlog`) and binds (UDP) on `local`.
    pub fn new(
        stack: &mut Stack,
        local: SocketAddrV4,
        backlog: usize,
    ) -> Result<EchoService, Error> {
        let listener = stack.tcp_listen(local, backlog)?;
        let udp = stack.udp_bind(local)?;
        Ok(EchoService {
            listener,
            udp,
            conns: HashMap::new(),
            buf: vec![0; 64 * 1024],
            udp_pending: None,
            udp_buf: vec![0; 65536],
            closed: Vec::new(),
            counters: EchoCounters::default(),
        })
    }

    pub fn open_connections(&self) -> usize {
        self.conns.len()
    }

    /// The peers of the connections that ended since the last call (their flows can go).
    pub fn take_closed(&mut self) -> Vec<SocketAddrV4> {
        std::mem::take(&mut self.closed)
    }

    /// Accepts what is pending, echoes what arrived, closes what the peer closed.
    /// Returns whether anything moved.
    pub fn serve(&mut self, stack: &mut Stack) -> bool {
        let mut busy = false;
        loop {
            match stack.tcp_accept(self.listener) {
                Ok((s, peer)) => {
                    self.counters.connections_accepted += 1;
                    self.conns.insert(
                        s,
                        Conn {
                            peer,
                            backlog: Vec::new(),
                            sent: 0,
                            eof: false,
                        },
                    );
                    busy = true;
                }
                Err(Error::WouldBlock) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    break;
                }
            }
        }
        let mut done = Vec::new();
        for (&s, conn) in self.conns.iter_mut() {
            match echo_tcp(stack, s, conn, &mut self.buf, &mut self.counters) {
                Ok(moved) => busy |= moved,
                Err(()) => {
                    done.push(s);
                    busy = true;
                }
            }
        }
        for s in done {
            if let Some(c) = self.conns.remove(&s) {
                self.closed.push(c.peer);
            }
        }
        busy |= self.echo_udp(stack);
        busy
    }

    fn echo_udp(&mut self, stack: &mut Stack) -> bool {
        let mut busy = false;
        loop {
            let (n, from) = match self.udp_pending.take() {
                Some(p) => p,
                None => match stack.udp_recv_from(self.udp, &mut self.udp_buf) {
                    Ok(p) => p,
                    Err(Error::WouldBlock) => return busy,
                    Err(e) => {
                        tracing::warn!(error = %e, "UDP receive failed");
                        return busy;
                    }
                },
            };
            busy = true;
            match stack.udp_send_to(self.udp, &self.udp_buf[..n], from) {
                Ok(_) => self.counters.udp_datagrams_echoed += 1,
                Err(Error::WouldBlock) | Err(Error::NoBufferSpace) => {
                    // Keep it and try again after the next poll drained the send buffer.
                    self.udp_pending = Some((n, from));
                    return busy;
                }
                Err(e) => {
                    self.counters.udp_send_failed += 1;
                    tracing::debug!(error = %e, %from, "UDP echo not sent");
                }
            }
        }
    }

    /// Stops serving: closes every connection, the listener and the UDP socket.
    pub fn close(self, stack: &mut Stack) {
        for (s, _) in self.conns {
            stack.close(s);
        }
        stack.close(self.listener);
        stack.close(self.udp);
    }
}

/// Moves one connection's bytes. `Err(())` when the connection is finished and was closed.
fn echo_tcp(
    stack: &mut Stack,
    s: SocketId,
    conn: &mut Conn,
    buf: &mut [u8],
    counters: &mut EchoCounters,
) -> Result<bool, ()> {
    let mut moved = false;
    loop {
        // Write back what is waiting first.
        while conn.sent < conn.backlog.len() {
            match stack.tcp_send(s, &conn.backlog[conn.sent..]) {
                Ok(0) | Err(Error::WouldBlock) => return Ok(moved),
                Ok(n) => {
                    conn.sent += n;
                    counters.tcp_bytes_echoed += n as u64;
                    moved = true;
                }
                Err(e) => return finish(stack, s, e, counters),
            }
        }
        conn.backlog.clear();
        conn.sent = 0;
        if conn.eof {
            // Everything echoed and the peer is done sending: close our side (FIN).
            stack.close(s);
            counters.connections_closed += 1;
            return Err(());
        }
        match stack.tcp_recv(s, buf) {
            Ok(0) => {
                conn.eof = true;
                moved = true;
            }
            Ok(n) => {
                conn.backlog.extend_from_slice(&buf[..n]);
                moved = true;
            }
            Err(Error::WouldBlock) => return Ok(moved),
            Err(e) => return finish(stack, s, e, counters),
        }
    }
}

fn finish(
    stack: &mut Stack,
    s: SocketId,
    e: Error,
    counters: &mut EchoCounters,
) -> Result<bool, ()> {
    match e {
        Error::ConnectionReset => counters.connections_reset += 1,
        _ => {
            tracing::debug!(error = %e, "connection ended");
            counters.connections_closed += 1;
        }
    }
    stack.close(s);
    Err(())
}
