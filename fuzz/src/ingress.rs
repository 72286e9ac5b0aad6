//! The frame-ingress target: one frame into stack B (198.18.0.2) of an in-memory pair whose
//! client A (198.18.0.1) has an established connection to B's listener and has sent it data;
//! B also has a bound UDP port. The pair is rebuilt for every input; it is deterministic (the
//! stacks' initial sequence numbers come from their addresses), so captured frames stay valid.
//!
//! Input: one flags byte, then the Ethernet frame. Flags ask for fix-ups after mutation, so
//! mutated frames still reach the deep parsers: 1 = IPv4 header checksum, 2 = IPv4 total
//! length (= frame length), 4 = TCP/UDP checksum.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::time::Duration;
use stack::testing::{Pair, IP_A, IP_B, MAC_A};
use stack::SocketId;

pub const LISTEN_PORT: u16 = 80;
pub const UDP_PORT: u16 = 53;
pub const CLIENT_PORT: u16 = 40000;

pub const FIX_IP_CSUM: u8 = 1;
pub const FIX_IP_LEN: u8 = 2;
pub const FIX_L4_CSUM: u8 = 4;
pub const FIX_ALL: u8 = FIX_IP_CSUM | FIX_IP_LEN | FIX_L4_CSUM;

/// The pair after set-up, and what A sent on the way (valid frames for B's state).
pub struct World {
    pub pair: Pair,
    pub client: SocketId,
    pub server: SocketId,
    /// Frames A sent B during set-up, by what they are.
    pub sent: Vec<(&'static str, Vec<u8>)>,
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, port)
}

/// Polls A, records and delivers what it sent to B, polls B (whose frames reach A's queue).
fn exchange(p: &mut Pair, label: &'static str, sent: &mut Vec<(&'static str, Vec<u8>)>) {
    p.a.poll(p.now);
    for f in p.a.link.take_sent() {
        sent.push((label, f.clone()));
        p.b.link.inject(f);
    }
    p.b.poll(p.now);
    p.now += Duration::from_micros(100);
}

/// Builds the world. Panics if the set-up itself fails (a bug in the stack, not the input).
pub fn world() -> World {
    let mut p = Pair::with_config(|c| {
        c.tcp_rx_buffer = 8192;
        c.tcp_tx_buffer = 8192;
        c.udp_rx_buffer = 4096;
        c.udp_tx_buffer = 4096;
        c.udp_packets = 8;
    });
    let mut sent = Vec::new();
    let l =
        p.b.stack
            .tcp_listen(sa(IP_B, LISTEN_PORT), 4)
            .expect("listen");
    p.b.stack.udp_bind(sa(IP_B, UDP_PORT)).expect("bind");
    let client =
        p.a.stack
            .tcp_connect(sa(IP_A, CLIENT_PORT), sa(IP_B, LISTEN_PORT))
            .expect("connect");
    let mut server = None;
    for _ in 0..20 {
        exchange(&mut p, "handshake", &mut sent);
        if server.is_none() {
            server = p.b.stack.tcp_accept(l).ok().map(|(s, _)| s);
        }
        if server.is_some() && p.a.stack.readiness(client).writable {
            break;
        }
    }
    let server = server.expect("the set-up connection was accepted");
    assert_eq!(p.a.stack.tcp_send(client, &[0x61; 1000]), Ok(1000));
    exchange(&mut p, "data", &mut sent);
    let mut buf = [0u8; 2000];
    assert_eq!(p.b.stack.tcp_recv(server, &mut buf), Ok(1000));
    let u = p.a.stack.udp_bind(sa(IP_A, 5353)).expect("bind");
    p.a.stack
        .udp_send_to(u, b"query", sa(IP_B, UDP_PORT))
        .expect("send");
    exchange(&mut p, "udp", &mut sent);
    // B's ACK of the data reaches A; A's answer (if any) goes to B.
    p.now += stack::ACK_DELAY;
    exchange(&mut p, "ack", &mut sent);
    World {
        pair: p,
        client,
        server,
        sent,
    }
}

/// Runs one input (flags byte + frame) against a fresh world.
pub fn run(data: &[u8]) {
    let Some((&flags, frame)) = data.split_first() else {
        return;
    };
    let mut frame = frame.to_vec();
    fix_up(&mut frame, flags);
    let mut w = world();
    let p = &mut w.pair;
    let before = p.b.stack.counters().rx_frames;
    p.b.link.inject(frame);
    p.b.poll(p.now);
    assert_eq!(
        p.b.stack.counters().rx_frames,
        before + 1,
        "the frame was received exactly once"
    );
    // Let both sides react (replies, challenge ACKs, RSTs) and timers run a little.
    for _ in 0..4 {
        p.now += Duration::from_millis(1);
        p.step();
    }
    // The stack is still usable: a new connection attempt goes out.
    let _ = w.pair.b.stack.readiness(w.server);
    let _ = w.pair.a.stack.readiness(w.client);
}

/// Applies the fix-ups `flags` asks for, where the frame has room for the fields.
pub fn fix_up(frame: &mut [u8], flags: u8) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    if flags & FIX_IP_LEN != 0 {
        if let Ok(total) = u16::try_from(frame.len() - 14) {
            frame[16..18].copy_from_slice(&total.to_be_bytes());
        }
    }
    if ihl < 20 || frame.len() < 14 + ihl {
        return;
    }
    if flags & FIX_IP_CSUM != 0 {
        frame[24..26].copy_from_slice(&[0, 0]);
        let c = checksum(&[&frame[14..14 + ihl]]);
        frame[24..26].copy_from_slice(&c.to_be_bytes());
    }
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let end = (14 + total).min(frame.len());
    let fragment = u16::from_be_bytes([frame[20], frame[21]]) & 0x3fff != 0;
    let l4 = 14 + ihl;
    if flags & FIX_L4_CSUM == 0 || fragment || end <= l4 {
        return;
    }
    let at = match frame[23] {
        6 if end >= l4 + 18 => l4 + 16,
        17 if end >= l4 + 8 => l4 + 6,
        _ => return,
    };
    frame[at..at + 2].copy_from_slice(&[0, 0]);
    let len = (end - l4) as u16;
    let mut pseudo = [0u8; 12];
    pseudo[..8].copy_from_slice(&frame[26..34]);
    pseudo[9] = frame[23];
    pseudo[10..12].copy_from_slice(&len.to_be_bytes());
    let mut c = checksum(&[&pseudo, &frame[l4..end]]);
    if frame[23] == 17 && c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The Internet checksum of the concatenated parts (each part even-length except the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Seeds: every frame A sent during set-up, and hand-made variants of them (with the fix-up
/// flags set, so they are valid where not meant otherwise).
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let w = world();
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let with = |flags: u8, f: &[u8]| [&[flags][..], f].concat();
    let mut counts = std::collections::HashMap::new();
    let mut data = None;
    let mut udp = None;
    for (label, f) in &w.sent {
        let n = counts.entry(*label).or_insert(0);
        out.push((format!("{label}-{n}"), with(FIX_ALL, f)));
        *n += 1;
        if *label == "data" {
            data.get_or_insert_with(|| f.clone());
        }
        if *label == "udp" {
            udp.get_or_insert_with(|| f.clone());
        }
    }
    let (Some(data), Some(udp)) = (data, udp) else {
        return out;
    };
    // IPv4 options (NOP, NOP, NOP, EOL) in front of the TCP segment.
    let mut opts = data[..34].to_vec();
    opts.extend_from_slice(&[1, 1, 1, 0]);
    opts.extend_from_slice(&data[34..]);
    opts[14] = 0x46;
    out.push(("ipv4-options".into(), with(FIX_ALL, &opts)));
    // The UDP datagram as a first fragment and as a later one.
    let mut frag = udp.clone();
    frag[20] |= 0x20;
    out.push(("ipv4-first-fragment".into(), with(FIX_ALL, &frag)));
    let mut frag = udp.clone();
    frag[20..22].copy_from_slice(&8u16.to_be_bytes());
    out.push(("ipv4-later-fragment".into(), with(FIX_ALL, &frag)));
    // TCP option garbage: data offset 15 with an option that claims to run past the header.
    let mut garbage = data[..54].to_vec();
    garbage[46] = 0xf0 | (garbage[46] & 0x0f);
    garbage.extend_from_slice(&[2, 40, 0xff, 0xff, 3, 0, 8, 1, 0xaa]);
    garbage.resize(14 + 20 + 60, 1);
    garbage.extend_from_slice(&data[54..]);
    out.push(("tcp-option-garbage".into(), with(FIX_ALL, &garbage)));
    // The data segment as an RST, and with a window of 0.
    let mut rst = data[..54].to_vec();
    rst[47] = 0x14;
    out.push(("tcp-rst-ack".into(), with(FIX_ALL, &rst)));
    let mut zero = data.clone();
    zero[48..50].copy_from_slice(&[0, 0]);
    out.push(("tcp-zero-window".into(), with(FIX_ALL, &zero)));
    // Bad checksums and lengths, left unfixed.
    let mut bad = data.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    out.push(("tcp-bad-checksum".into(), with(0, &bad)));
    let mut long = udp.clone();
    long[16..18].copy_from_slice(&0xffffu16.to_be_bytes());
    out.push(("ipv4-length-past-frame".into(), with(FIX_IP_CSUM, &long)));
    out.push(("truncated-ethernet".into(), with(0, &data[..10])));
    let mut other = data.clone();
    other[..6].copy_from_slice(&MAC_A);
    out.push(("other-mac".into(), with(FIX_ALL, &other)));
    let mut arp = data[..42].to_vec();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    arp[..6].copy_from_slice(&[0xff; 6]);
    arp[6..12].copy_from_slice(&MAC_A);
    out.push(("arp".into(), with(0, &arp)));
    out
}
