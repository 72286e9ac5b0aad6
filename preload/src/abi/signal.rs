//! Signals: a handler that runs while a call waits in accel must interrupt it as it would
//! interrupt the kernel's wait (EINTR unless the handler was installed with SA_RESTART). accel
//! spins in user space, where no signal interrupts anything, so it installs its own trampoline
//! in front of the program's handlers and counts the interrupting ones.

use libc::{c_int, c_void};

use crate::runtime::signals;
use crate::sys::{guard, next};

const NSIG: usize = 65;

/// The program's handler per signal (address; 0 = none of ours) and its sigaction flags.
static HANDLERS: [std::sync::atomic::AtomicUsize; NSIG] =
    [const { std::sync::atomic::AtomicUsize::new(0) }; NSIG];
static FLAGS: [std::sync::atomic::AtomicI32; NSIG] =
    [const { std::sync::atomic::AtomicI32::new(0) }; NSIG];

extern "C" fn trampoline(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
    let i = sig as usize;
    if i >= NSIG {
        return;
    }
    let flags = FLAGS[i].load(std::sync::atomic::Ordering::Relaxed);
    signals::note_signal();
    if flags & libc::SA_RESTART == 0 {
        signals::note_interrupt();
    }
    let h = HANDLERS[i].load(std::sync::atomic::Ordering::Relaxed);
    if h == 0 || h == libc::SIG_IGN || h == libc::SIG_DFL {
        return;
    }
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed this address as an SA_SIGINFO handler.
        let f: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
            unsafe { std::mem::transmute(h) };
        f(sig, info, ctx);
    } else {
        // SAFETY: the program installed this address as a plain handler.
        let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(h) };
        f(sig);
    }
}

/// sigaction(2): the program's handler runs behind accel's trampoline, which tells waits in
/// accel that it ran (so they end with EINTR as the kernel's would); the program sees its
/// own handler when it asks.
///
/// # Safety
///
/// As sigaction(2): non-NULL `act` and `old` are the caller's.
#[no_mangle]
pub unsafe extern "C" fn sigaction(
    sig: c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> c_int {
    let i = sig as usize;
    if guard::in_accel() || !(1..NSIG).contains(&i) {
        // SAFETY: same arguments.
        return unsafe { next::sigaction(sig, act, old) };
    }
    let prev_h = HANDLERS[i].load(std::sync::atomic::Ordering::Relaxed);
    let prev_f = FLAGS[i].load(std::sync::atomic::Ordering::Relaxed);
    let r = if act.is_null() {
        // SAFETY: a query; same arguments.
        unsafe { next::sigaction(sig, act, old) }
    } else {
        // SAFETY: `act` is the caller's sigaction.
        let mut a = unsafe { *act };
        let h = a.sa_sigaction;
        if h == libc::SIG_IGN || h == libc::SIG_DFL {
            HANDLERS[i].store(0, std::sync::atomic::Ordering::Relaxed);
            // SAFETY: same arguments.
            unsafe { next::sigaction(sig, act, old) }
        } else {
            HANDLERS[i].store(h, std::sync::atomic::Ordering::Relaxed);
            FLAGS[i].store(a.sa_flags, std::sync::atomic::Ordering::Relaxed);
            a.sa_sigaction = trampoline as *const () as usize;
            a.sa_flags |= libc::SA_SIGINFO;
            // SAFETY: a valid sigaction built from the caller's, with our trampoline.
            unsafe { next::sigaction(sig, &a, old) }
        }
    };
    if r == 0 && !old.is_null() && prev_h != 0 {
        // SAFETY: `old` is the caller's out-parameter, just filled by the kernel.
        let o = unsafe { &mut *old };
        if o.sa_sigaction == trampoline as *const () as usize {
            // Report the program's own handler, not our trampoline.
            o.sa_sigaction = prev_h;
            o.sa_flags = prev_f;
        }
    }
    r
}

/// glibc's signal(): BSD semantics (SA_RESTART), through our sigaction.
///
/// # Safety
///
/// As signal(3): `handler` is SIG_IGN, SIG_DFL or a handler function.
#[no_mangle]
pub unsafe extern "C" fn signal(sig: c_int, handler: libc::sighandler_t) -> libc::sighandler_t {
    // SAFETY: zeroed sigaction is a valid starting point; fields set below.
    let mut a: libc::sigaction = unsafe { std::mem::zeroed() };
    a.sa_sigaction = handler;
    a.sa_flags = libc::SA_RESTART;
    // SAFETY: `a.sa_mask` is ours to initialise.
    unsafe { libc::sigemptyset(&mut a.sa_mask) };
    // SAFETY: as above.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to locals.
    if unsafe { sigaction(sig, &a, &mut old) } != 0 {
        return libc::SIG_ERR;
    }
    old.sa_sigaction
}
