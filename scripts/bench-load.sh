#!/usr/bin/env bash
# The load generator (issue 9): simulated agents, each with its own client
# certificate, over mTLS gRPC into a release sonde-collector (embedded
# store), on loopback. Prints figures; exits 1 only when something was lost,
# doubled or refused. Arguments go to sonde-load, e.g.
#   scripts/bench-load.sh --agents 1000 --targets 20 --duration 5m
#   scripts/bench-load.sh --duration 60s --steps 1000x20,1000x100,1000x200,2000x100
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bins -p sonde-collector -p sonde-tests
exec target/release/sonde-load "$@"
