//! Which account a link, state or request id names, read from the API server: the one place that
//! decides whether a signed token still points at a live account and its current link.
//!
//! Guarantees: an account re-created under the same name (another UID) is not the one a token
//! names; a link that is no longer the account's `status.authorizationLink`, or whose account is
//! disconnected, is refused as spent or replaced.

use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;

use super::context::Gateway;
use super::{pages, verdict};
use crate::api::{AccountState, ConnectedAccount, Connection};
use crate::auth::resolve as conn_auth;
use crate::signer::{self, LinkClaims, TokenError};

/// Verifies a link and finds its account (still the same, the link still its current one) and
/// Connection, once the Connection controller has judged it ([`verdict::judged`]); otherwise the
/// page to show.
pub async fn open_link(
    gw: &Gateway,
    token: &str,
) -> Result<(LinkClaims, ConnectedAccount, Connection), Response> {
    let claims = verify_link(gw, token).map_err(IntoResponse::into_response)?;
    let account = current_account(gw, &claims).await?;
    let link_token = account
        .status
        .as_ref()
        .and_then(|s| s.authorization_link.as_deref())
        .and_then(signer::token_of);
    if link_token != Some(token)
        || account.status.as_ref().and_then(|s| s.state) == Some(AccountState::Disconnected)
    {
        tracing::info!(account = %claims.name, namespace = %claims.ns, "refused a spent or replaced link");
        return Err(pages::used_link());
    }
    match verdict::judged(gw, &account).await {
        Ok(Some(c)) => Ok((claims, account, c)),
        Ok(None) => Err(pages::unavailable(
            "This app is not configured. Contact the platform team.",
        )),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read connection");
            Err(pages::unavailable("Please try again in a moment."))
        }
    }
}

/// A link token that cannot be followed (expired, or not one the operator signed); its page says
/// which.
#[derive(Debug)]
pub struct RefusedLink(TokenError);

impl IntoResponse for RefusedLink {
    fn into_response(self) -> Response {
        match self.0 {
            TokenError::Expired => pages::expired_link(),
            _ => pages::invalid_link(),
        }
    }
}

/// The claims of a link token signed by the operator and not expired.
pub fn verify_link(gw: &Gateway, token: &str) -> Result<LinkClaims, RefusedLink> {
    gw.signer
        .verify_link(token, Timestamp::now().as_second())
        .map_err(|e| {
            if !matches!(e, TokenError::Expired) {
                tracing::info!(reason = %e, "refused link");
            }
            RefusedLink(e)
        })
}

/// The account a link or state names, if it still exists with the same UID.
pub async fn current_account(gw: &Gateway, claims: &LinkClaims) -> Result<ConnectedAccount, Response> {
    let api: Api<ConnectedAccount> = Api::namespaced(gw.client.clone(), &claims.ns);
    match api.get_opt(&claims.name).await {
        Ok(Some(a)) if a.metadata.uid.as_deref() == Some(claims.uid.as_str()) => Ok(a),
        Ok(_) => {
            tracing::info!(account = %claims.name, namespace = %claims.ns, "link names an account that no longer exists");
            Err(pages::invalid_link())
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read account");
            Err(pages::unavailable("Please try again in a moment."))
        }
    }
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
