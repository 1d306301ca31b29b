//! Two replicas with leader election, at a strict rotating provider (reuse of a used refresh token
//! revokes the grant): exactly one replica refreshes, killing the leader while the provider holds
//! a rotation hands over within the lease duration, the new leader does not replay the token whose
//! answer was lost (it asks the user instead), and renewal carries on after the user re-authorizes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::{Duration, Instant};

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use common::fixtures::*;
use common::operator::{OPERATOR_NS, Operator, OperatorOptions, lease_holder, prepare_cluster};
use common::rotating::RotatingProvider;
use common::rotating_account::{self, assert_no_replay};
use common::{eventually, setup};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::json;

#[tokio::test]
async fn exactly_one_replica_refreshes_and_the_new_leader_does_not_replay() {
    let env = setup("failover").await;
    let cluster = prepare_cluster().unwrap();
    let replica = |name: &str| OperatorOptions {
        leader_election: true,
        instance: Some(name.into()),
        ..Default::default()
    };
    let a = Operator::start_with(cluster, replica("replica-a")).unwrap();
    let b = Operator::start_with(cluster, replica("replica-b")).unwrap();
    common::hygiene::scan_at_exit();
    let opts = rotating_account::options(&env.ns, Duration::from_secs(20));
    let p = RotatingProvider::start(opts.clone()).await;
    rotating_account::connection(&env.client, &env.ns, "rot", &p, &opts, &["read"], json!({})).await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), OPERATOR_NS);
    let first = eventually(Duration::from_secs(30), "a leader", || lease_holder(&leases)).await;
    let (leader, other_name, other) = if first == "replica-a" {
        (&a, "replica-b", &b)
    } else {
        (&b, "replica-a", &a)
    };
    // The link comes from the leader; its gateway completes the flow.
    rotating_account::authorized(&env.client, &env.ns, "rex", "rot").await;

    // Two refreshes under the first leader.
    eventually(Duration::from_secs(60), "two refreshes", || async {
        (p.rotations() >= 2).then_some(())
    })
    .await;

    // Kill the leader outright while the provider holds a rotation it already made.
    let agent = rotating_account::agent_token(&env.client, &env.ns, "rex").await;
    p.hold_rotations();
    assert!(p.wait_held(Duration::from_secs(30)).await, "a rotation held");
    leader.kill();
    p.release();
    let killed = Instant::now();
    eventually(
        Duration::from_secs(40),
        "the other replica takes the lease",
        || async { (lease_holder(&leases).await.as_deref() == Some(other_name)).then_some(()) },
    )
    .await;
    let handover = killed.elapsed();
    assert!(
        handover < Duration::from_secs(25),
        "handover took {handover:?} (lease 15 s + 5 s grace)"
    );

    // The new leader does not replay: it asks the user.
    let unknown = wait_account(&accounts, "rex", "RefreshOutcomeUnknown", |a| {
        ready(a).is_some_and(|r| r.1 == "RefreshOutcomeUnknown") && link(a).is_some()
    })
    .await;
    let sent = assert_no_replay(&p);
    assert!(p.access_token_valid(&agent) || state(&unknown) == Some(AccountState::Expired));
    let link_url = link(&unknown).unwrap();
    assert!(
        link_url.starts_with(&other.gateway_url),
        "the new leader's link: {link_url}"
    );

    // The user re-authorizes; renewal carries on under the new leader.
    rotating_account::follow(&link_url).await;
    wait_state(&accounts, "rex", AccountState::Active).await;
    let rotations = p.rotations();
    eventually(Duration::from_secs(60), "a refresh by the new leader", || async {
        (p.rotations() > rotations).then_some(())
    })
    .await;
    let after = eventually(Duration::from_secs(30), "ACTIVE under the new leader", || async {
        let a = accounts.get("rex").await.ok()?;
        (state(&a) == Some(AccountState::Active)).then_some(a)
    })
    .await;
    remember_credentials(&env.client, &env.ns, &after).await;
    let total = assert_no_replay(&p);
    eprintln!(
        "failover: handover after {handover:?}; {total} refresh tokens sent ({sent} before the re-authorization), none twice; reuse 0"
    );
}
