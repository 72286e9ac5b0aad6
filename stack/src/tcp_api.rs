//! TCP connections: active open, send/receive, shutdown, readiness and error reporting with the
//! kernel's semantics (a refused connect or a reset is reported once, then EOF / EPIPE).

use core::net::SocketAddrV4;

use crate::sockets::Handle as SocketHandle;
use smoltcp::socket::tcp::{self, ConnectError, RecvError, State};

use crate::{endpoint, Entry, Error, Readiness, SocketId, Stack, TcpSnapshot};

pub(crate) struct TcpConn {
    pub handle: SocketHandle,
    /// Active open not yet established or refused.
    pub connecting: bool,
    /// The application shut down (or the stack closed) the write side.
    pub wr_shut: bool,
    /// An error to report once (connection refused).
    pub error: Option<Error>,
    /// A reset was already reported.
    pub reset_reported: bool,
}

impl TcpConn {
    pub fn new(handle: SocketHandle, connecting: bool) -> TcpConn {
        TcpConn {
            handle,
            connecting,
            wr_shut: false,
            error: None,
            reset_reported: false,
        }
    }

    /// The error the next call should see, without consuming it.
    fn pending_error(&self, socket: &tcp::Socket) -> Option<Error> {
        if self.error.is_some() {
            return self.error;
        }
        if socket.state() != State::Closed || self.reset_reported || self.wr_shut {
            return None;
        }
        // Closed without our FIN: the peer reset us (or, still connecting, refused us).
        Some(if self.connecting {
            Error::ConnectionRefused
        } else {
            Error::ConnectionReset
        })
    }

    fn take_error(&mut self, socket: &tcp::Socket) -> Option<Error> {
        let err = self.pending_error(socket)?;
        self.error = None;
        self.reset_reported = true;
        Some(err)
    }
}

pub(crate) fn readiness(conn: &TcpConn, socket: &tcp::Socket) -> Readiness {
    let state = socket.state();
    let error = conn.pending_error(socket).is_some() || conn.reset_reported;
    let peer_closed = matches!(
        state,
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait | State::Closed
    ) && !(conn.connecting && state != State::Closed);
    Readiness {
        readable: socket.can_recv() || peer_closed,
        writable: socket.can_send() || error,
        hangup: peer_closed,
        error: conn.pending_error(socket).is_some(),
    }
}

impl Stack {
    /// The connection `s`, for a call that may change what goes on the wire (the next poll's
    /// egress visits it).
    fn tcp_conn(
        &mut self,
        s: SocketId,
    ) -> Result<(&mut TcpConn, &mut tcp::Socket<'static>), Error> {
        self.touch(s);
        self.tcp_conn_quiet(s)
    }

    /// The connection `s`, for a call that changes nothing the next poll must act on unless it
    /// says so itself (a read that finds nothing: a spinning receive makes one per attempt, and
    /// each used to cost the next poll a clock read and a walk of every socket).
    fn tcp_conn_quiet(
        &mut self,
        s: SocketId,
    ) -> Result<(&mut TcpConn, &mut tcp::Socket<'static>), Error> {
        match self.table.get_mut(&s.0) {
            Some(Entry::Tcp(conn)) => {
                let socket = self.sockets.get_mut::<tcp::Socket>(conn.handle);
                Ok((conn, socket))
            }
            Some(Entry::Listener(_)) => Err(Error::NotConnected),
            Some(Entry::Udp(_)) => Err(Error::InvalidState),
            None => Err(Error::InvalidSocket),
        }
    }

    /// Starts an active open from `local` (its port chosen and reserved by the caller; an
    /// unspecified address means ours). Non-blocking: readiness turns writable once established,
    /// or error (then `ConnectionRefused` from the next call) on RST.
    pub fn tcp_connect(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
    ) -> Result<SocketId, Error> {
        let local_ip = if local.ip().is_unspecified() {
            self.config.addr
        } else {
            *local.ip()
        };
        if local_ip != self.config.addr || local.port() == 0 {
            return Err(Error::Unaddressable);
        }
        let local = SocketAddrV4::new(local_ip, local.port());
        let (l, r) = (Some(endpoint(local)), Some(endpoint(remote)));
        // Any socket still holding this 4-tuple (or the 4-tuple in TIME-WAIT after its
        // application closed it) makes it unavailable, as the kernel's connect() says.
        let key = (local.port(), remote);
        let in_use = self.sockets.find(&key).is_some_and(|h| {
            let t = self.sockets.get::<tcp::Socket>(h);
            t.local_endpoint() == l && t.remote_endpoint() == r
        }) || self.time_wait.contains(&key, self.now);
        if in_use {
            return Err(Error::Unaddressable);
        }
        let mut socket = match self.new_tcp_socket() {
            Ok(s) => s,
            Err(e) => {
                self.counters.socket_refused_no_memory += 1;
                return Err(e);
            }
        };
        // Give up like the kernel does after its SYN retries (tcp_syn_retries = 6: ~127 s).
        socket.set_timeout(Some(crate::CONNECT_TIMEOUT));
        if let Err(e) = socket.connect(self.iface.context(), endpoint(remote), endpoint(local)) {
            self.budget.sub(crate::budget::tcp_bytes(&socket));
            return Err(match e {
                ConnectError::InvalidState => Error::InvalidState,
                ConnectError::Unaddressable => Error::Unaddressable,
            });
        }
        let handle = self.sockets.add(socket);
        self.sockets.set_key(handle, key);
        // The SYN goes in the next poll.
        self.sockets.queue(handle);
        let id = self.insert_conn(handle, true);
        self.connecting.push((id.0, self.now));
        Ok(id)
    }

    /// Queues bytes for sending; `WouldBlock` when the send buffer is full or still connecting.
    pub fn tcp_send(&mut self, s: SocketId, data: &[u8]) -> Result<usize, Error> {
        let (conn, socket) = self.tcp_conn(s)?;
        if let Some(err) = conn.take_error(socket) {
            return Err(err);
        }
        if conn.wr_shut {
            return Err(Error::BrokenPipe);
        }
        match socket.state() {
            State::SynSent | State::SynReceived => Err(Error::WouldBlock),
            State::Established | State::CloseWait => match socket.send_slice(data) {
                Ok(0) if !data.is_empty() => Err(Error::WouldBlock),
                Ok(n) => Ok(n),
                Err(_) => Err(Error::BrokenPipe),
            },
            State::Listen => Err(Error::NotConnected),
            _ => Err(Error::BrokenPipe),
        }
    }

    /// Reads received bytes; `Ok(0)` is an orderly EOF (or `buf` is empty).
    pub fn tcp_recv(&mut self, s: SocketId, buf: &mut [u8]) -> Result<usize, Error> {
        let (conn, socket) = self.tcp_conn_quiet(s)?;
        if let Some(err) = conn.take_error(socket) {
            return Err(err);
        }
        match socket.state() {
            State::SynSent | State::SynReceived => return Err(Error::WouldBlock),
            State::Listen => return Err(Error::NotConnected),
            _ => {}
        }
        let r = match socket.recv_slice(buf) {
            Ok(0) if !buf.is_empty() && socket.may_recv() => Err(Error::WouldBlock),
            Ok(n) => Ok(n),
            Err(RecvError::Finished) | Err(RecvError::InvalidState) => Ok(0),
        };
        // Bytes taken open the window, which the peer may have to hear of.
        if matches!(r, Ok(n) if n > 0) {
            self.touch(s);
        }
        r
    }

    /// Applies a socket option that changes what the connection does on the wire.
    pub fn tcp_set_option(&mut self, s: SocketId, opt: TcpOption) -> Result<(), Error> {
        let (_, socket) = self.tcp_conn(s)?;
        match opt {
            TcpOption::NoDelay(on) => socket.set_nagle_enabled(!on),
            TcpOption::KeepAlive(interval) => socket.set_keep_alive(
                interval.map(|d| smoltcp::time::Duration::from_micros(d.as_micros() as u64)),
            ),
            TcpOption::HopLimit(ttl) => socket.set_hop_limit(ttl),
            TcpOption::AckDelay(d) => socket.set_ack_delay(
                d.map(|d| smoltcp::time::Duration::from_micros(d.as_micros() as u64)),
            ),
        }
        Ok(())
    }

    /// Sends FIN after the queued data (shutdown(SHUT_WR)).
    pub fn tcp_shutdown_write(&mut self, s: SocketId) -> Result<(), Error> {
        let (conn, socket) = self.tcp_conn(s)?;
        match socket.state() {
            State::SynSent | State::Listen => Err(Error::NotConnected),
            State::Closed if !conn.wr_shut => Err(Error::NotConnected),
            _ => {
                socket.close();
                conn.wr_shut = true;
                Ok(())
            }
        }
    }

    /// The pending socket error, consumed (getsockopt SO_ERROR).
    pub fn take_error(&mut self, s: SocketId) -> Result<Option<Error>, Error> {
        match self.tcp_conn(s) {
            Ok((conn, socket)) => Ok(conn.take_error(socket)),
            Err(Error::InvalidSocket) => Err(Error::InvalidSocket),
            Err(_) => Ok(None),
        }
    }

    /// What a kernel needs to take the connection over (TCP repair): `None` unless it is an
    /// ESTABLISHED TCP connection. Nothing changes: the caller forgets it with
    /// [`Stack::tcp_forget`] once the kernel has it.
    pub fn tcp_snapshot(&self, s: SocketId) -> Option<TcpSnapshot> {
        let Entry::Tcp(conn) = self.table.get(&s.0)? else {
            return None;
        };
        self.sockets.get::<tcp::Socket>(conn.handle).repair_state()
    }

    /// smoltcp's view of a TCP socket (`Listen` for a listener); `None` for others.
    pub fn tcp_state(&self, s: SocketId) -> Option<State> {
        match self.table.get(&s.0)? {
            Entry::Tcp(conn) => Some(self.sockets.get::<tcp::Socket>(conn.handle).state()),
            Entry::Listener(_) => Some(State::Listen),
            Entry::Udp(_) => None,
        }
    }

    /// Bytes received and not read yet (FIONREAD / SIOCINQ).
    pub fn tcp_recv_queue(&self, s: SocketId) -> Option<usize> {
        match self.table.get(&s.0)? {
            Entry::Tcp(conn) => Some(self.sockets.get::<tcp::Socket>(conn.handle).recv_queue()),
            _ => None,
        }
    }

    /// Whether at least half of the receive buffer is in use: reading now opens the window
    /// enough that the peer should hear of it at once (a smaller read waits for the next ACK).
    pub fn tcp_recv_window_low(&self, s: SocketId) -> bool {
        match self.table.get(&s.0) {
            Some(Entry::Tcp(conn)) => {
                let socket = self.sockets.get::<tcp::Socket>(conn.handle);
                socket.recv_queue() * 2 >= socket.recv_capacity()
            }
            _ => false,
        }
    }

    /// Bytes written and not acknowledged by the peer yet (SIOCOUTQ).
    pub fn tcp_send_queue(&self, s: SocketId) -> Option<usize> {
        match self.table.get(&s.0)? {
            Entry::Tcp(conn) => Some(self.sockets.get::<tcp::Socket>(conn.handle).send_queue()),
            _ => None,
        }
    }
}

/// Options the stack honours per TCP connection (the preload maps socket options onto them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOption {
    /// TCP_NODELAY: true turns Nagle off (the stack's default).
    NoDelay(bool),
    /// SO_KEEPALIVE with the idle interval (TCP_KEEPIDLE); `None` turns keep-alive off.
    KeepAlive(Option<core::time::Duration>),
    /// IP_TTL; `None` is the default.
    HopLimit(Option<u8>),
    /// TCP_QUICKACK: `None` acknowledges at once.
    AckDelay(Option<core::time::Duration>),
}

impl Stack {
    /// Whether this connection completed its handshake (an active open that was accepted; a
    /// passive one always did). connect() succeeds once this holds, even if the peer reset the
    /// connection right after: that error belongs to the next call, as in the kernel.
    pub fn tcp_established_once(&self, s: SocketId) -> bool {
        match self.table.get(&s.0) {
            Some(Entry::Tcp(conn)) => {
                !conn.connecting
                    && !matches!(
                        conn.error,
                        Some(Error::ConnectionRefused) | Some(Error::TimedOut)
                    )
            }
            _ => false,
        }
    }
}
