#!/usr/bin/env bash
# The whole sonde test suite, for a fresh Debian 12 machine (root, Rust
# toolchain). Installs what the tests need, skipping what is already there,
# then checks formatting and lints, builds the binaries the end-to-end tests
# run, and runs every test. Tests only use loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need, installed one apt command at a time after a
# single `apt-get update`, only when missing.
apt_packages=(
  fping      # reference pinger the ICMP tests compare against
  iproute2   # ip netns / veth: the namespaces probe tests build
  nftables   # loss, outages and SYN drops inside those namespaces
  systemd    # systemd-analyze verify / security on the units
  systemd-container  # systemd-nspawn: the packages installed into a real systemd
  debootstrap        # the Debian root file system that container boots
  lintian    # checks the .debs
  rpm        # rpm -i / -V / -e inside that container
  rpmlint    # checks the .rpms
  victoria-metrics   # a real InfluxDB-write-API server for the export tests
  socat      # listeners whose program the port inventory must name
  faketime   # libfaketime: the agent clock-jump test steps its system clock
  chromium   # the headless browser the web UI tests drive
  curl       # pings heartbeat checks as cron jobs do
)
apt_updated=0
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && continue
  if [ "$apt_updated" = 0 ]; then apt-get update; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$pkg"
done

# Node.js for Playwright (the web UI tests); Debian's when the machine has none.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$apt_updated" = 0 ]; then apt-get update; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nodejs
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends npm
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || { echo "scripts/test.sh: playwright-core needs Node.js >= 20 (found $(node --version))" >&2; exit 1; }
# playwright-core, pinned by tests/ui/package-lock.json (it drives the
# system chromium; no browser download).
[ -d tests/ui/node_modules/playwright-core ] || npm ci --prefix tests/ui --no-audit --no-fund

# A real SMTP server for the alerting tests (tests/smtp_sink.py).
python3 -c 'import aiosmtpd' 2>/dev/null || python3 -m pip install --quiet --root-user-action=ignore aiosmtpd==1.4.6

rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

# The package builders (packaging/build.sh would install them too).
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb
command -v cargo-generate-rpm >/dev/null || cargo install --locked cargo-generate-rpm
# Supply-chain policy (deny.toml) and the fuzzer driver.
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

# CI's disk is not large: build once without incremental caches (a fresh
# machine gains nothing from them), and say how much room there is.
export CARGO_INCREMENTAL=0
df -h . | sed 's/^/disk: /'

cargo fmt --all -- --check
(cd fuzz && cargo fmt -- --check)
cargo clippy --workspace --all-targets --locked -- -D warnings

# Dependencies: licences, duplicate versions, sources (deny.toml). The
# advisory database is fetched from github.com; where that cannot be
# reached the check is reported as NOT RUN (never as passed).
cargo deny --locked check bans licenses sources
if cargo deny --locked check advisories 2>"${TMPDIR:-/tmp}/sonde-advisories.log"; then
  echo "cargo deny: advisories ok"
elif grep -q "failed to fetch advisory database" "${TMPDIR:-/tmp}/sonde-advisories.log"; then
  echo "cargo deny: advisories NOT RUN: the RustSec database (github.com) cannot be fetched from this machine" >&2
else
  cat "${TMPDIR:-/tmp}/sonde-advisories.log" >&2
  exit 1
fi

# Fuzz targets, 60 s each (scripts/fuzz.sh); their build is removed
# afterwards to leave the disk to the tests.
# A crash fails the run at the end, after the tests have also been run.
fuzzed=0
FUZZ_TARGET_DIR=target/fuzz bash scripts/fuzz.sh 60 || fuzzed=$?
rm -rf target/fuzz
# The end-to-end tests run the real binaries; build them first.
cargo build --workspace --bins --locked
# The package tests install revision 1 and upgrade to revision 2 of the
# same sources.
bash packaging/build.sh 1
bash packaging/build.sh 2
# Stream the output and end with one summary line over every test binary
# (cargo's own last line is that of the last doc-test run).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
tested=$?
set -e
df -h . | sed 's/^/disk: /'
du -sh target | sed 's/^/disk: /'
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "sonde: %d passed, %d failed\n", p, f; if (p == 0 || f > 0) exit 1 }' "$log"
[ "$tested" = 0 ] || exit "$tested"
if [ "$fuzzed" != 0 ]; then
  echo "sonde: a fuzz target FAILED (its input and panic are printed above, after 'fuzz: ... FAILED')" >&2
  exit "$fuzzed"
fi
