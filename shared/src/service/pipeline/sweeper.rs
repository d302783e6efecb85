//! The sweeper (every minute): makes every unfinished batch progress whatever crashed or
//! whatever messages were lost.
//!
//! Per open batch: finish writing its task records if their writer died; settle it if every
//! task ended; end undispatched tasks that outwaited the queue limit or were cancelled; top
//! the dispatch window up; time out in-flight tasks past their deadline; re-send the messages
//! of in-flight tasks that made no progress for `STALL_MS`. Per account: correct a leaked
//! concurrency-slot count. Then the dead-letter queues are drained into the log.

use super::{dispatch, worker, Pipeline, PipelineError, SettleMessage, TaskMessage};
use crate::domain::batch::BatchStatus;
use crate::domain::task::{all_ended, dispatch_window, task_counts, Outcome};
use crate::ports::queue::QueueName;
use std::collections::HashMap;

/// A task untouched this long is assumed to have lost its message.
pub const STALL_MS: i64 = 5 * 60_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub batches: u32,
    pub recovered: u32,
    pub settle_requests: u32,
    pub timed_out: u32,
    pub redriven: u32,
    pub dispatched: u32,
    pub slot_corrections: u32,
    pub dead_letters: u32,
    pub errors: u32,
}

pub async fn sweep(p: &Pipeline) -> Result<SweepReport, PipelineError> {
    let mut report = SweepReport::default();
    let mut slots_in_use: HashMap<String, u32> = HashMap::new();
    for (account_id, batch_id) in p.svc.batches.open().await? {
        report.batches += 1;
        if let Err(e) = sweep_batch(p, &account_id, &batch_id, &mut report, &mut slots_in_use).await
        {
            report.errors += 1;
            tracing::error!(batch_id, error = %e, "sweeping a batch failed; next sweep retries");
        }
    }
    correct_slots(p, &slots_in_use, &mut report).await?;
    drain_dead_letters(p, &mut report).await?;
    tracing::info!(?report, "sweep done");
    Ok(report)
}

async fn sweep_batch(
    p: &Pipeline,
    account_id: &str,
    batch_id: &str,
    report: &mut SweepReport,
    slots_in_use: &mut HashMap<String, u32>,
) -> Result<(), PipelineError> {
    let svc = &p.svc;
    let Some(mut batch) = svc.batches.get(account_id, batch_id).await? else {
        return Ok(());
    };
    slots_in_use.entry(account_id.to_string()).or_insert(0);
    if batch.status == BatchStatus::Accepted {
        if crate::service::batches::recover(&p.svc, &batch).await? {
            report.recovered += 1;
        }
        return Ok(());
    }
    let shards = svc.progress.all(batch_id).await?;
    let counts = task_counts(&shards.iter().map(|s| s.counts()).collect::<Vec<_>>());
    if all_ended(&counts) {
        let m = SettleMessage {
            account_id: account_id.into(),
            batch_id: batch_id.into(),
        };
        svc.enqueue(QueueName::Settle, &[(m, 0)]).await?;
        report.settle_requests += 1;
        return Ok(());
    }
    let now = p.svc.now_ms();
    let undispatched = batch.task_count.saturating_sub(batch.next_dispatch);
    let queue_expired = batch.created_ms + svc.settings.deadlines.queue_ms <= now;
    if undispatched > 0 && (batch.cancel_requested || queue_expired) {
        let outcome = if batch.cancel_requested {
            Outcome::Cancelled
        } else {
            Outcome::TimedOut
        };
        dispatch::end_undispatched(svc, &batch, outcome).await?;
        batch = svc
            .batches
            .get(account_id, batch_id)
            .await?
            .unwrap_or(batch);
    }

    let ended: std::collections::HashSet<u32> = shards
        .iter()
        .flat_map(|s| s.ended.keys().filter_map(|k| k.parse::<u32>().ok()))
        .collect();
    let in_flight: Vec<u32> = (0..batch.next_dispatch)
        .filter(|i| !ended.contains(i))
        .collect();
    let max = svc
        .accounts
        .get(account_id)
        .await?
        .map(|a| a.max_concurrency)
        .unwrap_or(1);
    let window = dispatch_window(max, batch.task_count);
    if (in_flight.len() as u32) < window {
        report.dispatched +=
            dispatch::dispatch(svc, &batch, window - in_flight.len() as u32).await?;
    }

    let mut stalled = Vec::new();
    for task in svc.tasks.get_many(batch_id, &in_flight).await? {
        if task.status.is_terminal() {
            continue;
        }
        if task.slot {
            *slots_in_use.entry(account_id.to_string()).or_insert(0) += 1;
        }
        if task.deadline_ms <= now {
            let idx = task.idx;
            match worker::end(
                p,
                &batch,
                task,
                Outcome::TimedOut,
                Some(("deadline_exceeded", "the task passed its deadline")),
                None,
            )
            .await
            {
                Ok(()) => report.timed_out += 1,
                Err(e) => {
                    tracing::warn!(batch_id, idx, error = %e, "time-out raced; next sweep retries")
                }
            }
            continue;
        }
        if task.updated_ms + STALL_MS <= now {
            stalled.push(task.idx);
        }
    }
    for idx in stalled {
        let m = TaskMessage::Run {
            account_id: account_id.into(),
            batch_id: batch_id.into(),
            idx,
            not_before_ms: 0,
        };
        svc.enqueue(QueueName::Tasks, &[(m, 0)]).await?;
        report.redriven += 1;
    }
    Ok(())
}

/// A slot is leaked when a worker died between taking it and recording it (or between
/// freeing the task and the slot). Correct the count only when the same surplus is seen on
/// two sweeps in a row, so an acquisition in flight is never mistaken for a leak.
async fn correct_slots(
    p: &Pipeline,
    in_use: &HashMap<String, u32>,
    report: &mut SweepReport,
) -> Result<(), PipelineError> {
    for (account_id, counted) in in_use {
        let Some(account) = p.svc.accounts.get(account_id).await? else {
            continue;
        };
        if account.running <= *counted {
            continue;
        }
        let seen = format!("{}:{}", account.running, counted);
        if account.slot_audit.as_deref() == Some(seen.as_str()) {
            if p.svc
                .accounts
                .reset_slots(account_id, account.running, *counted)
                .await?
            {
                report.slot_corrections += 1;
                tracing::warn!(
                    account_id,
                    from = account.running,
                    to = counted,
                    "corrected leaked concurrency slots"
                );
            }
        } else {
            p.svc.accounts.note_slot_audit(account_id, &seen).await?;
        }
    }
    Ok(())
}

/// Messages that reached a dead-letter queue are logged (with their ids) and removed: the
/// batch-level checks above re-drive the work they stood for.
async fn drain_dead_letters(p: &Pipeline, report: &mut SweepReport) -> Result<(), PipelineError> {
    for q in [QueueName::TasksDlq, QueueName::SettleDlq] {
        if !p.svc.queue.has(q) {
            continue;
        }
        for _ in 0..10 {
            let msgs = p.svc.queue.receive(q, 0).await?;
            if msgs.is_empty() {
                break;
            }
            for m in msgs {
                tracing::warn!(queue = q.as_str(), message = %m.body, "dead letter accounted for; its batch is re-driven by the sweep");
                p.svc.queue.delete(q, &m.receipt).await?;
                report.dead_letters += 1;
            }
        }
    }
    Ok(())
}
