#!/usr/bin/env bash
# Writes the test node's sandbox image as an OCI archive (a tar of an OCI image layout) holding only the
# static pause binary from build-node.sh: no base image, no registry. Same input, same bytes.
#
#   tests/cluster/pause-image.sh PAUSE_BINARY OUT.tar [NAME]
#   ctr -a SOCK -n k8s.io images import OUT.tar     # NAME (default localhost/agentauth/pause:1)
set -euo pipefail

pause=$1 out=$2 name=${3:-localhost/agentauth/pause:1}
w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
mkdir -p "$w/root" "$w/oci/blobs/sha256"
cp "$pause" "$w/root/pause"
chmod 0755 "$w/root/pause"

# blob FILE MEDIATYPE: stores FILE under its digest, prints its descriptor.
blob() {
  local d s
  d=$(sha256sum "$1" | cut -d' ' -f1)
  s=$(stat -c %s "$1")
  cp "$1" "$w/oci/blobs/sha256/$d"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$d" "$s"
}

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$w/root" -cf "$w/layer.tar" pause
layer=$(blob "$w/layer.tar" application/vnd.oci.image.layer.v1.tar)
diffid=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"],"User":"65535:65535"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$diffid" >"$w/config.json"
config=$(blob "$w/config.json" application/vnd.oci.image.config.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
  "$config" "$layer" >"$w/manifest.json"
manifest=$(blob "$w/manifest.json" application/vnd.oci.image.manifest.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
  "${manifest%\}},\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"${name##*:}\"}}" \
  >"$w/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci/oci-layout"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$w/oci" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
