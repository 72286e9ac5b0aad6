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
use crate::fd::internal;
use crate::sys::kernel;

pub(super) fn open_nic(name: &str) -> Result<Nic, String> {
    let control = ControlPlane::open(name).map_err(|e| e.to_string())?;
    let info = control.interface().clone();
    let (addr, prefix_len) = *info
        .addrs
        .first()
        .ok_or_else(|| format!("{name} has no IPv4 address"))?;
    let att = Attachment::open(
        control,
        &Options {
            queues: None,
            mode: XdpMode::Auto,
            helper: None,
        },
    )
    .map_err(|e| e.to_string())?;
    // The mirror's netlink sockets are accel's own (hidden from the program's close()).
    for fd in att.control.raw_fds() {
        internal::mark(fd);
    }
    let mut config = stack::Config::new(info.mac, addr, prefix_len);
    config.mtu = info.mtu as usize;
    config.random_seed = kernel::random_u64();
    // veth: frames from its kernel peer may carry partial checksums (stack Config docs).
    config.partial_checksums = info.software_link();
    config.gateway = att
        .control
        .route(Ipv4Addr::UNSPECIFIED)
        .and_then(|r| r.gateway);
    let epoch = Instant::now();
    let t0 = stack::Instant::from_micros(0);
    let engine = Engine::new(Stack::new(config, t0), att, t0);
    Ok(Nic::new(name, addr, prefix_len, engine, epoch))
}
