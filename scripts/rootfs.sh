#!/usr/bin/env bash
# Assembles a distroless-like root filesystem from the build machine, without any base image: the
# given files, the shared libraries `ldd` says they need (libc, libm, libgcc_s, the loader ...; glibc
# >= 2.34 has the files/dns NSS modules inside libc, so name resolution works without more), and the
# few files distroless has: /etc/passwd and /etc/group with root and nonroot (65532), nsswitch.conf,
# the CA bundle (when the build machine has one), and a sticky /tmp.
#
#   STRIP=1 scripts/rootfs.sh ROOT SRC[=DEST]...
#
# Each SRC is copied (symlinks followed) to ROOT/DEST, DEST defaulting to SRC's absolute path; with
# STRIP=1 the copies of executables (not libraries: DEST ending in .so or .so.N) are stripped. Fails if
# a library is not found. Used by scripts/image.sh (the operator image, also inside the Dockerfile) and
# tests/cluster/agent-image.sh.
set -euo pipefail

die() { echo "rootfs: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: STRIP=1 $0 ROOT SRC[=DEST]..."
root=$1
shift
mkdir -p "$root"
chmod 0755 "$root"

# put SRC DEST MODE: copies SRC (following symlinks) to ROOT/DEST, creating 0755 directories.
put() {
  local d
  d=$(dirname "$2")
  (umask 022 && mkdir -p "$root$d")
  cp -L "$1" "$root$2"
  chmod "$3" "$root$2"
}

# libs FILE: the absolute paths of the shared libraries FILE loads (none for a static binary).
libs() {
  local out
  out=$(LC_ALL=C ldd "$1" 2>&1) || {
    grep -qE 'not a dynamic executable|statically linked' <<<"$out" && return 0
    die "ldd $1: $out"
  }
  grep -q 'not found' <<<"$out" && die "ldd $1: a library is missing: $out"
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out"
}

declare -A seen=()
for arg in "$@"; do
  src=${arg%%=*} dest=${arg#*=}
  [ "$arg" = "$src" ] && dest=$(realpath -s "$src")
  [ -e "$src" ] || die "no such file: $src"
  # The mode is fixed, not the build machine's (its umask would change the archive's bytes).
  if [ -x "$src" ]; then mode=0755; else mode=0644; fi
  put "$src" "$dest" "$mode"
  if [ "${STRIP:-}" = 1 ] && [[ ! $dest =~ \.so(\.[0-9]+)*$ ]]; then strip "$root$dest"; fi
  needed=$(libs "$src") # not in a process substitution: a failure must stop the script
  for lib in $needed; do
    [ -z "${seen[$lib]:-}" ] || continue
    seen[$lib]=1
    put "$lib" "$lib" 0755
  done
done

(umask 022 && mkdir -p "$root/etc" "$root/tmp")
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then put "$ca" "$ca" 0644; fi
