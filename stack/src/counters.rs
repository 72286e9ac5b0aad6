//! Per-stack counters: plain `u64`s bumped on the packet path (no atomics: a stack is owned by
//! one thread), listed by name for `accel-stat`.

use core::fmt;

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// What a stack has seen and done since it was created.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Every counter as `(name, value)`, in declaration order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [$((stringify!($name), self.$name),)*].into_iter()
            }
        }
    };
}

counters! {
    /// Ethernet frames received from the link (all, before validation).
    rx_frames,
    /// Bytes of those frames.
    rx_bytes,
    /// Frames sent to the link.
    tx_frames,
    /// Bytes of those frames.
    tx_bytes,
    /// Received frames whose ethertype is not IPv4.
    rx_drop_not_ipv4,
    /// Received frames addressed to another MAC.
    rx_drop_wrong_mac,
    /// Received frames too short or with a broken IPv4/TCP/UDP header.
    rx_drop_malformed,
    /// Received IPv4 packets with a bad IPv4, TCP or UDP checksum.
    rx_drop_bad_checksum,
    /// Received TCP/UDP packets accepted with a partial checksum (the pseudo-header sum a
    /// software link's kernel peer leaves when it offloads the checksum; see
    /// `Config::partial_checksums`). A complete checksum equal to that sum (1 in 65536) is
    /// counted here too.
    rx_partial_checksum,
    /// Received IPv4 fragments (the stack does not reassemble; accel's XDP filter gives
    /// fragments to the kernel, so only a stack fed another way sees them).
    rx_drop_fragment,
    /// Received TCP segments no TCP accepts: a zero port, SYN/FIN/RST together, or options
    /// that run past the header or have impossible lengths.
    rx_drop_bad_tcp,
    /// Packets held until the kernel resolves their next hop (sent once it has).
    tx_held_no_neighbour,
    /// Packets dropped because their next hop was not resolved in time (3 s) or the queue of
    /// held packets was full.
    tx_drop_no_neighbour,
    /// Frames not sent because there is no route to the destination.
    tx_drop_unreachable,
    /// Times the link had no free TX frame (the packet stays queued in its socket).
    tx_drop_no_tx_frame,
    /// TCP connections handed to the application by accept.
    tcp_accepted,
    /// Active opens that reached ESTABLISHED.
    tcp_connected,
    /// TCP sockets reaped after a close.
    tcp_closed,
    /// Connections that closed first and entered TIME-WAIT (kept without their socket).
    tcp_time_wait,
    /// ACKs sent for connections in TIME-WAIT (a retransmitted FIN, late data, an old SYN).
    tcp_time_wait_acks,
    /// SYNs that ended a TIME-WAIT and opened a new connection on the same 4-tuple.
    tcp_time_wait_reopened,
    /// Connections reset by the peer or refused.
    tcp_reset,
    /// RST segments received.
    tcp_rx_rst,
    /// SYNs dropped because the listener's backlog was full.
    syn_dropped_backlog_full,
    /// Duplicate SYNs for a connection already in the listener's queue, dropped.
    syn_dropped_duplicate,
    /// SYNs dropped because the stack's socket memory (`Config::mem_max`) had no room for
    /// another connection (the client retransmits).
    syn_dropped_no_memory,
    /// Sockets (active opens, UDP binds) refused because the stack's socket memory had no
    /// room for them (the preload leaves them to the kernel).
    socket_refused_no_memory,
    /// UDP datagrams received for a bound port.
    udp_rx_datagrams,
    /// UDP datagrams dropped because no socket is bound to their port.
    udp_rx_drop_no_socket,
    /// UDP datagrams queued for sending.
    udp_tx_datagrams,
    /// TCP segments sent again (loss recovery, timeouts, tail loss probes), counted when
    /// their connection is reaped ([`crate::Stack::tcp_recovery`] adds the open ones).
    tcp_retransmits,
    /// TCP retransmission timeouts (reaped connections).
    tcp_timeouts,
    /// TCP loss episodes repaired without a timeout: SACK or NewReno recovery (reaped
    /// connections).
    tcp_recoveries,
    /// TCP tail loss probes sent (reaped connections).
    tcp_loss_probes,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.iter() {
            writeln!(f, "{name}: {value}")?;
        }
        Ok(())
    }
}
