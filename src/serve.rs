//! Serving an axum router over HTTP/1 with hyper directly, for every listener of `run` that
//! untrusted clients reach (the gateway, the token broker).
//!
//! Why not `axum::serve`: it sets no timer, so it has no header read timeout, and a client
//! trickling headers could hold a connection (and a file descriptor) forever. Why HTTP/1 only:
//! hyper-util's auto-detecting builder first waits for a protocol preface with no timer, so a
//! client that connects and sends nothing would be held forever too. Guarantees: headers must
//! arrive within `header_timeout`, and an idle keep-alive connection is closed after it; on
//! shutdown, in-flight requests get 10 s to finish.

use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;

/// Serves `app` on `addr` until `shutdown`; `name` goes into logs.
pub async fn serve(
    name: &'static str,
    addr: SocketAddr,
    app: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "{name} listening");
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
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
                tracing::warn!(error = %e, "{name}: accept failed");
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
                tracing::debug!(error = %e, "{name}: connection ended with an error");
            }
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("{name}: connections still open at shutdown"),
    }
    Ok(())
}
