//! A throwaway test topology: two network namespaces joined by a veth pair (docs/ARCHITECTURE.md, "Testing").
//!
//! Names carry this process's pid, so parallel runs never meet; addresses come from
//! 198.18.0.0/15 (benchmarking range) and live only inside the namespaces. Dropping a
//! [`Topology`] deletes both namespaces (which removes the veth pair and any XDP program on it),
//! also when a test panics. Namespaces left by a run that was killed are removed by the next run
//! (their pid no longer exists).

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

/// Prefix of every namespace we create: `accel-<pid>-<n>-a|b`.
const PREFIX: &str = "accel-t";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How the veth pair of a [`Topology`] is made. The default is a veth as `ip link add type
/// veth`, Docker and most CNIs leave it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// RX and TX queues on each end (`numrxqueues`/`numtxqueues`). `None`: the kernel's
    /// default, one queue in use (and one per CPU possible).
    pub queues: Option<u32>,
    /// Turn B's TX checksum offload off (`ethtool -K tx off`), so that B's frames carry
    /// complete TCP/UDP checksums, as frames from a NIC do. Left on (the kernel's default),
    /// veth hands A the pseudo-header partial sums of CHECKSUM_PARTIAL.
    pub peer_checksum_offload_off: bool,
}

/// Two namespaces, A (the accelerated side) and B (the kernel peer), joined by veth.
pub struct Topology {
    pub ns_a: String,
    pub ns_b: String,
    /// veth end in A.
    pub if_a: String,
    /// veth end in B.
    pub if_b: String,
    pub addr_a: Ipv4Addr,
    pub addr_b: Ipv4Addr,
    pub prefix_len: u8,
    /// RX queues in use on each end.
    pub queues: u32,
}

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    run("ip", args).map(|_| ())
}

/// Runs a command to completion, failing with its stderr when it exits non-zero.
pub fn run(prog: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| {
            format!("cannot run {prog}: is it installed? (the README's set-up installs it)")
        })?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            prog,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Deletes namespaces that an earlier, killed run of ours left behind.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: Option<u32> = rest
            .trim_start_matches('-')
            .split('-')
            .next()
            .and_then(|p| p.parse().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !pid_alive(pid) {
                let _ = Command::new("ip").args(["netns", "delete", name]).status();
            }
        }
    }
}

impl Topology {
    /// Builds A and B joined by a veth pair with `queues` RX and TX queues on each end, the
    /// peer's offloads as the kernel sets them.
    pub fn new(queues: u32) -> Result<Topology> {
        Topology::with(Options {
            queues: Some(queues),
            ..Options::default()
        })
    }

    /// Builds A and B joined by a veth pair made as `opts` says.
    pub fn with(opts: Options) -> Result<Topology> {
        if !nix::unistd::Uid::effective().is_root() {
            bail!("the test topology needs root (network namespaces and veth): run as root");
        }
        remove_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}-{}-{n}", std::process::id());
        let topo = Topology {
            ns_a: format!("{base}-a"),
            ns_b: format!("{base}-b"),
            if_a: "veth-a".into(),
            if_b: "veth-b".into(),
            addr_a: Ipv4Addr::new(198, 18, 0, 1),
            addr_b: Ipv4Addr::new(198, 18, 0, 2),
            prefix_len: 24,
            queues: opts.queues.unwrap_or(1),
        };
        // From here on, Drop removes whatever was made, even if a later step fails.
        ip(&["netns", "add", &topo.ns_a])?;
        ip(&["netns", "add", &topo.ns_b])?;
        let q = opts.queues.map(|q| q.to_string());
        let queue_args: Vec<&str> = match &q {
            Some(q) => vec!["numtxqueues", q, "numrxqueues", q],
            None => Vec::new(),
        };
        let mut args = vec!["-n", &topo.ns_a, "link", "add", &topo.if_a];
        args.extend(&queue_args);
        args.extend([
            "type", "veth", "peer", "name", &topo.if_b, "netns", &topo.ns_b,
        ]);
        args.extend(&queue_args);
        ip(&args)?;
        for (ns, ifname, addr) in [
            (&topo.ns_a, &topo.if_a, topo.addr_a),
            (&topo.ns_b, &topo.if_b, topo.addr_b),
        ] {
            let cidr = format!("{addr}/{}", topo.prefix_len);
            ip(&["-n", ns, "addr", "add", &cidr, "dev", ifname])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        if opts.peer_checksum_offload_off {
            run(
                "ip",
                &[
                    "netns", "exec", &topo.ns_b, "ethtool", "-K", &topo.if_b, "tx", "off",
                ],
            )?;
        }
        Ok(topo)
    }

    /// A command that runs inside namespace A.
    pub fn command_a(&self, prog: &str) -> Command {
        Self::command_in(&self.ns_a, prog)
    }

    /// A command that runs inside namespace B.
    pub fn command_b(&self, prog: &str) -> Command {
        Self::command_in(&self.ns_b, prog)
    }

    fn command_in(ns: &str, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, prog]);
        c
    }

    /// Runs `f` on a new thread that has entered namespace `ns` (sockets it opens live there).
    pub fn in_netns<F, R>(ns: &str, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = File::open(format!("/run/netns/{ns}"))
            .with_context(|| format!("namespace {ns} is gone"))?;
        let handle = std::thread::spawn(move || -> io::Result<R> {
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        });
        match handle.join() {
            Ok(r) => Ok(r.with_context(|| format!("cannot enter namespace {ns}"))?),
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Runs `f` inside namespace B (the kernel peer).
    pub fn in_b<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        Self::in_netns(&self.ns_b, f)
    }

    /// Runs `f` inside namespace A.
    pub fn in_a<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        Self::in_netns(&self.ns_a, f)
    }

    /// Makes B transmit on TX queue `i` whatever its threads on CPU `i` send (XPS), so a
    /// test can choose the RX queue of A a flow lands on by pinning the sending thread. Needs
    /// as many CPUs as queues.
    pub fn steer_b_tx_by_cpu(&self) -> Result<()> {
        for q in 0..self.queues {
            let path = format!("/sys/class/net/{}/queues/tx-{q}/xps_cpus", self.if_b);
            let mask = format!("{:x}", 1u64 << q);
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.ns_b,
                    "sh",
                    "-c",
                    &format!("echo {mask} > {path}"),
                ],
            )?;
        }
        Ok(())
    }

    /// The kernel's IP/TCP/UDP counters in namespace A (its /proc/net/snmp).
    pub fn snmp_a(&self) -> Result<Snmp> {
        let out = run(
            "ip",
            &["netns", "exec", &self.ns_a, "cat", "/proc/net/snmp"],
        )?;
        Snmp::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The counters of /proc/net/snmp we use to prove the kernel did not carry a flow.
/// (UDP InDatagrams counts datagrams when a program reads them, not when they arrive: the IP
/// counters show what reached the kernel at all.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snmp {
    /// IPv4 packets the kernel received (all protocols).
    pub ip_in_receives: u64,
    /// IPv4 packets the kernel handed to a transport protocol.
    pub ip_in_delivers: u64,
    pub tcp_in_segs: u64,
    pub tcp_out_segs: u64,
    pub tcp_passive_opens: u64,
    pub tcp_active_opens: u64,
    pub udp_in_datagrams: u64,
    pub udp_out_datagrams: u64,
    pub udp_no_ports: u64,
}

impl Snmp {
    /// Parses the kernel's header/value line pairs ("Tcp: ... InSegs ...", "Tcp: ... 123 ...").
    pub fn parse(text: &str) -> Result<Snmp> {
        let mut s = Snmp::default();
        let lines: Vec<&str> = text.lines().collect();
        let mut found = 0;
        for pair in lines.chunks(2) {
            let [head, vals] = pair else { continue };
            let (Some((p1, h)), Some((p2, v))) = (head.split_once(':'), vals.split_once(':'))
            else {
                continue;
            };
            if p1 != p2 {
                continue;
            }
            for (name, val) in h.split_whitespace().zip(v.split_whitespace()) {
                let val: u64 = val.parse().unwrap_or(0);
                let slot = match (p1, name) {
                    ("Ip", "InReceives") => &mut s.ip_in_receives,
                    ("Ip", "InDelivers") => &mut s.ip_in_delivers,
                    ("Tcp", "InSegs") => &mut s.tcp_in_segs,
                    ("Tcp", "OutSegs") => &mut s.tcp_out_segs,
                    ("Tcp", "PassiveOpens") => &mut s.tcp_passive_opens,
                    ("Tcp", "ActiveOpens") => &mut s.tcp_active_opens,
                    ("Udp", "InDatagrams") => &mut s.udp_in_datagrams,
                    ("Udp", "OutDatagrams") => &mut s.udp_out_datagrams,
                    ("Udp", "NoPorts") => &mut s.udp_no_ports,
                    _ => continue,
                };
                *slot = val;
                found += 1;
            }
        }
        if found < 9 {
            bail!("/proc/net/snmp has an unexpected format (found {found} of 9 counters)");
        }
        Ok(s)
    }

    /// Counter-wise difference `self - earlier`.
    pub fn since(&self, earlier: &Snmp) -> Snmp {
        Snmp {
            ip_in_receives: self.ip_in_receives.saturating_sub(earlier.ip_in_receives),
            ip_in_delivers: self.ip_in_delivers.saturating_sub(earlier.ip_in_delivers),
            tcp_in_segs: self.tcp_in_segs.saturating_sub(earlier.tcp_in_segs),
            tcp_out_segs: self.tcp_out_segs.saturating_sub(earlier.tcp_out_segs),
            tcp_passive_opens: self
                .tcp_passive_opens
                .saturating_sub(earlier.tcp_passive_opens),
            tcp_active_opens: self
                .tcp_active_opens
                .saturating_sub(earlier.tcp_active_opens),
            udp_in_datagrams: self
                .udp_in_datagrams
                .saturating_sub(earlier.udp_in_datagrams),
            udp_out_datagrams: self
                .udp_out_datagrams
                .saturating_sub(earlier.udp_out_datagrams),
            udp_no_ports: self.udp_no_ports.saturating_sub(earlier.udp_no_ports),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Ip: Forwarding DefaultTTL InReceives InDelivers\nIp: 1 64 10 9\nTcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors\nTcp: 1 200 120000 -1 3 4 0 0 0 100 90 0 0 0 0\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 7 2 0 8 0 0 0 0 0\nUdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdpLite: 0 0 0 0 0 0 0 0 0\n";

    #[test]
    fn snmp_parses_the_kernel_format() {
        let s = Snmp::parse(SAMPLE).unwrap();
        assert_eq!(s.ip_in_receives, 10);
        assert_eq!(s.ip_in_delivers, 9);
        assert_eq!(s.tcp_active_opens, 3);
        assert_eq!(s.tcp_passive_opens, 4);
        assert_eq!(s.tcp_in_segs, 100);
        assert_eq!(s.tcp_out_segs, 90);
        assert_eq!(s.udp_in_datagrams, 7);
        assert_eq!(s.udp_no_ports, 2);
        assert_eq!(s.udp_out_datagrams, 8);
    }

    #[test]
    fn snmp_rejects_other_text() {
        assert!(Snmp::parse("hello\nworld\n").is_err());
    }
}
