//! The task worker: advances one task per message. Every step reads the task's state first
//! and writes conditionally, so a duplicate, out-of-order or re-driven message finds nothing
//! to do or finishes what a dead worker left half done.

use super::{dispatch, Pipeline, PipelineError, SettleMessage, TaskMessage};
use crate::domain::batch::TaskStatus;
use crate::domain::export::PART_BYTES;
use crate::domain::ledger::{next_entry, EntryKind};
use crate::domain::money::Credits;
use crate::domain::task::{
    all_ended, poll_interval_secs, retry_delay_secs, shard_of, task_counts, Outcome,
};
use crate::ports::blobs::Upload;
use crate::ports::provider::{JobRequest, JobState, ProviderError, Route, VideoStream};
use crate::ports::queue::QueueName;
use crate::ports::records::{BatchRecord, LedgerRecord, TaskRecord};
use crate::ports::store::{Change, EndMark, MoneyMove};
use crate::service::money::{self, Moved};
use crate::service::{ServiceError, Services};
use std::sync::Arc;

/// How long a task waits before asking again for a concurrency slot.
pub const SLOT_WAIT_SECS: u64 = 15;

/// How far ahead a task's `next_check_ms` promise reaches when renewed: one write covers
/// every poll of the next few minutes.
pub const CHECK_AHEAD_MS: i64 = 4 * 60_000;

/// How long a submission claim holds: longer than a provider call may take.
pub const SUBMIT_CLAIM_MS: i64 = 2 * 60_000;

/// Advances the task a message names. `receive_count` is how often the queue has handed
/// this message out: above one, another worker may have run this very step already (a
/// crash, a visibility timeout that ran out), so the step is first claimed with a write.
pub async fn handle(
    p: &Pipeline,
    msg: TaskMessage,
    receive_count: u32,
) -> Result<(), PipelineError> {
    match msg {
        TaskMessage::Run {
            account_id,
            batch_id,
            idx,
            not_before_ms,
            version,
            slot,
        } => {
            let step = Step {
                account_id: &account_id,
                batch_id: &batch_id,
                idx,
                version,
                slot,
                redelivered: receive_count > 1,
            };
            let now = p.svc.now_ms();
            if not_before_ms > now + 1_000 {
                // Early (SQS caps delays at 15 minutes): go round again.
                let delay = ((not_before_ms - now) / 1_000).max(1) as u64;
                let m = TaskMessage::Run {
                    account_id: account_id.clone(),
                    batch_id: batch_id.clone(),
                    idx,
                    not_before_ms,
                    version,
                    slot,
                };
                p.svc.enqueue(QueueName::Tasks, &[(m, delay)]).await?;
                return Ok(());
            }
            run(p, &step).await
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
                    if task.status.is_terminal() {
                        say_end_again(p, &batch, &task).await?;
                    } else {
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

/// Which message is running: a task, and the version of it the message was sent at.
struct Step<'a> {
    account_id: &'a str,
    batch_id: &'a str,
    idx: u32,
    version: Option<u64>,
    /// A slot came with the message (`TaskMessage::Run::slot`).
    slot: bool,
    redelivered: bool,
}

/// Sends the chain's next message, due in `delay_secs`, carrying the task's version: the
/// chain stays one chain because a message of an older version is dropped on arrival.
async fn send_next(
    p: &Pipeline,
    step: &Step<'_>,
    task: &TaskRecord,
    delay_secs: u64,
) -> Result<(), PipelineError> {
    let m = TaskMessage::Run {
        account_id: step.account_id.to_string(),
        batch_id: step.batch_id.to_string(),
        idx: step.idx,
        not_before_ms: p.svc.now_ms() + (delay_secs as i64) * 1_000,
        version: Some(task.version),
        // A slot travels only with a task's first message; after that it is the record's.
        slot: false,
    };
    p.svc.enqueue(QueueName::Tasks, &[(m, delay_secs)]).await?;
    Ok(())
}

/// Saves `task` over the version it was read at (optimistic concurrency): a stale copy never
/// overwrites a newer state. On success `task` carries its new version.
async fn save(p: &Pipeline, task: &mut TaskRecord) -> Result<bool, PipelineError> {
    let read_at = task.version;
    task.version = read_at + 1;
    if p.svc.tasks.save(task, read_at).await? {
        return Ok(true);
    }
    task.version = read_at;
    Ok(false)
}

/// Schedules the next look at a task in `delay_secs`, renewing its `next_check_ms` promise
/// when the message would land past it (so the sweeper never takes a live chain for lost).
async fn again(
    p: &Pipeline,
    step: &Step<'_>,
    mut task: TaskRecord,
    delay_secs: u64,
) -> Result<(), PipelineError> {
    let due = p.svc.now_ms() + (delay_secs as i64) * 1_000;
    if task.next_check_ms < due + 30_000 {
        task.next_check_ms = due + CHECK_AHEAD_MS;
        task.updated_ms = p.svc.now_ms();
        if !save(p, &mut task).await? {
            // Someone else moved the task on (a re-driven chain, an end): their message
            // carries on; this chain stops here.
            return Ok(());
        }
    }
    send_next(p, step, &task, delay_secs).await
}

async fn run(p: &Pipeline, step: &Step<'_>) -> Result<(), PipelineError> {
    let svc = &p.svc;
    let (account_id, batch_id, idx) = (step.account_id, step.batch_id, step.idx);
    // Both in one round trip: every step needs the batch (its cancel flag, price, window).
    let (Some(batch), Some(mut task)) = svc.tasks.get_with_batch(account_id, batch_id, idx).await?
    else {
        return Ok(());
    };
    if task.status.is_terminal() {
        say_end_again(p, &batch, &task).await?;
        if let Some(next) = task.slot_to {
            // The end that handed this task's slot on may have died before sending it (a
            // worker's, or the sweeper's time-out, which no redelivery repeats): any later
            // message of this task sends it again. A copy the next task already had is
            // dropped on arrival, its version gone.
            dispatch::hand_over(svc, &batch, next).await?;
        }
        return Ok(());
    }
    if step.version.is_some_and(|v| v != task.version) {
        // A message of a version the task has left (a replaced chain, a step that already
        // ran): the chain carries on with the newer message; this one ends here.
        return Ok(());
    }
    if step.redelivered {
        // This step may have run already, and sent its next message: claim it with a write,
        // so that message (of the old version) is dropped and only this run carries on. A
        // slot the message carries becomes the record's in the same write.
        if !adopt_slot(p, step, &mut task, true).await? {
            return Ok(());
        }
        // The worker that died may have recorded the end but not the task's own record:
        // finish it before asking the provider anything. Only a redelivered step needs this
        // read: any other step that finds a recorded end reaches `end` by itself (the
        // deadline, a cancel, the provider's answer), and `end` honours the recorded outcome.
        if let Some(outcome) = recorded_end(p, &task).await? {
            return end(p, &batch, task, outcome, None, None).await;
        }
    }
    let now = p.svc.now_ms();
    if task.deadline_ms <= now {
        if !adopt_slot(p, step, &mut task, false).await? {
            return Ok(());
        }
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
    if let Some(until) = task.submit_claim_until_ms.filter(|u| *u > now) {
        // Another worker is submitting this task upstream: look again once its claim ends.
        let delay = ((until - now) / 1_000 + 1) as u64;
        return send_next(p, step, &task, delay).await;
    }
    if batch.cancel_requested {
        if !adopt_slot(p, step, &mut task, false).await? {
            return Ok(());
        }
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
        // A slot handed over with the message (or already adopted into the record) is this
        // task's: no account read, no slot write.
        let acquired = !(task.slot || step.slot);
        if acquired {
            let Some(account) = svc.accounts.get(account_id).await? else {
                return Ok(());
            };
            // A full account is refused on the read: a refused conditional write would still
            // be a paid write. The write's condition alone guards the cap.
            let full = account.running >= account.max_concurrency;
            if full
                || !svc
                    .accounts
                    .acquire_slot(account_id, account.max_concurrency)
                    .await?
            {
                let jitter = svc.random.up_to(SLOT_WAIT_SECS);
                return again(p, step, task, SLOT_WAIT_SECS + jitter).await;
            }
            svc.faults.check("worker.after_slot")?;
        }
        let route = p.providers.route(task.model);
        let mut started = task.clone();
        started.status = TaskStatus::Running;
        started.slot = true;
        started.started_ms = Some(now);
        started.updated_ms = now;
        started.next_check_ms = now + CHECK_AHEAD_MS;
        started.deadline_ms = now + svc.settings.deadlines.run_ms(task.model);
        started.provider = route.map(|r| r.provider.name().to_string());
        started.provider_model = route.map(|r| r.provider_model.clone());
        // The start is also the submission claim: one write instead of two.
        started.submit_claim_until_ms = Some(now + SUBMIT_CLAIM_MS);
        if !save(p, &mut started).await? {
            // Someone else moved the task on. A slot taken here goes back; a handed-over one
            // is the winner's if it was another copy of this message, else a leak the
            // sweeper's slot count finds.
            if acquired {
                svc.accounts.release_slot(account_id).await?;
            }
            return Ok(());
        }
        // In the task worker the mark waits for the invocation's end (`adapters::held_starts`)
        // and this is always true: a task ended meanwhile is found by the job id's save.
        if !svc.progress.mark_started(batch_id, &[idx]).await? {
            // It ended (a cancel, a time-out) between our read and our start: it must not
            // reach a provider. Finish its end (the record, the slot we just took).
            if let Some(outcome) = recorded_end(p, &started).await? {
                return end(p, &batch, started, outcome, None, None).await;
            }
        }
        return submit(p, step, &batch, started, Claim::Held).await;
    }
    match task.provider_job_id.clone() {
        None => submit(p, step, &batch, task, Claim::Take).await,
        Some(job) => poll(p, step, &batch, task, &job).await,
    }
}

/// Puts a slot the message carries into the task's record, with a save of the version the
/// message names, before the task ends some other way than starting (its deadline, a cancel)
/// or resumes after a redelivery: from then on the record's end gives it back or on. The
/// save is a redelivered step's claim too (`claim`: saved with or without a slot). False if
/// another worker moved the task first.
async fn adopt_slot(
    p: &Pipeline,
    step: &Step<'_>,
    task: &mut TaskRecord,
    claim: bool,
) -> Result<bool, PipelineError> {
    let adopts = step.slot && !task.slot && task.status == TaskStatus::Queued;
    if !adopts && !claim {
        return Ok(true);
    }
    task.slot |= adopts;
    task.updated_ms = p.svc.now_ms();
    if save(p, task).await? {
        return Ok(true);
    }
    if adopts {
        task.slot = false;
    }
    Ok(false)
}

async fn recorded_end(p: &Pipeline, task: &TaskRecord) -> Result<Option<Outcome>, PipelineError> {
    let shard = p
        .svc
        .progress
        .shard(&task.batch_id, shard_of(task.idx))
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
        // One key per task, whatever the attempt: a retake after a crash (or after a 429
        // that followed a call whose answer was lost) repeats it, and a provider that
        // honours it answers with the job the lost call made instead of making a second.
        idempotency_key: Some(task.task_id.clone()),
    };
    Ok((route, req))
}

/// Whether the submission claim is already ours.
enum Claim {
    /// Saved with the task's start, in the same write.
    Held,
    /// To be taken now (a retry after a provider error, a step resumed after a crash).
    Take,
}

/// Submits the task upstream, once: a conditional claim first, so two messages of the same
/// task never both submit; then the job id, saved over the claim.
async fn submit(
    p: &Pipeline,
    step: &Step<'_>,
    batch: &BatchRecord,
    mut task: TaskRecord,
    claim: Claim,
) -> Result<(), PipelineError> {
    if let Claim::Take = claim {
        let now = p.svc.now_ms();
        task.submit_claim_until_ms = Some(now + SUBMIT_CLAIM_MS);
        task.updated_ms = now;
        if !save(p, &mut task).await? {
            // Another message of this task got there first; it carries on.
            return Ok(());
        }
    }
    p.svc.faults.check("worker.after_claim")?;
    let (route, req) = job_request(p, &task)?;
    match route.provider.submit(&req).await {
        Ok(job) => {
            p.svc.faults.check("worker.after_submit")?;
            task.provider_job_id = Some(job.clone());
            task.submit_claim_until_ms = None;
            task.updated_ms = p.svc.now_ms();
            task.next_check_ms = task.updated_ms + CHECK_AHEAD_MS;
            if save(p, &mut task).await? {
                send_next(p, step, &task, poll_interval_secs(task.model, 0)).await?;
            } else {
                // The task moved on without us (it ended): the job is not wanted.
                cancel_upstream(p, &task).await;
            }
            Ok(())
        }
        Err(e) => {
            task.submit_claim_until_ms = None;
            provider_error(p, step, batch, task, e).await
        }
    }
}

async fn poll(
    p: &Pipeline,
    step: &Step<'_>,
    batch: &BatchRecord,
    task: TaskRecord,
    job: &str,
) -> Result<(), PipelineError> {
    let (route, _) = job_request(p, &task)?;
    match route.provider.poll(job, p.svc.now_ms()).await {
        Ok(JobState::Running { .. }) => {
            let now = p.svc.now_ms();
            let interval = poll_interval_secs(task.model, now - task.started_ms.unwrap_or(now));
            again(p, step, task, interval).await
        }
        Ok(JobState::Succeeded(video)) => {
            let body = match route.provider.download(job, &video).await {
                Ok(b) => b,
                Err(e) => return provider_error(p, step, batch, task, e).await,
            };
            let key = format!(
                "accounts/{}/videos/{}/{}.mp4",
                task.account_id, task.batch_id, task.task_id
            );
            // Tagged with the retention the bucket's lifecycle rules expire it by.
            let tags = crate::domain::account::retention_tags(batch.retention_days);
            match store_video(&p.svc, &key, &tags, body).await? {
                Stored::Saved => {}
                Stored::Empty => {
                    return end(
                        p,
                        batch,
                        task,
                        Outcome::Failed,
                        Some(("invalid_output", "the provider returned an empty video")),
                        None,
                    )
                    .await
                }
                Stored::Cut(e) => return provider_error(p, step, batch, task, e).await,
            }
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
        Err(e) => provider_error(p, step, batch, task, e).await,
    }
}

async fn provider_error(
    p: &Pipeline,
    step: &Step<'_>,
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
                    task.next_check_ms = now + (delay as i64) * 1_000 + CHECK_AHEAD_MS;
                    task.error_message = Some(message.chars().take(300).collect());
                    if save(p, &mut task).await? {
                        send_next(p, step, &task, delay).await?;
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
///    transaction as the refund, for a cancel that found no provider job in the same
///    transaction as the release (balance, ledger entry, the batch's tally: `give_back`);
/// 2. the task record; 3. its concurrency slot; 4. settlement if it was the last; 5. the next
///    task of the batch.
///
/// In the task worker an end mark that moves no money waits for the invocation's end
/// (`HeldEndMarks`), and so does everything after it: the marks of one shard then go in one
/// write and the batch's next tasks are claimed together (`end_held`).
pub async fn end(
    p: &Pipeline,
    batch: &BatchRecord,
    task: TaskRecord,
    outcome: Outcome,
    error: Option<(&str, &str)>,
    video_key: Option<String>,
) -> Result<(), PipelineError> {
    let error = error.map(|(c, m)| (c.to_string(), m.to_string()));
    end_as(p, batch, task, outcome, error, video_key, true).await
}

/// `end`; `may_hold`: an end mark that moves no money may wait for the invocation's end.
async fn end_as(
    p: &Pipeline,
    batch: &BatchRecord,
    task: TaskRecord,
    outcome: Outcome,
    error: Option<(String, String)>,
    video_key: Option<String>,
    may_hold: bool,
) -> Result<(), PipelineError> {
    let svc = &p.svc;
    // The cancel rule, in one place: a cancel that lands before the task has a provider
    // job releases its unit; once a job exists the provider is doing the work (charged).
    let outcome = match outcome {
        Outcome::Cancelled | Outcome::Released => {
            Outcome::of_cancel(task.provider_job_id.is_some())
        }
        other => other,
    };
    let read = svc
        .progress
        .shard(&task.batch_id, shard_of(task.idx))
        .await?;
    let key = task.idx.to_string();
    // The outcome that counts is the one recorded first.
    if let Some(recorded) = read.as_ref().and_then(|s| s.ended.get(&key).copied()) {
        let after = AfterMark {
            task,
            outcome: recorded,
            error,
            video_key,
            shard: Seen::Shard(read),
            claims: None,
        };
        return after_mark(p, batch, after).await;
    }
    let mark = EndMark {
        batch_id: task.batch_id.clone(),
        idx: task.idx,
        was_started: read.as_ref().is_some_and(|s| s.started.contains_key(&key)),
        outcome,
    };
    let shard = if outcome.refunded() || outcome.released() {
        if !give_back(p, batch, &task, mark).await? {
            return Err(raced(&task));
        }
        // A refund's transaction cannot return the shard.
        Seen::ReadIt
    } else {
        if let Some(held) = svc.held_end_marks.as_ref().filter(|_| may_hold) {
            held.0.hold(HeldEnd {
                batch: batch.clone(),
                mark,
                after: AfterMark {
                    task,
                    outcome,
                    error,
                    video_key,
                    shard: Seen::ReadIt,
                    claims: None,
                },
            });
            return Ok(());
        }
        // The mark's update brings the shard back as written.
        match svc.progress.end_mark(std::slice::from_ref(&mark)).await? {
            Some(written) => Seen::Shard(Some(written)),
            None => return Err(raced(&task)),
        }
    };
    let after = AfterMark {
        task,
        outcome,
        error,
        video_key,
        shard,
        claims: None,
    };
    landed(svc, &after).await;
    after_mark(p, batch, after).await
}

/// Lost a race (another worker ended or started it): the message tries again.
fn raced(task: &TaskRecord) -> PipelineError {
    PipelineError::Other(format!("end of {} raced; retrying", task.task_id))
}

/// Whoever landed the mark adds the task to the SLA figures: once.
async fn landed(svc: &Services, after: &AfterMark) {
    let ended_ms = after.task.ended_ms.unwrap_or_else(|| svc.now_ms());
    crate::service::sla::record_task_end(svc, &after.task, after.outcome, ended_ms).await;
}

/// What an end knows of its shard once its mark is in.
enum Seen {
    /// The shard as read or written with this end's mark (`None`: not this end's to look
    /// at, as for all but the last end of a held group).
    Shard(Option<crate::ports::records::ShardRecord>),
    /// Unknown: read it.
    ReadIt,
}

/// An end past its mark, and what the rest of it needs.
pub(crate) struct AfterMark {
    task: TaskRecord,
    outcome: Outcome,
    error: Option<(String, String)>,
    video_key: Option<String>,
    shard: Seen,
    /// The batch's next tasks, claimed for the invocation's held ends together (`end_held`).
    claims: Option<Arc<Claims>>,
}

/// Everything after the end mark: the record, the slot, the next task, settlement.
async fn after_mark(
    p: &Pipeline,
    batch: &BatchRecord,
    after: AfterMark,
) -> Result<(), PipelineError> {
    let svc = &p.svc;
    let AfterMark {
        task,
        outcome,
        error,
        video_key,
        shard,
        claims,
    } = after;
    let (account_id, batch_id, idx, task_id) = (
        task.account_id.clone(),
        task.batch_id.clone(),
        task.idx,
        task.task_id.clone(),
    );
    svc.faults.check("end.after_mark")?;
    let error = error.as_ref().map(|(c, m)| (c.as_str(), m.as_str()));
    let next = finish_record(p, batch, task, outcome, error, video_key, claims.as_deref()).await?;
    tracing::info!(task_id = %task_id, batch_id = %batch_id, outcome = outcome.as_str(), "task ended");

    // Only an end that sees its shard complete looks at the whole batch: the one whose mark
    // completed it (its update returned the shard, or a refund's transaction, which cannot
    // return it, reads it), or a re-run of an end that died before settling.
    let shard = match shard {
        Seen::Shard(s) => s,
        Seen::ReadIt => svc.progress.shard(&batch_id, shard_of(idx)).await?,
    };
    let shard_done = shard.is_some_and(|s| s.counts().ended() == s.size);
    let batch_done = shard_done && {
        let shards = svc.progress.all(&batch_id).await?;
        all_ended(&task_counts(
            &shards.iter().map(|s| s.counts()).collect::<Vec<_>>(),
        ))
    };
    match next {
        // The claim is one atomic add, so the copy of the batch read at the step's start is
        // enough (a cancel it missed is seen by the dispatched task itself, which then ends
        // released and gives the slot back).
        Next::Claimed { idx, slot: true } => dispatch::hand_over(svc, batch, idx).await?,
        Next::Claimed { idx, slot: false } => {
            dispatch::send_runs(svc, batch, idx, idx + 1, 0).await?
        }
        Next::NoneLeft => {}
        // The window keeps its size: one task ended, one more goes.
        Next::NotClaimed if !batch_done => {
            dispatch::dispatch(svc, batch, 1).await?;
        }
        Next::NotClaimed => {}
    }
    if batch_done {
        let m = SettleMessage {
            account_id: account_id.clone(),
            batch_id: batch_id.clone(),
        };
        svc.enqueue(QueueName::Settle, &[(m, 0)]).await?;
    }
    Ok(())
}

/// An end whose mark waits for the invocation's end.
pub(crate) struct HeldEnd {
    batch: BatchRecord,
    mark: EndMark,
    after: AfterMark,
}

/// The ends of one task-worker invocation whose marks move no money (succeeded, rejected,
/// a charged cancel), held until every message has run (`end_held`). The tasks an invocation
/// ends are mostly neighbours in one batch, as the ones it starts are
/// (`adapters::held_starts`): their marks go in one write per shard, their batch's next tasks
/// in one claim, instead of one write each.
#[derive(Default)]
pub struct HeldEndMarks(crate::service::Held<HeldEnd>);

/// Finishes the held ends, before the invocation's sends go: each shard's marks in one
/// write (all or none; if one is refused, which a race or a second end of the same task
/// does, those ends run again on their own and find out why), the SLA adds of the marks
/// that landed, one claim per batch for the next tasks of the ends that hold a slot, then
/// the rest of each end. An error is the first of any end's; the invocation's messages then
/// come back, and a redelivered step finds its recorded end and finishes it.
pub async fn end_held(p: &Pipeline) -> Result<(), PipelineError> {
    let Some(held) = p.svc.held_end_marks.as_ref() else {
        return Ok(());
    };
    let ends = held.0.take();
    if ends.is_empty() {
        return Ok(());
    }
    let svc = &p.svc;
    // One end per task in a group: a second (two messages of the task ran) goes on its own.
    let mut groups: std::collections::BTreeMap<(String, u32), Vec<HeldEnd>> = Default::default();
    let mut alone = Vec::new();
    for e in ends {
        let g = groups
            .entry((e.mark.batch_id.clone(), shard_of(e.mark.idx)))
            .or_default();
        if g.iter().any(|x| x.mark.idx == e.mark.idx) {
            alone.push(e);
        } else {
            g.push(e);
        }
    }
    let mut marked: Vec<HeldEnd> = Vec::new();
    let mut first_error = None;
    for (_, group) in groups {
        let marks: Vec<EndMark> = group.iter().map(|e| e.mark.clone()).collect();
        let written = match svc.progress.end_mark(&marks).await {
            Ok(w) => w,
            Err(e) => {
                // Nothing of these ends is written: their messages come back and run again.
                first_error.get_or_insert(e.into());
                continue;
            }
        };
        match written {
            Some(written) => {
                let last = group.len() - 1;
                for (i, mut e) in group.into_iter().enumerate() {
                    // Only the last looks at whether the shard is done: one look per write.
                    e.after.shard = Seen::Shard((i == last).then(|| written.clone()));
                    marked.push(e);
                }
            }
            None => alone.extend(group),
        }
    }
    for e in &marked {
        landed(svc, &e.after).await;
    }
    let pools = share_claims(&mut marked);
    let results = futures_util::future::join_all(
        marked
            .into_iter()
            .map(|e| async move { after_mark(p, &e.batch, e.after).await }),
    )
    .await;
    for r in results {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    // Claimed for an end that failed before taking its task: sent without a slot, to take
    // one as any task does, rather than left for the sweeper to find.
    for pool in pools {
        if let Some((from, to)) = pool.left() {
            if let Err(e) = dispatch::send_runs(svc, &pool.batch, from, to, 0).await {
                first_error.get_or_insert(e);
            }
        }
    }
    for e in alone {
        let HeldEnd { batch, after, .. } = e;
        if let Err(e) = end_as(
            p,
            &batch,
            after.task,
            after.outcome,
            after.error,
            after.video_key,
            false,
        )
        .await
        {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// One pool of next tasks per batch, shared by the held ends that hold a slot (as their
/// step read them): each end that hands its slot on takes the next from it.
fn share_claims(ends: &mut [HeldEnd]) -> Vec<Arc<Claims>> {
    let mut by_batch: std::collections::BTreeMap<String, Vec<usize>> = Default::default();
    for (i, e) in ends.iter().enumerate() {
        if e.after.task.slot && !e.batch.cancel_requested {
            by_batch
                .entry(e.batch.batch_id.clone())
                .or_default()
                .push(i);
        }
    }
    let mut pools = Vec::new();
    for (_, idxs) in by_batch {
        let Some(&first) = idxs.first() else { continue };
        let pool = Arc::new(Claims {
            batch: ends[first].batch.clone(),
            want: u32::try_from(idxs.len()).unwrap_or(u32::MAX),
            range: tokio::sync::OnceCell::new(),
            taken: std::sync::atomic::AtomicU32::new(0),
            account: tokio::sync::OnceCell::new(),
            given_back: std::sync::atomic::AtomicU32::new(0),
        });
        for i in idxs {
            ends[i].after.claims = Some(pool.clone());
        }
        pools.push(pool);
    }
    pools
}

/// The next tasks of one batch for an invocation's held ends: claimed with one atomic add
/// when the first end needs its task (at its terminal save, where a lone end claims), for
/// all of them, then taken in turn.
pub(crate) struct Claims {
    batch: BatchRecord,
    want: u32,
    /// `[from, to)`, once claimed (empty: none was left).
    range: tokio::sync::OnceCell<(u32, u32)>,
    taken: std::sync::atomic::AtomicU32,
    /// The account's slots in use and its cap, read once for all the pool's ends (`None`:
    /// no account), and the slots they have given back since.
    account: tokio::sync::OnceCell<Option<(u32, u32)>>,
    given_back: std::sync::atomic::AtomicU32,
}

impl Claims {
    /// The next task for one more end: from the pool, else claimed alone, as a lone end
    /// does (more ends wanted one than the pool was made for, a record holding a slot its
    /// step did not see; or the pool's claim came short: near the batch's end, where the
    /// lone claim finds none left too, or after losing its compare-and-set to other claims).
    async fn take(&self, svc: &Services) -> Result<Next, PipelineError> {
        let (from, to) = *self
            .range
            .get_or_try_init(|| async {
                let r = dispatch::claim_many(svc, &self.batch, self.want).await?;
                Ok::<_, PipelineError>(r.unwrap_or((0, 0)))
            })
            .await?;
        let k = self.taken.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(idx) = from.checked_add(k).filter(|i| *i < to) {
            return Ok(Next::Claimed { idx, slot: false });
        }
        Ok(match dispatch::claim_one(svc, &self.batch).await? {
            Some(idx) => Next::Claimed { idx, slot: false },
            None => Next::NoneLeft,
        })
    }

    /// Whether one more end's slot would sit above the account's cap (an operator lowered
    /// it), so goes back instead of on. One read of the account for the pool's ends instead
    /// of one per end. An end found over reserves one slot off the figure read as it decides
    /// (the `GiveBack`, returned to the figure if the end never gives its slot back), and an
    /// end that gives its slot back for want of a next task after the read counts too
    /// (`gave_back`), so a cap lowered by k takes k slots back even when the ends run
    /// concurrently. A figure that went stale meanwhile is as wrong as a lone end's read can
    /// be by its save, and only for this invocation.
    async fn over_cap(
        &self,
        svc: &Services,
        account_id: &str,
    ) -> Result<(bool, Option<GiveBack<'_>>), PipelineError> {
        use std::sync::atomic::Ordering::SeqCst;
        let read = *self
            .account
            .get_or_try_init(|| async {
                let a = svc.accounts.get(account_id).await?;
                Ok::<_, PipelineError>(a.map(|a| (a.running, a.max_concurrency)))
            })
            .await?;
        let Some((running, cap)) = read else {
            return Ok((true, None));
        };
        let mut gone = self.given_back.load(SeqCst);
        loop {
            if running.saturating_sub(gone) <= cap {
                return Ok((false, None));
            }
            match self
                .given_back
                .compare_exchange(gone, gone.saturating_add(1), SeqCst, SeqCst)
            {
                Ok(_) => {
                    return Ok((
                        true,
                        Some(GiveBack {
                            pool: self,
                            done: false,
                        }),
                    ))
                }
                Err(now) => gone = now,
            }
        }
    }

    /// Whether the account has been read: a slot given back after the read is not in the
    /// figure, one given back before it (or while it was on its way) may be.
    fn read_already(&self) -> bool {
        self.account.initialized()
    }

    /// An end gave its slot back for want of a next task, after the pool's read.
    fn gave_back(&self) {
        self.given_back
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// What was claimed and not taken.
    fn left(&self) -> Option<(u32, u32)> {
        let (from, to) = *self.range.get()?;
        let taken = self.taken.load(std::sync::atomic::Ordering::SeqCst);
        let from = from.saturating_add(taken);
        (from < to).then_some((from, to))
    }
}

/// One slot an end of a pool decided to give back, already taken off the pool's figure of
/// slots in use. An end that does not give it back after all (its save lost to another end
/// of the task, an error) returns it to the figure on drop, so the pool's other ends do not
/// hand on a slot the cap no longer allows.
struct GiveBack<'a> {
    pool: &'a Claims,
    done: bool,
}

impl GiveBack<'_> {
    /// The slot went back.
    fn done(mut self) {
        self.done = true;
    }
}

impl Drop for GiveBack<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pool
                .given_back
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// What a task's end tells the account's webhooks: the task's outcome and, for a task
/// whose unit came back, the Credits. Ids are derived from the task, so saying it twice
/// stores and delivers it once.
fn end_events(
    batch: &BatchRecord,
    done: &TaskRecord,
    outcome: Outcome,
) -> Vec<crate::service::events::Event> {
    let ended_ms = done.ended_ms.unwrap_or(done.updated_ms);
    let mut events = vec![crate::service::events::task_ended(done, outcome, ended_ms)];
    if outcome.refunded() || outcome.released() {
        events.push(crate::service::events::credits_given_back(
            done,
            outcome,
            batch.unit_price,
            ended_ms,
        ));
    }
    events
}

/// A message of an ended task: the invocation that ended it may have died before its held
/// sends went out (they leave at the invocation's end: `adapters::outbox`), its events among
/// them, and nothing else would send those again. Sends them again; the events' derived ids
/// keep them once. Any message, not only one SQS counts as redelivered: the ending message
/// may come back through the dead-letter queue's redrive, counted afresh. In a normal run
/// no message reaches an ended task, so this costs nothing there.
async fn say_end_again(
    p: &Pipeline,
    batch: &BatchRecord,
    task: &TaskRecord,
) -> Result<(), PipelineError> {
    if let Some(outcome) = recorded_end(p, task).await? {
        crate::service::events::emit(&p.svc, &end_events(batch, task, outcome)).await?;
    }
    Ok(())
}

/// The batch's next task, as the end of a task found it.
pub(crate) enum Next {
    /// Claimed here, to be sent; `slot`: with the ended task's slot, handed over.
    Claimed { idx: u32, slot: bool },
    /// Every task of the batch is dispatched (or the batch was cancelled).
    NoneLeft,
    /// No claim was tried (the record was not this end's to finish, or held no slot).
    NotClaimed,
}

/// The task record follows its end mark: the events, then the terminal record (from
/// whatever version is current), and the slot, if the record held one, handed over to the
/// batch's next task or given back. Safe to repeat: event ids are derived, and a terminal
/// record is left alone.
pub(crate) async fn finish_record(
    p: &Pipeline,
    batch: &BatchRecord,
    task: TaskRecord,
    outcome: Outcome,
    error: Option<(&str, &str)>,
    video_key: Option<String>,
    claims: Option<&Claims>,
) -> Result<Next, PipelineError> {
    let svc = &p.svc;
    let now = p.svc.now_ms();
    let mut done = task.clone();
    done.status = outcome.status();
    done.ended_ms = Some(done.ended_ms.unwrap_or(now));
    done.updated_ms = now;
    done.slot = false;
    done.charged = Some(outcome.charged());
    if let Some((code, message)) = error {
        done.error_code = Some(code.to_string());
        // The customer sees the provider's words without our identifiers; the raw text
        // stays in our logs.
        let shown = crate::domain::task::customer_message(message);
        if shown != message {
            tracing::info!(task_id = %done.task_id, code, raw = %message, "provider message scrubbed for the customer");
        }
        done.error_message = Some(shown);
    } else if outcome == Outcome::Succeeded {
        done.error_code = None;
        done.error_message = None;
    }
    if video_key.is_some() {
        done.video_key = video_key;
    }
    // Before the task record: a crash after this re-runs `end` (the record is not terminal
    // yet) and re-emits the same ids, which dispatch deduplicates. (In the task worker they
    // leave at the invocation's end; a worker that dies after the record's save and before
    // then has its message come back, and `say_end_again` sends them.)
    crate::service::events::emit(svc, &end_events(batch, &done, outcome)).await?;
    svc.faults.check("end.after_events")?;
    // The record follows the mark. Whoever moves it from holding a slot to terminal hands
    // the slot to the batch's next task, or gives it back when none is left: exactly once,
    // since a save lands only on the version it read. The next task is claimed first, so the
    // terminal record can name it (`slot_to`) for a redelivery to send it again.
    let mut current = task;
    let mut next = Next::NotClaimed;
    let mut over_cap = None;
    let mut give_back: Option<GiveBack<'_>> = None;
    for _ in 0..10 {
        if current.status.is_terminal() {
            break;
        }
        let held_slot = current.slot;
        if held_slot && matches!(next, Next::NotClaimed) {
            next = match claims {
                Some(pool) => pool.take(svc).await?,
                None => match dispatch::claim_one(svc, batch).await? {
                    Some(idx) => Next::Claimed { idx, slot: false },
                    None => Next::NoneLeft,
                },
            };
        }
        if held_slot && over_cap.is_none() && matches!(next, Next::Claimed { .. }) {
            // An operator may have lowered the cap: a slot above it goes back, not on, and
            // the next task takes one as any task does, when the count allows.
            over_cap = Some(match claims {
                Some(pool) => {
                    let (over, reserved) = pool.over_cap(svc, &current.account_id).await?;
                    give_back = reserved;
                    over
                }
                None => svc
                    .accounts
                    .get(&current.account_id)
                    .await?
                    .is_none_or(|a| a.running > a.max_concurrency),
            });
        }
        let over_cap = over_cap.unwrap_or(false);
        let mut terminal = done.clone();
        terminal.version = current.version;
        terminal.submit_claim_until_ms = None;
        if terminal.provider_job_id.is_none() {
            terminal.provider_job_id = current.provider_job_id.clone();
        }
        let handed = match next {
            Next::Claimed { idx, .. } if held_slot && !over_cap => Some(idx),
            _ => None,
        };
        terminal.slot_to = handed;
        if save(p, &mut terminal).await? {
            if let Some(idx) = handed {
                next = Next::Claimed { idx, slot: true };
                svc.faults.check("end.after_hand_over")?;
            } else if held_slot {
                // Looked at before the release: a figure read after it already has it.
                let counts_for = claims.filter(|pool| pool.read_already());
                svc.accounts.release_slot(&current.account_id).await?;
                match (give_back.take(), counts_for) {
                    (Some(reserved), _) => reserved.done(),
                    (None, Some(pool)) => pool.gave_back(),
                    (None, None) => {}
                }
            }
            break;
        }
        match svc.tasks.get(&current.batch_id, current.idx).await? {
            Some(t) => current = t,
            None => break,
        }
    }
    Ok(next)
}

/// The refund of one task's unit: balance, ledger entry (keyed to the task), the batch's
/// refund tally and the task's end mark, in one transaction. False if the mark's condition
/// failed (ended or started meanwhile).
/// A refunded or released task's unit back on the balance, with its end mark and its
/// batch's tally, in one money movement.
async fn give_back(
    p: &Pipeline,
    batch: &BatchRecord,
    task: &TaskRecord,
    mark: EndMark,
) -> Result<bool, PipelineError> {
    let unit = batch.unit_price;
    let released = mark.outcome.released();
    let (kind, refunded_delta, released_delta) = if released {
        (EntryKind::Release, Credits::ZERO, unit)
    } else {
        (EntryKind::Refund, unit, Credits::ZERO)
    };
    let moved = money::commit(&p.svc, &task.account_id, None, |account, now| {
        let next = next_entry(account.book(), unit, now)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let entry = LedgerRecord {
            account_id: task.account_id.clone(),
            seq: next.seq,
            created_ms: next.created_ms,
            kind,
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
            invoice: None,
        };
        let mv = MoneyMove {
            account_id: task.account_id.clone(),
            expected: account.book(),
            require_active: false,
            entry,
            held_delta: -unit,
            granted_delta: Credits::ZERO,
            charged_delta: Credits::ZERO,
            refunded_delta,
            released_delta,
            creates: vec![],
            changes: vec![
                Change::EndMark(mark.clone()),
                if released {
                    Change::BatchRelease {
                        account_id: task.account_id.clone(),
                        batch_id: task.batch_id.clone(),
                        amount: unit,
                    }
                } else {
                    Change::BatchRefund {
                        account_id: task.account_id.clone(),
                        batch_id: task.batch_id.clone(),
                        amount: unit,
                    }
                },
            ],
        };
        Ok((mv, ()))
    })
    .await?;
    match moved {
        Moved::Committed(()) => {
            tracing::info!(task_id = %task.task_id, amount = unit.value(), kind = kind.as_str(), "given back");
            Ok(true)
        }
        Moved::Replayed(_) | Moved::Duplicate(_) => Ok(false),
    }
}

/// What became of a finished job's video.
enum Stored {
    Saved,
    /// Fewer than 8 bytes: not a video.
    Empty,
    /// The download broke off part way; nothing was stored (the next poll downloads again).
    Cut(ProviderError),
}

/// Streams a video into storage: a small one in one `PUT`, a large one as a multipart upload
/// of `PART_BYTES` parts, so at most one part (plus a chunk) is ever held in memory.
async fn store_video(
    svc: &Services,
    key: &str,
    tags: &str,
    mut body: Box<dyn VideoStream>,
) -> Result<Stored, crate::ports::StoreError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut upload: Option<Upload> = None;
    let mut total = 0usize;
    loop {
        let chunk = match body.next_chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                if let Some(u) = upload {
                    // Best effort: the bucket's lifecycle rule removes what is left anyway.
                    let _ = svc.blobs.abort_upload(key, &u.upload_id).await;
                }
                return Ok(Stored::Cut(e));
            }
        };
        total += chunk.len();
        buf.extend_from_slice(&chunk);
        if buf.len() >= PART_BYTES {
            let u = match upload.as_mut() {
                Some(u) => u,
                None => upload.insert(svc.blobs.start_upload(key, "video/mp4", tags).await?),
            };
            svc.blobs.upload_part(u, std::mem::take(&mut buf)).await?;
        }
    }
    match upload {
        None if total < 8 => Ok(Stored::Empty),
        None => {
            svc.blobs.put(key, buf, "video/mp4", Some(tags)).await?;
            Ok(Stored::Saved)
        }
        Some(mut u) => {
            if !buf.is_empty() {
                svc.blobs.upload_part(&mut u, buf).await?;
            }
            svc.blobs.complete_upload(u).await?;
            Ok(Stored::Saved)
        }
    }
}
