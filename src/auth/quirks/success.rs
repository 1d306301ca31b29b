//! A successful token answer rewritten into RFC 6749 shape: the token fields from where the
//! provider put them, lifetimes as numbers, scopes space-separated, and only the metadata asked
//! for, never a credential.

use jiff::Timestamp;
use serde_json::{Map, Value};

use super::{TokenQuirks, lookup};
use crate::auth::fields::{is_credential, is_reserved};

/// Relative refresh-token lifetimes as providers name them.
const REFRESH_LIFETIME_FIELDS: &[&str] = &[
    "refresh_token_expires_in",
    "refresh_expires_in",
    "x_refresh_token_expires_in",
];

/// The metadata key under which the refresh token's expiry is kept (RFC 3339).
pub const REFRESH_EXPIRES_AT: &str = "refresh_token_expires_at";

pub(super) fn success(
    obj: &Map<String, Value>,
    source: &Map<String, Value>,
    q: &TokenQuirks,
    now: Timestamp,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(v) = source.get("access_token") {
        out.insert("access_token".into(), v.clone());
    }
    if let Some(Value::String(r)) = source.get("refresh_token")
        && !r.is_empty()
    {
        out.insert("refresh_token".into(), Value::String(r.clone()));
    }
    let token_type = match source.get("token_type").and_then(Value::as_str) {
        // Slack's `user` and `bot` tokens are bearer tokens; RFC 6749 requires a type.
        None | Some("" | "user" | "bot") => "Bearer",
        Some(t) => t,
    };
    out.insert("token_type".into(), Value::String(token_type.to_owned()));
    match source.get("expires_in").and_then(seconds) {
        Some(s) => {
            out.insert("expires_in".into(), Value::from(s));
        }
        None => {
            if let Some(s) = q.default_expires_in {
                out.insert("expires_in".into(), Value::from(s));
            }
        }
    }
    let scopes = source.get("scope").map(|s| split_scopes(s, &q.scope_separator));
    if let Some(scopes) = scopes.filter(|s| !s.is_empty()) {
        out.insert("scope".into(), Value::String(scopes.join(" ")));
    }
    if let Some(at) = REFRESH_LIFETIME_FIELDS
        .iter()
        .find_map(|k| source.get(*k).and_then(seconds))
        .and_then(|s| {
            now.checked_add(jiff::SignedDuration::from_secs(i64::try_from(s).ok()?))
                .ok()
        })
    {
        out.insert(REFRESH_EXPIRES_AT.into(), Value::String(at.to_string()));
    }
    for (key, value) in metadata(obj, q) {
        out.entry(key).or_insert(value);
    }
    out
}

/// The metadata to keep, credentials removed at every depth; nulls are dropped.
fn metadata(obj: &Map<String, Value>, q: &TokenQuirks) -> Vec<(String, Value)> {
    let picked: Vec<(String, Value)> = match &q.metadata {
        Some(wanted) => wanted
            .iter()
            .filter(|(key, _)| !is_reserved(key))
            .filter_map(|(key, path)| Some((key.clone(), lookup(obj, path)?.clone())))
            .collect(),
        None => obj
            .iter()
            .filter(|(k, _)| !is_reserved(k) && !REFRESH_LIFETIME_FIELDS.contains(&k.as_str()))
            .filter(|(k, _)| q.token_path.as_deref() != Some(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    picked
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, without_credentials(v)))
        .collect()
}

fn without_credentials(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| !is_credential(k))
                .map(|(k, v)| (k, without_credentials(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(without_credentials).collect()),
        other => other,
    }
}

/// A non-negative whole number of seconds, given as a number or a numeric string.
fn seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn split_scopes(v: &Value, separator: &str) -> Vec<String> {
    let parts: Vec<String> = match v {
        Value::String(s) => s
            .split(separator)
            .flat_map(str::split_whitespace)
            .map(str::to_owned)
            .collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .flat_map(str::split_whitespace)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    parts.into_iter().filter(|s| !s.is_empty()).collect()
}
