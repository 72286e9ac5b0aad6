//! Thin safe wrappers over libbpf (libbpf-sys) for accel's XDP filter: open the embedded object
//! from memory, load it, attach it with a bpf_link, find links/programs/maps by id, read their
//! info, and operate on maps with byte-slice keys and values whose sizes are checked against the
//! map's own key and value sizes (so the kernel never reads or writes past a Rust buffer).
//!
//! Plus the few other syscalls the filter needs: mounting bpffs and asking an interface its link
//! type and driver (ioctls on a socket of the caller's network namespace).
//!
//! Errors are `io::Error`s carrying the errno (libbpf returns `-errno`). Every fd is an
//! `OwnedFd` as soon as it crosses into Rust.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Once;

use libbpf_sys as sys;

pub(crate) use sys::{
    BPF_ANY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_XSKMAP, BPF_NOEXIST,
    XDP_ATTACHED_DRV, XDP_ATTACHED_SKB, XDP_DROP, XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE, XDP_PASS,
    XDP_REDIRECT,
};

/// `Ok(ret)` for a non-negative libbpf return, else the errno it carries (`-ret`).
fn check(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret))
    } else {
        Ok(ret)
    }
}

/// Takes ownership of an fd returned by a libbpf call that creates one.
fn owned_fd(ret: c_int) -> io::Result<OwnedFd> {
    let fd = check(ret)?;
    // SAFETY: libbpf returned a non-negative value from a call that creates a new fd (link, or
    // get-fd-by-id); nobody else owns it, so the OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn name_from(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// libbpf's own messages (verifier log, relocation warnings) go to tracing, never to the
// application's stderr.

unsafe extern "C" {
    // glibc's vsnprintf; `va_list` on x86-64 is an array of one `__va_list_tag`, passed as a
    // pointer, which is exactly how libbpf hands it to the print callback.
    fn vsnprintf(
        buf: *mut c_char,
        size: usize,
        fmt: *const c_char,
        ap: *mut sys::__va_list_tag,
    ) -> c_int;
}

unsafe extern "C" fn libbpf_print(
    level: sys::libbpf_print_level,
    fmt: *const c_char,
    ap: *mut sys::__va_list_tag,
) -> c_int {
    // The verifier's log comes as one message, often many kilobytes.
    let mut buf = vec![0 as c_char; 64 * 1024];
    // SAFETY: libbpf passes a valid format string and the matching va_list; vsnprintf writes at
    // most `buf.len()` bytes including the terminating NUL into our buffer.
    let n = unsafe { vsnprintf(buf.as_mut_ptr(), buf.len(), fmt, ap) };
    if n < 0 {
        return 0;
    }
    let msg = name_from(&buf);
    let msg = msg.trim_end();
    if level == sys::LIBBPF_WARN {
        tracing::warn!(target: "accel::libbpf", "{msg}");
    } else {
        tracing::debug!(target: "accel::libbpf", "{msg}");
    }
    n
}

fn route_libbpf_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: installs a process-wide callback; libbpf_print is a valid `extern "C"`
        // function with the signature libbpf expects and lives for the whole program.
        unsafe {
            sys::libbpf_set_print(Some(libbpf_print));
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Objects (our program before and while loading).

/// A BPF object opened from an ELF image in memory. Closing it closes its program and map fds;
/// take what must outlive it with `try_clone_to_owned` first.
pub(crate) struct Object {
    ptr: NonNull<sys::bpf_object>,
}

impl Object {
    /// Opens the ELF image. `'static` because libbpf keeps pointing into the buffer until load.
    pub(crate) fn open_mem(image: &'static [u8], name: &str) -> io::Result<Object> {
        route_libbpf_logs();
        let name = cstring(name)?;
        let opts = sys::bpf_object_open_opts {
            sz: size_of::<sys::bpf_object_open_opts>() as _,
            object_name: name.as_ptr(),
            ..Default::default()
        };
        // SAFETY: image is valid for its length and for 'static; opts is a properly sized,
        // zero-initialised options struct; libbpf copies object_name during the call.
        let ptr = unsafe {
            sys::bpf_object__open_mem(image.as_ptr().cast::<c_void>(), image.len() as _, &opts)
        };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Object { ptr }),
            None => Err(io::Error::last_os_error()),
        }
    }

    /// Creates the maps and verifies and loads the programs in the kernel.
    pub(crate) fn load(&mut self) -> io::Result<()> {
        // SAFETY: self.ptr is a live object from bpf_object__open_mem (closed only in Drop).
        check(unsafe { sys::bpf_object__load(self.ptr.as_ptr()) }).map(drop)
    }

    /// The fd of a loaded program, borrowed from the object.
    pub(crate) fn prog_fd(&self, name: &str) -> io::Result<BorrowedFd<'_>> {
        let name = cstring(name)?;
        // SAFETY: self.ptr is live; name is a NUL-terminated string valid for the call.
        let prog =
            unsafe { sys::bpf_object__find_program_by_name(self.ptr.as_ptr(), name.as_ptr()) };
        if prog.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        // SAFETY: prog is a program owned by the live object.
        let fd = check(unsafe { sys::bpf_program__fd(prog) })?;
        // SAFETY: the fd belongs to the object, which outlives the returned borrow (tied to
        // &self) and is the only one that closes it.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// The fd of a created map, borrowed from the object.
    pub(crate) fn map_fd(&self, name: &str) -> io::Result<BorrowedFd<'_>> {
        let name = cstring(name)?;
        // SAFETY: self.ptr is live; name is a NUL-terminated string valid for the call.
        let map = unsafe { sys::bpf_object__find_map_by_name(self.ptr.as_ptr(), name.as_ptr()) };
        if map.is_null() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        // SAFETY: map is owned by the live object.
        let fd = check(unsafe { sys::bpf_map__fd(map) })?;
        // SAFETY: as in prog_fd: the object owns the fd and outlives the borrow.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        // SAFETY: self.ptr came from bpf_object__open_mem and is closed exactly once, here; no
        // BorrowedFd from it survives (they borrow &self).
        unsafe { sys::bpf_object__close(self.ptr.as_ptr()) }
    }
}

// ---------------------------------------------------------------------------------------------
// Attaching and querying XDP.

/// Attaches `prog` to `ifindex` through a new bpf_link (`flags`: XDP_FLAGS_DRV_MODE or
/// XDP_FLAGS_SKB_MODE). The program stays attached while any fd refers to the link.
pub(crate) fn xdp_link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let opts = sys::bpf_link_create_opts {
        sz: size_of::<sys::bpf_link_create_opts>() as _,
        flags,
        ..Default::default()
    };
    // SAFETY: prog is a valid fd for the call; opts is a sized, zero-initialised struct.
    owned_fd(unsafe {
        sys::bpf_link_create(prog.as_raw_fd(), ifindex as c_int, sys::BPF_XDP, &opts)
    })
}

/// Runs the XDP program `prog` once on the frame `data` (BPF_PROG_TEST_RUN, which needs no
/// device: `rx_queue_index` is 0) and returns its verdict (XDP_PASS, XDP_REDIRECT, ...).
/// Map updates the program makes are real.
pub(crate) fn prog_test_run(prog: BorrowedFd<'_>, data: &[u8]) -> io::Result<u32> {
    let mut out = vec![0u8; data.len() + 256];
    let mut opts = sys::bpf_test_run_opts {
        sz: size_of::<sys::bpf_test_run_opts>() as _,
        data_in: data.as_ptr().cast(),
        data_size_in: data.len() as u32,
        data_out: out.as_mut_ptr().cast(),
        data_size_out: out.len() as u32,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: data_in/data_out point at buffers of the sizes given, alive across the call;
    // the kernel writes at most data_size_out bytes to data_out.
    check(unsafe { sys::bpf_prog_test_run_opts(prog.as_raw_fd(), &mut opts) })?;
    Ok(opts.retval)
}

/// Attaches the tc (SCHED_CLS) program `prog` to `ifindex`'s ingress or egress through a new tcx
/// link (kernel 6.6+), after the programs already there. Detached when the last fd closes.
pub(crate) fn tcx_link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    egress: bool,
) -> io::Result<OwnedFd> {
    let opts = sys::bpf_link_create_opts {
        sz: size_of::<sys::bpf_link_create_opts>() as _,
        ..Default::default()
    };
    let kind = if egress {
        sys::BPF_TCX_EGRESS
    } else {
        sys::BPF_TCX_INGRESS
    };
    // SAFETY: prog is a valid fd for the call; opts is a sized, zero-initialised struct (no
    // relative program: append).
    owned_fd(unsafe { sys::bpf_link_create(prog.as_raw_fd(), ifindex as c_int, kind, &opts) })
}

/// What XDP program the interface (in the caller's network namespace) runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct XdpQuery {
    /// The attached program (0: none); set when exactly one mode is attached.
    pub(crate) prog_id: u32,
    pub(crate) drv_prog_id: u32,
    pub(crate) skb_prog_id: u32,
    pub(crate) hw_prog_id: u32,
    /// XDP_ATTACHED_*.
    pub(crate) attach_mode: u32,
}

pub(crate) fn xdp_query(ifindex: u32) -> io::Result<XdpQuery> {
    let mut opts = sys::bpf_xdp_query_opts {
        sz: size_of::<sys::bpf_xdp_query_opts>() as _,
        ..Default::default()
    };
    // SAFETY: opts is a sized struct the call fills in; it lives across the call.
    check(unsafe { sys::bpf_xdp_query(ifindex as c_int, 0, &mut opts) })?;
    Ok(XdpQuery {
        prog_id: opts.prog_id,
        drv_prog_id: opts.drv_prog_id,
        skb_prog_id: opts.skb_prog_id,
        hw_prog_id: opts.hw_prog_id,
        attach_mode: u32::from(opts.attach_mode),
    })
}

// ---------------------------------------------------------------------------------------------
// Links, programs and maps by id.

/// The next link id after `start`, `None` at the end.
pub(crate) fn link_next_id(start: u32) -> io::Result<Option<u32>> {
    let mut next = 0u32;
    // SAFETY: next is a valid u32 out-pointer for the call.
    match check(unsafe { sys::bpf_link_get_next_id(start, &mut next) }) {
        Ok(_) => Ok(Some(next)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn link_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper; the returned fd is new and ours.
    owned_fd(unsafe { sys::bpf_link_get_fd_by_id(id) })
}

pub(crate) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper; the returned fd is new and ours.
    owned_fd(unsafe { sys::bpf_prog_get_fd_by_id(id) })
}

pub(crate) fn map_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall wrapper; the returned fd is new and ours.
    owned_fd(unsafe { sys::bpf_map_get_fd_by_id(id) })
}

#[derive(Debug, Clone)]
pub(crate) struct LinkInfo {
    pub(crate) id: u32,
    pub(crate) prog_id: u32,
    /// `Some(ifindex)` for an XDP link (0 once its interface is gone).
    pub(crate) xdp_ifindex: Option<u32>,
}

pub(crate) fn link_info(link: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    let mut info = sys::bpf_link_info::default();
    let mut len = size_of::<sys::bpf_link_info>() as u32;
    // SAFETY: info is a zeroed bpf_link_info and len its size; the kernel writes at most len
    // bytes into it.
    check(unsafe { sys::bpf_link_get_info_by_fd(link.as_raw_fd(), &mut info, &mut len) })?;
    // SAFETY: the union's members are all plain integers, so reading `xdp.ifindex` is defined
    // whatever the link type; it means an ifindex only for XDP links.
    let ifindex = unsafe { info.__bindgen_anon_1.xdp.ifindex };
    let xdp_ifindex = (info.type_ == sys::BPF_LINK_TYPE_XDP).then_some(ifindex);
    Ok(LinkInfo {
        id: info.id,
        prog_id: info.prog_id,
        xdp_ifindex,
    })
}

#[derive(Debug, Clone)]
pub(crate) struct ProgInfo {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) map_ids: Vec<u32>,
}

pub(crate) fn prog_info(prog: BorrowedFd<'_>) -> io::Result<ProgInfo> {
    let mut info = sys::bpf_prog_info::default();
    let mut len = size_of::<sys::bpf_prog_info>() as u32;
    // SAFETY: info is zeroed (no output arrays requested) and len its size.
    check(unsafe { sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut info, &mut len) })?;
    let mut map_ids = vec![0u32; info.nr_map_ids as usize];
    if !map_ids.is_empty() {
        let mut again = sys::bpf_prog_info {
            nr_map_ids: map_ids.len() as u32,
            map_ids: map_ids.as_mut_ptr() as u64,
            ..Default::default()
        };
        let mut len = size_of::<sys::bpf_prog_info>() as u32;
        // SAFETY: map_ids points at a buffer of nr_map_ids u32s, which is all the kernel writes
        // there; the vec outlives the call.
        check(unsafe { sys::bpf_prog_get_info_by_fd(prog.as_raw_fd(), &mut again, &mut len) })?;
        // A map could have been added in between (not for XDP programs, but be exact).
        map_ids.truncate((again.nr_map_ids as usize).min(map_ids.len()));
    }
    Ok(ProgInfo {
        id: info.id,
        name: name_from(&info.name),
        map_ids,
    })
}

#[derive(Debug, Clone)]
pub(crate) struct MapInfo {
    pub(crate) id: u32,
    pub(crate) map_type: u32,
    pub(crate) name: String,
    pub(crate) key_size: u32,
    pub(crate) value_size: u32,
    pub(crate) max_entries: u32,
}

pub(crate) fn map_info(map: BorrowedFd<'_>) -> io::Result<MapInfo> {
    let mut info = sys::bpf_map_info::default();
    let mut len = size_of::<sys::bpf_map_info>() as u32;
    // SAFETY: info is zeroed and len its size; the kernel writes at most len bytes.
    check(unsafe { sys::bpf_map_get_info_by_fd(map.as_raw_fd(), &mut info, &mut len) })?;
    Ok(MapInfo {
        id: info.id,
        map_type: info.type_,
        name: name_from(&info.name),
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
    })
}

// ---------------------------------------------------------------------------------------------
// Maps.

/// A BPF map fd with its sizes; every operation checks buffer lengths against them, which is what
/// makes these wrappers safe (the kernel copies exactly key_size / value_size bytes).
#[derive(Debug)]
pub(crate) struct Map {
    fd: OwnedFd,
    info: MapInfo,
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

impl Map {
    /// Wraps a map fd. Per-CPU maps are refused: their values are value_size times the number of
    /// possible CPUs, which the length checks below do not model.
    pub(crate) fn new(fd: OwnedFd) -> io::Result<Map> {
        let info = map_info(fd.as_fd())?;
        if matches!(
            info.map_type,
            sys::BPF_MAP_TYPE_PERCPU_HASH
                | sys::BPF_MAP_TYPE_PERCPU_ARRAY
                | sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
                | sys::BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE
        ) {
            return Err(einval());
        }
        Ok(Map { fd, info })
    }

    pub(crate) fn info(&self) -> &MapInfo {
        &self.info
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check_key(&self, key: &[u8]) -> io::Result<()> {
        if key.len() == self.info.key_size as usize {
            Ok(())
        } else {
            Err(einval())
        }
    }

    fn check_value(&self, value: &[u8]) -> io::Result<()> {
        if value.len() == self.info.value_size as usize {
            Ok(())
        } else {
            Err(einval())
        }
    }

    /// BPF_MAP_UPDATE_ELEM with `flags` (BPF_ANY, BPF_NOEXIST, ...).
    pub(crate) fn update(&self, key: &[u8], value: &[u8], flags: u32) -> io::Result<()> {
        self.check_key(key)?;
        self.check_value(value)?;
        // SAFETY: key and value are exactly key_size and value_size bytes (checked above), which
        // is what the kernel reads.
        check(unsafe {
            sys::bpf_map_update_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_ptr().cast(),
                u64::from(flags),
            )
        })
        .map(drop)
    }

    /// Reads the value of `key` into `value`; `false` if there is no such key.
    pub(crate) fn lookup(&self, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
        self.check_key(key)?;
        self.check_value(value)?;
        // SAFETY: key is key_size bytes; value is value_size bytes, all the kernel writes.
        let r = check(unsafe {
            sys::bpf_map_lookup_elem(
                self.fd.as_raw_fd(),
                key.as_ptr().cast(),
                value.as_mut_ptr().cast(),
            )
        });
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key`; `false` if it was not there.
    pub(crate) fn delete(&self, key: &[u8]) -> io::Result<bool> {
        self.check_key(key)?;
        // SAFETY: key is key_size bytes.
        let r =
            check(unsafe { sys::bpf_map_delete_elem(self.fd.as_raw_fd(), key.as_ptr().cast()) });
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The key after `key` (the first key for `None`) into `next`; `false` at the end.
    pub(crate) fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> io::Result<bool> {
        if let Some(k) = key {
            self.check_key(k)?;
        }
        self.check_key(next)?;
        let kp = key.map_or(std::ptr::null(), |k| k.as_ptr().cast());
        // SAFETY: key is null (meaning "first") or key_size bytes; next is key_size bytes, all
        // the kernel writes.
        let r = check(unsafe {
            sys::bpf_map_get_next_key(self.fd.as_raw_fd(), kp, next.as_mut_ptr().cast())
        });
        match r {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A snapshot of all keys (entries changing meanwhile may be missed or repeated).
    pub(crate) fn keys(&self) -> io::Result<Vec<Vec<u8>>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let size = self.info.key_size as usize;
        loop {
            let mut next = vec![0u8; size];
            let more = self.next_key(keys.last().map(Vec::as_slice), &mut next)?;
            if !more || keys.len() > self.info.max_entries as usize {
                return Ok(keys);
            }
            keys.push(next);
        }
    }

    /// Every (key, value) of a hash map, a batch of lookups at a time (BPF_MAP_LOOKUP_BATCH),
    /// or one by one where the kernel has no batches for the map. A snapshot: entries changing
    /// meanwhile may be missed.
    pub(crate) fn entries(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        const CHUNK: usize = 1024;
        let (ks, vs) = (self.info.key_size as usize, self.info.value_size as usize);
        let mut keys = vec![0u8; ks * CHUNK];
        let mut values = vec![0u8; vs * CHUNK];
        // The position token: a bucket index (u32) for hash maps; room for more.
        let mut token_in = [0u64; 2];
        let mut token_out = [0u64; 2];
        let mut first = true;
        let mut out = Vec::new();
        loop {
            let mut count = CHUNK as u32;
            let opts = sys::bpf_map_batch_opts {
                sz: size_of::<sys::bpf_map_batch_opts>() as _,
                ..Default::default()
            };
            let in_ptr = if first {
                std::ptr::null_mut()
            } else {
                token_in.as_mut_ptr().cast()
            };
            // SAFETY: keys and values hold CHUNK entries of exactly key_size and value_size
            // bytes, and count says CHUNK, so the kernel writes inside them; the tokens are 16
            // bytes, more than the 4 a hash map's token takes.
            let r = unsafe {
                sys::bpf_map_lookup_batch(
                    self.fd.as_raw_fd(),
                    in_ptr,
                    token_out.as_mut_ptr().cast(),
                    keys.as_mut_ptr().cast(),
                    values.as_mut_ptr().cast(),
                    &mut count,
                    &opts,
                )
            };
            let n = (count as usize).min(CHUNK);
            for i in 0..n {
                out.push((
                    keys[i * ks..(i + 1) * ks].to_vec(),
                    values[i * vs..(i + 1) * vs].to_vec(),
                ));
            }
            match check(r) {
                Ok(_) => {
                    token_in = token_out;
                    first = false;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(out),
                Err(e)
                    if first
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
                        ) =>
                {
                    return self.entries_one_by_one();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn entries_one_by_one(&self) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for k in self.keys()? {
            let mut v = vec![0u8; self.info.value_size as usize];
            if self.lookup(&k, &mut v)? {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// BPF_MAP_DELETE_BATCH of the keys in `keys` (back to back, key_size bytes each). Returns
    /// how many were deleted, and the error that stopped the batch (ENOENT: the key after them
    /// was not in the map).
    pub(crate) fn delete_batch(&self, keys: &[u8]) -> (usize, Option<io::Error>) {
        let size = self.info.key_size as usize;
        if size == 0 || !keys.len().is_multiple_of(size) {
            return (0, Some(einval()));
        }
        let mut count = (keys.len() / size) as u32;
        if count == 0 {
            return (0, None);
        }
        let opts = sys::bpf_map_batch_opts {
            sz: size_of::<sys::bpf_map_batch_opts>() as _,
            ..Default::default()
        };
        // SAFETY: keys holds `count` keys of exactly key_size bytes (checked), which is all the
        // kernel reads; count is an in/out u32 the kernel sets to the number deleted.
        let r = unsafe {
            sys::bpf_map_delete_batch(self.fd.as_raw_fd(), keys.as_ptr().cast(), &mut count, &opts)
        };
        let done = (count as usize).min(keys.len() / size);
        match check(r) {
            Ok(_) => (done, None),
            Err(e) => (done, Some(e)),
        }
    }

    /// Pins the map at `path` in a bpffs.
    pub(crate) fn pin(&self, path: &Path) -> io::Result<()> {
        let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| einval())?;
        // SAFETY: path is NUL-terminated and valid for the call; the fd is live.
        check(unsafe { sys::bpf_obj_pin(self.fd.as_raw_fd(), path.as_ptr()) }).map(drop)
    }
}

// ---------------------------------------------------------------------------------------------
// bpffs.

/// Opens the object pinned at `path`.
pub(crate) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| einval())?;
    // SAFETY: path is NUL-terminated and valid for the call; the returned fd is new and ours.
    owned_fd(unsafe { sys::bpf_obj_get(path.as_ptr()) })
}

/// Whether `path` is on a bpf filesystem.
pub(crate) fn is_bpffs(path: &Path) -> io::Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    Ok(st.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// Whether the effective uid is root.
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `mount -t bpf bpf PATH`.
pub(crate) fn mount_bpffs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_bytes()).map_err(|_| einval())?;
    let bpf = c"bpf";
    // SAFETY: all three strings are NUL-terminated and live across the call; data is null,
    // which mount(2) accepts for bpffs.
    let r = unsafe {
        libc::mount(
            bpf.as_ptr(),
            target.as_ptr(),
            bpf.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

// ---------------------------------------------------------------------------------------------
// Interface facts, asked through ioctls on a socket (so in the caller's network namespace).

fn ifreq_for(ifname: &str) -> io::Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    }
    // SAFETY: ifreq is a plain C struct/union for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as c_char;
    }
    Ok(req)
}

fn ioctl_socket() -> io::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)
}

/// The interface's hardware type (`ARPHRD_*`; 1 is Ethernet).
pub(crate) fn if_hw_type(ifname: &str) -> io::Result<u16> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(ifname)?;
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr inside the ifreq we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after a successful SIOCGIFHWADDR the union holds ifru_hwaddr.
    Ok(unsafe { req.ifr_ifru.ifru_hwaddr.sa_family })
}

const ETHTOOL_GDRVINFO: u32 = 0x3;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// `struct ethtool_drvinfo` from <linux/ethtool.h>.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}

/// The interface's driver name (`ethtool -i`), e.g. "veth".
pub(crate) fn if_driver(ifname: &str) -> io::Result<String> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(ifname)?;
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    req.ifr_ifru.ifru_data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO writes one ethtool_drvinfo at ifru_data, which
    // points at `info`, alive and correctly laid out for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = info
        .driver
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(info.driver.len());
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

const _: () = assert!(size_of::<EthtoolDrvinfo>() == 196);

const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ethtool_channels` from <linux/ethtool.h>.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const _: () = assert!(size_of::<EthtoolChannels>() == 36);

/// The RX queues the interface uses now (`ethtool -l`: RX plus combined channels), which may
/// be fewer than it could have: a veth made without `numrxqueues` can have one per CPU but
/// uses one. In the caller's network namespace, like every ioctl on an interface name.
pub(crate) fn if_rx_channels(ifname: &str) -> io::Result<u32> {
    let sock = ioctl_socket()?;
    let mut req = ifreq_for(ifname)?;
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    req.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS writes one ethtool_channels at ifru_data,
    // which points at `ch`, alive and correctly laid out for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ch.rx_count.saturating_add(ch.combined_count))
}
