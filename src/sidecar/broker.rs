//! The operator's token broker, as the sidecar calls it: an RFC 8693 token exchange of the pod's
//! projected ServiceAccount token for one account's credential (`POST /token`, see
//! `docs/sidecar.md#broker-mode`).
//!
//! Guarantees: the ServiceAccount token is read from its file on every call (the kubelet rotates
//! it), sent only to the broker, and never logged or returned; broker errors become sidecar errors
//! by their code (409 `account_not_active` keeps its `state`), never by echoing the broker's text,
//! except `invalid_request`'s description, scrubbed, which names a sidecar bug.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Map, Value};
use url::Url;

use super::args::{BrokerArgs, valid_namespace};
use super::credentials::Credential;
use super::error::ApiError;
use super::scrub;

const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Longest `Retry-After` of a 503 the sidecar waits out itself (longer ones go to the agent).
const RETRY_MAX: Duration = Duration::from_secs(2);
/// Largest broker answer read (a credential document is a few KiB).
const ANSWER_LIMIT: usize = 256 * 1024;

/// Which account to ask the broker for (also the cache key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Resource {
        namespace: String,
        name: String,
    },
    User {
        namespace: String,
        connection: String,
        identifier: String,
    },
}

impl Key {
    /// How errors name the account (never the token).
    pub fn describe(&self) -> String {
        match self {
            Key::Resource { namespace, name } => format!("{namespace}/{name}"),
            Key::User {
                namespace,
                connection,
                identifier,
            } => format!("of connection {connection} for `{identifier}` in {namespace}"),
        }
    }
}

/// One broker answer.
#[derive(Debug)]
pub struct Fetched {
    /// `namespace/name` of the account the broker answered for.
    pub name: String,
    pub provider: Option<String>,
    pub expires_in: Option<u64>,
    pub credential: Credential,
}

pub struct Broker {
    endpoint: Url,
    token_file: PathBuf,
    namespace: Option<String>,
    /// The token's namespace claim, once read (a pod never changes namespace).
    claimed: OnceLock<String>,
    http: reqwest::Client,
}

impl Broker {
    pub fn new(args: &BrokerArgs) -> Result<Broker, reqwest::Error> {
        let http = crate::http::client_builder(
            concat!("agent-auth-operator-sidecar/", env!("CARGO_PKG_VERSION")),
            Duration::from_secs(5),
            Duration::from_secs(15),
        )
        // The broker closes idle connections after 5 s: never reuse one that old (a request on a
        // connection the server is closing fails instead of reaching it).
        .pool_idle_timeout(Duration::from_secs(3))
        .build()?;
        Ok(Broker {
            endpoint: args.endpoint.clone(),
            token_file: args.token_file.clone(),
            namespace: args.namespace.clone(),
            claimed: OnceLock::new(),
            http,
        })
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// The pod's ServiceAccount token, read now.
    pub fn subject_token(&self) -> Result<String, ApiError> {
        let token = std::fs::read_to_string(&self.token_file)
            .map_err(|e| ApiError::BrokerToken(format!("{}: {}", self.token_file.display(), e.kind())))?;
        let token = token.trim().to_owned();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(ApiError::BrokerToken(format!(
                "{} is empty",
                self.token_file.display()
            )));
        }
        Ok(token)
    }

    /// The namespace of bare account names: `--namespace`, else the token's claim.
    pub fn namespace(&self) -> Result<String, ApiError> {
        if let Some(ns) = self.namespace.as_ref().or(self.claimed.get()) {
            return Ok(ns.clone());
        }
        let ns = token_namespace(&self.subject_token()?).ok_or_else(|| {
            ApiError::BrokerToken("its payload names no namespace: set --namespace (POD_NAMESPACE)".into())
        })?;
        Ok(self.claimed.get_or_init(|| ns).clone())
    }

    /// Exchanges the pod's token for the credential of `key`. A 503 whose `Retry-After` is short
    /// (the broker says a token is being renewed, or its caches are syncing) is tried once more
    /// after that wait, so the agent does not see a renewal.
    pub async fn fetch(&self, key: &Key) -> Result<Fetched, ApiError> {
        let mut retried = false;
        loop {
            let token = self.subject_token()?;
            let (status, retry_after, doc) = self.exchange(key, &token).await?;
            if status.is_success() {
                return answer(key, doc);
            }
            if status == StatusCode::SERVICE_UNAVAILABLE
                && !retried
                && let Some(wait) = retry_after.filter(|w| *w <= RETRY_MAX)
            {
                retried = true;
                tokio::time::sleep(wait).await; // the broker's Retry-After
                continue;
            }
            return Err(refusal(key, status, &doc, &token));
        }
    }

    /// One `POST /token`: the status, `Retry-After` and the JSON body (empty when not JSON).
    async fn exchange(
        &self,
        key: &Key,
        token: &str,
    ) -> Result<(StatusCode, Option<Duration>, Map<String, Value>), ApiError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", GRANT_TYPE),
            ("subject_token", token),
            ("subject_token_type", JWT_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
        ];
        let resource;
        match key {
            Key::Resource { namespace, name } => {
                resource = format!("agentauth://{namespace}/{name}");
                form.push(("resource", &resource));
            }
            Key::User {
                namespace,
                connection,
                identifier,
            } => form.extend([
                ("audience", connection.as_str()),
                ("identifier", identifier.as_str()),
                ("namespace", namespace.as_str()),
            ]),
        }
        let resp = self
            .http
            .post(self.endpoint.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| ApiError::BrokerUnavailable(crate::http::describe_chain(&e.without_url())))?;
        let status = resp.status();
        let retry_after = crate::http::retry_after(resp.headers());
        let body = crate::http::read_limited(resp, ANSWER_LIMIT)
            .await
            .map_err(|_| ApiError::BrokerUnavailable("its answer could not be read".into()))?;
        let doc: Map<String, Value> = serde_json::from_slice(&body).unwrap_or_default();
        Ok((status, retry_after, doc))
    }
}

/// A 200 answer: its `credentials` document, `provider` and `expires_in`.
fn answer(key: &Key, mut doc: Map<String, Value>) -> Result<Fetched, ApiError> {
    let account = doc.get("account");
    let part = |k: &str| {
        account
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let name = match (part("namespace"), part("name")) {
        (Some(ns), Some(n)) => format!("{ns}/{n}"),
        _ => key.describe(),
    };
    let Some(Value::Object(credentials)) = doc.remove("credentials") else {
        return Err(ApiError::BrokerUnavailable(
            "its answer carries no credentials".into(),
        ));
    };
    let credential = Credential::from_document(credentials).map_err(|source| ApiError::Credential {
        account: name.clone(),
        source,
    })?;
    let provider = doc
        .get("provider")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| credential.provider.clone());
    Ok(Fetched {
        name,
        provider,
        expires_in: doc.get("expires_in").and_then(Value::as_u64),
        credential,
    })
}

/// A broker error as the sidecar's.
fn refusal(key: &Key, status: StatusCode, doc: &Map<String, Value>, token: &str) -> ApiError {
    let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or_default();
    match (status.as_u16(), text("error")) {
        (409, _) | (_, "account_not_active") => ApiError::NotActive {
            account: key.describe(),
            state: Some(text("state"))
                .filter(|s| {
                    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                })
                .unwrap_or("UNKNOWN")
                .to_owned(),
        },
        (403, _) => ApiError::Forbidden(key.describe()),
        (401, _) => ApiError::BrokerTokenRefused,
        (400, "invalid_target") => ApiError::UnknownBrokerAccount(key.describe()),
        (s, _) if s >= 500 || s == 429 => ApiError::BrokerUnavailable(format!("it answered {s}")),
        (s, _) => {
            let mut message = scrub::text(text("error_description"), &[token.to_owned()]);
            message.truncate(message.floor_char_boundary(300));
            ApiError::Broker {
                status: s,
                message: format!("{} {message}", text("error")).trim().to_owned(),
            }
        }
    }
}

/// The `kubernetes.io.namespace` claim of a ServiceAccount token. The signature is not checked:
/// this only picks the default namespace; the broker verifies the token.
pub fn token_namespace(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let ns = claims.pointer("/kubernetes.io/namespace")?.as_str()?;
    valid_namespace(ns).then(|| ns.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!(
            "{}.{}.sig",
            b64(br#"{"alg":"RS256"}"#),
            b64(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn the_namespace_claim_of_a_service_account_token() {
        let t = jwt(
            json!({"aud": ["agentauth.dev"], "kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "agent"}}}),
        );
        assert_eq!(token_namespace(&t).as_deref(), Some("team-a"));
        assert_eq!(token_namespace(&jwt(json!({"sub": "x"}))), None);
        assert_eq!(
            token_namespace(&jwt(json!({"kubernetes.io": {"namespace": "../x"}}))),
            None
        );
        assert_eq!(token_namespace("not-a-jwt"), None);
    }

    #[test]
    fn broker_errors_by_code() {
        let key = Key::Resource {
            namespace: "ns".into(),
            name: "a".into(),
        };
        let doc = |v: Value| v.as_object().cloned().unwrap();
        let e = |s: u16, v: Value| refusal(&key, StatusCode::from_u16(s).unwrap(), &doc(v), "tok-secret-123");
        assert!(matches!(
            e(409, json!({"error": "account_not_active", "state": "EXPIRED"})),
            ApiError::NotActive { state, .. } if state == "EXPIRED"
        ));
        assert!(
            matches!(e(409, json!({"state": "<b>"})), ApiError::NotActive { state, .. } if state == "UNKNOWN")
        );
        assert!(matches!(
            e(403, json!({"error": "access_denied"})),
            ApiError::Forbidden(_)
        ));
        assert!(matches!(e(401, json!({})), ApiError::BrokerTokenRefused));
        assert!(matches!(
            e(400, json!({"error": "invalid_target"})),
            ApiError::UnknownBrokerAccount(_)
        ));
        assert!(matches!(e(503, json!({})), ApiError::BrokerUnavailable(_)));
        let bad = e(
            400,
            json!({"error": "invalid_request", "error_description": "bad tok-secret-123"}),
        );
        assert!(
            matches!(&bad, ApiError::Broker { status: 400, message } if !message.contains("tok-secret")),
            "{bad:?}"
        );
    }

    #[test]
    fn an_answer_is_its_credentials_document() {
        let key = Key::User {
            namespace: "ns".into(),
            connection: "gmail".into(),
            identifier: "u1".into(),
        };
        let doc = json!({"access_token": "ya29.x", "expires_in": 1200, "provider": "google",
            "account": {"namespace": "ns", "name": "u1-gmail"},
            "credentials": {"authorization": "Bearer ya29.x", "access_token": "ya29.x"}});
        let f = answer(&key, doc.as_object().cloned().unwrap()).unwrap();
        assert_eq!(
            (f.name.as_str(), f.provider.as_deref(), f.expires_in),
            ("ns/u1-gmail", Some("google"), Some(1200))
        );
        assert_eq!(f.credential.header_value, "Bearer ya29.x");
        assert!(answer(&key, Map::new()).is_err());
    }
}
