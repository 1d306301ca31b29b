//! A real node for the test cluster: containerd, runc, the CNI plugins, the kubelet and kube-proxy
//! (iptables mode), all built by `build-node.sh`, so pods really start.
//!
//! The node lives in namespaces of its own: a **sandbox** (`unshare --net --mount --pid --fork
//! --kill-child`, with the pause binary as its init) holds a network, mount and PID namespace, and
//! every node component is started inside it with `nsenter`. That gives these guarantees:
//! - every address is in the RFC 2544 range, in namespaces the test made: the node's link is a veth
//!   pair (`198.18.255.4k+1` on the host, `.4k+2` on the node), pods get `198.18.0.0/24` on a bridge
//!   inside the node, services `198.19.0.0/16`. The node has no default route, so nothing from a pod
//!   goes anywhere but the host end of that link;
//! - iptables rules, the bridge, pod network namespaces, container mounts, `/run`, `/var/log` (the
//!   kubelet's hard-coded `/var/log/containers`), `/var/lib` (containerd's CNI result cache, the
//!   kubelet's device-plugin directory) and the machine-wide sysctls the kubelet sets (shadowed,
//!   [`KERNEL_TUNABLES`]) exist only inside the sandbox. The filesystem is otherwise the machine's:
//!   a privileged or hostPath pod reaches it, as on any node;
//! - when the sandbox's init dies, the kernel kills every process in it (containers and shims
//!   included) and drops its namespaces with their links, mounts and rules. The sandbox's `unshare`
//!   gets SIGKILL when the test process dies (see [`Proc`]) and kills the init, so a panic or a
//!   `kill -9` of the test leaves no process, mount, link or rule behind. The node's cgroup root and
//!   the cluster directory are removed by a watchdog once the test process is gone, and any a
//!   watchdog missed by the next start ([`sweep_stale_cgroups`]).

mod config;
mod machine;

pub use machine::sweep_stale_cgroups;
use machine::{free_link, link_lock, make_cgroup_root, remove_cgroup_root, run, watchdog};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::api::Api;

use crate::Proc;

/// The sandbox image containerd runs every pod's sandbox with (made by `pause-image.sh`).
pub const SANDBOX_IMAGE: &str = "localhost/agentauth/pause:1";
/// Where pods get their addresses (inside the node).
pub const POD_SUBNET: &str = "198.18.0.0/24";
/// kube-proxy's cluster CIDR.
pub const CLUSTER_CIDR: &str = "198.18.0.0/16";
/// The Service range of a cluster with a node; the API server's Service is its first address.
pub const SERVICE_CIDR: &str = "198.19.0.0/16";
/// The `kubernetes` Service's address, which pods use to reach the API server.
pub const API_SERVICE_IP: &str = "198.19.0.1";
const CGROUP_PREFIX: &str = "agentauth-node-";
/// The machine-wide sysctls the kubelet writes (`setupKernelTunables`): shadowed in the sandbox.
pub const KERNEL_TUNABLES: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Paths of the node binaries.
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub kube_scheduler: PathBuf,
    pub containerd_dir: PathBuf,
    pub ctr: PathBuf,
    pub runc: PathBuf,
    pub cni_dir: PathBuf,
    pub pause: PathBuf,
}

/// Runs `build-node.sh` once per process (a no-op when the cache is filled) and returns the paths.
pub fn node_binaries() -> Result<&'static NodeBinaries, String> {
    static BINS: OnceLock<Result<NodeBinaries, String>> = OnceLock::new();
    BINS.get_or_init(build).as_ref().map_err(Clone::clone)
}

fn build() -> Result<NodeBinaries, String> {
    let dirs = crate::process::build_script("build-node.sh", &[])?;
    let [k8s, containerd, runc, cni, pause] = dirs.as_slice() else {
        return Err(format!("build-node.sh printed {dirs:?}, not five directories"));
    };
    let bins = NodeBinaries {
        kubelet: k8s.join("kubelet"),
        kube_proxy: k8s.join("kube-proxy"),
        kube_scheduler: k8s.join("kube-scheduler"),
        containerd_dir: containerd.clone(),
        ctr: containerd.join("ctr"),
        runc: runc.join("runc"),
        cni_dir: cni.clone(),
        pause: pause.join("pause"),
    };
    for b in [
        &bins.kubelet,
        &bins.kube_proxy,
        &bins.kube_scheduler,
        &bins.ctr,
        &bins.runc,
        &bins.pause,
    ] {
        if !b.is_file() {
            return Err(format!("{} is missing after build-node.sh", b.display()));
        }
    }
    Ok(bins)
}

/// What a node starts with.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// OCI archives imported into the node's containerd before the kubelet starts (pods use them
    /// with `imagePullPolicy: Never`). More can be imported later with [`Node::import`].
    pub images: Vec<PathBuf>,
}

/// A node: its sandbox, its link to the host and, once [`Node::start`] ran, its components.
pub struct Node {
    name: String,
    dir: PathBuf,
    sandbox: Proc,
    init_pid: u32,
    host_ip: String,
    node_ip: String,
    cgroup_root: String,
    procs: Vec<Proc>,
}

impl Node {
    /// Makes the sandbox and the node's link to the host. The control plane then binds to
    /// [`Node::host_ip`], the one host address the node can reach.
    pub fn create(cluster_dir: &Path) -> Result<Node, String> {
        sweep_stale_cgroups();
        let bins = node_binaries()?;
        let dir = cluster_dir.join("node");
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let sandbox = Proc::spawn(
            &dir,
            "sandbox",
            Path::new("unshare"),
            &[
                "--net",
                "--mount",
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--propagation=private",
            ]
            .into_iter()
            .map(str::to_owned)
            .chain([bins.pause.display().to_string()])
            .collect::<Vec<_>>(),
            &[],
        )?;
        let init_pid = sandbox_init(&sandbox, &bins.pause)?;
        // Held until the link's host address is added, so two nodes never pick the same index.
        let _lock = link_lock()?;
        let k = free_link()?;
        let pid = std::process::id();
        let mut node = Node {
            name: format!("aa-node-{pid}-{k}"),
            host_ip: format!("198.18.255.{}", 4 * k + 1),
            node_ip: format!("198.18.255.{}", 4 * k + 2),
            cgroup_root: format!("/{CGROUP_PREFIX}{pid}-{k}"),
            dir,
            sandbox,
            init_pid,
            procs: Vec::new(),
        };
        watchdog(cluster_dir, &node.cgroup_root)?;
        node.wire(&format!("aa{pid}h{k}"))?;
        Ok(node)
    }

    /// The veth pair (made from inside the sandbox with the host end put into our namespace, so
    /// no moment exists where both ends are on the host), addresses, private `/run` and
    /// `/var/log`, forwarding inside the node, and the cgroup root in every v1 hierarchy.
    fn wire(&mut self, host_link: &str) -> Result<(), String> {
        let me = std::process::id().to_string();
        let (h, n) = (format!("{}/30", self.host_ip), format!("{}/30", self.node_ip));
        self.in_net(&[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", host_link, "netns", &me,
        ])?;
        run("ip", &["addr", "add", &h, "dev", host_link])?;
        run("ip", &["link", "set", host_link, "up"])?;
        self.in_net(&["ip", "addr", "add", &n, "dev", "eth0"])?;
        self.in_net(&["ip", "link", "set", "eth0", "up"])?;
        self.in_net(&["ip", "link", "set", "lo", "up"])?;
        self.in_net(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        // `/var/lib`: containerd's CNI result cache (`/var/lib/cni`) and the kubelet's device-plugin
        // directory ignore every setting; `/var/log`: the kubelet's `/var/log/containers`.
        for target in ["/run", "/var/log", "/var/lib"] {
            self.in_mnt(&[
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "mode=0755,size=256m",
                "tmpfs",
                target,
            ])?;
        }
        self.shadow_kernel_tunables()?;
        make_cgroup_root(&self.cgroup_root)
    }

    /// The kubelet sets a few sysctls that are the machine's, not a namespace's (`kernel.panic`,
    /// `vm.overcommit_memory`, ...). Inside the sandbox each is a file of the node's directory,
    /// bind-mounted over its `/proc/sys` entry with the machine's current value, so the kubelet
    /// reads and writes the copy and the machine keeps its own.
    fn shadow_kernel_tunables(&self) -> Result<(), String> {
        let dir = self.dir.join("sysctl");
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for key in KERNEL_TUNABLES {
            let proc = format!("/proc/sys/{key}");
            let value = std::fs::read_to_string(&proc).map_err(|e| format!("cannot read {proc}: {e}"))?;
            let copy = dir.join(key.replace('/', "."));
            std::fs::write(&copy, value).map_err(|e| format!("cannot write {}: {e}", copy.display()))?;
            self.in_mnt(&["mount", "--bind", &copy.display().to_string(), &proc])?;
        }
        Ok(())
    }

    fn in_net(&self, cmd: &[&str]) -> Result<(), String> {
        let ns = format!("--net=/proc/{}/ns/net", self.init_pid);
        run("nsenter", &[&[ns.as_str(), "--"], cmd].concat())
    }

    fn in_mnt(&self, cmd: &[&str]) -> Result<(), String> {
        let ns = format!("--mount=/proc/{}/ns/mnt", self.init_pid);
        run("nsenter", &[&[ns.as_str(), "--"], cmd].concat())
    }

    /// The host end of the node's link: what the API server (and anything pods must reach on the
    /// host, such as Dex or a provider) binds to.
    pub fn host_ip(&self) -> &str {
        &self.host_ip
    }

    /// The node's own address (its `InternalIP`).
    pub fn node_ip(&self) -> &str {
        &self.node_ip
    }

    /// The node's route to `addr` (`ip route get` inside its network namespace); an error when it
    /// has none. Asks the routing table only: nothing is sent.
    pub fn route_to(&self, addr: &str) -> Result<(), String> {
        self.in_net(&["ip", "route", "get", addr])
    }

    /// The Node object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's directory (configs, logs, containerd's state).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts containerd, imports the images, starts the kubelet and kube-proxy, and waits until
    /// the Node is Ready.
    pub fn start(&mut self, kubeconfig: &Path, ca_file: &Path, opts: &NodeOptions) -> Result<(), String> {
        let bins = node_binaries()?;
        let d = self.dir.clone();
        let write = |name: &str, body: String| {
            let path = d.join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::write(&path, body).map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        write("containerd/config.toml", config::containerd(&d, bins))?;
        write("cni/net.d/10-agentauth.conflist", config::cni(&d))?;
        // No name server: pods resolve nothing, so no query leaves for an address we do not own.
        write("resolv.conf", String::new())?;
        write(
            "kubelet.yaml",
            config::kubelet(&config::Kubelet {
                dir: &d,
                node_ip: &self.node_ip,
                cgroup_root: &self.cgroup_root,
                ca_file,
            }),
        )?;
        write(
            "kube-proxy.yaml",
            config::kube_proxy(kubeconfig, &self.name, CLUSTER_CIDR),
        )?;

        let path = format!(
            "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            bins.containerd_dir.display(),
            bins.runc.parent().unwrap_or(Path::new("/")).display()
        );
        let containerd_bin = bins.containerd_dir.join("containerd");
        self.spawn_inside(
            "containerd",
            &containerd_bin,
            &[
                "--config".into(),
                d.join("containerd/config.toml").display().to_string(),
            ],
            &path,
        )?;
        let sock = self.socket();
        self.wait("containerd's socket", Duration::from_secs(30), || sock.exists())?;

        let pause_tar = d.join("pause.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pause-image.sh");
        run(
            "bash",
            &[
                &script.display().to_string(),
                &bins.pause.display().to_string(),
                &pause_tar.display().to_string(),
            ],
        )?;
        self.import(&pause_tar)?;
        for image in &opts.images {
            self.import(image)?;
        }

        let kubelet_args = [
            format!("--config={}", d.join("kubelet.yaml").display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", d.join("kubelet").display()),
            format!("--cert-dir={}", d.join("kubelet/pki").display()),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={}", self.node_ip),
            "--v=1".into(),
        ];
        self.spawn_inside("kubelet", &bins.kubelet, &kubelet_args, &path)?;
        let proxy_args = [
            format!("--config={}", d.join("kube-proxy.yaml").display()),
            "--v=1".into(),
        ];
        self.spawn_inside("kube-proxy", &bins.kube_proxy, &proxy_args, &path)?;
        self.wait_ready(kubeconfig)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// Imports an OCI archive into the node's containerd (namespace `k8s.io`, the kubelet's).
    pub fn import(&self, archive: &Path) -> Result<(), String> {
        let bins = node_binaries()?;
        run(
            &bins.ctr.display().to_string(),
            &[
                "--address",
                &self.socket().display().to_string(),
                "--namespace",
                "k8s.io",
                "images",
                "import",
                &archive.display().to_string(),
            ],
        )
    }

    fn spawn_inside(&mut self, name: &str, bin: &Path, args: &[String], path: &str) -> Result<(), String> {
        let target = self.init_pid.to_string();
        let argv: Vec<String> = ["--target", &target, "--net", "--mount", "--pid", "--"]
            .into_iter()
            .map(str::to_owned)
            .chain([bin.display().to_string()])
            .chain(args.iter().cloned())
            .collect();
        let p = Proc::spawn(&self.dir, name, Path::new("nsenter"), &argv, &[("PATH", path)])?;
        self.procs.push(p);
        Ok(())
    }

    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(status) = self.sandbox.exited() {
            return Err(format!("the node sandbox exited ({status})"));
        }
        for p in self.procs.iter_mut() {
            if let Some(status) = p.exited() {
                return Err(format!("{} exited early ({status})\n{}", p.name, p.log_tail(30)));
            }
        }
        Ok(())
    }

    fn wait(&mut self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !ok() {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("{what} not there after {limit:?}\n{}", self.log_tails()));
            }
            std::thread::sleep(Duration::from_millis(100)); // poll interval
        }
        Ok(())
    }

    fn wait_ready(&mut self, kubeconfig: &Path) -> Result<(), String> {
        let (kc, name) = (kubeconfig.to_owned(), self.name.clone());
        self.wait("a Ready node", Duration::from_secs(120), || {
            crate::block_on(node_ready(&kc, &name)).unwrap_or(false)
        })
    }

    /// The last lines of every component's log.
    pub fn log_tails(&self) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(20)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Kills the sandbox (and with it every process of the node), waits until its cgroups are
    /// empty and removes them. Idempotent.
    pub fn stop(&mut self) {
        self.sandbox.kill();
        while let Some(mut p) = self.procs.pop() {
            p.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !remove_cgroup_root(&self.cgroup_root) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100)); // poll interval: the kernel is reaping
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn node_ready(kubeconfig: &Path, name: &str) -> Result<bool, String> {
    let client = crate::client_from(kubeconfig).await?;
    let node = Api::<NodeObject>::all(client)
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The sandbox's init (the pause binary, PID 1 of the new PID namespace), once `unshare` has
/// mounted its `/proc` and exec'd it.
fn sandbox_init(sandbox: &Proc, pause: &Path) -> Result<u32, String> {
    let pause = std::fs::canonicalize(pause).map_err(|e| format!("{}: {e}", pause.display()))?;
    let pid = sandbox.pid();
    let children = format!("/proc/{pid}/task/{pid}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let child = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|c| c.parse::<u32>().ok()));
        if let Some(child) = child
            && std::fs::read_link(format!("/proc/{child}/exe")).is_ok_and(|exe| exe == pause)
        {
            return Ok(child);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the node sandbox did not start: {}",
                sandbox.log_tail(10)
            ));
        }
        std::thread::sleep(Duration::from_millis(20)); // poll interval
    }
}
