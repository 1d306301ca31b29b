//! The gateway: the only internet-facing part. Users open their authorization link here, get sent
//! to the provider, and come back to the callback. It keeps no state of its own (everything is in
//! the signed link/state, the account, and the operator's credential copy), so every replica can
//! serve every request, before and after restarts.

mod account;
pub mod cache;
mod callback;
mod complete;
mod connect;
mod context;
mod form_page;
mod forms;
pub mod onward;
pub mod pages;
mod requester;
mod session;
mod verdict;
mod verify;

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
        .route("/oauth/callback", get(callback::legacy))
        .route("/oauth/callback/ns/{ns}/{connection}", get(callback::own))
        .route("/oauth/callback/cluster/{connection}", get(callback::cluster))
        .route("/verify", axum::routing::post(verify::verify))
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

/// Serves the gateway until `shutdown` resolves, then lets in-flight requests finish.
///
/// Connections are served by hyper directly rather than `axum::serve`, which sets no timer and so
/// has no header read timeout: a client trickling headers could hold a connection forever.
pub async fn serve(
    gw: Gateway,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "gateway listening");
    let app = router(gw);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(64 * 1024);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "gateway connection ended with an error");
            }
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("gateway connections still open at shutdown"),
    }
    Ok(())
}
