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
use accel_tools::stats;
use accel_tools::topology::run;

const ROUNDS: usize = 5;
const BURST: usize = 20;
/// How long the peer waits for a burst. The bound is 10 ms; this leaves room for a machine
/// busy with other work, and is still far shorter than "never" (the program stays blocked
/// until the peer is done).
const DEADLINE: Duration = Duration::from_secs(2);

/// The test topology, a UDP peer in B on `port`, and `program` (from tests/c) compiled, to run
/// under accel-run in A sending bursts of `count` datagrams to the peer.
struct Burst {
    t: Topology,
    peer: UdpSocket,
    exe: std::path::PathBuf,
    port: u16,
    count: usize,
    _dir: TempDir,
}

impl Burst {
    fn new(program: &str, port: u16, count: usize) -> Burst {
        let t =
            Topology::new(1).unwrap_or_else(|e| panic!("cannot build the test topology: {e:#}"));
        let dir = TempDir::new(program);
        let exe = compile_c(program, dir.path());
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
        Burst {
            t,
            peer,
            exe,
            port,
            count,
            _dir: dir,
        }
    }

    /// The program under accel-run in A: LOCAL PEER PORT COUNT.
    fn command(&self) -> std::process::Command {
        let t = &self.t;
        accelerated(
            t,
            Side::A,
            None,
            &self.exe,
            &[
                &t.addr_a.to_string(),
                &t.addr_b.to_string(),
                &self.port.to_string(),
                &self.count.to_string(),
            ],
        )
    }
}

/// Waits until the peer has each of `count` datagrams (numbered by `index`, from the
/// datagram's text), failing if one is missing `DEADLINE` after `since`.
fn receive_all(
    peer: &UdpSocket,
    count: usize,
    since: Instant,
    when: &str,
    index: impl Fn(&str) -> usize,
) {
    let mut seen = vec![false; count];
    let mut buf = [0u8; 128];
    while seen.iter().any(|s| !s) {
        let left = DEADLINE.saturating_sub(since.elapsed());
        assert!(
            !left.is_zero(),
            "{when}: datagrams {:?} of {count} did not reach the peer within {DEADLINE:?}: \
             frames held back for a batched TX kick were never kicked",
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
        seen[index(text.trim_end_matches('\0'))] = true;
    }
}

#[test]
fn a_burst_reaches_the_peer_while_the_program_blocks_in_a_pipe_read() {
    let b = Burst::new("udp_burst_block", 7461, BURST);
    let (t, peer) = (&b.t, &b.peer);
    let (read_end, write_end) = nix::unistd::pipe().expect("pipe");
    let mut to_program = File::from(write_end);
    let mut app = App::start_io(
        "udp_burst_block (under accel-run)",
        b.command(),
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
        receive_all(
            peer,
            BURST,
            sent,
            &format!("round {round}, while the program was blocked in a pipe read"),
            |text| {
                let mut it = text.split(' ');
                let r: usize = it.next().and_then(|v| v.parse().ok()).expect("round");
                let i: usize = it.next().and_then(|v| v.parse().ok()).expect("seq");
                assert_eq!(r, round, "a datagram of another round: {text:?}");
                i
            },
        );
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
    let b = Burst::new("udp_burst_exit", 7462, COUNT);
    let t = &b.t;
    let before = snmp_a(t);
    let started = std::time::SystemTime::now();
    let app = App::start("udp_burst_exit (under accel-run)", b.command());
    let pid = app.pid() as u32;
    let fin = app.finish(Duration::from_secs(20)).success();
    assert!(fin.stdout.contains("burst: sent"), "{}", fin.describe());
    // Its accel-stat snapshot went with it, as at exit (a file of that pid number from before
    // the run would be another, older process's).
    let snapshot = stats::path_for(&stats::dir(), pid);
    assert!(
        !std::fs::metadata(&snapshot)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= started),
        "{} is left after the program's _exit",
        snapshot.display()
    );
    receive_all(
        &b.peer,
        COUNT,
        Instant::now(),
        "after the program's _exit",
        |text| {
            text.parse()
                .unwrap_or_else(|_| panic!("a datagram that is not a sequence number: {text:?}"))
        },
    );
    // Accelerated: none of them went through A's kernel.
    let d = snmp_a(t).since(&before);
    assert_eq!(d.udp_out_datagrams, 0, "A's kernel sent datagrams: {d:?}");
}
