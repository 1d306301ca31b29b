//! The link-signing key ring across two replicas with leader election: a rotation (asked for
//! with the Secret's `agentauth.dev/rotate` annotation) keeps outstanding links working on both
//! replicas while new links carry the new key id; deleting the Secret (the response to a leaked
//! key) makes both replicas refuse every outstanding link within seconds, the leader makes a new
//! ring, and the account gets a new link that works on both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::{Duration, Instant};

use agent_auth_operator::api::ConnectedAccount;
use agent_auth_operator::signer::RingSpec;
use agent_auth_operator::store::signing_key::{NAME, ROTATE_ANNOTATION, ring_of};
use common::fixtures::*;
use common::forms::{self, form_connection};
use common::operator::{OPERATOR_NS, Operator, OperatorOptions, prepare_cluster};
use common::{eventually, setup};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

/// The ring the Secret holds now, if any.
async fn ring(secrets: &Api<Secret>) -> Option<RingSpec> {
    ring_of(&secrets.get_opt(NAME).await.ok()??).ok()
}

/// The key id a link's token carries (`.../connect/<kid>.<payload>.<sig>`).
fn kid(link: &str) -> String {
    let token = link.rsplit_once("/connect/").unwrap().1;
    token.split_once('.').map_or(token, |(k, _)| k).to_owned()
}

/// The status code of opening `link` on each replica (the link names replica A's gateway).
async fn open_on(replicas: &[&Operator], link: &str) -> Vec<u16> {
    let http = forms::client();
    let mut codes = Vec::new();
    for r in replicas {
        let url = link.replace(&replicas[0].gateway_url, &r.local_gateway_url);
        codes.push(http.get(&url).send().await.unwrap().status().as_u16());
    }
    codes
}

#[tokio::test]
async fn rotation_keeps_links_and_deleting_the_secret_revokes_them_everywhere() {
    let env = setup("keys").await;
    let cluster = prepare_cluster().unwrap();
    let replica = |name: &str, gateway: Option<String>| OperatorOptions {
        leader_election: true,
        instance: Some(name.into()),
        gateway_url: gateway,
        ..Default::default()
    };
    let a = Operator::start_with(cluster, replica("replica-a", None)).unwrap();
    let b = Operator::start_with(cluster, replica("replica-b", Some(a.gateway_url.clone()))).unwrap();
    let both = [&a, &b];
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), OPERATOR_NS);
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    form_connection(&env.client, &env.ns, "crm", forms::crm_spec("http://127.0.0.1:9")).await;

    // A link signed by the first ring's primary opens on both replicas.
    account(&env.client, &env.ns, "kim", "crm", json!({})).await;
    let kim = link(&wait_account(&accounts, "kim", "link", |a| link(a).is_some()).await).unwrap();
    let first = eventually(Duration::from_secs(30), "a key ring", || ring(&secrets)).await;
    assert_eq!(kid(&kim), first.primary, "the link names its key");
    assert_eq!(open_on(&both, &kim).await, [200, 200]);

    // An operator asks for a rotation.
    let rotate = json!({"metadata": {"annotations": {ROTATE_ANNOTATION: "test-1"}}});
    secrets
        .patch(NAME, &PatchParams::default(), &Patch::Merge(&rotate))
        .await
        .unwrap();
    let rotated = eventually(Duration::from_secs(30), "a rotated ring", || async {
        ring(&secrets).await.filter(|r| r.primary != first.primary)
    })
    .await;
    assert_eq!(rotated.keys.len(), 2, "the old key stays for the overlap");
    assert_eq!(rotated.rotated_for.as_deref(), Some("test-1"));

    // A new link carries the new key id and opens on both replicas once they have reloaded...
    account(&env.client, &env.ns, "lee", "crm", json!({})).await;
    let lee = link(&wait_account(&accounts, "lee", "link", |a| link(a).is_some()).await).unwrap();
    assert_eq!(kid(&lee), rotated.primary);
    eventually(
        Duration::from_secs(10),
        "the new link opens on both replicas",
        || async { (open_on(&both, &lee).await == [200, 200]).then_some(()) },
    )
    .await;
    // ...and the old one still does, unchanged in status.
    assert_eq!(
        open_on(&both, &kim).await,
        [200, 200],
        "an old link through the overlap"
    );
    assert_eq!(
        link(&accounts.get("kim").await.unwrap()).as_deref(),
        Some(kim.as_str())
    );
    // Its form session cookie is scoped to the link as opened, not to a re-signed one.
    let page = forms::client().get(&kim).send().await.unwrap();
    let path = kim.strip_prefix(&a.gateway_url).unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains(&format!("Path={path}")), "{cookie}");

    // The key leaked: the operator deletes the Secret. Both replicas refuse every old link.
    secrets.delete(NAME, &DeleteParams::default()).await.unwrap();
    let deleted = Instant::now();
    eventually(
        Duration::from_secs(10),
        "old links refused on both replicas",
        || async {
            let refused =
                open_on(&both, &kim).await == [404, 404] && open_on(&both, &lee).await == [404, 404];
            refused.then_some(())
        },
    )
    .await;
    let revoked = deleted.elapsed();

    // The leader makes a new ring that holds none of the old keys...
    let fresh = eventually(Duration::from_secs(30), "a new key ring", || ring(&secrets)).await;
    let old: Vec<&str> = rotated.keys.iter().map(|k| k.id.as_str()).collect();
    assert!(
        fresh.keys.iter().all(|k| !old.contains(&k.id.as_str())),
        "{fresh:?}"
    );
    // ...and every account gets a new link that works on both replicas.
    for (name, before) in [("kim", &kim), ("lee", &lee)] {
        let next = eventually(Duration::from_secs(30), "a new link", || async {
            link(&accounts.get(name).await.ok()?).filter(|l| l != before && kid(l) == fresh.primary)
        })
        .await;
        eventually(
            Duration::from_secs(10),
            "the new link opens on both replicas",
            || async { (open_on(&both, &next).await == [200, 200]).then_some(()) },
        )
        .await;
    }
    assert_eq!(
        open_on(&both, &kim).await,
        [404, 404],
        "the leaked key stays dead"
    );
    let logs = format!("{}{}", a.logs(), b.logs());
    for k in &rotated.keys {
        assert!(!logs.contains(&k.key), "no key material in the logs");
    }
    eprintln!("signing keys: old links refused on both replicas {revoked:?} after the Secret was deleted");
}
