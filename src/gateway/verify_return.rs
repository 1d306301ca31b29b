//! The browser half of user verification (`spec.verification`): a held-back credential is
//! published only when the platform confirmed the user *and* the browser that started the flow
//! comes back.
//!
//! Protocol:
//! 1. The gateway sends the user to the platform's verify page with a one-time `request_id`, and
//!    sets an HttpOnly `SameSite=Lax` cookie bound to that request ([`bind`]; its value is signed,
//!    so no one can make one up).
//! 2. The platform's backend may inspect the request: `POST /verify {"requestId"}` answers the
//!    account's `identifier` and the provider's identity of the user ([`inspect`]).
//! 3. After its logged-in user explicitly confirms, the platform calls
//!    `POST /verify {"requestId", "identifier"}`; a match only marks the credential confirmed and
//!    answers `returnUrl`.
//! 4. The platform redirects the browser to `returnUrl` (`GET /verify/return?request_id=...`,
//!    [`back`]): with the cookie of step 1 the controller's intake publishes the credential;
//!    without it (another browser, a replayed request id) nothing is, ever.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use super::account::current_account;
use super::context::Gateway;
use super::finish::finish;
use super::pages;
use super::requester::Requester;
use super::session::{self, Binding};
use super::verdict;
use super::verify_answer::{answer, unavailable};
use crate::intake::wire::{Completed, Completion, Inspected, Inspection, Next, Return, Returned};
use crate::signer::{LinkClaims, StateClaims};

/// The `sid` and `conn` of the signed cookie value: it can never pass for an OAuth `state`, whose
/// `conn` is a Connection's UID.
const MARK: &str = "verify-return";

/// The URL the platform sends the browser back to after confirming `request_id`.
pub fn return_url(gw: &Gateway, request_id: &str) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("request_id", request_id)
        .finish();
    format!("{}?{query}", gw.config.endpoint("verify/return"))
}

/// The request id a completion sends the user to the platform with, if it does.
pub fn request_of(result: &Completed) -> Option<String> {
    match result {
        Ok(Next::Verify { url }) => url
            .query_pairs()
            .find(|(k, _)| k == "request_id")
            .map(|(_, v)| v.into_owned()),
        _ => None,
    }
}

/// Adds the cookie that binds `request_id` to this browser (step 1) to `resp`.
pub fn bind(gw: &Gateway, mut resp: Response, request_id: Option<String>) -> Response {
    let Some(claims) =
        request_id.and_then(|r| gw.signer.verify_request(&r, Timestamp::now().as_second()).ok())
    else {
        return resp;
    };
    let value = gw.signer.issue_state(&StateClaims {
        ns: claims.ns.clone(),
        name: claims.name.clone(),
        uid: claims.uid.clone(),
        link: claims.nonce.clone(),
        sid: MARK.to_owned(),
        exp: claims.exp,
        conn: MARK.to_owned(),
    });
    let url = gw.config.endpoint("verify/return");
    session::set_cookie(gw, &mut resp, Binding::Verify, &claims.nonce, &url, &value);
    resp
}

/// Whether this browser holds the cookie of the request `claims` (step 1).
fn bound(gw: &Gateway, headers: &HeaderMap, claims: &LinkClaims) -> bool {
    session::session_of(gw, headers, Binding::Verify, &claims.nonce)
        .and_then(|v| gw.signer.verify_state(&v, Timestamp::now().as_second()).ok())
        .is_some_and(|s| s.link == claims.nonce && s.uid == claims.uid && s.conn == MARK && s.sid == MARK)
}

/// `POST /verify {"requestId"}` (step 2), for a caller already authenticated and authorized for
/// the account: what the platform compares with its own user.
pub async fn inspect(gw: &Gateway, request_id: String) -> Response {
    match gw.intake.inspect(Inspection { request_id }).await {
        Inspected::Pending {
            identifier,
            provider_identity,
            confirmed,
        } => (
            StatusCode::OK,
            Json(json!({
                "identifier": identifier,
                "providerIdentity": provider_identity,
                "confirmed": confirmed,
            })),
        )
            .into_response(),
        Inspected::Gone => answer(
            StatusCode::GONE,
            "unknown_request",
            "this request was already answered or has expired, or the account no longer exists",
        ),
        Inspected::Unavailable => unavailable(),
    }
}

#[derive(Deserialize)]
pub struct Back {
    request_id: String,
}

/// `GET /verify/return?request_id=...` (step 4).
pub async fn back(State(gw): State<Gateway>, headers: HeaderMap, Query(q): Query<Back>) -> Response {
    let Ok(claims) = gw
        .signer
        .verify_request(&q.request_id, Timestamp::now().as_second())
    else {
        return pages::bad_request("This confirmation is not valid or has expired. Ask for a new link.");
    };
    if !bound(&gw, &headers, &claims) {
        tracing::info!(account = %claims.name, namespace = %claims.ns, "verification return without the browser that started the flow");
        return pages::page(
            StatusCode::FORBIDDEN,
            "Open this in your own browser",
            "This confirmation can only be finished in the browser where the connection was started. Nothing was saved.",
        );
    }
    let account = match current_account(&gw, &claims).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let conn = match verdict::judged(&gw, &account).await {
        Ok(Some(c)) => c,
        _ => return pages::unavailable("This app is not configured. Contact the platform team."),
    };
    match gw
        .intake
        .returned(Return {
            request_id: q.request_id,
        })
        .await
    {
        Returned::Published { onward } => finish(&account, &conn, Ok(Next::Done { onward })),
        Returned::NotConfirmed => pages::message_for(
            StatusCode::CONFLICT,
            &Requester::of(&conn).for_account(&account.spec.identifier),
            "Not confirmed yet",
            "The platform has not confirmed this account yet. Go back to the platform's page and confirm there.",
        ),
        Returned::Gone => pages::used_link(),
        Returned::Unavailable => finish(&account, &conn, Err(Completion::Unavailable)),
    }
}
