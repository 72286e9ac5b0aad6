//! The `floor` workload: a raw AF_XDP frame ping-pong with no stack, over libaccel's own queues
//! and XDP filter (the same I/O layer accel uses). A reflector in A swaps the addresses of each
//! UDP frame of its port and sends it back; a pinger in B sends one 64-byte-payload frame at a
//! time and busy-polls for the echo. Both ends busy-poll. Half the round trip is reported, as
//! sockperf does, so the numbers sit beside the ping-pong workloads.
//!
//! The same workload measures the message-rate floor: a blaster in B sends 64-byte-payload
//! frames as fast as the queue takes them (one TX kick per frame, or per 32) and a sink in A
//! counts what arrives. That is the most msgrate-udp could reach on this path with no stack.
//!
//! Every role runs as `accel-bench __floor ...` inside its namespace; the pinger and the sink
//! print one summary line each, read by [`parse_summary`] and [`parse_rate`].

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use libaccel::attach::{Attachment, Options};
use libaccel::control::ControlPlane;
use libaccel::share::FlowOp;
use libaccel::xdp::{FlowKey, Proto, XdpMode};
use stack::link::{Link, RxFrame, TxFrame};

const PAYLOAD: usize = 64;
const FRAME: usize = 14 + 20 + 8 + PAYLOAD;

fn attach(ifname: &str, local: SocketAddrV4) -> Result<Attachment> {
    let control = ControlPlane::open(ifname).with_context(|| format!("cannot watch {ifname}"))?;
    let att = Attachment::open(
        control,
        &Options {
            queues: None,
            mode: XdpMode::Auto,
            helper: None,
        },
    )
    .with_context(|| format!("cannot open AF_XDP on {ifname}"))?;
    att.shared_flow(FlowOp::Join, &FlowKey::listening(Proto::Udp, local))
        .context("cannot steer the UDP port to AF_XDP")?;
    Ok(att)
}

/// Whether `f` is an IPv4/UDP frame to `port`.
fn is_ours(f: &[u8], port: u16) -> bool {
    f.len() >= 42 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f[36..38] == port.to_be_bytes()
}

/// Reflects every UDP frame to `local` back to its sender until killed.
pub fn reflect(ifname: &str, local: SocketAddrV4) -> Result<()> {
    let mut att = attach(ifname, local)?;
    println!("floor reflector ready on {ifname} {local}");
    let link = &mut att.queues;
    loop {
        let Some((rx, tx)) = link.receive() else {
            continue;
        };
        let mut buf = [0u8; 2048];
        let n = rx.consume(|f| {
            let n = f.len().min(buf.len());
            buf[..n].copy_from_slice(&f[..n]);
            n
        });
        if !is_ours(&buf[..n], local.port()) {
            continue;
        }
        let f = &mut buf[..n];
        // Swapping source and destination leaves both checksums valid (one's-complement sums
        // do not depend on order).
        for (a, b, len) in [(0, 6, 6), (26, 30, 4), (34, 36, 2)] {
            for i in 0..len {
                f.swap(a + i, b + i);
            }
        }
        tx.consume(n, |out| {
            out.copy_from_slice(f);
            ((), true)
        });
        link.flush();
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet/IPv4/UDP frame (UDP checksum 0: none) carrying `seq` in its payload.
fn build(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u64,
) -> [u8; FRAME] {
    let mut f = [0u8; FRAME];
    f[0..6].copy_from_slice(&dst_mac);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + 8 + PAYLOAD) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let c = checksum(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f[34..36].copy_from_slice(&src.port().to_be_bytes());
    f[36..38].copy_from_slice(&dst.port().to_be_bytes());
    f[38..40].copy_from_slice(&((8 + PAYLOAD) as u16).to_be_bytes());
    f[42..50].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Parses a MAC address "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let parts: Vec<u8> = s
        .trim()
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC address {s:?}"))?;
    parts
        .try_into()
        .map_err(|_| anyhow!("bad MAC address {s:?}"))
}

/// Pings `remote` (whose MAC is `remote_mac`) from `local` for `secs` seconds after a 0.4 s
/// warm-up and prints the summary line.
pub fn ping(
    ifname: &str,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    local_mac: [u8; 6],
    remote_mac: [u8; 6],
    secs: u32,
) -> Result<()> {
    let mut att = attach(ifname, local)?;
    let link = &mut att.queues;
    let start = Instant::now();
    let warm = Duration::from_millis(400);
    let end = warm + Duration::from_secs(u64::from(secs));
    let mut samples: Vec<u64> = Vec::with_capacity(1 << 20);
    let mut lost = 0u64;
    let mut seq = 0u64;
    while start.elapsed() < end {
        seq += 1;
        let frame = build(local_mac, remote_mac, local, remote, seq);
        let t0 = Instant::now();
        let Some(tx) = link.transmit() else {
            link.flush();
            continue;
        };
        tx.consume(FRAME, |out| {
            out.copy_from_slice(&frame);
            ((), true)
        });
        link.flush();
        let got = loop {
            if t0.elapsed() > Duration::from_millis(200) {
                break false;
            }
            let Some((rx, _tx)) = link.receive() else {
                continue;
            };
            let hit = rx.consume(|f| {
                is_ours(f, local.port()) && f.len() >= 50 && f[42..50] == seq.to_be_bytes()
            });
            if hit {
                break true;
            }
        };
        let rtt = t0.elapsed();
        if !got {
            lost += 1;
            if samples.is_empty() && lost > 20 {
                bail!("the reflector answered none of 20 frames");
            }
            continue;
        }
        if start.elapsed() > warm {
            samples.push(rtt.as_nanos() as u64 / 2);
        }
    }
    if samples.is_empty() {
        bail!("no echo received");
    }
    samples.sort_unstable();
    let pct = |p: f64| {
        let i = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        samples[i.clamp(1, samples.len()) - 1] as f64 / 1000.0
    };
    let avg = samples.iter().sum::<u64>() as f64 / samples.len() as f64 / 1000.0;
    println!(
        "floor: observations={} lost={lost} avg={avg:.3} p50={:.3} p99={:.3} p99.9={:.3} usec",
        samples.len(),
        pct(50.0),
        pct(99.0),
        pct(99.9)
    );
    Ok(())
}

/// Counts the frames to `local` for `secs` seconds from the first one and prints the rate, then
/// goes on taking frames (uncounted) until killed, so a sender still running sends none to the
/// kernel.
pub fn sink(ifname: &str, local: SocketAddrV4, secs: u32) -> Result<()> {
    let mut att = attach(ifname, local)?;
    println!("floor sink ready on {ifname} {local}");
    let link = &mut att.queues;
    let mut first: Option<Instant> = None;
    let mut got = 0u64;
    let window = Duration::from_secs(u64::from(secs));
    let ready = Instant::now();
    loop {
        match first {
            Some(t) if t.elapsed() >= window => break,
            None if ready.elapsed() > Duration::from_secs(10) => {
                bail!("no frame to {local} arrived in 10 s")
            }
            _ => {}
        }
        let Some((rx, _tx)) = link.receive() else {
            link.flush();
            continue;
        };
        if rx.consume(|f| is_ours(f, local.port())) {
            got += 1;
            first.get_or_insert_with(Instant::now);
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    // Frames the kernel could not hand us (ring full, no fill frame): non-zero means the sink,
    // not the sender, set the rate.
    let dropped: u64 = link
        .queues()
        .iter()
        .filter_map(|q| q.kernel_stats())
        .map(|(d, full, empty)| d + full + empty)
        .sum();
    println!(
        "floor-rate: received={got} rate={:.0} msg/s dropped={dropped}",
        got as f64 / secs
    );
    loop {
        if let Some((rx, _tx)) = link.receive() {
            rx.consume(|_| ());
            continue;
        }
        link.flush();
    }
}

/// Sends 64-byte-payload frames to `remote` as fast as the queue takes them, `batch` frames per
/// TX kick, until killed.
pub fn blast(
    ifname: &str,
    local: SocketAddrV4,
    remote: SocketAddrV4,
    local_mac: [u8; 6],
    remote_mac: [u8; 6],
    batch: usize,
) -> Result<()> {
    let mut att = attach(ifname, local)?;
    let link = &mut att.queues;
    let mut seq = 0u64;
    loop {
        for _ in 0..batch {
            seq += 1;
            let frame = build(local_mac, remote_mac, local, remote, seq);
            let Some(tx) = link.transmit() else {
                break;
            };
            tx.consume(FRAME, |out| {
                out.copy_from_slice(&frame);
                ((), true)
            });
        }
        link.flush();
    }
}

/// Reads the sink's summary line: frames received per second.
pub fn parse_rate(out: &str) -> Result<f64> {
    let line = out
        .lines()
        .find(|l| l.starts_with("floor-rate: "))
        .ok_or_else(|| anyhow!("no `floor-rate:` summary line in:\n{out}"))?;
    let rate: f64 = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("rate="))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("floor-rate summary has no rate: {line}"))?;
    if rate.is_nan() || rate <= 0.0 {
        bail!("the sink received nothing: {line}");
    }
    Ok(rate)
}

/// Reads the pinger's summary line: (observations, avg, p50, p99, p99.9) in usec.
pub fn parse_summary(out: &str) -> Result<super::parse::PingPong> {
    let line = out
        .lines()
        .find(|l| l.starts_with("floor: "))
        .ok_or_else(|| anyhow!("no `floor:` summary line in:\n{out}"))?;
    let get = |k: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("floor summary has no {k}: {line}"))
    };
    let observations = get("observations")? as u64;
    if observations == 0 {
        bail!("floor made no observations: {line}");
    }
    Ok(super::parse::PingPong {
        observations,
        avg_usec: get("avg")?,
        p50_usec: get("p50")?,
        p99_usec: get("p99")?,
        p999_usec: get("p99.9")?,
    })
}

/// `accel-bench __floor reflect IF LOCAL` / `accel-bench __floor ping IF LOCAL REMOTE
/// LOCAL_MAC REMOTE_MAC SECS`: the two ends, run by the floor workload in their namespaces.
pub fn main(args: &[String]) -> Result<()> {
    let addr = |s: &String| -> Result<SocketAddrV4> {
        s.parse().with_context(|| format!("bad address {s:?}"))
    };
    match args {
        [role, ifname, local] if role == "reflect" => reflect(ifname, addr(local)?),
        [role, ifname, local, secs] if role == "sink" => {
            sink(ifname, addr(local)?, secs.parse().context("bad seconds")?)
        }
        [role, ifname, local, remote, lmac, rmac, batch] if role == "blast" => blast(
            ifname,
            addr(local)?,
            addr(remote)?,
            parse_mac(lmac)?,
            parse_mac(rmac)?,
            batch.parse().context("bad batch")?,
        ),
        [role, ifname, local, remote, lmac, rmac, secs] if role == "ping" => ping(
            ifname,
            addr(local)?,
            addr(remote)?,
            parse_mac(lmac)?,
            parse_mac(rmac)?,
            secs.parse().context("bad seconds")?,
        ),
        _ => bail!(
            "usage: accel-bench __floor reflect IF LOCAL | ping IF LOCAL REMOTE LMAC RMAC SECS"
        ),
    }
}
