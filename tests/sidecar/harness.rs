//! The sidecar tests' harness: kubelet-style credential volumes, a local provider API that
//! records what it receives, and the sidecar process.
#![allow(dead_code)]

use agentauth_testcluster::recorder::{Answer, Recorder, Reply, Request};
use axum::body::Bytes;
use axum::http::{HeaderMap, Method};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// ------------------------------------------------------------------------------------ volumes

pub static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory `agentauth-sidecar-<name>-<random>` under the system temp dir, removed on drop.
pub fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("agentauth-sidecar-{name}-"))
        .tempdir()
        .unwrap()
}

/// Writes (or atomically replaces) a kubelet-style volume at `dir` holding exactly `files`.
pub fn write_volume(dir: &Path, files: &[(&str, String)]) {
    std::fs::create_dir_all(dir).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let version = format!("..2026_11_27_10_00_00.{n}");
    std::fs::create_dir(dir.join(&version)).unwrap();
    for (k, v) in files {
        std::fs::write(dir.join(&version).join(k), v).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (k, _) in files {
        let link = dir.join(k);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{k}"), &link).unwrap();
        }
    }
    // Keys that are gone lose their link; the old version is deleted, as the kubelet does.
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if !name.starts_with('.') && !files.iter().any(|(k, _)| *k == name) {
            std::fs::remove_file(dir.join(&name)).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// The agent Secret of a token credential (see `store::agent_secret::render`).
pub fn token_secret(provider: &str, token: &str, metadata: Value) -> Vec<(&'static str, String)> {
    let mut doc = json!({
        "authorization": format!("Bearer {token}"),
        "access_token": token,
        "token_type": "Bearer",
        "expires_at": "2026-11-27T11:00:00Z",
        "scope": "s1 s2",
        "provider": provider,
    });
    if metadata != Value::Null {
        doc["metadata"] = metadata;
    }
    vec![
        ("authorization", format!("Bearer {token}")),
        ("access_token", token.to_owned()),
        ("token_type", "Bearer".into()),
        ("expires_at", "2026-11-27T11:00:00Z".into()),
        ("scope", "s1 s2".into()),
        ("provider", provider.to_owned()),
        ("credentials.json", doc.to_string()),
    ]
}

// ------------------------------------------------------------------------- the provider API

/// One request as the provider received it. `provider` is the first path segment (each provider's
/// API base points at its own prefix), `path` the rest: the path the real API would see.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub provider: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn auth(&self) -> &str {
        self.header("authorization").unwrap_or("")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
    /// The query as sorted pairs (repeated names kept).
    pub fn query_sorted(&self) -> Vec<(String, String)> {
        let mut q = self.query.clone();
        q.sort();
        q
    }
}

/// The tool names of a `GET /v1/tools` answer.
pub fn tool_names(v: &Value) -> Vec<String> {
    v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

pub fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = p
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

#[derive(Clone)]
pub struct Canned {
    pub status: u16,
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

pub type Hook = Box<dyn Fn(&str) + Send + Sync>;

/// How the provider API answers; what it received is in the shared recording server's log.
#[derive(Default)]
pub struct ProviderState {
    pub routes: Mutex<HashMap<(Method, String, String), Canned>>,
    /// Per provider: the only `Authorization` values accepted (absent: any).
    pub accepted: Mutex<HashMap<String, Vec<String>>>,
    /// Called with the rejected value before answering a rejection.
    pub on_reject: Mutex<Option<Hook>>,
}

/// The provider API: the shared recording server ([`Recorder`]) answering from [`ProviderState`].
#[derive(Clone)]
pub struct ProviderApi {
    pub state: Arc<ProviderState>,
    pub addr: SocketAddr,
    server: Arc<Recorder>,
}

impl ProviderApi {
    pub async fn start() -> ProviderApi {
        let state = Arc::new(ProviderState::default());
        let s = state.clone();
        let server = Recorder::loopback(Answer::with(move |req| answer(&s, req)))
            .await
            .unwrap();
        ProviderApi {
            state,
            addr: server.addr(),
            server: Arc::new(server),
        }
    }

    pub fn base(&self, prefix: &str) -> String {
        format!("http://{}/{prefix}", self.addr)
    }

    pub fn route(&self, method: Method, provider: &str, path: &str, status: u16, body: Value) {
        self.route_with(method, provider, path, status, body, &[]);
    }

    pub fn route_with(
        &self,
        method: Method,
        provider: &str,
        path: &str,
        status: u16,
        body: Value,
        headers: &[(&str, &str)],
    ) {
        let canned = Canned {
            status,
            body,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        self.state
            .routes
            .lock()
            .unwrap()
            .insert((method, provider.to_owned(), path.to_owned()), canned);
    }

    pub fn accept_only(&self, provider: &str, values: &[String]) {
        self.state
            .accepted
            .lock()
            .unwrap()
            .insert(provider.to_owned(), values.to_vec());
    }

    pub fn on_reject(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        *self.state.on_reject.lock().unwrap() = Some(Box::new(hook));
    }

    /// The requests since the last `take`, draining the log.
    pub fn take(&self) -> Vec<Seen> {
        self.server.take().iter().map(Seen::from).collect()
    }

    /// The requests since the last `take`, leaving them in the log.
    pub fn seen(&self) -> Vec<Seen> {
        self.server.requests().iter().map(Seen::from).collect()
    }

    /// The single request to `provider` `path` since the last `take`, draining the log.
    /// [`Self::only`], checking its method and that it carried `Bearer {token}`.
    pub fn only_with(&self, method: Method, provider: &str, path: &str, token: &str) -> Seen {
        let seen = self.only(provider, path);
        assert_eq!(seen.method, method, "{seen:#?}");
        assert_bearer(&seen, token);
        seen
    }

    pub fn only(&self, provider: &str, path: &str) -> Seen {
        let seen = self.take();
        let matching: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.provider == provider && s.path == path)
            .collect();
        assert_eq!(matching.len(), 1, "requests to {provider} {path}: {seen:#?}");
        assert_eq!(seen.len(), 1, "unexpected other requests: {seen:#?}");
        matching[0].clone()
    }
}

impl From<&Request> for Seen {
    fn from(req: &Request) -> Seen {
        let raw = req.path().trim_start_matches('/');
        let (provider, rest) = raw.split_once('/').unwrap_or((raw, ""));
        Seen {
            method: req.method.clone(),
            provider: provider.to_owned(),
            path: format!("/{rest}"),
            query: req.query(),
            headers: req.headers.clone(),
            body: req.body.clone(),
        }
    }
}

fn answer(s: &ProviderState, req: &Request) -> Reply {
    let seen = Seen::from(req);
    let auth = seen.auth().to_owned();
    let rejected = s
        .accepted
        .lock()
        .unwrap()
        .get(&seen.provider)
        .is_some_and(|ok| !ok.contains(&auth));
    if rejected {
        if let Some(hook) = &*s.on_reject.lock().unwrap() {
            hook(&auth);
        }
        return if seen.provider == "slack" {
            Reply::json(200, &json!({"ok": false, "error": "invalid_auth"}))
        } else {
            let body = json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}});
            Reply::json(401, &body)
        };
    }
    let canned = s
        .routes
        .lock()
        .unwrap()
        .get(&(seen.method.clone(), seen.provider.clone(), seen.path.clone()))
        .cloned();
    match canned {
        Some(c) => c
            .headers
            .iter()
            .fold(Reply::json(c.status, &c.body), |reply, (k, v)| reply.header(k, v)),
        None => Reply::json(404, &json!({"message": "Not Found"})),
    }
}

// ------------------------------------------------------------------------- the sidecar process

pub struct SidecarProcess {
    pub child: Child,
    pub url: String,
    pub addr: SocketAddr,
    pub out: Arc<Mutex<String>>,
}

impl SidecarProcess {
    pub fn start(args: &[String]) -> SidecarProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agent-auth-operator"))
            .args([
                "--log-format",
                "json",
                "--log-level",
                "debug",
                "sidecar",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let (out, tx) = (out.clone(), tx.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    out.lock().unwrap().push_str(&line);
                    out.lock().unwrap().push('\n');
                    if let Ok(v) = serde_json::from_str::<Value>(&line)
                        && v["message"] == "sidecar listening"
                    {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
            });
        }
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("sidecar did not start:\n{}", out.lock().unwrap());
            }
        };
        SidecarProcess {
            child,
            url: format!("http://{addr}"),
            addr,
            out,
        }
    }

    pub fn output(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Waits (polling, 10 s deadline) until the sidecar's output contains `text`: its log lines
    /// reach us through a reader thread, after the response that caused them.
    pub async fn wait_output(&self, text: &str) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !self.output().contains(text) {
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // poll interval
        }
        true
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --------------------------------------------------------------------------------- a test env

/// The providers with tools, each pointed at its own prefix of the provider API server.
pub const PREFIXES: [(&str, &str); 5] = [
    ("google", "google"),
    ("slack", "slack/api"),
    ("notion", "notion/v1"),
    ("hubspot", "hubspot"),
    ("github", "github"),
];

pub struct Env {
    pub api: ProviderApi,
    pub sidecar: SidecarProcess,
    pub http: reqwest::Client,
    pub root: tempfile::TempDir,
    pub secrets: Mutex<Vec<String>>,
}

/// Accounts as (name, provider, token); each becomes a kubelet-style volume.
pub async fn env(accounts: &[(&str, &str, &str)], extra: &[String]) -> Env {
    let api = ProviderApi::start().await;
    let root = temp_dir("env");
    let mut args = Vec::new();
    for (name, provider, token) in accounts {
        let dir = root.path().join("accounts").join(name);
        write_volume(&dir, &token_secret(provider, token, Value::Null));
        args.push(format!("--account={name}={}", dir.display()));
    }
    for (provider, prefix) in PREFIXES {
        args.push(format!("--api-base={provider}={}", api.base(prefix)));
    }
    args.extend(extra.iter().cloned());
    let sidecar = SidecarProcess::start(&args);
    Env {
        api,
        sidecar,
        http: reqwest::Client::new(),
        root,
        secrets: Mutex::new(accounts.iter().map(|(_, _, t)| (*t).to_owned()).collect()),
    }
}

impl Env {
    pub fn dir(&self, account: &str) -> PathBuf {
        self.root.path().join("accounts").join(account)
    }

    pub fn remember(&self, secret: &str) {
        self.secrets.lock().unwrap().push(secret.to_owned());
    }

    pub async fn call(&self, tool: &str, input: Value) -> (u16, Value) {
        self.call_path(&format!("/v1/tools/{tool}"), input).await
    }

    /// Calls `tool` and asserts it succeeded with exactly `want`.
    pub async fn expect_tool(&self, tool: &str, input: Value, want: Value) {
        assert_eq!(self.call_ok(tool, input).await, want, "{tool}");
    }

    /// Calls `tool`, asserts it succeeded, and returns its result.
    pub async fn call_ok(&self, tool: &str, input: Value) -> Value {
        let (status, result) = self.call(tool, input).await;
        assert_eq!(status, 200, "{tool}: {result}");
        result
    }

    pub async fn call_path(&self, path: &str, input: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.sidecar.url))
            .json(&input)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        self.assert_no_secret_in(&text, path);
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.sidecar.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    pub fn assert_no_secret_in(&self, text: &str, what: &str) {
        for s in self.secrets.lock().unwrap().iter() {
            assert!(
                !text.contains(s.as_str()),
                "a credential appears in {what}: {text}"
            );
        }
    }
}

impl Drop for Env {
    /// Secret hygiene: no credential any test step used appears in the sidecar's output.
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let out = self.sidecar.output();
        assert!(!out.is_empty(), "the sidecar logged nothing");
        for s in self.secrets.lock().unwrap().iter() {
            assert!(
                !out.contains(s.as_str()),
                "credential {}… in the sidecar's output:\n{out}",
                &s[..6]
            );
        }
    }
}

pub fn assert_bearer(seen: &Seen, token: &str) {
    assert_eq!(seen.auth(), format!("Bearer {token}"), "{seen:#?}");
}
