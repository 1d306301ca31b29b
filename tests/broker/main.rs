//! The token broker against the real API server (TokenRequest, TokenReview, SubjectAccessReview,
//! RBAC) and real Dex: who gets an account's access token, who does not, and what they are told.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod attacks;
#[path = "../common/mod.rs"]
mod common;
mod malformed;

use std::time::Duration;

use agent_auth_operator::api::AccountState;
use common::fixtures::{
    REACT, account, authorized, dex_connection, link, patch_connection, state, wait_account, wait_state,
};
use common::identity::{service_account, token};
use common::operator::stack;
use common::{eventually, setup};
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

pub(crate) const AUDIENCE: &str = "agentauth.dev";
pub(crate) const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub(crate) const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// `POST /token` with `params` (the grant and token type added) as `token`.
pub(crate) async fn exchange(token: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let mut form = vec![
        ("grant_type", EXCHANGE),
        ("subject_token", token),
        ("subject_token_type", JWT),
    ];
    form.extend_from_slice(params);
    post(
        reqwest::Client::new()
            .post(format!("{}/token", stack().operator.broker_url))
            .form(&form),
    )
    .await
}

pub(crate) async fn post(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "every broker answer is uncacheable"
    );
    let body = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}")),
    )
}

pub(crate) fn named(ns: &str, name: &str) -> String {
    format!("agentauth://{ns}/{name}")
}

/// The error code, asserting the status that goes with it.
pub(crate) fn refused(answer: &(u16, Value), status: u16) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert!(answer.1.get("access_token").is_none(), "{}", answer.1);
    answer.1["error"].as_str().unwrap_or_default().to_owned()
}

/// Whether Dex accepts `access_token` (the provider API an agent would call).
pub(crate) async fn dex_accepts(access_token: &str) -> bool {
    reqwest::Client::new()
        .get(stack().dex.userinfo_url())
        .bearer_auth(access_token)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// A ServiceAccount token signed with the cluster's own key, `exp` seconds from now: what the
/// TokenRequest API would issue, except for a lifetime it never issues (already expired).
pub(crate) fn forged(ns: &str, sa: &str, uid: &str, exp: i64) -> String {
    let cluster = common::cluster().unwrap();
    let pem = std::fs::read(cluster.dir().join("sa.key")).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
    let now = jiff::Timestamp::now().as_second();
    let claims = json!({
        "aud": [AUDIENCE], "iss": "https://kubernetes.default.svc",
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "iat": now - 700, "nbf": now - 700, "exp": now + exp,
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": sa, "uid": uid}},
    });
    let t = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .unwrap();
    common::hygiene::remember(&t);
    t
}

#[tokio::test]
async fn the_broker_hands_an_account_token_only_to_service_accounts_rbac_lets_use_it() {
    let env = setup("broker").await;
    let other = setup("broker-other").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    dex_connection(
        client,
        ns,
        "gmail",
        &s.dex,
        &["openid", "email", "offline_access"],
    )
    .await;
    patch_connection(client, ns, "gmail", json!({"spec": {"delivery": "Broker"}})).await;
    let alice = authorized(client, ns, "alice-gmail", "gmail", &s.dex.user(0)).await;
    authorized(client, ns, "bob-gmail", "gmail", &s.dex.user(1)).await;

    // `delivery: Broker`: no agent Secret, and status names none.
    assert!(
        alice.status.as_ref().unwrap().secret_name.is_none(),
        "{:?}",
        alice.status
    );
    for name in ["alice-gmail-credentials", "bob-gmail-credentials"] {
        assert!(secrets.get_opt(name).await.unwrap().is_none(), "{name} written");
    }

    service_account(client, ns, "agent", &["use"], None).await;
    service_account(client, ns, "narrow", &["use"], Some(&["alice-gmail"])).await;
    service_account(client, ns, "nobody", &["get", "list"], None).await;
    service_account(client, &other.ns, "outsider", &["use"], None).await;
    let agent = token(client, ns, "agent", Some(AUDIENCE)).await;
    let narrow = token(client, ns, "narrow", Some(AUDIENCE)).await;
    let nobody = token(client, ns, "nobody", Some(AUDIENCE)).await;
    let outsider = token(client, &other.ns, "outsider", Some(AUDIENCE)).await;

    // The right audience and grant: the current access token, which the provider accepts.
    let alice_res = named(ns, "alice-gmail");
    let (status, body) = exchange(&agent, &[("resource", &alice_res)]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(
        body["account"],
        json!({"namespace": ns, "name": "alice-gmail", "connection": "gmail", "identifier": "alice-gmail@example.com"})
    );
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!(
        (0..=20).contains(&expires_in),
        "Dex tokens live 20 s: {expires_in}"
    );
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(body["credentials"]["authorization"], format!("Bearer {access}"));
    assert!(
        dex_accepts(&access).await,
        "the broker's token works at the provider"
    );
    // Never the refresh token: not as a field, not anywhere in the text.
    assert!(body.get("refresh_token").is_none());
    let copy = common::fixtures::credential_record(client, &alice).await;
    let refresh = copy["tokens"]["refreshToken"].as_str().unwrap();
    assert!(
        !body.to_string().contains(refresh),
        "the refresh token left the operator"
    );

    // By Connection and identifier, in the caller's namespace (or one it names).
    let by_user = exchange(
        &agent,
        &[("audience", "gmail"), ("identifier", "bob-gmail@example.com")],
    )
    .await;
    assert_eq!(
        (by_user.0, by_user.1["account"]["name"].as_str()),
        (200, Some("bob-gmail")),
        "{}",
        by_user.1
    );
    let by_user_ns = [
        ("audience", "gmail"),
        ("identifier", "alice-gmail@example.com"),
        ("namespace", ns),
    ];
    assert_eq!(exchange(&agent, &by_user_ns).await.0, 200);

    // A per-account grant covers that account only.
    assert_eq!(exchange(&narrow, &[("resource", &alice_res)]).await.0, 200);
    let bob_res = named(ns, "bob-gmail");
    assert_eq!(
        refused(&exchange(&narrow, &[("resource", &bob_res)]).await, 403),
        "access_denied"
    );
    // Reading accounts is not using them; a grant in another namespace is not one here.
    assert_eq!(
        refused(&exchange(&nobody, &[("resource", &alice_res)]).await, 403),
        "access_denied"
    );
    assert_eq!(
        refused(&exchange(&outsider, &[("resource", &alice_res)]).await, 403),
        "access_denied"
    );
    let outsider_by_user = [
        ("audience", "gmail"),
        ("identifier", "alice-gmail@example.com"),
        ("namespace", ns),
    ];
    assert_eq!(
        refused(&exchange(&outsider, &outsider_by_user).await, 403),
        "access_denied"
    );
    // The outsider's own namespace has no such account: by identifier it learns just that.
    let own = exchange(
        &outsider,
        &[("audience", "gmail"), ("identifier", "alice-gmail@example.com")],
    )
    .await;
    assert_eq!(refused(&own, 400), "invalid_target");

    // Unknown accounts: said only to callers that may use accounts there.
    let missing = named(ns, "nobody-here");
    assert_eq!(
        refused(&exchange(&agent, &[("resource", &missing)]).await, 400),
        "invalid_target"
    );
    assert_eq!(
        refused(&exchange(&nobody, &[("resource", &missing)]).await, 403),
        "access_denied"
    );
    let nobody_by_user = [("audience", "gmail"), ("identifier", "nobody@example.com")];
    assert_eq!(
        refused(&exchange(&nobody, &nobody_by_user).await, 403),
        "access_denied"
    );

    // Tokens: the API server's audience, garbage, an expired one, none of ours.
    let api_audience = token(client, ns, "agent", None).await;
    assert_eq!(
        refused(&exchange(&api_audience, &[("resource", &alice_res)]).await, 401),
        "invalid_client"
    );
    assert_eq!(
        refused(
            &exchange("garbage.garbage.garbage", &[("resource", &alice_res)]).await,
            401
        ),
        "invalid_client"
    );
    let sa_uid = kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
        .get("agent")
        .await
        .unwrap()
        .uid()
        .unwrap();
    // The same forgery with a future expiry is accepted, so the expired one fails for its expiry.
    assert_eq!(
        exchange(&forged(ns, "agent", &sa_uid, 600), &[("resource", &alice_res)])
            .await
            .0,
        200
    );
    let expired = forged(ns, "agent", &sa_uid, -60);
    assert_eq!(
        refused(&exchange(&expired, &[("resource", &alice_res)]).await, 401),
        "invalid_client"
    );

    // Accounts that have nothing to hand out say why.
    account(client, ns, "carol-gmail", "gmail", json!({})).await;
    wait_account(accounts, "carol-gmail", "link", |a| link(a).is_some()).await;
    let carol = exchange(&agent, &[("resource", &named(ns, "carol-gmail"))]).await;
    assert_eq!(
        (refused(&carol, 409).as_str(), carol.1["state"].as_str()),
        ("account_not_active", Some("PENDING_AUTH"))
    );
    let pp = PatchParams::default();
    accounts
        .patch(
            "bob-gmail",
            &pp,
            &Patch::Merge(json!({"spec": {"disconnected": true}})),
        )
        .await
        .unwrap();
    wait_state(accounts, "bob-gmail", AccountState::Disconnected).await;
    let bob = eventually(REACT, "bob refused as DISCONNECTED", || async {
        let a = exchange(&agent, &[("resource", &bob_res)]).await;
        (a.0 == 409).then_some(a)
    })
    .await;
    assert_eq!(
        (refused(&bob, 409).as_str(), bob.1["state"].as_str()),
        ("account_not_active", Some("DISCONNECTED"))
    );

    // Every decision is counted by outcome; refusals are logged with the ServiceAccount.
    let metrics = s.operator.metrics().await.unwrap();
    for outcome in [
        "issued",
        "access_denied",
        "unauthenticated",
        "invalid_target",
        "not_active",
    ] {
        assert!(
            metrics.contains(&format!(
                "agentauth_broker_requests_total{{outcome=\"{outcome}\"}}"
            )),
            "{outcome} not counted:\n{metrics}"
        );
    }
    let logs = s.operator.logs();
    assert!(
        logs.lines().any(|l| l.contains("no RBAC grant")
            && l.contains(&format!("{ns}/narrow"))
            && l.contains("bob-gmail")),
        "refusal not logged with the ServiceAccount and account"
    );
    common::hygiene::remember(&access);
}

#[tokio::test]
async fn delivery_moves_between_secret_and_broker_per_account() {
    let env = setup("broker-delivery").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    dex_connection(client, ns, "mail", &s.dex, &["openid", "email", "offline_access"]).await;
    authorized(client, ns, "dave", "mail", &s.dex.user(2)).await;
    service_account(client, ns, "agent", &["use"], None).await;
    let agent = token(client, ns, "agent", Some(AUDIENCE)).await;
    let dave = named(ns, "dave");

    // `Secret` (the default): mounted as today, and the broker does not hand it out.
    assert!(secrets.get_opt("dave-credentials").await.unwrap().is_some());
    let secret_only = exchange(&agent, &[("resource", &dave)]).await;
    assert_eq!(refused(&secret_only, 400), "invalid_target");
    assert!(
        secret_only.1["error_description"]
            .as_str()
            .unwrap()
            .contains("delivery")
    );

    // The account's own `delivery` wins: both, then the broker only (its Secret goes).
    let pp = PatchParams::default();
    let set = |d: &'static str| json!({"spec": {"delivery": d}});
    accounts
        .patch("dave", &pp, &Patch::Merge(set("SecretAndBroker")))
        .await
        .unwrap();
    let both = eventually(REACT, "dave served by the broker", || async {
        let a = exchange(&agent, &[("resource", &dave)]).await;
        (a.0 == 200).then_some(a)
    })
    .await;
    assert!(secrets.get_opt("dave-credentials").await.unwrap().is_some());
    accounts
        .patch("dave", &pp, &Patch::Merge(set("Broker")))
        .await
        .unwrap();
    common::fixtures::wait_gone(secrets, "dave-credentials").await;
    let a = wait_account(accounts, "dave", "no secretName", |a| {
        a.status.as_ref().is_some_and(|s| s.secret_name.is_none())
    })
    .await;
    assert_eq!(state(&a), Some(AccountState::Active));

    // A refresh by the operator is what the broker hands out next.
    let first = both.1["access_token"].as_str().unwrap().to_owned();
    let renewed = eventually(
        Duration::from_secs(60),
        "a refreshed token from the broker",
        || async {
            let a = exchange(&agent, &[("resource", &dave)]).await;
            let t = a.1["access_token"].as_str()?.to_owned();
            (t != first).then_some(t)
        },
    )
    .await;
    assert!(dex_accepts(&renewed).await);
    common::hygiene::remember(&first);
    common::hygiene::remember(&renewed);
}
