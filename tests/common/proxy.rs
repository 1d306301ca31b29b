//! A fault-injecting proxy in front of a token endpoint (test code, not a mock of the provider:
//! it forwards to the real Dex unless told to fail). It counts refresh attempts and records the
//! refresh tokens it forwarded, so tests can prove bounded retries and that no refresh token is
//! ever used twice.

use std::sync::{Arc, Mutex};

use agent_auth_operator::api::{ConnectedAccount, Connection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::fixtures::{authorized, dex_connection};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    None,
    ServerError,
    Truncated,
    InvalidGrant,
    InvalidClient,
    RateLimited,
    Slow,
}

#[derive(Default)]
pub struct Proxy {
    /// The fault applied to refresh requests.
    pub fault: Mutex<Option<Fault>>,
    /// Code exchanges are held (never answered) while this is set.
    pub hold_exchanges: Mutex<bool>,
    /// Code exchanges that arrived.
    pub exchanges: Mutex<u32>,
    /// Refresh requests seen while a fault was active.
    pub faulted_refreshes: Mutex<u32>,
    /// Refresh tokens forwarded to the provider, in order.
    pub forwarded_refresh_tokens: Mutex<Vec<String>>,
}

/// Starts the proxy; returns its token URL.
pub async fn start_proxy(proxy: Arc<Proxy>, upstream: String) -> String {
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let proxy = proxy.clone();
            let upstream = upstream.clone();
            async move {
                let fault = proxy.fault.lock().unwrap().unwrap_or(Fault::None);
                let refresh = body.contains("grant_type=refresh_token");
                if !refresh {
                    *proxy.exchanges.lock().unwrap() += 1;
                    if *proxy.hold_exchanges.lock().unwrap() {
                        return futures::future::pending().await; // a provider that never answers
                    }
                }
                if fault != Fault::None && refresh {
                    *proxy.faulted_refreshes.lock().unwrap() += 1;
                    return match fault {
                        Fault::ServerError => {
                            (StatusCode::SERVICE_UNAVAILABLE, "upstream down").into_response()
                        }
                        Fault::Truncated => (
                            StatusCode::OK,
                            [("content-type", "application/json")],
                            r#"{"access_token":"ab"#,
                        )
                            .into_response(),
                        Fault::InvalidGrant => (
                            StatusCode::BAD_REQUEST,
                            [("content-type", "application/json")],
                            r#"{"error":"invalid_grant"}"#,
                        )
                            .into_response(),
                        Fault::InvalidClient => (
                            StatusCode::UNAUTHORIZED,
                            [("content-type", "application/json")],
                            r#"{"error":"invalid_client"}"#,
                        )
                            .into_response(),
                        Fault::RateLimited => (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "40")],
                            "slow down",
                        )
                            .into_response(),
                        Fault::Slow => futures::future::pending().await, // a provider that never answers
                        Fault::None => unreachable!(),
                    };
                }
                if refresh {
                    let token = url::form_urlencoded::parse(body.as_bytes())
                        .find(|(k, _)| k == "refresh_token")
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default();
                    proxy.forwarded_refresh_tokens.lock().unwrap().push(token);
                }
                let mut req = reqwest::Client::new()
                    .post(&upstream)
                    .body(body)
                    .header("content-type", "application/x-www-form-urlencoded");
                if let Some(auth) = headers.get("authorization") {
                    req = req.header("authorization", auth.to_str().unwrap());
                }
                let resp = req.send().await.unwrap();
                let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
                (
                    status,
                    [("content-type", "application/json")],
                    resp.text().await.unwrap(),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A Connection `dex` in the test's namespace whose token URL is a fresh proxy in front of the
/// stack's Dex. The proxy answers its faults itself (Dex never sees those requests), so it stands
/// in for a provider that does not rotate: `refresh.rotation.policy: None`.
pub async fn proxied_connection(env: &super::TestEnv) -> Arc<Proxy> {
    let s = super::operator::stack();
    let proxy = Arc::new(Proxy::default());
    let token_url = start_proxy(proxy.clone(), s.dex.token_url().to_owned()).await;
    dex_connection(&env.client, &env.ns, "dex", &s.dex, &["openid", "offline_access"]).await;
    let patch = json!({"spec": {
        "oauth2": {"tokenUrl": token_url},
        "refresh": {"rotation": {"policy": "None"}},
    }});
    Api::<Connection>::namespaced(env.client.clone(), &env.ns)
        .patch("dex", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    proxy
}

/// An ACTIVE account `acct` authorized by Dex user `user` behind a proxied Connection.
pub async fn active_behind_proxy(env: &super::TestEnv, user: usize) -> (Api<ConnectedAccount>, Arc<Proxy>) {
    let proxy = proxied_connection(env).await;
    let s = super::operator::stack();
    authorized(&env.client, &env.ns, "acct", "dex", &s.dex.user(user)).await;
    (Api::namespaced(env.client.clone(), &env.ns), proxy)
}
