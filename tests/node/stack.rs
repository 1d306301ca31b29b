//! What the node test runs on: a control plane with a real node ([`agentauth_testcluster::node`]),
//! the operator and agent images imported into the node's containerd, `kubectl` and `helm` with a
//! private home, `kubectl port-forward` to the chart's Service, and a provider-shaped API on the
//! host that accepts only bearer tokens Dex vouches for.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentauth_testcluster::cli::{Output, Tool};
use agentauth_testcluster::recorder::{Answer, Recorder, Reply};
use agentauth_testcluster::{Cluster, ClusterOptions, NodeOptions};
use serde_json::json;

pub const OPERATOR_IMAGE: &str = "localhost/agentauth/agent-auth-operator:dev";
pub const AGENT_IMAGE: &str = "localhost/agentauth/python:3.11";
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Builds the operator image from the binaries this test run built (`BIN_DIR=...
/// scripts/image.sh`, the recipe of `make image`) and the agent image, and returns the archives.
pub fn images(dir: &Path) -> Vec<PathBuf> {
    let operator = dir.join("operator.tar");
    let agent = dir.join("agent.tar");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_agent-auth-operator"))
        .parent()
        .unwrap()
        .to_owned();
    run_script(
        Command::new("bash")
            .arg(Path::new(REPO).join("scripts/image.sh"))
            .env("PROFILE", "debug")
            .env("BIN_DIR", &bin_dir)
            .env("IMAGE", OPERATOR_IMAGE)
            .env("OUT", &operator),
    );
    run_script(
        Command::new("bash")
            .arg(Path::new(REPO).join("tests/cluster/agent-image.sh"))
            .arg(&agent)
            .arg(AGENT_IMAGE),
    );
    vec![operator, agent]
}

fn run_script(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts the control plane with a node that has `images`.
pub fn cluster(images: Vec<PathBuf>) -> Cluster {
    Cluster::start_with(ClusterOptions {
        node: Some(NodeOptions { images }),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("control plane with a node unavailable: {e}"))
}

/// `kubectl` and `helm` for the cluster, Helm with a private home (removed on drop).
pub struct Tools {
    pub kubectl: Tool,
    pub helm: Tool,
    _home: tempfile::TempDir,
}

impl Tools {
    pub fn new(cluster: &Cluster) -> Tools {
        let home = tempfile::Builder::new()
            .prefix("agentauth-node-helm-")
            .tempdir()
            .unwrap();
        let h = home.path();
        let kc = cluster.kubeconfig_path();
        Tools {
            kubectl: Tool::kubectl(kc)
                .unwrap()
                .env("KUBECACHEDIR", h.join("kube-cache"))
                .leading_arg("--request-timeout=60s"),
            helm: Tool::helm(kc)
                .unwrap()
                .env("HELM_CACHE_HOME", h.join("cache"))
                .env("HELM_CONFIG_HOME", h.join("config"))
                .env("HELM_DATA_HOME", h.join("data")),
            _home: home,
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl.run(args, None).unwrap().expect_ok()
    }

    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl
            .run(&["apply", "-f", "-"], Some(yaml))
            .unwrap()
            .expect_ok()
    }

    pub fn helm(&self, args: &[&str]) -> Output {
        self.helm.run(args, None).unwrap()
    }
}

/// `kubectl port-forward` to a Service on a fixed local port; killed on drop.
pub struct PortForward {
    child: Child,
}

impl PortForward {
    /// Forwards `127.0.0.1:local` to `target` (e.g. `svc/name`) port `remote` in `ns`, and waits
    /// until a request through it gets an HTTP answer.
    pub async fn start(cluster: &Cluster, ns: &str, target: &str, local: u16, remote: u16) -> PortForward {
        let kubectl = &agentauth_testcluster::binaries().unwrap().kubectl;
        let child = Command::new(kubectl)
            .args(["port-forward", "-n", ns, "--address=127.0.0.1", target])
            .arg(format!("{local}:{remote}"))
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pf = PortForward { child };
        let url = format!("http://127.0.0.1:{local}/connect/not-a-token");
        let http = reqwest::Client::new();
        crate::common::eventually(Duration::from_secs(60), "the port-forward", || async {
            http.get(&url).send().await.ok().map(|_| ())
        })
        .await;
        pf
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call the provider API received: when, and with which bearer token.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: Instant,
    pub path: String,
    pub token: String,
    pub accepted: bool,
}

/// A Gmail-shaped API on `host`: `GET /google/gmail/v1/users/me/messages` and `.../messages/m1`,
/// answered only for a bearer token that Dex's userinfo endpoint accepts (otherwise 401, as
/// Google does for an expired token). Every call is logged with its token.
pub struct ProviderApi {
    pub server: Recorder,
    pub calls: Arc<Mutex<Vec<Call>>>,
}

impl ProviderApi {
    pub async fn start(host: &str, userinfo_url: &str) -> ProviderApi {
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let log = calls.clone();
        let userinfo = userinfo_url.to_owned();
        let http = reqwest::Client::new();
        let answer = Answer::with_async(move |req| {
            let (log, userinfo, http) = (log.clone(), userinfo.clone(), http.clone());
            async move {
                let token = req
                    .headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .unwrap_or_default()
                    .to_owned();
                let accepted = !token.is_empty()
                    && http
                        .get(&userinfo)
                        .bearer_auth(&token)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                let path = req.uri.path().to_owned();
                log.lock().unwrap().push(Call {
                    at: Instant::now(),
                    path: path.clone(),
                    token,
                    accepted,
                });
                if !accepted {
                    return Reply::json(401, &json!({"error": {"code": 401, "status": "UNAUTHENTICATED"}}));
                }
                match path.as_str() {
                    "/google/gmail/v1/users/me/messages" => Reply::json(
                        200,
                        &json!({"messages": [{"id": "m1", "threadId": "t1"}], "resultSizeEstimate": 1}),
                    ),
                    "/google/gmail/v1/users/me/messages/m1" => Reply::json(
                        200,
                        &json!({"id": "m1", "threadId": "t1", "labelIds": ["UNREAD", "INBOX"],
                            "snippet": "Lunch tomorrow?", "payload": {"mimeType": "text/plain", "headers": [
                                {"name": "From", "value": "Bob <bob@example.com>"},
                                {"name": "To", "value": "alice@example.com"},
                                {"name": "Subject", "value": "Lunch"},
                                {"name": "Date", "value": "Tue, 1 Dec 2026 10:00:00 +0000"}]}}),
                    ),
                    _ => Reply::json(404, &json!({"error": {"code": 404}})),
                }
            }
        });
        let server = Recorder::start(&format!("{host}:0"), answer).await.unwrap();
        ProviderApi { server, calls }
    }

    /// The base URL the sidecar's `--api-base google=` points at.
    pub fn google_base(&self) -> String {
        format!("{}/google", self.server.url())
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}
