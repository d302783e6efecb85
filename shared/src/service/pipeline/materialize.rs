//! Steps 3 and 4 of batch submission (see `service::batches`): the task records and progress
//! shards of a batch whose hold has committed, then `accepted -> queued` and the first
//! dispatch window. Run by the submission itself, or, once its writer's lease has run out,
//! by whoever comes next (a retry of the same request_id, or the sweeper).

use crate::domain::batch::{task_id, BatchStatus, TaskSpec, TaskStatus};
use crate::ports::records::{BatchRecord, TaskRecord};
use crate::ports::StoreError;
use crate::service::{files, ServiceError, Services};
use futures_util::stream::{self, TryStreamExt};

/// The first writer's lease: longer than the API function lives (29 s), so a writer whose
/// lease ran out is dead.
pub const MATERIALIZE_LEASE_MS: i64 = 60_000;
/// A recovery's lease: longer than the sweeper lives (300 s). Recoveries also write only what
/// does not exist, so even one that outlived its lease could not undo another's progress.
pub const RECOVERY_LEASE_MS: i64 = 6 * 60_000;
const TASK_WRITE_CHUNK: usize = 100;
const TASK_WRITE_PARALLELISM: usize = 4;

/// Step 3 and 4 for an `accepted` batch whose writer's lease has run out: rewrite its task
/// records from the stored input. A no-op for any other batch. Returns true if it wrote.
pub async fn recover(svc: &Services, batch: &BatchRecord) -> Result<bool, ServiceError> {
    if batch.status != BatchStatus::Accepted {
        return Ok(false);
    }
    let now = svc.now_ms();
    if batch.lease_until_ms >= now
        || !svc
            .batches
            .take_lease(
                &batch.account_id,
                &batch.batch_id,
                now,
                now + RECOVERY_LEASE_MS,
            )
            .await?
    {
        return Ok(false);
    }
    let bytes =
        svc.blobs.get(&batch.input_key).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("input of {} is missing", batch.batch_id))
        })?;
    let specs = files::parse_input(&bytes, batch.model).map_err(|e| {
        ServiceError::Internal(format!(
            "stored input of {} no longer parses: {e}",
            batch.batch_id
        ))
    })?;
    if specs.len() != batch.task_count as usize {
        return Err(ServiceError::Internal(format!(
            "stored input of {} has {} tasks, expected {}",
            batch.batch_id,
            specs.len(),
            batch.task_count
        )));
    }
    tracing::warn!(batch_id = %batch.batch_id, "recovering task records of a stalled batch");
    materialize(svc, batch, &specs, Writer::Recovery, None).await?;
    Ok(true)
}

/// Who writes a batch's task records: its first writer (nothing can exist yet that it could
/// overwrite, so it writes in batches), or a recovery (some records may exist and have
/// moved on: it writes only the missing ones, each conditionally).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    First,
    Recovery,
}

/// `max_concurrency` is the account's, when the caller already holds the account (the
/// submission does: the access guard read it); otherwise the first dispatch reads it.
pub(crate) async fn materialize(
    svc: &Services,
    batch: &BatchRecord,
    specs: &[TaskSpec],
    writer: Writer,
    max_concurrency: Option<u32>,
) -> Result<(), ServiceError> {
    let tasks = task_records(svc, batch, specs);
    stream::iter(tasks.chunks(TASK_WRITE_CHUNK).map(Ok::<_, StoreError>))
        .try_for_each_concurrent(TASK_WRITE_PARALLELISM, |chunk| async move {
            match writer {
                Writer::First => svc.tasks.put_all(chunk).await?,
                Writer::Recovery => {
                    svc.tasks.put_missing(chunk).await?;
                }
            }
            svc.faults.check("submit.after_task_chunk")
        })
        .await?;
    svc.progress.init(&batch.batch_id, batch.task_count).await?;
    svc.faults.check("submit.after_tasks")?;
    // The batch as queued comes back with the write; if a concurrent recovery queued it
    // first, its current state is read.
    let queued = match svc
        .batches
        .mark_queued(&batch.account_id, &batch.batch_id)
        .await?
    {
        Some(b) => Some(b),
        None => svc.batches.get(&batch.account_id, &batch.batch_id).await?,
    };
    // The first window of tasks. If this is lost, the sweeper tops the window up.
    if let Some(queued) = queued {
        if let Err(e) = super::dispatch::start(svc, &queued, max_concurrency).await {
            tracing::warn!(batch_id = %batch.batch_id, error = %e, "first dispatch failed; the sweeper will dispatch");
        }
    }
    Ok(())
}

/// The task records of a batch as they are first written: queued, in input order.
pub(crate) fn task_records(
    svc: &Services,
    batch: &BatchRecord,
    specs: &[TaskSpec],
) -> Vec<TaskRecord> {
    specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let idx = i as u32;
            TaskRecord {
                batch_id: batch.batch_id.clone(),
                idx,
                task_id: task_id(&batch.batch_id, idx),
                account_id: batch.account_id.clone(),
                status: TaskStatus::Queued,
                model: batch.model,
                spec: spec.clone(),
                created_ms: batch.created_ms,
                updated_ms: batch.created_ms,
                provider: None,
                provider_model: None,
                provider_job_id: None,
                attempts: 0,
                slot: false,
                slot_to: None,
                started_ms: None,
                ended_ms: None,
                deadline_ms: batch.created_ms + svc.settings.deadlines.queue_ms,
                error_code: None,
                error_message: None,
                video_key: None,
                expires_at: Some(crate::ports::records::task_expiry(
                    batch.created_ms,
                    batch.retention_days,
                )),
                version: 0,
                next_check_ms: 0,
                submit_claim_until_ms: None,
                charged: None,
            }
        })
        .collect()
}
