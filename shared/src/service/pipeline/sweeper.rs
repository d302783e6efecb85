//! The sweeper (every minute): makes every unfinished batch progress whatever crashed or
//! whatever messages were lost.
//!
//! Per open batch: finish writing its task records if their writer died; settle it if every
//! task ended; end undispatched tasks that outwaited the queue limit or were cancelled; top
//! the dispatch window up; time out in-flight tasks past their deadline; start a new message
//! chain for a task whose chain broke (its `next_check_ms` promise lapsed). Per account:
//! correct a leaked concurrency-slot count.
//!
//! Dead letters are left where they are: the batch-level checks re-drive the work they stood
//! for, and the messages stay for the alarm that watches each dead-letter queue and for an
//! operator to read and redrive (docs/OPERATIONS.md).
//!
//! A pass has a budget (batches and time, well inside the function's timeout) and starts
//! where the last one stopped, so every open batch is swept within a few passes however many
//! there are.

use super::{dispatch, worker, Pipeline, PipelineError, SettleMessage, TaskMessage};
use crate::domain::batch::{BatchStatus, TaskStatus};
use crate::domain::task::{all_ended, dispatch_window, task_counts, Outcome};
use crate::ports::queue::QueueName;
use crate::ports::records::TaskRecord;
use std::collections::{BTreeMap, BTreeSet};

/// A task whose chain made no promise (`next_check_ms`) and that nobody touched this long
/// since it was dispatched is taken to have lost its message.
pub const STALL_MS: i64 = 5 * 60_000;

/// How long past its promised check a chain may be late before it is taken for lost.
pub const LATE_GRACE_MS: i64 = 60_000;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub batches: u32,
    pub recovered: u32,
    pub settle_requests: u32,
    pub timed_out: u32,
    pub redriven: u32,
    pub dispatched: u32,
    pub slot_corrections: u32,
    pub errors: u32,
    /// Open batches this pass left for the next one (its budget ran out).
    pub deferred: u32,
}

/// True when a task's message chain has broken: it is past the check its chain promised
/// (or, before any promise, untouched for `STALL_MS` since it was dispatched).
pub fn chain_lost(task: &TaskRecord, dispatched_ms: i64, now: i64) -> bool {
    if task.next_check_ms > 0 {
        task.next_check_ms + LATE_GRACE_MS <= now
    } else {
        task.updated_ms.max(dispatched_ms) + STALL_MS <= now
    }
}

pub async fn sweep(p: &Pipeline) -> Result<SweepReport, PipelineError> {
    let mut report = SweepReport::default();
    let started = p.svc.now_ms();
    let mut open = p.svc.batches.open().await?;
    // Start where the last pass's budget ended: every batch is reached within a few passes.
    let budget = p.svc.settings.sweep_batches_per_pass.max(1);
    if open.len() > budget {
        let pass = usize::try_from(started / 60_000).unwrap_or(0);
        let k = pass.wrapping_mul(budget) % open.len();
        open.rotate_left(k);
    }
    let mut slots_in_use: BTreeMap<String, u32> = BTreeMap::new();
    // Accounts whose slot count this pass cannot trust (a batch of theirs went unswept).
    let mut partial: BTreeSet<String> = BTreeSet::new();
    for (k, (account_id, batch_id)) in open.iter().enumerate() {
        let out_of_time = p.svc.now_ms() - started > p.svc.settings.sweep_budget_ms;
        if k >= budget || out_of_time {
            report.deferred += 1;
            partial.insert(account_id.clone());
            continue;
        }
        report.batches += 1;
        if let Err(e) = sweep_batch(p, account_id, batch_id, &mut report, &mut slots_in_use).await {
            report.errors += 1;
            partial.insert(account_id.clone());
            tracing::error!(batch_id, error = %e, "sweeping a batch failed; next sweep retries");
        }
    }
    slots_in_use.retain(|a, _| !partial.contains(a));
    correct_slots(p, &slots_in_use, &mut report).await?;
    // After the time-outs above, which may be the platform failures it counts.
    if let Err(e) = crate::service::sla::watch_incidents(&p.svc).await {
        report.errors += 1;
        tracing::error!(error = %e, "incident watch failed; next sweep retries");
    }
    tracing::info!(?report, "sweep done");
    Ok(report)
}

async fn sweep_batch(
    p: &Pipeline,
    account_id: &str,
    batch_id: &str,
    report: &mut SweepReport,
    slots_in_use: &mut BTreeMap<String, u32>,
) -> Result<(), PipelineError> {
    let svc = &p.svc;
    let Some(mut batch) = svc.batches.get(account_id, batch_id).await? else {
        return Ok(());
    };
    slots_in_use.entry(account_id.to_string()).or_insert(0);
    if batch.status == BatchStatus::Accepted {
        if super::materialize::recover(&p.svc, &batch).await? {
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

    let ended: BTreeSet<u32> = shards
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
        // A slot is in use when a record holds it, or may be while a message carries it to a
        // task not yet started: counted for every dispatched task no step has touched yet
        // (version 0), so a hand-over in flight is never taken for a leak. An upper bound:
        // it only delays a correction until those tasks have run a step.
        if task.slot || (task.status == TaskStatus::Queued && task.version == 0) {
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
        if chain_lost(&task, batch.dispatched_ms, now) {
            stalled.push(task);
        }
    }
    for mut task in stalled {
        // A new chain: the task's new version is its token, so a slow old chain that wakes
        // up finds its messages stale and stops. Never two chains for one task.
        let read_at = task.version;
        task.version = read_at + 1;
        task.next_check_ms = now + worker::CHECK_AHEAD_MS;
        task.updated_ms = now;
        if !svc.tasks.save(&task, read_at).await? {
            continue;
        }
        let m = TaskMessage::Run {
            account_id: account_id.into(),
            batch_id: batch_id.into(),
            idx: task.idx,
            not_before_ms: 0,
            version: Some(task.version),
            // A slot handed over to a chain that was lost stays uncounted, and the slot
            // correction below gives it back.
            slot: false,
        };
        svc.enqueue(QueueName::Tasks, &[(m, 0)]).await?;
        report.redriven += 1;
    }
    Ok(())
}

/// How long a slot surplus must stand, unchanged, before it is corrected: longer than a task
/// message's visibility timeout (360 s, template.yaml). A task whose end died after its end
/// mark still holds its slot in its record but reads as ended, so it is not counted; its
/// redelivered end finishes within that time and passes the slot on or gives it back.
pub const LEAK_STANDS_MS: i64 = 7 * 60_000;

/// A slot is leaked when a worker died between taking it and recording it (or between
/// freeing the task and the slot, or a handed-over slot's message was lost). Correct the
/// count only when the same surplus has stood for `LEAK_STANDS_MS` (the note is
/// `running:counted@first_seen_ms`), so an acquisition in flight, or an end awaiting its
/// redelivery, is never mistaken for a leak.
async fn correct_slots(
    p: &Pipeline,
    in_use: &BTreeMap<String, u32>,
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
        let now = p.svc.now_ms();
        let since = account
            .slot_audit
            .as_deref()
            .and_then(|a| a.split_once('@'))
            .filter(|(s, _)| *s == seen)
            .and_then(|(_, ms)| ms.parse::<i64>().ok());
        match since {
            Some(first) if now - first >= LEAK_STANDS_MS => {}
            // The same surplus, not yet long enough.
            Some(_) => continue,
            None => {
                p.svc
                    .accounts
                    .note_slot_audit(account_id, &format!("{seen}@{now}"))
                    .await?;
                continue;
            }
        }
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
    }
    Ok(())
}
