//! The page at the end of every interactive flow (OAuth callback, hosted form), from what the
//! intake reports ([`crate::intake::wire`]).
//!
//! After a hosted-form POST the user leaves through a link on a gateway page ([`finish_form`]);
//! after the OAuth callback (a GET) through a 303 redirect ([`finish`]). Onward pages were decided
//! by the intake against the allowlist; a refused one is named on the page and not followed.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use kube::ResourceExt;
use maud::html;

use super::pages;
use super::requester::{Requester, host_port};
use crate::api::{ConnectedAccount, Connection};
use crate::intake::onward::Onward;
use crate::intake::wire::{Completed, Completion, Next};

/// The response for a completed flow reached by a GET (the OAuth callback): allowed onward pages
/// by a 303 redirect.
pub fn finish(account: &ConnectedAccount, conn: &Connection, result: Completed) -> Response {
    respond(account, conn, result, Leave::Redirect)
}

/// The response for a completed hosted-form POST: a gateway page with a link to allowed onward
/// pages. Browsers block a redirect that follows a form POST to an origin the page's
/// `form-action 'self'` does not allow, so a redirect would strand the user.
pub fn finish_form(account: &ConnectedAccount, conn: &Connection, result: Completed) -> Response {
    respond(account, conn, result, Leave::Link)
}

/// How the user leaves the gateway for an allowed onward page.
#[derive(Clone, Copy)]
enum Leave {
    Redirect,
    Link,
}

fn respond(account: &ConnectedAccount, conn: &Connection, result: Completed, leave: Leave) -> Response {
    let who = Requester::of(conn);
    match result {
        Ok(Next::Verify { url }) => {
            tracing::info!(account = %account.name_any(), namespace = %account.namespace().unwrap_or_default(), "authorization completed; waiting for the platform to verify the user");
            match leave {
                Leave::Redirect => Redirect::to(url.as_str()).into_response(),
                Leave::Link => {
                    let host = host_port(&url);
                    let body = html! {
                        p {
                            "Your credentials for " (who.app()) " were received. Before they are used, the platform at "
                            (host) " confirms that this account is yours."
                        }
                        (pages::continue_link(&url, &host))
                    };
                    pages::for_connection(StatusCode::OK, &who, "One more step", body)
                }
            }
        }
        Ok(Next::Done { onward: next }) => {
            tracing::info!(account = %account.name_any(), namespace = %account.namespace().unwrap_or_default(), "authorization completed");
            let done = html! { p { "You can close this window and return to the app." } };
            let connected = |more| {
                pages::for_connection(StatusCode::OK, &who, "Account connected", html! { (done) (more) })
            };
            match (next, leave) {
                (Onward::Go(url), Leave::Redirect) => Redirect::to(url.as_str()).into_response(),
                (Onward::Go(url), Leave::Link) => connected(pages::continue_link(&url, &host_port(&url))),
                (Onward::Stay, _) => connected(html! {}),
                (Onward::Refused(origin), _) => {
                    tracing::warn!(connection = %conn.name_any(), namespace = %conn.namespace().unwrap_or_default(), %origin, "successRedirectUrl is not on --allowed-redirect-origin; not followed");
                    connected(html! {
                        p class="error" id="not-allowed" {
                            "The platform's page at " (origin) " is not allowed by this gateway, so you were not sent there. The platform team can allow it (--allowed-redirect-origin)."
                        }
                    })
                }
            }
        }
        Err(Completion::VerifyNotAllowed { origin }) => pages::message_for(
            StatusCode::FORBIDDEN,
            &who,
            "Cannot continue",
            &format!(
                "This app needs the platform's page at {origin} to confirm who you are, but that page is not allowed by this gateway. Nothing was saved. Contact the platform team (--allowed-redirect-origin)."
            ),
        ),
        Err(Completion::AlreadyDone | Completion::Spent) => pages::used_link(),
        Err(Completion::Updating) => {
            pages::unavailable("This app is being updated. Start again from your link in a moment.")
        }
        Err(Completion::Unconfigured) => {
            pages::unavailable("This app is not configured correctly. Contact the platform team.")
        }
        Err(Completion::ExchangeFailed) => pages::message_for(
            StatusCode::BAD_GATEWAY,
            &who,
            "We could not finish connecting",
            "The app did not accept the sign-in. Open your link again to retry.",
        ),
        Err(Completion::TooManyChecks) => pages::message_for(
            StatusCode::TOO_MANY_REQUESTS,
            &who,
            "Too many attempts",
            "These credentials were checked too many times. Wait a few minutes, then open your link again.",
        ),
        Err(Completion::CheckFailed { message }) => {
            pages::message_for(StatusCode::UNPROCESSABLE_ENTITY, &who, "Not accepted", &message)
        }
        Err(Completion::Unavailable) => pages::message_for(
            StatusCode::SERVICE_UNAVAILABLE,
            &who,
            "Temporarily unavailable",
            "We could not save the connection. Open your link again to retry.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header;

    fn objects() -> (ConnectedAccount, Connection) {
        let account: ConnectedAccount = serde_json::from_value(serde_json::json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
            "metadata": {"name": "erin", "namespace": "team-a"},
            "spec": {"connectionRef": {"name": "keys"}, "identifier": "erin@example.com"}
        }))
        .unwrap();
        let conn: Connection = serde_json::from_value(serde_json::json!({
            "apiVersion": "agentauth.dev/v1alpha1", "kind": "Connection",
            "metadata": {"name": "keys", "namespace": "team-a"},
            "spec": {"authType": "APIKey"}
        }))
        .unwrap();
        (account, conn)
    }

    async fn html(resp: Response) -> String {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_form_post_leaves_by_a_link_and_the_callback_by_a_redirect() {
        let (account, conn) = objects();
        let url = url::Url::parse("https://platform.example:8443/verify?request_id=a.b").unwrap();
        let link = finish_form(&account, &conn, Ok(Next::Verify { url: url.clone() }));
        assert_eq!(link.status(), StatusCode::OK);
        assert!(link.headers().get(header::LOCATION).is_none());
        let page = html(link).await;
        assert!(
            page.contains("id=\"continue\" href=\"https://platform.example:8443/verify?request_id=a.b\">Continue to platform.example:8443</a>"),
            "{page}"
        );
        assert!(page.contains("Connection keys in namespace team-a"), "{page}");
        let redirect = finish(&account, &conn, Ok(Next::Verify { url }));
        assert_eq!(redirect.status(), StatusCode::SEE_OTHER);

        let refused = finish_form(
            &account,
            &conn,
            Ok(Next::Done {
                onward: Onward::Refused("https://evil.example".into()),
            }),
        );
        let page = html(refused).await;
        assert!(page.contains("Account connected"), "{page}");
        assert!(
            page.contains("page at https://evil.example is not allowed"),
            "{page}"
        );
        assert!(!page.contains("href=\"https://evil.example"), "{page}");

        let not_allowed = finish(
            &account,
            &conn,
            Err(Completion::VerifyNotAllowed {
                origin: "https://evil.example".into(),
            }),
        );
        assert_eq!(not_allowed.status(), StatusCode::FORBIDDEN);
        assert!(not_allowed.headers().get(header::LOCATION).is_none());
    }
}
