//! The RFC 8693 identifiers the broker speaks (one place, for the parser, the answer and the
//! refusals).

/// `grant_type` of a token exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// `subject_token_type` of a projected ServiceAccount token.
pub const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
/// The only `requested_token_type` (and the `issued_token_type`).
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
