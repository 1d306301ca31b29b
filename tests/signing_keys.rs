//! The link-signing key ring across two replicas with leader election: a rotation (asked for
//! with the Secret's `agentauth.dev/rotate` annotation) keeps outstanding links working on both
//! replicas while new links carry the new key id; deleting the Secret (the response to a leaked
//! key) makes both replicas refuse every outstanding link within seconds, the leader makes a new
//! ring, and the account gets a new link that works on both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_auth_operator::api::ConnectedAccount;
use agent_auth_operator::metrics::Metrics;
use agent_auth_operator::signer::{RingSpec, Signer};
use agent_auth_operator::store::signing_key::{NAME, ROTATE_ANNOTATION, follow, ring_of};
use common::fixtures::*;
use common::forms::{self, form_connection};
use common::operator::{OPERATOR_NS, Operator, OperatorOptions, prepare_cluster};
use common::{eventually, identity, setup};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// The ring the Secret holds now, if any.
async fn ring(secrets: &Api<Secret>) -> Option<RingSpec> {
    ring_of(&secrets.get_opt(NAME).await.ok()??).ok()
}

/// The token of a link.
fn kid_token(link: &str) -> &str {
    link.rsplit_once("/connect/").unwrap().1
}

/// The key id a link's token carries (`.../connect/<kid>.<payload>.<sig>`).
fn kid(link: &str) -> String {
    let token = link.rsplit_once("/connect/").unwrap().1;
    token.split_once('.').map_or(token, |(k, _)| k).to_owned()
}

/// A process that follows the ring with only the gateway's rights: get/list/watch on this one
/// Secret. Returns its signer and metrics; the watch stops when the test ends.
async fn restricted_follower(admin: &kube::Client) -> (Signer, Arc<Metrics>) {
    let rule = json!({"apiGroups": [""], "resources": ["secrets"], "resourceNames": [NAME], "verbs": ["get", "list", "watch"]});
    identity::service_account(admin, OPERATOR_NS, "key-reader", &[], None).await;
    let role: Role =
        serde_json::from_value(json!({"metadata": {"name": "key-reader"}, "rules": [rule]})).unwrap();
    Api::<Role>::namespaced(admin.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "key-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "key-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "key-reader", "namespace": OPERATOR_NS}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let token = identity::token(admin, OPERATOR_NS, "key-reader", None).await;
    let path = common::cluster().unwrap().kubeconfig_path();
    let kc = Kubeconfig::read_from(path).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info = AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let client = kube::Client::try_from(config).unwrap();
    let (signer, metrics) = (Signer::empty(), Arc::new(Metrics::new()));
    tokio::spawn(follow(
        client,
        OPERATOR_NS,
        signer.clone(),
        metrics.clone(),
        std::future::pending(),
    ));
    (signer, metrics)
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
    let (reader, reader_metrics) = restricted_follower(&env.client).await;
    assert!(
        reader.wait_loaded(Duration::from_secs(10)).await,
        "the gateway's rights suffice"
    );
    assert_eq!(reader.primary_kid(), Some(first.primary.clone()));

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
    eventually(Duration::from_secs(10), "the follower drops its keys", || async {
        reader.verify_link(kid_token(&kim), 0).is_err().then_some(())
    })
    .await;

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
    eventually(
        Duration::from_secs(10),
        "the follower has the new ring",
        || async { (reader.primary_kid().as_ref() == Some(&fresh.primary)).then_some(()) },
    )
    .await;
    let metrics = reader_metrics.render();
    assert!(metrics.contains("agentauth_signing_keys 1"), "{metrics}");
    let logs = format!("{}{}", a.logs(), b.logs());
    for k in &rotated.keys {
        assert!(!logs.contains(&k.key), "no key material in the logs");
    }
    eprintln!("signing keys: old links refused on both replicas {revoked:?} after the Secret was deleted");
}
