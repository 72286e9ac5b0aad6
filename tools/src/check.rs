//! `accel-run --check`: can accel accelerate here, and if not, what to do about it.
//!
//! Each check returns [`Finding`]s (ok / warn / error, what it is about, what was found, and for
//! warnings and errors the fix); `accel-run` only prints them. The pure checks take what they
//! judge as arguments so they are unit-tested; [`run`] gathers the facts from the system
//! (netlink, /proc, a real XDP attach that is undone at once) and calls them.

use std::fmt;
use std::path::{Path, PathBuf};

use libaccel::attach::explain;
use libaccel::control::{self, InterfaceInfo};
use libaccel::xdp::{self, AttachedMode, AttachedProgram, Filter, XdpMode};

/// The preload library's file name (the preload crate's cdylib).
pub const PRELOAD_NAME: &str = "libaccel_preload.so";

/// The largest MTU whose frames fit an AF_XDP frame: 4096-byte frames less the kernel's XDP
/// headroom (256) and the Ethernet header (14); libaccel's socket refuses anything larger.
pub const MAX_MTU: u32 = 4096 - 256 - 14;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// accel works, but slower or only once the fix is applied on the other side.
    Warn,
    /// accel cannot accelerate this (the program would run on the kernel's sockets).
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Error => "error",
        })
    }
}

/// One result of the preflight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// What it is about: an interface name, `privileges`, `bpffs`, `preload`.
    pub subject: String,
    pub message: String,
    /// What to do. Warnings and errors have one, except those whose message (a libaccel error)
    /// already ends with its fix.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(subject: &str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Ok,
            subject: subject.to_owned(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn warn(subject: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warn,
            subject: subject.to_owned(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn error(subject: &str, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Error,
            subject: subject.to_owned(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// An error whose message (from libaccel) already says what to do.
    fn error_with_own_fix(subject: &str, message: impl Into<String>) -> Finding {
        Finding {
            level: Level::Error,
            subject: subject.to_owned(),
            message: message.into(),
            fix: None,
        }
    }
}

/// One line: `LEVEL: SUBJECT: MESSAGE[; fix: FIX]`.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.level, self.subject, self.message)?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// Whether any finding is an error.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Error)
}

/// The preload library for the accel-run executable at `exe`: beside it, else in `../lib/`
/// beside it. The error is one line naming both places and the fix.
pub fn find_preload(exe: &Path) -> Result<PathBuf, String> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let beside = dir.join(PRELOAD_NAME);
    let lib = dir.join("..").join("lib").join(PRELOAD_NAME);
    for p in [&beside, &lib] {
        if p.is_file() {
            // Absolute and without `..`, so the dynamic loader finds it from any directory.
            return Ok(p.canonicalize().unwrap_or_else(|_| p.clone()));
        }
    }
    Err(format!(
        "the preload library {PRELOAD_NAME} is neither at {} nor at {}: build it with \
         `cargo build --workspace` (it is built beside accel-run)",
        beside.display(),
        lib.display()
    ))
}

/// Whether this process may attach XDP and open AF_XDP sockets.
pub fn privileges(root: bool, missing: &[&str]) -> Finding {
    if root && missing.is_empty() {
        return Finding::ok("privileges", "running as root");
    }
    if missing.is_empty() {
        return Finding::ok("privileges", "the process has the capabilities accel needs");
    }
    Finding::error(
        "privileges",
        format!(
            "accel needs {} to use AF_XDP and load its XDP program",
            missing.join(", ")
        ),
        "run as root, or grant them (`setcap cap_net_admin,cap_net_raw,cap_bpf+ep PROGRAM`; in \
         a container, add them to its capabilities)",
    )
}

/// Whether bpffs is mounted at /sys/fs/bpf, from the text of /proc/self/mounts.
pub fn bpffs(mounts: &str) -> Finding {
    let mounted = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3 && f[1] == "/sys/fs/bpf" && f[2] == "bpf"
    });
    if mounted {
        Finding::ok(
            "bpffs",
            "mounted at /sys/fs/bpf (accel pins its maps there for bpftool)",
        )
    } else {
        Finding::warn(
            "bpffs",
            "not mounted at /sys/fs/bpf: accel works without it, but does not pin its maps \
             for bpftool",
            "`mount -t bpf bpf /sys/fs/bpf`",
        )
    }
}

/// Whether the preload library was found.
pub fn preload(found: &Result<PathBuf, String>) -> Finding {
    match found {
        Ok(p) => Finding::ok("preload", format!("{}", p.display())),
        Err(e) => Finding::error(
            "preload",
            e.split(": build").next().unwrap_or(e).to_owned(),
            "`cargo build --workspace`",
        ),
    }
}

/// The interfaces checked (and accelerated by the preload) when none is named: up, Ethernet
/// (so not loopback), with an IPv4 address.
pub fn default_interfaces(all: &[InterfaceInfo]) -> Vec<&InterfaceInfo> {
    all.iter()
        .filter(|i| i.up && i.ethernet && !i.addrs.is_empty())
        .collect()
}

/// The checks that only need the interface's description: up, Ethernet, IPv4, MTU, queues
/// (`rx_in_use`: the RX queues it uses, see `libaccel::attach::rx_queues_in_use`).
pub fn interface_basics(i: &InterfaceInfo, rx_in_use: u32) -> Vec<Finding> {
    let n = i.name.as_str();
    let mut out = vec![Finding::ok(n, format!("exists (index {})", i.index))];
    out.push(if i.up {
        Finding::ok(n, "is up")
    } else {
        Finding::error(n, "is down", format!("`ip link set {n} up`"))
    });
    out.push(if i.ethernet {
        Finding::ok(n, "is Ethernet")
    } else {
        Finding::error(
            n,
            "is not Ethernet: accel sends Ethernet frames through AF_XDP",
            "pass an Ethernet interface (`ip link` shows link/ether) with --interface",
        )
    });
    out.push(if i.addrs.is_empty() {
        Finding::error(
            n,
            "has no IPv4 address: accelerated sockets use the kernel's address",
            format!("`ip addr add ADDRESS/PREFIX dev {n}`"),
        )
    } else {
        let a: Vec<String> = i.addrs.iter().map(|(a, p)| format!("{a}/{p}")).collect();
        Finding::ok(n, format!("IPv4 {}", a.join(", ")))
    });
    out.push(if i.mtu <= MAX_MTU {
        Finding::ok(n, format!("MTU {} fits an AF_XDP frame", i.mtu))
    } else {
        Finding::error(
            n,
            format!(
                "MTU {} is larger than an AF_XDP frame holds ({MAX_MTU})",
                i.mtu
            ),
            format!("`ip link set dev {n} mtu 1500`"),
        )
    });
    out.push(Finding::ok(
        n,
        format!("{rx_in_use} RX queue(s) in use: accel serves each with its own AF_XDP socket"),
    ));
    out
}

/// On a software link (veth) the kernel peer's frames carry partial TCP/UDP checksums while
/// its TX checksum offload is on (the default); accel accepts them there, and only there.
pub fn software_link(i: &InterfaceInfo) -> Option<Finding> {
    let kind = i.kind.as_deref()?;
    i.software_link().then(|| {
        Finding::ok(
            &i.name,
            format!(
                "is a {kind} (a software link): partial TCP/UDP checksums from its kernel peer \
                 (TX checksum offload, on by default) are accepted"
            ),
        )
    })
}

/// Whether an XDP program other than accel's is attached (accel cannot share it).
pub fn foreign_program(name: &str, attached: Option<&AttachedProgram>) -> Option<Finding> {
    let p = attached?;
    if p.name == xdp::PROGRAM_NAME {
        return None;
    }
    Some(Finding::error(
        name,
        format!(
            "another XDP program (id {}, name {}) is attached; accel cannot share it",
            p.id, p.name
        ),
        format!("`ip link set dev {name} xdp off` if nothing needs it"),
    ))
}

/// Attaches accel's XDP program for real, native then generic, and detaches it again at once
/// (or joins the one another accel process attached, and leaves it). Needs privileges.
pub fn xdp_attach(i: &InterfaceInfo, attached: Option<&AttachedProgram>) -> Finding {
    let n = i.name.as_str();
    let joining = attached.is_some_and(|p| p.name == xdp::PROGRAM_NAME);
    if joining {
        return match Filter::open(i.index, n, XdpMode::Auto) {
            Ok(f) => {
                let mode = f.attached_mode();
                drop(f);
                Finding::ok(
                    n,
                    format!(
                        "another accel process has attached accel's XDP program in {mode} mode; \
                         joined it and left again"
                    ),
                )
            }
            Err(e) => Finding::error_with_own_fix(n, explain(i, e).to_string()),
        };
    }
    match Filter::open(i.index, n, XdpMode::Native) {
        Ok(f) => {
            let mode = f.attached_mode();
            drop(f);
            Finding::ok(n, format!("XDP attaches in {mode} mode (detached again)"))
        }
        Err(xdp::Error::NativeUnsupported { driver, .. }) => {
            match Filter::open(i.index, n, XdpMode::Generic) {
                Ok(f) => {
                    drop(f);
                    Finding::warn(
                        n,
                        format!(
                            "driver {driver} has no native XDP: only {} mode attaches (slower)",
                            AttachedMode::Generic
                        ),
                        "use a NIC whose driver supports native XDP for full speed",
                    )
                }
                Err(e) => Finding::error_with_own_fix(n, explain(i, e).to_string()),
            }
        }
        Err(e) => Finding::error_with_own_fix(n, explain(i, e).to_string()),
    }
}

/// Every check, for the named interfaces (all of [`default_interfaces`] when `requested` is
/// empty), in this process's network namespace.
pub fn run(requested: &[String], preload_found: &Result<PathBuf, String>) -> Vec<Finding> {
    let missing = libaccel::attach::missing_capabilities();
    let mut out = vec![privileges(
        nix::unistd::Uid::effective().is_root(),
        &missing,
    )];
    let all = match control::interfaces() {
        Ok(all) => all,
        Err(e) => {
            out.push(Finding::error_with_own_fix("interfaces", e.to_string()));
            return out;
        }
    };
    let chosen: Vec<&InterfaceInfo> = if requested.is_empty() {
        let d = default_interfaces(&all);
        if d.is_empty() {
            out.push(Finding::error(
                "interfaces",
                "no interface is up, Ethernet and has an IPv4 address: accel would accelerate \
                 nothing",
                "bring one up with an address, or name one with --interface",
            ));
        }
        d
    } else {
        let mut v = Vec::new();
        for name in requested {
            match all.iter().find(|i| &i.name == name) {
                Some(i) => v.push(i),
                None => out.push(Finding::error(
                    name,
                    "does not exist in this network namespace",
                    format!("pass one of: {}", names(&all)),
                )),
            }
        }
        v
    };
    for i in chosen {
        let basics = interface_basics(i, libaccel::attach::rx_queues_in_use(i));
        let usable = i.ethernet;
        out.extend(basics);
        if let Some(f) = software_link(i) {
            out.push(f);
        }
        if !usable {
            continue;
        }
        match xdp::attached_program(i.index, &i.name) {
            Err(e) => out.push(Finding::error_with_own_fix(&i.name, e.to_string())),
            Ok(attached) => match foreign_program(&i.name, attached.as_ref()) {
                Some(f) => out.push(f),
                None => out.push(xdp_attach(i, attached.as_ref())),
            },
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    out.push(bpffs(&mounts));
    out.push(preload(preload_found));
    out
}

/// The interface names, for messages that list the available ones.
pub fn names(all: &[InterfaceInfo]) -> String {
    let v: Vec<&str> = all.iter().map(|i| i.name.as_str()).collect();
    if v.is_empty() {
        "(none)".to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str) -> InterfaceInfo {
        InterfaceInfo {
            index: 3,
            name: name.into(),
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 1500,
            up: true,
            ethernet: true,
            addrs: vec![([198, 18, 0, 1].into(), 24)],
            rx_queues: 2,
            tx_queues: 2,
            kind: None,
            link: None,
            link_netnsid: None,
        }
    }

    fn levels(f: &[Finding]) -> Vec<Level> {
        f.iter().map(|f| f.level).collect()
    }

    #[test]
    fn a_good_interface_is_all_ok() {
        let f = interface_basics(&iface("eth1"), 2);
        assert!(f.iter().all(|f| f.level == Level::Ok), "{f:?}");
        assert!(f.iter().any(|f| f.message.contains("2 RX queue")), "{f:?}");
    }

    #[test]
    fn each_problem_is_an_error_with_its_fix() {
        let mut i = iface("eth1");
        i.up = false;
        i.ethernet = false;
        i.addrs.clear();
        i.mtu = 9000;
        let f = interface_basics(&i, 2);
        assert_eq!(levels(&f).iter().filter(|l| **l == Level::Error).count(), 4);
        let text: Vec<String> = f.iter().map(|f| f.to_string()).collect();
        let all = text.join("\n");
        assert!(
            all.contains("error: eth1: is down; fix: `ip link set eth1 up`"),
            "{all}"
        );
        assert!(
            all.contains("`ip addr add ADDRESS/PREFIX dev eth1`"),
            "{all}"
        );
        assert!(all.contains("MTU 9000"), "{all}");
        assert!(all.contains("mtu 1500"), "{all}");
        for f in &f {
            if f.level != Level::Ok {
                assert!(f.fix.is_some(), "{f}");
            }
        }
    }

    #[test]
    fn the_largest_mtu_that_fits_is_ok() {
        let mut i = iface("eth1");
        i.mtu = MAX_MTU;
        assert!(!has_errors(&interface_basics(&i, 2)));
        i.mtu = MAX_MTU + 1;
        assert!(has_errors(&interface_basics(&i, 2)));
    }

    #[test]
    fn default_interfaces_are_up_ethernet_with_ipv4() {
        let mut lo = iface("lo");
        lo.ethernet = false;
        let mut down = iface("eth2");
        down.up = false;
        let mut bare = iface("eth3");
        bare.addrs.clear();
        let all = vec![lo, iface("eth1"), down, bare];
        let d: Vec<&str> = default_interfaces(&all)
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        assert_eq!(d, ["eth1"]);
        assert_eq!(names(&all), "lo, eth1, eth2, eth3");
    }

    #[test]
    fn a_veth_is_a_software_link_whose_partial_checksums_are_accepted() {
        let mut i = iface("eth0");
        assert_eq!(software_link(&i), None);
        i.kind = Some("macvlan".into());
        assert_eq!(software_link(&i), None);
        i.name = "veth-a".into();
        i.kind = Some("veth".into());
        let f = software_link(&i).unwrap();
        assert_eq!(f.level, Level::Ok);
        assert!(
            f.to_string()
                .starts_with("ok: veth-a: is a veth (a software link): partial TCP/UDP"),
            "{f}"
        );
    }

    #[test]
    fn a_foreign_program_is_an_error_ours_is_not() {
        let ours = AttachedProgram {
            id: 5,
            name: xdp::PROGRAM_NAME.into(),
            mode: Some(AttachedMode::Native),
        };
        assert_eq!(foreign_program("eth0", Some(&ours)), None);
        assert_eq!(foreign_program("eth0", None), None);
        let fw = AttachedProgram {
            id: 9,
            name: "xdp_fw".into(),
            mode: None,
        };
        let f = foreign_program("eth0", Some(&fw)).unwrap();
        assert_eq!(f.level, Level::Error);
        assert!(f.to_string().contains("id 9, name xdp_fw"), "{f}");
        assert!(
            f.to_string().contains("`ip link set dev eth0 xdp off`"),
            "{f}"
        );
    }

    #[test]
    fn bpffs_is_found_in_mounts() {
        let yes = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
        assert_eq!(bpffs(yes).level, Level::Ok);
        let no = "sysfs /sys sysfs rw 0 0\n";
        let f = bpffs(no);
        assert_eq!(f.level, Level::Warn);
        assert!(f.to_string().contains("`mount -t bpf bpf /sys/fs/bpf`"));
    }

    #[test]
    fn privileges_name_what_is_missing() {
        assert_eq!(privileges(true, &[]).level, Level::Ok);
        let f = privileges(false, &["CAP_BPF", "CAP_NET_ADMIN"]);
        assert_eq!(f.level, Level::Error);
        assert!(f.message.contains("CAP_BPF, CAP_NET_ADMIN"), "{f}");
        assert!(f.fix.as_deref().unwrap().contains("setcap"), "{f}");
    }

    #[test]
    fn preload_is_found_beside_or_in_lib() {
        let base = std::env::temp_dir().join(format!("accel-check-{}", std::process::id()));
        let bin = base.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let exe = bin.join("accel-run");
        let err = find_preload(&exe).unwrap_err();
        assert!(
            err.contains(&bin.join(PRELOAD_NAME).display().to_string()),
            "{err}"
        );
        assert!(err.contains("cargo build --workspace"), "{err}");
        assert_eq!(preload(&Err(err)).level, Level::Error);
        std::fs::create_dir_all(base.join("lib")).unwrap();
        std::fs::write(base.join("lib").join(PRELOAD_NAME), b"").unwrap();
        let p = find_preload(&exe).unwrap();
        assert!(
            p.is_absolute() && !p.to_string_lossy().contains(".."),
            "{p:?}"
        );
        assert!(p.ends_with(format!("lib/{PRELOAD_NAME}")), "{p:?}");
        std::fs::write(bin.join(PRELOAD_NAME), b"").unwrap();
        assert!(find_preload(&exe)
            .unwrap()
            .ends_with(format!("bin/{PRELOAD_NAME}")));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
