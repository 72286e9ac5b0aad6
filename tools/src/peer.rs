//! Kernel-side echo clients: what the demo and the tests run against accel-echo.
//!
//! Payloads come from a seeded generator, so the reader regenerates what the writer sent and
//! checks every byte (position of the first difference, not only a checksum).

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// xorshift64*: a small deterministic byte stream.
#[derive(Clone)]
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// FNV-1a 64, to print a checksum of what went each way.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }
}

/// What one TCP echo exchange did.
#[derive(Clone, Copy, Debug)]
pub struct TcpEcho {
    pub bytes: u64,
    pub sent_checksum: u64,
    pub echoed_checksum: u64,
    pub elapsed: Duration,
}

/// Sends `total` bytes to an echo server on one connection and checks that exactly the same
/// bytes come back. The writer runs on its own thread so neither side's buffers deadlock.
pub fn tcp_echo(server: SocketAddrV4, total: u64, seed: u64, timeout: Duration) -> Result<TcpEcho> {
    let start = Instant::now();
    let mut stream = TcpStream::connect_timeout(&SocketAddr::V4(server), timeout)
        .with_context(|| format!("connect to {server}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let send = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut pat = Pattern::new(seed);
        let mut sum = Fnv::default();
        let mut buf = vec![0u8; 16 * 1024];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            pat.fill(&mut buf[..n]);
            sum.update(&buf[..n]);
            writer.write_all(&buf[..n])?;
            left -= n as u64;
        }
        writer.shutdown(std::net::Shutdown::Write)?;
        Ok(sum.value())
    });
    let mut expect = Expected::new(seed);
    let mut sum = Fnv::default();
    let mut got = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let result = loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => {
                break Err(
                    anyhow::Error::new(e).context(format!("read after {got} of {total} bytes"))
                )
            }
        };
        if got + n as u64 > total {
            break Err(anyhow::anyhow!(
                "server echoed {} bytes, more than the {total} sent",
                got + n as u64
            ));
        }
        expect.next(&mut want[..n]);
        if let Some(i) = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
            break Err(anyhow::anyhow!(
                "echoed byte {} differs from the byte sent",
                got + i as u64
            ));
        }
        sum.update(&buf[..n]);
        got += n as u64;
    };
    let sent_checksum = match send.join() {
        Ok(r) => r.context("writing to the echo server")?,
        Err(_) => bail!("writer thread panicked"),
    };
    result?;
    if got != total {
        bail!("server echoed {got} bytes, expected {total}");
    }
    Ok(TcpEcho {
        bytes: got,
        sent_checksum,
        echoed_checksum: sum.value(),
        elapsed: start.elapsed(),
    })
}

/// The byte stream a [`Pattern`] writer produced, regenerated in reads of any size.
pub struct Expected {
    pat: Pattern,
    block: Vec<u8>,
    pos: usize,
}

impl Expected {
    pub fn new(seed: u64) -> Expected {
        // The writer fills buffers whose sizes are multiples of 8 (except the last), and the
        // generator emits 8-byte words, so whole 4 KiB blocks reproduce the same stream.
        Expected {
            pat: Pattern::new(seed),
            block: vec![0; 4096],
            pos: 4096,
        }
    }

    /// Fills `out` with the next `out.len()` bytes of the stream.
    pub fn next(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            if self.pos == self.block.len() {
                self.pat.fill(&mut self.block);
                self.pos = 0;
            }
            let take = (out.len() - done).min(self.block.len() - self.pos);
            out[done..done + take].copy_from_slice(&self.block[self.pos..self.pos + take]);
            self.pos += take;
            done += take;
        }
    }
}

/// What a UDP echo run did.
#[derive(Clone, Debug, Default)]
pub struct UdpEcho {
    pub sent: u64,
    pub received: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub lost: u64,
    /// Round-trip times in microseconds, in the order the echoes arrived.
    pub rtts_us: Vec<u64>,
}

/// Sends `count` datagrams of `size` bytes (seq number + pattern) with at most `window`
/// outstanding, checks every echo byte for byte, and waits up to `timeout` for the stragglers.
pub fn udp_echo(
    server: SocketAddrV4,
    count: u64,
    size: usize,
    window: u64,
    timeout: Duration,
) -> Result<UdpEcho> {
    if size < 16 {
        bail!("datagram size must be at least 16 bytes");
    }
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut report = UdpEcho::default();
    let mut seen = vec![false; count as usize];
    let mut sent_at = vec![Instant::now(); count as usize];
    let mut next = 0u64;
    let mut buf = vec![0u8; size];
    let mut rbuf = vec![0u8; size + 64];
    let mut last_progress = Instant::now();
    while report.received + report.corrupted < count {
        while next < count && next - (report.received + report.corrupted + report.lost) < window {
            make_datagram(next, &mut buf);
            sent_at[next as usize] = Instant::now();
            sock.send(&buf)?;
            report.sent += 1;
            next += 1;
        }
        match sock.recv(&mut rbuf) {
            Ok(n) => {
                last_progress = Instant::now();
                let seq = u64::from_le_bytes(rbuf[..8].try_into().expect("8 bytes"));
                let mut want = vec![0u8; size];
                if seq < count {
                    make_datagram(seq, &mut want);
                }
                if seq >= count || n != size || rbuf[..n] != want[..] {
                    report.corrupted += 1;
                } else if seen[seq as usize] {
                    report.duplicated += 1;
                } else {
                    seen[seq as usize] = true;
                    report.received += 1;
                    report
                        .rtts_us
                        .push(sent_at[seq as usize].elapsed().as_micros() as u64);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if last_progress.elapsed() > timeout {
                    break;
                }
                // Count what is outstanding as lost so the window reopens; a late echo still
                // counts as received (and lowers `lost` at the end).
                report.lost = next - report.received - report.corrupted;
            }
            Err(e) => return Err(e.into()),
        }
    }
    report.lost = count - report.received;
    Ok(report)
}

/// Datagram `seq`: 8-byte sequence number, then pattern bytes seeded by it.
pub fn make_datagram(seq: u64, buf: &mut [u8]) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    Pattern::new(seq ^ 0x5eed).fill(&mut buf[8..]);
}

/// Connects, sends a few bytes, reads the echo and closes, `times` times in a row.
pub fn connect_send_close(server: SocketAddrV4, times: u32, timeout: Duration) -> Result<()> {
    for i in 0..times {
        let mut s = TcpStream::connect_timeout(&SocketAddr::V4(server), timeout)
            .with_context(|| format!("connection {i} of {times}"))?;
        s.set_read_timeout(Some(timeout))?;
        let msg = format!("hello {i}\n");
        s.write_all(msg.as_bytes())?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)
            .with_context(|| format!("echo of connection {i}"))?;
        if back != msg.as_bytes() {
            bail!("connection {i}: echo differs");
        }
        drop(s);
    }
    Ok(())
}

/// Percentile (0..=100) of a list of samples; 0 for an empty list.
pub fn percentile(samples: &[u64], p: f64) -> u64 {
    if samples.is_empty() {
        return 0;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_stream_matches_the_writer_across_odd_reads() {
        // Writer side: 16 KiB chunks.
        let total = 100_000usize;
        let mut w = Pattern::new(7);
        let mut sent = vec![0u8; total];
        for chunk in sent.chunks_mut(16 * 1024) {
            w.fill(chunk);
        }
        // Reader side: odd-sized reads.
        let mut r = Expected::new(7);
        let mut off = 0usize;
        let mut want = vec![0u8; 7777];
        while off < total {
            let n = (total - off).min(7777);
            r.next(&mut want[..n]);
            assert_eq!(&want[..n], &sent[off..off + n], "at offset {off}");
            off += n;
        }
    }

    #[test]
    fn percentile_picks_the_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 51);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
