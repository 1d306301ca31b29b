//! The `rfc2822` template filter: an object with `to`, `cc`, `bcc`, `from`, `reply_to`, `subject`,
//! `body`, `is_html`, `in_reply_to` and `references` (default: `in_reply_to`) becomes an RFC 2822 message (what Gmail's
//! `messages.send` wants, base64url-encoded, in `raw`).
//!
//! Header values with a line break are refused (header injection); a non-ASCII subject is
//! RFC 2047-encoded; the body is UTF-8, base64 transfer-encoded, so any text survives transport.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use super::error::TemplateError;
use super::text::as_text;

const ADDRESS_HEADERS: [(&str, &str); 4] = [("from", "From"), ("to", "To"), ("cc", "Cc"), ("bcc", "Bcc")];

pub fn rfc2822(v: &Value) -> Result<String, TemplateError> {
    let refuse = |m: String| TemplateError::Refused(format!("mail: {m}"));
    let Value::Object(m) = v else {
        return Err(refuse("expected an object".into()));
    };
    let mut out = String::new();
    for (key, header) in ADDRESS_HEADERS.into_iter().chain([("reply_to", "Reply-To")]) {
        let Some(value) = m.get(key).filter(|v| !v.is_null()) else {
            continue;
        };
        let list: Vec<String> = match value {
            Value::Array(a) => a.iter().map(as_text).collect(),
            other => vec![as_text(other)],
        };
        for a in &list {
            if !a.is_ascii() || a.contains(['\r', '\n', ',']) || a.trim().is_empty() {
                return Err(refuse(format!("`{key}` has an unusable address")));
            }
        }
        if !list.is_empty() {
            out.push_str(&format!("{header}: {}\r\n", list.join(", ")));
        }
    }
    if m.get("to").is_none_or(Value::is_null) {
        return Err(refuse("`to` is required".into()));
    }
    for (key, header) in [("in_reply_to", "In-Reply-To"), ("references", "References")] {
        // A reply names its parent in both headers unless told otherwise (RFC 5322 3.6.4).
        let value = m.get(key).filter(|v| !v.is_null());
        let value = value.or_else(|| (key == "references").then(|| m.get("in_reply_to")).flatten());
        if let Some(v) = value.filter(|v| !v.is_null()) {
            let v = as_text(v);
            if !v.is_ascii() || v.contains(['\r', '\n']) {
                return Err(refuse(format!("`{key}` must be one ASCII line")));
            }
            out.push_str(&format!("{header}: {v}\r\n"));
        }
    }
    let subject = m.get("subject").map(as_text).unwrap_or_default();
    if subject.contains(['\r', '\n']) {
        return Err(refuse("`subject` must be one line".into()));
    }
    out.push_str(&format!("Subject: {}\r\n", encode_word(&subject)));
    let html = m.get("is_html").and_then(Value::as_bool).unwrap_or(false);
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: text/{}; charset=\"UTF-8\"\r\n",
        if html { "html" } else { "plain" }
    ));
    out.push_str("Content-Transfer-Encoding: base64\r\n\r\n");
    let body = m.get("body").map(as_text).unwrap_or_default();
    let encoded = STANDARD.encode(body.as_bytes());
    for line in encoded.as_bytes().chunks(76) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push_str("\r\n");
    }
    Ok(out)
}

/// Printable ASCII stays as it is; anything else becomes RFC 2047 encoded words of at most 75
/// characters, folded onto continuation lines.
fn encode_word(s: &str) -> String {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return s.to_owned();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(chunk.as_bytes())));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!("=?UTF-8?B?{}?=", STANDARD.encode(chunk.as_bytes())));
    }
    words.join("\r\n ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_a_message_and_refuses_injection() {
        let m = rfc2822(
            &json!({"to": ["a@example.com", "b@example.com"], "cc": null, "subject": "Hi", "body": "Hello"}),
        )
        .unwrap();
        assert!(m.starts_with("To: a@example.com, b@example.com\r\nSubject: Hi\r\nMIME-Version: 1.0\r\n"));
        assert!(m.ends_with("\r\n\r\nSGVsbG8=\r\n"), "{m}");
        assert!(rfc2822(&json!({"to": "a@example.com", "subject": "x\r\nBcc: evil@example.com"})).is_err());
        assert!(rfc2822(&json!({"to": "a@example.com\r\nBcc: evil@example.com"})).is_err());
        assert!(rfc2822(&json!({"subject": "no recipient"})).is_err());
    }

    #[test]
    fn non_ascii_subjects_are_encoded_words() {
        let long = "Grüße aus Köln ".repeat(5);
        let enc = encode_word(&long);
        for word in enc.split("\r\n ") {
            assert!(word.len() <= 75 && word.starts_with("=?UTF-8?B?"), "{word}");
        }
        let decoded: String = enc
            .split("\r\n ")
            .map(|w| {
                let b64 = w.trim_start_matches("=?UTF-8?B?").trim_end_matches("?=");
                String::from_utf8(STANDARD.decode(b64).unwrap()).unwrap()
            })
            .collect();
        assert_eq!(decoded, long);
    }
}
