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
//! `accel_users` records which processes (pid and start time) share the program; each open drops
//! the entries, and the flows, of processes that died without cleaning up. The maps are also
//! pinned under `/sys/fs/bpf/accel/<ifindex>/` for operators (bpftool), best effort.

mod error;
mod flow;

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

pub use error::Error;
pub use flow::{FlowKey, Proto};

use crate::sys::bpf::{self as sys, Map};
use flow::FlowValue;

/// Name of the program, as the kernel reports it (prog info `name`).
pub const PROGRAM_NAME: &str = "accel_xdp";
const FLOWS: &str = "accel_flows";
const XSKS: &str = "accel_xsks";
const USERS: &str = "accel_users";
const QOWNER: &str = "accel_qowner";
const PIN_ROOT: &str = "/sys/fs/bpf";
const ARPHRD_ETHER: u16 = 1;
/// How often open goes back between "attach" and "join" when other processes attach or detach
/// concurrently; each round makes progress unless they keep racing.
const OPEN_ROUNDS: usize = 16;

#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

/// The compiled program (ELF), aligned for libelf.
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/accel_xdp.o")));

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

/// Filters opened by this process, per program id: the `accel_users` entry (keyed by pid) is
/// removed only when the last of them is dropped.
static OPEN_IN_PROCESS: Mutex<BTreeMap<u32, usize>> = Mutex::new(BTreeMap::new());

/// This process's handle on the filter of one interface. Dropping it removes this process's
/// flows, sockets and user entry, then closes its link fd (which detaches the program if it was
/// the last one).
#[derive(Debug)]
pub struct Filter {
    ifindex: u32,
    ifname: String,
    pid: u32,
    mode: AttachedMode,
    prog_id: u32,
    flows: Map,
    xsks: Map,
    users: Map,
    /// rx queue -> pid serving it; the program redirects a flow only to its owner's socket.
    qowner: Map,
    pin_dir: Option<PathBuf>,
    own_flows: Mutex<HashSet<FlowKey>>,
    own_queues: Mutex<HashSet<u32>>,
    /// Declared last so it is closed after the maps' cleanup in `Drop`.
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
    /// Attaches accel's XDP program to the interface, or joins the one another accel process
    /// attached. `ifindex` and `ifname` name the same interface in the caller's network namespace.
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
        let (flows, xsks, users, qowner) = pick_maps(ifname, a.prog_id, a.maps)?;
        let mut filter = Filter {
            ifindex,
            ifname: ifname.to_owned(),
            pid: std::process::id(),
            mode: a.mode,
            prog_id: a.prog_id,
            flows,
            xsks,
            users,
            qowner,
            pin_dir: None,
            own_flows: Mutex::new(HashSet::new()),
            own_queues: Mutex::new(HashSet::new()),
            _link: a.link,
        };
        filter.register_user()?;
        filter.drop_stale_users()?;
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

    /// Redirects `key`'s packets to this interface's AF_XDP sockets, owned by this process.
    pub fn add_flow(&self, key: &FlowKey) -> Result<(), Error> {
        let k = key.to_bytes();
        let v = FlowValue {
            owner_pid: self.pid,
            flags: 0,
        }
        .to_bytes();
        match self.flows.update(&k, &v, sys::BPF_NOEXIST) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let owner = self.flow_owner(key)?;
                match owner {
                    Some(o) if o == self.pid => {}
                    Some(o) if !process_alive(o, self.user_start(o)) => {
                        // Its owner died and was not cleaned up yet: take it over.
                        self.flows
                            .update(&k, &v, sys::BPF_ANY)
                            .map_err(|e| self.flow_error(e))?;
                    }
                    Some(o) => {
                        return Err(Error::FlowTaken {
                            ifname: self.ifname.clone(),
                            flow: *key,
                            owner: o,
                        })
                    }
                    // Removed meanwhile: try once more.
                    None => self
                        .flows
                        .update(&k, &v, sys::BPF_NOEXIST)
                        .map_err(|e| self.flow_error(e))?,
                }
            }
            Err(e) => return Err(self.flow_error(e)),
        }
        lock(&self.own_flows).insert(*key);
        Ok(())
    }

    /// Stops redirecting `key` (a flow this process added); nothing to do if it is not there.
    pub fn remove_flow(&self, key: &FlowKey) -> Result<(), Error> {
        match self.flow_owner(key)? {
            None => {}
            Some(o) if o == self.pid => {
                self.flows
                    .delete(&key.to_bytes())
                    .map_err(|e| self.err("removing a flow", e))?;
            }
            Some(o) => {
                return Err(Error::FlowNotOwned {
                    ifname: self.ifname.clone(),
                    flow: *key,
                    owner: o,
                })
            }
        }
        lock(&self.own_flows).remove(key);
        Ok(())
    }

    /// The pid owning `key`, if it is in the flow table.
    pub fn flow_owner(&self, key: &FlowKey) -> Result<Option<u32>, Error> {
        let mut v = [0u8; FlowValue::SIZE];
        let found = self
            .flows
            .lookup(&key.to_bytes(), &mut v)
            .map_err(|e| self.err("reading the flow table", e))?;
        Ok(found.then(|| FlowValue::from_bytes(&v).owner_pid))
    }

    /// Every flow in the table (of every process sharing the interface) with its owner's pid.
    pub fn flows(&self) -> Result<Vec<(FlowKey, u32)>, Error> {
        let keys = self
            .flows
            .keys()
            .map_err(|e| self.err("reading the flow table", e))?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let mut v = [0u8; FlowValue::SIZE];
            let found = self
                .flows
                .lookup(&k, &mut v)
                .map_err(|e| self.err("reading the flow table", e))?;
            if let (true, Some(key)) = (found, FlowKey::from_bytes(&k)) {
                out.push((key, FlowValue::from_bytes(&v).owner_pid));
            }
        }
        Ok(out)
    }

    /// The processes sharing the program: (pid, start time in clock ticks since boot).
    pub fn users(&self) -> Result<Vec<(u32, u64)>, Error> {
        let keys = self
            .users
            .keys()
            .map_err(|e| self.err("reading the users table", e))?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let mut v = [0u8; 8];
            if self
                .users
                .lookup(&k, &mut v)
                .map_err(|e| self.err("reading the users table", e))?
            {
                out.push((
                    u32::from_ne_bytes(k[..4].try_into().unwrap_or_default()),
                    u64::from_ne_bytes(v),
                ));
            }
        }
        Ok(out)
    }

    /// Makes packets of owned flows arriving on rx `queue` go to the AF_XDP socket `xsk_fd`
    /// (bound to this interface and queue).
    pub fn register_socket(&self, queue: u32, xsk_fd: BorrowedFd<'_>) -> Result<(), Error> {
        self.check_queue(queue)?;
        let fd = xsk_fd.as_raw_fd() as u32;
        // Owner first: until the socket is in the XSKMAP the owner entry has no effect.
        self.qowner
            .update(&queue.to_ne_bytes(), &self.pid.to_ne_bytes(), sys::BPF_ANY)
            .map_err(|e| self.err("registering an AF_XDP socket", e))?;
        self.xsks
            .update(&queue.to_ne_bytes(), &fd.to_ne_bytes(), sys::BPF_ANY)
            .map_err(|e| self.err("registering an AF_XDP socket", e))?;
        lock(&self.own_queues).insert(queue);
        Ok(())
    }

    /// Undoes [`Filter::register_socket`]: packets on `queue` go to the kernel again.
    pub fn unregister_socket(&self, queue: u32) -> Result<(), Error> {
        self.check_queue(queue)?;
        if !self.owns_queue(queue) {
            lock(&self.own_queues).remove(&queue);
            return Ok(());
        }
        self.xsks
            .delete(&queue.to_ne_bytes())
            .map_err(|e| self.err("unregistering an AF_XDP socket", e))?;
        self.clear_queue_owner(queue);
        lock(&self.own_queues).remove(&queue);
        Ok(())
    }

    fn check_queue(&self, queue: u32) -> Result<(), Error> {
        let max = self.xsks.info().max_entries;
        if queue >= max {
            return Err(Error::QueueOutOfRange {
                ifname: self.ifname.clone(),
                queue,
                max,
            });
        }
        Ok(())
    }

    fn err(&self, action: &'static str, e: io::Error) -> Error {
        Error::from_io(&self.ifname, action, e)
    }

    fn flow_error(&self, e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::E2BIG) | Some(libc::ENOSPC) => Error::FlowTableFull {
                ifname: self.ifname.clone(),
                max: self.flows.info().max_entries,
            },
            _ => self.err("adding a flow", e),
        }
    }

    fn user_start(&self, pid: u32) -> Option<u64> {
        let mut v = [0u8; 8];
        match self.users.lookup(&pid.to_ne_bytes(), &mut v) {
            Ok(true) => Some(u64::from_ne_bytes(v)),
            _ => None,
        }
    }

    fn register_user(&self) -> Result<(), Error> {
        let start = start_time(self.pid).map_err(|e| self.err("reading /proc/self/stat", e))?;
        match self
            .users
            .update(&self.pid.to_ne_bytes(), &start.to_ne_bytes(), sys::BPF_ANY)
        {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::E2BIG) => {
                return Err(Error::TooManyUsers {
                    ifname: self.ifname.clone(),
                    max: self.users.info().max_entries,
                })
            }
            Err(e) => return Err(self.err("registering this process", e)),
        }
        *lock(&OPEN_IN_PROCESS).entry(self.prog_id).or_insert(0) += 1;
        Ok(())
    }

    /// Removes the users entries of processes that are gone (or whose pid was recycled), then
    /// every flow whose owner is not a user.
    /// Whether `pid` has a users entry now and is that process.
    fn user_is_live(&self, pid: u32) -> bool {
        let mut start = [0u8; 8];
        match self.users.lookup(&pid.to_ne_bytes(), &mut start) {
            Ok(true) => process_alive(pid, Some(u64::from_ne_bytes(start))),
            _ => false,
        }
    }

    fn drop_stale_users(&self) -> Result<(), Error> {
        let mut live = HashSet::new();
        for (pid, start) in self.users()? {
            if pid == self.pid || process_alive(pid, Some(start)) {
                live.insert(pid);
            } else {
                tracing::info!(ifname = %self.ifname, pid, "dropping the XDP flows of a dead accel process");
                self.users
                    .delete(&pid.to_ne_bytes())
                    .map_err(|e| self.err("cleaning the users table", e))?;
            }
        }
        for (key, owner) in self.flows()? {
            // A process may have registered (and added this flow) after the users snapshot:
            // look again at its entry before deleting anything of it.
            if !live.contains(&owner) && !self.user_is_live(owner) {
                self.flows
                    .delete(&key.to_bytes())
                    .map_err(|e| self.err("cleaning the flow table", e))?;
            }
        }
        Ok(())
    }
}

impl Filter {
    /// Whether this process is recorded as serving `queue`.
    fn owns_queue(&self, queue: u32) -> bool {
        let mut v = [0u8; 4];
        matches!(self.qowner.lookup(&queue.to_ne_bytes(), &mut v), Ok(true))
            && v == self.pid.to_ne_bytes()
    }

    /// Clears the owner of `queue` if it is still this process (another may have taken it).
    fn clear_queue_owner(&self, queue: u32) {
        if self.owns_queue(queue) {
            let _ = self
                .qowner
                .update(&queue.to_ne_bytes(), &0u32.to_ne_bytes(), sys::BPF_ANY);
        }
    }
}

impl Drop for Filter {
    fn drop(&mut self) {
        let own_flows: Vec<FlowKey> = lock(&self.own_flows).drain().collect();
        for key in own_flows {
            if let Err(e) = self.remove_flow(&key) {
                tracing::debug!(%e, "removing a flow on drop");
            }
        }
        let own_queues: Vec<u32> = lock(&self.own_queues).drain().collect();
        for q in own_queues {
            // Closing our socket removes it from the XSKMAP by itself; deleting the entry here
            // could remove another process's socket registered on the queue meanwhile.
            if self.owns_queue(q) {
                if let Err(e) = self.xsks.delete(&q.to_ne_bytes()) {
                    tracing::debug!(%e, queue = q, "unregistering an AF_XDP socket on drop");
                }
            }
            self.clear_queue_owner(q);
        }
        let last_in_process = {
            let mut open = lock(&OPEN_IN_PROCESS);
            let n = open.entry(self.prog_id).or_insert(1);
            *n -= 1;
            let last = *n == 0;
            if last {
                open.remove(&self.prog_id);
            }
            last
        };
        if last_in_process {
            // Whatever this process still owns (flows added through another handle).
            if let Ok(flows) = self.flows() {
                for (key, owner) in flows {
                    if owner == self.pid {
                        let _ = self.flows.delete(&key.to_bytes());
                    }
                }
            }
            let _ = self.users.delete(&self.pid.to_ne_bytes());
            if matches!(self.users(), Ok(u) if u.is_empty()) {
                if let Some(dir) = &self.pin_dir {
                    unpin_maps(dir, [&self.flows, &self.xsks, &self.users, &self.qowner]);
                }
            }
        }
        // `_link` is closed when the fields drop, after this: the program stays attached while
        // another process (or Filter) holds the link.
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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
    for name in [FLOWS, XSKS, USERS, QOWNER] {
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
fn pick_maps(ifname: &str, prog_id: u32, maps: Vec<Map>) -> Result<(Map, Map, Map, Map), Error> {
    let incompatible = |reason: String| Error::IncompatibleProgram {
        ifname: ifname.to_owned(),
        prog_id,
        reason,
    };
    let (mut flows, mut xsks, mut users, mut qowner) = (None, None, None, None);
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
            USERS => (&mut users, (sys::BPF_MAP_TYPE_HASH, 4, 8)),
            QOWNER => (&mut qowner, (sys::BPF_MAP_TYPE_ARRAY, 4, 4)),
            _ => continue,
        };
        if (i.map_type, i.key_size, i.value_size) != want {
            return Err(incompatible(format!(
                "map {} has type {}, key size {}, value size {}",
                i.name, i.map_type, i.key_size, i.value_size
            )));
        }
        *slot = Some(m);
    }
    match (flows, xsks, users, qowner) {
        (Some(f), Some(x), Some(u), Some(q)) => Ok((f, x, u, q)),
        _ => Err(incompatible(format!(
            "it lacks one of the maps {FLOWS}, {XSKS}, {USERS}, {QOWNER}"
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22).
fn start_time(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/PID/stat"))
}

/// Field 22 of /proc/PID/stat. The command (field 2) may contain spaces and parentheses, so count
/// from the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // Fields 3.. follow; field 22 is the 20th of them.
    after.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Whether `pid` is the process that registered with `start` (a recycled pid is not). When its
/// start time is unknown, any process with that pid counts as alive.
fn process_alive(pid: u32, start: Option<u64>) -> bool {
    match start_time(pid) {
        Ok(now) => start.is_none_or(|s| s == now),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        // Unreadable /proc (hidepid): assume alive rather than steal its flows.
        Err(_) => true,
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
    for (name, map) in [
        (FLOWS, &f.flows),
        (XSKS, &f.xsks),
        (USERS, &f.users),
        (QOWNER, &f.qowner),
    ] {
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
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat =
            "1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("1 (x) S 1"), None);
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_a_recycled_pid_is_not() {
        let me = std::process::id();
        let start = start_time(me).expect("own /proc/PID/stat");
        assert!(process_alive(me, Some(start)));
        assert!(process_alive(me, None));
        assert!(!process_alive(me, Some(start + 1)));
    }

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
