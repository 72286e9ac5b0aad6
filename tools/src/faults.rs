//! A lossy link for the test topology: drops, duplicates, reorders and corrupts the frames of
//! chosen flows at given rates, on the kernel peer's end of the veth (B's), because this
//! kernel has no netem. The BPF programs are in `bpf/faults.c` (read its header for how each
//! fault is made and why); this is their control.
//!
//! ```no_run
//! # use accel_tools::{faults::{Faults, FaultSpec, FlowMatch}, topology::Topology};
//! let topo = Topology::new(1)?;
//! let faults = Faults::attach(&topo, &FaultSpec {
//!     drop_ppm: 20_000,                 // 2 % of the flow's frames, both directions
//!     flow: FlowMatch::tcp(5201),       // frames from or to TCP port 5201
//!     seed: 7,
//!     ..FaultSpec::default()
//! })?;
//! // ... traffic ...
//! let c = faults.counters()?;
//! assert!(c.to_b.dropped > 0 && c.from_b.dropped > 0);
//! drop(faults); // detaches everything
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! Where each fault happens. Frames arriving at B (`to_b`): XDP on B's veth drops and corrupts;
//! tc ingress duplicates and delays (XDP can neither clone nor hold a frame), so their rates
//! apply to the frames XDP let through (`matched_tc`). Frames leaving B (`from_b`): tc egress
//! does all four. A reordered frame is delayed by [`FaultSpec::reorder_delay`]: it leaves
//! through a helper veth in B (`fdl0`/`fdl1`) to a thread of this process that holds it and
//! sends it back, and the frames behind it overtake it (BPF cannot hold frames and the kernel
//! has no delaying qdisc). Fault decisions are a hash of the seed and the frame's number in its
//! direction: the same seed and the same traffic give the same faults.
//!
//! Attaching turns off GRO, TSO and GSO on B's veth, so faults hit single frames as on a wire
//! rather than 64 KiB aggregates, and TX checksum offload, so every frame B sends carries a
//! complete checksum and a corrupted one is caught by any receiver (a kernel in A trusts a
//! veth peer's partial checksum without looking); they stay off after detaching. Other flows (and ARP, ICMP,
//! IPv6) pass untouched; [`DirCounters::other`] counts them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use libaccel::bpf::{Link, Map, Object, TcDirection};
use libaccel::raw::RawSocket;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::topology::{run, Topology};

#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);

static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/faults.o")));

/// The helper veth pair in B that carries delayed frames to and from this process.
const DELAY_OUT: &str = "fdl1";
const DELAY_IN: &str = "fdl0";

/// Which frames are faulted (IPv4 TCP/UDP only; never fragments, ARP, ICMP or IPv6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowMatch {
    /// `None`: TCP and UDP.
    pub proto: Option<Proto>,
    /// A frame matches when its source or destination port is this; `None`: any port.
    pub port: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl FlowMatch {
    /// TCP frames from or to `port`.
    pub fn tcp(port: u16) -> FlowMatch {
        FlowMatch {
            proto: Some(Proto::Tcp),
            port: Some(port),
        }
    }

    /// UDP frames from or to `port`.
    pub fn udp(port: u16) -> FlowMatch {
        FlowMatch {
            proto: Some(Proto::Udp),
            port: Some(port),
        }
    }
}

/// Which way the faults apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Directions {
    #[default]
    Both,
    /// Only frames arriving at B (sent by A).
    ToB,
    /// Only frames leaving B (sent to A).
    FromB,
}

/// What to inject. Rates are in parts per million of the matched frames, drawn independently
/// per frame (a frame may be corrupted, duplicated and delayed at once; a dropped frame is
/// nothing else).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub drop_ppm: u32,
    pub dup_ppm: u32,
    pub corrupt_ppm: u32,
    pub reorder_ppm: u32,
    /// How long a reordered frame is held (frames sent meanwhile overtake it).
    pub reorder_delay: Duration,
    pub seed: u64,
    pub flow: FlowMatch,
    pub directions: Directions,
}

impl Default for FaultSpec {
    fn default() -> FaultSpec {
        FaultSpec {
            drop_ppm: 0,
            dup_ppm: 0,
            corrupt_ppm: 0,
            reorder_ppm: 0,
            reorder_delay: Duration::from_millis(1),
            seed: 1,
            flow: FlowMatch::default(),
            directions: Directions::Both,
        }
    }
}

impl FaultSpec {
    /// `ppm` random loss both ways on `flow`.
    pub fn loss(ppm: u32, flow: FlowMatch, seed: u64) -> FaultSpec {
        FaultSpec {
            drop_ppm: ppm,
            flow,
            seed,
            ..FaultSpec::default()
        }
    }
}

/// What the programs did in one direction, since attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCounters {
    /// Frames of the chosen flows (first stage: XDP for `to_b`, tc for `from_b`).
    pub matched: u64,
    /// Other frames seen by the first stage and passed untouched.
    pub other: u64,
    pub dropped: u64,
    pub corrupted: u64,
    /// `to_b` only: frames of the chosen flows seen by tc ingress (those XDP did not drop).
    pub matched_tc: u64,
    pub duplicated: u64,
    /// Frames sent into the delay line.
    pub delayed: u64,
    /// Delayed frames put back on their way.
    pub returned: u64,
    /// Failed helper calls in the programs (a clone or a byte write): nonzero is a bug.
    pub errors: u64,
}

/// Both directions' counters and the delay line's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounters {
    pub to_b: DirCounters,
    pub from_b: DirCounters,
    /// Frames the delay line received and sent back.
    pub delay_line_held: u64,
    pub delay_line_sent: u64,
    /// Frames the delay line could not send back, or that were not ours.
    pub delay_line_errors: u64,
    /// Frames the veth pair itself dropped since attach (its TX "dropped" counters, both ends):
    /// not injected, e.g. a sender overflowing the 256-frame ring of B's XDP receive path.
    /// Tests that count losses exactly want this at 0 (pace the sender).
    pub link_drops: u64,
}

/// The injector, attached to a topology's B end; dropping it detaches every program and removes
/// the delay line.
pub struct Faults {
    ns_a: String,
    if_a: String,
    ns_b: String,
    if_b: String,
    /// The veth's TX drops at attach (A's end, B's end).
    link_drops0: u64,
    cfg: Map,
    stats: Map,
    home_ifindex: u32,
    home_mac: [u8; 6],
    delay_ifindex: u32,
    /// Programs stay attached while these live.
    links: Vec<Link>,
    delay: Option<DelayLine>,
}

const CFG_SIZE: usize = 48;
const STATS_FIELDS: usize = 9;

impl Faults {
    /// Attaches the injector to `topo`'s B end with `spec`.
    pub fn attach(topo: &Topology, spec: &FaultSpec) -> Result<Faults> {
        let ns = topo.ns_b.clone();
        let ifb = topo.if_b.clone();
        // Faults hit single frames (no GRO/TSO/GSO), and B's kernel computes its checksums
        // (tx off): a kernel receiver in A trusts a partial checksum from a veth peer without
        // looking, so a corrupted frame would reach it unnoticed.
        run(
            "ip",
            &[
                "netns", "exec", &ns, "ethtool", "-K", &ifb, "tx", "off", "gro", "off", "tso",
                "off", "gso", "off",
            ],
        )
        .context(
            "turning off checksum offload and GRO/TSO/GSO on B's veth for the fault injector",
        )?;
        make_delay_pair(&ns)?;
        let (home_ifindex, home_mac) = link_of(&ns, &ifb)?;
        let (delay_ifindex, _) = link_of(&ns, DELAY_OUT)?;

        let (cfg, stats, links) = Topology::in_netns(&ns, move || -> Result<_> {
            let obj = Object::load(&OBJECT.0, "accel_faults")
                .context("loading the fault injector's BPF programs")?;
            let cfg = obj.map("fault_cfg")?;
            let stats = obj.map("fault_stats")?;
            if cfg.value_size() != CFG_SIZE || stats.value_size() != STATS_FIELDS * 8 {
                bail!("faults.c and faults.rs disagree on the maps' layout");
            }
            let mut links = Vec::new();
            let attach = |what: &str, r: io::Result<Link>| {
                r.with_context(|| format!("attaching the fault injector's {what}"))
            };
            links.push(attach(
                "XDP program",
                obj.program("faults_xdp")?.attach_xdp(home_ifindex, true),
            )?);
            links.push(attach(
                "tc ingress program",
                obj.program("faults_tc_in")?
                    .attach_tc(home_ifindex, TcDirection::Ingress),
            )?);
            links.push(attach(
                "tc egress program",
                obj.program("faults_tc_out")?
                    .attach_tc(home_ifindex, TcDirection::Egress),
            )?);
            links.push(attach(
                "delay-line return program",
                obj.program("faults_return")?
                    .attach_tc(delay_ifindex, TcDirection::Ingress),
            )?);
            Ok((cfg, stats, links))
        })??;

        let delay = DelayLine::start(&ns, home_mac, spec.reorder_delay)?;
        let link_drops0 = tx_dropped(&topo.ns_a, &topo.if_a)? + tx_dropped(&ns, &ifb)?;
        let faults = Faults {
            ns_a: topo.ns_a.clone(),
            if_a: topo.if_a.clone(),
            if_b: ifb,
            link_drops0,
            ns_b: ns,
            cfg,
            stats,
            home_ifindex,
            home_mac,
            delay_ifindex,
            links,
            delay: Some(delay),
        };
        faults.set(spec)?;
        Ok(faults)
    }

    /// Changes what is injected from now on (the counters go on).
    pub fn set(&self, spec: &FaultSpec) -> Result<()> {
        if let Some(d) = &self.delay {
            d.delay_us
                .store(spec.reorder_delay.as_micros() as u64, Ordering::Relaxed);
        }
        for (dir, on) in [
            (0u32, spec.directions != Directions::FromB),
            (1u32, spec.directions != Directions::ToB),
        ] {
            let v = self.cfg_bytes(spec, on);
            self.cfg
                .set(&dir.to_ne_bytes(), &v)
                .context("writing the fault injector's configuration")?;
        }
        Ok(())
    }

    /// Stops injecting (programs stay attached and keep counting what they see).
    pub fn pause(&self) -> Result<()> {
        self.set(&FaultSpec::default())
    }

    fn cfg_bytes(&self, spec: &FaultSpec, on: bool) -> [u8; CFG_SIZE] {
        let mut v = [0u8; CFG_SIZE];
        v[0..8].copy_from_slice(&spec.seed.to_ne_bytes());
        for (i, ppm) in [
            spec.drop_ppm,
            spec.dup_ppm,
            spec.corrupt_ppm,
            spec.reorder_ppm,
        ]
        .into_iter()
        .enumerate()
        {
            let t = if on { threshold(ppm) } else { 0 };
            v[8 + 4 * i..12 + 4 * i].copy_from_slice(&t.to_ne_bytes());
        }
        v[24] = match spec.flow.proto {
            None => 0,
            Some(Proto::Tcp) => 6,
            Some(Proto::Udp) => 17,
        };
        v[25] = u8::from(on);
        v[26..28].copy_from_slice(&spec.flow.port.unwrap_or(0).to_be_bytes());
        v[28..32].copy_from_slice(&self.delay_ifindex.to_ne_bytes());
        v[32..36].copy_from_slice(&self.home_ifindex.to_ne_bytes());
        v[36..42].copy_from_slice(&self.home_mac);
        v
    }

    /// What was injected so far.
    pub fn counters(&self) -> Result<FaultCounters> {
        let dir = |d: u32| -> Result<DirCounters> {
            let mut v = [0u8; STATS_FIELDS * 8];
            self.stats
                .get(&d.to_ne_bytes(), &mut v)
                .context("reading the fault injector's counters")?;
            let f = |i: usize| u64::from_ne_bytes(v[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
            Ok(DirCounters {
                matched: f(0),
                other: f(1),
                dropped: f(2),
                corrupted: f(3),
                matched_tc: f(4),
                duplicated: f(5),
                delayed: f(6),
                returned: f(7),
                errors: f(8),
            })
        };
        let (held, sent, errors) = self.delay.as_ref().map_or((0, 0, 0), |d| {
            (
                d.counts.held.load(Ordering::Relaxed),
                d.counts.sent.load(Ordering::Relaxed),
                d.counts.errors.load(Ordering::Relaxed),
            )
        });
        let link_drops = tx_dropped(&self.ns_a, &self.if_a)? + tx_dropped(&self.ns_b, &self.if_b)?;
        Ok(FaultCounters {
            to_b: dir(0)?,
            from_b: dir(1)?,
            delay_line_held: held,
            delay_line_sent: sent,
            delay_line_errors: errors,
            link_drops: link_drops.saturating_sub(self.link_drops0),
        })
    }
}

impl Drop for Faults {
    fn drop(&mut self) {
        // Programs first (nothing new enters the delay line), then the line, then its veth.
        self.links.clear();
        self.delay.take();
        let _ = std::process::Command::new("ip")
            .args(["-n", &self.ns_b, "link", "del", DELAY_IN])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// `ppm` parts per million as a threshold on a uniform u32.
fn threshold(ppm: u32) -> u32 {
    ((u64::from(ppm.min(1_000_000)) << 32) / 1_000_000).min(u64::from(u32::MAX)) as u32
}

/// The helper veth pair in `ns`, up, without IPv6 (its own chatter would enter the delay line)
/// and without TX checksum offload on the end delayed frames enter (the kernel then completes a
/// partial checksum before the frame reaches the delay line, which sends raw bytes back).
fn make_delay_pair(ns: &str) -> Result<()> {
    let ip = |args: &[&str]| -> Result<()> {
        let mut a = vec!["-n", ns];
        a.extend_from_slice(args);
        run("ip", &a).map(drop)
    };
    ip(&[
        "link", "add", DELAY_IN, "type", "veth", "peer", "name", DELAY_OUT,
    ])
    .context("creating the fault injector's delay line")?;
    for dev in [DELAY_IN, DELAY_OUT] {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{dev}.disable_ipv6=1"),
            ],
        )?;
        run(
            "ip",
            &[
                "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "gro", "off",
            ],
        )?;
        ip(&["link", "set", dev, "up"])?;
    }
    Ok(())
}

/// The TX "dropped" counter of `dev` in `ns` (`ip -s link`).
fn tx_dropped(ns: &str, dev: &str) -> Result<u64> {
    let out = run("ip", &["-j", "-s", "-n", ns, "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `ip -j -s link show dev {dev}`"))?;
    v[0]["stats64"]["tx"]["dropped"]
        .as_u64()
        .with_context(|| format!("no TX drop counter for {dev}"))
}

/// (ifindex, MAC) of `dev` in `ns`.
fn link_of(ns: &str, dev: &str) -> Result<(u32, [u8; 6])> {
    let out = run("ip", &["-j", "-n", ns, "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("parsing `ip -j link show dev {dev}`"))?;
    let l = &v[0];
    let ifindex = l["ifindex"]
        .as_u64()
        .with_context(|| format!("no ifindex for {dev}"))? as u32;
    let mut mac = [0u8; 6];
    let text = l["address"]
        .as_str()
        .with_context(|| format!("no address for {dev}"))?;
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        bail!("{dev} has no Ethernet address ({text})");
    }
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC {text}"))?;
    }
    Ok((ifindex, mac))
}

#[derive(Default)]
struct DelayCounts {
    held: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
}

/// A thread in B that receives delayed frames on `fdl0`, holds each for the delay and sends it
/// back the same way; `faults_return` on `fdl1` puts it back on its way.
struct DelayLine {
    stop: UnixStream,
    thread: Option<JoinHandle<()>>,
    counts: Arc<DelayCounts>,
    delay_us: Arc<AtomicU64>,
}

impl DelayLine {
    fn start(ns: &str, home_mac: [u8; 6], delay: Duration) -> Result<DelayLine> {
        let file = File::open(format!("/run/netns/{ns}"))
            .with_context(|| format!("namespace {ns} is gone"))?;
        let (stop, stop_rx) = UnixStream::pair()?;
        let counts = Arc::new(DelayCounts::default());
        let delay_us = Arc::new(AtomicU64::new(delay.as_micros() as u64));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let counts = Arc::clone(&counts);
            let delay_us = Arc::clone(&delay_us);
            std::thread::Builder::new()
                .name("fault-delay".into())
                .spawn(move || {
                    let sock = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)
                        .and_then(|()| RawSocket::open(DELAY_IN, true));
                    match sock {
                        Ok(sock) => {
                            let _ = ready_tx.send(Ok(()));
                            delay_loop(&sock, stop_rx.into(), home_mac, &counts, &delay_us);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e).context("opening the fault injector's delay line");
            }
            Err(_) => bail!("the fault injector's delay line thread died"),
        }
        Ok(DelayLine {
            stop,
            thread: Some(thread),
            counts,
            delay_us,
        })
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        let _ = self.stop.write_all(b"x");
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn delay_loop(
    sock: &RawSocket,
    stop: OwnedFd,
    home_mac: [u8; 6],
    counts: &DelayCounts,
    delay_us: &AtomicU64,
) {
    let mut held: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, frame)) = held.pop_front() {
                match sock.send(&frame) {
                    Ok(_) => counts.sent.fetch_add(1, Ordering::Relaxed),
                    Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }
        let timeout = match held.front() {
            Some((due, _)) => {
                let ms = due
                    .saturating_duration_since(now)
                    .as_micros()
                    .div_ceil(1000);
                PollTimeout::try_from(ms.max(1) as i32).unwrap_or(PollTimeout::MAX)
            }
            None => PollTimeout::NONE,
        };
        let mut fds = [
            PollFd::new(sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let frame = &buf[..n];
                    // Ours: IPv4 from or to B's veth.
                    let ours = n >= 34
                        && frame[12..14] == [0x08, 0x00]
                        && (frame[0..6] == home_mac || frame[6..12] == home_mac);
                    if !ours {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    counts.held.fetch_add(1, Ordering::Relaxed);
                    let due =
                        Instant::now() + Duration::from_micros(delay_us.load(Ordering::Relaxed));
                    held.push_back((due, frame.to_vec()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}
