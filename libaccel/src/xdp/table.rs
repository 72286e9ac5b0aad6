//! A process's view of the flow map: the exact flows it writes itself through the map's fd
//! (the helper passed it), carrying its slot.
//!
//! Exact entries (a connected socket's 4-tuple) belong to one slot and are written only by
//! that slot's process, or by the XDP program when it pins a connection at its SYN. Bound and
//! listening entries are sets of slots several processes share; only the helper edits them
//! (serialised read-modify-write), never this table.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use super::{Error, FlowKey, FlowValue, FLOW_DROP, FLOW_HELD, FLOW_PASS, SLOTS};
use crate::sys::bpf::{self as sys, Map};

/// The flow map, as one slot's process writes it, and the pin map (connections the XDP program
/// pinned to a slot at their SYN), whose entries of its connections it removes.
#[derive(Debug)]
pub struct FlowTable {
    map: Map,
    pins: Map,
    slot: u8,
    ifname: String,
}

/// A map error on `ifname`'s flow table, with the full-table case named.
pub(crate) fn flow_error(ifname: &str, map: &Map, e: io::Error) -> Error {
    match e.raw_os_error() {
        Some(libc::E2BIG) | Some(libc::ENOSPC) => Error::FlowTableFull {
            ifname: ifname.to_owned(),
            max: map.info().max_entries,
        },
        _ => Error::from_io(ifname, "adding a flow", e),
    }
}

/// Every entry of a flow or pin map (a snapshot).
pub(crate) fn all_flows(map: &Map) -> io::Result<Vec<(FlowKey, FlowValue)>> {
    Ok(map
        .entries()?
        .into_iter()
        .filter_map(|(k, v)| {
            let key = FlowKey::from_bytes(&k)?;
            let v: &[u8; FlowValue::SIZE] = v.as_slice().try_into().ok()?;
            Some((key, FlowValue::from_bytes(v)))
        })
        .collect())
}

/// Checks that `map` is accel's map `name` of `kind` with flow keys and values.
pub(crate) fn check_flow_map(ifname: &str, map: &Map, name: &str, kind: u32) -> Result<(), Error> {
    let i = map.info();
    if i.name != name
        || i.map_type != kind
        || i.key_size as usize != FlowKey::SIZE
        || i.value_size as usize != FlowValue::SIZE
    {
        return Err(Error::IncompatibleProgram {
            ifname: ifname.to_owned(),
            prog_id: 0,
            reason: format!(
                "the map handed over as {name} is {} (type {}, key {} bytes, value {} bytes)",
                i.name, i.map_type, i.key_size, i.value_size
            ),
        });
    }
    Ok(())
}

impl FlowTable {
    /// The flow and pin maps behind `flows` and `pins` (checked to be accel's), written for
    /// `slot`.
    pub fn from_fds(
        flows: OwnedFd,
        pins: OwnedFd,
        slot: u8,
        ifname: &str,
    ) -> Result<FlowTable, Error> {
        let open = |fd| Map::new(fd).map_err(|e| Error::from_io(ifname, "opening the flow map", e));
        let map = open(flows)?;
        let pins = open(pins)?;
        check_flow_map(ifname, &map, super::FLOWS, sys::BPF_MAP_TYPE_HASH)?;
        check_flow_map(ifname, &pins, super::PINS, sys::BPF_MAP_TYPE_LRU_HASH)?;
        if slot as usize >= SLOTS {
            return Err(Error::from_io(
                ifname,
                "opening the flow map",
                io::Error::from_raw_os_error(libc::ERANGE),
            ));
        }
        Ok(FlowTable {
            map,
            pins,
            slot,
            ifname: ifname.to_owned(),
        })
    }

    /// The slot this table writes.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.map.fd()
    }

    /// The pin table's fd.
    pub fn pins_fd(&self) -> BorrowedFd<'_> {
        self.pins.fd()
    }

    fn err(&self, action: &'static str, e: io::Error) -> Error {
        Error::from_io(&self.ifname, action, e)
    }

    /// `key`'s value, if it is in the table.
    pub fn lookup(&self, key: &FlowKey) -> Result<Option<FlowValue>, Error> {
        let mut v = [0u8; FlowValue::SIZE];
        let found = self
            .map
            .lookup(&key.to_bytes(), &mut v)
            .map_err(|e| self.err("reading the flow table", e))?;
        Ok(found.then(|| FlowValue::from_bytes(&v)))
    }

    /// Steers the exact flow `key` (a connected socket) to this slot. Adding it again is a
    /// no-op; a flow another slot holds is [`Error::FlowTaken`].
    pub fn add_exact(&self, key: &FlowKey) -> Result<(), Error> {
        debug_assert!(key.remote.is_some(), "exact flows name their remote");
        let v = FlowValue::exact(self.slot).to_bytes();
        match self.map.update(&key.to_bytes(), &v, sys::BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => match self.lookup(key)? {
                Some(cur) if cur.slots() == [self.slot] && !cur.is_pass() => Ok(()),
                Some(cur) => Err(Error::FlowTaken {
                    ifname: self.ifname.clone(),
                    flow: *key,
                    owner: cur.slots().first().copied().unwrap_or(u8::MAX),
                }),
                // Removed meanwhile: once more.
                None => self
                    .map
                    .update(&key.to_bytes(), &v, sys::BPF_NOEXIST)
                    .map_err(|e| flow_error(&self.ifname, &self.map, e)),
            },
            Err(e) => Err(flow_error(&self.ifname, &self.map, e)),
        }
    }

    /// `key`'s pin, if the XDP program pinned that connection.
    pub fn pin(&self, key: &FlowKey) -> Result<Option<FlowValue>, Error> {
        let mut v = [0u8; FlowValue::SIZE];
        let found = self
            .pins
            .lookup(&key.to_bytes(), &mut v)
            .map_err(|e| self.err("reading the pin table", e))?;
        Ok(found.then(|| FlowValue::from_bytes(&v)))
    }

    /// Removes the exact flow `key` if this slot holds it. Returns whether it was there and
    /// ours.
    pub fn remove_exact(&self, key: &FlowKey) -> Result<bool, Error> {
        match self.lookup(key)? {
            Some(cur) if cur.slots() == [self.slot] => self
                .map
                .delete(&key.to_bytes())
                .map_err(|e| self.err("removing a flow", e)),
            Some(_) | None => Ok(false),
        }
    }

    /// Sends the exact flow `key` to the kernel from now on (a connection handed over, pinned or
    /// not: the flow map is looked at before the pins). The entry keeps the slot, so the
    /// helper removes it with the process.
    pub fn pass(&self, key: &FlowKey) -> Result<(), Error> {
        let mut v = FlowValue::exact(self.slot);
        v.flags |= FLOW_PASS;
        self.map
            .update(&key.to_bytes(), &v.to_bytes(), sys::BPF_ANY)
            .map_err(|e| flow_error(&self.ifname, &self.map, e))
    }

    /// Drops the exact flow `key`'s packets until [`FlowTable::release`] or
    /// [`FlowTable::pass`]: its connection is moving to the kernel and must not change
    /// meanwhile (the peer retransmits what was dropped). A connection pinned at its SYN gets
    /// an entry of its own for the time (the flow map is looked at before the pins).
    pub fn hold(&self, key: &FlowKey) -> Result<(), Error> {
        let mut v = match self.lookup(key)? {
            Some(cur) if cur.slots() == [self.slot] && !cur.is_pass() => cur,
            _ => {
                let mut v = FlowValue::exact(self.slot);
                v.flags |= FLOW_HELD;
                v
            }
        };
        v.flags |= FLOW_DROP;
        self.map
            .update(&key.to_bytes(), &v.to_bytes(), sys::BPF_ANY)
            .map_err(|e| flow_error(&self.ifname, &self.map, e))
    }

    /// Undoes [`FlowTable::hold`]: the connection stays with this process.
    pub fn release(&self, key: &FlowKey) -> Result<(), Error> {
        match self.lookup(key)? {
            Some(cur) if cur.is_drop() && cur.flags & FLOW_HELD != 0 => self
                .map
                .delete(&key.to_bytes())
                .map(drop)
                .map_err(|e| self.err("removing a flow", e)),
            Some(mut cur) if cur.is_drop() => {
                cur.flags &= !FLOW_DROP;
                self.map
                    .update(&key.to_bytes(), &cur.to_bytes(), sys::BPF_ANY)
                    .map_err(|e| flow_error(&self.ifname, &self.map, e))
            }
            _ => Ok(()),
        }
    }

    /// Removes many pins at once (the connections this process's listeners accepted, pinned
    /// at their SYN by the XDP program, once they are closed): one BPF_MAP_DELETE_BATCH per run
    /// of present keys. Keys not in the table are skipped. Returns how many went.
    pub fn remove_pinned(&self, keys: &[FlowKey]) -> Result<usize, Error> {
        let mut bytes = Vec::with_capacity(keys.len() * FlowKey::SIZE);
        for k in keys {
            bytes.extend_from_slice(&k.to_bytes());
        }
        let mut removed = 0;
        let mut rest: &[u8] = &bytes;
        while !rest.is_empty() {
            let (n, err) = self.pins.delete_batch(rest);
            removed += n;
            match err {
                None => break,
                // The key after the `n` deleted ones is not there: skip it.
                Some(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    rest = &rest[((n + 1) * FlowKey::SIZE).min(rest.len())..];
                }
                Some(e) => return Err(self.err("removing pinned flows", e)),
            }
        }
        Ok(removed)
    }
}
