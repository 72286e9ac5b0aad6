//! The progress thread's kick: an eventfd that makes it look again at what it watches (a
//! thread going to sleep while it left the queues to a polling program; a new child's channel).

use std::os::fd::RawFd;
use std::sync::OnceLock;

use crate::fd::InternalFd;
use crate::sys::kernel;

/// The kick eventfd (made on first use).
pub fn fd() -> Option<RawFd> {
    static KICK: OnceLock<Option<InternalFd>> = OnceLock::new();
    KICK.get_or_init(|| kernel::eventfd().map(InternalFd::new))
        .as_ref()
        .map(|f| f.raw())
}

/// Makes the progress thread look again now.
pub fn kick() {
    if let Some(k) = fd() {
        kernel::eventfd_signal(k);
    }
}
