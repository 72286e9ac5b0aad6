//! The fuzz smoke run CI does on the stable toolchain: every target on its whole seed corpus,
//! then on a bounded, seeded set of mutations (deterministic: the same inputs every run). Long
//! runs use `accel-fuzz run` or cargo-fuzz (fuzz/README.md).

use accel_fuzz::ingress::{self, world, FIX_ALL};
use accel_fuzz::{corpus, corpus_dir, load_corpus, run, TARGETS};

const MUTATIONS: u64 = 20_000;

#[test]
fn seed_corpus_in_the_repository_is_the_one_the_code_builds() {
    for (name, _) in TARGETS {
        let dir = corpus_dir(name);
        for (file, bytes) in corpus::seeds(name) {
            let on_disk = std::fs::read(dir.join(&file))
                .unwrap_or_else(|e| panic!("{name}/{file}: {e} (run `accel-fuzz seed`)"));
            assert_eq!(
                on_disk, bytes,
                "{name}/{file} differs from corpus.rs: run `accel-fuzz seed` and commit"
            );
        }
    }
}

#[test]
fn every_target_survives_its_corpus_and_seeded_mutations() {
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        let corpus = load_corpus(&corpus_dir(name)).expect("corpus");
        assert!(!corpus.is_empty(), "{name} has no seed corpus");
        let r = run(*target, &corpus, MUTATIONS, 0x5eed + i as u64, None, 1);
        assert_eq!(r.inputs, corpus.len() as u64 + MUTATIONS, "{name}");
        if let Some(input) = r.crashes.first() {
            panic!(
                "{name} panics on {input:02x?}; replay it with `accel-fuzz replay {name} FILE` \
                 (ACCEL_FUZZ_VERBOSE=1 shows the panic)"
            );
        }
    }
}

/// The ingress seeds reach what they are meant to (so mutations of them do too).
#[test]
fn ingress_seeds_reach_the_stack_as_meant() {
    let seeds: std::collections::HashMap<String, Vec<u8>> =
        corpus::seeds("ingress").into_iter().collect();
    let deliver = |name: &str| {
        let mut w = world();
        let mut f = seeds[name][1..].to_vec();
        ingress::fix_up(&mut f, seeds[name][0]);
        let before = w.pair.b.stack.counters().clone();
        w.pair.b.link.inject(f);
        w.pair.b.poll(w.pair.now);
        let after = w.pair.b.stack.counters().clone();
        (before, after)
    };
    let (b, a) = deliver("udp-0");
    assert_eq!(a.udp_rx_datagrams, b.udp_rx_datagrams + 1);
    let (b, a) = deliver("tcp-bad-checksum");
    assert_eq!(a.rx_drop_bad_checksum, b.rx_drop_bad_checksum + 1);
    let (b, a) = deliver("other-mac");
    assert_eq!(a.rx_drop_wrong_mac, b.rx_drop_wrong_mac + 1);
    let (b, a) = deliver("arp");
    assert_eq!(a.rx_drop_not_ipv4, b.rx_drop_not_ipv4 + 1);
    let (b, a) = deliver("tcp-rst-ack");
    assert_eq!(a.tcp_rx_rst, b.tcp_rx_rst + 1);
    assert_eq!(a.rx_drop_bad_checksum, b.rx_drop_bad_checksum);
    assert_eq!(seeds["ipv4-options"][0], FIX_ALL);
}
