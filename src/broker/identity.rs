//! Who is calling, and may it use the account: TokenReview and SubjectAccessReview answers, kept
//! for [`TTL`] in bounded caches so that the hot path makes no API call.
//!
//! Guarantees: a token is accepted only if the API server authenticated it for the broker's
//! audience and it names a ServiceAccount; a cached acceptance never outlives the token's own
//! `exp`; caches hold a SHA-256 of the token, never the token; each cache holds at most
//! [`CAPACITY`] answers, so a flood of garbage tokens costs bounded memory; at most [`IN_FLIGHT`]
//! reviews are asked at once, so such a flood queues here instead of costing the API server (and
//! this process's own controllers, which share its client and its API priority) one call per
//! request at any rate. Caveat: revoking a token, deleting its pod, or removing an RBAC grant takes effect within
//! [`TTL`], as with the API server's own webhook-authorizer caches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::UserInfo;

use super::refusal::Refusal;
use crate::review::{Answers, Turns, lifetime, token_key};

/// How long an answer of the API server is reused.
pub const TTL: Duration = Duration::from_secs(10);
/// Most answers kept per cache.
const CAPACITY: u64 = 20_000;
/// Most TokenReviews and SubjectAccessReviews in flight at once, per replica.
const IN_FLIGHT: usize = 16;
/// How long a request waits for its turn among them before it is refused as unavailable.
const TURN_WAIT: Duration = Duration::from_secs(2);
/// `system:serviceaccount:<namespace>:<name>`.
const SA_PREFIX: &str = "system:serviceaccount:";

/// An authenticated ServiceAccount.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserInfo,
    pub namespace: String,
    /// `<namespace>/<name>`, for logs.
    pub service_account: String,
}

impl Caller {
    fn from_user(user: UserInfo) -> Option<Caller> {
        let rest = user.username.as_deref()?.strip_prefix(SA_PREFIX)?;
        let (namespace, name) = rest.split_once(':')?;
        Some(Caller {
            namespace: namespace.to_owned(),
            service_account: format!("{namespace}/{name}"),
            user,
        })
    }
}

/// The cached reviews.
#[derive(Clone)]
pub struct Identity {
    client: kube::Client,
    audience: Arc<str>,
    tokens: Answers<[u8; 32], Option<Arc<Caller>>>,
    grants: Answers<(String, String, String), bool>,
    reviews: Turns,
}

impl Identity {
    pub fn new(client: kube::Client, audience: &str) -> Identity {
        Identity {
            client,
            audience: audience.into(),
            tokens: Answers::new(CAPACITY, TTL),
            grants: Answers::new(CAPACITY, TTL),
            reviews: Turns::new(IN_FLIGHT, TURN_WAIT),
        }
    }

    /// The ServiceAccount `token` belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Caller>, Refusal> {
        let key = token_key(token);
        let now = Instant::now();
        if let Some(hit) = self.tokens.get(&key, now) {
            return hit.ok_or(Refusal::Unauthenticated);
        }
        let _turn = self.turn().await?;
        let user = crate::review::authenticate(&self.client, token, Some(&self.audience))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "broker: TokenReview failed");
                Refusal::Unavailable("the API server did not answer the TokenReview; try again")
            })?;
        let caller = user.and_then(Caller::from_user).map(Arc::new);
        let until = now + caller.as_ref().map_or(TTL, |_| lifetime(token).min(TTL));
        self.tokens.insert(key, caller.clone(), until);
        caller.ok_or(Refusal::Unauthenticated)
    }

    /// Whether `caller` may `use` the ConnectedAccount `ns/name` (every one in `ns` when `name` is
    /// empty). The answer is cached per `asked`, the caller's question, as well as per account, so
    /// that questions cost the same whatever their answer (see `broker::authorize`).
    pub async fn may_use(&self, caller: &Caller, ns: &str, name: &str, asked: &str) -> Result<bool, Refusal> {
        let key = (
            format!(
                "{}\0{}",
                caller.service_account,
                caller.user.uid.as_deref().unwrap_or_default()
            ),
            ns.to_owned(),
            format!("{name}\0{asked}"),
        );
        let now = Instant::now();
        if let Some(hit) = self.grants.get(&key, now) {
            return Ok(hit);
        }
        let _turn = self.turn().await?;
        let allowed = crate::review::may(&self.client, &caller.user, super::VERB, ns, name)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "broker: SubjectAccessReview failed");
                Refusal::Unavailable("the API server did not answer the SubjectAccessReview; try again")
            })?;
        self.grants.insert(key, allowed, now + TTL);
        Ok(allowed)
    }
}

impl Identity {
    /// A place among the [`IN_FLIGHT`] reviews, waiting at most [`TURN_WAIT`] (so that a flood
    /// does not pile up waiting requests either).
    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Refusal> {
        self.reviews
            .take()
            .await
            .map_err(|_| Refusal::Unavailable("the broker is busy; try again"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    /// A flood of garbage tokens (anything that reaches the port can send one) must not become
    /// as many concurrent TokenReviews: the API server's answer is what is rate-limited, and it
    /// is shared with the controllers of this process.
    #[tokio::test]
    async fn a_flood_of_tokens_asks_at_most_in_flight_reviews_at_once() {
        use futures::FutureExt as _;
        let (service, mut handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let identity = Identity::new(kube::Client::new(service, "default"), "agentauth.dev");
        let flood: Vec<_> = (0..IN_FLIGHT * 3)
            .map(|i| {
                let identity = identity.clone();
                tokio::spawn(async move { identity.authenticate(&format!("garbage-{i}")).await })
            })
            .collect();
        let mut pending = Vec::new();
        for _ in 0..IN_FLIGHT {
            pending.push(handle.next_request().await.expect("a TokenReview"));
        }
        // Every other caller has had its turn to run (one thread: yielding runs them all).
        for _ in 0..1_000 {
            tokio::task::yield_now().await;
        }
        assert!(
            handle.next_request().now_or_never().is_none(),
            "more than {IN_FLIGHT} TokenReviews in flight at once"
        );
        let unauthenticated = serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {}, "status": {"authenticated": false}
        });
        let answer = |send: tower_test::mock::SendResponse<http::Response<kube::client::Body>>| {
            send.send_response(http::Response::new(kube::client::Body::from(
                unauthenticated.to_string().into_bytes(),
            )));
        };
        for (_, send) in pending {
            answer(send);
        }
        let mut answered = IN_FLIGHT;
        while answered < IN_FLIGHT * 3 {
            let (_, send) = handle.next_request().await.expect("a TokenReview");
            answer(send);
            answered += 1;
        }
        for f in flood {
            assert!(matches!(f.await.unwrap(), Err(Refusal::Unauthenticated)));
        }
    }

    #[test]
    fn only_service_accounts_are_callers() {
        let user = |name: &str| UserInfo {
            username: Some(name.into()),
            ..Default::default()
        };
        let c = Caller::from_user(user("system:serviceaccount:team-a:agent")).unwrap();
        assert_eq!(
            (c.namespace.as_str(), c.service_account.as_str()),
            ("team-a", "team-a/agent")
        );
        assert!(Caller::from_user(user("alice@example.com")).is_none());
        assert!(Caller::from_user(user("system:serviceaccount:broken")).is_none());
    }
}
