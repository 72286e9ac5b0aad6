//! What can go wrong with the XDP filter. Every message says what happened and what to do.

use std::fmt;
use std::io;

use super::{AttachedMode, FlowKey, XdpMode};

/// An XDP filter error. The `Display` of each variant names the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no permission to {action} on {ifname}: run as root or grant CAP_NET_ADMIN and CAP_BPF \
         (and CAP_SYS_ADMIN to join the program another accel process attached)"
    )]
    Permission {
        ifname: String,
        action: &'static str,
    },

    #[error(
        "interface {ifname} (index {ifindex}) does not exist in this network namespace: check the \
         name with `ip link` in the namespace the program runs in"
    )]
    NoSuchInterface { ifname: String, ifindex: u32 },

    #[error(
        "interface {ifname} is not Ethernet (link type {hw_type}): accel accelerates Ethernet \
         interfaces only; use an Ethernet interface, or run this program without accel"
    )]
    NotEthernet { ifname: String, hw_type: u16 },

    #[error(
        "interface {ifname} does not support native XDP (driver {driver}): use --xdp-mode generic \
         or auto"
    )]
    NativeUnsupported { ifname: String, driver: String },

    #[error(
        "the kernel refuses XDP on {ifname}: frames larger than XDP takes could reach it (on a \
         veth: the peer's MTU is above about 3500 bytes, one page per frame): lower the MTU of \
         the other end of the link to {ifname}'s"
    )]
    MtuTooLarge { ifname: String },

    #[error(
        "another XDP program (id {prog_id}, name {prog_name}) is attached to {ifname}; accel cannot \
         share it: detach it with `ip link set dev {ifname} xdp off`"
    )]
    ForeignProgram {
        ifname: String,
        prog_id: u32,
        prog_name: String,
    },

    #[error(
        "accel's XDP program (id {prog_id}) is attached to {ifname} without a bpf_link (by `ip link` \
         or a tool other than accel), so it would never be detached: detach it with \
         `ip link set dev {ifname} xdp off`"
    )]
    UnlinkedProgram { ifname: String, prog_id: u32 },

    #[error(
        "accel's XDP program is attached to {ifname} in {attached} mode by another accel process, \
         but {requested} mode was asked for: use --xdp-mode auto, or stop the other accel \
         processes on {ifname}"
    )]
    ModeMismatch {
        ifname: String,
        attached: AttachedMode,
        requested: XdpMode,
    },

    #[error(
        "the accel_xdp program attached to {ifname} (id {prog_id}) does not match this accel \
         version ({reason}): stop the other accel processes on {ifname} so it is detached, or \
         detach it with `ip link set dev {ifname} xdp off`"
    )]
    IncompatibleProgram {
        ifname: String,
        prog_id: u32,
        reason: String,
    },

    #[error(
        "the flow table on {ifname} is full ({max} flows): close unused sockets, or stop other \
         accel processes on {ifname}"
    )]
    FlowTableFull { ifname: String, max: u32 },

    #[error(
        "{flow} on {ifname} is already accelerated by another process (slot {owner}; \
         `accel-stat` names it): stop that process or use another address or port"
    )]
    FlowTaken {
        ifname: String,
        flow: FlowKey,
        /// The slot of the process that holds it.
        owner: u8,
    },

    #[error(
        "rx queue {queue} of {ifname} is beyond accel's limit of {max} queues: reduce the queues \
         with `ethtool -L {ifname} combined {max}`"
    )]
    QueueOutOfRange {
        ifname: String,
        queue: u32,
        max: u32,
    },

    #[error(
        "could not attach accel's XDP program to {ifname}: XDP programs kept being attached and \
         detached there concurrently; retry, and check with `ip -d link show dev {ifname}` what \
         else manages XDP on it"
    )]
    Contended { ifname: String },

    #[error(
        "loading accel's XDP program failed: {source}; the kernel needs BPF and XDP \
         (CONFIG_BPF_SYSCALL, CONFIG_XDP_SOCKETS): set ACCEL_LOG=debug to see libbpf's and the \
         verifier's log"
    )]
    Load {
        #[source]
        source: io::Error,
    },

    #[error(
        "{what} on {ifname} is not supported by the XDP program attached there: it is an older \
         accel's; stop every accelerated program on {ifname} so the current one attaches"
    )]
    Unsupported { ifname: String, what: &'static str },

    #[error(
        "{action} on {ifname} failed: {source}; this is unexpected: set ACCEL_LOG=debug and report \
         it with the output of `ip -d link show dev {ifname}`"
    )]
    Bpf {
        ifname: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The errno the kernel would give for this (what a socket call reports).
    pub fn errno(&self) -> i32 {
        match self {
            Error::Permission { .. } => libc::EPERM,
            Error::NoSuchInterface { .. } => libc::ENODEV,
            Error::FlowTableFull { .. } => libc::ENOSPC,
            Error::Bpf { source, .. } | Error::Load { source } => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            _ => libc::EINVAL,
        }
    }

    /// Classifies a failed BPF/netlink call: permissions and missing interfaces get their own
    /// variants (and fixes); anything else is unexpected.
    pub(crate) fn from_io(ifname: &str, action: &'static str, e: io::Error) -> Error {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::Permission {
                ifname: ifname.to_owned(),
                action,
            },
            _ => Error::Bpf {
                ifname: ifname.to_owned(),
                action,
                source: e,
            },
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        })
    }
}

impl fmt::Display for AttachedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachedMode::Native => "native",
            AttachedMode::Generic => "generic",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::Proto;
    use std::net::SocketAddrV4;

    #[test]
    fn permission_errors_name_the_capabilities() {
        let e = Error::from_io(
            "eth0",
            "load XDP programs",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        let s = e.to_string();
        assert!(
            s.starts_with("no permission to load XDP programs on eth0: run as root"),
            "{s}"
        );
        assert!(s.contains("CAP_NET_ADMIN and CAP_BPF"), "{s}");
        let e = Error::from_io("eth0", "x", io::Error::from_raw_os_error(libc::EACCES));
        assert!(matches!(e, Error::Permission { .. }));
    }

    #[test]
    fn other_errnos_stay_unexpected_with_their_cause() {
        let e = Error::from_io(
            "eth0",
            "reading the flow table",
            io::Error::from_raw_os_error(libc::EIO),
        );
        let s = e.to_string();
        assert!(s.contains("reading the flow table on eth0 failed"), "{s}");
        assert!(s.contains("ACCEL_LOG=debug"), "{s}");
    }

    #[test]
    fn messages_name_cause_and_fix() {
        let cases: Vec<(Error, &[&str])> = vec![
            (
                Error::ForeignProgram {
                    ifname: "eth0".into(),
                    prog_id: 7,
                    prog_name: "xdp_fw".into(),
                },
                &[
                    "id 7, name xdp_fw",
                    "attached to eth0",
                    "`ip link set dev eth0 xdp off`",
                ],
            ),
            (
                Error::NativeUnsupported {
                    ifname: "wlan0".into(),
                    driver: "iwlwifi".into(),
                },
                &[
                    "wlan0 does not support native XDP (driver iwlwifi)",
                    "--xdp-mode generic or auto",
                ],
            ),
            (
                Error::NotEthernet {
                    ifname: "tun0".into(),
                    hw_type: 65534,
                },
                &["tun0 is not Ethernet", "Ethernet interface"],
            ),
            (
                Error::ModeMismatch {
                    ifname: "eth0".into(),
                    attached: AttachedMode::Generic,
                    requested: XdpMode::Native,
                },
                &[
                    "in generic mode",
                    "native mode was asked",
                    "--xdp-mode auto",
                ],
            ),
            (
                Error::FlowTaken {
                    ifname: "eth0".into(),
                    flow: FlowKey::listening(
                        Proto::Tcp,
                        SocketAddrV4::new([198, 18, 0, 1].into(), 80),
                    ),
                    owner: 9,
                },
                &[
                    "TCP 198.18.0.1:80 (any remote) on eth0",
                    "another process (slot 9",
                    "another address or port",
                ],
            ),
            (
                Error::QueueOutOfRange {
                    ifname: "eth0".into(),
                    queue: 70,
                    max: 64,
                },
                &["rx queue 70", "`ethtool -L eth0 combined 64`"],
            ),
            (
                Error::NoSuchInterface {
                    ifname: "eth9".into(),
                    ifindex: 3,
                },
                &["eth9 (index 3) does not exist", "`ip link`"],
            ),
        ];
        for (e, parts) in cases {
            let s = e.to_string();
            for p in parts {
                assert!(s.contains(p), "{s:?} lacks {p:?}");
            }
        }
    }
}
