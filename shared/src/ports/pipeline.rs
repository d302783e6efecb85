//! The task pipeline's state: batches, their task records and progress shards.

use super::common::{Listed, PageToken, PortResult, Slice};
use super::records::{BatchRecord, ShardRecord, TaskRecord};
use super::store::EndMark;
use crate::domain::batch::BatchStatus;
use async_trait::async_trait;

#[async_trait]
pub trait Batches: Send + Sync {
    /// Strongly consistent. Batches are created through `Money::commit` (with their hold).
    async fn get(&self, account_id: &str, batch_id: &str) -> PortResult<Option<BatchRecord>>;
    /// Newest first (ids sort by time), optionally of one stored status.
    async fn list(
        &self,
        account_id: &str,
        status: Option<BatchStatus>,
        limit: usize,
        before: Option<String>,
    ) -> PortResult<Listed<BatchRecord>>;
    /// Every batch of an account, oldest first, a page at a time; eventually consistent.
    async fn page(
        &self,
        account_id: &str,
        after: Option<PageToken>,
    ) -> PortResult<Slice<BatchRecord>>;
    /// `accepted -> queued` once every task record exists. Returns the batch as it was
    /// written, or `None` if it was not `accepted` (already queued by a concurrent recovery,
    /// which is fine, or absent).
    async fn mark_queued(
        &self,
        account_id: &str,
        batch_id: &str,
    ) -> PortResult<Option<BatchRecord>>;
    /// Takes the materialize lease of an `accepted` batch whose lease ran out before `now_ms`.
    async fn take_lease(
        &self,
        account_id: &str,
        batch_id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool>;
    /// Moves `next_dispatch` from `from` to `to` (and `dispatched_ms` to `now_ms`); false if
    /// it is no longer `from`.
    async fn advance_dispatch(
        &self,
        account_id: &str,
        batch_id: &str,
        from: u32,
        to: u32,
        now_ms: i64,
    ) -> PortResult<bool>;
    /// Claims the next `want` undispatched tasks with one atomic add, when at least `want`
    /// are left (`next_dispatch + want <= task_count`): the range `[from, to)` now owned by
    /// the caller, with no read before it. `None` when fewer are left (the caller reads and
    /// claims the tail with `advance_dispatch`) or the batch is absent.
    async fn claim_next(
        &self,
        account_id: &str,
        batch_id: &str,
        want: u32,
        task_count: u32,
        now_ms: i64,
    ) -> PortResult<Option<(u32, u32)>>;
    /// Sets `cancel_requested`; false if the batch is completed or absent.
    async fn request_cancel(&self, account_id: &str, batch_id: &str) -> PortResult<bool>;
    /// Batches not yet settled (the sparse `open` index): (account_id, batch_id). Eventually
    /// consistent.
    async fn open(&self) -> PortResult<Vec<(String, String)>>;
}

#[async_trait]
pub trait Tasks: Send + Sync {
    /// Writes new task records unconditionally, in batches: only for the first writer of a
    /// batch, which no one else can have written yet.
    async fn put_all(&self, tasks: &[TaskRecord]) -> PortResult<()>;
    /// Writes the task records that do not exist yet, each conditionally (recovery: what
    /// exists may have moved on and must not be reset). Returns how many it wrote.
    async fn put_missing(&self, tasks: &[TaskRecord]) -> PortResult<usize>;
    async fn get(&self, batch_id: &str, idx: u32) -> PortResult<Option<TaskRecord>>;
    /// A task and its batch, each strongly consistent, in one round trip (the worker reads
    /// both at every step). Not a snapshot: each item is as current as its own read would be.
    /// (The batch is read consistently: a step that starts a task must see a cancel the
    /// customer was already answered for, and a batch created a moment ago must be found.)
    async fn get_with_batch(
        &self,
        account_id: &str,
        batch_id: &str,
        idx: u32,
    ) -> PortResult<(Option<BatchRecord>, Option<TaskRecord>)>;
    /// The records of these indexes that exist, strongly consistent.
    async fn get_many(&self, batch_id: &str, idxs: &[u32]) -> PortResult<Vec<TaskRecord>>;
    /// Writes the new state of a task if it still has `expected_version` (the version it was
    /// read at); `task.version` must be the next one. False if someone saved it meanwhile.
    async fn save(&self, task: &TaskRecord, expected_version: u64) -> PortResult<bool>;
    /// In submission order, after `after_idx`.
    async fn list(
        &self,
        batch_id: &str,
        limit: usize,
        after_idx: Option<u32>,
    ) -> PortResult<Listed<TaskRecord>>;
    /// Every task of a batch, in order, a page at a time; eventually consistent.
    async fn page(&self, batch_id: &str, after: Option<PageToken>)
        -> PortResult<Slice<TaskRecord>>;
}

/// Progress shards: per 64 tasks (`domain::task::SHARD_SIZE`), which started and how each ended (the exactly-once end
/// mark that refunds are conditioned on).
#[async_trait]
pub trait Progress: Send + Sync {
    /// Empty shards for a batch of `total` tasks; a shard that exists is left as it is (it may
    /// hold end marks already).
    async fn init(&self, batch_id: &str, total: u32) -> PortResult<()>;
    /// All of a batch's shards, strongly consistent.
    async fn all(&self, batch_id: &str) -> PortResult<Vec<ShardRecord>>;
    async fn shard(&self, batch_id: &str, shard: u32) -> PortResult<Option<ShardRecord>>;
    /// Marks tasks of one shard started, in one write: all of them, or none (false) if any
    /// had started or ended already. The indices must be distinct and in one shard (else
    /// `StoreError::Refused`); none is a no-op that lands.
    async fn mark_started(&self, batch_id: &str, idxs: &[u32]) -> PortResult<bool>;
    /// End marks on their own (outcomes that move no money), of tasks of one shard, in one
    /// write: all of them, and the shard as written (so the caller learns whether the shard,
    /// or the batch, is done without reading it again), or none and `None` if any one's
    /// condition failed. The tasks must be distinct and in one shard (else
    /// `StoreError::Refused`).
    async fn end_mark(&self, marks: &[EndMark]) -> PortResult<Option<ShardRecord>>;
}
