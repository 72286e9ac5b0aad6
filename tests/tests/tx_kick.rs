//! TX kicks are batched, with a bound: a program under accel-run that sends a burst of
//! datagrams and then blocks where accel does not see it (a read on a pipe) still gets every
//! datagram to its peer promptly. The burst's first frames leave at once, the rest are held
//! back for one kick; with the program blocked, only the progress thread can kick them (within
//! `APP_RECHECK`, 10 ms, of the program's last call). Without it they would wait for the
//! program's next socket call, which here comes only after the peer has them all or the
//! deadline has passed.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use accel_tests::apps::{accel_stats_for, accelerated, compile_c, snmp_a, App, Side, TempDir};
use accel_tests::Topology;
use accel_tools::topology::run;

const ROUNDS: usize = 5;
const BURST: usize = 20;
/// How long the peer waits for a burst. The bound is 10 ms; this leaves room for a machine
/// busy with other work, and is still far shorter than "never" (the program stays blocked
/// until the peer is done).
const DEADLINE: Duration = Duration::from_secs(2);

#[test]
fn a_burst_reaches_the_peer_while_the_program_blocks_in_a_pipe_read() {
    let t = Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    let dir = TempDir::new("tx-kick");
    let exe = compile_c("udp_burst_block", dir.path());
    let port = 7461;
    // B's neighbour entry in A's kernel first, so no datagram waits for address resolution.
    run(
        "ip",
        &[
            "netns",
            "exec",
            &t.ns_a,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &t.addr_b.to_string(),
        ],
    )
    .unwrap_or_else(|e| panic!("ping from A to B: {e:#}"));
    let addr_b = t.addr_b;
    let peer = t
        .in_b(move || UdpSocket::bind(SocketAddrV4::new(addr_b, port)))
        .expect("namespace B")
        .expect("bind the peer's UDP socket in B");
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let mut to_program = File::from(write_end);
    let mut app = App::start_io(
        "udp_burst_block (under accel-run)",
        accelerated(
            &t,
            Side::A,
            None,
            &exe,
            &[
                &t.addr_a.to_string(),
                &t.addr_b.to_string(),
                &port.to_string(),
                &BURST.to_string(),
            ],
        ),
        Some(File::from(read_end)),
        None,
    );
    app.wait_for("burst: ready", Duration::from_secs(20));
    let mut late = Vec::new();
    for round in 0..ROUNDS {
        writeln!(to_program, "go").expect("write to the program's pipe");
        app.wait_for_next(&format!("burst: sent {round}"), Duration::from_secs(10));
        // The program is blocked in read(2) now, and stays so until the next "go".
        let sent = Instant::now();
        let mut seen = [false; BURST];
        let mut buf = [0u8; 128];
        while seen.iter().any(|s| !s) {
            let left = DEADLINE.saturating_sub(sent.elapsed());
            assert!(
                !left.is_zero(),
                "round {round}: datagrams {:?} of {BURST} did not reach the peer within \
                 {DEADLINE:?} while the program was blocked in a pipe read: frames held back \
                 for a batched TX kick were never kicked",
                seen.iter()
                    .enumerate()
                    .filter(|(_, s)| !**s)
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>()
            );
            peer.set_read_timeout(Some(left)).expect("SO_RCVTIMEO");
            let Ok((n, _)) = peer.recv_from(&mut buf) else {
                continue;
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let mut it = text.trim_end_matches('\0').split(' ');
            let r: usize = it.next().and_then(|v| v.parse().ok()).expect("round");
            let i: usize = it.next().and_then(|v| v.parse().ok()).expect("seq");
            assert_eq!(r, round, "a datagram of another round: {text:?}");
            seen[i] = true;
        }
        late.push(sent.elapsed());
    }
    writeln!(to_program, "exit").expect("write to the program's pipe");
    let fin = app.finish(Duration::from_secs(15)).success();
    let c = accel_stats_for("udp_burst_block", &t.if_a, &fin);
    eprintln!(
        "last datagram after the program blocked: {late:?}; counters: {:?}",
        c.counters
    );
    let frames = c.get("tx_frames");
    assert!(frames >= (ROUNDS * BURST) as u64, "{:?}", c.counters);
    // Batched: fewer kicks than frames, and frames were held back at the end of a burst and
    // kicked while the program was blocked (by the progress thread: nothing else ran).
    assert!(c.get("tx_kick_held") > 0, "{:?}", c.counters);
    assert!(c.get("tx_kicks") < frames, "{:?}", c.counters);
    assert!(
        c.get("tx_kick_held_pushed") > 0,
        "no burst ended with frames held back: {:?}",
        c.counters
    );
}

/// A program that sends a burst and ends with _exit (no atexit handlers run) still gets every
/// datagram to its peer, as with the kernel: the frames held back for a batched kick leave
/// before the process ends. (A burst of 50: 3 frames go at once, 32 in one kick, 15 are held.)
#[test]
fn a_burst_sent_right_before_exit_reaches_the_peer() {
    const COUNT: usize = 50;
    let t = Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
    let dir = TempDir::new("tx-kick-exit");
    let exe = compile_c("udp_burst_exit", dir.path());
    let port = 7462;
    // B's neighbour entry in A's kernel first, so no datagram waits for address resolution.
    run(
        "ip",
        &[
            "netns",
            "exec",
            &t.ns_a,
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            &t.addr_b.to_string(),
        ],
    )
    .unwrap_or_else(|e| panic!("ping from A to B: {e:#}"));
    let addr_b = t.addr_b;
    let peer = t
        .in_b(move || UdpSocket::bind(SocketAddrV4::new(addr_b, port)))
        .expect("namespace B")
        .expect("bind the peer's UDP socket in B");
    let before = snmp_a(&t);
    let fin = App::start(
        "udp_burst_exit (under accel-run)",
        accelerated(
            &t,
            Side::A,
            None,
            &exe,
            &[
                &t.addr_a.to_string(),
                &t.addr_b.to_string(),
                &port.to_string(),
                &COUNT.to_string(),
            ],
        ),
    )
    .finish(Duration::from_secs(20))
    .success();
    assert!(fin.stdout.contains("burst: sent"), "{}", fin.describe());
    let mut seen = [false; COUNT];
    let mut buf = [0u8; 128];
    let end = Instant::now() + DEADLINE;
    while seen.iter().any(|s| !s) {
        let left = end.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "datagrams {:?} of {COUNT} never reached the peer after the program's _exit",
            seen.iter()
                .enumerate()
                .filter(|(_, s)| !**s)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        );
        peer.set_read_timeout(Some(left)).expect("SO_RCVTIMEO");
        let Ok((n, _)) = peer.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let i: usize = text
            .trim_end_matches('\0')
            .parse()
            .unwrap_or_else(|_| panic!("a datagram that is not a sequence number: {text:?}"));
        seen[i] = true;
    }
    // Accelerated: none of them went through A's kernel.
    let d = snmp_a(&t).since(&before);
    assert_eq!(d.udp_out_datagrams, 0, "A's kernel sent datagrams: {d:?}");
}
