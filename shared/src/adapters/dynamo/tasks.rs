//! The Tasks table (`batch_id`, `idx`) and the Progress table (`batch_id`, `shard`): a batch's
//! task records and its progress shards with the exactly-once end marks.

use super::{account_key, applied, build, from_item, n, s, to_item, updated, Dynamo, Item, Query};
use crate::domain::task::{one_shard, Outcome};
use crate::ports::records::{BatchRecord, ShardRecord, TaskRecord};
use crate::ports::store::EndMark;
use crate::ports::{Listed, PageToken, PortResult, Progress, Slice, StoreError, Tasks};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Update};
use std::collections::HashMap;

fn task_key(batch_id: &str, idx: u32) -> Item {
    HashMap::from([
        ("batch_id".to_string(), s(batch_id)),
        ("idx".to_string(), n(idx)),
    ])
}

fn shard_key(batch_id: &str, shard: u32) -> Item {
    HashMap::from([
        ("batch_id".to_string(), s(batch_id)),
        ("shard".to_string(), n(shard)),
    ])
}

/// A new shard as stored: its marks' maps exist even when empty, so that
/// `SET started.#i` has a parent. Counters at zero are left out (an `ADD` creates one, a
/// read defaults it to zero, no condition names one): a shard pays for the outcomes it had.
pub(super) fn shard_item(rec: &ShardRecord) -> PortResult<Item> {
    let mut item = to_item(rec)?;
    item.retain(|k, v| !(k.starts_with("n_") && matches!(v, AttributeValue::N(n) if n == "0")));
    item.insert("started".into(), AttributeValue::M(HashMap::new()));
    item.insert("ended".into(), AttributeValue::M(HashMap::new()));
    Ok(item)
}

/// Counter attribute of an outcome in a shard.
fn counter(o: Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "n_succeeded",
        Outcome::Failed => "n_failed",
        Outcome::Rejected => "n_rejected",
        Outcome::TimedOut => "n_timed_out",
        Outcome::Cancelled => "n_cancelled",
        Outcome::Released => "n_released",
    }
}

impl Dynamo {
    /// The exactly-once end marks of tasks of one shard, as one update (alone, or one
    /// mark in a refund's transaction): all land or none.
    pub(super) fn end_mark_update(&self, marks: &[EndMark]) -> PortResult<Update> {
        let idxs: Vec<u32> = marks.iter().map(|m| m.idx).collect();
        let (Some(shard), Some(first)) = (one_shard(&idxs), marks.first()) else {
            return Err(StoreError::Refused {
                op: "UpdateItem",
                detail: format!("end marks of more than one shard, or repeated: {idxs:?}"),
            });
        };
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut cond = vec!["attribute_exists(batch_id)".to_string()];
        let mut adds: std::collections::BTreeMap<&'static str, u32> = Default::default();
        let mut b = Update::builder()
            .table_name(&self.t.progress)
            .set_key(Some(shard_key(&first.batch_id, shard)));
        for (k, m) in marks.iter().enumerate() {
            set.push(format!("ended.#i{k} = :o{k}"));
            *adds.entry(counter(m.outcome)).or_default() += 1;
            if m.was_started {
                // The started mark has done its work once the end is marked (every later
                // step and start sees the end): dropping it keeps a full shard under 1 KB,
                // so each of its marks costs one write unit instead of two near the end.
                remove.push(format!("started.#i{k}"));
                cond.push(format!(
                    "attribute_not_exists(ended.#i{k}) AND attribute_exists(started.#i{k})"
                ));
            } else {
                *adds.entry("n_ended_unstarted").or_default() += 1;
                cond.push(format!(
                    "attribute_not_exists(ended.#i{k}) AND attribute_not_exists(started.#i{k})"
                ));
            }
            b = b
                .expression_attribute_names(format!("#i{k}"), m.idx.to_string())
                .expression_attribute_values(format!(":o{k}"), s(m.outcome.as_str()));
        }
        let mut add = Vec::new();
        for (attr, count) in adds {
            add.push(format!("{attr} :n_{attr}"));
            b = b.expression_attribute_values(format!(":n_{attr}"), n(count));
        }
        let mut expr = format!("SET {} ADD {}", set.join(", "), add.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        build(
            b.update_expression(expr)
                .condition_expression(cond.join(" AND ")),
        )
    }
}

#[async_trait]
impl Tasks for Dynamo {
    async fn put_all(&self, tasks: &[TaskRecord]) -> PortResult<()> {
        let items = tasks.iter().map(to_item).collect::<Result<Vec<_>, _>>()?;
        self.batch_put(&self.t.tasks, items).await
    }

    async fn get(&self, batch_id: &str, idx: u32) -> PortResult<Option<TaskRecord>> {
        Dynamo::get(self, &self.t.tasks, task_key(batch_id, idx)).await
    }

    async fn get_with_batch(
        &self,
        account_id: &str,
        batch_id: &str,
        idx: u32,
    ) -> PortResult<(Option<BatchRecord>, Option<TaskRecord>)> {
        let mut got = self
            .batch_get_tables(vec![
                (
                    self.t.batches.as_str(),
                    vec![account_key("batch_id", account_id, batch_id)],
                ),
                (self.t.tasks.as_str(), vec![task_key(batch_id, idx)]),
            ])
            .await?;
        let mut one = |table: &str| got.remove(table).and_then(|mut v| v.pop());
        let batch = one(&self.t.batches).map(from_item).transpose()?;
        let task = one(&self.t.tasks).map(from_item).transpose()?;
        Ok((batch, task))
    }

    async fn get_many(&self, batch_id: &str, idxs: &[u32]) -> PortResult<Vec<TaskRecord>> {
        let keys: Vec<Item> = idxs.iter().map(|i| task_key(batch_id, *i)).collect();
        self.batch_get(&self.t.tasks, keys)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    async fn put_missing(&self, tasks: &[TaskRecord]) -> PortResult<usize> {
        let mut written = 0;
        for chunk in tasks.chunks(8) {
            let puts = chunk.iter().map(|t| async move {
                let res = self
                    .ddb
                    .put_item()
                    .table_name(&self.t.tasks)
                    .set_item(Some(to_item(t)?))
                    .condition_expression("attribute_not_exists(idx)")
                    .send()
                    .await;
                applied(res, "PutItem")
            });
            for w in futures_util::future::join_all(puts).await {
                written += usize::from(w?);
            }
        }
        Ok(written)
    }

    async fn save(&self, task: &TaskRecord, expected_version: u64) -> PortResult<bool> {
        // Records from before versions count as version 0.
        let condition = if expected_version == 0 {
            "attribute_exists(idx) AND (attribute_not_exists(version) OR version = :v)"
        } else {
            "version = :v"
        };
        let res = self
            .ddb
            .put_item()
            .table_name(&self.t.tasks)
            .set_item(Some(to_item(task)?))
            .condition_expression(condition)
            .expression_attribute_values(":v", n(expected_version))
            .send()
            .await;
        applied(res, "PutItem")
    }

    async fn list(
        &self,
        batch_id: &str,
        limit: usize,
        after_idx: Option<u32>,
    ) -> PortResult<Listed<TaskRecord>> {
        let q = Query::new(&self.t.tasks, "batch_id = :b").value(":b", s(batch_id));
        let start = after_idx.map(|i| task_key(batch_id, i));
        self.query_list(&q, limit, start).await
    }

    async fn page(
        &self,
        batch_id: &str,
        after: Option<PageToken>,
    ) -> PortResult<Slice<TaskRecord>> {
        let q = Query::new(&self.t.tasks, "batch_id = :b").value(":b", s(batch_id));
        self.query_slice(&q, after).await
    }
}

#[async_trait]
impl Progress for Dynamo {
    async fn init(&self, batch_id: &str, total: u32) -> PortResult<()> {
        for rec in ShardRecord::all_empty(batch_id, total) {
            let item = shard_item(&rec)?;
            let res = self
                .ddb
                .put_item()
                .table_name(&self.t.progress)
                .set_item(Some(item))
                // The key attributes exist on every item, so this is "no such shard yet" (`shard`
                // itself is a reserved word).
                .condition_expression("attribute_not_exists(batch_id)")
                .send()
                .await;
            applied(res, "PutItem")?;
        }
        Ok(())
    }

    async fn all(&self, batch_id: &str) -> PortResult<Vec<ShardRecord>> {
        let q = Query::new(&self.t.progress, "batch_id = :b").value(":b", s(batch_id));
        self.query_all(&q).await
    }

    async fn shard(&self, batch_id: &str, shard: u32) -> PortResult<Option<ShardRecord>> {
        Dynamo::get(self, &self.t.progress, shard_key(batch_id, shard)).await
    }

    async fn mark_started(&self, batch_id: &str, idxs: &[u32]) -> PortResult<bool> {
        if idxs.is_empty() {
            return Ok(true);
        }
        let shard = one_shard(idxs).ok_or_else(|| StoreError::Refused {
            op: "UpdateItem",
            detail: format!("start marks of more than one shard, or repeated: {idxs:?}"),
        })?;
        // One write for all of them: `#iN` names the Nth task's key in both maps.
        let mut set = Vec::with_capacity(idxs.len());
        let mut cond = vec!["attribute_exists(batch_id)".to_string()];
        let mut names = HashMap::with_capacity(idxs.len());
        for (k, idx) in idxs.iter().enumerate() {
            set.push(format!("started.#i{k} = :one"));
            cond.push(format!(
                "attribute_not_exists(started.#i{k}) AND attribute_not_exists(ended.#i{k})"
            ));
            names.insert(format!("#i{k}"), idx.to_string());
        }
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.progress)
            .set_key(Some(shard_key(batch_id, shard)))
            .update_expression(format!("SET {} ADD n_started :k", set.join(", ")))
            .condition_expression(cond.join(" AND "))
            .set_expression_attribute_names(Some(names))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":k", n(idxs.len()))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn end_mark(&self, marks: &[EndMark]) -> PortResult<Option<ShardRecord>> {
        let u = self.end_mark_update(marks)?;
        let res = self
            .ddb
            .update_item()
            .table_name(u.table_name())
            .set_key(Some(u.key().clone()))
            .update_expression(u.update_expression())
            .set_condition_expression(u.condition_expression().map(str::to_string))
            .set_expression_attribute_names(u.expression_attribute_names().cloned())
            .set_expression_attribute_values(u.expression_attribute_values().cloned())
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
            .send()
            .await;
        updated(res)
    }
}

#[cfg(test)]
mod tests {
    use super::super::item_size;
    use super::*;

    /// The item of shard `shard` once every task in it has ended with `outcome`, each
    /// started mark removed by its task's end.
    fn full_shard(shard: u32, outcome: Outcome) -> Item {
        let size = crate::domain::task::SHARD_SIZE;
        let mut rec = ShardRecord::empty("bat_0123456789ABCDEFGHJKMNPQRS", shard, size);
        rec.n_started = size;
        let mut ended = HashMap::new();
        for idx in shard * size..(shard + 1) * size {
            ended.insert(idx.to_string(), s(outcome.as_str()));
        }
        let mut item = shard_item(&rec).expect("item");
        item.insert("ended".into(), AttributeValue::M(ended));
        item.insert(counter(outcome).into(), n(size));
        item
    }

    /// A full shard costs one write unit per mark for batches of up to 10,000 tasks (indices
    /// of up to four digits): each end removes its task's started mark, and counters at zero
    /// are not stored. (With the started marks kept, a full shard was about 1.4 KB: the last
    /// fifth of its marks cost two units each.)
    #[test]
    fn a_full_shard_stays_under_one_kb_up_to_ten_thousand_tasks() {
        // The last whole shard of a 10,000-task batch: the longest indices, four digits.
        let last = 10_000 / crate::domain::task::SHARD_SIZE - 1;
        for shard in [0, 1, 10, last] {
            for outcome in Outcome::ALL {
                let size = item_size(&full_shard(shard, outcome));
                assert!(size < 1024, "shard {shard}, {outcome:?}: {size} bytes");
            }
        }
    }
}
