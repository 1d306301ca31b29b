//! A fault-injecting proxy in front of a token endpoint (test code, not a mock of the provider:
//! it forwards to the real Dex unless told to fail). It counts refresh attempts and records the
//! refresh tokens it forwarded, so tests can prove bounded retries and that no refresh token is
//! ever used twice.

use std::sync::{Arc, Mutex, OnceLock};

use agent_auth_operator::api::{ConnectedAccount, Connection};
use agentauth_testcluster::recorder::{Answer, Recorder, Reply, Request};
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
    /// Every code exchange, refresh and revocation is refused with [`hostile`] words.
    Hostile,
}

/// Text a hostile endpoint puts in its error answers; it must reach no status, Event, page or log.
pub const HOSTILE_SECRET: &str = "FAKE-SECRET-5d1e0c7a";

/// An RFC 6749 error whose `error_description` and `error_uri` carry a fake secret, markup, and
/// whatever secret the request carried (code, refresh token, client secret), echoed back.
fn hostile(req: &Request) -> Reply {
    let echoed: Vec<String> = ["code", "code_verifier", "refresh_token", "token", "client_secret"]
        .iter()
        .filter_map(|k| req.form_param(k))
        .chain(req.header("authorization").map(str::to_owned))
        .collect();
    let description = format!(
        "<html><body><h1>Denied</h1><script>alert('{HOSTILE_SECRET}')</script> {HOSTILE_SECRET} {}</body></html>",
        echoed.join(" ")
    );
    let body = json!({
        "error": "invalid_grant",
        "error_description": description,
        "error_uri": format!("https://attacker.example/<b>{HOSTILE_SECRET}</b>"),
    });
    Reply::json(400, &body)
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
    /// The server, which serves as long as this lives.
    server: OnceLock<Recorder>,
}

/// Starts the proxy (the shared recording server, answering `POST /token`); returns its token URL.
pub async fn start_proxy(proxy: Arc<Proxy>, upstream: String) -> String {
    // Weak: the server belongs to the proxy, not the other way round.
    let weak = Arc::downgrade(&proxy);
    let answer = Answer::with_async(move |req| {
        let (proxy, upstream) = (weak.upgrade(), upstream.clone());
        async move {
            match proxy {
                Some(proxy) if (req.method.as_str(), req.path()) == ("POST", "/token") => {
                    token(&proxy, &upstream, req).await
                }
                // RFC 7009: 200 for any token, unless hostile.
                Some(proxy) if (req.method.as_str(), req.path()) == ("POST", "/revoke") => {
                    match *proxy.fault.lock().unwrap() {
                        Some(Fault::Hostile) => hostile(&req),
                        _ => Reply::status(200),
                    }
                }
                Some(_) => Reply::status(404),
                None => Reply::text(503, "proxy gone"),
            }
        }
    });
    let server = Recorder::loopback(answer).await.unwrap();
    let url = format!("{}/token", server.url());
    let _ = proxy.server.set(server);
    url
}

async fn token(proxy: &Proxy, upstream: &str, req: Request) -> Reply {
    let body = req.text();
    let fault = proxy.fault.lock().unwrap().unwrap_or(Fault::None);
    let refresh = body.contains("grant_type=refresh_token");
    if fault == Fault::Hostile {
        if refresh {
            *proxy.faulted_refreshes.lock().unwrap() += 1;
        }
        return hostile(&req);
    }
    if !refresh {
        *proxy.exchanges.lock().unwrap() += 1;
        if *proxy.hold_exchanges.lock().unwrap() {
            return futures::future::pending().await; // a provider that never answers
        }
    }
    if fault != Fault::None && refresh {
        *proxy.faulted_refreshes.lock().unwrap() += 1;
        let json = "application/json";
        return match fault {
            Fault::ServerError => Reply::text(503, "upstream down"),
            Fault::Truncated => Reply::body(200, json, r#"{"access_token":"ab"#),
            Fault::InvalidGrant => Reply::body(400, json, r#"{"error":"invalid_grant"}"#),
            Fault::InvalidClient => Reply::body(401, json, r#"{"error":"invalid_client"}"#),
            Fault::RateLimited => Reply::text(429, "slow down").header("retry-after", "40"),
            Fault::Slow => futures::future::pending().await, // a provider that never answers
            Fault::None | Fault::Hostile => unreachable!(),
        };
    }
    if refresh {
        let token = req.form_param("refresh_token").unwrap_or_default();
        proxy.forwarded_refresh_tokens.lock().unwrap().push(token);
    }
    let mut forward = reqwest::Client::new()
        .post(upstream)
        .body(body)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(auth) = req.header("authorization") {
        forward = forward.header("authorization", auth);
    }
    let resp = forward.send().await.unwrap();
    let status = resp.status().as_u16();
    Reply::body(status, "application/json", resp.text().await.unwrap())
}

impl Proxy {
    /// The proxy's RFC 7009 revocation endpoint (`POST /revoke`).
    pub fn revocation_url(&self) -> String {
        self.server
            .get()
            .map(|s| format!("{}/revoke", s.url()))
            .unwrap_or_default()
    }
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
