//! Payment providers' callbacks: public routes outside `/v1` (no API key; the provider's
//! signature is the authentication, checked in `shared::service::billing`).

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use shared::service::billing::{stripe_webhook as handle, StripeAck};

/// `POST /webhooks/stripe`: 2xx only once what the event paid for is granted.
pub async fn stripe_webhook(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<StripeAck>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    Ok(Json(handle(&s.svc, signature, &body).await?))
}
