#!/usr/bin/env bash
# The load generator (issue 9): simulated agents, each with its own client
# certificate, over mTLS gRPC into a release sonde-collector (embedded
# store), on loopback. Prints figures; exits 1 only when something was lost,
# doubled or refused. Arguments go to sonde-load, e.g.
#   scripts/bench-load.sh --agents 1000 --targets 20 --duration 5m
#   scripts/bench-load.sh --duration 60s --steps 1000x20,1000x100,1000x200,2000x100
#
# --compare REF (first argument) also builds the release collector of git
# revision REF (in a temporary worktree, target/bench-ref) and runs the
# same steps against it, one after the other in this invocation, the
# working tree's last; then prints both summaries and the ratios
# (working tree / REF).
set -euo pipefail
cd "$(dirname "$0")/.."
ref=""
if [ "${1:-}" = "--compare" ]; then
  ref="${2:?--compare needs a git revision}"
  shift 2
fi
cargo build --release --locked --bins -p sonde-collector -p sonde-tests
if [ -z "$ref" ]; then
  exec target/release/sonde-load "$@"
fi

rev=$(git rev-parse --verify "$ref^{commit}")
tree=$(mktemp -d)
out=$(mktemp -d)
trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true; rm -rf "$tree" "$out"' EXIT
git worktree add --detach "$tree" "$rev" >/dev/null
echo "building the collector of $ref ($rev)"
CARGO_TARGET_DIR="$(pwd)/target/bench-ref" cargo build --release --locked \
  --manifest-path "$tree/Cargo.toml" --bin sonde-collector
ref_bin="$(pwd)/target/bench-ref/release/sonde-collector"

echo "=== REF $ref ($rev)"
status=0
target/release/sonde-load --collector "$ref_bin" "$@" | tee "$out/ref" || status=1
echo "=== working tree ($(git rev-parse --short HEAD)$(git diff --quiet || echo ', modified'))"
target/release/sonde-load "$@" | tee "$out/new" || status=1

echo
echo "=== comparison (working tree / $ref)"
python3 - "$out/ref" "$out/new" <<'EOF'
import sys

def steps(path):
    rows = {}
    for line in open(path):
        line = line.strip()
        if line.startswith("RESULT "):
            kv = dict(p.split("=", 1) for p in line.split()[1:])
            rows[kv["step"]] = kv
    return rows

ref, new = steps(sys.argv[1]), steps(sys.argv[2])
keys = ["acked_per_s", "ack_p50_ms", "ack_p99_ms", "collector_cores", "rss_max_mib", "analysis_lag_s"]
print(f"{'step':>4} {'agents x targets':>16} {'figure':>16} {'REF':>12} {'tree':>12} {'ratio':>8}")
for step in sorted(set(ref) | set(new), key=int):
    r, n = ref.get(step), new.get(step)
    shape = (n or r)["agents"] + "x" + (n or r)["targets"]
    for k in keys:
        # Absent or -1: the figure does not exist in that build.
        val = lambda row: float(row[k]) if row and k in row and float(row[k]) >= 0 else None
        rv, nv = val(r), val(n)
        ratio = f"{nv / rv:.2f}" if rv and nv is not None else "-"
        fmt = lambda v: "-" if v is None else f"{v:.1f}"
        print(f"{step:>4} {shape:>16} {k:>16} {fmt(rv):>12} {fmt(nv):>12} {ratio:>8}")
    for k in ["kept_up", "clean"]:
        print(f"{step:>4} {shape:>16} {k:>16} {(r or {}).get(k, 'not run'):>12} {(n or {}).get(k, 'not run'):>12}")
EOF
exit $status
