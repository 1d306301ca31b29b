#!/usr/bin/env bash
# The one OCI-archive writer of the repo (operator image, test node's pause and agent images): writes a
# directory as a single-layer image in an OCI archive (a tar of an OCI image layout, what
# `ctr images import`, `kind load image-archive`, `skopeo copy oci-archive:` read). No base image, no
# registry, no daemon: plain tar + sha256sum + printf. Same input, same bytes: entries sorted, mtime 0,
# owner 0:0, no timestamps anywhere.
#
#   scripts/oci-archive.sh write ROOTFS OUT.tar NAME CONFIG
#   scripts/oci-archive.sh check ARCHIVE [ROOTFS_OUT]
#
# The archive also holds the manifest.json of `docker save`, so docker load and crane read it too.
#
# write: CONFIG is the image config's "config" object as JSON (Entrypoint, User, Env, ...), stored
#   verbatim. NAME (e.g. localhost/agentauth/pause:1) becomes the index's io.containerd.image.name
#   annotation, its tag org.opencontainers.image.ref.name. The layer is an uncompressed tar of ROOTFS's
#   entries (none for / itself) with their modes: ROOTFS must hold the modes the image needs.
# check: verifies the layout (oci-layout, index, manifest, config, every blob's digest and size, the
#   config's diff_ids) and prints the image name; with ROOTFS_OUT, unpacks the layers there (needs jq).
set -euo pipefail

die() { echo "oci-archive: $*" >&2; exit 1; }

write() {
  local root=$1 out=$2 name=$3 cfg=$4 w arch layer diffid config manifest
  [ -d "$root" ] || die "no rootfs directory $root"
  case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  w=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $w is local
  trap "rm -rf '$w'" EXIT
  mkdir -p "$w/oci/blobs/sha256"

  # blob FILE MEDIATYPE: stores FILE under its digest, prints its descriptor.
  blob() {
    local d s
    d=$(sha256sum "$1" | cut -d' ' -f1)
    s=$(stat -c %s "$1")
    cp "$1" "$w/oci/blobs/sha256/$d"
    printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$d" "$s"
  }
  local -a top
  mapfile -t top < <(cd "$root" && LC_ALL=C ls -A)
  [ "${#top[@]}" -gt 0 ] || die "$root is empty"
  tar --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$root" -cf "$w/layer.tar" "${top[@]}"
  layer=$(blob "$w/layer.tar" application/vnd.oci.image.layer.v1.tar)
  diffid=$(sha256sum "$w/layer.tar" | cut -d' ' -f1)
  printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$cfg" "$diffid" >"$w/config.json"
  config=$(blob "$w/config.json" application/vnd.oci.image.config.v1+json)
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
    "$config" "$layer" >"$w/manifest.json"
  manifest=$(blob "$w/manifest.json" application/vnd.oci.image.manifest.v1+json)
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
    "${manifest%\}},\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"${name##*:}\"}}" \
    >"$w/oci/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci/oci-layout"
  # What `docker save` writes besides the layout, for readers of the older format (docker load < 25,
  # crane push, go-containerregistry's tarball, podman load).
  printf '[{"Config":"blobs/sha256/%s","RepoTags":["%s"],"Layers":["blobs/sha256/%s"]}]' \
    "$(sha256sum "$w/config.json" | cut -d' ' -f1)" "$name" "$diffid" >"$w/oci/manifest.json"
  mkdir -p "$(dirname "$out")"
  tar --format=gnu --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$w/oci" -cf "$out.tmp" oci-layout index.json manifest.json blobs
  mv "$out.tmp" "$out"
}

check() {
  local archive=$1 rootfs=${2:-} w m c l d
  command -v jq >/dev/null || die "check needs jq"
  w=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$w'" EXIT
  tar -C "$w" -xf "$archive"
  [ "$(jq -r .imageLayoutVersion "$w/oci-layout")" = 1.0.0 ] || die "bad oci-layout"
  # desc JSON MEDIATYPE: the descriptor's blob exists with its digest and size; prints its path.
  desc() {
    local mt dg sz f
    mt=$(jq -r .mediaType <<<"$1") dg=$(jq -r .digest <<<"$1") sz=$(jq -r .size <<<"$1")
    [ "$mt" = "$2" ] || die "media type $mt, expected $2"
    f=$w/blobs/${dg/://}
    [ -f "$f" ] || die "missing blob $dg"
    [ "sha256:$(sha256sum "$f" | cut -d' ' -f1)" = "$dg" ] || die "digest mismatch for $dg"
    [ "$(stat -c %s "$f")" = "$sz" ] || die "size mismatch for $dg"
    echo "$f"
  }
  [ "$(jq '.manifests | length' "$w/index.json")" = 1 ] || die "index must list one manifest"
  m=$(desc "$(jq -c '.manifests[0]' "$w/index.json")" application/vnd.oci.image.manifest.v1+json)
  c=$(desc "$(jq -c .config "$m")" application/vnd.oci.image.config.v1+json)
  [ "$(jq '.layers | length' "$m")" = "$(jq '.rootfs.diff_ids | length' "$c")" ] || die "layers != diff_ids"
  local i=0
  while read -r d; do
    l=$(desc "$d" application/vnd.oci.image.layer.v1.tar)
    [ "sha256:$(sha256sum "$l" | cut -d' ' -f1)" = "$(jq -r ".rootfs.diff_ids[$i]" "$c")" ] || die "diff_id $i mismatch"
    if [ -n "$rootfs" ]; then mkdir -p "$rootfs" && tar -C "$rootfs" --same-owner -xpf "$l"; fi
    i=$((i + 1))
  done < <(jq -c '.layers[]' "$m")
  if [ -f "$w/manifest.json" ]; then # docker save's view must name the same blobs
    [ "$w/$(jq -r '.[0].Config' "$w/manifest.json")" = "$c" ] || die "manifest.json: other config"
    [ "$(jq -c '[.[0].Layers[] | sub("^blobs/sha256/"; "sha256:")]' "$w/manifest.json")" = "$(jq -c '[.layers[].digest]' "$m")" ] ||
      die "manifest.json: other layers"
  fi
  jq -r '.manifests[0].annotations["io.containerd.image.name"]' "$w/index.json"
}

case ${1:-} in
  write) [ $# -eq 5 ] || die "usage: $0 write ROOTFS OUT.tar NAME CONFIG"; write "$2" "$3" "$4" "$5" ;;
  check) [ $# -ge 2 ] || die "usage: $0 check ARCHIVE [ROOTFS_OUT]"; check "$2" "${3:-}" ;;
  *) die "usage: $0 write ROOTFS OUT.tar NAME CONFIG | check ARCHIVE [ROOTFS_OUT]" ;;
esac
