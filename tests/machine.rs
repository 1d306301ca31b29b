//! Credentials the operator obtains without a user: custom JWTs (minted, verified with the public
//! key, re-minted before expiry, and exchanged RFC 7523 / GitHub-App style) and the OAuth 2.0
//! client credentials grant, against the real API server, the operator binary and a local token
//! server that verifies every JWT and client it sees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agent_auth_operator::api::{AccountState, ConnectedAccount, Connection, JwtAlgorithm};
use common::fixtures::*;
use common::operator::stack;
use common::token_server::{JwtCheck, TokenServer, TokenServerConfig, keys};
use common::{eventually, hygiene, setup};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

async fn key_secret(client: &kube::Client, ns: &str, name: &str, value: &str) {
    let s = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(agent_auth_operator::store::secret_ref::opt_in_labels()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("key".to_owned(), value.to_owned())])),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &s)
        .await
        .unwrap();
}

async fn connection(client: &kube::Client, ns: &str, name: &str, spec: Value) {
    let c: Connection = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    Api::<Connection>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &c)
        .await
        .unwrap();
}

/// The published credential of `account`, once it exists (its token remembered for the scan).
async fn published(client: &kube::Client, ns: &str, account: &str) -> BTreeMap<String, String> {
    let data = common::fixtures::published(client, ns, account).await;
    if let Some(t) = data.get("access_token") {
        hygiene::remember(t);
    }
    data
}

fn algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::HS256 => Algorithm::HS256,
    }
}

/// Verifies `jwt` with the public half of the fixture key and returns its header and claims.
fn verify(jwt: &str, alg: JwtAlgorithm, audience: &str) -> (jsonwebtoken::Header, Value) {
    let public = keys::public(alg).as_bytes();
    let key = match alg {
        JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(public).unwrap(),
        JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(public).unwrap(),
        JwtAlgorithm::EdDSA => DecodingKey::from_ed_pem(public).unwrap(),
        JwtAlgorithm::HS256 => DecodingKey::from_secret(public),
    };
    let mut v = Validation::new(algorithm(alg));
    v.set_audience(&[audience]);
    v.set_issuer(&["agent-platform"]);
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &v).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
    (data.header, data.claims)
}

#[tokio::test]
async fn custom_jwts_of_every_algorithm_are_minted_verifiable_and_reminted() {
    let env = setup("jwt-mint").await;
    stack();
    let (client, ns, accounts, _) = env.parts();
    let algs = [
        JwtAlgorithm::RS256,
        JwtAlgorithm::ES256,
        JwtAlgorithm::EdDSA,
        JwtAlgorithm::HS256,
    ];
    for alg in algs {
        let name = format!("{alg:?}").to_lowercase();
        key_secret(client, ns, &format!("{name}-key"), keys::private(alg)).await;
        // RS256 lives 30 s, so its re-mint is seen within the test; the others an hour.
        let lifetime = if alg == JwtAlgorithm::RS256 { "30s" } else { "1h" };
        connection(
            client,
            ns,
            &name,
            json!({"authType": "CustomJWT", "customJWT": {
                "signingKeyRef": {"name": format!("{name}-key"), "key": "key"},
                "algorithm": alg, "keyId": "k-2026", "issuer": "agent-platform",
                "audience": "https://api.example.com/{{namespace}}", "lifetime": lifetime,
                "claims": {"tenant": "{{name}}", "roles": "[\"reader\"]"}
            }}),
        )
        .await;
        account(client, ns, &format!("{name}-bot"), &name, json!({})).await;
    }
    let audience = format!("https://api.example.com/{ns}");
    for alg in algs {
        let account_name = format!("{}-bot", format!("{alg:?}").to_lowercase());
        let active = wait_state(accounts, &account_name, AccountState::Active).await;
        assert!(link(&active).is_none(), "no user, no link");
        let data = published(client, ns, &account_name).await;
        let jwt = &data["access_token"];
        assert_eq!(data["authorization"], format!("Bearer {jwt}"));
        let (header, claims) = verify(jwt, alg, &audience);
        assert_eq!(header.kid.as_deref(), Some("k-2026"));
        assert_eq!(
            claims["sub"],
            format!("{account_name}@example.com"),
            "sub defaults to the identifier"
        );
        assert_eq!(claims["tenant"], account_name);
        assert_eq!(claims["roles"], json!(["reader"]), "JSON-valued claims stay JSON");
        assert!(claims["jti"].as_str().is_some_and(|j| j.len() >= 16));
        let exp = claims["exp"].as_i64().unwrap();
        let expires_at = active
            .status
            .as_ref()
            .unwrap()
            .expires_at
            .as_ref()
            .unwrap()
            .0
            .as_second();
        assert_eq!(exp, expires_at, "status.expiresAt is the JWT's exp");
        assert!(active.status.unwrap().next_refresh_at.is_some());
    }

    // Re-minted before it expires: a new JWT (new jti) while the old one is still valid.
    let first = published(client, ns, "rs256-bot").await["access_token"].clone();
    let (_, old) = verify(&first, JwtAlgorithm::RS256, &audience);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let renewed = eventually(Duration::from_secs(45), "re-minted JWT", || async {
        let s = secrets.get("rs256-bot-credentials").await.ok()?;
        let t = secret_text(&s)["access_token"].clone();
        (t != first).then_some(t)
    })
    .await;
    hygiene::remember(&renewed);
    let (_, new) = verify(&renewed, JwtAlgorithm::RS256, &audience);
    assert_ne!(new["jti"], old["jti"]);
    assert!(
        new["iat"].as_i64().unwrap() < old["exp"].as_i64().unwrap(),
        "renewed before the old JWT expired"
    );
    wait_event(client, ns, "rs256-bot", "Obtained").await;
    wait_event(client, ns, "rs256-bot", "Refreshed").await;

    // A key that does not suit the algorithm: the Connection says so, its account is ERROR.
    key_secret(client, ns, "wrong-key", keys::private(JwtAlgorithm::EdDSA)).await;
    connection(
        client,
        ns,
        "wrong",
        json!({"authType": "CustomJWT", "customJWT": {
            "signingKeyRef": {"name": "wrong-key", "key": "key"}, "algorithm": "RS256", "issuer": "x"
        }}),
    )
    .await;
    account(client, ns, "wrong-bot", "wrong", json!({})).await;
    let conns: Api<Connection> = Api::namespaced(client.clone(), ns);
    let conn = eventually(REACT, "wrong Connection not Ready", || async {
        let c = conns.get("wrong").await.ok()?;
        let ready = c
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .clone();
        (ready.status == "False").then_some(ready)
    })
    .await;
    assert_eq!(conn.reason, "InvalidSigningKey", "{}", conn.message);
    wait_state(accounts, "wrong-bot", AccountState::Error).await;
    assert!(secrets.get_opt("wrong-bot-credentials").await.unwrap().is_none());
}

#[tokio::test]
async fn jwts_are_exchanged_at_a_verifying_token_server() {
    let env = setup("jwt-exchange").await;
    stack();
    let (client, ns, accounts, _) = env.parts();
    let server = TokenServer::start(TokenServerConfig::default()).await;
    server.set_jwt_check(Some(
        JwtCheck::fixture(JwtAlgorithm::RS256)
            .issuer("app-42")
            .max_lifetime(Duration::from_secs(600)),
    ));
    key_secret(client, ns, "app-key", keys::RSA_PRIVATE_PKCS1).await;

    // GitHub App style: the JWT is the bearer credential of the installation-token request.
    connection(
        client,
        ns,
        "github-app",
        json!({"authType": "CustomJWT", "customJWT": {
            "signingKeyRef": {"name": "app-key", "key": "key"}, "algorithm": "RS256",
            "issuer": "app-42", "subject": "app-42", "lifetime": "9m",
            "exchange": {"style": "BearerCredential", "tokenUrl": server.installation_url_template()}
        }}),
    )
    .await;
    let a: ConnectedAccount = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": "acme-org"},
        "spec": {"connectionRef": {"name": "github-app"}, "identifier": "4242"}
    }))
    .unwrap();
    accounts.create(&PostParams::default(), &a).await.unwrap();
    let active = wait_state(accounts, "acme-org", AccountState::Active).await;
    let data = published(client, ns, "acme-org").await;
    assert!(
        data["access_token"].starts_with("ghs_"),
        "the installation token is published, not the JWT"
    );
    assert_eq!(data["authorization"], format!("Bearer {}", data["access_token"]));
    let doc: Value = serde_json::from_str(&data["credentials.json"]).unwrap();
    assert_eq!(doc["metadata"]["permissions"]["issues"], "write");
    let seen = server.seen();
    let install = seen.iter().find(|s| s.installation.is_some()).unwrap();
    assert_eq!(
        (install.installation.as_deref(), install.status),
        (Some("4242"), 201)
    );
    assert_eq!(install.claims.as_ref().unwrap()["iss"], "app-42");
    assert!(active.status.unwrap().expires_at.is_some());

    // Google service-account style: an RFC 7523 jwt-bearer grant with scopes.
    server.set_jwt_check(Some(
        JwtCheck::fixture(JwtAlgorithm::RS256)
            .issuer("sa@project.iam")
            .audience(server.token_url()),
    ));
    connection(
        client,
        ns,
        "google-sa",
        json!({"authType": "CustomJWT", "customJWT": {
            "signingKeyRef": {"name": "app-key", "key": "key"}, "algorithm": "RS256",
            "issuer": "sa@project.iam", "audience": server.token_url(),
            "exchange": {"style": "JwtBearer", "tokenUrl": server.token_url(), "scopes": ["calendar.readonly"]}
        }}),
    )
    .await;
    account(client, ns, "alice-sa", "google-sa", json!({})).await;
    wait_state(accounts, "alice-sa", AccountState::Active).await;
    let data = published(client, ns, "alice-sa").await;
    assert!(data["access_token"].starts_with("jb_"));
    assert_eq!(data["scope"], "calendar.readonly");
    let grant = server
        .seen()
        .into_iter()
        .find(|s| s.grant_type.as_deref().is_some_and(|g| g.ends_with("jwt-bearer")))
        .unwrap();
    assert_eq!(grant.status, 200, "{:?}", grant.error);
    assert_eq!(grant.claims.as_ref().unwrap()["sub"], "alice-sa@example.com");
    for s in server.seen() {
        if let Some(jwt) = &s.jwt {
            hygiene::remember(jwt);
        }
    }

    // The endpoint stops accepting the app (key revoked): the published token stays until it
    // expires, and the renewal failure is reported. Here: a new account sees ERROR at once.
    server.set_reject_all(true);
    account(client, ns, "late", "google-sa", json!({})).await;
    let late = wait_state(accounts, "late", AccountState::Error).await;
    assert_eq!(ready(&late).unwrap().1, "CredentialUnavailable");
}

#[tokio::test]
async fn client_credentials_tokens_are_fetched_and_renewed_without_a_user() {
    let env = setup("client-creds").await;
    stack();
    let (client, ns, accounts, _) = env.parts();
    let server = TokenServer::start(TokenServerConfig {
        expires_in: Duration::from_secs(20),
        ..Default::default()
    })
    .await;
    hygiene::remember("test-secret");
    key_secret(client, ns, "cc-secret", "test-secret").await;
    key_secret(client, ns, "cc-wrong", "not-the-secret").await;
    let spec = |secret: &str| {
        json!({"authType": "ClientCredentials", "oauth2": {
            "clientId": "test-client", "clientSecretRef": {"name": secret, "key": "key"},
            "tokenUrl": server.token_url(), "scopes": ["invoices.read"]
        }})
    };
    connection(client, ns, "billing", spec("cc-secret")).await;
    account(client, ns, "billing-bot", "billing", json!({})).await;
    let active = wait_state(accounts, "billing-bot", AccountState::Active).await;
    assert!(link(&active).is_none());
    let first = published(client, ns, "billing-bot").await;
    assert!(first["access_token"].starts_with("cc_"));
    assert_eq!(first["scope"], "invoices.read");
    let cc = server
        .seen()
        .into_iter()
        .find(|s| s.grant_type.as_deref() == Some("client_credentials"))
        .unwrap();
    assert_eq!(
        (cc.client_id.as_deref(), cc.scope.as_deref()),
        (Some("test-client"), Some("invoices.read"))
    );

    // Renewed before the 20 s token expires.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    eventually(REACT, "client credentials renewed", || async {
        let s = secrets.get("billing-bot-credentials").await.ok()?;
        let t = secret_text(&s)["access_token"].clone();
        (t != first["access_token"]).then(|| hygiene::remember(&t))
    })
    .await;
    assert_eq!(
        wait_state(accounts, "billing-bot", AccountState::Active)
            .await
            .status
            .unwrap()
            .state,
        Some(AccountState::Active)
    );

    // A refused client is the account's ERROR (not EXPIRED: no user can fix it), with the code;
    // fixing the Connection's secret brings it to ACTIVE.
    connection(client, ns, "billing-wrong", spec("cc-wrong")).await;
    account(client, ns, "wrong-bot", "billing-wrong", json!({})).await;
    let wrong = wait_state(accounts, "wrong-bot", AccountState::Error).await;
    assert_eq!(ready(&wrong).unwrap().1, "CredentialUnavailable");
    let msg = ready_message(&wrong);
    assert!(msg.contains("invalid_client"), "{msg}");
    Api::<Connection>::namespaced(client.clone(), ns)
        .patch(
            "billing-wrong",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"oauth2": {"clientSecretRef": {"name": "cc-secret", "key": "key"}}}}),
            ),
        )
        .await
        .unwrap();
    wait_account(accounts, "wrong-bot", "ACTIVE after the fix", |a| {
        state(a) == Some(AccountState::Active)
    })
    .await;
}
