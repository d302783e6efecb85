//! Batches, task records and progress shards, in memory.

use super::{listed, partition, refused, slice, Memory};
use crate::domain::batch::BatchStatus;
use crate::domain::task::one_shard;
use crate::ports::records::{BatchRecord, ShardRecord, TaskRecord};
use crate::ports::store::EndMark;
use crate::ports::{Batches, Listed, PageToken, PortResult, Progress, Slice, Tasks};
use async_trait::async_trait;

fn bkey(account_id: &str, batch_id: &str) -> (String, String) {
    (account_id.to_string(), batch_id.to_string())
}

#[async_trait]
impl Batches for Memory {
    async fn get(&self, account_id: &str, batch_id: &str) -> PortResult<Option<BatchRecord>> {
        self.pause().await;
        Ok(self
            .lock()
            .batches
            .get(&bkey(account_id, batch_id))
            .cloned())
    }

    async fn list(
        &self,
        account_id: &str,
        status: Option<BatchStatus>,
        limit: usize,
        before: Option<String>,
    ) -> PortResult<Listed<BatchRecord>> {
        self.pause().await;
        let st = self.lock();
        let items = st
            .batches
            .range(partition(account_id))
            .filter(|(k, _)| before.as_ref().is_none_or(|b| &k.1 < b))
            .rev()
            .map(|(_, b)| (status.is_none_or(|s| b.status == s), b.clone()));
        let out = listed(items, limit);
        Ok(out)
    }

    async fn page(
        &self,
        account_id: &str,
        after: Option<PageToken>,
    ) -> PortResult<Slice<BatchRecord>> {
        self.pause().await;
        let st = self.lock();
        let items = st
            .batches
            .range(partition(account_id))
            .map(|(k, b)| (k.1.clone(), b.clone()));
        slice(items, after)
    }

    async fn mark_queued(
        &self,
        account_id: &str,
        batch_id: &str,
    ) -> PortResult<Option<BatchRecord>> {
        self.pause().await;
        let mut st = self.lock();
        let k = bkey(account_id, batch_id);
        if !st
            .batches
            .get(&k)
            .is_some_and(|b| b.status == BatchStatus::Accepted)
        {
            return Ok(None);
        }
        st.batches.update(&k, |b| b.status = BatchStatus::Queued);
        Ok(st.batches.get(&k).cloned())
    }

    async fn take_lease(
        &self,
        account_id: &str,
        batch_id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = bkey(account_id, batch_id);
        let free = st
            .batches
            .get(&k)
            .is_some_and(|b| b.status == BatchStatus::Accepted && b.lease_until_ms < now_ms);
        if free {
            st.batches.update(&k, |b| b.lease_until_ms = until_ms);
        }
        Ok(free)
    }

    async fn advance_dispatch(
        &self,
        account_id: &str,
        batch_id: &str,
        from: u32,
        to: u32,
        now_ms: i64,
    ) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = bkey(account_id, batch_id);
        if st.batches.get(&k).is_none_or(|b| b.next_dispatch != from) {
            return Ok(false);
        }
        st.batches.update(&k, |b| {
            b.next_dispatch = to;
            b.dispatched_ms = now_ms;
        });
        Ok(true)
    }

    async fn claim_next(
        &self,
        account_id: &str,
        batch_id: &str,
        want: u32,
        task_count: u32,
        now_ms: i64,
    ) -> PortResult<Option<(u32, u32)>> {
        self.pause().await;
        let mut st = self.lock();
        let k = bkey(account_id, batch_id);
        let Some(from) = st.batches.get(&k).map(|b| b.next_dispatch) else {
            return Ok(None);
        };
        if want == 0 || from.saturating_add(want) > task_count {
            return Ok(None);
        }
        st.batches.update(&k, |b| {
            b.next_dispatch = from + want;
            b.dispatched_ms = now_ms;
        });
        Ok(Some((from, from + want)))
    }

    async fn request_cancel(&self, account_id: &str, batch_id: &str) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = bkey(account_id, batch_id);
        if st
            .batches
            .get(&k)
            .is_none_or(|b| b.status == BatchStatus::Completed)
        {
            return Ok(false);
        }
        st.batches.update(&k, |b| b.cancel_requested = true);
        Ok(true)
    }

    async fn open(&self) -> PortResult<Vec<(String, String)>> {
        self.pause().await;
        // A global index: eventually consistent.
        let view = self.lock().batches.view(self.stale());
        Ok(view
            .into_iter()
            .filter(|(_, b)| b.open_shard.is_some())
            .map(|(k, _)| k)
            .collect())
    }
}

fn tkey(batch_id: &str, idx: u32) -> (String, u32) {
    (batch_id.to_string(), idx)
}

#[async_trait]
impl Tasks for Memory {
    async fn put_all(&self, tasks: &[TaskRecord]) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        for t in tasks {
            st.tasks.put(tkey(&t.batch_id, t.idx), t.clone());
        }
        Ok(())
    }

    async fn get(&self, batch_id: &str, idx: u32) -> PortResult<Option<TaskRecord>> {
        self.pause().await;
        Ok(self.lock().tasks.get(&tkey(batch_id, idx)).cloned())
    }

    async fn get_with_batch(
        &self,
        account_id: &str,
        batch_id: &str,
        idx: u32,
    ) -> PortResult<(Option<BatchRecord>, Option<TaskRecord>)> {
        // Two reads with a pause between, as DynamoDB's: one request, no snapshot.
        let batch = Batches::get(self, account_id, batch_id).await?;
        let task = Tasks::get(self, batch_id, idx).await?;
        Ok((batch, task))
    }

    async fn get_many(&self, batch_id: &str, idxs: &[u32]) -> PortResult<Vec<TaskRecord>> {
        self.pause().await;
        let st = self.lock();
        Ok(idxs
            .iter()
            .filter_map(|i| st.tasks.get(&tkey(batch_id, *i)).cloned())
            .collect())
    }

    async fn put_missing(&self, tasks: &[TaskRecord]) -> PortResult<usize> {
        self.pause().await;
        let mut st = self.lock();
        let mut written = 0;
        for t in tasks {
            let k = tkey(&t.batch_id, t.idx);
            if !st.tasks.contains(&k) {
                st.tasks.put(k, t.clone());
                written += 1;
            }
        }
        Ok(written)
    }

    async fn save(&self, task: &TaskRecord, expected_version: u64) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = tkey(&task.batch_id, task.idx);
        if st
            .tasks
            .get(&k)
            .is_none_or(|t| t.version != expected_version)
        {
            return Ok(false);
        }
        st.tasks.put(k, task.clone());
        Ok(true)
    }

    async fn list(
        &self,
        batch_id: &str,
        limit: usize,
        after_idx: Option<u32>,
    ) -> PortResult<Listed<TaskRecord>> {
        self.pause().await;
        let st = self.lock();
        let from = after_idx.map_or(0, |i| i.saturating_add(1));
        let items = st
            .tasks
            .range(tkey(batch_id, from)..=tkey(batch_id, u32::MAX))
            .filter(|_| after_idx != Some(u32::MAX))
            .map(|(_, t)| (true, t.clone()));
        Ok(listed(items, limit))
    }

    async fn page(
        &self,
        batch_id: &str,
        after: Option<PageToken>,
    ) -> PortResult<Slice<TaskRecord>> {
        self.pause().await;
        let st = self.lock();
        let items = st
            .tasks
            .range(tkey(batch_id, 0)..=tkey(batch_id, u32::MAX))
            .map(|(k, t)| (k.1, t.clone()));
        slice(items, after)
    }
}

#[async_trait]
impl Progress for Memory {
    async fn init(&self, batch_id: &str, total: u32) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        for rec in ShardRecord::all_empty(batch_id, total) {
            let k = tkey(batch_id, rec.shard);
            if !st.progress.contains(&k) {
                st.progress.put(k, rec);
            }
        }
        Ok(())
    }

    async fn all(&self, batch_id: &str) -> PortResult<Vec<ShardRecord>> {
        self.pause().await;
        let st = self.lock();
        Ok(st
            .progress
            .range(tkey(batch_id, 0)..=tkey(batch_id, u32::MAX))
            .map(|(_, s)| s.clone())
            .collect())
    }

    async fn shard(&self, batch_id: &str, shard: u32) -> PortResult<Option<ShardRecord>> {
        self.pause().await;
        Ok(self.lock().progress.get(&tkey(batch_id, shard)).cloned())
    }

    async fn mark_started(&self, batch_id: &str, idxs: &[u32]) -> PortResult<bool> {
        if idxs.is_empty() {
            return Ok(true);
        }
        let shard = one_shard(idxs).ok_or_else(|| {
            refused(
                "UpdateItem",
                format!("start marks of more than one shard, or repeated: {idxs:?}"),
            )
        })?;
        self.pause().await;
        let mut st = self.lock();
        let k = tkey(batch_id, shard);
        let keys: Vec<String> = idxs.iter().map(u32::to_string).collect();
        let fresh = st.progress.get(&k).is_some_and(|s| {
            keys.iter()
                .all(|key| !s.started.contains_key(key) && !s.ended.contains_key(key))
        });
        if fresh {
            st.progress.update(&k, |s| {
                for key in keys {
                    s.started.insert(key, 1);
                    s.n_started += 1;
                }
            });
        }
        Ok(fresh)
    }

    async fn end_mark(&self, marks: &[EndMark]) -> PortResult<Option<ShardRecord>> {
        let idxs: Vec<u32> = marks.iter().map(|m| m.idx).collect();
        let (Some(shard), Some(first)) = (one_shard(&idxs), marks.first()) else {
            return Err(refused(
                "UpdateItem",
                format!("end marks of more than one shard, or repeated: {idxs:?}"),
            ));
        };
        self.pause().await;
        let mut st = self.lock();
        for m in marks {
            if !st.end_mark_holds(m)? {
                return Ok(None);
            }
        }
        for m in marks {
            st.apply_end_mark(m);
        }
        Ok(st.progress.get(&tkey(&first.batch_id, shard)).cloned())
    }
}
