//! Responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shared::service::Reply;

/// Header on every response to a request_id-carrying POST: `true` when the body is the stored
/// response of an earlier request with the same request_id.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

pub fn reply(r: Reply) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut resp = (status, r.body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        REPLAYED_HEADER,
        HeaderValue::from_static(if r.replayed { "true" } else { "false" }),
    );
    resp
}
