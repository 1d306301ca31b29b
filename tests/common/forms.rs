//! Hosted-form helpers for tests that drive the gateway over plain HTTP (the browser tests drive
//! the same pages in Chromium).
#![allow(dead_code)]

use agent_auth_operator::api::Connection;
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

/// Opens `link`, fills `fields`, submits; returns the response to the submission.
pub async fn submit(http: &reqwest::Client, link: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let page = http.get(link).send().await.unwrap();
    assert_eq!(page.status(), 200, "form page at {link}");
    let state = state_of(&page.text().await.unwrap());
    let mut form: Vec<(&str, &str)> = vec![("state", &state)];
    form.extend_from_slice(fields);
    http.post(link).form(&form).send().await.unwrap()
}
