//! `GET /connect/{token}`: verify the link and show its interstitial (OAuth 2.0,
//! [`super::interstitial`]) or the hosted form of an `APIKey`/`BearerToken` Connection. Neither
//! reaches the provider: only the interstitial's Continue button does.
//!
//! Opening a link does not spend it (mail scanners and link previews open links too): only a
//! completed authorization does.

use axum::extract::{Path, State};
use axum::response::Response;

use super::account::current;
use super::context::Gateway;
use super::{forms, interstitial};

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
