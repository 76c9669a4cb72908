#!/usr/bin/env bash
# The collector benchmark (issue 5): simulated agents over mTLS into a
# release sonde-collector exporting to VictoriaMetrics, the same points
# straight into VictoriaMetrics as the ceiling, and the prefix-grid API
# latency. Loopback only; prints figures, asserts nothing.
# Arguments: AGENTS TARGETS SECONDS (default 100 1000 30).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v victoria-metrics >/dev/null || { apt-get update && apt-get install -y --no-install-recommends victoria-metrics; }
cargo build --release --locked --bins -p sonde-collector -p sonde-tests
exec target/release/sonde-ingest-bench "$@"
