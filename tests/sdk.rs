//! The Python SDK (`clients/python`) against the real stack: the test control plane, Dex, the
//! operator binary, a Gmail-shaped provider API on loopback, and the sidecar binary.
//!
//! This binary starts all of it, installs the SDK from the working tree into a scratch directory
//! (offline, `pip install --no-deps --target`: the packaging is tested too), then runs
//! `examples/python/quickstart.py` as a user would (it prints a link; this test signs in at Dex
//! through it) and `pytest clients/python/tests`. Python reaches the cluster with the admin
//! kubeconfig and finishes links through a loopback `POST /sign-in {"link", "user"}` served here,
//! which plays the Dex login with the same helper as the Rust tests.
//!
//! The Connection delivers through the token broker (`delivery: Broker`: no agent Secret), and ONE
//! sidecar in broker mode serves every user, the account named per call: the pod's identity is a
//! real ServiceAccount token (TokenRequest, audience `agentauth.dev`) in a file, as the kubelet
//! projects it. Its Role grants `use` on the test users' accounts only (their names come from the
//! SDK's own naming function), so pytest also sees the broker's refusal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;
#[path = "sidecar/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use agent_auth_operator::api::{ConnectedAccount, Connection};
use axum::http::{Method, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use common::dex::{self, Dex};
use common::fixtures::{REACT, oauth_connection};
use common::identity;
use common::operator::{OPERATOR_NS, stack};
use common::{eventually, setup};
use harness::{ProviderApi, SidecarProcess};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

const CONNECTION: &str = "gmail";
/// The quickstart's user (the seed's identifier, with its `_`).
const QUICKSTART_USER: &str = "user_123";
/// The users whose accounts pytest runs tools with (`AGENTAUTH_TEST_IDENTIFIERS`); the sidecar
/// may use theirs and the quickstart's only.
const PYTEST_USERS: [&str; 2] = ["alice@example.com", "bob_42"];
/// How long one Python run may take.
const PYTHON_LIMIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_quickstart_and_every_call() {
    let env = setup("sdk").await;
    let s = stack();
    let (client, ns, _, _) = env.parts();
    let kubeconfig = common::cluster().unwrap().kubeconfig_path().to_owned();

    let api = gmail_api().await;
    gmail_connection(client, ns, &s.dex, &api).await;
    let conns: Api<Connection> = Api::namespaced(client.clone(), ns);
    eventually(REACT, "Connection Ready", || async {
        let c = conns.get(CONNECTION).await.ok()?;
        let ready = c
            .status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then_some(())
    })
    .await;

    let python = python_env().await;
    let sdk = install_sdk(&python).await;
    let users: Vec<&str> = std::iter::once(QUICKSTART_USER).chain(PYTEST_USERS).collect();
    let site = sdk.path().join("site");
    let names = account_names(&python, &site, &users).await;

    let granted: Vec<&str> = names.iter().map(String::as_str).collect();
    identity::service_account(client, ns, "agent", &["use"], Some(&granted)).await;
    let sa_token = identity::token(client, ns, "agent", Some("agentauth.dev")).await;
    let scratch = harness::temp_dir("sdk");
    let token_file = scratch.path().join("token");
    std::fs::write(&token_file, &sa_token).unwrap();
    let sidecar = SidecarProcess::start(&[
        format!("--broker-url={}", s.operator.broker_url),
        format!("--token-file={}", token_file.display()),
        format!("--api-base=google={}", api.base("google")),
    ]);
    let signin = sign_in_server(&s.dex).await;

    let py_env: Vec<(&str, String)> = vec![
        ("KUBECONFIG", kubeconfig.display().to_string()),
        ("AGENTAUTH_NAMESPACE", ns.to_owned()),
        ("AGENTAUTH_SIDECAR_URL", sidecar.url.clone()),
        ("AGENTAUTH_TEST_SIGNIN_URL", format!("{signin}/sign-in")),
        ("AGENTAUTH_TEST_CONNECTION", CONNECTION.to_owned()),
        ("AGENTAUTH_TEST_IDENTIFIERS", PYTEST_USERS.join(",")),
        ("AGENTAUTH_TEST_BROKER", "1".into()),
        ("PYTHONPATH", site.display().to_string()),
        ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ("PYTHONUNBUFFERED", "1".into()),
        // A skipped live test would hide a failure here.
        ("AGENTAUTH_TEST_REQUIRE_LIVE", "1".into()),
    ];

    // The seed's three steps, as a user runs them.
    let quickstart = run_quickstart(&python, &py_env, &s.dex).await;
    assert!(
        quickstart.contains("Lunch tomorrow?") && quickstart.contains("Invoice 42"),
        "the quickstart printed no unread mail:\n{quickstart}"
    );
    println!("{quickstart}");

    // Every SDK call and error type.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tests = repo.join("clients/python/tests").display().to_string();
    let pytest = run_python(
        &python,
        &["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", &tests],
        &py_env,
    )
    .await;
    let pytest_out = format!(
        "{}{}",
        String::from_utf8_lossy(&pytest.stdout),
        String::from_utf8_lossy(&pytest.stderr)
    );
    assert!(
        pytest.status.success(),
        "pytest failed ({}):\n{pytest_out}",
        pytest.status
    );
    println!("{pytest_out}");

    let sidecar_out = sidecar.output();
    let tokens = held_tokens(client, ns).await;
    assert!(!tokens.is_empty(), "no account was authorized");
    for t in tokens.iter().chain([&sa_token]) {
        for (what, text) in [
            ("the quickstart's output", &quickstart),
            ("pytest's output", &pytest_out),
            ("the sidecar's output", &sidecar_out),
        ] {
            assert!(!text.contains(t.as_str()), "an access token appears in {what}");
        }
    }
}

/// Connection [`CONNECTION`]: `provider: google` (the sidecar's Gmail tools and API base), with
/// Dex's endpoints instead of Google's and Dex's scopes, delivered through the broker.
async fn gmail_connection(client: &kube::Client, ns: &str, dex: &Dex, api: &ProviderApi) {
    let oauth2 = json!({
        "clientId": dex.next_client_id(),
        "authorizationUrl": dex.authorization_url(),
        "tokenUrl": dex.token_url(),
        // Google's revocation endpoint is not on loopback; nothing is revoked in this test.
        "revocationUrl": format!("{}/revoke", api.base("google")),
        "scopes": ["openid", "offline_access"],
        "legacyRedirectUri": true,
    });
    let extra = json!({
        "provider": "google",
        "authorizationLink": {"ttl": "1h"},
        // Google keeps refresh tokens, Dex rotates them.
        "refresh": {"rotation": {"policy": "Strict"}},
        "delivery": "Broker",
    });
    oauth_connection(client, ns, CONNECTION, &dex.client_secret, oauth2, extra).await;
}

/// The interpreter of the SDK's pinned test venv (created on first use, cached), or
/// `$AGENTAUTH_SDK_TEST_PYTHON` (one with kubernetes, requests, pytest and setuptools installed),
/// to try other Python or client versions.
async fn python_env() -> PathBuf {
    if let Some(python) = std::env::var_os("AGENTAUTH_SDK_TEST_PYTHON") {
        return PathBuf::from(python);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/python-env.sh");
    let out = blocking(move || Command::new(script).stderr(Stdio::inherit()).output()).await;
    assert!(
        out.status.success(),
        "scripts/python-env.sh failed ({})",
        out.status
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// `pip install ./clients/python` into a scratch directory, offline (the venv has setuptools).
/// It builds from a copy: setuptools leaves `build/` and `*.egg-info` next to the sources.
async fn install_sdk(python: &Path) -> tempfile::TempDir {
    let target = harness::temp_dir("sdk-package");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python");
    let pkg = target.path().join("src");
    for file in ["pyproject.toml", "README.md"] {
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::copy(src.join(file), pkg.join(file)).unwrap();
    }
    copy_tree(&src.join("src/agentauth"), &pkg.join("src/agentauth"));
    let (py, dir) = (python.to_owned(), target.path().join("site"));
    let out = blocking(move || {
        Command::new(py)
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-index",
            ])
            .args(["--no-deps", "--no-build-isolation", "--target"])
            .arg(&dir)
            .arg(&pkg)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
    })
    .await;
    assert!(
        out.status.success(),
        "pip install ./clients/python failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        target.path().join("site/agentauth/py.typed").exists(),
        "py.typed is not installed"
    );
    target
}

/// Copies the `.py` and `py.typed` files of `from` (recursively) to `to`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if path.is_dir() && name != "__pycache__" {
            copy_tree(&path, &to.join(&name));
        } else if path.extension().is_some_and(|e| e == "py") || name == "py.typed" {
            std::fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}

/// The names the SDK gives the accounts of `users` on [`CONNECTION`].
async fn account_names(python: &Path, sdk: &Path, users: &[&str]) -> Vec<String> {
    let code = "import sys\nfrom agentauth.naming import account_name\n\
                for i in sys.argv[2:]: print(account_name(sys.argv[1], i))";
    let mut args = vec!["-c".to_owned(), code.to_owned(), CONNECTION.to_owned()];
    args.extend(users.iter().map(|u| (*u).to_owned()));
    let (py, path) = (python.to_owned(), sdk.to_owned());
    let out = blocking(move || Command::new(py).args(&args).env("PYTHONPATH", path).output()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(names.len(), users.len(), "{names:?}");
    names
}

/// A Gmail-shaped API: two unread messages.
async fn gmail_api() -> ProviderApi {
    let api = ProviderApi::start().await;
    api.route(
        Method::GET,
        "google",
        "/gmail/v1/users/me/messages",
        200,
        json!({
            "messages": [{"id": "m1", "threadId": "t1"}, {"id": "m2", "threadId": "t2"}],
            "resultSizeEstimate": 2
        }),
    );
    for (id, from, subject, snippet) in [
        ("m1", "Bob <bob@example.com>", "Lunch", "Lunch tomorrow?"),
        ("m2", "billing@example.com", "Invoice 42", "Your invoice"),
    ] {
        let headers = json!([
            {"name": "From", "value": from},
            {"name": "To", "value": "user@example.com"},
            {"name": "Subject", "value": subject},
            {"name": "Date", "value": "Thu, 26 Nov 2026 10:00:00 +0000"},
        ]);
        api.route(
            Method::GET,
            "google",
            &format!("/gmail/v1/users/me/messages/{id}"),
            200,
            json!({"id": id, "threadId": "t", "labelIds": ["UNREAD", "INBOX"], "snippet": snippet,
                   "payload": {"mimeType": "text/plain", "headers": headers}}),
        );
    }
    api
}

/// Every access and refresh token the operator holds for the namespace's accounts (its own
/// copies: a `Broker` account has no agent Secret), remembered for the exit-time scan too.
async fn held_tokens(client: &kube::Client, ns: &str) -> Vec<String> {
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    let copies: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NS);
    let mut tokens = Vec::new();
    for a in accounts.list(&Default::default()).await.unwrap() {
        let name = format!("agentauth-{}", a.uid().unwrap_or_default());
        let Some(copy) = copies.get_opt(&name).await.unwrap() else {
            continue;
        };
        let Some(record) = copy.data.as_ref().and_then(|d| d.get("record.json")) else {
            continue;
        };
        let record: Value = serde_json::from_slice(&record.0).unwrap();
        for key in ["accessToken", "refreshToken"] {
            if let Some(t) = record["tokens"][key].as_str() {
                common::hygiene::remember(t);
                tokens.push(t.to_owned());
            }
        }
    }
    tokens
}

/// Serves `POST /sign-in {"link": URL, "user": N}` on loopback: Dex user N signs in through the
/// link. Answers `{"status": <final page status>, "connected": bool}` or 502 with the error.
async fn sign_in_server(dex: &'static Dex) -> String {
    let app = Router::new().route(
        "/sign-in",
        post(move |Json(req): Json<Value>| async move {
            let (Some(link), Some(n)) = (req["link"].as_str(), req["user"].as_u64()) else {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "need link and user"})),
                );
            };
            if n >= 10 {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": "Dex has users 0..9"})),
                );
            }
            match dex::login(&dex::browser(), link, &dex.user(n as usize)).await {
                Ok(page) => {
                    let status = page.status().as_u16();
                    let text = page.text().await.unwrap_or_default();
                    let connected = text.contains("Account connected");
                    (
                        StatusCode::OK,
                        Json(json!({"status": status, "connected": connected})),
                    )
                }
                Err(e) => (StatusCode::BAD_GATEWAY, Json(json!({"error": e}))),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// Runs the quickstart for [`QUICKSTART_USER`]: when it prints the authorization link, Dex user 0
/// signs in through it. Returns its output; fails when it does not exit 0 in time.
async fn run_quickstart(python: &Path, env: &[(&str, String)], dex: &Dex) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/quickstart.py");
    let mut child = Command::new(python)
        .arg(&script)
        .arg(QUICKSTART_USER)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut out = String::new();
    let (mut signed_in, mut failure) = (false, None);
    // Nothing in here panics: the quickstart is killed before any assertion fails.
    let read = tokio::time::timeout(PYTHON_LIMIT, async {
        while let Some(line) = rx.recv().await {
            out.push_str(&line);
            out.push('\n');
            let link = line
                .split_whitespace()
                .find(|w| w.starts_with("http") && w.contains("/connect/"));
            if let (Some(link), false) = (link, signed_in) {
                match dex::login(&dex::browser(), link, &dex.user(0)).await {
                    Ok(page) if page.status() == 200 => signed_in = true,
                    Ok(page) => failure = Some(format!("the sign-in ended at {}", page.status())),
                    Err(e) => failure = Some(e),
                }
                if failure.is_some() {
                    break;
                }
            }
        }
    })
    .await;
    if read.is_err() || failure.is_some() {
        let _ = child.kill();
    }
    let status = blocking(move || child.wait()).await;
    assert!(
        failure.is_none(),
        "signing in through the quickstart's link: {failure:?}\n{out}"
    );
    assert!(
        read.is_ok(),
        "the quickstart did not finish in {PYTHON_LIMIT:?}:\n{out}"
    );
    assert!(status.success(), "the quickstart failed ({status}):\n{out}");
    assert!(signed_in, "the quickstart printed no authorization link:\n{out}");
    out
}

/// Runs `python ARGS` in the repository with `env`, within [`PYTHON_LIMIT`].
async fn run_python(python: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(python);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    match tokio::time::timeout(PYTHON_LIMIT, blocking(move || child.wait_with_output())).await {
        Ok(out) => out,
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("python {args:?} did not finish in {PYTHON_LIMIT:?}");
        }
    }
}

/// Runs blocking `f` off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> std::io::Result<T> + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap().unwrap()
}
