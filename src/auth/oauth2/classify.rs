//! What a failed token endpoint call means for the account: a rejected grant needs the user
//! again, a rejected client needs the Connection fixed, anything else is transient, and then
//! whether the provider may have acted on the request all the same.

use std::time::Duration;

use oauth2::basic::{BasicErrorResponse, BasicErrorResponseType};
use oauth2::{HttpClientError, RequestTokenError};

use crate::egress::SendError;

/// Why a call to the token endpoint failed. Messages contain no token material and no remote
/// text: only the RFC 6749 error code (restricted to its alphabet), the HTTP status, or a fixed
/// phrase. The provider's `error_description` is kept only scrubbed ([`crate::auth::scrub::line`]:
/// no secret the request carried, no token shape, no markup, one bounded line) and is never put
/// in status, Events, pages or logs; `error_uri` and non-JSON bodies are dropped.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenEndpointError {
    /// The grant is no longer valid (`invalid_grant`, revoked, expired): the user must authorize again.
    #[error("the provider rejected the grant ({code})")]
    Rejected {
        code: String,
        /// The provider's `error_description`, scrubbed; never shown or logged.
        description: Option<String>,
    },
    /// The provider refused the client itself (`invalid_client`): the Connection needs fixing.
    #[error("the provider rejected the client ({code})")]
    ClientRejected {
        code: String,
        /// The provider's `error_description`, scrubbed; never shown or logged.
        description: Option<String>,
    },
    /// The Connection or a Secret it names cannot be used; our own words, safe to show.
    #[error("{0}")]
    Misconfigured(String),
    /// Network trouble, 5xx, malformed responses: worth retrying. `delivery` tells whether the
    /// provider may have acted on the request (and rotated a refresh token) all the same.
    #[error("token endpoint unavailable: {message}")]
    Transient { message: String, delivery: Delivery },
    /// 429/503 with `Retry-After`: retry, but not before the provider asked.
    #[error("token endpoint asked to retry after {}s: {message}", retry_after.as_secs())]
    RetryAfter { message: String, retry_after: Duration },
}

/// What became of a request that failed transiently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// It provably never reached the endpoint (refused connect, DNS, TLS, egress policy, shutdown).
    NotSent,
    /// The endpoint answered with an error: the grant was not used.
    Answered,
    /// Sent, and no usable answer came (timeout after sending, reset while reading, an
    /// unreadable success): the provider may have rotated the refresh token.
    NoAnswer,
}

impl TokenEndpointError {
    /// A transient failure in our own words, known not to have used the grant.
    pub fn transient(message: impl Into<String>) -> Self {
        TokenEndpointError::Transient {
            message: message.into(),
            delivery: Delivery::Answered,
        }
    }

    /// The request may have been acted upon although no usable answer came.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            TokenEndpointError::Transient {
                delivery: Delivery::NoAnswer,
                ..
            }
        )
    }
}

/// An RFC 6749 error code as shown: its own alphabet only, short, else a neutral word.
pub fn error_code(raw: &str) -> String {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok { raw.to_owned() } else { "error".to_owned() }
}

/// Longest `error_description` kept (scrubbed).
const DESCRIPTION_MAX: usize = 200;

/// What a failed call means. `status` is the HTTP status of the answer, when one came; `secrets`
/// are the values the request carried (code, verifier, refresh token, client secret), which a
/// hostile or careless endpoint may echo in its error text.
pub(super) fn classify(
    e: RequestTokenError<HttpClientError<SendError>, BasicErrorResponse>,
    status: Option<u16>,
    secrets: &[String],
) -> TokenEndpointError {
    let http = status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
    match e {
        RequestTokenError::ServerResponse(r) => {
            let code = error_code(r.error().as_ref());
            let description = r
                .error_description()
                .map(|d| crate::auth::scrub::line(d, secrets, DESCRIPTION_MAX))
                .filter(|d| !d.is_empty());
            match r.error() {
                BasicErrorResponseType::InvalidClient | BasicErrorResponseType::UnauthorizedClient => {
                    TokenEndpointError::ClientRejected { code, description }
                }
                // Dex answers `invalid_request` for refresh tokens it no longer knows.
                BasicErrorResponseType::InvalidGrant
                | BasicErrorResponseType::InvalidRequest
                | BasicErrorResponseType::InvalidScope => TokenEndpointError::Rejected { code, description },
                BasicErrorResponseType::UnsupportedGrantType => {
                    TokenEndpointError::ClientRejected { code, description }
                }
                BasicErrorResponseType::Extension(_) => {
                    TokenEndpointError::transient(format!("the endpoint answered error {code}{http}"))
                }
            }
        }
        RequestTokenError::Request(HttpClientError::Reqwest(e)) => TokenEndpointError::Transient {
            message: e.to_string(),
            delivery: match *e {
                SendError::NotSent(_) | SendError::Refused(_) => Delivery::NotSent,
                SendError::Timeout(_) | SendError::NoAnswer(_) => Delivery::NoAnswer,
            },
        },
        RequestTokenError::Request(HttpClientError::Http(_)) => TokenEndpointError::Transient {
            message: "the request could not be built".into(),
            delivery: Delivery::NotSent,
        },
        RequestTokenError::Request(_) => TokenEndpointError::Transient {
            message: "the endpoint's answer could not be read".into(),
            delivery: Delivery::NoAnswer,
        },
        RequestTokenError::Parse(..) => {
            TokenEndpointError::transient(format!("malformed token response{http}"))
        }
        RequestTokenError::Other(s) => match s.strip_prefix("HTTP ") {
            // The crate words unexpected statuses itself; keep only the status.
            Some(rest) => TokenEndpointError::transient(format!(
                "the endpoint answered HTTP {}",
                rest.chars().take_while(char::is_ascii_digit).collect::<String>()
            )),
            None => TokenEndpointError::transient("unexpected answer from the endpoint"),
        },
    }
}
