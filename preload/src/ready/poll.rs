//! poll(2) (and select(2), which the abi layer turns into a poll) over a mix of accelerated
//! and kernel fds.

use std::sync::Arc;

use super::readiness;
use crate::errno::{Errno, Res};
use crate::runtime::wait::{wait, Sleep, Wait};
use crate::runtime::{Nic, Runtime};
use crate::socket::{self, Endpoint, State};
use crate::sys::kernel;

/// Whether `fds` holds an accelerated socket (else the kernel's poll answers alone).
pub fn any_ours(fds: &[libc::pollfd]) -> bool {
    fds.iter()
        .any(|p| socket::get(p.fd).is_some_and(|e| !e.is_fresh()))
}

pub fn poll(rt: &Runtime, fds: &mut [libc::pollfd], timeout_ms: i32) -> Res<usize> {
    let eps: Vec<Option<Arc<Endpoint>>> = fds
        .iter()
        .map(|p| {
            socket::get(p.fd)
                .filter(|e| socket::inherit::adopt(e, p.fd))
                .filter(|e| !e.is_fresh())
        })
        .collect();
    let mut nics: Vec<Arc<Nic>> = Vec::new();
    for ep in eps.iter().flatten() {
        for n in ep.nics() {
            if !nics.iter().any(|x| Arc::ptr_eq(x, &n)) {
                nics.push(n);
            }
        }
    }
    // Kernel fds as poll gets them, accelerated ones left out (-1).
    let kernel_fds = |fds: &[libc::pollfd]| -> Vec<libc::pollfd> {
        fds.iter()
            .zip(&eps)
            .map(|(p, e)| libc::pollfd {
                fd: if e.is_some() { -1 } else { p.fd },
                events: p.events,
                revents: 0,
            })
            .collect()
    };
    // What a sleeping poll also wakes on: the kernel fds, and the kernel path of accelerated
    // listeners and UDP sockets.
    let asleep: Vec<libc::pollfd> = {
        let mut v = kernel_fds(fds);
        for (p, e) in fds.iter().zip(&eps) {
            if let Some(ep) = e {
                if matches!(*ep.state(), State::Listener { .. } | State::Udp { .. }) {
                    v.push(libc::pollfd {
                        fd: p.fd,
                        events: libc::POLLIN,
                        revents: 0,
                    });
                }
            }
        }
        v
    };
    let build = || asleep.clone();
    let how = Wait::readiness(
        std::borrow::Cow::Borrowed(&nics),
        timeout_ms,
        Sleep::Fds(&build),
    );
    let r = wait(rt, how, |_| {
        for nic in &nics {
            nic.poll_now();
        }
        // The kernel fds' state now, without waiting.
        let mut kfds = kernel_fds(fds);
        if let Err(e) = kernel::poll(&mut kfds, 0) {
            return Some(Err(e));
        }
        let mut ready = 0;
        for ((p, k), e) in fds.iter_mut().zip(&kfds).zip(&eps) {
            p.revents = match e {
                Some(ep) => {
                    let bits = readiness(ep, p.fd, true).unwrap_or(0);
                    bits & (p.events | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL)
                }
                None => k.revents,
            };
            if p.revents != 0 {
                ready += 1;
            }
        }
        (ready > 0).then_some(Ok(ready))
    });
    match r {
        Err(e) if e == Errno::EAGAIN => Ok(0), // the timeout passed with nothing ready
        r => r,
    }
}
