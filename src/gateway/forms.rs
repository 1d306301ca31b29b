//! Hosted forms for `APIKey` and `BearerToken` Connections: `GET /connect/{token}` shows the form,
//! `POST /connect/{token}` validates what the user typed and hands it to the controller's intake,
//! which checks it with the app and stores it.
//!
//! Guarantees: a submission must carry a signed `state` for this very link whose session id also
//! sits in an HttpOnly cookie of this browser (CSRF); secret values are never written back into a
//! page, a log or a message; the credential is stored only after server-side validation and, when
//! the Connection asks for it, a 2xx answer from the app itself.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use jiff::Timestamp;

use super::account::open_link;
use super::context::Gateway;
use super::finish::finish_form;
use super::form_page::{self, Feedback};
use super::pages;
use super::requester::Requester;
use super::session::{self, Binding};
use crate::api::Connection;
use crate::auth::form::Form;
use crate::intake::wire::{Completion, SpentQuery, Submission};
use crate::signer::{self, LinkClaims};

/// Renders the form for a verified, current link.
pub async fn show(
    gw: &Gateway,
    token: &str,
    claims: &LinkClaims,
    conn: &Connection,
    identifier: &str,
) -> Response {
    let form = match Form::of(conn) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(connection = %conn_name(conn), error = %e, "connection form unusable");
            return misconfigured(conn);
        }
    };
    let sid = signer::random_id();
    render(
        gw,
        token,
        claims,
        conn,
        identifier,
        &form,
        &sid,
        StatusCode::OK,
        &Feedback::default(),
    )
}

/// Handles a submission.
pub async fn submit(
    State(gw): State<Gateway>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (claims, account, conn) = match open_link(&gw, &token).await {
        Ok(opened) => opened,
        Err(resp) => return resp,
    };
    if !crate::auth::resolve::ready_now(&conn) {
        tracing::info!(connection = %conn_name(&conn), "connection not validated in its current form");
        return pages::unavailable("This app is being updated. Try your link again in a moment.");
    }
    let who = Requester::of(&conn);
    let bad_request =
        |message: &str| pages::message_for(StatusCode::BAD_REQUEST, &who, "Something went wrong", message);
    if !conn.spec.auth_type.form() {
        return bad_request("This link does not take a form. Open it again.");
    }
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(&body) {
        if values.insert(k.into_owned(), v.into_owned()).is_some() {
            return bad_request("The form was sent twice over. Open your link again.");
        }
    }
    let now = Timestamp::now().as_second();
    let session = session::session_of(&gw, &headers, Binding::Form, &claims.nonce);
    let state = values
        .remove("state")
        .and_then(|s| gw.signer.verify_state(&s, now).ok())
        .filter(|s| s.link == claims.nonce && Some(&s.sid) == session.as_ref());
    let Some(state) = state else {
        tracing::info!(account = %claims.name, namespace = %claims.ns, "form submission without a valid session");
        return bad_request("This form has expired or was sent from another browser. Open your link again.");
    };
    let spent = gw
        .intake
        .spent(SpentQuery {
            uid: claims.uid.clone(),
            link: claims.nonce.clone(),
        })
        .await;
    if spent {
        return pages::used_link();
    }
    let form = match Form::of(&conn) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(connection = %conn_name(&conn), error = %e, "connection form unusable");
            return misconfigured(&conn);
        }
    };
    // Shown again on a refusal: the values the user may see (never secret ones) and the messages.
    let refuse = |values: &BTreeMap<String, String>, errors, general| {
        let feedback = Feedback {
            values: form
                .fields
                .iter()
                .filter(|f| !f.secret)
                .filter_map(|f| Some((f.name.clone(), values.get(&f.name)?.clone())))
                .collect(),
            errors,
            general,
        };
        render(
            &gw,
            &token,
            &claims,
            &conn,
            &account.spec.identifier,
            &form,
            &state.sid,
            StatusCode::UNPROCESSABLE_ENTITY,
            &feedback,
        )
    };
    let clean = match form.validate(&values) {
        Ok(clean) => clean,
        Err(errors) => return refuse(&values, errors, None),
    };
    let result = gw
        .intake
        .submit(Submission {
            link: token.clone(),
            values: clean.clone(),
        })
        .await;
    match result {
        Err(Completion::CheckFailed { message }) => refuse(&clean, BTreeMap::new(), Some(message)),
        result => {
            let request = super::verify_return::request_of(&result);
            super::verify_return::bind(&gw, finish_form(&account, &conn, result), request)
        }
    }
}

/// The page for a Connection whose form cannot be built.
fn misconfigured(conn: &Connection) -> Response {
    pages::message_for(
        StatusCode::SERVICE_UNAVAILABLE,
        &Requester::of(conn),
        "Temporarily unavailable",
        "This app is not configured correctly. Contact the platform team.",
    )
}

fn conn_name(conn: &Connection) -> String {
    conn.metadata.name.clone().unwrap_or_default()
}

/// The form page, with a fresh signed state for the session `sid` and its cookie, scoped to the
/// link `token` as the user opened it (re-signing could name another key after a rotation).
#[allow(clippy::too_many_arguments)] // what one form page is made of
fn render(
    gw: &Gateway,
    token: &str,
    claims: &LinkClaims,
    conn: &Connection,
    identifier: &str,
    form: &Form,
    sid: &str,
    status: StatusCode,
    feedback: &Feedback,
) -> Response {
    let state = session::issue_state(gw, claims, conn, sid);
    let page = form_page::page(
        &Requester::of(conn).for_account(identifier),
        form,
        &state,
        feedback,
    );
    let link_url = gw.config.endpoint(&format!("connect/{token}"));
    let mut resp = pages::respond(status, page);
    session::set_cookie(gw, &mut resp, Binding::Form, &claims.nonce, &link_url, sid);
    resp
}
