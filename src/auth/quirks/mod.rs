//! Token-endpoint responses as providers really send them, rewritten into what RFC 6749 describes
//! before the `oauth2` crate parses them. Pure functions: bytes and settings in, bytes out.
//!
//! What gets fixed:
//! - the user's token sits in a nested object (Slack `authed_user`): lifted to the top level;
//! - errors arrive as `200 OK` (Slack `{"ok":false}`, GitHub `bad_verification_code`) or in a
//!   private shape (HubSpot `{"status":"BAD_REFRESH_TOKEN"}`): turned into a 4xx RFC 6749 error
//!   whose `error` is the standard code (`invalid_grant`, `invalid_client`, ...), the provider's
//!   own code kept in the description;
//! - `scope` comma-separated or an array: space-separated; empty: dropped (the requested scopes
//!   are then assumed, as RFC 6749 5.1 says);
//! - `expires_in` as a string or null; missing where the provider documents a fixed lifetime;
//!   `refresh_token_expires_in` (GitHub) and `refresh_expires_in` (Airtable) become an absolute
//!   `refresh_token_expires_at`, since a relative number goes stale once stored;
//! - token types such as Slack's `user`: `Bearer`;
//! - metadata: only the configured fields (or, without a preset, every top-level field), never
//!   a credential, at any depth.
//!
//! - [`success`]: a token answer in RFC 6749 shape, with only the metadata asked for;
//! - [`errors`]: provider errors, wherever they hide, as RFC 6749 errors.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Map, Value};

mod errors;
mod success;

use errors::error_of;
pub use success::REFRESH_EXPIRES_AT;
use success::success;

/// What the normaliser needs to know about one provider's token responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenQuirks {
    /// Object holding the user's token fields (Slack `authed_user`).
    pub token_path: Option<String>,
    /// Metadata to keep: flat key -> dotted path. `None` (no preset) keeps every top-level field
    /// that is not a credential.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Besides whitespace, what separates granted scopes (`,` for Slack and GitHub).
    pub scope_separator: String,
    /// Lifetime assumed when the response has no `expires_in`.
    pub default_expires_in: Option<u64>,
    /// Requested scope -> the name the provider lists it under.
    pub scope_aliases: BTreeMap<String, String>,
    /// Granted scopes the provider never lists.
    pub unlisted_scopes: Vec<String>,
}

impl Default for TokenQuirks {
    fn default() -> Self {
        Self {
            token_path: None,
            metadata: None,
            scope_separator: " ".to_owned(),
            default_expires_in: None,
            scope_aliases: BTreeMap::new(),
            unlisted_scopes: Vec::new(),
        }
    }
}

/// A rewritten response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Rewrites a token endpoint response into RFC 6749 shape. `None` when the body is not a JSON
/// object (left to the `oauth2` crate, which reports it as malformed).
pub fn normalise(status: u16, body: &[u8], q: &TokenQuirks, now: Timestamp) -> Option<Rewritten> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    let token = token_source(&obj, q);
    let (status, out) = match (token, error_of(&obj, status)) {
        (None, Some(err)) => err.into_response(status),
        (Some(source), _) if status == 200 => (200, success(&obj, source, q, now)),
        // A token in a non-200 answer, or neither token nor error: nothing to improve.
        _ => (status, obj),
    };
    serde_json::to_vec(&Value::Object(out))
        .ok()
        .map(|body| Rewritten { status, body })
}

/// The object that holds the token fields: `tokenPath` when it has an access token, else the top.
fn token_source<'a>(obj: &'a Map<String, Value>, q: &TokenQuirks) -> Option<&'a Map<String, Value>> {
    let has_token = |m: &Map<String, Value>| m.get("access_token").is_some_and(Value::is_string);
    let nested = q
        .token_path
        .as_deref()
        .and_then(|p| lookup(obj, p))
        .and_then(Value::as_object)
        .filter(|m| has_token(m));
    nested.or(Some(obj).filter(|m| has_token(m)))
}

/// The value at a dotted path of nested objects.
pub(super) fn lookup<'a>(obj: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = obj.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// The granted scopes as the controller compares them with the requested ones: the provider's
/// list plus each requested scope it granted under another spelling (case, alias) or never
/// lists (`offline_access` at Microsoft).
pub fn granted_scopes(requested: &[String], mut granted: Vec<String>, q: &TokenQuirks) -> Vec<String> {
    let listed = granted.clone();
    for r in requested {
        if listed.contains(r) {
            continue;
        }
        let same_name = listed.iter().any(|g| g.eq_ignore_ascii_case(r));
        let alias = q
            .scope_aliases
            .get(r)
            .is_some_and(|a| listed.iter().any(|g| g == a));
        let unlisted = q.unlisted_scopes.contains(r);
        if (same_name || alias || unlisted) && !granted.contains(r) {
            granted.push(r.clone());
        }
    }
    granted
}

#[cfg(test)]
mod tests;
