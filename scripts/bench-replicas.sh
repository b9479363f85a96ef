#!/usr/bin/env bash
# The replicas benchmark (benches/replicas.rs) with what it needs: a private PostgreSQL
# cluster (started here, stopped at the end) and nfs-ganesha for the failover phase.
# Arguments go to the benchmark, e.g. --clients 64 --creates 20000 --failover-claims 1000.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_apt nfs-ganesha nfs-ganesha-vfs
start_postgres
trap stop_postgres EXIT
cargo bench --locked --bench replicas -- "$@"
