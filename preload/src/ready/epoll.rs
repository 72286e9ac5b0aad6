//! epoll: accelerated fds are tracked here, kernel fds stay in the kernel's epoll set (and so
//! do fresh sockets, and listeners and UDP sockets for their kernel path).

use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{readiness, wants_kernel};
use crate::errno::{Errno, Res};
use crate::runtime::wait::{wait, Sleep, Wait};
use crate::runtime::{Nic, Runtime};
use crate::socket::{Endpoint, State};
use crate::sys::kernel;

struct Interest {
    fd: RawFd,
    events: u32,
    data: u64,
    ep: Arc<Endpoint>,
    /// EPOLLONESHOT fired: silent until EPOLL_CTL_MOD.
    disabled: bool,
    /// Whether the fd is also in the kernel's set.
    in_kernel: bool,
    /// For EPOLLET: the interfaces' progress count when this interest last fired.
    last_gen: u64,
    /// The socket went to the kernel for good (the interest lives on in the kernel's set).
    gone: bool,
}

/// Accelerated members of every epoll set, by epoll fd.
static EPOLLS: Mutex<BTreeMap<RawFd, Vec<Interest>>> = Mutex::new(BTreeMap::new());
static ANY_EPOLL: AtomicBool = AtomicBool::new(false);

fn epolls() -> MutexGuard<'static, BTreeMap<RawFd, Vec<Interest>>> {
    EPOLLS.lock().unwrap_or_else(|p| p.into_inner())
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
    let pos = set.iter().position(|i| i.fd == fd);
    match op {
        libc::EPOLL_CTL_ADD => {
            if pos.is_some() {
                return Err(Errno(libc::EEXIST));
            }
            let ev = ev.ok_or(Errno::EFAULT)?;
            let in_kernel = wants_kernel(&ep.state());
            if in_kernel {
                kernel::epoll_ctl(epfd, op, fd, Some(ev))?;
            } else if !known_epoll && !kernel::is_epoll(epfd) {
                return Err(Errno::EINVAL);
            }
            set.push(Interest {
                fd,
                events: ev.events,
                data: ev.u64,
                ep,
                disabled: false,
                in_kernel,
                last_gen: 0,
                gone: false,
            });
            ANY_EPOLL.store(true, Ordering::Relaxed);
        }
        libc::EPOLL_CTL_MOD => {
            let i = pos.ok_or(Errno(libc::ENOENT))?;
            let ev = ev.ok_or(Errno::EFAULT)?;
            if set[i].in_kernel {
                kernel::epoll_ctl(epfd, op, fd, Some(ev))?;
            }
            let it = &mut set[i];
            it.events = ev.events;
            it.data = ev.u64;
            it.disabled = false;
            it.last_gen = 0;
        }
        libc::EPOLL_CTL_DEL => {
            let i = pos.ok_or(Errno(libc::ENOENT))?;
            if set[i].in_kernel {
                let _ = kernel::epoll_ctl(epfd, op, fd, None);
            }
            set.remove(i);
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
        set.retain(|i| i.fd != fd);
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
    let mut n = 0;
    let mut any_gone = false;
    for it in set.iter_mut() {
        // A socket a forked child inherited is adopted first; one that goes to the kernel
        // leaves this set for the kernel's.
        if it.ep.from_another_process() && !crate::socket::inherit::adopt(&it.ep, it.fd) {
            if !it.in_kernel {
                let ev = libc::epoll_event {
                    events: it.events,
                    u64: it.data,
                };
                let _ = kernel::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, it.fd, Some(ev));
            }
            it.gone = true;
            any_gone = true;
            continue;
        }
        // One look at the socket's state for all of this (a lock, no allocation): this runs
        // for every member on every round of a spinning epoll_wait.
        let (fresh, leaves_kernel, gen) = {
            let st = it.ep.state();
            let fresh = matches!(*st, State::Fresh);
            let mut gen = 0u64;
            st.each_nic(|nic| {
                gen = gen.wrapping_add(nic.generation());
                if !nics.iter().any(|x| Arc::ptr_eq(x, nic)) {
                    nics.push(nic.clone());
                }
            });
            (fresh, it.in_kernel && !wants_kernel(&st), gen)
        };
        // Sockets that became accelerated while in the set: a connection leaves the kernel's
        // set (its unconnected kernel socket would report bogus events).
        if leaves_kernel {
            let _ = kernel::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, it.fd, None);
            it.in_kernel = false;
        }
        if fresh || it.disabled || n >= out.len() {
            continue;
        }
        // The kernel side of a listener or UDP socket in the kernel's set is reported by the
        // kernel's epoll_wait; looking here too cost a poll() per interest per round and
        // could report the fd twice.
        let bits = readiness(&it.ep, it.fd, !it.in_kernel)
            .map(poll_to_epoll)
            .unwrap_or(0);
        let mask = it.events | libc::EPOLLERR as u32 | libc::EPOLLHUP as u32;
        let fired = bits & mask;
        if fired == 0 {
            continue;
        }
        if it.events & libc::EPOLLET as u32 != 0 {
            if gen == it.last_gen {
                continue;
            }
            it.last_gen = gen;
        }
        if it.events & libc::EPOLLONESHOT as u32 != 0 {
            it.disabled = true;
        }
        out[n] = libc::epoll_event {
            events: fired,
            u64: it.data,
        };
        n += 1;
    }
    if any_gone {
        set.retain(|i| !i.gone);
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
    // The interfaces' progress count at a round that found nothing ready: until it moves, a
    // spinning round only polls. Readiness changes that move no count (a timer that closes
    // a socket without sending, another thread's call) are seen by the full look every
    // KERNEL_CHECK_EVERY rounds.
    let mut idle_at: Option<u64> = None;
    let how = Wait::readiness(
        std::borrow::Cow::Owned(Vec::new()),
        timeout_ms,
        Sleep::Epoll(epfd),
    );
    let r = wait(rt, how, |round| {
        let progress = poll_all(rt);
        // The first round, the first after a sleep, and every KERNEL_CHECK_EVERY-th look at
        // everything, the program's kernel fds included (they cost a syscall).
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
