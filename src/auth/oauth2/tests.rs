use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::api::{AuthType, OAuth2Settings};
use crate::auth::settings::Settings;
use crate::egress::EgressClient;
use crate::store::TokenSet;

fn spec() -> OAuth2Settings {
    serde_json::from_value(serde_json::json!({"clientId": "c", "scopes": ["openid", "email"]})).unwrap()
}

#[test]
fn a_configuration_problem_never_reads_as_a_provider_refusal() {
    // Nothing reached the provider: the message is ours alone (issue #14, defect 3).
    let e = TokenEndpointError::Misconfigured("Secret cc-secret has no key \"key\"".into());
    assert_eq!(e.to_string(), "Secret cc-secret has no key \"key\"");
    assert!(!e.to_string().contains("rejected"));
    assert!(!e.outcome_unknown());
}

#[tokio::test]
async fn revocation_goes_through_the_egress_policy() {
    let mut s = spec();
    s.revocation_url = Some("http://provider.example.test/revoke".into());
    let settings = Settings::resolve(AuthType::OAuth2, Some("google"), &s).unwrap();
    let c = OAuthClient::new(settings, None, "https://gw.test/oauth/callback").unwrap();
    let err = c.revoke(&test_http(), &TokenSet::default()).await.unwrap_err();
    assert!(err.contains("https"), "{err}");
    let mut s = spec();
    s.revocation_url = Some("https://169.254.169.254/revoke".into());
    let settings = Settings::resolve(AuthType::OAuth2, Some("google"), &s).unwrap();
    let c = OAuthClient::new(settings, None, "https://gw.test/oauth/callback").unwrap();
    let err = c.revoke(&test_http(), &TokenSet::default()).await.unwrap_err();
    assert!(err.contains("egress policy"), "{err}");
}

/// An egress client that allows the loopback test servers.
fn test_http() -> EgressClient {
    http_client(crate::egress::EgressPolicy::new(vec![
        "127.0.0.1/32".parse().unwrap(),
    ]))
    .unwrap()
}

#[test]
fn authorize_url_carries_state_pkce_scopes_and_extra_params() {
    let settings = Settings::resolve(AuthType::OAuth2, Some("google"), &spec()).unwrap();
    let c = OAuthClient::new(settings, Some("s".into()), "https://gw.test/oauth/callback").unwrap();
    let url = c.authorize_url("the-state", "v".repeat(43).as_str());
    let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["state"], "the-state");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "openid email");
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["redirect_uri"], "https://gw.test/oauth/callback");
    assert!(
        !url.as_str().contains(&"v".repeat(43)),
        "the verifier never leaves"
    );
}

fn bare() -> OAuth2Settings {
    serde_json::from_value(serde_json::json!({"clientId": "c"})).unwrap()
}

#[test]
fn slack_scopes_go_in_user_scope_joined_by_commas() {
    let mut s = bare();
    s.scopes = vec!["chat:write".into(), "channels:read".into()];
    let settings = Settings::resolve(AuthType::OAuth2, Some("slack"), &s).unwrap();
    let c = OAuthClient::new(settings, Some("s".into()), "https://gw.test/oauth/callback").unwrap();
    let q: BTreeMap<String, String> = c
        .authorize_url("st", &"v".repeat(43))
        .query_pairs()
        .into_owned()
        .collect();
    assert_eq!(q["user_scope"], "chat:write,channels:read");
    assert!(!q.contains_key("scope"));
    s.scopes = vec!["a,b".into()];
    assert!(
        Settings::resolve(AuthType::OAuth2, Some("slack"), &s).is_err(),
        "a comma inside a scope"
    );
}

#[test]
fn client_credentials_needs_only_a_token_url() {
    let mut s = bare();
    s.token_url = Some("https://idp.example.test/token".into());
    s.scopes = vec!["api".into()];
    let r = Settings::resolve(AuthType::ClientCredentials, None, &s).unwrap();
    assert_eq!(r.authorization_url, None);
    assert_eq!(r.scopes, ["api"]);
    // No user: the preset's user-flow scopes are not added.
    s.token_url = None;
    s.scopes = vec!["https://graph.microsoft.com/.default".into()];
    let ms = Settings::resolve(AuthType::ClientCredentials, Some("microsoft"), &s).unwrap();
    assert_eq!(ms.scopes, ["https://graph.microsoft.com/.default"]);
    assert!(
        Settings::resolve(AuthType::ClientCredentials, None, &bare())
            .unwrap_err()
            .0
            .contains("tokenUrl")
    );
    assert!(Settings::resolve(AuthType::APIKey, None, &bare()).is_err());
    // Asked for a user flow anyway, the client sends the user back to our own callback.
    let c = OAuthClient::new(r, None, "https://gw.test/oauth/callback").unwrap();
    let url = c.authorize_url("st", "v");
    assert_eq!(
        url.as_str(),
        "https://gw.test/oauth/callback?error=unsupported_response_type&state=st"
    );
}

/// What a fake token endpoint saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    form: BTreeMap<String, String>,
    basic_auth: bool,
}

type Responder = fn(&str, &BTreeMap<String, String>) -> (u16, serde_json::Value);

/// A token endpoint on loopback answering recorded provider bodies.
async fn provider(respond: Responder) -> (String, std::sync::Arc<std::sync::Mutex<Vec<Seen>>>) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: String| {
            let log = log.clone();
            async move {
                let form: BTreeMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
                    .into_owned()
                    .collect();
                let (status, json) = respond(uri.path(), &form);
                log.lock().unwrap().push(Seen {
                    path: uri.path().to_owned(),
                    form,
                    basic_auth: headers.contains_key("authorization"),
                });
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    json.to_string(),
                )
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn client_for(provider: &str, auth_type: AuthType, base: &str, scopes: &[&str]) -> OAuthClient {
    let mut s = bare();
    s.token_url = Some(format!("{base}/token"));
    s.scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
    let settings = Settings::resolve(auth_type, Some(provider), &s).unwrap();
    OAuthClient::new(
        settings,
        Some("client-secret".into()),
        "https://gw.test/oauth/callback",
    )
    .unwrap()
}

#[tokio::test]
async fn slack_exchange_yields_the_user_token_and_its_metadata() {
    let (base, _) = provider(|_, _| {
        (
            200,
            serde_json::json!({
                "ok": true, "app_id": "A0KRD7HC3",
                "authed_user": {"id": "U1234", "scope": "users:read,chat:write", "access_token": "xoxp-user", "token_type": "user"},
                "access_token": "xoxb-bot", "token_type": "bot", "scope": "commands",
                "team": {"id": "T9TK3CUKW", "name": "Slack Softworks"}, "enterprise": null
            }),
        )
    })
    .await;
    let c = client_for("slack", AuthType::OAuth2, &base, &[]);
    let t = c
        .exchange_code(&test_http(), "code", &"v".repeat(43), Timestamp::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(t.access_token, "xoxp-user");
    assert_eq!(t.authorization(), "Bearer xoxp-user");
    assert_eq!(t.scopes, ["users:read", "chat:write"]);
    assert_eq!(t.metadata["team_id"], "T9TK3CUKW");
    assert_eq!(t.metadata["user_id"], "U1234");
    assert!(!serde_json::to_string(&t.metadata).unwrap().contains("xox"));
}

#[tokio::test]
async fn errors_sent_with_200_are_classified_like_real_ones() {
    let (base, _) = provider(|_, form| match form.get("grant_type").map(String::as_str) {
        Some("refresh_token") => (
            200,
            serde_json::json!({"ok": false, "error": "invalid_refresh_token"}),
        ),
        _ => (
            200,
            serde_json::json!({"ok": false, "error": "bad_client_secret"}),
        ),
    })
    .await;
    let c = client_for("slack", AuthType::OAuth2, &base, &[]);
    let http = test_http();
    let current = TokenSet {
        refresh_token: Some("xoxe-1-old".into()),
        ..Default::default()
    };
    let err = c
        .refresh(&http, &current, Timestamp::UNIX_EPOCH, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        TokenEndpointError::Rejected {
            code: "invalid_grant".into(),
            description: Some("invalid_refresh_token".into())
        }
    );
    let err = c
        .exchange_code(&http, "code", &"v".repeat(43), Timestamp::UNIX_EPOCH)
        .await
        .unwrap_err();
    assert!(
        matches!(err, TokenEndpointError::ClientRejected { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn client_credentials_fetches_a_token_with_the_scopes() {
    let (base, seen) = provider(|_, form| {
        if form.get("client_secret").map(String::as_str) == Some("client-secret") {
            (
                200,
                serde_json::json!({"access_token": "m2m", "token_type": "Bearer", "expires_in": 3600}),
            )
        } else {
            (401, serde_json::json!({"error": "invalid_client"}))
        }
    })
    .await;
    let c = client_for(
        "microsoft",
        AuthType::ClientCredentials,
        &base,
        &["https://graph.microsoft.com/.default"],
    );
    let now = Timestamp::UNIX_EPOCH;
    let t = c.client_credentials(&test_http(), now).await.unwrap();
    assert_eq!(t.access_token, "m2m");
    assert_eq!(t.refresh_token, None);
    assert_eq!(t.expires_at, Some(now + jiff::SignedDuration::from_secs(3600)));
    assert_eq!(t.scopes, ["https://graph.microsoft.com/.default"]);
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.form["grant_type"], "client_credentials");
    assert_eq!(req.form["scope"], "https://graph.microsoft.com/.default");

    let mut s = bare();
    s.token_url = Some(format!("{base}/token"));
    let settings = Settings::resolve(AuthType::ClientCredentials, None, &s).unwrap();
    let wrong = OAuthClient::new(settings, Some("wrong".into()), "https://gw.test/cb").unwrap();
    let err = wrong.client_credentials(&test_http(), now).await.unwrap_err();
    assert!(
        matches!(err, TokenEndpointError::ClientRejected { ref code, .. } if code == "invalid_client"),
        "{err:?}"
    );
}

#[tokio::test]
async fn figma_refreshes_at_its_refresh_endpoint_and_keeps_what_it_does_not_resend() {
    let (base, seen) = provider(|path, _| match path {
        "/refresh" => (
            200,
            serde_json::json!({"access_token": "figu_new", "expires_in": 7776000}),
        ),
        _ => (404, serde_json::json!({"error": "not_found"})),
    })
    .await;
    let mut settings = Settings::resolve(AuthType::OAuth2, Some("figma"), &bare()).unwrap();
    settings.token_url = format!("{base}/token");
    settings.refresh_url = Some(format!("{base}/refresh"));
    let c = OAuthClient::new(settings, Some("client-secret".into()), "https://gw.test/cb").unwrap();
    let current = TokenSet {
        access_token: "figu_old".into(),
        refresh_token: Some("figr_keep".into()),
        scopes: vec!["current_user:read".into()],
        metadata: [("user_id".to_owned(), serde_json::json!("1234"))].into(),
        ..Default::default()
    };
    let t = c
        .refresh(
            &test_http(),
            &current,
            Timestamp::UNIX_EPOCH,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(t.access_token, "figu_new");
    assert_eq!(t.token_type, "Bearer");
    assert_eq!(t.refresh_token.as_deref(), Some("figr_keep"));
    assert_eq!(t.metadata["user_id"], "1234");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req.path, "/refresh");
    assert!(req.basic_auth, "Figma authenticates the client with HTTP Basic");
}

/// A hostile token endpoint echoes what it was sent, and markup, in `error_description`: none of
/// it survives in the error, whose message has only the code (or the HTTP status).
#[tokio::test]
async fn an_error_description_never_carries_the_requests_secrets_or_markup() {
    let (base, _) = provider(|_, form| {
        let echoed: Vec<&str> = ["code", "code_verifier", "refresh_token", "client_secret"]
            .iter()
            .filter_map(|k| form.get(*k).map(String::as_str))
            .collect();
        let description = format!("<html><script>alert(1)</script>got {}</html>", echoed.join(" "));
        let error = if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
            "invalid_grant"
        } else {
            "temporarily_broken"
        };
        (
            400,
            serde_json::json!({"error": error, "error_description": description,
            "error_uri": "https://evil.example/<script>"}),
        )
    })
    .await;
    let c = client_for("google", AuthType::OAuth2, &base, &[]);
    let http = test_http();
    let current = TokenSet {
        refresh_token: Some("rt-secret-refresh-1".into()),
        ..Default::default()
    };
    let refresh = c
        .refresh(&http, &current, Timestamp::UNIX_EPOCH, Duration::from_secs(5))
        .await
        .unwrap_err();
    let exchange = c
        .exchange_code(&http, "code-secret-1", &"v".repeat(43), Timestamp::UNIX_EPOCH)
        .await
        .unwrap_err();
    assert_eq!(
        refresh.to_string(),
        "the provider rejected the grant (invalid_grant)"
    );
    assert_eq!(
        exchange.to_string(),
        "token endpoint unavailable: the endpoint answered error temporarily_broken (HTTP 400)"
    );
    for err in [&refresh, &exchange] {
        let all = format!("{err:?}");
        for secret in [
            "rt-secret-refresh-1",
            "code-secret-1",
            "client-secret",
            "vvvvvvvv",
            "<",
            "evil",
        ] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
    }
    assert!(
        matches!(&refresh, TokenEndpointError::Rejected { description: Some(d), .. } if d.starts_with("alert(1) got")),
        "{refresh:?}"
    );
}
