//! Two replicas with leader election: exactly one refreshes (no refresh token ever reaches the
//! provider twice), killing the leader while its refresh is in flight hands over within the lease
//! duration, and renewal carries on without losing the account.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_auth_operator::api::{AccountState, ConnectedAccount, Connection};
use common::dex::{Dex, DexOptions};
use common::fixtures::*;
use common::operator::{OPERATOR_NS, Operator, OperatorOptions, prepare_cluster};
use common::proxy::{Fault, Proxy, start_proxy};
use common::{eventually, setup};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("agent-auth-operator")
        .await
        .ok()??
        .spec?
        .holder_identity
}

#[tokio::test]
async fn exactly_one_replica_refreshes_and_the_lease_hands_over() {
    let env = setup("failover").await;
    let cluster = prepare_cluster().unwrap();
    let replica = |name: &str, gateway_url: Option<String>| OperatorOptions {
        leader_election: true,
        instance: Some(name.into()),
        gateway_url,
        ..Default::default()
    };
    let a = Operator::start_with(cluster, replica("replica-a", None)).unwrap();
    let b = Operator::start_with(cluster, replica("replica-b", Some(a.gateway_url.clone()))).unwrap();
    let dex = Dex::start_with(
        &format!("{}/oauth/callback", a.gateway_url),
        DexOptions {
            id_token_ttl: "20s",
            ..Default::default()
        },
    )
    .unwrap();
    common::hygiene::remember(&dex.client_secret);
    common::hygiene::scan_at_exit();
    let proxy = Arc::new(Proxy::default());
    let token_url = start_proxy(proxy.clone(), dex.token_url().to_owned()).await;
    dex_connection(&env.client, &env.ns, "dex", &dex, &["openid", "offline_access"]).await;
    let patch = json!({"spec": {"oauth2": {"tokenUrl": token_url}}});
    Api::<Connection>::namespaced(env.client.clone(), &env.ns)
        .patch("dex", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    account(&env.client, &env.ns, "rex", "dex", json!({})).await;
    let pending = wait_account(&accounts, "rex", "link", |a| link(a).is_some()).await;
    sign_in(&link(&pending).unwrap(), &dex.user(0)).await;
    wait_state(&accounts, "rex", AccountState::Active).await;

    // Two refreshes under the first leader.
    let forwarded = || proxy.forwarded_refresh_tokens.lock().unwrap().len();
    eventually(Duration::from_secs(60), "two refreshes", || async {
        (forwarded() >= 2).then_some(())
    })
    .await;

    // Kill the leader outright while its refresh hangs at the provider.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), OPERATOR_NS);
    let first = holder(&leases).await.unwrap();
    let (leader, other) = if first == "replica-a" {
        (&a, "replica-b")
    } else {
        (&b, "replica-a")
    };
    *proxy.fault.lock().unwrap() = Some(Fault::Slow);
    eventually(Duration::from_secs(60), "a refresh in flight", || async {
        (*proxy.faulted_refreshes.lock().unwrap() > 0).then_some(())
    })
    .await;
    leader.kill();
    *proxy.fault.lock().unwrap() = None;
    let killed = Instant::now();
    eventually(
        Duration::from_secs(40),
        "the other replica takes the lease",
        || async { (holder(&leases).await.as_deref() == Some(other)).then_some(()) },
    )
    .await;
    let handover = killed.elapsed();
    assert!(
        handover < Duration::from_secs(25),
        "handover took {handover:?} (lease 15 s + 5 s grace)"
    );

    // Renewal continues under the new leader.
    let before = forwarded();
    eventually(Duration::from_secs(60), "a refresh by the new leader", || async {
        (forwarded() > before).then_some(())
    })
    .await;
    let after = eventually(Duration::from_secs(30), "ACTIVE under the new leader", || async {
        let a = accounts.get("rex").await.ok()?;
        (state(&a) == Some(AccountState::Active)).then_some(a)
    })
    .await;
    remember_credentials(&env.client, &env.ns, &after).await;

    let tokens = proxy.forwarded_refresh_tokens.lock().unwrap().clone();
    let mut unique = tokens.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        tokens.len(),
        "a refresh token reached the provider twice"
    );
    eprintln!(
        "failover: handover after {handover:?}; {} refreshes, all with distinct refresh tokens",
        tokens.len()
    );
}
