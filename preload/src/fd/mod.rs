//! File descriptors: which fds are accelerated ([`table`]), which are accel's own and hidden
//! from the program ([`internal`]), and what dup/close/close_range mean for them ([`ops`]).
//! Nothing here knows what a socket is: the table maps fds to any [`ops::Shared`] value.

pub mod internal;
pub mod ops;
pub mod table;

pub use internal::InternalFd;
pub use ops::Shared;
pub use table::Table;
