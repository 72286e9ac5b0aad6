//! accel's XDP flow filter: the program in `bpf/accel_xdp.c`, attached once per interface and
//! shared by every accelerating process on it, and the API to say which flows it redirects.
//!
//! # Sharing and detaching
//!
//! The program is attached with a bpf_link, never with the legacy netlink attach: the kernel keeps
//! it attached while any fd refers to the link and detaches it when the last one closes, even when
//! every process holding one is SIGKILLed, so the interface is always left as it was.
//!
//! [`Filter::open`] asks the interface which XDP program it runs (netlink, in the caller's network
//! namespace). None: it loads and attaches ours. Ours (`accel_xdp`): it finds that program's link
//! by id and takes an fd to it, and opens the program's maps by id (prog info -> map ids), which
//! works across mount namespaces where bpffs pins are invisible. Anything else: a clear error. Two
//! processes racing to attach: the loser sees EBUSY/EEXIST and joins the winner.
//!
//! The accel-helper of the network namespace holds the program for its clients (`crate::share`);
//! a [`Filter`] is its handle: it registers each client's AF_XDP socket per queue and slot in
//! `accel_xsks` and edits bound and listening flows' slot sets. Clients write their exact flows
//! themselves through the flow map's fd ([`FlowTable`]). The maps are also pinned under
//! `/sys/fs/bpf/accel/<ifindex>/` for operators (bpftool), best effort.

mod error;
mod flow;

mod table;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use error::Error;
pub use flow::{
    FlowKey, FlowValue, Proto, FLOW_DROP, FLOW_HELD, FLOW_PASS, FLOW_PINNED, MAX_QUEUES, SET_MAX,
    SLOTS,
};
pub use table::FlowTable;

use crate::sys::bpf::{self as sys, Map};

/// Name of the program, as the kernel reports it (prog info `name`).
pub const PROGRAM_NAME: &str = "accel_xdp";
const FLOWS: &str = "accel_flows";
const XSKS: &str = "accel_xsks";
const PINS: &str = "accel_pins";
const PIN_ROOT: &str = "/sys/fs/bpf";
const ARPHRD_ETHER: u16 = 1;
/// How often open goes back between "attach" and "join" when other processes attach or detach
/// concurrently; each round makes progress unless they keep racing.
const OPEN_ROUNDS: usize = 16;

#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

/// The compiled program (ELF), aligned for libelf.
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/accel_xdp.o")));

/// What the XDP program did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// To the kernel.
    Pass,
    /// To an AF_XDP socket.
    Redirect,
    /// Nowhere.
    Drop,
    Other(u32),
}

/// Which XDP mode to ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum XdpMode {
    /// Native if the driver supports it, else generic.
    #[default]
    Auto,
    /// The driver's XDP hook (fast); fails on drivers without XDP support.
    Native,
    /// The generic (skb) hook: works everywhere, slower.
    Generic,
}

/// The mode the program is attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttachedMode {
    Native,
    Generic,
}

/// An XDP program attached to an interface (see [`attached_program`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedProgram {
    pub id: u32,
    pub name: String,
    /// `None` for hardware-offloaded or several programs at once.
    pub mode: Option<AttachedMode>,
}

/// What XDP program `ifindex` (in the caller's network namespace) runs, if any.
pub fn attached_program(ifindex: u32, ifname: &str) -> Result<Option<AttachedProgram>, Error> {
    let q = sys::xdp_query(ifindex).map_err(|e| iface_error(ifname, ifindex, "querying XDP", e))?;
    let Some(id) = [q.prog_id, q.drv_prog_id, q.skb_prog_id, q.hw_prog_id]
        .into_iter()
        .find(|&i| i != 0)
    else {
        return Ok(None);
    };
    let mode = match q.attach_mode {
        sys::XDP_ATTACHED_DRV => Some(AttachedMode::Native),
        sys::XDP_ATTACHED_SKB => Some(AttachedMode::Generic),
        _ => None,
    };
    let name = match sys::prog_fd_by_id(id).and_then(|fd| sys::prog_info(fd.as_fd())) {
        Ok(info) => info.name,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None), // detached meanwhile
        Err(e) => {
            return Err(Error::from_io(
                ifname,
                "reading the attached XDP program",
                e,
            ))
        }
    };
    Ok(Some(AttachedProgram { id, name, mode }))
}

fn iface_error(ifname: &str, ifindex: u32, action: &'static str, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::ENODEV) {
        Error::NoSuchInterface {
            ifname: ifname.to_owned(),
            ifindex,
        }
    } else {
        Error::from_io(ifname, action, e)
    }
}

/// A handle on the filter of one interface (the helper's): holds the program attached through
/// its link fd and opens its maps. Dropping it closes the link fd, which detaches the program
/// if no other process holds the link.
#[derive(Debug)]
pub struct Filter {
    ifindex: u32,
    ifname: String,
    mode: AttachedMode,
    prog_id: u32,
    flows: Map,
    xsks: Map,
    pins: Map,
    pin_dir: Option<PathBuf>,
    /// We attached the program (rather than joined it): our pins are ours to remove.
    fresh: bool,
    /// Declared last so it is closed after the maps.
    _link: OwnedFd,
}

/// The result of one attach-or-join round.
enum Round {
    Done(Attached),
    /// Someone attached or detached meanwhile: look again.
    Retry,
}

struct Attached {
    link: OwnedFd,
    prog_id: u32,
    mode: AttachedMode,
    maps: Vec<Map>,
    /// We attached it (rather than joined).
    fresh: bool,
}

impl Filter {
    /// Attaches accel's XDP program to the interface, or joins the one already attached.
    /// `ifindex` and `ifname` name the same interface in the caller's network namespace.
    pub fn open(ifindex: u32, ifname: &str, mode: XdpMode) -> Result<Filter, Error> {
        check_interface(ifindex, ifname)?;
        let mut attached = None;
        for _ in 0..OPEN_ROUNDS {
            if let Round::Done(a) = attach_or_join(ifindex, ifname, mode)? {
                attached = Some(a);
                break;
            }
        }
        let Some(a) = attached else {
            return Err(Error::Contended {
                ifname: ifname.to_owned(),
            });
        };
        let (flows, xsks, pins) = pick_maps(ifname, a.prog_id, a.maps)?;
        let mut filter = Filter {
            ifindex,
            ifname: ifname.to_owned(),
            mode: a.mode,
            prog_id: a.prog_id,
            flows,
            xsks,
            pins,
            pin_dir: None,
            fresh: a.fresh,
            _link: a.link,
        };
        filter.pin_dir = pin_maps(&filter, a.fresh);
        tracing::debug!(
            ifname,
            prog_id = filter.prog_id,
            mode = %filter.mode,
            joined = !a.fresh,
            "XDP filter open"
        );
        Ok(filter)
    }

    /// The mode the program runs in on this interface.
    pub fn attached_mode(&self) -> AttachedMode {
        self.mode
    }

    /// The kernel's id of the attached program (the same for every process on the interface).
    pub fn program_id(&self) -> u32 {
        self.prog_id
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The flow map's fd (what the helper passes to its clients).
    pub fn flows_fd(&self) -> BorrowedFd<'_> {
        self.flows.fd()
    }

    /// The pin map's fd (what the helper passes to its clients).
    pub fn pins_fd(&self) -> BorrowedFd<'_> {
        self.pins.fd()
    }

    /// A flow table over this filter's maps, writing exact flows for `slot`.
    pub fn table(&self, slot: u8) -> Result<FlowTable, Error> {
        let dup = |m: &Map| {
            m.fd()
                .try_clone_to_owned()
                .map_err(|e| self.err("opening the flow map", e))
        };
        FlowTable::from_fds(dup(&self.flows)?, dup(&self.pins)?, slot, &self.ifname)
    }

    /// The connection `key`'s pin, if the program pinned it at its SYN.
    pub fn pin(&self, key: &FlowKey) -> Result<Option<FlowValue>, Error> {
        let mut v = [0u8; FlowValue::SIZE];
        let found = self
            .pins
            .lookup(&key.to_bytes(), &mut v)
            .map_err(|e| self.err("reading the pin table", e))?;
        Ok(found.then(|| FlowValue::from_bytes(&v)))
    }

    /// Every pin (a snapshot).
    pub fn pins(&self) -> Result<Vec<(FlowKey, FlowValue)>, Error> {
        table::all_flows(&self.pins).map_err(|e| self.err("reading the pin table", e))
    }

    /// Removes the pin of connection `key`; `false` if there was none.
    pub fn remove_pin(&self, key: &FlowKey) -> Result<bool, Error> {
        self.pins
            .delete(&key.to_bytes())
            .map_err(|e| self.err("removing a pin", e))
    }

    /// Sets `key`'s value (creating or replacing the entry).
    pub fn set_flow(&self, key: &FlowKey, value: FlowValue) -> Result<(), Error> {
        self.flows
            .update(&key.to_bytes(), &value.to_bytes(), sys::BPF_ANY)
            .map_err(|e| table::flow_error(&self.ifname, &self.flows, e))
    }

    /// `key`'s value, if it is in the table.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, Error> {
        let mut v = [0u8; FlowValue::SIZE];
        let found = self
            .flows
            .lookup(&key.to_bytes(), &mut v)
            .map_err(|e| self.err("reading the flow table", e))?;
        Ok(found.then(|| FlowValue::from_bytes(&v)))
    }

    /// Removes `key`; `false` if it was not there.
    pub fn remove_flow(&self, key: &FlowKey) -> Result<bool, Error> {
        self.flows
            .delete(&key.to_bytes())
            .map_err(|e| self.err("removing a flow", e))
    }

    /// Every flow in the table with its value (a snapshot; entries changing meanwhile may be
    /// missed).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, Error> {
        table::all_flows(&self.flows).map_err(|e| self.err("reading the flow table", e))
    }

    /// Makes packets of `slot`'s flows arriving on rx `queue` go to the AF_XDP socket `xsk_fd`
    /// (bound to this interface and queue).
    pub fn register_socket(
        &self,
        queue: u32,
        slot: u8,
        xsk_fd: BorrowedFd<'_>,
    ) -> Result<(), Error> {
        let key = self.xsk_key(queue, slot)?;
        let fd = xsk_fd.as_raw_fd() as u32;
        self.xsks
            .update(&key.to_ne_bytes(), &fd.to_ne_bytes(), sys::BPF_ANY)
            .map_err(|e| self.err("registering an AF_XDP socket", e))
    }

    /// Undoes [`Filter::register_socket`]: `slot`'s packets on `queue` go to the kernel.
    pub fn unregister_socket(&self, queue: u32, slot: u8) -> Result<(), Error> {
        let key = self.xsk_key(queue, slot)?;
        self.xsks
            .delete(&key.to_ne_bytes())
            .map(drop)
            .map_err(|e| self.err("unregistering an AF_XDP socket", e))
    }

    /// Runs the attached program once on `frame` as if it arrived on queue 0, without a device
    /// (BPF_PROG_TEST_RUN): its verdict, and any entry it pins, are real. For tests and
    /// diagnosis: which flows go where.
    pub fn run_on(&self, frame: &[u8]) -> Result<Verdict, Error> {
        let prog = sys::prog_fd_by_id(self.prog_id)
            .map_err(|e| self.err("opening accel's XDP program", e))?;
        let v = sys::prog_test_run(prog.as_fd(), frame)
            .map_err(|e| self.err("running accel's XDP program", e))?;
        Ok(match v {
            sys::XDP_PASS => Verdict::Pass,
            sys::XDP_REDIRECT => Verdict::Redirect,
            sys::XDP_DROP => Verdict::Drop,
            other => Verdict::Other(other),
        })
    }

    fn xsk_key(&self, queue: u32, slot: u8) -> Result<u32, Error> {
        let max = self.xsks.info().max_entries / SLOTS as u32;
        if queue >= max {
            return Err(Error::QueueOutOfRange {
                ifname: self.ifname.clone(),
                queue,
                max,
            });
        }
        if slot as usize >= SLOTS {
            return Err(self.err(
                "registering an AF_XDP socket",
                io::Error::from_raw_os_error(libc::ERANGE),
            ));
        }
        Ok(queue * SLOTS as u32 + u32::from(slot))
    }

    fn err(&self, action: &'static str, e: io::Error) -> Error {
        Error::from_io(&self.ifname, action, e)
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        if self.fresh {
            if let Some(dir) = &self.pin_dir {
                unpin_maps(dir, [&self.flows, &self.xsks, &self.pins]);
            }
        }
        // `_link` is closed when the fields drop, after this: the program stays attached while
        // another process holds the link.
    }
}

fn check_interface(ifindex: u32, ifname: &str) -> Result<(), Error> {
    let no_such = || Error::NoSuchInterface {
        ifname: ifname.to_owned(),
        ifindex,
    };
    match nix::net::if_::if_nametoindex(ifname) {
        Ok(i) if i == ifindex => {}
        _ => return Err(no_such()),
    }
    let hw_type = sys::if_hw_type(ifname)
        .map_err(|e| iface_error(ifname, ifindex, "reading the link type", e))?;
    if hw_type != ARPHRD_ETHER {
        return Err(Error::NotEthernet {
            ifname: ifname.to_owned(),
            hw_type,
        });
    }
    Ok(())
}

/// One round: join the accel program attached to the interface, or attach ours if none is.
fn attach_or_join(ifindex: u32, ifname: &str, mode: XdpMode) -> Result<Round, Error> {
    match attached_program(ifindex, ifname)? {
        None => attach(ifindex, ifname, mode),
        Some(p) if p.name != PROGRAM_NAME => Err(Error::ForeignProgram {
            ifname: ifname.to_owned(),
            prog_id: p.id,
            prog_name: p.name,
        }),
        Some(p) => {
            let Some(attached) = p.mode else {
                return Err(Error::IncompatibleProgram {
                    ifname: ifname.to_owned(),
                    prog_id: p.id,
                    reason: "attached in hardware-offload or multiple modes".to_owned(),
                });
            };
            let compatible = match mode {
                XdpMode::Auto => true,
                XdpMode::Native => attached == AttachedMode::Native,
                XdpMode::Generic => attached == AttachedMode::Generic,
            };
            if !compatible {
                return Err(Error::ModeMismatch {
                    ifname: ifname.to_owned(),
                    attached,
                    requested: mode,
                });
            }
            join(ifindex, ifname, p.id, attached)
        }
    }
}

/// Takes an fd to the link that holds program `prog_id` on `ifindex`, and opens its maps.
fn join(ifindex: u32, ifname: &str, prog_id: u32, mode: AttachedMode) -> Result<Round, Error> {
    let action = "finding the XDP link of accel's program";
    let mut id = 0;
    let link = loop {
        id = match sys::link_next_id(id).map_err(|e| Error::from_io(ifname, action, e))? {
            Some(next) => next,
            None => break None,
        };
        let fd = match sys::link_fd_by_id(id) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // released meanwhile
            Err(e) => return Err(Error::from_io(ifname, action, e)),
        };
        let info = sys::link_info(fd.as_fd()).map_err(|e| Error::from_io(ifname, action, e))?;
        // Ifindexes repeat across network namespaces, program ids do not: match both.
        if info.prog_id == prog_id && info.xdp_ifindex == Some(ifindex) {
            tracing::debug!(
                ifname,
                link_id = info.id,
                prog_id,
                "joining accel's XDP program"
            );
            break Some(fd);
        }
    };
    let Some(link) = link else {
        // Either it was detached since we looked (retry), or attached without a link.
        return match attached_program(ifindex, ifname)? {
            Some(p) if p.id == prog_id => Err(Error::UnlinkedProgram {
                ifname: ifname.to_owned(),
                prog_id,
            }),
            _ => Ok(Round::Retry),
        };
    };
    // We hold the link now, so the program and its maps stay alive.
    let prog = match sys::prog_fd_by_id(prog_id) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Round::Retry),
        Err(e) => return Err(Error::from_io(ifname, "opening accel's XDP program", e)),
    };
    let info = sys::prog_info(prog.as_fd())
        .map_err(|e| Error::from_io(ifname, "reading accel's XDP program", e))?;
    let mut maps = Vec::new();
    for map_id in info.map_ids {
        let fd = sys::map_fd_by_id(map_id)
            .map_err(|e| Error::from_io(ifname, "opening accel's XDP maps", e))?;
        maps.push(Map::new(fd).map_err(|e| Error::from_io(ifname, "opening accel's XDP maps", e))?);
    }
    Ok(Round::Done(Attached {
        link,
        prog_id,
        mode,
        maps,
        fresh: false,
    }))
}

/// Loads our program and attaches it through a new link.
fn attach(ifindex: u32, ifname: &str, mode: XdpMode) -> Result<Round, Error> {
    // EACCES from a load is the verifier rejecting the program, not a missing capability.
    let load_err = |e: io::Error| match e.raw_os_error() {
        Some(libc::EPERM) => Error::Permission {
            ifname: ifname.to_owned(),
            action: "load XDP programs",
        },
        _ => Error::Load { source: e },
    };
    let mut obj = sys::Object::open_mem(&OBJECT.0, PROGRAM_NAME).map_err(load_err)?;
    obj.load().map_err(load_err)?;
    let prog = obj.prog_fd(PROGRAM_NAME).map_err(load_err)?;

    let tries: &[(u32, AttachedMode)] = match mode {
        XdpMode::Native => &[(sys::XDP_FLAGS_DRV_MODE, AttachedMode::Native)],
        XdpMode::Generic => &[(sys::XDP_FLAGS_SKB_MODE, AttachedMode::Generic)],
        XdpMode::Auto => &[
            (sys::XDP_FLAGS_DRV_MODE, AttachedMode::Native),
            (sys::XDP_FLAGS_SKB_MODE, AttachedMode::Generic),
        ],
    };
    let mut linked = None;
    for &(flags, m) in tries {
        match sys::xdp_link_create(prog, ifindex, flags) {
            Ok(link) => {
                linked = Some((link, m));
                break;
            }
            // Someone attached first: join them.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::EEXIST)) => {
                return Ok(Round::Retry)
            }
            Err(e)
                if m == AttachedMode::Native
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                    ) =>
            {
                if mode == XdpMode::Native {
                    let driver = sys::if_driver(ifname).unwrap_or_else(|_| "unknown".to_owned());
                    return Err(Error::NativeUnsupported {
                        ifname: ifname.to_owned(),
                        driver,
                    });
                }
                tracing::info!(
                    ifname,
                    "no native XDP on this interface; using generic mode"
                );
            }
            // veth_xdp_set: the peer's MTU is larger than a page-sized XDP frame holds.
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {
                return Err(Error::MtuTooLarge {
                    ifname: ifname.to_owned(),
                })
            }
            Err(e) => return Err(iface_error(ifname, ifindex, "attach XDP programs", e)),
        }
    }
    let Some((link, mode)) = linked else {
        return Err(Error::Contended {
            ifname: ifname.to_owned(),
        });
    };
    let prog_id = sys::prog_info(prog)
        .map_err(|e| Error::from_io(ifname, "reading accel's XDP program", e))?
        .id;
    let mut maps = Vec::new();
    for name in [FLOWS, XSKS, PINS] {
        let fd = obj
            .map_fd(name)
            .and_then(|fd| fd.try_clone_to_owned())
            .map_err(|e| Error::from_io(ifname, "opening accel's XDP maps", e))?;
        maps.push(Map::new(fd).map_err(|e| Error::from_io(ifname, "opening accel's XDP maps", e))?);
    }
    // Closing the object closes its own fds; the link keeps the program attached.
    drop(obj);
    Ok(Round::Done(Attached {
        link,
        prog_id,
        mode,
        maps,
        fresh: true,
    }))
}

/// Sorts the program's maps by name and checks they are the ones this version expects.
fn pick_maps(ifname: &str, prog_id: u32, maps: Vec<Map>) -> Result<(Map, Map, Map), Error> {
    let incompatible = |reason: String| Error::IncompatibleProgram {
        ifname: ifname.to_owned(),
        prog_id,
        reason,
    };
    let (mut flows, mut xsks, mut pins) = (None, None, None);
    for m in maps {
        let i = m.info();
        let (slot, want) = match i.name.as_str() {
            FLOWS => (
                &mut flows,
                (
                    sys::BPF_MAP_TYPE_HASH,
                    FlowKey::SIZE as u32,
                    FlowValue::SIZE as u32,
                ),
            ),
            XSKS => (&mut xsks, (sys::BPF_MAP_TYPE_XSKMAP, 4, 4)),
            PINS => (
                &mut pins,
                (
                    sys::BPF_MAP_TYPE_LRU_HASH,
                    FlowKey::SIZE as u32,
                    FlowValue::SIZE as u32,
                ),
            ),
            _ => continue,
        };
        if (i.map_type, i.key_size, i.value_size) != want {
            return Err(incompatible(format!(
                "map {} has type {}, key size {}, value size {}",
                i.name, i.map_type, i.key_size, i.value_size
            )));
        }
        if i.name == XSKS && i.max_entries != (MAX_QUEUES * SLOTS) as u32 {
            return Err(incompatible(format!(
                "map {} has {} entries, not {}",
                i.name,
                i.max_entries,
                MAX_QUEUES * SLOTS
            )));
        }
        *slot = Some(m);
    }
    match (flows, xsks, pins) {
        (Some(f), Some(x), Some(p)) => Ok((f, x, p)),
        _ => Err(incompatible(format!(
            "it lacks one of the maps {FLOWS}, {XSKS}, {PINS}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Pins (for operators; failures are never fatal).

fn pin_maps(f: &Filter, fresh: bool) -> Option<PathBuf> {
    let root = Path::new(PIN_ROOT);
    if !root.is_dir() {
        return None;
    }
    match sys::is_bpffs(root) {
        Ok(true) => {}
        Ok(false) if sys::is_root() => {
            if let Err(e) = sys::mount_bpffs(root) {
                tracing::debug!(%e, "mounting bpffs on {PIN_ROOT}; not pinning the XDP maps");
                return None;
            }
        }
        Ok(false) => return None,
        Err(e) => {
            tracing::debug!(%e, "checking {PIN_ROOT}; not pinning the XDP maps");
            return None;
        }
    }
    let dir = root.join("accel").join(f.ifindex.to_string());
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tracing::debug!(%e, dir = %dir.display(), "creating the pin directory");
        return None;
    }
    for (name, map) in [(FLOWS, &f.flows), (XSKS, &f.xsks), (PINS, &f.pins)] {
        let path = dir.join(name);
        if fresh {
            // Pins left by a program that is gone (its last user was killed).
            let _ = std::fs::remove_file(&path);
        }
        match map.pin(&path) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => tracing::debug!(%e, path = %path.display(), "pinning an XDP map"),
        }
    }
    Some(dir)
}

/// Removes the pins in `dir` that still refer to these maps (ifindexes repeat across network
/// namespaces, so another interface's filter may have replaced them).
fn unpin_maps<'a>(dir: &Path, maps: impl IntoIterator<Item = &'a Map>) {
    for map in maps {
        let path = dir.join(&map.info().name);
        match sys::obj_get(&path).and_then(|fd| sys::map_info(fd.as_fd())) {
            Ok(pinned) if pinned.id == map.info().id => {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::debug!(%e, path = %path.display(), "unpinning an XDP map");
                }
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_dir(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_object_is_a_bpf_elf() {
        let o = &OBJECT.0;
        assert_eq!(&o[..4], b"\x7fELF");
        assert_eq!(
            u16::from_le_bytes([o[18], o[19]]),
            247,
            "e_machine must be EM_BPF"
        );
    }
}
