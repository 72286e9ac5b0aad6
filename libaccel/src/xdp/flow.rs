//! The flow table's key and value, byte for byte as `struct flow_key` / `struct flow_value` in
//! `bpf/accel_xdp.c` (change both together).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number (`IPPROTO_TCP`, `IPPROTO_UDP`).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        })
    }
}

/// A flow the XDP filter redirects to accel: packets to `local` (from `remote`, or from anyone
/// when `remote` is `None`, for bound and listening sockets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: Proto,
    pub local: SocketAddrV4,
    pub remote: Option<SocketAddrV4>,
}

impl FlowKey {
    /// Size of `struct flow_key`.
    pub const SIZE: usize = 16;

    /// A bound or listening socket: any remote.
    pub fn listening(proto: Proto, local: SocketAddrV4) -> Self {
        FlowKey {
            proto,
            local,
            remote: None,
        }
    }

    /// A connected socket: exactly this remote. A remote of 0.0.0.0:0 is the wildcard, so it
    /// gives the same key as [`FlowKey::listening`].
    pub fn connected(proto: Proto, local: SocketAddrV4, remote: SocketAddrV4) -> Self {
        let wildcard = remote.ip().is_unspecified() && remote.port() == 0;
        FlowKey {
            proto,
            local,
            remote: (!wildcard).then_some(remote),
        }
    }

    /// `struct flow_key` bytes: addresses and ports in network byte order, padding zero.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let remote = self
            .remote
            .unwrap_or(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.local.ip().octets());
        b[4..8].copy_from_slice(&remote.ip().octets());
        b[8..10].copy_from_slice(&self.local.port().to_be_bytes());
        b[10..12].copy_from_slice(&remote.port().to_be_bytes());
        b[12] = self.proto.number();
        b
    }

    /// Parses `struct flow_key` bytes; `None` if the length, protocol or padding is wrong.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::SIZE] = b.try_into().ok()?;
        if b[13..16] != [0, 0, 0] {
            return None;
        }
        let proto = Proto::from_number(b[12])?;
        let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
        let port = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
        let local = SocketAddrV4::new(ip(0), port(8));
        let remote = SocketAddrV4::new(ip(4), port(10));
        Some(FlowKey::connected(proto, local, remote))
    }
}

impl fmt::Display for FlowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.remote {
            Some(r) => write!(f, "{} {} <- {}", self.proto, self.local, r),
            None => write!(f, "{} {} (any remote)", self.proto, self.local),
        }
    }
}

/// How many slots a bound or listening flow's set holds (`ACCEL_SET_MAX`).
pub const SET_MAX: usize = 8;
/// Slots per interface (`ACCEL_SLOTS`): a process's AF_XDP socket on queue `q` is at key
/// `q * SLOTS + slot` of the XSKMAP.
pub const SLOTS: usize = 16;
/// Queues per interface the XSKMAP has room for (`ACCEL_MAX_QUEUES`).
pub const MAX_QUEUES: usize = 64;

/// `ACCEL_FLOW_PASS`: the connection was handed to the kernel; its packets go there.
pub const FLOW_PASS: u32 = 1;
/// `ACCEL_FLOW_PINNED`: the XDP program made this exact entry at the connection's SYN.
pub const FLOW_PINNED: u32 = 2;
/// `ACCEL_FLOW_DROP`: the connection is moving to the kernel; its packets are dropped
/// meanwhile (the peer retransmits them).
pub const FLOW_DROP: u32 = 4;
/// The entry was made only to drop a pinned connection's packets while it moves; it goes
/// when the connection stays (only userspace reads it).
pub const FLOW_HELD: u32 = 8;

/// `struct flow_value`: where a flow's packets go. Host byte order (only userspace reads the
/// flags as a number; slots are bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct FlowValue {
    pub flags: u32,
    nslots: u8,
    slots: [u8; SET_MAX],
}

impl FlowValue {
    pub const SIZE: usize = 16;

    /// An exact flow of one slot.
    pub fn exact(slot: u8) -> FlowValue {
        let mut slots = [0u8; SET_MAX];
        slots[0] = slot;
        FlowValue {
            flags: 0,
            nslots: 1,
            slots,
        }
    }

    /// A bound or listening flow served by `slots` (at most [`SET_MAX`]; `None` if more, or
    /// if a slot is out of range). An empty set sends everything to the kernel.
    pub fn set(slots: &[u8]) -> Option<FlowValue> {
        if slots.len() > SET_MAX || slots.iter().any(|&s| s as usize >= SLOTS) {
            return None;
        }
        let mut set = [0u8; SET_MAX];
        set[..slots.len()].copy_from_slice(slots);
        Some(FlowValue {
            flags: 0,
            nslots: slots.len() as u8,
            slots: set,
        })
    }

    /// The slots that get the flow's packets.
    pub fn slots(&self) -> &[u8] {
        &self.slots[..(self.nslots as usize).min(SET_MAX)]
    }

    pub fn is_pass(&self) -> bool {
        self.flags & FLOW_PASS != 0
    }

    pub fn is_drop(&self) -> bool {
        self.flags & FLOW_DROP != 0
    }

    pub fn is_pinned(&self) -> bool {
        self.flags & FLOW_PINNED != 0
    }

    pub fn to_bytes(self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.flags.to_ne_bytes());
        b[4] = self.nslots;
        b[5..13].copy_from_slice(&self.slots);
        b
    }

    /// Parses `struct flow_value` bytes (a slot count beyond [`SET_MAX`] is cut to it).
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let mut slots = [0u8; SET_MAX];
        slots.copy_from_slice(&b[5..13]);
        FlowValue {
            flags: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            nslots: b[4].min(SET_MAX as u8),
            slots,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    #[test]
    fn connected_key_is_the_c_struct_in_network_order() {
        let k = FlowKey::connected(
            Proto::Tcp,
            sa([198, 18, 0, 1], 80),
            sa([198, 18, 0, 2], 0x1234),
        );
        assert_eq!(
            k.to_bytes(),
            [198, 18, 0, 1, 198, 18, 0, 2, 0, 80, 0x12, 0x34, 6, 0, 0, 0],
        );
    }

    #[test]
    fn listening_key_has_zero_remote_and_padding() {
        let k = FlowKey::listening(Proto::Udp, sa([198, 18, 1, 1], 5353));
        assert_eq!(
            k.to_bytes(),
            [198, 18, 1, 1, 0, 0, 0, 0, 0x14, 0xe9, 0, 0, 17, 0, 0, 0]
        );
        assert_eq!(k.remote, None);
    }

    #[test]
    fn wildcard_remote_is_listening() {
        let l = sa([198, 18, 0, 1], 80);
        assert_eq!(
            FlowKey::connected(Proto::Tcp, l, sa([0, 0, 0, 0], 0)),
            FlowKey::listening(Proto::Tcp, l)
        );
        // A connected key with only the port set is not a wildcard.
        assert!(FlowKey::connected(Proto::Tcp, l, sa([0, 0, 0, 0], 9))
            .remote
            .is_some());
    }

    #[test]
    fn bytes_round_trip() {
        for k in [
            FlowKey::listening(Proto::Tcp, sa([198, 18, 0, 1], 443)),
            FlowKey::connected(
                Proto::Udp,
                sa([198, 18, 0, 1], 53),
                sa([198, 19, 255, 254], 65535),
            ),
        ] {
            assert_eq!(FlowKey::from_bytes(&k.to_bytes()), Some(k));
        }
    }

    #[test]
    fn from_bytes_rejects_bad_input() {
        let good = FlowKey::listening(Proto::Tcp, sa([198, 18, 0, 1], 80)).to_bytes();
        assert_eq!(FlowKey::from_bytes(&good[..15]), None);
        let mut icmp = good;
        icmp[12] = 1;
        assert_eq!(FlowKey::from_bytes(&icmp), None);
        let mut pad = good;
        pad[15] = 1;
        assert_eq!(FlowKey::from_bytes(&pad), None);
    }

    #[test]
    fn value_round_trip_and_layout() {
        let mut v = FlowValue::set(&[3, 7, 1]).unwrap();
        v.flags = FLOW_PINNED;
        assert_eq!(FlowValue::from_bytes(&v.to_bytes()), v);
        let b = v.to_bytes();
        assert_eq!(&b[..4], &FLOW_PINNED.to_ne_bytes());
        assert_eq!(&b[4..9], &[3, 3, 7, 1, 0]);
        assert_eq!(v.slots(), &[3, 7, 1]);
        assert_eq!(FlowValue::exact(5).slots(), &[5]);
        assert!(FlowValue::set(&[0; 9]).is_none(), "more than SET_MAX");
        assert!(FlowValue::set(&[16]).is_none(), "slot out of range");
        assert!(FlowValue::set(&[]).unwrap().slots().is_empty());
        let mut junk = [0xffu8; FlowValue::SIZE];
        junk[4] = 200;
        assert_eq!(FlowValue::from_bytes(&junk).slots().len(), SET_MAX);
    }

    #[test]
    fn display_names_the_flow() {
        let k = FlowKey::connected(
            Proto::Tcp,
            sa([198, 18, 0, 1], 80),
            sa([198, 18, 0, 2], 1000),
        );
        assert_eq!(k.to_string(), "TCP 198.18.0.1:80 <- 198.18.0.2:1000");
        let l = FlowKey::listening(Proto::Udp, sa([198, 18, 0, 1], 53));
        assert_eq!(l.to_string(), "UDP 198.18.0.1:53 (any remote)");
    }
}
