//! The engine: one [`Stack`] driven over what it runs on, with the bookkeeping every driver
//! needs. The preload library runs one per accelerated interface over AF_XDP queues, accel-echo
//! runs one over the same, and tests run one over an in-memory wire ([`crate::memory`]).
//!
//! What it runs on is a [`Backend`]: a link that carries Ethernet frames, a resolver for next
//! hops, and a flow filter that decides which flows reach the link (the XDP program's flow map
//! in production). The engine keeps the flows consistent with the sockets that use them:
//!
//! - an exclusive flow (a connected socket, a bound UDP socket) is added with its socket and
//!   removed when it is released, at once or after a grace period (a closed connection's FIN
//!   handshake still needs its packets);
//! - a shared flow (a listener's, which also carries every connection it accepted) counts its
//!   users and goes when the last one lets go;
//! - a removal still pending is cancelled when the same flow is added again.
//!
//! Like the stack it does no I/O of its own and reads no clock: [`Engine::poll`] takes the time,
//! and every [`HOUSEKEEPING_EVERY`] of it the engine refreshes the backend's mirror of the
//! kernel (addresses, routes, neighbours), removes flows whose grace ran out and drops resources
//! held until then ([`Engine::hold`]: the preload keeps a closed connection's port this way).

use core::fmt;
use core::hash::Hash;
use core::net::SocketAddrV4;

use rustc_hash::FxHashMap as HashMap;
use smoltcp::time::Duration;

use crate::link::{Link, Resolver};
use crate::{Error, Instant, SocketId, Stack};

/// How often a polled engine refreshes its backend and runs its delayed removals.
pub const HOUSEKEEPING_EVERY: Duration = Duration::from_millis(10);

/// What an engine runs on.
pub trait Backend {
    type Link: Link;
    type Resolver: Resolver;
    /// Names a flow the filter can steer to the link (protocol, local address, maybe remote).
    type Flow: Copy + Eq + Hash + fmt::Debug;
    /// Why the filter could not take a flow.
    type FlowError: fmt::Display;

    /// The link and the resolver, borrowed together for a stack poll.
    fn parts(&mut self) -> (&mut Self::Link, &mut Self::Resolver);

    /// Steers `flow` to the link.
    fn add_flow(&mut self, flow: &Self::Flow) -> Result<(), Self::FlowError>;

    /// Stops steering `flow` to the link (absent flows are not an error).
    fn remove_flow(&mut self, flow: &Self::Flow);

    /// Brings the mirror of the kernel's state (addresses, routes, neighbours) up to date.
    fn refresh(&mut self);

    /// Sends an exact flow's packets somewhere else than the stack (a connection being handed
    /// to the kernel), or back to the stack.
    fn steer(&mut self, flow: &Self::Flow, to: Steer) -> Result<(), Self::FlowError>;

    /// For a flow several processes may hold (a listener a forked child inherited): whether
    /// this link takes a share of its new connections (`serve`) or none while still holding
    /// the flow (a process that listens but leaves accepting to its children). A flow is
    /// served from [`Backend::add_flow`] on.
    fn serve_flow(&mut self, flow: &Self::Flow, serve: bool) -> Result<(), Self::FlowError>;
}

/// Where a flow's packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// To this engine's stack.
    Stack,
    /// Nowhere (the peer retransmits): while a connection moves.
    Drop,
    /// To the kernel's own stack: the connection lives in a kernel socket now.
    Kernel,
}

/// Why opening a socket with its flow failed.
#[derive(Debug)]
pub enum OpenError<E> {
    /// The stack refused the socket (its errno is the kernel's for the same mistake).
    Stack(Error),
    /// The filter refused the flow.
    Flow(E),
}

impl<E: fmt::Display> fmt::Display for OpenError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Stack(e) => write!(f, "{e}"),
            OpenError::Flow(e) => write!(f, "the flow filter refused the flow: {e}"),
        }
    }
}

/// A stack over a backend, with its flows and delayed work. `H` is what the driver asks the
/// engine to hold for a while (dropped when its time is up).
pub struct Engine<B: Backend, H = ()> {
    stack: Stack,
    backend: B,
    /// Time of the last poll.
    now: Instant,
    next_housekeeping: Instant,
    /// Shared flows and how many users hold each.
    shared: HashMap<B::Flow, usize>,
    /// Flows to remove when their time comes (unless added again meanwhile).
    removals: Vec<(Instant, B::Flow)>,
    /// What to drop when its time comes.
    held: Vec<(Instant, H)>,
}

impl<B: Backend, H> Engine<B, H> {
    pub fn new(stack: Stack, backend: B, now: Instant) -> Self {
        Engine {
            stack,
            backend,
            now,
            next_housekeeping: now + HOUSEKEEPING_EVERY,
            shared: HashMap::default(),
            removals: Vec::new(),
            held: Vec::new(),
        }
    }

    /// The stack, for socket calls.
    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    /// The stack, for socket calls that change it (the next poll sends what they queued).
    pub fn stack_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The time of the last poll.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Polls the stack over the backend (see [`Stack::poll`]), then does the housekeeping that
    /// is due. Returns whether the stack did anything.
    pub fn poll(&mut self, now: Instant) -> bool {
        self.poll_with(now, false)
    }

    /// [`Engine::poll`] that may leave sent frames to a later kick (see
    /// [`Stack::poll_batched`]).
    pub fn poll_batched(&mut self, now: Instant) -> bool {
        self.poll_with(now, true)
    }

    fn poll_with(&mut self, now: Instant, batched: bool) -> bool {
        self.now = now;
        let (link, resolver) = self.backend.parts();
        let moved = if batched {
            self.stack.poll_batched(now, link, resolver)
        } else {
            self.stack.poll(now, link, resolver)
        };
        if now >= self.next_housekeeping {
            self.housekeeping(now);
        }
        moved
    }

    /// Kicks every frame the link holds back, without a poll: the program is about to wait
    /// (see [`crate::link::Link::flush`]).
    pub fn push(&mut self) {
        self.backend.parts().0.flush();
    }

    /// Whether sent frames wait for a kick a batched poll held back (see
    /// [`crate::link::Link::tx_held`]).
    pub fn tx_held(&mut self) -> bool {
        self.backend.parts().0.tx_held()
    }

    /// Whether a poll now would surely do nothing, given that the time is not past `until`
    /// (`None`: whatever the time). See [`Stack::quiet_until`].
    pub fn quiet(&mut self, until: Option<Instant>) -> bool {
        let (link, _) = self.backend.parts();
        match until {
            Some(t) => self.stack.quiet_until(t, link),
            None => self.stack.quiet(link),
        }
    }

    /// When the engine next needs a poll if nothing arrives: the stack's next timer, or the
    /// next housekeeping while a removal or a hold waits for it.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let stack = self.stack.poll_at(now);
        let ours = self
            .removals
            .iter()
            .map(|(t, _)| *t)
            .chain(self.held.iter().map(|(t, _)| *t))
            .min()
            .map(|t| t.max(self.next_housekeeping));
        match (stack, ours) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.next_housekeeping = now + HOUSEKEEPING_EVERY;
        self.backend.refresh();
        let (backend, shared) = (&mut self.backend, &self.shared);
        self.removals.retain(|(when, flow)| {
            if *when > now {
                return true;
            }
            // A shared flow in the table has users again: it stays.
            if !shared.contains_key(flow) {
                backend.remove_flow(flow);
            }
            false
        });
        self.held.retain(|(when, _)| *when > now);
    }

    // -----------------------------------------------------------------------------------------
    // Flows.

    /// Steers an exclusive flow to this engine, cancelling a pending removal of it.
    pub fn add_flow(&mut self, flow: &B::Flow) -> Result<(), B::FlowError> {
        if !self.shared.contains_key(flow) {
            self.removals.retain(|(_, f)| f != flow);
        }
        self.backend.add_flow(flow)
    }

    /// Releases an exclusive flow: removed now (`grace` zero) or once `grace` has passed.
    pub fn release_flow(&mut self, flow: B::Flow, grace: Duration) {
        if grace == Duration::ZERO {
            self.removals.retain(|(_, f)| *f != flow);
            if !self.shared.contains_key(&flow) {
                self.backend.remove_flow(&flow);
            }
        } else {
            self.removals.push((self.now + grace, flow));
        }
    }

    /// Adds a shared flow with its first (or one more) user.
    pub fn add_shared_flow(&mut self, flow: &B::Flow) -> Result<(), B::FlowError> {
        // A removal still pending from the last users must not take the new user's flow.
        self.removals.retain(|(_, f)| f != flow);
        self.backend.add_flow(flow)?;
        *self.shared.entry(*flow).or_insert(0) += 1;
        Ok(())
    }

    /// One more user of a shared flow that is there already (a connection its listener
    /// accepted); it lets go with [`Engine::release_shared_flow`].
    pub fn hold_shared_flow(&mut self, flow: &B::Flow) {
        *self.shared.entry(*flow).or_insert(0) += 1;
    }

    /// A user of a shared flow lets go: the flow stays while others hold it, and the last
    /// one's release removes it after `grace`.
    pub fn release_shared_flow(&mut self, flow: B::Flow, grace: Duration) {
        match self.shared.get_mut(&flow) {
            Some(users) if *users > 1 => *users -= 1,
            _ => {
                self.shared.remove(&flow);
                self.release_flow(flow, grace);
            }
        }
    }

    /// Takes a share of a shared flow's new connections, or stops taking any while still
    /// holding the flow (see [`Backend::serve_flow`]).
    pub fn serve_shared_flow(&mut self, flow: &B::Flow, serve: bool) -> Result<(), B::FlowError> {
        self.backend.serve_flow(flow, serve)
    }

    /// Users of a shared flow (0 when it is not one).
    pub fn shared_users(&self, flow: &B::Flow) -> usize {
        self.shared.get(flow).copied().unwrap_or(0)
    }

    /// Sends an exact flow's packets to the stack, nowhere, or the kernel (see [`Steer`]).
    pub fn steer(&mut self, flow: &B::Flow, to: Steer) -> Result<(), B::FlowError> {
        self.removals.retain(|(_, f)| f != flow);
        self.backend.steer(flow, to)
    }

    /// Keeps `what` until `how_long` has passed, then drops it (at a housekeeping).
    pub fn hold(&mut self, what: H, how_long: Duration) {
        self.held.push((self.now + how_long, what));
    }

    // -----------------------------------------------------------------------------------------
    // Sockets that come with a flow: the socket and its flow exist together or not at all.

    /// A UDP socket bound to `local`, with its flow.
    pub fn udp_open(
        &mut self,
        local: SocketAddrV4,
        flow: &B::Flow,
    ) -> Result<SocketId, OpenError<B::FlowError>> {
        let id = self.stack.udp_bind(local).map_err(OpenError::Stack)?;
        if let Err(e) = self.add_flow(flow) {
            self.stack.close(id);
            return Err(OpenError::Flow(e));
        }
        Ok(id)
    }

    /// Closes a UDP socket (datagrams it queued still leave) and removes its flow.
    pub fn udp_close(&mut self, id: SocketId, flow: B::Flow) {
        self.stack.close(id);
        self.release_flow(flow, Duration::ZERO);
    }

    /// A listening TCP socket on `local`, holding its shared flow.
    pub fn tcp_listen(
        &mut self,
        local: SocketAddrV4,
        backlog: usize,
        flow: &B::Flow,
    ) -> Result<SocketId, OpenError<B::FlowError>> {
        let id = self
            .stack
            .tcp_listen(local, backlog)
            .map_err(OpenError::Stack)?;
        if let Err(e) = self.add_shared_flow(flow) {
            self.stack.close(id);
            return Err(OpenError::Flow(e));
        }
        Ok(id)
    }

    /// Closes a listener and lets go of its flow (connections it accepted still hold it).
    pub fn tcp_unlisten(&mut self, id: SocketId, flow: B::Flow) {
        self.stack.close(id);
        self.release_shared_flow(flow, Duration::ZERO);
    }

    /// An active open from `local` to `remote`, with its flow; the SYN leaves at the next poll.
    pub fn tcp_connect(
        &mut self,
        local: SocketAddrV4,
        remote: SocketAddrV4,
        flow: &B::Flow,
    ) -> Result<SocketId, OpenError<B::FlowError>> {
        self.add_flow(flow).map_err(OpenError::Flow)?;
        match self.stack.tcp_connect(local, remote) {
            Ok(id) => Ok(id),
            Err(e) => {
                self.release_flow(*flow, Duration::ZERO);
                Err(OpenError::Stack(e))
            }
        }
    }

    /// Closes a connection (`abort`: with a RST) and releases its flow after `grace`: its
    /// own flow, or its share of its listener's (`accepted`).
    pub fn tcp_close(
        &mut self,
        id: SocketId,
        flow: B::Flow,
        accepted: bool,
        abort: bool,
        grace: Duration,
    ) {
        if abort {
            self.stack.abort(id);
        } else {
            self.stack.close(id);
        }
        if accepted {
            self.release_shared_flow(flow, grace);
        } else {
            self.release_flow(flow, grace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{sync_wire, MemoryBackend};
    use crate::testing::{IP_A, IP_B, MAC_A, MAC_B};
    use crate::Config;

    type Flow = (u16, Option<u16>);

    fn engine() -> Engine<MemoryBackend<Flow>, u32> {
        let (a, _b) = sync_wire();
        let now = Instant::from_millis(1000);
        let stack = Stack::new(Config::new(MAC_A, IP_A, 24), now);
        Engine::new(stack, MemoryBackend::new(a, &[(IP_B, MAC_B)]), now)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_released_flow_goes_after_its_grace_and_not_before() {
        let mut e = engine();
        e.add_flow(&(80, Some(1))).unwrap();
        e.release_flow((80, Some(1)), ms(50));
        e.poll(e.now() + ms(20));
        assert!(e.backend().has_flow(&(80, Some(1))));
        assert!(
            e.poll_at(e.now()).is_some(),
            "a pending removal needs a poll"
        );
        e.poll(e.now() + ms(40));
        assert!(!e.backend().has_flow(&(80, Some(1))));
    }

    #[test]
    fn adding_a_flow_again_cancels_its_pending_removal() {
        let mut e = engine();
        e.add_flow(&(80, Some(1))).unwrap();
        e.release_flow((80, Some(1)), ms(5));
        e.add_flow(&(80, Some(1))).unwrap();
        e.poll(e.now() + ms(100));
        assert!(e.backend().has_flow(&(80, Some(1))));
    }

    #[test]
    fn a_shared_flow_stays_while_any_user_holds_it() {
        let mut e = engine();
        e.add_shared_flow(&(80, None)).unwrap();
        e.hold_shared_flow(&(80, None));
        e.release_shared_flow((80, None), Duration::ZERO);
        assert!(e.backend().has_flow(&(80, None)));
        assert_eq!(e.shared_users(&(80, None)), 1);
        e.release_shared_flow((80, None), Duration::ZERO);
        assert!(!e.backend().has_flow(&(80, None)));
    }

    #[test]
    fn a_shared_flow_is_served_from_its_add_until_the_engine_stops_serving_it() {
        let mut e = engine();
        e.add_shared_flow(&(80, None)).unwrap();
        assert!(e.backend().serves(&(80, None)));
        e.serve_shared_flow(&(80, None), false).unwrap();
        assert!(e.backend().has_flow(&(80, None)), "still held");
        assert!(!e.backend().serves(&(80, None)));
        e.serve_shared_flow(&(80, None), true).unwrap();
        assert!(e.backend().serves(&(80, None)));
    }

    #[test]
    fn a_new_listener_keeps_a_flow_whose_last_users_left_with_a_grace() {
        let mut e = engine();
        e.add_shared_flow(&(80, None)).unwrap();
        e.release_shared_flow((80, None), ms(50));
        e.add_shared_flow(&(80, None)).unwrap();
        e.poll(e.now() + ms(100));
        assert!(e.backend().has_flow(&(80, None)));
    }

    #[test]
    fn held_things_are_dropped_when_their_time_is_up() {
        let mut e = engine();
        e.hold(7, ms(30));
        e.poll(e.now() + ms(15));
        assert_eq!(e.held.len(), 1);
        e.poll(e.now() + ms(20));
        assert!(e.held.is_empty());
    }

    #[test]
    fn a_udp_socket_and_its_flow_come_and_go_together() {
        let mut e = engine();
        let local = SocketAddrV4::new(IP_A, 5000);
        let id = e.udp_open(local, &(5000, None)).unwrap();
        assert!(e.backend().has_flow(&(5000, None)));
        // A second bind of the port fails in the stack and leaves the first flow alone.
        assert!(matches!(
            e.udp_open(local, &(5000, None)),
            Err(OpenError::Stack(Error::AddrInUse))
        ));
        assert!(e.backend().has_flow(&(5000, None)));
        e.udp_close(id, (5000, None));
        assert!(!e.backend().has_flow(&(5000, None)));
    }

    #[test]
    fn a_refused_flow_leaves_no_socket_behind() {
        let mut e = engine();
        e.backend_mut().refuse_flows = true;
        let before = e.stack().open_ids();
        let local = SocketAddrV4::new(IP_A, 5001);
        assert!(matches!(
            e.udp_open(local, &(5001, None)),
            Err(OpenError::Flow(_))
        ));
        assert!(matches!(
            e.tcp_listen(local, 8, &(5001, None)),
            Err(OpenError::Flow(_))
        ));
        assert_eq!(e.stack().open_ids(), before);
    }

    #[test]
    fn housekeeping_refreshes_the_backend_every_period() {
        let mut e = engine();
        let t0 = e.now();
        for i in 1..=50 {
            e.poll(t0 + Duration::from_millis(i));
        }
        assert_eq!(e.backend().refreshes, 5);
    }
}
