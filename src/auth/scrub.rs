//! Cleaning what providers send back before anyone sees it: error bodies may echo a header or a
//! token. Known credential values are replaced, token-shaped strings too, and members whose names
//! say "credential" are dropped. Used by the sidecar (answers to the agent) and by the OAuth
//! client (a token endpoint's `error_description`, [`line`]).

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

use crate::auth::fields::CREDENTIAL_FIELDS;

pub const REDACTED: &str = "[redacted]";

/// Header names dropped from provider errors (with [`CREDENTIAL_FIELDS`]), compared without case.
const SENSITIVE_HEADERS: [&str; 4] = ["authorization", "proxy-authorization", "cookie", "set-cookie"];

/// Token shapes of the catalog's providers, plus `Bearer`/`Basic` values and JWTs.
static TOKEN_SHAPES: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?:[Bb]earer|BEARER|[Bb]asic|BASIC)\s+[A-Za-z0-9._~+/=-]{8,}",
        r"|ya29\.[A-Za-z0-9._-]+",
        r"|xox[abposr]-[A-Za-z0-9-]+",
        r"|gh[pousr]_[A-Za-z0-9]{20,}",
        r"|github_pat_[A-Za-z0-9_]{20,}",
        r"|(?:ntn|secret)_[A-Za-z0-9]{20,}",
        r"|pat-[a-z]{2,3}[0-9]-[0-9a-fA-F-]{20,}",
        r"|[sr]k_(?:live|test)_[A-Za-z0-9]{8,}",
        r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    ))
    .ok()
});

/// `text` with every secret and token-shaped value replaced.
pub fn text(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    match TOKEN_SHAPES.as_ref() {
        Some(re) => re.replace_all(&out, REDACTED).into_owned(),
        None => out,
    }
}

/// Remote text made safe to keep: cleaned like [`text`], markup tags dropped, one line without
/// control characters, at most `max` characters.
pub fn line(remote: &str, secrets: &[String], max: usize) -> String {
    let cleaned = text(remote, secrets);
    let untagged = match MARKUP.as_ref() {
        Some(re) => re.replace_all(&cleaned, " ").into_owned(),
        None => cleaned.replace(['<', '>'], " "),
    };
    untagged
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(max)
        .collect()
}

/// A markup tag (or the start of one cut off at the end).
static MARKUP: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"<[^>]*(?:>|$)").ok());

/// `value` with sensitive members dropped and every string cleaned like [`text`].
pub fn json(value: &mut Value, secrets: &[String]) {
    match value {
        Value::String(s) => *s = text(s, secrets),
        Value::Array(a) => a.iter_mut().for_each(|v| json(v, secrets)),
        Value::Object(o) => {
            o.retain(|k, _| {
                !SENSITIVE_HEADERS
                    .iter()
                    .chain(CREDENTIAL_FIELDS)
                    .any(|s| s.eq_ignore_ascii_case(k))
            });
            o.values_mut().for_each(|v| json(v, secrets));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_and_token_shapes_are_removed() {
        let secrets = vec!["my-own-secret-value".to_owned()];
        let mut v = json!({
            "message": "bad token my-own-secret-value for Bearer ya29.a0AfB_xyz and xoxp-123-456-abc",
            "headers": {"Authorization": "Bearer x", "X-Trace": "t1"},
            "list": ["ghp_abcdefghijklmnopqrstuvwxyz0123", "ok"],
        });
        json(&mut v, &secrets);
        let s = v.to_string();
        for gone in ["my-own-secret", "ya29", "xoxp-", "ghp_", "Authorization"] {
            assert!(!s.contains(gone), "{gone} in {s}");
        }
        assert!(s.contains("X-Trace") && s.contains("\"ok\""), "{s}");
    }

    #[test]
    fn a_line_has_no_markup_no_secret_and_a_bound() {
        let secrets = vec!["client-secret-123".to_owned()];
        let remote = "bad <b>client</b>\nclient-secret-123 ghp_abcdefghijklmnopqrstuvwxyz0123 <script>x()</script> <a href='";
        let l = line(remote, &secrets, 200);
        assert_eq!(l, "bad client [redacted] [redacted] x()");
        assert_eq!(line(&"word ".repeat(100), &[], 12).chars().count(), 12);
    }
}
