//! Bringing accel up on one interface for this process: join through the accel-helper of the
//! network namespace (started on demand), map the shared queues it hands over, and serve them
//! as one engine [`Backend`](stack::engine::Backend).
//!
//! # API (what the preload and accel-echo build on)
//!
//! Types: [`Attachment`] (this process on one interface), [`Options`] (`queues`: `None` for
//! every RX queue in use; `mode`: [`XdpMode`]; `helper`: the accel-helper to start if none runs,
//! `None` for `$ACCEL_HELPER` ([`crate::share::HELPER_ENV`]) else the one beside this
//! executable), [`Error`] (message names cause and fix; [`Error::errno`] the kernel's errno),
//! [`FlowKey`] (`FlowKey::connected(proto, local, remote)` for a connected socket,
//! `FlowKey::listening(proto, local)` for a bound or listening one), [`FlowOp`],
//! [`QueueSet`] / [`crate::queue::Queue`] (the queues, their counters) and
//! [`crate::share::Status`] (what the helper serves).
//!
//! - Joining: [`Attachment::open`]`(control, &options)` gets a slot on the interface (0..16,
//!   the same on every queue; [`Attachment::slot`]) and one AF_XDP socket per queue over the
//!   queue's shared UMEM. Several processes, related or not, may each hold one on the same
//!   interface and queues (at most [`crate::share::SLOTS`]). One process alone pays nothing
//!   more on the data path than before: its RX and TX rings are its own; the shared fill and
//!   completion rings and free-frame stack are taken in batches, at most one uncontended mutex
//!   per batch. Dropping it gives its frames back and leaves; so does the process exiting,
//!   being killed, or exec'ing (the helper connection is close-on-exec, and the helper watches
//!   the pid): the helper then removes its sockets, its exact flows and pins, and its slot from
//!   every shared set. A forked child must neither use nor drop-for-the-parent its parent's
//!   attachment (it is inert in the child: dropping it there touches nothing shared); the
//!   child calls `Attachment::open` itself and gets a slot of its own.
//! - Frames: [`Attachment::queues`] is the [`Link`](stack::link::Link) (a [`QueueSet`];
//!   `queues.queues()[i].counters`, `frames_accounted()`, `kernel_stats()`);
//!   [`Attachment::queue_fds`] are the fds to sleep on (one per queue, readable when frames
//!   arrive).
//! - Exact flows (connected sockets) are this process's own, written straight into the XDP
//!   flow map through its fd, no helper round trip:
//!   - [`Attachment::add_exact_flow`] on connect (also what `Backend::add_flow` does for a key
//!     with a remote); [`Attachment::remove_exact_flow`] once the connection is gone;
//!   - connections a listener accepted need no call: the XDP program pinned each to this
//!     process at its SYN (map `accel_pins`); once they are closed (after a grace, for late
//!     segments: accel-echo waits 2 s), [`Attachment::remove_pinned`]`(&keys)` removes their
//!     pins in batches (BPF_MAP_DELETE_BATCH; absent keys are skipped). Pins left behind are
//!     not lost for good (an LRU of 131,072 entries makes room) and go with the process;
//!   - [`Attachment::pass_flow`]: the connection was handed to the kernel (TCP_REPAIR); its
//!     packets go to the kernel from now on, pinned or not (the flow map is looked at before
//!     the pins). Remove it with `remove_exact_flow` when the kernel socket closes.
//! - Shared flows (bound and listening), which several processes may hold, change only
//!   through the helper (serialised read-modify-write of the slot set):
//!   [`Attachment::shared_flow`]`(op, &FlowKey::listening(..))` with
//!   - [`FlowOp::Add`] on listen(): the entry exists with no slot of this process, so SYNs
//!     still reach the kernel listener every accelerated listener keeps (nginx's master);
//!   - [`FlowOp::Join`] when the process first accepts or waits on the listener: it gets a
//!     share of the new connections, each pinned to it at its SYN by a hash of its source (a
//!     UDP socket: of the datagrams, by the same hash); ENOSPC (`Error::errno`) when
//!     [`crate::xdp::SET_MAX`] processes already accept there (the listener stays on the
//!     kernel in this process);
//!   - [`FlowOp::Leave`] to stop getting new ones (draining; its pinned connections stay);
//!   - [`FlowOp::Remove`] on close: out of the set and no longer a holder; the entry goes with
//!     its last holder. `Backend::add_flow` / `remove_flow` do `Join` / `Remove` for a key
//!     without a remote.
//! - Facts and status: [`Attachment::describe`] (one line), [`Attachment::xdp_mode`],
//!   [`Attachment::zero_copy`], [`Attachment::program_id`], [`Attachment::helper_pid`];
//!   [`Attachment::helper`]`().status()` or [`crate::share::status`]`()` (no spawn; `None` when
//!   no helper runs) for every process served (pid, slot, program), every queue's frames
//!   (free, in rings, held, leaked by dead processes) and the shared flows' sets.
//!
//! - fds: the attachment's fds are accel's own, not the program's: its AF_XDP sockets and BPF
//!   maps, the mirror's netlink sockets (`control.raw_fds()`) and the helper connection
//!   ([`Attachment::helper`]`().fd()`, close-on-exec; closing it ends the membership, as an
//!   exit does).
//!
//! Errors name the cause and the fix; the helper's refusals come back with its message and
//! errno.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::control::{self, ControlPlane, InterfaceInfo};
use crate::queue::{CopyMode, QueueSet};
use crate::share::ctl::Ctl;
use crate::share::proto::Joined;
use crate::share::{helper_path, FlowOp, HelperConn, RequestError};
use crate::sys::shm::Region;
use crate::sys::xsk::{QueueParts, RingKind, Rings, XskQueue, XskSocket};
use crate::xdp::{self, AttachedMode, FlowKey, FlowTable, XdpMode};

/// Why accel cannot run on an interface. Every message names the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Control(#[from] control::Error),
    #[error(transparent)]
    Xdp(#[from] xdp::Error),
    #[error("accel needs the capabilities {missing} to use AF_XDP and load its XDP program: run it as root, or grant them (`setcap cap_net_admin,cap_net_raw,cap_bpf+ep BINARY`; in a container, add them to its capabilities)")]
    Privileges { missing: String },
    #[error("interface {ifname} has {count} RX queues; queue {queue} does not exist: pick one below {count} with --queue, or leave --queue out to serve all of them")]
    NoSuchQueue {
        ifname: String,
        queue: u32,
        count: u32,
    },
    #[error("cannot open an AF_XDP socket on {ifname} queue {queue}: {reason}; check that the interface supports XDP (`ip -d link show {ifname}`)")]
    Socket {
        ifname: String,
        queue: u32,
        reason: String,
    },
    #[error("queue {queue} of {ifname} is already served by an AF_XDP socket of another program (not accel's: accel's processes share queues through the accel-helper): stop it, or give accel other queues (accel-echo --queue)")]
    QueueBusy { ifname: String, queue: u32 },
    #[error("the kernel refuses XDP on {ifname}: its veth peer {peer}{where_} has MTU {peer_mtu}, more than XDP on a veth takes (one page per frame, about 3500 bytes): set the peer's MTU to {mtu} like {ifname}'s (`ip link set dev {peer} mtu {mtu}` in {peer}'s namespace)")]
    PeerMtu {
        ifname: String,
        peer: String,
        /// " (in another network namespace)" when it is not in ours.
        where_: &'static str,
        peer_mtu: u32,
        mtu: u32,
    },
    #[error("the AF_XDP frame memory of {ifname} ({mib} MiB per RX queue) is over the locked-memory limit ({limit}, counted for all processes of this user): raise it (`ulimit -l unlimited`; Docker: --ulimit memlock=-1) or grant CAP_IPC_LOCK")]
    LockedMemory {
        ifname: String,
        mib: u64,
        limit: String,
    },
    #[error("accel's helper is not installed where it was looked for ({looked}): set ACCEL_HELPER to the accel-helper binary, which comes with accel-run")]
    NoHelper { looked: String },
    /// The helper could not be started or reached, or refused (its message says why; `errno`
    /// is the kernel's for the same failure, e.g. ENOSPC when a listener's set is full).
    #[error("{message}")]
    Helper { message: String, errno: i32 },
}

impl Error {
    fn from_request(e: RequestError) -> Error {
        Error::Helper {
            errno: e.errno(),
            message: e.to_string(),
        }
    }

    /// The errno the kernel would give for the same failure (what a socket call reports when
    /// it cannot fall back to the kernel).
    pub fn errno(&self) -> i32 {
        match self {
            Error::Control(control::Error::NoSuchInterface { .. }) => libc::ENODEV,
            Error::Control(control::Error::InterfaceDown { .. }) => libc::ENETDOWN,
            Error::Control(control::Error::Netlink(e)) => e.raw_os_error().unwrap_or(libc::EIO),
            Error::Control(_) => libc::EINVAL,
            Error::Xdp(e) => e.errno(),
            Error::Privileges { .. } => libc::EPERM,
            Error::NoSuchQueue { .. } | Error::PeerMtu { .. } => libc::EINVAL,
            Error::Socket { .. } => libc::EIO,
            Error::QueueBusy { .. } => libc::EBUSY,
            Error::LockedMemory { .. } => libc::ENOBUFS,
            Error::NoHelper { .. } => libc::ENOENT,
            Error::Helper { errno, .. } => *errno,
        }
    }
}

/// An XDP filter error on `info`, with what the control plane can add: the refused MTU is
/// the veth peer's, which it names with its MTU when it can see it.
pub fn explain(info: &InterfaceInfo, e: xdp::Error) -> Error {
    if let xdp::Error::MtuTooLarge { .. } = e {
        if let Ok(Some(peer)) = control::peer_of(info) {
            return Error::PeerMtu {
                ifname: info.name.clone(),
                peer: peer.name,
                where_: if info.link_netnsid.is_some() {
                    " (in another network namespace)"
                } else {
                    ""
                },
                peer_mtu: peer.mtu,
                mtu: info.mtu,
            };
        }
    }
    Error::Xdp(e)
}

/// This process's locked-memory limit as /proc/self/limits says it (`8388608 bytes`,
/// `unlimited`), for messages.
pub(crate) fn memlock_limit() -> String {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max locked memory"))
        .and_then(|rest| rest.split_whitespace().next())
        .map(|soft| match soft.parse::<u64>() {
            Ok(bytes) => format!("{} KiB", bytes / 1024),
            Err(_) => soft.to_owned(),
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The capabilities accel needs that this process lacks (empty when all are there), from
/// /proc/self/status CapEff. See [`missing_from`].
pub fn missing_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    missing_from(eff)
}

/// What an effective capability set `eff` lacks:
///
/// - CAP_NET_ADMIN: attach the XDP program, ask the kernel to resolve neighbours;
/// - CAP_NET_RAW: open AF_XDP sockets;
/// - CAP_BPF, or CAP_SYS_ADMIN which includes it: load the program and create its maps.
///
/// CAP_SYS_ADMIN is not required: only joining a program another accel process attached on the
/// same interface needs it (the kernel's `BPF_*_GET_FD_BY_ID`), and that fails with its own
/// message. The AF_XDP frame memory is charged to the locked-memory limit unless CAP_IPC_LOCK
/// is there (see `Error::Socket`).
pub fn missing_from(eff: u64) -> Vec<&'static str> {
    let has = |bit: u32| eff & (1u64 << bit) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (or CAP_SYS_ADMIN)");
    }
    missing
}

/// The RX queues the interface uses now, which an AF_XDP socket can bind: the driver's
/// channel count (`ethtool -l`), else the most it could have (`numrxqueues`, from netlink).
/// The two differ on a veth made without `numrxqueues` (as `ip link add type veth`, Docker and
/// most CNIs make them): it may have one queue per CPU but uses one, and binding another fails.
pub fn rx_queues_in_use(info: &InterfaceInfo) -> u32 {
    match crate::sys::bpf::if_rx_channels(&info.name) {
        Ok(n) if n > 0 => n.min(info.rx_queues.max(1)),
        _ => info.rx_queues.max(1),
    }
}

/// What to open.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `None`: every RX queue of the interface.
    pub queues: Option<Vec<u32>>,
    pub mode: XdpMode,
    /// The accel-helper binary to start if none runs (`None`: `$ACCEL_HELPER`, else the one
    /// next to this program's executable).
    pub helper: Option<PathBuf>,
}

/// accel running on one interface for this process: its queues, its mirror of the interface,
/// its flows, its membership with the helper.
pub struct Attachment {
    // Drop order: queues (frames given back, sockets closed), the mirror, the flow map, then
    // the helper connection (whose end makes the helper clean the slot up).
    pub queues: QueueSet,
    pub control: ControlPlane,
    flows: FlowTable,
    joined: Joined,
    helper: HelperConn,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("interface", self.control.interface())
            .field("slot", &self.joined.slot)
            .finish()
    }
}

impl Attachment {
    /// Joins accel on the interface `control` mirrors (see the module header).
    pub fn open(control: ControlPlane, opts: &Options) -> Result<Attachment, Error> {
        Self::open_with(control, opts, None)
    }

    /// [`Attachment::open`] over a connection to the helper this process already has (one a
    /// parent made for it with [`HelperConn::spare`]), instead of connecting.
    pub fn open_with(
        control: ControlPlane,
        opts: &Options,
        conn: Option<HelperConn>,
    ) -> Result<Attachment, Error> {
        let info: InterfaceInfo = control.interface().clone();
        let count = rx_queues_in_use(&info);
        if let Some(qs) = &opts.queues {
            for &q in qs {
                if q >= count {
                    return Err(Error::NoSuchQueue {
                        ifname: info.name.clone(),
                        queue: q,
                        count,
                    });
                }
            }
        }
        let helper = match conn {
            Some(c) => c,
            None => {
                let path = helper_path(opts.helper.as_deref()).ok_or_else(|| Error::NoHelper {
                    looked: format!(
                        "${}, and next to {}",
                        crate::share::HELPER_ENV,
                        std::env::current_exe()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|_| "this program".into())
                    ),
                })?;
                HelperConn::connect_or_spawn(&path).map_err(|e| Error::Helper {
                    errno: e.raw_os_error().unwrap_or(libc::EIO),
                    message: e.to_string(),
                })?
            }
        };
        let (joined, fds) = helper
            .join(&info.name, opts.queues.clone(), opts.mode)
            .map_err(Error::from_request)?;
        let bad = |what: &str| {
            Error::Helper {
                message: format!("accel's helper sent {what}; is it the same version as this program? (`accel-helper --version`)"),
                errno: libc::EPROTO,
            }
        };
        if fds.len() != 3 + 2 * joined.queues.len() {
            return Err(bad("the wrong number of fds"));
        }
        let mut fds = fds.into_iter();
        let ctl_fd = fds.next().expect("counted");
        let flows_fd = fds.next().expect("counted");
        let pins_fd = fds.next().expect("counted");
        let ctl = Ctl::open(ctl_fd.as_fd()).map_err(|_| bad("a control area that does not fit"))?;
        let s = joined.sizes;
        if ctl.shape().frame_size != s.frame_size || ctl.shape().frame_count != s.frame_count {
            return Err(bad("sizes that do not match its control area"));
        }
        let flows = FlowTable::from_fds(flows_fd, pins_fd, joined.slot, &info.name)?;
        let mode = if joined.zero_copy {
            CopyMode::ZeroCopy
        } else {
            CopyMode::Copy
        };
        let mut queues = Vec::with_capacity(joined.queues.len());
        for &q in &joined.queues {
            let umem_fd = fds.next().expect("counted");
            let sock = XskSocket::from_fd(fds.next().expect("counted"));
            let fail = |what: &str, e: std::io::Error| Error::Socket {
                ifname: info.name.clone(),
                queue: q,
                reason: format!("{what}: {e}"),
            };
            let len = s.frame_size as usize * s.frame_count as usize;
            let umem =
                Region::map(umem_fd.as_fd(), len, 0).map_err(|e| fail("mapping the UMEM", e))?;
            let rings = Rings {
                rx: sock
                    .map_ring(RingKind::Rx, s.rx_ring)
                    .map_err(|e| fail("mapping the RX ring", e))?,
                tx: sock
                    .map_ring(RingKind::Tx, s.tx_ring)
                    .map_err(|e| fail("mapping the TX ring", e))?,
                fill: sock
                    .map_ring(RingKind::Fill, s.fill_ring)
                    .map_err(|e| fail("mapping the fill ring", e))?,
                completion: sock
                    .map_ring(RingKind::Completion, s.completion_ring)
                    .map_err(|e| fail("mapping the completion ring", e))?,
            };
            let qctl = ctl
                .queue(q)
                .map_err(|e| fail("reading the control area", e))?;
            let queue = XskQueue::new(QueueParts {
                socket: Some(sock),
                rings,
                umem: Arc::new(umem),
                ctl: qctl,
                slot: joined.slot as usize,
                queue_id: q,
                mode,
                mtu: info.mtu as usize,
            })
            .map_err(|e| Error::Socket {
                ifname: info.name.clone(),
                queue: q,
                reason: e.to_string(),
            })?;
            queues.push(queue);
        }
        tracing::debug!(ifname = %info.name, slot = joined.slot, queues = ?joined.queues, "joined");
        Ok(Attachment {
            queues: QueueSet::new(queues),
            control,
            flows,
            joined,
            helper,
        })
    }

    /// This process's slot on the interface (0..16, the same on every queue).
    pub fn slot(&self) -> u8 {
        self.joined.slot
    }

    /// The XDP mode the filter runs in.
    pub fn xdp_mode(&self) -> AttachedMode {
        if self.joined.native {
            AttachedMode::Native
        } else {
            AttachedMode::Generic
        }
    }

    /// Whether the queues run in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.joined.zero_copy
    }

    /// The kernel's id of the XDP program.
    pub fn program_id(&self) -> u32 {
        self.joined.prog_id
    }

    /// The helper's process id.
    pub fn helper_pid(&self) -> u32 {
        self.joined.helper_pid
    }

    /// The fds that become readable when frames arrive (one per queue).
    pub fn queue_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.queues.queues().iter().map(|q| q.fd()).collect()
    }

    /// Every fd the attachment keeps open (helper connection, flow maps, AF_XDP sockets): a
    /// forked child must not keep copies of them.
    pub fn raw_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        let mut v = vec![
            self.helper.fd().as_raw_fd(),
            self.flows.fd().as_raw_fd(),
            self.flows.pins_fd().as_raw_fd(),
        ];
        v.extend(self.queue_fds().iter().map(|f| f.as_raw_fd()));
        v
    }

    /// The flow map as this process writes it.
    pub fn flow_table(&self) -> &FlowTable {
        &self.flows
    }

    /// Steers the exact flow `key` (a connected socket) to this process.
    pub fn add_exact_flow(&self, key: &FlowKey) -> Result<(), Error> {
        Ok(self.flows.add_exact(key)?)
    }

    /// Stops steering the exact flow `key` to this process (if it is this process's).
    pub fn remove_exact_flow(&self, key: &FlowKey) -> Result<bool, Error> {
        Ok(self.flows.remove_exact(key)?)
    }

    /// Sends the exact flow `key` to the kernel (a connection handed over to a kernel socket).
    pub fn pass_flow(&self, key: &FlowKey) -> Result<(), Error> {
        Ok(self.flows.pass(key)?)
    }

    /// Removes the exact entries of closed connections this process accepted (pinned at their
    /// SYN by the XDP program), in batches. Returns how many were there.
    pub fn remove_pinned(&self, keys: &[FlowKey]) -> Result<usize, Error> {
        Ok(self.flows.remove_pinned(keys)?)
    }

    /// Changes this process's part in a bound or listening flow, through the helper.
    pub fn shared_flow(&self, op: FlowOp, key: &FlowKey) -> Result<(), Error> {
        self.helper
            .shared_flow(op, key)
            .map_err(Error::from_request)
    }

    /// For the recovery test: dies in the middle of a change of queue 0's shared state, holding
    /// its mutex (see `XskQueue::freeze_in_shared_change`).
    #[cfg(feature = "test-hooks")]
    pub fn freeze_in_shared_change(&mut self, announce: impl FnOnce()) -> ! {
        self.queues.queues_mut()[0].freeze_in_shared_change(announce)
    }

    /// The helper connection (status requests).
    pub fn helper(&self) -> &HelperConn {
        &self.helper
    }

    /// One line that says what was opened.
    pub fn describe(&self) -> String {
        let info = self.control.interface();
        let ids: Vec<String> = self
            .queues
            .queues()
            .iter()
            .map(|q| q.queue_id().to_string())
            .collect();
        let copy = if self.joined.zero_copy {
            "zero-copy"
        } else {
            "copy mode"
        };
        let mode = match self.xdp_mode() {
            AttachedMode::Native => "native XDP",
            AttachedMode::Generic => "generic XDP",
        };
        format!(
            "{} queues [{}], {mode}, {copy}, slot {} (helper {})",
            info.name,
            ids.join(","),
            self.joined.slot,
            self.joined.helper_pid
        )
    }
}

/// An engine runs over an attachment: frames through its queues, next hops from its mirror,
/// flows into the XDP filter's map (exact ones directly, shared ones through the helper).
impl stack::engine::Backend for Attachment {
    type Link = QueueSet;
    type Resolver = ControlPlane;
    type Flow = xdp::FlowKey;
    type FlowError = Error;

    fn parts(&mut self) -> (&mut QueueSet, &mut ControlPlane) {
        (&mut self.queues, &mut self.control)
    }

    fn add_flow(&mut self, flow: &xdp::FlowKey) -> Result<(), Error> {
        if flow.remote.is_some() {
            self.add_exact_flow(flow)
        } else {
            self.shared_flow(FlowOp::Join, flow)
        }
    }

    fn remove_flow(&mut self, flow: &xdp::FlowKey) {
        let r = if flow.remote.is_some() {
            self.remove_exact_flow(flow).map(drop)
        } else {
            self.shared_flow(FlowOp::Remove, flow)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "removing a flow from the XDP filter");
        }
    }

    fn refresh(&mut self) {
        if let Err(e) = self.control.refresh() {
            tracing::warn!(error = %e, "control-plane refresh failed");
        }
    }

    fn steer(&mut self, flow: &xdp::FlowKey, to: stack::engine::Steer) -> Result<(), Error> {
        match to {
            stack::engine::Steer::Drop => Ok(self.flows.hold(flow)?),
            stack::engine::Steer::Stack => Ok(self.flows.release(flow)?),
            stack::engine::Steer::Kernel => self.pass_flow(flow),
        }
    }

    fn serve_flow(&mut self, flow: &xdp::FlowKey, serve: bool) -> Result<(), Error> {
        let op = if serve { FlowOp::Join } else { FlowOp::Leave };
        self.shared_flow(op, flow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_mtu_message_names_the_peer_its_mtu_and_the_fix() {
        let e = Error::PeerMtu {
            ifname: "veth-a".into(),
            peer: "veth-b".into(),
            where_: " (in another network namespace)",
            peer_mtu: 9000,
            mtu: 1500,
        };
        let s = e.to_string();
        assert!(
            s.contains("its veth peer veth-b (in another network namespace) has MTU 9000"),
            "{s}"
        );
        assert!(
            s.ends_with("(`ip link set dev veth-b mtu 1500` in veth-b's namespace)"),
            "{s}"
        );
    }

    #[test]
    fn errors_carry_the_kernels_errno_the_helpers_included() {
        let full = Error::from_request(RequestError::Refused {
            message: "8 processes already accept on TCP 198.18.0.1:80".into(),
            errno: libc::ENOSPC,
        });
        assert_eq!(full.errno(), libc::ENOSPC);
        assert_eq!(
            full.to_string(),
            "8 processes already accept on TCP 198.18.0.1:80"
        );
        let gone = Error::from_request(RequestError::Io(std::io::Error::from_raw_os_error(
            libc::ECONNRESET,
        )));
        assert_eq!(gone.errno(), libc::ECONNRESET);
        let privileges = Error::Privileges {
            missing: "CAP_BPF".into(),
        };
        assert_eq!(privileges.errno(), libc::EPERM);
        let busy = Error::QueueBusy {
            ifname: "veth-a".into(),
            queue: 0,
        };
        assert_eq!(busy.errno(), libc::EBUSY);
        let table = Error::Xdp(xdp::Error::NoSuchInterface {
            ifname: "veth-a".into(),
            ifindex: 9,
        });
        assert_eq!(table.errno(), libc::ENODEV);
    }

    #[test]
    fn the_memlock_limit_is_read_from_proc() {
        let l = memlock_limit();
        assert!(l == "unlimited" || l.ends_with(" KiB"), "{l}");
    }

    #[test]
    fn capabilities_needed_are_net_admin_net_raw_and_bpf_or_sys_admin() {
        let bits = |caps: &[u32]| caps.iter().fold(0u64, |m, c| m | 1 << c);
        assert!(missing_from(bits(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF])).is_empty());
        assert!(missing_from(bits(&[CAP_NET_ADMIN, CAP_NET_RAW, CAP_SYS_ADMIN])).is_empty());
        assert!(missing_from(u64::MAX).is_empty());
        assert_eq!(
            missing_from(bits(&[CAP_NET_RAW])),
            ["CAP_NET_ADMIN", "CAP_BPF (or CAP_SYS_ADMIN)"]
        );
        assert_eq!(
            missing_from(bits(&[CAP_NET_ADMIN, CAP_BPF, CAP_SYS_ADMIN])),
            ["CAP_NET_RAW"]
        );
    }
}
