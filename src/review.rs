//! Asking the API server who a bearer token belongs to (TokenReview) and whether that identity may
//! do something (SubjectAccessReview). Used by the gateway's `POST /verify`, the token broker and
//! the admin port's `/metrics`, so all trust exactly what the cluster's authenticators and RBAC say.
//!
//! [`Answers`] and [`Turns`] are what the callers on a hot path share: a bounded cache of answers
//! keyed by what was asked (a token only ever by its SHA-256, [`token_key`]), and a bound on the
//! reviews in flight, so that a flood of garbage tokens costs bounded memory and queues here
//! instead of costing the API server one call per request.

use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// The identity behind `token`, or `None` when the API server does not accept it. With an
/// `audience`, the token must have been issued for it (a projected ServiceAccount token's
/// `audience`): a token meant for the API server, or for another service, is refused.
pub async fn authenticate(
    client: &kube::Client,
    token: &str,
    audience: Option<&str>,
) -> Result<Option<UserInfo>, kube::Error> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: audience.map(|a| vec![a.to_owned()]),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let status = api.create(&PostParams::default(), &review).await?.status;
    Ok(status
        .filter(|s| s.authenticated == Some(true))
        .filter(|s| {
            audience.is_none_or(|a| {
                s.audiences
                    .as_ref()
                    .is_some_and(|list| list.iter().any(|x| x == a))
            })
        })
        .and_then(|s| s.user))
}

/// Whether `user` may `verb` the non-resource URL `path` (e.g. `get` `/metrics`), by the cluster's
/// RBAC: what a ClusterRole rule with `nonResourceURLs` grants.
pub async fn may_url(
    client: &kube::Client,
    user: &UserInfo,
    verb: &str,
    path: &str,
) -> Result<bool, kube::Error> {
    let attributes = NonResourceAttributes {
        path: Some(path.to_owned()),
        verb: Some(verb.to_owned()),
    };
    let mut spec = subject(user);
    spec.non_resource_attributes = Some(attributes);
    allowed(client, spec).await
}

fn subject(user: &UserInfo) -> SubjectAccessReviewSpec {
    SubjectAccessReviewSpec {
        user: user.username.clone(),
        uid: user.uid.clone(),
        groups: user.groups.clone(),
        extra: user.extra.clone(),
        ..Default::default()
    }
}

async fn allowed(client: &kube::Client, spec: SubjectAccessReviewSpec) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec,
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let status = api.create(&PostParams::default(), &review).await?.status;
    Ok(status.is_some_and(|s| s.allowed))
}

/// Whether `user` may `verb` the ConnectedAccount `name` in `ns`, by the cluster's RBAC.
pub async fn may(
    client: &kube::Client,
    user: &UserInfo,
    verb: &str,
    ns: &str,
    name: &str,
) -> Result<bool, kube::Error> {
    let mut spec = subject(user);
    spec.resource_attributes = Some(ResourceAttributes {
        group: Some(crate::api::GROUP.to_owned()),
        resource: Some("connectedaccounts".into()),
        verb: Some(verb.to_owned()),
        namespace: Some(ns.to_owned()),
        name: Some(name.to_owned()),
        ..Default::default()
    });
    allowed(client, spec).await
}

/// The token of an `Authorization: Bearer <token>` header (bounded: a longer value is refused
/// before it costs a review).
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() < 16 * 1024)
}

/// The cache key of a bearer token: its SHA-256, so that no cache ever holds a token.
pub fn token_key(token: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// How long the JWT `token` still lives by its `exp` claim (zero when unknown). Read without
/// checking the signature: the API server has just accepted the token; this only keeps a cached
/// acceptance from outliving it.
pub fn lifetime(token: &str) -> Duration {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: u64,
    }
    let exp = token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Claims>(&b).ok())
        .map(|c| c.exp);
    let now = jiff::Timestamp::now().as_second().max(0).unsigned_abs();
    Duration::from_secs(exp.map_or(0, |e| e.saturating_sub(now)))
}

#[derive(Clone)]
struct Cached<V> {
    value: V,
    until: Instant,
}

/// Answers of the API server, each reused until its own deadline and never longer than the
/// cache's `ttl`; at most `capacity` of them are kept.
#[derive(Clone)]
pub struct Answers<K, V> {
    cache: moka::sync::Cache<K, Cached<V>>,
}

impl<K, V> Answers<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        Answers {
            cache: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The answer kept for `key`, if it is still valid at `now`.
    pub fn get(&self, key: &K, now: Instant) -> Option<V> {
        self.cache.get(key).filter(|c| c.until > now).map(|c| c.value)
    }

    /// Keeps `value` for `key` until `until` (or the cache's TTL, whichever comes first).
    pub fn insert(&self, key: K, value: V, until: Instant) {
        self.cache.insert(key, Cached { value, until });
    }
}

/// A bound on the reviews in flight at once.
#[derive(Clone)]
pub struct Turns {
    permits: Arc<tokio::sync::Semaphore>,
    wait: Duration,
}

/// Every turn was taken for longer than the caller may wait.
#[derive(Debug, thiserror::Error)]
#[error("too many reviews in flight")]
pub struct Busy;

impl Turns {
    /// At most `in_flight` reviews at once; a caller waits at most `wait` for its turn (so that a
    /// flood does not pile up waiting requests either).
    pub fn new(in_flight: usize, wait: Duration) -> Self {
        Turns {
            permits: Arc::new(tokio::sync::Semaphore::new(in_flight)),
            wait,
        }
    }

    pub async fn take(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Busy> {
        match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) | Err(_) => Err(Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn jwt(exp: i64) -> String {
        let e = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.sig",
            e(serde_json::json!({"alg": "RS256"})),
            e(serde_json::json!({"exp": exp}))
        )
    }

    #[test]
    fn a_cached_acceptance_never_outlives_the_token() {
        let now = jiff::Timestamp::now().as_second();
        assert!(lifetime(&jwt(now + 3600)) > Duration::from_secs(3000));
        assert_eq!(lifetime(&jwt(now - 5)), Duration::ZERO);
        assert_eq!(lifetime("garbage"), Duration::ZERO);
    }

    #[test]
    fn an_answer_is_not_reused_past_its_deadline() {
        let answers = Answers::<[u8; 32], bool>::new(10, Duration::from_secs(60));
        let now = Instant::now();
        answers.insert(token_key("a"), true, now + Duration::from_secs(5));
        assert_eq!(answers.get(&token_key("a"), now), Some(true));
        assert_eq!(answers.get(&token_key("a"), now + Duration::from_secs(6)), None);
        assert_eq!(answers.get(&token_key("b"), now), None);
    }
}
