//! `GET /connect/{token}`: verify the link and show its interstitial (OAuth 2.0,
//! [`super::interstitial`]) or the hosted form of an `APIKey`/`BearerToken` Connection. Neither
//! reaches the provider: only the interstitial's Continue button does.
//!
//! Opening a link does not spend it (mail scanners and link previews open links too): only a
//! completed authorization does.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use kube::ResourceExt;

use super::account::{open_link, verify_link};
use super::context::Gateway;
use super::{forms, interstitial, pages};
use crate::api::Connection;
use crate::auth::resolve as conn_auth;
use crate::signer::LinkClaims;

pub async fn connect(State(gw): State<Gateway>, Path(token): Path<String>) -> Response {
    let (claims, conn, identifier) = match current(&gw, &token).await {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    if conn.spec.auth_type.form() {
        return forms::show(&gw, &token, &claims, &conn, &identifier).await;
    }
    interstitial::show(&gw, &claims, &conn, &identifier, &token)
}

/// The link's claims, its account's Connection (validated in its current form) and the account's
/// identifier, for a link that is still current; otherwise the page to show.
pub async fn current(gw: &Gateway, token: &str) -> Result<(LinkClaims, Connection, String), Response> {
    let claims = verify_link(gw, token).map_err(IntoResponse::into_response)?;
    // The hot path answers from memory; anything the cache cannot confirm goes to the API server.
    let cached = gw
        .cache
        .account(&claims.ns, &claims.name)
        .filter(|e| e.uid == claims.uid && e.link.as_deref() == Some(token) && !e.disconnected && !e.cluster)
        .and_then(|e| Some((gw.cache.connection(&claims.ns, &e.connection)?, e.identifier)))
        // A cache lagging behind the Connection controller's verdict asks the API server.
        .filter(|(c, _)| conn_auth::ready_now(c));
    let (conn, identifier) = match cached {
        Some(found) => found,
        None => {
            let (_, account, c) = open_link(gw, token).await?;
            (c, account.spec.identifier)
        }
    };
    if !conn_auth::ready_now(&conn) {
        tracing::info!(connection = %conn.name_any(), "connection not validated in its current form");
        return Err(pages::unavailable(
            "This app is being updated. Try your link again in a moment.",
        ));
    }
    Ok((claims, conn, identifier))
}
