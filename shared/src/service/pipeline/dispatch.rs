//! Dispatch: tasks reach the queue a window at a time (twice the account's concurrency), so a
//! 10,000-task batch never puts 10,000 messages on the queue at once. Each task that ends
//! dispatches the next; the sweeper tops the window up if a dispatch was lost.

use super::{PipelineError, TaskMessage};
use crate::adapters::records::BatchRecord;
use crate::domain::task::dispatch_window;
use crate::service::Services;

pub async fn send_runs(
    svc: &Services,
    batch: &BatchRecord,
    from: u32,
    to: u32,
    delay_secs: u64,
) -> Result<(), PipelineError> {
    let not_before_ms = svc.now_ms() + (delay_secs as i64) * 1_000;
    let bodies: Vec<(String, u64)> = (from..to)
        .map(|idx| {
            let m = TaskMessage::Run {
                account_id: batch.account_id.clone(),
                batch_id: batch.batch_id.clone(),
                idx,
                not_before_ms,
            };
            (serde_json::to_string(&m).unwrap_or_default(), delay_secs)
        })
        .collect();
    svc.store
        .send_batch(&svc.store.config().queues.tasks, &bodies)
        .await?;
    Ok(())
}

/// Claims and sends up to `want` more tasks of the batch. Returns how many were sent.
pub async fn dispatch(
    svc: &Services,
    batch: &BatchRecord,
    want: u32,
) -> Result<u32, PipelineError> {
    if want == 0 || batch.cancel_requested {
        return Ok(0);
    }
    match svc.store.claim_dispatch(batch, want).await? {
        Some((from, to)) => {
            svc.store.faults.check("dispatch.after_claim")?;
            send_runs(svc, batch, from, to, 0).await?;
            Ok(to - from)
        }
        None => Ok(0),
    }
}

/// The first window of a batch whose task records are all written.
pub async fn start(svc: &Services, batch: &BatchRecord) -> Result<(), PipelineError> {
    let account = svc.store.get_account(&batch.account_id).await?;
    let max = account.map(|a| a.max_concurrency).unwrap_or(1);
    let window = dispatch_window(max, batch.task_count);
    let already = batch.next_dispatch;
    dispatch(svc, batch, window.saturating_sub(already)).await?;
    Ok(())
}

/// Claims every task not yet dispatched and ends them with `outcome` through the task queue,
/// a hundred per message (cancellation, queue time-out).
pub async fn end_undispatched(
    svc: &Services,
    batch: &BatchRecord,
    outcome: crate::domain::task::Outcome,
) -> Result<(), PipelineError> {
    let store = &svc.store;
    let Some((from, to)) = store.claim_dispatch_all(batch).await? else {
        return Ok(());
    };
    let bodies: Vec<(String, u64)> = (from..to)
        .step_by(100)
        .map(|start| {
            let m = TaskMessage::EndRange {
                account_id: batch.account_id.clone(),
                batch_id: batch.batch_id.clone(),
                from: start,
                to: (start + 100).min(to),
                outcome,
            };
            (serde_json::to_string(&m).unwrap_or_default(), 0)
        })
        .collect();
    store
        .send_batch(&store.config().queues.tasks, &bodies)
        .await?;
    Ok(())
}
