#!/usr/bin/env bash
# Prints the path of a Python interpreter that has the SDK's pinned test dependencies
# (clients/python/requirements-test.txt), creating its venv on first use.
# The venv lives in the version-keyed cache, keyed by the interpreter's version and the pinned list,
# so a cached machine needs no network and a changed pin gets a fresh venv. tests/sdk.rs runs this;
# scripts/install-deps.sh runs it so `make test` has it ready. The SDK itself is not installed here:
# tests install the working tree's copy (offline) so they always test the current source.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tests/cluster/env.sh
source "$root/tests/cluster/env.sh"
pins=$root/clients/python/requirements-test.txt
py=${AGENTAUTH_PYTHON:-python3}
command -v "$py" >/dev/null || { echo "python-env: '$py' not found (apt-get install python3 python3-venv)" >&2; exit 1; }

key=$({ "$py" -c 'import sys; print(sys.version)'; cat "$pins"; } | sha256sum | cut -c1-16)
venv=$AGENTAUTH_CACHE_DIR/python-$key
if [ ! -e "$venv/.complete" ]; then
  mkdir -p "$AGENTAUTH_CACHE_DIR"
  # One creator at a time (test binaries and `make deps` may run this together).
  exec 9>"$AGENTAUTH_CACHE_DIR/python-$key.lock"
  flock 9
  if [ ! -e "$venv/.complete" ]; then
    rm -rf "$venv"
    echo "python-env: creating $venv" >&2
    "$py" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --disable-pip-version-check -q --no-deps -r "$pins" >&2
    touch "$venv/.complete"
  fi
fi
echo "$venv/bin/python"
