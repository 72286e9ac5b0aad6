#!/usr/bin/env bash
# The main job on its embedded default: accel-echo on a throwaway two-namespace topology,
# kernel clients on the other side, measured side by side with the kernel.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --workspace --locked
exec ./target/release/accel-demo "$@"
