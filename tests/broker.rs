//! The token broker against the real API server (TokenRequest, TokenReview, SubjectAccessReview,
//! RBAC) and real Dex: who gets an account's access token, who does not, and what they are told.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

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

const AUDIENCE: &str = "agentauth.dev";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// `POST /token` with `params` (the grant and token type added) as `token`.
async fn exchange(token: &str, params: &[(&str, &str)]) -> (u16, Value) {
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

async fn post(request: reqwest::RequestBuilder) -> (u16, Value) {
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

fn named(ns: &str, name: &str) -> String {
    format!("agentauth://{ns}/{name}")
}

/// The error code, asserting the status that goes with it.
fn refused(answer: &(u16, Value), status: u16) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert!(answer.1.get("access_token").is_none(), "{}", answer.1);
    answer.1["error"].as_str().unwrap_or_default().to_owned()
}

/// Whether Dex accepts `access_token` (the provider API an agent would call).
async fn dex_accepts(access_token: &str) -> bool {
    reqwest::Client::new()
        .get(stack().dex.userinfo_url())
        .bearer_auth(access_token)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// A ServiceAccount token signed with the cluster's own key, `exp` seconds from now: what the
/// TokenRequest API would issue, except for a lifetime it never issues (already expired).
fn forged(ns: &str, sa: &str, uid: &str, exp: i64) -> String {
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
    let metrics = reqwest::get(format!("{}/metrics", s.operator.admin_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
async fn malformed_exchanges_are_refused_with_a_clear_error() {
    let env = setup("broker-malformed").await;
    let s = stack();
    let (client, ns, _, _) = env.parts();
    service_account(client, ns, "agent", &["use"], None).await;
    let agent = token(client, ns, "agent", Some(AUDIENCE)).await;
    let url = format!("{}/token", s.operator.broker_url);
    let http = reqwest::Client::new();
    let res = named(ns, "x");

    let no_grant = post(
        http.post(&url)
            .form(&[("subject_token", agent.as_str()), ("resource", &res)]),
    )
    .await;
    assert_eq!(refused(&no_grant, 400), "invalid_request");
    assert!(
        no_grant.1["error_description"]
            .as_str()
            .unwrap()
            .contains("grant_type")
    );
    let wrong_grant = post(http.post(&url).form(&[("grant_type", "client_credentials")])).await;
    assert_eq!(refused(&wrong_grant, 400), "unsupported_grant_type");
    let twice = exchange(&agent, &[("resource", &res), ("resource", &named(ns, "y"))]).await;
    assert_eq!(refused(&twice, 400), "invalid_request");
    let bad_resource = exchange(&agent, &[("resource", "https://evil.example/x")]).await;
    assert_eq!(refused(&bad_resource, 400), "invalid_request");
    let json_body = post(http.post(&url).json(&json!({"grant_type": EXCHANGE}))).await;
    assert_eq!(refused(&json_body, 415), "invalid_request");
    let huge = "a".repeat(64 * 1024);
    let oversized = post(
        http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type={EXCHANGE}&subject_token={huge}")),
    )
    .await;
    assert_eq!(refused(&oversized, 413), "invalid_request");
    let garbage = post(
        http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![0xff, 0xfe, b'%', b'=', 0x00, b'&', b'&']),
    )
    .await;
    assert_eq!(refused(&garbage, 400), "invalid_request");
    // The token is never echoed in an answer.
    let echoed = exchange(&agent, &[("resource", "agentauth://UPPER/x")]).await;
    assert!(!echoed.1.to_string().contains(&agent));
    let elsewhere = post(http.get(format!("{}/connect/x", s.operator.broker_url))).await;
    assert_eq!(elsewhere.0, 400, "the broker serves no gateway route");
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

/// Anything that reaches the broker port can open connections: headers that never finish, a body
/// that never arrives and a connection that stays idle are all cut off within seconds, so that no
/// one holds the process's connections (and file descriptors, shared with the controllers).
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = stack()
        .operator
        .broker_url
        .trim_start_matches("http://")
        .to_owned();
    let open = |first: &'static [u8]| {
        let addr = addr.clone();
        async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(first).await.unwrap();
            c
        }
    };
    let clients = [
        ("headers", open(b"POST /token HTTP/1.1\r\nHost: broker\r\n").await),
        (
            "body",
            open(
                b"POST /token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
            )
            .await,
        ),
        ("idle", open(b"").await),
    ];
    let cut = clients.into_iter().map(|(what, mut c)| async move {
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut answer)).await;
        assert!(
            closed.is_ok(),
            "a slow client ({what}) still holds its connection after 15 s"
        );
        (what, String::from_utf8_lossy(&answer).into_owned())
    });
    for (what, answer) in futures::future::join_all(cut).await {
        if what == "body" {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("invalid_request"), "{answer}");
        }
    }
}

/// The reviews' caches do not outlive what they cache by more than their TTL: a deleted
/// RoleBinding, a deleted and re-created ServiceAccount of the same name, and an account deleted
/// and re-created under the same name (a new UID, no credential yet) all stop the old answer.
#[tokio::test]
async fn revoked_grants_and_recreated_objects_stop_the_old_answer() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let env = setup("broker-revoke").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    dex_connection(client, ns, "mail", &s.dex, &["openid", "email", "offline_access"]).await;
    patch_connection(client, ns, "mail", json!({"spec": {"delivery": "Broker"}})).await;
    authorized(client, ns, "erin", "mail", &s.dex.user(3)).await;
    service_account(client, ns, "agent", &["use"], None).await;
    let erin = named(ns, "erin");
    let agent = token(client, ns, "agent", Some(AUDIENCE)).await;
    let first = exchange(&agent, &[("resource", &erin)]).await;
    assert_eq!(first.0, 200, "{}", first.1);
    let old_access = first.1["access_token"].as_str().unwrap().to_owned();
    common::hygiene::remember(&old_access);
    // The cache TTL is 10 s; a second of slack for the API server's own RBAC cache.
    let within = Duration::from_secs(12);

    // The RoleBinding goes: refused within the TTL.
    let bindings: kube::Api<RoleBinding> = kube::Api::namespaced(client.clone(), ns);
    let started = std::time::Instant::now();
    bindings.delete("agent", &Default::default()).await.unwrap();
    eventually(within, "refused once the RoleBinding is gone", || async {
        (exchange(&agent, &[("resource", &erin)]).await.0 == 403).then_some(())
    })
    .await;
    assert!(started.elapsed() <= within);

    // The ServiceAccount is deleted and re-created under the same name, with its grant back: the
    // old ServiceAccount's token stops within the TTL; the new one's works.
    let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
    sas.delete("agent", &Default::default()).await.unwrap();
    common::fixtures::wait_gone(&sas, "agent").await;
    kube::Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(client.clone(), ns)
        .delete("agent", &Default::default())
        .await
        .unwrap();
    service_account(client, ns, "agent", &["use"], None).await;
    let started = std::time::Instant::now();
    eventually(within, "the deleted ServiceAccount's token refused", || async {
        (exchange(&agent, &[("resource", &erin)]).await.0 == 401).then_some(())
    })
    .await;
    assert!(started.elapsed() <= within);
    let renewed = token(client, ns, "agent", Some(AUDIENCE)).await;
    eventually(within, "the new ServiceAccount's grant", || async {
        (exchange(&renewed, &[("resource", &erin)]).await.0 == 200).then_some(())
    })
    .await;

    // The account is deleted and re-created under the same name: the new one (a new UID, never
    // authorized) never hands out the old one's token.
    accounts.delete("erin", &Default::default()).await.unwrap();
    common::fixtures::wait_gone(accounts, "erin").await;
    account(client, ns, "erin", "mail", json!({})).await;
    wait_account(accounts, "erin", "link", |a| link(a).is_some()).await;
    let pending = eventually(REACT, "the re-created account is PENDING_AUTH", || async {
        let a = exchange(&renewed, &[("resource", &erin)]).await;
        assert!(
            a.1["access_token"].as_str() != Some(old_access.as_str()),
            "the re-created account handed out the deleted one's token"
        );
        (a.0 == 409).then_some(a)
    })
    .await;
    assert_eq!(pending.1["state"], "PENDING_AUTH");
}

/// A ClusterConnection serves only the namespaces its selector picks, through the broker too:
/// an account in a namespace it does not admit is refused (ERROR), and one whose namespace stops
/// being admitted stops being served, whatever RBAC its callers have.
#[tokio::test]
async fn a_cluster_connection_is_brokered_only_to_the_namespaces_it_admits() {
    use agent_auth_operator::api::ClusterConnection;
    use common::operator::{OPERATOR_NS, PLATFORM_CONNECTION};
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::{ObjectMeta, PostParams};
    let allowed = setup("broker-cc-in").await;
    let other = setup("broker-cc-out").await;
    let s = stack();
    let client = &allowed.client;
    let label = |v: Option<&str>| json!({"metadata": {"labels": {"agentauth.dev/broker-dex": v}}});
    let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
    let pp = PatchParams::default();
    namespaces
        .patch(&allowed.ns, &pp, &Patch::Merge(label(Some("true"))))
        .await
        .unwrap();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("broker-dex-oauth".into()),
            labels: Some(agent_auth_operator::store::secret_ref::opt_in_labels()),
            ..Default::default()
        },
        string_data: Some([("client-secret".to_owned(), s.dex.client_secret.clone())].into()),
        ..Default::default()
    };
    kube::Api::<Secret>::namespaced(client.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let cc: ClusterConnection = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ClusterConnection",
        "metadata": {"name": PLATFORM_CONNECTION},
        "spec": {"authType": "OAuth2", "delivery": "Broker",
            "oauth2": {"clientId": s.dex.next_client_id(), "clientSecretRef": {"name": "broker-dex-oauth", "key": "client-secret"},
                "authorizationUrl": s.dex.authorization_url(), "tokenUrl": s.dex.token_url(),
                "scopes": ["openid", "email", "offline_access"]},
            "namespaceSelector": {"matchLabels": {"agentauth.dev/broker-dex": "true"}}}}))
    .unwrap();
    let ccs: kube::Api<ClusterConnection> = kube::Api::all(client.clone());
    ccs.create(&PostParams::default(), &cc).await.unwrap();
    let cluster_ref = json!({"connectionRef": {"kind": "ClusterConnection", "name": PLATFORM_CONNECTION}});
    account(
        client,
        &allowed.ns,
        "frank",
        PLATFORM_CONNECTION,
        cluster_ref.clone(),
    )
    .await;
    let pending = wait_account(&allowed.accounts, "frank", "link", |a| link(a).is_some()).await;
    common::fixtures::sign_in(&link(&pending).unwrap(), &s.dex.user(4)).await;
    let active = wait_state(&allowed.accounts, "frank", AccountState::Active).await;
    common::fixtures::remember_credentials(client, &allowed.ns, &active).await;
    service_account(client, &allowed.ns, "agent", &["use"], None).await;
    let agent = token(client, &allowed.ns, "agent", Some(AUDIENCE)).await;
    let frank = named(&allowed.ns, "frank");
    let served = exchange(&agent, &[("resource", &frank)]).await;
    assert_eq!(served.0, 200, "{}", served.1);
    common::hygiene::remember(served.1["access_token"].as_str().unwrap());

    // A namespace the selector does not pick: ERROR, and the broker says so.
    account(client, &other.ns, "gina", PLATFORM_CONNECTION, cluster_ref).await;
    wait_state(&other.accounts, "gina", AccountState::Error).await;
    service_account(client, &other.ns, "agent", &["use"], None).await;
    let outsider = token(client, &other.ns, "agent", Some(AUDIENCE)).await;
    let gina = exchange(&outsider, &[("resource", &named(&other.ns, "gina"))]).await;
    assert_eq!(
        (refused(&gina, 409).as_str(), gina.1["state"].as_str()),
        ("account_not_active", Some("ERROR"))
    );

    // The namespace stops being picked: its account is no longer served.
    namespaces
        .patch(&allowed.ns, &pp, &Patch::Merge(label(None)))
        .await
        .unwrap();
    let stopped = eventually(
        REACT,
        "frank refused once its namespace is not admitted",
        || async {
            let a = exchange(&agent, &[("resource", &frank)]).await;
            (a.0 != 200).then_some(a)
        },
    )
    .await;
    assert_eq!(
        (refused(&stopped, 409).as_str(), stopped.1["state"].as_str()),
        ("account_not_active", Some("ERROR"))
    );
    ccs.delete(PLATFORM_CONNECTION, &Default::default())
        .await
        .unwrap();
}
