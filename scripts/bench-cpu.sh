#!/usr/bin/env bash
# Server CPU per PVC create, for comparing builds on a noisy machine: each server given is run
# in turn (--rounds times), on a fresh data directory, under `wrk -t2 -c64` creates for
# --seconds, and its rate, p99 and CPU time per request (utime+stime from /proc) are printed.
# With --perf, one more run of the last server is recorded with DWARF call graphs (which follow
# async frames, unlike -g) into /tmp/stowage-perf.data; read it with `perf script`.
#
#   ./scripts/bench-cpu.sh /tmp/old/stowage target/release/stowage --rounds 3
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

seconds=10 rounds=3 perf=0 bins=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --perf) perf=1; shift ;;
    -*) echo "unknown argument $1" >&2; exit 2 ;;
    *) bins+=("$(realpath "$1")"); shift ;;
  esac
done
[ "${#bins[@]}" -gt 0 ] || { echo "usage: $0 SERVER... [--seconds N] [--rounds N] [--perf]" >&2; exit 2; }
ensure_apt wrk curl
[ "$perf" = 0 ] || ensure_apt linux-perf

one() {  # one() BIN RECORD: prints "name: rate/s p99 X  server CPU Y µs/request"
  local bin=$1 record=$2 d port spid t0 t1 out n
  d=$(mktemp -d /tmp/stowage-bench-cpu.XXXXXX)
  port=$((20000 + RANDOM % 10000))
  STOWAGE_LOG=warn "$bin" serve --plaintext --listen "127.0.0.1:$port" --data-dir "$d/data" >"$d/server.log" 2>&1 &
  spid=$!
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  STOWAGE_TOKEN=$(awk '/token:/ {print $2; exit}' "$d/data/kubeconfig")
  export STOWAGE_TOKEN
  if [ "$record" = 1 ]; then
    (sleep 2; perf record -F 499 --call-graph dwarf,65528 -p "$spid" -o /tmp/stowage-perf.data -- sleep 3 >/dev/null 2>&1) &
  fi
  t0=$(awk '{print $14 + $15}' "/proc/$spid/stat")
  out=$(wrk -t2 -c64 -d"${seconds}s" --latency -s scripts/bench/stowage-create.lua "http://127.0.0.1:$port")
  t1=$(awk '{print $14 + $15}' "/proc/$spid/stat")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$(basename "$bin") ($bin): $(echo "$out" | awk '/^Requests\/sec/ {print $2}')/s" \
    "p99 $(echo "$out" | awk '$1 == "99%" {print $2}')" \
    "server CPU $(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", (b - a) / hz * 1e6 / n}') µs/request"
  kill "$spid"; wait "$spid" 2>/dev/null || true
  rm -rf "$d"
}

for r in $(seq "$rounds"); do
  for b in "${bins[@]}"; do one "$b" 0; done
done
if [ "$perf" = 1 ]; then
  one "${bins[-1]}" 1
  echo "recorded: perf script -i /tmp/stowage-perf.data -F comm,tid,ip,sym --no-inline"
fi
