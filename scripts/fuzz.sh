#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each.
#   scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s, every target)
# CI (scripts/test.sh) runs each for 60 s; run longer by hand, e.g.
#   scripts/fuzz.sh 3600 agent_message
# FUZZ_RELEASE=1 builds optimised with AddressSanitizer (slower to build,
# needs RUSTC_BOOTSTRAP for -Zsanitizer); the default is a quick
# unsanitised build (Rust's own checks still catch overflows and panics).
# New inputs are written to fuzz/corpus/TARGET (committed); the seeds in
# fuzz/seeds/TARGET are read only. A crash leaves its input in
# fuzz/artifacts/TARGET/ and fails this script.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config agent_message spool_reader api_query)

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

if [ "${FUZZ_RELEASE:-0}" = 1 ]; then
  export RUSTC_BOOTSTRAP=1
  mode=(--release --sanitizer address)
else
  mode=(--dev --sanitizer none)
fi
target_dir=$(realpath -m "${FUZZ_TARGET_DIR:-fuzz/target}")
started=$(date +%s)
(cd fuzz && cargo fuzz build "${mode[@]}" --target-dir "$target_dir")
echo "fuzz: built in $(( $(date +%s) - started )) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run() {
  local t=$1
  mkdir -p "fuzz/corpus/$t"
  (cd fuzz && cargo fuzz run "${mode[@]}" --target-dir "$target_dir" "$t" "corpus/$t" "seeds/$t" -- \
      -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1) >"$logs/$t.log" 2>&1
}
# Two at a time: the machine has two cores.
failed=0
for ((i = 0; i < ${#targets[@]}; i += 2)); do
  pids=()
  for t in "${targets[@]:i:2}"; do run "$t" & pids+=("$!:$t"); done
  for p in "${pids[@]}"; do
    if wait "${p%%:*}"; then
      t=${p#*:}
      runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || echo "?")
      cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -n 1 || true)
      echo "fuzz: $t: ${runs} runs in ${seconds} s, ${cov}, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs, no crash"
    else
      t=${p#*:}
      failed=1
      echo "fuzz: $t FAILED:" >&2
      # The panic message comes before libFuzzer's long report: show both.
      grep -m 3 -A 4 "panicked at" "$logs/$t.log" >&2 || true
      echo "..." >&2
      grep -v '^ *[0-9]*: \|^ *at ' "$logs/$t.log" | tail -n 40 >&2
    fi
  done
done
exit "$failed"
