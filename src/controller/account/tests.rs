//! The reconcile against a mocked API server (tower-test): which requests it makes, in which
//! order. A unit-level check that runs in milliseconds, beside the integration tests.

use std::sync::Arc;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;

use super::super::Context;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use super::super::mock_api::{
    OPERATOR_NS, account, agent_secret_of, context, record_secret, serve, serve_with, token,
};
use crate::api::ConnectedAccount;
use crate::store::Record;
use crate::store::operator_copy::CredentialStore;

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
    assert_eq!(*calls.requests.lock().unwrap(), Vec::<String>::new());
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
        *calls.requests.lock().unwrap(),
        [
            format!("GET {copy}"),
            format!("PUT {copy}"),
            "PATCH /api/v1/namespaces/ns/secrets/bot-credentials".to_owned(),
            "PATCH /apis/agentauth.dev/v1alpha1/namespaces/ns/connectedaccounts/bot/status".to_owned(),
        ]
    );
    assert!(ctx.pending("u-1").is_none());
}

#[tokio::test]
async fn status_shows_no_token_times_once_the_grant_is_rejected() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let mut tokens = token("current", 0);
    tokens.expires_at = Some(tokens.obtained_at + jiff::SignedDuration::from_hours(1));
    let record = record_secret(tokens.clone());
    let _calls = serve(handle, record.clone());
    let ctx = context(client, record, Some(agent_secret_of(&account(), &tokens)));
    let account = converged(&ctx).await;
    let observed = super::observe::observe(&account, &ctx).await.unwrap();
    let mut rejected = observed.record.record.clone();
    rejected.rejected = true;
    let plan = super::super::decide::decide(&observed.facts(&account, &rejected, None, &ctx, observed.now));
    let status = super::status::build_status(
        &account,
        &observed,
        &rejected,
        &plan,
        super::publish::Link::default(),
        observed.now,
    );
    assert_eq!(status.state, Some(crate::api::AccountState::Expired));
    assert_eq!((status.expires_at, status.last_refreshed_at), (None, None));
    assert!(status.granted_scopes.is_empty());
    assert!(
        !status
            .conditions
            .iter()
            .any(|c| c.type_ == super::super::decide::TOKEN_REFRESH)
    );
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
    let calls = calls.requests.lock().unwrap().clone();
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
        *calls.requests.lock().unwrap(),
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
    let calls = calls.requests.lock().unwrap().clone();
    assert!(
        calls.first() == Some(&format!("GET {VICTIM}")),
        "a new link was decided without looking the Secret name up: {calls:?}"
    );
}

/// A Secret name looked up and found free is created, not applied: a Secret someone created in
/// between fails the write instead of being taken over.
#[tokio::test]
async fn a_free_secret_name_is_created_not_applied() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let record = record_secret(token("current", 0));
    let calls = serve(handle, record.clone());
    let ctx = context(client, record, None);
    super::reconcile(Arc::new(account()), ctx.clone()).await.unwrap();
    let calls = calls.requests.lock().unwrap().clone();
    let secret = "/api/v1/namespaces/ns/secrets";
    assert_eq!(
        calls[..2],
        [format!("GET {secret}/bot-credentials"), format!("POST {secret}")]
    );
    assert!(
        !calls.contains(&format!("PATCH {secret}/bot-credentials")),
        "{calls:?}"
    );
}
