//! Refresh exactly once against a strict rotating provider (RFC 9700 §4.14): every refresh rotates
//! the refresh token and presenting a consumed one revokes the grant. Here: the provider itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use common::rotating::{RotatingOptions, RotatingProvider};

const REDIRECT: &str = "http://127.0.0.1:9/callback?from=test";
const VERIFIER: &str = "a-pkce-code-verifier-of-at-least-forty-three-characters";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Authorizes with PKCE and returns the code, checking the redirect.
async fn authorize(http: &reqwest::Client, p: &RotatingProvider, scope: &str) -> String {
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()));
    let query = [
        ("response_type", "code"),
        ("client_id", "rot-client"),
        ("redirect_uri", REDIRECT),
        ("state", "st-1"),
        ("scope", scope),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
    ];
    let r = http.get(p.authorize_url()).query(&query).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()["location"].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    assert!(
        location.starts_with("http://127.0.0.1:9/callback?from=test&"),
        "{location}"
    );
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    assert_eq!(param("state").as_deref(), Some("st-1"));
    param("code").unwrap()
}

/// Posts `form` to the token endpoint with client_secret_basic.
async fn token(http: &reqwest::Client, p: &RotatingProvider, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = http
        .post(p.token_url())
        .basic_auth("rot-client", Some("rot-secret"))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn exchange(http: &reqwest::Client, p: &RotatingProvider, code: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
    ];
    token(http, p, &form).await
}

/// A refresh with client_secret_post.
async fn refresh(http: &reqwest::Client, url: &str, rt: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("client_id", "rot-client"),
        ("client_secret", "rot-secret"),
    ];
    let r = http.post(url).form(&form).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

/// A fresh grant's `(access_token, refresh_token)`.
async fn grant(http: &reqwest::Client, p: &RotatingProvider) -> (String, String) {
    let code = authorize(http, p, "openid").await;
    let (status, body) = exchange(http, p, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (s(&body, "access_token"), s(&body, "refresh_token"))
}

fn s(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {body}"))
        .to_owned()
}

async fn userinfo(http: &reqwest::Client, p: &RotatingProvider, at: &str) -> StatusCode {
    let r = http.get(p.userinfo_url()).bearer_auth(at).send().await.unwrap();
    r.status()
}

#[tokio::test]
async fn the_provider_rotates_and_revokes_a_grant_on_reuse() {
    let http = client();

    // Strict: authorize, exchange with PKCE, rotate, reuse revokes the grant.
    let p = RotatingProvider::start(RotatingOptions {
        drop_scopes: vec!["offline_access".into()],
        ..Default::default()
    })
    .await;
    let wrong_client = [
        ("response_type", "code"),
        ("client_id", "nope"),
        ("redirect_uri", REDIRECT),
    ];
    let r = http
        .get(p.authorize_url())
        .query(&wrong_client)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let code = authorize(&http, &p, "openid offline_access email").await;
    let bad_verifier = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        (
            "code_verifier",
            "not-the-verifier-not-the-verifier-not-the-verifier",
        ),
    ];
    let r = http
        .post(p.token_url())
        .basic_auth("rot-client", Some("wrong"))
        .form(&bad_verifier)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_client");
    let (status, body) = exchange(&http, &p, &code).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 60);
    assert_eq!(body["scope"], "openid email", "offline_access is dropped");
    let (at1, rt1) = (s(&body, "access_token"), s(&body, "refresh_token"));
    assert!(at1.starts_with("rat_") && at1.len() >= 28, "{at1}");
    assert!(rt1.starts_with("rrt_") && rt1.len() >= 28, "{rt1}");
    let (status, body) = exchange(&http, &p, &code).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into())
    );
    let code = authorize(&http, &p, "openid").await;
    let bad_verifier = [
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        (
            "code_verifier",
            "not-the-verifier-not-the-verifier-not-the-verifier",
        ),
    ];
    let (status, body) = token(&http, &p, &bad_verifier).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into()),
        "PKCE"
    );
    assert_eq!(p.codes_issued(), 2);
    assert_eq!(userinfo(&http, &p, &at1).await, StatusCode::OK);

    let (status, body) = refresh(&http, &p.token_url(), &rt1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scope"], "openid email");
    let (at2, rt2) = (s(&body, "access_token"), s(&body, "refresh_token"));
    assert_ne!(rt2, rt1);
    assert!(p.access_token_valid(&at1) && p.access_token_valid(&at2));
    assert_eq!(p.rotations(), 1);
    let (status, body) = refresh(&http, &p.token_url(), &rt1).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into())
    );
    assert_eq!(userinfo(&http, &p, &at1).await, StatusCode::UNAUTHORIZED);
    assert_eq!(userinfo(&http, &p, &at2).await, StatusCode::UNAUTHORIZED);
    assert!(!p.access_token_valid(&at2));
    let (status, _) = refresh(&http, &p.token_url(), &rt2).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the grant's newest refresh token is revoked too"
    );
    assert_eq!((p.reuse_count(), p.grants_revoked(), p.rotations()), (1, 1, 1));
    assert_eq!(p.refresh_tokens_received(), [rt1.clone(), rt1, rt2]);

    // Hold: the rotation happens at once, the answer waits for release.
    let (_, rt) = grant(&http, &p).await;
    assert!(!p.wait_held(Duration::from_millis(20)).await);
    p.hold_rotations();
    let url = p.token_url();
    let held = tokio::spawn({
        let (http, url, rt) = (http.clone(), url.clone(), rt.clone());
        async move { refresh(&http, &url, &rt).await }
    });
    assert!(p.wait_held(Duration::from_secs(2)).await);
    assert_eq!(p.rotations(), 2, "rotated before answering");
    let next = p.current_refresh_token(&rt).unwrap();
    assert_ne!(next, rt);
    // A client that hangs up while held loses nothing but its answer.
    let gone = tokio::spawn({
        let (http, url, next) = (http.clone(), url.clone(), next.clone());
        async move { refresh(&http, &url, &next).await }
    });
    tokio::time::timeout(Duration::from_secs(2), async {
        while p.rotations() < 3 || p.held() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await; // poll interval
        }
    })
    .await
    .unwrap();
    gone.abort();
    p.release();
    let (status, body) = held.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(s(&body, "refresh_token"), next);
    let latest = p.current_refresh_token(&rt).unwrap();
    let (status, body) = refresh(&http, &url, &latest).await;
    assert_eq!(status, StatusCode::OK, "not held after release: {body}");

    // Stall: rotated at once, answered after the stall.
    p.set_stall(Duration::from_secs(1));
    let started = Instant::now();
    let (status, _) = refresh(&http, &url, &s(&body, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_secs(1));
    p.set_stall(Duration::ZERO);
    assert_eq!((p.reuse_count(), p.rotations()), (1, 5));

    // Grace: one replay of a consumed token is accepted, a second revokes the grant.
    let g = RotatingProvider::start(RotatingOptions {
        grace: Some(Duration::from_secs(10)),
        ..Default::default()
    })
    .await;
    let (_, rt1) = grant(&http, &g).await;
    let (status, _) = refresh(&http, &g.token_url(), &rt1).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = refresh(&http, &g.token_url(), &rt1).await;
    assert_eq!(status, StatusCode::OK, "replay in the grace window: {body}");
    let at3 = s(&body, "access_token");
    assert_eq!(
        (g.replays_accepted(), g.reuse_count(), g.grants_revoked()),
        (1, 0, 0)
    );
    assert_eq!(userinfo(&http, &g, &at3).await, StatusCode::OK);
    let (status, body) = refresh(&http, &g.token_url(), &rt1).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::BAD_REQUEST, &"invalid_grant".into())
    );
    assert_eq!(
        (g.replays_accepted(), g.reuse_count(), g.grants_revoked()),
        (1, 1, 1)
    );
    assert!(!g.access_token_valid(&at3));

    // RFC 7009 revocation by access token revokes the grant.
    let (at, rt) = grant(&http, &g).await;
    let r = http
        .post(g.revocation_url())
        .form(&[("token", &at)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(userinfo(&http, &g, &at).await, StatusCode::UNAUTHORIZED);
    let (status, _) = refresh(&http, &g.token_url(), &rt).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!((g.grants_revoked(), g.reuse_count(), g.grants()), (2, 1, 2));
}

// ---- The operator against the provider (real control plane, operator binary) ----

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use common::fixtures::{link, ready, state};
use common::rotating_account::{agent_token, assert_no_replay, authorized, connection, options, start};
use common::{eventually, setup};
use kube::api::Api;
use serde_json::json;

fn refreshed_at(a: &ConnectedAccount) -> Option<jiff::Timestamp> {
    Some(a.status.as_ref()?.last_refreshed_at.as_ref()?.0)
}

fn expires_at(a: &ConnectedAccount) -> Option<jiff::Timestamp> {
    Some(a.status.as_ref()?.expires_at.as_ref()?.0)
}

/// Polls the account every 100 ms until `done`, remembering every Ready reason seen on the way.
async fn watch_until(
    accounts: &Api<ConnectedAccount>,
    name: &str,
    limit: Duration,
    what: &str,
    done: impl Fn(&ConnectedAccount) -> bool,
) -> (ConnectedAccount, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<String> = Vec::new();
    loop {
        if let Ok(a) = accounts.get(name).await {
            if let Some((_, reason)) = ready(&a)
                && seen.last() != Some(&reason)
            {
                seen.push(reason);
            }
            if done(&a) {
                return (a, seen);
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // poll interval, not synchronisation
    }
}

/// An ACTIVE account `name` at a fresh provider issuing `ttl_s` tokens, renewed `before` expiry,
/// whose refresh answers from now on take `stall_s` (rotated at once, answered late).
async fn stalled(
    prefix: &str,
    ttl_s: u64,
    before: &str,
    name: &str,
    stall_s: u64,
) -> (common::TestEnv, RotatingProvider, ConnectedAccount) {
    let env = setup(prefix).await;
    common::operator::stack();
    let opts = options(&env.ns, Duration::from_secs(ttl_s));
    let (p, first) = start(&env, opts, json!({"before": before}), name).await;
    p.set_stall(Duration::from_secs(stall_s));
    (env, p, first)
}

#[tokio::test]
async fn a_20s_stall_is_waited_out_without_a_replay() {
    let (env, p, first) = stalled("rot-stall20", 60, "30s", "ann", 20).await;
    let t0 = refreshed_at(&first).unwrap();
    let (after, seen) = watch_until(
        &env.accounts,
        "ann",
        Duration::from_secs(90),
        "the stalled refresh",
        |a| refreshed_at(a).is_some_and(|t| t > t0),
    )
    .await;
    assert_eq!(state(&after), Some(AccountState::Active));
    assert!(
        !seen.iter().any(|r| r != "Active"),
        "Ready reasons during the stall: {seen:?}"
    );
    assert_eq!(assert_no_replay(&p), 1, "one refresh token sent, once");
    assert!(p.access_token_valid(&agent_token(&env.client, &env.ns, "ann").await));
}

#[tokio::test]
async fn a_70s_stall_past_the_timeout_is_still_read_and_persisted() {
    let (env, p, first) = stalled("rot-stall70", 180, "90s", "bo", 70).await;
    let t0 = refreshed_at(&first).unwrap();
    // Past the 60 s timeout the outcome is unknown: a link at once, the token still works.
    let (unknown, _) = watch_until(
        &env.accounts,
        "bo",
        Duration::from_secs(170),
        "RefreshOutcomeUnknown",
        |a| ready(a).is_some_and(|r| r.1 == "RefreshOutcomeUnknown"),
    )
    .await;
    assert_eq!(state(&unknown), Some(AccountState::Active));
    assert!(
        link(&unknown).is_some(),
        "a fresh link while the outcome is unknown"
    );
    // The late answer is persisted when it comes.
    let (after, _) = watch_until(
        &env.accounts,
        "bo",
        Duration::from_secs(40),
        "the late answer",
        |a| refreshed_at(a).is_some_and(|t| t > t0),
    )
    .await;
    assert_eq!(state(&after), Some(AccountState::Active));
    assert_eq!(ready(&after).unwrap().0, "True", "{:?}", ready(&after));
    assert!(link(&after).is_none(), "the link issued meanwhile is withdrawn");
    assert_eq!(assert_no_replay(&p), 1);
    assert!(p.access_token_valid(&agent_token(&env.client, &env.ns, "bo").await));
}

#[tokio::test]
async fn the_state_turns_at_expiry_while_the_provider_stalls() {
    let (env, p, first) = stalled("rot-expiry", 30, "15s", "cy", 70).await;
    let expiry = expires_at(&first).unwrap();
    let (expired, _) = watch_until(&env.accounts, "cy", Duration::from_secs(60), "EXPIRED", |a| {
        state(a) == Some(AccountState::Expired)
    })
    .await;
    let late = jiff::Timestamp::now().duration_since(expiry);
    assert!(
        late < jiff::SignedDuration::from_millis(1500),
        "EXPIRED {late:?} after expiresAt (poll interval 100 ms)"
    );
    assert_eq!(ready(&expired).unwrap().1, "TokenExpired");
    // The next refresh is answered at once (the held-up answer brings a token that has already
    // expired: its lifetime counts from when the refresh was sent).
    p.set_stall(Duration::ZERO);
    // The stalled answer still arrives and is kept: ACTIVE again, nothing replayed.
    let (back, _) = watch_until(
        &env.accounts,
        "cy",
        Duration::from_secs(90),
        "ACTIVE again",
        |a| state(a) == Some(AccountState::Active),
    )
    .await;
    assert!(refreshed_at(&back) > refreshed_at(&first));
    assert!(assert_no_replay(&p) >= 1);
    eprintln!("rotation: EXPIRED {late:?} after expiresAt while the provider stalled");
}

#[tokio::test]
async fn scopes_the_provider_narrows_ask_for_no_second_authorization() {
    let env = setup("rot-scopes").await;
    common::operator::stack();
    let opts = RotatingOptions {
        drop_scopes: vec!["offline_access".into()],
        ..options(&env.ns, Duration::from_secs(600))
    };
    let p = RotatingProvider::start(opts.clone()).await;
    let scopes = ["openid", "offline_access", "read"];
    connection(&env.client, &env.ns, "rot", &p, &opts, &scopes, json!({})).await;
    authorized(&env.client, &env.ns, "di", "rot").await;
    // Give a re-authorization loop the chance to show: the status after the publish settles.
    let a = eventually(Duration::from_secs(30), "status settled", || async {
        let a = env.accounts.get("di").await.ok()?;
        (a.status.as_ref()?.observed_generation == a.metadata.generation && ready(&a).is_some()).then_some(a)
    })
    .await;
    assert_eq!(ready(&a).unwrap().1, "Active", "{:?}", ready(&a));
    assert!(link(&a).is_none(), "no second link");
    let granted = a.status.as_ref().unwrap().granted_scopes.clone();
    assert_eq!(
        granted,
        vec!["openid".to_owned(), "read".to_owned()],
        "what was granted is shown"
    );
    // A Connection that really asks for more gets both.
    let patch = json!({"spec": {"oauth2": {"scopes": ["openid", "offline_access", "read", "write"]}}});
    common::fixtures::patch_connection(&env.client, &env.ns, "rot", patch).await;
    let changed = eventually(Duration::from_secs(30), "ScopesChanged", || async {
        let a = env.accounts.get("di").await.ok()?;
        ready(&a).is_some_and(|r| r.1 == "ScopesChanged").then_some(a)
    })
    .await;
    assert!(link(&changed).is_some());
    assert!(
        ready_message(&changed).contains("write"),
        "{}",
        ready_message(&changed)
    );
}

use common::fixtures::ready_message;

/// The cost of the intent: the operator's copy is written twice per refresh (intent, outcome).
#[tokio::test]
async fn every_refresh_writes_the_operator_copy_twice() {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let env = setup("rot-writes").await;
    common::operator::stack();
    let (p, a) = start(&env, options(&env.ns, Duration::from_secs(20)), json!({}), "ed").await;
    let copy = format!("agentauth-{}", a.metadata.uid.clone().unwrap());
    let versions = |api: Api<k8s_openapi::api::core::v1::Secret>, name: String| {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let mut stream = watcher::watcher(api, cfg).boxed();
            while let Some(Ok(ev)) = stream.next().await {
                // The object as listed first, then every write.
                if let watcher::Event::InitApply(o) | watcher::Event::Apply(o) = ev {
                    s.lock()
                        .unwrap()
                        .insert(o.metadata.resource_version.unwrap_or_default());
                }
            }
        });
        (seen, task)
    };
    let ops: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), common::operator::OPERATOR_NS);
    let (record_writes, t1) = versions(ops, copy);
    let (secret_writes, t2) = versions(env.secrets.clone(), "ed-credentials".into());
    eventually(Duration::from_secs(10), "watches started", || async {
        (!record_writes.lock().unwrap().is_empty() && !secret_writes.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let start = p.rotations();
    let before = refreshed_at(&env.accounts.get("ed").await.unwrap());
    // Two refreshes, then until both are published.
    let (done, _) = watch_until(
        &env.accounts,
        "ed",
        Duration::from_secs(60),
        "two refreshes",
        |a| p.rotations() >= start + 2 && refreshed_at(a) > before,
    )
    .await;
    let published = refreshed_at(&done);
    eventually(
        Duration::from_secs(30),
        "the second refresh published",
        || async {
            let a = env.accounts.get("ed").await.ok()?;
            (p.rotations() == start + 2
                && refreshed_at(&a) >= published
                && secret_writes.lock().unwrap().len() >= 3)
                .then_some(())
        },
    )
    .await;
    let refreshes = p.rotations() - start;
    let records = record_writes.lock().unwrap().len() - 1;
    let secrets = secret_writes.lock().unwrap().len() - 1;
    t1.abort();
    t2.abort();
    eprintln!(
        "rotation: {refreshes} refreshes wrote the operator copy {records} times and the agent Secret {secrets} times"
    );
    assert_eq!(records, 2 * refreshes, "intent + outcome per refresh");
    assert_eq!(secrets, refreshes, "one agent Secret update per refresh");
    assert_no_replay(&p);
}
