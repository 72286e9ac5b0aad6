//! Hostile and malformed frames from B to accel-echo in A (raw frames from an AF_PACKET socket
//! in namespace B) while a kernel client in B carries data over an established connection:
//! accel-echo neither crashes nor hangs, its counters say what it dropped and why, the kernel
//! in A counts what the XDP filter gave it, and the connection's bytes come back exact.
//! Runs as root; a setup failure fails the test.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddrV4, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use accel_tests::peer::Pattern;
use accel_tests::{parse_counters, start_echo, Topology};
use accel_tools::topology::run;
use libaccel::raw::RawSocket;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

const PORT: u16 = 7009;
const T: Duration = Duration::from_secs(60);
/// A source address B sends from that no host owns; A's neighbour table points it at B's MAC,
/// so A's replies reach the raw socket (B's kernel drops them: not its address).
const SPOOFED: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 77);

// TCP flags.
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let out = run("ip", &["-n", ns, "link", "show", "dev", dev]).expect("ip link");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = text.find("link/ether ").expect("an Ethernet address") + 11;
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(text[at..at + 17].split(':')) {
        *m = u8::from_str_radix(p, 16).expect("hex");
    }
    mac
}

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

/// Builds frames from B's MAC to A's MAC.
#[derive(Clone, Copy)]
struct Frames {
    mac_a: [u8; 6],
    mac_b: [u8; 6],
}

/// A TCP segment's fields.
#[derive(Clone, Copy)]
struct Seg<'a> {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options: &'a [u8],
    payload: &'a [u8],
}

impl Frames {
    /// Ethernet + IPv4 (with `ip_options`, checksummed) around an L4 payload.
    fn ipv4(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        proto: u8,
        l4: &[u8],
        ip_options: &[u8],
    ) -> Vec<u8> {
        let ihl = 20 + ip_options.len();
        let mut f = Vec::with_capacity(14 + ihl + l4.len());
        f.extend_from_slice(&self.mac_a);
        f.extend_from_slice(&self.mac_b);
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (ihl + l4.len()) as u16;
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, proto, 0, 0]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(ip_options);
        let c = checksum(&[&f[14..14 + ihl]]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(l4);
        f
    }

    fn tcp(&self, s: Seg<'_>) -> Vec<u8> {
        let hlen = 20 + s.options.len();
        assert_eq!(hlen % 4, 0);
        let mut t = Vec::with_capacity(hlen + s.payload.len());
        t.extend_from_slice(&s.src.port().to_be_bytes());
        t.extend_from_slice(&s.dst.port().to_be_bytes());
        t.extend_from_slice(&s.seq.to_be_bytes());
        t.extend_from_slice(&s.ack.to_be_bytes());
        t.push(((hlen / 4) as u8) << 4);
        t.push(s.flags);
        t.extend_from_slice(&s.window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(s.options);
        t.extend_from_slice(s.payload);
        let c = checksum(&[&pseudo(*s.src.ip(), *s.dst.ip(), 6, t.len()), &t]);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        self.ipv4(*s.src.ip(), *s.dst.ip(), 6, &t, &[])
    }

    fn udp(&self, src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&src.port().to_be_bytes());
        u.extend_from_slice(&dst.port().to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        let c = checksum(&[&pseudo(*src.ip(), *dst.ip(), 17, u.len()), &u]);
        u[6..8].copy_from_slice(&c.to_be_bytes());
        self.ipv4(*src.ip(), *dst.ip(), 17, &u, &[])
    }
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = proto;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    p
}

fn refix_ip_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&[&f[14..14 + ihl]]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// A TCP segment seen on the raw socket.
#[derive(Debug, Clone)]
struct Seen {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

fn parse_tcp(f: &[u8]) -> Option<Seen> {
    if f.len() < 54 || f[12..14] != [0x08, 0x00] || f[23] != 6 {
        return None;
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let t = f.get(14 + ihl..14 + total)?;
    let hlen = usize::from(t.get(12)? >> 4) * 4;
    let ip = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    Some(Seen {
        src: SocketAddrV4::new(ip(26), u16::from_be_bytes([t[0], t[1]])),
        dst: SocketAddrV4::new(ip(30), u16::from_be_bytes([t[2], t[3]])),
        seq: u32::from_be_bytes(t[4..8].try_into().ok()?),
        ack: u32::from_be_bytes(t[8..12].try_into().ok()?),
        flags: t[13],
        payload: t.get(hlen..)?.to_vec(),
    })
}

/// Reads frames until `want` accepts a TCP segment or `timeout` passes (then `None`).
fn wait_tcp(
    sock: &RawSocket,
    timeout: Duration,
    mut want: impl FnMut(&Seen) -> bool,
) -> Option<Seen> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(left.as_millis().max(1) as i32).unwrap_or(PollTimeout::MAX);
        nix::poll::poll(&mut fds, ms).expect("poll");
        while let Ok(n) = sock.recv(&mut buf) {
            if let Some(s) = parse_tcp(&buf[..n]) {
                if want(&s) {
                    return Some(s);
                }
            }
        }
    }
}

/// Every TCP segment that arrives within `d` and passes `keep`. (A window of time is the
/// point here: what A sends while it must not send.)
fn collect_tcp(sock: &RawSocket, d: Duration, mut keep: impl FnMut(&Seen) -> bool) -> Vec<Seen> {
    let mut out = Vec::new();
    wait_tcp(sock, d, |s| {
        if keep(s) {
            out.push(s.clone());
        }
        false
    });
    out
}

/// The established connection: writes a pattern until told to stop (and at least `min`
/// bytes), reads the echo back and checks every byte. Returns the bytes that went both ways.
fn bulk_client(stream: TcpStream, stop: Arc<AtomicBool>, min: u64) -> u64 {
    stream.set_read_timeout(Some(T)).unwrap();
    stream.set_write_timeout(Some(T)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let w = std::thread::spawn(move || {
        let mut pat = Pattern::new(99);
        let mut buf = vec![0u8; 16 * 1024];
        let mut sent = 0u64;
        while sent < min || !stop.load(Ordering::Relaxed) {
            pat.fill(&mut buf);
            writer
                .write_all(&buf)
                .expect("write on the established connection");
            sent += buf.len() as u64;
        }
        writer.shutdown(Shutdown::Write).unwrap();
        sent
    });
    let mut reader = stream;
    let mut expect = Pattern::new(99);
    let mut want = vec![0u8; 16 * 1024];
    let mut have = 0usize;
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader
            .read(&mut buf)
            .expect("read on the established connection");
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if have.is_multiple_of(want.len()) {
                expect.fill(&mut want);
            }
            assert_eq!(b, want[have % want.len()], "byte {got} of the echo differs");
            have += 1;
            got += 1;
        }
    }
    let sent = w.join().expect("writer");
    assert_eq!(got, sent, "echo returned {got} of {sent} bytes");
    got
}

#[test]
fn hostile_frames_are_counted_and_leave_an_established_connection_exact() {
    let topo = Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    let mut echo = start_echo(&topo, PORT, &[]);
    let mac_a = mac_of(&topo.ns_a, &topo.if_a);
    let mac_b = mac_of(&topo.ns_b, &topo.if_b);
    let fr = Frames { mac_a, mac_b };
    let mac_b_text: Vec<String> = mac_b.iter().map(|b| format!("{b:02x}")).collect();
    run(
        "ip",
        &[
            "-n",
            &topo.ns_a,
            "neigh",
            "replace",
            &SPOOFED.to_string(),
            "lladdr",
            &mac_b_text.join(":"),
            "dev",
            &topo.if_a,
            "nud",
            "permanent",
        ],
    )
    .expect("neighbour for the spoofed address");
    let server = SocketAddrV4::new(topo.addr_a, PORT);
    let ifb = topo.if_b.clone();
    let sock = topo
        .in_b(move || RawSocket::open(&ifb, true))
        .unwrap()
        .expect("raw socket in B");
    // It sees the established connection's traffic too: room enough not to lose a reply.
    nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::RcvBufForce, &(64 << 20))
        .expect("SO_RCVBUFFORCE");
    let kernel_a0 = run(
        "ip",
        &["netns", "exec", &topo.ns_a, "cat", "/proc/net/snmp"],
    )
    .unwrap();

    // The established connection, busy through everything below.
    let stream = topo
        .in_b(move || TcpStream::connect_timeout(&server.into(), T))
        .unwrap()
        .expect("connect");
    let client = match stream.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let bulk = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || bulk_client(stream, stop, 4 << 20))
    };
    let send = |f: &[u8]| {
        sock.send(f).expect("raw send");
    };
    let from_b = |port: u16| SocketAddrV4::new(topo.addr_b, port);
    let syn = |src: SocketAddrV4, options: &[u8]| {
        fr.tcp(Seg {
            src,
            dst: server,
            seq: 1000,
            ack: 0,
            flags: SYN,
            window: 65535,
            options,
            payload: &[],
        })
    };
    const EACH: usize = 50;

    // 1. Bad checksums (the XDP filter passes them: accel must catch them).
    for i in 0..EACH as u16 {
        let mut f = syn(from_b(20000 + i), &[]);
        f[24] ^= 0xff; // IPv4 header checksum
        send(&f);
        let mut f = syn(from_b(21000 + i), &[]);
        let last = f.len() - 1;
        f[last - 2] ^= 0x55; // TCP checksum (within the header)
        send(&f);
        let mut f = fr.udp(from_b(22000 + i), server, b"datagram");
        let last = f.len() - 1;
        f[last] ^= 0x01;
        send(&f);
    }
    // 2. Bad lengths: IPv4 total length past the frame or shorter than the headers, a TCP data
    //    offset past the segment, a UDP length shorter than its header.
    for i in 0..EACH as u16 {
        let mut f = syn(from_b(23000 + i), &[]);
        f[16..18].copy_from_slice(&1400u16.to_be_bytes());
        refix_ip_checksum(&mut f);
        send(&f);
        let mut f = syn(from_b(24000 + i), &[]);
        f[16..18].copy_from_slice(&24u16.to_be_bytes());
        refix_ip_checksum(&mut f);
        send(&f);
        let mut f = syn(from_b(25000 + i), &[]);
        f[46] = 0xf0; // data offset 60 in a 20-byte segment
        send(&f);
        let mut f = fr.udp(from_b(26000 + i), server, b"datagram");
        f[38..40].copy_from_slice(&4u16.to_be_bytes());
        send(&f);
    }
    // 3. TCP option garbage and impossible flags, checksums right.
    for i in 0..EACH as u16 {
        send(&syn(from_b(27000 + i), &[2, 40, 5, 0xb4])); // MSS option claiming 40 bytes
        send(&syn(from_b(28000 + i), &[8, 0, 1, 1])); // option of length 0
        let mut s = Seg {
            src: from_b(29000 + i),
            dst: server,
            seq: 1,
            ack: 0,
            flags: SYN | FIN,
            window: 100,
            options: &[],
            payload: &[],
        };
        send(&fr.tcp(s));
        s.flags = SYN | RST;
        send(&fr.tcp(s));
    }
    // 4. IPv4 options (valid) on a UDP datagram, and fragments (the filter gives fragments to
    //    the kernel, which reassembles).
    for i in 0..EACH as u16 {
        let mut u = fr.udp(from_b(30000 + i), server, &[7u8; 64]);
        // A first fragment of a larger datagram (MF set), and a later one.
        u[20] = 0x20;
        refix_ip_checksum(&mut u);
        send(&u);
        let mut later = fr.udp(from_b(30000 + i), server, &[7u8; 64]);
        later[20..22].copy_from_slice(&100u16.to_be_bytes()); // offset 800 bytes, MF clear
        refix_ip_checksum(&mut later);
        send(&later);
        let l4 = &fr.udp(from_b(31000 + i), server, b"with ip options")[34..];
        send(&fr.ipv4(topo.addr_b, topo.addr_a, 17, l4, &[1, 1, 1, 0]));
    }

    // 5. RSTs and ACKs with wrong sequence numbers on the established connection. A's latest
    //    segment of it tells where its numbers are.
    let cur = wait_tcp(&sock, T, |s| s.src == server && s.dst == client)
        .expect("a segment of the established connection");
    let (a_seq, b_seq) = (cur.seq, cur.ack);
    for k in 1..=EACH as u32 {
        let base = Seg {
            src: client,
            dst: server,
            seq: b_seq.wrapping_add(1 << 30).wrapping_add(k),
            ack: a_seq,
            flags: RST,
            window: 1000,
            options: &[],
            payload: &[],
        };
        send(&fr.tcp(base)); // RST far outside the window
        send(&fr.tcp(Seg {
            flags: RST | ACK,
            seq: b_seq.wrapping_sub(1 << 30),
            ..base
        }));
        send(&fr.tcp(Seg {
            flags: ACK,
            seq: b_seq,
            ack: a_seq.wrapping_add(1 << 30), // acknowledges data never sent
            ..base
        }));
        send(&fr.tcp(Seg {
            flags: ACK,
            seq: b_seq.wrapping_add(1 << 30),
            ack: a_seq.wrapping_sub(1 << 30), // old ACK outside the window
            payload: b"injected",
            ..base
        }));
    }

    // 6. Tiny MSS: a handshake from the spoofed address with MSS 8; A must never send more
    //    than smoltcp's floor (48 bytes) per segment, and echo everything.
    let tiny = SocketAddrV4::new(SPOOFED, 41000);
    let handshake = |src: SocketAddrV4, window: u16, options: &[u8]| -> (u32, u32) {
        send(&fr.tcp(Seg {
            src,
            dst: server,
            seq: 5000,
            ack: 0,
            flags: SYN,
            window,
            options,
            payload: &[],
        }));
        let synack = wait_tcp(&sock, Duration::from_secs(5), |s| {
            s.dst == src && s.flags & (SYN | ACK) == SYN | ACK
        })
        .expect("SYN-ACK to the spoofed client");
        let (mine, theirs) = (5001u32, synack.seq.wrapping_add(1));
        send(&fr.tcp(Seg {
            src,
            dst: server,
            seq: mine,
            ack: theirs,
            flags: ACK,
            window,
            options: &[],
            payload: &[],
        }));
        (mine, theirs)
    };
    let (mut my_seq, their) = handshake(tiny, 65535, &[2, 4, 0, 8]);
    let msg: Vec<u8> = (0..200u32).map(|i| b'a' + (i % 26) as u8).collect();
    send(&fr.tcp(Seg {
        src: tiny,
        dst: server,
        seq: my_seq,
        ack: their,
        flags: ACK,
        window: 65535,
        options: &[],
        payload: &msg,
    }));
    my_seq = my_seq.wrapping_add(msg.len() as u32);
    let mut echoed = Vec::new();
    let mut biggest = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while echoed.len() < msg.len() && Instant::now() < deadline {
        if let Some(s) = wait_tcp(&sock, Duration::from_secs(1), |s| {
            s.dst == tiny && !s.payload.is_empty()
        }) {
            let off = s.seq.wrapping_sub(their) as usize;
            biggest = biggest.max(s.payload.len());
            if off == echoed.len() {
                echoed.extend_from_slice(&s.payload);
            }
            send(&fr.tcp(Seg {
                src: tiny,
                dst: server,
                seq: my_seq,
                ack: their.wrapping_add(echoed.len() as u32),
                flags: ACK,
                window: 65535,
                options: &[],
                payload: &[],
            }));
        }
    }
    assert_eq!(echoed, msg, "echo over a connection with MSS 8");
    assert!(
        biggest <= 48,
        "a {biggest}-byte segment to a peer that asked for MSS 8"
    );

    // 7. Zero window: the client's window is 0, so A must not send the echo (beyond a 1-byte
    //    probe) until the client opens it.
    let zero = SocketAddrV4::new(SPOOFED, 41001);
    let (my_seq0, their0) = handshake(zero, 0, &[]);
    send(&fr.tcp(Seg {
        src: zero,
        dst: server,
        seq: my_seq0,
        ack: their0,
        flags: ACK,
        window: 0,
        options: &[],
        payload: b"held back by a zero window",
    }));
    let during = collect_tcp(&sock, Duration::from_millis(500), |s| s.dst == zero);
    assert!(
        during.iter().all(|s| s.payload.len() <= 1),
        "A sent into a zero window: {during:?}"
    );
    send(&fr.tcp(Seg {
        src: zero,
        dst: server,
        seq: my_seq0.wrapping_add(26),
        ack: their0,
        flags: ACK,
        window: 65535,
        options: &[],
        payload: &[],
    }));
    let opened = wait_tcp(&sock, Duration::from_secs(10), |s| {
        s.dst == zero && s.payload.ends_with(b"window")
    });
    assert!(opened.is_some(), "no echo after the window opened");

    // 8. A SYN flood from 3,000 spoofed, unreachable addresses.
    for i in 0..3000u32 {
        let src = SocketAddrV4::new(
            Ipv4Addr::new(198, 18, 1 + (i / 250) as u8, (i % 250) as u8 + 1),
            1024 + i as u16,
        );
        send(&syn(src, &[2, 4, 5, 0xb4]));
    }

    // The established connection went on through all of it, byte for byte.
    stop.store(true, Ordering::Relaxed);
    let bytes = bulk.join().expect("the established connection's client");
    eprintln!("established connection: {bytes} bytes echoed exactly");

    let (status, lines, stderr) = echo.stop(Signal::SIGTERM, T);
    assert!(status.success(), "accel-echo exit {status}: {stderr}");
    let c = parse_counters(&lines);
    eprintln!("accel-echo at exit:\n{}", lines.join("\n"));
    let kernel_a1 = run(
        "ip",
        &["netns", "exec", &topo.ns_a, "cat", "/proc/net/snmp"],
    )
    .unwrap();
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    let n = EACH as u64;
    assert!(get("stack.rx_drop_bad_checksum") >= 3 * n, "{c:?}");
    assert!(get("stack.rx_drop_malformed") >= 4 * n, "{c:?}");
    assert!(get("stack.rx_drop_bad_tcp") >= 4 * n, "{c:?}");
    assert!(get("stack.syn_dropped_backlog_full") > 0, "{c:?}");
    assert_eq!(
        get("echo.connections_reset"),
        0,
        "a connection was reset: {c:?}"
    );
    // The fragments went to A's kernel, which reassembled what it could.
    let reasm = |snmp: &[u8]| -> u64 {
        let text = String::from_utf8_lossy(snmp).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let (h, v) = (lines[0], lines[1]);
        let i = h
            .split_whitespace()
            .position(|x| x == "ReasmReqds")
            .expect("ReasmReqds");
        v.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    assert!(
        reasm(&kernel_a1.stdout) - reasm(&kernel_a0.stdout) >= 2 * n,
        "A's kernel did not see the fragments"
    );
}
