//! The admin listener (its own port, never exposed publicly): `/healthz`, `/readyz` (true only after
//! every watch cache has synced, the token broker's included) and `/metrics`.
//!
//! `/metrics` is guarded like controller-runtime's secure metrics (`WithAuthenticationAndAuthorization`)
//! unless `--metrics-auth=false`: a scrape must carry `Authorization: Bearer <token>`, the API
//! server must accept the token (TokenReview, its standard audience) and allow its user `get` on the
//! non-resource URL `/metrics` (SubjectAccessReview). `/healthz` and `/readyz` stay open for probes.
//!
//! Guarantees: no token is kept, only its SHA-256; answers (acceptances and refusals) are reused
//! for at most [`TTL`] and an acceptance never past the token's `exp`; at most [`IN_FLIGHT`]
//! reviews are asked at once. Caveat: revoking a token or the grant takes effect within [`TTL`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::review::{Answers, Turns, bearer, lifetime, token_key};

/// A readiness check of another part of the process.
pub type Check = Arc<dyn Fn() -> bool + Send + Sync>;

/// How long an answer of the API server about a scraper's token is reused.
pub const TTL: Duration = Duration::from_secs(10);
/// Most answers kept (scrapers are few; garbage tokens must not grow memory).
const CAPACITY: u64 = 1_000;
/// Most reviews in flight at once for `/metrics`.
const IN_FLIGHT: usize = 4;
/// How long a scrape waits for its turn among them.
const TURN_WAIT: Duration = Duration::from_secs(2);
/// How long the API server may take to answer both reviews.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// The non-resource URL and verb a scraper must be granted.
const METRICS_PATH: &str = "/metrics";
const METRICS_VERB: &str = "get";

/// What the cluster said about one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allowed,
    Forbidden,
    Unauthenticated,
}

/// Why a scrape was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScrapeRefusal {
    #[error("send a token accepted by the API server as a Bearer token")]
    Unauthenticated,
    #[error("the token's user may not get /metrics")]
    Forbidden,
    #[error("the API server did not answer the review; try again")]
    Unavailable,
}

impl IntoResponse for ScrapeRefusal {
    fn into_response(self) -> Response {
        let status = match self {
            ScrapeRefusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            ScrapeRefusal::Forbidden => StatusCode::FORBIDDEN,
            ScrapeRefusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        if self == ScrapeRefusal::Unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The TokenReview + SubjectAccessReview guard of `/metrics`, with its cache.
#[derive(Clone)]
pub struct MetricsGuard {
    client: kube::Client,
    answers: Answers<[u8; 32], Decision>,
    turns: Turns,
}

impl MetricsGuard {
    pub fn new(client: kube::Client) -> Self {
        MetricsGuard {
            client,
            answers: Answers::new(CAPACITY, TTL),
            turns: Turns::new(IN_FLIGHT, TURN_WAIT),
        }
    }

    /// Admits a scrape whose bearer token the cluster accepts and allows `get /metrics`.
    pub async fn admit(&self, headers: &HeaderMap) -> Result<(), ScrapeRefusal> {
        let token = bearer(headers).ok_or(ScrapeRefusal::Unauthenticated)?;
        let key = token_key(token);
        let now = Instant::now();
        let decision = match self.answers.get(&key, now) {
            Some(d) => d,
            None => {
                let _turn = self.turns.take().await.map_err(|_| ScrapeRefusal::Unavailable)?;
                let decision = match tokio::time::timeout(REVIEW_TIMEOUT, self.review(token)).await {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "metrics: the token review failed");
                        return Err(ScrapeRefusal::Unavailable);
                    }
                    Err(_) => {
                        tracing::warn!("metrics: the token review timed out");
                        return Err(ScrapeRefusal::Unavailable);
                    }
                };
                let keep = match decision {
                    Decision::Allowed => lifetime(token).min(TTL),
                    Decision::Forbidden | Decision::Unauthenticated => TTL,
                };
                self.answers.insert(key, decision, now + keep);
                decision
            }
        };
        match decision {
            Decision::Allowed => Ok(()),
            Decision::Forbidden => Err(ScrapeRefusal::Forbidden),
            Decision::Unauthenticated => Err(ScrapeRefusal::Unauthenticated),
        }
    }

    async fn review(&self, token: &str) -> Result<Decision, kube::Error> {
        let Some(user) = crate::review::authenticate(&self.client, token, None).await? else {
            return Ok(Decision::Unauthenticated);
        };
        let allowed = crate::review::may_url(&self.client, &user, METRICS_VERB, METRICS_PATH).await?;
        if !allowed {
            tracing::debug!(
                user = user.username.as_deref().unwrap_or_default(),
                "metrics: scrape forbidden"
            );
        }
        Ok(if allowed {
            Decision::Allowed
        } else {
            Decision::Forbidden
        })
    }
}

#[derive(Clone)]
struct Admin {
    ready: tokio::sync::watch::Receiver<bool>,
    also: Check,
    metrics: Arc<Metrics>,
    /// `None`: `/metrics` is open (`--metrics-auth=false`, a trusted network).
    guard: Option<MetricsGuard>,
}

pub async fn serve(
    addr: SocketAddr,
    ready: tokio::sync::watch::Receiver<bool>,
    also: Check,
    metrics: Arc<Metrics>,
    guard: Option<MetricsGuard>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Admin {
        ready,
        also,
        metrics,
        guard,
    });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "admin listening");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

fn router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .with_state(admin)
}

async fn metrics_page(State(a): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(guard) = &a.guard
        && let Err(refusal) = guard.admit(&headers).await
    {
        return refusal.into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(a): State<Admin>) -> (StatusCode, &'static str) {
    if *a.ready.borrow() && (a.also)() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
    }
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
