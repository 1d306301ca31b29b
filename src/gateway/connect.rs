//! `GET /connect/{token}`: verify the link and send the user to the provider.
//!
//! Opening a link does not spend it (mail scanners and link previews open links too): only a
//! completed authorization does.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;

use super::{Gateway, SESSION_COOKIE, STATE_TTL_SECS, pages};
use crate::api::{AccountState, ConnectedAccount, Connection};
use crate::auth::oauth2::OAuthClient;
use crate::auth::resolve as conn_auth;
use crate::signer::{self, LinkClaims, StateClaims, TokenError};

pub async fn connect(State(gw): State<Gateway>, Path(token): Path<String>) -> Response {
    let now = Timestamp::now().as_second();
    let claims = match gw.signer.verify_link(&token, now) {
        Ok(c) => c,
        Err(TokenError::Expired) => return pages::expired_link(),
        Err(e) => {
            tracing::info!(reason = %e, "refused link");
            return pages::invalid_link();
        }
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
        return super::forms::show(&gw, &claims, &conn).await;
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
    let state = gw.signer.issue_state(&StateClaims {
        ns: claims.ns.clone(),
        name: claims.name.clone(),
        uid: claims.uid.clone(),
        link: claims.nonce.clone(),
        sid: sid.clone(),
        exp: now + STATE_TTL_SECS,
        conn: conn.metadata.uid.clone().unwrap_or_default(),
    });
    let target = oauth.authorize_url(&state, &gw.signer.pkce_verifier(&sid));
    tracing::debug!(account = %claims.name, namespace = %claims.ns, "sending user to the provider");
    let cookie = session_cookie(&gw, SESSION_COOKIE, &redirect_uri, &sid);
    let mut resp = (StatusCode::FOUND, [(header::LOCATION, target.as_str())]).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Verifies a link and finds its account (still the same, the link still its current one) and
/// Connection; otherwise the page to show.
pub async fn open_link(
    gw: &Gateway,
    token: &str,
) -> Result<(LinkClaims, ConnectedAccount, Connection), Response> {
    let now = Timestamp::now().as_second();
    let claims = match gw.signer.verify_link(token, now) {
        Ok(c) => c,
        Err(TokenError::Expired) => return Err(pages::expired_link()),
        Err(e) => {
            tracing::info!(reason = %e, "refused link");
            return Err(pages::invalid_link());
        }
    };
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
    match conn_auth::of_account(&gw.client, &gw.config.namespace, &account).await {
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

/// The cookie binding an attempt to this browser, sent only to `url`'s path.
pub fn session_cookie(gw: &Gateway, name: &str, url: &str, sid: &str) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/".into());
    let secure = if gw.config.secure() { "; Secure" } else { "" };
    format!("{name}={sid}; Path={path}; Max-Age={STATE_TTL_SECS}; HttpOnly; SameSite=Lax{secure}")
}
