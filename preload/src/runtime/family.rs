//! Parent and children: each fork() gets a channel (a Unix socket pair), so a child can ask
//! its parent to hand over a connection they both hold, and the parent knows whether a child
//! that may hold its older connections still lives (the channel hangs up when it exits).
//!
//! A connection is one connection however many processes hold its fd; accel serves it in the
//! stack of the process that made it. When a child uses an inherited connection, or the
//! parent closes one while a child that inherited it lives, the parent hands it to the kernel
//! socket they share (TCP repair), and everyone uses that from then on.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::errno::Res;
use crate::fd::{internal, InternalFd};
use crate::sys::kernel;

/// Forks this process made so far (an endpoint created before fork N may be held by child N).
static FORKS: AtomicU64 = AtomicU64::new(0);
/// The socket pair made in the fork's prepare handler: (parent's end, child's end).
static PENDING: [AtomicI32; 2] = [AtomicI32::new(-1), AtomicI32::new(-1)];
/// In a child: its end of the channel to its parent.
static TO_PARENT: AtomicI32 = AtomicI32::new(-1);
/// The connection to accel's helper made for the child to come (prepare -> child).
static PENDING_SPARE: AtomicI32 = AtomicI32::new(-1);
/// This process's connection to the helper, made by its parent, until its runtime takes it.
static INHERITED_CONN: AtomicI32 = AtomicI32::new(-1);
/// One spare at a time from `INHERITED_CONN` (forks in several threads); never held across
/// fork.
static SPARE_FROM_INHERITED: Mutex<()> = Mutex::new(());

/// A child's channel, as its parent keeps it.
struct Child {
    fd: InternalFd,
    /// The fork that made it: it may hold endpoints created before.
    fork: u64,
}

static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<Child>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many forks this process made: an endpoint records it when it is created.
pub fn forks() -> u64 {
    FORKS.load(Ordering::Acquire)
}

/// Before fork(), in the parent: the channel for the child to come, and its connection to
/// accel's helper.
pub(super) extern "C" fn prepare() {
    if let Ok((p, c)) = kernel::seqpacket_pair() {
        PENDING[0].store(p, Ordering::Release);
        PENDING[1].store(c, Ordering::Release);
    }
    if let Some(fd) = spare() {
        let fd = std::os::fd::IntoRawFd::into_raw_fd(fd);
        internal::mark(fd);
        PENDING_SPARE.store(fd, Ordering::Release);
    }
}

/// A connection to the helper for a child, asked for through this process's own: the helper
/// serves a child as it serves its parent, whatever uid the child takes (nginx's workers run
/// as `nobody`). `None` when this process has no helper connection (it then connects itself).
fn spare() -> Option<std::os::fd::OwnedFd> {
    if let Some(rt) = super::current() {
        if let Some(nic) = rt.nics.first() {
            use super::nic::Serves;
            return nic.lock().engine.backend().spare_conn();
        }
    }
    let _one = SPARE_FROM_INHERITED
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let fd = INHERITED_CONN.load(Ordering::Acquire);
    if fd < 0 {
        return None;
    }
    // Borrowed: the connection stays this process's (ManuallyDrop: not closed here).
    let conn =
        std::mem::ManuallyDrop::new(libaccel::share::HelperConn::from_fd(kernel::own_raw(fd)?));
    match conn.spare() {
        Ok(c) => Some(c.into_fd()),
        Err(e) => {
            tracing::warn!(error = %e, "asking accel's helper for a forked child's connection");
            None
        }
    }
}

/// The connection to the helper this process's parent made for it, if any (its runtime
/// joins through it).
pub fn take_inherited_conn() -> Option<std::os::fd::OwnedFd> {
    let fd = INHERITED_CONN.swap(-1, Ordering::AcqRel);
    if fd < 0 {
        return None;
    }
    internal::unmark(fd);
    kernel::own_raw(fd)
}

/// After fork(), in the parent.
pub(super) extern "C" fn in_parent() {
    let p = PENDING[0].swap(-1, Ordering::AcqRel);
    let c = PENDING[1].swap(-1, Ordering::AcqRel);
    if c >= 0 {
        let _ = kernel::close(c);
    }
    let spare = PENDING_SPARE.swap(-1, Ordering::AcqRel);
    if spare >= 0 {
        let _ = kernel::close(spare);
        internal::unmark(spare);
    }
    let fork = FORKS.fetch_add(1, Ordering::AcqRel) + 1;
    if let Some(fd) = kernel::own_raw(p) {
        children().push(Child {
            fd: InternalFd::new(fd),
            fork,
        });
        super::kick::kick(); // it listens on the new channel from now on
    }
    if let Some(h) = super::current().and_then(|rt| rt.hooks) {
        (h.forked)();
    }
}

/// After fork(), in the child (called by `process`, before the sweep of inherited fds, which
/// keeps the fds this returns: the channel to the parent, the connection to the helper).
pub(super) fn in_child() -> [RawFd; 2] {
    // The parent's own helper connection is the parent's; the one made for this child is
    // this process's.
    let spare = PENDING_SPARE.swap(-1, Ordering::AcqRel);
    let old = INHERITED_CONN.swap(spare, Ordering::AcqRel);
    if old >= 0 {
        let _ = kernel::close(old);
        internal::unmark(old);
    }
    let p = PENDING[0].swap(-1, Ordering::AcqRel);
    if p >= 0 {
        let _ = kernel::close(p);
    }
    let c = PENDING[1].swap(-1, Ordering::AcqRel);
    // The parent's own channel to its parent is the parent's.
    let grandparent = TO_PARENT.swap(c, Ordering::AcqRel);
    if grandparent >= 0 {
        let _ = kernel::close(grandparent);
        internal::unmark(grandparent);
    }
    FORKS.store(0, Ordering::Release);
    if c >= 0 {
        internal::mark(c);
    }
    // The parent's channels to its other children are copies the sweep closes; the list
    // (the parent's memory) is forgotten without closing anything twice.
    std::mem::forget(std::mem::take(&mut *children()));
    [c, spare]
}

/// Whether a child made after fork `since` still lives (it may hold what existed then).
pub fn child_alive_since(since: u64) -> bool {
    let mut kids = children();
    kids.retain(|c| kernel::hung_up(c.fd.raw()) == Ok(false));
    kids.iter().any(|c| c.fork > since)
}

/// The channels the progress thread listens on (those of children that exited are dropped:
/// a hung-up channel would wake it at once, every time).
pub fn child_fds() -> Vec<RawFd> {
    let mut kids = children();
    kids.retain(|c| kernel::hung_up(c.fd.raw()) == Ok(false));
    kids.iter().map(|c| c.fd.raw()).collect()
}

/// In a child: asks the parent to hand over the connection `serial` (waits for its answer, at
/// most 2 s). Ok(true): the kernel socket now holds it; Ok(false): the parent does not serve
/// it (any more), the kernel socket is what there is.
pub fn ask_parent(serial: u64) -> Res<bool> {
    let fd = TO_PARENT.load(Ordering::Acquire);
    if fd < 0 {
        return Ok(false);
    }
    kernel::send_all(fd, &serial.to_ne_bytes())?;
    let mut reply = [0u8; 1];
    match kernel::recv_timeout(fd, &mut reply, Duration::from_secs(2))? {
        0 => Ok(false), // the parent is gone
        _ => Ok(reply[0] == 1),
    }
}

/// The parent's side: answers the requests waiting on `fd` with `handoff`.
pub fn serve(fd: RawFd, handoff: fn(u64) -> bool) {
    let mut buf = [0u8; 8];
    while let Ok(n) = kernel::recv_nonblocking(fd, &mut buf) {
        if n != 8 {
            break;
        }
        let ok = handoff(u64::from_ne_bytes(buf));
        let _ = kernel::send_all(fd, &[u8::from(ok)]);
    }
}
