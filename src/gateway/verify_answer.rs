//! The JSON answers of `POST /verify` that both of its halves give ([`super::verify`],
//! [`super::verify_return`]): `{"error", "message"}` with the status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// `{"error": error, "message": message}` with `status`.
pub(super) fn answer(status: StatusCode, error: &str, message: &str) -> Response {
    (status, Json(json!({"error": error, "message": message}))).into_response()
}

/// Try again in a moment.
pub(super) fn unavailable() -> Response {
    answer(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "try again in a moment",
    )
}
