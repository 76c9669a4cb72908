#!/usr/bin/env bash
# The heartbeat checks' ping endpoint under load (issue 24): a release
# sonde-collector on loopback, CHECKS checks made through the API, CLIENTS
# concurrent HTTPS clients for SECONDS per phase, side by side with a
# minimal HTTPS server that records nothing. Prints figures; asserts
# nothing. Usage: scripts/bench-pings.sh [CHECKS] [CLIENTS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins -p sonde-collector -p sonde-tests
exec target/release/sonde-ping-bench "$@"
