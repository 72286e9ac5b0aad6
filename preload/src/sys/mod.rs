//! The kernel below the preload: the real libc functions (found with `dlsym(RTLD_NEXT)`, so
//! accel's own calls bypass its interposers) and safe wrappers of them for the rest of the
//! crate, plus the flags that make interposers pass straight through to them, and the
//! allocator of accel's own Rust code ([`alloc`]: large blocks as fresh mappings), and accel's
//! environment variables as they were at load ([`env`]: a constructor).
//!
//! # Safety
//!
//! [`next`] transmutes each resolved symbol to the C prototype glibc declares for that very
//! name and calls it with its caller's arguments: its functions are `unsafe fn`s whose contract
//! is the libc function's own. [`kernel`] calls them only with pointers derived from Rust
//! references that live for the call, with their true lengths, so the kernel never reads or
//! writes outside them; [`alloc`] hands out mappings by the `GlobalAlloc` contract; every
//! `unsafe` block says what it relies on. Nothing else in the
//! crate (but `abi/`, the C boundary) contains unsafe code.
#![allow(unsafe_code)]

pub mod alloc;
pub mod env;
pub mod guard;
pub mod kernel;
pub mod leak;
pub mod next;
