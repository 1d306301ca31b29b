//! Broker mode end to end: the real control plane, the operator and its token broker, a strict
//! rotating OAuth provider whose tokens the operator refreshes, and ONE sidecar process that mounts
//! no credential and acts for two users, named per call. The pod's identity is a real
//! ServiceAccount token (TokenRequest, audience `agentauth.dev`) in a file, as the kubelet projects
//! it; the "provider API" is the recording server of [`super::harness`].

use std::time::Duration;

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use axum::http::Method;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::{Value, json};

use super::common::fixtures::{account, link, oauth_connection, wait_account, wait_state};
use super::common::hygiene::remember;
use super::common::identity::{service_account, token};
use super::common::operator::{OPERATOR_NS, stack};
use super::common::rotating::RotatingProvider;
use super::common::rotating_account::{follow, options};
use super::common::{eventually, setup};
use super::harness::*;

/// Access tokens live this long: the operator refreshes at half-life (50 s), while the sidecar,
/// having fetched just after authorization, still holds the old one for `expires_in - 30 s`.
const TTL: Duration = Duration::from_secs(100);

/// The access token the operator holds for `name` now (its own copy; a `Broker` account has no
/// agent Secret).
async fn held_token(client: &kube::Client, ns: &str, name: &str) -> String {
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    let uid = accounts.get(name).await.unwrap().uid().unwrap();
    let copy = Api::<Secret>::namespaced(client.clone(), OPERATOR_NS)
        .get(&format!("agentauth-{uid}"))
        .await
        .unwrap();
    let record = &copy.data.unwrap()["record.json"].0;
    let record: Value = serde_json::from_slice(record).unwrap();
    record["tokens"]["accessToken"].as_str().unwrap().to_owned()
}

/// Creates `name` for `identifier` on `rot` and authorizes it through its link.
async fn active(client: &kube::Client, ns: &str, name: &str, identifier: &str) -> ConnectedAccount {
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    account(client, ns, name, "rot", json!({"identifier": identifier})).await;
    let pending = wait_account(&accounts, name, "link", |a| link(a).is_some()).await;
    follow(&link(&pending).unwrap()).await;
    wait_state(&accounts, name, AccountState::Active).await
}

/// The `Authorization` values the provider API received since the last look.
fn auths(e: &Env) -> Vec<String> {
    e.api.take().iter().map(|s| s.auth().to_owned()).collect()
}

#[tokio::test]
async fn one_sidecar_acts_for_many_users_through_the_broker() {
    let test = setup("sc-broker").await;
    let s = stack();
    let (client, ns, _, secrets) = test.parts();
    let opts = options(ns, TTL);
    let p = RotatingProvider::start(opts.clone()).await;
    let oauth2 = json!({"clientId": opts.client_id, "authorizationUrl": p.authorize_url(),
        "tokenUrl": p.token_url(), "revocationUrl": p.revocation_url(), "scopes": ["read"]});
    // `provider: github` names the sidecar's routing (its --api-base) and tools; the endpoints are
    // the rotating provider's.
    oauth_connection(
        client,
        ns,
        "rot",
        &opts.client_secret,
        oauth2,
        json!({"provider": "github", "delivery": "Broker"}),
    )
    .await;
    let alice = active(client, ns, "alice-rot", "alice").await;
    active(client, ns, "bob-rot", "bob").await;
    assert_eq!(alice.status.as_ref().and_then(|s| s.secret_name.clone()), None);
    assert!(secrets.get_opt("alice-rot-credentials").await.unwrap().is_none());
    // Carol never authorizes.
    account(client, ns, "carol-rot", "rot", json!({"identifier": "carol"})).await;

    let root = temp_dir("broker-e2e");
    let token_file = root.path().join("token");
    service_account(client, ns, "agent", &["use"], None).await;
    let sa_token = token(client, ns, "agent", Some("agentauth.dev")).await;
    std::fs::write(&token_file, &sa_token).unwrap();
    // No volume, no --namespace: the namespace is the token's.
    let e = env(
        &[],
        &[
            format!("--broker-url={}", s.operator.broker_url),
            format!("--token-file={}", token_file.display()),
        ],
    )
    .await;
    let (a1, b1) = (
        held_token(client, ns, "alice-rot").await,
        held_token(client, ns, "bob-rot").await,
    );
    for t in [&sa_token, &a1, &b1] {
        e.remember(t);
        remember(t);
    }
    e.api
        .route(Method::GET, "github", "/user", 200, json!({"login": "someone"}));
    e.api.route(
        Method::GET,
        "github",
        "/repos/acme/widgets/issues",
        200,
        json!([]),
    );

    // Alice by connection + identifier (a tool, then the proxy), Bob by name (bare and qualified).
    e.call_ok(
        "github_list_issues?connection=rot&identifier=alice",
        json!({"owner": "acme", "repo": "widgets"}),
    )
    .await;
    let proxied = |headers: &[(&str, &str)]| {
        let mut req = e.http.get(format!("{}/v1/proxy/_/user", e.sidecar.url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let resp = proxied(&[
        ("X-Agentauth-Connection", "rot"),
        ("X-Agentauth-Identifier", "alice"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    e.call_ok(
        "github_list_issues?connected_account=bob-rot",
        json!({"owner": "acme", "repo": "widgets"}),
    )
    .await;
    let qualified = format!("{ns}/bob-rot");
    let resp = proxied(&[("X-Agentauth-Connected-Account", &qualified)])
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(auths(&e), [bearer(&a1), bearer(&a1), bearer(&b1), bearer(&b1)]);

    // The broker's refusals, as the agent sees them.
    let (status, body) = e
        .call(
            "github_list_issues?connected_account=carol-rot",
            json!({"owner": "a", "repo": "b"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("account_not_active")),
        "{body}"
    );
    assert_eq!(body["error"]["state"], "PENDING_AUTH");
    let (status, body) = e
        .call(
            "github_list_issues?connection=rot&identifier=nobody",
            json!({"owner": "a", "repo": "b"}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_account")),
        "{body}"
    );

    // The operator refreshes both (at half-life); the sidecar still holds the old tokens.
    let refreshed = |name: &'static str, old: String| async move {
        eventually(TTL, "the operator's refresh", || async {
            let t = held_token(client, ns, name).await;
            (t != old).then_some(t)
        })
        .await
    };
    let a2 = refreshed("alice-rot", a1.clone()).await;
    let b2 = refreshed("bob-rot", b1.clone()).await;
    for t in [&a2, &b2] {
        e.remember(t);
        remember(t);
    }
    // The provider now rejects Alice's old token: the sidecar asks the broker again and retries.
    e.api
        .accept_only("github", &[bearer(&a2), bearer(&b1), bearer(&b2)]);
    let resp = proxied(&[
        ("X-Agentauth-Connection", "rot"),
        ("X-Agentauth-Identifier", "alice"),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(auths(&e), [bearer(&a1), bearer(&a2)]);
    // Bob's old token still works; once the cached copy expires the new one is used.
    eventually(TTL, "the sidecar's cached copy to expire", || async {
        let resp = proxied(&[("X-Agentauth-Connected-Account", "bob-rot")])
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let seen = auths(&e);
        assert_eq!(seen.len(), 1, "{seen:?}");
        (seen[0] == bearer(&b2)).then_some(())
    })
    .await;
    assert!(!e.sidecar.output().contains(&sa_token));
}
