//! Lambda's SQS event-source semantics, for running the functions without AWS: receive up to
//! ten messages per invocation, hand them to the same handler the Lambda runs, delete the
//! ones it did not report as failed, and leave the failed ones to come back after their
//! visibility timeout (or at once, when a test says so).
//!
//! Messages that carry `not_before_ms` are only handed over once `now_ms` reaches it; tests
//! run with SQS delays off and move a manual clock instead of sleeping.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::ports::queue::QueueName;
use shared::ports::{Queue, StoreError};
use std::future::Future;

pub struct Round {
    /// Messages handed to the handler.
    pub handled: usize,
    /// Handler calls (Lambda invocations), up to ten messages each.
    pub invocations: usize,
    /// Of those, reported failed.
    pub failed: usize,
    /// Received but not yet due: (receipt handle, due time). With manual time these are
    /// parked invisible for 11 hours; the caller makes each visible again when it is due.
    pub deferred: Vec<(String, i64)>,
}

fn not_before(body: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("not_before_ms").and_then(|n| n.as_i64()))
}

fn due(body: &str, now_ms: i64) -> bool {
    not_before(body).is_none_or(|nb| nb <= now_ms)
}

/// How often each message (by body) was received before it was due. Parking an early message
/// is this pump's stand-in for an SQS delay, which in AWS hands the message out once; those
/// receives are not redeliveries, so the receive count the handler sees leaves them out (a
/// worker claims a redelivered step with an extra write).
static EARLY: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, u32>>> =
    std::sync::LazyLock::new(Default::default);

fn early_receives() -> std::sync::MutexGuard<'static, std::collections::HashMap<String, u32>> {
    EARLY.lock().unwrap_or_else(|p| p.into_inner())
}

/// One round over everything currently visible on the queue, one invocation at a time.
/// `retry_failed_now`: make failed messages visible again at once (tests), instead of after
/// the queue's visibility timeout (Lambda).
pub async fn pump_round<F, Fut>(
    queue: &dyn Queue,
    name: QueueName,
    now_ms: i64,
    retry_failed_now: bool,
    wait_secs: i32,
    handler: F,
) -> Result<Round, StoreError>
where
    F: Fn(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    pump_round_in(queue, name, now_ms, retry_failed_now, wait_secs, 1, handler).await
}

/// The same with up to `instances` invocations running at once, as Lambda runs concurrent
/// instances of a function behind one queue.
pub async fn pump_round_in<F, Fut>(
    queue: &dyn Queue,
    name: QueueName,
    now_ms: i64,
    retry_failed_now: bool,
    wait_secs: i32,
    instances: usize,
    handler: F,
) -> Result<Round, StoreError>
where
    F: Fn(SqsEvent) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    let mut received = Vec::new();
    for i in 0..1_000 {
        let batch = queue
            .receive(name, if i == 0 { wait_secs } else { 0 })
            .await?;
        if batch.is_empty() {
            break;
        }
        received.extend(
            batch
                .into_iter()
                .map(|m| (m.receipt, m.body, m.receive_count)),
        );
    }
    let (ready, later): (Vec<_>, Vec<_>) = received
        .into_iter()
        .partition(|(_, body, _)| due(body, now_ms));
    let ready: Vec<_> = {
        let mut early = early_receives();
        for (_, body, _) in &later {
            *early.entry(body.clone()).or_default() += 1;
        }
        ready
            .into_iter()
            .map(|(receipt, body, receives)| {
                let parked = early.remove(&body).unwrap_or(0);
                let receives = receives.saturating_sub(parked).max(1);
                (receipt, body, receives)
            })
            .collect()
    };
    let mut round = Round {
        handled: 0,
        invocations: 0,
        failed: 0,
        deferred: Vec::new(),
    };
    for (receipt, body, _) in &later {
        if retry_failed_now {
            queue.release(name, receipt, 40_000).await?;
            round
                .deferred
                .push((receipt.clone(), not_before(body).unwrap_or(now_ms)));
        } else {
            let wait = not_before(body)
                .map(|nb| ((nb - now_ms) / 1_000).clamp(1, 43_200))
                .unwrap_or(1);
            queue.release(name, receipt, wait as i32).await?;
        }
    }
    let chunks: Vec<_> = ready.chunks(10).collect();
    for group in chunks.chunks(instances.max(1)) {
        let events = group.iter().map(|chunk| {
            let mut event = SqsEvent::default();
            for (i, (receipt, body, receives)) in chunk.iter().enumerate() {
                let mut m = SqsMessage::default();
                m.message_id = Some(i.to_string());
                m.receipt_handle = Some(receipt.clone());
                m.body = Some(body.clone());
                m.attributes.insert(
                    shared::adapters::lambda::RECEIVE_COUNT.to_string(),
                    receives.to_string(),
                );
                event.records.push(m);
            }
            handler(event)
        });
        let responses = futures_util::future::join_all(events).await;
        for (chunk, resp) in group.iter().zip(responses) {
            let failed: Vec<String> = resp
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone())
                .collect();
            let mut done = Vec::new();
            for (i, (receipt, _, _)) in chunk.iter().enumerate() {
                if failed.contains(&i.to_string()) {
                    round.failed += 1;
                    if retry_failed_now {
                        queue.release(name, receipt, 0).await?;
                    }
                } else {
                    done.push(receipt.clone());
                }
            }
            // As Lambda's event source does: the handled ones in one batch delete.
            queue.delete(name, &done).await?;
            round.handled += chunk.len();
            round.invocations += 1;
        }
    }
    Ok(round)
}
