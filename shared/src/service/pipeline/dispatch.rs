//! Dispatch: tasks reach the queue a window at a time (the account's concurrency), so a
//! 10,000-task batch never puts 10,000 messages on the queue at once. Each task that ends
//! frees its slot and dispatches the next, which finds that slot free (the wake-up: no task
//! waits on the queue asking again for a slot while its own batch's tasks run); the sweeper
//! tops the window up if a dispatch was lost.

use super::{PipelineError, TaskMessage};
use crate::domain::task::dispatch_window;
use crate::ports::queue::QueueName;
use crate::ports::records::BatchRecord;
use crate::service::Services;

pub async fn send_runs(
    svc: &Services,
    batch: &BatchRecord,
    from: u32,
    to: u32,
    delay_secs: u64,
) -> Result<(), PipelineError> {
    send(svc, batch, from, to, delay_secs, false).await
}

/// The first message of task `idx`, carrying the slot of the task that ended before it.
pub async fn hand_over(svc: &Services, batch: &BatchRecord, idx: u32) -> Result<(), PipelineError> {
    send(svc, batch, idx, idx + 1, 0, true).await
}

async fn send(
    svc: &Services,
    batch: &BatchRecord,
    from: u32,
    to: u32,
    delay_secs: u64,
    slot: bool,
) -> Result<(), PipelineError> {
    let not_before_ms = svc.now_ms() + (delay_secs as i64) * 1_000;
    let msgs: Vec<(TaskMessage, u64)> = (from..to)
        .map(|idx| {
            let m = TaskMessage::Run {
                account_id: batch.account_id.clone(),
                batch_id: batch.batch_id.clone(),
                idx,
                not_before_ms,
                version: Some(0),
                slot,
            };
            (m, delay_secs)
        })
        .collect();
    svc.enqueue(QueueName::Tasks, &msgs).await?;
    Ok(())
}

/// Claims the next `want` undispatched tasks of a batch: the range `[from, to)` that this
/// caller now owns, or `None` when none are left. One atomic add while `want` are left (no
/// read: `batch` may be a copy read long before); the tail by compare-and-set from a fresh
/// read, retried on a concurrent claim.
async fn claim(
    svc: &Services,
    batch: &BatchRecord,
    want: u32,
) -> Result<Option<(u32, u32)>, PipelineError> {
    let (account_id, batch_id) = (&batch.account_id, &batch.batch_id);
    // `next_dispatch` only grows: what the copy says is left is at least what is left (the
    // claim's own condition checks the rest), and a copy that says none is left is right.
    let left = batch.task_count.saturating_sub(batch.next_dispatch);
    if want <= left {
        let now = svc.now_ms();
        if let Some(range) = svc
            .batches
            .claim_next(account_id, batch_id, want, batch.task_count, now)
            .await?
        {
            return Ok(Some(range));
        }
    }
    if want <= 1 || left == 0 {
        // None left: nothing to claim, and nothing to read.
        return Ok(None);
    }
    let Some(fresh) = svc.batches.get(account_id, batch_id).await? else {
        return Ok(None);
    };
    let mut cur = fresh.next_dispatch;
    for _ in 0..10 {
        let to = cur.saturating_add(want).min(batch.task_count);
        if to <= cur {
            return Ok(None);
        }
        if svc
            .batches
            .advance_dispatch(&batch.account_id, &batch.batch_id, cur, to, svc.now_ms())
            .await?
        {
            return Ok(Some((cur, to)));
        }
        match svc.batches.get(&batch.account_id, &batch.batch_id).await? {
            Some(b) => cur = b.next_dispatch,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Claims the batch's next `want` undispatched tasks (fewer near the end), unless the batch
/// (as the copy says) was cancelled: their range, for the caller to send.
pub async fn claim_many(
    svc: &Services,
    batch: &BatchRecord,
    want: u32,
) -> Result<Option<(u32, u32)>, PipelineError> {
    if want == 0 || batch.cancel_requested {
        return Ok(None);
    }
    claim(svc, batch, want).await
}

/// Claims the batch's next undispatched task, unless the batch (as the copy says) was
/// cancelled: its index, for the caller to send.
pub async fn claim_one(svc: &Services, batch: &BatchRecord) -> Result<Option<u32>, PipelineError> {
    if batch.cancel_requested {
        return Ok(None);
    }
    Ok(claim(svc, batch, 1).await?.map(|(from, _)| from))
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
    match claim(svc, batch, want).await? {
        Some((from, to)) => {
            svc.faults.check("dispatch.after_claim")?;
            send_runs(svc, batch, from, to, 0).await?;
            Ok(to - from)
        }
        None => Ok(0),
    }
}

/// The first window of a batch whose task records are all written. The window is the
/// account's concurrency: `max_concurrency` if the caller knows it, else read. (A stale
/// figure only sizes the window; the slot each task takes is what bounds concurrency.)
pub async fn start(
    svc: &Services,
    batch: &BatchRecord,
    max_concurrency: Option<u32>,
) -> Result<(), PipelineError> {
    let max = match max_concurrency {
        Some(m) => m,
        None => svc
            .accounts
            .get(&batch.account_id)
            .await?
            .map(|a| a.max_concurrency)
            .unwrap_or(1),
    };
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
    let Some((from, to)) = claim(svc, batch, batch.task_count).await? else {
        return Ok(());
    };
    let msgs: Vec<(TaskMessage, u64)> = (from..to)
        .step_by(100)
        .map(|start| {
            let m = TaskMessage::EndRange {
                account_id: batch.account_id.clone(),
                batch_id: batch.batch_id.clone(),
                from: start,
                to: (start + 100).min(to),
                outcome,
            };
            (m, 0)
        })
        .collect();
    svc.enqueue(QueueName::Tasks, &msgs).await?;
    Ok(())
}
