//! A mirror of the kernel's view of one interface (index, MAC, MTU, IPv4 addresses, routes,
//! neighbours), kept current through rtnetlink, and the [`Resolver`] the stack asks for next-hop
//! Ethernet addresses.
//!
//! - [`table`]: the data and every decision made on it (longest-prefix match, usable neighbour
//!   states, next-hop resolution), and the message -> update conversion. No I/O.
//! - `netlink`: synchronous rtnetlink sockets (netlink-sys + netlink-packet-route, no runtime).
//!
//! The kernel stays the authority: it owns the address, answers ARP, and resolves neighbours.
//! When we lack a neighbour we ask the kernel to resolve it (an `RTM_NEWNEIGH` with `NTF_USE`,
//! which runs the kernel's `neigh_event_send` as if it had a packet to send) and learn the answer
//! from the neighbour notifications; we never send ARP ourselves.
//!
//! Sockets are per network namespace: everything here runs in the caller's namespace.

mod netlink;
pub mod table;

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::address::AddressMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourHeader, NeighbourMessage,
    NeighbourState,
};
use netlink_packet_route::route::{RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use stack::link::{NextHop, Resolver};

use self::netlink::{NlSocket, Recv};
pub use self::table::{Decision, InterfaceInfo, Route, Table};

/// The shortest interval between two resolution requests for the same address. The kernel
/// retransmits ARP on its own schedule once asked; asking again sooner only adds syscalls.
pub const RESOLVE_INTERVAL: Duration = Duration::from_millis(100);

/// At most this many notification datagrams are applied per [`ControlPlane::refresh`], so a
/// storm of changes cannot hold the caller's thread; the rest wait for the next call.
const MAX_EVENTS_PER_REFRESH: usize = 4096;

/// Attempts at a consistent dump when concurrent changes keep interrupting it.
const DUMP_ATTEMPTS: usize = 5;

/// Why the control plane cannot mirror an interface. Each message names the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "interface {name} does not exist: list interfaces with `ip link` and pass one of them \
         with --interface"
    )]
    NoSuchInterface { name: String },
    #[error(
        "interface {name} is not an Ethernet interface (link type {kind}): accel sends Ethernet \
         frames through AF_XDP; pass an Ethernet interface (`ip link` shows link/ether) with \
         --interface"
    )]
    NotEthernet { name: String, kind: String },
    #[error(
        "interface {name} has no IPv4 address: accelerated sockets use the kernel's address; add \
         one with `ip addr add ADDRESS/PREFIX dev {name}` or pass another interface with \
         --interface"
    )]
    NoIpv4Address { name: String },
    #[error("interface {name} is down: bring it up with `ip link set {name} up`")]
    InterfaceDown { name: String },
    #[error(
        "rtnetlink request failed: {0}; accel reads addresses, routes and neighbours over \
         NETLINK_ROUTE sockets: check that this process may open them (seccomp or container \
         policy)"
    )]
    Netlink(#[source] io::Error),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Netlink(e)
    }
}

/// The rtnetlink multicast groups the mirror follows.
const GROUPS: [u32; 4] = [
    libc::RTNLGRP_LINK,
    libc::RTNLGRP_IPV4_IFADDR,
    libc::RTNLGRP_IPV4_ROUTE,
    libc::RTNLGRP_NEIGH,
];

/// The kernel's view of one interface, kept current by [`refresh`](ControlPlane::refresh).
pub struct ControlPlane {
    table: Table,
    /// Subscribed to [`GROUPS`], non-blocking.
    events: NlSocket,
    /// Dumps and resolution requests.
    requests: NlSocket,
    generation: u64,
    /// Full re-reads after notification overruns.
    resyncs: u64,
    /// Rate limit of [`request_resolution`](ControlPlane::request_resolution).
    asked: RateLimit,
}

impl ControlPlane {
    /// Reads the interface, its IPv4 addresses, the main IPv4 routing table and the interface's
    /// IPv4 neighbours, and subscribes to their changes. Fails when the interface cannot carry
    /// accelerated traffic: missing, not Ethernet, down, or without an IPv4 address.
    pub fn open(ifname: &str) -> Result<ControlPlane, Error> {
        // Subscribe before dumping, so no change falls between the dump and the notifications
        // (one seen twice is harmless: updates are idempotent).
        let events = NlSocket::subscribe(&GROUPS)?;
        let mut requests = NlSocket::for_requests()?;
        let link = get_link_by_name(&mut requests, ifname)?;
        let info = InterfaceInfo::from_link(&link);
        if !info.ethernet {
            return Err(Error::NotEthernet {
                name: ifname.to_owned(),
                kind: format!("{:?}", link.header.link_layer_type),
            });
        }
        let mut cp = ControlPlane {
            table: Table::new(info),
            events,
            requests,
            generation: 0,
            resyncs: 0,
            asked: RateLimit::default(),
        };
        cp.dump_state()?;
        let iface = cp.table.interface();
        if !iface.up {
            return Err(Error::InterfaceDown {
                name: iface.name.clone(),
            });
        }
        if iface.addrs.is_empty() {
            return Err(Error::NoIpv4Address {
                name: iface.name.clone(),
            });
        }
        tracing::debug!(?iface, "control plane open");
        Ok(cp)
    }

    /// The interface as last seen.
    pub fn interface(&self) -> &InterfaceInfo {
        self.table.interface()
    }

    /// The interface was deleted after `open` (it stays down in the mirror).
    pub fn interface_gone(&self) -> bool {
        self.table.is_gone()
    }

    /// The mirrored table (routes, neighbours, decisions) for inspection.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Applies every pending change notification without blocking (up to a bound per call, see
    /// `MAX_EVENTS_PER_REFRESH`). Returns whether anything changed. When the kernel dropped
    /// notifications (ENOBUFS: we fell behind), re-reads everything.
    pub fn refresh(&mut self) -> Result<bool, Error> {
        self.drain_request_replies();
        let mut changed = false;
        for _ in 0..MAX_EVENTS_PER_REFRESH {
            match self.events.recv(true) {
                Ok(Recv::Empty) => break,
                Ok(Recv::Data) => {
                    let n = self.table.apply_datagram(self.events.datagram());
                    if n > 0 {
                        self.generation += n;
                        changed = true;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    tracing::info!("netlink notifications overran; re-reading the kernel's tables");
                    self.resync()?;
                    changed = true;
                }
                Err(e) => return Err(Error::Netlink(e)),
            }
        }
        Ok(changed)
    }

    /// Longest-prefix match for `dst` (see [`Table::route`]).
    pub fn route(&self, dst: Ipv4Addr) -> Option<Route> {
        self.table.route(dst)
    }

    /// The Ethernet address of `ip` if the kernel has it in a usable state (REACHABLE, STALE,
    /// DELAY, PROBE, PERMANENT, NOARP).
    pub fn neighbour(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        self.table.neighbour(ip)
    }

    /// Asks the kernel to resolve `ip` on this interface: `RTM_NEWNEIGH` with `NTF_USE`
    /// (and `NLM_F_CREATE`, so a missing entry is created), which makes the kernel treat the
    /// entry as used by a packet: it starts ARP for a new or failed entry and re-validates a
    /// stale one. The answer arrives as a neighbour notification on the next `refresh`.
    /// At most once per [`RESOLVE_INTERVAL`] per address; failures are logged, never returned.
    pub fn request_resolution(&mut self, ip: Ipv4Addr) {
        if !self.asked.allow(ip, Instant::now()) {
            return;
        }
        let msg = resolution_request(self.table.interface().index, ip);
        // No ACK: success needs no answer, and errors are sent anyway (logged by refresh).
        match self.requests.send(msg, NLM_F_CREATE | NLM_F_REPLACE, true) {
            Ok(seq) => tracing::trace!(%ip, seq, "asked the kernel to resolve"),
            Err(e) => tracing::warn!(%ip, "cannot ask the kernel to resolve: {e}"),
        }
    }

    /// A counter bumped on every applied change (and on every full re-read).
    pub fn changes(&self) -> u64 {
        self.generation
    }

    /// How many times notifications overran (ENOBUFS) and everything was re-read.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// Logs the errors the kernel returned for resolution requests.
    fn drain_request_replies(&mut self) {
        loop {
            match self.requests.recv(true) {
                Ok(Recv::Empty) => return,
                Ok(Recv::Data) => {
                    for m in self.requests.messages() {
                        netlink::log_stray(m.header.sequence_number, &m.payload);
                    }
                }
                Err(e) => {
                    tracing::warn!("netlink request socket: {e}");
                    return;
                }
            }
        }
    }

    /// After an overrun: forget queued notifications (they predate the re-read) and re-read.
    fn resync(&mut self) -> Result<(), Error> {
        loop {
            match self.events.recv(true) {
                Ok(Recv::Empty) => break,
                Ok(Recv::Data) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(Error::Netlink(e)),
            }
        }
        let index = self.table.interface().index;
        let mut link = None;
        let mut get = LinkMessage::default();
        get.header.index = index;
        match self
            .requests
            .request(RouteNetlinkMessage::GetLink(get), 0, |m| {
                if let RouteNetlinkMessage::NewLink(l) = m {
                    link = Some(l);
                }
            }) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
            Err(e) => return Err(Error::Netlink(e)),
        }
        match link {
            Some(l) => {
                self.table.apply(&RouteNetlinkMessage::NewLink(l));
            }
            None => {
                let mut del = LinkMessage::default();
                del.header.index = index;
                self.table.apply(&RouteNetlinkMessage::DelLink(del));
            }
        }
        self.table.clear();
        self.dump_state()?;
        self.generation += 1;
        self.resyncs += 1;
        Ok(())
    }

    /// Dumps addresses, routes and neighbours into the table.
    fn dump_state(&mut self) -> Result<(), Error> {
        let table = &mut self.table;
        for request in [
            RouteNetlinkMessage::GetAddress(inet_address_request()),
            RouteNetlinkMessage::GetRoute(inet_route_request()),
            RouteNetlinkMessage::GetNeighbour(inet_neighbour_request()),
        ] {
            dump(&mut self.requests, request, |m| {
                table.apply(&m);
            })?;
        }
        Ok(())
    }
}

/// The notification socket: readable when [`ControlPlane::refresh`] has changes to apply, for
/// callers that sleep in `poll`/`epoll` instead of refreshing on a timer.
impl ControlPlane {
    /// Both netlink sockets' fds (a process that hosts accel keeps them out of the program's
    /// reach).
    pub fn raw_fds(&self) -> [std::os::fd::RawFd; 2] {
        use std::os::fd::AsRawFd;
        [
            self.events.as_fd().as_raw_fd(),
            self.requests.as_fd().as_raw_fd(),
        ]
    }
}

impl AsFd for ControlPlane {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }
}

impl Resolver for ControlPlane {
    /// Route, then neighbour; no syscall and no allocation when the neighbour is known.
    fn next_hop(&mut self, dst: Ipv4Addr) -> NextHop {
        let mut decision = self.table.decide(dst);
        if matches!(decision, Decision::Resolve(_)) {
            // The kernel may have learnt the neighbour a moment ago (typically from the peer's
            // ARP request that preceded its first packet) and the notification is waiting on
            // our socket: read it before asking for a resolution and dropping the packet.
            if let Ok(true) = self.refresh() {
                decision = self.table.decide(dst);
            }
        }
        next_hop_for(decision, |ip| self.request_resolution(ip))
    }
}

/// At most one resolution request per address per [`RESOLVE_INTERVAL`].
#[derive(Debug, Default)]
struct RateLimit {
    last: HashMap<Ipv4Addr, Instant>,
    /// Size at which expired entries are next dropped: doubles past what one interval keeps, so
    /// pruning stays amortized O(1) per request even during a burst of new addresses.
    prune_at: usize,
}

impl RateLimit {
    /// Entries beyond which expired ones are dropped (bounds memory under a scan of many
    /// unreachable addresses).
    const PRUNE_AT: usize = 4096;

    /// Whether `ip` may be asked for at `now`; records the request if so.
    fn allow(&mut self, ip: Ipv4Addr, now: Instant) -> bool {
        if let Some(last) = self.last.get(&ip) {
            if now.saturating_duration_since(*last) < RESOLVE_INTERVAL {
                return false;
            }
        }
        if self.last.len() >= self.prune_at.max(Self::PRUNE_AT) {
            self.last
                .retain(|_, t| now.saturating_duration_since(*t) < RESOLVE_INTERVAL);
            self.prune_at = 2 * self.last.len();
        }
        self.last.insert(ip, now);
        true
    }
}

/// What the stack is told for a table decision; `ask` is called for a missing neighbour.
fn next_hop_for(decision: Decision, ask: impl FnOnce(Ipv4Addr)) -> NextHop {
    match decision {
        Decision::Mac(mac) => NextHop::Mac(mac),
        Decision::Resolve(hop) => {
            ask(hop);
            NextHop::Pending
        }
        Decision::Unreachable => NextHop::Unreachable,
    }
}

/// All links in the caller's network namespace with their IPv4 addresses.
pub fn interfaces() -> Result<Vec<InterfaceInfo>, Error> {
    let mut sock = NlSocket::for_requests()?;
    let mut list: Vec<InterfaceInfo> = Vec::new();
    dump(
        &mut sock,
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        |m| {
            if let RouteNetlinkMessage::NewLink(l) = m {
                list.push(InterfaceInfo::from_link(&l));
            }
        },
    )?;
    let mut tables: Vec<Table> = list.into_iter().map(Table::new).collect();
    dump(
        &mut sock,
        RouteNetlinkMessage::GetAddress(inet_address_request()),
        |m| {
            for t in &mut tables {
                if t.apply(&m) {
                    break;
                }
            }
        },
    )?;
    Ok(tables.into_iter().map(|t| t.interface().clone()).collect())
}

/// The link at the other end of `info` (a veth's peer), as its own namespace sees it: read
/// in the namespace `info.link_netnsid` names (`IFLA_TARGET_NETNSID`) when it lives elsewhere.
/// `None` when `info` has no such link, or when it is not visible from here (its namespace
/// has no id in ours, or this process may not look there).
pub fn peer_of(info: &InterfaceInfo) -> Result<Option<InterfaceInfo>, Error> {
    let Some(index) = info.link else {
        return Ok(None);
    };
    let mut sock = NlSocket::for_requests()?;
    let mut get = LinkMessage::default();
    get.header.index = index;
    if let Some(nsid) = info.link_netnsid {
        get.attributes.push(LinkAttribute::IfNetnsId(nsid));
    }
    let mut peer = None;
    match sock.request(RouteNetlinkMessage::GetLink(get), 0, |m| {
        if let RouteNetlinkMessage::NewLink(l) = m {
            peer = Some(InterfaceInfo::from_link(&l));
        }
    }) {
        Ok(_) => Ok(peer),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENODEV) | Some(libc::EINVAL) | Some(libc::EPERM) | Some(libc::EACCES)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(Error::Netlink(e)),
    }
}

/// The message that asks the kernel to resolve `ip` on interface `ifindex`.
fn resolution_request(ifindex: u32, ip: Ipv4Addr) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header = NeighbourHeader {
        family: AddressFamily::Inet,
        ifindex,
        state: NeighbourState::None,
        flags: NeighbourFlags::Use,
        kind: RouteType::Unspec,
    };
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
    RouteNetlinkMessage::NewNeighbour(m)
}

fn inet_address_request() -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = AddressFamily::Inet;
    m
}

fn inet_route_request() -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = AddressFamily::Inet;
    m
}

fn inet_neighbour_request() -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m
}

/// A dump, retried while concurrent changes make it inconsistent. Entries of an interrupted
/// attempt are still applied: updates are idempotent and the retry brings the rest.
fn dump(
    sock: &mut NlSocket,
    request: RouteNetlinkMessage,
    mut f: impl FnMut(RouteNetlinkMessage),
) -> Result<(), Error> {
    for attempt in 1..=DUMP_ATTEMPTS {
        if sock.request(request.clone(), NLM_F_DUMP, &mut f)? {
            return Ok(());
        }
        tracing::debug!(attempt, "netlink dump interrupted by a change; retrying");
    }
    tracing::warn!("netlink dump still inconsistent after {DUMP_ATTEMPTS} attempts; using it");
    Ok(())
}

/// `RTM_GETLINK` by name.
fn get_link_by_name(sock: &mut NlSocket, name: &str) -> Result<LinkMessage, Error> {
    let missing = || Error::NoSuchInterface {
        name: name.to_owned(),
    };
    // IFNAMSIZ - 1; the kernel rejects longer names with EINVAL rather than ENODEV.
    if name.is_empty() || name.len() > 15 || name.contains(['/', '\0']) {
        return Err(missing());
    }
    let mut get = LinkMessage::default();
    get.attributes.push(LinkAttribute::IfName(name.to_owned()));
    let mut link = None;
    match sock.request(RouteNetlinkMessage::GetLink(get), 0, |m| {
        if let RouteNetlinkMessage::NewLink(l) = m {
            link = Some(l);
        }
    }) {
        Ok(_) => link.ok_or_else(missing),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Err(missing()),
        Err(e) => Err(Error::Netlink(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader};

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn resolver_decisions() {
        let mut asked = None;
        assert_eq!(
            next_hop_for(Decision::Mac([1; 6]), |ip| asked = Some(ip)),
            NextHop::Mac([1; 6])
        );
        assert_eq!(asked, None);
        assert_eq!(
            next_hop_for(Decision::Unreachable, |ip| asked = Some(ip)),
            NextHop::Unreachable
        );
        assert_eq!(asked, None);
        assert_eq!(
            next_hop_for(Decision::Resolve(ip("198.18.0.254")), |ip| asked = Some(ip)),
            NextHop::Pending
        );
        assert_eq!(asked, Some(ip("198.18.0.254")));
    }

    #[test]
    fn resolution_requests_are_rate_limited_per_address() {
        let mut rl = RateLimit::default();
        let t0 = Instant::now();
        let (a, b) = (ip("198.18.0.2"), ip("198.18.0.3"));
        assert!(rl.allow(a, t0));
        assert!(!rl.allow(a, t0 + Duration::from_millis(50)));
        assert!(rl.allow(b, t0 + Duration::from_millis(50)), "per address");
        assert!(rl.allow(a, t0 + RESOLVE_INTERVAL));
        assert!(!rl.allow(a, t0 + RESOLVE_INTERVAL + Duration::from_millis(1)));
        // Many addresses: memory stays bounded once their intervals have passed.
        let later = t0 + 10 * RESOLVE_INTERVAL;
        for i in 0..3 * RateLimit::PRUNE_AT as u32 {
            assert!(rl.allow(Ipv4Addr::from(u32::from(ip("198.19.0.0")) + i), later));
        }
        let much_later = later + 10 * RESOLVE_INTERVAL;
        for i in 0..3 * RateLimit::PRUNE_AT as u32 {
            rl.allow(
                Ipv4Addr::from(u32::from(ip("198.18.128.0")) + i),
                much_later + Duration::from_nanos(u64::from(i)),
            );
        }
        assert!(rl.last.len() <= 4 * RateLimit::PRUNE_AT);
    }

    #[test]
    fn resolution_request_is_ntf_use_for_the_address() {
        let RouteNetlinkMessage::NewNeighbour(m) = resolution_request(7, ip("198.18.0.2")) else {
            panic!("not RTM_NEWNEIGH");
        };
        assert_eq!(m.header.ifindex, 7);
        assert_eq!(m.header.flags, NeighbourFlags::Use);
        assert_eq!(u16::from(m.header.state), 0);
        assert_eq!(
            m.attributes,
            vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(ip(
                "198.18.0.2"
            )))]
        );
    }

    /// Wire bytes -> messages -> table, as refresh does with a notification datagram.
    #[test]
    fn datagram_of_notifications_updates_table() {
        let mut t = Table::new(InterfaceInfo {
            index: 3,
            name: "x".into(),
            mac: [0; 6],
            mtu: 1500,
            up: true,
            ethernet: true,
            addrs: vec![(ip("198.18.0.1"), 24)],
            rx_queues: 1,
            tx_queues: 1,
            kind: None,
            link: None,
            link_netnsid: None,
        });
        let mut r = RouteMessage::default();
        r.header.address_family = AddressFamily::Inet;
        r.header.table = RouteHeader::RT_TABLE_MAIN;
        r.header.kind = RouteType::Unicast;
        r.attributes = vec![
            RouteAttribute::Oif(3),
            RouteAttribute::Gateway(RouteAddress::Inet(ip("198.18.0.254"))),
        ];
        let mut n = inet_neighbour_request();
        n.header.ifindex = 3;
        n.header.state = NeighbourState::Reachable;
        n.attributes = vec![
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip("198.18.0.254"))),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]),
        ];
        let mut datagram = Vec::new();
        for inner in [
            RouteNetlinkMessage::NewRoute(r),
            RouteNetlinkMessage::NewNeighbour(n),
        ] {
            let mut msg = NetlinkMessage::new(
                NetlinkHeader::default(),
                NetlinkPayload::InnerMessage(inner),
            );
            msg.finalize();
            let mut b = vec![0; msg.buffer_len()];
            msg.emit(&mut b);
            datagram.extend_from_slice(&b);
        }
        let msgs: Vec<_> = netlink::Messages::new(&datagram).collect();
        assert_eq!(msgs.len(), 2);
        for m in msgs {
            if let NetlinkPayload::InnerMessage(inner) = m.payload {
                assert!(t.apply(&inner));
            }
        }
        assert_eq!(
            t.decide(ip("203.0.113.1")),
            Decision::Mac([2, 0, 0, 0, 0, 9])
        );
    }
}
