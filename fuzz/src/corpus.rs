//! The seed corpus, built from code so each seed says what it is: `accel-fuzz seed` writes them
//! to `fuzz/corpus/TARGET/NAME` (committed); the smoke test checks the files match this code.

use netlink_packet_core::{Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use std::net::{IpAddr, Ipv4Addr};

use crate::ingress;

fn datagram(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
    let mut out = Vec::new();
    for inner in msgs {
        let mut msg = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::InnerMessage(inner),
        );
        msg.finalize();
        let mut b = vec![0; msg.buffer_len()];
        msg.emit(&mut b);
        out.extend_from_slice(&b);
    }
    out
}

fn route(dst: Option<(Ipv4Addr, u8)>, gw: Option<Ipv4Addr>, oif: u32) -> RouteMessage {
    let mut r = RouteMessage::default();
    r.header.address_family = AddressFamily::Inet;
    r.header.table = RouteHeader::RT_TABLE_MAIN;
    r.header.kind = RouteType::Unicast;
    r.header.protocol = RouteProtocol::Boot;
    r.header.scope = if gw.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    r.attributes.push(RouteAttribute::Oif(oif));
    if let Some((d, len)) = dst {
        r.header.destination_prefix_length = len;
        r.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(d)));
    }
    if let Some(g) = gw {
        r.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(g)));
    }
    r
}

fn neighbour(ip: Ipv4Addr, mac: [u8; 6], state: NeighbourState, ifindex: u32) -> NeighbourMessage {
    let mut n = NeighbourMessage::default();
    n.header.family = AddressFamily::Inet;
    n.header.ifindex = ifindex;
    n.header.state = state;
    n.attributes = vec![
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)),
        NeighbourAttribute::LinkLayerAddress(mac.to_vec()),
    ];
    n
}

fn address(ip: Ipv4Addr, len: u8, ifindex: u32) -> AddressMessage {
    let mut a = AddressMessage::default();
    a.header.family = AddressFamily::Inet;
    a.header.prefix_len = len;
    a.header.index = ifindex;
    a.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(ip)),
        AddressAttribute::Address(IpAddr::V4(ip)),
    ];
    a
}

fn link(ifindex: u32, mtu: u32) -> LinkMessage {
    let mut l = LinkMessage::default();
    l.header.index = ifindex;
    l.attributes = vec![
        LinkAttribute::IfName("eth0".into()),
        LinkAttribute::Mtu(mtu),
    ];
    l
}

/// Datagrams the netlink target applies before its input: a default route through a gateway
/// and the gateway's neighbour entry, as a real mirror holds.
pub fn netlink_setup() -> Vec<Vec<u8>> {
    let gw = Ipv4Addr::new(198, 18, 0, 254);
    vec![datagram(vec![
        RouteNetlinkMessage::NewRoute(route(None, Some(gw), 2)),
        RouteNetlinkMessage::NewNeighbour(neighbour(
            gw,
            [2, 0, 0, 0, 0, 9],
            NeighbourState::Reachable,
            2,
        )),
    ])]
}

/// Seeds per target: (file name, bytes).
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "netlink" => netlink_seeds(),
        "desc" => desc_seeds(),
        "ingress" => ingress::seeds(),
        _ => Vec::new(),
    }
}

fn netlink_seeds() -> Vec<(String, Vec<u8>)> {
    let a = Ipv4Addr::new(198, 18, 0, 7);
    let gw = Ipv4Addr::new(198, 18, 0, 254);
    let net = Ipv4Addr::new(203, 0, 113, 0);
    let mac = [2, 0, 0, 0, 0, 7];
    vec![
        (
            "new-link-mtu".into(),
            datagram(vec![RouteNetlinkMessage::NewLink(link(2, 9000))]),
        ),
        (
            "del-link".into(),
            datagram(vec![RouteNetlinkMessage::DelLink(link(2, 1500))]),
        ),
        (
            "new-address".into(),
            datagram(vec![RouteNetlinkMessage::NewAddress(address(a, 24, 2))]),
        ),
        (
            "del-address".into(),
            datagram(vec![RouteNetlinkMessage::DelAddress(address(
                Ipv4Addr::new(198, 18, 0, 1),
                24,
                2,
            ))]),
        ),
        (
            "new-route-and-neighbour".into(),
            datagram(vec![
                RouteNetlinkMessage::NewRoute(route(Some((net, 24)), Some(gw), 2)),
                RouteNetlinkMessage::NewNeighbour(neighbour(gw, mac, NeighbourState::Stale, 2)),
            ]),
        ),
        (
            "del-route".into(),
            datagram(vec![RouteNetlinkMessage::DelRoute(route(
                None,
                Some(gw),
                2,
            ))]),
        ),
        (
            "neighbour-failed-and-deleted".into(),
            datagram(vec![
                RouteNetlinkMessage::NewNeighbour(neighbour(a, mac, NeighbourState::Failed, 2)),
                RouteNetlinkMessage::DelNeighbour(neighbour(a, mac, NeighbourState::None, 2)),
            ]),
        ),
        (
            "other-interface".into(),
            datagram(vec![
                RouteNetlinkMessage::NewAddress(address(a, 16, 9)),
                RouteNetlinkMessage::NewRoute(route(Some((net, 24)), None, 9)),
            ]),
        ),
        (
            "on-link-route".into(),
            datagram(vec![RouteNetlinkMessage::NewRoute(route(
                Some((net, 25)),
                None,
                2,
            ))]),
        ),
    ]
}

fn desc_seeds() -> Vec<(String, Vec<u8>)> {
    let rec = |addr: u64, len: u32| {
        let mut v = addr.to_le_bytes().to_vec();
        v.extend_from_slice(&len.to_le_bytes());
        v
    };
    vec![
        ("rx-first-frame".into(), rec(256, 1514)),
        ("rx-last-frame".into(), rec(4095 * 4096 + 256, 3840)),
        ("rx-crosses-frame".into(), rec(4096 + 256, 4000)),
        ("rx-outside-umem".into(), rec(4096 * 4096, 64)),
        (
            "rx-batch".into(),
            [rec(256, 60), rec(8192 + 256, 1514), rec(u64::MAX, u32::MAX)].concat(),
        ),
    ]
}
