//! Misuse from C (issue 3): tests/c/misuse.c makes bad calls on sockets (bad fd, bad address
//! length, NULL buffers, connect to a closed port, write after the peer reset, calls before
//! and after connect, ...) and prints what each returned. Under accel-run every line must be
//! the same as on the kernel, and the program must not crash.
//!
//! Runs as root; setup failures fail the test. Contracts: see `accel_tests::apps`.

use std::time::Duration;

use accel_tests::apps::{
    accelerated, assert_accelerated, compile_c, kernel, run_app, snmp_a, Behaviour, Finished,
    KernelServer, Side, TempDir,
};
use accel_tests::Topology;

const ECHO_PORT: u16 = 7070;
const RESET_PORT: u16 = 7071;
const CLOSED_PORT: u16 = 7072;
const LOCAL_PORT: u16 = 7073;

/// What Linux answers, case by case (`ret errno`). Checked on the kernel run so the program is
/// known to test what its case names say; the accelerated run must then print the same lines.
const KERNEL: &[(&str, &str)] = &[
    ("send_fd_minus_1", "-1 EBADF"),
    ("recv_fd_minus_1", "-1 EBADF"),
    ("close_fd_minus_1", "-1 EBADF"),
    ("close_connected", "0 0"),
    ("send_closed_fd", "-1 EBADF"),
    ("recv_closed_fd", "-1 EBADF"),
    ("connect_closed_fd", "-1 EBADF"),
    ("close_closed_fd", "-1 EBADF"),
    ("send_on_pipe", "-1 ENOTSOCK"),
    ("recv_on_pipe", "-1 ENOTSOCK"),
    ("connect_on_pipe", "-1 ENOTSOCK"),
    ("bind_short_addrlen", "-1 EINVAL"),
    ("bind_huge_addrlen", "-1 EINVAL"),
    ("connect_short_addrlen", "-1 EINVAL"),
    ("connect_zero_addrlen", "-1 EINVAL"),
    ("bind_wrong_family", "-1 EAFNOSUPPORT"),
    ("connect_null_addr", "-1 EFAULT"),
    ("udp_bind_short_addrlen", "-1 EINVAL"),
    ("udp_connect_short_addrlen", "-1 EINVAL"),
    ("udp_send_unconnected", "-1 EDESTADDRREQ"),
    ("udp_sendto_null_buffer", "-1 EFAULT"),
    ("udp_recv_nonblocking_empty", "-1 EAGAIN"),
    ("bind_local", "0 0"),
    ("listen_local", "0 0"),
    ("bind_in_use", "-1 EADDRINUSE"),
    ("accept_on_unlistening", "-1 EINVAL"),
    ("accept_nonblocking_empty", "-1 EAGAIN"),
    // Linux answers EPIPE (not ENOTCONN) to a send on a TCP socket that never connected.
    ("send_before_connect_nosignal", "-1 EPIPE"),
    ("write_before_connect", "-1 EPIPE"),
    ("recv_before_connect", "-1 ENOTCONN"),
    ("getpeername_before_connect", "-1 ENOTCONN"),
    ("shutdown_before_connect", "-1 ENOTCONN"),
    ("send_null_buffer", "-1 EFAULT"),
    ("send_ping", "4 0"),
    ("recv_null_buffer", "-1 EFAULT"),
    ("recv_after_efault", "4 0"),
    ("recv_nonblocking_empty", "-1 EAGAIN"),
    ("second_connect", "-1 EISCONN"),
    ("connect_other_addr", "-1 EISCONN"),
    ("setsockopt_short_optlen", "-1 EINVAL"),
    ("getsockopt_unknown", "-1 ENOPROTOOPT"),
    ("getsockopt_null_optlen", "-1 EFAULT"),
    ("shutdown_bad_how", "-1 EINVAL"),
    ("shutdown_wr", "0 0"),
    ("send_after_shutdown_wr_nosignal", "-1 EPIPE"),
    ("write_after_shutdown_wr", "-1 EPIPE"),
    ("recv_eof", "0 0"),
    ("nonblocking_connect", "-1 EINPROGRESS"),
    ("nonblocking_connect_so_error", "0 0"),
    ("nonblocking_connect_so_error_value", "0 0"),
    // Linux reports the completed connection to the next connect() (0), then EISCONN.
    ("nonblocking_connect_again", "0 0"),
    ("nonblocking_connect_third", "-1 EISCONN"),
    ("connect_refused", "-1 ECONNREFUSED"),
    ("send_after_refused_nosignal", "-1 EPIPE"),
    ("nonblocking_connect_refused", "-1 EINPROGRESS"),
    ("refused_so_error", "0 0"),
    ("refused_so_error_value", "111 ECONNREFUSED"),
    ("reset_recv", "-1 ECONNRESET"),
    ("reset_send_nosignal", "-1 EPIPE"),
    ("reset_write_sigpipe", "-1 EPIPE"),
    ("reset_recv_again", "0 0"),
    ("reset_first_send_nosignal", "-1 ECONNRESET"),
    ("reset_second_send_nosignal", "-1 EPIPE"),
    ("reset_sendto_sigpipe", "-1 EPIPE"),
];

/// SIGPIPE count expected after each case that can raise one (writes without MSG_NOSIGNAL).
const SIGPIPES_AFTER: &[(&str, u32)] = &[
    ("send_before_connect_nosignal", 0),
    ("write_before_connect", 1),
    ("send_after_shutdown_wr_nosignal", 1),
    ("write_after_shutdown_wr", 2),
    ("reset_send_nosignal", 2),
    ("reset_write_sigpipe", 3),
    ("reset_second_send_nosignal", 3),
    ("reset_sendto_sigpipe", 4),
];

/// `case=NAME ret=R errno=E sigpipes=N` -> (NAME, "R E", N).
fn parse_case(line: &str) -> Option<(String, String, u32)> {
    let mut name = None;
    let (mut ret, mut errno, mut pipes) = (None, None, None);
    for word in line.split_whitespace() {
        match word.split_once('=')? {
            ("case", v) => name = Some(v.to_string()),
            ("ret", v) => ret = Some(v.to_string()),
            ("errno", v) => errno = Some(v.to_string()),
            ("sigpipes", v) => pipes = v.parse().ok(),
            _ => return None,
        }
    }
    Some((name?, format!("{} {}", ret?, errno?), pipes?))
}

#[track_caller]
fn check_complete(run: &str, fin: &Finished) {
    assert!(
        fin.status.success() && fin.stdout.lines().last() == Some("done"),
        "misuse ({run}) crashed or stopped early: {}",
        fin.describe()
    );
    for line in fin.stdout.lines().filter(|l| *l != "done") {
        assert!(
            parse_case(line).is_some(),
            "misuse ({run}): unexpected line {line:?}"
        );
    }
}

#[test]
fn misuse_fails_exactly_as_on_the_kernel() {
    let t = Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    let dir = TempDir::new("misuse");
    let exe = compile_c("misuse", dir.path());
    let _echo = KernelServer::start(&t, ECHO_PORT, Behaviour::Echo);
    let _reset = KernelServer::start(&t, RESET_PORT, Behaviour::Reset);
    let (b, a) = (t.addr_b.to_string(), t.addr_a.to_string());
    let ports = [ECHO_PORT, RESET_PORT, CLOSED_PORT, LOCAL_PORT].map(|p| p.to_string());
    let args = [&b, &ports[0], &ports[1], &ports[2], &a, &ports[3]].map(String::as_str);
    let limit = Duration::from_secs(30);

    // Under accel-run first, so what the kernel run leaves behind (closing handshakes) cannot
    // land in the accelerated run's counters.
    let before = snmp_a(&t);
    let acc = run_app(
        "misuse (under accel-run)",
        accelerated(&t, Side::A, None, &exe, &args),
        limit,
    );
    let d = snmp_a(&t).since(&before);
    let ker = run_app("misuse (kernel)", kernel(&t, Side::A, &exe, &args), limit);

    // The kernel run is what we believe Linux does.
    check_complete("kernel", &ker);
    let got: Vec<(String, String, u32)> = ker.stdout.lines().filter_map(parse_case).collect();
    let names: Vec<&str> = got.iter().map(|(n, _, _)| n.as_str()).collect();
    let want: Vec<&str> = KERNEL.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, want, "cases the program ran");
    for ((name, result, pipes), (_, expected)) in got.iter().zip(KERNEL) {
        assert_eq!(result, expected, "kernel answer to {name}");
        if let Some((_, n)) = SIGPIPES_AFTER.iter().find(|(c, _)| c == name) {
            assert_eq!(pipes, n, "SIGPIPEs after {name}");
        }
    }

    // Under accel-run: no crash, every line the same.
    check_complete("accel-run", &acc);
    let diff: Vec<String> = ker
        .stdout
        .lines()
        .zip(acc.stdout.lines())
        .filter(|(k, a)| k != a)
        .map(|(k, a)| format!("  kernel: {k}\n  accel:  {a}"))
        .collect();
    assert!(
        diff.is_empty() && ker.stdout.lines().count() == acc.stdout.lines().count(),
        "misuse answers differ under accel-run:\n{}\n{}",
        diff.join("\n"),
        acc.describe()
    );
    assert_accelerated("misuse", &t.if_a, &acc, &d, &["tcp_connected"]);
}
