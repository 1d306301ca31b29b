#!/usr/bin/env bash
# Manual proof for issue #15 (not part of `make test`): starts containerd, the kubelet and kube-proxy
# from build-node.sh against a running test control plane, waits for the Node to become Ready, runs
# one pod, then tears everything down and diffs the machine's state (netns, mounts, iptables chains,
# links, cgroups, sysctls) against what it was before.
#
#   eval "$(cargo run -q -p agentauth-testcluster --bin testcluster | head -1)" # in another shell
#   KUBECONFIG=... tests/cluster/node-smoke.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
IFS=: read -r K8S CTRD RUNC CNI PAUSE < <("$here/build-node.sh")
: "${KUBECONFIG:?set KUBECONFIG to the test control plane}"
kubectl() { "$K8S/kubectl" "$@"; }

ID=aa$$
NODE=aa-node-$$
T=$(mktemp -d "/tmp/agentauth-node.XXXXXX")
BR=${ID}br0
CGROOT=/agentauth-$ID
SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables"
log() { echo "node-smoke: $*" >&2; }

snapshot() { # what a run must leave as it found it
  echo "## netns"; ip netns list | sort
  echo "## links"; ip -o link | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
  echo "## mounts"; awk '{print $2}' /proc/mounts | sort
  echo "## iptables"; for b in iptables ip6tables iptables-legacy ip6tables-legacy; do
    "$b-save" 2>/dev/null | grep -E '^(:|-A)' | grep -vE '^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) ' | sed "s/ \[.*//; s/^/$b /"
  done | sort || true
  echo "## cgroups"; find /sys/fs/cgroup -maxdepth 2 -type d -name 'agentauth-*' | sort
  echo "## sysctls"; for k in $SYSCTLS; do echo "$k=$(sysctl -n "$k" 2>/dev/null)"; done
  echo "## /var/log/containers (the kubelet's hard-coded symlink dir)"; ls -dA /var/log/containers /var/log/containers/* 2>/dev/null || true
  echo "## processes"; t_pids
}
# The kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT) and CNI portmap add chains that
# kube-proxy --cleanup does not remove: delete every rule and chain that was not there before.
ipt_save_before() {
  local b t
  for b in iptables ip6tables; do for t in filter nat mangle raw; do "$b-save" -t "$t" >"$T/$b-$t.before" 2>/dev/null || :; done; done
}
ipt_undo() {
  local b t now
  for b in iptables ip6tables; do
    for t in filter nat mangle raw; do
      now=$("$b-save" -t "$t" 2>/dev/null) || continue
      {
        echo "*$t"
        comm -13 <(grep '^-A' "$T/$b-$t.before" | sort) <(grep '^-A' <<<"$now" | sort) | sed 's/^-A /-D /'
        comm -13 <(grep '^:' "$T/$b-$t.before" | cut -d' ' -f1 | sort) <(grep '^:' <<<"$now" | cut -d' ' -f1 | sort) |
          grep -vE '^:(INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING)$' | sed 's/^:/-X /'
        echo COMMIT
      } | "$b-restore" --noflush || log "$b-restore -t $t failed"
    done
  done
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

t_pids() {
  local p
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = $$ ] && continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$T" && echo "${p#/proc/}"
  done
  return 0
}
cg_pids() { find /sys/fs/cgroup/*/"${CGROOT#/}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u; }

PIDS=()
cleanup() {
  local rc=$?
  set +e
  log "cleanup"
  kubectl delete pod smoke --force --grace-period=0 --wait=false >/dev/null 2>&1
  kubectl delete node "$NODE" --wait=false >/dev/null 2>&1
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  # Containers and shims outlive containerd: kill, by id, every process in the node's cgroups and
  # every process whose command line names $T (the shims carry -address $T/...).
  local pids; pids=$(cg_pids; t_pids)
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  sleep 1
  "$K8S/kube-proxy" --cleanup --config "$T/kube-proxy.yaml" >"$T/kube-proxy-cleanup.log" 2>&1
  for c in /sys/fs/cgroup/*/"${CGROOT#/}"; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  awk -v t="$T" 'index($2, t) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
  ip link del "$BR" 2>/dev/null
  ipt_undo
  find /var/log/containers -maxdepth 1 -lname "$T/*" -delete 2>/dev/null
  grep -qx /var/log/containers "$T/before" || rmdir /var/log/containers 2>/dev/null
  while read -r line; do sysctl -qw "$line" 2>/dev/null; done < <(sed -n '/^## sysctls/,/^##/p' "$T/before" | grep '=')
  snapshot >"$T/after"
  if diff "$T/before" "$T/after" >"$T/leftover.diff"; then log "nothing left behind"; else log "LEFT BEHIND:"; cat "$T/leftover.diff" >&2; rc=1; fi
  # Logs stay for a failed run (or KEEP=1); the directory holds no mounts any more.
  if [ "$rc" -ne 0 ] || [ -n "${KEEP:-}" ]; then log "logs kept in $T"; else rm -rf "$T"; fi
  exit "$rc"
}
snapshot >"$T/before"
ipt_save_before
trap cleanup EXIT

# --- containerd: own root, state, sockets; no NRI; netns under the state dir -------------------------
mkdir -p "$T/containerd" "$T/cni/net.d" "$T/kubelet" "$T/pod-logs"
cat >"$T/containerd/config.toml" <<EOF
version = 3
root = "$T/containerd/root"
state = "$T/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "$T/containerd/containerd.sock"
[ttrpc]
  address = "$T/containerd/containerd.sock.ttrpc"
[debug]
  address = "$T/containerd/debug.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "localhost/agentauth/pause:1"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true # this host refuses a lower oom_score_adj (no CAP_SYS_RESOURCE)
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "$RUNC/runc"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["$CNI"]
    conf_dir = "$T/cni/net.d"
EOF
cat >"$T/cni/net.d/10-agentauth.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "agentauth", "plugins": [
  {"type": "bridge", "bridge": "$BR", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "198.18.0.0/24"}]], "dataDir": "$T/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
SOCK=$T/containerd/containerd.sock
PATH=$CTRD:$RUNC:$PATH "$CTRD/containerd" --config "$T/containerd/config.toml" >"$T/containerd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
"$CTRD/ctr" -a "$SOCK" version >&2
"$here/pause-image.sh" "$PAUSE/pause" "$T/pause.tar"
"$CTRD/ctr" -a "$SOCK" -n k8s.io images import "$T/pause.tar" >&2

# --- kubelet -------------------------------------------------------------------------------------
cat >"$T/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CGROOT
containerRuntimeEndpoint: unix://$SOCK
syncFrequency: 10s
podCIDR: 198.18.0.0/24
address: 127.0.0.1
port: 0
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
podLogsDir: $T/pod-logs
failSwapOn: false
protectKernelDefaults: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
# The kubelet wants cgroupRoot to exist in every v1 hierarchy; a new cpuset cgroup starts empty.
for h in /sys/fs/cgroup/*/; do
  [ "$(stat -fc %T "$h")" = cgroupfs ] && [ "${h%/}" != /sys/fs/cgroup/unified ] && mkdir -p "$h${CGROOT#/}"
done
c=/sys/fs/cgroup/cpuset${CGROOT}
[ -d "$c" ] && cat /sys/fs/cgroup/cpuset/cpuset.cpus >"$c/cpuset.cpus" && cat /sys/fs/cgroup/cpuset/cpuset.mems >"$c/cpuset.mems"
"$K8S/kubelet" --config "$T/kubelet.yaml" --kubeconfig "$KUBECONFIG" --root-dir "$T/kubelet" \
  --cert-dir "$T/kubelet/pki" --hostname-override "$NODE" --v=2 >"$T/kubelet.log" 2>&1 &
PIDS+=($!)

# --- kube-proxy (iptables) ---------------------------------------------------------------------------
cat >"$T/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $KUBECONFIG}
clusterCIDR: 198.18.0.0/16
hostnameOverride: $NODE
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$(free_port)
metricsBindAddress: 127.0.0.1:$(free_port)
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
"$K8S/kube-proxy" --config "$T/kube-proxy.yaml" --v=2 >"$T/kube-proxy.log" 2>&1 &
PIDS+=($!)

start=$(date +%s)
until kubectl wait --for=condition=Ready "node/$NODE" --timeout=5s >/dev/null 2>&1; do
  kill -0 "${PIDS[1]}" 2>/dev/null || { log "kubelet exited"; tail -5 "$T/kubelet.log" >&2; exit 1; }
  if [ $(($(date +%s) - start)) -gt 180 ]; then log "node not Ready after 180 s"; tail -30 "$T/kubelet.log" >&2; exit 1; fi
done
kill -0 "${PIDS[2]}" 2>/dev/null || { log "kube-proxy exited"; tail -5 "$T/kube-proxy.log" >&2; exit 1; }
log "node Ready after $(($(date +%s) - start)) s"
kubectl get node -o wide >&2

# The test control plane runs no serviceaccount controller: admission needs the SA to exist.
kubectl create serviceaccount default -n default >/dev/null 2>&1 || true
kubectl apply -f - >&2 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: smoke, namespace: default}
spec:
  nodeName: $NODE
  automountServiceAccountToken: false # no root-ca-cert-publisher in the test control plane
  containers: [{name: pause, image: localhost/agentauth/pause:1, imagePullPolicy: Never}]
EOF
kubectl wait --for=condition=Ready pod/smoke --timeout=120s >&2 || { kubectl describe pod smoke >&2; tail -30 "$T/kubelet.log" >&2; exit 1; }
kubectl get pod smoke -o wide >&2
for _ in $(seq 60); do iptables-save -t nat 2>/dev/null | grep -q '^-A KUBE-SERVICES' && break; sleep 0.5; done
log "kube-proxy nat rules: $(iptables-save -t nat 2>/dev/null | grep -c '^-A KUBE-' || true)"
kubectl delete pod smoke --timeout=60s >&2
