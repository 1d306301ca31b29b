#!/usr/bin/env bash
# Builds the components of the test node (tests/cluster/src/node, docs/test-node.md) into the same
# version-keyed cache as build.sh: kube-scheduler, the kubelet and kube-proxy (via build.sh, same
# Kubernetes version as the control plane), containerd 2.x with its runc shim, runc, the CNI plugins
# bridge/host-local/loopback/portmap, and a static pause binary. Debian packages the node needs at run
# time (iptables, conntrack, iproute2, util-linux's unshare/nsenter) and to build runc
# (libseccomp-dev, pkg-config) are installed with apt when missing. Present binaries are not rebuilt.
# `make control-plane` (so `make test`) runs it.
#
#   tests/cluster/build-node.sh       build what is missing, print the bin directories
#                                     (k8s:containerd:runc:cni:pause)
#
# Route: kubelet 1.36 needs a runtime that answers CRI RuntimeConfig (containerd >= 2.0); Debian's
# containerd is 1.6, so containerd and runc are built from Go modules (neither replaces a module).
set -euo pipefail

CONTAINERD_VERSION=${CONTAINERD_VERSION:-2.4.2}
# The runc that containerd's own CI pins (script/setup/runc-version in the containerd module).
RUNC_VERSION=${RUNC_VERSION:-1.5.2}
CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION:-1.9.1}

here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"

AGENTAUTH_BIN_CONTAINERD=$AGENTAUTH_CACHE_DIR/containerd-v$CONTAINERD_VERSION
AGENTAUTH_BIN_RUNC=$AGENTAUTH_CACHE_DIR/runc-v$RUNC_VERSION
AGENTAUTH_BIN_CNI=$AGENTAUTH_CACHE_DIR/cni-plugins-v$CNI_PLUGINS_VERSION
AGENTAUTH_BIN_PAUSE=$AGENTAUTH_CACHE_DIR/pause-$(sha256sum "$here/pause.c" | cut -c1-16)

log() { echo "build-node.sh: $*" >&2; }

# go_install out ldflags tags pkg@version...: builds each package as released into out.
go_install() {
  local out=$1 ld=$2 tags=$3; shift 3
  mkdir -p "$out"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"; trap - RETURN' RETURN
  local -x GOCACHE=$w/gocache # compiled packages are never reused: keep the disk free
  (cd "$w" && GOBIN="$w/bin" go install -trimpath -tags "$tags" -ldflags "$ld" "$@")
  mv "$w"/bin/* "$out/"
}

apt_ensure() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return
  log "apt-get install ${missing[*]}"
  apt-get install -y --no-install-recommends "${missing[@]}" >&2 || { apt-get update >&2 && apt-get install -y --no-install-recommends "${missing[@]}" >&2; }
}

build_packages() { apt_ensure iptables conntrack iproute2 util-linux libseccomp-dev pkg-config gcc libc6-dev; }

build_kubelet() { K8S_CMDS="kubelet kube-proxy kube-scheduler" "$here/build.sh" k8s >/dev/null; }

build_containerd() {
  local out=$AGENTAUTH_BIN_CONTAINERD m=github.com/containerd/containerd/v2
  if [ -x "$out/containerd" ] && [ -x "$out/containerd-shim-runc-v2" ] && [ -x "$out/ctr" ]; then return; fi
  log "building containerd v$CONTAINERD_VERSION into $out"
  # No cgo: the btrfs snapshotter (cgo only) drops out; overlayfs is what the node uses.
  CGO_ENABLED=0 go_install "$out" "-s -w -X $m/version.Version=v$CONTAINERD_VERSION" "no_btrfs no_devmapper no_zfs" \
    "$m/cmd/containerd@v$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@v$CONTAINERD_VERSION" "$m/cmd/ctr@v$CONTAINERD_VERSION"
}

build_runc() {
  local out=$AGENTAUTH_BIN_RUNC
  if [ -x "$out/runc" ]; then return; fi
  log "building runc v$RUNC_VERSION into $out"
  # runc needs cgo (libcontainer/nsenter is C); seccomp is linked statically so the binary needs no
  # libseccomp at run time (the chart's pods ask for seccomp RuntimeDefault).
  CGO_ENABLED=1 go_install "$out" "-s -w -X main.version=$RUNC_VERSION -extldflags -static" "seccomp netgo osusergo" \
    "github.com/opencontainers/runc@v$RUNC_VERSION"
}

build_cni() {
  local out=$AGENTAUTH_BIN_CNI p m=github.com/containernetworking/plugins/plugins missing=
  for p in bridge host-local loopback portmap; do [ -x "$out/$p" ] || missing=1; done
  [ -z "$missing" ] && return
  log "building CNI plugins v$CNI_PLUGINS_VERSION into $out"
  CGO_ENABLED=0 go_install "$out" "-s -w" "" "$m/main/bridge@v$CNI_PLUGINS_VERSION" \
    "$m/ipam/host-local@v$CNI_PLUGINS_VERSION" "$m/main/loopback@v$CNI_PLUGINS_VERSION" "$m/meta/portmap@v$CNI_PLUGINS_VERSION"
}

build_pause() {
  local out=$AGENTAUTH_BIN_PAUSE
  if [ -x "$out/pause" ]; then return; fi
  log "building pause into $out"
  mkdir -p "$out"
  gcc -Os -static -Wall -Werror -o "$out/pause.tmp" "$here/pause.c"
  strip "$out/pause.tmp"
  mv "$out/pause.tmp" "$out/pause"
}

targets=${*:-packages kubelet containerd runc cni pause}
for t in $targets; do "build_$t"; done
echo "$AGENTAUTH_BIN_K8S:$AGENTAUTH_BIN_CONTAINERD:$AGENTAUTH_BIN_RUNC:$AGENTAUTH_BIN_CNI:$AGENTAUTH_BIN_PAUSE"
