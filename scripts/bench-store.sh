#!/usr/bin/env bash
# Stowage against etcd, one driver, one run: wrk (C, keep-alive, plain HTTP) creates claims in
# a release `stowage serve` (SQLite, WAL, synchronous=FULL), then puts keys of the same size
# into Debian's etcd through its JSON gateway. Prints both, their ratio, and Stowage's WAL
# during the load and 10 s after it.
#
#   scripts/bench-store.sh [--seconds 15] [--connections 64] [--rounds 1]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=15 connections=64 rounds=1
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

ensure_apt wrk etcd-server
# The benchmarks' build (release, the same features as `cargo bench`, so it is usually warm).
cargo bench --locked --bench api --no-run
bin=$PWD/target/release/stowage
work=$(mktemp -d /tmp/stowage-bench-store.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wrk_run NAME URL SCRIPT: runs wrk and sets RATE (requests/s) and P99 (ms).
wrk_run() {
  local out
  out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$3" "$2")
  echo "$out" | sed 's/^/    /' >&2
  RATE=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  P99=$(echo "$out" | awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}')
  if echo "$out" | grep -q "Non-2xx"; then
    echo "error: $1 answered errors under load" >&2
    exit 1
  fi
}

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
wal_bytes() { stat -c %s "$1/stowage.db-wal" 2>/dev/null || echo 0; }

for round in $(seq "$rounds"); do
  section "round $round: Stowage, $connections connections, ${seconds} s of PVC creates"
  data=$work/stowage-$round
  port=$(free_port)
  STOWAGE_LOG=warn "$bin" serve --plaintext --listen "127.0.0.1:$port" --data-dir "$data" >"$work/stowage.log" 2>&1 &
  spid=$!; pids+=("$spid")
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  export STOWAGE_TOKEN
  STOWAGE_TOKEN=$(awk '/token:/ {print $2; exit}' "$data/kubeconfig")
  # The WAL's largest size while the load runs, sampled every 100 ms.
  ( peak=0; while kill -0 "$spid" 2>/dev/null; do s=$(wal_bytes "$data"); [ "$s" -gt "$peak" ] && peak=$s && echo "$peak" >"$work/wal-peak"; sleep 0.1; done ) &
  pids+=("$!")
  wrk_run stowage "http://127.0.0.1:$port" scripts/bench/stowage-create.lua
  s_rate=$RATE s_p99=$P99
  rss=$(awk '/VmRSS/ {print $2 * 1024}' "/proc/$spid/status")
  sleep 10
  wal_after=$(wal_bytes "$data")
  wal_peak=$(cat "$work/wal-peak" 2>/dev/null || echo 0)
  db=$(stat -c %s "$data/stowage.db")
  kill "$spid"; wait "$spid" 2>/dev/null || true

  section "round $round: etcd $(etcd --version | awk '/etcd Version/ {print $3}'), same driver, same connections"
  eport=$(free_port); epeer=$(free_port)
  etcd --data-dir "$work/etcd-$round" --listen-client-urls "http://127.0.0.1:$eport" \
    --advertise-client-urls "http://127.0.0.1:$eport" --listen-peer-urls "http://127.0.0.1:$epeer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$epeer" --initial-cluster "default=http://127.0.0.1:$epeer" \
    --log-level error >"$work/etcd.log" 2>&1 &
  epid=$!; pids+=("$epid")
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$eport/health" >/dev/null 2>&1 && break; sleep 0.1; done
  wrk_run etcd "http://127.0.0.1:$eport" scripts/bench/etcd-put.lua
  e_rate=$RATE e_p99=$P99
  kill "$epid"; wait "$epid" 2>/dev/null || true

  section "round $round: results"
  printf '  %-34s %10.0f/s   p99 %6.2f ms\n' "Stowage PVC creates (durable)" "$s_rate" "$s_p99"
  printf '  %-34s %10.0f/s   p99 %6.2f ms\n' "etcd puts (JSON gateway)" "$e_rate" "$e_p99"
  printf '  %-34s %10.2fx  (target >= 1.5x, p99 <= 25 ms)\n' "Stowage / etcd" "$(awk -v a="$s_rate" -v b="$e_rate" 'BEGIN {print a / b}')"
  printf '  %-34s %s peak during the load, %s 10 s after it (targets 256 / 64 MiB); database %s\n' \
    "Stowage WAL" "$(mib "$wal_peak")" "$(mib "$wal_after")" "$(mib "$db")"
  printf '  %-34s %s after the load\n' "Stowage RSS" "$(mib "$rss")"
done
