//! What the preload adds to a call on a kernel fd: `write` of 1 byte to /dev/null through the
//! interposer (fd-table check, then the real write) against the real write itself.

use std::os::fd::AsRawFd;

use accel_preload::abi::{write_direct, write_interposed};
use criterion::{criterion_group, criterion_main, Criterion};

fn kernel_fd_write(c: &mut Criterion) {
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let fd = null.as_raw_fd();
    let byte = [0u8; 1];
    let mut g = c.benchmark_group("kernel_fd_write_1B_dev_null");
    // The first benchmark of a run measures ~40 ns faster than anything after it, whichever
    // it is (seen here with direct first and direct again last), which is the size of what is
    // measured: a warm-up run goes first, then each twice in the order A B B A.
    // Overhead = mean(interposed) - mean(direct).
    g.bench_function("warm-up (ignore)", |b| b.iter(|| write_direct(fd, &byte)));
    g.bench_function("direct", |b| b.iter(|| write_direct(fd, &byte)));
    g.bench_function("interposed", |b| b.iter(|| write_interposed(fd, &byte)));
    g.bench_function("interposed (again)", |b| {
        b.iter(|| write_interposed(fd, &byte))
    });
    g.bench_function("direct (again)", |b| b.iter(|| write_direct(fd, &byte)));
    g.finish();
}

criterion_group!(benches, kernel_fd_write);
criterion_main!(benches);
