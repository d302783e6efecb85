//! DynamoDB access of the task pipeline: progress shards, task state, concurrency slots,
//! dispatch claims, cancellation and settlement.

use super::dynamo::{applied, condition_failed, dynamo_err, from_item, n, s, to_item, Item};
use super::records::{BatchRecord, ShardRecord, TaskRecord};
use super::{Store, StoreError};
use crate::domain::batch::{BatchStatus, TaskStatus};
use crate::domain::task::{shard_count, shard_len, shard_of, Outcome, Settlement};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, TransactWriteItem, Update};
use std::collections::HashMap;

fn build(u: aws_sdk_dynamodb::types::builders::UpdateBuilder) -> Result<Update, StoreError> {
    u.build().map_err(|e| StoreError::Dynamo(e.to_string()))
}

/// Counter attribute of an outcome in a shard.
fn counter(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "n_succeeded",
        Outcome::Failed => "n_failed",
        Outcome::Rejected => "n_rejected",
        Outcome::TimedOut => "n_timed_out",
        Outcome::Cancelled => "n_cancelled",
    }
}

/// How a task's end lands in its progress shard.
pub struct EndMark<'a> {
    pub batch_id: &'a str,
    pub idx: u32,
    pub was_started: bool,
    pub outcome: Outcome,
}

impl Store {
    fn shard_key(batch_id: &str, shard: u32) -> Item {
        HashMap::from([
            ("batch_id".to_string(), s(batch_id)),
            ("shard".to_string(), n(shard)),
        ])
    }

    /// Empty progress shards for a batch (written with its task records, before dispatch).
    pub async fn init_progress(&self, batch_id: &str, total: u32) -> Result<(), StoreError> {
        let shards: Vec<ShardRecord> = (0..shard_count(total))
            .map(|sh| ShardRecord {
                batch_id: batch_id.to_string(),
                shard: sh,
                size: shard_len(total, sh),
                started: Default::default(),
                ended: Default::default(),
                n_started: 0,
                n_ended_unstarted: 0,
                n_succeeded: 0,
                n_failed: 0,
                n_rejected: 0,
                n_timed_out: 0,
                n_cancelled: 0,
            })
            .collect();
        let items = shards
            .iter()
            .map(|sh| {
                let mut item = to_item(sh)?;
                // Empty maps must exist so that `SET started.#i` has a parent.
                item.insert("started".into(), AttributeValue::M(HashMap::new()));
                item.insert("ended".into(), AttributeValue::M(HashMap::new()));
                Ok(item)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.batch_put(&self.tables().progress, items).await
    }

    pub async fn get_progress(&self, batch_id: &str) -> Result<Vec<ShardRecord>, StoreError> {
        let q = super::exports::PageQuery {
            table: &self.tables().progress,
            index: None,
            key_condition: "batch_id = :b",
            values: vec![(":b", s(batch_id))],
        };
        self.query_all(&q, true).await
    }

    pub async fn get_shard(
        &self,
        batch_id: &str,
        shard: u32,
    ) -> Result<Option<ShardRecord>, StoreError> {
        self.get(&self.tables().progress, Self::shard_key(batch_id, shard))
            .await
    }

    /// Records that a task started; false if it already had (or had already ended).
    pub async fn mark_started(&self, batch_id: &str, idx: u32) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().progress)
            .set_key(Some(Self::shard_key(batch_id, shard_of(idx))))
            .update_expression("SET started.#i = :one ADD n_started :one")
            .condition_expression(
                "attribute_not_exists(started.#i) AND attribute_not_exists(ended.#i)",
            )
            .expression_attribute_names("#i", idx.to_string())
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    /// The exactly-once mark of a task's end, as an update for a transaction (refunds).
    pub fn end_mark_update(&self, m: &EndMark<'_>) -> Result<Update, StoreError> {
        let mut expr = format!("SET ended.#i = :o ADD {} :one", counter(m.outcome));
        if !m.was_started {
            expr.push_str(", n_ended_unstarted :one");
        }
        let started_cond = if m.was_started {
            "attribute_exists(started.#i)"
        } else {
            "attribute_not_exists(started.#i)"
        };
        build(
            Update::builder()
                .table_name(&self.tables().progress)
                .set_key(Some(Self::shard_key(m.batch_id, shard_of(m.idx))))
                .update_expression(expr)
                .condition_expression(format!("attribute_not_exists(ended.#i) AND {started_cond}"))
                .expression_attribute_names("#i", m.idx.to_string())
                .expression_attribute_values(":o", s(m.outcome.as_str()))
                .expression_attribute_values(":one", n(1)),
        )
    }

    /// The same mark on its own (outcomes that move no money). `Ok(false)`: the condition
    /// failed (already ended, or the started flag changed under us).
    pub async fn end_mark(&self, m: &EndMark<'_>) -> Result<bool, StoreError> {
        let u = self.end_mark_update(m)?;
        let res = self
            .ddb
            .update_item()
            .table_name(u.table_name())
            .set_key(Some(u.key().clone()))
            .update_expression(u.update_expression())
            .set_condition_expression(u.condition_expression().map(str::to_string))
            .set_expression_attribute_names(u.expression_attribute_names().cloned())
            .set_expression_attribute_values(u.expression_attribute_values().cloned())
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    /// Adds a refund to the batch's own tally (in the refund's transaction).
    pub fn batch_refund_update(
        &self,
        account_id: &str,
        batch_id: &str,
        amount: i64,
    ) -> Result<Update, StoreError> {
        build(
            Update::builder()
                .table_name(&self.tables().batches)
                .key("account_id", s(account_id))
                .key("batch_id", s(batch_id))
                .update_expression("SET credits.refunded = credits.refunded + :a")
                .condition_expression("attribute_exists(batch_id)")
                .expression_attribute_values(":a", n(amount)),
        )
    }

    pub async fn get_task(
        &self,
        batch_id: &str,
        idx: u32,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let key = HashMap::from([
            ("batch_id".to_string(), s(batch_id)),
            ("idx".to_string(), n(idx)),
        ]);
        self.get(&self.tables().tasks, key).await
    }

    /// Writes the new state of a task if it is still in `expected` status. False if not.
    pub async fn save_task(
        &self,
        task: &TaskRecord,
        expected: TaskStatus,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.tables().tasks)
            .set_item(Some(to_item(task)?))
            .condition_expression("#st = :expected")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":expected", to_status(expected))
            .send()
            .await;
        applied(res, "PutItem")
    }

    /// Takes one of the account's concurrency slots if fewer than `max` are taken.
    pub async fn acquire_slot(&self, account_id: &str, max: u32) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().accounts)
            .key("account_id", s(account_id))
            .update_expression("ADD running :one")
            .condition_expression("attribute_not_exists(running) OR running < :max")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    pub async fn release_slot(&self, account_id: &str) -> Result<(), StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().accounts)
            .key("account_id", s(account_id))
            .update_expression("ADD running :minus")
            .condition_expression("running > :zero")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    /// Corrects a leaked slot count, only if nobody moved it since it was read.
    pub async fn reset_slots(
        &self,
        account_id: &str,
        observed: u32,
        actual: u32,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().accounts)
            .key("account_id", s(account_id))
            .update_expression("SET running = :actual")
            .condition_expression("running = :observed")
            .expression_attribute_values(":actual", n(actual))
            .expression_attribute_values(":observed", n(observed))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    /// Claims up to `n` more tasks of the batch for dispatch: the range `[from, to)`.
    pub async fn claim_dispatch(
        &self,
        batch: &BatchRecord,
        want: u32,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        let mut cur = batch.next_dispatch;
        for _ in 0..10 {
            let to = (cur + want).min(batch.task_count);
            if to <= cur {
                return Ok(None);
            }
            let res = self
                .ddb
                .update_item()
                .table_name(&self.tables().batches)
                .key("account_id", s(&batch.account_id))
                .key("batch_id", s(&batch.batch_id))
                .update_expression("SET next_dispatch = :to")
                .condition_expression("next_dispatch = :cur")
                .expression_attribute_values(":to", n(to))
                .expression_attribute_values(":cur", n(cur))
                .return_values(ReturnValue::UpdatedNew)
                .send()
                .await;
            match res {
                Ok(_) => return Ok(Some((cur, to))),
                Err(e) if condition_failed(&e) => {
                    match self.get_batch(&batch.account_id, &batch.batch_id).await? {
                        Some(b) => cur = b.next_dispatch,
                        None => return Ok(None),
                    }
                }
                Err(e) => return Err(dynamo_err("UpdateItem", e)),
            }
        }
        Ok(None)
    }

    /// Claims every task not yet dispatched: `[next_dispatch, task_count)`.
    pub async fn claim_dispatch_all(
        &self,
        batch: &BatchRecord,
    ) -> Result<Option<(u32, u32)>, StoreError> {
        self.claim_dispatch(batch, batch.task_count).await
    }

    pub async fn note_slot_audit(&self, account_id: &str, seen: &str) -> Result<(), StoreError> {
        self.ddb
            .update_item()
            .table_name(&self.tables().accounts)
            .key("account_id", s(account_id))
            .update_expression("SET slot_audit = :s")
            .expression_attribute_values(":s", s(seen))
            .send()
            .await
            .map_err(|e| dynamo_err("UpdateItem", e))?;
        Ok(())
    }

    pub async fn touch_batch(
        &self,
        account_id: &str,
        batch_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.ddb
            .update_item()
            .table_name(&self.tables().batches)
            .key("account_id", s(account_id))
            .key("batch_id", s(batch_id))
            .update_expression("SET last_progress_ms = :now")
            .condition_expression("attribute_exists(batch_id)")
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if condition_failed(&e) {
                    Ok(())
                } else {
                    Err(dynamo_err("UpdateItem", e))
                }
            })
    }

    /// Marks the batch for cancellation; false if it had already settled.
    pub async fn request_cancel(
        &self,
        account_id: &str,
        batch_id: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().batches)
            .key("account_id", s(account_id))
            .key("batch_id", s(batch_id))
            .update_expression("SET cancel_requested = :t")
            .condition_expression("attribute_exists(batch_id) AND #st <> :completed")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":completed", s(BatchStatus::Completed.as_str()))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    /// Settlement, exactly once: the batch becomes `completed` with its settlement record and
    /// the account's held credits become charged, in one transaction.
    pub async fn settle_batch(
        &self,
        batch: &BatchRecord,
        st: &Settlement,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let settlement =
            serde_dynamo::to_attribute_value(st).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let b = build(
            Update::builder()
                .table_name(&self.tables().batches)
                .key("account_id", s(&batch.account_id))
                .key("batch_id", s(&batch.batch_id))
                .update_expression("SET #st = :completed, settlement = :s, completed_ms = :now, credits.charged = :charged REMOVE open_shard")
                .condition_expression("#st <> :completed AND credits.refunded = :refunded")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":completed", s(BatchStatus::Completed.as_str()))
                .expression_attribute_values(":s", settlement)
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":charged", n(st.charged.value()))
                .expression_attribute_values(":refunded", n(st.refunded.value())),
        )?;
        let a = build(
            Update::builder()
                .table_name(&self.tables().accounts)
                .key("account_id", s(&batch.account_id))
                .update_expression(
                    "SET held = held - :charged, lifetime_charged = lifetime_charged + :charged",
                )
                .expression_attribute_values(":charged", n(st.charged.value())),
        )?;
        let res = self
            .ddb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(b).build())
            .transact_items(TransactWriteItem::builder().update(a).build())
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => {
                // Only the batch's own condition failing means "settled already" (or its
                // refunds moved meanwhile); a conflict on the account is retried.
                let batch_condition_failed = match e.as_service_error() {
                    Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(tc)) => tc
                        .cancellation_reasons()
                        .first()
                        .and_then(|r| r.code())
                        == Some("ConditionalCheckFailed"),
                    _ => false,
                };
                if batch_condition_failed {
                    Ok(false)
                } else {
                    Err(dynamo_err("TransactWriteItems", e))
                }
            }
        }
    }

    /// Batches not yet settled: (account_id, batch_id).
    pub async fn open_batches(&self) -> Result<Vec<(String, String)>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.tables().batches)
                .index_name("open")
                .key_condition_expression("open_shard = :o")
                .expression_attribute_values(":o", s("open"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| dynamo_err("Query", e))?;
            for item in page.items.unwrap_or_default() {
                if let (Some(AttributeValue::S(a)), Some(AttributeValue::S(b))) =
                    (item.get("account_id"), item.get("batch_id"))
                {
                    out.push((a.clone(), b.clone()));
                }
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// Task records by index (BatchGetItem, 100 at a time).
    pub async fn get_tasks(
        &self,
        batch_id: &str,
        idxs: &[u32],
    ) -> Result<Vec<TaskRecord>, StoreError> {
        let mut out = Vec::new();
        for chunk in idxs.chunks(100) {
            let keys: Vec<Item> = chunk
                .iter()
                .map(|i| {
                    HashMap::from([
                        ("batch_id".to_string(), s(batch_id)),
                        ("idx".to_string(), n(*i)),
                    ])
                })
                .collect();
            let mut pending = Some(
                aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                    .set_keys(Some(keys))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Dynamo(e.to_string()))?,
            );
            let mut attempt = 0u32;
            while let Some(ka) = pending.take() {
                let resp = self
                    .ddb
                    .batch_get_item()
                    .request_items(&self.tables().tasks, ka)
                    .send()
                    .await
                    .map_err(|e| dynamo_err("BatchGetItem", e))?;
                for item in resp
                    .responses
                    .and_then(|mut r| r.remove(&self.tables().tasks))
                    .unwrap_or_default()
                {
                    out.push(from_item(item)?);
                }
                pending = resp
                    .unprocessed_keys
                    .and_then(|mut m| m.remove(&self.tables().tasks));
                if pending.is_some() {
                    attempt += 1;
                    tokio::time::sleep(super::dynamo::backoff(attempt)).await;
                }
            }
        }
        Ok(out)
    }

    /// Operator status of a model in the catalogue (absent: not set).
    pub async fn get_model_status(&self, model: &str) -> Result<Option<String>, StoreError> {
        let key = HashMap::from([("model".to_string(), s(model))]);
        let item: Option<HashMap<String, AttributeValue>> = self
            .ddb
            .get_item()
            .table_name(&self.tables().models)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?
            .item;
        Ok(item.and_then(|i| match i.get("status") {
            Some(AttributeValue::S(v)) => Some(v.clone()),
            _ => None,
        }))
    }

    pub async fn set_model_status(
        &self,
        model: &str,
        status: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.ddb
            .put_item()
            .table_name(&self.tables().models)
            .item("model", s(model))
            .item("status", s(status))
            .item("reason", s(reason))
            .item("updated_ms", n(now_ms))
            .send()
            .await
            .map_err(|e| dynamo_err("PutItem", e))?;
        Ok(())
    }
}

fn to_status(st: TaskStatus) -> AttributeValue {
    match serde_dynamo::to_attribute_value(st) {
        Ok(v) => v,
        Err(_) => s("queued"),
    }
}
