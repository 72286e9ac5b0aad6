//! Loading BPF programs other than accel's flow filter (the test topology's fault injector)
//! with the same libbpf loader, and attaching them with links: XDP, or tc through tcx (the
//! link-based clsact of kernel 6.6+). A [`Link`] detaches its program when dropped, and the
//! kernel detaches it when the process dies, so nothing outlives its owner.
//!
//! Programs are attached to an interface of the caller's network namespace (the calling thread's).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use crate::sys::bpf as sys;

/// A loaded BPF object: its programs are verified and its maps created.
pub struct Object {
    obj: sys::Object,
}

impl Object {
    /// Opens, verifies and loads the ELF `image` (e.g. `include_bytes!` of clang's output,
    /// 8-byte aligned). `name` names it in the kernel's listings.
    pub fn load(image: &'static [u8], name: &str) -> io::Result<Object> {
        let mut obj = sys::Object::open_mem(image, name)?;
        obj.load()?;
        Ok(Object { obj })
    }

    /// The program called `name` (its C function's name); ENOENT if there is none.
    pub fn program(&self, name: &str) -> io::Result<Program> {
        Ok(Program {
            fd: self.obj.prog_fd(name)?.try_clone_to_owned()?,
        })
    }

    /// The map called `name`; ENOENT if there is none.
    pub fn map(&self, name: &str) -> io::Result<Map> {
        Ok(Map {
            map: sys::Map::new(self.obj.map_fd(name)?.try_clone_to_owned()?)?,
        })
    }
}

/// Where a tc program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcDirection {
    Ingress,
    Egress,
}

/// A loaded program (it stays loaded while this or a link holds it).
pub struct Program {
    fd: OwnedFd,
}

impl Program {
    /// Attaches an XDP program in the driver's mode (`native`) or the generic (skb) mode.
    pub fn attach_xdp(&self, ifindex: u32, native: bool) -> io::Result<Link> {
        let flags = if native {
            sys::XDP_FLAGS_DRV_MODE
        } else {
            sys::XDP_FLAGS_SKB_MODE
        };
        Ok(Link {
            _fd: sys::xdp_link_create(self.fd.as_fd(), ifindex, flags)?,
        })
    }

    /// Attaches a tc program (`SEC("tc")`) to the interface's ingress or egress, after the
    /// programs already there.
    pub fn attach_tc(&self, ifindex: u32, dir: TcDirection) -> io::Result<Link> {
        Ok(Link {
            _fd: sys::tcx_link_create(self.fd.as_fd(), ifindex, dir == TcDirection::Egress)?,
        })
    }
}

/// An attached program; dropping it detaches the program.
pub struct Link {
    _fd: OwnedFd,
}

/// A map of a loaded object, read and written with byte slices of its exact key and value
/// sizes (EINVAL otherwise). Per-CPU maps are not supported.
pub struct Map {
    map: sys::Map,
}

impl Map {
    pub fn key_size(&self) -> usize {
        self.map.info().key_size as usize
    }

    pub fn value_size(&self) -> usize {
        self.map.info().value_size as usize
    }

    /// Writes `value` at `key` (creating or replacing it).
    pub fn set(&self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.map.update(key, value, sys::BPF_ANY)
    }

    /// Reads `key`'s value into `value`; `false` if there is no such key.
    pub fn get(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.map.lookup(key, value)
    }
}
