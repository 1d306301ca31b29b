//! `GET /connect/{token}`: verify the link and send the user to the provider (or show the hosted
//! form of an `APIKey`/`BearerToken` Connection).
//!
//! Opening a link does not spend it (mail scanners and link previews open links too): only a
//! completed authorization does.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;

use super::account::{open_link, verify_link};
use super::context::Gateway;
use super::session::{self, SESSION_COOKIE};
use super::{forms, pages};
use crate::auth::oauth2::OAuthClient;
use crate::auth::resolve as conn_auth;
use crate::signer;

pub async fn connect(State(gw): State<Gateway>, Path(token): Path<String>) -> Response {
    let claims = match verify_link(&gw, &token) {
        Ok(c) => c,
        Err(refused) => return refused.into_response(),
    };
    // The hot path answers from memory; anything the cache cannot confirm goes to the API server.
    let cached = gw
        .cache
        .account(&claims.ns, &claims.name)
        .filter(|e| {
            e.uid == claims.uid && e.link.as_deref() == Some(token.as_str()) && !e.disconnected && !e.cluster
        })
        .and_then(|e| gw.cache.connection(&claims.ns, &e.connection))
        // A cache lagging behind the Connection controller's verdict asks the API server.
        .filter(conn_auth::ready_now);
    let conn = match cached {
        Some(c) => c,
        None => match open_link(&gw, &token).await {
            Ok((_, _, c)) => c,
            Err(resp) => return resp,
        },
    };
    if !conn_auth::ready_now(&conn) {
        tracing::info!(connection = %conn.name_any(), "connection not validated in its current form");
        return pages::unavailable("This app is being updated. Try your link again in a moment.");
    }
    if conn.spec.auth_type.form() {
        return forms::show(&gw, &token, &claims, &conn).await;
    }
    // The authorization URL needs no client secret: nothing to read from the API here.
    let redirect_uri = conn_auth::redirect_uri(&gw.config, &conn);
    let oauth = match conn_auth::settings(&conn).and_then(|s| OAuthClient::new(s, None, &redirect_uri)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(connection = %conn.name_any(), error = %e, "connection unusable");
            return pages::unavailable("This app is not configured correctly. Contact the platform team.");
        }
    };
    let sid = signer::random_id();
    let state = session::issue_state(&gw, &claims, &conn, &sid);
    let Ok(verifier) = gw.signer.pkce_verifier(&state) else {
        return pages::unavailable("Please try your link again in a moment.");
    };
    let target = oauth.authorize_url(&state, &verifier);
    tracing::debug!(account = %claims.name, namespace = %claims.ns, "sending user to the provider");
    let mut resp = (StatusCode::FOUND, [(header::LOCATION, target.as_str())]).into_response();
    session::set_cookie(&gw, &mut resp, SESSION_COOKIE, &redirect_uri, &sid);
    resp
}
