//! The flow is stateless across processes: it survives an operator restart between the redirect
//! to the provider and the callback, and completes on a replica other than the one that started
//! it. Both replicas run with leader election; the Lease names the one running the controllers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use common::dex::{Dex, DexOptions, authorize_until, browser_until};
use common::fixtures::*;
use common::operator::{Operator, OperatorOptions, prepare_cluster};
use common::{eventually, setup};
use kube::api::Api;
use serde_json::json;

#[tokio::test]
async fn flow_survives_a_restart_and_completes_on_another_replica() {
    let env = setup("replicas").await;
    let cluster = prepare_cluster().unwrap();
    let a = Operator::start_with(
        cluster,
        OperatorOptions {
            leader_election: true,
            instance: Some("replica-a".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let b = Operator::start_with(
        cluster,
        OperatorOptions {
            leader_election: true,
            instance: Some("replica-b".into()),
            gateway_url: Some(a.gateway_url.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    let dex = Dex::start_with(
        &format!("{}/oauth/callback", a.gateway_url),
        DexOptions::default(),
    )
    .unwrap();
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    dex_connection(&env.client, &env.ns, "dex", &dex, &["openid", "offline_access"]).await;
    account(&env.client, &env.ns, "kim", "dex", json!({})).await;
    let pending = wait_account(&accounts, "kim", "link", |a| link(a).is_some()).await;

    // The user is at the provider when replica A crashes and comes back.
    let callback = format!("{}/oauth/callback", a.gateway_url);
    let http = browser_until(&callback);
    let back = authorize_until(&http, &link(&pending).unwrap(), &dex.user(0), &callback)
        .await
        .unwrap();
    a.restart().unwrap();

    // The callback reaches replica B (the load balancer picked it).
    let on_b = back.as_str().replace(&a.gateway_url, &b.local_gateway_url);
    let page = http.get(&on_b).send().await.unwrap();
    assert_eq!(page.status(), 200, "{}", page.text().await.unwrap());

    // Whichever replica leads now publishes the credentials.
    let active = eventually(Duration::from_secs(60), "ACTIVE after failover", || async {
        let acct = accounts.get("kim").await.ok()?;
        (state(&acct) == Some(AccountState::Active)).then_some(acct)
    })
    .await;
    assert!(active.status.unwrap().authorization_link.is_none());

    // One Lease names the replica running the controllers.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(env.client.clone(), common::operator::OPERATOR_NS);
    let holder = leases
        .get("agent-auth-operator")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    assert!(
        holder == "replica-a" || holder == "replica-b",
        "lease held by {holder}"
    );
    assert!(a.logs().contains("acquired the lease") || b.logs().contains("acquired the lease"));

    // SIGTERM stops a replica cleanly, and a leader hands its Lease back on the way out.
    let leader = if holder == "replica-a" { &a } else { &b };
    let status = leader.terminate().unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let released = leases.get("agent-auth-operator").await.unwrap().spec.unwrap();
    assert_ne!(
        released.holder_identity.as_deref(),
        Some(holder.as_str()),
        "lease released on shutdown"
    );
}
