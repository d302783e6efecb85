//! The one place where errors become HTTP: status per code, and the JSON error body
//! `{"error": {"code", "message", "details"?}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shared::service::{ErrorCode, ServiceError};

pub fn status_for(code: ErrorCode) -> StatusCode {
    use ErrorCode::*;
    match code {
        InvalidJson | InvalidRequest | InvalidParameter | InvalidCursor | InvalidSignature => {
            StatusCode::BAD_REQUEST
        }
        Unauthorized | KeyDisabled | KeyRevoked | KeyExpired | SessionExpired => {
            StatusCode::UNAUTHORIZED
        }
        RateLimited => StatusCode::TOO_MANY_REQUESTS,
        IpNotAllowed | IpBlocked | InsufficientScope | CsrfFailed => StatusCode::FORBIDDEN,
        InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
        AccountTerminated => StatusCode::FORBIDDEN,
        NotFound => StatusCode::NOT_FOUND,
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        IdempotencyConflict | IdempotencyExpired | RequestInProgress | BatchCompleted
        | EndpointDisabled | OperatorExists | LastOperator | AccountNotTerminated
        | MonthNotOver => StatusCode::CONFLICT,
        PayloadTooLarge | InputFileTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        InvalidRequestId
        | UnknownModel
        | InvalidTask
        | BatchTooSmall
        | BatchTooLarge
        | InvalidMetadata
        | InvalidInputFile
        | InputFileNotUploaded
        | InvalidAccountTerms
        | InvalidGrant
        | InvalidModelStatus
        | InvalidWebhookUrl
        | WebhookUrlForbidden
        | InvalidEventTypes
        | EndpointLimitReached
        | KeyLimitReached
        | InvalidApiKeySettings
        | InvalidExport
        | InvalidAdjustment
        | InvalidStripeEvent
        | InvalidBillingProfile
        | InvalidCheckout
        | InvalidWireReceipt
        | InvalidOperator => StatusCode::UNPROCESSABLE_ENTITY,
        ModelUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        PaymentProviderError => StatusCode::BAD_GATEWAY,
        InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[derive(Debug)]
pub struct ApiError(pub ServiceError);

/// The `error.code` of a response, for the usage log (set on every error response).
#[derive(Clone, Copy, Debug)]
pub struct ErrorCodeExt(pub &'static str);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(ServiceError::reject(code, message))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.0.code();
        let status = status_for(code);
        let (message, details) = match self.0 {
            ServiceError::Rejected {
                message, details, ..
            } => (message, details),
            other => {
                // The detail goes to the log, never to the client.
                tracing::error!(error = %other, "request failed");
                (
                    "internal error; nothing was charged twice: retry with the same request_id"
                        .to_string(),
                    None,
                )
            }
        };
        let mut error = serde_json::json!({ "code": code.as_str(), "message": message });
        if let Some(d) = details {
            error["details"] = d;
        }
        let mut resp = (status, Json(serde_json::json!({ "error": error }))).into_response();
        resp.extensions_mut().insert(ErrorCodeExt(code.as_str()));
        resp
    }
}
