//! The one list of credential field names: what token answers (quirks, JWT exchange, the OAuth 2.0
//! client) never keep as metadata, and what the sidecar drops from provider error bodies.

/// Names of fields whose value is a credential, wherever they appear.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "client_secret",
    // Salesforce signs its token answers.
    "signature",
    // Intercom repeats the access token as `token`.
    "token",
    "password",
    "api_key",
    "apikey",
];

/// In a token endpoint answer `code` is an authorization code, a credential too; elsewhere (a
/// provider's error body) it is an error code, and kept.
const TOKEN_ANSWER_ONLY: &[&str] = &["code"];

/// The RFC 6749 token response fields; metadata keys cannot shadow them.
const TOKEN_FIELDS: &[&str] = &[
    "access_token",
    "refresh_token",
    "token_type",
    "expires_in",
    "scope",
];

/// A credential field name in a token endpoint answer.
pub fn is_credential(key: &str) -> bool {
    CREDENTIAL_FIELDS.contains(&key) || TOKEN_ANSWER_ONLY.contains(&key)
}

/// A name that cannot be a metadata key: a credential or a token response field.
pub fn is_reserved(key: &str) -> bool {
    is_credential(key) || TOKEN_FIELDS.contains(&key)
}
