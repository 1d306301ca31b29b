//! The hosted pages in a real headless Chromium: a user opens an account's authorization link, signs
//! in on Dex's own login page (after the gateway's interstitial), and lands on the operator's
//! success page; another fills the hosted
//! API-key form, gets its validation and the app's refusal, then connects; a third fills a form
//! whose Connection needs the platform to confirm the user, follows the gateway's link to the
//! platform's page, and is ACTIVE once the platform confirms and the browser returns. Screenshots of each page land in
//! `target/test-output/browser/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Instant;

use agent_auth_operator::api::AccountState;
use agentauth_testcluster::recorder::{Answer, Recorder, Reply};
use common::browser::Browser;
use common::fixtures::*;
use common::operator::{platform_origin, stack};
use common::{forms, hygiene, setup};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;

#[tokio::test]
async fn user_signs_in_at_dex_in_chromium() {
    let started = Instant::now();
    let env = setup("browser").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    let user = s.dex.user(0);

    dex_connection(client, ns, "dex", &s.dex, &["openid", "email", "offline_access"]).await;
    account(client, ns, "carol", "dex", json!({})).await;
    let pending = wait_account(accounts, "carol", "authorization link", |a| {
        state(a) == Some(AccountState::PendingAuth) && link(a).is_some()
    })
    .await;
    let first_link = link(&pending).unwrap();
    let ready_at = started.elapsed();

    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    let browser_at = started.elapsed();

    // The link shows the interstitial first: which account, which platform; Continue leads to
    // Dex's password form (Dex has only its local password connector, so no connector chooser).
    browser.goto(&first_link).await.unwrap();
    browser.wait_for("#interstitial").await.unwrap();
    assert_eq!(
        browser.text("#requester-account").await.unwrap(),
        pending.spec.identifier
    );
    browser.screenshot("0-interstitial").await.unwrap();
    browser.click("#continue").await.unwrap();
    browser.wait_for("input[name=password]").await.unwrap();
    let login_url = browser.current_url().await.unwrap();
    assert!(
        login_url.starts_with(&s.dex.issuer),
        "the link should land on Dex's login page, not {login_url}"
    );
    browser.screenshot("1-dex-login").await.unwrap();

    // Sign in; Dex skips its approval screen and redirects to the gateway's callback.
    browser.fill("input[name=login]", &user.email).await.unwrap();
    browser
        .fill("input[name=password]", &user.password)
        .await
        .unwrap();
    browser.click("button[type=submit]").await.unwrap();
    let heading = browser
        .wait_for_text("h1", "Account connected")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(heading, "Account connected");
    let done_url = browser.current_url().await.unwrap();
    assert!(
        done_url.starts_with(&format!("{}/oauth/callback", s.operator.gateway_url)),
        "the success page is the gateway's callback, not {done_url}"
    );
    assert_eq!(
        browser.text("p").await.unwrap(),
        "You can close this window and return to the app."
    );
    let html = browser.page_source().await.unwrap();
    assert!(!html.contains("code="), "the success page carries no code");
    browser.screenshot("2-account-connected").await.unwrap();

    // The operator stored the credential.
    let active = wait_state(accounts, "carol", AccountState::Active).await;
    remember_credentials(client, ns, &active).await;
    let secret = secrets.get("carol-credentials").await.unwrap();
    let data = secret_text(&secret);
    assert!(
        data.get("authorization")
            .is_some_and(|v| v.starts_with("Bearer ")),
        "the agent Secret has an authorization header value"
    );

    // The spent link is refused with a page that says so.
    browser.goto(&first_link).await.unwrap();
    browser
        .wait_for_text("h1", "This link was already used")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        browser
            .text("p")
            .await
            .unwrap()
            .contains("Ask for a new link if you need one.")
    );
    browser.screenshot("3-link-used").await.unwrap();

    browser.close().await.unwrap();
    eprintln!(
        "timing: account pending after {ready_at:?}, Chromium ready after {browser_at:?}, done after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn user_fills_the_api_key_form_in_chromium() {
    let env = setup("browser-form").await;
    stack();
    let (client, ns, accounts, _) = env.parts();
    let app = forms::app_api().await;
    forms::form_connection(client, ns, "crm", forms::crm_spec(app.url())).await;
    account(client, ns, "dora", "crm", json!({})).await;
    let pending = wait_account(accounts, "dora", "link", |a| link(a).is_some()).await;
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));

    // The form, with labels tied to their inputs and the help text.
    browser.goto(&link(&pending).unwrap()).await.unwrap();
    browser.wait_for("label[for=f-api_key]").await.unwrap();
    // A Connection with its own form: a neutral title naming the host its key is checked at, and
    // who asks.
    let app_host = app.url().trim_start_matches("http://");
    assert_eq!(
        browser.text("h1").await.unwrap(),
        format!("Connect to {app_host}")
    );
    assert_eq!(browser.text("#requester-host").await.unwrap(), app_host);
    assert_eq!(
        browser.text("#requester-connection").await.unwrap(),
        format!("Connection crm in namespace {ns}")
    );
    assert_eq!(browser.text("label[for=f-subdomain]").await.unwrap(), "Subdomain");
    assert_eq!(
        browser.text("#f-subdomain-help").await.unwrap(),
        "acme for acme.crm.example"
    );
    browser.screenshot("form-1-empty").await.unwrap();

    // An invalid value: the message sits next to the field, the secret input comes back empty.
    hygiene::remember("NOT A KEY");
    browser.fill("#f-api_key", "NOT A KEY").await.unwrap();
    browser.fill("#f-subdomain", "acme").await.unwrap();
    browser.click("button[type=submit]").await.unwrap();
    let message = browser
        .wait_for_text("#f-api_key-error", "expected format")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(message, "API key does not have the expected format.");
    let html = browser.page_source().await.unwrap();
    assert!(!html.contains("NOT A KEY"), "the secret is not echoed");
    assert!(html.contains("value=\"acme\""), "public values are kept");
    browser.screenshot("form-2-invalid").await.unwrap();

    // The app refuses the key: the error on the form, still PENDING_AUTH.
    hygiene::remember("wrong-key");
    browser.fill("#f-api_key", "wrong-key").await.unwrap();
    browser.click("button[type=submit]").await.unwrap();
    browser
        .wait_for_text("#form-error", "HTTP 401")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser.screenshot("form-3-refused-by-app").await.unwrap();
    assert_eq!(
        state(&accounts.get("dora").await.unwrap()),
        Some(AccountState::PendingAuth)
    );

    // The right key: the success page, ACTIVE, the key in the agent Secret.
    hygiene::remember("good-key");
    browser.fill("#f-api_key", "good-key").await.unwrap();
    browser.click("button[type=submit]").await.unwrap();
    browser
        .wait_for_text("h1", "Account connected")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    browser.screenshot("form-4-connected").await.unwrap();
    wait_state(accounts, "dora", AccountState::Active).await;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get("dora-credentials")
        .await
        .unwrap();
    let data = secret_text(&secret);
    assert_eq!(
        (data["authorization"].as_str(), data["subdomain"].as_str()),
        ("good-key", "acme")
    );
    browser.close().await.unwrap();
}

/// The platform's verify page, served at [`platform_origin`]: it shows the user a heading at
/// `/agent-auth/verify` (anything else is a 404); [`opened_with`] tells the `request_id`s it was
/// opened with.
async fn platform_page() -> Recorder {
    let addr = platform_origin().trim_start_matches("http://").to_owned();
    Recorder::start(
        &addr,
        Answer::with(|req| match req.path() {
            "/agent-auth/verify" => Reply::html(
                200,
                "<!doctype html><title>Platform</title><h1>Platform: confirming it is you</h1>",
            ),
            _ => Reply::status(404),
        }),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot serve the platform page at {addr}: {e}"))
}

/// Every `request_id` the platform page was opened with.
fn opened_with(page: &Recorder) -> Vec<String> {
    page.requests()
        .iter()
        .filter(|r| r.path() == "/agent-auth/verify")
        .filter_map(|r| r.query_param("request_id"))
        .collect()
}

#[tokio::test]
async fn user_fills_a_form_and_the_platform_verifies_them_in_chromium() {
    let env = setup("browser-verify").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    let opened = platform_page().await;
    let verify_page = format!("{}/agent-auth/verify", platform_origin());
    forms::form_connection(client, ns, "keys", json!({"verification": {"url": verify_page}})).await;
    account(client, ns, "hana", "keys", json!({})).await;
    let platform = forms::platform_token(client, ns, "platform", true).await;
    let pending = wait_account(accounts, "hana", "link", |a| link(a).is_some()).await;
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));

    browser.goto(&link(&pending).unwrap()).await.unwrap();
    browser.wait_for("#f-api_key").await.unwrap();
    assert_eq!(
        browser.text("#requester-connection").await.unwrap(),
        format!("Connection keys in namespace {ns}")
    );
    hygiene::remember("hanas-key-0001");
    browser.fill("#f-api_key", "hanas-key-0001").await.unwrap();
    browser.click("button[type=submit]").await.unwrap();

    // After the POST: the gateway's own page with a link to the platform (a cross-origin redirect
    // here is what Chromium blocks under `form-action 'self'`).
    browser
        .wait_for_text("h1", "One more step")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let platform_host = platform_origin().trim_start_matches("http://");
    assert_eq!(
        browser.text("#continue").await.unwrap(),
        format!("Continue to {platform_host}")
    );
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .starts_with(&s.operator.gateway_url)
    );
    browser.screenshot("verify-1-one-more-step").await.unwrap();
    wait_state(accounts, "hana", AccountState::PendingVerification).await;
    assert!(secrets.get_opt("hana-credentials").await.unwrap().is_none());

    // The link takes the user to the platform's page, request id and all.
    browser.click("#continue").await.unwrap();
    browser
        .wait_for_text("h1", "Platform: confirming it is you")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(browser.current_url().await.unwrap().starts_with(&verify_page));
    browser.screenshot("verify-2-platform").await.unwrap();
    let request_id = {
        let seen = opened_with(&opened);
        assert_eq!(
            seen.len(),
            1,
            "the platform page was opened once with a request id"
        );
        seen[0].clone()
    };

    // The platform confirms the user and sends the browser back: ACTIVE, the key published.
    let ok = forms::verify(
        &s.operator.gateway_url,
        &platform,
        &request_id,
        "hana@example.com",
    )
    .await;
    assert_eq!(ok.status(), 200);
    let answer: serde_json::Value = ok.json().await.unwrap();
    browser.goto(answer["returnUrl"].as_str().unwrap()).await.unwrap();
    browser
        .wait_for_text("h1", "Account connected")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait_state(accounts, "hana", AccountState::Active).await;
    let secret = secrets.get("hana-credentials").await.unwrap();
    assert_eq!(secret_text(&secret)["api_key"], "hanas-key-0001");
    browser.close().await.unwrap();
}
