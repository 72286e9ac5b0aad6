//! The helper's channel and process plumbing: SOCK_SEQPACKET Unix sockets at an abstract
//! address (per network namespace), messages with fds (SCM_RIGHTS), the peer's credentials and
//! pidfd, and starting the helper as a daemon.
//!
//! # Safety
//!
//! fds received from the kernel (accept, recvmsg's SCM_RIGHTS, pidfd_open) are new and owned by
//! nobody else, so each becomes an `OwnedFd` at once. The daemon spawn runs code between fork
//! and exec in the child (`pre_exec`): only async-signal-safe calls (setsid, close_range, dup2,
//! fcntl, fork, _exit) that touch no lock and allocate nothing.

use std::ffi::OsStr;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockType, UnixAddr,
};

fn nixerr(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Most fds one message carries (the kernel's SCM_MAX_FD is 253).
pub(crate) const MAX_FDS: usize = 200;

fn seqpacket() -> io::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(nixerr)
}

/// A listening SOCK_SEQPACKET socket at the abstract address `name` (EADDRINUSE if another
/// process listens there).
pub(crate) fn listen_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let addr = UnixAddr::new_abstract(name).map_err(nixerr)?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(nixerr)?;
    socket::listen(&fd, Backlog::new(128).map_err(nixerr)?).map_err(nixerr)?;
    Ok(fd)
}

/// Connects to the abstract address `name` (ECONNREFUSED if nobody listens).
pub(crate) fn connect_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    let fd = seqpacket()?;
    let addr = UnixAddr::new_abstract(name).map_err(nixerr)?;
    loop {
        match socket::connect(fd.as_raw_fd(), &addr) {
            Ok(()) => return Ok(fd),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(nixerr(e)),
        }
    }
}

/// Accepts one connection (close-on-exec, non-blocking: EAGAIN when none waits).
pub(crate) fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let raw = socket::accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(nixerr)?;
    // SAFETY: accept4 returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Sets or clears O_NONBLOCK.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(nixerr)?);
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags))
        .map_err(nixerr)
        .map(drop)
}

/// The connected peer's process id and user id (SO_PEERCRED, as of connect).
pub(crate) fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<(u32, u32)> {
    let c = socket::getsockopt(&fd, sockopt::PeerCredentials).map_err(nixerr)?;
    Ok((c.pid() as u32, c.uid()))
}

/// A pidfd of the connected peer (readable once it exits): SO_PEERPIDFD, else pidfd_open of
/// its pid.
pub(crate) fn peer_pidfd(fd: BorrowedFd<'_>, pid: u32) -> io::Result<OwnedFd> {
    match socket::getsockopt(&fd, sockopt::PeerPidfd) {
        Ok(p) => Ok(p),
        Err(_) => pidfd_open(pid),
    }
}

/// A connected pair of SOCK_SEQPACKET Unix sockets, close-on-exec.
pub(crate) fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socket::socketpair(
        socket::AddressFamily::Unix,
        socket::SockType::SeqPacket,
        None,
        socket::SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)
}

/// pidfd_open(2).
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; a non-negative result is a new fd.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pidfd_open returned a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Sends one message with `fds` attached (all or nothing: SEQPACKET keeps it whole).
pub(crate) fn send(fd: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
    let iov = [IoSlice::new(data)];
    loop {
        match socket::sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => return Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(nixerr(e)),
        }
    }
}

/// Receives one message into `buf` with the fds that came with it (close-on-exec). Ok(None) at
/// the end of the stream (the peer closed). A message cut short (its data or its fds did not
/// fit) is an error, and any fds that came are closed.
pub(crate) fn recv(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match socket::recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(nixerr(e)),
        }
    };
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(nixerr)? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for r in raw {
                // SAFETY: SCM_RIGHTS installed these as new fds in this process; nobody else
                // owns them.
                fds.push(unsafe { OwnedFd::from_raw_fd(r) });
            }
        }
    }
    let n = msg.bytes;
    let cut = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    if cut {
        return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
    }
    if n == 0 && fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((n, fds)))
}

/// Waits until one of `fds` is readable (or hung up), at most `timeout` (`None`: forever).
/// Returns the indexes of the ready ones (empty on timeout or EINTR).
pub(crate) fn wait_readable(
    fds: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> io::Result<Vec<usize>> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|f| PollFd::new(*f, PollFlags::POLLIN))
        .collect();
    let t = match timeout {
        None => PollTimeout::NONE,
        Some(d) => PollTimeout::try_from(d.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX),
    };
    match poll(&mut pfds, t) {
        Ok(_) => {}
        Err(nix::Error::EINTR) => return Ok(Vec::new()),
        Err(e) => return Err(nixerr(e)),
    }
    Ok(pfds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents().is_some_and(|r| !r.is_empty()))
        .map(|(i, _)| i)
        .collect())
}

/// A pipe (close-on-exec both ends): (read, write).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(nixerr)
}

/// The fd number a daemon started by [`spawn_daemon`] finds its ready pipe at.
pub(crate) const READY_FD: RawFd = 3;
/// The environment variable that tells the daemon it has a ready pipe (its value: the fd).
pub(crate) const READY_ENV: &str = "ACCEL_HELPER_READY_FD";

/// Starts `program args` as a daemon: a new session, not our child (double fork: the
/// intermediate process exits at once and is reaped here), stdio on /dev/null, working
/// directory `/`, every fd of ours closed at exec except `ready` (as fd [`READY_FD`]), and
/// `LD_PRELOAD` removed from its environment.
pub(crate) fn spawn_daemon(
    program: &OsStr,
    args: &[&str],
    ready: BorrowedFd<'_>,
) -> io::Result<()> {
    let ready_raw = ready.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_remove("LD_PRELOAD")
        .env(READY_ENV, READY_FD.to_string())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Everything inherited goes at exec (the program's sockets and pipes must not
            // live on in the daemon); the ready pipe is then put at READY_FD, inheritable.
            libc::close_range(
                3,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            );
            if ready_raw == READY_FD {
                libc::fcntl(READY_FD, libc::F_SETFD, 0);
            } else if libc::dup2(ready_raw, READY_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => Ok(()), // the daemon goes on to exec
                _ => libc::_exit(0),
            }
        });
    }
    let mut child = cmd.spawn()?;
    // The intermediate exits right after its fork; a program that reaps every child itself
    // may have taken it already (ECHILD): fine either way.
    let _ = child.wait();
    Ok(())
}

/// Whether `fd` is an open fd in this process.
fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any integer is harmless; it fails with EBADF if it is not an fd.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Takes ownership of an inherited fd number (the daemon's ready pipe).
///
/// Returns `None` if it is not open.
pub(crate) fn adopt_inherited(fd: RawFd) -> Option<OwnedFd> {
    if !fd_is_open(fd) {
        return None;
    }
    // SAFETY: the fd is open and was handed to this process at exec for it to own; nothing
    // else in the process refers to it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        owned.as_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(owned)
}
