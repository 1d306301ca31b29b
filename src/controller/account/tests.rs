//! The reconcile against a mocked API server (tower-test): which requests it makes, in which
//! order. A unit-level check that runs in milliseconds, beside the integration tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::client::Body;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::json;

use super::super::{Context, Shared};
use crate::api::{ConnectedAccount, Connection};
use crate::config::{Config, ConnectionPolicy};
use crate::store::agent_secret;
use crate::store::operator_copy::CredentialStore;
use crate::store::{Record, TokenSet};

const OPERATOR_NS: &str = "agent-auth";

/// What the mocked API server was asked, as `METHOD path`.
type Calls = Arc<Mutex<Vec<String>>>;

/// Answers every request with what a real API server would send back for this test: the
/// operator copy on GET/PUT, the object on PATCH; Events are answered and not recorded.
fn serve(handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, record: Secret) -> Calls {
    serve_with(handle, record, BTreeMap::new())
}

/// [`serve`], except that a GET of a path in `objects` answers with that object.
fn serve_with(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    record: Secret,
    objects: BTreeMap<String, Secret>,
) -> Calls {
    let calls = Calls::default();
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Some((req, send)) = handle.next_request().await {
            let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
            let body = if path.contains("/events") {
                json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"}, "eventTime": null})
            } else {
                if let Ok(mut c) = seen.lock() {
                    c.push(format!("{method} {path}"));
                }
                let mut body = match method.as_str() {
                    "GET" if objects.contains_key(&path) => {
                        serde_json::to_value(&objects[&path]).unwrap_or_default()
                    }
                    "GET" | "PUT" => serde_json::to_value(&record).unwrap_or_default(),
                    _ => {
                        let bytes = http_body_util::BodyExt::collect(req.into_body()).await;
                        let bytes = bytes.map(|b| b.to_bytes()).unwrap_or_default();
                        let patch: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                        if path.contains("/connectedaccounts/") {
                            let mut a = serde_json::to_value(account()).unwrap_or_default();
                            a["status"] = patch["status"].clone();
                            a
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

fn store<K>(objects: Vec<K>) -> reflector::Store<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut writer = Writer::<K>::default();
    for o in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(o));
    }
    writer.as_reader()
}

fn bearer_connection() -> Connection {
    serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
        "metadata": {"name": "tool", "namespace": "ns", "generation": 1, "uid": "c-1"},
        "spec": {"authType": "BearerToken"},
        "status": {"observedGeneration": 1, "conditions": [{"type": "Ready", "status": "True",
            "reason": "Valid", "message": "ok", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    }))
    .unwrap()
}

fn account() -> ConnectedAccount {
    serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": "bot", "namespace": "ns", "uid": "u-1", "generation": 1,
            "resourceVersion": "1", "finalizers": ["agentauth.dev/cleanup"]},
        "spec": {"connectionRef": {"name": "tool"}, "identifier": "bot"}
    }))
    .unwrap()
}

fn token(value: &str, obtained: i64) -> TokenSet {
    TokenSet {
        access_token: value.into(),
        token_type: "Bearer".into(),
        obtained_at: jiff::Timestamp::from_second(1_800_000_000 + obtained).unwrap(),
        ..Default::default()
    }
}

/// The operator copy of `account` holding `tokens`, as the API server stores it.
fn record_secret(tokens: TokenSet) -> Secret {
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
fn agent_secret_of(account: &ConnectedAccount, tokens: &TokenSet) -> Secret {
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
fn context(client: Client, record: Secret, secret: Option<Secret>) -> Arc<Context> {
    let config = Arc::new(Config {
        namespace: OPERATOR_NS.into(),
        watch_namespaces: vec![],
        gateway_url: url::Url::parse("https://connect.example.com").unwrap(),
        gateway_addr: ([127, 0, 0, 1], 0).into(),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        instance: "test".into(),
        leader_election: false,
        refresh_concurrency: 1,
        egress: Default::default(),
        connection_policy: ConnectionPolicy::Any,
        connection_hosts: Default::default(),
        allowed_redirect_origins: vec![],
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

/// An account whose status is what the reconcile itself would write for these caches.
async fn converged(ctx: &Arc<Context>) -> ConnectedAccount {
    let mut a = account();
    let observed = super::observe::observe(&a, ctx).await.unwrap();
    let renewed = super::renew::renew(&Arc::new(a.clone()), &observed, ctx)
        .await
        .unwrap();
    let facts = observed.facts(&a, &renewed.record.record, None, ctx, observed.now);
    let plan = super::super::decide::decide(&facts);
    let link = super::publish::Link::default();
    a.status = Some(super::status::build_status(
        &a,
        &observed,
        &renewed.record.record,
        &plan,
        link,
        observed.now,
    ));
    a
}

#[tokio::test]
async fn a_converged_account_costs_no_request() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let tokens = token("current", 0);
    let record = record_secret(tokens.clone());
    let calls = serve(handle, record.clone());
    let ctx = context(client, record, Some(agent_secret_of(&account(), &tokens)));
    let account = converged(&ctx).await;
    assert_eq!(
        account.status.as_ref().and_then(|s| s.state),
        Some(crate::api::AccountState::Active)
    );
    for _ in 0..3 {
        super::reconcile(Arc::new(account.clone()), ctx.clone())
            .await
            .unwrap();
    }
    assert_eq!(*calls.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_held_back_credential_is_written_to_the_copy_then_the_secret_then_status() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let old = token("old", 0);
    let record = record_secret(old.clone());
    let calls = serve(handle, record.clone());
    let ctx = context(client, record, Some(agent_secret_of(&account(), &old)));
    let account = converged(&ctx).await;
    // A refresh outcome the API did not accept during an outage, held in memory.
    ctx.set_pending(
        "u-1",
        Record {
            tokens: Some(token("new", 60)),
            ..Default::default()
        },
    );
    super::reconcile(Arc::new(account), ctx.clone()).await.unwrap();
    let copy = format!("/api/v1/namespaces/{OPERATOR_NS}/secrets/agentauth-u-1");
    assert_eq!(
        *calls.lock().unwrap(),
        [
            format!("GET {copy}"),
            format!("PUT {copy}"),
            "PATCH /api/v1/namespaces/ns/secrets/bot-credentials".to_owned(),
            "PATCH /apis/agentauth.dev/v1alpha1/namespaces/ns/connectedaccounts/bot/status".to_owned(),
        ]
    );
    assert!(ctx.pending("u-1").is_none());
}

fn b64(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes)
}

/// The operator copy of an account that has no credential yet.
fn empty_record() -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": CredentialStore::name_for("u-1"), "namespace": OPERATOR_NS, "resourceVersion": "1"},
        "data": {"record.json": b64(&serde_json::to_vec(&Record::default()).unwrap())}
    }))
    .unwrap()
}

const VICTIM: &str = "/api/v1/namespaces/ns/secrets/victim";

/// Someone else's Secret `victim`: unlabelled, so not in the operator's cache.
fn victim() -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "victim", "namespace": "ns", "resourceVersion": "7"},
        "data": {"password": b64(b"db-password")}
    }))
    .unwrap()
}

/// The account publishing to `victim`, with no credential and a valid link in its status.
fn account_aimed_at_victim(ctx: &Context) -> ConnectedAccount {
    let mut a = account();
    a.spec.secret_name = Some("victim".into());
    let claims = crate::signer::LinkClaims {
        ns: "ns".into(),
        name: "bot".into(),
        uid: "u-1".into(),
        nonce: "n".into(),
        exp: jiff::Timestamp::now().as_second() + 3600,
    };
    let url = ctx
        .config
        .endpoint(&format!("connect/{}", ctx.signer.issue_link(&claims)));
    a.status = Some(crate::api::ConnectedAccountStatus {
        state: Some(crate::api::AccountState::PendingAuth),
        authorization_link: Some(url),
        ..Default::default()
    });
    a
}

/// A tenant without Secret rights points `spec.credentialsRef` at any opted-in Secret of its
/// namespace and `spec.secretName` at someone else's Secret, while the account still shows a
/// valid link and has no credential yet. credentialsRef supplies the first credential during
/// renewal; publishing it must not server-side apply over the foreign Secret (which would take
/// its controller owner reference, so deleting the account would delete it).
#[tokio::test]
async fn a_foreign_secret_is_never_written_when_credentials_ref_fills_an_empty_record() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    // Any Secret of the namespace that opted in to being referenced, with a key the form accepts.
    let supplied: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "supplied", "namespace": "ns", "resourceVersion": "5",
            "labels": {crate::store::secret_ref::USABLE_LABEL: "true"}},
        "data": {"token": b64(b"some-token")}
    }))
    .unwrap();
    let calls = serve_with(
        handle,
        empty_record(),
        BTreeMap::from([
            ("/api/v1/namespaces/ns/secrets/supplied".to_owned(), supplied),
            (VICTIM.to_owned(), victim()),
        ]),
    );
    let ctx = context(client, empty_record(), None);
    let mut a = account_aimed_at_victim(&ctx);
    a.spec.credentials_ref = serde_json::from_value(json!({"name": "supplied"})).unwrap();
    let _ = super::reconcile(Arc::new(a), ctx.clone()).await;
    let calls = calls.lock().unwrap().clone();
    assert!(
        !calls.contains(&format!("PATCH {VICTIM}")),
        "the foreign Secret was written: {calls:?}"
    );
}

/// An agent Secret of ours whose labels someone removed is no longer in the (label-selected)
/// cache. Before the pipeline it counted as not current, so the next apply put the labels back;
/// found live, it must still be re-applied, or every reconcile GETs it forever.
#[tokio::test]
async fn an_unlabelled_agent_secret_found_live_is_applied_again() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let tokens = token("current", 0);
    let record = record_secret(tokens.clone());
    let secret_path = "/api/v1/namespaces/ns/secrets/bot-credentials".to_owned();
    // Ours (controller owner reference) and current, but without the operator's labels.
    let live = agent_secret_of(&account(), &tokens);
    let calls = serve_with(
        handle,
        record.clone(),
        BTreeMap::from([(secret_path.clone(), live.clone())]),
    );
    let cached = context(client.clone(), record.clone(), Some(live));
    let account = converged(&cached).await;
    let ctx = context(client, record, None);
    super::reconcile(Arc::new(account), ctx.clone()).await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        [format!("GET {secret_path}"), format!("PATCH {secret_path}")]
    );
}

/// A re-authorization request on an account without a credential replaces a link that is still
/// valid. Before the pipeline a name missing from the cache was looked up before any new link was
/// handed out, so a user is never sent through a flow whose Secret belongs to someone else.
#[tokio::test]
async fn a_new_link_is_not_issued_before_the_secret_name_is_looked_up() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let calls = serve_with(
        handle,
        empty_record(),
        BTreeMap::from([(VICTIM.to_owned(), victim())]),
    );
    let ctx = context(client, empty_record(), None);
    let mut a = account_aimed_at_victim(&ctx);
    a.metadata.annotations = Some(BTreeMap::from([(
        crate::api::REAUTHORIZE_ANNOTATION.to_owned(),
        "r1".to_owned(),
    )]));
    let _ = super::reconcile(Arc::new(a), ctx.clone()).await;
    let calls = calls.lock().unwrap().clone();
    assert!(
        calls.first() == Some(&format!("GET {VICTIM}")),
        "a new link was decided without looking the Secret name up: {calls:?}"
    );
}
