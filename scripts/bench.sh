#!/usr/bin/env bash
# The probe benchmark (issue 3): release builds of sonde-agent and
# sonde-collector against fping, on loopback only. Prints figures; asserts
# nothing. Takes about 3 minutes. Run as root (raw ICMP sockets) on an
# otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v fping >/dev/null || { apt-get update && apt-get install -y --no-install-recommends fping; }
cargo build --release --locked --bins -p sonde-agent -p sonde-collector -p sonde-tests
exec target/release/sonde-bench "$@"
