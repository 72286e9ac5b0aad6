#!/usr/bin/env bash
# Installs what accel needs on a fresh Debian machine (run as root). Idempotent.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
pkgs=(clang llvm libelf-dev zlib1g-dev pkg-config m4 libpcap-dev libbpf-dev make gcc
      iproute2 iputils-ping ethtool util-linux procps
      # programs the preload acceptance tests run unmodified (tests/tests/preload_*.rs)
      sockperf iperf3 nginx-light redis-server redis-tools wrk socat curl netcat-openbsd)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup) first" >&2; exit 1; }
