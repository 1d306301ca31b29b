#!/usr/bin/env bash
# Runs cargo-deny's offline checks on the dependency tree (deny.toml: bans, licenses, sources),
# installing the pinned cargo-deny into the version-keyed cache first (one `cargo install`, once
# per machine; no network after that). The advisory check needs the RUSTSEC database from the
# network and is not run here (docs/security.md).
#   scripts/cargo-deny.sh                  the three offline checks (what `make lint` runs)
#   scripts/cargo-deny.sh check advisories any other cargo-deny command line
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=../tests/cluster/env.sh
source "$root/tests/cluster/env.sh"
: "${CARGO_DENY_VERSION:=0.20.2}"
dir=$AGENTAUTH_CACHE_DIR/cargo-deny-v$CARGO_DENY_VERSION
if [ ! -x "$dir/bin/cargo-deny" ]; then
  mkdir -p "$AGENTAUTH_CACHE_DIR"
  # One installer at a time.
  exec 9>"$dir.lock"
  flock 9
  if [ ! -x "$dir/bin/cargo-deny" ]; then
    echo "cargo-deny: installing $CARGO_DENY_VERSION into $dir" >&2
    rm -rf "$dir.tmp"
    # A cheaper release build (the checks take seconds either way): about half the compile time
    # of cargo-deny's own profile on a 2-core CI machine.
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=false \
      CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_DEBUG=0 \
      cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked --root "$dir.tmp" --quiet
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
fi
if [ $# -eq 0 ]; then
  set -- check bans licenses sources
fi
exec "$dir/bin/cargo-deny" --manifest-path "$root/Cargo.toml" --locked "$@"
