#!/usr/bin/env bash
# Installs what `make bench` needs beyond the test dependencies: the HTTP load generator wrk, from
# Debian's packages (a separate process drives the gateway; it reports latency percentiles).
# Idempotent and silent when wrk is there.
set -euo pipefail

command -v wrk >/dev/null 2>&1 && exit 0
echo "install-bench-deps: apt-get install wrk" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing or stale on a fresh machine: update once if the install fails.
if ! apt-get install -y -qq wrk >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq wrk >/dev/null
fi
command -v wrk >/dev/null 2>&1 || { echo "install-bench-deps: wrk is still missing" >&2; exit 1; }
