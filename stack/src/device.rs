//! smoltcp devices over a [`Link`]: the stack runs smoltcp with `Medium::Ip` and does the
//! Ethernet framing itself. On transmit the Ethernet header is written in front of the IP packet
//! smoltcp produced, with the next hop's MAC from the [`Resolver`]; frames with no next hop are
//! given back to the link unsent and counted. Ingress is fed to smoltcp one validated frame at a
//! time through [`IngressDevice`] so the stack can look at each packet first.

use core::net::Ipv4Addr;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{IpRepr, TcpPacket, TcpRepr, UdpPacket, UdpRepr};

use crate::counters::Counters;
use crate::link::{Mac, NextHop, Resolver, TxFrame};
use crate::unresolved::Unresolved;

/// Length of an Ethernet II header (no VLAN tag).
pub(crate) const ETH_HEADER_LEN: usize = 14;
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
pub(crate) const BROADCAST: Mac = [0xff; 6];

pub(crate) fn capabilities(mtu: usize) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ip;
    caps.max_transmission_unit = mtu;
    // smoltcp computes every checksum on TX. IPv4/TCP/UDP checksums of received packets are
    // verified by the stack's pre-parse (`ingress`), which counts the drops; smoltcp still
    // verifies ICMP.
    caps.checksum.ipv4 = Checksum::Tx;
    caps.checksum.tcp = Checksum::Tx;
    caps.checksum.udp = Checksum::Tx;
    caps
}

/// Why a received frame was not handed to IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EthDrop {
    Malformed,
    WrongMac,
    NotIpv4,
}

/// Writes an Ethernet II header for IPv4 from `src` to `dst`.
pub(crate) fn write_header(header: &mut [u8], dst: &Mac, src: &Mac) {
    header[0..6].copy_from_slice(dst);
    header[6..12].copy_from_slice(src);
    header[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
}

/// Checks a received Ethernet frame and returns its IPv4 payload.
pub(crate) fn strip_ethernet<'f>(frame: &'f [u8], mac: &Mac) -> Result<&'f [u8], EthDrop> {
    let (Some(dst), Some(ethertype), Some(payload)) = (
        frame.get(0..6),
        frame.get(12..14),
        frame.get(ETH_HEADER_LEN..),
    ) else {
        return Err(EthDrop::Malformed);
    };
    if dst != mac && dst != BROADCAST {
        return Err(EthDrop::WrongMac);
    }
    if u16::from_be_bytes([ethertype[0], ethertype[1]]) != ETHERTYPE_IPV4 {
        return Err(EthDrop::NotIpv4);
    }
    Ok(payload)
}

/// What a transmitted packet needs besides its frame: the next hop, the counters, the queue of
/// packets waiting for a neighbour, our MAC and the time.
pub(crate) struct TxPath<'a, R> {
    pub resolver: &'a mut R,
    pub counters: &'a mut Counters,
    pub unresolved: &'a mut Unresolved,
    pub mac: Mac,
    pub now: Instant,
}

impl<R> TxPath<'_, R> {
    pub(crate) fn reborrow(&mut self) -> TxPath<'_, R> {
        TxPath {
            resolver: &mut *self.resolver,
            counters: &mut *self.counters,
            unresolved: &mut *self.unresolved,
            mac: self.mac,
            now: self.now,
        }
    }
}

/// Writes the Ethernet header for the IP packet in `frame[14..]`; returns whether to send.
/// A packet whose next hop is being resolved (or queues behind one that is) is held in
/// [`Unresolved`] and its frame given back.
fn frame_ip_packet<R: Resolver>(frame: &mut [u8], path: &mut TxPath<'_, R>) -> bool {
    let len = frame.len();
    let (header, ip) = frame.split_at_mut(ETH_HEADER_LEN);
    let Some(dst) = ip.get(16..20) else {
        return false;
    };
    let dst = Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]);
    let behind = !path.unresolved.is_empty() && path.unresolved.holds_for(dst);
    match path.resolver.next_hop(dst) {
        NextHop::Mac(next) if !behind => {
            write_header(header, &next, &path.mac);
            path.counters.tx_frames += 1;
            path.counters.tx_bytes += len as u64;
            true
        }
        NextHop::Mac(_) | NextHop::Pending => {
            path.unresolved.hold(path.now, dst, ip, path.counters);
            false
        }
        NextHop::Unreachable => {
            path.counters.tx_drop_unreachable += 1;
            false
        }
    }
}

/// Sends the IP packet of `len` bytes that `emit` writes, in link TX frame `tx` (with its
/// Ethernet header; held if its next hop is being resolved).
pub(crate) fn send<T: TxFrame, R: Resolver>(
    tx: T,
    path: TxPath<'_, R>,
    len: usize,
    emit: impl FnOnce(&mut [u8]),
) {
    phy::TxToken::consume(EthTxToken { tx, path }, len, emit)
}

/// Writes a TCP segment with its IP header into `buf` (`ip.buffer_len()` bytes).
pub(crate) fn emit_tcp(ip: &IpRepr, tcp: &TcpRepr, caps: &ChecksumCapabilities, buf: &mut [u8]) {
    ip.emit(&mut *buf, caps);
    let payload = &mut buf[ip.header_len()..];
    tcp.emit(
        &mut TcpPacket::new_unchecked(payload),
        &ip.src_addr(),
        &ip.dst_addr(),
        caps,
    );
}

/// Writes a UDP datagram with its IP header into `buf` (`ip.buffer_len()` bytes).
pub(crate) fn emit_udp(
    ip: &IpRepr,
    udp: &UdpRepr,
    data: &[u8],
    caps: &ChecksumCapabilities,
    buf: &mut [u8],
) {
    ip.emit(&mut *buf, caps);
    let payload = &mut buf[ip.header_len()..];
    udp.emit(
        &mut UdpPacket::new_unchecked(payload),
        &ip.src_addr(),
        &ip.dst_addr(),
        data.len(),
        |b| b.copy_from_slice(data),
        caps,
    );
}

/// A smoltcp TX token over a link TX frame.
pub(crate) struct EthTxToken<'a, T, R> {
    tx: T,
    path: TxPath<'a, R>,
}

impl<T: TxFrame, R: Resolver> phy::TxToken for EthTxToken<'_, T, R> {
    fn consume<Out, F>(self, len: usize, f: F) -> Out
    where
        F: FnOnce(&mut [u8]) -> Out,
    {
        let EthTxToken { tx, mut path } = self;
        tx.consume(ETH_HEADER_LEN + len, |frame| {
            let out = f(&mut frame[ETH_HEADER_LEN..]);
            let send = frame_ip_packet(frame, &mut path);
            (out, send)
        })
    }
}

/// A smoltcp RX token over an already validated IP packet.
pub(crate) struct SliceRx<'p>(&'p [u8]);

impl phy::RxToken for SliceRx<'_> {
    fn consume<Out, F>(self, f: F) -> Out
    where
        F: FnOnce(&[u8]) -> Out,
    {
        f(self.0)
    }
}

/// Hands exactly one received IP packet to smoltcp, with the link's reply slot beside it.
pub(crate) struct IngressDevice<'a, 'p, T, R> {
    pub packet: Option<(&'p [u8], T)>,
    pub path: TxPath<'a, R>,
    pub caps: &'a DeviceCapabilities,
}

impl<'p, T: TxFrame, R: Resolver> phy::Device for IngressDevice<'_, 'p, T, R> {
    type RxToken<'x>
        = SliceRx<'p>
    where
        Self: 'x;
    type TxToken<'x>
        = EthTxToken<'x, T, R>
    where
        Self: 'x;

    fn receive(&mut self, _: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let (packet, tx) = self.packet.take()?;
        Some((
            SliceRx(packet),
            EthTxToken {
                tx,
                path: self.path.reborrow(),
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Self::TxToken<'_>> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

/// Only gives smoltcp its capabilities (for `Interface::new`).
pub(crate) struct CapsOnly(pub DeviceCapabilities);

pub(crate) enum NoTx {}

impl phy::TxToken for NoTx {
    fn consume<Out, F>(self, _: usize, _: F) -> Out
    where
        F: FnOnce(&mut [u8]) -> Out,
    {
        match self {}
    }
}

impl phy::Device for CapsOnly {
    type RxToken<'x>
        = SliceRx<'x>
    where
        Self: 'x;
    type TxToken<'x>
        = NoTx
    where
        Self: 'x;

    fn receive(&mut self, _: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        None
    }

    fn transmit(&mut self, _: Instant) -> Option<Self::TxToken<'_>> {
        None
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.0.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [2, 0, 0, 0, 0, 1];

    fn frame(dst: Mac, ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 34];
        f[0..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f
    }

    #[test]
    fn strip_accepts_ours_and_broadcast() {
        assert_eq!(strip_ethernet(&frame(MAC, 0x0800), &MAC).unwrap().len(), 20);
        assert!(strip_ethernet(&frame(BROADCAST, 0x0800), &MAC).is_ok());
    }

    #[test]
    fn strip_rejects_wrong_mac_non_ipv4_and_short() {
        assert_eq!(
            strip_ethernet(&frame([2, 0, 0, 0, 0, 2], 0x0800), &MAC),
            Err(EthDrop::WrongMac)
        );
        assert_eq!(
            strip_ethernet(&frame(MAC, 0x0806), &MAC),
            Err(EthDrop::NotIpv4)
        );
        assert_eq!(strip_ethernet(&[0u8; 13], &MAC), Err(EthDrop::Malformed));
    }
}
