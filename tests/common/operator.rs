//! The operator under test, run as its real binary against the test control plane, with a real
//! Dex in front of it: one stack per test binary, shared by its tests (each in its own namespace).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use agentauth_testcluster::{Cluster, Proc, at_exit, block_on, free_port};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

use super::dex::{Dex, DexOptions};

/// The operator's own namespace in tests.
pub const OPERATOR_NS: &str = "agent-auth-system";
/// Name of the ClusterConnection whose redirect URI the test Dex registers.
pub const PLATFORM_CONNECTION: &str = "platform-dex";
/// Access-token lifetime Dex issues in tests: short, so refresh happens within a test.
pub const TOKEN_TTL: &str = "20s";

/// The origin of the "platform" pages tests may send users to (a loopback port reserved once per
/// test binary; a test serves its page there). Every test operator allows it, `https://platform.example`
/// (a page no test follows) and its own gateway origin as redirect targets.
pub fn platform_origin() -> &'static str {
    static ORIGIN: OnceLock<String> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        let port = free_port().unwrap_or_else(|e| panic!("no free port for the platform page: {e}"));
        format!("http://127.0.0.1:{port}")
    })
}

/// How to run one operator process.
#[derive(Debug, Clone, Default)]
pub struct OperatorOptions {
    /// Public gateway URL; default: this process's own gateway address.
    pub gateway_url: Option<String>,
    pub leader_election: bool,
    /// Instance name (Events, lease identity); default `operator`.
    pub instance: Option<String>,
    /// More `run` flags, e.g. `--watch-namespaces=a,b`.
    pub extra_args: Vec<String>,
    /// The gateway's port; default: a free one.
    pub gateway_port: Option<u16>,
    /// The kubeconfig the process uses; default: the cluster's admin one.
    pub kubeconfig: Option<PathBuf>,
}

/// A running operator process. Killed on drop.
pub struct Operator {
    proc: Mutex<Option<Proc>>,
    starts: Mutex<u32>,
    dir: PathBuf,
    kubeconfig: PathBuf,
    gateway_port: u16,
    admin_port: u16,
    broker_port: u16,
    options: OperatorOptions,
    /// The public gateway URL (redirect URIs point here).
    pub gateway_url: String,
    /// This process's own gateway address (differs from `gateway_url` for extra replicas).
    pub local_gateway_url: String,
    pub admin_url: String,
    /// The token broker (`POST /token`).
    pub broker_url: String,
}

impl Operator {
    pub fn start(cluster: &Cluster) -> Result<Operator, String> {
        Self::start_with(cluster, OperatorOptions::default())
    }

    pub fn start_with(cluster: &Cluster, options: OperatorOptions) -> Result<Operator, String> {
        let gateway_port = match options.gateway_port {
            Some(p) => p,
            None => free_port()?,
        };
        let (admin_port, broker_port) = (free_port()?, free_port()?);
        let instance = options.instance.clone().unwrap_or_else(|| "operator".into());
        let dir = cluster.dir().join(&instance);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let local = format!("http://127.0.0.1:{gateway_port}");
        let op = Operator {
            proc: Mutex::new(None),
            starts: Mutex::new(0),
            dir,
            kubeconfig: options
                .kubeconfig
                .clone()
                .unwrap_or_else(|| cluster.kubeconfig_path().to_owned()),
            gateway_port,
            admin_port,
            broker_port,
            broker_url: format!("http://127.0.0.1:{broker_port}"),
            gateway_url: options.gateway_url.clone().unwrap_or_else(|| local.clone()),
            local_gateway_url: local,
            admin_url: format!("http://127.0.0.1:{admin_port}"),
            options,
        };
        op.spawn()?;
        Ok(op)
    }

    fn spawn(&self) -> Result<(), String> {
        let n = {
            let mut s = self.starts.lock().map_err(|_| "poisoned")?;
            *s += 1;
            *s
        };
        let mut args = vec![
            "run".to_owned(),
            format!(
                "--instance={}",
                self.options.instance.as_deref().unwrap_or("operator")
            ),
            format!("--namespace={OPERATOR_NS}"),
            format!("--gateway-url={}", self.gateway_url),
            format!("--gateway-addr=127.0.0.1:{}", self.gateway_port),
            format!("--admin-addr=127.0.0.1:{}", self.admin_port),
            format!("--broker-addr=127.0.0.1:{}", self.broker_port),
            "--log-format=json".to_owned(),
            "--log-level=info,agent_auth_operator=debug".to_owned(),
            // The test providers run on 127.0.0.1: allowed explicitly, through the flags a user
            // would set. Namespaced Connections may name any loopback host, but only 127.0.0.1 is
            // reachable: 127.0.0.2 and the rest stand for internal addresses in tests/tenancy.rs.
            "--egress-allow=127.0.0.1/32".to_owned(),
            "--connection-host-allow=127.0.0.0/8,localhost".to_owned(),
            format!(
                "--allowed-redirect-origin=https://platform.example,{},{}",
                platform_origin(),
                self.gateway_url.trim_end_matches('/')
            ),
        ];
        if self.options.leader_election {
            args.push("--leader-election".to_owned());
        }
        args.extend(self.options.extra_args.iter().cloned());
        let kubeconfig = self.kubeconfig.display().to_string();
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_agent-auth-operator"));
        let proc = Proc::spawn(
            &self.dir,
            &format!("operator-{n}"),
            &bin,
            &args,
            &[("KUBECONFIG", &kubeconfig)],
        )?;
        *self.proc.lock().map_err(|_| "poisoned")? = Some(proc);
        self.wait_ready()
    }

    /// Polls `/readyz` until the caches have synced.
    pub fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = format!("{}/readyz", self.admin_url);
        loop {
            let ok = block_on(async {
                reqwest::get(&url)
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            });
            if ok {
                return Ok(());
            }
            if let Some(p) = self.proc.lock().map_err(|_| "poisoned")?.as_mut()
                && let Some(status) = p.exited()
            {
                return Err(format!("operator exited ({status}):\n{}", p.log_tail(30)));
            }
            if Instant::now() > deadline {
                return Err(format!("operator not ready after 60s:\n{}", self.logs()));
            }
            std::thread::sleep(Duration::from_millis(100)); // poll interval
        }
    }

    /// SIGKILLs the process, as a crash would.
    pub fn kill(&self) {
        if let Ok(mut p) = self.proc.lock()
            && let Some(mut p) = p.take()
        {
            p.kill();
        }
    }

    /// Sends SIGTERM and waits (up to 20 s) for the process to exit; returns its exit status.
    pub fn terminate(&self) -> Result<std::process::ExitStatus, String> {
        let mut guard = self.proc.lock().map_err(|_| "poisoned")?;
        let p = guard.as_mut().ok_or("not running")?;
        let pid = p.pid().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .map_err(|e| e.to_string())?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = p.exited() {
                *guard = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                return Err(format!("still running 20 s after SIGTERM:\n{}", p.log_tail(20)));
            }
            std::thread::sleep(Duration::from_millis(50)); // poll interval
        }
    }

    /// Kills and starts the operator again on the same ports.
    pub fn restart(&self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// Everything every incarnation of the operator has logged.
    pub fn logs(&self) -> String {
        let n = self.starts.lock().map(|s| *s).unwrap_or(0);
        (1..=n)
            .map(|i| std::fs::read_to_string(self.dir.join(format!("operator-{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Dex and the operator, wired to each other.
pub struct Stack {
    pub dex: Dex,
    pub operator: Operator,
}

static STACK: OnceLock<Mutex<Option<&'static Stack>>> = OnceLock::new();

/// The stack of this test binary, started on first use (after the control plane and CRDs).
pub fn stack() -> &'static Stack {
    let cell = STACK.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = *guard {
        return s;
    }
    let stack = start().unwrap_or_else(|e| panic!("cannot start the test stack: {e}"));
    let stack: &'static Stack = Box::leak(Box::new(stack));
    *guard = Some(stack);
    at_exit(stop_stack);
    // Registered after stop_stack, so it runs before it (atexit runs in reverse order).
    super::hygiene::remember(&stack.dex.client_secret);
    super::hygiene::scan_at_exit();
    stack
}

/// The stack, if this binary started one.
pub fn running_stack() -> Option<&'static Stack> {
    STACK.get().and_then(|m| m.lock().ok().and_then(|g| *g))
}

extern "C" fn stop_stack() {
    if let Some(Ok(guard)) = STACK.get().map(|m| m.lock())
        && let Some(s) = *guard
    {
        s.operator.kill();
        s.dex.remove_dir();
    }
}

/// Installs the CRDs and creates the operator's namespace (idempotent).
pub fn prepare_cluster() -> Result<&'static Cluster, String> {
    let cluster = agentauth_testcluster::shared()?;
    block_on(async {
        let client = cluster.client().await?;
        super::install_crds(&client).await;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(OPERATOR_NS.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<Namespace>::all(client)
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(format!("cannot create {OPERATOR_NS}: {e}")),
        }
    })?;
    Ok(cluster)
}

fn start() -> Result<Stack, String> {
    let cluster = prepare_cluster()?;
    let operator = Operator::start(cluster)?;
    let dex = Dex::start_with(
        &format!("{}/oauth/callback", operator.gateway_url),
        DexOptions {
            id_token_ttl: TOKEN_TTL,
            // The ClusterConnection of tests/tenancy.rs has a redirect URI of its own.
            extra_redirect_uris: vec![format!(
                "{}/oauth/callback/cluster/{PLATFORM_CONNECTION}",
                operator.gateway_url
            )],
            ..Default::default()
        },
    )?;
    Ok(Stack { dex, operator })
}

/// Who holds the operator's leader-election Lease (`agent-auth-operator`) now, if anyone.
pub async fn lease_holder(leases: &Api<k8s_openapi::api::coordination::v1::Lease>) -> Option<String> {
    leases
        .get_opt("agent-auth-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}
