//! Plumbing of the benchmark suite: a dedicated control plane with an audit log, the operator
//! binary under a client identity of its own, bounded-concurrency object creation, watch-based
//! trackers, and readings from `/proc`, the API server's `/metrics` and its audit log.
//!
//! Identities (all in `system:masters`, by impersonation from the admin certificate, so that every
//! writer pays the same authentication cost and the audit log can tell them apart):
//! - [`OPERATOR_USER`]: the operator process (its own kubeconfig);
//! - [`BENCH_USER`]: the load the suite applies (account creation, the floor's status patches);
//! - the plain admin: set-up and clean-up.
#![allow(dead_code)] // the smoke test uses a part of this module

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_auth_operator::api::{self, AccountState, ConnectedAccount, Connection};
use agentauth_testcluster::fixtures::ConnectionFixture;
use agentauth_testcluster::{Cluster, ClusterOptions, Proc, free_port};
use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

/// Errors are reasons, for the report.
pub type Res<T> = Result<T, String>;

/// The operator's own namespace.
pub const OPERATOR_NS: &str = "agent-auth-system";
/// The operator's client identity (audit log `impersonatedUser`).
pub const OPERATOR_USER: &str = "agent-auth-operator";
/// The suite's load identity: creates, and the floor's status patches.
pub const BENCH_USER: &str = "bench-client";
/// The OAuth2 Connection every PENDING_AUTH account uses.
pub const CONNECTION: &str = "app";
/// Where that Connection sends users: nothing listens there (the gateway only redirects to it).
pub const AUTHORIZATION_URL: &str = "http://127.0.0.1:1/auth";
/// Hosts namespaced Connections of the suite may name (`--connection-host-allow`).
pub const BENCH_HOSTS: &str = "127.0.0.0/8";

/// The control plane of one suite run, its clients, and what it holds.
pub struct Env {
    pub cluster: Cluster,
    /// Plain admin client: set-up and clean-up.
    pub admin: kube::Client,
    /// [`BENCH_USER`]: the load under measurement.
    pub bench: kube::Client,
    pub operator_kubeconfig: PathBuf,
    pub audit: Option<Audit>,
    /// ConnectedAccounts in the cluster that the operator has converged (its idle check waits for
    /// at least this many reconciles after a start).
    pub accounts: AtomicUsize,
}

impl Env {
    /// Starts a dedicated control plane (with the audit log), installs the CRDs and the operator's
    /// namespace, and writes the operator's kubeconfig.
    pub async fn start() -> Res<Env> {
        let cluster = tokio::task::spawn_blocking(|| {
            Cluster::start_with(ClusterOptions {
                audit_log: true,
                ..Default::default()
            })
        })
        .await
        .map_err(|e| format!("cluster start: {e}"))??;
        let admin = cluster.client().await?;
        install_crds(&admin).await?;
        create_namespace(&admin, OPERATOR_NS).await?;
        let bench = client_as(cluster.kubeconfig_path(), BENCH_USER).await?;
        let operator_kubeconfig = cluster.dir().join("operator.kubeconfig");
        write_kubeconfig_as(cluster.kubeconfig_path(), &operator_kubeconfig, OPERATOR_USER)?;
        let audit = cluster.audit_log_path().map(|path| Audit { path });
        Ok(Env {
            cluster,
            admin,
            bench,
            operator_kubeconfig,
            audit,
            accounts: AtomicUsize::new(0),
        })
    }

    /// A fresh namespace `<prefix>-<pid>-<n>`.
    pub async fn namespace(&self, prefix: &str) -> Res<String> {
        self.cluster.namespace(&self.admin, prefix).await
    }

    pub fn accounts(&self) -> usize {
        self.accounts.load(Ordering::SeqCst)
    }

    pub fn add_accounts(&self, n: usize) {
        self.accounts.fetch_add(n, Ordering::SeqCst);
    }

    /// CPU seconds used so far by etcd and kube-apiserver of this control plane (found by their
    /// command lines, which name the cluster directory).
    pub fn control_plane_cpu(&self) -> BTreeMap<String, f64> {
        let dir = self.cluster.dir().display().to_string();
        let mut out = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd);
            if !cmd.contains(&dir) {
                continue;
            }
            let exe = cmd.split('\0').next().unwrap_or_default();
            let name = Path::new(exe)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if matches!(name.as_str(), "etcd" | "kube-apiserver") {
                *out.entry(name).or_default() += cpu_seconds(pid).unwrap_or(0.0);
            }
        }
        out
    }
}

/// Server-side applies the operator's CRDs and waits until each is Established.
pub async fn install_crds(client: &kube::Client) -> Res<()> {
    agentauth_testcluster::fixtures::install_crds(client, api::crds()).await
}

pub async fn create_namespace(client: &kube::Client, name: &str) -> Res<()> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(format!("create namespace {name}: {e}")),
    }
}

/// Deletes a namespace; the namespace controller empties it in the background.
pub async fn delete_namespace(client: &kube::Client, name: &str) -> Res<()> {
    match Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(format!("delete namespace {name}: {e}")),
    }
}

/// Waits until a namespace holds no ConnectedAccount (their finalizers ran).
pub async fn wait_no_accounts(client: &kube::Client, ns: &str, limit: Duration) -> Res<()> {
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    poll(limit, &format!("accounts in {ns} gone"), || async {
        let left = accounts
            .list_metadata(&ListParams::default().limit(1))
            .await
            .ok()?;
        left.items.is_empty().then_some(())
    })
    .await
}

/// Deletes every ConnectedAccount of a namespace in one call (no finalizers when the operator
/// never saw them) and waits until none is left.
pub async fn delete_accounts(client: &kube::Client, ns: &str, limit: Duration) -> Res<()> {
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    accounts
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .map_err(|e| format!("delete accounts in {ns}: {e}"))?;
    wait_no_accounts(client, ns, limit).await
}

/// A client acting as `user` in `system:masters`.
pub async fn client_as(kubeconfig: &Path, user: &str) -> Res<kube::Client> {
    let kc = kubeconfig_as(kubeconfig, user)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("bad kubeconfig: {e}"))?;
    kube::Client::try_from(config).map_err(|e| format!("cannot build client: {e}"))
}

fn kubeconfig_as(kubeconfig: &Path, user: &str) -> Res<Kubeconfig> {
    let mut kc = Kubeconfig::read_from(kubeconfig).map_err(|e| format!("read kubeconfig: {e}"))?;
    for named in &mut kc.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.impersonate = Some(user.to_owned());
            auth.impersonate_groups = Some(vec!["system:masters".to_owned()]);
        }
    }
    Ok(kc)
}

/// Writes a kubeconfig (JSON, which is YAML) that acts as `user`.
pub fn write_kubeconfig_as(admin: &Path, out: &Path, user: &str) -> Res<()> {
    let kc = kubeconfig_as(admin, user)?;
    let text = serde_json::to_string(&kc).map_err(|e| e.to_string())?;
    std::fs::write(out, text).map_err(|e| format!("write {}: {e}", out.display()))
}

/// Polls `check` until it returns `Some`, or fails naming `what` after `limit`.
pub async fn poll<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    let mut wait = Duration::from_millis(20);
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(wait).await; // poll interval
        wait = (wait * 2).min(Duration::from_millis(250));
    }
}

/// Runs `f(0..n)` with at most `concurrency` calls in flight; the first error ends it.
pub async fn bounded<F, Fut>(n: usize, concurrency: usize, f: F) -> Res<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Res<()>>,
{
    futures::stream::iter(0..n)
        .map(f)
        .buffer_unordered(concurrency.max(1))
        .try_for_each(|()| futures::future::ready(Ok(())))
        .await
}

/// API calls retried so far (reported: a run with many retries measured a struggling server).
pub static RETRIES: AtomicUsize = AtomicUsize::new(0);

/// Retries an API call on throttling, 5xx and transport errors (bounded backoff, 6 attempts).
pub async fn retry<T, F, Fut>(what: &str, mut call: F) -> Res<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Ok(v) => return Ok(v),
            Err(kube::Error::Api(e)) if e.code != 429 && e.code < 500 => {
                return Err(format!("{what}: {e}"));
            }
            Err(e) if attempt >= 6 => return Err(format!("{what}: {e}")),
            Err(e) => {
                if RETRIES.fetch_add(1, Ordering::Relaxed) < 5 {
                    eprintln!("bench: retrying {what}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await; // backoff
            }
        }
    }
}

/// Creates `obj`, retrying like [`retry`].
pub async fn create<K>(api: &Api<K>, obj: &K) -> Res<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PostParams::default();
    retry("create", || api.create(&pp, obj)).await.map(|_| ())
}

/// A ConnectedAccount on the Connection `connection`.
pub fn account(name: &str, connection: &str) -> Res<ConnectedAccount> {
    serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": name},
        "spec": {"connectionRef": {"name": connection}, "identifier": format!("{name}@example.com")}
    }))
    .map_err(|e| e.to_string())
}

/// Creates `prefix-0 .. prefix-(n-1)` on `connection` with at most `concurrency` creates in flight.
pub async fn create_accounts(
    client: &kube::Client,
    ns: &str,
    prefix: &str,
    n: usize,
    concurrency: usize,
    connection: &str,
) -> Res<()> {
    let api: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    bounded(n, concurrency, |i| {
        let api = api.clone();
        async move {
            let a = account(&format!("{prefix}-{i}"), connection)?;
            create(&api, &a).await
        }
    })
    .await
}

/// The status a bare client writes in the floor: the same fields and sizes as the operator's
/// PENDING_AUTH status (a link of the same length, the Ready condition).
pub fn floor_status(name: &str, ns: &str, link_base: &str) -> Value {
    let token = "x".repeat(300);
    let now = Timestamp::now();
    let expires = now + jiff::SignedDuration::from_hours(24);
    let stamp = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": name, "namespace": ns},
        "status": {
            "state": "PENDING_AUTH",
            "authorizationLink": format!("{link_base}/connect/{token}"),
            "authorizationLinkExpiresAt": stamp(expires),
            "secretName": format!("{name}-credentials"),
            "conditions": [{
                "type": "Ready", "status": "False", "reason": "AuthorizationPending",
                "message": "waiting for the user to open the authorization link",
                "lastTransitionTime": stamp(now), "observedGeneration": 1
            }],
            "observedGeneration": 1
        }
    })
}

/// The floor's status write: one server-side apply of [`floor_status`] on the status subresource.
pub async fn patch_floor_status(api: &Api<ConnectedAccount>, name: &str, ns: &str) -> Res<()> {
    let body = floor_status(name, ns, "http://127.0.0.1:8080");
    let pp = PatchParams::apply("bench-floor").force();
    let patch = Patch::Apply(&body);
    retry("patch status", || api.patch_status(name, &pp, &patch)).await?;
    Ok(())
}

/// Creates the client secret and the OAuth2 [`CONNECTION`] every PENDING_AUTH account uses.
pub async fn create_connection(client: &kube::Client, ns: &str) -> Res<()> {
    let oauth2 = json!({
        "clientId": format!("bench-client-{ns}"), // one OAuth client per namespace
        "authorizationUrl": AUTHORIZATION_URL,
        "tokenUrl": "http://127.0.0.1:1/token",
        "scopes": ["openid"],
    });
    connection(CONNECTION, "bench-client-secret", oauth2)
        .create::<Connection>(client, ns)
        .await
        .map(|_| ())
}

/// An `OAuth2` Connection `name` whose client secret is in the opted-in Secret `<name>-oauth`.
pub fn connection(name: &str, client_secret: &str, oauth2: Value) -> ConnectionFixture {
    ConnectionFixture::oauth2(
        name,
        client_secret,
        oauth2,
        agent_auth_operator::store::secret_ref::opt_in_labels(),
    )
}

/// Waits until the Connection controller reports the Connection Ready.
pub async fn wait_connection_ready(client: &kube::Client, ns: &str, name: &str) -> Res<()> {
    let api: Api<Connection> = Api::namespaced(client.clone(), ns);
    poll(
        Duration::from_secs(60),
        &format!("Connection {name} Ready"),
        || async {
            let c = api.get(name).await.ok()?;
            let ready = c
                .status?
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        },
    )
    .await
}

pub fn state(a: &ConnectedAccount) -> Option<AccountState> {
    a.status.as_ref().and_then(|s| s.state)
}

/// PENDING_AUTH with a link: converged for an account without credentials.
pub fn has_link(a: &ConnectedAccount) -> bool {
    state(a) == Some(AccountState::PendingAuth)
        && a.status.as_ref().is_some_and(|s| s.authorization_link.is_some())
}

pub fn is_active(a: &ConnectedAccount) -> bool {
    state(a) == Some(AccountState::Active)
}

/// Watches the ConnectedAccounts of one namespace and records, per name, when an object first
/// satisfied a predicate (as this client saw it arrive).
pub struct Tracker {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    count: tokio::sync::watch::Receiver<(usize, Option<Instant>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracker {
    /// Starts watching; returns once the initial list is in.
    pub async fn start(client: &kube::Client, ns: &str, pred: fn(&ConnectedAccount) -> bool) -> Res<Tracker> {
        let api: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (tx, count) = tokio::sync::watch::channel((0, None));
        let (init_tx, init_rx) = tokio::sync::oneshot::channel();
        let map = seen.clone();
        let task = tokio::spawn(async move {
            let mut init = Some(init_tx);
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(t) = init.take() {
                            let _ = t.send(());
                        }
                    }
                    Ok(watcher::Event::Apply(a) | watcher::Event::InitApply(a)) if pred(&a) => {
                        let now = Instant::now();
                        let Ok(mut m) = map.lock() else { return };
                        if let std::collections::hash_map::Entry::Vacant(e) = m.entry(a.name_any()) {
                            e.insert(now);
                            tx.send_replace((m.len(), Some(now)));
                        }
                    }
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), init_rx)
            .await
            .map_err(|_| format!("watch on {ns} did not start"))?
            .map_err(|_| format!("watch on {ns} ended"))?;
        Ok(Tracker { seen, count, task })
    }

    /// Waits until `n` objects satisfied the predicate; returns when the `n`-th did.
    pub async fn wait_count(&self, n: usize, limit: Duration) -> Res<Instant> {
        let mut rx = self.count.clone();
        let waited = tokio::time::timeout(limit, rx.wait_for(|(c, _)| *c >= n)).await;
        match waited {
            Ok(Ok(v)) => v.1.ok_or_else(|| "no time recorded".to_owned()),
            _ => Err(format!(
                "only {} of {n} accounts converged after {limit:?}",
                self.count.borrow().0
            )),
        }
    }

    /// Waits until `name` satisfied the predicate; returns when it did.
    pub async fn wait_name(&self, name: &str, limit: Duration) -> Res<Instant> {
        let mut rx = self.count.clone();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(t) = self.seen.lock().ok().and_then(|m| m.get(name).copied()) {
                return Ok(t);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{name} did not converge within {limit:?}"));
            }
            if let Ok(Err(_)) = tokio::time::timeout(left, rx.changed()).await {
                return Err(format!("the watch ended before {name} converged"));
            }
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Resident and peak resident memory of a process, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn proc_mem(pid: u32) -> Res<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Mem {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    })
}

/// User + system CPU seconds a process has used.
pub fn cpu_seconds(pid: u32) -> Res<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which may hold spaces, inside parentheses).
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command name.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((ticks(11) + ticks(12)) as f64 / clock_ticks())
}

/// This process's CPU seconds so far.
pub fn own_cpu_seconds() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(0.0)
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// The operator binary as one process at a time, always on the same ports (links keep pointing
/// at the same gateway across restarts).
pub struct Operator {
    bin: PathBuf,
    dir: PathBuf,
    kubeconfig: PathBuf,
    gateway_port: u16,
    admin_port: u16,
    /// `--broker-addr`, when this build has a broker.
    broker_port: Option<u16>,
    /// `--refresh-concurrency` (or `REFRESH_CONCURRENCY`).
    pub refresh_limit: usize,
    /// Whether this build has `--refresh-concurrency`.
    pub refresh_flag: bool,
    proc: Option<Proc>,
    starts: u32,
    http: reqwest::Client,
}

impl Operator {
    pub fn new(env: &Env, refresh_limit: usize) -> Res<Operator> {
        // Another build can be measured on the same terms (e.g. an older commit, for a before/after).
        let bin = std::env::var_os("BENCH_OPERATOR_BIN")
            .filter(|b| !b.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_agent-auth-operator")));
        let help = std::process::Command::new(&bin)
            .args(["run", "--help"])
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let refresh_flag = String::from_utf8_lossy(&help.stdout).contains("--refresh-concurrency");
        let broker_flag = String::from_utf8_lossy(&help.stdout).contains("--broker-addr");
        Ok(Operator {
            bin,
            dir: env.cluster.dir().to_owned(),
            kubeconfig: env.operator_kubeconfig.clone(),
            gateway_port: free_port()?,
            admin_port: free_port()?,
            broker_port: if broker_flag { Some(free_port()?) } else { None },
            refresh_limit,
            refresh_flag,
            proc: None,
            starts: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())?,
        })
    }

    pub fn gateway_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    /// The token broker, when this build has one.
    pub fn broker_url(&self) -> Option<String> {
        self.broker_port.map(|p| format!("http://127.0.0.1:{p}"))
    }

    pub fn running(&self) -> bool {
        self.proc.is_some()
    }

    pub fn pid(&self) -> Res<u32> {
        self.proc
            .as_ref()
            .map(Proc::pid)
            .ok_or_else(|| "the operator is not running".to_owned())
    }

    /// Starts the process (if not running) and waits until `/readyz` says its caches synced.
    pub async fn start(&mut self) -> Res<()> {
        if self.proc.is_some() {
            return Ok(());
        }
        self.starts += 1;
        let mut args = vec![
            "run".to_owned(),
            "--instance=bench".to_owned(),
            format!("--namespace={OPERATOR_NS}"),
            format!("--gateway-url={}", self.gateway_url()),
            format!("--gateway-addr=127.0.0.1:{}", self.gateway_port),
            format!("--admin-addr=127.0.0.1:{}", self.admin_port),
            "--log-format=json".to_owned(),
            "--log-level=info".to_owned(),
        ];
        if let Some(port) = self.broker_port {
            args.push(format!("--broker-addr=127.0.0.1:{port}"));
        }
        if self.refresh_flag {
            args.push(format!("--refresh-concurrency={}", self.refresh_limit));
        }
        let kubeconfig = self.kubeconfig.display().to_string();
        let limit = self.refresh_limit.to_string();
        let proc = Proc::spawn(
            &self.dir,
            &format!("operator-{}", self.starts),
            &self.bin,
            &args,
            &[
                ("KUBECONFIG", &kubeconfig),
                ("REFRESH_CONCURRENCY", &limit),
                // The suite's token servers run on loopback, allowed as a user would (environment
                // variables: an older build measured for a before/after simply ignores them).
                ("EGRESS_ALLOW", "127.0.0.1/32"),
                // The suite scrapes /metrics on loopback without a token.
                ("METRICS_AUTH", "false"),
                ("CONNECTION_HOST_ALLOW", BENCH_HOSTS),
            ],
        )?;
        self.proc = Some(proc);
        let deadline = Instant::now() + Duration::from_secs(180);
        let url = format!("{}/readyz", self.admin_url());
        loop {
            let ok = self
                .http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if let Some(p) = self.proc.as_mut()
                && let Some(status) = p.exited()
            {
                let tail = p.log_tail(30);
                self.proc = None;
                return Err(format!("operator exited ({status}):\n{tail}"));
            }
            if Instant::now() > deadline {
                return Err(format!("operator not ready after 180 s:\n{}", self.log_tail(30)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        }
    }

    /// SIGKILLs the process (only ever done while it is idle).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.as_ref().map(|p| p.log_tail(lines)).unwrap_or_default()
    }

    /// The operator's `/metrics` text.
    pub async fn metrics(&self) -> Res<String> {
        self.http
            .get(format!("{}/metrics", self.admin_url()))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())
    }

    /// Account reconciles since the process started.
    pub async fn reconciles(&self) -> Res<u64> {
        let text = self.metrics().await?;
        Ok(metric_sum(
            &text,
            "agentauth_reconcile_duration_seconds_count",
            &[("controller", "account")],
        ) as u64)
    }

    /// Waits until at least `at_least` account reconciles ran since the start and none ran for
    /// a second: the operator has caught up and is quiet. Returns the reconcile count.
    pub async fn wait_idle(&self, at_least: usize, limit: Duration) -> Res<u64> {
        let deadline = Instant::now() + limit;
        let mut last = (u64::MAX, Instant::now());
        loop {
            let n = self.reconciles().await?;
            if n != last.0 {
                last = (n, Instant::now());
            } else if n >= at_least as u64 && last.1.elapsed() >= Duration::from_secs(1) {
                return Ok(n);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "operator not idle after {limit:?} ({n} reconciles, expected at least {at_least})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await; // poll interval
        }
    }

    pub fn mem(&self) -> Res<Mem> {
        proc_mem(self.pid()?)
    }

    pub fn cpu(&self) -> Res<f64> {
        cpu_seconds(self.pid()?)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sum of a Prometheus/OpenMetrics sample over the series whose labels include `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            // A leading comma makes `resource=` not match inside `subresource=`.
            let label_text = format!(",{label_text}");
            let ok = labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!(",{k}=\"{v}\"")));
            ok.then(|| value.split_whitespace().next()?.parse::<f64>().ok())?
        })
        .sum()
}

/// The API server's own `/metrics` text.
pub async fn apiserver_metrics(client: &kube::Client) -> Res<String> {
    let req = axum::http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    client.request_text(req).await.map_err(|e| e.to_string())
}

/// Mutating requests in an `apiserver_request_total` reading, all clients (the metric has no
/// client label in Kubernetes 1.36, so this is everyone's total).
pub fn apiserver_writes(metrics: &str) -> u64 {
    ["POST", "PUT", "PATCH", "DELETE", "APPLY"]
        .iter()
        .map(|verb| metric_sum(metrics, "apiserver_request_total", &[("verb", verb)]))
        .sum::<f64>() as u64
}

/// `apiserver_request_total` for one verb and resource, all clients.
pub fn apiserver_requests(metrics: &str, verb: &str, resource: &str) -> u64 {
    metric_sum(
        metrics,
        "apiserver_request_total",
        &[("verb", verb), ("resource", resource)],
    ) as u64
}

/// The API server's audit log (mutating requests only, see `ClusterOptions::audit_log`).
pub struct Audit {
    pub path: PathBuf,
}

/// One mutating request from the audit log.
#[derive(Debug, Clone)]
pub struct Write {
    /// The impersonated user, else the authenticated one.
    pub user: String,
    pub verb: String,
    /// `resource[.group][/subresource]`.
    pub resource: String,
    pub code: u16,
    pub at: Timestamp,
    /// Time the API server took to answer (request received to response complete), ms.
    pub server_ms: f64,
}

impl Audit {
    /// Current length: a starting point for [`Audit::writes`].
    pub fn offset(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// Writes received within `[from, to]`, reading from `offset` on.
    pub fn writes(&self, offset: u64, from: Timestamp, to: Timestamp) -> Res<Vec<Write>> {
        let mut f = std::fs::File::open(&self.path).map_err(|e| e.to_string())?;
        f.seek(std::io::SeekFrom::Start(offset))
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for line in std::io::BufReader::new(f).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["stage"] != "ResponseComplete" {
                continue;
            }
            let Some(at) = v["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
            else {
                continue;
            };
            if at < from || at > to {
                continue;
            }
            let user = v["impersonatedUser"]["username"]
                .as_str()
                .or(v["user"]["username"].as_str())
                .unwrap_or_default()
                .to_owned();
            let o = &v["objectRef"];
            let mut resource = o["resource"].as_str().unwrap_or_default().to_owned();
            if let Some(g) = o["apiGroup"].as_str().filter(|g| !g.is_empty()) {
                resource = format!("{resource}.{g}");
            }
            if let Some(s) = o["subresource"].as_str() {
                resource = format!("{resource}/{s}");
            }
            let done = v["stageTimestamp"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .unwrap_or(at);
            out.push(Write {
                server_ms: done.duration_since(at).as_secs_f64() * 1000.0,
                user,
                verb: v["verb"].as_str().unwrap_or_default().to_owned(),
                resource,
                code: v["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
                at,
            });
        }
        Ok(out)
    }
}

/// `verb resource` -> count, for one user.
pub fn breakdown(writes: &[Write], user: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for w in writes.iter().filter(|w| w.user == user) {
        *out.entry(format!("{} {}", w.verb, w.resource)).or_default() += 1;
    }
    out
}

/// p50/p99 of the API server's answer time for one user's writes, ms.
pub fn server_latency(writes: &[Write], user: &str) -> Value {
    let mut ms: Vec<f64> = writes
        .iter()
        .filter(|w| w.user == user)
        .map(|w| w.server_ms)
        .collect();
    ms.sort_by(f64::total_cmp);
    json!({"p50": percentile(&ms, 50.0), "p99": percentile(&ms, 99.0), "n": ms.len()})
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The machine, from `/proc`.
pub fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_default();
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": model,
        "mem_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_at_start": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}
