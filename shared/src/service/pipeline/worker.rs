//! The task worker: advances one task per message. Every step reads the task's state first
//! and writes conditionally, so a duplicate, out-of-order or re-driven message finds nothing
//! to do or finishes what a dead worker left half done.

use super::{dispatch, Pipeline, PipelineError, SettleMessage, TaskMessage};
use crate::domain::batch::TaskStatus;
use crate::domain::ledger::{next_entry, EntryKind};
use crate::domain::money::Credits;
use crate::domain::task::{all_ended, retry_delay_secs, task_counts, Outcome};
use crate::ports::provider::{JobRequest, JobState, ProviderError, Route};
use crate::ports::queue::QueueName;
use crate::ports::records::{BatchRecord, LedgerRecord, TaskRecord};
use crate::ports::store::{Change, EndMark, MoneyMove};
use crate::service::money::{self, Moved};
use crate::service::ServiceError;

/// How long a task waits before asking again for a concurrency slot.
pub const SLOT_WAIT_SECS: u64 = 15;

fn poll_interval_secs(model: crate::domain::pricing::Model) -> u64 {
    match model {
        crate::domain::pricing::Model::Sora2 => 5,
        crate::domain::pricing::Model::VeoPro => 10,
    }
}

pub async fn handle(p: &Pipeline, msg: TaskMessage) -> Result<(), PipelineError> {
    match msg {
        TaskMessage::Run {
            account_id,
            batch_id,
            idx,
            not_before_ms,
        } => {
            let now = p.svc.now_ms();
            if not_before_ms > now + 1_000 {
                // Early (SQS caps delays at 15 minutes): go round again.
                let delay = ((not_before_ms - now) / 1_000).max(1) as u64;
                return requeue(p, &account_id, &batch_id, idx, delay).await;
            }
            run(p, &account_id, &batch_id, idx).await
        }
        TaskMessage::EndRange {
            account_id,
            batch_id,
            from,
            to,
            outcome,
        } => {
            let Some(batch) = p.svc.batches.get(&account_id, &batch_id).await? else {
                return Ok(());
            };
            for idx in from..to.min(batch.task_count) {
                if let Some(task) = p.svc.tasks.get(&batch_id, idx).await? {
                    if !task.status.is_terminal() {
                        let why = match outcome {
                            Outcome::Cancelled => "cancelled by the customer before it started",
                            _ => "waited longer than the queue limit",
                        };
                        end(
                            p,
                            &batch,
                            task,
                            outcome,
                            Some((outcome.as_str(), why)),
                            None,
                        )
                        .await?;
                    }
                }
            }
            Ok(())
        }
    }
}

async fn requeue(
    p: &Pipeline,
    account_id: &str,
    batch_id: &str,
    idx: u32,
    delay_secs: u64,
) -> Result<(), PipelineError> {
    let m = TaskMessage::Run {
        account_id: account_id.to_string(),
        batch_id: batch_id.to_string(),
        idx,
        not_before_ms: p.svc.now_ms() + (delay_secs as i64) * 1_000,
    };
    p.svc.enqueue(QueueName::Tasks, &[(m, delay_secs)]).await?;
    Ok(())
}

async fn run(
    p: &Pipeline,
    account_id: &str,
    batch_id: &str,
    idx: u32,
) -> Result<(), PipelineError> {
    let svc = &p.svc;
    let Some(batch) = svc.batches.get(account_id, batch_id).await? else {
        return Ok(());
    };
    let Some(mut task) = svc.tasks.get(batch_id, idx).await? else {
        return Ok(());
    };
    if task.status.is_terminal() {
        return Ok(());
    }
    // A dead worker may have recorded the end but not the task's own record: finish it.
    if let Some(outcome) = recorded_end(p, &task).await? {
        return end(p, &batch, task, outcome, None, None).await;
    }
    let now = p.svc.now_ms();
    if task.deadline_ms <= now {
        cancel_upstream(p, &task).await;
        return end(
            p,
            &batch,
            task,
            Outcome::TimedOut,
            Some(("deadline_exceeded", "the task passed its deadline")),
            None,
        )
        .await;
    }
    if batch.cancel_requested {
        cancel_upstream(p, &task).await;
        return end(
            p,
            &batch,
            task,
            Outcome::Cancelled,
            Some(("cancelled", "cancelled by the customer")),
            None,
        )
        .await;
    }
    if task.status == TaskStatus::Queued {
        let Some(account) = svc.accounts.get(account_id).await? else {
            return Ok(());
        };
        if !svc
            .accounts
            .acquire_slot(account_id, account.max_concurrency)
            .await?
        {
            let jitter = svc.random.up_to(SLOT_WAIT_SECS);
            return requeue(p, account_id, batch_id, idx, SLOT_WAIT_SECS + jitter).await;
        }
        svc.faults.check("worker.after_slot")?;
        let route = p.providers.route(task.model);
        let mut started = task.clone();
        started.status = TaskStatus::Running;
        started.slot = true;
        started.started_ms = Some(now);
        started.updated_ms = now;
        started.deadline_ms = now + svc.settings.deadlines.run_ms(task.model);
        started.provider = route.map(|r| r.provider.name().to_string());
        started.provider_model = route.map(|r| r.provider_model.clone());
        if !svc.tasks.save(&started, TaskStatus::Queued).await? {
            svc.accounts.release_slot(account_id).await?;
            return Ok(());
        }
        svc.progress.mark_started(batch_id, idx).await?;
        task = started;
    }
    match task.provider_job_id.clone() {
        None => submit(p, &batch, task).await,
        Some(job) => poll(p, &batch, task, &job).await,
    }
}

async fn recorded_end(p: &Pipeline, task: &TaskRecord) -> Result<Option<Outcome>, PipelineError> {
    let shard = p
        .svc
        .progress
        .shard(&task.batch_id, crate::domain::task::shard_of(task.idx))
        .await?;
    Ok(shard.and_then(|s| s.ended.get(&task.idx.to_string()).copied()))
}

fn job_request(p: &Pipeline, task: &TaskRecord) -> Result<(Route, JobRequest), PipelineError> {
    let route = p.providers.route(task.model).cloned().ok_or_else(|| {
        PipelineError::Other(format!("no provider configured for {}", task.model))
    })?;
    let req = JobRequest {
        task_id: task.task_id.clone(),
        provider_model: task
            .provider_model
            .clone()
            .unwrap_or_else(|| route.provider_model.clone()),
        prompt: task.spec.prompt.clone(),
        duration_seconds: task.spec.duration_seconds,
        aspect_ratio: task.spec.aspect_ratio.clone(),
        resolution: task.spec.resolution.clone(),
        attempt: task.attempts,
        now_ms: p.svc.now_ms(),
    };
    Ok((route, req))
}

async fn submit(
    p: &Pipeline,
    batch: &BatchRecord,
    mut task: TaskRecord,
) -> Result<(), PipelineError> {
    let (route, req) = job_request(p, &task)?;
    match route.provider.submit(&req).await {
        Ok(job) => {
            task.provider_job_id = Some(job);
            task.updated_ms = p.svc.now_ms();
            if p.svc.tasks.save(&task, TaskStatus::Running).await? {
                requeue(
                    p,
                    &task.account_id,
                    &task.batch_id,
                    task.idx,
                    poll_interval_secs(task.model),
                )
                .await?;
            }
            Ok(())
        }
        Err(e) => provider_error(p, batch, task, e).await,
    }
}

async fn poll(
    p: &Pipeline,
    batch: &BatchRecord,
    task: TaskRecord,
    job: &str,
) -> Result<(), PipelineError> {
    let (route, _) = job_request(p, &task)?;
    match route.provider.poll(job, p.svc.now_ms()).await {
        Ok(JobState::Running { .. }) => {
            requeue(
                p,
                &task.account_id,
                &task.batch_id,
                task.idx,
                poll_interval_secs(task.model),
            )
            .await
        }
        Ok(JobState::Succeeded(video)) => {
            let bytes = match route.provider.download(job, &video).await {
                Ok(b) => b,
                Err(e) => return provider_error(p, batch, task, e).await,
            };
            if bytes.len() < 8 {
                return end(
                    p,
                    batch,
                    task,
                    Outcome::Failed,
                    Some(("invalid_output", "the provider returned an empty video")),
                    None,
                )
                .await;
            }
            let key = format!(
                "accounts/{}/videos/{}/{}.mp4",
                task.account_id, task.batch_id, task.task_id
            );
            // Tagged with the retention the bucket's lifecycle rules expire it by.
            let tags = format!("retention-days={}", batch.retention_days);
            p.svc
                .blobs
                .put(&key, bytes, "video/mp4", Some(&tags))
                .await?;
            p.svc.faults.check("worker.after_video")?;
            end(p, batch, task, Outcome::Succeeded, None, Some(key)).await
        }
        Ok(JobState::Failed { code, message }) => {
            end(
                p,
                batch,
                task,
                Outcome::Failed,
                Some((&code, &message)),
                None,
            )
            .await
        }
        Ok(JobState::Rejected { reason }) => {
            end(
                p,
                batch,
                task,
                Outcome::Rejected,
                Some(("content_policy", &reason)),
                None,
            )
            .await
        }
        Err(e) => provider_error(p, batch, task, e).await,
    }
}

async fn provider_error(
    p: &Pipeline,
    batch: &BatchRecord,
    mut task: TaskRecord,
    e: ProviderError,
) -> Result<(), PipelineError> {
    match e {
        ProviderError::Retryable {
            retry_after_secs,
            message,
        } => {
            let now = p.svc.now_ms();
            task.attempts += 1;
            match retry_delay_secs(
                task.attempts,
                retry_after_secs,
                p.svc.random.unit(),
                task.deadline_ms - now,
            ) {
                Some(delay) => {
                    task.updated_ms = now;
                    task.error_message = Some(message.chars().take(300).collect());
                    if p.svc.tasks.save(&task, TaskStatus::Running).await? {
                        requeue(p, &task.account_id, &task.batch_id, task.idx, delay).await?;
                    }
                    Ok(())
                }
                None => {
                    cancel_upstream(p, &task).await;
                    let msg =
                        format!("the provider stayed unavailable until the deadline: {message}");
                    end(
                        p,
                        batch,
                        task,
                        Outcome::Failed,
                        Some(("provider_unavailable", &msg)),
                        None,
                    )
                    .await
                }
            }
        }
        ProviderError::Rejected { reason } => {
            end(
                p,
                batch,
                task,
                Outcome::Rejected,
                Some(("content_policy", &reason)),
                None,
            )
            .await
        }
        ProviderError::Permanent { code, message } => {
            end(
                p,
                batch,
                task,
                Outcome::Failed,
                Some((&code, &message)),
                None,
            )
            .await
        }
    }
}

/// Best effort: a job we no longer want should stop costing upstream.
async fn cancel_upstream(p: &Pipeline, task: &TaskRecord) {
    if let (Some(job), Some(route)) = (&task.provider_job_id, p.providers.route(task.model)) {
        if let Err(e) = route.provider.cancel(job).await {
            tracing::warn!(task_id = %task.task_id, error = %e, "could not cancel the provider job");
        }
    }
}

/// Ends a task, exactly once in money and counts however often it runs:
/// 1. the end mark in the task's progress shard — for failed and timed-out tasks in the same
///    transaction as the refund (balance, ledger entry, the batch's refund tally);
/// 2. the task record; 3. its concurrency slot; 4. settlement if it was the last; 5. the next
///    task of the batch.
pub async fn end(
    p: &Pipeline,
    batch: &BatchRecord,
    task: TaskRecord,
    outcome: Outcome,
    error: Option<(&str, &str)>,
    video_key: Option<String>,
) -> Result<(), PipelineError> {
    let svc = &p.svc;
    let shard_no = crate::domain::task::shard_of(task.idx);
    let shard = svc.progress.shard(&task.batch_id, shard_no).await?;
    let shard = shard.as_ref();
    let key = task.idx.to_string();
    let recorded = shard.and_then(|s| s.ended.get(&key).copied());
    let was_started = shard.is_some_and(|s| s.started.contains_key(&key));
    // The outcome that counts is the one recorded first.
    let outcome = match recorded {
        Some(o) => o,
        None => {
            let mark = EndMark {
                batch_id: task.batch_id.clone(),
                idx: task.idx,
                was_started,
                outcome,
            };
            let landed = if outcome.refunded() {
                refund(p, batch, &task, mark).await?
            } else {
                svc.progress.end_mark(&mark).await?
            };
            if !landed {
                // Lost a race (another worker ended or started it): let the message retry.
                return Err(PipelineError::Other(format!(
                    "end of {} raced; retrying",
                    task.task_id
                )));
            }
            outcome
        }
    };
    svc.faults.check("end.after_mark")?;

    let now = p.svc.now_ms();
    let mut done = task.clone();
    done.status = outcome.status();
    done.ended_ms = Some(done.ended_ms.unwrap_or(now));
    done.updated_ms = now;
    done.slot = false;
    if let Some((code, message)) = error {
        done.error_code = Some(code.to_string());
        done.error_message = Some(message.chars().take(500).collect());
    } else if outcome == Outcome::Succeeded {
        done.error_code = None;
        done.error_message = None;
    }
    if video_key.is_some() {
        done.video_key = video_key;
    }
    // Before the task record: a crash after this re-runs `end` (the record is not terminal
    // yet) and re-emits the same ids, which dispatch deduplicates.
    let ended_ms = done.ended_ms.unwrap_or(now);
    let mut events = vec![crate::service::events::task_ended(&done, outcome, ended_ms)];
    if outcome.refunded() {
        events.push(crate::service::events::credits_refunded(
            &done,
            outcome,
            batch.unit_price,
            ended_ms,
        ));
    }
    crate::service::events::emit(svc, &events).await?;
    svc.faults.check("end.after_events")?;
    if svc.tasks.save(&done, task.status).await? && task.slot {
        svc.accounts.release_slot(&task.account_id).await?;
    }
    svc.batches
        .touch(&task.account_id, &task.batch_id, now)
        .await?;
    tracing::info!(task_id = %task.task_id, batch_id = %task.batch_id, outcome = outcome.as_str(), "task ended");

    // Only the end that completes its shard looks at the whole batch.
    let shard_done = svc
        .progress
        .shard(&task.batch_id, shard_no)
        .await?
        .is_some_and(|s| s.counts().ended() == s.size);
    let batch_done = shard_done && {
        let shards = svc.progress.all(&task.batch_id).await?;
        all_ended(&task_counts(
            &shards.iter().map(|s| s.counts()).collect::<Vec<_>>(),
        ))
    };
    if batch_done {
        let m = SettleMessage {
            account_id: task.account_id.clone(),
            batch_id: task.batch_id.clone(),
        };
        svc.enqueue(QueueName::Settle, &[(m, 0)]).await?;
    } else if let Some(fresh) = svc.batches.get(&task.account_id, &task.batch_id).await? {
        dispatch::dispatch(svc, &fresh, 1).await?;
    }
    Ok(())
}

/// The refund of one task's unit: balance, ledger entry (keyed to the task), the batch's
/// refund tally and the task's end mark, in one transaction. False if the mark's condition
/// failed (ended or started meanwhile).
async fn refund(
    p: &Pipeline,
    batch: &BatchRecord,
    task: &TaskRecord,
    mark: EndMark,
) -> Result<bool, PipelineError> {
    let unit = batch.unit_price;
    let moved = money::commit(&p.svc, &task.account_id, None, |account, now| {
        let next = next_entry(account.book(), unit, now)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let entry = LedgerRecord {
            account_id: task.account_id.clone(),
            seq: next.seq,
            created_ms: next.created_ms,
            kind: EntryKind::Refund,
            amount: unit,
            balance_after: next.balance_after,
            batch_id: Some(task.batch_id.clone()),
            task_id: Some(task.task_id.clone()),
            request_id: None,
            reason: Some(mark.outcome.as_str().to_string()),
            actor: None,
            pack: None,
            price_paid_usd_cents: None,
            refers_to: None,
        };
        let mv = MoneyMove {
            account_id: task.account_id.clone(),
            expected: account.book(),
            require_active: false,
            entry,
            held_delta: -unit,
            granted_delta: Credits::ZERO,
            charged_delta: Credits::ZERO,
            refunded_delta: unit,
            creates: vec![],
            changes: vec![
                Change::EndMark(mark.clone()),
                Change::BatchRefund {
                    account_id: task.account_id.clone(),
                    batch_id: task.batch_id.clone(),
                    amount: unit,
                },
            ],
        };
        Ok((mv, ()))
    })
    .await?;
    match moved {
        Moved::Committed(()) => {
            tracing::info!(task_id = %task.task_id, amount = unit.value(), "refunded");
            Ok(true)
        }
        Moved::Replayed(_) | Moved::Duplicate(_) => Ok(false),
    }
}
