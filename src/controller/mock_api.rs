//! A mocked API server for controller unit tests (tower-test): answers like a real one for the
//! objects a test sets up, and records every request (and, separately, every Event) it gets.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::json;

use super::{Context, Shared};
use crate::api::{ConnectedAccount, Connection};
use crate::config::{Config, ConnectionPolicy};
use crate::store::agent_secret;
use crate::store::operator_copy::CredentialStore;
use crate::store::{Record, TokenSet};

pub const OPERATOR_NS: &str = "agent-auth";

/// What the mocked API server was asked.
#[derive(Default)]
pub struct Seen {
    /// Every request but Events, as `METHOD path`.
    pub requests: Mutex<Vec<String>>,
    /// Every Event, as `Type Reason`.
    pub events: Mutex<Vec<String>>,
}

pub type Calls = Arc<Seen>;

/// Answers every request with what a real API server would send back for this test: the
/// operator copy on GET/PUT, the object on PATCH; Events are recorded apart.
pub fn serve(handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, record: Secret) -> Calls {
    serve_with(handle, record, BTreeMap::new())
}

/// [`serve`], except that a GET of a path in `objects` answers with that object, and a GET of
/// any other path but the operator copy's is a 404.
pub fn serve_with(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    record: Secret,
    objects: BTreeMap<String, Secret>,
) -> Calls {
    let copy_path = format!(
        "/api/v1/namespaces/{OPERATOR_NS}/secrets/{}",
        record.metadata.name.clone().unwrap_or_default()
    );
    let calls = Calls::default();
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
            let body = if path.contains("/events") {
                let bytes = http_body_util::BodyExt::collect(req.into_body()).await;
                let bytes = bytes.map(|b| b.to_bytes()).unwrap_or_default();
                let ev: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if let Ok(mut e) = seen.events.lock() {
                    e.push(format!(
                        "{} {}",
                        ev["type"].as_str().unwrap_or(""),
                        ev["reason"].as_str().unwrap_or("")
                    ));
                }
                ev
            } else {
                if let Ok(mut c) = seen.requests.lock() {
                    c.push(format!("{method} {path}"));
                }
                let mut body = match method.as_str() {
                    "GET" if objects.contains_key(&path) => {
                        serde_json::to_value(&objects[&path]).unwrap_or_default()
                    }
                    "GET" if path != copy_path => {
                        let missing = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": "not found"});
                        let bytes = serde_json::to_vec(&missing).unwrap_or_default();
                        send.send_response(Response::builder().status(404).body(Body::from(bytes)).unwrap());
                        continue;
                    }
                    "GET" | "PUT" => serde_json::to_value(&record).unwrap_or_default(),
                    _ => {
                        let bytes = http_body_util::BodyExt::collect(req.into_body()).await;
                        let bytes = bytes.map(|b| b.to_bytes()).unwrap_or_default();
                        let patch: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        let object = if path.contains("/connectedaccounts/") {
                            serde_json::to_value(account()).ok()
                        } else if path.contains("/connections/") {
                            serde_json::to_value(bearer_connection()).ok()
                        } else {
                            None
                        };
                        if let Some(mut o) = object {
                            o["status"] = patch["status"].clone();
                            o
                        } else {
                            patch
                        }
                    }
                };
                body["metadata"]["resourceVersion"] = json!("2");
                body["metadata"]["name"] =
                    json!(path.rsplit('/').find(|s| *s != "status").unwrap_or_default());
                body
            };
            let bytes = serde_json::to_vec(&body).unwrap_or_default();
            send.send_response(Response::builder().status(200).body(Body::from(bytes)).unwrap());
        }
    });
    calls
}

pub fn store<K>(objects: Vec<K>) -> reflector::Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut writer = Writer::<K>::default();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    writer.as_reader()
}

pub fn bearer_connection() -> Connection {
    serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
        "metadata": {"name": "tool", "namespace": "ns", "generation": 1, "uid": "c-1"},
        "spec": {"authType": "BearerToken"},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True",
            "reason": "Valid", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap()
}

pub fn account() -> ConnectedAccount {
    serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": "bot", "namespace": "ns", "uid": "u-1", "generation": 1,
            "resourceVersion": "1", "finalizers": ["agentauth.dev/cleanup"]},
        "spec": {"connectionRef": {"name": "tool"}, "identifier": "bot"}
    }))
    .unwrap()
}

pub fn token(value: &str, obtained: i64) -> TokenSet {
    TokenSet {
        access_token: value.into(),
        token_type: "Bearer".into(),
        obtained_at: jiff::Timestamp::from_second(1_800_000_000 + obtained).unwrap(),
        ..Default::default()
    }
}

/// The operator copy of `account` holding `tokens`, as the API server stores it.
pub fn record_secret(tokens: TokenSet) -> Secret {
    let record = Record {
        tokens: Some(tokens),
        ..Default::default()
    };
    let data = serde_json::to_vec(&record).unwrap();
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CredentialStore::name_for("u-1"), "namespace": OPERATOR_NS, "resourceVersion": "1"},
        "data": {"record.json": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data)}
    }))
    .unwrap()
}

/// The agent Secret as the operator last published `tokens` for `account`.
pub fn agent_secret_of(account: &ConnectedAccount, tokens: &TokenSet) -> Secret {
    let data: BTreeMap<String, k8s_openapi::ByteString> = agent_secret::render(tokens, None)
        .into_iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v.into_bytes())))
        .collect();
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("bot-credentials".into()),
            namespace: Some("ns".into()),
            owner_references: account.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// A Context over the mocked client, with caches holding `record` and `secret`.
pub fn context(client: Client, record: Secret, secret: Option<Secret>) -> Arc<Context> {
    let config = Arc::new(Config {
        namespace: OPERATOR_NS.into(),
        watch_namespaces: vec![],
        gateway_url: url::Url::parse("https://connect.example.com").unwrap(),
        gateway_addr: ([127, 0, 0, 1], 0).into(),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        metrics_auth: true,
        metrics_account_labels: false,
        broker_addr: ([127, 0, 0, 1], 0).into(),
        broker_audience: crate::broker::DEFAULT_AUDIENCE.into(),
        verify_audience: crate::config::DEFAULT_VERIFY_AUDIENCE.into(),
        instance: "test".into(),
        leader_election: false,
        refresh_concurrency: 1,
        egress: Default::default(),
        connection_policy: ConnectionPolicy::Any,
        connection_hosts: Default::default(),
        allowed_redirect_origins: vec![],
        keyring: None,
        reseal_rate: 10,
        role: crate::config::Role::All,
        intake: crate::config::IntakeConfig {
            addr: ([127, 0, 0, 1], 0).into(),
            url: None,
            token_file: "/dev/null".into(),
            audience: crate::intake::DEFAULT_AUDIENCE.into(),
            allow: vec![],
        },
        signing_key_rotation: std::time::Duration::from_secs(3600),
    });
    let (synced_tx, synced) = tokio::sync::watch::channel(true);
    std::mem::forget(synced_tx);
    let (wake, _) = futures::channel::mpsc::unbounded();
    Arc::new(Context {
        credentials: CredentialStore::new(client.clone(), OPERATOR_NS),
        http: crate::auth::oauth2::http_client(Default::default()).unwrap(),
        signer: crate::signer::Signer::new(b"0123456789abcdef0123456789abcdef").unwrap(),
        connections: store(vec![kube::core::DeserializeGuard(Ok(bearer_connection()))]),
        cluster_connections: store(vec![]),
        namespaces: store(vec![]),
        records: store(vec![record]),
        agent_secrets: store(secret.into_iter().collect()),
        metrics: Arc::new(crate::metrics::Metrics::new()),
        shared: Shared::new(&client, &config),
        config,
        wake,
        synced,
        client,
    })
}
