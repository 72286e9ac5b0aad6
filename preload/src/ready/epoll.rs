//! epoll: accelerated fds are tracked here, kernel fds stay in the kernel's epoll set (and so
//! do fresh sockets, and listeners and UDP sockets for their kernel path).
//!
//! Like the kernel's epoll, a set keeps a ready list: the members to look at on the next wait.
//! A member joins it when it is added or modified, when a stack notes that it changed the
//! member's socket (`Stack::changed_since`: a packet, a timer, a dispatch), and, while
//! level-triggered and ready, after each time it is reported (behind the others, so a full
//! `maxevents` serves members in turn). A wait so costs what changed, not what is watched.
//! The whole set is looked at once when something no stack notes happened: a member's state
//! changed (a connect or listen after it was added, a hand-over to the kernel: see
//! `socket::restated`), the process forked (inherited members are adopted; a parent's
//! listeners join again), or a wait fell so far behind a stack that its notes were lost.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap as HashMap;
use stack::SocketId;

use super::{readiness, wants_kernel};
use crate::errno::{Errno, Res};
use crate::runtime::wait::{wait, Sleep, Wait};
use crate::runtime::{self, family, Nic, Runtime};
use crate::socket::{self, Endpoint, State};
use crate::sys::kernel;

/// A stack socket: (its interface, by address; its id in that interface's stack).
type SockKey = (usize, SocketId);

fn sock_key(nic: &Arc<Nic>, id: SocketId) -> SockKey {
    (Arc::as_ptr(nic) as usize, id)
}

struct Interest {
    fd: RawFd,
    events: u32,
    data: u64,
    ep: Arc<Endpoint>,
    /// EPOLLONESHOT fired: silent until EPOLL_CTL_MOD.
    disabled: bool,
    /// Whether the fd is also in the kernel's set.
    in_kernel: bool,
    /// The stack sockets whose changes concern it (filed in `Set::by_sock`).
    keys: Vec<SockKey>,
    /// In the ready list.
    queued: bool,
    /// Tells this member from a later one in the same slot.
    stamp: u64,
}

#[derive(Default)]
struct Set {
    members: Vec<Option<Interest>>,
    free: Vec<usize>,
    by_fd: HashMap<RawFd, usize>,
    /// Stack socket -> the members (slot, stamp) it makes ready.
    by_sock: HashMap<SockKey, Vec<(usize, u64)>>,
    /// Per interface of the members: the stack's note count read up to.
    cursors: Vec<(Arc<Nic>, u64)>,
    /// Members to look at on the next wait (slot, stamp).
    ready: VecDeque<(usize, u64)>,
    /// (restated count, process generation, forks) when the whole set was last looked at.
    looked: Option<(u64, u64, u64)>,
    stamps: u64,
}

/// Accelerated members of every epoll set, by epoll fd.
static EPOLLS: Mutex<BTreeMap<RawFd, Set>> = Mutex::new(BTreeMap::new());
static ANY_EPOLL: AtomicBool = AtomicBool::new(false);

fn epolls() -> MutexGuard<'static, BTreeMap<RawFd, Set>> {
    EPOLLS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The stack sockets an endpoint in state `st` is served by.
fn stack_sockets(st: &State, mut f: impl FnMut(&Arc<Nic>, SocketId)) {
    match st {
        State::Listener { on, .. } => on.iter().for_each(|o| f(&o.nic, o.id)),
        State::Conn { on, .. } | State::Udp { on, .. } => f(&on.nic, on.id),
        State::Fresh | State::Bound { .. } => {}
    }
}

impl Set {
    fn is_empty(&self) -> bool {
        self.by_fd.is_empty()
    }

    fn add(&mut self, it: Interest) -> usize {
        let fd = it.fd;
        let i = match self.free.pop() {
            Some(i) => {
                self.members[i] = Some(it);
                i
            }
            None => {
                self.members.push(Some(it));
                self.members.len() - 1
            }
        };
        self.by_fd.insert(fd, i);
        i
    }

    fn remove(&mut self, i: usize) -> Option<Interest> {
        let it = self.members.get_mut(i)?.take()?;
        self.by_fd.remove(&it.fd);
        self.unfile(i, &it);
        self.free.push(i);
        Some(it)
    }

    fn unfile(&mut self, i: usize, it: &Interest) {
        unfile(&mut self.by_sock, i, &it.keys);
    }

    /// Files member `i` under the stack sockets of its endpoint's state (read now), starting
    /// to read the notes of interfaces new to the set.
    fn file(&mut self, i: usize) {
        let Set {
            members,
            by_sock,
            cursors,
            ..
        } = self;
        let Some(it) = members[i].as_mut() else {
            return;
        };
        let mut keys = Vec::new();
        let mut nics: Vec<Arc<Nic>> = Vec::new();
        stack_sockets(&it.ep.state(), |nic, id| {
            keys.push(sock_key(nic, id));
            nics.push(nic.clone());
        });
        if keys == it.keys {
            return;
        }
        unfile(by_sock, i, &it.keys);
        for k in &keys {
            by_sock.entry(*k).or_default().push((i, it.stamp));
        }
        it.keys = keys;
        for nic in nics {
            if !cursors.iter().any(|(n, _)| Arc::ptr_eq(n, &nic)) {
                let head = nic.lock().stack().changes_head();
                cursors.push((nic, head));
            }
        }
    }

    fn enqueue(&mut self, i: usize) {
        if let Some(it) = self.members[i].as_mut() {
            if !it.queued {
                it.queued = true;
                self.ready.push_back((i, it.stamp));
            }
        }
    }

    /// Looks at every member: adopts what a forked child inherited (or passes it to the
    /// kernel's set), moves connections that became accelerated out of the kernel's set,
    /// files each under its stack sockets again, and queues them all.
    fn look_at_all(&mut self, epfd: RawFd) {
        // In a forked child, the interfaces filed so far are the parent's copies (their locks
        // as they were at fork: never to be taken here); members are filed again under the
        // interfaces they are adopted into.
        if self.cursors.iter().any(|(nic, _)| nic.inherited()) {
            self.cursors.clear();
            self.by_sock.clear();
            for it in self.members.iter_mut().flatten() {
                it.keys.clear();
            }
        }
        // Notes from here on are read next time; what came before does not matter, as every
        // member is looked at.
        for (nic, cursor) in self.cursors.iter_mut() {
            *cursor = nic.lock().stack().changes_head();
        }
        for i in 0..self.members.len() {
            let Some(it) = self.members[i].as_mut() else {
                continue;
            };
            // A socket a forked child inherited is adopted first; one that goes to the
            // kernel leaves this set for the kernel's.
            if it.ep.from_another_process() && !socket::inherit::adopt(&it.ep, it.fd) {
                if !it.in_kernel {
                    let ev = libc::epoll_event {
                        events: it.events,
                        u64: it.data,
                    };
                    let _ = kernel::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, it.fd, Some(ev));
                }
                self.remove(i);
                continue;
            }
            // Sockets that became accelerated while in the set: a connection leaves the
            // kernel's set (its unconnected kernel socket would report bogus events).
            let (fresh, kernel_kind) = {
                let st = it.ep.state();
                (matches!(*st, State::Fresh), wants_kernel(&st))
            };
            if it.in_kernel && !kernel_kind {
                let _ = kernel::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, it.fd, None);
                it.in_kernel = false;
            }
            // And the other way: one handed to the kernel for good (a child took it over, it
            // went elsewhere) is the kernel's to report; later epoll_ctl calls on the fd go
            // to the kernel too.
            if fresh && !it.in_kernel {
                let ev = libc::epoll_event {
                    events: it.events,
                    u64: it.data,
                };
                let _ = kernel::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, it.fd, Some(ev));
                self.remove(i);
                continue;
            }
            self.file(i);
            self.enqueue(i);
        }
    }

    /// Queues the members whose stack sockets changed since the last read; false if notes
    /// were lost (the caller looks at everything).
    fn read_notes(&mut self) -> bool {
        let mut complete = true;
        let Set {
            cursors,
            by_sock,
            members,
            ready,
            ..
        } = self;
        for (nic, cursor) in cursors.iter_mut() {
            let g = nic.lock();
            let key = Arc::as_ptr(nic) as usize;
            let next = g.stack().changed_since(*cursor, |id| {
                let Some(list) = by_sock.get(&(key, id)) else {
                    return;
                };
                for &(i, stamp) in list {
                    if let Some(it) = members[i].as_mut().filter(|m| m.stamp == stamp) {
                        if !it.queued {
                            it.queued = true;
                            ready.push_back((i, stamp));
                        }
                    }
                }
            });
            match next {
                Some(n) => *cursor = n,
                None => complete = false,
            }
        }
        complete
    }
}

/// Takes member `i` off the lists of stack sockets `keys`.
fn unfile(by_sock: &mut HashMap<SockKey, Vec<(usize, u64)>>, i: usize, keys: &[SockKey]) {
    for k in keys {
        if let Some(v) = by_sock.get_mut(k) {
            v.retain(|&(j, _)| j != i);
            if v.is_empty() {
                by_sock.remove(k);
            }
        }
    }
}

pub fn epoll_ctl(
    epfd: RawFd,
    op: i32,
    fd: RawFd,
    ep: Arc<Endpoint>,
    ev: Option<libc::epoll_event>,
) -> Res<()> {
    let mut all = epolls();
    // A set that already holds interests was checked to be an epoll fd (an fd that is
    // closed leaves EPOLLS): no readlink of /proc/self/fd per EPOLL_CTL_ADD.
    let known_epoll = all.get(&epfd).is_some_and(|s| !s.is_empty());
    let set = all.entry(epfd).or_default();
    let pos = set.by_fd.get(&fd).copied();
    match op {
        libc::EPOLL_CTL_ADD => {
            if pos.is_some() {
                return Err(Errno(libc::EEXIST));
            }
            let ev = ev.ok_or(Errno::EFAULT)?;
            // Counted from before its state is read: a connect that races with this add is
            // either seen here or makes the next wait look at the whole set.
            ep.watch();
            let in_kernel = wants_kernel(&ep.state());
            if in_kernel {
                kernel::epoll_ctl(epfd, op, fd, Some(ev))?;
            } else if !known_epoll && !kernel::is_epoll(epfd) {
                return Err(Errno::EINVAL);
            }
            set.stamps += 1;
            let i = set.add(Interest {
                fd,
                events: ev.events,
                data: ev.u64,
                ep,
                disabled: false,
                in_kernel,
                keys: Vec::new(),
                queued: false,
                stamp: set.stamps,
            });
            set.file(i);
            set.enqueue(i);
            ANY_EPOLL.store(true, Ordering::Relaxed);
        }
        libc::EPOLL_CTL_MOD => {
            let i = pos.ok_or(Errno(libc::ENOENT))?;
            let ev = ev.ok_or(Errno::EFAULT)?;
            let Some(it) = set.members[i].as_mut() else {
                return Err(Errno(libc::ENOENT));
            };
            if it.in_kernel {
                kernel::epoll_ctl(epfd, op, fd, Some(ev))?;
            }
            it.events = ev.events;
            it.data = ev.u64;
            it.disabled = false;
            set.enqueue(i);
        }
        libc::EPOLL_CTL_DEL => {
            let i = pos.ok_or(Errno(libc::ENOENT))?;
            if let Some(it) = set.remove(i) {
                if it.in_kernel {
                    let _ = kernel::epoll_ctl(epfd, op, fd, None);
                }
            }
        }
        _ => return Err(Errno::EINVAL),
    }
    Ok(())
}

/// An fd is closing: forget its interests (the kernel drops it from its sets by itself), and
/// the set itself if it was an epoll fd.
pub fn forget(fd: RawFd) {
    if !ANY_EPOLL.load(Ordering::Relaxed) {
        return;
    }
    let mut all = epolls();
    all.remove(&fd);
    for set in all.values_mut() {
        if let Some(i) = set.by_fd.get(&fd).copied() {
            set.remove(i);
        }
    }
}

fn poll_to_epoll(bits: i16) -> u32 {
    let b = bits as u16 as u32;
    let mut e = 0;
    for (p, ev) in [
        (libc::POLLIN, libc::EPOLLIN),
        (libc::POLLOUT, libc::EPOLLOUT),
        (libc::POLLERR, libc::EPOLLERR),
        (libc::POLLHUP, libc::EPOLLHUP),
        (libc::POLLRDHUP, libc::EPOLLRDHUP),
    ] {
        if b & p as u16 as u32 != 0 {
            e |= ev as u32;
        }
    }
    e
}

/// Polls every interface once: readiness (read by [`collect`]) then reflects what arrived.
/// Returns their summed progress counts.
fn poll_all(rt: &Runtime) -> u64 {
    rt.nics
        .iter()
        .map(|nic| {
            nic.poll_now();
            nic.generation()
        })
        .sum()
}

/// The ready accelerated members of set `epfd`, written to `out`; `nics` gets the interfaces
/// they are served on.
fn collect(epfd: RawFd, out: &mut [libc::epoll_event], nics: &mut Vec<Arc<Nic>>) -> usize {
    let mut all = epolls();
    let Some(set) = all.get_mut(&epfd) else {
        return 0;
    };
    let now = (socket::restated(), runtime::generation(), family::forks());
    if set.looked != Some(now) || !set.read_notes() {
        set.looked = Some(now);
        set.look_at_all(epfd);
    }
    for (nic, _) in &set.cursors {
        if !nics.iter().any(|x| Arc::ptr_eq(x, nic)) {
            nics.push(nic.clone());
        }
    }
    // Each queued member once: the level-triggered ones reported go behind the others (looked
    // at again next time), the ones not ready leave, and when `out` is full the rest keep
    // their place for the next wait.
    let mut n = 0;
    for _ in 0..set.ready.len() {
        if n >= out.len() {
            break;
        }
        let Some((i, stamp)) = set.ready.pop_front() else {
            break;
        };
        let Some(it) = set.members[i].as_mut().filter(|m| m.stamp == stamp) else {
            continue;
        };
        it.queued = false;
        if it.disabled {
            continue;
        }
        // The kernel side of a listener or UDP socket in the kernel's set is reported by the
        // kernel's epoll_wait; looking here too cost a poll() per interest per round and
        // could report the fd twice. A fresh socket: the kernel answers.
        let Some(bits) = readiness(&it.ep, it.fd, !it.in_kernel) else {
            continue;
        };
        let mask = it.events | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32;
        let fired = poll_to_epoll(bits) & mask;
        if fired == 0 {
            continue;
        }
        out[n] = libc::epoll_event {
            events: fired,
            u64: it.data,
        };
        n += 1;
        if it.events & libc::EPOLLONESHOT as u32 != 0 {
            it.disabled = true;
        } else if it.events & libc::EPOLLET as u32 == 0 {
            it.queued = true;
            set.ready.push_back((i, stamp));
        }
    }
    n
}

/// Whether set `epfd` has accelerated members (else the kernel's epoll_wait answers alone).
pub fn has_members(epfd: RawFd) -> bool {
    ANY_EPOLL.load(Ordering::Relaxed) && epolls().get(&epfd).is_some_and(|s| !s.is_empty())
}

/// epoll_wait over a set with accelerated members.
pub fn epoll_wait(
    rt: &Runtime,
    epfd: RawFd,
    events: &mut [libc::epoll_event],
    timeout_ms: i32,
) -> Res<usize> {
    // The interfaces' progress count at a round that found nothing ready (the ready list is
    // empty then): until it moves, a spinning round only polls. What moves no count (another
    // thread's epoll_ctl, a state change) is seen by the look every KERNEL_CHECK_EVERY rounds.
    let mut idle_at: Option<u64> = None;
    let how = Wait::readiness(
        std::borrow::Cow::Owned(Vec::new()),
        timeout_ms,
        Sleep::Epoll(epfd),
    );
    let r = wait(rt, how, |round| {
        let progress = poll_all(rt);
        // The first round, the first after a sleep, and every KERNEL_CHECK_EVERY-th look at
        // the ready list whatever the progress, and at the program's kernel fds (they cost a
        // syscall).
        let thorough = round.n == 1 || round.thorough;
        let mut n = 0;
        if thorough || idle_at != Some(progress) {
            let nics = round.nics.to_mut();
            nics.clear();
            n = collect(epfd, events, nics);
            idle_at = (n == 0).then_some(progress);
        }
        if n < events.len() && thorough {
            match kernel::epoll_wait(epfd, &mut events[n..], 0) {
                Ok(k) => n += k,
                Err(e) => return Some(Err(e)),
            }
        }
        (n > 0).then_some(Ok(n))
    });
    match r {
        Err(e) if e == Errno::EAGAIN => Ok(0), // the timeout passed with nothing ready
        r => r,
    }
}
