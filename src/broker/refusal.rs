//! Why the broker says no, as RFC 6749 §5.2 error answers with the status each one deserves.
//!
//! Descriptions are the broker's own sentences: nothing the caller sent (least of all its token)
//! and nothing a provider said is ever echoed back.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::AccountState;

/// One refusal of `POST /token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400 `invalid_request`: the call is malformed.
    InvalidRequest(String),
    /// 400 `unsupported_grant_type`: not a token exchange.
    UnsupportedGrant,
    /// 413: the body is larger than any real exchange.
    TooLarge,
    /// 415: not a form body.
    NotForm,
    /// 408: the body did not arrive in time.
    SlowBody,
    /// 401 `invalid_client`: the subject token is not a valid ServiceAccount token for our audience.
    Unauthenticated,
    /// 400 `invalid_target`: no such account (or none matching), or not delivered by the broker.
    UnknownTarget(String),
    /// 403 `access_denied`: RBAC does not grant `use` on the account.
    Denied,
    /// 409 `account_not_active`: the account has no credential to hand out right now.
    NotActive(AccountState),
    /// 503 `temporarily_unavailable`: caches not synced, the API server did not answer, or the
    /// token is being renewed.
    Unavailable(&'static str),
}

impl Refusal {
    pub fn request(message: impl Into<String>) -> Refusal {
        Refusal::InvalidRequest(message.into())
    }

    /// The `outcome` label of `agentauth_broker_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Refusal::InvalidRequest(_)
            | Refusal::UnsupportedGrant
            | Refusal::TooLarge
            | Refusal::NotForm
            | Refusal::SlowBody => "invalid_request",
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::UnknownTarget(_) => "invalid_target",
            Refusal::Denied => "access_denied",
            Refusal::NotActive(_) => "not_active",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            Refusal::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request", m.clone()),
            Refusal::UnsupportedGrant => (
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("only {} is supported", super::wire::GRANT_TYPE),
            ),
            Refusal::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "the request body is too large".into(),
            ),
            Refusal::NotForm => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request",
                "send the parameters as application/x-www-form-urlencoded".into(),
            ),
            Refusal::SlowBody => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                "the request body did not arrive in time".into(),
            ),
            Refusal::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "subject_token is not a valid, unexpired ServiceAccount token for this broker's audience".into(),
            ),
            Refusal::UnknownTarget(m) => (StatusCode::BAD_REQUEST, "invalid_target", m.clone()),
            Refusal::Denied => (
                StatusCode::FORBIDDEN,
                "access_denied",
                "the ServiceAccount may not use this ConnectedAccount (RBAC verb `use` on connectedaccounts.agentauth.dev)"
                    .into(),
            ),
            Refusal::NotActive(state) => (
                StatusCode::CONFLICT,
                "account_not_active",
                format!(
                    "the account is {}; its user must authorize through status.authorizationLink first",
                    state.as_str()
                ),
            ),
            Refusal::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                (*why).to_owned(),
            ),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, error, description) = self.parts();
        let mut body = json!({"error": error, "error_description": description});
        if let Refusal::NotActive(state) = &self {
            body["state"] = json!(state.as_str());
        }
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            Refusal::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Refusal::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
