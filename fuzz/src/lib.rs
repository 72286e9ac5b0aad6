//! accel's fuzz targets, as plain functions over `&[u8]` so they run on the stable toolchain:
//!
//! - [`ingress`]: one Ethernet frame into a stack that has a listener, an established
//!   connection and a bound UDP port, through the real receive path (`Stack::poll` over a link:
//!   `ingress.rs`, `device.rs`, smoltcp), then the replies go back and forth once.
//! - [`desc`]: AF_XDP RX descriptors through `libaccel::desc` (the check that runs before a
//!   descriptor's bytes become a slice), against an independent model.
//! - [`netlink`]: a netlink datagram into the control plane's mirror
//!   (`Table::apply_datagram`, the path `ControlPlane::refresh` takes), then lookups.
//!
//! A target panics when it finds a bug; any input is otherwise fine. [`mutate`] and [`run`]
//! make a small mutational fuzzer over the seed corpus (`fuzz/corpus/TARGET/`), used by the CI
//! smoke test and by `accel-fuzz run` for long runs; `fuzz/libfuzzer/` wraps the same targets
//! for cargo-fuzz (coverage-guided, needs nightly features: see fuzz/README.md).

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

pub mod corpus;
pub mod ingress;

/// A fuzz target: any input is fine unless it panics.
pub type Target = fn(&[u8]);

/// The targets by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("ingress", ingress::run),
    ("desc", desc),
    ("netlink", netlink),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Descriptors as 12-byte records (address u64 LE, length u32 LE) checked against accel's UMEM
/// layout; every accepted range must be inside one frame, every refused one must be bad.
pub fn desc(data: &[u8]) {
    use libaccel::desc::{BadDesc, UmemLayout};
    let layouts = [
        libaccel::queue::UMEM_LAYOUT,
        UmemLayout {
            frame_count: 3,
            frame_size: 2048,
        },
        UmemLayout {
            frame_count: 0,
            frame_size: 4096,
        },
    ];
    for rec in data.chunks_exact(12) {
        let addr = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(rec[8..].try_into().expect("4 bytes"));
        for l in layouts {
            let size = u128::from(l.frame_size);
            let umem = u128::from(l.frame_count) * size;
            let (a, e) = (u128::from(addr), u128::from(addr) + u128::from(len));
            let model = if a >= umem || size == 0 {
                Err(BadDesc::OutsideUmem)
            } else if e > (a / size + 1) * size {
                Err(BadDesc::CrossesFrame)
            } else {
                Ok(a as usize..e as usize)
            };
            let got = l.rx_range(addr, len);
            assert_eq!(got, model, "descriptor {addr:#x}+{len} in {l:?}");
            if let Ok(r) = got {
                assert!(r.end as u128 <= umem && r.start <= r.end);
                assert_eq!(l.frame_of(r.start as u64), l.frame_of(addr));
            }
        }
    }
}

/// One netlink datagram into a mirror of interface 2 (with an address and a route already in
/// it), then route and next-hop lookups.
pub fn netlink(data: &[u8]) {
    use libaccel::control::{InterfaceInfo, Table};
    use std::net::Ipv4Addr;
    let mut t = Table::new(InterfaceInfo {
        index: 2,
        name: "eth0".into(),
        mac: [2, 0, 0, 0, 0, 1],
        mtu: 1500,
        up: true,
        ethernet: true,
        addrs: vec![(Ipv4Addr::new(198, 18, 0, 1), 24)],
        rx_queues: 1,
        tx_queues: 1,
        kind: Some("veth".into()),
        link: None,
        link_netnsid: None,
    });
    for seed in corpus::netlink_setup() {
        t.apply_datagram(&seed);
    }
    t.apply_datagram(data);
    for dst in [
        Ipv4Addr::new(198, 18, 0, 2),
        Ipv4Addr::new(203, 0, 113, 1),
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(255, 255, 255, 255),
    ] {
        let _ = t.route(dst);
        let _ = t.decide(dst);
    }
    let iface = t.interface();
    assert_eq!(
        iface.index, 2,
        "the mirror changed which interface it follows"
    );
}

/// xorshift64*: the fuzzer's randomness (seeded, so a run can be repeated).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Values that tend to find edge cases in lengths and offsets.
const INTERESTING: &[u8] = &[
    0, 1, 2, 4, 5, 6, 15, 16, 20, 40, 60, 64, 0x7f, 0x80, 0xfe, 0xff,
];

/// A random variation of `input`: 1 to 8 edits (bit flips, byte writes, inserts, deletes,
/// duplicated runs, splices from `other`), bounded to `max_len` bytes.
pub fn mutate(rng: &mut Rng, input: &[u8], other: &[u8], max_len: usize) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(8) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next_u64() as u8;
            }
            2 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                for _ in 0..n {
                    v.insert(i, rng.next_u64() as u8);
                }
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = (1 + rng.below(16)).min(len - i);
                v.drain(i..i + n);
            }
            5 if len > 1 => {
                // A 16-bit field set to an interesting value, both byte orders.
                let i = rng.below(len - 1);
                let x = [
                    0u16,
                    1,
                    0x7fff,
                    0x8000,
                    0xffff,
                    len as u16,
                    (len as u16) << 2,
                ][rng.below(7)];
                let b = if rng.below(2) == 0 {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                };
                v[i..i + 2].copy_from_slice(&b);
            }
            6 if !other.is_empty() => {
                let from = rng.below(other.len());
                let n = 1 + rng.below(other.len() - from);
                let at = rng.below(len + 1);
                v.splice(at..at, other[from..from + n].iter().copied());
            }
            7 if len > 0 => {
                let n = rng.below(len);
                v.truncate(n);
            }
            _ => {}
        }
    }
    v.truncate(max_len);
    v
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    pub inputs: u64,
    pub corpus: usize,
    /// Inputs that made the target panic (written under `artifacts` when given).
    pub crashes: Vec<Vec<u8>>,
}

/// Runs `target` on every corpus input, then on `runs` mutations of them (seeded by `seed`).
/// A panicking input is recorded (and saved to `artifacts/crash-<n>` if given) and the run goes
/// on, up to `max_crashes`.
pub fn run(
    target: Target,
    corpus: &[Vec<u8>],
    runs: u64,
    seed: u64,
    artifacts: Option<&Path>,
    max_crashes: usize,
) -> RunReport {
    let mut report = RunReport {
        corpus: corpus.len(),
        ..RunReport::default()
    };
    let quiet = QuietPanics::new();
    let mut rng = Rng::new(seed);
    let empty: Vec<Vec<u8>> = vec![Vec::new()];
    let pool = if corpus.is_empty() { &empty } else { corpus };
    let check = |input: &[u8], report: &mut RunReport| {
        report.inputs += 1;
        if panic::catch_unwind(AssertUnwindSafe(|| target(input))).is_err() {
            if let Some(dir) = artifacts {
                let _ = std::fs::create_dir_all(dir);
                let path = dir.join(format!("crash-{}", report.crashes.len()));
                let _ = std::fs::write(path, input);
            }
            report.crashes.push(input.to_vec());
        }
    };
    for input in corpus {
        check(input, &mut report);
    }
    for _ in 0..runs {
        if report.crashes.len() >= max_crashes {
            break;
        }
        let a = &pool[rng.below(pool.len())];
        let b = &pool[rng.below(pool.len())];
        let input = mutate(&mut rng, a, b, 4096);
        check(&input, &mut report);
    }
    drop(quiet);
    report
}

/// Silences the panic hook while a run catches panics (each crash is reported once, by the
/// runner), restoring it afterwards.
type Hook = Box<dyn Fn(&panic::PanicHookInfo<'_>) + Sync + Send + 'static>;

struct QuietPanics {
    prev: Option<Hook>,
}

impl QuietPanics {
    fn new() -> QuietPanics {
        let prev = panic::take_hook();
        panic::set_hook(Box::new(|info| {
            if std::env::var_os("ACCEL_FUZZ_VERBOSE").is_some() {
                eprintln!("{info}");
            }
        }));
        QuietPanics { prev: Some(prev) }
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        if let Some(prev) = self.prev.take() {
            panic::set_hook(prev);
        }
    }
}

/// `fuzz/corpus/TARGET` in the source tree.
pub fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target)
}

/// Every file of a corpus directory, sorted by name (so runs are repeatable).
pub fn load_corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}
