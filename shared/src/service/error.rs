//! What can go wrong in a use case, with the machine-readable code the API reports. The HTTP
//! status for each code is decided in one place, in the api function.

use crate::ports::StoreError;
use serde_json::Value;

macro_rules! error_codes {
    ($($variant:ident => $text:literal),* $(,)?) => {
        /// Every `error.code` the API can answer with. The OpenAPI document lists the same set
        /// (a test compares them).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $($variant),* }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text),* }
            }
        }
    };
}

error_codes! {
    InvalidJson => "invalid_json",
    InvalidRequest => "invalid_request",
    InvalidParameter => "invalid_parameter",
    InvalidCursor => "invalid_cursor",
    PayloadTooLarge => "payload_too_large",
    Unauthorized => "unauthorized",
    SessionExpired => "session_expired",
    CsrfFailed => "csrf_failed",
    KeyDisabled => "key_disabled",
    KeyRevoked => "key_revoked",
    KeyExpired => "key_expired",
    RateLimited => "rate_limited",
    IpNotAllowed => "ip_not_allowed",
    IpBlocked => "ip_blocked",
    InsufficientScope => "insufficient_scope",
    InvalidApiKeySettings => "invalid_api_key_settings",
    InvalidExport => "invalid_export",
    InvalidAdjustment => "invalid_adjustment",
    AccountTerminated => "account_terminated",
    AccountNotTerminated => "account_not_terminated",
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    IdempotencyConflict => "idempotency_conflict",
    IdempotencyExpired => "idempotency_expired",
    RequestInProgress => "request_in_progress",
    InsufficientCredits => "insufficient_credits",
    InvalidRequestId => "invalid_request_id",
    UnknownModel => "unknown_model",
    InvalidTask => "invalid_task",
    BatchTooSmall => "batch_too_small",
    BatchTooLarge => "batch_too_large",
    InvalidMetadata => "invalid_metadata",
    InvalidInputFile => "invalid_input_file",
    InputFileNotUploaded => "input_file_not_uploaded",
    InputFileTooLarge => "input_file_too_large",
    InvalidAccountTerms => "invalid_account_terms",
    MonthNotOver => "month_not_over",
    InvalidSignature => "invalid_signature",
    InvalidStripeEvent => "invalid_stripe_event",
    InvalidBillingProfile => "invalid_billing_profile",
    InvalidCheckout => "invalid_checkout",
    PaymentProviderError => "payment_provider_error",
    InvalidWireReceipt => "invalid_wire_receipt",
    InvalidGrant => "invalid_grant",
    OperatorExists => "operator_exists",
    LastOperator => "last_operator",
    InvalidOperator => "invalid_operator",
    ModelUnavailable => "model_unavailable",
    BatchCompleted => "batch_completed",
    InvalidModelStatus => "invalid_model_status",
    InvalidWebhookUrl => "invalid_webhook_url",
    WebhookUrlForbidden => "webhook_url_forbidden",
    InvalidEventTypes => "invalid_event_types",
    EndpointLimitReached => "endpoint_limit_reached",
    KeyLimitReached => "key_limit_reached",
    EndpointDisabled => "endpoint_disabled",
    InternalError => "internal_error",
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request was refused; nothing was written.
    #[error("{message}")]
    Rejected {
        code: ErrorCode,
        message: String,
        details: Option<Value>,
    },
    /// Our side failed (a store error, a broken invariant). Logged, answered with a 500 whose
    /// body says nothing internal.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal: {0}")]
    Internal(String),
}

impl ServiceError {
    pub fn reject(code: ErrorCode, message: impl Into<String>) -> Self {
        ServiceError::Rejected {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn reject_with(code: ErrorCode, message: impl Into<String>, details: Value) -> Self {
        ServiceError::Rejected {
            code,
            message: message.into(),
            details: Some(details),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::reject(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Rejected { code, .. } => *code,
            _ => ErrorCode::InternalError,
        }
    }
}
