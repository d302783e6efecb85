//! The lookup half of request_id idempotency. The write half is the idempotency record that
//! each use case puts in the same transaction as its effect (`attribute_not_exists`), so the
//! effect and the record commit together or not at all.

use super::{ErrorCode, Reply, ServiceError, Services};
use crate::domain::idempotency::{request_key, validate_request_id, Scope};
use crate::ports::records::RequestRecord;
use crate::ports::store::{CommitError, NewRecord};
use std::future::Future;

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
        .requests
        .get(owner, &request_key(scope, request_id))
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
    // The stored response follows the account's retention (DynamoDB's TTL may delete it up
    // to days late; it is not served a moment past its time). The tombstone stays: the
    // request_id still names what it made, and never makes another.
    let live = rec.response_expires_ms == 0 || svc.now_ms() < rec.response_expires_ms;
    let Some(body) = rec.response.clone().filter(|_| live) else {
        return Err(ServiceError::reject_with(
            ErrorCode::IdempotencyExpired,
            format!(
                "this request_id was used at {}; its stored response has passed the account's retention and was deleted. It created {}: read that instead",
                crate::domain::time::rfc3339_ms(rec.created_ms),
                rec.resource_id
            ),
            serde_json::json!({
                "request_id": request_id,
                "resource_id": rec.resource_id,
                "first_used_at": crate::domain::time::rfc3339_ms(rec.created_ms),
            }),
        ));
    };
    let reply = Reply {
        status: rec.status_code,
        body,
        replayed: true,
    };
    Ok(Some((reply, rec)))
}

pub fn check_request_id(request_id: &str) -> Result<(), ServiceError> {
    validate_request_id(request_id)
        .map_err(|m| ServiceError::reject(ErrorCode::InvalidRequestId, m))
}

/// How long operator requests' responses are kept (the operator's own usage log keeps a year).
pub const OPERATOR_RETENTION_DAYS: u32 = 365;

/// The record that makes a reply replayable for the owner's retention (`retention_days`),
/// and its request_id used for good.
#[allow(clippy::too_many_arguments)]
pub fn record(
    owner: &str,
    scope: Scope,
    request_id: &str,
    fingerprint: &str,
    reply: &Reply,
    resource_id: &str,
    now_ms: i64,
    retention_days: u32,
) -> RequestRecord {
    RequestRecord {
        account_id: owner.to_string(),
        request_key: request_key(scope, request_id),
        fingerprint: fingerprint.to_string(),
        status_code: reply.status,
        response: Some(reply.body.clone()),
        resource_id: resource_id.to_string(),
        created_ms: now_ms,
        response_expires_ms: now_ms + i64::from(retention_days) * 86_400_000,
    }
}

/// What a use case creates for one request: the records, the reply, and the id of the
/// resource the request_id now names.
pub struct Creation {
    pub creates: Vec<NewRecord>,
    pub reply: Reply,
    /// What a replay answers when it must differ from `reply`: the resource without a
    /// secret that is shown once (a replay must never reveal it again).
    pub replayed: Option<Reply>,
    pub resource_id: String,
}

/// Creates records that move no money together with the request's idempotency record, all or
/// nothing. A concurrent duplicate that loses the race replays the winner's response, which
/// is kept for the owner's `retention_days`.
pub async fn create_once<F, Fut>(
    svc: &Services,
    owner: &str,
    retention_days: u32,
    scope: Scope,
    request_id: &str,
    fingerprint: &str,
    build: F,
) -> Result<Reply, ServiceError>
where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<Creation, ServiceError>>,
{
    check_request_id(request_id)?;
    for _ in 0..2 {
        if let Some((reply, _)) = replay(svc, owner, scope, request_id, fingerprint).await? {
            return Ok(reply);
        }
        let now = svc.now_ms();
        let Creation {
            mut creates,
            reply,
            replayed,
            resource_id,
        } = build(now).await?;
        let req = record(
            owner,
            scope,
            request_id,
            fingerprint,
            replayed.as_ref().unwrap_or(&reply),
            &resource_id,
            now,
            retention_days,
        );
        creates.push(NewRecord::Request(req));
        match svc.requests.create_all(creates).await {
            Ok(()) => return Ok(reply),
            Err(CommitError::Duplicate(_)) | Err(CommitError::Stale) => continue,
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
    }
    Err(ServiceError::reject(
        ErrorCode::RequestInProgress,
        "a request with this request_id is being processed; retry shortly",
    ))
}
