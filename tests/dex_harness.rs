//! Proves the Dex harness (`agentauth_testcluster::dex`) on its own, without the operator: a scripted user
//! completes Dex's authorization code flow, the code is exchanged for tokens, the access token works
//! at userinfo, the refresh token refreshes (and rotates), and a revocation through Dex's gRPC API
//! makes the next refresh fail with an OAuth error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::{Duration, Instant};

use agentauth_testcluster::recorder::{Answer, Recorder, Reply};
use common::dex::{self, Dex, DexOptions, DexUser};
use reqwest::{StatusCode, Url};
use serde_json::Value;

/// The authorization request a client would redirect the user to.
fn authorization_request(dex: &Dex, state: &str) -> String {
    let mut url = Url::parse(dex.authorization_url()).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &dex.client_id)
        .append_pair("redirect_uri", &dex.redirect_uri)
        .append_pair("scope", "openid email offline_access")
        .append_pair("state", state);
    url.into()
}

fn query(url: &Url, key: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A loopback "client" that answers every request with 200.
async fn callback_server() -> Recorder {
    let reply = Reply::text(200, "callback ok").header("connection", "close");
    Recorder::loopback(Answer::canned(reply)).await.unwrap()
}

/// POSTs a token request with client_secret_basic; returns status and JSON body.
async fn token_request(dex: &Dex, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(dex.token_url())
        .basic_auth(&dex.client_id, Some(&dex.client_secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.json::<Value>().await.unwrap();
    (status, body)
}

fn field(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("token response has no {key}"))
        .to_owned()
}

async fn exchange_code(dex: &Dex, code: &str) -> Value {
    let (status, body) = token_request(
        dex,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &dex.redirect_uri),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "code exchange: {}", body["error"]);
    body
}

async fn userinfo(dex: &Dex, access_token: &str) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .get(dex.userinfo_url())
        .bearer_auth(access_token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_fresh_tokens(dex: &Dex, body: &Value) {
    assert_eq!(
        body["token_type"].as_str().map(str::to_lowercase).as_deref(),
        Some("bearer")
    );
    assert!(!field(body, "access_token").is_empty());
    assert!(!field(body, "refresh_token").is_empty());
    let expires_in = body["expires_in"].as_u64().expect("expires_in");
    let ttl = dex.id_token_ttl.as_secs();
    assert!(
        (ttl.saturating_sub(5)..=ttl).contains(&expires_in),
        "expires_in {expires_in} is not about the configured {ttl}s"
    );
}

#[tokio::test]
async fn user_logs_in_refreshes_and_is_revoked() {
    let callback = callback_server().await;
    let redirect_uri = format!("{}/callback", callback.url());
    let started = Instant::now();
    let dex = Dex::start_with(
        &redirect_uri,
        DexOptions {
            id_token_ttl: "1m30s",
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!("Dex ready in {:?}", started.elapsed());
    assert_eq!(dex.id_token_ttl, Duration::from_secs(90));
    let user: DexUser = dex.user(3);
    assert_eq!(user.email, "user3@example.com");

    // The user's part: open the link, log in at Dex, land on the client's redirect URI.
    let browser = dex::browser();
    let landed = dex::login(&browser, &authorization_request(&dex, "state-3"), &user)
        .await
        .unwrap();
    assert_eq!(landed.status(), StatusCode::OK);
    assert!(
        landed.url().as_str().starts_with(&redirect_uri),
        "landed elsewhere"
    );
    assert_eq!(query(landed.url(), "state").as_deref(), Some("state-3"));
    let code = query(landed.url(), "code").expect("code on the callback");
    assert_eq!(landed.text().await.unwrap(), "callback ok");

    // The client's part: code for tokens.
    let tokens = exchange_code(&dex, &code).await;
    assert_fresh_tokens(&dex, &tokens);

    let (status, info) = userinfo(&dex, &field(&tokens, "access_token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["email"], user.email.as_str());
    assert_eq!(info["sub"], user.sub.as_str(), "the harness computes Dex's sub");

    // The code is single-use.
    let (status, body) = token_request(
        &dex,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &dex.redirect_uri),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "second use of a code: {body}");

    // Refresh: a new access token, and (rotation on) a new refresh token.
    let first_refresh = field(&tokens, "refresh_token");
    let (status, refreshed) = token_request(
        &dex,
        &[("grant_type", "refresh_token"), ("refresh_token", &first_refresh)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "refresh: {}", refreshed["error"]);
    assert_fresh_tokens(&dex, &refreshed);
    assert!(
        field(&refreshed, "access_token") != field(&tokens, "access_token"),
        "refresh returned the same access token"
    );
    let second_refresh = field(&refreshed, "refresh_token");
    assert!(second_refresh != first_refresh, "refresh token was not rotated");
    let (status, _) = userinfo(&dex, &field(&refreshed, "access_token")).await;
    assert_eq!(status, StatusCode::OK);

    // An administrator revokes the grant at the provider.
    dex.revoke_refresh_tokens(&user).unwrap();
    let (status, body) = token_request(
        &dex,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &second_refresh),
        ],
    )
    .await;
    eprintln!("refresh after revocation: {status} {body}");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error = body["error"].as_str().expect("OAuth error code");
    assert!(
        ["invalid_request", "invalid_grant"].contains(&error),
        "unexpected error {error}"
    );

    // Nothing is left to revoke.
    let again = dex.revoke_refresh_tokens(&user).unwrap_err();
    assert!(again.contains("no refresh token"), "{again}");

    // Another user of the same Dex is unaffected and can log in afterwards.
    let other = dex.user(4);
    let landed = dex::login(&dex::browser(), &authorization_request(&dex, "state-4"), &other)
        .await
        .unwrap();
    let tokens = exchange_code(&dex, &query(landed.url(), "code").unwrap()).await;
    let (status, info) = userinfo(&dex, &field(&tokens, "access_token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["email"], other.email.as_str());
}

#[tokio::test]
async fn authorize_until_stops_at_the_redirect_uri_and_bad_passwords_fail() {
    // Nothing listens here: the flow must stop before it.
    let port = agentauth_testcluster::free_port().unwrap();
    let redirect_uri = format!("http://127.0.0.1:{port}/cb");
    let dex = Dex::start(&redirect_uri).unwrap();
    assert_eq!(dex.id_token_ttl, Duration::from_secs(60));

    let user = dex.user(5);
    let http = dex::browser_until(&redirect_uri);
    let url = dex::authorize_until(&http, &authorization_request(&dex, "s5"), &user, &redirect_uri)
        .await
        .unwrap();
    assert!(url.as_str().starts_with(&redirect_uri));
    assert_eq!(query(&url, "state").as_deref(), Some("s5"));
    let tokens = exchange_code(&dex, &query(&url, "code").expect("code")).await;
    assert_fresh_tokens(&dex, &tokens);

    let mut wrong = dex.user(6);
    wrong.password = "not-the-password".into();
    let err = dex::login(&dex::browser(), &authorization_request(&dex, "s6"), &wrong)
        .await
        .unwrap_err();
    assert!(err.contains("user6@example.com"), "{err}");
    let err = dex::authorize_until(
        &dex::browser_until(&redirect_uri),
        &authorization_request(&dex, "s6"),
        &wrong,
        &redirect_uri,
    )
    .await
    .unwrap_err();
    assert!(err.contains("did not end in a redirect"), "{err}");

    // A link that does not lead to Dex's login form is reported as such.
    let err = dex::login(
        &dex::browser(),
        &format!("{}/.well-known/openid-configuration", dex.issuer),
        &user,
    )
    .await
    .unwrap_err();
    assert!(err.contains("not to Dex's login form"), "{err}");

    // A user without a refresh token at Dex cannot be revoked.
    assert!(dex.revoke_refresh_tokens(&dex.user(9)).is_err());
}
