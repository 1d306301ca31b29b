//! Broker mode against a local stand-in for the operator's token broker (the contract of
//! `docs/sidecar.md#broker-mode`): what the sidecar sends, how it names accounts, caches, retries
//! after a 401 and maps broker errors. The real broker is `broker.rs`.

use agentauth_testcluster::recorder::{Answer, Recorder, Reply};
use axum::http::Method;
use base64::Engine as _;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::harness::*;

const ALICE: &str = "ya29.alice-token-from-the-broker-0001";
const ALICE_NEW: &str = "ya29.alice-token-from-the-broker-0002";
const BOB: &str = "ya29.bob-token-from-the-broker-000001";

/// The broker's answers by account (`ns/name` or `connection:identifier`).
type Answers = Arc<Mutex<HashMap<String, (u16, Value)>>>;

/// A ServiceAccount-token-shaped JWT (unsigned: only the broker checks it).
pub fn fake_sa_token(ns: &str, serial: u32) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let claims = json!({"aud": ["agentauth.dev"], "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": "agent"}}, "jti": serial});
    format!(
        "{}.{}.c2lnbmF0dXJlLW9mLXRoZS10b2tlbi0{serial}",
        b64(br#"{"alg":"RS256","kid":"k"}"#),
        b64(claims.to_string().as_bytes())
    )
}

fn granted(ns: &str, name: &str, token: &str, expires_in: Option<u64>) -> (u16, Value) {
    let mut v = json!({"access_token": token, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer", "provider": "google",
        "account": {"namespace": ns, "name": name, "connection": "gmail", "identifier": name},
        "credentials": {"authorization": format!("Bearer {token}"), "access_token": token, "token_type": "Bearer",
            "provider": "google"}});
    if let Some(e) = expires_in {
        v["expires_in"] = json!(e);
    }
    (200, v)
}

/// The broker: answers by account; `busy/...` accounts are first answered 503 (a token being
/// renewed), with `Retry-After: 1`.
async fn fake_broker(answers: Answers) -> Recorder {
    let busy_seen = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    Recorder::loopback(Answer::with(move |req| {
        let key = match (req.form_param("resource"), req.form_param("audience")) {
            (Some(r), None) => r.trim_start_matches("agentauth://").to_owned(),
            (None, Some(c)) => format!("{c}:{}", req.form_param("identifier").unwrap_or_default()),
            _ => return Reply::json(400, &json!({"error": "invalid_request"})),
        };
        if key.starts_with("busy/") && busy_seen.lock().unwrap().insert(key.clone()) {
            let body =
                json!({"error": "temporarily_unavailable", "error_description": "token being renewed"});
            return Reply::json(503, &body).header("retry-after", "1");
        }
        match answers.lock().unwrap().get(&key) {
            Some((status, body)) => Reply::json(*status, body),
            None => Reply::json(
                400,
                &json!({"error": "invalid_target", "error_description": "no such account"}),
            ),
        }
    }))
    .await
    .unwrap()
}

#[tokio::test]
async fn accounts_named_per_call_come_from_the_broker() {
    let answers: Answers = Arc::default();
    let broker = fake_broker(answers.clone()).await;
    let root = temp_dir("broker");
    let token_file = root.path().join("token");
    let (sa1, sa2) = (fake_sa_token("team-a", 1), fake_sa_token("team-a", 2));
    std::fs::write(&token_file, &sa1).unwrap();
    {
        let mut a = answers.lock().unwrap();
        a.insert(
            "gmail:alice".into(),
            granted("team-a", "alice-gmail", ALICE, Some(3600)),
        );
        a.insert(
            "team-a/bob-gmail".into(),
            granted("team-a", "bob-gmail", BOB, None),
        );
        a.insert(
            "team-a/carol-gmail".into(),
            (409, json!({"error": "account_not_active", "state": "EXPIRED"})),
        );
        a.insert(
            "team-a/dave-gmail".into(),
            (403, json!({"error": "access_denied"})),
        );
    }
    let e = env(
        &[],
        &[
            format!("--broker-url={}", broker.url()),
            format!("--token-file={}", token_file.display()),
        ],
    )
    .await;
    for s in [ALICE, ALICE_NEW, BOB, &sa1, &sa2] {
        e.remember(s);
    }
    e.api.route(
        Method::GET,
        "google",
        "/drive/v3/files",
        200,
        json!({"files": []}),
    );

    // Every tool is offered: the account is named per call.
    let (_, listed) = e.get("/v1/tools").await;
    assert!(
        tool_names(&listed).contains(&"google_drive_search".to_owned()),
        "{listed}"
    );
    assert_eq!(listed["broker"], true);

    // By connection + identifier (query), then by name (header): the namespace is the token's.
    e.call_ok("google_drive_search?connection=gmail&identifier=alice", json!({}))
        .await;
    e.api.only_with(Method::GET, "google", "/drive/v3/files", ALICE);
    let asked = broker.take();
    assert_eq!(asked.len(), 1);
    let form: HashMap<String, String> = asked[0].form().into_iter().collect();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:token-exchange"
    );
    assert_eq!(form["subject_token_type"], "urn:ietf:params:oauth:token-type:jwt");
    assert_eq!(form["subject_token"], sa1);
    assert_eq!(
        (
            form["audience"].as_str(),
            form["identifier"].as_str(),
            form["namespace"].as_str()
        ),
        ("gmail", "alice", "team-a")
    );
    let resp = e
        .http
        .post(format!("{}/v1/tools/google_drive_search", e.sidecar.url))
        .header("X-Agentauth-Connected-Account", "bob-gmail")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    e.api.only_with(Method::GET, "google", "/drive/v3/files", BOB);
    let asked = broker.take();
    assert_eq!(
        asked[0].form_param("resource").as_deref(),
        Some("agentauth://team-a/bob-gmail")
    );

    // Cached: no broker call; the kubelet's new ServiceAccount token is used on the next one.
    std::fs::write(&token_file, &sa2).unwrap();
    e.call_ok(
        "google_drive_search?connected_account=team-a/bob-gmail",
        json!({}),
    )
    .await;
    e.call_ok("google_drive_search?connection=gmail&identifier=alice", json!({}))
        .await;
    assert_eq!(broker.take().len(), 0);
    assert_eq!(e.api.take().len(), 2);

    // The operator refreshed Alice's token; the provider rejects the cached one: asked again, retried.
    answers.lock().unwrap().insert(
        "gmail:alice".into(),
        granted("team-a", "alice-gmail", ALICE_NEW, Some(31)),
    );
    e.api.accept_only(
        "google",
        &[format!("Bearer {ALICE_NEW}"), format!("Bearer {BOB}")],
    );
    e.call_ok("google_drive_search?connection=gmail&identifier=alice", json!({}))
        .await;
    let seen: Vec<String> = e.api.take().iter().map(|s| s.auth().to_owned()).collect();
    assert_eq!(seen, [format!("Bearer {ALICE}"), format!("Bearer {ALICE_NEW}")]);
    let asked = broker.take();
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].form_param("subject_token").as_deref(),
        Some(sa2.as_str())
    );
    // `expires_in: 31` is kept one second: a later call asks again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.requests().is_empty() {
        assert!(Instant::now() < deadline, "the cached answer never expired");
        e.call_ok("google_drive_search?connection=gmail&identifier=alice", json!({}))
            .await;
    }

    // The proxy: `_` with headers (not forwarded), or `namespace%2Fname`; selection parameters stay here.
    e.api.take();
    let resp = e
        .http
        .get(format!(
            "{}/v1/proxy/_/drive/v3/files?q=x&connection=gmail&identifier=alice",
            e.sidecar.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = e
        .api
        .only_with(Method::GET, "google", "/drive/v3/files", ALICE_NEW);
    assert_eq!(seen.query, [("q".to_owned(), "x".to_owned())]);
    let resp = e
        .http
        .get(format!("{}/v1/proxy/_/drive/v3/files", e.sidecar.url))
        .header("X-Agentauth-Connected-Account", "team-a/bob-gmail")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = e.api.only_with(Method::GET, "google", "/drive/v3/files", BOB);
    assert!(
        !seen.headers.keys().any(|k| k.as_str().starts_with("x-agentauth")),
        "{seen:#?}"
    );
    let resp = e
        .http
        .get(format!(
            "{}/v1/proxy/team-a%2Fbob-gmail/drive/v3/files",
            e.sidecar.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    e.api.only_with(Method::GET, "google", "/drive/v3/files", BOB);

    // Broker errors, each by its code.
    for (query, status, code) in [
        ("connected_account=carol-gmail", 409, "account_not_active"),
        ("connected_account=dave-gmail", 403, "forbidden"),
        ("connected_account=nobody", 404, "unknown_account"),
        ("connection=gmail", 400, "invalid_account_selection"),
        (
            "connected_account=a&connection=gmail&identifier=x",
            400,
            "invalid_account_selection",
        ),
        ("", 400, "invalid_account_selection"),
    ] {
        let (s, body) = e.call(&format!("google_drive_search?{query}"), json!({})).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
        if code == "account_not_active" {
            assert_eq!(body["error"]["state"], "EXPIRED");
        }
    }
    std::fs::write(&token_file, "").unwrap();
    let (s, body) = e
        .call("google_drive_search?connected_account=eve", json!({}))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (503, Some("broker_token_unavailable")),
        "{body}"
    );
    let (s, health) = e.get("/healthz").await;
    assert_eq!(
        (s, &health["broker"]["token_readable"]),
        (503, &json!(false)),
        "{health}"
    );
}

#[tokio::test]
async fn mounted_names_win_and_the_namespace_flag_beats_the_token() {
    let answers: Answers = Arc::default();
    for key in ["ops/alice-gmail", "busy/alice-gmail"] {
        answers
            .lock()
            .unwrap()
            .insert(key.into(), granted("ops", "alice-gmail", BOB, Some(3600)));
    }
    let broker = fake_broker(answers).await;
    let root = temp_dir("broker-mixed");
    let token_file = root.path().join("token");
    std::fs::write(&token_file, fake_sa_token("team-a", 3)).unwrap();
    let e = env(
        &[("alice-gmail", "google", ALICE)],
        &[
            format!("--broker-url={}", broker.url()),
            format!("--token-file={}", token_file.display()),
            "--namespace=ops".into(),
        ],
    )
    .await;
    e.remember(BOB);
    e.api.route(
        Method::GET,
        "google",
        "/drive/v3/files",
        200,
        json!({"files": []}),
    );
    // The only mounted google account serves calls that name none; a bare name is the mounted one.
    e.call_ok("google_drive_search", json!({})).await;
    e.api.only_with(Method::GET, "google", "/drive/v3/files", ALICE);
    e.call_ok("google_drive_search?account=alice-gmail", json!({}))
        .await;
    e.api.only_with(Method::GET, "google", "/drive/v3/files", ALICE);
    assert!(broker.requests().is_empty());
    // `ops/alice-gmail` is the broker's, in the namespace it names.
    e.call_ok("google_drive_search?connected_account=ops/alice-gmail", json!({}))
        .await;
    e.api.only_with(Method::GET, "google", "/drive/v3/files", BOB);
    assert_eq!(
        broker.take()[0].form_param("resource").as_deref(),
        Some("agentauth://ops/alice-gmail")
    );
    // MCP: every tool takes the optional selection properties; a call names the broker's account.
    let mcp = |body: Value| {
        e.http
            .post(format!("{}/mcp", e.sidecar.url))
            .header("Accept", "application/json, text/event-stream")
            .header("MCP-Protocol-Version", "2025-06-18")
            .json(&body)
            .send()
    };
    let list: Value = mcp(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tool = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "google_drive_search")
        .unwrap();
    let props = &tool["inputSchema"]["properties"];
    assert!(
        props["connected_account"]["description"]
            .as_str()
            .unwrap()
            .contains("alice-gmail"),
        "{tool}"
    );
    assert!(
        props["connection"].is_object() && props["identifier"].is_object(),
        "{tool}"
    );
    assert!(
        !tool["inputSchema"]["required"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("connected_account")))
    );
    let called: Value = mcp(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "google_drive_search", "arguments": {"connected_account": "ops/alice-gmail"}}}))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(called["result"]["isError"], json!(false), "{called}");
    e.api.only_with(Method::GET, "google", "/drive/v3/files", BOB);
    // A 503 with a short Retry-After (a renewal in progress) is waited out once.
    e.call_ok(
        "google_drive_search?connected_account=busy/alice-gmail",
        json!({}),
    )
    .await;
    e.api.only_with(Method::GET, "google", "/drive/v3/files", BOB);
    assert_eq!(broker.take().len(), 2);
    // A tool of another provider is refused before the provider is called.
    let (s, body) = e
        .call("slack_list_channels?connected_account=ops/alice-gmail", json!({}))
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("wrong_account")),
        "{body}"
    );
}

/// `examples/agent-broker.yaml`'s sidecar arguments start a sidecar (the broker URL pointed here,
/// the token file a temporary one: the pod's paths do not exist on this machine).
#[tokio::test]
async fn the_broker_example_sidecar_starts() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent-broker.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let pod = &deployment["spec"]["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    let mount = &sidecar["volumeMounts"][0];
    assert_eq!(mount["mountPath"], "/var/run/secrets/agentauth.dev");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let projected = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(
        (&projected["audience"], &projected["path"]),
        (&json!("agentauth.dev"), &json!("token"))
    );
    let broker = fake_broker(Answers::default()).await;
    let root = temp_dir("broker-example");
    std::fs::write(root.path().join("token"), fake_sa_token("agents", 9)).unwrap();
    let mut args: Vec<String> = sidecar["args"].as_array().unwrap()[1..]
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| !a.starts_with("--listen"))
        .map(|a| match a.strip_prefix("--broker-url=") {
            Some(u) => {
                assert!(u.ends_with(".svc:8082"), "{u}");
                format!("--broker-url={}", broker.url())
            }
            None => a,
        })
        .collect();
    args.push(format!("--token-file={}", root.path().join("token").display()));
    let sc = SidecarProcess::start(&args);
    let health: Value = reqwest::get(format!("{}/healthz", sc.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["ok"], true, "{health}");
}
