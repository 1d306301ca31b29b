//! A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver (RBAC, client-cert
//! auth) and kube-controller-manager (garbage collector and namespace controllers), built from Go
//! modules by `build.sh` and started on free ports.
//!
//! Guarantees:
//! - one control plane per process ([`shared`]); each test takes a fresh namespace from it;
//! - every child process dies with the process that started it, however it ends (`PR_SET_PDEATHSIG`
//!   set from a thread that lives as long as the process, see [`Proc`]), and a normal exit, including
//!   a test binary with panicking tests, also removes the cluster directory (an `atexit` hook);
//! - directories left by a process that was killed outright are removed by the next start.
//!
//! Shared by the integration tests and the benchmark suite: [`cli`] runs `kubectl` and `helm`,
//! [`recorder`] is the recording HTTP server, [`fixtures`] installs the CRDs and Connections.

mod certs;
pub mod cli;
pub mod demo;
pub mod dex;
pub mod etcd;
pub mod fixtures;
mod kubeconfig;
pub mod node;
mod process;
pub mod recorder;

pub use node::{Node, NodeOptions, node_binaries};
pub use process::{Binaries, Proc, at_exit, binaries, block_on, free_port, scratch_dir};

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, atomic::AtomicU32, atomic::Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// A running control plane. Dropping it (or [`Cluster::stop`]) kills the processes and removes
/// its directory.
pub struct Cluster {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    etcd_url: String,
    procs: Mutex<Vec<Proc>>,
    options: ClusterOptions,
    /// Where the API server listens: loopback, or the host end of the node's link.
    api_host: String,
    node: Mutex<Option<Node>>,
}

/// Optional features of a control plane started with [`Cluster::start_with`]; all off by default
/// (what [`Cluster::start`] and [`shared`] use).
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Write an audit log of every mutating request (create, update, patch, delete; `Metadata`
    /// level, JSON lines) to `<dir>/audit.log`, e.g. to count who writes what. Reads are not logged.
    pub audit_log: bool,
    /// Run a real node ([`node`]): containerd, the kubelet and kube-proxy, plus the scheduler and
    /// the controllers that Deployments, Services and ServiceAccounts need. The API server then
    /// listens on the host end of the node's link instead of loopback.
    pub node: Option<NodeOptions>,
    /// Encrypt Secrets in etcd (`aescbc`, [`etcd`]), as a cluster with an EncryptionConfiguration.
    pub encryption: bool,
}

/// The audit policy of [`ClusterOptions::audit_log`]: writes at `Metadata` level, nothing else.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// What a cluster with a node runs beyond the default controllers: Deployments and their
/// ReplicaSets, EndpointSlices for Services (kube-proxy reads them), each namespace's `default`
/// ServiceAccount, the `kube-root-ca.crt` ConfigMap that service-account volumes mount, and the
/// node lifecycle (it lifts the `not-ready` taint the kubelet registers with).
const NODE_CONTROLLERS: &str = ",deployment-controller,replicaset-controller,endpointslice-controller,\
serviceaccount-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller";

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NAMESPACES: AtomicU32 = AtomicU32::new(0);

/// The control plane shared by every test in this process, started on first use.
///
/// An error carries the reason (build failure, a process that exited, its last log lines), so a
/// test that cannot get a cluster fails with it instead of skipping.
pub fn shared() -> Result<&'static Cluster, String> {
    SHARED
        .get_or_init(|| {
            let started = Cluster::start();
            if started.is_ok() {
                process::at_exit(stop_shared);
            }
            started
        })
        .as_ref()
        .map_err(Clone::clone)
}

impl Cluster {
    /// Builds the binaries if they are not cached, then starts etcd, kube-apiserver and
    /// kube-controller-manager and waits until the API server reports ready.
    ///
    pub fn start() -> Result<Cluster, String> {
        Self::start_with(ClusterOptions::default())
    }

    /// [`Cluster::start`] with optional features.
    pub fn start_with(options: ClusterOptions) -> Result<Cluster, String> {
        // A port picked as free can be taken by another process before ours binds it: try again
        // with fresh ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once(&options) {
                Err(e) if attempt < 4 && e.contains("address already in use") => continue,
                other => return other,
            }
        }
    }

    fn start_once(options: &ClusterOptions) -> Result<Cluster, String> {
        let bins = process::binaries()?;
        // Kept, not dropped: the shared cluster lives in a static, so its directory is removed by
        // `stop` (from the `atexit` hook), or by the sweep of the next start after a kill.
        let dir = process::scratch_dir("agentauth-cluster-")?.keep();
        let node = match &options.node {
            Some(_) => match Node::create(&dir) {
                Ok(n) => Some(n),
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            },
            None => None,
        };
        let api_host = node
            .as_ref()
            .map_or("127.0.0.1".to_owned(), |n| n.host_ip().to_owned());
        let mut cluster = Cluster {
            kubeconfig: dir.join("kubeconfig"),
            server: String::new(),
            etcd_url: String::new(),
            dir,
            procs: Mutex::new(Vec::new()),
            options: options.clone(),
            api_host,
            node: Mutex::new(node),
        };
        let booted =
            certs::generate(&cluster.dir, &cluster.api_host).and_then(|pki| cluster.boot(bins, &pki));
        match booted {
            Ok(()) => Ok(cluster),
            Err(e) => {
                cluster.stop();
                Err(e)
            }
        }
    }

    fn boot(&mut self, bins: &Binaries, pki: &certs::Pki) -> Result<(), String> {
        let dir = self.dir.clone();
        let d = |name: &str| dir.join(name).display().to_string();
        let (etcd_port, peer_port, api_port, kcm_port) = (
            process::free_port()?,
            process::free_port()?,
            process::free_port()?,
            process::free_port()?,
        );
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = Proc::spawn(
            &dir,
            "etcd",
            &bins.etcd,
            &[
                "--name=default".into(),
                format!("--data-dir={}", d("etcd-data")),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
            &[],
        )?;
        self.push(etcd);
        self.etcd_url = etcd_url.clone();
        self.wait_for("etcd", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", etcd_port)).is_ok()
        })?;

        self.server = format!("https://{}:{api_port}", self.api_host);
        std::fs::write(&self.kubeconfig, kubeconfig::render(&self.server, pki))
            .map_err(|e| format!("cannot write kubeconfig: {e}"))?;
        let mut extra = Vec::new();
        if self.options.audit_log {
            std::fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY)
                .map_err(|e| format!("cannot write the audit policy: {e}"))?;
            extra = vec![
                format!("--audit-policy-file={}", d("audit-policy.yaml")),
                format!("--audit-log-path={}", d("audit.log")),
                "--audit-log-format=json".into(),
            ];
        }
        if self.options.encryption {
            let path = etcd::write_encryption_config(&dir)?;
            extra.push(format!("--encryption-provider-config={}", path.display()));
        }
        let apiserver = Proc::spawn(
            &dir,
            "kube-apiserver",
            &bins.kube_apiserver,
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--bind-address={}", self.api_host),
                format!("--advertise-address={}", self.api_host),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", d("apiserver-certs")),
                format!("--tls-cert-file={}", d("apiserver.crt")),
                format!("--tls-private-key-file={}", d("apiserver.key")),
                format!("--client-ca-file={}", d("ca.crt")),
                format!("--service-account-key-file={}", d("sa.pub")),
                format!("--service-account-signing-key-file={}", d("sa.key")),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-cluster-ip-range={}", node::SERVICE_CIDR),
                // logs, exec and port-forward: the kubelet takes client certificates of the CA.
                format!("--kubelet-client-certificate={}", d("admin.crt")),
                format!("--kubelet-client-key={}", d("admin.key")),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--authorization-mode=RBAC".into(),
                "--allow-privileged=true".into(),
                "--max-requests-inflight=1000".into(),
                "--max-mutating-requests-inflight=500".into(),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(extra)
            .collect::<Vec<_>>(),
            &[],
        )?;
        self.push(apiserver);
        let kubeconfig = self.kubeconfig.clone();
        let ready = Instant::now() + Duration::from_secs(120);
        loop {
            self.check_alive()?;
            if process::block_on(readyz(&kubeconfig)).is_ok() {
                break;
            }
            if Instant::now() > ready {
                let last = process::block_on(readyz(&kubeconfig)).err().unwrap_or_default();
                return Err(format!(
                    "kube-apiserver not ready after 120s: {last}\n{}",
                    self.log_tails()
                ));
            }
            std::thread::sleep(Duration::from_millis(200)); // poll interval
        }

        let mut controllers = "garbage-collector-controller,namespace-controller".to_owned();
        if self.options.node.is_some() {
            controllers.push_str(NODE_CONTROLLERS);
        }
        let kcm = Proc::spawn(
            &dir,
            "kube-controller-manager",
            &bins.kube_controller_manager,
            &[
                format!("--kubeconfig={}", self.kubeconfig.display()),
                format!("--controllers={controllers}"),
                format!("--root-ca-file={}", d("ca.crt")),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                format!("--cert-dir={}", d("kcm-certs")),
                "--use-service-account-credentials=false".into(),
                "--v=1".into(),
            ],
            &[],
        )?;
        self.push(kcm);
        self.wait_for("kube-controller-manager", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", kcm_port)).is_ok()
        })?;
        match self.options.node.clone() {
            Some(opts) => self.boot_node(&opts),
            None => Ok(()),
        }
    }

    /// The scheduler, then the node's components.
    fn boot_node(&mut self, opts: &NodeOptions) -> Result<(), String> {
        let dir = self.dir.clone();
        let port = process::free_port()?;
        let scheduler = Proc::spawn(
            &dir,
            "kube-scheduler",
            &node_binaries()?.kube_scheduler,
            &[
                format!("--kubeconfig={}", self.kubeconfig.display()),
                format!("--authentication-kubeconfig={}", self.kubeconfig.display()),
                format!("--authorization-kubeconfig={}", self.kubeconfig.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
                "--v=1".into(),
            ],
            &[],
        )?;
        self.push(scheduler);
        let (kubeconfig, ca) = (self.kubeconfig.clone(), dir.join("ca.crt"));
        let mut node = self.node.lock().map_err(|_| "node lock poisoned".to_owned())?;
        match node.as_mut() {
            Some(n) => n.start(&kubeconfig, &ca, opts),
            None => Err("no node sandbox".to_owned()),
        }
    }

    /// Runs `f` with the node, for a cluster started with [`ClusterOptions::node`].
    pub fn with_node<R>(&self, f: impl FnOnce(&Node) -> R) -> Option<R> {
        self.node.lock().ok()?.as_ref().map(f)
    }

    fn push(&self, p: Proc) {
        if let Ok(mut procs) = self.procs.lock() {
            procs.push(p);
        }
    }

    fn check_alive(&self) -> Result<(), String> {
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| "cluster lock poisoned".to_owned())?;
        for p in procs.iter_mut() {
            if let Some(status) = p.exited() {
                return Err(format!("{} exited early ({status})\n{}", p.name, p.log_tail(40)));
            }
        }
        Ok(())
    }

    fn wait_for(&self, what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !ok() {
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("{what} not up after {limit:?}\n{}", self.log_tails()));
            }
            std::thread::sleep(Duration::from_millis(100)); // poll interval
        }
        Ok(())
    }

    fn log_tails(&self) -> String {
        let procs = match self.procs.lock() {
            Ok(p) => p,
            Err(_) => return String::new(),
        };
        procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(20)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Takes a component (`etcd`, `kube-apiserver`, `kube-controller-manager`) down for `down`,
    /// then starts it again with the same flags and waits until the API server is ready again.
    pub fn outage(&self, component: &str, down: Duration) -> Result<(), String> {
        self.with_component(component, |p| {
            p.kill();
            Ok(())
        })?;
        std::thread::sleep(down); // the outage itself
        self.with_component(component, Proc::respawn)?;
        let kubeconfig = self.kubeconfig.clone();
        self.wait_for("the API server after the outage", Duration::from_secs(60), || {
            let kc = kubeconfig.clone();
            process::block_on(async move { readyz(&kc).await.is_ok() })
        })
    }

    fn with_component(
        &self,
        name: &str,
        f: impl FnOnce(&mut Proc) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut procs = self
            .procs
            .lock()
            .map_err(|_| "cluster lock poisoned".to_owned())?;
        let p = procs
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or(format!("no component {name}"))?;
        f(p)
    }

    /// Kills every process (last started first) and removes the cluster directory. Idempotent.
    pub fn stop(&self) {
        if let Ok(mut node) = self.node.lock()
            && let Some(mut n) = node.take()
        {
            n.stop();
        }
        if let Ok(mut procs) = self.procs.lock() {
            while let Some(mut p) = procs.pop() {
                p.kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Path of the admin kubeconfig (user in `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The audit log, when started with [`ClusterOptions::audit_log`].
    pub fn audit_log_path(&self) -> Option<PathBuf> {
        self.options.audit_log.then(|| self.dir.join("audit.log"))
    }

    /// The API server URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Directory holding the cluster's certificates, data and process logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new admin client. Make one per test: a client is bound to the Tokio runtime it was made in.
    pub async fn client(&self) -> Result<kube::Client, String> {
        client_from(&self.kubeconfig).await
    }

    /// Creates a fresh namespace `<prefix>-<n>` and returns its name, so that tests do not see
    /// each other's objects.
    pub async fn namespace(&self, client: &kube::Client, prefix: &str) -> Result<String, String> {
        let n = NAMESPACES.fetch_add(1, Ordering::SeqCst);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| format!("cannot create namespace {name}: {e}"))?;
        Ok(name)
    }
}

extern "C" fn stop_shared() {
    if let Some(Ok(cluster)) = SHARED.get() {
        cluster.stop();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn client_from(path: &Path) -> Result<kube::Client, String> {
    let kc = Kubeconfig::read_from(path).map_err(|e| format!("cannot read kubeconfig: {e}"))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("bad kubeconfig: {e}"))?;
    kube::Client::try_from(config).map_err(|e| format!("cannot build client: {e}"))
}

async fn readyz(kubeconfig: &Path) -> Result<(), String> {
    let client = client_from(kubeconfig).await?;
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let body = client.request_text(req).await.map_err(|e| e.to_string())?;
    if body.trim() == "ok" { Ok(()) } else { Err(body) }
}

/// Blocks until SIGINT or SIGTERM arrives.
pub fn wait_for_signal() {
    process::block_on(async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}
