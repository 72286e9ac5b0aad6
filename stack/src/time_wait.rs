//! TIME-WAIT, kept as the kernel keeps it: the side that closed first holds the connection's
//! 4-tuple for [`TIME_WAIT`] after the close handshake, so that a FIN the peer sends again
//! (our last ACK was lost) gets that ACK again instead of an RST, and old segments of the
//! connection cannot reach a new one with the same addresses. The smoltcp socket (its buffers,
//! its state machine) goes back to the stack as soon as the handshake is done; what stays is
//! a compact entry (the 4-tuple, the two sequence numbers, the window and the expiry) in a hash
//! map, and the expiries in a queue ordered by time (they all last [`TIME_WAIT`], so the
//! queue is in insertion order): a close costs an insertion, a segment one look-up, an
//! expiry one pop, whatever the number of connections.
//!
//! What a segment for a connection in TIME-WAIT gets (Linux's `tcp_timewait_state_process`,
//! without timestamps):
//! - an RST ends TIME-WAIT (Linux's default, `tcp_rfc1337 = 0`);
//! - a SYN whose sequence number is past the old connection's (RCV.NXT) ends it and opens a
//!   new connection (the listener takes it); any other SYN gets the ACK;
//! - a FIN (retransmitted) gets the ACK and restarts the 60 s;
//! - data gets the ACK; a bare ACK is dropped.

use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use smoltcp::socket::tcp::TimeWaitState;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{IpProtocol, IpRepr, TcpControl, TcpRepr, TcpSeqNumber};

use crate::sockets::Key;

/// How long a connection stays in TIME-WAIT (the kernel's `TCP_TIMEWAIT_LEN`).
pub const TIME_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: TcpSeqNumber,
    ack: TcpSeqNumber,
    window: u16,
    until: Instant,
}

/// What to do with a segment for a connection in TIME-WAIT.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Send this ACK.
    Ack(IpRepr, TcpRepr<'static>),
    /// Nothing (a bare ACK; an RST, which ended TIME-WAIT).
    Drop,
    /// A new connection: TIME-WAIT ended, hand the SYN to the listener.
    Reopen,
}

#[derive(Default)]
pub(crate) struct TimeWaits {
    map: HashMap<Key, Entry>,
    expiries: VecDeque<(Instant, Key)>,
}

impl TimeWaits {
    /// Connection `state` enters TIME-WAIT at `now`. `None` when its endpoints are not IPv4.
    pub fn insert(&mut self, state: &TimeWaitState, now: Instant) -> Option<Key> {
        let remote = crate::endpoint_v4(state.remote)?;
        let key = (state.local.port, remote);
        let until = now + TIME_WAIT;
        self.map.insert(
            key,
            Entry {
                seq: state.seq,
                ack: state.ack,
                window: state.window,
                until,
            },
        );
        self.expiries.push_back((until, key));
        Some(key)
    }

    /// Whether `key` is in TIME-WAIT at `now`.
    pub fn contains(&self, key: &Key, now: Instant) -> bool {
        self.map.get(key).is_some_and(|e| e.until > now)
    }

    /// Connections in TIME-WAIT (some may have expired since the last [`TimeWaits::expire`]).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Forgets the connections whose TIME-WAIT is over.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(until, key)) = self.expiries.front() {
            if until > now {
                break;
            }
            self.expiries.pop_front();
            // Unless it was restarted (a later expiry is queued) or ended and entered again.
            if self.map.get(&key).is_some_and(|e| e.until == until) {
                self.map.remove(&key);
            }
        }
    }

    /// The answer to segment `tcp` (from `ip`) for connection `key`; `None` when `key` is not
    /// in TIME-WAIT.
    pub fn segment(
        &mut self,
        key: &Key,
        ip: &IpRepr,
        tcp: &TcpRepr,
        now: Instant,
    ) -> Option<Action> {
        let entry = self.map.get_mut(key).filter(|e| e.until > now)?;
        let action = match tcp.control {
            TcpControl::Rst => {
                self.map.remove(key);
                Action::Drop
            }
            TcpControl::Syn if tcp.ack_number.is_none() && tcp.seq_number > entry.ack => {
                self.map.remove(key);
                Action::Reopen
            }
            TcpControl::Fin => {
                entry.until = now + TIME_WAIT;
                self.expiries.push_back((entry.until, *key));
                ack(entry, ip, tcp)
            }
            TcpControl::Syn => ack(entry, ip, tcp),
            _ if tcp.payload.is_empty() => Action::Drop,
            _ => ack(entry, ip, tcp),
        };
        Some(action)
    }
}

/// The ACK a connection in TIME-WAIT sends: SND.NXT, RCV.NXT, the last window.
fn ack(e: &Entry, ip: &IpRepr, tcp: &TcpRepr) -> Action {
    let reply = TcpRepr {
        src_port: tcp.dst_port,
        dst_port: tcp.src_port,
        control: TcpControl::None,
        seq_number: e.seq,
        ack_number: Some(e.ack),
        window_len: e.window,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: &[],
    };
    let ip_reply = IpRepr::new(
        ip.dst_addr(),
        ip.src_addr(),
        IpProtocol::Tcp,
        reply.buffer_len(),
        64,
    );
    Action::Ack(ip_reply, reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::wire::{IpAddress, IpEndpoint, Ipv4Address};

    const LOCAL: Ipv4Address = Ipv4Address::new(198, 18, 0, 1);
    const REMOTE: Ipv4Address = Ipv4Address::new(198, 18, 0, 2);

    fn state() -> TimeWaitState {
        TimeWaitState {
            local: IpEndpoint::new(LOCAL.into(), 80),
            remote: IpEndpoint::new(REMOTE.into(), 40000),
            seq: TcpSeqNumber(1000),
            ack: TcpSeqNumber(5000),
            window: 512,
        }
    }

    fn segment(control: TcpControl, seq: i32, ack: Option<i32>, payload: &[u8]) -> TcpRepr<'_> {
        TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control,
            seq_number: TcpSeqNumber(seq),
            ack_number: ack.map(TcpSeqNumber),
            window_len: 100,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        }
    }

    fn ip() -> IpRepr {
        IpRepr::new(REMOTE.into(), LOCAL.into(), IpProtocol::Tcp, 20, 64)
    }

    fn at(secs: u64) -> Instant {
        Instant::from_secs(secs as i64)
    }

    #[test]
    fn retransmitted_fin_gets_the_ack_and_restarts_the_timer() {
        let mut tw = TimeWaits::default();
        let key = tw.insert(&state(), at(0)).unwrap();
        let fin = segment(TcpControl::Fin, 4999, Some(1000), &[]);
        match tw.segment(&key, &ip(), &fin, at(50)) {
            Some(Action::Ack(ip, tcp)) => {
                assert_eq!(ip.dst_addr(), IpAddress::from(REMOTE));
                assert_eq!((tcp.src_port, tcp.dst_port), (80, 40000));
                assert_eq!(tcp.seq_number, TcpSeqNumber(1000));
                assert_eq!(tcp.ack_number, Some(TcpSeqNumber(5000)));
                assert_eq!(tcp.control, TcpControl::None);
                assert_eq!(tcp.window_len, 512);
            }
            other => panic!("{other:?}"),
        }
        // Restarted at 50 s: still there at 100 s, gone at 110 s.
        tw.expire(at(100));
        assert!(tw.contains(&key, at(100)));
        tw.expire(at(110));
        assert!(!tw.contains(&key, at(110)));
        assert_eq!(tw.len(), 0);
    }

    #[test]
    fn expires_after_sixty_seconds() {
        let mut tw = TimeWaits::default();
        let key = tw.insert(&state(), at(0)).unwrap();
        tw.expire(at(59));
        assert!(tw.contains(&key, at(59)));
        let fin = segment(TcpControl::Fin, 4999, Some(1000), &[]);
        assert!(
            tw.segment(&key, &ip(), &fin, at(60)).is_none(),
            "over at 60 s"
        );
        tw.expire(at(60));
        assert_eq!(tw.len(), 0);
    }

    #[test]
    fn syn_past_the_old_sequence_reopens_an_older_one_gets_the_ack() {
        let mut tw = TimeWaits::default();
        let key = tw.insert(&state(), at(0)).unwrap();
        let old = segment(TcpControl::Syn, 4000, None, &[]);
        assert!(matches!(
            tw.segment(&key, &ip(), &old, at(1)),
            Some(Action::Ack(..))
        ));
        let new = segment(TcpControl::Syn, 90_000, None, &[]);
        assert_eq!(tw.segment(&key, &ip(), &new, at(1)), Some(Action::Reopen));
        assert!(!tw.contains(&key, at(1)));
        // The stale expiry of the ended entry does not take a new one with the same key.
        tw.insert(&state(), at(30));
        tw.expire(at(60));
        assert!(tw.contains(&key, at(60)));
    }

    #[test]
    fn rst_ends_it_bare_ack_is_dropped_data_is_acked() {
        let mut tw = TimeWaits::default();
        let key = tw.insert(&state(), at(0)).unwrap();
        let bare = segment(TcpControl::None, 5000, Some(1000), &[]);
        assert_eq!(tw.segment(&key, &ip(), &bare, at(1)), Some(Action::Drop));
        let data = segment(TcpControl::None, 5000, Some(1000), b"late");
        assert!(matches!(
            tw.segment(&key, &ip(), &data, at(1)),
            Some(Action::Ack(..))
        ));
        let rst = segment(TcpControl::Rst, 5000, None, &[]);
        assert_eq!(tw.segment(&key, &ip(), &rst, at(1)), Some(Action::Drop));
        assert!(!tw.contains(&key, at(1)));
    }
}
