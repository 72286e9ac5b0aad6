//! The stack's sockets and what finds them: a slab of smoltcp sockets with, per socket, its
//! place in the timer set and the egress queue, and its 4-tuple in a hash map. The stack drives
//! each socket itself through smoltcp's per-socket entry points (`stack_process`,
//! `stack_dispatch`, `stack_poll_at`): smoltcp's `Interface::poll` walks every socket for each
//! packet, on egress and for its next timer, which makes the cost of a packet grow with the
//! number of connections. Here:
//!
//! - a segment finds its connection by (local port, remote address) in one hash look-up
//!   ([`Sockets::find`]; the stack has one address, so that is the 4-tuple);
//! - egress visits only the sockets in the queue ([`Sockets::queue`]): those a call or a packet
//!   gave something to send, and those whose timer is due;
//! - timers are an ordered set keyed by (time, socket), updated whenever a socket was
//!   processed or dispatched ([`Sockets::schedule`]), so the due ones are the first entries
//!   and the stack's next deadline is the first one.

use std::collections::{BTreeSet, VecDeque};

use core::net::SocketAddrV4;

use rustc_hash::FxHashMap as HashMap;
use smoltcp::socket::{AnySocket, Socket};
use smoltcp::time::Instant;

/// Names a socket in [`Sockets`]. A removed socket's handle may name a later socket.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) struct Handle(u32);

/// A TCP connection's key: (local port, remote address). The stack has one address.
pub(crate) type Key = (u16, SocketAddrV4);

struct Slot {
    socket: Socket<'static>,
    /// Its entry in `timers`.
    timer: Option<Instant>,
    /// It is in `ready`.
    queued: bool,
    /// Its entry in `by_key`.
    key: Option<Key>,
    /// Closed by the application: reaped once done, aborted at this deadline.
    closing: Option<Instant>,
    /// The application socket whose readiness this socket makes (its connection, or the
    /// listener it waits in); 0: none.
    owner: u64,
}

#[derive(Default)]
pub(crate) struct Sockets {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    len: usize,
    timers: BTreeSet<(Instant, Handle)>,
    ready: VecDeque<Handle>,
    by_key: HashMap<Key, Handle>,
    /// Sockets processed or dispatched so far (tests: a packet visits its socket alone).
    #[cfg(test)]
    pub visits: u64,
}

impl Sockets {
    pub fn add<T: AnySocket<'static>>(&mut self, socket: T) -> Handle {
        let slot = Some(Slot {
            socket: socket.upcast(),
            timer: None,
            queued: false,
            key: None,
            closing: None,
            owner: 0,
        });
        self.len += 1;
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                Handle(i)
            }
            None => {
                self.slots.push(slot);
                Handle((self.slots.len() - 1) as u32)
            }
        }
    }

    /// Removes socket `h` with its timer and key (a queued handle is skipped when its turn
    /// comes). Panics if there is none.
    pub fn remove(&mut self, h: Handle) -> Socket<'static> {
        let slot = self.slots[h.0 as usize]
            .take()
            .expect("no socket at this handle");
        if let Some(t) = slot.timer {
            self.timers.remove(&(t, h));
        }
        if let Some(key) = slot.key {
            if self.by_key.get(&key) == Some(&h) {
                self.by_key.remove(&key);
            }
        }
        self.free.push(h.0);
        self.len -= 1;
        slot.socket
    }

    fn slot(&self, h: Handle) -> &Slot {
        self.slots[h.0 as usize]
            .as_ref()
            .expect("no socket at this handle")
    }

    fn slot_mut(&mut self, h: Handle) -> &mut Slot {
        self.slots[h.0 as usize]
            .as_mut()
            .expect("no socket at this handle")
    }

    pub fn contains(&self, h: Handle) -> bool {
        self.slots.get(h.0 as usize).is_some_and(Option::is_some)
    }

    pub fn get<T: AnySocket<'static>>(&self, h: Handle) -> &T {
        T::downcast(&self.slot(h).socket).expect("socket of another kind")
    }

    pub fn get_mut<T: AnySocket<'static>>(&mut self, h: Handle) -> &mut T {
        T::downcast_mut(&mut self.slot_mut(h).socket).expect("socket of another kind")
    }

    pub fn socket_mut(&mut self, h: Handle) -> &mut Socket<'static> {
        &mut self.slot_mut(h).socket
    }

    pub fn iter(&self) -> impl Iterator<Item = (Handle, &Socket<'static>)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (Handle(i as u32), &s.socket)))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Socket `h` makes application socket `id`'s readiness.
    pub fn set_owner(&mut self, h: Handle, id: u64) {
        self.slot_mut(h).owner = id;
    }

    pub fn owner(&self, h: Handle) -> u64 {
        self.slot(h).owner
    }

    // ---------------------------------------------------------------------------------------
    // Demultiplexing.

    /// Files socket `h` under `key` (a newer socket with the same key takes it over).
    pub fn set_key(&mut self, h: Handle, key: Key) {
        let slot = self.slot_mut(h);
        let old = slot.key.replace(key);
        if let Some(old) = old.filter(|o| *o != key) {
            if self.by_key.get(&old) == Some(&h) {
                self.by_key.remove(&old);
            }
        }
        self.by_key.insert(key, h);
    }

    /// The socket filed under `key`.
    pub fn find(&self, key: &Key) -> Option<Handle> {
        self.by_key.get(key).copied()
    }

    /// Takes `key` from socket `h` (it no longer holds that 4-tuple).
    pub fn clear_key(&mut self, h: Handle) {
        if let Some(key) = self.slot_mut(h).key.take() {
            if self.by_key.get(&key) == Some(&h) {
                self.by_key.remove(&key);
            }
        }
    }

    /// Sockets with a 4-tuple (tests).
    #[cfg(test)]
    pub fn keyed(&self) -> usize {
        self.by_key.len()
    }

    // ---------------------------------------------------------------------------------------
    // The egress queue and the timers.

    /// Socket `h` has something to send: the next egress visits it.
    pub fn queue(&mut self, h: Handle) {
        let slot = self.slot_mut(h);
        if !slot.queued {
            slot.queued = true;
            self.ready.push_back(h);
        }
    }

    /// The next socket the egress visits (`None`: the queue is empty). Handles of sockets
    /// removed meanwhile are skipped.
    pub fn next_ready(&mut self) -> Option<Handle> {
        while let Some(h) = self.ready.pop_front() {
            if let Some(slot) = self.slots.get_mut(h.0 as usize).and_then(Option::as_mut) {
                if slot.queued {
                    slot.queued = false;
                    #[cfg(test)]
                    {
                        self.visits += 1;
                    }
                    return Some(h);
                }
            }
        }
        None
    }

    /// Puts `h` back at the head of the queue (the link ran out of TX frames).
    pub fn requeue_first(&mut self, h: Handle) {
        let slot = self.slot_mut(h);
        if !slot.queued {
            slot.queued = true;
            self.ready.push_front(h);
        }
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Queues every socket whose timer is due at `now`; returns whether there was one.
    pub fn queue_due(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(&(t, h)) = self.timers.first() {
            if t > now {
                break;
            }
            self.timers.pop_first();
            any = true;
            let slot = self.slot_mut(h);
            slot.timer = None;
            if !slot.queued {
                slot.queued = true;
                self.ready.push_back(h);
            }
        }
        any
    }

    /// Sets socket `h`'s next poll: queued when `at` is not after `now`, a timer when it is,
    /// nothing when `None`.
    pub fn schedule(&mut self, h: Handle, at: Option<Instant>, now: Instant) {
        let slot = self.slot_mut(h);
        let at = earliest(at, slot.closing);
        let timer = at.filter(|t| *t > now);
        if slot.timer != timer {
            let old = std::mem::replace(&mut slot.timer, timer);
            if let Some(t) = old {
                self.timers.remove(&(t, h));
            }
            if let Some(t) = timer {
                self.timers.insert((t, h));
            }
        }
        if at.is_some_and(|t| t <= now) {
            self.queue(h);
        }
    }

    /// The earliest timer.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Timers set (tests).
    #[cfg(test)]
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    // ---------------------------------------------------------------------------------------
    // Closing.

    /// Marks `h` closed by the application, to be aborted at `deadline` if not done by then.
    pub fn set_closing(&mut self, h: Handle, deadline: Instant) {
        self.slot_mut(h).closing = Some(deadline);
    }

    pub fn closing(&self, h: Handle) -> Option<Instant> {
        self.slot(h).closing
    }
}

/// The earlier of two deadlines (`None`: never).
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
