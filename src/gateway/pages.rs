//! The few HTML pages the gateway shows users: plain, self-contained, no scripts, and never
//! carrying a token, code or secret. Rendered with `maud`, which escapes every value it inserts.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::requester::Requester;

/// A page with a title and one paragraph. `status` tells browsers and tests what happened.
pub fn page(status: StatusCode, title: &str, message: &str) -> Response {
    respond(status, layout(title, html! { p { (message) } }))
}

/// The common frame of every page around `body`.
pub fn layout(title: &str, body: Markup) -> Markup {
    frame(title, None, body)
}

/// [`layout`] for a page that moves on to `next` by itself (`<meta http-equiv="refresh">`, a
/// navigation of its own that the page's `form-action` does not govern, unlike a redirect after a
/// form POST); `body` should carry a link to `next` as a fallback.
pub fn moving_on(title: &str, next: &url::Url, body: Markup) -> Markup {
    frame(title, Some(next), body)
}

fn frame(title: &str, next: Option<&url::Url>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                @if let Some(next) = next {
                    meta http-equiv="refresh" content={ "0;url=" (next.as_str()) };
                }
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main { h1 { (title) } (body) } }
        }
    }
}

/// `page` as the response with `status`.
pub fn respond(status: StatusCode, page: Markup) -> Response {
    (status, Html(page.into_string())).into_response()
}

/// A page about a Connection: the title, then who is asking (app host, namespace, Connection), then
/// `body`.
pub fn for_connection(status: StatusCode, requester: &Requester, title: &str, body: Markup) -> Response {
    respond(status, layout(title, html! { (requester.html()) (body) }))
}

/// [`for_connection`] with one paragraph of text.
pub fn message_for(status: StatusCode, requester: &Requester, title: &str, message: &str) -> Response {
    for_connection(status, requester, title, html! { p { (message) } })
}

/// A plain link the user follows to leave the gateway (a link, not a redirect: a redirect after a
/// form POST to another origin breaks the gateway's own `form-action 'self'`).
pub fn continue_link(url: &url::Url, host: &str) -> Markup {
    html! {
        p { a class="button" id="continue" href=(url.as_str()) { "Continue to " (host) } }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_titles_are_escaped() {
        let page = layout("<t>", html! { p { ("<a href='x'>&\"</a>") } }).into_string();
        assert!(page.contains("<title>&lt;t&gt;</title><style>body{"), "{page}");
        assert!(
            page.contains("<h1>&lt;t&gt;</h1><p>&lt;a href='x'&gt;&amp;&quot;&lt;/a&gt;</p>"),
            "{page}"
        );
        let link = url::Url::parse("https://a.example/v?x=1&y=\"2\"").unwrap();
        assert_eq!(
            continue_link(&link, "a.example").into_string(),
            "<p><a class=\"button\" id=\"continue\" href=\"https://a.example/v?x=1&amp;y=%222%22\">Continue to a.example</a></p>"
        );
    }
}
