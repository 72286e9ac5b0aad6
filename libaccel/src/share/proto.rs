//! The helper's protocol: one JSON request or reply per SOCK_SEQPACKET message, fds beside it
//! (SCM_RIGHTS). Only the control plane goes through here (joining, shared flows, status); the
//! data path never talks to the helper.

use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::xdp::{FlowKey, Proto, XdpMode};

/// Largest message either side sends (a status with many clients and flows stays well below).
pub(crate) const MAX_MESSAGE: usize = 256 * 1024;

/// A client's request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Request {
    /// Serve this connection's process on `ifname`: a slot, and one AF_XDP socket per queue
    /// (`None`: every queue the interface uses). Once per connection.
    Join {
        ifname: String,
        queues: Option<Vec<u32>>,
        mode: WireMode,
        /// The joining process (a connection made by [`Request::Spare`] learns it here).
        pid: u32,
    },
    /// Changes a bound or listening flow's slot set for this connection's slot.
    Flow { op: FlowOp, flow: WireFlow },
    /// What the helper serves (for accel-stat and the tests).
    Status,
    /// A new connection, for a process this one forks: the reply carries its end. The helper
    /// serves it as it serves this one, whatever the child's uid (an nginx worker that runs as
    /// `nobody`): acceleration passes down from a process the helper accepted to its children,
    /// and to nobody else.
    Spare,
}

/// What to do with a shared flow.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum FlowOp {
    /// The entry exists (empty set if new); this slot holds it (it stays while any holder
    /// does). A listener that does not accept yet: its SYNs still go to the kernel.
    Add,
    /// Holds it and adds this slot to its set: this process gets a share of its packets.
    Join,
    /// Takes this slot out of the set (still holding the entry).
    Leave,
    /// Lets go: out of the set and no longer a holder; the entry goes with its last holder.
    Remove,
}

/// XDP attach mode on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum WireMode {
    Auto,
    Native,
    Generic,
}

impl From<XdpMode> for WireMode {
    fn from(m: XdpMode) -> Self {
        match m {
            XdpMode::Auto => WireMode::Auto,
            XdpMode::Native => WireMode::Native,
            XdpMode::Generic => WireMode::Generic,
        }
    }
}

impl From<WireMode> for XdpMode {
    fn from(m: WireMode) -> Self {
        match m {
            WireMode::Auto => XdpMode::Auto,
            WireMode::Native => XdpMode::Native,
            WireMode::Generic => XdpMode::Generic,
        }
    }
}

/// A bound or listening flow on the wire.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct WireFlow {
    pub(crate) tcp: bool,
    pub(crate) local: SocketAddrV4,
}

impl WireFlow {
    /// `None` for an exact flow (those are the client's own to write).
    pub(crate) fn of(key: &FlowKey) -> Option<WireFlow> {
        key.remote.is_none().then_some(WireFlow {
            tcp: key.proto == Proto::Tcp,
            local: key.local,
        })
    }

    pub(crate) fn key(&self) -> FlowKey {
        FlowKey::listening(if self.tcp { Proto::Tcp } else { Proto::Udp }, self.local)
    }
}

/// The sizes of a queue's UMEM and rings.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sizes {
    pub frame_size: u32,
    pub frame_count: u32,
    pub fill_ring: u32,
    pub completion_ring: u32,
    pub rx_ring: u32,
    pub tx_ring: u32,
}

/// What a client gets for joining (fds beside it: the control area, the flow map, the pin map,
/// then per queue in `queues`' order its UMEM memfd and its AF_XDP socket).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Joined {
    pub(crate) slot: u8,
    pub(crate) ifindex: u32,
    pub(crate) queues: Vec<u32>,
    pub(crate) sizes: Sizes,
    pub(crate) zero_copy: bool,
    pub(crate) native: bool,
    pub(crate) prog_id: u32,
    pub(crate) helper_pid: u32,
}

/// A helper's reply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Reply {
    Joined(Joined),
    Done,
    /// A spare connection's end is attached.
    Spare,
    Status(Status),
    /// The request failed: the message names the cause and the fix; `errno` is the kernel's
    /// when one applies.
    Failed {
        message: String,
        errno: i32,
    },
}

/// What the helper serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Status {
    pub pid: u32,
    pub interfaces: Vec<InterfaceStatus>,
}

/// One interface the helper serves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InterfaceStatus {
    pub ifname: String,
    pub ifindex: u32,
    pub prog_id: u32,
    pub native: bool,
    pub zero_copy: bool,
    pub clients: Vec<ClientStatus>,
    pub queues: Vec<QueueStatus>,
    /// Bound and listening flows with their slot sets and holders.
    pub shared_flows: Vec<SharedFlowStatus>,
    /// Exact flows the processes wrote (connected sockets).
    pub exact_flows: u32,
    /// Connections the XDP program pinned at their SYN and nobody removed yet.
    pub pins: u32,
}

/// A process served on an interface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientStatus {
    pub pid: u32,
    pub slot: u8,
    /// Its command name (`/proc/PID/comm`).
    pub program: String,
    pub queues: Vec<u32>,
}

/// Where a queue's frames are (a snapshot: exact only while no traffic moves).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct QueueStatus {
    pub queue: u32,
    pub frames: u32,
    /// On the shared free stack.
    pub free: u32,
    /// In the fill ring.
    pub fill: u32,
    /// Taken from the fill ring by the kernel, in no RX ring yet.
    pub kernel_rx: u32,
    /// In the clients' RX rings.
    pub rx_rings: u32,
    /// Held by the clients (their caches, received frames, frames being sent).
    pub private: u32,
    /// On the clients' TX rings.
    pub tx_rings: u32,
    /// Taken from a TX ring by the kernel, not completed yet.
    pub kernel_tx: u32,
    /// In the completion ring.
    pub completion: u32,
    /// Held by processes that died (never recovered).
    pub leaked: u32,
    /// Taken back from dead or departed clients' rings.
    pub recovered: u32,
    /// Addresses refused as outside the UMEM.
    pub bad: u32,
    /// Changes a dead process left half done, repaired.
    pub repairs: u32,
    /// Whether the places above add up to `frames`.
    pub accounted: bool,
}

/// A bound or listening flow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedFlowStatus {
    pub flow: String,
    pub slots: Vec<u8>,
    pub holders: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip() {
        let r = Request::Flow {
            op: FlowOp::Join,
            flow: WireFlow {
                tcp: true,
                local: "198.18.0.1:80".parse().unwrap(),
            },
        };
        let s = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<Request>(&s).unwrap(), r);
        let f = Reply::Failed {
            message: "no".into(),
            errno: 1,
        };
        assert_eq!(
            serde_json::from_slice::<Reply>(&serde_json::to_vec(&f).unwrap()).unwrap(),
            f
        );
    }

    #[test]
    fn only_bound_and_listening_flows_go_to_the_helper() {
        let l: SocketAddrV4 = "198.18.0.1:80".parse().unwrap();
        let r: SocketAddrV4 = "198.18.0.2:9".parse().unwrap();
        let w = WireFlow::of(&FlowKey::listening(Proto::Udp, l)).unwrap();
        assert_eq!(w.key(), FlowKey::listening(Proto::Udp, l));
        assert!(WireFlow::of(&FlowKey::connected(Proto::Tcp, l, r)).is_none());
    }
}
