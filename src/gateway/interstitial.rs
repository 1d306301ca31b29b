//! The interstitial of an OAuth 2.0 link: `GET /connect/{token}` shows which app, which account
//! and which platform (Connection and namespace) the link is for, and a Continue button; only
//! `POST /connect/{token}/continue` starts the attempt (signed `state`, session cookie, redirect to
//! the provider).
//!
//! Guarantees: a GET or HEAD of a link (mail scanners, link previews) never reaches the provider
//! and never starts an attempt; a user who was sent someone else's link sees whose account it is
//! before signing in. The Continue POST must carry the page's signed `state` whose session id is
//! also in this browser's `SameSite=Lax` cookie, so another site cannot press Continue for the
//! user (a cross-site POST carries no such cookie).
//!
//! The POST answers a page that moves on to the provider by `<meta http-equiv="refresh">` (with a
//! link as a fallback), not by a redirect: browsers apply the page's `form-action 'self'` to every
//! redirect that follows a form POST, and providers redirect across origins (login hosts, silent
//! approval straight back to the callback and on to the platform).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jiff::Timestamp;
use kube::ResourceExt;
use maud::html;

use super::context::Gateway;
use super::pages;
use super::requester::{Requester, host_port};
use super::session::{self, Binding};
use crate::api::Connection;
use crate::auth::oauth2::OAuthClient;
use crate::auth::resolve as conn_auth;
use crate::signer::{self, LinkClaims};

/// The interstitial page for the verified, current link `token` of the account `identifier`.
pub fn show(gw: &Gateway, claims: &LinkClaims, conn: &Connection, identifier: &str, token: &str) -> Response {
    let Some(oauth) = client(gw, conn) else {
        return misconfigured();
    };
    let who = Requester::of(conn).for_account(identifier);
    let sid = signer::random_id();
    let state = session::issue_state(gw, claims, conn, &sid);
    // Only its host is shown.
    let Ok(verifier) = gw.signer.pkce_verifier(&state) else {
        return pages::unavailable("Please try your link again in a moment.");
    };
    let provider = oauth.authorize_url(&state, &verifier);
    let provider_host = host_port(&provider);
    let action = continue_url(gw, token);
    let body = html! {
        (who.html())
        p id="interstitial-text" {
            "You are connecting the account " strong { (identifier) } " to " (who.app())
            ". Continue only if this is your account: you will sign in at " (provider_host) "."
        }
        form method="post" action=(action) id="interstitial" {
            input type="hidden" name="state" value=(state);
            button type="submit" id="continue" { "Continue to " (provider_host) }
        }
    };
    let mut resp = pages::respond(StatusCode::OK, pages::layout(&who.connect_title(), body));
    session::set_cookie(gw, &mut resp, Binding::Continue, &claims.nonce, &action, &sid);
    resp
}

/// `POST /connect/{token}/continue`: the Continue button. Sends the user to the provider.
pub async fn proceed(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (claims, conn, _) = match super::account::current(&gw, &token).await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    if conn.spec.auth_type.form() {
        return pages::bad_request("This link does not start a sign-in. Open it again.");
    }
    let sent = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned());
    let page_session = session::session_of(&gw, &headers, Binding::Continue, &claims.nonce);
    let pressed = sent
        .and_then(|s| gw.signer.verify_state(&s, Timestamp::now().as_second()).ok())
        .filter(|s| s.link == claims.nonce && Some(&s.sid) == page_session.as_ref());
    if pressed.is_none() {
        tracing::info!(account = %claims.name, namespace = %claims.ns, "Continue without the page's session");
        return pages::bad_request(
            "This page has expired or was opened in another browser. Open your link again.",
        );
    }
    let Some(oauth) = client(&gw, &conn) else {
        return misconfigured();
    };
    let sid = signer::random_id();
    let state = session::issue_state(&gw, &claims, &conn, &sid);
    // Derived from the key that signed this state, as the desk derives it at the exchange.
    let Ok(verifier) = gw.signer.pkce_verifier(&state) else {
        return pages::unavailable("Please try your link again in a moment.");
    };
    let target = oauth.authorize_url(&state, &verifier);
    tracing::debug!(account = %claims.name, namespace = %claims.ns, "sending user to the provider");
    let host = host_port(&target);
    let who = Requester::of(&conn);
    let body = html! {
        p { "Taking you to " (host) " to sign in." }
        (pages::continue_link(&target, &host))
    };
    let mut resp = pages::respond(
        StatusCode::OK,
        pages::moving_on(&who.connect_title(), &target, body),
    );
    let redirect_uri = conn_auth::redirect_uri(&gw.config, &conn);
    session::set_cookie(
        &gw,
        &mut resp,
        Binding::Session,
        &claims.nonce,
        &redirect_uri,
        &sid,
    );
    resp
}

/// The Connection's OAuth client for building authorization URLs (no client secret needed).
fn client(gw: &Gateway, conn: &Connection) -> Option<OAuthClient> {
    let redirect_uri = conn_auth::redirect_uri(&gw.config, conn);
    conn_auth::settings(conn)
        .and_then(|s| OAuthClient::new(s, None, &redirect_uri))
        .map_err(|e| tracing::warn!(connection = %conn.name_any(), error = %e, "connection unusable"))
        .ok()
}

fn misconfigured() -> Response {
    pages::unavailable("This app is not configured correctly. Contact the platform team.")
}

fn continue_url(gw: &Gateway, token: &str) -> String {
    gw.config.endpoint(&format!("connect/{token}/continue"))
}
