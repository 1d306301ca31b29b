//! The token broker: RFC 8693 token exchange for agent pods, on its own in-cluster listener.
//!
//! An agent pod sends its projected ServiceAccount token (audience `--broker-audience`) and names
//! an account, by `resource=agentauth://<namespace>/<name>` or by `audience=<connection>` and
//! `identifier=<user>`; it gets the account's current access token back. The pipeline, one
//! refusal per step: parse -> authenticate (TokenReview) -> resolve (cache) -> authorize
//! (SubjectAccessReview, verb `use` on the ConnectedAccount) -> deliver (delivery allows the
//! broker, the account is ACTIVE, a current token exists) -> answer.
//!
//! Guarantees: refresh tokens and client secrets never leave the operator (the broker's cache
//! holds none); a caller learns whether an account exists only where it may `use` accounts; every
//! decision is counted by outcome, and refusals are logged with the ServiceAccount and the
//! account, never a token. Every replica serves the broker from its own caches; only the
//! reviews' answers are fetched, and those are cached for [`identity::TTL`].

mod answer;
pub mod cache;
mod identity;
mod refusal;
pub mod request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use jiff::Timestamp;

use crate::api::{AccountState, Delivery};
use cache::{AccountEntry, Cache, Match};
use identity::{Caller, Identity};
use refusal::Refusal;
use request::{Exchange, Target};

/// The RBAC verb a ServiceAccount needs on `connectedaccounts` to get an account's token.
pub const VERB: &str = "use";
/// The default audience of the projected tokens the broker accepts.
pub const DEFAULT_AUDIENCE: &str = "agentauth.dev";
/// Largest request body: a token exchange is a few kilobytes.
const BODY_LIMIT: usize = 16 * 1024;
/// A larger body is read (and dropped) up to this size before the 413 answer, so that the client
/// gets the answer rather than a connection reset; beyond it the connection is simply closed.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// What the broker's handlers share.
#[derive(Clone)]
pub struct Broker {
    identity: Identity,
    cache: Cache,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Broker {
    /// Starts the broker's watches (see [`Cache::start`]).
    pub fn start(
        client: &kube::Client,
        audience: &str,
        namespaces: &[String],
        operator_ns: &str,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Broker {
        Broker {
            identity: Identity::new(client.clone(), audience),
            cache: Cache::start(client, namespaces, operator_ns),
            metrics,
        }
    }
}

pub fn router(broker: Broker) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            Refusal::UnknownTarget("no such endpoint; exchange tokens at POST /token".into())
        })
        .with_state(broker)
}

/// A client must send its request headers within this time; an idle keep-alive connection is
/// closed after it too (against slowloris: every replica's controller shares this process).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A client must send its whole body within this time after its headers.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request is answered within this time, or refused as unavailable (a TokenReview or
/// SubjectAccessReview the API server does not answer must not hold the connection).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves the broker on `addr` until `shutdown`, then lets in-flight exchanges finish.
///
/// Served by hyper directly, as the gateway is, rather than by `axum::serve`, which sets no timer
/// and so has no header read timeout: anything that reaches the port could hold connections (and
/// the process's file descriptors) forever by trickling headers or keeping them idle.
pub async fn serve(
    broker: Broker,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "token broker listening");
    let app = router(broker);
    // HTTP/1 only: the auto-detecting builder first waits for a version preface, with no timer,
    // so a client that connects and sends nothing would be held forever.
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
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
                tracing::warn!(error = %e, "broker: accept failed");
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
                tracing::debug!(error = %e, "broker connection ended with an error");
            }
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(Duration::from_secs(10)) => tracing::warn!("broker connections still open at shutdown"),
    }
    Ok(())
}

/// `POST /token`.
async fn token(State(broker): State<Broker>, request: Request) -> Response {
    let started = Instant::now();
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&broker, request))
        .await
        .unwrap_or(Err(Refusal::Unavailable(
            "the broker could not answer in time; try again",
        )));
    let (outcome, response) = match answer {
        Ok(body) => {
            let mut r = axum::Json(body).into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            ("issued", r)
        }
        Err(refusal) => (refusal.outcome(), refusal.into_response()),
    };
    broker.metrics.broker_request(outcome, started.elapsed());
    response
}

async fn exchange(broker: &Broker, request: Request) -> Result<serde_json::Value, Refusal> {
    let exchange = read(request).await?;
    if !broker.cache.synced() {
        return Err(Refusal::Unavailable("the broker is starting; try again"));
    }
    let caller = broker.identity.authenticate(&exchange.subject_token).await?;
    let entry = resolve(broker, &caller, &exchange.target).await?;
    let allowed = broker
        .identity
        .may_use(&caller, &entry.namespace, &entry.name)
        .await?;
    if !allowed {
        tracing::info!(service_account = %caller.service_account, namespace = %entry.namespace, account = %entry.name, "broker: refused, no RBAC grant to use the account");
        return Err(Refusal::Denied);
    }
    let body = deliver(broker, &entry, Timestamp::now()).inspect_err(|r| {
        tracing::info!(service_account = %caller.service_account, namespace = %entry.namespace, account = %entry.name, outcome = r.outcome(), "broker: refused");
    })?;
    tracing::debug!(service_account = %caller.service_account, namespace = %entry.namespace, account = %entry.name, "broker: token issued");
    Ok(body)
}

/// The form body, bounded and of the right type.
async fn read(request: Request) -> Result<Exchange, Refusal> {
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(Refusal::NotForm);
    }
    let body: Body = request.into_body();
    let mut stream = body.into_data_stream();
    let (mut bytes, mut seen) = (Vec::new(), 0usize);
    let deadline = tokio::time::Instant::now() + BODY_READ_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .map_err(|_| Refusal::SlowBody)?;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| Refusal::request("the request body could not be read"))?;
        seen += chunk.len();
        if seen <= BODY_LIMIT {
            bytes.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > BODY_LIMIT {
        return Err(Refusal::TooLarge);
    }
    request::parse(&bytes)
}

/// The account the target names. Whether an account exists is told only to callers that may use
/// accounts there: a lookup by user that finds nothing answers `access_denied` unless the caller
/// may `use` accounts of that namespace at all.
async fn resolve(broker: &Broker, caller: &Caller, target: &Target) -> Result<Arc<AccountEntry>, Refusal> {
    match target {
        Target::Named { namespace, name } => match broker.cache.account(namespace, name) {
            Some(e) => Ok(e),
            None if broker.identity.may_use(caller, namespace, name).await? => Err(Refusal::UnknownTarget(
                format!("no ConnectedAccount {namespace}/{name}"),
            )),
            None => Err(Refusal::Denied),
        },
        Target::Matching {
            connection,
            identifier,
            namespace,
        } => {
            let ns = namespace.as_deref().unwrap_or(&caller.namespace);
            let missing = || async {
                if broker.identity.may_use(caller, ns, "").await? {
                    Ok(())
                } else {
                    Err(Refusal::Denied)
                }
            };
            match broker.cache.matching(ns, connection, identifier) {
                Match::One(e) => Ok(e),
                Match::None => {
                    missing().await?;
                    Err(Refusal::UnknownTarget(format!(
                        "no ConnectedAccount in {ns} for Connection {connection} and this identifier"
                    )))
                }
                Match::Several => {
                    missing().await?;
                    Err(Refusal::UnknownTarget(format!(
                        "several ConnectedAccounts in {ns} match; name one with resource=agentauth://{ns}/<name>"
                    )))
                }
            }
        }
    }
}

/// The answer for an authorized caller, if the account hands its token out now.
fn deliver(broker: &Broker, entry: &AccountEntry, now: Timestamp) -> Result<serde_json::Value, Refusal> {
    let connection = broker.cache.connection(entry);
    let delivery = Delivery::effective(entry.delivery, connection.as_ref().and_then(|c| c.delivery));
    if !delivery.brokered() {
        return Err(Refusal::UnknownTarget(
            "this account is not delivered through the broker (delivery: Secret); set delivery: Broker or SecretAndBroker"
                .into(),
        ));
    }
    let state = entry.state.unwrap_or(AccountState::PendingAuth);
    if state != AccountState::Active {
        return Err(Refusal::NotActive(state));
    }
    let tokens = broker
        .cache
        .tokens(&entry.uid)
        .ok_or(Refusal::Unavailable("the credential is being renewed; try again"))?;
    if tokens.expires_at.is_some_and(|e| e <= now) {
        return Err(Refusal::Unavailable(
            "the access token expired and is being renewed; try again",
        ));
    }
    let provider = connection.as_ref().and_then(|c| c.provider.as_deref());
    Ok(answer::body(entry, &tokens, provider, now))
}
