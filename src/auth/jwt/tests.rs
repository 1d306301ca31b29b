#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use jsonwebtoken::{DecodingKey, Validation};

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Map, Value};

use super::exchange::{JWT_BEARER, token_set};
use super::mint::{algorithm, claim_value};
use super::*;
use crate::api::{CustomJwtSettings, ExchangeStyle, JwtAlgorithm, JwtExchange};
use crate::store::TokenSet;

const RSA: &str = include_str!("../../../tests/fixtures/keys/rsa.pem");
const RSA_PKCS1: &str = include_str!("../../../tests/fixtures/keys/rsa.pkcs1.pem");
const RSA_PUB: &str = include_str!("../../../tests/fixtures/keys/rsa.pub.pem");
const EC: &str = include_str!("../../../tests/fixtures/keys/ec.pem");
const EC_SEC1: &str = include_str!("../../../tests/fixtures/keys/ec.sec1.pem");
const EC_PUB: &str = include_str!("../../../tests/fixtures/keys/ec.pub.pem");
const ED: &str = include_str!("../../../tests/fixtures/keys/ed25519.pem");
const ED_PUB: &str = include_str!("../../../tests/fixtures/keys/ed25519.pub.pem");
const HS: &[u8] = b"a shared secret of at least thirty-two bytes";

const ACCOUNT: Template<'static> = Template {
    identifier: "alice@example.com",
    name: "alice-gh",
    namespace: "agents",
};

fn settings(alg: JwtAlgorithm) -> CustomJwtSettings {
    serde_json::from_value(serde_json::json!({
        "signingKeyRef": {"name": "k", "key": "pem"},
        "algorithm": alg,
        "keyId": "key-1",
        "issuer": "https://issuer.example/{{namespace}}",
        "audience": "https://api.example/{{name}}",
        "claims": {
            "email": "{{identifier}}",
            "admin": "true",
            "level": "3",
            "groups": "[\"{{namespace}}\", \"dev\"]",
            "note": "not json {{name}}"
        },
        "lifetime": "10m"
    }))
    .unwrap()
}

fn public_key(alg: JwtAlgorithm) -> DecodingKey {
    match alg {
        JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(RSA_PUB.as_bytes()).unwrap(),
        JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(EC_PUB.as_bytes()).unwrap(),
        JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(ED_PUB.as_bytes()).unwrap(),
        JwtAlgorithm::HS256 => DecodingKey::from_secret(HS),
    }
}

fn private_key(alg: JwtAlgorithm) -> &'static [u8] {
    match alg {
        JwtAlgorithm::RS256 => RSA.as_bytes(),
        JwtAlgorithm::ES256 => EC.as_bytes(),
        JwtAlgorithm::EdDSA => ED.as_bytes(),
        JwtAlgorithm::HS256 => HS,
    }
}

/// Verifies signature, issuer, audience and expiry with the public key; returns the claims.
fn verify(jwt: &str, alg: JwtAlgorithm, audience: &str) -> (Header, Value) {
    let mut v = Validation::new(algorithm(alg));
    v.set_issuer(&["https://issuer.example/agents"]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["iss", "sub", "aud", "exp", "iat"]);
    let data = jsonwebtoken::decode::<Value>(jwt, &public_key(alg), &v).unwrap();
    (data.header, data.claims)
}

#[test]
fn every_algorithm_signs_what_its_public_key_verifies() {
    let now = Timestamp::now();
    for alg in [
        JwtAlgorithm::RS256,
        JwtAlgorithm::ES256,
        JwtAlgorithm::EdDSA,
        JwtAlgorithm::HS256,
    ] {
        let (jwt, exp) = mint(&settings(alg), private_key(alg), &ACCOUNT, now).unwrap();
        let (header, claims) = verify(&jwt, alg, "https://api.example/alice-gh");
        assert_eq!(header.alg, algorithm(alg));
        assert_eq!(header.kid.as_deref(), Some("key-1"));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        assert_eq!(claims["sub"], "alice@example.com", "{alg:?}");
        assert_eq!(claims["email"], "alice@example.com");
        assert_eq!(claims["admin"], true);
        assert_eq!(claims["level"], 3);
        assert_eq!(claims["groups"], serde_json::json!(["agents", "dev"]));
        assert_eq!(claims["note"], "not json alice-gh");
        assert!(claims.get("nbf").is_none());
        assert!(claims.get("scope").is_none());
        let (iat, exp_claim) = (claims["iat"].as_i64().unwrap(), claims["exp"].as_i64().unwrap());
        assert_eq!(exp_claim, exp.as_second());
        assert_eq!(exp_claim - iat, 600, "exp - iat is the lifetime");
        assert_eq!(iat, now.as_second() - 60, "iat is backdated a minute");
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
    }
}

#[test]
fn each_jwt_has_its_own_jti_and_defaults_apply() {
    let mut s = settings(JwtAlgorithm::HS256);
    s.lifetime = None;
    s.key_id = None;
    s.audience = None;
    s.claims.clear();
    let now = Timestamp::now();
    let (a, exp) = mint(&s, HS, &ACCOUNT, now).unwrap();
    let (b, _) = mint(&s, HS, &ACCOUNT, now).unwrap();
    let mut v = Validation::new(Algorithm::HS256);
    v.validate_aud = false;
    let key = public_key(JwtAlgorithm::HS256);
    let a = jsonwebtoken::decode::<Value>(&a, &key, &v).unwrap();
    let b = jsonwebtoken::decode::<Value>(&b, &key, &v).unwrap();
    assert_ne!(a.claims["jti"], b.claims["jti"]);
    assert!(a.header.kid.is_none());
    assert!(a.claims.get("aud").is_none());
    assert_eq!(exp.as_second() - a.claims["iat"].as_i64().unwrap(), 3600);
}

#[test]
fn pkcs1_rsa_and_sec1_ec_keys_are_accepted() {
    let now = Timestamp::now();
    let (jwt, _) = mint(
        &settings(JwtAlgorithm::RS256),
        RSA_PKCS1.as_bytes(),
        &ACCOUNT,
        now,
    )
    .unwrap();
    verify(&jwt, JwtAlgorithm::RS256, "https://api.example/alice-gh");
    let with_params =
        format!("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n{EC_SEC1}");
    let (jwt, _) = mint(
        &settings(JwtAlgorithm::ES256),
        with_params.as_bytes(),
        &ACCOUNT,
        now,
    )
    .unwrap();
    verify(&jwt, JwtAlgorithm::ES256, "https://api.example/alice-gh");
}

fn config_error(alg: JwtAlgorithm, key: &[u8]) -> String {
    match mint(&settings(alg), key, &ACCOUNT, Timestamp::now()) {
        Err(JwtError::Config(m)) => m,
        other => panic!("{alg:?}: expected a Config error, got {other:?}"),
    }
}

#[test]
fn a_key_of_the_wrong_kind_is_named() {
    assert_eq!(
        config_error(JwtAlgorithm::RS256, EC.as_bytes()),
        "the signing key is an EC key, but RS256 needs an RSA key"
    );
    assert_eq!(
        config_error(JwtAlgorithm::ES256, ED.as_bytes()),
        "the signing key is an Ed25519 key, but ES256 needs an EC key"
    );
    assert_eq!(
        config_error(JwtAlgorithm::EdDSA, RSA_PKCS1.as_bytes()),
        "the signing key is an RSA key, but EdDSA needs an Ed25519 key"
    );
    assert!(config_error(JwtAlgorithm::HS256, RSA.as_bytes()).contains("HS256 needs a shared secret"));
    assert!(config_error(JwtAlgorithm::RS256, RSA_PUB.as_bytes()).contains("public key"));
    assert!(config_error(JwtAlgorithm::RS256, HS).contains("not PEM"));
    assert!(config_error(JwtAlgorithm::HS256, b"").contains("empty"));
}

#[test]
fn a_bad_pem_is_a_config_error_that_quotes_nothing() {
    let garbled = RSA.replacen("MII", "M!!", 1);
    let m = config_error(JwtAlgorithm::RS256, garbled.as_bytes());
    assert_eq!(m, "the PEM block PRIVATE KEY is not valid base64");
    let truncated = &RSA[..RSA.len() / 2];
    assert!(config_error(JwtAlgorithm::RS256, truncated.as_bytes()).contains("no END line"));
    let cut_body: String = {
        let lines: Vec<&str> = RSA.lines().collect();
        [&lines[..3], &lines[lines.len() - 1..]].concat().join("\n")
    };
    let m = config_error(JwtAlgorithm::RS256, cut_body.as_bytes());
    assert_eq!(
        m,
        "the signing key is not an RSA, EC or Ed25519 PKCS#8 private key"
    );
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert!(config_error(JwtAlgorithm::RS256, encrypted.as_bytes()).contains("encrypted"));
    let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
    assert!(config_error(JwtAlgorithm::EdDSA, ssh.as_bytes()).starts_with("OPENSSH PRIVATE KEY keys"));
}

#[test]
fn bad_settings_are_config_errors() {
    let mut s = settings(JwtAlgorithm::HS256);
    s.lifetime = Some("0s".parse().unwrap());
    assert!(matches!(
        mint(&s, HS, &ACCOUNT, Timestamp::now()),
        Err(JwtError::Config(_))
    ));
    // An unreadable lifetime cannot even be represented: the object fails to deserialize.
    assert!("soon".parse::<crate::api::Duration>().is_err());
    let mut s = settings(JwtAlgorithm::HS256);
    s.claims.insert("exp".into(), "1".into());
    assert!(matches!(
        mint(&s, HS, &ACCOUNT, Timestamp::now()),
        Err(JwtError::Config(_))
    ));
    // Plain http is the egress policy's to refuse (at the request and at Connection apply).
    let mut s = settings(JwtAlgorithm::HS256);
    s.exchange = Some(exchange(
        "https://token.example/t/{{identifier}}",
        ExchangeStyle::JwtBearer,
    ));
    assert_eq!(check(&s, HS), Ok(()));
}

#[test]
fn templates_render_once_and_urls_escape_values() {
    let t = Template {
        identifier: "a/b?c@{{name}}",
        name: "n",
        namespace: "ns",
    };
    assert_eq!(
        t.render("{{identifier}}-{{name}}-{{other}}-{{"),
        "a/b?c@{{name}}-n-{{other}}-{{"
    );
    assert_eq!(
        t.render_url("https://x.example/i/{{identifier}}/t"),
        "https://x.example/i/a%2Fb%3Fc%40%7B%7Bname%7D%7D/t"
    );
    // An identifier cannot break out of a JSON claim.
    let t = Template {
        identifier: "\", \"admin\": true, \"x\": \"",
        ..ACCOUNT
    };
    assert_eq!(
        claim_value("{\"user\": \"{{identifier}}\"}", &t),
        serde_json::json!({"user": "\", \"admin\": true, \"x\": \""})
    );
}

fn exchange(url: &str, style: ExchangeStyle) -> JwtExchange {
    JwtExchange {
        token_url: url.into(),
        style,
        scopes: vec![],
    }
}

/// What the test endpoint received.
#[derive(Default)]
struct Received {
    form: Vec<(String, String)>,
    headers: Vec<HeaderMap>,
}

/// A token endpoint that verifies the ES256 JWT it gets, plus failure modes by path.
async fn endpoint() -> (String, Arc<Mutex<Received>>) {
    use axum::routing::post;
    let seen = Arc::new(Mutex::new(Received::default()));
    let verified = |jwt: &str| {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&["https://issuer.example/agents"]);
        v.set_audience(&["https://api.example/alice-gh"]);
        jsonwebtoken::decode::<Value>(jwt, &public_key(JwtAlgorithm::ES256), &v).is_ok()
    };
    let s = seen.clone();
    let app = axum::Router::new()
        .route(
            "/token",
            post(
                move |headers: HeaderMap, axum::Form(form): axum::Form<Vec<(String, String)>>| {
                    let s = s.clone();
                    async move {
                        let mut seen = s.lock().unwrap();
                        seen.headers.push(headers);
                        seen.form = form.clone();
                        let assertion = form
                            .iter()
                            .find(|(k, _)| k == "assertion")
                            .map(|(_, v)| v.as_str());
                        let grant = form
                            .iter()
                            .find(|(k, _)| k == "grant_type")
                            .map(|(_, v)| v.as_str());
                        if grant == Some(JWT_BEARER) && assertion.is_some_and(verified) {
                            axum::Json(serde_json::json!({
                                "access_token": "ya29.token", "token_type": "bearer",
                                "expires_in": "3599", "id_token": "secret-too"
                            }))
                            .into_response()
                        } else {
                            (
                                StatusCode::BAD_REQUEST,
                                axum::Json(serde_json::json!({
                                    "error": "invalid_grant",
                                    "error_description": format!("bad assertion {}", assertion.unwrap_or("-"))
                                })),
                            )
                                .into_response()
                        }
                    }
                },
            ),
        )
        .route(
            "/app/installations/{id}/access_tokens",
            post({
                let s = seen.clone();
                move |axum::extract::Path(id): axum::extract::Path<String>, headers: HeaderMap| {
                    let s = s.clone();
                    async move {
                        let jwt = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or_default()
                            .to_owned();
                        s.lock().unwrap().headers.push(headers);
                        if id != "alice@example.com" || !verified(&jwt) {
                            let body = serde_json::json!({"message": "Bad credentials"});
                            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
                        }
                        let body = serde_json::json!({
                            "token": "ghs_abc", "expires_at": "2030-01-01T00:00:00Z",
                            "permissions": {"issues": "write"}, "repository_selection": "all"
                        });
                        (StatusCode::CREATED, axum::Json(body)).into_response()
                    }
                }
            }),
        )
        .route(
            "/busy",
            post(|| async { (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "7")], "slow down") }),
        )
        .route(
            "/down",
            post(|| async {
                let body = axum::Json(serde_json::json!({"error": "temporarily_unavailable"}));
                (StatusCode::SERVICE_UNAVAILABLE, body)
            }),
        )
        .route("/huge", post(|| async { "x".repeat(100_000) }))
        .route("/garbage", post(|| async { "<html>hello</html>" }))
        .route(
            "/moved",
            post(|| async { (StatusCode::FOUND, [("location", "https://elsewhere.example/")]) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

fn exchanging(url: String, style: ExchangeStyle) -> CustomJwtSettings {
    let mut s = settings(JwtAlgorithm::ES256);
    s.exchange = Some(exchange(&url, style));
    s
}

async fn obtain_at(s: &CustomJwtSettings) -> Result<TokenSet, JwtError> {
    let http = crate::auth::oauth2::http_client(crate::egress::EgressPolicy::new(vec![
        "127.0.0.1/32".parse().unwrap(),
    ]))
    .unwrap();
    obtain(&http, s, EC.as_bytes(), &ACCOUNT, Timestamp::now()).await
}

/// The controller spawns this on a multi-threaded runtime.
#[allow(dead_code)]
fn obtain_is_send(http: &crate::egress::EgressClient, s: &CustomJwtSettings) {
    fn is_send<T: Send>(_: T) {}
    is_send(obtain(http, s, b"", &ACCOUNT, Timestamp::now()));
}

#[test]
fn token_responses_of_either_shape_parse() {
    let now = Timestamp::from_second(1_000_000).unwrap();
    let exp = Timestamp::from_second(1_000_600).unwrap();
    let parse = |v: Value| token_set(v.as_object().unwrap().clone(), vec!["s".into()], exp, now).unwrap();
    let t = parse(serde_json::json!({"access_token": "a", "expires_in": 3599.5, "token_type": "MAC"}));
    assert_eq!(
        (t.token_type.as_str(), t.expires_at.unwrap().as_second()),
        ("MAC", 1_003_599)
    );
    assert_eq!(t.scopes, ["s"]);
    let t = parse(
        serde_json::json!({"token": "t", "team": "x", "permissions": {"issues": "write"}, "refresh_token": "r"}),
    );
    assert_eq!(
        (t.access_token.as_str(), t.expires_at),
        ("t", Some(exp)),
        "no expiry: the JWT's"
    );
    assert_eq!(
        t.metadata.keys().collect::<Vec<_>>(),
        ["permissions"],
        "only allowlisted fields; `team` is dropped"
    );
    assert!(t.refresh_token.is_none());
    let none = token_set(Map::new(), vec![], exp, now);
    assert!(matches!(none, Err(JwtError::Transient { .. })));
}

#[tokio::test]
async fn without_exchange_the_credential_is_the_jwt() {
    let s = settings(JwtAlgorithm::ES256);
    let now = Timestamp::now();
    let http = crate::auth::oauth2::http_client(crate::egress::EgressPolicy::new(vec![
        "127.0.0.1/32".parse().unwrap(),
    ]))
    .unwrap();
    let tokens = obtain(&http, &s, EC.as_bytes(), &ACCOUNT, now).await.unwrap();
    verify(
        &tokens.access_token,
        JwtAlgorithm::ES256,
        "https://api.example/alice-gh",
    );
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.obtained_at, now);
    assert_eq!(tokens.expires_at.unwrap().as_second(), now.as_second() - 60 + 600);
    assert!(tokens.refresh_token.is_none());
}

#[tokio::test]
async fn a_jwt_bearer_grant_is_exchanged_for_an_access_token() {
    let (url, seen) = endpoint().await;
    let mut s = exchanging(format!("{url}/token"), ExchangeStyle::JwtBearer);
    s.exchange.as_mut().unwrap().scopes = vec!["a".into(), "b".into()];
    let before = Timestamp::now();
    let tokens = obtain_at(&s).await.unwrap();
    assert_eq!(tokens.access_token, "ya29.token");
    assert_eq!(tokens.token_type, "Bearer");
    assert_eq!(tokens.scopes, ["a", "b"]);
    let expires = tokens.expires_at.unwrap().as_second() - before.as_second();
    assert!((3598..=3600).contains(&expires), "{expires}");
    assert!(tokens.metadata.is_empty(), "id_token is never metadata");
    let seen = seen.lock().unwrap();
    let form: BTreeMap<_, _> = seen.form.iter().cloned().collect();
    assert_eq!(form["grant_type"], JWT_BEARER);
    assert_eq!(form["scope"], "a b");
    let claims = jsonwebtoken::dangerous::insecure_decode::<Value>(&form["assertion"])
        .unwrap()
        .claims;
    assert_eq!(claims["scope"], "a b", "Google reads scopes from the assertion");
}

#[tokio::test]
async fn a_bearer_credential_is_exchanged_for_an_installation_token() {
    let (url, seen) = endpoint().await;
    let s = exchanging(
        format!("{url}/app/installations/{{{{identifier}}}}/access_tokens"),
        ExchangeStyle::BearerCredential,
    );
    let tokens = obtain_at(&s).await.unwrap();
    assert_eq!(tokens.access_token, "ghs_abc");
    assert_eq!(tokens.expires_at, Some("2030-01-01T00:00:00Z".parse().unwrap()));
    assert!(tokens.scopes.is_empty());
    assert_eq!(
        tokens.metadata.keys().collect::<HashSet<_>>(),
        HashSet::from([&"permissions".to_owned(), &"repository_selection".to_owned()])
    );
    let seen = seen.lock().unwrap();
    let headers = &seen.headers[0];
    assert!(
        headers["accept"]
            .to_str()
            .unwrap()
            .contains("application/vnd.github+json")
    );
    assert!(
        headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("agent-auth-operator/")
    );
}

#[tokio::test]
async fn a_rejection_carries_the_code_but_never_the_jwt() {
    let (url, _) = endpoint().await;
    let mut s = exchanging(format!("{url}/token"), ExchangeStyle::JwtBearer);
    s.issuer = "someone else".into();
    let e = obtain_at(&s).await.unwrap_err();
    let JwtError::Rejected {
        status,
        code,
        description,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!((*status, code.as_deref()), (400, Some("invalid_grant")));
    assert_eq!(description.as_deref(), Some("bad assertion <redacted>"));
    assert!(!e.to_string().contains("eyJ"), "{e}");
    assert_eq!(e.reason(), "JwtRejected");

    let s = exchanging(
        format!("{url}/app/installations/other/access_tokens"),
        ExchangeStyle::BearerCredential,
    );
    let e = obtain_at(&s).await.unwrap_err();
    // The endpoint's own words ("Bad credentials") stay out of what is shown.
    assert_eq!(e.to_string(), "the token endpoint rejected the JWT (HTTP 401)");
}

#[tokio::test]
async fn unavailable_endpoints_are_transient_and_redirects_need_a_fix() {
    let (url, _) = endpoint().await;
    let at = |path: &str| exchanging(format!("{url}{path}"), ExchangeStyle::JwtBearer);
    let e = obtain_at(&at("/busy")).await.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7)), "{e:?}");
    let e = obtain_at(&at("/down")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "token endpoint unavailable: HTTP 503, temporarily_unavailable"
    );
    for path in ["/huge", "/garbage"] {
        let e = obtain_at(&at(path)).await.unwrap_err();
        assert!(matches!(e, JwtError::Transient { .. }), "{path}: {e:?}");
    }
    let e = obtain_at(&at("/moved")).await.unwrap_err();
    assert!(matches!(e, JwtError::Config(_)), "{e:?}");
    let closed = exchanging("http://127.0.0.1:9/token".into(), ExchangeStyle::JwtBearer);
    let e = obtain_at(&closed).await.unwrap_err();
    assert!(matches!(e, JwtError::Transient { .. }), "{e:?}");
}
