//! The hosted pages in a real headless Chromium: a user opens an account's authorization link, signs
//! in on Dex's own login page, and lands on the operator's success page; another fills the hosted
//! API-key form, gets its validation and the app's refusal, then connects. Screenshots of each page
//! land in `target/test-output/browser/`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Instant;

use agent_auth_operator::api::AccountState;
use common::browser::Browser;
use common::fixtures::*;
use common::operator::stack;
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

    // The link leads, through the gateway's redirect, to Dex's password form (Dex has only its
    // local password connector, so it shows no connector chooser).
    browser.goto(&first_link).await.unwrap();
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
    forms::form_connection(client, ns, "crm", forms::crm_spec(&app)).await;
    account(client, ns, "dora", "crm", json!({})).await;
    let pending = wait_account(accounts, "dora", "link", |a| link(a).is_some()).await;
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));

    // The form, with labels tied to their inputs and the help text.
    browser.goto(&link(&pending).unwrap()).await.unwrap();
    browser.wait_for("label[for=f-api_key]").await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Connect crm");
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
