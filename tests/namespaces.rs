//! `--watch-namespaces`: the operator serves the listed namespaces and leaves every other alone,
//! and its limits hold per process, not per watched namespace.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use common::dex::{Dex, DexOptions};
use common::fixtures::*;
use common::operator::{Operator, OperatorOptions, prepare_cluster};
use common::setup;
use common::token_server::{TokenServer, TokenServerConfig};
use kube::api::Api;
use serde_json::json;

#[tokio::test]
async fn only_watched_namespaces_are_served() {
    let (a, b, c) = (
        setup("watched-a").await,
        setup("watched-b").await,
        setup("unwatched").await,
    );
    let cluster = prepare_cluster().unwrap();
    let op = Operator::start_with(
        cluster,
        OperatorOptions {
            instance: Some("scoped".into()),
            extra_args: vec![
                format!("--watch-namespaces={},{}", a.ns, b.ns),
                "--refresh-concurrency=1".into(),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    let dex = Dex::start_with(
        &format!("{}/oauth/callback", op.gateway_url),
        DexOptions::default(),
    )
    .unwrap();
    for env in [&a, &b, &c] {
        dex_connection(&env.client, &env.ns, "dex", &dex, &["openid"]).await;
        account(&env.client, &env.ns, "user", "dex", json!({})).await;
    }
    for env in [&a, &b] {
        let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
        wait_state(&accounts, "user", AccountState::PendingAuth).await;
    }
    // By the time both watched namespaces converged, the unwatched one would have too.
    let unwatched: Api<ConnectedAccount> = Api::namespaced(c.client.clone(), &c.ns);
    let untouched = unwatched.get("user").await.unwrap();
    assert!(untouched.status.is_none(), "no status in an unwatched namespace");
    assert!(
        untouched.metadata.finalizers.is_none(),
        "no finalizer in an unwatched namespace"
    );

    // `--refresh-concurrency=1` is one token call at a time for the process: machine accounts in
    // both watched namespaces obtain their tokens one after another.
    let server = TokenServer::start(TokenServerConfig::default()).await;
    server.set_delay(std::time::Duration::from_millis(300));
    for env in [&a, &b] {
        opted_in_secret(&env.client, &env.ns, "cc-secret", "key", "test-secret").await;
        let conn: agent_auth_operator::api::Connection = serde_json::from_value(json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
            "metadata": {"name": "cc"},
            "spec": {"authType": "ClientCredentials", "oauth2": {
                "clientId": "test-client", "clientSecretRef": {"name": "cc-secret", "key": "key"},
                "tokenUrl": server.token_url(),
            }}
        }))
        .unwrap();
        Api::<agent_auth_operator::api::Connection>::namespaced(env.client.clone(), &env.ns)
            .create(&Default::default(), &conn)
            .await
            .unwrap();
        for i in 0..3 {
            account(&env.client, &env.ns, &format!("bot-{i}"), "cc", json!({})).await;
        }
    }
    for env in [&a, &b] {
        let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
        for i in 0..3 {
            wait_state(&accounts, &format!("bot-{i}"), AccountState::Active).await;
        }
    }
    assert_eq!(
        server.peak_concurrency(),
        1,
        "token calls in flight at once across two watched namespaces"
    );
}
