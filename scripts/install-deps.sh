#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine, and nothing when it is there.
# Go and Rust come with the machine image; their absence is an error with a clear message.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }
for tool in go cargo; do
  need "$tool" || { echo "install-deps: '$tool' is required (Go >= 1.26, Rust >= 1.95)" >&2; exit 1; }
done

missing=()
need cc || missing+=(build-essential)
need git || missing+=(git)
need curl || missing+=(curl)
need python3 || missing+=(python3)   # examples/agent/agent.py runs in tests/sidecar/main.rs
# The Python SDK's tests (tests/sdk.rs) run in a venv of pinned packages (scripts/python-env.sh).
need python3 && python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
# Headless Chromium for the browser tests (tests/browser.rs), driven through chromedriver.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
# nginx terminates TLS in front of the gateway in the benchmark suite (benches/suite/tls.rs), as the
# chart's Ingress would; only its binary is used, with a config of the suite's own.
[ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Packages with services (nginx) must not start them: where no policy says so, say it for now.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The SDK's test venv, cached by interpreter version and pins: no network once it exists.
"$(dirname "$0")/python-env.sh" >/dev/null
# cargo-deny for `make lint` (bans, licenses, sources), pinned and cached: no network once it exists.
"$(dirname "$0")/cargo-deny.sh" --version >/dev/null
