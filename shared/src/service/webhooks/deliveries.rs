//! The delivery log and redelivery. A redelivery sends the stored event again with the same
//! `webhook-id` (the event id), so a receiver that already has it can drop the copy; it
//! starts a fresh retry schedule for that delivery.

use super::super::events;
use super::super::views::DeliveryView;
use super::super::{decode_cursor, ErrorCode, Page, ServiceError, Services, TimeCursor};
use super::dispatch::{new_delivery, schedule};
use super::find;
use crate::domain::cursor;
use crate::domain::time::parse_rfc3339_ms;
use crate::domain::webhook::subscribed;
use crate::ports::records::{DeliveryStatus, EndpointRecord, EventRecord};
use crate::ports::TimeRange;
use serde::Deserialize;

/// How many failed deliveries one recover call restarts; call again for more.
pub const MAX_RECOVER: usize = 1_000;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub status: Option<String>,
}

fn parse_status(s: Option<&str>) -> Result<Option<DeliveryStatus>, ServiceError> {
    match s {
        None => Ok(None),
        Some("pending") => Ok(Some(DeliveryStatus::Pending)),
        Some("succeeded") => Ok(Some(DeliveryStatus::Succeeded)),
        Some("failed") => Ok(Some(DeliveryStatus::Failed)),
        Some(other) => Err(ServiceError::reject(
            ErrorCode::InvalidParameter,
            format!("status must be pending, succeeded or failed, not {other:?}"),
        )),
    }
}

pub async fn list(
    svc: &Services,
    account_id: &str,
    endpoint_id: &str,
    p: &ListParams,
) -> Result<Page<DeliveryView>, ServiceError> {
    find(svc, account_id, endpoint_id).await?;
    let limit = super::super::parse_limit(p.limit.as_deref())?;
    let status = parse_status(p.status.as_deref())?;
    let before = decode_cursor::<TimeCursor>(p.cursor.as_deref())?.map(|c| (c.t, c.e));
    let (recs, more) = svc
        .deliveries
        .list(endpoint_id, TimeRange::ALL, status, limit, before)
        .await?;
    let next_cursor = match (more, recs.last()) {
        (true, Some(last)) => Some(cursor::encode(&TimeCursor {
            t: last.created_ms,
            e: last.event_id.clone(),
        })),
        _ => None,
    };
    Ok(Page {
        data: recs
            .iter()
            .filter(|d| d.account_id == account_id)
            .map(DeliveryView::from)
            .collect(),
        has_more: more,
        next_cursor,
    })
}

/// Starts (or restarts) the delivery of `event` to `ep` and schedules its next attempt now.
/// False when its schedule is still running (nothing to do).
async fn restart(
    svc: &Services,
    event: &EventRecord,
    ep: &EndpointRecord,
) -> Result<bool, ServiceError> {
    let now = svc.now_ms();
    let n = if svc
        .deliveries
        .create(&new_delivery(event, &ep.endpoint_id, now))
        .await?
    {
        Some(1)
    } else {
        svc.deliveries
            .restart(&ep.endpoint_id, &event.event_id, now)
            .await?
    };
    // Still pending: its next attempt's message may have been lost (a crash between the
    // write and the send, or the DLQ). Send it again; the claim makes a duplicate harmless.
    let n = match n {
        Some(n) => Some(n),
        None => svc
            .deliveries
            .get(&ep.endpoint_id, &event.event_id)
            .await?
            .filter(|d| d.status == DeliveryStatus::Pending && d.recorded == d.attempts_made)
            .map(|d| d.attempts_made + 1),
    };
    match n {
        Some(n) => {
            schedule(
                svc,
                &ep.account_id,
                &ep.endpoint_id,
                &event.event_id,
                n,
                now,
            )
            .await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

fn disabled(ep: &EndpointRecord) -> ServiceError {
    ServiceError::reject_with(
        ErrorCode::EndpointDisabled,
        "the endpoint is disabled; enable it (PATCH enabled=true) before redelivering",
        serde_json::json!({ "endpoint_id": ep.endpoint_id, "disabled_reason": ep.disabled_reason }),
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    /// One endpoint; omitted: every enabled endpoint subscribed to the event's type.
    #[serde(default)]
    pub endpoint_id: Option<String>,
}

/// `POST /v1/events/{id}/redeliver`.
pub async fn redeliver(
    svc: &Services,
    account_id: &str,
    event_id: &str,
    req: Redeliver,
) -> Result<serde_json::Value, ServiceError> {
    let event = events::find(svc, account_id, event_id).await?;
    let targets = match &req.endpoint_id {
        Some(id) => {
            let ep = find(svc, account_id, id).await?;
            if !ep.enabled {
                return Err(disabled(&ep));
            }
            vec![ep]
        }
        None => svc
            .endpoints
            .list(account_id)
            .await?
            .into_iter()
            .filter(|e| e.enabled && subscribed(e.event_types.as_deref(), &event.event_type))
            .collect(),
    };
    let mut scheduled = Vec::new();
    let mut in_progress = Vec::new();
    for ep in &targets {
        if restart(svc, &event, ep).await? {
            scheduled.push(ep.endpoint_id.clone());
        } else {
            in_progress.push(ep.endpoint_id.clone());
        }
    }
    Ok(serde_json::json!({
        "event_id": event.event_id,
        "scheduled": scheduled,
        "already_pending": in_progress,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// RFC 3339: failed deliveries of events created at or after this.
    pub since: String,
    #[serde(default)]
    pub until: Option<String>,
}

/// `POST /v1/webhook-endpoints/{id}/recover`: redeliver every failed delivery since a time.
pub async fn recover(
    svc: &Services,
    account_id: &str,
    endpoint_id: &str,
    req: Recover,
) -> Result<serde_json::Value, ServiceError> {
    let ep = find(svc, account_id, endpoint_id).await?;
    let bad_time = |f: &str| {
        ServiceError::reject(
            ErrorCode::InvalidRequest,
            format!("{f} must be an RFC 3339 timestamp, e.g. 2026-11-24T00:00:00Z"),
        )
    };
    let since = parse_rfc3339_ms(&req.since).ok_or_else(|| bad_time("since"))?;
    let until = match &req.until {
        Some(u) => parse_rfc3339_ms(u).ok_or_else(|| bad_time("until"))?,
        None => i64::MAX,
    };
    if until < since {
        return Err(ServiceError::reject(
            ErrorCode::InvalidRequest,
            "until is before since",
        ));
    }
    if !ep.enabled {
        return Err(disabled(&ep));
    }
    let mut restarted = 0usize;
    let mut before = None;
    let mut more = true;
    let mut cut_short = false;
    while more && !cut_short {
        let range = TimeRange {
            from_ms: since,
            to_ms: until,
        };
        let (page, has_more) = svc
            .deliveries
            .list(
                endpoint_id,
                range,
                Some(DeliveryStatus::Failed),
                100,
                before.take(),
            )
            .await?;
        more = has_more;
        before = page.last().map(|d| (d.created_ms, d.event_id.clone()));
        for d in page.iter().filter(|d| d.account_id == account_id) {
            if restarted == MAX_RECOVER {
                cut_short = true;
                break;
            }
            if let Some(event) = svc.events.get(account_id, &d.event_id).await? {
                if restart(svc, &event, &ep).await? {
                    restarted += 1;
                }
            }
        }
    }
    Ok(serde_json::json!({
        "endpoint_id": endpoint_id,
        "redelivering": restarted,
        "has_more": cut_short,
    }))
}
