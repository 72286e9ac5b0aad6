//! A value published once and never freed, that can be forgotten: the runtime of a process,
//! which a forked child must stop using without dropping (dropping the copy would undo the
//! parent's state: flows, sockets).

use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// A `&'static T` slot: set by [`Published::publish`], cleared by [`Published::forget`].
pub struct Published<T>(AtomicPtr<T>);

impl<T> Published<T> {
    #[allow(clippy::new_without_default)] // const, for statics
    pub const fn new() -> Self {
        Published(AtomicPtr::new(ptr::null_mut()))
    }

    /// Leaks `v` and makes it the slot's value.
    pub fn publish(&self, v: T) -> &'static T {
        let r: &'static T = Box::leak(Box::new(v));
        self.0.store(ptr::from_ref(r).cast_mut(), Ordering::Release);
        r
    }

    /// The published value, if any.
    #[inline]
    pub fn get(&self) -> Option<&'static T> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: `p` is null or came from `Box::leak` in `publish`; nothing frees it (forget
        // only clears the slot), so it is valid for 'static and only shared references exist.
        unsafe { p.as_ref() }
    }

    /// Clears the slot without dropping the value (async-signal-safe: one atomic store).
    pub fn forget(&self) {
        self.0.store(ptr::null_mut(), Ordering::Release);
    }
}
