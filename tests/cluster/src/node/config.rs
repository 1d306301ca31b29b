//! The configuration files of a test node: containerd, the CNI network, the kubelet and kube-proxy.
//!
//! Every path a component would otherwise take from the machine (`/var/lib/containerd`,
//! `/run/containerd`, `/etc/cni/net.d`, `/opt/cni/bin`, `/var/lib/cni`, `/var/lib/kubelet`,
//! `/var/log/pods`) is set to the node's own directory, so two nodes, or a node and the machine's own
//! runtime, never share state.

use std::path::Path;

use super::{NodeBinaries, POD_SUBNET, SANDBOX_IMAGE};

/// containerd 2.x (config version 3): own root, state and sockets; NRI off; pod network namespaces
/// under the state directory; the locally made pause image pinned as the sandbox image.
pub fn containerd(dir: &Path, bins: &NodeBinaries) -> String {
    let d = dir.display();
    let runc = bins.runc.display();
    let cni = bins.cni_dir.display();
    format!(
        r#"version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "{d}/containerd/containerd.sock"
[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"
[debug]
  address = "{d}/containerd/debug.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{SANDBOX_IMAGE}"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # These hosts refuse a lower oom_score_adj (root lacks CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  cdi_spec_dirs = []
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "{runc}"
      SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni}"]
    conf_dir = "{d}/cni/net.d"
"#
    )
}

/// A bridge inside the node's network namespace, host-local addresses out of [`POD_SUBNET`], the
/// node as the pods' default route (the node itself has none: what is not the link, a pod or a
/// Service is unreachable), and masquerading of pod traffic that leaves the node (to the host end
/// of the node's link), so the host needs no route to the pods.
pub fn cni(dir: &Path) -> String {
    let ipam = dir.join("cni/ipam");
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "agentauth", "plugins": [
  {{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{POD_SUBNET}"}}]], "routes": [{{"dst": "0.0.0.0/0"}}],
     "dataDir": "{}"}}}},
  {{"type": "portmap", "capabilities": {{"portMappings": true}}}}]}}
"#,
        ipam.display()
    )
}

/// What the kubelet's configuration depends on.
pub struct Kubelet<'a> {
    pub dir: &'a Path,
    pub node_ip: &'a str,
    pub cgroup_root: &'a str,
    pub ca_file: &'a Path,
}

/// The KubeletConfiguration: cgroup v1 allowed (these hosts boot it), cgroupfs under the node's own
/// cgroup root, a 10 s sync so Secret updates reach pods quickly, client certificates signed by the
/// cluster CA required (the API server's logs/exec/port-forward calls), no eviction or image GC.
pub fn kubelet(k: &Kubelet<'_>) -> String {
    let d = k.dir.display();
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
containerRuntimeEndpoint: unix://{d}/containerd/containerd.sock
syncFrequency: 10s
address: {node_ip}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: AlwaysAllow}}
podLogsDir: {d}/pod-logs
resolvConf: {d}/resolv.conf
failSwapOn: false
protectKernelDefaults: false
makeIPTablesUtilChains: true
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
",
        cgroup_root = k.cgroup_root,
        node_ip = k.node_ip,
        ca = k.ca_file.display(),
    )
}

/// kube-proxy in iptables mode; its ports are on the node's own loopback.
pub fn kube_proxy(kubeconfig: &Path, node: &str, cluster_cidr: &str) -> String {
    format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {{kubeconfig: {kc}}}
clusterCIDR: {cluster_cidr}
hostnameOverride: {node}
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack: {{maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}}
",
        kc = kubeconfig.display()
    )
}
