//! For a stack that drives sockets one by one (accel, third_party/smoltcp/README.md): the
//! context the sockets' per-packet entry points take, at the time given.

use super::*;

impl Interface {
    /// The interface's context, its clock set to `now`, for `tcp::Socket::stack_process` and
    /// the other per-socket entry points.
    pub fn context_at(&mut self, now: Instant) -> &mut InterfaceInner {
        self.inner.now = now;
        &mut self.inner
    }
}
