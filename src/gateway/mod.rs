//! The gateway: the only internet-facing part. Users open their authorization link here, get sent
//! to the provider, and come back to the callback. It keeps no state of its own (everything is in
//! the signed link/state, the account, and the operator's credential copy), so every replica can
//! serve every request, before and after restarts. It holds no rights on credentials: codes,
//! typed keys and verification answers go to the controller's [`crate::intake`].

mod account;
pub mod cache;
mod callback;
mod connect;
mod context;
mod finish;
mod form_page;
mod forms;
mod interstitial;
pub mod pages;
mod requester;
mod session;
mod verdict;
mod verify;
mod verify_answer;
mod verify_return;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::get;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

pub use context::Gateway;

/// The gateway's routes with security headers, body and time limits.
pub fn router(gw: Gateway) -> Router {
    let headers: [(HeaderName, &'static str); 6] = [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Links carry tokens in the path: never leak them through Referer.
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    let metrics = gw.metrics.clone();
    let mut router = Router::new()
        .route("/connect/{token}", get(connect::connect).post(forms::submit))
        .route(
            "/connect/{token}/continue",
            axum::routing::post(interstitial::proceed),
        )
        .route("/oauth/callback", get(callback::legacy))
        .route("/oauth/callback/ns/{ns}/{connection}", get(callback::own))
        .route("/oauth/callback/cluster/{connection}", get(callback::cluster))
        .route("/verify", axum::routing::post(verify::verify))
        .route("/verify/return", get(verify_return::back))
        .fallback(|| async { pages::not_found() })
        .with_state(gw)
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let metrics = metrics.clone();
                async move {
                    // The route template, never the path itself: paths carry tokens.
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("other", |p| p.as_str())
                        .to_owned();
                    let started = std::time::Instant::now();
                    let resp = next.run(req).await;
                    metrics.request(&route, resp.status().as_u16(), started.elapsed());
                    resp
                }
            },
        ))
        .layer(RequestBodyLimitLayer::new(16 * 1024))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(20),
        ));
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}

/// A client must send its request headers within this time (against slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the gateway until `shutdown` resolves, then lets in-flight requests finish
/// ([`crate::serve`]: header and idle timeouts against slowloris).
pub async fn serve(
    gw: Gateway,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::serve::serve("gateway", addr, router(gw), HEADER_READ_TIMEOUT, shutdown).await
}
