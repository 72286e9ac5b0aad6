//! The XDP flow filter on a real interface: attach, join, flows, SYN pinning, detach.
//!
//! Privileged: needs root (CI runs as root). It builds its own topology (two network namespaces
//! joined by veth, named with this process's pid, addresses from 198.18.0.0/15) and fails, never
//! skips, when it cannot. The namespaces are deleted by a guard, even on panic.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};

use libaccel::xdp::{
    attached_program, AttachedMode, Error, Filter, FlowKey, FlowValue, Proto, Verdict, XdpMode,
    FLOW_PASS, FLOW_PINNED,
};
use nix::sched::{setns, CloneFlags};

// ---------------------------------------------------------------------------------------------
// Topology.

/// Every test takes this for its whole run. Whenever a process holds an fd to a bpf_link, the
/// program stays attached: a child between fork and exec holds copies of all our fds, and
/// `Filter::open` briefly takes an fd to every link while it looks for accel's. Either, in a
/// concurrent test, would keep a program attached that this test expects detached.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

#[track_caller]
fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e} (the test needs iproute2 and root)"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}): {} (the test needs root)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by veth; deleted on drop.
struct Topo {
    ns_a: String,
    ns_b: String,
    if_a: String,
    net: u8,
}

impl Topo {
    /// `tag` keeps tests of one run apart; `net` picks 198.18.net.0/24.
    #[track_caller]
    fn new(tag: &str, net: u8, queues: Option<u32>) -> Topo {
        let pid = std::process::id();
        let topo = Topo {
            ns_a: format!("accel-t-{pid}-xdp{tag}-a"),
            ns_b: format!("accel-t-{pid}-xdp{tag}-b"),
            if_a: format!("xa{pid}{tag}"),
            net,
        };
        assert!(
            topo.if_a.len() < 16,
            "interface name too long: {}",
            topo.if_a
        );
        let if_b = format!("xb{pid}{tag}");
        run(&["ip", "netns", "add", &topo.ns_a]);
        run(&["ip", "netns", "add", &topo.ns_b]);
        let q = queues.map(|q| q.to_string());
        let mut add: Vec<&str> = vec!["ip", "-n", &topo.ns_a, "link", "add", &topo.if_a];
        if let Some(q) = &q {
            add.extend(["numrxqueues", q, "numtxqueues", q]);
        }
        add.extend(["type", "veth", "peer", "name", &if_b]);
        if let Some(q) = &q {
            add.extend(["numrxqueues", q, "numtxqueues", q]);
        }
        add.extend(["netns", &topo.ns_b]);
        run(&add);
        let addr_a = format!("198.18.{net}.1/24");
        let addr_b = format!("198.18.{net}.2/24");
        run(&[
            "ip", "-n", &topo.ns_a, "addr", "add", &addr_a, "dev", &topo.if_a,
        ]);
        run(&["ip", "-n", &topo.ns_b, "addr", "add", &addr_b, "dev", &if_b]);
        run(&["ip", "-n", &topo.ns_a, "link", "set", &topo.if_a, "up"]);
        run(&["ip", "-n", &topo.ns_b, "link", "set", &if_b, "up"]);
        topo
    }

    fn local(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, self.net, 1), port)
    }

    fn remote(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(198, 18, self.net, 2), port)
    }

    /// `ip -d link show` of the interface in namespace A.
    fn link_details(&self) -> String {
        run(&[
            "ip", "-n", &self.ns_a, "-d", "link", "show", "dev", &self.if_a,
        ])
    }

    /// Runs `f` on a thread that joined namespace A (BPF calls and netlink act in the caller's
    /// network namespace), with the interface's index.
    fn in_a<T: Send>(&self, f: impl FnOnce(u32) -> T + Send) -> T {
        in_netns(&self.ns_a, || {
            let ifindex =
                nix::net::if_::if_nametoindex(self.if_a.as_str()).expect("veth in namespace A");
            f(ifindex)
        })
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair too.
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            enter_netns(ns);
            f()
        });
        h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

#[track_caller]
fn enter_netns(ns: &str) {
    let f =
        File::open(format!("/run/netns/{ns}")).unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns {ns}: {e} (needs root)"));
}

#[track_caller]
fn open(ifindex: u32, ifname: &str, mode: XdpMode) -> Filter {
    Filter::open(ifindex, ifname, mode)
        .unwrap_or_else(|e| panic!("Filter::open({ifname}, {mode}): {e}"))
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn attaches_natively_joins_and_detaches_when_the_last_filter_drops() {
    let _serial = serial();
    let topo = Topo::new("j", 1, None);
    let name = topo.if_a.clone();
    topo.in_a(|ifindex| {
        assert_eq!(
            attached_program(ifindex, &name).unwrap(),
            None,
            "fresh veth has no XDP program"
        );

        let f1 = open(ifindex, &name, XdpMode::Native);
        assert_eq!(f1.attached_mode(), AttachedMode::Native);
        let p = attached_program(ifindex, &name)
            .unwrap()
            .expect("program attached");
        assert_eq!(
            (p.id, p.name.as_str(), p.mode),
            (f1.program_id(), "accel_xdp", Some(AttachedMode::Native))
        );
        assert!(
            topo.link_details().contains("prog/xdp"),
            "{}",
            topo.link_details()
        );

        let f2 = open(ifindex, &name, XdpMode::Auto);
        assert_eq!(
            f2.program_id(),
            f1.program_id(),
            "the second open joins the same program"
        );
        assert_eq!(f2.attached_mode(), AttachedMode::Native);
        assert!(
            matches!(
                Filter::open(ifindex, &name, XdpMode::Generic),
                Err(Error::ModeMismatch { .. })
            ),
            "generic asked while native is attached"
        );

        let listen = FlowKey::listening(Proto::Tcp, topo.local(80));
        let conn = FlowKey::connected(Proto::Udp, topo.local(5000), topo.remote(6000));
        f1.set_flow(&listen, FlowValue::set(&[1, 4]).unwrap())
            .unwrap();
        f2.set_flow(&conn, FlowValue::exact(3)).unwrap();
        // Both handles see both flows: they share the maps.
        assert_eq!(f2.flow(&listen).unwrap().unwrap().slots(), &[1, 4]);
        assert_eq!(f1.flow(&conn).unwrap(), Some(FlowValue::exact(3)));
        let mut flows = f1.flows().unwrap();
        flows.sort_by_key(|(k, _)| k.local.port());
        assert_eq!(
            flows,
            vec![
                (listen, FlowValue::set(&[1, 4]).unwrap()),
                (conn, FlowValue::exact(3))
            ]
        );
        assert!(f1.remove_flow(&listen).unwrap());
        assert_eq!(f2.flow(&listen).unwrap(), None);
        assert!(!f1.remove_flow(&listen).unwrap(), "gone already");

        assert!(matches!(
            f1.register_socket(64, 0, std::io::stdin().as_fd()),
            Err(Error::QueueOutOfRange {
                queue: 64,
                max: 64,
                ..
            })
        ));

        drop(f1);
        assert_eq!(
            attached_program(ifindex, &name).unwrap().map(|p| p.id),
            Some(f2.program_id())
        );
        assert_eq!(
            f2.flow(&conn).unwrap(),
            Some(FlowValue::exact(3)),
            "the maps survive f1"
        );

        drop(f2);
        assert_eq!(
            attached_program(ifindex, &name).unwrap(),
            None,
            "detached with the last link"
        );
    });
    let details = topo.link_details();
    assert!(
        !details.contains("prog/xdp"),
        "XDP still attached after the last Filter dropped:\n{details}"
    );
}

#[test]
fn multiqueue_veth_attaches_natively() {
    let _serial = serial();
    let topo = Topo::new("q", 2, Some(4));
    let name = topo.if_a.clone();
    topo.in_a(|ifindex| {
        let f = open(ifindex, &name, XdpMode::Auto);
        assert_eq!(f.attached_mode(), AttachedMode::Native);
        f.set_flow(
            &FlowKey::listening(Proto::Udp, topo.local(9000)),
            FlowValue::set(&[0]).unwrap(),
        )
        .unwrap();
        drop(f);
        assert_eq!(attached_program(ifindex, &name).unwrap(), None);
    });
}

#[test]
fn generic_mode_when_asked() {
    let _serial = serial();
    let topo = Topo::new("g", 3, None);
    let name = topo.if_a.clone();
    topo.in_a(|ifindex| {
        let f = open(ifindex, &name, XdpMode::Generic);
        assert_eq!(f.attached_mode(), AttachedMode::Generic);
        let p = attached_program(ifindex, &name).unwrap().unwrap();
        assert_eq!(p.mode, Some(AttachedMode::Generic));
        drop(f);
        assert_eq!(attached_program(ifindex, &name).unwrap(), None);
    });
}

#[test]
fn foreign_and_unlinked_programs_are_refused_with_the_fix() {
    let _serial = serial();
    let topo = Topo::new("f", 4, None);
    let name = topo.if_a.clone();

    // Our own object attached the legacy way (no bpf_link): it would never be detached.
    let ours = concat!(env!("OUT_DIR"), "/accel_xdp.o");
    run(&[
        "ip",
        "-n",
        &topo.ns_a,
        "link",
        "set",
        "dev",
        &name,
        "xdpgeneric",
        "obj",
        ours,
        "sec",
        "xdp",
    ]);
    topo.in_a(
        |ifindex| match Filter::open(ifindex, &name, XdpMode::Auto) {
            Err(e @ Error::UnlinkedProgram { .. }) => {
                assert!(
                    e.to_string()
                        .contains(&format!("ip link set dev {name} xdp off")),
                    "{e}"
                )
            }
            other => panic!("expected UnlinkedProgram, got {other:?}"),
        },
    );
    run(&[
        "ip",
        "-n",
        &topo.ns_a,
        "link",
        "set",
        "dev",
        &name,
        "xdpgeneric",
        "off",
    ]);

    // Someone else's program.
    let foreign = compile_foreign_program();
    run(&[
        "ip",
        "-n",
        &topo.ns_a,
        "link",
        "set",
        "dev",
        &name,
        "xdpgeneric",
        "obj",
    ]
    .into_iter()
    .chain([foreign.to_str().unwrap(), "sec", "xdp"])
    .collect::<Vec<_>>());
    topo.in_a(
        |ifindex| match Filter::open(ifindex, &name, XdpMode::Auto) {
            Err(e @ Error::ForeignProgram { .. }) => {
                let s = e.to_string();
                assert!(s.contains("name not_accel"), "{s}");
                assert!(
                    s.contains(&format!("`ip link set dev {name} xdp off`")),
                    "{s}"
                );
            }
            other => panic!("expected ForeignProgram, got {other:?}"),
        },
    );
}

#[test]
fn not_ethernet_and_missing_interfaces_are_named() {
    let _serial = serial();
    let topo = Topo::new("l", 5, None);
    topo.in_a(|_| {
        let lo = nix::net::if_::if_nametoindex("lo").unwrap();
        assert!(matches!(
            Filter::open(lo, "lo", XdpMode::Auto),
            Err(Error::NotEthernet { .. })
        ));
        assert!(matches!(
            Filter::open(9999, "nosuch0", XdpMode::Auto),
            Err(Error::NoSuchInterface { .. })
        ));
    });
}

/// A stub of another vendor's XDP program, compiled for the test.
fn compile_foreign_program() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("accel-xdp-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("foreign.c");
    let obj = dir.join("foreign.o");
    std::fs::write(
        &src,
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n\
         SEC(\"xdp\") int not_accel(struct xdp_md *ctx) { return XDP_PASS; }\n\
         char LICENSE[] SEC(\"license\") = \"GPL\";\n",
    )
    .unwrap();
    run(&[
        "clang",
        "-O2",
        "-target",
        "bpf",
        "-I/usr/include/x86_64-linux-gnu",
        "-c",
        src.to_str().unwrap(),
        "-o",
        obj.to_str().unwrap(),
    ]);
    obj
}

// ---------------------------------------------------------------------------------------------
// The program's decisions, run on crafted frames (BPF_PROG_TEST_RUN: no device, no socket, so a
// redirect to a slot with no socket falls back to XDP_PASS; the entries it pins are real).

const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// An Ethernet + IPv4 + TCP (flags) or UDP frame from `src` to `dst` (checksums are not the
/// program's business).
fn frame(tcp: Option<u8>, src: SocketAddrV4, dst: SocketAddrV4) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&[0x08, 0x00]);
    let l4_len = if tcp.is_some() { 20 } else { 8 };
    let total = (20 + l4_len) as u16;
    f.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64]);
    f.push(if tcp.is_some() { 6 } else { 17 });
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    match tcp {
        Some(flags) => {
            f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        }
        None => f.extend_from_slice(&[0, 8, 0, 0]),
    }
    f
}

#[test]
fn a_syn_to_a_listening_set_is_pinned_to_one_of_its_slots() {
    let _serial = serial();
    let topo = Topo::new("p", 7, None);
    let name = topo.if_a.clone();
    topo.in_a(|ifindex| {
        let f = open(ifindex, &name, XdpMode::Auto);
        let local = topo.local(80);
        let listen = FlowKey::listening(Proto::Tcp, local);
        let client = |port: u16| topo.remote(port);
        let exact = |port: u16| FlowKey::connected(Proto::Tcp, local, client(port));

        // No entry: the kernel's, nothing pinned.
        assert_eq!(
            f.run_on(&frame(Some(SYN), client(1000), local)).unwrap(),
            Verdict::Pass
        );
        assert_eq!(f.pin(&exact(1000)).unwrap(), None);
        // A listener nobody accepts on (empty set): SYNs go to the kernel listener, unpinned.
        f.set_flow(&listen, FlowValue::set(&[]).unwrap()).unwrap();
        f.run_on(&frame(Some(SYN), client(1001), local)).unwrap();
        assert_eq!(f.pin(&exact(1001)).unwrap(), None);

        // Two processes accept (slots 2 and 5): each SYN is pinned to one of them.
        f.set_flow(&listen, FlowValue::set(&[2, 5]).unwrap())
            .unwrap();
        let mut pinned = std::collections::BTreeMap::new();
        for port in 2000..2064 {
            f.run_on(&frame(Some(SYN), client(port), local)).unwrap();
            let v = f
                .pin(&exact(port))
                .unwrap()
                .expect("the SYN pinned its connection");
            assert_eq!(v.flags, FLOW_PINNED);
            assert_eq!(v.slots().len(), 1);
            pinned.insert(port, v.slots()[0]);
        }
        let on2 = pinned.values().filter(|&&s| s == 2).count();
        let on5 = pinned.values().filter(|&&s| s == 5).count();
        assert_eq!(on2 + on5, 64, "only the set's slots: {pinned:?}");
        assert!(on2 >= 16 && on5 >= 16, "spread over both: {on2} and {on5}");

        // A third process joins: the pinned connections stay where they are (their SYN
        // retransmitted, or any later segment, follows the pin); new ones may go to it.
        f.set_flow(&listen, FlowValue::set(&[2, 5, 9]).unwrap())
            .unwrap();
        for port in 2000..2064 {
            f.run_on(&frame(Some(SYN), client(port), local)).unwrap();
            f.run_on(&frame(Some(ACK), client(port), local)).unwrap();
            assert_eq!(
                f.pin(&exact(port)).unwrap().unwrap().slots(),
                &[pinned[&port]]
            );
        }
        let mut on9 = 0;
        for port in 3000..3064 {
            f.run_on(&frame(Some(SYN), client(port), local)).unwrap();
            on9 += usize::from(f.pin(&exact(port)).unwrap().unwrap().slots() == [9]);
        }
        assert!(on9 > 0, "the newcomer gets new connections");

        // A segment that is not a SYN and has no entry is the kernel's: nothing pinned.
        f.run_on(&frame(Some(ACK), client(4000), local)).unwrap();
        f.run_on(&frame(Some(SYN | ACK), client(4001), local))
            .unwrap();
        assert_eq!(f.pin(&exact(4000)).unwrap(), None);
        assert_eq!(f.pin(&exact(4001)).unwrap(), None);

        // A connection handed to the kernel (PASS) stays the kernel's, even for a new SYN.
        let mut pass = FlowValue::exact(2);
        pass.flags |= FLOW_PASS;
        f.set_flow(&exact(4002), pass).unwrap();
        f.run_on(&frame(Some(SYN), client(4002), local)).unwrap();
        assert_eq!(f.flow(&exact(4002)).unwrap(), Some(pass));
        assert_eq!(f.pin(&exact(4002)).unwrap(), None, "its entry comes first");

        // A connection moving to the kernel: its packets are dropped meanwhile (a pinned one
        // gets an entry of its own for the time), then it stays (entry gone, the pin leads
        // again) or goes to the kernel (PASS).
        let table = f.table(pinned[&2000]).unwrap();
        table.hold(&exact(2000)).unwrap();
        assert_eq!(
            f.run_on(&frame(Some(ACK), client(2000), local)).unwrap(),
            Verdict::Drop
        );
        table.release(&exact(2000)).unwrap();
        assert_eq!(f.flow(&exact(2000)).unwrap(), None, "the held entry went");
        table.hold(&exact(2000)).unwrap();
        table.pass(&exact(2000)).unwrap();
        assert_eq!(
            f.run_on(&frame(Some(ACK), client(2000), local)).unwrap(),
            Verdict::Pass
        );
        assert!(f.flow(&exact(2000)).unwrap().unwrap().is_pass());
        f.remove_flow(&exact(2000)).unwrap();
        // A connection of the process's own (its exact entry) keeps its entry on release.
        let own = FlowKey::connected(Proto::Tcp, topo.local(81), client(1));
        table.add_exact(&own).unwrap();
        table.hold(&own).unwrap();
        assert_eq!(
            f.run_on(&frame(Some(ACK), client(1), topo.local(81)))
                .unwrap(),
            Verdict::Drop
        );
        table.release(&own).unwrap();
        assert_eq!(f.flow(&own).unwrap(), Some(FlowValue::exact(pinned[&2000])));
        f.remove_flow(&own).unwrap();

        // A client removes its closed connections' pins in one batch, skipping missing ones.
        let table = f.table(2).unwrap();
        let mut keys: Vec<FlowKey> = (2000..2064).map(exact).collect();
        keys.insert(10, exact(9999));
        assert_eq!(table.remove_pinned(&keys).unwrap(), 64);
        assert!(f
            .pins()
            .unwrap()
            .iter()
            .all(|(k, _)| k.remote.unwrap().port() >= 3000));

        // UDP to a shared port spreads by source too, without pinning anything.
        let udp = FlowKey::listening(Proto::Udp, topo.local(53));
        f.set_flow(&udp, FlowValue::set(&[1, 3]).unwrap()).unwrap();
        f.run_on(&frame(None, client(5000), topo.local(53)))
            .unwrap();
        assert_eq!(
            f.flow(&FlowKey::connected(
                Proto::Udp,
                topo.local(53),
                client(5000)
            ))
            .unwrap(),
            None
        );
        drop(f);
        assert_eq!(attached_program(ifindex, &name).unwrap(), None);
    });
}

// ---------------------------------------------------------------------------------------------
// Other processes: this test binary re-run as a helper that opens a Filter, says READY and
// waits to be killed.

const HELPER_NS: &str = "ACCEL_XDP_TEST_HELPER_NS";
const HELPER_IF: &str = "ACCEL_XDP_TEST_HELPER_IF";

/// Only does something when run as the helper (see `Helper::spawn`).
#[test]
fn helper_process() {
    let _serial = serial();
    let (Ok(ns), Ok(ifname)) = (std::env::var(HELPER_NS), std::env::var(HELPER_IF)) else {
        return;
    };
    enter_netns(&ns);
    let ifindex = nix::net::if_::if_nametoindex(ifname.as_str()).unwrap();
    let f = open(ifindex, &ifname, XdpMode::Auto);
    println!("READY {}", f.program_id());
    // Block until killed (or until the parent goes away and closes our stdin).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

struct Helper(Child);

impl Helper {
    /// Starts the helper in `topo`'s namespace A and waits for it to be ready.
    #[track_caller]
    fn spawn(topo: &Topo) -> (Helper, u32) {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER_NS, &topo.ns_a)
            .env(HELPER_IF, &topo.if_a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let stdout = child.stdout.take().unwrap();
        let helper = Helper(child);
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("helper output");
            // libtest prints "test helper_process ... " without a newline before it.
            if let Some((_, id)) = line.split_once("READY ") {
                return (helper, id.trim().parse().unwrap());
            }
        }
        panic!("helper exited before it was ready");
    }

    /// SIGKILL (no cleanup at all) and reap.
    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_killed_process_holding_the_program_leaves_the_interface_as_it_was() {
    let _serial = serial();
    let topo = Topo::new("s", 6, None);
    let name = topo.if_a.clone();
    topo.in_a(|ifindex| {
        // Joined by another process: it stays while we hold it, goes with the last holder.
        let f = open(ifindex, &name, XdpMode::Auto);
        let (helper, prog_id) = Helper::spawn(&topo);
        assert_eq!(
            prog_id,
            f.program_id(),
            "the other process joined our program"
        );
        helper.kill();
        assert_eq!(
            attached_program(ifindex, &name).unwrap().map(|p| p.id),
            Some(prog_id)
        );
        drop(f);
        assert_eq!(attached_program(ifindex, &name).unwrap(), None);

        // A process that attached alone and is SIGKILLed leaves the interface as it was.
        let (helper, prog_id) = Helper::spawn(&topo);
        assert_eq!(
            attached_program(ifindex, &name).unwrap().map(|p| p.id),
            Some(prog_id)
        );
        helper.kill();
        assert_eq!(
            attached_program(ifindex, &name).unwrap(),
            None,
            "killed last user's link detached"
        );
    });
    assert!(!topo.link_details().contains("prog/xdp"));
}
