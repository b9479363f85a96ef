# Helpers shared by the project's scripts. Source it; do not run it.

CACHE="${STOWAGE_CACHE:-$PWD/.cache}"
mkdir -p "$CACHE"

section() { printf '\n==> %s\n' "$*"; }

# Components the run opted out of: STOWAGE_SKIP=nfs,nfsv3,ebs,clients,fuzz (nothing by default).
skipping() {
  [[ ",${STOWAGE_SKIP:-}," == *",$1,"* ]]
}

# What was skipped by choice, for the summary.
SKIPPED=()

# missing COMPONENT MESSAGE: a component the tests need is missing. That fails the run,
# CI or not, unless the run opted out of the component (STOWAGE_SKIP); then it is recorded.
missing() {
  local component=$1; shift
  if skipping "$component"; then
    echo "skipping $component (STOWAGE_SKIP): $*" >&2
    SKIPPED+=("$component")
    return 0
  fi
  echo "error: $* (install it, or opt out with STOWAGE_SKIP=$component)" >&2
  exit 1
}

# ensure_venv NAME PACKAGE... : a virtualenv under .cache/NAME with the packages installed.
# Each tool gets its own venv, so their dependency pins never fight.
ensure_venv() {
  local name=$1; shift
  local dir="$CACHE/$name" stamp
  stamp="$dir/.installed-$(printf '%s\n' "$@" | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ]; then return 0; fi
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  touch "$stamp"
}

# ensure_apt PACKAGE... : installs Debian packages that are not installed yet.
ensure_apt() {
  local wanted=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || wanted+=("$p")
  done
  if [ "${#wanted[@]}" -eq 0 ]; then return 0; fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "cannot install ${wanted[*]} (needs root and apt-get)" >&2
    return 1
  fi
  echo "installing ${wanted[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${wanted[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${wanted[@]}" >/dev/null; } ||
    { echo "installing ${wanted[*]} failed" >&2; return 1; }
}

# in_private_network NAME COMMAND... : runs COMMAND in a new network namespace that has only
# loopback, with its own /run and rpcbind (NFSv3 needs rpcbind, which cannot be bound to
# loopback only on the host).
in_private_network() {
  unshare --net --mount --fork -- bash -c '
    set -euo pipefail
    ip link set lo up
    mount -t tmpfs tmpfs /run
    rpcbind -f -w & rpcbind=$!
    for _ in $(seq 50); do [ -S /run/rpcbind.sock ] && break; sleep 0.1; done
    status=0
    "$@" || status=$?
    kill "$rpcbind" 2>/dev/null || true
    wait "$rpcbind" 2>/dev/null || true
    exit "$status"
  ' in_private_network "$@"
}

# start_postgres: installs Debian's PostgreSQL if needed and starts a private cluster (initdb
# in a temporary directory, run by the unprivileged `postgres` user, on a free loopback port,
# trust authentication on loopback only). Sets STOWAGE_TEST_POSTGRES to a URL of its
# maintenance database (tests create a database of their own in it) and POSTGRES_DIR; call
# stop_postgres when done (test.sh does, on exit).
start_postgres() {
  ensure_apt postgresql || return 1
  local bin port
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$bin" ] || { echo "no PostgreSQL binaries under /usr/lib/postgresql" >&2; return 1; }
  POSTGRES_BIN=$bin
  POSTGRES_DIR=$(mktemp -d /tmp/stowage-pg.XXXXXX)
  chown postgres "$POSTGRES_DIR"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  su postgres -s /bin/sh -c "$bin/initdb -D $POSTGRES_DIR/data -A trust -U postgres" >/dev/null || return 1
  # Enough connections for many servers with a pool each; fsync stays on (the default).
  su postgres -s /bin/sh -c "$bin/pg_ctl -D $POSTGRES_DIR/data -l $POSTGRES_DIR/log \
    -o '-p $port -k $POSTGRES_DIR -c listen_addresses=127.0.0.1 -c max_connections=500' -w start" >/dev/null ||
    { cat "$POSTGRES_DIR/log" >&2; return 1; }
  export STOWAGE_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $($bin/postgres --version | awk '{print $3}') on 127.0.0.1:$port ($POSTGRES_DIR)"
}

stop_postgres() {
  [ -n "${POSTGRES_DIR:-}" ] || return 0
  su postgres -s /bin/sh -c "$POSTGRES_BIN/pg_ctl -D $POSTGRES_DIR/data -m fast stop" >/dev/null 2>&1 || true
  rm -rf "$POSTGRES_DIR"
}
