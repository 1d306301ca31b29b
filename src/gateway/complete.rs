//! The end of every interactive flow (OAuth callback, hosted form): store the credential in the
//! operator's copy with optimistic concurrency, which also spends the link, so a second completion
//! through the same link is refused. With `spec.verification` the credential is held back as
//! pending and the user is sent to the platform to confirm who they are.
//!
//! Onward pages (`spec.verification.url`, `successRedirectUrl`) are followed only when their origin
//! is on the operator's allowlist ([`super::onward`]). A verification page that is not allowed
//! stores nothing (the link stays usable once the allowlist is fixed); a success page that is not
//! allowed leaves the user on the gateway's success page, which says so. After a hosted-form POST
//! the user leaves through a link on a gateway page ([`finish_form`]); after the OAuth callback (a
//! GET) through a 303 redirect ([`finish`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use kube::ResourceExt;
use maud::html;

use super::context::Gateway;
use super::onward::{self, Onward};
use super::pages;
use super::requester::{Requester, host_port};
use crate::api::{ConnectedAccount, Connection};
use crate::signer::LinkClaims;
use crate::store::operator_copy::StoreError;
use crate::store::{FlowError, Grant, PendingVerification, Record, TokenSet};

/// How long the platform has to confirm a user by default.
const DEFAULT_VERIFICATION_TTL: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

pub enum Completion {
    AlreadyDone,
    Failed(StoreError),
    /// The Connection's verification page is not on the allowlist (its origin, for the page);
    /// nothing was stored.
    VerifyNotAllowed(String),
}

/// What the user sees next.
pub enum Next {
    /// Stored; then the success page, or the allowed `successRedirectUrl`.
    Done(Onward),
    /// The platform's verify page (allowed) with the one-time request id.
    Verify(url::Url),
}

/// Stores `tokens` obtained through the link `link` and spends it.
pub async fn complete(
    gw: &Gateway,
    account: &ConnectedAccount,
    conn: &Connection,
    link: &str,
    tokens: TokenSet,
    grant: Option<Grant>,
) -> Result<Next, Completion> {
    let uid = account.uid().unwrap_or_default();
    let now = Timestamp::now();
    let allowed = &gw.config.allowed_redirect_origins;
    // Decided before anything is stored: a refused verification page leaves the link usable.
    let verify_url = match conn
        .spec
        .verification
        .as_ref()
        .map(|v| onward::decide(allowed, Some(&v.url)))
    {
        None | Some(Onward::Stay) => None,
        Some(Onward::Go(url)) => Some(url),
        Some(Onward::Refused(origin)) => {
            tracing::warn!(connection = %conn.name_any(), namespace = %conn.namespace().unwrap_or_default(), %origin, "spec.verification.url is not on --allowed-redirect-origin; nothing stored");
            return Err(Completion::VerifyNotAllowed(origin));
        }
    };
    // The first stored credential brings the finalizer that guarantees its cleanup.
    let api: kube::Api<ConnectedAccount> =
        kube::Api::namespaced(gw.client.clone(), &account.namespace().unwrap_or_default());
    crate::store::finalizer::ensure(&api, account)
        .await
        .map_err(|e| Completion::Failed(StoreError::Api(e)))?;
    for _ in 0..3 {
        let current = gw.credentials.get(&uid).await.map_err(Completion::Failed)?;
        if current.record.completed_link.as_deref() == Some(link) {
            return Err(Completion::AlreadyDone);
        }
        let (record, next) = match (&conn.spec.verification, &verify_url) {
            (Some(v), Some(verify_url)) => {
                let ttl = v
                    .ttl
                    .as_ref()
                    .map_or(DEFAULT_VERIFICATION_TTL, crate::api::Duration::get);
                let request = crate::signer::random_id();
                let claims = LinkClaims {
                    ns: account.namespace().unwrap_or_default(),
                    name: account.name_any(),
                    uid: uid.clone(),
                    nonce: request.clone(),
                    exp: (now + ttl).as_second(),
                };
                let mut url = verify_url.clone();
                url.query_pairs_mut()
                    .append_pair("request_id", &gw.signer.issue_request(&claims));
                // Credentials that work today stay published until the new ones are confirmed.
                let record = Record {
                    tokens: current.record.tokens.clone().filter(|_| !current.record.rejected),
                    grant: current.record.grant.clone(),
                    superseded: current.record.superseded.clone(),
                    completed_link: Some(link.to_owned()),
                    // The published tokens stay, and so does an open refresh attempt on them: its
                    // refresh token must not be spent again while its outcome is unknown.
                    attempt: current.record.attempt.clone(),
                    pending: Some(PendingVerification {
                        request,
                        tokens: tokens.clone(),
                        grant: grant.clone(),
                        expires_at: now + ttl,
                        confirmed: false,
                    }),
                    ..Default::default()
                };
                (record, Next::Verify(url))
            }
            _ => {
                let mut record = Record {
                    tokens: current.record.tokens.clone(),
                    grant: current.record.grant.clone(),
                    rejected: current.record.rejected,
                    superseded: current.record.superseded.clone(),
                    completed_link: Some(link.to_owned()),
                    ..Default::default()
                };
                record.install(tokens.clone(), grant.clone());
                (
                    record,
                    Next::Done(onward::decide(allowed, conn.spec.success_redirect_url.as_deref())),
                )
            }
        };
        match gw
            .credentials
            .put(account, &record, current.resource_version.as_deref())
            .await
        {
            Ok(_) => return Ok(next),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(Completion::Failed(e)),
        }
    }
    Err(Completion::Failed(StoreError::Conflict))
}

/// The response for a completed flow reached by a GET (the OAuth callback): allowed onward pages
/// by a 303 redirect.
pub fn finish(account: &ConnectedAccount, conn: &Connection, result: Result<Next, Completion>) -> Response {
    respond(account, conn, result, Leave::Redirect)
}

/// The response for a completed hosted-form POST: a gateway page with a link to allowed onward
/// pages. Browsers block a redirect that follows a form POST to an origin the page's
/// `form-action 'self'` does not allow, so a redirect would strand the user.
pub fn finish_form(
    account: &ConnectedAccount,
    conn: &Connection,
    result: Result<Next, Completion>,
) -> Response {
    respond(account, conn, result, Leave::Link)
}

/// How the user leaves the gateway for an allowed onward page.
#[derive(Clone, Copy)]
enum Leave {
    Redirect,
    Link,
}

fn respond(
    account: &ConnectedAccount,
    conn: &Connection,
    result: Result<Next, Completion>,
    leave: Leave,
) -> Response {
    let who = Requester::of(conn);
    match result {
        Ok(Next::Verify(url)) => {
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
        Ok(Next::Done(next)) => {
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
        Err(Completion::VerifyNotAllowed(origin)) => pages::message_for(
            StatusCode::FORBIDDEN,
            &who,
            "Cannot continue",
            &format!(
                "This app needs the platform's page at {origin} to confirm who you are, but that page is not allowed by this gateway. Nothing was saved. Contact the platform team (--allowed-redirect-origin)."
            ),
        ),
        Err(Completion::AlreadyDone) => pages::used_link(),
        Err(Completion::Failed(e)) => {
            tracing::warn!(error = %e, "cannot store credentials");
            pages::message_for(
                StatusCode::SERVICE_UNAVAILABLE,
                &who,
                "Temporarily unavailable",
                "We could not save the connection. Open your link again to retry.",
            )
        }
    }
}

/// Whether an authorization already completed through the link `link`. The status may still show
/// that link (the controller has not caught up): the operator's copy is the authority.
pub async fn spent(gw: &Gateway, account: &ConnectedAccount, link: &str) -> bool {
    match gw.credentials.get(&account.uid().unwrap_or_default()).await {
        Ok(v) => v.record.completed_link.as_deref() == Some(link),
        Err(_) => false,
    }
}

/// Notes a failed attempt on the account (shown as its Ready condition); best effort.
pub async fn record_failure(
    gw: &Gateway,
    account: &ConnectedAccount,
    link: &str,
    reason: crate::api::Reason,
    message: &str,
) {
    let uid = account.uid().unwrap_or_default();
    for _ in 0..3 {
        let Ok(current) = gw.credentials.get(&uid).await else {
            return;
        };
        let mut record = current.record.clone();
        record.flow_error = Some(FlowError {
            reason,
            message: message.to_owned(),
            link: link.to_owned(),
        });
        match gw
            .credentials
            .put(account, &record, current.resource_version.as_deref())
            .await
        {
            Err(StoreError::Conflict) => continue,
            Err(e) => {
                tracing::warn!(account = %account.name_any(), error = %e, "cannot record the failed attempt");
                return;
            }
            Ok(_) => return,
        }
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
        let link = finish_form(&account, &conn, Ok(Next::Verify(url.clone())));
        assert_eq!(link.status(), StatusCode::OK);
        assert!(link.headers().get(header::LOCATION).is_none());
        let page = html(link).await;
        assert!(
            page.contains("id=\"continue\" href=\"https://platform.example:8443/verify?request_id=a.b\">Continue to platform.example:8443</a>"),
            "{page}"
        );
        assert!(page.contains("Connection keys in namespace team-a"), "{page}");
        let redirect = finish(&account, &conn, Ok(Next::Verify(url)));
        assert_eq!(redirect.status(), StatusCode::SEE_OTHER);

        let refused = finish_form(
            &account,
            &conn,
            Ok(Next::Done(Onward::Refused("https://evil.example".into()))),
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
            Err(Completion::VerifyNotAllowed("https://evil.example".into())),
        );
        assert_eq!(not_allowed.status(), StatusCode::FORBIDDEN);
        assert!(not_allowed.headers().get(header::LOCATION).is_none());
    }
}
