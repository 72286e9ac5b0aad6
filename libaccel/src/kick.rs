//! When a queue tells the kernel to transmit what is on its TX ring (a TX kick).
//!
//! A copy-mode AF_XDP socket transmits only inside a system call (`sendto`), which takes at
//! most [`KICK_BATCH`] descriptors; a zero-copy driver needs one only when it says so. A kick
//! per sent frame costs a system call per frame: on the message-rate floor, 429k frames a second
//! with one per frame against 727k with 32. Holding frames back costs latency. The policy, after
//! Onload's on AF_XDP:
//!
//! - **at once while the ring was idle**: fewer than [`IMMEDIATE`] frames kicked since the program
//!   last waited (a ping-pong's one frame, a server's first replies of an event-loop round), or
//!   the last kick is [`IDLE_GAP`] old (a sender that paces itself);
//! - **batched under load**: otherwise, once [`KICK_BATCH`] frames wait;
//! - **all of it** ([`KickPolicy::settle`], a push) whenever the program waits in a call, returns
//!   to its event loop (poll, select, epoll_wait) or makes any other call that is not a send or
//!   receive; and when the progress thread polls for a program that blocks somewhere accel does
//!   not see (a bound of `APP_RECHECK` after the program's last call, see the preload's
//!   runtime).
//!
//! The policy is plain state, no clock and no I/O: the queue feeds it the stack's time.

use stack::{Duration, Instant};

/// Frames kicked at once after the program waited, before batching starts (Onload kicks at once
/// while fewer than three packets are in flight).
pub const IMMEDIATE: u32 = 3;

/// Frames a batching queue lets wait before it kicks: what one copy-mode `sendto` takes.
pub const KICK_BATCH: u32 = 32;

/// A kick this old means the ring went idle: the next frame goes at once. Also the longest a
/// held frame waits while the program keeps calling into accel (plus the time to its next call).
pub const IDLE_GAP: Duration = Duration::from_micros(50);

/// The state behind the decision: what was kicked since the program last waited, and when.
#[derive(Clone, Copy, Debug, Default)]
pub struct KickPolicy {
    /// Frames kicked since the last [`KickPolicy::settle`] (what counts as in flight).
    burst: u32,
    /// When a flush last kicked (`None`: never, or not since the last settle).
    last_kick: Option<Instant>,
}

impl KickPolicy {
    /// Whether a flush that may batch kicks now, with `waiting` frames on the ring that no kick
    /// covered yet.
    pub fn kick_now(&self, waiting: u32, now: Instant) -> bool {
        waiting > 0
            && (self.burst < IMMEDIATE
                || waiting >= KICK_BATCH
                || self.last_kick.is_none_or(|t| now >= t + IDLE_GAP))
    }

    /// A kick (of any kind) covered `frames` at `now`.
    pub fn kicked(&mut self, frames: u32, now: Instant) {
        self.burst = self.burst.saturating_add(frames);
        self.last_kick = Some(now);
    }

    /// The program waits (or returns to its event loop): what comes next starts a new burst.
    pub fn settle(&mut self) {
        self.burst = 0;
        self.last_kick = None;
    }

    /// Frames kicked since the program last waited.
    pub fn burst(&self) -> u32 {
        self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: i64) -> Instant {
        Instant::from_micros(n)
    }

    /// Sends one frame per flush at the given times; returns the frames each kick took.
    fn run(p: &mut KickPolicy, times: &[i64]) -> Vec<u32> {
        let mut waiting = 0;
        let mut kicks = Vec::new();
        for &t in times {
            waiting += 1;
            if p.kick_now(waiting, us(t)) {
                p.kicked(waiting, us(t));
                kicks.push(waiting);
                waiting = 0;
            }
        }
        kicks
    }

    #[test]
    fn nothing_waiting_never_kicks() {
        let p = KickPolicy::default();
        assert!(!p.kick_now(0, us(0)));
    }

    #[test]
    fn a_ping_pong_kicks_every_frame_at_once() {
        // One frame, then the program waits for the answer (settle), a round trip of 5 us.
        let mut p = KickPolicy::default();
        for i in 0..1000 {
            assert!(p.kick_now(1, us(i * 5)), "frame {i} held back");
            p.kicked(1, us(i * 5));
            p.settle();
        }
    }

    #[test]
    fn a_dense_burst_kicks_its_first_frames_then_once_per_batch() {
        // 3 + 32 * 10 frames, 1 us apart, the program never waits.
        let mut p = KickPolicy::default();
        let times: Vec<i64> = (0..(IMMEDIATE + 10 * KICK_BATCH) as i64).collect();
        let kicks = run(&mut p, &times);
        // The first IMMEDIATE alone; then a batch fills (32 us) before the gap since the last
        // kick passes (50 us), every time.
        assert_eq!(&kicks[..3], &[1, 1, 1]);
        assert!(
            kicks[3..].iter().all(|&k| k == KICK_BATCH),
            "batches of {KICK_BATCH}: {kicks:?}"
        );
        assert_eq!(kicks.len(), 3 + 10);
    }

    #[test]
    fn a_slow_burst_kicks_when_the_ring_went_idle() {
        // A frame every 20 us: after the first three, a kick once the last one is 50 us old.
        let mut p = KickPolicy::default();
        let times: Vec<i64> = (0..30).map(|i| i * 20).collect();
        let kicks = run(&mut p, &times);
        assert_eq!(&kicks[..3], &[1, 1, 1]);
        // Kicks at 40 (the third), then at 100 (the first time 50 us passed since): frames
        // 60, 80 and 100; and so on. No frame waits longer than the gap plus one interval.
        assert!(kicks[3..].iter().all(|&k| k == 3), "{kicks:?}");
        assert_eq!(kicks.len(), 3 + 9);
    }

    #[test]
    fn a_paced_sender_kicks_every_frame_at_once() {
        // A frame every 100 us, never waiting in accel (it sleeps elsewhere).
        let mut p = KickPolicy::default();
        let times: Vec<i64> = (0..100).map(|i| i * 100).collect();
        assert_eq!(run(&mut p, &times), vec![1; 100]);
    }

    #[test]
    fn settling_starts_a_new_burst() {
        let mut p = KickPolicy::default();
        let times: Vec<i64> = (0..10).collect();
        run(&mut p, &times);
        assert!(p.burst() >= IMMEDIATE);
        assert!(!p.kick_now(1, us(10)), "held while busy");
        p.settle();
        assert_eq!(p.burst(), 0);
        assert!(p.kick_now(1, us(11)), "at once after the program waited");
    }
}
