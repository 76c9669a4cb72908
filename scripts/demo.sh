#!/usr/bin/env bash
# Runs a complete local sonde demo: fresh dev certificates, a collector and
# one agent on loopback, embedded store, no external services. Ctrl-C stops.
#   SONDE_DEMO_DIR  state directory (default ./demo-state, wiped at start)
#   SONDE_DEMO_PORT mTLS port (default 7443); health port is PORT+1, the
#                   heartbeat checks' ping port PORT+2
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SONDE_DEMO_DIR:-./demo-state}
port=${SONDE_DEMO_PORT:-7443}
health=$((port + 1))
pings=$((port + 2))

cargo build --quiet --bins
bin=target/debug

rm -rf "$dir"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pki=$dir/pki
"$bin/sonde-certs" init "$pki"
"$bin/sonde-certs" issue "$pki" --tenant demo --role agent --name demo-agent
"$bin/sonde-certs" issue "$pki" --tenant demo --role viewer --name demo-viewer
"$bin/sonde-certs" issue "$pki" --tenant demo --role admin --name demo-admin

cat >"$dir/collector.toml" <<TOML
listen = "127.0.0.1:$port"
health-listen = "127.0.0.1:$health"
# Heartbeat checks' ping URLs (curl -fsS https://localhost:PORT/ping/UUID).
ping-listen = "127.0.0.1:$pings"
state-dir = "collector-state"
[tls]
ca = "pki/ca.pem"
cert = "pki/collector.pem"
key = "pki/collector.key"
crl = ["pki/crl.pem"]
# The prefixes the demo tenant sees in the web UI and the API.
[[tenant]]
name = "demo"
prefixes = ["127.0.0.0/24", "127.0.9.0/24", "::1/128"]
TOML
cat >"$dir/agent.toml" <<TOML
collector = "localhost:$port"
state-dir = "agent-state"
[tls]
ca = "pki/ca.pem"
cert = "pki/demo-agent.pem"
key = "pki/demo-agent.key"
[heartbeat]
interval = "2s"
# The default public-IP sources are internet services: off in the demo.
[public-ip]
enabled = false
# Loopback only: a few addresses pinged, the collector's health port
# connected to, and a traceroute; results stream to the collector.
[[ping]]
targets = ["127.0.0.1", "::1", "127.0.9.0/29"]
[[tcp]]
targets = ["localhost:$health"]
interval = "5s"
[[trace]]
targets = ["127.0.0.1"]
interval = "1m"
TOML

cat >"$dir/sondectl-admin.toml" <<TOML
collector = "localhost:$port"
[tls]
ca = "$pki/ca.pem"
cert = "$pki/demo-admin.pem"
key = "$pki/demo-admin.key"
TOML

"$bin/sonde-collector" --config "$dir/collector.toml" check-config
"$bin/sonde-agent" --config "$dir/agent.toml" check-config

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "demo stopped; state kept in $dir"
}
trap cleanup INT TERM EXIT

"$bin/sonde-collector" --config "$dir/collector.toml" --log stderr &
pids+=($!)
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$health") 2>/dev/null && break
  sleep 0.1
done
"$bin/sonde-agent" --config "$dir/agent.toml" --log stderr &
pids+=($!)

cat <<MSG

  sonde demo running: collector on 127.0.0.1:$port (mTLS), agent "demo-agent" heartbeating every 2s.
  Look at it with the viewer certificate:

    curl --cacert $pki/ca.pem --cert $pki/demo-viewer.pem --key $pki/demo-viewer.key https://localhost:$port/api/v1/agents
    curl --cacert $pki/ca.pem --cert $pki/demo-viewer.pem --key $pki/demo-viewer.key https://localhost:$port/api/v1/events
    curl http://127.0.0.1:$health/healthz

  The web UI: import $pki/demo-viewer.p12 (or demo-admin.p12, which may
  add targets) into your browser with the password printed above, then open
  https://localhost:$port/ (the dev CA is $pki/ca.pem).

  A heartbeat check, as a cron job pings it (the URL is printed once):

    $bin/sondectl --config $dir/sondectl-admin.toml checks create backup --period 1h --grace 10m
    curl -fsS --cacert $pki/ca.pem https://localhost:$pings/ping/UUID

  The agent's probes, one round, as an operator would try them by hand:

    $bin/sonde-agent --config $dir/agent.toml probe-once

  Ctrl-C to stop.

MSG
wait
