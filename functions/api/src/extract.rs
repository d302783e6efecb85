//! Extractors that turn every malformed input into our JSON error (never axum's plain text).

use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use shared::domain::idempotency::fingerprint;
use shared::service::auth::Caller;
use shared::service::operators::OperatorIdentity;
use shared::service::ErrorCode;

/// A JSON body: parsed strictly (unknown fields, wrong types: 400), with the fingerprint of
/// its canonical form for request_id idempotency.
pub struct JsonBody<T> {
    pub value: T,
    pub fingerprint: String,
}

/// A request body type, and which of its fields may be `null`. Elsewhere a `null` is refused
/// (400 `invalid_request`) as the API document says, rather than read as "absent": a client
/// that sends `"to": null` learns the field does not take it.
pub trait Body: DeserializeOwned {
    const NULLABLE: &'static [&'static str] = &[];
}

mod bodies {
    use super::Body;
    use shared::service::*;
    impl Body for accounts::AccountSettings {
        const NULLABLE: &'static [&'static str] = &["low_balance_threshold"];
    }
    impl Body for accounts::AccountTermsChange {}
    impl Body for batches::CancelBatch {}
    impl Body for batches::SubmitBatch {}
    impl Body for credits::AdjustRequest {}
    impl Body for credits::GrantRequest {}
    impl Body for webhooks::deliveries::Recover {}
    impl Body for webhooks::deliveries::Redeliver {}
    impl Body for exports::CreateExport {}
    impl Body for billing::CheckoutRequest {}
    impl Body for invoices::ProFormaRequest {}
    impl Body for invoices::WireReceipt {}
    impl Body for invoices::ProfileRequest {
        const NULLABLE: &'static [&'static str] = &["tax_id"];
    }
    impl Body for files::CreateFile {}
    impl Body for keys::CreateKey {}
    impl Body for keys::UpdateKey {}
    impl Body for access::ExemptionRequest {}
    impl Body for models::SetStatus {}
    impl Body for crate::routes::admin::CreateOperator {}
    impl Body for webhooks::CreateEndpoint {}
    impl Body for webhooks::RotateSecret {}
    impl Body for webhooks::UpdateEndpoint {
        const NULLABLE: &'static [&'static str] = &["event_types", "description"];
    }
}

impl<T: Body, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "request body is larger than 6 MB; send large batches as an input file (POST /v1/files)",
                )
            } else {
                ApiError::new(ErrorCode::InvalidRequest, format!("could not read the request body: {e}"))
            }
        })?;
        // No body at all reads as `{}` (POST .../redeliver, .../lift-throttle). Only an empty
        // one: whitespace alone is not a JSON document, and the API document says so.
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        let raw: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("request body is not valid JSON: {e}"),
            )
        })?;
        let Some(fields) = raw.as_object() else {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "request body must be a JSON object",
            ));
        };
        if let Some((name, _)) = fields
            .iter()
            .find(|(k, v)| v.is_null() && !T::NULLABLE.contains(&k.as_str()))
        {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid request body: {name} may not be null; leave it out instead"),
            ));
        }
        let fingerprint = fingerprint(&raw);
        let value = serde_json::from_value(raw).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("invalid request body: {e}"),
            )
        })?;
        Ok(JsonBody { value, fingerprint })
    }
}

/// Query parameters, strictly (unknown parameters are an error, not silently ignored).
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("invalid query string: {}", e.body_text()),
                )
            })
    }
}

/// One path parameter. Undecodable ids cannot name anything: 404.
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| Id(p.0))
            .map_err(|_| ApiError::new(ErrorCode::NotFound, "not found"))
    }
}

/// Two path parameters (`/admin/v1/accounts/{account_id}/api-keys/{key_id}`).
pub struct Ids(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for Ids {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|p| Ids(p.0 .0, p.0 .1))
            .map_err(|_| ApiError::new(ErrorCode::NotFound, "not found"))
    }
}

/// A customer, as the access guard (`crate::access`) authenticated and admitted them.
pub struct Customer(pub Caller);

impl FromRequestParts<AppState> for Customer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                "missing or unknown API key; send Authorization: Bearer <key>",
            )
        })?;
        Ok(Customer(caller))
    }
}

/// A named operator, as the access guard (`crate::access`) authenticated them.
pub struct Operator(pub OperatorIdentity);

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Self::Rejection> {
        let op = parts
            .extensions
            .get::<OperatorIdentity>()
            .cloned()
            .ok_or_else(|| {
                ApiError::new(ErrorCode::Unauthorized, "operator credential required")
            })?;
        Ok(Operator(op))
    }
}
