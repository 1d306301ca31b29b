//! Hosted-form helpers for tests that drive the gateway over plain HTTP (the browser tests drive
//! the same pages in Chromium).
#![allow(dead_code)]

use agent_auth_operator::api::Connection;
use agentauth_testcluster::recorder::{Answer, Recorder, Reply};
use kube::api::{Api, PostParams};
use serde_json::json;

/// Creates an `APIKey` (or other form type) Connection with `spec` merged in.
pub async fn form_connection(
    client: &kube::Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> Connection {
    let mut full = json!({"authType": "APIKey", "authorizationLink": {"ttl": "1h"}});
    if let (Some(s), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    let conn: Connection = serde_json::from_value(json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
        "metadata": {"name": name}, "spec": full
    }))
    .unwrap();
    Api::<Connection>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &conn)
        .await
        .unwrap()
}

/// A cookie-keeping client that does not follow redirects, so tests see where the gateway sends
/// the user.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The hidden `state` of a form page.
pub fn state_of(page: &str) -> String {
    let start = page.find("name=\"state\" value=\"").expect("form has a state") + 20;
    let end = page[start..].find('"').unwrap() + start;
    page[start..end].to_owned()
}

/// The target of a gateway page's "Continue to ..." link (HTML-unescaped).
pub fn continue_href(page: &str) -> String {
    let start = page
        .find("id=\"continue\" href=\"")
        .unwrap_or_else(|| panic!("no continue link: {page}"))
        + 20;
    let end = page[start..].find('"').unwrap() + start;
    page[start..end].replace("&amp;", "&")
}

/// Opens `link`, fills `fields`, submits; returns the response to the submission.
pub async fn submit(http: &reqwest::Client, link: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let page = http.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200, "form page at {link}");
    let state = state_of(&page.text().await.unwrap());
    let mut form: Vec<(&str, &str)> = vec![("state", &state)];
    form.extend_from_slice(fields);
    http.post(link).form(&form).send().await.unwrap()
}

/// A stand-in for an API-key app's own API: `GET /me` answers 200 only for the key `good-key` in
/// `X-Api-Key`, as such an app checks its keys; anything else is a 404. Serves until dropped.
pub async fn app_api() -> Recorder {
    Recorder::loopback(Answer::with(|req| match (req.method.as_str(), req.path()) {
        ("GET", "/me") if req.header("x-api-key") == Some("good-key") => Reply::status(200),
        ("GET", "/me") => Reply::status(401),
        (_, "/me") => Reply::status(405),
        _ => Reply::status(404),
    }))
    .await
    .unwrap()
}

/// The API-key Connection both form tests use: a secret key with a pattern, a public subdomain,
/// a custom header, and a check against [`app_api`] at `app`.
pub fn crm_spec(app: &str) -> serde_json::Value {
    json!({"apiKey": {
        "instructions": "Find your key under Settings > API.",
        "fields": [
            {"name": "api_key", "label": "API key", "pattern": "[a-z-]+"},
            {"name": "subdomain", "label": "Subdomain", "secret": false, "help": "acme for acme.crm.example"}
        ],
        "header": {"name": "X-Api-Key"},
        "verify": {"url": format!("{app}/me")}
    }})
}

/// A ServiceAccount `name` with a token; `may_verify` grants it the `verify` verb on accounts.
pub async fn platform_token(client: &kube::Client, ns: &str, name: &str, may_verify: bool) -> String {
    let verbs: &[&str] = if may_verify { &["verify"] } else { &[] };
    super::identity::service_account(client, ns, name, verbs, None).await;
    super::identity::token(client, ns, name, Some(VERIFY_AUDIENCE)).await
}

/// The audience the gateway's `/verify` asks for (`--verify-audience`'s default).
pub const VERIFY_AUDIENCE: &str = "agentauth.dev/verify";

/// The platform's `POST /verify {"requestId"}`: inspects the request (identifier, provider
/// identity) without answering it.
pub async fn inspect(gateway: &str, token: &str, request_id: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{gateway}/verify"))
        .bearer_auth(token)
        .json(&json!({"requestId": request_id}))
        .send()
        .await
        .unwrap()
}

/// The platform confirms `identifier` for `request_id` and sends the user's browser `http` back to
/// the gateway's return URL: the response to that return (the page the user sees).
pub async fn confirm_and_return(
    http: &reqwest::Client,
    gateway: &str,
    token: &str,
    request_id: &str,
    identifier: &str,
) -> reqwest::Response {
    let ok = verify(gateway, token, request_id, identifier).await;
    assert_eq!(ok.status(), 200, "the platform's confirmation");
    let answer: serde_json::Value = ok.json().await.unwrap();
    assert_eq!(answer["verified"], true, "{answer}");
    let back = answer["returnUrl"].as_str().unwrap().to_owned();
    assert!(
        back.starts_with(&format!("{gateway}/verify/return?request_id=")),
        "{back}"
    );
    http.get(back).send().await.unwrap()
}

/// The platform's `POST /verify` for `request_id`, as the ServiceAccount `token`.
pub async fn verify(gateway: &str, token: &str, request_id: &str, identifier: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{gateway}/verify"))
        .bearer_auth(token)
        .json(&json!({"requestId": request_id, "identifier": identifier}))
        .send()
        .await
        .unwrap()
}
