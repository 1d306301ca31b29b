//! API keys and bearer tokens through the hosted form, supplied directly with `credentialsRef`,
//! and user verification by the platform (`POST /verify` with a ServiceAccount token), against the
//! real API server and the operator binary. The same form in real Chromium: tests/browser.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use agent_auth_operator::api::{AccountState, Connection};
use common::fixtures::*;
use common::forms::{self, form_connection, platform_token, submit, verify};
use common::operator::stack;
use common::{eventually, hygiene, setup};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn api_key_form_validates_checks_with_the_app_and_publishes() {
    let env = setup("apikey-form").await;
    let s = stack();
    let (client, ns, accounts, secrets) = env.parts();
    let app = forms::app_api().await;
    form_connection(client, ns, "crm", forms::crm_spec(app.url())).await;
    account(client, ns, "carol", "crm", json!({})).await;
    let pending = wait_account(accounts, "carol", "link", |a| link(a).is_some()).await;
    assert_eq!(state(&pending), Some(AccountState::PendingAuth));
    let url = link(&pending).unwrap();
    let http = forms::client();

    // The form: labels tied to inputs, secret fields as password inputs, no-store, a CSP.
    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["cache-control"], "no-store");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("form-action 'self'")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<label for=\"f-api_key\">API key</label>"),
        "{html}"
    );
    assert!(
        html.contains("id=\"f-api_key\" name=\"api_key\" type=\"password\""),
        "{html}"
    );
    assert!(html.contains("name=\"subdomain\" type=\"text\""), "{html}");
    assert!(html.contains("Find your key under Settings"), "{html}");
    // Who is asking: the app's host (from the verify URL), the namespace and the Connection.
    let app_host = app.url().trim_start_matches("http://");
    assert!(
        html.contains(&format!("<title>Connect to {app_host}</title>")),
        "{html}"
    );
    assert!(
        html.contains(&format!("<dd id=\"requester-host\">{app_host}</dd>"))
            && html.contains(&format!("Connection crm in namespace {ns}")),
        "{html}"
    );

    // Server-side validation: messages per field, the secret never echoed, nothing stored.
    hygiene::remember("BAD_KEY_SHOULD_NOT_ECHO");
    let resp = submit(
        &http,
        &url,
        &[("api_key", "BAD_KEY_SHOULD_NOT_ECHO"), ("subdomain", "")],
    )
    .await;
    assert_eq!(resp.status(), 422);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("API key does not have the expected format."),
        "{html}"
    );
    assert!(html.contains("Subdomain is required."), "{html}");
    assert!(html.contains("aria-invalid=\"true\""), "{html}");
    assert!(!html.contains("BAD_KEY_SHOULD_NOT_ECHO"), "secret echoed: {html}");

    // The app refuses the key: the error shows on the form, the account stays PENDING_AUTH.
    hygiene::remember("wrong-key");
    let resp = submit(&http, &url, &[("api_key", "wrong-key"), ("subdomain", "acme")]).await;
    assert_eq!(resp.status(), 422);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("did not accept these credentials (HTTP 401)"),
        "{html}"
    );
    assert!(html.contains("value=\"acme\""), "public values are kept: {html}");
    assert!(!html.contains("wrong-key"));
    let still = accounts.get("carol").await.unwrap();
    assert_eq!(state(&still), Some(AccountState::PendingAuth));
    assert!(secrets.get_opt("carol-credentials").await.unwrap().is_none());

    // A submission from another browser (no form cookie) is refused: CSRF.
    let html = http.get(&url).send().await.unwrap().text().await.unwrap();
    let foreign = reqwest::Client::new()
        .post(&url)
        .form(&[
            ("state", forms::state_of(&html).as_str()),
            ("api_key", "good-key"),
            ("subdomain", "acme"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 400);

    // The right key: success page, ACTIVE, the Secret in the agent contract.
    hygiene::remember("good-key");
    let resp = submit(&http, &url, &[("api_key", "good-key"), ("subdomain", "acme")]).await;
    assert_eq!(resp.status(), 200);
    let html = resp.text().await.unwrap();
    assert!(html.contains("Account connected"), "{html}");
    assert!(
        html.contains(&format!("Connection crm in namespace {ns}")),
        "{html}"
    );
    let active = wait_state(accounts, "carol", AccountState::Active).await;
    assert!(link(&active).is_none(), "no link once ACTIVE");
    let secret = secrets.get("carol-credentials").await.unwrap();
    let data = secret_text(&secret);
    assert_eq!(data["authorization"], "good-key");
    assert_eq!(data["header_name"], "X-Api-Key");
    assert_eq!(data["api_key"], "good-key");
    assert_eq!(data["subdomain"], "acme");
    let doc: serde_json::Value = serde_json::from_str(&data["credentials.json"]).unwrap();
    assert_eq!(doc["subdomain"], "acme");
    assert_eq!(doc["header_name"], "X-Api-Key");
    assert!(
        active.status.unwrap().expires_at.is_none(),
        "API keys do not expire"
    );

    // The spent link cannot be used again.
    let again = http.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 410);
    let _ = s;
}

/// An account's link is issued before the Connection controller has looked at a new Connection
/// (its spec is valid, so the account goes ahead), so the form can be opened before the verdict:
/// the page waits for it instead of answering 503. The API server holds the verdict back until
/// the gateway is seen waiting, so the order is certain.
#[tokio::test]
async fn a_form_opened_before_the_connection_is_validated_waits_for_the_verdict() {
    let env = setup("apikey-early").await;
    let s = stack();
    let (client, ns, accounts, _) = env.parts();
    let app = forms::app_api().await;
    let hold = StatusHold::new(client, ns).await;
    form_connection(client, ns, "crm", forms::crm_spec(app.url())).await;
    account(client, ns, "dora", "crm", json!({})).await;
    let pending = wait_account(accounts, "dora", "link", |a| link(a).is_some()).await;
    let conns: Api<Connection> = Api::namespaced(client.clone(), ns);
    let crm = conns.get("crm").await.unwrap();
    assert!(
        crm.status.is_none(),
        "the verdict was held back: {:?}",
        crm.status
    );

    let url = link(&pending).unwrap();
    let mut page = tokio::spawn(async move { forms::client().get(&url).send().await.unwrap() });
    let waiting = eventually(
        Duration::from_secs(10),
        "the gateway to wait for the verdict",
        || async {
            s.operator
                .logs()
                .lines()
                .any(|l| l.contains("waiting for the Connection controller") && l.contains(ns))
                .then_some(())
        },
    );
    tokio::select! {
        answered = &mut page => panic!(
            "the gateway answered before the Connection was validated: HTTP {}",
            answered.unwrap().status()
        ),
        () = waiting => {}
    }
    hold.release().await;
    // A metadata change sends the controller back to the Connection at once, not after its backoff.
    patch_connection(
        client,
        ns,
        "crm",
        json!({"metadata": {"annotations": {"test/nudge": "1"}}}),
    )
    .await;
    let page = page.await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Find your key under Settings"), "{html}");
}

/// The API server refusing status writes to Connections in one namespace (a
/// ValidatingAdmissionPolicy), so a test decides when the Connection controller's verdict lands.
struct StatusHold {
    client: kube::Client,
    ns: String,
    name: String,
}

impl StatusHold {
    /// In force once this returns: a dry-run status write to a probe Connection is refused.
    async fn new(client: &kube::Client, ns: &str) -> StatusHold {
        let name = format!("hold-status-{ns}");
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["agentauth.dev"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["connections/status"]
                }]},
                "validations": [{"expression": "false", "message": "held by the test"}]
            }
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
            }
        }))
        .unwrap();
        let pp = PostParams::default();
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .create(&pp, &policy)
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .create(&pp, &binding)
            .await
            .unwrap();
        form_connection(
            client,
            ns,
            "hold-probe",
            json!({"apiKey": {"fields": [{"name": "key", "label": "Key"}]}}),
        )
        .await;
        let hold = StatusHold {
            client: client.clone(),
            ns: ns.to_owned(),
            name,
        };
        eventually(
            Duration::from_secs(30),
            "the status hold to be in force",
            || async {
                matches!(hold.probe().await, Err(e) if e.to_string().contains("held by the test"))
                    .then_some(())
            },
        )
        .await;
        hold
    }

    /// A dry-run status write to the probe Connection.
    async fn probe(&self) -> Result<(), kube::Error> {
        let pp = PatchParams {
            dry_run: true,
            ..Default::default()
        };
        Api::<Connection>::namespaced(self.client.clone(), &self.ns)
            .patch_status(
                "hold-probe",
                &pp,
                &Patch::Merge(json!({"status": {"observedGeneration": 0}})),
            )
            .await
            .map(|_| ())
    }

    /// Lets status writes through again; returns once the API server accepts them.
    async fn release(&self) {
        let dp = DeleteParams::default();
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .delete(&self.name, &dp)
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .delete(&self.name, &dp)
            .await
            .unwrap();
        eventually(
            Duration::from_secs(30),
            "the status hold to be lifted",
            || async { self.probe().await.ok() },
        )
        .await;
    }
}

#[tokio::test]
async fn bearer_token_defaults_and_garbage_submissions() {
    let env = setup("bearer-form").await;
    stack();
    let (client, ns, accounts, _) = env.parts();
    form_connection(client, ns, "tool", json!({"authType": "BearerToken"})).await;
    account(client, ns, "dave", "tool", json!({})).await;
    let pending = wait_account(accounts, "dave", "link", |a| link(a).is_some()).await;
    let link = link(&pending).unwrap();
    let http = forms::client();

    // Garbage bodies get a 4xx page, never a crash.
    for body in ["%%%", "state=x&state=y", "state=forged.sig&token=t", ""] {
        let resp = http
            .post(&link)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_client_error(), "{body:?}: {}", resp.status());
    }
    hygiene::remember("tok-123456");
    let resp = submit(&http, &link, &[("token", "tok-123456")]).await;
    assert_eq!(resp.status(), 200);
    wait_state(accounts, "dave", AccountState::Active).await;
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get("dave-credentials")
        .await
        .unwrap();
    let data = secret_text(&secret);
    assert_eq!(data["authorization"], "Bearer tok-123456");
    assert_eq!(data["access_token"], "tok-123456");
    assert_eq!(data["token_type"], "Bearer");
    assert!(!data.contains_key("header_name"));
}

#[tokio::test]
async fn credentials_ref_activates_without_a_user_and_follows_the_secret() {
    let env = setup("apikey-ref").await;
    stack();
    let (client, ns, accounts, secrets) = env.parts();
    form_connection(client, ns, "stripe-like", json!({})).await;
    let source = |key: &str| Secret {
        metadata: ObjectMeta {
            name: Some("team-key".into()),
            labels: Some(agent_auth_operator::store::secret_ref::opt_in_labels()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("api_key".to_owned(), key.to_owned())])),
        ..Default::default()
    };
    hygiene::remember("sk-team-one");
    secrets
        .create(&PostParams::default(), &source("sk-team-one"))
        .await
        .unwrap();
    account(
        client,
        ns,
        "team",
        "stripe-like",
        json!({"credentialsRef": {"name": "team-key"}}),
    )
    .await;
    let active = wait_state(accounts, "team", AccountState::Active).await;
    assert!(link(&active).is_none(), "no user, no link");
    let published = secrets.get("team-credentials").await.unwrap();
    assert_eq!(secret_text(&published)["api_key"], "sk-team-one");

    // Rotating the source Secret reaches the agent Secret (on the periodic recheck, or at once
    // when the account is touched, as here).
    hygiene::remember("sk-team-two");
    secrets
        .replace("team-key", &PostParams::default(), &source("sk-team-two"))
        .await
        .unwrap();
    accounts
        .patch(
            "team",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"example.com/touch": "1"}}})),
        )
        .await
        .unwrap();
    eventually(REACT, "rotated key published", || async {
        let s = secrets.get("team-credentials").await.ok()?;
        (secret_text(&s)["api_key"] == "sk-team-two").then_some(())
    })
    .await;

    // A reference on an OAuth connection is the account's error, not the Connection's.
    dex_connection(client, ns, "dex", &stack().dex, &["openid"]).await;
    account(
        client,
        ns,
        "wrong",
        "dex",
        json!({"credentialsRef": {"name": "team-key"}}),
    )
    .await;
    let wrong = wait_state(accounts, "wrong", AccountState::Error).await;
    assert_eq!(ready(&wrong).unwrap().1, "CredentialsRefUnsupported");

    // A missing source Secret: ERROR with the reason, nothing published.
    account(
        client,
        ns,
        "lost",
        "stripe-like",
        json!({"credentialsRef": {"name": "nope"}}),
    )
    .await;
    let lost = wait_state(accounts, "lost", AccountState::Error).await;
    let msg = ready_message(&lost);
    assert!(
        msg.contains("spec.credentialsRef: Secret nope not found"),
        "{msg}"
    );
    assert!(secrets.get_opt("lost-credentials").await.unwrap().is_none());
}

/// The `request_id` the gateway put on the platform's verify URL (the page's continue link).
fn request_id(location: &str) -> String {
    let url = url::Url::parse(location).unwrap();
    assert_eq!(url.host_str(), Some("platform.example"), "{location}");
    url.query_pairs()
        .find(|(k, _)| k == "request_id")
        .unwrap()
        .1
        .into_owned()
}

#[tokio::test]
async fn the_platform_verifies_the_user_before_anything_is_published() {
    let env = setup("verify").await;
    let s = stack();
    let gateway = s.operator.gateway_url.as_str();
    let (client, ns, accounts, secrets) = env.parts();
    form_connection(
        client,
        ns,
        "keys",
        json!({"verification": {"url": "https://platform.example/agent-auth/verify"}}),
    )
    .await;
    account(client, ns, "erin", "keys", json!({})).await;
    let platform = platform_token(client, ns, "platform", true).await;
    let stranger = platform_token(client, ns, "stranger", false).await;

    // The user submits; the credential is held back and the user goes to the platform.
    let pending = wait_account(accounts, "erin", "link", |a| link(a).is_some()).await;
    let http = forms::client();
    hygiene::remember("key-of-someone-else");
    let resp = submit(
        &http,
        &link(&pending).unwrap(),
        &[("api_key", "key-of-someone-else")],
    )
    .await;
    // A page with a link, not a redirect: browsers block a cross-origin redirect after a form POST
    // under the gateway's `form-action 'self'`.
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("Continue to platform.example"), "{page}");
    let first = request_id(&forms::continue_href(&page));
    let waiting = wait_state(accounts, "erin", AccountState::PendingVerification).await;
    assert!(link(&waiting).is_none());
    assert!(secrets.get_opt("erin-credentials").await.unwrap().is_none());

    // Unauthenticated, garbage, or without RBAC for `verify`: refused, nothing changes.
    assert_eq!(
        verify(gateway, "not-a-token", &first, "erin@example.com")
            .await
            .status(),
        401
    );
    assert_eq!(
        verify(gateway, &stranger, &first, "erin@example.com")
            .await
            .status(),
        403
    );
    assert_eq!(
        verify(gateway, &platform, "forged.request", "erin@example.com")
            .await
            .status(),
        404
    );
    let garbage = reqwest::Client::new()
        .post(format!("{gateway}/verify"))
        .bearer_auth(&platform)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);

    // The platform reports another user: discarded, a new link, nothing ever published.
    let wrong = verify(gateway, &platform, &first, "mallory@example.com").await;
    assert_eq!(wrong.status(), 403);
    let back = wait_account(accounts, "erin", "new link after a failed verification", |a| {
        state(a) == Some(AccountState::PendingAuth) && link(a).is_some()
    })
    .await;
    assert_eq!(ready(&back).unwrap().1, "VerificationFailed");
    assert!(secrets.get_opt("erin-credentials").await.unwrap().is_none());
    assert_eq!(
        verify(gateway, &platform, &first, "erin@example.com")
            .await
            .status(),
        410,
        "one-time"
    );

    // Through the new link, confirmed as the account's user: published, ACTIVE.
    hygiene::remember("erins-own-key");
    let resp = submit(&http, &link(&back).unwrap(), &[("api_key", "erins-own-key")]).await;
    assert_eq!(resp.status(), 200);
    let second = request_id(&forms::continue_href(&resp.text().await.unwrap()));
    wait_state(accounts, "erin", AccountState::PendingVerification).await;
    // The platform sees whose account it is (no provider identity for an API key).
    let seen = forms::inspect(gateway, &platform, &second).await;
    assert_eq!(seen.status(), 200);
    let seen: serde_json::Value = seen.json().await.unwrap();
    assert_eq!(seen["identifier"], "erin@example.com", "{seen}");
    assert_eq!(seen["confirmed"], false, "{seen}");
    // A token for another audience (the API server's) is refused.
    let api_token = common::identity::token(client, ns, "platform", None).await;
    assert_eq!(forms::inspect(gateway, &api_token, &second).await.status(), 401);
    // Confirmed, but the request id replayed from another browser (no cookie) publishes nothing.
    let ok = verify(gateway, &platform, &second, "erin@example.com").await;
    assert_eq!(ok.status(), 200);
    let back: serde_json::Value = ok.json().await.unwrap();
    let back = back["returnUrl"].as_str().unwrap().to_owned();
    let elsewhere = forms::client().get(&back).send().await.unwrap();
    assert_eq!(elsewhere.status(), 403);
    assert!(elsewhere.text().await.unwrap().contains("Nothing was saved"));
    wait_state(accounts, "erin", AccountState::PendingVerification).await;
    assert!(secrets.get_opt("erin-credentials").await.unwrap().is_none());
    // The browser that started the flow comes back: published, ACTIVE.
    let done = forms::confirm_and_return(&http, gateway, &platform, &second, "erin@example.com").await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("Account connected"));
    wait_state(accounts, "erin", AccountState::Active).await;
    let published = secrets.get("erin-credentials").await.unwrap();
    assert_eq!(secret_text(&published)["api_key"], "erins-own-key");
    wait_event(client, ns, "erin", "VerificationFailed").await;
}

/// Onward pages whose origin is not on `--allowed-redirect-origin` are never followed: a
/// verification page stores nothing and keeps the link usable; a success page leaves the user on
/// the gateway's page, which says why.
#[tokio::test]
async fn onward_pages_must_be_on_the_allowlist() {
    let env = setup("onward").await;
    stack();
    let (client, ns, accounts, secrets) = env.parts();
    form_connection(
        client,
        ns,
        "elsewhere",
        json!({"verification": {"url": "https://evil.example/verify"}}),
    )
    .await;
    form_connection(
        client,
        ns,
        "welcome",
        json!({"successRedirectUrl": "https://platform.example.evil.example/welcome"}),
    )
    .await;
    account(client, ns, "fay", "elsewhere", json!({})).await;
    account(client, ns, "gus", "welcome", json!({})).await;
    let http = forms::client();

    let fay = wait_account(accounts, "fay", "link", |a| link(a).is_some()).await;
    hygiene::remember("fays-key-0001");
    let resp = submit(&http, &link(&fay).unwrap(), &[("api_key", "fays-key-0001")]).await;
    assert_eq!(resp.status(), 403);
    let page = resp.text().await.unwrap();
    assert!(
        page.contains(
            "https://evil.example to confirm who you are, but that page is not allowed by this gateway. Nothing was saved."
        ),
        "{page}"
    );
    assert!(!page.contains("request_id"), "{page}");
    // Nothing stored: still PENDING_AUTH, and the same link still shows the form.
    let still = accounts.get("fay").await.unwrap();
    assert_eq!(state(&still), Some(AccountState::PendingAuth));
    assert_eq!(link(&still), link(&fay));
    assert_eq!(http.get(link(&fay).unwrap()).send().await.unwrap().status(), 200);
    assert!(secrets.get_opt("fay-credentials").await.unwrap().is_none());

    let gus = wait_account(accounts, "gus", "link", |a| link(a).is_some()).await;
    hygiene::remember("gus-key-0002");
    let resp = submit(&http, &link(&gus).unwrap(), &[("api_key", "gus-key-0002")]).await;
    assert_eq!(resp.status(), 200);
    let page = resp.text().await.unwrap();
    assert!(page.contains("Account connected"), "{page}");
    assert!(
        page.contains("https://platform.example.evil.example is not allowed by this gateway"),
        "{page}"
    );
    assert!(
        !page.contains("href=\"https://platform.example.evil.example"),
        "{page}"
    );
    wait_state(accounts, "gus", AccountState::Active).await;
}
