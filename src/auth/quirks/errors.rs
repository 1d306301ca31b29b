//! Provider errors wherever they hide (`200 OK` with `{"ok":false}`, HubSpot's own shape) turned
//! into RFC 6749 errors with the standard code.

use serde_json::{Map, Value};

/// An error found in a response body, in whatever shape the provider used.
pub(super) struct FoundError {
    code: String,
    description: Option<String>,
    uri: Option<String>,
}

pub(super) fn error_of(obj: &Map<String, Value>, status: u16) -> Option<FoundError> {
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
    let description = text("error_description").or_else(|| text("message"));
    let code = match obj.get("error") {
        Some(Value::String(code)) => code.clone(),
        // Figma: {"error": true, "status": 400, "message": "..."}.
        Some(Value::Bool(true)) => "invalid_request".to_owned(),
        // HubSpot: {"status": "BAD_REFRESH_TOKEN", "message": "..."} (or "error" + category).
        _ if status >= 400 => match text("status") {
            Some(s) if s.eq_ignore_ascii_case("error") => text("category")?,
            Some(s) => s,
            None => return None,
        },
        _ => return None,
    };
    Some(FoundError {
        code,
        description,
        uri: text("error_uri"),
    })
}

impl FoundError {
    pub(super) fn into_response(self, status: u16) -> (u16, Map<String, Value>) {
        let original = self.code.to_ascii_lowercase();
        let (standard, rate_limited) = match standard_code(&original) {
            Some(c) => (c, c == "temporarily_unavailable"),
            None => (original.as_str(), false),
        };
        // Keep the provider's own code where it was translated: it says what really happened.
        let description = match (standard != self.code, self.description) {
            (true, Some(d)) => Some(format!("{}: {d}", self.code)),
            (true, None) => Some(self.code.clone()),
            (false, d) => d,
        };
        let mut out = Map::new();
        out.insert("error".into(), Value::String(standard.to_owned()));
        if let Some(d) = description {
            out.insert("error_description".into(), Value::String(d));
        }
        if let Some(u) = self.uri {
            out.insert("error_uri".into(), Value::String(u));
        }
        let status = match status {
            _ if rate_limited => 429,
            200..=299 => 400,
            s => s,
        };
        (status, out)
    }
}

/// The RFC 6749 5.2 code for a provider's own error code (lowercase), if it has one.
fn standard_code(code: &str) -> Option<&'static str> {
    Some(match code {
        "invalid_request" => "invalid_request",
        "invalid_scope" => "invalid_scope",
        "unauthorized_client" => "unauthorized_client",
        // The grant (code or refresh token) is bad, spent, expired or revoked: the user again.
        "invalid_grant"
        | "invalid_code"
        | "code_already_used"
        | "code_expired"
        | "invalid_refresh_token"
        | "bad_refresh_token"
        | "bad_verification_code"
        | "bad_auth_code"
        | "token_revoked"
        | "token_expired"
        | "expired_token"
        | "refresh_token_expired"
        | "bad_redirect_uri"
        | "redirect_uri_mismatch" => "invalid_grant",
        // The client's credentials are wrong: the Connection needs fixing.
        "invalid_client"
        | "invalid_client_id"
        | "bad_client_id"
        | "bad_client_secret"
        | "invalid_client_secret"
        | "incorrect_client_credentials" => "invalid_client",
        "unsupported_grant_type" | "invalid_grant_type" | "bad_grant_type" => "unsupported_grant_type",
        "ratelimited" | "rate_limited" | "temporarily_unavailable" => "temporarily_unavailable",
        _ => return None,
    })
}
