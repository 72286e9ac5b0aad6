//! The accel-helper: one per network namespace, it owns what the processes accelerating there
//! share, and makes every privileged object for them.
//!
//! Per interface it serves: the XDP filter (attached through a link it holds), the control
//! area, and per queue a UMEM (a memfd) registered by an owner AF_XDP socket the helper keeps
//! (never in the XSKMAP: it carries no traffic; it holds the fill and completion rings). Per
//! client (one connection, one slot on that interface): one AF_XDP socket per queue, bound to
//! the queue's UMEM with XDP_SHARED_UMEM and registered in the XSKMAP at `queue * 16 + slot`.
//! The helper keeps its own fd of each client socket and maps its rings, so when the client goes
//! it can read what was left in them.
//!
//! When a client goes (its connection closes or its process exits, whichever comes first: a
//! forked child may keep the connection open), the helper takes its slot out of every shared
//! flow, removes its XSKMAP entries and its exact flows, takes the queue's mutex (repairing
//! what the client left half done if it died holding it), puts the frames left on the client's
//! RX ring (and, in copy mode, its unsent TX ring) back on the free stack, and counts what the
//! client held privately as leaked. When an interface's last client is gone, its UMEMs go and
//! the filter is detached; an on-demand helper then exits.
//!
//! Single-threaded: requests are served one at a time, which is what serialises the
//! read-modify-write of the shared flows' slot sets.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::account::{self, Departure, MemberRings, Retired};
use super::ctl::{Ctl, QueueCtl, Shape, HELPER_SLOT, SLOTS};
use super::proto::{
    ClientStatus, FlowOp, InterfaceStatus, Joined, QueueStatus, Reply, Request, SharedFlowStatus,
    Sizes, Status, WireMode, MAX_MESSAGE,
};
use super::HELPER_ADDRESS;
use crate::ring::{Consumer, Producer};
use crate::sys::ring::RingMem;
use crate::sys::shm::{self, Region};
use crate::sys::unix;
use crate::sys::xsk::{
    RingKind, XskSocket, XDP_COPY, XDP_SHARED_UMEM, XDP_USE_NEED_WAKEUP, XDP_ZEROCOPY,
};
use crate::xdp::{self, AttachedMode, Filter, FlowKey, FlowValue, XdpMode, SET_MAX};

/// The sizes every queue gets.
pub const SIZES: Sizes = Sizes {
    frame_size: 4096,
    frame_count: 4096,
    // Fill and completion rings as large as the UMEM: they can never be full.
    fill_ring: 4096,
    completion_ring: 4096,
    rx_ring: 2048,
    tx_ring: 2048,
};
/// Frames a new queue puts in the fill ring; the rest start on the free stack.
const INITIAL_FILL: u32 = 2048;
/// The owner socket needs a ring to bind; it never receives.
const OWNER_RX_RING: u32 = 64;
/// How long an on-demand helper waits for its first client.
const FIRST_CLIENT_WITHIN: Duration = Duration::from_secs(10);
/// How long the helper waits for a queue's mutex when it cleans a client up.
const CLEANUP_LOCK: Duration = Duration::from_secs(2);

/// The pipe a process that started this helper waits on: one byte once the helper listens.
/// Dropping it unsignalled (the helper lost the race to bind, or failed) closes it, which
/// tells the waiter to look for the helper that won.
pub struct Ready(OwnedFd);

impl Ready {
    /// The ready pipe this process inherited, if it was started by `connect_or_spawn`.
    pub fn inherited() -> Option<Ready> {
        let fd: std::os::fd::RawFd = std::env::var(unix::READY_ENV).ok()?.parse().ok()?;
        std::env::remove_var(unix::READY_ENV);
        unix::adopt_inherited(fd).map(Ready)
    }

    /// Says "listening".
    pub fn signal(self) {
        let _ = nix::unistd::write(&self.0, b"1");
    }
}

/// How the helper runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Started on demand: exits when its last client is gone.
    OnDemand,
    /// A service: keeps running.
    Service,
}

/// A helper failure a client gets as its reply.
struct Failure {
    message: String,
    errno: i32,
}

impl Failure {
    fn new(message: impl Into<String>, errno: i32) -> Failure {
        Failure {
            message: message.into(),
            errno,
        }
    }
}

impl From<crate::attach::Error> for Failure {
    fn from(e: crate::attach::Error) -> Self {
        Failure::new(e.to_string(), e.errno())
    }
}

impl From<xdp::Error> for Failure {
    fn from(e: xdp::Error) -> Self {
        Failure::new(e.to_string(), e.errno())
    }
}

/// A client's socket on one queue, as the helper keeps it.
struct Member {
    socket: XskSocket,
    rx: RingMem,
    tx: RingMem,
}

/// One queue of a served interface.
struct Queue {
    ctl: QueueCtl,
    fill: Producer,
    completion: Consumer,
    umem_fd: OwnedFd,
    /// Kept mapped: the kernel pinned it through this mapping.
    _umem: Arc<Region>,
    owner: XskSocket,
    zero_copy: bool,
    members: BTreeMap<u8, Member>,
    retired: Retired,
}

/// A bound or listening flow several processes may share.
#[derive(Default)]
struct Shared {
    holders: BTreeSet<u8>,
    members: BTreeSet<u8>,
}

/// A served interface.
struct Iface {
    ifname: String,
    ifindex: u32,
    filter: Filter,
    ctl: Ctl,
    ctl_fd: OwnedFd,
    queues: BTreeMap<u32, Queue>,
    slots: [Option<usize>; SLOTS],
    /// When each slot was last freed (a counter): the least recently used free slot is given
    /// out first, so a slot's leftovers have long gone before it is reused.
    freed_at: [u64; SLOTS],
    shared: BTreeMap<FlowKey, Shared>,
    zero_copy: Option<bool>,
}

struct Client {
    conn: OwnedFd,
    pidfd: Option<OwnedFd>,
    pid: u32,
    program: String,
    /// (interface, slot) once joined.
    joined: Option<(String, u8)>,
}

/// How long a queue another socket just left may stay busy (see the owner's bind).
const QUEUE_RELEASE_WAIT: Duration = Duration::from_secs(1);

/// The helper's state.
pub struct Helper {
    listener: OwnedFd,
    mode: RunMode,
    ifaces: BTreeMap<String, Iface>,
    clients: Vec<Option<Client>>,
    ever_served: bool,
    started: Instant,
    pid: u32,
    uid: u32,
    frees: u64,
}

impl Helper {
    /// Listens at the helper's address in this network namespace. EADDRINUSE: another helper
    /// already does.
    pub fn bind(mode: RunMode) -> io::Result<Helper> {
        let listener = unix::listen_abstract(HELPER_ADDRESS)?;
        unix::set_nonblocking(listener.as_fd(), true)?;
        Ok(Helper {
            listener,
            mode,
            ifaces: BTreeMap::new(),
            clients: Vec::new(),
            ever_served: false,
            started: Instant::now(),
            pid: std::process::id(),
            uid: nix::unistd::geteuid().as_raw(),
            frees: 0,
        })
    }

    /// Serves until told to stop (`stop` readable), or, on demand, until the last client is
    /// gone. Everything is detached and freed when it returns.
    pub fn run(&mut self, stop: Option<BorrowedFd<'_>>) -> io::Result<()> {
        loop {
            if self.mode == RunMode::OnDemand && self.live_clients() == 0 {
                let idle = self.ever_served || self.started.elapsed() >= FIRST_CLIENT_WITHIN;
                if idle && !self.accept_pending() {
                    break;
                }
            }
            // What to watch: [stop?, listener, (conn, pidfd?) per client].
            let mut fds: Vec<BorrowedFd<'_>> = Vec::new();
            let mut what: Vec<(usize, bool)> = Vec::new(); // (client, is pidfd)
            let base = usize::from(stop.is_some()) + 1;
            if let Some(s) = stop {
                fds.push(s);
            }
            fds.push(self.listener.as_fd());
            for (i, c) in self.clients.iter().enumerate() {
                if let Some(c) = c {
                    fds.push(c.conn.as_fd());
                    what.push((i, false));
                    if let Some(p) = &c.pidfd {
                        fds.push(p.as_fd());
                        what.push((i, true));
                    }
                }
            }
            let timeout = match self.mode {
                RunMode::OnDemand if !self.ever_served => Some(
                    FIRST_CLIENT_WITHIN.saturating_sub(self.started.elapsed())
                        + Duration::from_millis(1),
                ),
                _ => None,
            };
            let ready = unix::wait_readable(&fds, timeout)?;
            drop(fds);
            if stop.is_some() && ready.contains(&0) {
                break;
            }
            for r in ready {
                if r < base {
                    if r == base - 1 {
                        self.accept_all();
                    }
                    continue;
                }
                let (client, pidfd) = what[r - base];
                if pidfd {
                    self.drop_client(client, "its process exited");
                } else {
                    self.serve(client);
                }
            }
        }
        self.shutdown();
        Ok(())
    }

    fn live_clients(&self) -> usize {
        self.clients.iter().flatten().count()
    }

    /// Takes connections that wait; returns whether there were any.
    fn accept_pending(&mut self) -> bool {
        let before = self.live_clients();
        self.accept_all();
        self.live_clients() > before
    }

    fn accept_all(&mut self) {
        loop {
            let conn = match unix::accept(self.listener.as_fd()) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a client");
                    return;
                }
            };
            let (pid, uid) = match unix::peer_cred(conn.as_fd()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a client's credentials");
                    continue;
                }
            };
            if uid != 0 && uid != self.uid {
                let _ = send_reply(
                    conn.as_fd(),
                    &Reply::Failed {
                        message: format!(
                            "accel's helper here runs as uid {} and serves only root and that user (this process runs as uid {uid}): run the program as one of them",
                            self.uid
                        ),
                        errno: libc::EPERM,
                    },
                    &[],
                );
                continue;
            }
            let pidfd = unix::peer_pidfd(conn.as_fd(), pid).ok();
            let program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            tracing::debug!(pid, %program, "client connected");
            self.ever_served = true;
            let c = Client {
                conn,
                pidfd,
                pid,
                program,
                joined: None,
            };
            match self.clients.iter().position(Option::is_none) {
                Some(i) => self.clients[i] = Some(c),
                None => self.clients.push(Some(c)),
            }
        }
    }

    /// Reads and answers one request of `client` (or drops it at the end of its stream).
    fn serve(&mut self, client: usize) {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let got = match &self.clients[client] {
            Some(c) => unix::recv(c.conn.as_fd(), &mut buf),
            None => return,
        };
        let n = match got {
            Ok(Some((n, fds))) => {
                drop(fds); // clients send none
                n
            }
            Ok(None) => {
                self.drop_client(client, "it closed its connection");
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!(error = %e, "reading a request");
                self.drop_client(client, "its connection failed");
                return;
            }
        };
        let (reply, fds) = match serde_json::from_slice::<Request>(&buf[..n]) {
            Ok(Request::Join {
                ifname,
                queues,
                mode,
                pid,
            }) => match self
                .learn_pid(client, pid)
                .and_then(|()| self.join(client, &ifname, queues, mode))
            {
                Ok((j, fds)) => (Reply::Joined(j), fds),
                Err(f) => (fail(f), Vec::new()),
            },
            Ok(Request::Flow { op, flow }) => match self.flow(client, op, flow.key()) {
                Ok(()) => (Reply::Done, Vec::new()),
                Err(f) => (fail(f), Vec::new()),
            },
            Ok(Request::Status) => (Reply::Status(self.status()), Vec::new()),
            Ok(Request::Spare) => match self.spare() {
                Ok(fd) => (Reply::Spare, vec![fd]),
                Err(f) => (fail(f), Vec::new()),
            },
            Err(e) => (
                fail(Failure::new(
                    format!("malformed request: {e}"),
                    libc::EINVAL,
                )),
                Vec::new(),
            ),
        };
        let sent = match &self.clients[client] {
            Some(c) => {
                let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
                send_reply(c.conn.as_fd(), &reply, &borrowed)
            }
            None => return,
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "answering a client");
            self.drop_client(client, "it does not read its replies");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Joining.

    /// A connection for a child of `client`'s process: served as `client` is (see
    /// `Request::Spare`); its process is known when it joins.
    fn spare(&mut self) -> Result<OwnedFd, Failure> {
        let (ours, theirs) = unix::seqpacket_pair().map_err(|e| {
            Failure::new(
                format!("cannot make a connection: {e}"),
                e.raw_os_error().unwrap_or(libc::EIO),
            )
        })?;
        unix::set_nonblocking(ours.as_fd(), true).map_err(|e| {
            Failure::new(
                format!("cannot make a connection: {e}"),
                e.raw_os_error().unwrap_or(libc::EIO),
            )
        })?;
        let c = Client {
            conn: ours,
            pidfd: None,
            pid: 0,
            program: String::new(),
            joined: None,
        };
        match self.clients.iter().position(Option::is_none) {
            Some(i) => self.clients[i] = Some(c),
            None => self.clients.push(Some(c)),
        }
        Ok(theirs)
    }

    /// A spare connection learns its process when it joins (the connection's own credentials
    /// are the helper's, which made it): from then on the helper watches that process.
    fn learn_pid(&mut self, client: usize, pid: u32) -> Result<(), Failure> {
        let Some(c) = self.clients[client].as_mut() else {
            return Ok(());
        };
        if c.pid != 0 {
            return Ok(());
        }
        let pidfd = unix::pidfd_open(pid)
            .map_err(|e| Failure::new(format!("no process {pid} to serve: {e}"), libc::ESRCH))?;
        c.pidfd = Some(pidfd);
        c.pid = pid;
        c.program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        tracing::debug!(pid, program = %c.program, "a spare connection's process joins");
        Ok(())
    }

    fn join(
        &mut self,
        client: usize,
        ifname: &str,
        queues: Option<Vec<u32>>,
        mode: WireMode,
    ) -> Result<(Joined, Vec<OwnedFd>), Failure> {
        if self.clients[client]
            .as_ref()
            .and_then(|c| c.joined.as_ref())
            .is_some()
        {
            return Err(Failure::new(
                "this connection already joined an interface: open one connection per interface",
                libc::EALREADY,
            ));
        }
        let fresh = !self.ifaces.contains_key(ifname);
        if fresh {
            let iface = Iface::open(ifname, mode.into(), self.pid)?;
            self.ifaces.insert(ifname.to_owned(), iface);
        }
        let r = self.join_iface(client, ifname, queues, mode.into());
        if r.is_err() && self.ifaces.get(ifname).is_some_and(|i| i.clients() == 0) {
            // Nothing left behind: the interface goes as it came.
            self.ifaces.remove(ifname);
        }
        r
    }

    fn join_iface(
        &mut self,
        client: usize,
        ifname: &str,
        queues: Option<Vec<u32>>,
        mode: XdpMode,
    ) -> Result<(Joined, Vec<OwnedFd>), Failure> {
        let iface = self.ifaces.get_mut(ifname).expect("opened above");
        let attached = iface.filter.attached_mode();
        let compatible = match mode {
            XdpMode::Auto => true,
            XdpMode::Native => attached == AttachedMode::Native,
            XdpMode::Generic => attached == AttachedMode::Generic,
        };
        if !compatible {
            return Err(xdp::Error::ModeMismatch {
                ifname: ifname.to_owned(),
                attached,
                requested: mode,
            }
            .into());
        }
        let in_use = iface.ctl.queues();
        let ids: Vec<u32> = queues.unwrap_or_else(|| (0..in_use).collect());
        if ids.is_empty() {
            return Err(Failure::new("no queue asked for", libc::EINVAL));
        }
        for &q in &ids {
            if q >= in_use {
                return Err(Failure::new(
                    format!("interface {ifname} has {in_use} RX queues; queue {q} does not exist: pick one below {in_use} with --queue, or leave --queue out to serve all of them"),
                    libc::EINVAL,
                ));
            }
        }
        let Some(slot) = iface.free_slot() else {
            return Err(Failure::new(
                format!("{SLOTS} processes already accelerate on {ifname}, the most one interface serves: stop one of them, or run this one without accel"),
                libc::EUSERS,
            ));
        };
        // Exact flows a previous holder of the slot may have left (a SYN pinned while it went).
        iface.purge_slot_flows(slot);
        let mut made: Vec<u32> = Vec::new();
        let mut fds: Vec<OwnedFd> = Vec::new();
        let result = (|| -> Result<(), Failure> {
            fds.push(dup(iface.ctl_fd.as_fd())?);
            fds.push(dup(iface.filter.flows_fd())?);
            fds.push(dup(iface.filter.pins_fd())?);
            for &q in &ids {
                iface.ensure_queue(q)?;
                let queue = iface.queues.get_mut(&q).expect("ensured");
                let member = queue.add_member(iface.ifindex, q, slot)?;
                queue.ctl.reset_slot(slot as usize);
                iface
                    .filter
                    .register_socket(q, slot, member.socket.fd())
                    .map_err(Failure::from)?;
                fds.push(dup(queue.umem_fd.as_fd())?);
                fds.push(dup(member.socket.fd())?);
                queue.members.insert(slot, member);
                made.push(q);
            }
            Ok(())
        })();
        if let Err(f) = result {
            for q in made {
                let _ = iface.filter.unregister_socket(q, slot);
                if let Some(queue) = iface.queues.get_mut(&q) {
                    queue.members.remove(&slot);
                }
            }
            return Err(f);
        }
        iface.slots[slot as usize] = Some(client);
        let joined = Joined {
            slot,
            ifindex: iface.ifindex,
            queues: ids,
            sizes: SIZES,
            zero_copy: iface.zero_copy.unwrap_or(false),
            native: attached == AttachedMode::Native,
            prog_id: iface.filter.program_id(),
            helper_pid: self.pid,
        };
        if let Some(c) = self.clients[client].as_mut() {
            c.joined = Some((ifname.to_owned(), slot));
            tracing::info!(pid = c.pid, program = %c.program, ifname, slot, "client joined");
        }
        Ok((joined, fds))
    }

    // -----------------------------------------------------------------------------------------
    // Shared flows.

    fn flow(&mut self, client: usize, op: FlowOp, key: FlowKey) -> Result<(), Failure> {
        let Some((ifname, slot)) = self.clients[client].as_ref().and_then(|c| c.joined.clone())
        else {
            return Err(Failure::new("join an interface first", libc::ENOTCONN));
        };
        let iface = self
            .ifaces
            .get_mut(&ifname)
            .expect("a joined client's interface");
        let entry = iface.shared.entry(key).or_default();
        match op {
            FlowOp::Add => {
                entry.holders.insert(slot);
            }
            FlowOp::Join => {
                if !entry.members.contains(&slot) && entry.members.len() >= SET_MAX {
                    return Err(Failure::new(
                        format!("{SET_MAX} processes already accept on {key}, the most one listener spreads over: this one leaves its connections to them"),
                        libc::ENOSPC,
                    ));
                }
                entry.holders.insert(slot);
                entry.members.insert(slot);
            }
            FlowOp::Leave => {
                entry.members.remove(&slot);
            }
            FlowOp::Remove => {
                entry.members.remove(&slot);
                entry.holders.remove(&slot);
            }
        }
        iface.write_shared(&key).map_err(Failure::from)
    }

    // -----------------------------------------------------------------------------------------
    // Clients going.

    fn drop_client(&mut self, client: usize, why: &str) {
        let Some(c) = self.clients.get_mut(client).and_then(Option::take) else {
            return;
        };
        tracing::info!(pid = c.pid, program = %c.program, why, "client gone");
        if let Some((ifname, slot)) = c.joined {
            if let Some(iface) = self.ifaces.get_mut(&ifname) {
                iface.release(slot, true);
                self.frees += 1;
                iface.freed_at[slot as usize] = self.frees;
                if iface.clients() == 0 {
                    tracing::info!(ifname, "last client gone: detaching");
                    self.ifaces.remove(&ifname);
                }
            }
        }
    }

    /// Stops serving: every client's sockets and slots go (without taking frames from them:
    /// they may still run), then the interfaces.
    fn shutdown(&mut self) {
        for c in self.clients.iter_mut() {
            if let Some(c) = c.take() {
                if let Some((ifname, slot)) = c.joined {
                    if let Some(iface) = self.ifaces.get_mut(&ifname) {
                        iface.release(slot, false);
                    }
                }
            }
        }
        self.ifaces.clear();
    }

    // -----------------------------------------------------------------------------------------
    // Status.

    fn status(&self) -> Status {
        let mut interfaces = Vec::new();
        for iface in self.ifaces.values() {
            let mut clients = Vec::new();
            for (slot, c) in iface.slots.iter().enumerate() {
                if let Some(c) = c.and_then(|i| self.clients.get(i)).and_then(Option::as_ref) {
                    clients.push(ClientStatus {
                        pid: c.pid,
                        slot: slot as u8,
                        program: c.program.clone(),
                        queues: iface
                            .queues
                            .iter()
                            .filter(|(_, q)| q.members.contains_key(&(slot as u8)))
                            .map(|(id, _)| *id)
                            .collect(),
                    });
                }
            }
            interfaces.push(InterfaceStatus {
                ifname: iface.ifname.clone(),
                ifindex: iface.ifindex,
                prog_id: iface.filter.program_id(),
                native: iface.filter.attached_mode() == AttachedMode::Native,
                zero_copy: iface.zero_copy.unwrap_or(false),
                clients,
                queues: iface.queues.iter().map(|(id, q)| q.status(*id)).collect(),
                exact_flows: iface
                    .filter
                    .flows()
                    .map(|f| f.iter().filter(|(k, _)| k.remote.is_some()).count() as u32)
                    .unwrap_or(0),
                pins: iface.filter.pins().map(|p| p.len() as u32).unwrap_or(0),
                shared_flows: iface
                    .shared
                    .iter()
                    .map(|(k, s)| SharedFlowStatus {
                        flow: k.to_string(),
                        slots: s.members.iter().copied().collect(),
                        holders: s.holders.iter().copied().collect(),
                    })
                    .collect(),
            });
        }
        Status {
            pid: self.pid,
            interfaces,
        }
    }
}

fn fail(f: Failure) -> Reply {
    Reply::Failed {
        message: f.message,
        errno: f.errno,
    }
}

fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, Failure> {
    fd.try_clone_to_owned().map_err(|e| {
        Failure::new(
            format!("duplicating an fd: {e}"),
            e.raw_os_error().unwrap_or(libc::EIO),
        )
    })
}

fn send_reply(conn: BorrowedFd<'_>, reply: &Reply, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let bytes =
        serde_json::to_vec(reply).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    unix::send(conn, &bytes, fds)
}

impl Iface {
    fn open(ifname: &str, mode: XdpMode, helper_pid: u32) -> Result<Iface, Failure> {
        let missing = crate::attach::missing_capabilities();
        if !missing.is_empty() {
            return Err(Failure::new(
                crate::attach::Error::Privileges {
                    missing: missing.join(", "),
                }
                .to_string(),
                libc::EPERM,
            ));
        }
        let info = crate::control::interfaces()
            .map_err(|e| Failure::new(e.to_string(), libc::EIO))?
            .into_iter()
            .find(|i| i.name == ifname)
            .ok_or_else(|| {
                Failure::from(xdp::Error::NoSuchInterface {
                    ifname: ifname.to_owned(),
                    ifindex: 0,
                })
            })?;
        let filter = Filter::open(info.index, ifname, mode)
            .map_err(|e| Failure::from(crate::attach::explain(&info, e)))?;
        let queues = crate::attach::rx_queues_in_use(&info).clamp(1, xdp::MAX_QUEUES as u32);
        let shape = Shape {
            frame_size: SIZES.frame_size,
            frame_count: SIZES.frame_count,
        };
        let (ctl_fd, ctl) = Ctl::create(queues, shape, helper_pid).map_err(|e| {
            Failure::new(
                format!("creating the control area: {e}"),
                e.raw_os_error().unwrap_or(libc::EIO),
            )
        })?;
        tracing::info!(
            ifname,
            queues,
            prog_id = filter.program_id(),
            "serving interface"
        );
        Ok(Iface {
            ifname: ifname.to_owned(),
            ifindex: info.index,
            filter,
            ctl,
            ctl_fd,
            queues: BTreeMap::new(),
            slots: [None; SLOTS],
            freed_at: [0; SLOTS],
            shared: BTreeMap::new(),
            zero_copy: None,
        })
    }

    fn clients(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    fn free_slot(&self) -> Option<u8> {
        (0..SLOTS)
            .filter(|&s| self.slots[s].is_none())
            .min_by_key(|&s| (self.freed_at[s], s))
            .map(|s| s as u8)
    }

    /// Sets queue `q` up if it is not yet: its UMEM, owner socket and frames.
    fn ensure_queue(&mut self, q: u32) -> Result<(), Failure> {
        if self.queues.contains_key(&q) {
            return Ok(());
        }
        let native = self.filter.attached_mode() == AttachedMode::Native;
        let try_zero_copy = self.zero_copy.unwrap_or(native);
        let queue = Queue::open(&self.ctl, self.ifindex, &self.ifname, q, try_zero_copy)?;
        if self.zero_copy.is_none() {
            self.zero_copy = Some(queue.zero_copy);
        }
        self.queues.insert(q, queue);
        Ok(())
    }

    /// Writes a shared flow's entry from its holders and members (deleting it with its last
    /// holder).
    fn write_shared(&mut self, key: &FlowKey) -> Result<(), xdp::Error> {
        let Some(s) = self.shared.get(key) else {
            return Ok(());
        };
        if s.holders.is_empty() && s.members.is_empty() {
            self.shared.remove(key);
            self.filter.remove_flow(key)?;
            return Ok(());
        }
        let slots: Vec<u8> = s.members.iter().copied().collect();
        let value = FlowValue::set(&slots).expect("sets are kept within SET_MAX");
        self.filter.set_flow(key, value)
    }

    /// Deletes every exact flow and pin that sends to `slot` alone.
    fn purge_slot_flows(&self, slot: u8) {
        match self.filter.flows() {
            Ok(flows) => {
                for (k, v) in flows {
                    if k.remote.is_some() && v.slots() == [slot] {
                        let _ = self.filter.remove_flow(&k);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the flow table"),
        }
        match self.filter.pins() {
            Ok(pins) => {
                for (k, v) in pins {
                    if v.slots() == [slot] {
                        let _ = self.filter.remove_pin(&k);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the pin table"),
        }
    }

    /// Takes `slot` out of everything: shared flows, XSKMAP, exact flows; with `recover`, puts
    /// the frames left on its rings back and counts what it held as leaked.
    fn release(&mut self, slot: u8, recover: bool) {
        let keys: Vec<FlowKey> = self.shared.keys().copied().collect();
        for k in keys {
            if let Some(s) = self.shared.get_mut(&k) {
                let had = s.members.remove(&slot) | s.holders.remove(&slot);
                if had {
                    if let Err(e) = self.write_shared(&k) {
                        tracing::warn!(error = %e, flow = %k, "updating a shared flow");
                    }
                }
            }
        }
        for (&q, _) in self.queues.iter() {
            let _ = self.filter.unregister_socket(q, slot);
        }
        self.purge_slot_flows(slot);
        for queue in self.queues.values_mut() {
            if let Some(m) = queue.members.remove(&slot) {
                queue.retire(slot, m, recover);
            }
        }
        self.slots[slot as usize] = None;
    }
}

impl Queue {
    fn open(
        ctl: &Ctl,
        ifindex: u32,
        ifname: &str,
        q: u32,
        try_zero_copy: bool,
    ) -> Result<Queue, Failure> {
        let io = |what: &str, e: io::Error| {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            let ifname = ifname.to_owned();
            let e = match errno {
                libc::EBUSY => crate::attach::Error::QueueBusy { ifname, queue: q },
                // XDP_UMEM_REG: the pinned frames exceed RLIMIT_MEMLOCK.
                libc::ENOBUFS if what == "registering the UMEM" => {
                    crate::attach::Error::LockedMemory {
                        ifname,
                        mib: crate::queue::UMEM_BYTES >> 20,
                        limit: crate::attach::memlock_limit(),
                    }
                }
                _ => crate::attach::Error::Socket {
                    ifname,
                    queue: q,
                    reason: format!("{what}: {e}"),
                },
            };
            Failure::new(e.to_string(), errno)
        };
        let len = SIZES.frame_count as usize * SIZES.frame_size as usize;
        let umem_fd = shm::memfd("accel-umem", len).map_err(|e| io("creating the UMEM", e))?;
        let umem =
            Arc::new(Region::map(umem_fd.as_fd(), len, 0).map_err(|e| io("mapping the UMEM", e))?);
        let modes: &[(u16, bool)] = if try_zero_copy {
            &[(XDP_ZEROCOPY, true), (XDP_COPY, false)]
        } else {
            &[(XDP_COPY, false)]
        };
        let mut last = None;
        let mut bound = None;
        for &(flag, zc) in modes {
            let attempt = (|| -> Result<XskSocket, Failure> {
                let s = XskSocket::new().map_err(|e| io("creating the socket", e))?;
                s.register_umem(&umem, SIZES.frame_size)
                    .map_err(|e| io("registering the UMEM", e))?;
                for (kind, size) in [
                    (RingKind::Fill, SIZES.fill_ring),
                    (RingKind::Completion, SIZES.completion_ring),
                    (RingKind::Rx, OWNER_RX_RING),
                ] {
                    s.set_ring_size(kind, size)
                        .map_err(|e| io("sizing its rings", e))?;
                }
                // The kernel frees a queue a little after its last AF_XDP socket closes (the
                // UMEM's deferred cleanup): binding again at once, as when a program's last
                // process left and another arrives, sees EBUSY for a few milliseconds. Nothing
                // signals the release, so the bind is retried for up to a second.
                let deadline = Instant::now() + QUEUE_RELEASE_WAIT;
                loop {
                    match s.bind(ifindex, q, flag | XDP_USE_NEED_WAKEUP, None) {
                        Ok(()) => break,
                        Err(e)
                            if e.raw_os_error() == Some(libc::EBUSY)
                                && Instant::now() < deadline =>
                        {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => return Err(io("binding it", e)),
                    }
                }
                Ok(s)
            })();
            match attempt {
                Ok(s) => {
                    bound = Some((s, zc));
                    break;
                }
                Err(f) => {
                    if zc {
                        tracing::debug!(ifname, q, error = %f.message, "zero-copy bind failed, using copy mode");
                    }
                    last = Some(f);
                }
            }
        }
        let Some((owner, asked_zero_copy)) = bound else {
            return Err(last.unwrap_or_else(|| Failure::new("no bind mode", libc::EINVAL)));
        };
        let zero_copy = owner.zero_copy().unwrap_or(asked_zero_copy);
        let fill = owner
            .map_ring(RingKind::Fill, SIZES.fill_ring)
            .map_err(|e| io("mapping the fill ring", e))?;
        let completion = owner
            .map_ring(RingKind::Completion, SIZES.completion_ring)
            .map_err(|e| io("mapping the completion ring", e))?;
        let qctl = ctl
            .init_queue(q)
            .map_err(|e| io("setting up the control area", e))?;
        let mut queue = Queue {
            ctl: qctl,
            fill: Producer::new(fill),
            completion: Consumer::new(completion),
            umem_fd,
            _umem: umem,
            owner,
            zero_copy,
            members: BTreeMap::new(),
            retired: Retired::default(),
        };
        // Every frame to the fill ring or the free stack.
        let mut to_fill: Vec<u64> = (0..INITIAL_FILL)
            .map(|i| u64::from(i) * u64::from(SIZES.frame_size))
            .collect();
        let mut to_free: Vec<u64> = (INITIAL_FILL..SIZES.frame_count)
            .map(|i| u64::from(i) * u64::from(SIZES.frame_size))
            .collect();
        {
            let mut s = queue
                .ctl
                .lock(
                    HELPER_SLOT,
                    &mut queue.fill,
                    &mut queue.completion,
                    CLEANUP_LOCK,
                )
                .map_err(|e| io("locking the new queue", e))?;
            s.seed(&mut to_free);
            s.seed_fill(&mut queue.fill, &mut to_fill);
        }
        if queue.fill.needs_wakeup() {
            let _ = queue.owner.kick_rx();
        }
        tracing::info!(ifname, queue = q, zero_copy, "queue set up");
        Ok(queue)
    }

    /// A client socket on this queue, bound to its UMEM, its rings mapped for the accounting.
    fn add_member(&self, ifindex: u32, q: u32, slot: u8) -> Result<Member, Failure> {
        let e = |what: &str, e: io::Error| {
            Failure::new(
                format!("cannot open an AF_XDP socket on queue {q} for slot {slot}: {what}: {e}"),
                e.raw_os_error().unwrap_or(libc::EIO),
            )
        };
        let s = XskSocket::new().map_err(|x| e("creating it", x))?;
        s.set_ring_size(RingKind::Rx, SIZES.rx_ring)
            .map_err(|x| e("sizing its RX ring", x))?;
        s.set_ring_size(RingKind::Tx, SIZES.tx_ring)
            .map_err(|x| e("sizing its TX ring", x))?;
        s.bind(ifindex, q, XDP_SHARED_UMEM, Some(self.owner.fd()))
            .map_err(|x| e("binding it to the shared UMEM", x))?;
        let rx = s
            .map_ring(RingKind::Rx, SIZES.rx_ring)
            .map_err(|x| e("mapping its RX ring", x))?;
        let tx = s
            .map_ring(RingKind::Tx, SIZES.tx_ring)
            .map_err(|x| e("mapping its TX ring", x))?;
        Ok(Member { socket: s, rx, tx })
    }

    /// A member leaves: its ring frames back to the free stack (recovered), its private frames
    /// counted as leaked, its counters folded into the retired sums.
    fn retire(&mut self, slot: u8, m: Member, recover: bool) {
        let rings = MemberRings {
            slot,
            rx: &m.rx,
            tx: &m.tx,
        };
        match account::retire(
            &self.ctl,
            &mut self.fill,
            &mut self.completion,
            &rings,
            Departure {
                recover,
                zero_copy: self.zero_copy,
                timeout: CLEANUP_LOCK,
            },
            &mut self.retired,
        ) {
            Ok(left) => {
                if recover {
                    tracing::info!(
                        slot,
                        recovered = left.recovered,
                        leaked = left.leaked,
                        "client's frames accounted"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, slot, "cannot lock a queue to clean a client up; its frames are lost")
            }
        }
        // Closing our fd releases the socket once the client's copy is gone too.
        drop(m);
    }

    fn status(&self, queue: u32) -> QueueStatus {
        account::census(
            queue,
            &self.ctl,
            self.fill.mem(),
            self.completion.mem(),
            self.members.iter().map(|(&slot, m)| MemberRings {
                slot,
                rx: &m.rx,
                tx: &m.tx,
            }),
            self.retired,
        )
    }
}
