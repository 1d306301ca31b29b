//! The controller's intake listener (`--intake-addr`, in-cluster only): the gateway's one way to
//! hand over flow results. Served by every controller replica, leader or not: the desk writes
//! with optimistic concurrency, so replicas never overwrite each other.
//!
//! Guarantees: a request needs a bearer token that the API server accepts for the intake's
//! audience (TokenReview) and that belongs to a user named in `--intake-allow` (the gateway's
//! ServiceAccount); anything else gets 401/403 before a body is read. Answers are cached for a
//! minute by the token's SHA-256, never by the token itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::Desk;
use super::remote::Op;
use super::wire::{Confirmation, Declined, Exchange, Inspection, Return, SpentQuery, Submission};

/// Who may call the intake, and how that is checked.
#[derive(Clone)]
pub struct Gatekeeper {
    client: kube::Client,
    audience: String,
    allow: Arc<Vec<String>>,
    seen: moka::sync::Cache<String, bool>,
}

impl Gatekeeper {
    pub fn new(client: kube::Client, audience: &str, allow: Vec<String>) -> Gatekeeper {
        Gatekeeper {
            client,
            audience: audience.to_owned(),
            allow: Arc::new(allow),
            seen: moka::sync::Cache::builder()
                .max_capacity(1_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
        }
    }

    /// Whether `token` is an allowed caller's; `Err` when the API server cannot tell now.
    async fn admits(&self, token: &str) -> Result<bool, kube::Error> {
        let key = crate::store::token_sha256(token);
        if let Some(known) = self.seen.get(&key) {
            return Ok(known);
        }
        let user = crate::review::authenticate(&self.client, token, Some(&self.audience)).await?;
        let allowed = user
            .and_then(|u| u.username)
            .is_some_and(|name| self.allow.contains(&name));
        self.seen.insert(key, allowed);
        Ok(allowed)
    }
}

#[derive(Clone)]
struct Intake {
    desk: Desk,
    keeper: Gatekeeper,
}

/// The intake's routes behind the gatekeeper.
pub fn router(desk: Desk, keeper: Gatekeeper) -> axum::Router {
    let state = Intake { desk, keeper };
    axum::Router::new()
        .route(
            Op::Spent.path(),
            post(|State(s): State<Intake>, Json(q): Json<SpentQuery>| async move {
                Json(s.desk.spent(&q).await)
            }),
        )
        .route(
            Op::Declined.path(),
            post(|State(s): State<Intake>, Json(d): Json<Declined>| async move {
                s.desk.declined(&d).await;
                Json(())
            }),
        )
        .route(
            Op::Exchange.path(),
            post(|State(s): State<Intake>, Json(x): Json<Exchange>| async move {
                Json(s.desk.exchange(&x).await)
            }),
        )
        .route(
            Op::Submit.path(),
            post(|State(s): State<Intake>, Json(x): Json<Submission>| async move {
                Json(s.desk.submit(&x).await)
            }),
        )
        .route(
            Op::Verify.path(),
            post(|State(s): State<Intake>, Json(c): Json<Confirmation>| async move {
                Json(s.desk.verify(&c).await)
            }),
        )
        .route(
            Op::Inspect.path(),
            post(|State(s): State<Intake>, Json(i): Json<Inspection>| async move {
                Json(s.desk.inspect(&i).await)
            }),
        )
        .route(
            Op::Return.path(),
            post(|State(s): State<Intake>, Json(r): Json<Return>| async move {
                Json(s.desk.returned(&r).await)
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
}

/// Refuses callers the gatekeeper does not admit.
async fn gate(State(s): State<Intake>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty() && t.len() < 16 * 1024)
        .map(str::to_owned);
    let Some(token) = token else {
        return (StatusCode::UNAUTHORIZED, "a bearer token is required").into_response();
    };
    match s.keeper.admits(&token).await {
        Ok(true) => next.run(req).await,
        Ok(false) => {
            tracing::warn!("intake refused a caller that is not the gateway");
            (StatusCode::FORBIDDEN, "not allowed").into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "intake TokenReview failed");
            (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
        }
    }
}

/// Serves the intake until `shutdown`.
pub async fn serve(
    desk: Desk,
    keeper: Gatekeeper,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::serve::serve(
        "intake",
        addr,
        router(desk, keeper),
        Duration::from_secs(10),
        shutdown,
    )
    .await
}
