//! One accelerated interface: an engine (a stack over the interface's AF_XDP queues, its flows
//! in the XDP filter, its control-plane mirror) behind one lock, and what waiting threads and
//! the progress thread need to share it.
//!
//! Locking: [`Nic::lock`] only locks. Polling is explicit ([`Nic::poll`] under the lock, or
//! [`Nic::poll_now`]); a poll that moved anything wakes every registered sleeper (see
//! `wait.rs` for why no wake-up is lost).

use std::net::Ipv4Addr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[cfg(test)]
use libaccel::xdp::FlowKey;
use stack::engine::Engine;
use stack::Stack;

use crate::fd::InternalFd;
use crate::sys::kernel;

/// What the preload's engines run on: the interface's AF_XDP attachment; in the crate's unit
/// tests, an in-memory wire (no privileges needed).
#[cfg(not(test))]
pub type NicBackend = libaccel::attach::Attachment;
#[cfg(test)]
pub type NicBackend = stack::memory::MemoryBackend<FlowKey>;

/// What the runtime asks of a backend beyond running an engine.
pub trait Serves {
    /// Whether packets to `dst` leave through this interface (a route through it).
    fn reaches(&self, dst: Ipv4Addr) -> bool;
    /// fds that become readable when frames arrive (the progress thread sleeps on them).
    fn wake_fds(&self) -> Vec<RawFd>;
    /// Queue ids, XDP mode and copy mode, for accel-stat.
    fn stats_info(&self) -> (Vec<u32>, String, String);
    /// A new connection to the helper for a child about to be forked (see
    /// `family::prepare`), if this backend has a helper.
    fn spare_conn(&self) -> Option<std::os::fd::OwnedFd>;
    /// The link's own counters (summed over its queues), beside the stack's in accel-stat.
    fn link_counters(&self) -> Vec<(&'static str, u64)>;
}

impl Serves for libaccel::attach::Attachment {
    fn reaches(&self, dst: Ipv4Addr) -> bool {
        // Loopback is the kernel's own path, whatever the routes say.
        !dst.is_loopback() && self.control.route(dst).is_some()
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        use std::os::fd::AsRawFd;
        self.queues
            .queues()
            .iter()
            .map(|q| q.fd().as_raw_fd())
            .collect()
    }

    fn stats_info(&self) -> (Vec<u32>, String, String) {
        let queues = self.queues.queues();
        let copy = match queues.first().map(|q| q.copy_mode()) {
            Some(libaccel::queue::CopyMode::ZeroCopy) => "zero-copy",
            _ => "copy",
        };
        (
            queues.iter().map(|q| q.queue_id()).collect(),
            format!("{:?}", self.xdp_mode()).to_lowercase(),
            copy.into(),
        )
    }

    fn link_counters(&self) -> Vec<(&'static str, u64)> {
        let mut kicks = 0;
        let mut held = 0;
        let mut pushed = 0;
        for q in self.queues.queues() {
            kicks += q.counters.tx_kicks;
            held += q.counters.tx_held;
            pushed += q.counters.tx_held_pushed;
        }
        vec![
            ("tx_kicks", kicks),
            ("tx_kick_held", held),
            ("tx_kick_held_pushed", pushed),
        ]
    }

    fn spare_conn(&self) -> Option<std::os::fd::OwnedFd> {
        match self.helper().spare() {
            Ok(c) => Some(c.into_fd()),
            Err(e) => {
                tracing::warn!(error = %e, "asking accel's helper for a forked child's connection");
                None
            }
        }
    }
}

#[cfg(test)]
impl Serves for stack::memory::MemoryBackend<FlowKey> {
    fn reaches(&self, dst: Ipv4Addr) -> bool {
        self.resolver.table.contains_key(&dst)
    }

    fn wake_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn stats_info(&self) -> (Vec<u32>, String, String) {
        (vec![0], "memory".into(), "copy".into())
    }

    fn spare_conn(&self) -> Option<std::os::fd::OwnedFd> {
        None
    }

    fn link_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// An engine as the preload runs it: over [`NicBackend`], holding accel's own fds (copies of
/// closed connections' kernel sockets, which keep their ports) until their time is up.
pub type NicEngine = Engine<NicBackend, InternalFd>;

/// The interface's state behind its lock.
pub struct NicInner {
    pub engine: NicEngine,
    /// eventfds of threads sleeping in a wait on this interface.
    pub(super) waiters: Vec<RawFd>,
    /// Program polls in a row that found the stack quiet and skipped even the clock read.
    quiet_polls: u32,
    /// Send or receive calls whose first attempt found nothing to do, since a poll last moved
    /// anything (see [`Nic::missed`]).
    misses: u32,
}

impl NicInner {
    pub fn stack(&self) -> &Stack {
        self.engine.stack()
    }

    pub fn stack_mut(&mut self) -> &mut Stack {
        self.engine.stack_mut()
    }
}

/// One accelerated interface.
pub struct Nic {
    pub name: String,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    inner: Mutex<NicInner>,
    /// fds readable when frames arrived (AF_XDP sockets).
    pub wake_fds: Vec<RawFd>,
    epoch: Instant,
    /// The coarse clock at `epoch` and how far a stack time computed from it can be behind the
    /// real one (see [`Nic::coarse_horizon`]); `None` without a coarse clock.
    coarse: Option<(Duration, Duration)>,
    /// Counts polls that moved anything (edge-triggered epoll fires again after one).
    generation: AtomicU64,
    /// When a program thread last polled this stack (stack time, microseconds): while the
    /// program polls, the progress thread leaves the queues and the lock to it.
    last_app_poll: AtomicU64,
    /// Program threads asleep waiting on this interface: they need the progress thread to
    /// watch the queues.
    pub(super) sleepers: AtomicUsize,
    /// Whether the progress thread watches the queues now (a sleeper kicks it otherwise).
    pub(super) watched: AtomicBool,
    /// The process generation that opened it (see `process`): in a forked child, the parent's
    /// interfaces are not the child's to touch.
    process: u64,
    /// A batched poll held frames back while the progress thread watched the queues (asleep
    /// until a frame arrives or a timer is due, not looking at the program's polls): it was
    /// kicked once to come back and keep the bound (see [`Nic::poll_batched`]); it clears
    /// this when it looks.
    pub(super) tx_alarm: AtomicBool,
    /// Threads blocked on `inner`: a spinning thread retakes the lock within nanoseconds of
    /// releasing it, and the mutex does not hand over, so without this a second thread (the
    /// program's or accel's own) could wait for as long as the spin lasts.
    pub(super) lock_waiters: AtomicUsize,
}

/// Quiet polls (no clock read) a program thread makes before one full poll.
const QUIET_POLLS: u32 = 256;

/// How long after the program's last poll the progress thread takes the queues back. Short
/// rechecks cost: each timer wake-up of the progress thread preempts a spinning thread and, on
/// a busy two-core machine, pushed softirq work to ksoftirqd, which then ran only at the next
/// tick (4 ms stalls at 1 ms). A program that stops polling without sleeping (computing, or
/// blocked in a call accel does not see) has its traffic served at most this late.
pub const APP_RECHECK: Duration = Duration::from_millis(10);

impl Nic {
    /// An interface served by `engine`, whose stack time 0 is `epoch`.
    pub fn new(
        name: &str,
        addr: Ipv4Addr,
        prefix_len: u8,
        engine: NicEngine,
        epoch: Instant,
    ) -> Nic {
        // The coarse clock lags the real one by up to a tick; a slack of two (and 100 us for
        // the reading after `epoch`) keeps the horizon at or past the real stack time.
        let coarse = kernel::coarse_clock()
            .zip(kernel::coarse_resolution())
            .filter(|(_, res)| *res <= Duration::from_millis(10))
            .map(|(at_epoch, res)| (at_epoch, 2 * res + Duration::from_micros(100)));
        let wake_fds = engine.backend().wake_fds();
        Nic {
            name: name.to_owned(),
            addr,
            prefix_len,
            inner: Mutex::new(NicInner {
                engine,
                waiters: Vec::new(),
                quiet_polls: 0,
                misses: 0,
            }),
            wake_fds,
            epoch,
            coarse,
            generation: AtomicU64::new(0),
            last_app_poll: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            watched: AtomicBool::new(true),
            tx_alarm: AtomicBool::new(false),
            process: super::lineage::generation(),
            lock_waiters: AtomicUsize::new(0),
        }
    }

    /// Whether this interface was opened by an ancestor process (this is a forked child).
    #[inline]
    pub fn inherited(&self) -> bool {
        self.process != super::lineage::generation()
    }

    pub fn now(&self) -> stack::Instant {
        self.stack_time(Instant::now())
    }

    fn stack_time(&self, wall: Instant) -> stack::Instant {
        stack::Instant::from_micros(wall.saturating_duration_since(self.epoch).as_micros() as i64)
    }

    /// A stack time the clock has surely not passed yet, read from the coarse clock (a few ns,
    /// no TSC): a spinning poll uses it to see that no timer can be due without reading the
    /// real clock.
    fn coarse_horizon(&self) -> Option<stack::Instant> {
        let (base, slack) = self.coarse?;
        let since = kernel::coarse_clock()?.saturating_sub(base) + slack;
        Some(stack::Instant::from_micros(since.as_micros() as i64))
    }

    fn to_instant(&self, t: stack::Instant) -> Instant {
        self.epoch + Duration::from_micros(t.total_micros().max(0) as u64)
    }

    /// Locks the interface (no poll). A thread that has to wait for the lock says so
    /// (`lock_waiters`), and spinning threads make way for it (see `wait::make_way`).
    pub fn lock(&self) -> MutexGuard<'_, NicInner> {
        match self.inner.try_lock() {
            Ok(g) => return g,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        self.lock_waiters.fetch_add(1, Ordering::SeqCst);
        let g = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.lock_waiters.fetch_sub(1, Ordering::SeqCst);
        g
    }

    /// The lock if it can be had within 50 ms. At exit the lock may be held by this very
    /// thread (exit() called from a signal handler that interrupted accel's code): waiting
    /// would deadlock, so the caller does without.
    pub fn try_lock_briefly(&self) -> Option<MutexGuard<'_, NicInner>> {
        let until = Instant::now() + Duration::from_millis(50);
        loop {
            match self.inner.try_lock() {
                Ok(g) => return Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < until => {
                    std::thread::yield_now()
                }
                Err(std::sync::TryLockError::WouldBlock) => return None,
            }
        }
    }

    /// Polls the stack (under the lock) for a program thread: takes in what arrived, sends
    /// what calls queued, runs due timers; wakes sleepers if anything moved.
    pub fn poll(&self, g: &mut NicInner) -> bool {
        self.poll_with(g, true, false)
    }

    /// [`Nic::poll`] for a send or receive call that completed at once: the frames it sent may
    /// wait for a later kick (see libaccel's `kick`). Every other poll of a program thread
    /// (a call's later attempts before it spins or sleeps, poll/select/epoll_wait, control
    /// calls) and every poll of the progress thread kicks all of them.
    pub fn poll_batched(&self, g: &mut NicInner) -> bool {
        self.poll_with(g, true, true)
    }

    /// A data call's poll in attempt `round` of its wait: batched for the first attempt (the
    /// call may complete at once and the program make the next), a full push for any later one
    /// (the call is about to spin or sleep).
    pub fn poll_in_round(&self, g: &mut NicInner, round: u32) -> bool {
        self.poll_with(g, true, round <= 1)
    }

    /// A send or receive call's first attempt did not complete it: it goes on to wait (its
    /// next attempt pushes), or fails with EAGAIN. One such failure is what a server's event
    /// loop sees between its events (read until EAGAIN, then the next ready socket), and keeps
    /// the batch; a second one in a row, with no poll moving anything between them, is a
    /// program spinning on a non-blocking socket: it waits, so what earlier calls held back
    /// leaves now (a push).
    pub fn missed(&self, g: &mut NicInner) {
        g.misses += 1;
        if g.misses >= 2 {
            g.engine.push();
        }
    }

    /// Locks, polls once for a program thread, unlocks.
    pub fn poll_now(&self) -> bool {
        let mut g = self.lock();
        self.poll(&mut g)
    }

    /// A poll by the progress thread (it does not count as the program polling).
    pub(super) fn poll_for_progress(&self, g: &mut NicInner) -> bool {
        self.poll_with(g, false, false)
    }

    fn poll_with(&self, g: &mut NicInner, program: bool, batched: bool) -> bool {
        // A spinning wait between packets: nothing arrived, nothing changed, no timer is due
        // (by the coarse clock). That needs no real clock; every QUIET_POLLS-th such poll
        // still runs the full path (time for the engine's housekeeping, `last_app_poll` for
        // the progress thread, and a bound on how late a timer runs if the coarse clock erred).
        if program && g.quiet_polls < QUIET_POLLS {
            // A timer set (a TCP retransmission, a delayed ACK) but not due before the horizon
            // does not need this poll.
            if g.engine.quiet(self.coarse_horizon()) {
                g.quiet_polls += 1;
                return false;
            }
        }
        g.quiet_polls = 0;
        // One clock read per poll (this runs on every spin of a waiting call).
        let now = self.now();
        if program {
            self.last_app_poll
                .store(now.total_micros().max(1) as u64, Ordering::Relaxed);
        }
        let moved = if batched {
            let moved = g.engine.poll_batched(now);
            // Frames held back leave by the program's next wait, or by the progress thread
            // APP_RECHECK after this poll. That thread looks at the program's polls only when
            // it left the queues to it; if it watches them instead (the program slept before
            // this call), it sleeps until a frame or a timer: wake it, once.
            if self.watched.load(Ordering::Relaxed)
                && g.engine.tx_held()
                && !self.tx_alarm.swap(true, Ordering::Relaxed)
            {
                super::kick::kick();
            }
            moved
        } else {
            g.engine.poll(now)
        };
        if moved {
            g.misses = 0;
            self.wake(g);
        }
        moved
    }

    /// Whether the program polled this stack less than [`APP_RECHECK`] ago and nobody sleeps
    /// on it: the progress thread then keeps off the queues, or every frame would wake it and
    /// it would take the lock from a busy program (a spinning wait, or a server whose
    /// epoll_wait always finds work).
    pub(super) fn program_polls(&self) -> bool {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let last = self.last_app_poll.load(Ordering::Relaxed);
        last != 0
            && (self.now().total_micros().max(0) as u64).saturating_sub(last)
                < APP_RECHECK.as_micros() as u64
    }

    /// When the progress thread takes the queues back if the program does not poll again:
    /// [`APP_RECHECK`] after its last poll. This bounds how late a frame the program's last
    /// call held back for a batched kick leaves when the program then blocks somewhere accel
    /// does not see.
    pub(super) fn program_recheck_at(&self) -> Instant {
        let last = self.last_app_poll.load(Ordering::Relaxed);
        self.to_instant(stack::Instant::from_micros(last as i64)) + APP_RECHECK
    }

    /// Program threads asleep in a wait on this interface now.
    pub fn sleepers(&self) -> usize {
        self.sleepers.load(Ordering::SeqCst)
    }

    /// Counts polls that moved anything, and state changes that calls announced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Wakes every sleeper (after the caller changed socket state under the lock).
    pub fn wake(&self, g: &mut NicInner) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        for fd in g.waiters.drain(..) {
            kernel::eventfd_signal(fd);
        }
    }

    /// When the engine next needs a poll, as a wall-clock instant.
    pub fn next_timer(&self, g: &mut NicInner) -> Option<Instant> {
        let now = self.now();
        g.engine.poll_at(now).map(|t| self.to_instant(t))
    }

    /// Whether packets to `dst` leave through this interface.
    pub fn reaches(&self, dst: Ipv4Addr) -> bool {
        self.lock().engine.backend().reaches(dst)
    }
}
