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
mod wire;

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

    /// Every cache the broker answers from has synced (part of `/readyz`).
    pub fn synced(&self) -> bool {
        self.cache.synced()
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

/// Serves the broker on `addr` until `shutdown`, then lets in-flight exchanges finish
/// ([`crate::serve`]: header and idle timeouts, so nothing that reaches the port can hold
/// connections and file descriptors).
pub async fn serve(
    broker: Broker,
    addr: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::serve::serve(
        "token broker",
        addr,
        router(broker),
        HEADER_READ_TIMEOUT,
        shutdown,
    )
    .await
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
    let entry = authorize(broker, &caller, &exchange.target).await?;
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

/// The account the target names, if `caller` may use it.
///
/// Whether an account exists is told only to callers that may use accounts there: a lookup by
/// user that finds nothing answers `access_denied` unless the caller may `use` accounts of that
/// namespace at all. Nor do the reviews' cache tell it: answers are cached per question asked
/// (the account's name, or the Connection and identifier), so a lookup by user costs a review the
/// first time whether or not an account matches, rather than a miss reusing the namespace-wide
/// answer of an earlier miss (a timing oracle for other namespaces' identifiers).
async fn authorize(broker: &Broker, caller: &Caller, target: &Target) -> Result<Arc<AccountEntry>, Refusal> {
    let entry = match target {
        Target::Named { namespace, name } => match broker.cache.account(namespace, name) {
            Some(e) => e,
            None if broker.identity.may_use(caller, namespace, name, "").await? => {
                return Err(Refusal::UnknownTarget(format!(
                    "no ConnectedAccount {namespace}/{name}"
                )));
            }
            None => return Err(Refusal::Denied),
        },
        Target::Matching {
            connection,
            identifier,
            namespace,
        } => {
            let ns = namespace.as_deref().unwrap_or(&caller.namespace);
            let asked = format!("{connection}\0{identifier}");
            let why = match broker.cache.matching(ns, connection, identifier) {
                Match::One(e) => {
                    return authorized(broker, caller, e, &asked).await;
                }
                Match::None => {
                    format!("no ConnectedAccount in {ns} for Connection {connection} and this identifier")
                }
                Match::Several => format!(
                    "several ConnectedAccounts in {ns} match; name one with resource=agentauth://{ns}/<name>"
                ),
            };
            return if broker.identity.may_use(caller, ns, "", &asked).await? {
                Err(Refusal::UnknownTarget(why))
            } else {
                Err(Refusal::Denied)
            };
        }
    };
    authorized(broker, caller, entry, "").await
}

/// `entry`, if RBAC lets `caller` use it (`asked`: the question, for the reviews' cache).
async fn authorized(
    broker: &Broker,
    caller: &Caller,
    entry: Arc<AccountEntry>,
    asked: &str,
) -> Result<Arc<AccountEntry>, Refusal> {
    if broker
        .identity
        .may_use(caller, &entry.namespace, &entry.name, asked)
        .await?
    {
        return Ok(entry);
    }
    tracing::info!(service_account = %caller.service_account, namespace = %entry.namespace, account = %entry.name, "broker: refused, no RBAC grant to use the account");
    Err(Refusal::Denied)
}

/// The answer for an authorized caller, if the account hands its token out now.
fn deliver(broker: &Broker, entry: &AccountEntry, now: Timestamp) -> Result<serde_json::Value, Refusal> {
    let connection = broker.cache.connection(entry);
    let delivery = Delivery::effective(
        entry.delivery,
        connection.as_ref().and_then(|c| c.delivery),
        entry.kind == crate::api::ConnectionKind::ClusterConnection,
    );
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    use k8s_openapi::api::authentication::v1::UserInfo;
    use serde_json::json;

    use super::*;
    use crate::api::GuardedAccount;

    /// A caller with no grant in another namespace learns nothing there from what the broker asks
    /// the API server for it: a lookup by identifier costs the same reviews whether or not an
    /// account matches. (A miss used to reuse the namespace-wide answer an earlier miss had
    /// cached, while a match asked the API server: a timing oracle for identifiers.)
    #[tokio::test]
    async fn lookups_by_identifier_cost_the_same_whether_or_not_an_account_matches() {
        let (service, mut handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let reviews = Arc::new(AtomicUsize::new(0));
        let seen = reviews.clone();
        tokio::spawn(async move {
            let denied = json!({
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {}, "status": {"allowed": false}
            });
            while let Some((_, send)) = handle.next_request().await {
                seen.fetch_add(1, SeqCst);
                send.send_response(http::Response::new(kube::client::Body::from(
                    denied.to_string().into_bytes(),
                )));
            }
        });
        let account: GuardedAccount = serde_json::from_value(json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
            "metadata": {"name": "alice-gmail", "namespace": "victim", "uid": "u1"},
            "spec": {"connectionRef": {"name": "gmail"}, "identifier": "alice@example.com"}
        }))
        .unwrap();
        let broker = Broker {
            identity: Identity::new(kube::Client::new(service, "default"), DEFAULT_AUDIENCE),
            cache: Cache::of_accounts(&[account]),
            metrics: Arc::default(),
        };
        let caller = Caller {
            user: UserInfo {
                username: Some("system:serviceaccount:attacker:agent".into()),
                uid: Some("sa-1".into()),
                ..Default::default()
            },
            namespace: "attacker".into(),
            service_account: "attacker/agent".into(),
        };
        let reviews_for = |identifier: &str| {
            let target = Target::Matching {
                connection: "gmail".into(),
                identifier: identifier.into(),
                namespace: Some("victim".into()),
            };
            let (broker, caller, reviews) = (&broker, &caller, &reviews);
            async move {
                let before = reviews.load(SeqCst);
                let refused = authorize(broker, caller, &target).await.err();
                assert_eq!(refused, Some(Refusal::Denied), "{target:?}");
                reviews.load(SeqCst) - before
            }
        };
        reviews_for("first-miss@example.com").await;
        let matching = reviews_for("alice@example.com").await;
        let missing = reviews_for("nobody@example.com").await;
        assert_eq!(
            matching, missing,
            "an existing identifier costs {matching} reviews, a missing one {missing}"
        );
        assert_eq!(
            reviews_for("alice@example.com").await,
            reviews_for("nobody@example.com").await,
            "and so do repeated questions"
        );
    }
}
