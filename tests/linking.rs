//! Account linking protected by default, in a real headless Chromium against Dex: the link shows
//! an interstitial (which account, which platform) and a scanner that fetches it never reaches
//! the provider; the provider's identity of the user reaches the platform's verification step,
//! which refuses a user who signed in at Dex as someone else (nothing is published); the right
//! user is confirmed, and the credential is published only when the browser that started the flow
//! comes back, never for a request id replayed from elsewhere. Screenshots land in
//! `target/test-output/browser/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use agent_auth_operator::api::{AccountState, ConnectedAccount};
use agentauth_testcluster::recorder::{Answer, Recorder, Reply};
use common::browser::Browser;
use common::fixtures::*;
use common::operator::{platform_origin, stack};
use common::{forms, setup};
use serde_json::{Value, json};

/// The platform's verify page at [`platform_origin`], recording the `request_id`s it is opened with.
async fn platform_page() -> Recorder {
    let addr = platform_origin().trim_start_matches("http://").to_owned();
    Recorder::start(
        &addr,
        Answer::with(|req| match req.path() {
            "/agent-auth/verify" => Reply::html(
                200,
                "<!doctype html><title>Platform</title><h1>Platform: confirm it is you</h1>",
            ),
            _ => Reply::status(404),
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot serve the platform page at {addr}: {e}"))
}

/// A recording hop in front of Dex's authorization endpoint: every request it sees is one that
/// reached the provider; it sends the browser on to Dex with the same query.
async fn dex_front(dex_authorize: String) -> Recorder {
    Recorder::loopback(Answer::with(move |req| {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(req.query())
            .finish();
        Reply::status(302).header("location", &format!("{dex_authorize}?{query}"))
    }))
    .await
    .unwrap()
}

/// The `request_id` of the `n`-th opening of the platform page.
fn request_id(page: &Recorder, n: usize) -> String {
    let seen: Vec<String> = page
        .requests()
        .iter()
        .filter(|r| r.path() == "/agent-auth/verify")
        .filter_map(|r| r.query_param("request_id"))
        .collect();
    assert_eq!(seen.len(), n + 1, "the platform page was opened {} times", n + 1);
    seen[n].clone()
}

/// Opens `link` in a fresh Chromium, checks the interstitial, presses Continue and signs in at
/// Dex as `user`; returns once the platform's verify page shows.
async fn link_in_chromium(
    link: &str,
    account: &ConnectedAccount,
    ns: &str,
    user: &common::dex::DexUser,
    shot: &str,
) -> Browser {
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    browser.goto(link).await.unwrap();
    browser.wait_for("#interstitial").await.unwrap();
    assert_eq!(
        browser.text("#requester-account").await.unwrap(),
        account.spec.identifier
    );
    assert_eq!(
        browser.text("#requester-connection").await.unwrap(),
        format!("Connection dex in namespace {ns}")
    );
    assert!(
        browser
            .text("#interstitial-text")
            .await
            .unwrap()
            .contains(&format!(
                "You are connecting the account {}",
                account.spec.identifier
            ))
    );
    browser
        .screenshot(&format!("{shot}-1-interstitial"))
        .await
        .unwrap();
    browser.click("#continue").await.unwrap();
    browser.wait_for("input[name=password]").await.unwrap();
    browser.fill("input[name=login]", &user.email).await.unwrap();
    browser
        .fill("input[name=password]", &user.password)
        .await
        .unwrap();
    browser.click("button[type=submit]").await.unwrap();
    browser
        .wait_for_text("h1", "Platform: confirm it is you")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser.screenshot(&format!("{shot}-2-platform")).await.unwrap();
    browser
}

/// What the platform learns about a request: identifier and provider identity.
async fn inspect(gateway: &str, token: &str, request_id: &str) -> Value {
    let resp = forms::inspect(gateway, token, request_id).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn the_platform_compares_the_provider_identity_and_only_the_starting_browser_publishes() {
    let env = setup("linking").await;
    let s = stack();
    let gateway = s.operator.gateway_url.as_str();
    let (client, ns, accounts, secrets) = env.parts();
    let platform_page = platform_page().await;
    let front = dex_front(s.dex.authorization_url().to_owned()).await;
    let oauth2 = json!({
        "clientId": s.dex.next_client_id(),
        "authorizationUrl": format!("{}/auth", front.url()),
        "tokenUrl": s.dex.token_url(),
        "issuer": s.dex.issuer,
        "scopes": ["openid", "email"],
        "legacyRedirectUri": true,
    });
    let verify_page = format!("{}/agent-auth/verify", platform_origin());
    oauth_connection(
        client,
        ns,
        "dex",
        &s.dex.client_secret,
        oauth2,
        json!({"authorizationLink": {"ttl": "1h"}, "verification": {"url": verify_page}}),
    )
    .await;
    let (owner, stranger) = (s.dex.user(1), s.dex.user(2));
    account(client, ns, "ivy", "dex", json!({"identifier": owner.email})).await;
    let platform = forms::platform_token(client, ns, "platform", true).await;
    let pending = wait_account(accounts, "ivy", "link", |a| link(a).is_some()).await;
    let first = link(&pending).unwrap();

    // A link scanner fetches the link: the interstitial, and nothing reaches the provider.
    let scanner = reqwest::Client::new();
    for req in [scanner.get(&first), scanner.head(&first)] {
        assert_eq!(req.send().await.unwrap().status(), 200);
    }
    let page = scanner.get(&first).send().await.unwrap().text().await.unwrap();
    assert!(
        page.contains("id=\"interstitial\"") && page.contains(&owner.email),
        "{page}"
    );
    front.assert_untouched("a scanner's GET and HEAD of the link");

    // The owner's link opened by someone signed in at Dex as another user: the platform sees a
    // provider identity that is not its user's and refuses; nothing is published.
    let browser = link_in_chromium(&first, &pending, ns, &stranger, "wrong").await;
    assert_eq!(front.requests().len(), 1, "Continue reached the provider once");
    let wrong = request_id(&platform_page, 0);
    let seen = inspect(gateway, &platform, &wrong).await;
    assert_eq!(seen["identifier"], owner.email, "{seen}");
    assert_eq!(seen["providerIdentity"]["email"], stranger.email, "{seen}");
    assert_eq!(seen["providerIdentity"]["issuer"], s.dex.issuer, "{seen}");
    let refused = reqwest::Client::new()
        .post(format!("{gateway}/verify"))
        .bearer_auth(&platform)
        .json(&json!({"requestId": wrong, "refuse": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    browser.goto(&verify_return(gateway, &wrong)).await.unwrap();
    browser
        .wait_for_text("h1", "already used")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser.close().await.unwrap();
    let back = wait_account(accounts, "ivy", "a new link after the refusal", |a| {
        state(a) == Some(AccountState::PendingAuth) && link(a).is_some_and(|l| l != first)
    })
    .await;
    assert_eq!(ready(&back).unwrap().1, "VerificationFailed");
    assert!(back.status.as_ref().unwrap().provider_identity.is_none());
    assert!(secrets.get_opt("ivy-credentials").await.unwrap().is_none());

    // The owner: the platform sees its own user and confirms.
    let browser = link_in_chromium(&link(&back).unwrap(), &back, ns, &owner, "owner").await;
    let right = request_id(&platform_page, 1);
    let seen = inspect(gateway, &platform, &right).await;
    assert_eq!(seen["providerIdentity"]["email"], owner.email, "{seen}");
    assert_eq!(seen["providerIdentity"]["subject"], owner.sub, "{seen}");
    let ok = forms::verify(gateway, &platform, &right, &owner.email).await;
    assert_eq!(ok.status(), 200);
    let return_url = ok.json::<Value>().await.unwrap()["returnUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    // The request id replayed from another browser (no cookie) publishes nothing.
    let replay = reqwest::Client::new().get(&return_url).send().await.unwrap();
    assert_eq!(replay.status(), 403);
    assert_eq!(
        state(&accounts.get("ivy").await.unwrap()),
        Some(AccountState::PendingVerification)
    );
    assert!(secrets.get_opt("ivy-credentials").await.unwrap().is_none());

    // The browser that started the flow comes back (as the platform redirects it): ACTIVE.
    browser.goto(&return_url).await.unwrap();
    browser
        .wait_for_text("h1", "Account connected")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser.screenshot("owner-3-connected").await.unwrap();
    browser.close().await.unwrap();
    let active = wait_state(accounts, "ivy", AccountState::Active).await;
    remember_credentials(client, ns, &active).await;
    let identity = active.status.unwrap().provider_identity.unwrap();
    assert_eq!(identity.email.as_deref(), Some(owner.email.as_str()));
    assert_eq!(identity.subject.as_deref(), Some(owner.sub.as_str()));
    assert!(secrets.get_opt("ivy-credentials").await.unwrap().is_some());
}

fn verify_return(gateway: &str, request_id: &str) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("request_id", request_id)
        .finish();
    format!("{gateway}/verify/return?{q}")
}
