//! The admin listener (its own port, never exposed publicly): `/healthz`, `/readyz` (true only after
//! every watch cache has synced) and `/metrics`.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

#[derive(Clone)]
struct Admin {
    ready: tokio::sync::watch::Receiver<bool>,
}

pub async fn serve(
    addr: SocketAddr,
    ready: tokio::sync::watch::Receiver<bool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Admin { ready });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn readyz(State(a): State<Admin>) -> (StatusCode, &'static str) {
    if *a.ready.borrow() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}
