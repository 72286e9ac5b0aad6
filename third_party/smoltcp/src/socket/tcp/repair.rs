//! accel: what a kernel needs to take over an established connection (TCP repair mode), read
//! from a socket without changing it, and removing a socket's connection without a word to
//! the peer once another stack has taken it over.

use super::{Socket, State};

/// An established connection's sequence space, windows, negotiated options and queued bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairState {
    /// SND.UNA: the first byte the peer has not acknowledged.
    pub snd_una: u32,
    /// SND.NXT - SND.UNA: how many bytes of `send_queue` were sent.
    pub sent: usize,
    /// Every byte from SND.UNA on (sent and not acknowledged, then not sent yet).
    pub send_queue: Vec<u8>,
    /// RCV.NXT: the sequence number after the last byte received in order.
    pub rcv_nxt: u32,
    /// Received in order, not read by the application: ends at RCV.NXT.
    pub recv_queue: Vec<u8>,
    /// The peer's MSS.
    pub mss: u16,
    /// Window scaling as negotiated: (the peer's shift, ours).
    pub wscale: Option<(u8, u8)>,
    pub sack_permitted: bool,
    /// The peer's window, in bytes, from SND.UNA.
    pub snd_wnd: u32,
    /// The window we advertise, in bytes, from RCV.NXT.
    pub rcv_wnd: u32,
}

/// Every byte a ring buffer holds, in order (it may wrap: two slices).
fn contents(b: &super::SocketBuffer<'_>) -> Vec<u8> {
    let first = b.get_allocated(0, b.len());
    let second = b.get_allocated(first.len(), b.len() - first.len());
    let mut v = Vec::with_capacity(b.len());
    v.extend_from_slice(first);
    v.extend_from_slice(second);
    v
}

impl<'a> Socket<'a> {
    /// The connection's repair state, if it is ESTABLISHED and uses no TCP timestamps (a
    /// closing connection, or one whose timestamps the kernel could not continue, is `None`).
    pub fn repair_state(&self) -> Option<RepairState> {
        if self.state != State::Established || self.tsval_generator.is_some() {
            return None;
        }
        let send_queue = contents(&self.tx_buffer);
        let recv_queue = contents(&self.rx_buffer);
        let rx_len = recv_queue.len();
        let sent = (self.remote_last_seq - self.local_seq_no).max(0) as usize;
        let rcv_nxt = self.remote_seq_no + rx_len;
        let rcv_wnd = self.rx_buffer.window() as u32;
        Some(RepairState {
            snd_una: self.local_seq_no.0 as u32,
            sent: sent.min(send_queue.len()),
            send_queue,
            rcv_nxt: rcv_nxt.0 as u32,
            recv_queue,
            mss: self.remote_mss.min(u16::MAX as usize) as u16,
            wscale: self.remote_win_scale.map(|peer| (peer, self.remote_win_shift)),
            sack_permitted: self.remote_has_sack,
            snd_wnd: self.remote_win_len as u32,
            rcv_wnd,
        })
    }

    /// Forgets the connection without sending anything (no FIN, no RST): another TCP took it
    /// over. The socket is CLOSED afterwards.
    pub fn forget(&mut self) {
        self.reset();
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::socket::tcp::{SocketBuffer, TcpSeqNumber};

    fn established() -> Socket<'static> {
        let mut s = Socket::new(
            SocketBuffer::new(vec![0; 64]),
            SocketBuffer::new(vec![0; 64]),
        );
        s.state = State::Established;
        s.local_seq_no = TcpSeqNumber(1000);
        s.remote_last_seq = TcpSeqNumber(1000);
        s.remote_seq_no = TcpSeqNumber(5000);
        s.remote_mss = 1460;
        s.remote_win_len = 4096;
        s
    }

    #[test]
    fn the_state_holds_both_queues_and_what_was_sent() {
        let mut s = established();
        s.send_slice(b"abcdef").unwrap();
        s.remote_last_seq = TcpSeqNumber(1004); // four of them sent
        s.rx_buffer.enqueue_slice(b"xyz");
        let st = s.repair_state().unwrap();
        assert_eq!(st.send_queue, b"abcdef");
        assert_eq!(st.sent, 4);
        assert_eq!(st.snd_una, 1000);
        assert_eq!(st.recv_queue, b"xyz");
        assert_eq!(st.rcv_nxt, 5003);
        assert_eq!(st.mss, 1460);
        assert_eq!(st.snd_wnd, 4096);
        assert_eq!(st.rcv_wnd, 61);
    }

    #[test]
    fn a_wrapped_buffer_comes_out_in_order() {
        let mut s = established();
        s.send_slice(&[1u8; 60]).unwrap();
        s.tx_buffer.dequeue_allocated(60); // as acknowledged bytes leave
        s.local_seq_no = TcpSeqNumber(1060);
        s.remote_last_seq = TcpSeqNumber(1060);
        let data: Vec<u8> = (0..10).collect();
        s.send_slice(&data).unwrap(); // wraps around the end of the 64-byte ring
        assert_eq!(s.repair_state().unwrap().send_queue, data);
    }

    #[test]
    fn only_an_established_connection_without_timestamps_is_repaired() {
        let mut s = established();
        s.state = State::CloseWait;
        assert!(s.repair_state().is_none());
        let mut s = established();
        s.set_tsval_generator(Some(|| 1));
        assert!(s.repair_state().is_none());
    }

    #[test]
    fn forgetting_closes_without_a_word() {
        let mut s = established();
        s.forget();
        assert_eq!(s.state(), State::Closed);
        assert!(s.remote_endpoint().is_none());
    }
}
