//! Trading a minted JWT at a token endpoint: an RFC 7523 `jwt-bearer` grant, or the bearer
//! credential of a POST (GitHub App installation tokens).

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

use super::mint::mint;
use super::{JwtError, Template, config};
use crate::api::{CustomJwtSettings, ExchangeStyle, JwtExchange};
use crate::auth::fields::is_credential;
use crate::store::TokenSet;

/// Largest token endpoint response read; more is refused rather than buffered.
const MAX_RESPONSE: usize = 64 * 1024;
/// RFC 7523 grant type.
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The fields of an exchange answer kept as metadata: what GitHub's installation tokens say about
/// their reach. Everything else an endpoint sends is dropped.
const EXCHANGE_METADATA: &[&str] = &["permissions", "repository_selection", "repositories"];

const USER_AGENT: &str = concat!("agent-auth-operator/", env!("CARGO_PKG_VERSION"));

/// The rendered token URL; the egress policy decides whether it may be called.
pub(super) fn token_url(exchange: &JwtExchange, t: &Template) -> Result<url::Url, JwtError> {
    url::Url::parse(&t.render_url(&exchange.token_url))
        .map_err(|e| config(format!("exchange.tokenUrl is not a valid URL: {e}")))
}

/// Mints a JWT and, when `exchange` is set, trades it at the token endpoint. Without exchange
/// the credential is the JWT itself (type `Bearer`, expiring at its `exp`). With exchange it is
/// the endpoint's access token; when the endpoint states no expiry the token is assumed to live
/// as long as the JWT, so it is renewed on the same schedule. `http` should not follow
/// redirects and should have timeouts (see [`crate::auth::oauth2::http_client`]).
pub async fn obtain(
    http: &crate::egress::EgressClient,
    settings: &CustomJwtSettings,
    key: &[u8],
    t: &Template<'_>,
    now: Timestamp,
) -> Result<TokenSet, JwtError> {
    let Some(exchange) = &settings.exchange else {
        let (jwt, exp) = mint(settings, key, t, now)?;
        return Ok(TokenSet {
            access_token: jwt,
            token_type: "Bearer".into(),
            expires_at: Some(exp),
            obtained_at: now,
            ..Default::default()
        });
    };
    let url = token_url(exchange, t)?;
    let (jwt, jwt_exp) = mint(settings, key, t, now)?;
    let request = match exchange.style {
        ExchangeStyle::JwtBearer => {
            let scope = exchange.scopes.join(" ");
            let mut form = vec![("grant_type", JWT_BEARER), ("assertion", jwt.as_str())];
            if !scope.is_empty() {
                form.push(("scope", scope.as_str()));
            }
            http.post(url.as_str())
                .map_err(|e| config(format!("exchange.tokenUrl refused: {e}")))?
                .header(reqwest::header::ACCEPT, "application/json")
                .form(&form)
        }
        ExchangeStyle::BearerCredential => http
            .post(url.as_str())
            .map_err(|e| config(format!("exchange.tokenUrl refused: {e}")))?
            .bearer_auth(&jwt)
            .header(
                reqwest::header::ACCEPT,
                "application/vnd.github+json, application/json",
            )
            .header(reqwest::header::USER_AGENT, USER_AGENT),
    };
    let response = request
        .send()
        .await
        .map_err(|e| JwtError::transient(crate::egress::phrase(&e)))?;
    let status = response.status();
    let retry_after = if matches!(status.as_u16(), 429 | 503) {
        crate::http::retry_after(response.headers())
    } else {
        None
    };
    let body = read_bounded(response).await;
    if status.is_success() {
        let body = body?;
        let fields = serde_json::from_slice::<Map<String, Value>>(&body).map_err(|_| {
            JwtError::transient(format!("malformed token response (HTTP {})", status.as_u16()))
        })?;
        let requested = match exchange.style {
            ExchangeStyle::JwtBearer => exchange.scopes.clone(),
            ExchangeStyle::BearerCredential => Vec::new(),
        };
        return token_set(fields, requested, jwt_exp, now);
    }
    let fields = body
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .unwrap_or_default();
    let code = fields
        .get("error")
        .and_then(Value::as_str)
        .filter(|c| {
            !c.is_empty()
                && c.len() <= 64
                && c.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        })
        .map(str::to_owned);
    let description = fields
        .get("error_description")
        .or_else(|| fields.get("message")) // GitHub's error shape
        .and_then(Value::as_str)
        .map(|d| scrub(d, &jwt))
        .filter(|d| !d.is_empty());
    let s = status.as_u16();
    match s {
        300..=399 => Err(config(format!(
            "exchange.tokenUrl answered with a redirect (HTTP {s}); set the final URL"
        ))),
        408 | 429 | 500..=599 => Err(JwtError::Transient {
            message: format!("HTTP {s}{}", code.map(|c| format!(", {c}")).unwrap_or_default()),
            retry_after,
        }),
        _ => Err(JwtError::Rejected {
            status: s,
            code,
            description,
        }),
    }
}

/// The credential from a successful answer: RFC 6749 (`access_token`, `expires_in`, `scope`) or
/// GitHub's (`token`, `expires_at`). The other fields are kept as metadata.
pub(super) fn token_set(
    fields: Map<String, Value>,
    requested_scopes: Vec<String>,
    jwt_exp: Timestamp,
    now: Timestamp,
) -> Result<TokenSet, JwtError> {
    let access_token = fields
        .get("access_token")
        .or_else(|| fields.get("token"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| JwtError::transient("the token response has no access_token or token"))?
        .to_owned();
    let expires_in = fields.get("expires_in").and_then(|v| match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    });
    let expires_at = match expires_in {
        // Capped at ten years so a silly value cannot overflow.
        Some(secs) => now
            .checked_add(SignedDuration::from_secs(secs.clamp(0, 315_360_000)))
            .ok(),
        None => fields
            .get("expires_at")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<Timestamp>().ok()),
    }
    .unwrap_or(jwt_exp);
    let token_type = fields
        .get("token_type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| {
            if t.eq_ignore_ascii_case("bearer") {
                "Bearer"
            } else {
                t
            }
        })
        .unwrap_or("Bearer")
        .to_owned();
    let scopes = match fields.get("scope").and_then(Value::as_str) {
        Some(s) => s.split_whitespace().map(str::to_owned).collect(),
        // RFC 6749 5.1: an omitted scope means the requested scopes were granted.
        None => requested_scopes,
    };
    // Only allowlisted fields: an endpoint's other answers never reach the agent Secret.
    let metadata: BTreeMap<String, Value> = fields
        .into_iter()
        .filter(|(k, _)| !is_credential(k) && EXCHANGE_METADATA.contains(&k.as_str()))
        .collect();
    Ok(TokenSet {
        access_token,
        token_type,
        expires_at: Some(expires_at),
        scopes,
        obtained_at: now,
        metadata,
        ..Default::default()
    })
}

/// Reads at most [`MAX_RESPONSE`] bytes; a larger answer is an error, never buffered whole.
async fn read_bounded(response: reqwest::Response) -> Result<bytes::Bytes, JwtError> {
    crate::http::read_limited(response, MAX_RESPONSE)
        .await
        .map_err(|e| match e {
            crate::http::ReadError::TooLarge(_) => JwtError::transient("token response larger than 64 KiB"),
            crate::http::ReadError::Read(e) => JwtError::transient(crate::egress::phrase(&e)),
        })
}

/// An endpoint's error text, safe for status and logs: one line, at most 200 characters, with
/// anything that looks like a JWT (or is ours) removed, since some servers echo what they got.
fn scrub(text: &str, jwt: &str) -> String {
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| {
            if w.contains("eyJ") || w.contains(jwt) || (w.len() >= 16 && jwt.contains(w)) {
                "<redacted>"
            } else {
                w
            }
        })
        .collect();
    words
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}
