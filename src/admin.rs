//! The admin listener (its own port, never exposed publicly): `/healthz`, `/readyz` (true only after
//! every watch cache has synced, the token broker's included) and `/metrics`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;
use std::sync::Arc;

/// A readiness check of another part of the process.
pub type Check = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct Admin {
    ready: tokio::sync::watch::Receiver<bool>,
    also: Check,
    metrics: Arc<Metrics>,
}

pub async fn serve(
    addr: SocketAddr,
    ready: tokio::sync::watch::Receiver<bool>,
    also: Check,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .with_state(Admin { ready, also, metrics });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn metrics_page(State(a): State<Admin>) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.metrics.render(),
    )
}

async fn readyz(State(a): State<Admin>) -> (StatusCode, &'static str) {
    if *a.ready.borrow() && (a.also)() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}
