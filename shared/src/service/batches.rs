//! Batch submission: the pre-deduct (contract 1.3) and its request_id idempotency (3.3).
//!
//! The order of writes, and what a crash between any two of them leaves:
//!
//! 1. the validated tasks go to S3 (`input_key`) — a crash here leaves an unreferenced object
//!    and no charge; a retry starts over.
//! 2. one transaction: balance down by the hold + `pre_deduct` ledger entry + batch record
//!    (`accepted`, holding the materialize lease) + idempotency record — all or nothing.
//! 3. task records, in chunks — a crash here leaves an `accepted` batch with its hold and some
//!    tasks; whoever takes the lease after it runs out (a retry of the same request_id, or the
//!    sweeper) rewrites the tasks from `input_key`.
//! 4. batch `accepted -> queued`, and the first window's claim and send.
//!
//! A small batch (up to `WITH_HOLD_MAX_TASKS` tasks) skips 1, 3 and 4: its task records and
//! progress shard are created in step 2's transaction, the batch born `queued` with its first
//! window claimed. A crash after it leaves a whole batch whose window was claimed but maybe
//! not sent: the sweeper re-sends it once those tasks stand still, as after any lost dispatch.

use super::auth::Caller;
use super::idempotency::{check_request_id, record, replay};
use super::json;
use super::money::{self, Idempotent, Moved};
use super::parse_limit;
use super::views::{BatchView, TaskView};
use super::{files, ErrorCode, Page, Reply, ServiceError, Services};
use crate::domain::account::AccountStatus;
use crate::domain::batch::{
    plan_batch, validate_metadata, validate_task, BatchCredits, BatchPlan, BatchRuleError,
    BatchStatus, TaskCounts, TaskInput, TaskSpec, TaskStatus,
};
use crate::domain::cursor;
use crate::domain::idempotency::Scope;
use crate::domain::ids;
use crate::domain::ledger::{next_entry, EntryKind, LedgerError};
use crate::domain::money::Credits;
use crate::domain::pricing::{Model, CURRENT_PRICES};
use crate::domain::task::dispatch_window;
use crate::ports::records::{AccountRecord, BatchRecord, LedgerRecord, ShardRecord};
use crate::ports::store::{CommitError, MoneyMove, NewRecord};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json as j, Value};
use std::collections::BTreeMap;

use super::pipeline::materialize::{materialize, task_records, Writer};
pub use super::pipeline::materialize::{recover, MATERIALIZE_LEASE_MS};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBatch {
    pub request_id: String,
    pub model: String,
    #[serde(default)]
    pub tasks: Option<Vec<Value>>,
    #[serde(default)]
    pub input_file_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

fn rule_error(e: BatchRuleError) -> ServiceError {
    let code = match e {
        BatchRuleError::TooSmall { .. } => ErrorCode::BatchTooSmall,
        BatchRuleError::TooLarge { .. } => ErrorCode::BatchTooLarge,
        BatchRuleError::Metadata(_) => ErrorCode::InvalidMetadata,
    };
    ServiceError::reject(code, e.to_string())
}

fn insufficient(balance: Credits, needed: Credits) -> ServiceError {
    ServiceError::reject_with(
        ErrorCode::InsufficientCredits,
        format!("this batch needs {needed} credits; the balance is {balance}"),
        j!({ "balance": balance, "needed": needed }),
    )
}

fn inline_tasks(model: Model, tasks: Vec<Value>) -> Result<Vec<TaskSpec>, ServiceError> {
    if tasks.len() > crate::domain::account::MAX_BATCH_TASKS as usize {
        return Err(rule_error(BatchRuleError::TooLarge { got: tasks.len() }));
    }
    tasks
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let bad = |m: String| {
                ServiceError::reject_with(
                    ErrorCode::InvalidTask,
                    format!("tasks[{i}]: {m}"),
                    j!({ "index": i }),
                )
            };
            let input: TaskInput = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
            validate_task(model, input).map_err(|e| bad(e.to_string()))
        })
        .collect()
}

fn to_jsonl(specs: &[TaskSpec]) -> Result<Vec<u8>, ServiceError> {
    let mut out = Vec::new();
    for s in specs {
        serde_json::to_writer(&mut out, s).map_err(|e| ServiceError::Internal(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

pub async fn submit(
    svc: &Services,
    caller: &Caller,
    req: SubmitBatch,
    fingerprint: &str,
) -> Result<Reply, ServiceError> {
    check_request_id(&req.request_id)?;
    let account_id = caller.account.account_id.clone();
    if let Some(reply) = replay_batch(svc, &account_id, &req.request_id, fingerprint).await? {
        return Ok(reply);
    }
    let model: Model = req.model.parse().map_err(|_| {
        ServiceError::reject_with(
            ErrorCode::UnknownModel,
            format!("unknown model {:?}", req.model),
            j!({ "models": Model::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>() }),
        )
    })?;
    super::models::ensure_orderable(svc, model).await?;
    let metadata = req.metadata.unwrap_or_default();
    validate_metadata(&metadata).map_err(rule_error)?;
    let specs = match (req.tasks, req.input_file_id) {
        (Some(tasks), None) => inline_tasks(model, tasks)?,
        (None, Some(file_id)) => files::read_input(svc, &account_id, &file_id, model).await?,
        _ => {
            return Err(ServiceError::reject(
                ErrorCode::InvalidRequest,
                "give exactly one of tasks or input_file_id",
            ))
        }
    };
    let plan = plan_batch(
        model,
        specs.len(),
        caller.account.min_batch_size,
        &CURRENT_PRICES,
    )
    .map_err(rule_error)?;

    // The account as the access guard read it, moments ago: enough to refuse early, before
    // the input is stored; the hold's transaction decides against the current version.
    let account = &caller.account;
    if account.balance < plan.hold {
        return Err(insufficient(account.balance, plan.hold));
    }

    let batch_id = svc.new_id("bat");
    tracing::Span::current().record("batch_id", batch_id.as_str());
    let small = specs.len() <= WITH_HOLD_MAX_TASKS;
    let input_key = if small {
        // Its task records are written with the hold: nothing to recover them from.
        String::new()
    } else {
        let key = format!("accounts/{account_id}/batches/{batch_id}/input.jsonl");
        let tags = crate::domain::account::retention_tags(account.retention_days);
        svc.blobs
            .put(
                &key,
                to_jsonl(&specs)?,
                files::INPUT_CONTENT_TYPE,
                Some(&tags),
            )
            .await?;
        svc.faults.check("submit.after_input")?;
        key
    };

    let new = NewBatch {
        request_id: &req.request_id,
        fingerprint,
        plan,
        batch_id: &batch_id,
        input_key,
        metadata,
        with_tasks: small.then_some(specs.as_slice()),
    };
    match hold(svc, account.clone(), new).await? {
        Held::Created(batch, reply) => {
            svc.faults.check("submit.after_hold")?;
            if small {
                // Born queued with its first window claimed: send it. If this send is lost,
                // the sweeper re-sends the window once its tasks stand still (`chain_lost`).
                super::pipeline::dispatch::send_runs(svc, &batch, 0, batch.next_dispatch, 0)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(batch_id, error = %e, "first dispatch failed; the sweeper will re-send it");
                    });
            } else {
                materialize(
                    svc,
                    &batch,
                    &specs,
                    Writer::First,
                    Some(account.max_concurrency),
                )
                .await?;
            }
            Ok(reply)
        }
        Held::Replay(reply) => Ok(reply),
    }
}

/// Up to this many tasks, a batch's task records and progress shard are created in the hold's
/// own transaction, born `queued` with the first window claimed, instead of being written
/// after it from an input stored in S3. One transaction instead of five calls (the input's
/// PUT, the task records, the shard, `accepted -> queued`, the first claim). Transactional
/// writes cost twice: the records' extra units against the input's PUT (as much as eight
/// write units) and the two batch updates break even at nine tasks, and cost at most seven
/// write units more per batch at sixteen. The limit also keeps the transaction far from
/// DynamoDB's 100 items and 4 MB.
pub const WITH_HOLD_MAX_TASKS: usize = 16;

/// What the hold's transaction creates.
struct NewBatch<'a> {
    request_id: &'a str,
    fingerprint: &'a str,
    plan: BatchPlan,
    batch_id: &'a str,
    /// Empty when the task records come with the hold.
    input_key: String,
    metadata: BTreeMap<String, String>,
    /// The tasks whose records are created in the same transaction (a small batch).
    with_tasks: Option<&'a [TaskSpec]>,
}

enum Held {
    Created(Box<BatchRecord>, Reply),
    Replay(Reply),
}

/// Step 2: the one transaction that takes the hold and creates the batch (and, for a small
/// batch, its task records, its progress shard and its first window's claim).
async fn hold(
    svc: &Services,
    account: AccountRecord,
    new: NewBatch<'_>,
) -> Result<Held, ServiceError> {
    let NewBatch {
        request_id,
        fingerprint,
        plan,
        batch_id,
        input_key,
        metadata,
        with_tasks,
    } = new;
    let account_id = account.account_id.clone();
    let account_id = account_id.as_str();
    let idem = Idempotent {
        owner: account_id,
        scope: Scope::CreateBatch,
        request_id,
        fingerprint,
    };
    let moved = money::commit_from(svc, account, Some(idem), |account, now| {
        if account.status != AccountStatus::Active {
            return Err(ServiceError::reject(
                ErrorCode::AccountTerminated,
                "this account's contract has ended",
            ));
        }
        let next = match next_entry(account.book(), -plan.hold, now) {
            Ok(n) => n,
            Err(LedgerError::Insufficient { balance, needed }) => {
                return Err(insufficient(balance, needed))
            }
            Err(LedgerError::Overflow) => {
                return Err(ServiceError::Internal("ledger overflow".into()))
            }
        };
        let mut batch = BatchRecord {
            account_id: account_id.to_string(),
            batch_id: batch_id.to_string(),
            request_id: request_id.to_string(),
            status: BatchStatus::Accepted,
            model: plan.model,
            unit_price: plan.unit_price,
            price_version: plan.price_version.to_string(),
            task_count: plan.task_count,
            counts: TaskCounts::all_queued(plan.task_count),
            credits: BatchCredits {
                held: plan.hold,
                ..Default::default()
            },
            metadata: metadata.clone(),
            input_key: input_key.clone(),
            lease_until_ms: now + MATERIALIZE_LEASE_MS,
            created_ms: now,
            next_dispatch: 0,
            dispatched_ms: 0,
            cancel_requested: false,
            open_shard: Some("open".to_string()),
            settlement: None,
            completed_ms: None,
            retention_days: account.retention_days,
        };
        let mut born = Vec::new();
        if let Some(specs) = with_tasks {
            let window = dispatch_window(account.max_concurrency, plan.task_count);
            batch.status = BatchStatus::Queued;
            batch.next_dispatch = window;
            batch.dispatched_ms = now;
            born.extend(
                task_records(svc, &batch, specs)
                    .into_iter()
                    .map(NewRecord::Task),
            );
            born.extend(ShardRecord::all_empty(batch_id, plan.task_count).map(NewRecord::Shard));
        }
        let reply = Reply {
            status: 201,
            body: json(&BatchView::from(&batch))?,
            replayed: false,
        };
        let entry = LedgerRecord {
            account_id: account_id.to_string(),
            seq: next.seq,
            created_ms: next.created_ms,
            kind: EntryKind::PreDeduct,
            amount: -plan.hold,
            balance_after: next.balance_after,
            batch_id: Some(batch_id.to_string()),
            task_id: None,
            request_id: Some(request_id.to_string()),
            reason: None,
            actor: None,
            pack: None,
            price_paid_usd_cents: None,
            refers_to: None,
            invoice: None,
        };
        let req_rec = record(
            account_id,
            Scope::CreateBatch,
            request_id,
            fingerprint,
            &reply,
            batch_id,
            now,
            account.retention_days,
        );
        let mv = MoneyMove {
            account_id: account_id.to_string(),
            expected: account.book(),
            require_active: true,
            entry,
            held_delta: plan.hold,
            granted_delta: Credits::ZERO,
            charged_delta: Credits::ZERO,
            refunded_delta: Credits::ZERO,
            released_delta: Credits::ZERO,
            creates: [NewRecord::Batch(batch.clone()), NewRecord::Request(req_rec)]
                .into_iter()
                .chain(born)
                .collect(),
            changes: vec![],
        };
        Ok((mv, (batch, reply, account.clone(), next)))
    })
    .await?;
    match moved {
        Moved::Committed((batch, reply, before, next)) => {
            tracing::info!(
                batch_id,
                hold = plan.hold.value(),
                tasks = plan.task_count,
                "batch accepted"
            );
            warn_low_balance(svc, &before, next.balance_after, next.seq, plan.hold).await;
            // The replay path finishes task records of a batch whose writer died.
            Ok(Held::Created(Box::new(batch), reply))
        }
        Moved::Replayed(reply) => {
            finish_replayed(svc, account_id, request_id, fingerprint).await?;
            Ok(Held::Replay(reply))
        }
        Moved::Duplicate(_) => Err(ServiceError::Internal(format!(
            "batch id {batch_id} collided"
        ))),
    }
}

/// `credits.low_balance` when this hold took the balance below the account's threshold.
/// Notification only: the batch stands whether or not it goes out.
async fn warn_low_balance(
    svc: &Services,
    before: &AccountRecord,
    balance_after: Credits,
    seq: u64,
    hold: Credits,
) {
    let Some(threshold) = before.low_balance_threshold else {
        return;
    };
    if !(before.balance >= threshold && balance_after < threshold) {
        return;
    }
    let mut after = before.clone();
    after.balance = balance_after;
    after.held += hold;
    after.ledger_seq = seq;
    let event = super::events::low_balance(&after, threshold, svc.now_ms());
    if let Err(e) = super::events::emit(svc, &[event]).await {
        tracing::warn!(error = %e, "credits.low_balance event not sent");
    }
}

/// A replay of an earlier submission; finishes its task records if their writer died.
async fn replay_batch(
    svc: &Services,
    account_id: &str,
    request_id: &str,
    fingerprint: &str,
) -> Result<Option<Reply>, ServiceError> {
    let Some((reply, rec)) =
        replay(svc, account_id, Scope::CreateBatch, request_id, fingerprint).await?
    else {
        return Ok(None);
    };
    if let Some(batch) = svc.batches.get(account_id, &rec.resource_id).await? {
        recover(svc, &batch).await?;
    }
    Ok(Some(reply))
}

/// After a replayed hold: the batch its first attempt made may still need its tasks.
async fn finish_replayed(
    svc: &Services,
    account_id: &str,
    request_id: &str,
    fingerprint: &str,
) -> Result<(), ServiceError> {
    replay_batch(svc, account_id, request_id, fingerprint)
        .await
        .map(|_| ())
}

pub async fn get(
    svc: &Services,
    account_id: &str,
    batch_id: &str,
) -> Result<BatchRecord, ServiceError> {
    if !ids::is_valid("bat", batch_id) {
        return Err(ServiceError::not_found("batch"));
    }
    svc.batches
        .get(account_id, batch_id)
        .await?
        .ok_or_else(|| ServiceError::not_found("batch"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
    pub status: Option<String>,
}

#[derive(serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchCursor {
    b: String,
}

#[derive(serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskCursor {
    i: u32,
}

fn bad_cursor() -> ServiceError {
    ServiceError::reject(
        ErrorCode::InvalidCursor,
        "cursor is not one this API issued",
    )
}

/// A batch as customers see it: live counts and credits.
pub async fn view(
    svc: &Services,
    account_id: &str,
    batch_id: &str,
) -> Result<BatchView, ServiceError> {
    let b = get(svc, account_id, batch_id).await?;
    let shards = svc.progress.all(&b.batch_id).await?;
    Ok(BatchView::live(&b, &shards))
}

/// Newest first.
pub async fn list(
    svc: &Services,
    account_id: &str,
    p: &ListParams,
) -> Result<Page<BatchView>, ServiceError> {
    let limit = parse_limit(p.limit.as_deref())?;
    let status = p
        .status
        .as_deref()
        .map(|s| {
            BatchStatus::parse(s).ok_or_else(|| {
                ServiceError::reject(
                    ErrorCode::InvalidParameter,
                    "status must be one of accepted, queued, running, completed",
                )
            })
        })
        .transpose()?;
    let before = p
        .cursor
        .as_deref()
        .map(|c| {
            cursor::decode::<BatchCursor>(c)
                .filter(|c| ids::is_valid("bat", &c.b))
                .map(|c| c.b)
                .ok_or_else(bad_cursor)
        })
        .transpose()?;
    // `queued` and `running` are one stored state told apart by progress.
    let stored = status.map(|st| {
        if st == BatchStatus::Running {
            BatchStatus::Queued
        } else {
            st
        }
    });
    let (batches, has_more) = svc.batches.list(account_id, stored, limit, before).await?;
    let next_cursor = match (has_more, batches.last()) {
        (true, Some(b)) => Some(cursor::encode(&BatchCursor {
            b: b.batch_id.clone(),
        })),
        _ => None,
    };
    let data = stream::iter(batches.iter())
        .then(|b| async move {
            svc.progress
                .all(&b.batch_id)
                .await
                .map(|sh| BatchView::live(b, &sh))
        })
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .filter(|v| status.is_none_or(|st| v.status == st))
        .collect();
    Ok(Page {
        data,
        has_more: next_cursor.is_some(),
        next_cursor,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskListParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// In submission order.
pub async fn tasks(
    svc: &Services,
    account_id: &str,
    batch_id: &str,
    p: &TaskListParams,
) -> Result<Page<TaskView>, ServiceError> {
    let limit = parse_limit(p.limit.as_deref())?;
    let after = p
        .cursor
        .as_deref()
        .map(|c| {
            cursor::decode::<TaskCursor>(c)
                .map(|c| c.i)
                .ok_or_else(bad_cursor)
        })
        .transpose()?;
    // Ownership first: another account's batch id answers exactly like a missing one.
    let batch = get(svc, account_id, batch_id).await?;
    let (tasks, has_more) = svc.tasks.list(&batch.batch_id, limit, after).await?;
    let next_cursor = match (has_more, tasks.last()) {
        (true, Some(t)) => Some(cursor::encode(&TaskCursor { i: t.idx })),
        _ => None,
    };
    Ok(Page {
        data: tasks.iter().map(TaskView::from).collect(),
        has_more: next_cursor.is_some(),
        next_cursor,
    })
}

/// One task, with a presigned download link when its video is ready.
pub async fn task(
    svc: &Services,
    account_id: &str,
    task_id: &str,
) -> Result<TaskView, ServiceError> {
    let (batch_id, idx) = crate::domain::batch::parse_task_id(task_id)
        .ok_or_else(|| ServiceError::not_found("task"))?;
    // Ownership through the batch key: another account's task answers like a missing one.
    let batch = get(svc, account_id, &batch_id)
        .await
        .map_err(|_| ServiceError::not_found("task"))?;
    let t = svc
        .tasks
        .get(&batch.batch_id, idx)
        .await?
        .filter(|t| t.account_id == account_id)
        .ok_or_else(|| ServiceError::not_found("task"))?;
    let mut v = TaskView::from(&t);
    if let (TaskStatus::Succeeded, Some(key)) = (t.status, &t.video_key) {
        let link = svc
            .blobs
            .presign_get(key, &format!("{}.mp4", t.task_id))
            .await?;
        v.download_expires_at = Some(crate::domain::time::rfc3339_ms(
            svc.now_ms() + link.expires_in_secs as i64 * 1_000,
        ));
        v.download_url = Some(link.url);
    }
    Ok(v)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelBatch {
    pub request_id: String,
}

#[derive(serde::Serialize)]
struct CancelReply {
    batch: BatchView,
    note: &'static str,
}

/// Cancels the unfinished tasks of a batch. Finished tasks keep their outcome; tasks that
/// had reached a provider are charged (contract 2.2), the others are released (their units
/// go back to the balance), as the reply says.
pub async fn cancel(
    svc: &Services,
    account_id: &str,
    retention_days: u32,
    batch_id: &str,
    req: CancelBatch,
    fingerprint: &str,
) -> Result<Reply, ServiceError> {
    check_request_id(&req.request_id)?;
    let scoped = format!("{batch_id}:{}", req.request_id);
    if let Some((reply, _)) =
        replay(svc, account_id, Scope::CancelBatch, &scoped, fingerprint).await?
    {
        return Ok(reply);
    }
    let batch = get(svc, account_id, batch_id).await?;
    if !svc.batches.request_cancel(account_id, batch_id).await? {
        return Err(ServiceError::reject(
            ErrorCode::BatchCompleted,
            "the batch has already completed; nothing is left to cancel",
        ));
    }
    if let Some(fresh) = svc.batches.get(account_id, batch_id).await? {
        super::pipeline::dispatch::end_undispatched(
            svc,
            &fresh,
            crate::domain::task::Outcome::Cancelled,
        )
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    }
    let shards = svc.progress.all(&batch.batch_id).await?;
    let fresh = svc
        .batches
        .get(account_id, batch_id)
        .await?
        .unwrap_or(batch);
    let reply = Reply {
        status: 202,
        body: json(&CancelReply {
            batch: BatchView::live(&fresh, &shards),
            note: "Unfinished tasks are being cancelled. Tasks that had not reached a provider are released: their credits return to your balance (ledger entries of kind release). Tasks a provider was already generating are charged and not refunded (contract clause 2.2). Tasks that already finished keep their outcome.",
        })?,
        replayed: false,
    };
    let rec = record(
        account_id,
        Scope::CancelBatch,
        &scoped,
        fingerprint,
        &reply,
        batch_id,
        svc.now_ms(),
        retention_days,
    );
    match svc.requests.create_all(vec![NewRecord::Request(rec)]).await {
        Ok(()) => Ok(reply),
        Err(CommitError::Duplicate(_)) | Err(CommitError::Stale) => {
            Ok(
                replay(svc, account_id, Scope::CancelBatch, &scoped, fingerprint)
                    .await?
                    .map(|(r, _)| r)
                    .unwrap_or(reply),
            )
        }
        Err(CommitError::Store(e)) => Err(e.into()),
    }
}
