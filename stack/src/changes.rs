//! Which application sockets the stack changed, for readiness waiters that keep a ready list
//! (the preload's epoll) instead of looking at every socket they watch on every wait.
//!
//! A socket is noted each time the stack processed a packet for it, dispatched it or ran its
//! timer (its readiness may have gone up: data, an ACK that freed send buffer, a connection
//! established for a listener, a reset, a timeout), and when a datagram arrived for it. Calls
//! only take readiness down (a read empties the buffer, a send fills it) or, when they raise
//! it, go through the stack (a connect) which notes the socket on its next dispatch.
//!
//! The notes are a ring of the last [`CAPACITY`] socket ids with a running count: each reader
//! keeps the count it read up to and reads what came after. A reader that fell more than
//! [`CAPACITY`] behind is told so and looks at everything once (as it does at its start).

use crate::SocketId;

/// Notes kept: a reader polls the stack between two batches of packets, each a few dozen
/// notes, so one that falls this far behind has been away long enough to look at everything.
pub const CAPACITY: usize = 4096;

pub(crate) struct Changes {
    ring: Box<[u64]>,
    /// Notes made so far; the last is at `ring[(head - 1) % CAPACITY]`.
    head: u64,
}

impl Default for Changes {
    fn default() -> Changes {
        Changes {
            ring: vec![0; CAPACITY].into_boxed_slice(),
            head: 0,
        }
    }
}

impl Changes {
    /// Notes that socket `id` changed (0: a socket no application holds, nothing to note).
    pub fn note(&mut self, id: u64) {
        if id == 0 {
            return;
        }
        self.ring[(self.head % CAPACITY as u64) as usize] = id;
        self.head += 1;
    }

    pub fn head(&self) -> u64 {
        self.head
    }

    /// Calls `f` with each socket noted from count `cursor` on, and returns the count to read
    /// from next time; `None` if notes after `cursor` were overwritten (the reader must look at
    /// everything).
    pub fn since(&self, cursor: u64, mut f: impl FnMut(SocketId)) -> Option<u64> {
        if cursor > self.head || self.head - cursor > CAPACITY as u64 {
            return None;
        }
        for n in cursor..self.head {
            f(SocketId(self.ring[(n % CAPACITY as u64) as usize]));
        }
        Some(self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &Changes, cursor: u64) -> (Option<u64>, Vec<u64>) {
        let mut seen = Vec::new();
        let next = c.since(cursor, |s| seen.push(s.0));
        (next, seen)
    }

    #[test]
    fn a_reader_sees_each_note_once_in_order() {
        let mut c = Changes::default();
        let start = c.head();
        for id in [3, 3, 5, 3, 0, 7] {
            c.note(id);
        }
        let (next, seen) = read(&c, start);
        // Every note counts, repeats too: a reader may have read the first before the second.
        assert_eq!(seen, [3, 3, 5, 3, 7]);
        assert_eq!(read(&c, next.unwrap()), (next, vec![]));
        c.note(9);
        assert_eq!(read(&c, next.unwrap()).1, [9]);
    }

    #[test]
    fn a_reader_that_fell_behind_is_told() {
        let mut c = Changes::default();
        let start = c.head();
        for id in 1..=CAPACITY as u64 {
            c.note(id);
        }
        // Exactly CAPACITY behind: all still there.
        let (next, seen) = read(&c, start);
        assert_eq!(seen.len(), CAPACITY);
        assert_eq!(next, Some(CAPACITY as u64));
        c.note(CAPACITY as u64 + 1);
        assert_eq!(read(&c, start), (None, vec![]));
        assert_eq!(read(&c, 1).1.len(), CAPACITY);
        // A cursor from the future (another stack's) is refused too.
        assert_eq!(read(&c, c.head() + 1).0, None);
    }
}
