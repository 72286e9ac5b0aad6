//! Bringing one interface up for the preload: its control-plane mirror, its AF_XDP attachment
//! (libaccel), and an engine over them.

use std::net::Ipv4Addr;
use std::time::Instant;

use libaccel::attach::{Attachment, Options};
use libaccel::control::ControlPlane;
use libaccel::xdp::XdpMode;
use stack::engine::Engine;
use stack::Stack;

use super::nic::Nic;
use crate::config::{Buffers, MemMax};
use crate::fd::internal;
use crate::sys::kernel;

/// Opens `name` for this process; `conn`: a connection to accel's helper its parent made for
/// it (else it connects, starting the helper if needed).
pub(super) fn open_nic(
    name: &str,
    buffers: &Buffers,
    conn: Option<std::os::fd::OwnedFd>,
) -> Result<Nic, String> {
    let control = ControlPlane::open(name).map_err(|e| e.to_string())?;
    let info = control.interface().clone();
    let (addr, prefix_len) = *info
        .addrs
        .first()
        .ok_or_else(|| format!("{name} has no IPv4 address"))?;
    let att = Attachment::open_with(
        control,
        &Options {
            queues: None,
            mode: XdpMode::Auto,
            helper: None,
        },
        conn.map(libaccel::share::HelperConn::from_fd),
    )
    .map_err(|e| e.to_string())?;
    // The mirror's netlink sockets, the helper connection (closing it would end this
    // process's membership), the flow maps and the AF_XDP sockets are accel's own (hidden
    // from the program's close(), closed in a forked child).
    for fd in att.control.raw_fds().into_iter().chain(att.raw_fds()) {
        internal::mark(fd);
    }
    let mut config = stack::Config::new(info.mac, addr, prefix_len);
    config.mtu = info.mtu as usize;
    config.random_seed = kernel::random_u64();
    // veth: frames from its kernel peer may carry partial checksums (stack Config docs).
    config.partial_checksums = info.software_link();
    config.tcp_rx_buffer = buffers.tcp_rx.unwrap_or(config.tcp_rx_buffer);
    config.tcp_tx_buffer = buffers.tcp_tx.unwrap_or(config.tcp_tx_buffer);
    config.set_udp_buffers(
        buffers.udp_rx.unwrap_or(config.udp_rx_buffer),
        buffers.udp_tx.unwrap_or(config.udp_tx_buffer),
    );
    config.mem_max = match buffers.mem_max {
        MemMax::HalfOfMemory => memory_limit().map(|m| m / 2),
        MemMax::Bytes(b) => Some(b),
        MemMax::Unlimited => None,
    };
    config.gateway = att
        .control
        .route(Ipv4Addr::UNSPECIFIED)
        .and_then(|r| r.gateway);
    let epoch = Instant::now();
    let t0 = stack::Instant::from_micros(0);
    let engine = Engine::new(Stack::new(config, t0), att, t0);
    Ok(Nic::new(name, addr, prefix_len, engine, epoch))
}

/// The memory this process may have, in bytes: the machine's (MemTotal), or its memory
/// cgroup's limit when lower. `None` if /proc/meminfo cannot be read.
fn memory_limit() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: usize = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let total = kib.checked_mul(1024)?;
    Some(cgroup_memory_limit().map_or(total, |c| c.min(total)))
}

/// The memory limit of this process's cgroup (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`), if it has one.
fn cgroup_memory_limit() -> Option<usize> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let file = if controllers.is_empty() {
            format!("/sys/fs/cgroup{path}/memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")
        } else {
            return None;
        };
        // "max" (v2) does not parse: no limit; v1 says so with a huge number, which min() drops.
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}
