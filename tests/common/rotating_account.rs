//! Accounts at the strict rotating provider of [`super::rotating`], on the real control plane:
//! a Connection for it, an account authorized through its link (the provider consents at once, so
//! a plain cookie-keeping client plays the user), and the agent's access token.

use agent_auth_operator::api::{AccountState, ConnectedAccount, Connection};
use kube::api::Api;
use serde_json::{Value, json};

use super::fixtures::{account, link, wait_account, wait_state};
use super::rotating::{RotatingOptions, RotatingProvider};

/// Options for a provider whose client is this test's own (client ids are unique per auth host
/// across namespaces), issuing access tokens that live `ttl`.
pub fn options(ns: &str, ttl: std::time::Duration) -> RotatingOptions {
    RotatingOptions {
        client_id: format!("rot-{ns}"),
        access_ttl: ttl,
        ..Default::default()
    }
}

/// A Connection `name` in `ns` for provider `p`; `refresh` becomes `spec.refresh`.
pub async fn connection(
    client: &kube::Client,
    ns: &str,
    name: &str,
    p: &RotatingProvider,
    opts: &RotatingOptions,
    scopes: &[&str],
    refresh: Value,
) -> Connection {
    let oauth2 = json!({
        "clientId": opts.client_id,
        "authorizationUrl": p.authorize_url(),
        "tokenUrl": p.token_url(),
        "revocationUrl": p.revocation_url(),
        "scopes": scopes,
    });
    super::fixtures::oauth_connection(
        client,
        ns,
        name,
        &opts.client_secret,
        oauth2,
        json!({"refresh": refresh}),
    )
    .await
}

/// A provider with `opts`, a Connection `rot` for it (scope `read`, `refresh` as `spec.refresh`)
/// and an ACTIVE account `account` on it.
pub async fn start(
    env: &super::TestEnv,
    opts: RotatingOptions,
    refresh: Value,
    account: &str,
) -> (RotatingProvider, ConnectedAccount) {
    let p = RotatingProvider::start(opts.clone()).await;
    connection(&env.client, &env.ns, "rot", &p, &opts, &["read"], refresh).await;
    let active = authorized(&env.client, &env.ns, account, "rot").await;
    (p, active)
}

/// Creates account `name` on `conn`, follows its link through the provider, waits until ACTIVE.
pub async fn authorized(client: &kube::Client, ns: &str, name: &str, conn: &str) -> ConnectedAccount {
    let accounts: Api<ConnectedAccount> = Api::namespaced(client.clone(), ns);
    account(client, ns, name, conn, json!({})).await;
    let pending = wait_account(&accounts, name, "link", |a| link(a).is_some()).await;
    follow(&link(&pending).unwrap()).await;
    let active = wait_state(&accounts, name, AccountState::Active).await;
    super::fixtures::remember_credentials(client, ns, &active).await;
    active
}

/// Plays the user through `link`: the gateway's interstitial and its Continue, the provider's
/// instant consent, the callback page.
pub async fn follow(link: &str) {
    let http = super::dex::browser();
    let pressed = super::dex::press_continue(&http, link).await.unwrap();
    let to_provider = super::dex::provider_url(pressed).await.unwrap();
    let page = http.get(to_provider).send().await.unwrap();
    assert_eq!(page.status(), 200, "authorization through {link}");
}

/// The access token the agent holds now (the agent Secret's `access_token`).
pub async fn agent_token(client: &kube::Client, ns: &str, account: &str) -> String {
    super::fixtures::published(client, ns, account)
        .await
        .get("access_token")
        .cloned()
        .unwrap_or_default()
}

/// Asserts that no refresh token reached `p` twice, and returns how many it received.
pub fn assert_no_replay(p: &RotatingProvider) -> usize {
    let got = p.refresh_tokens_received();
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        got.len(),
        "a refresh token reached the provider twice"
    );
    assert_eq!(p.reuse_count(), 0, "reuse of a consumed refresh token");
    got.len()
}
