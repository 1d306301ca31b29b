//! `POST /verify`: the platform confirms that the person who just authorized is the account's user.
//!
//! The caller is the platform's backend, authenticated by a Kubernetes ServiceAccount token
//! (TokenReview) and authorized by RBAC for the verb `verify` on `connectedaccounts` in the
//! account's namespace (SubjectAccessReview), so an account can only be confirmed by someone the
//! cluster trusts for that namespace. The token must be issued for the audience `--verify-audience`
//! (default `agentauth.dev/verify`), so a token meant for anything else is refused.
//!
//! Guarantees: the one-time request id is signed, bound to the account's UID and expiring; without
//! an identifier the call only inspects the request (identifier and provider identity); a matching
//! identifier marks the held-back credential confirmed, published when the browser that started
//! the flow returns ([`verify_return`]); any other identifier, or `"refuse": true`, discards it, so
//! nothing of that attempt is ever published.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use k8s_openapi::api::authentication::v1::UserInfo;
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::json;

use super::account::current_account;
use super::context::Gateway;
use super::verify_return;
use crate::store::operator_copy::StoreError;
use crate::store::{FlowError, PendingVerification};

/// The RBAC verb a platform needs on `connectedaccounts` to confirm users.
pub const VERB: &str = "verify";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Request {
    request_id: String,
    /// Absent: inspect the request ([`verify_return::inspect`]) instead of answering it.
    #[serde(default)]
    identifier: Option<String>,
    /// The platform refuses the user (e.g. the provider identity is not its user's): the
    /// credential is discarded.
    #[serde(default)]
    refuse: bool,
}

pub(super) fn answer(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({"error": error, "message": message}))).into_response()
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
            "the body must be JSON: {\"requestId\": \"...\"} to inspect, {\"requestId\": \"...\", \"identifier\": \"...\"} to confirm",
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
    let Ok(account) = current_account(&gw, &claims).await else {
        return answer(
            StatusCode::NOT_FOUND,
            "unknown_request",
            "the account no longer exists",
        );
    };
    let identifier = match (req.identifier, req.refuse) {
        (_, true) => None,
        (Some(i), false) => Some(i),
        (None, false) => return verify_return::inspect(&gw, &account, &claims).await,
    };
    let uid = account.uid().unwrap_or_default();
    for _ in 0..3 {
        let current = match gw.credentials.get(&uid).await {
            Ok(c) => c,
            Err(_) => return unavailable(),
        };
        let mut record = current.record.clone();
        let Some(pending) = record
            .pending
            .take()
            .filter(|p| p.request == claims.nonce && p.expires_at > Timestamp::now())
        else {
            return answer(
                StatusCode::GONE,
                "unknown_request",
                "this request was already answered or has expired",
            );
        };
        let matches = identifier.as_deref() == Some(account.spec.identifier.as_str());
        if matches {
            // Published only when the browser that started the flow comes back (verify_return).
            record.pending = Some(PendingVerification {
                confirmed: true,
                ..pending
            });
        } else {
            record.flow_error = Some(FlowError {
                reason: crate::api::Reason::VerificationFailed,
                message: if identifier.is_some() {
                    "the platform reported a different user than the account's identifier; the credential was discarded"
                } else {
                    "the platform refused the user; the credential was discarded"
                }
                .into(),
                link: record.completed_link.clone().unwrap_or_default(),
            });
        }
        match gw
            .credentials
            .put(&account, &record, current.resource_version.as_deref())
            .await
        {
            Ok(_) if matches => {
                tracing::info!(account = %claims.name, namespace = %claims.ns, "user confirmed by the platform; waiting for the browser to return");
                let back = verify_return::return_url(&gw, &req.request_id);
                return (StatusCode::OK, Json(json!({"verified": true, "returnUrl": back}))).into_response();
            }
            Ok(_) if identifier.is_none() => {
                tracing::warn!(account = %claims.name, namespace = %claims.ns, "verification refused by the platform");
                return answer(
                    StatusCode::FORBIDDEN,
                    "refused",
                    "the platform refused the user; the credential was discarded",
                );
            }
            Ok(_) => {
                tracing::warn!(account = %claims.name, namespace = %claims.ns, "verification refused: identifier mismatch");
                return answer(
                    StatusCode::FORBIDDEN,
                    "identifier_mismatch",
                    "the identifier is not the account's; the credential was discarded",
                );
            }
            Err(StoreError::Conflict) => continue,
            Err(_) => return unavailable(),
        }
    }
    unavailable()
}

pub(super) fn unavailable() -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "try again in a moment",
    )
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
