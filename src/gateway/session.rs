//! The browser session of one authorization attempt: a random session id, carried both in the
//! signed `state` and in an HttpOnly cookie, so that only the browser that opened the link can
//! finish the attempt (CSRF, login CSRF at the callback).
//!
//! Cookies are built and parsed by the `cookie` crate; the session id is never logged. When the
//! gateway URL is https every cookie is a `__Host-` cookie (Secure, `Path=/`, no `Domain`); one
//! name per link keeps concurrent flows apart without path scoping.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use cookie::{Cookie, SameSite};
use jiff::Timestamp;

use super::context::Gateway;
use crate::api::Connection;
use crate::signer::{LinkClaims, StateClaims};

/// What a browser cookie binds to this browser. Each kind has its own name, and one cookie per
/// link (or verification request), so flows in several tabs do not overwrite each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// An OAuth attempt, from the Continue button to the callback.
    Session,
    /// A hosted form, from the page to its submission.
    Form,
    /// The interstitial page, from its display to its Continue button.
    Continue,
    /// A held-back credential, from the platform's verify page back to `/verify/return`.
    Verify,
}

impl Binding {
    fn base(self) -> &'static str {
        match self {
            Binding::Session => "agentauth_session",
            Binding::Form => "agentauth_form",
            Binding::Continue => "agentauth_continue",
            Binding::Verify => "agentauth_verify",
        }
    }

    /// The cookie's lifetime: an attempt's, or for [`Binding::Verify`] a day (its signed value
    /// expires with the verification request, which `spec.verification.ttl` sets).
    fn max_age(self) -> i64 {
        match self {
            Binding::Verify => 24 * 3600,
            _ => STATE_TTL_SECS,
        }
    }
}

/// `__Host-` cookies (RFC 6265bis 4.1.3.2): Secure, `Path=/`, no `Domain`, so no other host or
/// plain-HTTP page can plant or shadow them.
const HOST_PREFIX: &str = "__Host-";

/// The cookie name for `kind` and `key` (a link or request nonce, hashed: names stay short).
fn cookie_name(kind: Binding, key: &str, secure: bool) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let short: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let prefix = if secure { HOST_PREFIX } else { "" };
    format!("{prefix}{}_{short}", kind.base())
}

/// How long a user has at the provider (or on the form) before the attempt's `state` expires.
pub const STATE_TTL_SECS: i64 = 600;

/// A signed `state` for the session `sid` of an attempt through the link `link` to `conn`.
pub fn issue_state(gw: &Gateway, link: &LinkClaims, conn: &Connection, sid: &str) -> String {
    gw.signer.issue_state(&StateClaims {
        ns: link.ns.clone(),
        name: link.name.clone(),
        uid: link.uid.clone(),
        link: link.nonce.clone(),
        sid: sid.to_owned(),
        exp: Timestamp::now().as_second() + STATE_TTL_SECS,
        conn: conn.metadata.uid.clone().unwrap_or_default(),
    })
}

/// The cookie binding `value` to this browser for `kind` and `key`. Over TLS a `__Host-` cookie
/// (`Path=/`); over plain HTTP (tests, local demos) sent only to `url`'s path.
fn binding_cookie(kind: Binding, key: &str, url: &str, value: &str, secure: bool) -> Cookie<'static> {
    let path = if secure {
        "/".to_owned()
    } else {
        url::Url::parse(url)
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|_| "/".into())
    };
    Cookie::build((cookie_name(kind, key, secure), value.to_owned()))
        .path(path)
        .max_age(cookie::time::Duration::seconds(kind.max_age()))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .build()
}

/// Adds the cookie binding `value` for `kind` and `key` (sent back to `url`) to `resp`.
pub fn set_cookie(gw: &Gateway, resp: &mut Response, kind: Binding, key: &str, url: &str, value: &str) {
    let cookie = binding_cookie(kind, key, url, value, gw.config.secure());
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The value of this browser's cookie for `kind` and `key`, if it sent one.
pub fn session_of(gw: &Gateway, headers: &HeaderMap, kind: Binding, key: &str) -> Option<String> {
    cookie_value(headers, &cookie_name(kind, key, gw.config.secure()))
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_tls_the_cookie_is_a_host_cookie_hidden_from_scripts() {
        let c = binding_cookie(
            Binding::Form,
            "n1",
            "https://gw.example/connect/abc?x=1",
            "s1",
            true,
        );
        let name = cookie_name(Binding::Form, "n1", true);
        assert!(
            name.starts_with("__Host-agentauth_form_") && name.len() == 38,
            "{name}"
        );
        let text = c.to_string();
        for part in ["Path=/", "Max-Age=600", "HttpOnly", "SameSite=Lax", "Secure"] {
            assert!(text.split("; ").any(|p| p == part), "{part} in {text}");
        }
        assert!(
            text.starts_with(&format!("{name}=s1;")) && !text.contains("Domain"),
            "{text}"
        );
        // Another link gets another cookie.
        assert_ne!(name, cookie_name(Binding::Form, "n2", true));
        assert_ne!(name, cookie_name(Binding::Session, "n1", true));
    }

    #[test]
    fn over_plain_http_the_cookie_is_scoped_to_its_path() {
        let text = binding_cookie(
            Binding::Session,
            "n1",
            "http://127.0.0.1:8080/oauth/callback/ns/a/b",
            "s2",
            false,
        )
        .to_string();
        assert!(text.starts_with("agentauth_session_"), "{text}");
        assert!(
            text.contains("Path=/oauth/callback/ns/a/b") && !text.contains("Secure"),
            "{text}"
        );
        let fallback = binding_cookie(Binding::Session, "n1", "not a url", "s2", false).to_string();
        assert!(fallback.split("; ").any(|p| p == "Path=/"), "{fallback}");
    }

    #[test]
    fn the_value_is_read_from_any_cookie_header() {
        let name = cookie_name(Binding::Session, "n1", false);
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=1; {name}=s1")).unwrap(),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("agentauth_form=f1"));
        assert_eq!(cookie_value(&headers, &name).as_deref(), Some("s1"));
        assert_eq!(cookie_value(&headers, "agentauth_form").as_deref(), Some("f1"));
        assert_eq!(cookie_value(&headers, "other"), None);
        assert_eq!(cookie_value(&HeaderMap::new(), &name), None);
    }
}
