//! Handing an established TCP connection to the kernel: TCP repair mode (CAP_NET_ADMIN) puts a
//! kernel socket straight into the state another TCP implementation had reached: sequence
//! numbers, windows, negotiated options, and the bytes still in flight either way.
//!
//! accel uses it when a connection must leave its userspace stack without the peer noticing
//! (a forked child and its parent both hold it, or the program execs): [`restore`] fills the
//! connection's own kernel socket from a [`Snapshot`] the stack took. [`dump`] reads the same
//! snapshot from a kernel socket (tests, and moving a kernel connection between sockets).
//!
//! The procedure, in the order the kernel requires: repair mode on; the receive and send queue
//! sequence numbers (only on a socket that has not connected); bind and connect (no SYN: the
//! socket becomes ESTABLISHED); the options the handshake negotiated; the unread received bytes
//! into the receive queue and the sent-but-unacknowledged bytes into the send queue; the
//! windows; repair mode off (with a window probe, so both ends resynchronise at once); then the
//! bytes not sent yet are written as the program would have written them.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::BorrowedFd;

use crate::sys::repair as sys;

const TCP_RECV_QUEUE: i32 = 1;
const TCP_SEND_QUEUE: i32 = 2;
const TCP_REPAIR_ON: i32 = 1;
/// Leaves repair mode and sends a window probe.
const TCP_REPAIR_OFF: i32 = 0;
const TCPOPT_MSS: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
const TCPI_OPT_TIMESTAMPS: u8 = 1;
const TCPI_OPT_SACK: u8 = 2;
const TCPI_OPT_WSCALE: u8 = 4;
const TCP_TIMESTAMP: i32 = 24;
/// `tcpi_state` of an established connection.
const TCP_ESTABLISHED: u8 = 1;
const SIOCINQ: libc::c_ulong = libc::FIONREAD;
const SIOCOUTQ: libc::c_ulong = libc::TIOCOUTQ;
const SIOCOUTQNSD: libc::c_ulong = 0x894B;

/// `struct tcp_repair_window`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Sequence number of the segment that last updated the send window.
    pub snd_wl1: u32,
    /// The peer's receive window, in bytes.
    pub snd_wnd: u32,
    /// The largest window the peer ever advertised.
    pub max_window: u32,
    /// The window we advertised, in bytes.
    pub rcv_wnd: u32,
    /// `rcv_nxt` when we last advertised a window.
    pub rcv_wup: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RepairOpt {
    code: u32,
    val: u32,
}

/// Window scaling as negotiated: the shift the peer applies to its windows, and ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowScale {
    pub snd: u8,
    pub rcv: u8,
}

/// An established connection, as a TCP implementation other than the kernel's holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// Sequence number of the first byte the peer has not acknowledged (SND.UNA).
    pub snd_una: u32,
    /// Every byte from `snd_una` on: first those sent and not acknowledged, then those not
    /// sent yet.
    pub send_queue: Vec<u8>,
    /// How many bytes of `send_queue` were sent (SND.NXT - SND.UNA).
    pub sent: usize,
    /// Sequence number after the last byte received in order (RCV.NXT).
    pub rcv_nxt: u32,
    /// Bytes received in order that the program has not read; they end at `rcv_nxt`.
    pub recv_queue: Vec<u8>,
    /// The largest segment we may send (the peer's MSS).
    pub mss: u16,
    pub wscale: Option<WindowScale>,
    pub sack_permitted: bool,
    /// Our current TSval, when the connection uses timestamps.
    pub timestamp: Option<u32>,
    pub window: Window,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// Makes `fd` (a TCP socket that has not connected; bound to `s.local` already when
/// `bound`) the established connection `s` describes. On failure the socket is unusable and
/// the caller closes it.
pub fn restore(fd: BorrowedFd<'_>, s: &Snapshot, bound: bool) -> io::Result<()> {
    if s.sent > s.send_queue.len() {
        return Err(bad("snapshot: more bytes sent than queued"));
    }
    let tcp = libc::IPPROTO_TCP;
    sys::set(fd, tcp, libc::TCP_REPAIR, &TCP_REPAIR_ON)?;
    let rcv_seq = s.rcv_nxt.wrapping_sub(s.recv_queue.len() as u32);
    sys::set(fd, tcp, libc::TCP_REPAIR_QUEUE, &TCP_RECV_QUEUE)?;
    sys::set(fd, tcp, libc::TCP_QUEUE_SEQ, &rcv_seq)?;
    sys::set(fd, tcp, libc::TCP_REPAIR_QUEUE, &TCP_SEND_QUEUE)?;
    sys::set(fd, tcp, libc::TCP_QUEUE_SEQ, &s.snd_una)?;
    // Room for everything at once: the queues are filled in one go, under repair.
    let room = 2 * (s.send_queue.len().max(s.recv_queue.len()) as i32) + 65536;
    let _ = sys::set(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &room);
    let _ = sys::set(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &room);
    if !bound {
        // Repair mode binds over a port another socket holds (the listener's, for an accepted
        // connection).
        sys::bind_or_connect(fd, s.local, false)?;
    }
    if let Some(ts) = s.timestamp {
        sys::set(fd, tcp, TCP_TIMESTAMP, &ts)?;
    }
    sys::bind_or_connect(fd, s.remote, true)?;
    let mut opts = vec![RepairOpt {
        code: TCPOPT_MSS,
        val: u32::from(s.mss),
    }];
    if let Some(w) = s.wscale {
        opts.push(RepairOpt {
            code: TCPOPT_WINDOW,
            val: u32::from(w.snd) | (u32::from(w.rcv) << 16),
        });
    }
    if s.sack_permitted {
        opts.push(RepairOpt {
            code: TCPOPT_SACK_PERM,
            val: 0,
        });
    }
    if s.timestamp.is_some() {
        opts.push(RepairOpt {
            code: TCPOPT_TIMESTAMP,
            val: 0,
        });
    }
    sys::set_slice(fd, tcp, libc::TCP_REPAIR_OPTIONS, &opts)?;
    fill_queue(fd, TCP_RECV_QUEUE, &s.recv_queue)?;
    fill_queue(fd, TCP_SEND_QUEUE, &s.send_queue[..s.sent])?;
    sys::set(fd, tcp, libc::TCP_REPAIR_WINDOW, &s.window)?;
    sys::set(fd, tcp, libc::TCP_REPAIR, &TCP_REPAIR_OFF)?;
    // What was never sent goes out as the program's own writes would.
    let mut rest = &s.send_queue[s.sent..];
    while !rest.is_empty() {
        match sys::send(fd, rest, libc::MSG_NOSIGNAL) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes `data` into a queue of a socket in repair mode.
fn fill_queue(fd: BorrowedFd<'_>, queue: i32, data: &[u8]) -> io::Result<()> {
    sys::set(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR_QUEUE, &queue)?;
    let mut rest = data;
    while !rest.is_empty() {
        match sys::send(fd, rest, 0) {
            Ok(0) => return Err(bad("the kernel took no byte of a repaired queue")),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the snapshot of an established kernel connection. The socket is left in repair mode:
/// closing it then sends nothing (no FIN, no RST), so the connection can live on elsewhere;
/// [`leave_repair`] puts it back in service instead.
pub fn dump(fd: BorrowedFd<'_>) -> io::Result<Snapshot> {
    let tcp = libc::IPPROTO_TCP;
    sys::set(fd, tcp, libc::TCP_REPAIR, &TCP_REPAIR_ON)?;
    let (info, _) = sys::get::<[u8; 8]>(fd, tcp, libc::TCP_INFO)?;
    if info[0] != TCP_ESTABLISHED {
        return Err(bad("only an established connection can be dumped"));
    }
    let options = info[5];
    let wscale = (options & TCPI_OPT_WSCALE != 0).then_some(WindowScale {
        snd: info[6] & 0x0f,
        rcv: info[6] >> 4,
    });
    let (mss, _) = sys::get::<i32>(fd, tcp, libc::TCP_MAXSEG)?;
    let timestamp = if options & TCPI_OPT_TIMESTAMPS != 0 {
        Some(sys::get::<u32>(fd, tcp, TCP_TIMESTAMP)?.0)
    } else {
        None
    };
    sys::set(fd, tcp, libc::TCP_REPAIR_QUEUE, &TCP_SEND_QUEUE)?;
    let (write_seq, _) = sys::get::<u32>(fd, tcp, libc::TCP_QUEUE_SEQ)?;
    let outq = sys::ioctl_int(fd, SIOCOUTQ)? as usize;
    let unsent = sys::ioctl_int(fd, SIOCOUTQNSD)? as usize;
    let send_queue = peek(fd, outq)?;
    sys::set(fd, tcp, libc::TCP_REPAIR_QUEUE, &TCP_RECV_QUEUE)?;
    let (rcv_nxt, _) = sys::get::<u32>(fd, tcp, libc::TCP_QUEUE_SEQ)?;
    let inq = sys::ioctl_int(fd, SIOCINQ)? as usize;
    let recv_queue = peek(fd, inq)?;
    let (window, _) = sys::get::<Window>(fd, tcp, libc::TCP_REPAIR_WINDOW)?;
    let local = sys::local_addr(fd)?;
    let remote = peer_addr(fd)?;
    Ok(Snapshot {
        local,
        remote,
        snd_una: write_seq.wrapping_sub(outq as u32),
        sent: outq.saturating_sub(unsent),
        send_queue,
        rcv_nxt,
        recv_queue,
        mss: mss.clamp(0, i32::from(u16::MAX)) as u16,
        wscale,
        sack_permitted: options & TCPI_OPT_SACK != 0,
        timestamp,
        window,
    })
}

/// Takes a socket out of repair mode (after a [`dump`] that is not followed by a move).
pub fn leave_repair(fd: BorrowedFd<'_>) -> io::Result<()> {
    sys::set(fd, libc::IPPROTO_TCP, libc::TCP_REPAIR, &TCP_REPAIR_OFF)
}

/// The `n` bytes of the repair queue selected, peeked (they stay queued). A peek of a queue
/// in repair mode returns it from its start, so one call must read it all.
fn peek(fd: BorrowedFd<'_>, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    if n == 0 {
        return Ok(buf);
    }
    let k = sys::recv(fd, &mut buf, libc::MSG_PEEK | libc::MSG_DONTWAIT)?;
    if k != n {
        return Err(bad(
            "a repair queue peek returned less than the queue holds",
        ));
    }
    Ok(buf)
}

fn peer_addr(fd: BorrowedFd<'_>) -> io::Result<SocketAddrV4> {
    sys::peer_addr(fd)
}
