//! Start marks that wait: while a task-worker invocation runs its messages, the tasks they
//! start collect here, and each shard's go in one write (`Progress::mark_started` with all of
//! them) when the invocation ends, instead of one write each. The tasks an invocation starts
//! are mostly the ones the invocation before it dispatched, consecutive indices of one
//! batch: a few to a shard, and DynamoDB bills a write by the item's size, not by how many
//! marks it sets.
//!
//! A start mark decides nothing a task's own record does not: the start is the record's
//! conditional save, and a task ended by someone else meanwhile stops at its next save (the
//! job id's, which finds the record moved on and cancels the job upstream). What the mark
//! gives is the shard's count of running tasks, and whether an end was of a started task;
//! so waiting costs nothing in money or in the crash story (`docs/ARCHITECTURE.md`, "Start
//! marks wait for the invocation's end"). Reads see the marks held for what they read: a
//! read of a shard, or of a batch's shards, and an end mark, write that shard's held marks
//! first (a failure there is logged, not the read's: the marks are counts only).

use crate::domain::task::shard_of;
use crate::ports::records::ShardRecord;
use crate::ports::store::EndMark;
use crate::ports::{PortResult, Progress};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

/// Held marks by (batch, shard).
type Held = BTreeMap<(String, u32), BTreeSet<u32>>;

pub struct HeldStarts {
    inner: Arc<dyn Progress>,
    held: Mutex<Held>,
}

impl HeldStarts {
    pub fn new(inner: Arc<dyn Progress>) -> Self {
        HeldStarts {
            inner,
            held: Mutex::default(),
        }
    }

    /// Writes every held mark, one write per shard. A mark that does not land (its task
    /// ended first, or the write failed) is left out: its task counts as queued until it
    /// ends, then as ended before starting, and the shard's counts stay whole. Every shard is
    /// tried; the first error is returned.
    pub async fn flush(&self) -> PortResult<()> {
        self.write_where(|_| true).await
    }

    /// Writes the held marks whose (batch, shard) `pick` selects.
    async fn write_where(&self, pick: impl Fn(&(String, u32)) -> bool) -> PortResult<()> {
        let taken: Vec<((String, u32), BTreeSet<u32>)> = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<(String, u32)> = held.keys().filter(|k| pick(k)).cloned().collect();
            keys.into_iter()
                .filter_map(|k| held.remove(&k).map(|v| (k, v)))
                .collect()
        };
        let mut first_error = None;
        for ((batch_id, _), idxs) in taken {
            if let Err(e) = self.write(&batch_id, idxs.into_iter().collect()).await {
                tracing::error!(%batch_id, error = %e, "start marks not written");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// One shard's marks in one write; if one of them is refused (its task ended first, or a
    /// twin of its step marked it), the others one by one.
    async fn write(&self, batch_id: &str, idxs: Vec<u32>) -> PortResult<()> {
        if self.inner.mark_started(batch_id, &idxs).await? || idxs.len() == 1 {
            return Ok(());
        }
        for idx in idxs {
            self.inner.mark_started(batch_id, &[idx]).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Progress for HeldStarts {
    async fn init(&self, batch_id: &str, total: u32) -> PortResult<()> {
        self.inner.init(batch_id, total).await
    }

    // A held mark that fails to go in on the way to a read is logged (`write_where`) and
    // left out, as at the invocation's end: the read goes on, and sees the shard without it.

    async fn all(&self, batch_id: &str) -> PortResult<Vec<ShardRecord>> {
        let _ = self.write_where(|(b, _)| b == batch_id).await;
        self.inner.all(batch_id).await
    }

    async fn shard(&self, batch_id: &str, shard: u32) -> PortResult<Option<ShardRecord>> {
        let _ = self
            .write_where(|(b, s)| b == batch_id && *s == shard)
            .await;
        self.inner.shard(batch_id, shard).await
    }

    /// Held, not written: true, as if it landed. (A start the mark would have refused is
    /// one whose task ended first; its record's next save finds that out.)
    async fn mark_started(&self, batch_id: &str, idxs: &[u32]) -> PortResult<bool> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for idx in idxs {
            held.entry((batch_id.to_string(), shard_of(*idx)))
                .or_default()
                .insert(*idx);
        }
        Ok(true)
    }

    async fn end_mark(&self, marks: &[EndMark]) -> PortResult<Option<ShardRecord>> {
        let _ = self
            .write_where(|(b, s)| {
                marks
                    .iter()
                    .any(|m| &m.batch_id == b && shard_of(m.idx) == *s)
            })
            .await;
        self.inner.end_mark(marks).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::Memory;
    use crate::domain::task::Outcome;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The twin, counting the writes that reach it.
    struct Counted {
        inner: Arc<Memory>,
        writes: AtomicUsize,
    }

    #[async_trait]
    impl Progress for Counted {
        async fn init(&self, batch_id: &str, total: u32) -> PortResult<()> {
            self.inner.init(batch_id, total).await
        }
        async fn all(&self, batch_id: &str) -> PortResult<Vec<ShardRecord>> {
            self.inner.all(batch_id).await
        }
        async fn shard(&self, batch_id: &str, shard: u32) -> PortResult<Option<ShardRecord>> {
            self.inner.shard(batch_id, shard).await
        }
        async fn mark_started(&self, batch_id: &str, idxs: &[u32]) -> PortResult<bool> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.mark_started(batch_id, idxs).await
        }
        async fn end_mark(&self, marks: &[EndMark]) -> PortResult<Option<ShardRecord>> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.end_mark(marks).await
        }
    }

    async fn setup() -> (Arc<Counted>, HeldStarts) {
        let counted = Arc::new(Counted {
            inner: Arc::new(Memory::new()),
            writes: AtomicUsize::new(0),
        });
        counted.init("bat_1", 200).await.unwrap();
        let held = HeldStarts::new(counted.clone());
        (counted, held)
    }

    fn started(s: &Option<ShardRecord>) -> (u32, Vec<String>) {
        let s = s.as_ref().unwrap();
        (s.n_started, s.started.keys().cloned().collect())
    }

    #[tokio::test]
    async fn marks_wait_for_the_flush_and_go_one_write_per_shard() {
        let (counted, held) = setup().await;
        for idx in [3, 1, 2, 70, 71] {
            assert!(held.mark_started("bat_1", &[idx]).await.unwrap());
        }
        assert_eq!(counted.writes.load(Ordering::SeqCst), 0);
        assert_eq!(started(&counted.shard("bat_1", 0).await.unwrap()).0, 0);
        held.flush().await.unwrap();
        // Shard 0 (1, 2, 3) and shard 1 (70, 71): two writes for five marks.
        assert_eq!(counted.writes.load(Ordering::SeqCst), 2);
        assert_eq!(
            started(&counted.shard("bat_1", 0).await.unwrap()),
            (3, vec!["1".into(), "2".into(), "3".into()])
        );
        assert_eq!(started(&counted.shard("bat_1", 1).await.unwrap()).0, 2);
        // Flushed means gone: a second flush writes nothing.
        held.flush().await.unwrap();
        assert_eq!(counted.writes.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_read_sees_the_marks_held_for_what_it_reads() {
        let (counted, held) = setup().await;
        held.mark_started("bat_1", &[5]).await.unwrap();
        held.mark_started("bat_1", &[80]).await.unwrap();
        // Reading shard 0 writes its mark only; shard 1's still waits.
        assert_eq!(started(&held.shard("bat_1", 0).await.unwrap()).0, 1);
        assert_eq!(counted.writes.load(Ordering::SeqCst), 1);
        assert_eq!(started(&counted.shard("bat_1", 1).await.unwrap()).0, 0);
        // The batch's shards: every held mark of the batch first.
        let all = held.all("bat_1").await.unwrap();
        assert_eq!(all.iter().map(|s| s.n_started).sum::<u32>(), 2);
        // An end mark after its start, in the same invocation: the start goes in first, so
        // the end is of a started task.
        held.mark_started("bat_1", &[6]).await.unwrap();
        let ended = held
            .end_mark(&[EndMark {
                batch_id: "bat_1".into(),
                idx: 6,
                was_started: true,
                outcome: Outcome::Succeeded,
            }])
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ended.n_started, ended.n_ended_unstarted), (2, 0));
    }

    #[tokio::test]
    async fn a_task_that_ended_first_leaves_the_others_marked() {
        let (counted, held) = setup().await;
        for idx in [10, 11, 12] {
            held.mark_started("bat_1", &[idx]).await.unwrap();
        }
        // Someone else ended task 11 before it was marked (a cancel's end, say).
        counted
            .inner
            .end_mark(&[EndMark {
                batch_id: "bat_1".into(),
                idx: 11,
                was_started: false,
                outcome: Outcome::Released,
            }])
            .await
            .unwrap()
            .unwrap();
        held.flush().await.unwrap();
        let shard = counted.shard("bat_1", 0).await.unwrap();
        assert_eq!(started(&shard), (2, vec!["10".into(), "12".into()]));
        let counts = shard.unwrap().counts();
        assert_eq!((counts.started, counts.ended_unstarted), (2, 1));
    }
}
