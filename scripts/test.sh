#!/usr/bin/env bash
# The one test command (README, CI): installs what it needs, builds, runs every test.
# Privileged tests (namespaces, veth, AF_XDP) need root; they fail, never skip, without it.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --workspace --bins --locked
# Two test threads: the machine has two cores and every network test busy-polls one.
cargo test --workspace --locked -- --test-threads=2
