#!/usr/bin/env bash
# The main job: nginx and sockperf on a throwaway two-namespace veth topology, on the kernel
# and under accel-run, side by side (tools/src/bin/accel-demo.rs).
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Only what the demo runs (accel-demo, accel-run and the preload library): the tests' and
# microbenchmarks' crates would double the build.
cargo build --release --locked -p accel-tools -p accel-preload
exec ./target/release/accel-demo "$@"
