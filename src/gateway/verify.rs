//! `POST /verify`: the platform confirms that the person who just authorized is the account's user.
//!
//! The caller is the platform's backend, authenticated by a Kubernetes ServiceAccount token
//! (TokenReview) and authorized by RBAC for the verb `verify` on `connectedaccounts` in the
//! account's namespace (SubjectAccessReview), so an account can only be confirmed by someone the
//! cluster trusts for that namespace. The token must be issued for the audience `--verify-audience`
//! (default `agentauth.dev/verify`), so a token meant for anything else is refused.
//!
//! - `{"requestId"}` inspects the request: the account's identifier and the provider's identity of
//!   the user (`providerIdentity`), for the platform to compare with its own user;
//! - `{"requestId", "identifier"}` confirms: a matching identifier marks the held-back credential
//!   confirmed and answers `returnUrl`, where the platform sends the browser; the credential is
//!   published only when the browser that started the flow arrives there
//!   ([`super::verify_return`]); any other identifier discards it;
//! - `{"requestId", "refuse": true}` discards it.
//!
//! Guarantees: the one-time request id is signed, bound to the account's UID and expiring; nothing
//! of a discarded attempt is ever published.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::UserInfo;
use serde::Deserialize;
use serde_json::json;

use super::context::Gateway;
use super::verify_answer::{answer, unavailable};
use crate::intake::wire::{Confirmation, Verified};

/// The RBAC verb a platform needs on `connectedaccounts` to confirm users.
pub const VERB: &str = crate::intake::wire::VERIFY_VERB;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Request {
    request_id: String,
    #[serde(default)]
    identifier: Option<String>,
    #[serde(default)]
    refuse: bool,
}

pub async fn verify(State(gw): State<Gateway>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty() && t.len() < 16 * 1024)
    else {
        return answer(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send a ServiceAccount token as a Bearer token",
        );
    };
    let Ok(req) = serde_json::from_slice::<Request>(&body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the body must be JSON: {\"requestId\": \"...\"} to inspect, {\"requestId\": \"...\", \"identifier\": \"...\"} to confirm, {\"requestId\": \"...\", \"refuse\": true} to refuse",
        );
    };
    let user = match authenticate(&gw, token).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            return answer(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the token is not valid",
            );
        }
        Err(resp) => return resp,
    };
    let claims = match gw
        .signer
        .verify_request(&req.request_id, Timestamp::now().as_second())
    {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(reason = %e, "refused verification request id");
            return answer(
                StatusCode::NOT_FOUND,
                "unknown_request",
                "the request id is not valid or has expired",
            );
        }
    };
    match authorize(&gw, &user, &claims.ns, &claims.name).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(user = ?user.username, namespace = %claims.ns, "verification refused: not allowed by RBAC");
            return answer(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the caller may not verify connectedaccounts in this namespace",
            );
        }
        Err(resp) => return resp,
    }
    if req.identifier.is_none() && !req.refuse {
        return super::verify_return::inspect(&gw, req.request_id).await;
    }
    let back = super::verify_return::return_url(&gw, &req.request_id);
    let outcome = gw
        .intake
        .verify(Confirmation {
            request_id: req.request_id,
            platform: token.to_owned(),
            identifier: req.identifier,
            refuse: req.refuse,
        })
        .await;
    match outcome {
        Verified::Confirmed => {
            (StatusCode::OK, Json(json!({"verified": true, "returnUrl": back}))).into_response()
        }
        Verified::Refused => answer(
            StatusCode::FORBIDDEN,
            "refused",
            "the platform refused the user; the credential was discarded",
        ),
        Verified::Mismatch => answer(
            StatusCode::FORBIDDEN,
            "identifier_mismatch",
            "the identifier is not the account's; the credential was discarded",
        ),
        Verified::Gone => answer(
            StatusCode::GONE,
            "unknown_request",
            "this request was already answered or has expired",
        ),
        Verified::Unknown => answer(
            StatusCode::NOT_FOUND,
            "unknown_request",
            "the account no longer exists",
        ),
        Verified::Forbidden => answer(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the caller may not verify connectedaccounts in this namespace",
        ),
        Verified::Unavailable => unavailable(),
    }
}

/// Who the token belongs to, if the API server accepts it.
async fn authenticate(gw: &Gateway, token: &str) -> Result<Option<UserInfo>, Response> {
    crate::review::authenticate(&gw.client, token, Some(&gw.config.verify_audience))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "TokenReview failed");
            unavailable()
        })
}

/// Whether `user` may `verify` the account, by the cluster's RBAC.
async fn authorize(gw: &Gateway, user: &UserInfo, ns: &str, name: &str) -> Result<bool, Response> {
    crate::review::may(&gw.client, user, VERB, ns, name)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "SubjectAccessReview failed");
            unavailable()
        })
}
