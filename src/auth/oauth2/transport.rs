//! The HTTP plumbing under the `oauth2` crate: requests go out through the egress client, answers
//! come back bounded and rewritten into RFC 6749 shape, and what the crate's errors forget (the
//! status, `Retry-After`) is kept for classification.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use oauth2::basic::{BasicErrorResponse, BasicTokenType};
use oauth2::{ExtraTokenFields, HttpClientError, RequestTokenError, StandardTokenResponse};
use serde::{Deserialize, Serialize};

use super::classify::{Delivery, TokenEndpointError, classify};
use crate::auth::quirks::{self, TokenQuirks};
use crate::egress::{EgressClient, SendError};

/// Token response fields beyond the standard ones, kept as provider metadata.
#[derive(Clone, Debug, Deserialize, Serialize, Default)]
pub struct Extra {
    #[serde(flatten)]
    pub(super) fields: BTreeMap<String, serde_json::Value>,
}
impl ExtraTokenFields for Extra {}

/// A token endpoint answer as the crate parses it.
pub(super) type Response = StandardTokenResponse<Extra, BasicTokenType>;

/// The HTTP client the `oauth2` crate talks through: it rewrites provider quirks into RFC 6749
/// shape ([`quirks::normalise`]) before the crate parses the answer, and remembers the
/// `Retry-After` of a 429/503 answer (the crate's errors do not carry headers).
pub(super) struct ProviderHttp {
    http: EgressClient,
    quirks: TokenQuirks,
    now: Timestamp,
    /// Longest wait for the whole answer, when not the client's default.
    timeout: Option<Duration>,
    retry_after: std::sync::Arc<std::sync::Mutex<Option<Duration>>>,
    /// The status of the answer, after quirks: a success that does not parse may have rotated.
    status: std::sync::Arc<std::sync::Mutex<Option<u16>>>,
    /// The `id_token` of a successful answer, taken before the quirks drop it (it is a credential
    /// and never kept as metadata); read once by [`ProviderHttp::id_token`].
    id_token: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl ProviderHttp {
    pub(super) fn new(
        http: &EgressClient,
        quirks: TokenQuirks,
        now: Timestamp,
        timeout: Option<Duration>,
    ) -> Self {
        ProviderHttp {
            http: http.clone(),
            quirks,
            now,
            timeout,
            retry_after: Default::default(),
            status: Default::default(),
            id_token: Default::default(),
        }
    }

    /// The `id_token` of the last successful answer, if it had one.
    pub(super) fn id_token(&self) -> Option<String> {
        self.id_token.lock().ok().and_then(|mut s| s.take())
    }

    /// Classifies the result of a request made through `self`; a transient failure the provider
    /// asked us to retry later becomes `RetryAfter`.
    /// `secrets`: what the request carried, to scrub from the endpoint's error text.
    pub(super) fn outcome(
        &self,
        result: Result<Response, RequestTokenError<HttpClientError<SendError>, BasicErrorResponse>>,
        secrets: &[String],
    ) -> Result<Response, TokenEndpointError> {
        let waited = self.retry_after.lock().ok().and_then(|s| *s);
        let status = self.status.lock().ok().and_then(|s| *s);
        let success = status.is_some_and(|s| (200..300).contains(&s));
        match (result.map_err(|e| classify(e, status, secrets)), waited) {
            (Err(TokenEndpointError::Transient { message, .. }), Some(retry_after)) => {
                Err(TokenEndpointError::RetryAfter { message, retry_after })
            }
            // The provider said yes in a way we cannot read: it may have rotated.
            (Err(TokenEndpointError::Transient { message, .. }), None) if success => {
                Err(TokenEndpointError::Transient {
                    message,
                    delivery: Delivery::NoAnswer,
                })
            }
            (other, _) => other,
        }
    }
}

type HttpFuture<'c> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<oauth2::HttpResponse, HttpClientError<SendError>>>
            + Send
            + Sync
            + 'c,
    >,
>;

impl<'c> oauth2::AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpClientError<SendError>;
    type Future = HttpFuture<'c>;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(async move {
            let resp = send(&self.http, request, self.timeout).await?;
            let (mut parts, mut body) = resp.into_parts();
            if parts.status.is_success()
                && let Ok(serde_json::Value::Object(obj)) = serde_json::from_slice::<serde_json::Value>(&body)
                && let Some(serde_json::Value::String(id)) = obj.get("id_token")
                && let Ok(mut slot) = self.id_token.lock()
            {
                *slot = Some(id.clone());
            }
            if let Some(rewritten) = quirks::normalise(parts.status.as_u16(), &body, &self.quirks, self.now)
                && let Ok(status) = oauth2::http::StatusCode::from_u16(rewritten.status)
            {
                parts.status = status;
                parts.headers.insert(
                    oauth2::http::header::CONTENT_TYPE,
                    oauth2::http::HeaderValue::from_static("application/json"),
                );
                parts.headers.remove(oauth2::http::header::CONTENT_LENGTH);
                body = rewritten.body;
            }
            if let Ok(mut slot) = self.status.lock() {
                *slot = Some(parts.status.as_u16());
            }
            if matches!(parts.status.as_u16(), 429 | 503)
                && let Some(d) = crate::http::retry_after(&parts.headers)
                && let Ok(mut slot) = self.retry_after.lock()
            {
                *slot = Some(d);
            }
            Ok(oauth2::http::Response::from_parts(parts, body))
        })
    }
}

/// Longest token endpoint answer read; more is cut off (and then fails to parse).
const MAX_ANSWER: usize = 64 * 1024;

/// Sends one request of the `oauth2` crate through the egress client and reads a bounded answer.
async fn send(
    http: &EgressClient,
    request: oauth2::HttpRequest,
    timeout: Option<Duration>,
) -> Result<oauth2::HttpResponse, HttpClientError<SendError>> {
    let mut request = reqwest::Request::try_from(request)
        .map_err(|e| HttpClientError::Reqwest(Box::new(SendError::NotSent(e))))?;
    if timeout.is_some() {
        *request.timeout_mut() = timeout;
    }
    let resp = http
        .execute(request)
        .await
        .map_err(|e| HttpClientError::Reqwest(Box::new(e)))?;
    let mut builder = oauth2::http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        builder = builder.header(k, v);
    }
    let read = crate::http::read_capped(resp, MAX_ANSWER)
        .await
        .map_err(|e| HttpClientError::Reqwest(Box::new(SendError::NoAnswer(e))))?;
    builder.body(read.body.to_vec()).map_err(HttpClientError::Http)
}

/// The HTTP client for token endpoints: the egress policy, no redirects (the oauth2 crate requires
/// it, against SSRF), bounded timeouts.
pub fn http_client(policy: crate::egress::EgressPolicy) -> Result<EgressClient, reqwest::Error> {
    EgressClient::new(policy, Duration::from_secs(15))
}
