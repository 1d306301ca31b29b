//! The few HTML pages the gateway shows users: plain, self-contained, no scripts, and never
//! carrying a token, code or secret.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use super::requester::Requester;

/// A page with a title and one paragraph. `status` tells browsers and tests what happened.
pub fn page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!("<p>{}</p>", escape(message));
    (status, Html(layout(title, &body))).into_response()
}

/// The common frame of every page around `body` (already escaped HTML).
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\
         <body><main><h1>{title}</h1>{body}</main></body></html>\n",
        title = escape(title),
    )
}

/// A page about a Connection: the title, then who is asking (app host, namespace, Connection), then
/// `body` (already escaped HTML).
pub fn for_connection(status: StatusCode, requester: &Requester, title: &str, body: &str) -> Response {
    let body = format!("{}{body}", requester.html());
    (status, Html(layout(title, &body))).into_response()
}

/// [`for_connection`] with one paragraph of text.
pub fn message_for(status: StatusCode, requester: &Requester, title: &str, message: &str) -> Response {
    for_connection(status, requester, title, &format!("<p>{}</p>", escape(message)))
}

/// A plain link the user follows to leave the gateway (a link, not a redirect: a redirect after a
/// form POST to another origin breaks the gateway's own `form-action 'self'`).
pub fn continue_link(url: &url::Url, host: &str) -> String {
    format!(
        "<p><a class=\"button\" id=\"continue\" href=\"{}\">Continue to {}</a></p>",
        escape(url.as_str()),
        escape(host)
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1f2328}\
h1{font-size:1.4rem}label{display:block;font-weight:600;margin-top:1rem}\
input{display:block;width:100%;box-sizing:border-box;padding:.5rem;margin-top:.25rem;font:inherit}\
input[aria-invalid=true]{border:2px solid #cf222e}.help{color:#59636e;font-size:.9rem;margin:.25rem 0}\
.error{color:#cf222e;font-weight:600;margin:.25rem 0}button{margin-top:1.5rem;padding:.6rem 1.2rem;font:inherit}\
.requester{display:grid;grid-template-columns:auto 1fr;gap:.25rem 1rem;padding:.75rem 1rem;background:#f6f8fa;border-radius:6px}\
.requester dt{font-weight:600}.requester dd{margin:0;overflow-wrap:anywhere}\
a.button{display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;background:#1f6feb;color:#fff;border-radius:6px;text-decoration:none}";

pub fn invalid_link() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "This link is not valid",
        "Check that you copied the whole link, or ask for a new one.",
    )
}

pub fn expired_link() -> Response {
    page(
        StatusCode::GONE,
        "This link has expired",
        "Ask for a new authorization link.",
    )
}

pub fn used_link() -> Response {
    page(
        StatusCode::GONE,
        "This link was already used",
        "The authorization through this link is complete or the link was replaced. Ask for a new link if you need one.",
    )
}

pub fn bad_request(message: &str) -> Response {
    page(StatusCode::BAD_REQUEST, "Something went wrong", message)
}

pub fn unavailable(message: &str) -> Response {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        message,
    )
}

pub fn not_found() -> Response {
    page(StatusCode::NOT_FOUND, "Not found", "There is nothing here.")
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
