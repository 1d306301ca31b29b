//! Custom JWTs: the operator mints a signed JWT for an account (no user involved) and optionally
//! trades it at a token endpoint for an access token, either as an RFC 7523 `jwt-bearer` grant
//! (Google service accounts) or as the bearer credential of a POST (GitHub App installation
//! tokens).
//!
//! Errors are classified for the controller: [`JwtError::Config`] means the Connection (or its
//! key) must be fixed, [`JwtError::Rejected`] that the endpoint refused the JWT, anything else is
//! [`JwtError::Transient`] and worth retrying. No message ever contains the key, the JWT or a token.
//!
//! Claim choices: `iat` is backdated by a minute (at most half the lifetime) because receivers
//! such as GitHub refuse an `iat` in their future, and `exp - iat` is exactly the configured
//! lifetime because receivers cap it (Google 1h, GitHub 10m). No `nbf` is sent: it adds nothing
//! to `iat` and some servers reject tokens that carry it.
//!
//! - [`mint`]: the claims and the signature;
//! - [`keys`]: the signing key from the Secret's bytes;
//! - [`exchange`]: trading the JWT at a token endpoint.

use std::time::Duration;

use jiff::Timestamp;

use crate::api::CustomJwtSettings;
pub use crate::auth::template::Template;

mod exchange;
mod keys;
mod mint;

pub use exchange::obtain;
pub use mint::{lifetime, mint};

/// `lifetime` when the Connection sets none.
pub const DEFAULT_LIFETIME: jiff::SignedDuration = jiff::SignedDuration::from_hours(1);
/// The `sub` claim when the Connection sets none.
pub const DEFAULT_SUBJECT: &str = "{{identifier}}";
/// Why a JWT could not be minted or exchanged. Messages never contain the key, the JWT or a token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    /// The Connection's settings or signing key cannot work; retrying will not help until they
    /// are fixed. The message is meant for the Connection's status.
    #[error("{0}")]
    Config(String),
    /// The token endpoint refused the JWT (a 4xx answer): wrong key, issuer or audience, app
    /// uninstalled, key revoked. `code` is the RFC 6749 `error` code when the endpoint sent one.
    #[error("the token endpoint rejected the JWT (HTTP {status}{})",
        code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Rejected {
        status: u16,
        code: Option<String>,
        /// The endpoint's own words, scrubbed of the JWT; for debug logs only, never shown.
        description: Option<String>,
    },
    /// Network trouble, 5xx, 429, malformed answers: retry with backoff, and not before
    /// `retry_after` when the endpoint said so.
    #[error("token endpoint unavailable: {message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl JwtError {
    /// A CamelCase reason for Events, conditions and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtError::Config(_) => "InvalidJwtConfig",
            JwtError::Rejected { .. } => "JwtRejected",
            JwtError::Transient { .. } => "TokenEndpointUnavailable",
        }
    }

    /// How long the endpoint asked us to wait (`Retry-After` on 429/503).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            JwtError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(super) fn transient(message: impl Into<String>) -> Self {
        JwtError::Transient {
            message: message.into(),
            retry_after: None,
        }
    }
}

pub(super) fn config(message: impl Into<String>) -> JwtError {
    JwtError::Config(message.into())
}

/// Checks what can be checked without an account: the lifetime, that the key suits the
/// algorithm, that it signs, and that the token URL is usable. For the Connection's Ready
/// condition.
pub fn check(settings: &CustomJwtSettings, key: &[u8]) -> Result<(), JwtError> {
    let t = Template {
        identifier: "identifier",
        name: "name",
        namespace: "namespace",
    };
    if let Some(exchange) = &settings.exchange {
        exchange::token_url(exchange, &t)?;
    }
    mint(settings, key, &t, Timestamp::now()).map(|_| ())
}

#[cfg(test)]
mod tests;
