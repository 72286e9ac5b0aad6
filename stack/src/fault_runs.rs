//! Seeded fault runs of two stacks in memory (see `testing::Faults`): transfers over a wire that
//! drops, duplicates, reorders and corrupts frames, checked byte for byte, in simulated time
//! (deterministic: a seed gives the same run every time). Each run prints the simulated time
//! it took and what loss recovery did (`cargo test -p accel-stack fault_runs -- --nocapture`).
//!
//! The wire has no bandwidth limit and a round trip of 10-20 us, so the time is what loss
//! recovery costs: how many timeouts, probes and recovery round trips the losses took.

use core::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::time::Duration;

use crate::testing::{pattern, Faults, Pair};

const MIB: usize = 1 << 20;

fn listen(p: &mut Pair) -> crate::SocketId {
    p.b.stack
        .tcp_listen(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 80), 128)
        .unwrap()
}

/// Sends `len` bytes each way at once over one connection opened before the faults start.
/// Returns the simulated time the transfer took.
#[track_caller]
fn bulk(
    p: &mut Pair,
    seed: u64,
    len: usize,
    (drop, duplicate, reorder, corrupt): (f64, f64, f64, f64),
    limit: Duration,
) -> Duration {
    let l = listen(p);
    let conn = p.open(l, 80, 40000, Duration::from_secs(10)).unwrap();
    p.set_faults(seed, drop, duplicate, reorder, corrupt);
    let took = p
        .exchange(conn, &pattern(seed, len), &pattern(!seed, len), limit)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let mib = len as f64 / MIB as f64;
    report(p, &format!("{mib} MiB each way, seed {seed}"), took);
    took
}

fn report(p: &Pair, what: &str, took: Duration) {
    let (fa, fb) = (&p.a.link.faults, &p.b.link.faults);
    eprintln!(
        "{what}: {took} simulated; frames to B: {} seen, {} dropped, {} duplicated, {} \
         reordered, {} corrupted; to A: {}/{}/{}/{}/{}; A {:?}; B {:?}",
        fb.seen,
        fb.dropped,
        fb.duplicated,
        fb.reordered,
        fb.corrupted,
        fa.seen,
        fa.dropped,
        fa.duplicated,
        fa.reordered,
        fa.corrupted,
        p.a.stack.tcp_recovery(),
        p.b.stack.tcp_recovery(),
    );
}

/// Each side retransmitted little more than what the other side's link dropped (which
/// includes its ACKs): only lost segments went again, not everything after them.
#[track_caller]
fn retransmitted_only_what_was_lost(p: &Pair) {
    let (ra, rb) = (p.a.stack.tcp_recovery(), p.b.stack.tcp_recovery());
    let (to_b, to_a) = (p.b.link.faults.dropped, p.a.link.faults.dropped);
    assert!(
        ra.retransmitted <= to_b + to_b / 4 + 10,
        "A retransmitted {} segments, {} of its frames were lost",
        ra.retransmitted,
        to_b
    );
    assert!(
        rb.retransmitted <= to_a + to_a / 4 + 10,
        "B retransmitted {} segments, {} of its frames were lost",
        rb.retransmitted,
        to_a
    );
}

/// Issue 13's first case: Linux needs 1-2 s for 20 MiB one way over the veth at this loss.
#[test]
fn twenty_mib_each_way_at_two_percent_loss_both_ways() {
    let mut p = Pair::new();
    let took = bulk(
        &mut p,
        1,
        20 * MIB,
        (0.02, 0.0, 0.0, 0.0),
        Duration::from_secs(30),
    );
    assert!(took <= Duration::from_millis(500), "{took}");
    let (ra, rb) = (p.a.stack.tcp_recovery(), p.b.stack.tcp_recovery());
    // Repaired by recovery, not by timeouts.
    assert!(ra.recoveries > 100 && rb.recoveries > 100, "{ra:?} {rb:?}");
    assert!(ra.timeouts + rb.timeouts <= 2, "{ra:?} {rb:?}");
    retransmitted_only_what_was_lost(&p);
}

#[test]
fn twenty_mib_each_way_at_five_percent_loss_both_ways() {
    let mut p = Pair::new();
    let took = bulk(
        &mut p,
        2,
        20 * MIB,
        (0.05, 0.0, 0.0, 0.0),
        Duration::from_secs(60),
    );
    assert!(took <= Duration::from_secs(1), "{took}");
    retransmitted_only_what_was_lost(&p);
}

/// 1% each of loss, duplication, reordering and corruption, both ways.
#[test]
fn four_mib_each_way_with_one_percent_of_every_fault() {
    let mut p = Pair::new();
    let took = bulk(
        &mut p,
        3,
        4 * MIB,
        (0.01, 0.01, 0.01, 0.01),
        Duration::from_secs(60),
    );
    assert!(took <= Duration::from_secs(1), "{took}");
    for (host, name) in [(&p.a, "A"), (&p.b, "B")] {
        let f = &host.link.faults;
        assert!(
            f.dropped > 0 && f.duplicated > 0 && f.reordered > 0 && f.corrupted > 0,
            "{name}: {f:?}"
        );
        // Every corrupted frame was caught (by a checksum, or as malformed) and dropped.
        let c = host.stack.counters();
        assert_eq!(
            c.rx_drop_bad_checksum + c.rx_drop_malformed,
            f.corrupted,
            "{name}"
        );
    }
}

/// Issue 13's second case: connect, 10 KB each way, close; one connection after another.
#[test]
fn hundred_short_connections_at_two_percent_loss() {
    let mut p = Pair::new();
    let l = listen(&mut p);
    p.set_faults(4, 0.02, 0.0, 0.0, 0.0);
    let started = p.now;
    for i in 0..100u16 {
        let conn = p
            .open(l, 80, 40000 + i, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        let (up, down) = (pattern(i.into(), 10_000), pattern(!u64::from(i), 10_000));
        p.exchange(conn, &up, &down, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
    }
    let took = p.now - started;
    report(&p, "100 connections, 10 KB each way", took);
    // Once every connection is reaped, the stacks' counters hold what recovery did.
    p.set_faults(5, 0.0, 0.0, 0.0, 0.0);
    p.settle_and_advance(Duration::from_secs(2));
    p.settle_and_advance(Duration::from_secs(0));
    for host in [&p.a, &p.b] {
        let (c, r) = (host.stack.counters(), host.stack.tcp_recovery());
        assert!(c.tcp_retransmits > 0 && c.tcp_timeouts > 0, "{c:?}");
        assert_eq!(
            (
                c.tcp_retransmits,
                c.tcp_timeouts,
                c.tcp_recoveries,
                c.tcp_loss_probes
            ),
            (r.retransmitted, r.timeouts, r.recoveries, r.loss_probes)
        );
    }
    // Lost SYNs and SYN-ACKs cost 1 s each (the initial RTO, as in Linux); other losses
    // cost at most a 200 ms timeout.
    assert!(took <= Duration::from_secs(15), "{took}");
}

#[test]
fn fault_runs_repeat_exactly() {
    let run = || {
        let mut p = Pair::new();
        let took = bulk(
            &mut p,
            5,
            MIB / 2,
            (0.03, 0.01, 0.01, 0.01),
            Duration::from_secs(30),
        );
        (
            took,
            p.a.link.faults.dropped,
            p.b.link.faults.corrupted,
            p.a.stack.tcp_recovery(),
            p.b.stack.tcp_recovery(),
        )
    };
    assert_eq!(run(), run());
}

/// A receiver that stops reading closes its window; the sender probes it (with backoff), and
/// when the window opens again and the update is lost, a probe's answer opens it.
#[test]
fn zero_window_is_probed_and_a_lost_window_update_does_not_stall() {
    let mut p = Pair::new();
    let l = listen(&mut p);
    let (c, s) = p.open(l, 80, 40000, Duration::from_secs(10)).unwrap();
    let data = pattern(11, MIB);
    let mut sent = 0;
    // B reads nothing: its 256 KiB buffer fills, then A's.
    let full = p.run_until(Duration::from_secs(10), |p| {
        while let Ok(n) = p.a.stack.tcp_send(c, &data[sent..]) {
            sent += n;
        }
        // (The window scale rounds the last few bytes of B's window down to zero.)
        p.b.stack.tcp_recv_queue(s) >= Some(p.b.stack.config().tcp_rx_buffer - 8)
            && p.a.stack.tcp_send_queue(c) == Some(p.a.stack.config().tcp_tx_buffer)
    });
    assert!(
        full,
        "sent {sent}, B holds {:?}, A has {:?} unacknowledged",
        p.b.stack.tcp_recv_queue(s),
        p.a.stack.tcp_send_queue(c)
    );
    // 30 s with the window shut: A sends zero-window probes, backing off, and nothing else.
    let held = p.b.stack.tcp_recv_queue(s);
    let before = p.a.stack.counters().tx_frames;
    let until = p.now + Duration::from_secs(30);
    p.run_until(Duration::from_secs(30), |p| p.now >= until);
    let probes = p.a.stack.counters().tx_frames - before;
    assert!((4..=12).contains(&probes), "{probes} probes in 30 s");
    assert_eq!(p.b.stack.tcp_recv_queue(s), held);
    // Right after the next probe, B reads everything, but its window update is lost.
    let probed = p.a.stack.counters().tx_frames;
    assert!(
        p.run_until(Duration::from_secs(61), |p| p.a.stack.counters().tx_frames
            > probed)
    );
    p.settle_and_advance(Duration::from_millis(1));
    p.a.link.faults.drop = 1.0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = p.b.stack.tcp_recv(s, &mut buf) {
        got.extend_from_slice(&buf[..n]);
    }
    p.step();
    p.step();
    assert!(p.a.link.faults.dropped > 0, "B sent its window update");
    p.a.link.faults.drop = 0.0;
    // The next probe draws an ACK with the open window, and the rest flows.
    let started = p.now;
    assert!(p.run_until(Duration::from_secs(120), |p| {
        while sent < data.len() {
            match p.a.stack.tcp_send(c, &data[sent..]) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        while let Ok(n) = p.b.stack.tcp_recv(s, &mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        got.len() == data.len()
    }));
    assert!(got == data, "bytes differ");
    eprintln!(
        "zero window: {probes} probes in 30 s; resumed after a lost window update in {}",
        p.now - started
    );
    // Probes back off to at most the 60 s maximum RTO.
    assert!(
        p.now - started <= Duration::from_secs(61),
        "{}",
        p.now - started
    );
}

/// Keep-alive probes an idle connection through loss, the peer answers, and the connection
/// stays up and usable.
#[test]
fn keepalive_probes_an_idle_connection_through_loss() {
    let mut p = Pair::new();
    let l = listen(&mut p);
    let (c, s) = p.open(l, 80, 40000, Duration::from_secs(10)).unwrap();
    p.a.stack
        .tcp_set_option(
            c,
            crate::TcpOption::KeepAlive(Some(core::time::Duration::from_secs(1))),
        )
        .unwrap();
    p.set_faults(12, 0.2, 0.0, 0.0, 0.0);
    let (a0, b0) = (
        p.a.stack.counters().tx_frames,
        p.b.stack.counters().tx_frames,
    );
    let until = p.now + Duration::from_secs(60);
    p.run_until(Duration::from_secs(60), |p| p.now >= until);
    let (probes, answers) = (
        p.a.stack.counters().tx_frames - a0,
        p.b.stack.counters().tx_frames - b0,
    );
    eprintln!("keep-alive: {probes} probes in 60 s at 20% loss, {answers} answers");
    // About one probe a second, and B answered those that reached it.
    assert!(
        (50..=70).contains(&probes),
        "{probes} keep-alive probes in 60 s"
    );
    assert!(
        answers >= probes / 2,
        "{answers} answers to {probes} probes"
    );
    assert_eq!(p.a.stack.tcp_state(c), Some(crate::TcpState::Established));
    assert_eq!(p.b.stack.tcp_state(s), Some(crate::TcpState::Established));
    p.set_faults(13, 0.0, 0.0, 0.0, 0.0);
    p.exchange((c, s), b"still here", b"yes", Duration::from_secs(5))
        .unwrap();
}

/// Frames numbered 0..n through `f`: the numbers that come out.
fn through(f: &mut Faults, n: u32) -> Vec<u32> {
    let mut wire: std::collections::VecDeque<Vec<u8>> = (0..n)
        .map(|i| {
            let mut frame = vec![0u8; 64];
            frame[..4].copy_from_slice(&i.to_be_bytes());
            frame
        })
        .collect();
    let mut out = Vec::new();
    while let Some(frame) = f.take(|| wire.pop_front()) {
        out.push(u32::from_be_bytes(frame[..4].try_into().unwrap()));
    }
    out
}

#[test]
fn faults_follow_their_rates() {
    let mut f = Faults::random(7, 0.02, 0.01, 0.01, 0.01);
    let out = through(&mut f, 20_000);
    let near = |n: u64, p: f64| (n as f64 - 20_000.0 * p).abs() < 20_000.0 * p * 0.25;
    assert!(near(f.dropped, 0.02), "{f:?}");
    assert!(near(f.duplicated, 0.01), "{f:?}");
    assert!(near(f.reordered, 0.01), "{f:?}");
    assert!(near(f.corrupted, 0.01), "{f:?}");
    assert_eq!(out.len() as u64, f.delivered());

    // Reordering alone: everything arrives, some frames after later ones, not far.
    let mut f = Faults::random(8, 0.0, 0.0, 0.05, 0.0);
    let out = through(&mut f, 1000);
    let mut sorted = out.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert!(out.windows(2).any(|w| w[0] > w[1]));
    assert!(out
        .iter()
        .enumerate()
        .all(|(i, &n)| (i as i64 - n as i64).abs() <= 10));

    // Duplication alone: each copy right after its original.
    let mut f = Faults::random(9, 0.0, 0.05, 0.0, 0.0);
    let out = through(&mut f, 1000);
    assert_eq!(out.len(), 1000 + f.duplicated as usize);
    let twins = out.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(twins as u64, f.duplicated);
}
