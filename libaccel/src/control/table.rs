//! The mirror itself: interface, routes and neighbours as plain data, with the lookups the stack
//! needs and the conversion from rtnetlink messages to table updates. No I/O here, so every rule
//! (longest-prefix match, which neighbour states are usable, what a next hop resolves to) is
//! unit-tested on tables and messages built in memory.

// FxHash: these maps are looked up for every packet sent (route, then neighbour) and their
// keys come from the kernel's tables, whose size the kernel bounds (neighbours: gc_thresh3).
use rustc_hash::FxHashMap as HashMap;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

/// What the kernel says about one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceInfo {
    pub index: u32,
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `ARPHRD_ETHER`: frames on it are Ethernet frames.
    pub ethernet: bool,
    /// IPv4 addresses with their prefix length, in the kernel's order (primary first).
    pub addrs: Vec<(Ipv4Addr, u8)>,
    pub rx_queues: u32,
    pub tx_queues: u32,
    /// The link's kind (`IFLA_INFO_KIND`: `veth`, `bridge`, `macvlan`, ...); `None` for a
    /// device with a driver of its own (a NIC).
    pub kind: Option<String>,
    /// `IFLA_LINK`: the ifindex of a veth's peer (of a VLAN's or macvlan's lower device), in
    /// the namespace `link_netnsid` names, else in ours.
    pub link: Option<u32>,
    /// `IFLA_LINK_NETNSID`: our id for the namespace `link` is in, when it is not ours.
    pub link_netnsid: Option<i32>,
}

impl InterfaceInfo {
    /// Whether frames on this link come from a kernel on this host and never cross a wire, so
    /// that their TCP/UDP checksum may be the partial sum the sender left for offload (see
    /// the stack's `Config::partial_checksums`). veth only: frames on a macvlan or ipvlan may
    /// also come from a wire, where a checksum must be complete.
    pub fn software_link(&self) -> bool {
        self.kind.as_deref() == Some("veth")
    }

    /// The interface described by a link message (addresses are not part of it: empty).
    pub(crate) fn from_link(msg: &LinkMessage) -> InterfaceInfo {
        let mut info = InterfaceInfo {
            index: msg.header.index,
            name: String::new(),
            mac: [0; 6],
            mtu: 0,
            up: false,
            ethernet: false,
            addrs: Vec::new(),
            rx_queues: 1,
            tx_queues: 1,
            kind: None,
            link: None,
            link_netnsid: None,
        };
        info.update_from_link(msg);
        info
    }

    /// Applies the fields a link message carries; attributes it lacks keep their value.
    fn update_from_link(&mut self, msg: &LinkMessage) {
        self.up = msg.header.flags.contains(LinkFlags::Up);
        self.ethernet = msg.header.link_layer_type == LinkLayerType::Ether;
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => self.name.clone_from(name),
                LinkAttribute::Address(a) if a.len() == 6 => self.mac.copy_from_slice(a),
                LinkAttribute::Mtu(mtu) => self.mtu = *mtu,
                LinkAttribute::NumRxQueues(n) => self.rx_queues = *n,
                LinkAttribute::NumTxQueues(n) => self.tx_queues = *n,
                LinkAttribute::Link(i) => self.link = Some(*i),
                LinkAttribute::LinkNetNsId(id) => self.link_netnsid = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(kind) = i {
                            self.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The route chosen for a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The router to send through; `None` when the destination is on-link.
    pub gateway: Option<Ipv4Addr>,
    /// The matched prefix.
    pub prefix: (Ipv4Addr, u8),
    /// Preferred source address (`RTA_PREFSRC`, else one of our addresses, on the subnet of the
    /// next hop when there is one).
    pub src: Option<Ipv4Addr>,
}

/// What a route entry does with matching packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RouteKind {
    /// Sent out of `oif` (to `gateway` when there is one).
    Unicast,
    /// Blackhole, unreachable, prohibit: the kernel would not send it, neither do we.
    Reject,
}

/// One IPv4 route of the main table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RouteEntry {
    pub dst: Ipv4Addr,
    pub len: u8,
    pub tos: u8,
    pub priority: u32,
    pub kind: RouteKind,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    pub src: Option<Ipv4Addr>,
}

impl RouteEntry {
    /// The kernel's identity of an IPv4 route within a table, besides its prefix (what a
    /// replace or a delete matches).
    fn same_key(&self, other: &RouteEntry) -> bool {
        self.tos == other.tos && self.priority == other.priority
    }
}

/// Routes by prefix length, then by (masked) destination: insert and delete are O(1), a lookup
/// is one hash probe per prefix length in use, longest first. Hosts with thousands of routes (a
/// /32 per container is common) stay cheap on the hot path, and lookups never allocate.
#[derive(Clone, Debug, Default)]
struct Fib {
    /// Index = prefix length (0..=32).
    by_len: Vec<HashMap<Ipv4Addr, Vec<RouteEntry>>>,
    /// Bit `len` set when `by_len[len]` is not empty.
    lens: u64,
}

impl Fib {
    fn new() -> Fib {
        Fib {
            by_len: vec![HashMap::default(); 33],
            lens: 0,
        }
    }

    fn clear(&mut self) {
        self.by_len.iter_mut().for_each(HashMap::clear);
        self.lens = 0;
    }

    /// Adds or replaces; returns whether the table changed.
    fn insert(&mut self, e: RouteEntry) -> bool {
        let len = usize::from(e.len);
        let same = self.by_len[len].entry(e.dst).or_default();
        self.lens |= 1 << len;
        match same.iter_mut().find(|x| x.same_key(&e)) {
            Some(x) if *x == e => false,
            Some(x) => {
                *x = e;
                true
            }
            None => {
                same.push(e);
                true
            }
        }
    }

    /// Deletes; returns whether the table changed.
    fn remove(&mut self, e: &RouteEntry) -> bool {
        let len = usize::from(e.len);
        let map = &mut self.by_len[len];
        let Some(same) = map.get_mut(&e.dst) else {
            return false;
        };
        let Some(i) = same.iter().position(|x| x.same_key(e)) else {
            return false;
        };
        same.swap_remove(i);
        if same.is_empty() {
            map.remove(&e.dst);
            if map.is_empty() {
                self.lens &= !(1 << len);
            }
        }
        true
    }

    /// The most specific route for a packet to `dst` with TOS 0 (what the stack sends), lowest
    /// metric first among routes of that prefix.
    fn lookup(&self, dst: Ipv4Addr) -> Option<&RouteEntry> {
        let mut lens = self.lens;
        while lens != 0 {
            let len = 63 - lens.leading_zeros() as u8;
            lens &= !(1 << len);
            let net = Ipv4Addr::from(u32::from(dst) & mask(len));
            let best = self.by_len[usize::from(len)].get(&net).and_then(|same| {
                same.iter()
                    .filter(|e| e.tos == 0)
                    .min_by_key(|e| e.priority)
            });
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

fn prefix_contains(net: Ipv4Addr, len: u8, ip: Ipv4Addr) -> bool {
    let m = mask(len);
    u32::from(net) & m == u32::from(ip) & m
}

/// Neighbour states in which the kernel's link-layer address can be used:
/// REACHABLE, STALE, DELAY, PROBE, NOARP, PERMANENT (not NONE, INCOMPLETE, FAILED).
pub(crate) const NUD_USABLE: u16 = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80;

/// Whether a neighbour in `state` (a `NUD_*` bit set) has a usable address.
pub fn usable_state(state: u16) -> bool {
    state & NUD_USABLE != 0
}

/// What the stack should do to reach a destination, decided from the table alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send to this Ethernet address.
    Mac([u8; 6]),
    /// The next hop is this address and its Ethernet address is not known: ask the kernel.
    Resolve(Ipv4Addr),
    /// No route through this interface (or the interface is down).
    Unreachable,
}

/// The mirror of one interface: link, IPv4 addresses, main-table IPv4 routes (all interfaces,
/// so a more specific route through another interface is seen), IPv4 neighbours on it.
#[derive(Clone, Debug)]
pub struct Table {
    iface: InterfaceInfo,
    routes: Fib,
    neighbours: HashMap<Ipv4Addr, [u8; 6]>,
    /// The interface was deleted; kept so callers see a clear "down" rather than stale data.
    gone: bool,
}

impl Table {
    /// An empty table for `iface` (its `addrs` are kept).
    pub fn new(iface: InterfaceInfo) -> Table {
        Table {
            iface,
            routes: Fib::new(),
            neighbours: HashMap::default(),
            gone: false,
        }
    }

    pub fn interface(&self) -> &InterfaceInfo {
        &self.iface
    }

    /// The interface was removed from the kernel since the table was built.
    pub fn is_gone(&self) -> bool {
        self.gone
    }

    /// Forgets addresses, routes and neighbours (before a full re-dump).
    pub(crate) fn clear(&mut self) {
        self.iface.addrs.clear();
        self.routes.clear();
        self.neighbours.clear();
    }

    /// Longest-prefix match over the main table and the on-link prefixes of our addresses. Ties
    /// go to the lower metric, and kernel routes beat the implied on-link prefixes. The winner
    /// must leave through this interface; a reject route (or a route through another interface)
    /// wins and gives `None`, as the kernel would not send it here.
    pub fn route(&self, dst: Ipv4Addr) -> Option<Route> {
        let kernel = self.routes.lookup(dst).copied();
        // The on-link prefix of one of our addresses, if more specific than the kernel's route
        // (a kernel route of equal length wins: it is usually that very prefix route).
        let on_link = self
            .iface
            .addrs
            .iter()
            .filter(|&&(a, l)| prefix_contains(a, l, dst))
            .max_by_key(|&&(_, l)| l)
            .filter(|&&(_, l)| kernel.is_none_or(|k| l > k.len))
            .map(|&(addr, len)| RouteEntry {
                dst: Ipv4Addr::from(u32::from(addr) & mask(len)),
                len,
                tos: 0,
                priority: u32::MAX,
                kind: RouteKind::Unicast,
                oif: Some(self.iface.index),
                gateway: None,
                src: Some(addr),
            });
        let e = on_link.or(kernel)?;
        if e.kind != RouteKind::Unicast || e.oif != Some(self.iface.index) {
            return None;
        }
        let hop = e.gateway.unwrap_or(dst);
        let src = e.src.or_else(|| {
            self.iface
                .addrs
                .iter()
                .find(|&&(a, l)| prefix_contains(a, l, hop))
                .or(self.iface.addrs.first())
                .map(|&(a, _)| a)
        });
        Some(Route {
            gateway: e.gateway,
            prefix: (e.dst, e.len),
            src,
        })
    }

    /// The Ethernet address of a neighbour in a usable state.
    pub fn neighbour(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.neighbours.get(&ip).copied()
    }

    /// Route, then neighbour. Broadcast and multicast destinations map to their Ethernet group
    /// address without asking anyone. No allocation, no I/O.
    pub fn decide(&self, dst: Ipv4Addr) -> Decision {
        if !self.iface.up || self.gone {
            return Decision::Unreachable;
        }
        if dst.is_broadcast()
            || self.iface.addrs.iter().any(|&(a, l)| {
                l < 31 && prefix_contains(a, l, dst) && u32::from(dst) | mask(l) == u32::MAX
            })
        {
            return Decision::Mac([0xff; 6]);
        }
        if dst.is_multicast() {
            let o = dst.octets();
            return Decision::Mac([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]);
        }
        let Some(route) = self.route(dst) else {
            return Decision::Unreachable;
        };
        let hop = route.gateway.unwrap_or(dst);
        match self.neighbour(hop) {
            Some(mac) => Decision::Mac(mac),
            None => Decision::Resolve(hop),
        }
    }

    /// Applies every rtnetlink message of one datagram as the kernel sent it (bytes from a
    /// netlink socket: untrusted, parsed with netlink-packet-route; undecodable messages are
    /// skipped, a malformed header ends the datagram). Returns how many changed the table.
    pub fn apply_datagram(&mut self, datagram: &[u8]) -> u64 {
        let mut changed = 0;
        for m in super::netlink::Messages::new(datagram) {
            if let netlink_packet_core::NetlinkPayload::InnerMessage(inner) = m.payload {
                if self.apply(&inner) {
                    changed += 1;
                }
            }
        }
        changed
    }

    /// Applies one rtnetlink notification or dump entry. Returns whether the table changed.
    /// Messages about other interfaces, other families or other tables are ignored.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) -> bool {
        match msg {
            RouteNetlinkMessage::NewLink(m) => self.new_link(m),
            RouteNetlinkMessage::DelLink(m) => {
                if m.header.index != self.iface.index || self.gone {
                    return false;
                }
                self.gone = true;
                self.iface.up = false;
                true
            }
            RouteNetlinkMessage::NewAddress(m) => self.address(m, true),
            RouteNetlinkMessage::DelAddress(m) => self.address(m, false),
            RouteNetlinkMessage::NewRoute(m) => self.route_msg(m, true),
            RouteNetlinkMessage::DelRoute(m) => self.route_msg(m, false),
            RouteNetlinkMessage::NewNeighbour(m) => self.neighbour_msg(m, true),
            RouteNetlinkMessage::DelNeighbour(m) => self.neighbour_msg(m, false),
            _ => false,
        }
    }

    fn new_link(&mut self, m: &LinkMessage) -> bool {
        if m.header.index != self.iface.index {
            return false;
        }
        let before = self.iface.clone();
        self.iface.update_from_link(m);
        self.gone = false;
        before != self.iface
    }

    fn address(&mut self, m: &AddressMessage, add: bool) -> bool {
        if m.header.family != AddressFamily::Inet || m.header.index != self.iface.index {
            return false;
        }
        // IFA_LOCAL is our address; IFA_ADDRESS is the peer on point-to-point links.
        let mut local = None;
        let mut address = None;
        for attr in &m.attributes {
            match attr {
                AddressAttribute::Local(IpAddr::V4(a)) => local = Some(*a),
                AddressAttribute::Address(IpAddr::V4(a)) => address = Some(*a),
                _ => {}
            }
        }
        let Some(addr) = local.or(address) else {
            return false;
        };
        let entry = (addr, m.header.prefix_len);
        let pos = self.iface.addrs.iter().position(|e| *e == entry);
        match (add, pos) {
            (true, None) => {
                self.iface.addrs.push(entry);
                true
            }
            (false, Some(i)) => {
                self.iface.addrs.remove(i);
                true
            }
            _ => false,
        }
    }

    fn route_msg(&mut self, m: &RouteMessage, add: bool) -> bool {
        let Some(entry) = route_entry(m, self.iface.index) else {
            return false;
        };
        if add {
            self.routes.insert(entry)
        } else {
            self.routes.remove(&entry)
        }
    }

    fn neighbour_msg(&mut self, m: &NeighbourMessage, add: bool) -> bool {
        let h = &m.header;
        if h.family != AddressFamily::Inet
            || h.ifindex != self.iface.index
            || h.flags.contains(NeighbourFlags::Proxy)
        {
            return false;
        }
        let mut dst = None;
        let mut mac = None;
        for attr in &m.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => dst = Some(*a),
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    let mut a = [0; 6];
                    a.copy_from_slice(l);
                    mac = Some(a);
                }
                _ => {}
            }
        }
        let Some(dst) = dst else {
            return false;
        };
        let usable = add && usable_state(u16::from(h.state));
        match (usable, mac) {
            (true, Some(mac)) => self.neighbours.insert(dst, mac) != Some(mac),
            _ => self.neighbours.remove(&dst).is_some(),
        }
    }
}

/// The main-table IPv4 route a route message describes, or `None` for messages we do not mirror
/// (other families, other tables, local/broadcast/multicast routes, multipath routes with no hop
/// through `ifindex`).
pub(crate) fn route_entry(m: &RouteMessage, ifindex: u32) -> Option<RouteEntry> {
    let h = &m.header;
    if h.address_family != AddressFamily::Inet {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    let mut gateway = None;
    let mut src = None;
    let mut priority = 0;
    let mut multipath = None;
    for attr in &m.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dst = *a,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gateway = Some(*a),
            RouteAttribute::PrefSource(RouteAddress::Inet(a)) => src = Some(*a),
            RouteAttribute::Priority(p) => priority = *p,
            RouteAttribute::MultiPath(hops) => multipath = Some(hops),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let kind = match h.kind {
        RouteType::Unicast => RouteKind::Unicast,
        RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit => RouteKind::Reject,
        _ => return None,
    };
    if let Some(hops) = multipath {
        // We send through one interface: use the first hop that leaves through it (the kernel
        // hashes flows over all hops; a multipath route via several interfaces is not ours alone).
        match hops.iter().find(|hop| hop.interface_index == ifindex) {
            Some(hop) => {
                oif = Some(hop.interface_index);
                gateway = hop.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                    _ => None,
                });
            }
            None => oif = hops.first().map(|hop| hop.interface_index),
        }
    }
    let len = h.destination_prefix_length.min(32);
    Some(RouteEntry {
        dst: Ipv4Addr::from(u32::from(dst) & mask(len)),
        len,
        tos: h.tos,
        priority,
        kind,
        oif,
        gateway,
        src,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::address::AddressHeader;
    use netlink_packet_route::link::{InfoKind, LinkHeader};
    use netlink_packet_route::neighbour::{NeighbourHeader, NeighbourState};

    const IF: u32 = 7;
    const MAC_GW: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn iface() -> InterfaceInfo {
        InterfaceInfo {
            index: IF,
            name: "veth0".into(),
            mac: [2, 0, 0, 0, 0, 0x10],
            mtu: 1500,
            up: true,
            ethernet: true,
            addrs: vec![(ip("198.18.0.1"), 24)],
            rx_queues: 4,
            tx_queues: 4,
            kind: Some("veth".into()),
            link: None,
            link_netnsid: None,
        }
    }

    fn route_msg(dst: &str, len: u8, oif: u32, gw: Option<&str>, metric: u32) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = len;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.kind = RouteType::Unicast;
        if len > 0 {
            m.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(ip(dst))));
        }
        m.attributes.push(RouteAttribute::Oif(oif));
        if let Some(gw) = gw {
            m.attributes
                .push(RouteAttribute::Gateway(RouteAddress::Inet(ip(gw))));
        }
        if metric != 0 {
            m.attributes.push(RouteAttribute::Priority(metric));
        }
        m
    }

    fn neigh_msg(dst: &str, state: NeighbourState, mac: Option<[u8; 6]>) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Inet,
            ifindex: IF,
            state,
            ..Default::default()
        };
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip(
                dst,
            ))));
        if let Some(mac) = mac {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        m
    }

    fn table() -> Table {
        let mut t = Table::new(iface());
        // What the kernel has for `ip addr add 198.18.0.1/24` + `ip route add default via .254`.
        assert!(t.apply(&RouteNetlinkMessage::NewRoute(route_msg(
            "198.18.0.0",
            24,
            IF,
            None,
            0
        ))));
        assert!(t.apply(&RouteNetlinkMessage::NewRoute(route_msg(
            "0.0.0.0",
            0,
            IF,
            Some("198.18.0.254"),
            0
        ))));
        t
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = table();
        t.apply(&RouteNetlinkMessage::NewRoute(route_msg(
            "198.19.0.0",
            16,
            IF,
            Some("198.18.0.253"),
            0,
        )));
        t.apply(&RouteNetlinkMessage::NewRoute(route_msg(
            "198.19.5.0",
            24,
            IF,
            Some("198.18.0.252"),
            0,
        )));

        let r = t.route(ip("198.18.0.9")).unwrap();
        assert_eq!(r.gateway, None);
        assert_eq!(r.prefix, (ip("198.18.0.0"), 24));
        assert_eq!(r.src, Some(ip("198.18.0.1")));
        assert_eq!(
            t.route(ip("198.19.5.1")).unwrap().gateway,
            Some(ip("198.18.0.252"))
        );
        assert_eq!(
            t.route(ip("198.19.6.1")).unwrap().gateway,
            Some(ip("198.18.0.253"))
        );
        let d = t.route(ip("8.8.8.8")).unwrap();
        assert_eq!(
            (d.gateway, d.prefix),
            (Some(ip("198.18.0.254")), (ip("0.0.0.0"), 0))
        );
    }

    #[test]
    fn lower_metric_wins_a_tie_and_delete_removes() {
        let mut t = table();
        let slow = route_msg("198.19.0.0", 16, IF, Some("198.18.0.200"), 200);
        let fast = route_msg("198.19.0.0", 16, IF, Some("198.18.0.100"), 100);
        assert!(t.apply(&RouteNetlinkMessage::NewRoute(slow.clone())));
        assert!(t.apply(&RouteNetlinkMessage::NewRoute(fast.clone())));
        assert_eq!(
            t.route(ip("198.19.1.1")).unwrap().gateway,
            Some(ip("198.18.0.100"))
        );
        assert!(t.apply(&RouteNetlinkMessage::DelRoute(fast.clone())));
        assert!(!t.apply(&RouteNetlinkMessage::DelRoute(fast)));
        assert_eq!(
            t.route(ip("198.19.1.1")).unwrap().gateway,
            Some(ip("198.18.0.200"))
        );
        // Same again is no change.
        assert!(!t.apply(&RouteNetlinkMessage::NewRoute(slow)));
    }

    #[test]
    fn route_through_another_interface_or_reject_is_not_ours() {
        let mut t = table();
        t.apply(&RouteNetlinkMessage::NewRoute(route_msg(
            "198.19.0.0",
            16,
            IF + 1,
            None,
            0,
        )));
        assert_eq!(t.route(ip("198.19.0.1")), None);
        let mut bh = route_msg("198.18.9.0", 24, 0, None, 0);
        bh.header.kind = RouteType::BlackHole;
        bh.attributes
            .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        t.apply(&RouteNetlinkMessage::NewRoute(bh));
        assert_eq!(t.route(ip("198.18.9.1")), None);
        // Other tables are not mirrored.
        let mut other = route_msg("198.18.7.0", 24, IF + 1, None, 0);
        other.header.table = 100;
        assert!(!t.apply(&RouteNetlinkMessage::NewRoute(other)));
        assert!(t.route(ip("198.18.7.1")).is_some());
    }

    #[test]
    fn many_host_routes_and_tos_routes() {
        let mut t = table();
        for i in 0..2000u32 {
            let dst = Ipv4Addr::from(u32::from(ip("198.19.0.0")) + i);
            let m = route_msg(&dst.to_string(), 32, IF, Some("198.18.0.7"), 0);
            assert!(t.apply(&RouteNetlinkMessage::NewRoute(m)));
        }
        let r = t.route(ip("198.19.7.207")).unwrap();
        assert_eq!(
            (r.gateway, r.prefix),
            (Some(ip("198.18.0.7")), (ip("198.19.7.207"), 32))
        );
        // Past the last host route: the default route.
        assert_eq!(t.route(ip("198.19.7.208")).unwrap().prefix.1, 0);
        for i in 0..2000u32 {
            let dst = Ipv4Addr::from(u32::from(ip("198.19.0.0")) + i);
            let m = route_msg(&dst.to_string(), 32, IF, Some("198.18.0.7"), 0);
            assert!(t.apply(&RouteNetlinkMessage::DelRoute(m)));
        }
        assert_eq!(t.route(ip("198.19.7.207")).unwrap().prefix.1, 0);
        // A TOS-specific route never matches what the stack sends (TOS 0).
        let mut tos = route_msg("198.19.0.0", 16, IF, Some("198.18.0.9"), 0);
        tos.header.tos = 0x10;
        assert!(t.apply(&RouteNetlinkMessage::NewRoute(tos)));
        assert_eq!(t.route(ip("198.19.0.1")).unwrap().prefix.1, 0);
    }

    #[test]
    fn on_link_prefix_of_our_address_without_kernel_route() {
        let t = Table::new(iface());
        let r = t.route(ip("198.18.0.77")).unwrap();
        assert_eq!(
            (r.gateway, r.prefix, r.src),
            (None, (ip("198.18.0.0"), 24), Some(ip("198.18.0.1")))
        );
        assert_eq!(t.route(ip("198.20.0.1")), None);
    }

    #[test]
    fn neighbour_states() {
        let mut t = table();
        for (state, usable) in [
            (NeighbourState::Reachable, true),
            (NeighbourState::Stale, true),
            (NeighbourState::Delay, true),
            (NeighbourState::Probe, true),
            (NeighbourState::Permanent, true),
            (NeighbourState::Noarp, true),
            (NeighbourState::Incomplete, false),
            (NeighbourState::Failed, false),
            (NeighbourState::None, false),
        ] {
            t.apply(&RouteNetlinkMessage::NewNeighbour(neigh_msg(
                "198.18.0.2",
                state,
                Some(MAC_PEER),
            )));
            assert_eq!(t.neighbour(ip("198.18.0.2")).is_some(), usable, "{state:?}");
        }
        // Reachable, then deleted.
        t.apply(&RouteNetlinkMessage::NewNeighbour(neigh_msg(
            "198.18.0.2",
            NeighbourState::Reachable,
            Some(MAC_PEER),
        )));
        assert!(t.apply(&RouteNetlinkMessage::DelNeighbour(neigh_msg(
            "198.18.0.2",
            NeighbourState::Reachable,
            Some(MAC_PEER)
        ))));
        assert_eq!(t.neighbour(ip("198.18.0.2")), None);
        // Another interface's neighbour is not ours.
        let mut m = neigh_msg("198.18.0.3", NeighbourState::Reachable, Some(MAC_PEER));
        m.header.ifindex = IF + 1;
        assert!(!t.apply(&RouteNetlinkMessage::NewNeighbour(m)));
        assert_eq!(t.neighbour(ip("198.18.0.3")), None);
    }

    #[test]
    fn decisions() {
        let mut t = table();
        // On-link, unknown: resolve the destination itself.
        assert_eq!(
            t.decide(ip("198.18.0.2")),
            Decision::Resolve(ip("198.18.0.2"))
        );
        // Off-link: resolve the gateway.
        assert_eq!(
            t.decide(ip("203.0.113.5")),
            Decision::Resolve(ip("198.18.0.254"))
        );
        t.apply(&RouteNetlinkMessage::NewNeighbour(neigh_msg(
            "198.18.0.254",
            NeighbourState::Stale,
            Some(MAC_GW),
        )));
        t.apply(&RouteNetlinkMessage::NewNeighbour(neigh_msg(
            "198.18.0.2",
            NeighbourState::Reachable,
            Some(MAC_PEER),
        )));
        assert_eq!(t.decide(ip("203.0.113.5")), Decision::Mac(MAC_GW));
        assert_eq!(t.decide(ip("198.18.0.2")), Decision::Mac(MAC_PEER));
        // Broadcast and multicast need no neighbour.
        assert_eq!(t.decide(ip("198.18.0.255")), Decision::Mac([0xff; 6]));
        assert_eq!(t.decide(ip("255.255.255.255")), Decision::Mac([0xff; 6]));
        assert_eq!(
            t.decide(ip("239.129.2.3")),
            Decision::Mac([1, 0, 0x5e, 1, 2, 3])
        );
        // No default route: unreachable off-link.
        t.apply(&RouteNetlinkMessage::DelRoute(route_msg(
            "0.0.0.0",
            0,
            IF,
            Some("198.18.0.254"),
            0,
        )));
        assert_eq!(t.decide(ip("203.0.113.5")), Decision::Unreachable);
        // Interface down: unreachable.
        let mut link = LinkMessage::default();
        link.header = LinkHeader {
            index: IF,
            link_layer_type: LinkLayerType::Ether,
            ..Default::default()
        };
        assert!(t.apply(&RouteNetlinkMessage::NewLink(link)));
        assert_eq!(t.decide(ip("198.18.0.2")), Decision::Unreachable);
    }

    #[test]
    fn the_link_kind_says_whether_it_is_a_software_link() {
        let mut link = LinkMessage::default();
        link.header = LinkHeader {
            index: IF,
            link_layer_type: LinkLayerType::Ether,
            flags: LinkFlags::Up,
            ..Default::default()
        };
        link.attributes = vec![LinkAttribute::IfName("eth0".into())];
        let nic = InterfaceInfo::from_link(&link);
        assert_eq!(nic.kind, None);
        assert!(!nic.software_link());
        for (kind, software) in [
            (InfoKind::Veth, true),
            (InfoKind::MacVlan, false),
            (InfoKind::Bridge, false),
        ] {
            link.attributes = vec![
                LinkAttribute::IfName("x".into()),
                LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind.clone())]),
            ];
            let info = InterfaceInfo::from_link(&link);
            assert_eq!(info.kind.as_deref(), Some(kind.to_string().as_str()));
            assert_eq!(info.software_link(), software, "{kind}");
        }
        // A veth's peer: its ifindex, and the namespace id when it lives elsewhere.
        link.attributes = vec![
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
            LinkAttribute::Link(12),
            LinkAttribute::LinkNetNsId(3),
        ];
        let veth = InterfaceInfo::from_link(&link);
        assert_eq!((veth.link, veth.link_netnsid), (Some(12), Some(3)));
        // A change notification without link info keeps the kind.
        let mut t = Table::new(InterfaceInfo::from_link(&link));
        link.attributes = vec![LinkAttribute::Mtu(1400)];
        assert!(t.apply(&RouteNetlinkMessage::NewLink(link)));
        assert_eq!(t.interface().kind.as_deref(), Some("veth"));
    }

    #[test]
    fn link_and_address_updates() {
        let mut t = table();
        let mut link = LinkMessage::default();
        link.header = LinkHeader {
            index: IF,
            link_layer_type: LinkLayerType::Ether,
            flags: LinkFlags::Up,
            ..Default::default()
        };
        link.attributes = vec![
            LinkAttribute::IfName("veth0".into()),
            LinkAttribute::Mtu(1400),
            LinkAttribute::Address(vec![2, 1, 2, 3, 4, 5]),
        ];
        assert!(t.apply(&RouteNetlinkMessage::NewLink(link.clone())));
        assert!(!t.apply(&RouteNetlinkMessage::NewLink(link.clone())));
        assert_eq!(
            (t.interface().mtu, t.interface().mac),
            (1400, [2, 1, 2, 3, 4, 5])
        );
        // Other links do not touch ours.
        link.header.index = IF + 1;
        link.attributes = vec![LinkAttribute::Mtu(9000)];
        assert!(!t.apply(&RouteNetlinkMessage::NewLink(link)));
        assert_eq!(t.interface().mtu, 1400);

        let mut addr = AddressMessage::default();
        addr.header = AddressHeader {
            family: AddressFamily::Inet,
            prefix_len: 16,
            index: IF,
            ..Default::default()
        };
        addr.attributes = vec![
            AddressAttribute::Address(IpAddr::V4(ip("198.19.0.1"))),
            AddressAttribute::Local(IpAddr::V4(ip("198.19.0.1"))),
        ];
        assert!(t.apply(&RouteNetlinkMessage::NewAddress(addr.clone())));
        assert!(!t.apply(&RouteNetlinkMessage::NewAddress(addr.clone())));
        assert_eq!(
            t.interface().addrs,
            vec![(ip("198.18.0.1"), 24), (ip("198.19.0.1"), 16)]
        );
        assert!(t.route(ip("198.19.200.1")).is_some());
        assert!(t.apply(&RouteNetlinkMessage::DelAddress(addr)));
        assert_eq!(t.interface().addrs, vec![(ip("198.18.0.1"), 24)]);

        let mut del = LinkMessage::default();
        del.header.index = IF;
        assert!(t.apply(&RouteNetlinkMessage::DelLink(del)));
        assert!(t.is_gone());
        assert_eq!(t.decide(ip("198.18.0.2")), Decision::Unreachable);
    }
}
