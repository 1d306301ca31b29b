//! `GET /oauth/callback/ns/{namespace}/{connection}` (and, for Connections that opted in, the shared
//! `GET /oauth/callback` of earlier releases): the provider sends the user back here with a code
//! (or an error).
//!
//! Checks, in order: the `state` signature and expiry, the browser cookie of the attempt, that the
//! account still exists with the same UID, and that the attempt's link is still the account's
//! current one; then that the state was issued for the very Connection whose redirect URI this is,
//! and that `iss` (RFC 9207), when sent, names that Connection's authorization server. A state of
//! one Connection arriving at another's callback is refused before any code is exchanged
//! (RFC 9700 section 4.4 mix-up). Then the code goes to the controller's intake, which exchanges it
//! with the session's PKCE verifier and writes the credentials to the operator's copy with
//! optimistic concurrency, which also spends the link: a second completion through it finds the
//! link spent and is refused.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jiff::Timestamp;
use kube::ResourceExt;

use super::account::current_account;
use super::context::Gateway;
use super::finish::finish;
use super::pages;
use super::requester::Requester;
use super::session::{Binding, session_of};
use super::{verdict, verify_return};
use crate::api::{ConnectedAccount, Connection};
use crate::auth::resolve as conn_auth;
use crate::intake::wire::{Declined, Exchange, SpentQuery};
use crate::signer::{self, LinkClaims, StateClaims};

/// Longest query string the callback reads.
const MAX_QUERY: usize = 4096;

/// Which redirect URI a response arrived at.
enum At {
    /// The shared `/oauth/callback` of earlier releases.
    Shared,
    /// `/oauth/callback/ns/{namespace}/{connection}`.
    Namespaced(String, String),
    /// `/oauth/callback/cluster/{clusterconnection}`.
    Cluster(String),
}

/// The shared callback of earlier releases, for Connections with `legacyRedirectUri`.
pub async fn legacy(State(gw): State<Gateway>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    callback(gw, At::Shared, headers, query).await
}

/// A Connection's own callback.
pub async fn own(
    State(gw): State<Gateway>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    callback(gw, At::Namespaced(ns, name), headers, query).await
}

/// A ClusterConnection's own callback.
pub async fn cluster(
    State(gw): State<Gateway>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    callback(gw, At::Cluster(name), headers, query).await
}

async fn callback(gw: Gateway, at: At, headers: HeaderMap, query: Option<String>) -> Response {
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return pages::bad_request("The request is too large.");
    }
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let Some(state) = param("state") else {
        return pages::bad_request("The sign-in response is missing its state. Start again from your link.");
    };
    let now = Timestamp::now();
    let claims = match gw.signer.verify_state(&state, now.as_second()) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, "refused OAuth state");
            return pages::bad_request(
                "This sign-in attempt is not valid or has expired. Start again from your link.",
            );
        }
    };
    if session_of(&gw, &headers, Binding::Session, &claims.link).as_deref() != Some(claims.sid.as_str()) {
        tracing::info!(account = %claims.name, namespace = %claims.ns, "OAuth state without its browser session");
        return pages::bad_request(
            "Finish the sign-in in the browser where you opened the link. Start again from your link.",
        );
    }
    let link = LinkClaims {
        ns: claims.ns.clone(),
        name: claims.name.clone(),
        uid: claims.uid.clone(),
        nonce: claims.link.clone(),
        exp: 0,
    };
    let account = match current_account(&gw, &link).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let spent = gw
        .intake
        .spent(SpentQuery {
            uid: claims.uid.clone(),
            link: claims.link.clone(),
        })
        .await;
    if !link_is_current(&gw, &account, &claims) || spent {
        tracing::info!(account = %claims.name, namespace = %claims.ns, "OAuth state for a spent or replaced link");
        return pages::used_link();
    }
    // The code is single-use: an edit made while the user was at the provider is waited for.
    let conn = match verdict::judged(&gw, &account).await {
        Ok(Some(c)) => c,
        _ => return pages::unavailable("This app is not configured. Contact the platform team."),
    };
    if let Err(why) = meant_for(&conn, &claims, &at, param("iss").as_deref()) {
        tracing::warn!(account = %claims.name, namespace = %claims.ns, connection = %conn.name_any(), why, "refused a sign-in response meant for another Connection");
        return pages::bad_request(
            "This sign-in response does not belong to this app. Start again from your link.",
        );
    }
    if !conn_auth::ready_now(&conn) {
        tracing::warn!(account = %claims.name, namespace = %claims.ns, "connection changed and not validated yet; code not exchanged");
        return pages::unavailable("This app is being updated. Start again from your link in a moment.");
    }
    let who = Requester::of(&conn);

    if let Some(error) = param("error") {
        let denied = error == "access_denied";
        tracing::info!(account = %claims.name, namespace = %claims.ns, denied, "authorization not granted");
        gw.intake.declined(Declined { state, error }).await;
        return if denied {
            pages::message_for(
                StatusCode::FORBIDDEN,
                &who,
                "Access was not granted",
                "You declined access. Open your link again if you change your mind.",
            )
        } else {
            pages::message_for(
                StatusCode::BAD_GATEWAY,
                &who,
                "The app reported a problem",
                "Open your link again to retry.",
            )
        };
    }
    let Some(code) = param("code") else {
        return pages::bad_request("The sign-in response is missing its code. Start again from your link.");
    };
    let result = gw.intake.exchange(Exchange { state, code }).await;
    let request = verify_return::request_of(&result);
    verify_return::bind(&gw, finish(&account, &conn, result), request)
}

/// Whether a sign-in response for `claims` may complete at this callback: the state names this
/// Connection (same UID, so a re-created namesake is refused too), arrives at its own redirect URI
/// (or at the shared one if it opted in), and `iss`, when present, is its authorization server.
fn meant_for(
    conn: &Connection,
    claims: &StateClaims,
    at: &At,
    iss: Option<&str>,
) -> Result<(), &'static str> {
    if conn.metadata.uid.as_deref() != Some(claims.conn.as_str()) {
        return Err("state issued for another Connection");
    }
    let cluster = crate::api::is_cluster_view(conn);
    match at {
        At::Namespaced(ns, name)
            if !cluster && *ns == conn.namespace().unwrap_or_default() && *name == conn.name_any() => {}
        At::Cluster(name) if cluster && *name == conn.name_any() => {}
        At::Shared if conn_auth::legacy_callback(conn) => {}
        At::Shared => {
            return Err("state arrived at the shared redirect URI the Connection did not opt in to");
        }
        _ => return Err("state arrived at another Connection's redirect URI"),
    }
    let Some(iss) = iss else { return Ok(()) };
    let expected = conn.spec.oauth2.as_ref().and_then(|o| o.issuer.clone());
    let ok = match expected {
        Some(e) => e.trim_end_matches('/') == iss.trim_end_matches('/'),
        None => {
            let auth = conn_auth::settings(conn).ok().and_then(|s| s.authorization_url);
            let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
            auth.is_some_and(|a| origin(&a).is_some() && origin(&a) == origin(iss))
        }
    };
    if ok {
        Ok(())
    } else {
        Err("iss names another authorization server")
    }
}

fn link_is_current(gw: &Gateway, account: &ConnectedAccount, claims: &StateClaims) -> bool {
    let current = account
        .status
        .as_ref()
        .and_then(|s| s.authorization_link.as_deref())
        .and_then(signer::token_of)
        .and_then(|t| gw.signer.read_link(t));
    current.is_some_and(|l| l.nonce == claims.link)
}
