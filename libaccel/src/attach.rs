//! Bringing accel up on one interface: check privileges, mirror the interface, attach (or join)
//! the XDP flow filter, open one AF_XDP socket per queue and register them.
//!
//! The order is chosen so a failure leaves nothing behind: nothing touches the interface until
//! every check that can fail cheaply (name, type, address, privileges) has passed, and the
//! filter and sockets are owned values whose Drop undoes them.

use std::fmt;

use crate::control::{self, ControlPlane, InterfaceInfo};
use crate::queue::{CopyMode, Queue, QueueSet};
use crate::xdp::{self, AttachedMode, Filter, XdpMode};

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
    #[error("queue {queue} of {ifname} is already served by another AF_XDP socket (another accel process? `accel-stat` lists them): a queue serves one process; stop the other one, or give each its own queues (accel-echo --queue)")]
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
fn memlock_limit() -> String {
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
#[derive(Clone, Debug)]
pub struct Options {
    /// `None`: every RX queue of the interface.
    pub queues: Option<Vec<u32>>,
    pub mode: XdpMode,
}

/// accel running on one interface: its mirror, its share of the filter, its queues.
pub struct Attachment {
    // Drop order: queues (sockets leave the XSKMAP), then the filter (flows, link), then the mirror.
    pub queues: QueueSet,
    pub filter: Filter,
    pub control: ControlPlane,
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("interface", self.control.interface())
            .finish()
    }
}

impl Attachment {
    /// Opens accel on the interface `control` mirrors.
    pub fn open(control: ControlPlane, opts: &Options) -> Result<Attachment, Error> {
        let info: InterfaceInfo = control.interface().clone();
        let in_use = rx_queues_in_use(&info);
        let queue_ids: Vec<u32> = match &opts.queues {
            Some(q) => q.clone(),
            None => (0..in_use).collect(),
        };
        for &q in &queue_ids {
            if q >= in_use {
                return Err(Error::NoSuchQueue {
                    ifname: info.name.clone(),
                    queue: q,
                    count: in_use,
                });
            }
        }
        let missing = missing_capabilities();
        if !missing.is_empty() {
            return Err(Error::Privileges {
                missing: missing.join(", "),
            });
        }
        let filter =
            Filter::open(info.index, &info.name, opts.mode).map_err(|e| explain(&info, e))?;
        let zero_copy = filter.attached_mode() == AttachedMode::Native;
        let mut queues = Vec::with_capacity(queue_ids.len());
        for &q in &queue_ids {
            let queue = Queue::open(&info.name, q, info.mtu as usize, zero_copy).map_err(|e| {
                let errno = e.source.as_ref().and_then(|s| s.raw_os_error());
                if errno == Some(libc::EBUSY) {
                    Error::QueueBusy {
                        ifname: info.name.clone(),
                        queue: q,
                    }
                } else if errno == Some(libc::ENOBUFS) {
                    // XDP_UMEM_REG: the pinned frames exceed RLIMIT_MEMLOCK.
                    Error::LockedMemory {
                        ifname: info.name.clone(),
                        mib: crate::queue::UMEM_BYTES >> 20,
                        limit: memlock_limit(),
                    }
                } else {
                    Error::Socket {
                        ifname: info.name.clone(),
                        queue: q,
                        reason: e.to_string(),
                    }
                }
            })?;
            filter.register_socket(q, queue.fd())?;
            queues.push(queue);
        }
        Ok(Attachment {
            queues: QueueSet::new(queues),
            filter,
            control,
        })
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
        let copy = match self.queues.queues()[0].copy_mode() {
            CopyMode::ZeroCopy => "zero-copy",
            CopyMode::Copy => "copy mode",
        };
        let mode = match self.filter.attached_mode() {
            AttachedMode::Native => "native XDP",
            AttachedMode::Generic => "generic XDP",
        };
        format!("{} queues [{}], {mode}, {copy}", info.name, ids.join(","))
    }
}

/// An engine runs over an attachment: frames through its queues, next hops from its mirror,
/// flows into the XDP filter's map.
impl stack::engine::Backend for Attachment {
    type Link = QueueSet;
    type Resolver = ControlPlane;
    type Flow = xdp::FlowKey;
    type FlowError = xdp::Error;

    fn parts(&mut self) -> (&mut QueueSet, &mut ControlPlane) {
        (&mut self.queues, &mut self.control)
    }

    fn add_flow(&mut self, flow: &xdp::FlowKey) -> Result<(), xdp::Error> {
        self.filter.add_flow(flow)
    }

    fn remove_flow(&mut self, flow: &xdp::FlowKey) {
        if let Err(e) = self.filter.remove_flow(flow) {
            tracing::warn!(error = %e, "removing a flow from the XDP filter");
        }
    }

    fn refresh(&mut self) {
        if let Err(e) = self.control.refresh() {
            tracing::warn!(error = %e, "control-plane refresh failed");
        }
    }

    fn steer(&mut self, flow: &xdp::FlowKey, to: stack::engine::Steer) -> Result<(), xdp::Error> {
        match to {
            stack::engine::Steer::Stack => self.filter.add_flow(flow),
            // This filter knows no drop or pass-to-kernel entries yet.
            _ => Err(xdp::Error::Unsupported {
                ifname: self.control.interface().name.clone(),
                what: "steering one connection to the kernel",
            }),
        }
    }

    fn serve_flow(&mut self, _flow: &xdp::FlowKey, _serve: bool) -> Result<(), xdp::Error> {
        // One process per interface: it serves every flow it holds.
        Ok(())
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
