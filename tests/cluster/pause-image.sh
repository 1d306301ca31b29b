#!/usr/bin/env bash
# Writes the test node's sandbox image as an OCI archive holding only the static pause binary from
# build-node.sh (scripts/oci-archive.sh does the writing): no base image, no registry. Same input,
# same bytes.
#
#   tests/cluster/pause-image.sh PAUSE_BINARY OUT.tar [NAME]
#   ctr -a SOCK -n k8s.io images import OUT.tar     # NAME (default localhost/agentauth/pause:1)
set -euo pipefail

pause=$1 out=$2 name=${3:-localhost/agentauth/pause:1}
here=$(cd "$(dirname "$0")" && pwd)
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
install -m 0755 "$pause" "$w/pause"
"$here/../../scripts/oci-archive.sh" write "$w" "$out" "$name" '{"Entrypoint":["/pause"],"User":"65535:65535"}'
