//! Customer events: what happened, as a stable envelope (`id`, `type`, `created_at`, `data`)
//! on the events queue, where webhook dispatch picks them up. Producers only send; nothing in
//! the money path waits for a delivery.
//!
//! Ids are derived from what happened (`evt_{task_id}_failed`, `evt_{batch_id}_completed`),
//! so a producer that runs twice after a crash emits the same event twice, and dispatch
//! keeps the first.

use super::views::{BatchView, EndpointView, TaskView};
use super::{decode_cursor, ErrorCode, Page, ServiceError, Services, TimeCursor};
use crate::domain::cursor;
use crate::domain::task::Outcome;
use crate::domain::time::rfc3339_ms;
use crate::ports::queue::QueueName;
use crate::ports::records::{
    AccountRecord, ApiKeyRecord, BatchRecord, EndpointRecord, EventRecord, LedgerRecord, TaskRecord,
};
use crate::ports::StoreError;
use serde::{Deserialize, Serialize};

/// The envelope every delivery carries (its JSON is the webhook body).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub created_at: String,
    pub account_id: String,
    pub data: serde_json::Value,
}

/// A message on the events queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventsMessage {
    /// A new event: store it, fan it out to the subscribed endpoints.
    Event(Event),
    /// Attempt `attempt` of one delivery, due at `not_before_ms`.
    Attempt {
        account_id: String,
        endpoint_id: String,
        event_id: String,
        attempt: u32,
        #[serde(default)]
        not_before_ms: i64,
    },
}

pub(crate) fn snapshot<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// A task reached its end: `task.succeeded`, `task.failed`, ... (a released task is
/// `task.cancelled` with `charged: false`).
pub fn task_ended(task: &TaskRecord, outcome: Outcome, ended_ms: i64) -> Event {
    let status = match outcome {
        Outcome::Released => Outcome::Cancelled.as_str(),
        other => other.as_str(),
    };
    Event {
        id: format!("evt_{}_{status}", task.task_id),
        event_type: format!("task.{status}"),
        created_at: rfc3339_ms(ended_ms),
        account_id: task.account_id.clone(),
        data: snapshot(&TaskView::from(task)),
    }
}

/// A task's unit came back: `credits.refunded` for a failed or timed-out task,
/// `credits.released` for one cancelled before it reached a provider.
pub fn credits_given_back(
    task: &TaskRecord,
    outcome: Outcome,
    amount: crate::domain::money::Credits,
    ended_ms: i64,
) -> Event {
    let what = if outcome.released() {
        "released"
    } else {
        "refunded"
    };
    Event {
        id: format!("evt_{}_{what}", task.task_id),
        event_type: format!("credits.{what}"),
        created_at: rfc3339_ms(ended_ms),
        account_id: task.account_id.clone(),
        data: serde_json::json!({
            "task_id": task.task_id,
            "batch_id": task.batch_id,
            "amount": amount,
            "reason": outcome.as_str(),
        }),
    }
}

pub fn batch_completed(batch: &BatchRecord, now_ms: i64) -> Event {
    Event {
        id: format!("evt_{}_completed", batch.batch_id),
        event_type: "batch.completed".into(),
        created_at: rfc3339_ms(batch.completed_ms.unwrap_or(now_ms)),
        account_id: batch.account_id.clone(),
        data: snapshot(&BatchView::from(batch)),
    }
}

pub fn credits_granted(entry: &LedgerRecord) -> Event {
    Event {
        id: format!("evt_{}_{}_granted", entry.account_id, entry.seq),
        event_type: "credits.granted".into(),
        created_at: rfc3339_ms(entry.created_ms),
        account_id: entry.account_id.clone(),
        data: snapshot(&super::views::LedgerEntryView::from(entry)),
    }
}

/// The balance crossed below the account's threshold with ledger entry `seq`.
pub fn low_balance(
    account: &AccountRecord,
    threshold: crate::domain::money::Credits,
    now_ms: i64,
) -> Event {
    let mut data = snapshot(&super::views::CreditsView::from(account));
    data["low_balance_threshold"] = serde_json::json!(threshold);
    Event {
        id: format!(
            "evt_{}_{}_low_balance",
            account.account_id, account.ledger_seq
        ),
        event_type: "credits.low_balance".into(),
        created_at: rfc3339_ms(now_ms),
        account_id: account.account_id.clone(),
        data,
    }
}

pub fn endpoint_disabled(ep: &EndpointRecord) -> Event {
    let at = ep.disabled_ms.unwrap_or(ep.updated_ms);
    Event {
        id: format!("evt_{}_disabled_{at}", ep.endpoint_id),
        event_type: "webhook_endpoint.disabled".into(),
        created_at: rfc3339_ms(at),
        account_id: ep.account_id.clone(),
        data: snapshot(&EndpointView::new(ep, None, at)),
    }
}

/// An anomaly rule lowered a key's limit.
pub fn key_throttled(key: &ApiKeyRecord, now_ms: i64) -> Event {
    let since = key.throttle.as_ref().map_or(now_ms, |t| t.since_ms);
    Event {
        id: format!("evt_{}_throttled_{since}", key.key_id),
        event_type: "api_key.throttled".into(),
        created_at: rfc3339_ms(since),
        account_id: key.account_id.clone(),
        data: snapshot(&super::views::ApiKeyView::at(key, None, now_ms)),
    }
}

/// Puts events on the events queue.
pub async fn emit(svc: &Services, events: &[Event]) -> Result<(), StoreError> {
    let msgs: Vec<(EventsMessage, u64)> = events
        .iter()
        .map(|e| (EventsMessage::Event(e.clone()), 0))
        .collect();
    svc.enqueue(QueueName::Events, &msgs).await
}

/// `GET /v1/events` and `GET /v1/events/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
}

fn parse(rec: &EventRecord) -> Result<serde_json::Value, ServiceError> {
    serde_json::from_str(&rec.body).map_err(|e| ServiceError::Internal(e.to_string()))
}

pub async fn list(
    svc: &Services,
    account_id: &str,
    p: &ListParams,
) -> Result<Page<serde_json::Value>, ServiceError> {
    let limit = super::parse_limit(p.limit.as_deref())?;
    if let Some(t) = &p.event_type {
        if !crate::domain::webhook::is_event_type(t) {
            return Err(ServiceError::reject(
                ErrorCode::InvalidParameter,
                format!("type: unknown event type {t:?}"),
            ));
        }
    }
    let before = decode_cursor::<TimeCursor>(p.cursor.as_deref())?.map(|c| (c.t, c.e));
    let (recs, more) = svc
        .events
        .list(account_id, p.event_type.as_deref(), limit, before)
        .await?;
    let next_cursor = match (more, recs.last()) {
        (true, Some(last)) => Some(cursor::encode(&TimeCursor {
            t: last.created_ms,
            e: last.event_id.clone(),
        })),
        _ => None,
    };
    Ok(Page {
        data: recs.iter().map(parse).collect::<Result<_, _>>()?,
        has_more: more,
        next_cursor,
    })
}

/// The event's body exactly as it was delivered (the bytes its signatures cover).
pub async fn get(svc: &Services, account_id: &str, event_id: &str) -> Result<String, ServiceError> {
    Ok(find(svc, account_id, event_id).await?.body)
}

pub(crate) async fn find(
    svc: &Services,
    account_id: &str,
    event_id: &str,
) -> Result<EventRecord, ServiceError> {
    if !event_id.starts_with("evt_") || event_id.len() > 200 {
        return Err(ServiceError::not_found("event"));
    }
    svc.events
        .get(account_id, event_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("event"))
}
