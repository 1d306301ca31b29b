#!/usr/bin/env bash
# `make image`: the operator's OCI image (the operator, running `run` by default, and the kubectl plugin)
# built from this checkout without a registry, a base image or a container daemon, as an OCI archive.
# The Dockerfile builds the same image where base images can be pulled; both share one recipe:
# - the root filesystem comes from `scripts/image.sh rootfs`, which the Dockerfile's build stage runs
#   too (scripts/rootfs.sh: the stripped binaries, their glibc libraries, passwd/group, CA bundle);
# - the image config (LABEL, ENV, USER, EXPOSE, ENTRYPOINT, CMD) is read from the Dockerfile's final
#   stage, so it cannot drift; an instruction this script does not understand there is an error.
#
#   scripts/image.sh                       # release build; prints the archive path last
#   PROFILE=debug scripts/image.sh         # reuses the debug build (the copies are stripped)
#   BIN_DIR=DIR scripts/image.sh           # the binaries in DIR as they are, no cargo build (tests/node)
#   IMAGE=localhost/agentauth/agent-auth-operator:dev  OUT=target/image/agent-auth-operator.tar
#   IMPORT_ADDRESS=/run/containerd/containerd.sock CTR=ctr scripts/image.sh   # also imports it
#   scripts/image.sh rootfs ROOT BINDIR    # only the root filesystem, from BINDIR's binaries
#   scripts/image.sh config                # only the OCI config read from the Dockerfile
#
# Needs cargo, ldd, strip, tar and sha256sum. Same binaries, same archive bytes.
set -euo pipefail

die() { echo "image: $*" >&2; exit 1; }
repo=$(cd "$(dirname "$0")/.." && pwd)

# rootfs ROOT BINDIR: the image's root filesystem.
rootfs() {
  STRIP=1 "$repo/scripts/rootfs.sh" "$1" \
    "$2/agent-auth-operator=/usr/local/bin/agent-auth-operator" \
    "$2/kubectl-agentauth=/usr/local/bin/kubectl-agentauth"
}

# json_str S: S as a JSON string (the Dockerfile's values are single lines).
json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "${s//$'\t'/\\t}"
}

# dockerfile_config DOCKERFILE: the OCI "config" object from the final stage's instructions.
dockerfile_config() {
  local -a lines=() labels=() env=() ports=()
  local line acc="" i last=-1 instr rest k v p user="" workdir="" entrypoint="" cmd="" IFS=$' \t\n'
  while IFS= read -r line || [ -n "$line" ]; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue # comments and blank lines, also within continuations
    if [[ $line == *\\ ]]; then acc+="${line%\\} "; continue; fi
    lines+=("$acc$line") acc=""
  done <"$1"
  for i in "${!lines[@]}"; do [[ ${lines[$i]} =~ ^[[:space:]]*FROM[[:space:]] ]] && last=$i; done
  [ "$last" -ge 0 ] || die "$1 has no FROM"
  [[ ${lines[$last]} =~ ^[[:space:]]*FROM[[:space:]]+scratch[[:space:]]*$ ]] ||
    die "$1: the final stage must be FROM scratch (this image has no base): ${lines[$last]}"
  for ((i = last + 1; i < ${#lines[@]}; i++)); do
    read -r instr rest <<<"${lines[$i]}"
    case ${instr^^} in
      COPY) ;; # the root filesystem, built by rootfs above
      LABEL | ENV)
        while [[ $rest =~ ^[[:space:]]*([^=[:space:]]+)=(\"([^\"]*)\"|([^\"[:space:]]*))(.*)$ ]]; do
          k=${BASH_REMATCH[1]} v=${BASH_REMATCH[3]}${BASH_REMATCH[4]} rest=${BASH_REMATCH[5]}
          if [ "${instr^^}" = LABEL ]; then labels+=("$(json_str "$k"):$(json_str "$v")"); else env+=("$(json_str "$k=$v")"); fi
        done
        [[ $rest =~ ^[[:space:]]*$ ]] || die "$1: cannot read '$rest' in: ${lines[$i]}"
        ;;
      USER) user=$(json_str "$rest") ;;
      WORKDIR) workdir=$(json_str "$rest") ;;
      EXPOSE)
        for p in $rest; do
          [[ $p == */* ]] || p=$p/tcp
          ports+=("$(json_str "$p"):{}")
        done
        ;;
      ENTRYPOINT | CMD) # the exec form is JSON already
        [[ $rest =~ ^\[.*\]$ ]] || die "$1: $instr must be in JSON (exec) form: ${lines[$i]}"
        if [ "${instr^^}" = CMD ]; then cmd=$rest; else entrypoint=$rest; fi
        ;;
      *) die "$1: scripts/image.sh cannot carry '$instr' into the OCI config; teach it, or move it to the build stage" ;;
    esac
  done
  local IFS=, fields=()
  [ ${#labels[@]} -eq 0 ] || fields+=("\"Labels\":{${labels[*]}}")
  [ ${#env[@]} -eq 0 ] || fields+=("\"Env\":[${env[*]}]")
  [ -z "$user" ] || fields+=("\"User\":$user")
  [ -z "$workdir" ] || fields+=("\"WorkingDir\":$workdir")
  [ ${#ports[@]} -eq 0 ] || fields+=("\"ExposedPorts\":{${ports[*]}}")
  [ -z "$entrypoint" ] || fields+=("\"Entrypoint\":$entrypoint")
  [ -z "$cmd" ] || fields+=("\"Cmd\":$cmd")
  printf '{%s}' "${fields[*]}"
}

case ${1:-} in
  rootfs)
    [ $# -eq 3 ] || die "usage: $0 rootfs ROOT BINDIR"
    rootfs "$2" "$3"
    exit 0
    ;;
  config)
    dockerfile_config "$repo/Dockerfile" >/dev/null # fails here, not in a pipe
    dockerfile_config "$repo/Dockerfile"
    echo
    exit 0
    ;;
  "") ;;
  *) die "usage: $0 [rootfs ROOT BINDIR | config]" ;;
esac

profile=${PROFILE:-release}
case $profile in
  release) flags=(--release) ;;
  debug) flags=() ;;
  *) die "PROFILE must be release or debug, not $profile" ;;
esac
target=${CARGO_TARGET_DIR:-$repo/target}
out=${OUT:-$target/image/agent-auth-operator.tar}
image=${IMAGE:-localhost/agentauth/agent-auth-operator:dev}

cfg=$(dockerfile_config "$repo/Dockerfile") # first: a Dockerfile this script cannot read fails fast
bins=${BIN_DIR:-}
if [ -z "$bins" ]; then
  (cd "$repo" && "${CARGO:-cargo}" build --locked "${flags[@]}" --bin agent-auth-operator --bin kubectl-agentauth) >&2
  bins=$target/$profile
fi
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
rootfs "$w/rootfs" "$bins"
"$repo/scripts/oci-archive.sh" write "$w/rootfs" "$out" "$image" "$cfg"
echo "image: $image in $out ($(du -h "$out" | cut -f1))" >&2
if [ -n "${IMPORT_ADDRESS:-}" ]; then
  "${CTR:-ctr}" -a "$IMPORT_ADDRESS" -n k8s.io images import "$out" >&2
fi
echo "$out"
