//! The lookup half of request_id idempotency. The write half is the idempotency record that
//! each use case puts in the same transaction as its effect (`attribute_not_exists`), so the
//! effect and the record commit together or not at all.

use super::{ErrorCode, Reply, ServiceError, Services};
use crate::adapters::records::RequestRecord;
use crate::domain::idempotency::{request_key, validate_request_id, Scope};

/// The stored reply for this request_id if there is one: a replay when the body matches, a
/// conflict when it does not.
pub async fn replay(
    svc: &Services,
    owner: &str,
    scope: Scope,
    request_id: &str,
    fingerprint: &str,
) -> Result<Option<(Reply, RequestRecord)>, ServiceError> {
    let Some(rec) = svc
        .store
        .get_request(owner, &request_key(scope, request_id))
        .await?
    else {
        return Ok(None);
    };
    if rec.fingerprint != fingerprint {
        return Err(ServiceError::reject_with(
            ErrorCode::IdempotencyConflict,
            "this request_id was already used with a different request body",
            serde_json::json!({ "request_id": request_id, "resource_id": rec.resource_id }),
        ));
    }
    let reply = Reply {
        status: rec.status_code,
        body: rec.response.clone(),
        replayed: true,
    };
    Ok(Some((reply, rec)))
}

pub fn check_request_id(request_id: &str) -> Result<(), ServiceError> {
    validate_request_id(request_id)
        .map_err(|m| ServiceError::reject(ErrorCode::InvalidRequestId, m))
}

/// The record that makes a reply replayable.
pub fn record(
    owner: &str,
    scope: Scope,
    request_id: &str,
    fingerprint: &str,
    reply: &Reply,
    resource_id: &str,
    now_ms: i64,
) -> RequestRecord {
    RequestRecord {
        account_id: owner.to_string(),
        request_key: request_key(scope, request_id),
        fingerprint: fingerprint.to_string(),
        status_code: reply.status,
        response: reply.body.clone(),
        resource_id: resource_id.to_string(),
        created_ms: now_ms,
    }
}
