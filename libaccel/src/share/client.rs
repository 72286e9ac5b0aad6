//! A process's connection to the accel-helper of its network namespace.
//!
//! [`HelperConn::connect_or_spawn`] connects to `@accel-helper`; when nobody listens there it
//! starts the helper as a daemon (double fork, new session, `LD_PRELOAD` removed) and waits for
//! it to say it listens (a pipe it writes to once bound; one that lost the race to bind says so
//! and exits quietly, and the winner serves). The connection is close-on-exec: an exec ends
//! the process's membership, as does its exit.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::proto::{FlowOp, Joined, Reply, Request, Status, WireFlow, WireMode, MAX_MESSAGE};
use super::HELPER_ADDRESS;
use crate::sys::unix;
use crate::xdp::{FlowKey, XdpMode};

/// How long a connect waits for a helper it started.
const SPAWN_WAIT: Duration = Duration::from_secs(10);
/// How long a request waits for its reply.
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// Environment variable naming the helper binary (accel-run sets it).
pub const HELPER_ENV: &str = "ACCEL_HELPER";

/// Where the helper binary is: `explicit`, else `$ACCEL_HELPER`, else `accel-helper` next to
/// this program's executable.
pub fn helper_path(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os(HELPER_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let next = exe.parent()?.join("accel-helper");
    next.is_file().then_some(next)
}

/// Why a helper request failed.
#[derive(Debug)]
pub enum RequestError {
    /// The channel to the helper failed (it exited, or never answered).
    Io(io::Error),
    /// The helper refused: its message names the cause and the fix.
    Refused { message: String, errno: i32 },
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Io(e) => write!(f, "talking to accel's helper failed: {e}"),
            RequestError::Refused { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for RequestError {}

impl RequestError {
    /// The errno this stands for (the helper's, or the channel's).
    pub fn errno(&self) -> i32 {
        match self {
            RequestError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            RequestError::Refused { errno, .. } => *errno,
        }
    }
}

/// A connection to the helper.
#[derive(Debug)]
pub struct HelperConn {
    fd: OwnedFd,
}

impl HelperConn {
    /// Connects to the helper of this network namespace, if one runs.
    pub fn connect() -> io::Result<HelperConn> {
        let fd = unix::connect_abstract(HELPER_ADDRESS)?;
        Ok(HelperConn { fd })
    }

    /// Connects to the helper, starting `helper` first if none runs.
    pub fn connect_or_spawn(helper: &Path) -> io::Result<HelperConn> {
        match Self::connect() {
            Ok(c) => return Ok(c),
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(e),
        }
        let (ready_r, ready_w) = unix::pipe()?;
        unix::spawn_daemon(helper.as_os_str(), &["--on-demand"], ready_w.as_fd()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot start accel's helper {}: {e}", helper.display()),
            )
        })?;
        drop(ready_w);
        // The helper writes one byte once it listens (or closes the pipe when it lost the
        // race to another helper, or failed): either way, connecting is what tells.
        let deadline = Instant::now() + SPAWN_WAIT;
        let mut byte = [0u8; 1];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if unix::wait_readable(&[ready_r.as_fd()], Some(left))?.is_empty() {
                continue;
            }
            let _ = nix::unistd::read(&ready_r, &mut byte);
            break;
        }
        // A daemon that said it listens does. One that lost the race to bind closed the pipe
        // and left the winner, which may still be between its bind and its listen: a few
        // short retries cover that. One that failed to start leaves nobody: the error says so.
        let mut last = None;
        for _ in 0..50 {
            match Self::connect() {
                Ok(c) => return Ok(c),
                Err(e) if is_absent(&e) => last = Some(e),
                Err(e) => return Err(e),
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            format!(
                "accel's helper {} did not start ({}): run it by hand with `{} --foreground` to see why",
                helper.display(),
                last.map(|e| e.to_string()).unwrap_or_else(|| "no answer".into()),
                helper.display()
            ),
        ))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The connection's fd, to hand to a child.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// A connection made by [`HelperConn::spare`] in another process (a forked child's).
    pub fn from_fd(fd: OwnedFd) -> HelperConn {
        HelperConn { fd }
    }

    /// A new connection the helper serves as it serves this one, for a child this process is
    /// about to fork (see `Request::Spare`).
    pub fn spare(&self) -> Result<HelperConn, RequestError> {
        let (reply, mut fds) = self.request(&Request::Spare)?;
        match reply {
            Reply::Spare if fds.len() == 1 => Ok(HelperConn {
                fd: fds.pop().expect("one"),
            }),
            other => Err(unexpected(&other)),
        }
    }

    fn request(&self, req: &Request) -> Result<(Reply, Vec<OwnedFd>), RequestError> {
        let bytes = serde_json::to_vec(req).map_err(|e| RequestError::Io(io::Error::other(e)))?;
        unix::send(self.fd.as_fd(), &bytes, &[]).map_err(RequestError::Io)?;
        if unix::wait_readable(&[self.fd.as_fd()], Some(REPLY_WAIT))
            .map_err(RequestError::Io)?
            .is_empty()
        {
            return Err(RequestError::Io(io::Error::from_raw_os_error(
                libc::ETIMEDOUT,
            )));
        }
        let mut buf = vec![0u8; MAX_MESSAGE];
        let Some((n, fds)) = unix::recv(self.fd.as_fd(), &mut buf).map_err(RequestError::Io)?
        else {
            return Err(RequestError::Io(io::Error::from_raw_os_error(
                libc::ECONNRESET,
            )));
        };
        let reply: Reply = serde_json::from_slice(&buf[..n])
            .map_err(|e| RequestError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        if let Reply::Failed { message, errno } = reply {
            return Err(RequestError::Refused { message, errno });
        }
        Ok((reply, fds))
    }

    /// Asks for a slot and sockets on `ifname`'s queues.
    pub(crate) fn join(
        &self,
        ifname: &str,
        queues: Option<Vec<u32>>,
        mode: XdpMode,
    ) -> Result<(Joined, Vec<OwnedFd>), RequestError> {
        let (reply, fds) = self.request(&Request::Join {
            ifname: ifname.to_owned(),
            queues,
            mode: WireMode::from(mode),
            pid: std::process::id(),
        })?;
        match reply {
            Reply::Joined(j) => Ok((j, fds)),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes this process's part of a bound or listening flow (see [`FlowOp`]).
    pub fn shared_flow(&self, op: FlowOp, key: &FlowKey) -> Result<(), RequestError> {
        let Some(flow) = WireFlow::of(key) else {
            return Err(RequestError::Refused {
                message: format!("{key} is an exact flow: the process writes those itself"),
                errno: libc::EINVAL,
            });
        };
        match self.request(&Request::Flow { op, flow })?.0 {
            Reply::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// What the helper serves.
    pub fn status(&self) -> Result<Status, RequestError> {
        match self.request(&Request::Status)?.0 {
            Reply::Status(s) => Ok(s),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(r: &Reply) -> RequestError {
    RequestError::Io(io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected reply from accel's helper: {r:?}"),
    ))
}

/// Whether a connect error means "no helper listens here".
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED) | Some(libc::ENOENT) | Some(libc::EAGAIN)
    )
}

/// The status of the helper of this network namespace; `None` if none runs.
pub fn status() -> Result<Option<Status>, RequestError> {
    match HelperConn::connect() {
        Ok(c) => c.status().map(Some),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(RequestError::Io(e)),
    }
}
