//! accel's criterion microbenchmarks live in `benches/` (run `cargo bench -p accel-benches`).
