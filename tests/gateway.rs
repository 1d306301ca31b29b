//! Hostile and unlucky input at the gateway: tampered, forged, expired, spent and moved links and
//! states, garbage, a user who declines. Every refusal is a 4xx HTML page with security headers,
//! and the account is left as it was.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use agent_auth_operator::signer::{LinkClaims, Signer, StateClaims, random_key};
use base64::Engine;
use common::dex::{authorize_until, browser, browser_until};
use common::fixtures::*;
use common::operator::{OPERATOR_NS, stack};
use common::setup;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The operator's real signing key ring, read as an administrator could.
async fn operator_signer(client: &kube::Client) -> Signer {
    let s = Api::<Secret>::namespaced(client.clone(), OPERATOR_NS)
        .get("agent-auth-operator-signing-key")
        .await
        .unwrap();
    let signer = Signer::empty();
    signer
        .load(&agent_auth_operator::store::signing_key::ring_of(&s).unwrap())
        .unwrap();
    signer
}

/// The payload of a signed token (`kid.payload.sig`).
fn payload_of(token: &str) -> &str {
    token.split('.').nth(1).unwrap()
}

fn claims_of(link: &str) -> LinkClaims {
    let token = link.rsplit_once("/connect/").unwrap().1;
    serde_json::from_slice(&B64.decode(payload_of(token)).unwrap()).unwrap()
}

/// One query parameter of a URL.
fn query(url: &reqwest::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Asserts an HTML refusal with the gateway's security headers.
async fn assert_refused(resp: reqwest::Response, status: u16, what: &str) {
    assert_eq!(resp.status(), status, "{what}");
    let h = resp.headers().clone();
    assert_eq!(h["cache-control"], "no-store", "{what}");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'"),
        "{what}"
    );
    assert_eq!(h["referrer-policy"], "no-referrer", "{what}");
    assert!(
        h["content-type"].to_str().unwrap().starts_with("text/html"),
        "{what}"
    );
    let body = resp.text().await.unwrap();
    assert!(body.contains("<h1>"), "{what}: {body}");
}

async fn pending_account(env: &common::TestEnv, name: &str) -> ConnectedAccount {
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    account(&env.client, &env.ns, name, "dex", json!({})).await;
    wait_account(&accounts, name, "link", |a| link(a).is_some()).await
}

#[tokio::test]
async fn tampered_forged_expired_moved_and_garbage_links_are_refused() {
    let env = setup("gw-links").await;
    let s = stack();
    dex_connection(&env.client, &env.ns, "dex", &s.dex, &["openid"]).await;
    let a = pending_account(&env, "frank").await;
    let b = pending_account(&env, "grace").await;
    let good = link(&a).unwrap();
    let http = browser_until(&s.dex.issuer);
    let gw = &s.operator.gateway_url;

    let shown = http.get(&good).send().await.unwrap();
    assert_eq!(shown.status(), 200, "a valid link shows the interstitial");
    let page = shown.text().await.unwrap();
    assert!(
        page.contains("id=\"interstitial\"") && !page.contains(s.dex.authorization_url()),
        "{page}"
    );
    // Continue pressed for this page by another browser (another site's form: no cookie) is refused.
    let elsewhere = common::dex::continue_request(
        &browser_until(&s.dex.issuer),
        &reqwest::Url::parse(&good).unwrap(),
        &page,
    )
    .unwrap()
    .send()
    .await
    .unwrap();
    assert_eq!(elsewhere.status(), 400);
    assert!(
        !elsewhere
            .text()
            .await
            .unwrap()
            .contains(s.dex.authorization_url())
    );
    let ok = common::dex::press_continue(&http, &good).await.unwrap();
    assert_eq!(
        ok.status(),
        200,
        "Continue answers a page that moves on to the provider"
    );
    assert!(ok.headers()["set-cookie"].to_str().unwrap().contains("HttpOnly"));
    let location = common::dex::provider_url(ok).await.unwrap().to_string();
    assert!(location.starts_with(s.dex.authorization_url()));
    for param in [
        "state=",
        "code_challenge=",
        "code_challenge_method=S256",
        "scope=openid",
    ] {
        assert!(location.contains(param), "{param} in the authorization URL");
    }
    // Opening the link, or pressing Continue, does not spend it.
    assert_eq!(http.get(&good).send().await.unwrap().status(), 200);
    assert_eq!(
        common::dex::press_continue(&http, &good).await.unwrap().status(),
        200
    );

    let mut tampered = good.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_refused(
        http.get(&tampered).send().await.unwrap(),
        404,
        "tampered signature",
    )
    .await;

    let signer = operator_signer(&env.client).await;
    let forged = Signer::new(&random_key()).unwrap().issue_link(&claims_of(&good));
    assert_refused(
        http.get(format!("{gw}/connect/{forged}")).send().await.unwrap(),
        404,
        "another key",
    )
    .await;

    let mut expired = claims_of(&good);
    expired.exp = 1;
    let expired = signer.issue_link(&expired);
    assert_refused(
        http.get(format!("{gw}/connect/{expired}")).send().await.unwrap(),
        410,
        "expired",
    )
    .await;

    let mut moved = claims_of(&good);
    moved.name = b.metadata.name.clone().unwrap();
    let moved = signer.issue_link(&moved);
    assert_refused(
        http.get(format!("{gw}/connect/{moved}")).send().await.unwrap(),
        404,
        "moved to another account",
    )
    .await;

    let mut stale = claims_of(&good);
    stale.nonce = "not-the-current-one".into();
    let stale = signer.issue_link(&stale);
    assert_refused(
        http.get(format!("{gw}/connect/{stale}")).send().await.unwrap(),
        410,
        "replaced link",
    )
    .await;

    for garbage in [
        "%FF%FE%00",
        "a.b",
        "..",
        &"x".repeat(5000),
        "%3Cscript%3E.%3C%2Fscript%3E",
    ] {
        let resp = http.get(format!("{gw}/connect/{garbage}")).send().await.unwrap();
        assert!(
            resp.status().is_client_error(),
            "garbage {garbage:.20}: {}",
            resp.status()
        );
    }
    assert_refused(
        http.get(format!("{gw}/nope")).send().await.unwrap(),
        404,
        "unknown path",
    )
    .await;

    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let after = accounts.get("frank").await.unwrap();
    assert_eq!(link(&after), Some(good), "refusals change nothing");
    assert_eq!(state(&after), Some(AccountState::PendingAuth));
}

#[tokio::test]
async fn tampered_replayed_and_foreign_states_are_refused() {
    let env = setup("gw-states").await;
    let s = stack();
    dex_connection(&env.client, &env.ns, "dex", &s.dex, &["openid", "offline_access"]).await;
    let a = pending_account(&env, "heidi").await;
    let b = pending_account(&env, "ivan").await;
    let gw = &s.operator.gateway_url;
    let callback = format!("{gw}/oauth/callback");
    let http = browser_until(&callback);

    // Walk heidi's flow up to the redirect back to the gateway, without following it.
    let back = authorize_until(&http, &link(&a).unwrap(), &s.dex.user(4), &callback)
        .await
        .unwrap();
    let state = query(&back, "state");
    let code = query(&back, "code");
    common::hygiene::remember(&code);

    for (query, what) in [
        (String::new(), "no parameters"),
        ("state=garbage&code=x".to_owned(), "garbage state"),
        (
            format!("state={}x&code={code}", &state[..state.len() - 1]),
            "tampered state",
        ),
        (format!("state={state}"), "no code"),
        ("state=%FF%FE&code=%00".to_owned(), "non-UTF-8"),
    ] {
        assert_refused(
            http.get(format!("{callback}?{query}")).send().await.unwrap(),
            400,
            what,
        )
        .await;
    }
    // Without the browser session that started it.
    let stranger = browser();
    assert_refused(
        stranger.get(back.as_str()).send().await.unwrap(),
        400,
        "another browser",
    )
    .await;

    // A state for another account (signed by the operator) with heidi's session cookie and code.
    let signer = operator_signer(&env.client).await;
    let mut claims: StateClaims = serde_json::from_slice(&B64.decode(payload_of(&state)).unwrap()).unwrap();
    claims.name = b.metadata.name.clone().unwrap();
    claims.uid = b.metadata.uid.clone().unwrap();
    let foreign = signer.issue_state(&claims);
    let resp = http
        .get(format!("{callback}?state={foreign}&code={code}"))
        .send()
        .await
        .unwrap();
    assert_refused(resp, 410, "state moved to another account").await;

    // The real callback completes; replaying it is refused.
    let done = http.get(back.as_str()).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_refused(
        http.get(back.as_str()).send().await.unwrap(),
        410,
        "replayed state",
    )
    .await;

    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    wait_state(&accounts, "heidi", AccountState::Active).await;
    assert_eq!(
        common::fixtures::state(&accounts.get("ivan").await.unwrap()),
        Some(AccountState::PendingAuth)
    );
}

#[tokio::test]
async fn a_user_who_declines_sees_a_clear_page_and_the_account_waits() {
    let env = setup("gw-denied").await;
    let s = stack();
    dex_connection(&env.client, &env.ns, "dex", &s.dex, &["openid"]).await;
    let a = pending_account(&env, "judy").await;
    let http = browser_until(&s.dex.issuer);
    let to_dex = common::dex::press_continue(&http, &link(&a).unwrap())
        .await
        .unwrap();
    let location = common::dex::provider_url(to_dex).await.unwrap();
    let state = query(&location, "state");

    let callback = format!("{}/oauth/callback", s.operator.gateway_url);
    let resp = http
        .get(&callback)
        .query(&[
            ("error", "access_denied"),
            ("error_description", "<b>nope</b>"),
            ("state", &state),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body = resp.text().await.unwrap();
    assert!(body.contains("You declined access") && !body.contains("<b>nope</b>"));

    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let after = wait_account(&accounts, "judy", "AccessDenied", |a| {
        ready(a).is_some_and(|r| r.1 == "AccessDenied")
    })
    .await;
    assert_eq!(common::fixtures::state(&after), Some(AccountState::PendingAuth));
    assert_eq!(link(&after), link(&a), "the link stays valid for another try");
    let msg = ready_message(&after);
    assert!(msg.contains("declined"), "{msg}");
}

#[tokio::test]
async fn a_failed_code_exchange_shows_a_page_and_the_success_url_is_honoured() {
    let env = setup("gw-exchange").await;
    let s = stack();
    dex_connection(&env.client, &env.ns, "dex", &s.dex, &["openid"]).await;
    let accounts: Api<ConnectedAccount> = Api::namespaced(env.client.clone(), &env.ns);
    let a = pending_account(&env, "ken").await;
    let callback = format!("{}/oauth/callback", s.operator.gateway_url);
    let http = browser_until(&callback);
    let back = authorize_until(&http, &link(&a).unwrap(), &s.dex.user(5), &callback)
        .await
        .unwrap();
    let state = query(&back, "state");
    let code = query(&back, "code");
    common::hygiene::remember(&code);

    // A code the provider never issued: the exchange fails, the user sees why, the link survives.
    let resp = http
        .get(&callback)
        .query(&[("state", state.as_str()), ("code", "forged-code")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("did not accept"));
    let failed = wait_account(&accounts, "ken", "ExchangeFailed", |a| {
        ready(a).is_some_and(|r| r.1 == "ExchangeFailed")
    })
    .await;
    assert_eq!(common::fixtures::state(&failed), Some(AccountState::PendingAuth));
    assert_eq!(link(&failed), link(&a));

    // With a success URL on the Connection, the real code completes and redirects there.
    // (a page on the gateway's own host, so the test can follow the redirect)
    let success = format!("{}/welcome-back", s.operator.gateway_url);
    let patch = json!({"spec": {"successRedirectUrl": success}});
    common::fixtures::patch_connection(&env.client, &env.ns, "dex", patch).await;
    let done = http
        .get(&callback)
        .query(&[("state", state.as_str()), ("code", code.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.url().as_str(),
        success,
        "redirected to the Connection's success URL"
    );
    wait_state(&accounts, "ken", AccountState::Active).await;

    // The code never shows up in the operator's logs.
    assert!(!s.operator.logs().contains(&code), "authorization code in logs");
}

#[tokio::test]
async fn slow_and_oversized_requests_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _env = setup("gw-limits").await;
    let s = stack();
    let addr = s.operator.gateway_url.trim_start_matches("http://").to_owned();

    // Slowloris: headers that never finish. The gateway hangs up (408 or close) within its
    // 10-second header timeout.
    let started = std::time::Instant::now();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    conn.write_all(b"GET /connect/x HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 30 s");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "cut off after {:?}",
        started.elapsed()
    );

    // Each limit itself, on a route that would otherwise take the request: a request line longer
    // than the server reads is 414 (URI Too Long), a callback query over the gateway's own 4 KiB is refused with
    // its page, and a form body over 16 KiB is 413.
    // (HTTP clients refuse such a URL themselves: written by hand.)
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let line = format!(
        "GET /oauth/callback?state={} HTTP/1.1\r\nHost: gw\r\n\r\n",
        "a".repeat(100_000)
    );
    conn.write_all(line.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 414", "{}", String::from_utf8_lossy(&head));
    let http = reqwest::Client::new();
    let resp = http
        .get(format!(
            "{}/oauth/callback?state={}",
            s.operator.gateway_url,
            "a".repeat(5_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("too large"));
    let resp = http
        .post(format!("{}/connect/some-link", s.operator.gateway_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

/// `/metrics` on the admin port is for scrapers the cluster vouches for (TokenReview) and allows
/// (`get` on the non-resource URL `/metrics`), as controller-runtime's secure metrics are; the
/// probes stay open.
#[tokio::test]
async fn metrics_refuse_anonymous_and_unauthorized_scrapers() {
    let env = setup("metrics-auth").await;
    let s = stack();
    let url = format!("{}/metrics", s.operator.admin_url);
    let http = reqwest::Client::new();
    let scrape = |token: Option<String>| {
        let request = http.get(&url);
        let request = match token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, body) = scrape(None).await;
    assert_eq!(status, 401, "anonymous scrape: {body}");
    assert!(!body.contains("agentauth_"), "{body}");
    let (status, _) = scrape(Some("not-a-token".into())).await;
    assert_eq!(status, 401, "a token the API server does not accept");

    common::identity::service_account(&env.client, &env.ns, "no-grant", &[], None).await;
    let plain = common::identity::token(&env.client, &env.ns, "no-grant", None).await;
    let (status, body) = scrape(Some(plain)).await;
    assert_eq!(status, 403, "a ServiceAccount without the ClusterRole: {body}");
    assert!(!body.contains("agentauth_"), "{body}");

    common::identity::service_account(&env.client, &env.ns, "prometheus", &[], None).await;
    common::identity::metrics_reader(&env.client, &env.ns, "prometheus").await;
    let granted = common::identity::token(&env.client, &env.ns, "prometheus", None).await;
    // The API server's RBAC sees a new binding within moments; the operator may keep a refusal
    // for its answer TTL (10 s).
    let body = common::eventually(
        std::time::Duration::from_secs(30),
        "a ServiceAccount bound to the metrics reader gets the metrics",
        || {
            let scrape = scrape(Some(granted.clone()));
            async move {
                let (status, body) = scrape.await;
                (status == 200).then_some(body)
            }
        },
    )
    .await;
    assert!(
        body.contains("agentauth_broker_request_duration_seconds_count"),
        "{body}"
    );

    for probe in ["healthz", "readyz"] {
        let r = http
            .get(format!("{}/{probe}", s.operator.admin_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "/{probe} stays open");
    }
}
