//! `GET /oauth/callback`: the provider sends the user back here with a code (or an error).
//!
//! Checks, in order: the `state` signature and expiry, the browser cookie of the attempt, that the
//! account still exists with the same UID, and that the attempt's link is still the account's
//! current one. Then the code is exchanged with the session's PKCE verifier and the credentials are
//! written to the operator's copy with optimistic concurrency, which also spends the link: a second
//! completion through it finds the link spent and is refused.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use jiff::Timestamp;
use kube::api::Api;

use super::complete::{complete, finish, record_failure, spent};
use super::connect::current_account;
use super::{Gateway, SESSION_COOKIE, pages};
use crate::api::{ConnectedAccount, Connection};
use crate::auth::connection as conn_auth;
use crate::links::{self, LinkClaims, StateClaims};

/// Longest query string the callback reads.
const MAX_QUERY: usize = 4096;

pub async fn callback(State(gw): State<Gateway>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
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
    if session_of(&headers, SESSION_COOKIE).as_deref() != Some(claims.sid.as_str()) {
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
    if !link_is_current(&gw, &account, &claims) || spent(&gw, &account, &claims.link).await {
        tracing::info!(account = %claims.name, namespace = %claims.ns, "OAuth state for a spent or replaced link");
        return pages::used_link();
    }

    if let Some(error) = param("error") {
        let (reason, message) = match error.as_str() {
            "access_denied" => (
                "AccessDenied",
                "the user declined access at the provider".to_owned(),
            ),
            other => (
                "AuthorizationFailed",
                format!("the provider reported {}", sanitize(other)),
            ),
        };
        tracing::info!(account = %claims.name, namespace = %claims.ns, reason, "authorization not granted");
        record_failure(&gw, &account, &claims.link, reason, &message).await;
        return if reason == "AccessDenied" {
            pages::page(
                StatusCode::FORBIDDEN,
                "Access was not granted",
                "You declined access. Open your link again if you change your mind.",
            )
        } else {
            pages::page(
                StatusCode::BAD_GATEWAY,
                "The app reported a problem",
                "Open your link again to retry.",
            )
        };
    }
    let Some(code) = param("code") else {
        return pages::bad_request("The sign-in response is missing its code. Start again from your link.");
    };

    let conns: Api<Connection> = Api::namespaced(gw.client.clone(), &claims.ns);
    let conn = match conns.get_opt(&account.spec.connection_ref.name).await {
        Ok(Some(c)) => c,
        _ => return pages::unavailable("This app is not configured. Contact the platform team."),
    };
    let oauth = match conn_auth::oauth_client(&gw.client, &gw.config, &conn).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "connection unusable at callback");
            return pages::unavailable("This app is not configured correctly. Contact the platform team.");
        }
    };
    let tokens = match oauth
        .exchange_code(&gw.http, &code, &gw.signer.pkce_verifier(&claims.sid), now)
        .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(account = %claims.name, namespace = %claims.ns, error = %e, "code exchange failed");
            record_failure(
                &gw,
                &account,
                &claims.link,
                "ExchangeFailed",
                &format!("the code exchange failed: {e}"),
            )
            .await;
            return pages::page(
                StatusCode::BAD_GATEWAY,
                "We could not finish connecting",
                "The app did not accept the sign-in. Open your link again to retry.",
            );
        }
    };
    let result = complete(&gw, &account, &conn, &claims.link, tokens).await;
    finish(&account, &conn, result)
}

/// The session id from the cookie `name` set by `/connect`.
pub fn session_of(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

fn link_is_current(gw: &Gateway, account: &ConnectedAccount, claims: &StateClaims) -> bool {
    let current = account
        .status
        .as_ref()
        .and_then(|s| s.authorization_link.as_deref())
        .and_then(links::token_of)
        .and_then(|t| gw.signer.read_link(t));
    current.is_some_and(|l| l.nonce == claims.link)
}

/// Provider error codes are ASCII words; keep them so and short.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .take(64)
        .collect()
}
