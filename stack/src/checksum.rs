//! The transport checksum of a received TCP segment or UDP datagram: complete, partial (taken
//! only from a software link), or bad.
//!
//! A Linux sender that offloads its TCP/UDP checksum (CHECKSUM_PARTIAL) writes into the
//! checksum field only the folded one's-complement sum of the pseudo-header (addresses,
//! protocol, length) and leaves the rest to the device. A NIC completes it in hardware before
//! the frame reaches the wire; veth never does, because the frame stays inside the kernel,
//! whose receive path trusts the skb's flag instead of the bytes. An AF_XDP socket sees the
//! bytes, so every frame from a veth peer with TX checksum offload on (the default for veth,
//! Docker and Kubernetes included) carries that partial sum.
//!
//! Telling one apart costs a pseudo-header sum (six 16-bit words), not a pass over the
//! payload: a field equal to it is partial. Where partial sums are allowed such a packet is
//! accepted without summing its payload (as the kernel does); every other packet is verified in
//! full, as before. A complete checksum that happens to equal the pseudo-header sum (1 in
//! 65536) is accepted either way, only counted as partial. smoltcp's own receive verification
//! of TCP and UDP is off (`device::capabilities`), so nothing downstream checks again.

use core::net::Ipv4Addr;

use smoltcp::wire::{checksum, IpProtocol};

/// What a packet's transport checksum says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The full checksum verifies.
    Complete,
    /// The field holds the pseudo-header sum only, and partial sums are allowed.
    Partial,
    /// Neither: the packet is corrupted (or partial where partial sums are not allowed).
    Bad,
}

/// Whether `field` is the pseudo-header partial sum of a `proto` packet of `len` bytes (header
/// included) from `src` to `dst`.
pub(crate) fn is_partial(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    len: usize,
    field: u16,
) -> bool {
    field == checksum::pseudo_header_v4(&src, &dst, proto, len as u32)
}

/// The verdict on a packet whose checksum field is `field`; `complete` verifies the full
/// checksum (a pass over the payload), called only when the cheap test did not settle it.
pub(crate) fn verdict(
    partial_allowed: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    len: usize,
    field: u16,
    complete: impl FnOnce() -> bool,
) -> Verdict {
    if partial_allowed && is_partial(src, dst, proto, len, field) {
        return Verdict::Partial;
    }
    if complete() {
        Verdict::Complete
    } else {
        Verdict::Bad
    }
}

#[cfg(test)]
mod tests {
    use core::net::SocketAddrV4;

    use smoltcp::phy::ChecksumCapabilities;
    use smoltcp::time::Duration;
    use smoltcp::wire::{Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};

    use super::*;
    use crate::testing::{Pair, IP_A, IP_B, MAC_A};
    use crate::Config;

    const SRC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const DST: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

    /// A UDP datagram in an Ethernet frame from B to A, with its checksum as `make` leaves it.
    fn udp_frame(payload: &[u8], dst_port: u16, make: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let udp = UdpRepr {
            src_port: 4000,
            dst_port,
        };
        let ip = Ipv4Repr {
            src_addr: SRC,
            dst_addr: DST,
            next_header: IpProtocol::Udp,
            payload_len: udp.header_len() + payload.len(),
            hop_limit: 64,
        };
        let mut frame = vec![0u8; 14 + ip.buffer_len() + ip.payload_len];
        frame[..6].copy_from_slice(&MAC_A);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0b]);
        frame[12..14].copy_from_slice(&[0x08, 0x00]);
        let caps = ChecksumCapabilities::default();
        let mut ipp = Ipv4Packet::new_unchecked(&mut frame[14..]);
        ip.emit(&mut ipp, &caps);
        let mut udpp = UdpPacket::new_unchecked(ipp.payload_mut());
        udp.emit(
            &mut udpp,
            &SRC.into(),
            &DST.into(),
            payload.len(),
            |b| b.copy_from_slice(payload),
            &caps,
        );
        make(&mut frame[14 + 20..]);
        frame
    }

    /// Replaces a UDP datagram's checksum by the pseudo-header sum, as a veth peer with TX
    /// checksum offload hands it over.
    fn make_partial(udp: &mut [u8]) {
        let len = udp.len();
        let sum = checksum::pseudo_header_v4(&SRC, &DST, IpProtocol::Udp, len as u32);
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
    }

    fn verdict_of(partial_allowed: bool, frame: &[u8]) -> Verdict {
        let udp = UdpPacket::new_checked(&frame[34..]).unwrap();
        verdict(
            partial_allowed,
            SRC,
            DST,
            IpProtocol::Udp,
            usize::from(udp.len()),
            udp.checksum(),
            || udp.verify_checksum(&SRC.into(), &DST.into()),
        )
    }

    #[test]
    fn a_partial_sum_is_partial_only_where_allowed() {
        let payload = [7u8; 100];
        let complete = udp_frame(&payload, 9, |_| {});
        let partial = udp_frame(&payload, 9, make_partial);
        assert_eq!(verdict_of(true, &complete), Verdict::Complete);
        assert_eq!(verdict_of(false, &complete), Verdict::Complete);
        assert_eq!(verdict_of(true, &partial), Verdict::Partial);
        assert_eq!(verdict_of(false, &partial), Verdict::Bad);
    }

    #[test]
    fn a_corrupted_packet_is_bad_with_or_without_partial_sums() {
        let payload = [7u8; 100];
        // A complete checksum over a payload that changed on the way.
        let mut flipped = udp_frame(&payload, 9, |_| {});
        *flipped.last_mut().unwrap() ^= 0x40;
        // A partial sum off by one, and a partial sum for another length.
        let off = udp_frame(&payload, 9, |u| {
            make_partial(u);
            u[7] ^= 1;
        });
        let other_len = udp_frame(&payload, 9, |u| {
            let sum = checksum::pseudo_header_v4(&SRC, &DST, IpProtocol::Udp, u.len() as u32 + 2);
            u[6..8].copy_from_slice(&sum.to_be_bytes());
        });
        for allowed in [true, false] {
            for f in [&flipped, &off, &other_len] {
                assert_eq!(verdict_of(allowed, f), Verdict::Bad, "allowed {allowed}");
            }
        }
    }

    /// The in-memory wire with B's frames to A rewritten the way a veth peer with TX checksum
    /// offload hands them over; A accepts them when its link is a software link.
    fn pair(a_is_software: bool) -> Pair {
        let mut p = Pair::with_config(|c: &mut Config| c.partial_checksums = a_is_software);
        p.a.link.faults.partial_checksums = true;
        p
    }

    fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(ip, port)
    }

    #[test]
    fn tcp_and_udp_from_an_offloading_peer_work_on_a_software_link() {
        let mut p = pair(true);
        let l = p.a.stack.tcp_listen(sa(IP_A, 80), 4).unwrap();
        let c =
            p.b.stack
                .tcp_connect(sa(IP_B, 40000), sa(IP_A, 80))
                .unwrap();
        let mut accepted = None;
        assert!(p.run_until(Duration::from_secs(5), |p| {
            if accepted.is_none() {
                accepted = p.a.stack.tcp_accept(l).ok();
            }
            accepted.is_some() && p.b.stack.readiness(c).writable
        }));
        let (s, _) = accepted.unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut sent = 0;
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        assert!(p.run_until(Duration::from_secs(10), |p| {
            if sent < data.len() {
                sent += p.b.stack.tcp_send(c, &data[sent..]).unwrap_or(0);
            }
            while let Ok(n) = p.a.stack.tcp_recv(s, &mut buf) {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got.len() == data.len()
        }));
        assert!(got == data, "the stream arrived changed");
        let u = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
        let ub = p.b.stack.udp_bind(sa(IP_B, 5001)).unwrap();
        p.b.stack
            .udp_send_to(ub, b"partial", sa(IP_A, 5000))
            .unwrap();
        p.settle_and_advance(Duration::from_millis(0));
        assert_eq!(
            p.a.stack.udp_recv_from(u, &mut buf),
            Ok((7, sa(IP_B, 5001)))
        );
        assert_eq!(&buf[..7], b"partial");
        let c = p.a.stack.counters();
        assert!(p.a.link.faults.made_partial > 0);
        // Every TCP/UDP packet A received was partial: none had to be summed in full.
        assert_eq!(c.rx_partial_checksum, p.a.link.faults.made_partial, "{c:?}");
        assert_eq!(c.rx_drop_bad_checksum, 0, "{c:?}");
    }

    #[test]
    fn partial_sums_are_dropped_when_the_link_is_not_a_software_link() {
        let mut p = pair(false);
        let l = p.a.stack.tcp_listen(sa(IP_A, 80), 4).unwrap();
        let c =
            p.b.stack
                .tcp_connect(sa(IP_B, 40000), sa(IP_A, 80))
                .unwrap();
        let u = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
        let ub = p.b.stack.udp_bind(sa(IP_B, 5001)).unwrap();
        p.b.stack
            .udp_send_to(ub, b"partial", sa(IP_A, 5000))
            .unwrap();
        assert!(!p.run_until(Duration::from_secs(5), |p| {
            p.a.stack.tcp_accept(l).is_ok() || p.b.stack.readiness(c).writable
        }));
        let mut buf = [0u8; 64];
        assert!(p.a.stack.udp_recv_from(u, &mut buf).is_err());
        let c = p.a.stack.counters();
        assert_eq!(c.rx_partial_checksum, 0, "{c:?}");
        // The datagram and every SYN (first and retransmitted) were dropped.
        assert!(c.rx_drop_bad_checksum >= 2, "{c:?}");
        assert_eq!(
            c.rx_drop_bad_checksum, p.a.link.faults.made_partial,
            "{c:?}"
        );
    }

    #[test]
    fn a_corrupted_frame_is_dropped_on_a_software_link_and_on_a_nic() {
        for software in [true, false] {
            let mut p = Pair::with_config(|c: &mut Config| c.partial_checksums = software);
            let u = p.a.stack.udp_bind(sa(IP_A, 5000)).unwrap();
            let mut flipped = udp_frame(b"corrupted", 5000, |_| {});
            *flipped.last_mut().unwrap() ^= 0x40;
            let off = udp_frame(b"corrupted", 5000, |u| {
                make_partial(u);
                u[6] ^= 0x80;
            });
            p.a.link.inject(flipped);
            p.a.link.inject(off);
            // The control: the same datagram intact, complete and partial.
            p.a.link.inject(udp_frame(b"intact", 5000, |_| {}));
            p.a.link.inject(udp_frame(b"intact", 5000, make_partial));
            p.settle_and_advance(Duration::from_millis(0));
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            while let Ok((n, _)) = p.a.stack.udp_recv_from(u, &mut buf) {
                got.push(buf[..n].to_vec());
            }
            let c = p.a.stack.counters();
            if software {
                assert_eq!(got, [b"intact".to_vec(), b"intact".to_vec()]);
                assert_eq!((c.rx_partial_checksum, c.rx_drop_bad_checksum), (1, 2));
            } else {
                assert_eq!(got, [b"intact".to_vec()]);
                assert_eq!((c.rx_partial_checksum, c.rx_drop_bad_checksum), (0, 3));
            }
        }
    }
}
