//! Webhook dispatch, the `webhook-dispatch` function's logic. Two kinds of message arrive on
//! the events queue:
//!
//! - an **event**: stored once (its first body is the one every attempt sends), then one
//!   delivery per enabled, subscribed endpoint, each attempted at once;
//! - an **attempt** of one delivery, due at `not_before_ms`: claimed, signed, POSTed,
//!   recorded, and the next attempt scheduled as a delayed message when the verdict says so.
//!
//! Every step re-reads and writes conditionally, so a duplicate message, a second dispatcher
//! or a crash between any two steps repeats at most one POST and never loses the schedule.
//! The attempts of one invocation run concurrently: a slow receiver holds up nobody else.

use super::super::events::{self, Event, EventsMessage};
use super::super::pipeline::PipelineError;
use super::super::Services;
use crate::domain::time::parse_rfc3339_ms;
use crate::domain::webhook::{
    active_secrets, decode_secret, judge, secret_context, signature_header, subscribed,
    AttemptResult, Verdict, DISABLE_AFTER_FAILING_MS, DISPATCH_SHARE, SHARE_JITTER_MS,
    SHARE_WAIT_MS,
};
use crate::ports::queue::QueueName;
use crate::ports::records::{
    AttemptLog, DeliveryRecord, DeliveryStatus, EndpointRecord, EventRecord,
};
use crate::ports::StoreError;
use futures_util::future::join_all;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// What the messages of one invocation share: each account's retention and webhook
/// endpoints, read once for all its events (an invocation carries up to ten, mostly of one
/// account) instead of once per event. As current as a read at the invocation's start: an
/// endpoint created while it runs gets the events after it, as if they had come a moment
/// sooner.
#[derive(Default)]
pub struct Invocation {
    audiences: std::sync::Mutex<HashMap<String, Arc<AudienceCell>>>,
}

/// An account's audience once read (None: the account is gone).
type AudienceCell = OnceCell<Option<Arc<Audience>>>;

/// Who an account's events go to.
pub struct Audience {
    retention_days: u32,
    endpoints: Vec<EndpointRecord>,
}

impl Invocation {
    /// The account's audience; None if the account is gone. Concurrent messages of the same
    /// account wait for the one read.
    async fn audience(
        &self,
        d: &Services,
        account_id: &str,
    ) -> Result<Option<Arc<Audience>>, StoreError> {
        let cell = {
            let mut map = self.audiences.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(account_id.to_string()).or_default().clone()
        };
        let audience = cell
            .get_or_try_init(|| async {
                let Some(account) = d.accounts.get(account_id).await? else {
                    return Ok::<_, StoreError>(None);
                };
                let endpoints = d.endpoints.list(account_id).await?;
                Ok(Some(Arc::new(Audience {
                    retention_days: account.retention_days,
                    endpoints,
                })))
            })
            .await?;
        Ok(audience.clone())
    }
}

/// One message, alone in its invocation.
pub async fn handle(d: &Services, msg: EventsMessage) -> Result<(), PipelineError> {
    handle_in(d, &Invocation::default(), msg).await
}

/// One message of an invocation whose messages share `inv`'s reads.
pub async fn handle_in(
    d: &Services,
    inv: &Invocation,
    msg: EventsMessage,
) -> Result<(), PipelineError> {
    match msg {
        EventsMessage::Event(ev) => fan_out(d, inv, ev).await,
        EventsMessage::Attempt {
            account_id,
            endpoint_id,
            event_id,
            attempt: n,
            not_before_ms,
        } => {
            if not_before_ms > d.now_ms() + 1_000 {
                // Early (SQS caps delays at 15 minutes): go round again.
                return schedule(d, &account_id, &endpoint_id, &event_id, n, not_before_ms)
                    .await
                    .map_err(Into::into);
            }
            attempt(d, &account_id, &endpoint_id, &event_id, n, None, None).await
        }
    }
}

/// Sends the message for attempt `n`, due at `at_ms`.
pub async fn schedule(
    svc: &Services,
    account_id: &str,
    endpoint_id: &str,
    event_id: &str,
    n: u32,
    at_ms: i64,
) -> Result<(), StoreError> {
    let msg = EventsMessage::Attempt {
        account_id: account_id.to_string(),
        endpoint_id: endpoint_id.to_string(),
        event_id: event_id.to_string(),
        attempt: n,
        not_before_ms: at_ms,
    };
    let delay = u64::try_from((at_ms - svc.now_ms()).max(0) / 1_000).unwrap_or(0);
    svc.enqueue(QueueName::Events, &[(msg, delay)]).await
}

/// A fresh delivery of `event` to `endpoint`, pending its first attempt.
pub fn new_delivery(event: &EventRecord, endpoint_id: &str, now_ms: i64) -> DeliveryRecord {
    DeliveryRecord {
        endpoint_id: endpoint_id.to_string(),
        event_id: event.event_id.clone(),
        account_id: event.account_id.clone(),
        event_type: event.event_type.clone(),
        created_ms: event.created_ms,
        status: DeliveryStatus::Pending,
        attempts_made: 0,
        recorded: 0,
        schedule_base: 0,
        claim_until_ms: 0,
        next_attempt_ms: Some(now_ms),
        attempts: Vec::new(),
        expires_at: event.expires_at,
    }
}

async fn fan_out(d: &Services, inv: &Invocation, ev: Event) -> Result<(), PipelineError> {
    let Some(audience) = inv.audience(d, &ev.account_id).await? else {
        return Ok(());
    };
    let now = d.now_ms();
    let created_ms = parse_rfc3339_ms(&ev.created_at).unwrap_or(now);
    let body = serde_json::to_string(&ev).map_err(|e| PipelineError::Other(e.to_string()))?;
    let rec = EventRecord {
        account_id: ev.account_id.clone(),
        event_id: ev.id.clone(),
        event_type: ev.event_type.clone(),
        created_ms,
        body,
        expires_at: created_ms / 1_000 + i64::from(audience.retention_days) * 86_400,
    };
    // The first body wins: a re-emitted event is delivered as it was first stored.
    let stored = d.events.put_once(&rec).await?;
    d.faults.check("dispatch.after_event")?;
    let endpoints: Vec<EndpointRecord> = audience
        .endpoints
        .iter()
        .filter(|e| e.enabled && subscribed(e.event_types.as_deref(), &stored.event_type))
        .cloned()
        .collect();
    let results = join_all(endpoints.into_iter().map(|ep| {
        let stored = &stored;
        async move {
            d.deliveries
                .create(&new_delivery(stored, &ep.endpoint_id, now))
                .await?;
            // Created now or by an earlier run that died before attempting: attempt 1 is
            // claimed once whoever gets here.
            let (account_id, endpoint_id) = (ep.account_id.clone(), ep.endpoint_id.clone());
            attempt(
                d,
                &account_id,
                &endpoint_id,
                &stored.event_id,
                1,
                Some(ep),
                Some(stored.clone()),
            )
            .await
        }
    }))
    .await;
    results.into_iter().collect()
}

/// Attempt `n` of one delivery. `endpoint` and `event` save a read when the caller has them.
async fn attempt(
    d: &Services,
    account_id: &str,
    endpoint_id: &str,
    event_id: &str,
    n: u32,
    endpoint: Option<EndpointRecord>,
    event: Option<EventRecord>,
) -> Result<(), PipelineError> {
    let Some(del) = d.deliveries.get(endpoint_id, event_id).await? else {
        return Ok(());
    };
    if del.account_id != account_id || del.status != DeliveryStatus::Pending {
        return Ok(());
    }
    if del.recorded >= n {
        // Already done; a crash may have eaten the message for the next one: send it again
        // (its claim makes a duplicate harmless).
        if del.recorded == n && del.attempts_made == n {
            if let Some(next_ms) = del.next_attempt_ms {
                schedule(d, account_id, endpoint_id, event_id, n + 1, next_ms).await?;
            }
        }
        return Ok(());
    }
    let endpoint = match endpoint {
        Some(e) => Some(e),
        None => d.endpoints.get(account_id, endpoint_id).await?,
    };
    let Some(ep) = endpoint else {
        // Deleted: nothing to deliver to.
        return Ok(());
    };
    let now = d.now_ms();
    let timeout_ms = i64::try_from(d.settings.webhooks.timeout_ms).unwrap_or(30_000);
    let claim_until = now + timeout_ms + 60_000;
    // The account's share of dispatch: past it, this attempt waits on the queue rather than
    // take a worker other accounts need. The share is a lease as long as the claim, so one
    // held by a dispatcher that died frees itself.
    let pool = format!("webhooks#{account_id}");
    let holder = d.new_id("share");
    let Some(slot) = d
        .rates
        .take_share(&pool, &holder, DISPATCH_SHARE, now, claim_until)
        .await?
    else {
        let jitter = i64::try_from(d.random.up_to(SHARE_JITTER_MS)).unwrap_or(0);
        let at = now + SHARE_WAIT_MS + jitter;
        tracing::info!(
            account_id,
            endpoint_id,
            event_id,
            attempt = n,
            "account at its dispatch share; the attempt waits"
        );
        schedule(d, account_id, endpoint_id, event_id, n, at).await?;
        return Ok(());
    };
    let out = claimed(d, &del, &ep, event, n, now, claim_until).await;
    // Given back however the attempt ended (an error included); if this fails, the lease
    // runs out.
    if let Err(e) = d.rates.give_back_share(&pool, slot, &holder).await {
        tracing::warn!(account_id, error = %e, "dispatch share not given back; its lease runs out");
    }
    out
}

/// Attempt `n` under the account's share: claim, sign, POST, record, schedule the next.
async fn claimed(
    d: &Services,
    del: &DeliveryRecord,
    ep: &EndpointRecord,
    event: Option<EventRecord>,
    n: u32,
    now: i64,
    claim_until: i64,
) -> Result<(), PipelineError> {
    let (account_id, endpoint_id, event_id) = (
        ep.account_id.as_str(),
        ep.endpoint_id.as_str(),
        del.event_id.as_str(),
    );
    if !d
        .deliveries
        .claim(endpoint_id, event_id, n, now, claim_until)
        .await?
    {
        // Someone holds the claim. If they die, it runs out: look again then.
        if let Some(cur) = d.deliveries.get(endpoint_id, event_id).await? {
            if cur.status == DeliveryStatus::Pending && cur.recorded < n && cur.attempts_made == n {
                let at = cur.claim_until_ms.max(now) + 1_000;
                schedule(d, account_id, endpoint_id, event_id, n, at).await?;
            }
        }
        return Ok(());
    }
    d.faults.check("dispatch.after_claim")?;
    let trigger = if del.schedule_base > 0 && n == del.schedule_base + 1 {
        "redeliver"
    } else {
        "schedule"
    };
    let event = match event {
        Some(e) => Some(e),
        None => d.events.get(account_id, event_id).await?,
    };
    let failed_without_post = |why: &str| AttemptLog {
        n,
        at_ms: now,
        status_code: None,
        latency_ms: 0,
        response_body: None,
        error: Some(why.to_string()),
        trigger: trigger.to_string(),
    };
    let (Some(event), true) = (event, ep.enabled) else {
        let why = if ep.enabled {
            "the event is past its retention"
        } else {
            "the endpoint is disabled"
        };
        d.deliveries
            .record(
                endpoint_id,
                event_id,
                &failed_without_post(why),
                DeliveryStatus::Failed,
                None,
            )
            .await?;
        return Ok(());
    };

    // Opened once per instance (the sealer remembers); a key service that fails us leaves
    // the claim to run out and the message to come back, like any other store error.
    let context = secret_context(account_id, endpoint_id);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for s in active_secrets(&ep.secrets, now) {
        let plain = d.sealer.open(&s.sealed, &context).await?;
        keys.extend(decode_secret(&plain).ok());
    }
    let timestamp = now.div_euclid(1_000);
    let headers = [
        ("webhook-id", event.event_id.clone()),
        ("webhook-timestamp", timestamp.to_string()),
        (
            "webhook-signature",
            signature_header(&keys, &event.event_id, timestamp, event.body.as_bytes()),
        ),
    ];
    let out = d
        .sender
        .post(&ep.url, &headers, event.body.clone().into_bytes())
        .await;
    let verdict = judge(n - del.schedule_base, out.result);
    let (status, next_ms) = match verdict {
        Verdict::Delivered => (DeliveryStatus::Succeeded, None),
        Verdict::Retry { after_secs } => (
            DeliveryStatus::Pending,
            Some(now + i64::try_from(after_secs).unwrap_or(i64::MAX / 4) * 1_000),
        ),
        Verdict::Failed | Verdict::Gone => (DeliveryStatus::Failed, None),
    };
    let status_code = match out.result {
        AttemptResult::Status { code, .. } => Some(code),
        AttemptResult::NoResponse => None,
    };
    tracing::info!(
        endpoint_id,
        event_id,
        attempt = n,
        status_code,
        latency_ms = out.latency_ms,
        outcome = status.as_str(),
        "webhook attempt"
    );
    let log = AttemptLog {
        n,
        at_ms: now,
        status_code,
        latency_ms: out.latency_ms,
        response_body: out.body,
        error: out.error,
        trigger: trigger.to_string(),
    };
    d.faults.check("dispatch.before_record")?;
    if !d
        .deliveries
        .record(endpoint_id, event_id, &log, status, next_ms)
        .await?
    {
        return Ok(());
    }
    endpoint_health(d, ep, verdict, now).await?;
    if let Some(at) = next_ms {
        schedule(d, account_id, endpoint_id, event_id, n + 1, at).await?;
    }
    Ok(())
}

/// The endpoint's failure clock: started by a failure, stopped by a success; five days of
/// nothing but failures, or one 410, disable it, and the account is told by an event.
async fn endpoint_health(
    d: &Services,
    ep: &EndpointRecord,
    verdict: Verdict,
    now: i64,
) -> Result<(), PipelineError> {
    let (account_id, endpoint_id) = (ep.account_id.as_str(), ep.endpoint_id.as_str());
    let disable_for = match verdict {
        Verdict::Delivered => {
            if ep.failing_since_ms.is_some()
                || ep.last_success_ms.is_none_or(|t| now - t > 3_600_000)
            {
                d.endpoints
                    .mark_healthy(account_id, endpoint_id, now)
                    .await?;
            }
            None
        }
        Verdict::Gone => Some("gone"),
        Verdict::Retry { .. } | Verdict::Failed => match ep.failing_since_ms {
            None => {
                d.endpoints
                    .mark_failing(account_id, endpoint_id, now)
                    .await?;
                None
            }
            Some(since) if now - since >= DISABLE_AFTER_FAILING_MS => Some("failing"),
            Some(_) => None,
        },
    };
    if let Some(reason) = disable_for {
        let disabled = match d
            .endpoints
            .disable(account_id, endpoint_id, reason, now)
            .await?
        {
            Some(rec) => {
                tracing::warn!(endpoint_id, reason, "webhook endpoint disabled");
                Some(rec)
            }
            // Disabled already, for this reason: a crash may have lost the notice. Its id is
            // derived from the disable time, so sending it again is deduplicated.
            None => d
                .endpoints
                .get(account_id, endpoint_id)
                .await?
                .filter(|e| !e.enabled && e.disabled_reason.as_deref() == Some(reason)),
        };
        if let Some(rec) = disabled {
            events::emit(d, &[events::endpoint_disabled(&rec)]).await?;
        }
    }
    Ok(())
}
