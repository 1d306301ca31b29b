//! The controller's intake listener (`--intake-addr`, in-cluster only): the gateway's one way to
//! hand over flow results. Served by every controller replica, leader or not: the desk writes
//! with optimistic concurrency, so replicas never overwrite each other.
//!
//! Guarantees: a request needs a bearer token that the API server accepts for the intake's
//! audience (TokenReview) and that belongs to a user named in `--intake-allow` (the gateway's
//! ServiceAccount); anything else gets 401/403 before a body is read. Answers are cached by the
//! token's SHA-256, never by the token itself: an admission for a minute at most and never past
//! the token's `exp`, a refusal for a few seconds; at most a few TokenReviews are in flight at
//! once, so a flood of garbage tokens from any pod that reaches the port queues here (and is
//! answered 503) instead of costing the API server one review per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::Desk;
use super::remote::Op;
use super::wire::{Confirmation, Declined, Exchange, Inspection, Return, SpentQuery, Submission};
use crate::review::{Answers, Busy, Turns, bearer, lifetime, token_key};

/// How long an admission is reused (never beyond the token's own `exp`).
const TTL: Duration = Duration::from_secs(60);
/// How long a refusal is reused: short, so that a transient refusal (the API server's
/// authenticator failing a lookup answers `authenticated: false`) does not lock the gateway out
/// for long.
const REFUSAL_TTL: Duration = Duration::from_secs(5);
/// Most TokenReviews in flight at once: anything that reaches the port can send garbage tokens,
/// and each would otherwise cost one TokenReview on the client (and API priority) this
/// process's controllers share.
const IN_FLIGHT: usize = 4;
/// How long a caller waits for its turn among them before it is answered 503.
const TURN_WAIT: Duration = Duration::from_secs(2);

/// Who may call the intake, and how that is checked.
#[derive(Clone)]
pub struct Gatekeeper {
    client: kube::Client,
    audience: String,
    allow: Arc<Vec<String>>,
    seen: Answers<[u8; 32], bool>,
    turns: Turns,
}

/// Why the gatekeeper cannot tell now.
#[derive(Debug, thiserror::Error)]
enum Undecided {
    #[error(transparent)]
    Busy(#[from] Busy),
    #[error("{0}")]
    Review(#[from] kube::Error),
}

impl Gatekeeper {
    pub fn new(client: kube::Client, audience: &str, allow: Vec<String>) -> Gatekeeper {
        Gatekeeper {
            client,
            audience: audience.to_owned(),
            allow: Arc::new(allow),
            seen: Answers::new(1_000, TTL),
            turns: Turns::new(IN_FLIGHT, TURN_WAIT),
        }
    }

    /// Whether `token` is an allowed caller's; `Err` when the API server cannot tell now.
    async fn admits(&self, token: &str) -> Result<bool, Undecided> {
        let key = token_key(token);
        let now = std::time::Instant::now();
        if let Some(known) = self.seen.get(&key, now) {
            return Ok(known);
        }
        let _turn = self.turns.take().await?;
        let user = crate::review::authenticate(&self.client, token, Some(&self.audience)).await?;
        let allowed = user
            .and_then(|u| u.username)
            .is_some_and(|name| self.allow.contains(&name));
        let ttl = if allowed {
            lifetime(token).min(TTL)
        } else {
            REFUSAL_TTL
        };
        self.seen.insert(key, allowed, now + ttl);
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
    let token = bearer(req.headers()).map(str::to_owned);
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    type Handle =
        tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>;

    fn keeper() -> (Gatekeeper, Handle) {
        let (service, handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let keeper = Gatekeeper::new(
            kube::Client::new(service, "default"),
            crate::intake::DEFAULT_AUDIENCE,
            vec!["system:serviceaccount:ops:gateway".into()],
        );
        (keeper, handle)
    }

    fn review(authenticated: bool) -> http::Response<kube::client::Body> {
        let body = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
            "status": {"authenticated": authenticated, "audiences": [crate::intake::DEFAULT_AUDIENCE],
                       "user": {"username": "system:serviceaccount:ops:gateway"}}
        });
        http::Response::new(kube::client::Body::from(body.to_string().into_bytes()))
    }

    fn jwt(exp: i64) -> String {
        let e = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            e(serde_json::json!({"alg": "RS256"})),
            e(serde_json::json!({"exp": exp}))
        )
    }

    /// Any pod that reaches the port can send garbage tokens: they must not become as many
    /// concurrent TokenReviews on the client the controllers share.
    #[tokio::test]
    async fn a_flood_of_tokens_asks_at_most_in_flight_reviews_at_once() {
        use futures::FutureExt as _;
        let (keeper, mut handle) = keeper();
        let flood: Vec<_> = (0..IN_FLIGHT * 4)
            .map(|i| {
                let keeper = keeper.clone();
                tokio::spawn(async move {
                    keeper
                        .admits(&format!("garbage-{i}"))
                        .await
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        let mut pending = Vec::new();
        for _ in 0..IN_FLIGHT {
            pending.push(handle.next_request().await.expect("a TokenReview"));
        }
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
        assert!(
            handle.next_request().now_or_never().is_none(),
            "more than {IN_FLIGHT} TokenReviews in flight at once"
        );
        let mut answered = 0;
        for (_, send) in pending {
            send.send_response(review(false));
            answered += 1;
        }
        while answered < IN_FLIGHT * 4 {
            let (_, send) = handle.next_request().await.expect("a TokenReview");
            send.send_response(review(false));
            answered += 1;
        }
        for f in flood {
            assert_eq!(f.await.unwrap(), Ok(false));
        }
    }

    /// An admission is reused, but never past the token's own `exp`.
    #[tokio::test]
    async fn an_admission_does_not_outlive_the_token() {
        use futures::FutureExt as _;
        let (keeper, mut handle) = keeper();
        let live = jwt(jiff::Timestamp::now().as_second() + 3600);
        let answer = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("a TokenReview");
            send.send_response(review(true));
            handle
        });
        assert!(keeper.admits(&live).await.unwrap());
        let mut handle = answer.await.unwrap();
        assert!(keeper.admits(&live).await.unwrap(), "reused");
        assert!(handle.next_request().now_or_never().is_none(), "no second review");

        let expired = jwt(jiff::Timestamp::now().as_second() - 1);
        let answer = tokio::spawn(async move {
            for _ in 0..2 {
                let (_, send) = handle.next_request().await.expect("a TokenReview");
                send.send_response(review(true));
            }
        });
        assert!(keeper.admits(&expired).await.unwrap());
        assert!(keeper.admits(&expired).await.unwrap());
        answer.await.unwrap();
    }
}
