//! The one wait primitive: every call that blocks (recv, send, accept, connect, poll, select,
//! epoll_wait) waits through [`wait`], as the kernel would block it.
//!
//! A wait makes attempts: spinning while the profile says so (the `latency` profile always,
//! `balanced` for `ACCEL_SPIN_US`), then it sleeps. It sleeps without losing a wake-up: it
//! registers this thread's eventfd with the interfaces first, makes one more attempt, and only
//! then sleeps on the eventfd (with the kernel fds the call also waits on); a poll that moves
//! anything after the registration signals the eventfd, so the sleep ends at once.
//!
//! While a thread spins, other threads may need an interface's lock: a spinner makes way
//! ([`make_way`]) when one is waiting for it. While threads sleep, the progress thread watches
//! the queues for them (a sleeper kicks it if it was leaving them to a polling program).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::nic::Nic;
use super::signals;
use super::Runtime;
use crate::config::Profile;
use crate::errno::{Errno, Res};
use crate::fd::InternalFd;
use crate::sys::kernel;

/// How often (in attempts) a spinning wait also looks at the kernel side of its sockets.
pub const KERNEL_CHECK_EVERY: u32 = 64;

/// How often (in attempts) a spinning wait reads the clock for its timeout and spin limit (an
/// attempt that finds nothing is a few dozen ns; a clock read on each was an eighth of nginx's
/// time).
const CLOCK_EVERY: u32 = 16;

/// The longest nap with interfaces registered: a safety net for readiness changes that signal
/// nobody (they are rare, see epoll's periodic look).
const NAP_CAP: Duration = Duration::from_millis(50);

/// The longest nap of a wait on kernel fds only.
const KERNEL_NAP_CAP: Duration = Duration::from_millis(1000);

/// Which signal handlers end a wait with EINTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// Those installed without SA_RESTART (recv, send, accept, connect).
    UnlessSaRestart,
    /// Any handler (poll, select and epoll_wait are never restarted).
    Never,
}

/// What else wakes a sleeping wait, besides the interfaces' progress.
pub enum Sleep<'a> {
    /// Nothing else.
    Nothing,
    /// A kernel fd becoming readable (the kernel path of a listener or UDP socket).
    Fd(RawFd),
    /// The pollfds this builds when the wait goes to sleep (poll and select's kernel fds).
    Fds(&'a dyn Fn() -> Vec<libc::pollfd>),
    /// The program's epoll set (nested in this thread's private epoll for the nap, so the
    /// program's own set is never changed).
    Epoll(RawFd),
}

/// How a call waits.
pub struct Wait<'a> {
    /// The interfaces whose progress can satisfy the call (an attempt may change them).
    /// Borrowed from the caller: a socket call's wait allocates nothing.
    pub nics: Cow<'a, [Arc<Nic>]>,
    /// One attempt, then EAGAIN.
    pub nonblock: bool,
    /// EAGAIN after this long (`None`: no limit).
    pub timeout: Option<Duration>,
    pub restart: Restart,
    pub sleep: Sleep<'a>,
}

impl<'a> Wait<'a> {
    /// A socket call's wait: on `nics`, as the socket's blocking mode and timeout say.
    pub fn socket(nics: &'a [Arc<Nic>], nonblock: bool, timeout: Option<Duration>) -> Wait<'a> {
        Wait {
            nics: Cow::Borrowed(nics),
            nonblock,
            timeout: timeout.filter(|t| !t.is_zero()),
            restart: Restart::UnlessSaRestart,
            sleep: Sleep::Nothing,
        }
    }

    /// Also wakes when `fd` becomes readable.
    pub fn or_fd(mut self, fd: RawFd) -> Wait<'a> {
        self.sleep = Sleep::Fd(fd);
        self
    }

    /// poll/select/epoll_wait's wait: `timeout_ms` as they take it (0: no wait, < 0: none).
    pub fn readiness(nics: Cow<'a, [Arc<Nic>]>, timeout_ms: i32, sleep: Sleep<'a>) -> Wait<'a> {
        Wait {
            nics,
            nonblock: timeout_ms == 0,
            timeout: u64::try_from(timeout_ms).ok().map(Duration::from_millis),
            restart: Restart::Never,
            sleep,
        }
    }
}

/// One attempt of a wait.
pub struct Round<'r, 'a> {
    /// 1 for the first attempt of the call.
    pub n: u32,
    /// Whether this attempt should also look at the kernel side (a syscall): a non-blocking
    /// call's only attempt, the first after a sleep or a registration, and every
    /// [`KERNEL_CHECK_EVERY`]-th of a spin. Not the first of a blocking call: it is nearly
    /// always followed by a spin, and a syscall per call was a tenth of a ping-pong's round
    /// trip.
    pub thorough: bool,
    /// The interfaces the wait registers with and makes way on; an attempt that finds its
    /// sockets on other interfaces (epoll) updates them.
    pub nics: &'r mut Cow<'a, [Arc<Nic>]>,
}

/// Waits as the kernel would block the call, until `attempt` answers: `Some(result)` ends the
/// wait. Timeouts and non-blocking calls end with EAGAIN, interrupting handlers with EINTR.
pub fn wait<'a, T>(
    rt: &Runtime,
    w: Wait<'a>,
    mut attempt: impl FnMut(&mut Round<'_, 'a>) -> Option<Res<T>>,
) -> Res<T> {
    let Wait {
        mut nics,
        nonblock,
        timeout,
        restart,
        sleep,
    } = w;
    let interrupts = signals::interrupts();
    let signals = signals::signals_seen();
    // The clock is read once the first attempt failed (most calls succeed at once), then every
    // CLOCK_EVERY attempts, and only when a timeout or a spin limit needs it: a call that
    // spins for ever reads none.
    let timed = timeout.is_some() || rt.config.spin.is_some();
    let mut started: Option<Instant> = None;
    let mut spinning = true;
    let mut n: u32 = 0;
    let mut fresh_look = false;
    let mut waiting: Option<Waiting> = None;
    loop {
        n = n.wrapping_add(1);
        let mut round = Round {
            n,
            thorough: nonblock || fresh_look || n.is_multiple_of(KERNEL_CHECK_EVERY),
            nics: &mut nics,
        };
        fresh_look = false;
        if let Some(r) = attempt(&mut round) {
            return r;
        }
        if nonblock {
            return Err(Errno::EAGAIN);
        }
        let interrupted = match restart {
            Restart::UnlessSaRestart => signals::interrupts() != interrupts,
            Restart::Never => signals::signals_seen() != signals,
        };
        if interrupted {
            return Err(Errno::EINTR);
        }
        if timed && (started.is_none() || n.is_multiple_of(CLOCK_EVERY) || waiting.is_some()) {
            let now = Instant::now();
            let t0 = *started.get_or_insert(now);
            if timeout.is_some_and(|t| now >= t0 + t) {
                return Err(Errno::EAGAIN);
            }
            spinning = should_spin(rt, t0);
        }
        if let Some(w) = waiting.take() {
            // Registered, and the attempt after the registration found nothing: sleep.
            let deadline = timeout.zip(started).map(|(t, t0)| t0 + t);
            let r = nap(&w, &sleep, deadline, &nics);
            drop(w);
            if r == Err(Errno::EINTR) && restart == Restart::Never {
                return Err(Errno::EINTR);
            }
            // Whatever woke us is looked at next, the kernel side included. (A handler that
            // interrupted the nap is seen at the top of the loop: EINTR unless it was
            // installed with SA_RESTART, in which case the wait goes on, as in the kernel.)
            fresh_look = true;
            continue;
        }
        if spinning && !nics.is_empty() {
            make_way(&nics);
            continue;
        }
        // Register, then attempt once more before sleeping (no lost wake-up).
        waiting = Waiting::register(&nics);
        if waiting.is_none() {
            // This thread has no eventfd (the process is at its fd limit): nothing can wake
            // it, so it naps briefly and looks again. The call still blocks, as the kernel's
            // would, with a coarser wake-up until an fd is free.
            let deadline = timeout.zip(started).map(|(t, t0)| t0 + t);
            blind_nap(&sleep, deadline);
        }
        fresh_look = true;
    }
}

/// The longest nap of a wait that has no eventfd to be woken by.
const BLIND_NAP: Duration = Duration::from_millis(1);

/// A nap without this thread's eventfd: on the kernel fds `sleep` names (the program's epoll
/// fd itself for epoll), at most [`BLIND_NAP`] or until the deadline.
fn blind_nap(sleep: &Sleep<'_>, deadline: Option<Instant>) {
    let left = deadline.map_or(BLIND_NAP, |d| d.saturating_duration_since(Instant::now()));
    let ms = left.min(BLIND_NAP).as_millis() as i32;
    let pfd = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = match sleep {
        Sleep::Nothing => Vec::new(),
        Sleep::Fd(fd) | Sleep::Epoll(fd) => vec![pfd(*fd)],
        Sleep::Fds(build) => build(),
    };
    let _ = kernel::poll(&mut fds, ms);
}

/// One nap of a registered wait: until the eventfd or what `sleep` names wakes us, the
/// deadline, or the cap.
fn nap(w: &Waiting, sleep: &Sleep<'_>, deadline: Option<Instant>, nics: &[Arc<Nic>]) -> Res<()> {
    let cap = if nics.is_empty() {
        KERNEL_NAP_CAP
    } else {
        NAP_CAP
    };
    let left = deadline.map_or(cap, |d| d.saturating_duration_since(Instant::now()));
    let ms = left.min(cap).as_millis() as i32;
    let pfd = |fd: RawFd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    match sleep {
        Sleep::Nothing => kernel::poll(&mut [pfd(w.efd)], ms).map(|_| ()),
        Sleep::Fd(fd) => kernel::poll(&mut [pfd(w.efd), pfd(*fd)], ms).map(|_| ()),
        Sleep::Fds(build) => {
            let mut fds = build();
            fds.push(pfd(w.efd));
            kernel::poll(&mut fds, ms).map(|_| ())
        }
        Sleep::Epoll(epfd) => {
            // This thread's private epoll holds its eventfd; the program's epoll fd is nested
            // in it for the nap: either wakes us, and the program's set is untouched.
            let Some(private) = thread_epoll() else {
                // No fd for it (the fd limit): a short nap on the program's epoll fd.
                blind_nap(sleep, deadline);
                return Ok(());
            };
            let nest = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: *epfd as u64,
            };
            match kernel::epoll_ctl(private, libc::EPOLL_CTL_ADD, *epfd, Some(nest)) {
                Ok(()) => {}
                Err(e) if e == Errno(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            let mut ev = [libc::epoll_event { events: 0, u64: 0 }; 2];
            let r = kernel::epoll_wait(private, &mut ev, ms);
            let _ = kernel::epoll_ctl(private, libc::EPOLL_CTL_DEL, *epfd, None);
            r.map(|_| ())
        }
    }
}

/// Whether a waiting call should still spin (rather than sleep), given when it started.
pub fn should_spin(rt: &Runtime, started: Instant) -> bool {
    match (rt.config.profile, rt.config.spin) {
        (_, None) => true,
        (Profile::Latency, Some(d)) | (Profile::Balanced, Some(d)) => started.elapsed() < d,
    }
}

/// The calling thread's eventfd for waits (created on first use, closed at thread exit).
/// `None` while it cannot be made (the fd limit); a later call tries again.
pub fn thread_eventfd() -> Option<RawFd> {
    thread_local! {
        static EFD: OnceCell<InternalFd> = const { OnceCell::new() };
    }
    EFD.with(|e| made_once(e, || kernel::eventfd().map(InternalFd::new)))
}

/// This thread's private epoll instance, holding its eventfd (see [`Sleep::Epoll`]); like
/// [`thread_eventfd`], tried again while it cannot be made.
fn thread_epoll() -> Option<RawFd> {
    thread_local! {
        static EP: OnceCell<InternalFd> = const { OnceCell::new() };
    }
    EP.with(|e| {
        made_once(e, || {
            kernel::epoll_with(thread_eventfd()?).map(InternalFd::new)
        })
    })
}

/// The fd in `cell`, made by `make` on the first call that succeeds.
fn made_once(
    cell: &OnceCell<InternalFd>,
    make: impl FnOnce() -> Option<InternalFd>,
) -> Option<RawFd> {
    if cell.get().is_none() {
        let _ = cell.set(make()?);
    }
    cell.get().map(|fd| fd.raw())
}

/// The calling thread registered as a sleeper on some interfaces; dropping it takes the
/// registrations back, so no poll ever signals a closed (and maybe reused) fd number.
pub struct Waiting {
    pub efd: RawFd,
    nics: Vec<Arc<Nic>>,
}

impl Waiting {
    /// Registers this thread's eventfd with `nics` (the caller checks its condition after).
    pub fn register(nics: &[Arc<Nic>]) -> Option<Waiting> {
        let efd = thread_eventfd()?;
        for nic in nics {
            let mut g = nic.lock();
            if !g.waiters.contains(&efd) {
                g.waiters.push(efd);
            }
            drop(g);
            // Counted first, `watched` read after (the progress thread does the reverse), so
            // one of the two always sees the other.
            nic.sleepers.fetch_add(1, Ordering::SeqCst);
            if !nic.watched.load(Ordering::SeqCst) {
                super::progress::kick();
            }
        }
        Some(Waiting {
            efd,
            nics: nics.to_vec(),
        })
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        for nic in &self.nics {
            nic.sleepers.fetch_sub(1, Ordering::SeqCst);
            nic.lock().waiters.retain(|&w| w != self.efd);
        }
        kernel::eventfd_drain(self.efd);
    }
}

/// Called by a spinning thread between attempts (not holding any lock): while another
/// thread waits for one of these interfaces' locks, stay off them so it gets its turn. Bounded,
/// and yielding the CPU now and then, in case the waiter cannot run yet.
pub fn make_way(nics: &[Arc<Nic>]) {
    std::hint::spin_loop();
    for i in 0..MAKE_WAY_ROUNDS {
        if !nics
            .iter()
            .any(|n| n.lock_waiters.load(Ordering::Relaxed) > 0)
        {
            return;
        }
        if i % 64 == 63 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// How many rounds (spin hints, a yield every 64) a spinner waits for a lock waiter.
const MAKE_WAY_ROUNDS: u32 = 4096;
