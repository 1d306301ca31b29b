#!/usr/bin/env bash
# Writes the test node's image for the agent container of examples/agent-with-sidecar.yaml
# (`python /app/agent.py`, standard library only) as an OCI archive, without a base image or registry:
# Debian's /usr/bin/python3.11, its libraries (scripts/rootfs.sh) and its standard library pruned of
# what an agent does not run (tests, IDLE, Tk, curses, sqlite, dbm, distutils, ensurepip, lib2to3,
# byte code ...); json, urllib, http, email, ssl, asyncio, logging ... stay whole. Same input, same
# bytes; nothing cached outside OUT.tar.
#
#   tests/cluster/agent-image.sh OUT.tar [NAME]    # NAME defaults to localhost/agentauth/python:3.11
#   ctr -a SOCK -n k8s.io images import OUT.tar
set -euo pipefail

out=$1 name=${2:-localhost/agentauth/python:3.11}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3.11 lib=/usr/lib/python3.11
if [ ! -x "$py" ] || [ ! -f "$lib/urllib/request.py" ] || [ ! -f "$lib/email/parser.py" ]; then
  echo "agent-image: installing Debian's python3.11 (apt)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends python3.11 >&2 ||
    { apt-get update >&2 && apt-get install -y --no-install-recommends python3.11 >&2; }
fi

w=$(mktemp -d); trap 'rm -rf "$w"' EXIT
root=$w/root
mkdir -p "$root/usr/lib"
# Pure-Python modules; the extension modules of lib-dynload go through rootfs.sh for their libraries.
tar -C /usr/lib -cf - \
  --exclude=__pycache__ --exclude='*.pyc' --exclude=python3.11/lib-dynload \
  --exclude=python3.11/test --exclude=python3.11/idlelib --exclude=python3.11/tkinter \
  --exclude=python3.11/turtledemo --exclude=python3.11/turtle.py --exclude=python3.11/ensurepip \
  --exclude=python3.11/lib2to3 --exclude=python3.11/distutils --exclude=python3.11/_distutils_system_mod.py \
  --exclude='python3.11/config-*' --exclude=python3.11/dist-packages --exclude=python3.11/site-packages \
  --exclude=python3.11/pydoc_data --exclude=python3.11/sqlite3 --exclude=python3.11/curses \
  --exclude=python3.11/dbm --exclude=python3.11/venv --exclude=python3.11/sitecustomize.py \
  --exclude=python3.11/EXTERNALLY-MANAGED --exclude='*/tests' --exclude='*/idle_test' \
  python3.11 | tar -C "$root/usr/lib" -xf -
# lib-dynload without test modules and the ones needing curses, readline, sqlite, gdbm/ndbm, NIS, OSS.
mods=()
for so in "$lib"/lib-dynload/*.so; do
  case ${so##*/} in
    _test* | _ctypes_test* | xxlimited* | _xxtestfuzz* | _curses* | readline* | _sqlite3* | _dbm* | _gdbm* | nis.* | ossaudiodev.* | _tkinter*) ;;
    *) mods+=("$so") ;;
  esac
done
"$here/../../scripts/rootfs.sh" "$root" "$py" "${mods[@]}"
mkdir -p "$root/usr/local/bin" "$root/app"
ln -s /usr/bin/python3.11 "$root/usr/local/bin/python"
ln -s /usr/bin/python3.11 "$root/usr/local/bin/python3"
chmod -R u=rwX,go=rX "$root/usr/lib/python3.11"

"$here/../../scripts/oci-archive.sh" write "$root" "$out" "$name" \
  '{"Env":["PATH=/usr/local/bin:/usr/bin:/bin","PYTHONDONTWRITEBYTECODE=1"],"User":"65532:65532","WorkingDir":"/app","Cmd":["python"]}'
echo "agent-image: $name in $out ($(du -h "$out" | cut -f1))" >&2
