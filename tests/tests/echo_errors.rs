//! accel-echo's answers to bad input: one clear line naming cause and fix, a non-zero exit, and
//! nothing left on the interface. Runs as root; setup failures fail the test.

use std::net::TcpListener;
use std::time::Duration;

use accel_tests::{tool, xdp_attached, Proc, Topology};
use accel_tools::topology::ip;

const T: Duration = Duration::from_secs(30);

#[track_caller]
fn topo() -> Topology {
    Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"))
}

/// Runs accel-echo in A with `args` (optionally behind a wrapper such as setpriv), expects
/// failure, and returns its stderr.
#[track_caller]
fn run_failing(t: &Topology, wrapper: &[&str], args: &[&str]) -> String {
    let echo = tool("accel-echo");
    let mut cmd = t.command_a(wrapper.first().copied().unwrap_or(echo.to_str().unwrap()));
    if !wrapper.is_empty() {
        cmd.args(&wrapper[1..]).arg(&echo);
    }
    cmd.args(args);
    let mut p = Proc::spawn(cmd);
    let (status, out, err) = p.wait(T);
    assert!(!status.success(), "accel-echo {args:?} succeeded: {out:?}");
    assert!(!err.contains("panicked"), "accel-echo panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    err
}

#[test]
fn missing_interface_is_named_with_the_fix() {
    let t = topo();
    let err = run_failing(&t, &[], &["--interface", "nope0", "--port", "7007"]);
    assert!(
        err.contains("nope0") && err.contains("does not exist"),
        "{err}"
    );
    assert!(err.contains("ip link"), "no fix in: {err}");
}

#[test]
fn missing_privileges_are_named_with_the_fix() {
    let t = topo();
    let err = run_failing(
        &t,
        &["setpriv", "--bounding-set=-all", "--inh-caps=-all"],
        &["--interface", &t.if_a, "--port", "7007"],
    );
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("CAP_BPF"),
        "{err}"
    );
    assert!(err.contains("root"), "no fix in: {err}");
    assert!(!xdp_attached(&t.ns_a, &t.if_a), "XDP program left behind");
}

#[test]
fn interface_without_xdp_is_refused() {
    let t = topo();
    // A tun device carries bare IP packets: no Ethernet, nothing an XDP flow filter can steer.
    ip(&[
        "-n", &t.ns_a, "tuntap", "add", "mode", "tun", "name", "tun-x",
    ])
    .expect("tun");
    ip(&[
        "-n",
        &t.ns_a,
        "addr",
        "add",
        "198.18.1.1/24",
        "dev",
        "tun-x",
    ])
    .expect("addr");
    ip(&["-n", &t.ns_a, "link", "set", "tun-x", "up"]).expect("up");
    let err = run_failing(&t, &[], &["--interface", "tun-x", "--port", "7007"]);
    assert!(err.contains("tun-x") && err.contains("Ethernet"), "{err}");
    assert!(!xdp_attached(&t.ns_a, "tun-x"), "XDP program left behind");
}

#[test]
fn interface_without_native_xdp_is_refused_in_native_mode() {
    let t = topo();
    // A bridge is an Ethernet device whose driver has no native XDP.
    ip(&["-n", &t.ns_a, "link", "add", "br-x", "type", "bridge"]).expect("bridge");
    ip(&["-n", &t.ns_a, "addr", "add", "198.18.2.1/24", "dev", "br-x"]).expect("addr");
    ip(&["-n", &t.ns_a, "link", "set", "br-x", "up"]).expect("up");
    let err = run_failing(
        &t,
        &[],
        &[
            "--interface",
            "br-x",
            "--port",
            "7007",
            "--xdp-mode",
            "native",
        ],
    );
    assert!(err.contains("br-x") && err.contains("native XDP"), "{err}");
    assert!(err.contains("generic"), "no fix in: {err}");
    assert!(!xdp_attached(&t.ns_a, "br-x"), "XDP program left behind");
}

#[test]
fn port_in_use_is_named_with_the_fix() {
    let t = topo();
    let listener = t
        .in_a(|| TcpListener::bind("0.0.0.0:7007"))
        .unwrap()
        .expect("kernel listener");
    let err = run_failing(&t, &[], &["--interface", &t.if_a, "--port", "7007"]);
    assert!(
        err.contains("7007") && err.contains("already in use"),
        "{err}"
    );
    assert!(err.contains("--port"), "no fix in: {err}");
    assert!(!xdp_attached(&t.ns_a, &t.if_a), "XDP program left behind");
    drop(listener);
}

#[test]
fn missing_queue_is_named_with_the_fix() {
    let t = topo();
    let err = run_failing(
        &t,
        &[],
        &["--interface", &t.if_a, "--port", "7007", "--queue", "9"],
    );
    assert!(err.contains("queue 9"), "{err}");
    assert!(!xdp_attached(&t.ns_a, &t.if_a), "XDP program left behind");
}
