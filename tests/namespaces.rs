//! `--watch-namespaces`: the operator serves the listed namespaces and leaves every other alone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use common::dex::{Dex, DexOptions};
use common::fixtures::*;
use common::operator::{Operator, OperatorOptions, prepare_cluster};
use common::setup;
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
            extra_args: vec![format!("--watch-namespaces={},{}", a.ns, b.ns)],
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
}
