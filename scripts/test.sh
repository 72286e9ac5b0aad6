#!/usr/bin/env bash
# The one test command (README, CI): installs what it needs, builds, runs every test.
# Privileged tests (namespaces, veth, AF_XDP) need root; they fail, never skip, without it.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Everything, the preload library (cdylib) included: the tests run the built tools.
cargo build --workspace --locked
# Real programs run under the release build of accel-run and the preload (tests/src/apps.rs).
cargo build --release --workspace --locked
# Two test threads: the machine has two cores and every network test busy-polls one.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log" || status=$?
# The vendored smoltcp (outside the workspace), with the features the root Cargo.toml asks for.
features=$(sed -n 's/^smoltcp = .*features = \[\(.*\)\].*/\1/p' Cargo.toml | tr -d '"' | tr ',' ' ')
[ -n "$features" ] || { echo "test.sh: no smoltcp feature list found in Cargo.toml" >&2; exit 1; }
cargo test --locked --manifest-path third_party/smoltcp/Cargo.toml --target-dir target/smoltcp \
    --lib --no-default-features --features "$features" -- --test-threads=2 2>&1 | tee -a "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary, the last often a
# doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "accel: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
