# Helpers shared by the project's scripts. Source it; do not run it.

CACHE="${STOWAGE_CACHE:-$PWD/.cache}"
mkdir -p "$CACHE"

section() { printf '\n==> %s\n' "$*"; }

# Fails the run under CI=true; warns (and lets the caller skip) otherwise.
missing() {
  if [ "${CI:-}" = "true" ]; then
    echo "error: $* (required under CI=true)" >&2
    exit 1
  fi
  echo "warning: $*" >&2
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
