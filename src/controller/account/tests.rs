//! The reconcile against a mocked API server (tower-test): which requests it makes, in which
//! order. A unit-level check that runs in milliseconds, beside the integration tests.

use std::sync::Arc;

use http::{Request, Response};
use kube::Client;
use kube::client::Body;

use super::super::Context;
use super::super::mock_api::{OPERATOR_NS, account, agent_secret_of, context, record_secret, serve, token};
use crate::api::ConnectedAccount;
use crate::store::Record;

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
