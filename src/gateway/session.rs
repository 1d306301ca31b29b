//! The browser session of one authorization attempt: a random session id, carried both in the
//! signed `state` and in an HttpOnly cookie, so that only the browser that opened the link can
//! finish the attempt (CSRF, login CSRF at the callback).
//!
//! Cookies are built and parsed by the `cookie` crate; the session id is never logged.

use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use cookie::{Cookie, SameSite};
use jiff::Timestamp;

use super::context::Gateway;
use crate::api::Connection;
use crate::signer::{LinkClaims, StateClaims};

/// Name of the cookie that binds an OAuth attempt to the browser that started it.
pub const SESSION_COOKIE: &str = "agentauth_session";
/// Cookie of a hosted-form session; its path is the link's, so it goes nowhere else.
pub const FORM_COOKIE: &str = "agentauth_form";
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

/// The cookie `name` binding the session `sid` to this browser, sent only to `url`'s path, and
/// only over TLS when the gateway is served over TLS.
fn session_cookie(name: &'static str, url: &str, sid: &str, secure: bool) -> Cookie<'static> {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/".into());
    Cookie::build((name, sid.to_owned()))
        .path(path)
        .max_age(cookie::time::Duration::seconds(STATE_TTL_SECS))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .build()
}

/// Adds the session cookie `name` for `sid` (scoped to `url`'s path) to `resp`.
pub fn set_cookie(gw: &Gateway, resp: &mut Response, name: &'static str, url: &str, sid: &str) {
    let cookie = session_cookie(name, url, sid, gw.config.secure());
    if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
}

/// The session id from the cookie `name` of the request, if the browser sent one.
pub fn session_of(headers: &HeaderMap, name: &str) -> Option<String> {
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
    fn the_cookie_is_scoped_and_hidden_from_scripts() {
        let c = session_cookie(FORM_COOKIE, "https://gw.example/connect/abc?x=1", "s1", true).to_string();
        for part in [
            "agentauth_form=s1",
            "Path=/connect/abc",
            "Max-Age=600",
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
        ] {
            assert!(c.split("; ").any(|p| p == part), "{part} in {c}");
        }
        assert!(c.starts_with("agentauth_form=s1;"), "{c}");
        let plain = session_cookie(SESSION_COOKIE, "not a url", "s2", false).to_string();
        assert!(plain.contains("Path=/") && !plain.contains("Secure"), "{plain}");
    }

    #[test]
    fn the_session_is_read_from_any_cookie_header() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; agentauth_session=s1"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("agentauth_form=f1"));
        assert_eq!(session_of(&headers, SESSION_COOKIE).as_deref(), Some("s1"));
        assert_eq!(session_of(&headers, FORM_COOKIE).as_deref(), Some("f1"));
        assert_eq!(session_of(&headers, "other"), None);
        assert_eq!(session_of(&HeaderMap::new(), SESSION_COOKIE), None);
    }
}
