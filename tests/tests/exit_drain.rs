//! A process that closes a connection and exits at once still answers its peer's late FIN:
//! the exit waits (bounded) for FIN-WAIT-2 to end, so the FIN reaches accel's stack, not A's
//! kernel (which would answer it with a reset). Regression test for a reset seen when an
//! iperf3 server exited right after its last test.

use std::time::Duration;

use accel_tests::apps::{
    accelerated, assert_accelerated, kernel, need, run_app, snmp_a, App, Side, TempDir,
};
use accel_tests::Topology;

#[test]
fn an_exiting_server_answers_the_peers_late_fin() {
    let t = Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    let dir = TempDir::new("exit-drain");
    let msg = dir.join("bye.txt");
    std::fs::write(&msg, b"bye\n").unwrap();
    let socat = need("socat", "socat");
    let python = need("python3", "python3");
    let port = 7341;
    let listen = format!("TCP4-LISTEN:{port},bind={}", t.addr_a);
    let mut server = App::start(
        "socat server (under accel-run)",
        accelerated(
            &t,
            Side::A,
            None,
            &socat,
            &[
                "-d",
                "-d",
                "-u",
                &format!("OPEN:{}", msg.display()),
                &listen,
            ],
        ),
    );
    server.wait_for("listening on", Duration::from_secs(20));
    let before = snmp_a(&t);
    // The client reads to EOF, then waits before closing its side: its FIN comes after the
    // server process has closed and is on its way out.
    let client = format!(
        "import socket,time\n\
         s=socket.create_connection(('{}',{port}))\n\
         d=b''\n\
         while True:\n\
         \x20   b=s.recv(100)\n\
         \x20   if not b: break\n\
         \x20   d+=b\n\
         assert d==b'bye\\n', d\n\
         time.sleep(0.3)\n\
         s.close()\n",
        t.addr_a
    );
    run_app(
        "python client in B",
        kernel(&t, Side::B, &python, &["-c", &client]),
        Duration::from_secs(20),
    )
    .success();
    let fin = server.finish(Duration::from_secs(15)).success();
    let d = snmp_a(&t).since(&before);
    assert_accelerated("socat server", &t.if_a, &fin, &d, &["tcp_accepted"]);
}
