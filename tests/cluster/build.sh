#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl), the test
# OAuth provider (Dex), its revocation helper (tests/dex/revoke) and Helm (for tests/chart.rs) from Go
# modules, into a cache keyed by version (by source hash for the helper). Present binaries are not
# rebuilt.
#
#   tests/cluster/build.sh            build what is missing, print the bin directories (k8s:etcd:dex:dexrevoke:helm)
#   AGENTAUTH_CACHE_DIR=/x build.sh   use another cache
#
# k8s.io/kubernetes and etcd cannot be `go install`ed: their go.mod files replace sibling modules with
# local paths. Each is built from a small wrapper module that requires the real module and pins every
# such sibling to its published version.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-1.36.3}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
# Dex publishes no /v2 module path; pin the commit of its v2.45.1 tag by pseudo-version.
DEX_VERSION=${DEX_VERSION:-v0.0.0-20260303133905-11d2eeb52b42}
HELM_VERSION=${HELM_VERSION:-3.22.0}

here=$(cd "$(dirname "$0")" && pwd)
. "$here/env.sh"

log() { echo "build.sh: $*" >&2; }

# dexrevoke: the test helper in tests/dex/revoke, cached under a hash of its source.
DEXREVOKE_SRC=$(cd "$here/../dex/revoke" && pwd)
AGENTAUTH_BIN_DEXREVOKE=$AGENTAUTH_CACHE_DIR/dexrevoke-$(cat "$DEXREVOKE_SRC/main.go" "$DEXREVOKE_SRC/go.mod" "$DEXREVOKE_SRC/go.sum" | sha256sum | cut -c1-16)

AGENTAUTH_BIN_HELM=$AGENTAUTH_CACHE_DIR/helm-v$HELM_VERSION

go_build() { # dir out pkg ldflags
  (cd "$1" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$4" -o "$2.tmp" "$3")
  mv "$2.tmp" "$2"
}

# K8S_CMDS: which k8s.io/kubernetes/cmd/* binaries the k8s target builds (build-node.sh asks for the
# kubelet and kube-proxy into the same version-keyed directory).
K8S_CMDS=${K8S_CMDS:-kube-apiserver kube-controller-manager kubectl}

build_k8s() {
  local out=$AGENTAUTH_BIN_K8S cmd missing=
  for cmd in $K8S_CMDS; do [ -x "$out/$cmd" ] || missing+=" $cmd"; done
  if [ -z "$missing" ]; then return; fi
  log "building Kubernetes v$K8S_VERSION$missing into $out (first time only; takes many minutes)"
  mkdir -p "$out"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  local -x GOCACHE=$w/gocache # compiled packages are never reused: keep the disk free
  local gomod; gomod=$(cd "$w" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module agentauth.dev/k8s-build"
    echo "go 1.26"
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="v0.${K8S_VERSION#1.}" '{print "replace " $1 " => " $1 " " v}'
  } >"$w/go.mod"
  echo 'package main' >"$w/main.go"
  local minor; minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  local ld=""
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$w" && GOFLAGS=-mod=mod go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" >&2)
  for cmd in $missing; do
    log "go build $cmd"
    go_build "$w" "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd" "-s -w $ld"
  done
}

build_etcd() {
  local out=$AGENTAUTH_BIN_ETCD
  if [ -x "$out/etcd" ]; then return; fi
  log "building etcd v$ETCD_VERSION into $out"
  mkdir -p "$out"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  local -x GOCACHE=$w/gocache # compiled packages are never reused: keep the disk free
  cat >"$w/go.mod" <<MOD
module agentauth.dev/etcd-build
go 1.26
require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
replace go.etcd.io/etcd/api/v3 => go.etcd.io/etcd/api/v3 v$ETCD_VERSION
replace go.etcd.io/etcd/client/pkg/v3 => go.etcd.io/etcd/client/pkg/v3 v$ETCD_VERSION
replace go.etcd.io/etcd/client/v3 => go.etcd.io/etcd/client/v3 v$ETCD_VERSION
replace go.etcd.io/etcd/pkg/v3 => go.etcd.io/etcd/pkg/v3 v$ETCD_VERSION
MOD
  echo 'package main' >"$w/main.go"
  (cd "$w" && GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2)
  go_build "$w" "$out/etcd" go.etcd.io/etcd/server/v3 "-s -w"
}

build_dex() {
  local out=$AGENTAUTH_BIN_DEX
  if [ -x "$out/dex" ]; then return; fi
  log "building Dex $DEX_VERSION into $out"
  mkdir -p "$out"
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  local -x GOCACHE=$w/gocache # compiled packages are never reused: keep the disk free
  cat >"$w/go.mod" <<MOD
module agentauth.dev/dex-build
go 1.26
require github.com/dexidp/dex $DEX_VERSION
MOD
  local apiver
  apiver=$(cd "$w" && go mod download -json "github.com/dexidp/dex@$DEX_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' | xargs grep -E '^\s*github.com/dexidp/dex/api/v2 v' | awk '{print $2}')
  [ -n "$apiver" ] && echo "replace github.com/dexidp/dex/api/v2 => github.com/dexidp/dex/api/v2 $apiver" >>"$w/go.mod"
  echo 'package main' >"$w/main.go"
  (cd "$w" && GOFLAGS=-mod=mod go get "github.com/dexidp/dex/cmd/dex@$DEX_VERSION" >&2)
  go_build "$w" "$out/dex" github.com/dexidp/dex/cmd/dex "-s -w -X main.version=v2.45.1"
}

build_dexrevoke() {
  local out=$AGENTAUTH_BIN_DEXREVOKE
  if [ -x "$out/dexrevoke" ]; then return; fi
  log "building dexrevoke into $out"
  mkdir -p "$out"
  # Build from a copy so the module download never rewrites the committed go.mod/go.sum.
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  local -x GOCACHE=$w/gocache # compiled packages are never reused: keep the disk free
  cp "$DEXREVOKE_SRC/main.go" "$DEXREVOKE_SRC/go.mod" "$DEXREVOKE_SRC/go.sum" "$w/"
  go_build "$w" "$out/dexrevoke" . "-s -w"
}

build_helm() {
  local out=$AGENTAUTH_BIN_HELM
  if [ -x "$out/helm" ]; then return; fi
  log "building Helm v$HELM_VERSION into $out"
  mkdir -p "$out"
  # helm.sh/helm/v3 has no replace directives: `go install pkg@version` builds it as released. The
  # ldflags are those of Helm's Makefile: the version `helm version` reports, and the Kubernetes
  # version of its client-go (used for .Capabilities.KubeVersion in `helm template` and lint).
  local w; w=$(mktemp -d); trap 'rm -rf "$w"' RETURN
  local -x GOCACHE=$w/gocache # compiled packages are never reused: keep the disk free
  local gomod kmin
  gomod=$(cd "$w" && go mod download -json "helm.sh/helm/v3@v$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  kmin=$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod" | cut -d. -f2)
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  if [ -n "$kmin" ]; then
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      ld+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kmin"
    done
  fi
  (cd "$w" && CGO_ENABLED=0 GOBIN="$w" go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION")
  mv "$w/helm" "$out/helm"
}

targets=${*:-k8s etcd dex dexrevoke helm}
for t in $targets; do "build_$t"; done
echo "$AGENTAUTH_BIN_K8S:$AGENTAUTH_BIN_ETCD:$AGENTAUTH_BIN_DEX:$AGENTAUTH_BIN_DEXREVOKE:$AGENTAUTH_BIN_HELM"
