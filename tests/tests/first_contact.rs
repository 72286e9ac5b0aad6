//! First contact (issue 10): accel on a veth as Docker leaves it (the peer's TX checksum
//! offload on, the default queue count), inside a container built with unshare, and the one
//! line accel prints when it can tell at start that an interface cannot be accelerated (its
//! sockets then use the kernel, and the program still works).
//!
//! Runs as root (CI is root); a missing program or a setup failure fails the test, it never
//! skips.

use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use accel_tests::apps::{
    accel_stats_for, accelerated, assert_accelerated, assert_same_file, compile_c, kernel, need,
    nginx_conf, run_app, snmp_a, write_pattern_file, App, Finished, Side, TempDir,
};
use accel_tests::{
    peer, release_tool, start_echo, tool, wait_helper_gone, xdp_attached, Snmp, Topology,
};
use accel_tools::stats;
use accel_tools::topology::Options;
use nix::sys::signal::Signal;

/// Time for a program to come up, or to exit after being told to.
const START: Duration = Duration::from_secs(20);
const STOP: Duration = Duration::from_secs(15);

/// A veth as `ip link add type veth`, Docker and most CNIs leave it: the peer's offloads on,
/// no queue count given.
#[track_caller]
fn docker_veth() -> Topology {
    Topology::with(Options::default())
        .unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"))
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

/// nginx's arguments for a server of `dir` configured by `nginx_conf`.
fn nginx_args(dir: &TempDir, listen: SocketAddrV4) -> Vec<String> {
    let conf = nginx_conf(dir.path(), listen);
    vec![
        s("-p"),
        dir.path().display().to_string(),
        s("-c"),
        conf.display().to_string(),
        s("-e"),
        dir.join("error.log").display().to_string(),
    ]
}

/// `count` curls from B fetch `url` into `dir`, one connection each; every copy must equal
/// `want`.
#[track_caller]
fn curls_from_b(t: &Topology, url: &str, count: u32, dir: &TempDir, want: &Path) {
    let curl = need("curl", "curl");
    let script = format!(
        "for i in $(seq {count}); do {} -sS --fail --max-time 10 -o {}/got-$i {url} || exit 1; done",
        curl.display(),
        dir.path().display()
    );
    run_app(
        "curl in B",
        kernel(t, Side::B, Path::new("/bin/sh"), &["-c", &script]),
        Duration::from_secs(60),
    )
    .success();
    for i in 1..=count {
        assert_same_file(
            &format!("copy {i} of {url}"),
            want,
            &dir.join(&format!("got-{i}")),
        );
    }
}

/// 200 datagrams of 512 bytes from B to `server`, one in flight at a time, each echoed byte
/// for byte.
#[track_caller]
fn udp_echo_from_b(t: &Topology, server: SocketAddrV4) {
    let r = t
        .in_b(move || peer::udp_echo(server, 200, 512, 1, Duration::from_secs(5)))
        .expect("namespace B")
        .unwrap_or_else(|e| panic!("UDP echo from B: {e:#}"));
    assert_eq!(
        (r.received, r.corrupted, r.duplicated),
        (200, 0, 0),
        "UDP echo from B: {r:?}"
    );
}

/// The lines accel printed itself on the program's stderr (its `accel-stats:` lines aside).
fn accel_lines(fin: &Finished) -> Vec<&str> {
    fin.stderr
        .lines()
        .filter(|l| l.starts_with("accel:"))
        .collect()
}

/// Exactly one line from accel, naming the interface and containing every one of `parts`.
#[track_caller]
fn assert_one_line(fin: &Finished, ifname: &str, parts: &[&str]) {
    let lines = accel_lines(fin);
    assert_eq!(lines.len(), 1, "one line from accel: {}", fin.describe());
    let line = lines[0];
    assert!(
        line.starts_with(&format!(
            "accel: not accelerating {ifname}, its sockets use the kernel: "
        )),
        "{line}"
    );
    for p in parts {
        assert!(line.contains(p), "{line:?} lacks {p:?}");
    }
}

/// The kernel in A carried the 200 datagrams (and their echoes).
#[track_caller]
fn assert_kernel_carried_udp(d: &Snmp) {
    assert!(
        d.udp_in_datagrams >= 200 && d.udp_out_datagrams >= 200,
        "the kernel in A did not carry the echo: {d:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Accelerated on a veth as Docker leaves it
// ---------------------------------------------------------------------------------------------

/// nginx under accel-run in A serves a 64 KiB file to 50 curls from B, whose checksums are
/// partial (offload on): every copy byte-exact, A's kernel carried none of it.
#[test]
fn nginx_serves_a_64k_file_to_50_curls_from_a_peer_that_offloads_checksums() {
    let t = docker_veth();
    let dir = TempDir::new("nginx64k");
    let file = dir.join("64k.bin");
    write_pattern_file(&file, 64 * 1024, 64);
    let listen = SocketAddrV4::new(t.addr_a, 7050);
    let args = nginx_args(&dir, listen);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let nginx = need("nginx", "nginx-light");
    let mut server = App::start(
        "nginx (under accel-run)",
        accelerated(&t, Side::A, None, &nginx, &args),
    );
    server.wait_tcp_ready(&t, listen, START);
    let before = snmp_a(&t);
    let got = TempDir::new("nginx64k-got");
    curls_from_b(&t, &format!("http://{listen}/64k.bin"), 50, &got, &file);
    let d = snmp_a(&t).since(&before);
    let fin = server.stop(Signal::SIGTERM, STOP).success();
    assert_accelerated(
        "nginx",
        &t.if_a,
        &fin,
        &d,
        &["tcp_accepted", "rx_partial_checksum"],
    );
    let c = accel_stats_for("nginx", &t.if_a, &fin);
    assert_eq!(c.get("rx_drop_bad_checksum"), 0, "{:?}", c.counters);
    assert!(c.get("tcp_accepted") >= 50, "{:?}", c.counters);
    assert!(accel_lines(&fin).is_empty(), "{}", fin.describe());
}

/// A UDP echo server under accel-run in A answers 200 datagrams from B byte for byte.
#[test]
fn a_udp_echo_answers_200_datagrams_from_a_peer_that_offloads_checksums() {
    let t = docker_veth();
    let dir = TempDir::new("udp-echo");
    let exe = compile_c("udp_echo", dir.path());
    let port = 7051;
    let mut app = App::start(
        "udp_echo (under accel-run)",
        accelerated(&t, Side::A, None, &exe, &[&s(t.addr_a), &s(port), "200"]),
    );
    app.wait_for("udp_echo: ready", START);
    let before = snmp_a(&t);
    udp_echo_from_b(&t, SocketAddrV4::new(t.addr_a, port));
    let fin = app.finish(STOP).success();
    let d = snmp_a(&t).since(&before);
    assert_accelerated(
        "udp_echo",
        &t.if_a,
        &fin,
        &d,
        &[
            "udp_rx_datagrams",
            "udp_tx_datagrams",
            "rx_partial_checksum",
        ],
    );
    let c = accel_stats_for("udp_echo", &t.if_a, &fin);
    assert_eq!(c.get("rx_drop_bad_checksum"), 0, "{:?}", c.counters);
    assert!(c.get("udp_rx_datagrams") >= 200, "{:?}", c.counters);
}

// ---------------------------------------------------------------------------------------------
// In a container
// ---------------------------------------------------------------------------------------------

/// What a container made with unshare runs before the program: its own /run (a tmpfs, not the
/// host's) and a sysfs of its network namespace, on which /sys/fs/bpf is a plain directory (no
/// bpffs), as Docker sets one up.
const CONTAINER_INIT: &str =
    "mount -t tmpfs -o mode=0755 tmpfs /run && mount -t sysfs sysfs /sys && exec \"$@\"";

/// `ARGV` as a container in namespace A would run it: network namespace A (entered with
/// nsenter: `unshare --net=FILE` would make a new one and bind it over FILE), its own mount and
/// PID namespaces (the program is pid 1, /proc is the container's), /run and /sys as
/// [`CONTAINER_INIT`] makes them, and only the capabilities `caps` (setpriv's syntax, e.g.
/// `+net_admin,+net_raw`), with at most `memlock` bytes of locked memory when given.
fn container(t: &Topology, caps: &str, memlock: Option<u64>, argv: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", t.ns_a)).args([
        "--",
        "unshare",
        "--mount",
        "--pid",
        "--fork",
        "--mount-proc",
        "--kill-child",
        "--",
        "sh",
        "-c",
        CONTAINER_INIT,
        "container",
    ]);
    if let Some(bytes) = memlock {
        c.args(["prlimit", &format!("--memlock={bytes}:{bytes}"), "--"]);
    }
    c.args([
        "setpriv",
        &format!("--bounding-set=-all,{caps}"),
        "--inh-caps=-all",
        "--",
    ])
    .args(argv);
    c
}

/// Docker's default capabilities (CAP_NET_RAW among them): what a container has unless told
/// otherwise.
const DOCKER_CAPS: &str = "+chown,+dac_override,+fowner,+fsetid,+kill,+setgid,+setuid,\
                           +setpcap,+net_bind_service,+net_raw,+sys_chroot,+mknod,\
                           +audit_write,+setfcap";

/// What the README's Docker recipe adds for accel: CAP_NET_ADMIN, CAP_BPF and CAP_IPC_LOCK
/// (for the pinned AF_XDP frames). No CAP_SYS_ADMIN, no CAP_PERFMON.
const RECIPE_CAPS: &str = "+net_admin,+bpf,+ipc_lock";

/// The host pid of the container's pid 1: the child `unshare --fork` made (nsenter, which we
/// started, execs unshare: same pid).
#[track_caller]
fn container_init(unshare: &App) -> i32 {
    let pid = unshare.pid();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_else(|e| panic!("children of unshare ({pid}): {e}"));
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unshare ({pid}) has no child: {children:?}"))
}

/// `accel-stat --json` run inside the container whose pid 1 is `init` (host pid).
#[track_caller]
fn accel_stat_in(init: i32) -> Vec<stats::Snapshot> {
    let mut cmd = Command::new("nsenter");
    cmd.args(["--target", &s(init), "--mount", "--pid", "--net", "--"])
        .arg(tool("accel-stat"))
        .arg("--json")
        .env_remove(stats::DIR_ENV);
    let out = cmd.output().expect("nsenter (util-linux)");
    assert!(
        out.status.success(),
        "accel-stat in the container: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stats::parse_list(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|e| panic!("accel-stat --json in the container: {e}"))
}

/// accel-run serves nginx in a container made with unshare (network, mount and PID
/// namespaces, its own /run, no bpffs, the recipe's capabilities only), and accel-stat in the
/// container lists it: pid 1, its listening socket on the veth.
#[test]
fn accel_run_in_a_container_serves_nginx_and_accel_stat_there_lists_it() {
    // Snapshots in the host's directory from before (a process that died without removing
    // its own, whose pid number the container's init now has) are not the container's.
    let started = std::time::SystemTime::now();
    let t = docker_veth();
    let dir = TempDir::new("container");
    let file = dir.join("64k.bin");
    write_pattern_file(&file, 64 * 1024, 7);
    let listen = SocketAddrV4::new(t.addr_a, 7052);
    let run = release_tool("accel-run");
    let nginx = need("nginx", "nginx-light");
    let mut argv = vec![
        s("env"),
        s("ACCEL_STATS=1"),
        run.display().to_string(),
        s("--interface"),
        t.if_a.clone(),
        s("--"),
        nginx.display().to_string(),
    ];
    argv.extend(nginx_args(&dir, listen));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut server = App::start(
        "nginx (under accel-run, in a container)",
        container(&t, &format!("{DOCKER_CAPS},{RECIPE_CAPS}"), None, &argv),
    );
    server.wait_tcp_ready(&t, listen, START);
    let init = container_init(&server);
    // Only the recipe's capabilities: no CAP_SYS_ADMIN (21), no CAP_PERFMON (38).
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).expect("status");
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapEff");
    for (bit, name, want) in [
        (12, "CAP_NET_ADMIN", true),
        (13, "CAP_NET_RAW", true),
        (39, "CAP_BPF", true),
        (21, "CAP_SYS_ADMIN", false),
        (38, "CAP_PERFMON", false),
    ] {
        assert_eq!(eff & (1 << bit) != 0, want, "{name} in {eff:#x}");
    }

    let before = snmp_a(&t);
    let got = TempDir::new("container-got");
    curls_from_b(&t, &format!("http://{listen}/64k.bin"), 10, &got, &file);
    let d = snmp_a(&t).since(&before);

    // accel-stat in the container sees nginx as the container sees it.
    let snaps = accel_stat_in(init);
    let [snap] = snaps.as_slice() else {
        panic!("one process under accel in the container: {snaps:?}");
    };
    assert_eq!((snap.pid, snap.program.as_str()), (1, "nginx"), "{snap:?}");
    let stack = snap
        .stacks
        .iter()
        .find(|st| st.interface == t.if_a)
        .unwrap_or_else(|| panic!("no stack on {}: {snap:?}", t.if_a));
    assert!(
        stack
            .sockets
            .iter()
            .any(|so| so.proto == "tcp" && so.state == "LISTEN" && so.local == s(listen)),
        "no listening socket on {listen}: {stack:?}"
    );
    // The snapshot lives in the container's /run, not in the host's.
    let host_dir = stats::dir();
    let written_since_start = |pid: u32| {
        std::fs::metadata(stats::path_for(&host_dir, pid))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started)
    };
    assert!(
        !written_since_start(init as u32) && !written_since_start(1),
        "the container's snapshot is in the host's {}",
        host_dir.display()
    );
    // The container has no bpffs.
    let mounts = Command::new("nsenter")
        .args([
            "--target",
            &s(init),
            "--mount",
            "--",
            "cat",
            "/proc/self/mounts",
        ])
        .output()
        .expect("nsenter");
    let mounts = String::from_utf8_lossy(&mounts.stdout);
    assert!(
        !mounts.lines().any(|l| l.contains(" bpf ")),
        "bpffs is mounted in the container:\n{mounts}"
    );

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(init), Signal::SIGTERM)
        .expect("signal nginx");
    let fin = server.finish(STOP).success();
    assert_accelerated("nginx in a container", &t.if_a, &fin, &d, &["tcp_accepted"]);
    assert!(accel_lines(&fin).is_empty(), "{}", fin.describe());
    wait_helper_gone(&t.ns_a, STOP);
    assert!(
        !xdp_attached(&t.ns_a, &t.if_a),
        "XDP program left on {} after the container exited",
        t.if_a
    );
}

// ---------------------------------------------------------------------------------------------
// Said at start: one line, the sockets use the kernel
// ---------------------------------------------------------------------------------------------

/// Runs udp_echo under accel-run in A (through `wrap` to put it in a container or not) and
/// echoes 200 datagrams from B; returns how it ended and A's kernel counters meanwhile.
fn udp_echo_through(
    t: &Topology,
    port: u16,
    wrap: impl FnOnce(Vec<String>) -> Command,
) -> (Finished, Snmp) {
    let dir = TempDir::new("udp-echo");
    let exe = compile_c("udp_echo", dir.path());
    let argv = vec![
        s("env"),
        s("ACCEL_STATS=1"),
        release_tool("accel-run").display().to_string(),
        s("--interface"),
        t.if_a.clone(),
        s("--"),
        exe.display().to_string(),
        s(t.addr_a),
        s(port),
        s(200),
    ];
    let mut app = App::start("udp_echo (under accel-run)", wrap(argv));
    app.wait_for("udp_echo: ready", START);
    let before = snmp_a(t);
    udp_echo_from_b(t, SocketAddrV4::new(t.addr_a, port));
    let fin = app.finish(STOP).success();
    (fin, snmp_a(t).since(&before))
}

fn in_a(t: &Topology) -> impl FnOnce(Vec<String>) -> Command + '_ {
    move |argv| {
        let mut c = t.command_a(&argv[0]);
        c.args(&argv[1..]);
        c
    }
}

/// XDP on a veth is refused while the peer's MTU is larger than a page holds: accel names the
/// peer, its MTU and the fix in one line, and the program works on the kernel.
#[test]
fn a_veth_peer_whose_mtu_xdp_refuses_is_named_and_the_program_uses_the_kernel() {
    let t = docker_veth();
    accel_tools::topology::ip(&["-n", &t.ns_b, "link", "set", &t.if_b, "mtu", "9000"])
        .expect("set B's MTU");
    let (fin, d) = udp_echo_through(&t, 7053, in_a(&t));
    assert_one_line(
        &fin,
        &t.if_a,
        &[
            &format!(
                "its veth peer {} (in another network namespace) has MTU 9000",
                t.if_b
            ),
            &format!("`ip link set dev {} mtu 1500`", t.if_b),
        ],
    );
    assert_kernel_carried_udp(&d);
    wait_helper_gone(&t.ns_a, STOP);
    assert!(!xdp_attached(&t.ns_a, &t.if_a), "XDP left on {}", t.if_a);
}

/// Another process (accel-echo) serves the interface's only queue: the program shares it
/// through the helper, both are accelerated, and accel says nothing at start.
#[test]
fn a_program_shares_the_queue_another_process_serves_and_both_are_accelerated() {
    let t = docker_veth();
    let echo_port = 7054;
    let mut echo = start_echo(&t, echo_port, &[]);
    let (fin, d) = udp_echo_through(&t, 7055, in_a(&t));
    assert!(accel_lines(&fin).is_empty(), "{}", fin.describe());
    assert_accelerated("udp_echo beside accel-echo", &t.if_a, &fin, &d, &[]);
    // accel-echo still has its queue and its flows.
    let before = snmp_a(&t);
    udp_echo_from_b(&t, SocketAddrV4::new(t.addr_a, echo_port));
    let d = snmp_a(&t).since(&before);
    assert_eq!(
        d.ip_in_receives, 0,
        "accel-echo's datagrams reached A's kernel: {d:?}"
    );
    let (status, _, err) = echo.stop(Signal::SIGTERM, STOP);
    assert!(status.success(), "accel-echo: {err}");
    wait_helper_gone(&t.ns_a, STOP);
    assert!(!xdp_attached(&t.ns_a, &t.if_a), "XDP left on {}", t.if_a);
}

/// A container without CAP_IPC_LOCK and with 8 MiB of locked memory cannot pin a queue's
/// AF_XDP frames: accel says which limit and both fixes in one line, and the program works on
/// the kernel.
#[test]
fn a_container_short_of_locked_memory_is_told_so_and_the_program_uses_the_kernel() {
    let t = docker_veth();
    let (fin, d) = udp_echo_through(&t, 7056, |argv| {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let caps = format!("{DOCKER_CAPS},+net_admin,+bpf");
        container(&t, &caps, Some(8 << 20), &argv)
    });
    assert_one_line(
        &fin,
        &t.if_a,
        &[
            "locked-memory limit (8192 KiB",
            "--ulimit memlock=-1",
            "CAP_IPC_LOCK",
        ],
    );
    assert_kernel_carried_udp(&d);
}
