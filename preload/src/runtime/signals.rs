//! Which signal handlers ran on this thread, so a wait can end with EINTR as the kernel's wait
//! would. abi's trampoline (installed in front of the program's handlers) counts them; the
//! counters are const thread-locals without destructors: safe to touch from a signal handler.

thread_local! {
    /// Handlers of the program that ran on this thread without SA_RESTART (a signal interrupts
    /// only the thread it is delivered to). A socket call's wait that sees this change returns
    /// EINTR.
    static INTERRUPTS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Every handler run on this thread (poll, select and epoll_wait end with EINTR after any).
    static SIGNALS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A handler installed without SA_RESTART ran on this thread.
pub fn note_interrupt() {
    INTERRUPTS.with(|c| c.set(c.get().wrapping_add(1)));
}

/// A handler ran on this thread.
pub fn note_signal() {
    SIGNALS.with(|c| c.set(c.get().wrapping_add(1)));
}

pub fn signals_seen() -> usize {
    SIGNALS.with(|c| c.get())
}

pub fn interrupts() -> usize {
    INTERRUPTS.with(|c| c.get())
}
