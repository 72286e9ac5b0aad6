//! The process's accelerated interfaces: one stack per interface over its AF_XDP queues, a
//! progress thread that runs timers and wakes sleepers, and the wait primitive every blocking
//! call uses (spin, then sleep with no lost wake-up).
//!
//! Locking: each [`Nic`] has one mutex around its stack and queues. Whoever polls the stack
//! (an application thread spinning, or the progress thread) does it under that lock and, when
//! the poll moved anything, signals the eventfd of every registered sleeper. A sleeper registers
//! its eventfd first and checks its condition after, so a wake-up cannot fall between the two:
//! a poll that moves anything after the registration leaves the eventfd readable.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use libaccel::attach::{Attachment, Options};
use libaccel::control::ControlPlane;
use libaccel::xdp::XdpMode;
use stack::Stack;

use crate::abi::kernel;
use crate::config::{Config, Profile};

/// A stack and what it runs over, behind the interface's lock.
pub struct NicInner {
    pub stack: Stack,
    pub att: Attachment,
    /// eventfds of threads sleeping in a mixed (kernel + accelerated) wait on this interface.
    waiters: Vec<RawFd>,
    last_refresh: Instant,
    /// Program polls in a row that found the stack quiet and skipped even the clock read.
    quiet_polls: u32,
    /// Flows of closed connections, removed once the stack is surely done with them (the close
    /// handshake and TIME-WAIT need their packets).
    flow_removals: Vec<(Instant, libaccel::xdp::FlowKey)>,
    /// Listening flows and how many users hold each (the listener and the connections it
    /// accepted, which the wildcard flow carries too): removed when the last lets go. An
    /// accept costs no BPF map update this way, and the flow map does not fill up with one
    /// entry per connection.
    shared: std::collections::HashMap<libaccel::xdp::FlowKey, usize>,
    /// accel's copies of closed connections' kernel sockets (they hold the ports), with when
    /// to close them.
    fd_closes: Vec<(Instant, RawFd)>,
}

impl NicInner {
    /// Removes `key` from the filter after `delay` (unless it is added again meanwhile).
    pub fn remove_flow_later(&mut self, key: libaccel::xdp::FlowKey, delay: Duration) {
        self.flow_removals.push((Instant::now() + delay, key));
    }

    /// Adds a flow for this process, cancelling a pending removal of the same key.
    pub fn add_flow(&mut self, key: &libaccel::xdp::FlowKey) -> Result<(), libaccel::xdp::Error> {
        if !self.shared.contains_key(key) {
            self.flow_removals.retain(|(_, k)| k != key);
        }
        self.att.filter.add_flow(key)
    }

    /// Adds a listening flow held by its listener (see `shared`).
    pub fn add_shared_flow(
        &mut self,
        key: &libaccel::xdp::FlowKey,
    ) -> Result<(), libaccel::xdp::Error> {
        // A removal still pending from the last users must not take the new listener's flow.
        self.flow_removals.retain(|(_, k)| k != key);
        self.att.filter.add_flow(key)?;
        *self.shared.entry(*key).or_insert(0) += 1;
        Ok(())
    }

    /// Closes `fd` (one of accel's own) after `delay`.
    pub fn close_fd_later(&mut self, fd: RawFd, delay: Duration) {
        self.fd_closes.push((Instant::now() + delay, fd));
    }

    /// One more user of a listening flow (an accepted connection); it lets go with
    /// `release_shared_flow`.
    pub fn hold_shared_flow(&mut self, key: &libaccel::xdp::FlowKey) {
        *self.shared.entry(*key).or_insert(0) += 1;
    }

    /// A user of a shared (listening) flow lets go of it, counted at once: the flow stays
    /// while others (the listener, connections it accepted) hold it, and the last one's
    /// release removes it after `grace` (a closed connection's handshake still needs its
    /// packets).
    pub fn release_shared_flow(&mut self, key: libaccel::xdp::FlowKey, grace: Duration) {
        match self.shared.get_mut(&key) {
            Some(users) if *users > 1 => *users -= 1,
            _ => {
                self.shared.remove(&key);
                self.remove_flow_later(key, grace);
            }
        }
    }
}

/// One accelerated interface.
pub struct Nic {
    pub name: String,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    inner: Mutex<NicInner>,
    /// AF_XDP socket fds (readable when frames arrived).
    pub xsk_fds: Vec<RawFd>,
    epoch: Instant,
    /// The coarse clock at `epoch` and how far a stack time computed from it can be behind the
    /// real one (see [`Nic::coarse_horizon`]); `None` without a coarse clock.
    coarse: Option<(Duration, Duration)>,
    /// Counts polls that moved anything (edge-triggered epoll fires again after one).
    generation: std::sync::atomic::AtomicU64,
    /// When a program thread last polled this stack (stack time, microseconds): while the
    /// program polls, the progress thread leaves the queues and the lock to it.
    last_app_poll: std::sync::atomic::AtomicU64,
    /// Program threads asleep waiting on this interface: they need the progress thread to
    /// watch the queues.
    sleepers: AtomicUsize,
    /// Whether the progress thread watches the queues now (a sleeper kicks it otherwise).
    watched: AtomicBool,
    /// Threads blocked on `inner`: a spinning thread retakes the lock within nanoseconds of
    /// releasing it, and the mutex does not hand over, so without this a second thread (the
    /// program's or accel's own) could wait for as long as the spin lasts.
    lock_waiters: AtomicUsize,
}

impl Nic {
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

    /// Locks the interface without polling. A thread that has to wait for the lock says so
    /// (`lock_waiters`), and spinning threads make way for it (see [`make_way`]).
    pub fn lock_only(&self) -> MutexGuard<'_, NicInner> {
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

    /// Locks the interface and polls its stack once (for a program thread).
    pub fn lock(&self) -> MutexGuard<'_, NicInner> {
        let mut g = self.lock_only();
        self.poll_locked(&mut g);
        g
    }

    /// Polls the stack (under the lock) for a program thread and wakes sleepers if anything
    /// moved.
    pub fn poll_locked(&self, g: &mut NicInner) -> bool {
        self.poll_as(g, true)
    }

    fn poll_as(&self, g: &mut NicInner, program: bool) -> bool {
        // A spinning wait between packets: nothing arrived, nothing changed, no timer is due
        // (by the coarse clock). That needs no real clock; every QUIET_POLLS-th such poll
        // still runs the full path (time for the control-plane refresh, `last_app_poll` for
        // the progress thread, and a bound on how late a timer runs if the coarse clock erred).
        if program && g.quiet_polls < QUIET_POLLS {
            let horizon = self.coarse_horizon();
            let NicInner { stack, att, .. } = g;
            let quiet = match horizon {
                // A timer set (a TCP retransmission, a delayed ACK) but not due before the
                // horizon does not need this poll.
                Some(h) => stack.quiet_until(h, &mut att.queues),
                None => stack.quiet(&mut att.queues),
            };
            if quiet {
                g.quiet_polls += 1;
                return false;
            }
        }
        g.quiet_polls = 0;
        // One clock read per poll (this runs on every spin of a waiting call).
        let wall = Instant::now();
        let now = self.stack_time(wall);
        if program {
            self.last_app_poll
                .store(now.total_micros().max(1) as u64, Ordering::Relaxed);
        }
        let NicInner { stack, att, .. } = g;
        let moved = stack.poll(now, &mut att.queues, &mut att.control);
        if wall.saturating_duration_since(g.last_refresh) >= Duration::from_millis(10) {
            g.last_refresh = wall;
            let _ = g.att.control.refresh();
            let now = wall;
            let NicInner {
                att,
                flow_removals,
                shared,
                ..
            } = g;
            flow_removals.retain(|(when, key)| {
                if *when > now {
                    return true;
                }
                // Shared flows are counted when released; one in `shared` again has users.
                if !shared.contains_key(key) {
                    let _ = att.filter.remove_flow(key);
                }
                false
            });
            g.fd_closes.retain(|&(when, fd)| {
                if when <= now {
                    crate::fdtable::unmark_internal(fd);
                    let _ = kernel::close(fd);
                    false
                } else {
                    true
                }
            });
        }
        if moved {
            self.wake_locked(g);
        }
        moved
    }

    /// Whether the program polled this stack less than [`APP_RECHECK`] ago and nobody sleeps
    /// on it: the progress thread then keeps off the queues, or every frame would wake it and
    /// it would take the lock from a busy program (a spinning wait, or a server whose
    /// epoll_wait always finds work).
    fn program_polls(&self) -> bool {
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let last = self.last_app_poll.load(Ordering::Relaxed);
        last != 0
            && (self.now().total_micros().max(0) as u64).saturating_sub(last)
                < APP_RECHECK.as_micros() as u64
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Wakes every sleeper (after the caller changed socket state under the lock).
    pub fn wake_locked(&self, g: &mut NicInner) {
        self.generation.fetch_add(1, Ordering::Relaxed);
        for fd in g.waiters.drain(..) {
            kernel::eventfd_signal(fd);
        }
    }

    /// When the stack next needs a poll, as a wall-clock instant.
    pub fn next_timer(&self, g: &mut NicInner) -> Option<Instant> {
        let now = self.now();
        g.stack.poll_at(now).map(|t| self.to_instant(t))
    }

    /// Registers the calling thread's eventfd so the next poll that moves anything signals it.
    pub fn register_waiter(&self, g: &mut NicInner, efd: RawFd) {
        if !g.waiters.contains(&efd) {
            g.waiters.push(efd);
        }
    }

    fn unregister_waiter(&self, efd: RawFd) {
        self.lock_only().waiters.retain(|&w| w != efd);
    }
}

/// The accelerated interfaces of this process.
pub struct Runtime {
    pub config: Config,
    pub nics: Vec<Arc<Nic>>,
}

static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Handlers of the program that ran on this thread without SA_RESTART (counted by abi's
    /// trampoline; a signal interrupts only the thread it is delivered to). A wait that sees
    /// this change returns EINTR, as the kernel's wait would. Const, destructor-free: safe to
    /// touch from a signal handler.
    static INTERRUPTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Every handler run on this thread (poll, select and epoll_wait end with EINTR after any).
    static SIGNALS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

pub fn note_interrupt() {
    INTERRUPTS.with(|c| c.set(c.get().wrapping_add(1)));
}

pub fn note_signal() {
    SIGNALS.with(|c| c.set(c.get().wrapping_add(1)));
}

pub fn signals_seen() -> usize {
    SIGNALS.with(|c| c.get())
}

pub fn interrupts() -> usize {
    INTERRUPTS.with(|c| c.get())
}

/// In a child made by fork(): the parent's stacks, queues and connections are not ours to
/// touch, so every fd behaves as the kernel socket it is (the child sends, receives and
/// closes nothing on the parent's behalf).
#[inline]
pub fn is_forked_child() -> bool {
    FORKED_CHILD.load(Ordering::Relaxed)
}

extern "C" fn after_fork_in_child() {
    if RUNTIME.get().is_some_and(|r| r.is_some()) {
        FORKED_CHILD.store(true, Ordering::Relaxed);
    }
}

/// The runtime, started on first use; `None` when acceleration is off (then one warning line
/// said why, and every socket stays on the kernel).
pub fn get() -> Option<&'static Runtime> {
    if is_forked_child() {
        return None;
    }
    RUNTIME.get_or_init(|| crate::abi::guarded(start)).as_ref()
}

/// The runtime if it was started already (never starts it).
pub fn current() -> Option<&'static Runtime> {
    RUNTIME.get()?.as_ref()
}

fn warn(msg: &str) {
    let line = format!("accel: {msg}\n");
    kernel::write_stderr(line.as_bytes());
}

fn start() -> Option<Runtime> {
    // Only a program started with the library in LD_PRELOAD (accel-run) accelerates: a test or
    // bench binary that links the crate gets plain pass-through interposers.
    if !std::env::var("LD_PRELOAD").is_ok_and(|v| v.contains("libaccel_preload")) {
        return None;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            warn(&format!("not accelerating: {e}"));
            return None;
        }
    };
    let before = crate::fdtable::open_fds();
    if let Some(filter) = &config.log {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let names: Vec<String> = if config.interfaces.is_empty() {
        match libaccel::control::interfaces() {
            Ok(all) => all
                .into_iter()
                .filter(|i| i.up && i.ethernet && !i.addrs.is_empty() && i.name != "lo")
                .map(|i| i.name)
                .collect(),
            Err(e) => {
                warn(&format!("not accelerating: cannot list interfaces: {e}"));
                return None;
            }
        }
    } else {
        config.interfaces.clone()
    };
    let mut nics = Vec::new();
    for name in &names {
        match open_nic(name) {
            Ok(n) => nics.push(Arc::new(n)),
            Err(e) => warn(&format!("not accelerating {name}: {e}")),
        }
    }
    if nics.is_empty() {
        if names.is_empty() {
            warn("not accelerating: no up Ethernet interface with an IPv4 address (pass one with accel-run --interface)");
        }
        return None;
    }
    let rt = Runtime { config, nics };
    keep_stderr();
    if let Some(k) = progress_kick_fd() {
        crate::fdtable::mark_internal(k);
    }
    // What was opened since `before` and is surely accel's own: AF_XDP sockets and BPF
    // objects, then the control planes' netlink sockets by name (not every netlink socket:
    // another thread's getaddrinfo may have opened one meanwhile).
    for fd in crate::fdtable::open_fds() {
        if !before.contains(&fd) && kernel::is_accel_kind(fd) {
            crate::fdtable::mark_internal(fd);
        }
    }
    for nic in &rt.nics {
        for fd in nic.lock_only().att.control.raw_fds() {
            crate::fdtable::mark_internal(fd);
        }
    }
    kernel::at_fork_child(after_fork_in_child);
    spawn_progress(&rt);
    kernel::at_exit(at_exit);
    Some(rt)
}

fn open_nic(name: &str) -> Result<Nic, String> {
    let control = ControlPlane::open(name).map_err(|e| e.to_string())?;
    let info = control.interface().clone();
    let (addr, prefix_len) = *info
        .addrs
        .first()
        .ok_or_else(|| format!("{name} has no IPv4 address"))?;
    let att = Attachment::open(
        control,
        &Options {
            queues: None,
            mode: XdpMode::Auto,
        },
    )
    .map_err(|e| e.to_string())?;
    let xsk_fds = att
        .queues
        .queues()
        .iter()
        .map(|q| q.fd().as_raw_fd())
        .collect();
    let mut config = stack::Config::new(info.mac, addr, prefix_len);
    config.mtu = info.mtu as usize;
    config.random_seed = kernel::random_u64();
    config.gateway = att
        .control
        .route(Ipv4Addr::UNSPECIFIED)
        .and_then(|r| r.gateway);
    let epoch = Instant::now();
    // The coarse clock lags the real one by up to a tick; a slack of two (and 100 us for the
    // reading after `epoch`) keeps the horizon at or past the real stack time.
    let coarse = kernel::coarse_clock()
        .zip(kernel::coarse_resolution())
        .filter(|(_, res)| *res <= Duration::from_millis(10))
        .map(|(at_epoch, res)| (at_epoch, 2 * res + Duration::from_micros(100)));
    let stack = Stack::new(config, stack::Instant::from_micros(0));
    Ok(Nic {
        name: name.to_owned(),
        addr,
        prefix_len,
        inner: Mutex::new(NicInner {
            stack,
            att,
            waiters: Vec::new(),
            last_refresh: Instant::now(),
            quiet_polls: 0,
            flow_removals: Vec::new(),
            shared: std::collections::HashMap::new(),
            fd_closes: Vec::new(),
        }),
        xsk_fds,
        epoch,
        coarse,
        last_app_poll: std::sync::atomic::AtomicU64::new(0),
        sleepers: AtomicUsize::new(0),
        watched: AtomicBool::new(true),
        lock_waiters: AtomicUsize::new(0),
        generation: std::sync::atomic::AtomicU64::new(0),
    })
}

impl Runtime {
    /// The interface that owns local address `ip` (`None` for addresses accel does not serve).
    pub fn nic_for_local(&self, ip: Ipv4Addr) -> Option<&Arc<Nic>> {
        self.nics.iter().find(|n| n.addr == ip)
    }

    /// The interface a packet to `dst` leaves through, if accel serves it (on-link or routed
    /// through that interface; loopback and unknown destinations stay on the kernel).
    pub fn nic_for_remote(&self, dst: Ipv4Addr) -> Option<&Arc<Nic>> {
        if dst.is_loopback() || dst.is_unspecified() || dst.is_multicast() || dst.is_broadcast() {
            return None;
        }
        if self.nics.iter().any(|n| n.addr == dst) {
            return None; // our own address: the kernel's loopback path
        }
        self.nics
            .iter()
            .find(|n| n.lock_only().att.control.route(dst).is_some())
    }
}

/// Runs timers and picks up frames while no application thread does.
fn spawn_progress(rt: &Runtime) {
    let nics: Vec<Arc<Nic>> = rt.nics.clone();
    let _ = std::thread::Builder::new()
        .name("accel-progress".into())
        .spawn(move || {
            crate::abi::enter_guard();
            let kick = progress_kick_fd();
            let mut last_snapshot = Instant::now() - SNAPSHOT_EVERY;
            loop {
                let mut fds: Vec<RawFd> = kick.into_iter().collect();
                let mut until: Option<Instant> = None;
                for nic in &nics {
                    // Off the queues first, then look for sleepers: a thread going to sleep
                    // counts itself first, then looks at `watched` (see `Waiting::register`),
                    // so one of the two always sees the other.
                    nic.watched.store(false, Ordering::SeqCst);
                    if nic.program_polls() {
                        // The program polls the queues and runs the timers (every stack poll
                        // does). Taking the lock here would only stall it, and worse if this
                        // thread lost its CPU while holding it. Look again in a while in case
                        // it stopped polling without going to sleep.
                        let t = Instant::now() + APP_RECHECK;
                        until = Some(until.map_or(t, |u| u.min(t)));
                        continue;
                    }
                    nic.watched.store(true, Ordering::SeqCst);
                    let mut g = nic.lock_only();
                    nic.poll_as(&mut g, false);
                    if let Some(t) = nic.next_timer(&mut g) {
                        until = Some(until.map_or(t, |u| u.min(t)));
                    }
                    fds.extend_from_slice(&nic.xsk_fds);
                }
                let cap = Instant::now() + SNAPSHOT_EVERY;
                let until = until.map_or(cap, |u| u.min(cap));
                let ms = until.saturating_duration_since(Instant::now()).as_millis() as i32;
                kernel::poll_readable(&fds, ms);
                if let Some(k) = kick {
                    kernel::eventfd_drain(k);
                }
                if last_snapshot.elapsed() >= SNAPSHOT_EVERY {
                    last_snapshot = Instant::now();
                    write_snapshot(&nics);
                    if let Some(nic) = nics.first() {
                        let line = counters_line(nic, &nic.lock_only());
                        *LAST_STATS.lock().unwrap_or_else(|p| p.into_inner()) = Some(line);
                    }
                }
            }
        });
}

/// How often the process publishes its snapshot for accel-stat.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(100);

/// This process's snapshot for accel-stat (libaccel::stats schema).
fn snapshot(nics: &[Arc<Nic>]) -> libaccel::stats::Snapshot {
    use libaccel::stats::{Snapshot, Stack as StackInfo, VERSION};
    let mut stacks: Vec<StackInfo> = nics
        .iter()
        .map(|nic| {
            let g = nic.lock_only();
            StackInfo {
                interface: nic.name.clone(),
                queues: g.att.queues.queues().iter().map(|q| q.queue_id()).collect(),
                xdp_mode: format!("{:?}", g.att.filter.attached_mode()).to_lowercase(),
                copy_mode: match g.att.queues.queues().first().map(|q| q.copy_mode()) {
                    Some(libaccel::queue::CopyMode::ZeroCopy) => "zero-copy".into(),
                    _ => "copy".into(),
                },
                counters: g
                    .stack
                    .counters()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                sockets: Vec::new(),
            }
        })
        .collect();
    for (fd, ep) in crate::fdtable::all() {
        if let Some((nic_name, sock)) = crate::ops::describe(fd, &ep) {
            if let Some(st) = stacks.iter_mut().find(|s| s.interface == nic_name) {
                st.sockets.push(sock);
            }
        }
    }
    Snapshot {
        version: VERSION,
        pid: std::process::id(),
        program: std::fs::read_to_string("/proc/self/comm")
            .unwrap_or_default()
            .trim()
            .to_string(),
        updated_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        stacks,
    }
}

/// Writes the snapshot atomically (temp file + rename); failures are silent (accel-stat is an
/// observer, the program must not notice).
fn write_snapshot(nics: &[Arc<Nic>]) {
    let dir = libaccel::stats::dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let snap = snapshot(nics);
    let Ok(text) = serde_json::to_string(&snap) else {
        return;
    };
    let tmp = libaccel::stats::temp_path_for(&dir, snap.pid);
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, libaccel::stats::path_for(&dir, snap.pid));
    }
}

/// The eventfd that makes the progress thread look again at the queues: a thread going to
/// sleep kicks it when it was leaving them to a polling program (`Nic::watched`).
fn progress_kick_fd() -> Option<RawFd> {
    static KICK: OnceLock<Option<OwnedFd>> = OnceLock::new();
    KICK.get_or_init(kernel::eventfd)
        .as_ref()
        .map(|f| f.as_raw_fd())
}

/// Quiet polls (no clock read) a program thread makes before one full poll.
const QUIET_POLLS: u32 = 256;

/// How long after the program's last poll the progress thread takes the queues back. Short
/// rechecks cost: each timer wake-up of the progress thread preempts a spinning thread and, on
/// a busy two-core machine, pushed softirq work to ksoftirqd, which then ran only at the next
/// tick (4 ms stalls at 1 ms). A program that stops polling without sleeping (computing, or
/// blocked in a call accel does not see) has its traffic served at most this late.
const APP_RECHECK: Duration = Duration::from_millis(10);

/// The calling thread's eventfd for mixed waits (created on first use, closed at thread exit).
pub fn thread_eventfd() -> Option<RawFd> {
    thread_local! {
        static EFD: Option<crate::fdtable::InternalFd> = kernel::eventfd().map(crate::fdtable::InternalFd::new);
    }
    EFD.with(|e| e.as_ref().map(|fd| fd.raw()))
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
            let mut g = nic.lock_only();
            nic.register_waiter(&mut g, efd);
            drop(g);
            // Counted first, `watched` read after (the progress thread does the reverse).
            nic.sleepers.fetch_add(1, Ordering::SeqCst);
            if !nic.watched.load(Ordering::SeqCst) {
                if let Some(k) = progress_kick_fd() {
                    kernel::eventfd_signal(k);
                }
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
            nic.unregister_waiter(self.efd);
        }
        kernel::eventfd_drain(self.efd);
    }
}

/// This thread's private epoll instance, holding its eventfd: an epoll_wait that must also
/// wake on accel's progress sleeps here, with the program's epoll fd nested inside for the
/// time of the sleep, so the program's own set is never changed.
pub fn thread_epoll() -> Option<RawFd> {
    thread_local! {
        static EP: Option<crate::fdtable::InternalFd> =
            kernel::epoll_with(thread_eventfd()?).map(crate::fdtable::InternalFd::new);
    }
    EP.with(|e| e.as_ref().map(|fd| fd.raw()))
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

/// Whether a waiting call should still spin (rather than sleep), given when it started.
pub fn should_spin(rt: &Runtime, started: Instant) -> bool {
    match (rt.config.profile, rt.config.spin) {
        (_, None) => true,
        (Profile::Latency, Some(d)) | (Profile::Balanced, Some(d)) => started.elapsed() < d,
    }
}

/// Counters of every interface, one line each, for ACCEL_STATS=1.
pub fn stats_lines() -> Vec<String> {
    let Some(rt) = current() else {
        return Vec::new();
    };
    rt.nics
        .iter()
        .map(|nic| match try_lock_briefly(nic) {
            Some(g) => {
                let line = counters_line(nic, &g);
                *LAST_STATS.lock().unwrap_or_else(|p| p.into_inner()) = Some(line.clone());
                line
            }
            // Held by the code this thread was running when a signal handler called exit():
            // the progress thread's last copy (at most 100 ms old).
            None => LAST_STATS
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| format!("accel-stats: interface={}", nic.name)),
        })
        .collect()
}

/// The last counters line the progress thread made (for an exit that cannot take the lock).
static LAST_STATS: Mutex<Option<String>> = Mutex::new(None);

fn counters_line(nic: &Nic, g: &NicInner) -> String {
    let mut line = format!("accel-stats: interface={}", nic.name);
    for (name, value) in g.stack.counters().iter() {
        line.push_str(&format!(" {name}={value}"));
    }
    line
}

/// The interface's lock if it can be had within 50 ms. At exit the lock may be held by this
/// very thread (exit() called from a signal handler that interrupted accel's code): waiting
/// would deadlock, so the caller does without.
fn try_lock_briefly(nic: &Nic) -> Option<MutexGuard<'_, NicInner>> {
    let until = Instant::now() + Duration::from_millis(50);
    loop {
        match nic.inner.try_lock() {
            Ok(g) => return Some(g),
            Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) if Instant::now() < until => {
                std::thread::yield_now()
            }
            Err(std::sync::TryLockError::WouldBlock) => return None,
        }
    }
}

/// A copy of stderr taken when accel starts: programs such as nginx later point fd 2 at their
/// own log, and ACCEL_STATS lines belong on the stderr the user gave.
static STDERR_COPY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(2);

fn keep_stderr() {
    // F_DUPFD_CLOEXEC at or above 500: out of the way of the program's own low fds.
    if let Ok(fd) = kernel::dup_cloexec_above(2, 500) {
        STDERR_COPY.store(fd, Ordering::Relaxed);
        crate::fdtable::mark_internal(fd);
    }
}

fn write_user_stderr(b: &[u8]) {
    kernel::write_fd(STDERR_COPY.load(Ordering::Relaxed), b);
}

/// How long an exiting process keeps its stacks running so data it wrote (and its FINs)
/// reach the peer: after exit nothing retransmits for it.
const EXIT_DRAIN: Duration = Duration::from_secs(2);

extern "C" fn at_exit() {
    if is_forked_child() {
        return;
    }
    let Some(rt) = current() else { return };
    crate::abi::guarded(|| {
        let until = Instant::now() + EXIT_DRAIN;
        for nic in &rt.nics {
            while let Some(mut g) = try_lock_briefly(nic) {
                nic.poll_locked(&mut g);
                if !g.stack.has_unacked_output() || Instant::now() >= until {
                    break;
                }
                drop(g);
                std::thread::yield_now();
            }
        }
        let dir = libaccel::stats::dir();
        let _ = std::fs::remove_file(libaccel::stats::path_for(&dir, std::process::id()));
        if rt.config.stats_at_exit {
            for line in stats_lines() {
                write_user_stderr(format!("{line}\n").as_bytes());
            }
        }
    });
}
