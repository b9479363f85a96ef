#!/usr/bin/env bash
# Fuzzes a real `stowage serve` (the debug build unless STOWAGE_BIN says otherwise): Schemathesis
# against the server's own OpenAPI documents, then hand-written hostile bodies and patches
# (deep nesting, YAML alias bombs, huge lists, odd content types and encodings, odd numbers and
# quantities, hostile JSON / merge / strategic / apply patches). Fails on any 5xx, a crash, a
# hang, a panic in the server log, or the server's RSS over FUZZ_MAX_RSS_MIB (default 1024).
# Bounded: about four minutes on two cores. Knobs: see tests/fuzz/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

section "Fuzzing dependencies (schemathesis 4.32.5, hypothesis 6.170.17)"
ensure_venv fuzz 'schemathesis==4.32.5' 'hypothesis==6.170.17' 'requests==2.34.2' 'urllib3==2.8.0' 'PyYAML==6.0.4'

STOWAGE_BIN="${STOWAGE_BIN:-$PWD/target/debug/stowage}"
if [ ! -x "$STOWAGE_BIN" ]; then
  echo "error: no server binary at $STOWAGE_BIN (run cargo build first, or set STOWAGE_BIN)" >&2
  exit 1
fi

section "Fuzzing $STOWAGE_BIN"
STOWAGE_BIN="$STOWAGE_BIN" HYPOTHESIS_STORAGE_DIRECTORY="$CACHE/fuzz-hypothesis" PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 \
  "$CACHE/fuzz/bin/python" tests/fuzz/run.py
