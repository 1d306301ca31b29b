//! How template values and template text meet: the text form of a JSON value inside a string, and
//! the bare expression where only an expression can stand. A leaf: every other template module
//! (and the sidecar's callers) uses these, so that a value reads the same everywhere.

use serde_json::Value;

/// Text of a value as it appears inside a string: strings as they are, everything else as JSON.
pub fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `{{ e }}` or `e` alike, where only an expression can stand.
pub fn strip_braces(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix("{{")
        .and_then(|s| s.strip_suffix("}}"))
        .unwrap_or(s)
        .trim()
}
