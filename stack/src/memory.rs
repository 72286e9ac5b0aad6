//! An in-memory [`Backend`] for engines: a wire whose two ends may live on different threads
//! (the preload's socket tests block in one thread while the peer runs in another), a resolver
//! from a table, and a flow filter that is a set.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use core::net::Ipv4Addr;

use crate::engine::Backend;
use crate::link::{Link, Mac, RxFrame, TxFrame};
use crate::testing::MapResolver;

type Queue = Arc<Mutex<VecDeque<Vec<u8>>>>;

fn lock(q: &Queue) -> std::sync::MutexGuard<'_, VecDeque<Vec<u8>>> {
    q.lock().unwrap_or_else(|p| p.into_inner())
}

/// One end of an in-memory Ethernet wire that can cross threads.
pub struct SyncLink {
    rx: Queue,
    tx: Queue,
    pub mtu: usize,
}

/// Two ends joined back to back.
pub fn sync_wire() -> (SyncLink, SyncLink) {
    let (a, b) = (Queue::default(), Queue::default());
    let end = |rx: &Queue, tx: &Queue| SyncLink {
        rx: rx.clone(),
        tx: tx.clone(),
        mtu: 1500,
    };
    (end(&a, &b), end(&b, &a))
}

impl SyncLink {
    /// Frames sent by this end that the other has not taken yet.
    pub fn in_flight(&self) -> usize {
        lock(&self.tx).len()
    }
}

pub struct SyncRx(Vec<u8>);

impl RxFrame for SyncRx {
    fn consume<R>(self, f: impl FnOnce(&[u8]) -> R) -> R {
        f(&self.0)
    }
}

pub struct SyncTx(Queue);

impl TxFrame for SyncTx {
    fn consume<R>(self, len: usize, f: impl FnOnce(&mut [u8]) -> (R, bool)) -> R {
        let mut frame = vec![0u8; len];
        let (r, send) = f(&mut frame);
        if send {
            lock(&self.0).push_back(frame);
        }
        r
    }
}

impl Link for SyncLink {
    type Rx<'a> = SyncRx;
    type Tx<'a> = SyncTx;

    fn receive(&mut self) -> Option<(SyncRx, SyncTx)> {
        let frame = lock(&self.rx).pop_front()?;
        Some((SyncRx(frame), SyncTx(self.tx.clone())))
    }

    fn transmit(&mut self) -> Option<SyncTx> {
        Some(SyncTx(self.tx.clone()))
    }

    fn mtu(&self) -> usize {
        self.mtu
    }

    fn idle(&mut self) -> bool {
        lock(&self.rx).is_empty()
    }
}

/// A wire end, a resolver table and a set of flows.
pub struct MemoryBackend<F> {
    pub link: SyncLink,
    pub resolver: MapResolver,
    flows: HashSet<F>,
    /// Flows steered away from the stack, and where.
    pub steered: std::collections::HashMap<F, crate::engine::Steer>,
    /// Makes the filter refuse every new flow (a full flow map).
    pub refuse_flows: bool,
    /// Refreshes asked for so far.
    pub refreshes: u64,
    /// Shared flows held but not served (see `Backend::serve_flow`).
    idle: HashSet<F>,
}

impl<F: Eq + Hash> MemoryBackend<F> {
    pub fn new(link: SyncLink, neighbours: &[(Ipv4Addr, Mac)]) -> Self {
        MemoryBackend {
            link,
            resolver: MapResolver::new(neighbours),
            flows: HashSet::new(),
            steered: std::collections::HashMap::new(),
            refuse_flows: false,
            refreshes: 0,
            idle: HashSet::new(),
        }
    }

    /// Whether the link takes a share of `flow`'s new connections (see
    /// [`Backend::serve_flow`]).
    pub fn serves(&self, flow: &F) -> bool {
        self.flows.contains(flow) && !self.idle.contains(flow)
    }

    pub fn has_flow(&self, flow: &F) -> bool {
        self.flows.contains(flow)
    }

    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }
}

/// The filter is full.
#[derive(Debug)]
pub struct FlowsFull;

impl std::fmt::Display for FlowsFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the in-memory flow filter refuses new flows")
    }
}

impl<F: Copy + Eq + Hash + std::fmt::Debug> Backend for MemoryBackend<F> {
    type Link = SyncLink;
    type Resolver = MapResolver;
    type Flow = F;
    type FlowError = FlowsFull;

    fn parts(&mut self) -> (&mut SyncLink, &mut MapResolver) {
        (&mut self.link, &mut self.resolver)
    }

    fn add_flow(&mut self, flow: &F) -> Result<(), FlowsFull> {
        if self.refuse_flows && !self.flows.contains(flow) {
            return Err(FlowsFull);
        }
        self.flows.insert(*flow);
        self.idle.remove(flow);
        Ok(())
    }

    fn remove_flow(&mut self, flow: &F) {
        self.flows.remove(flow);
        self.idle.remove(flow);
    }

    fn refresh(&mut self) {
        self.refreshes += 1;
    }

    fn steer(&mut self, flow: &F, to: crate::engine::Steer) -> Result<(), FlowsFull> {
        match to {
            crate::engine::Steer::Stack => {
                self.steered.remove(flow);
                self.add_flow(flow)
            }
            other => {
                self.steered.insert(*flow, other);
                Ok(())
            }
        }
    }

    fn serve_flow(&mut self, flow: &F, serve: bool) -> Result<(), FlowsFull> {
        if serve {
            self.idle.remove(flow);
        } else {
            self.idle.insert(*flow);
        }
        Ok(())
    }
}
