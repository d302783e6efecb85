//! Settlement: when every task of a batch has ended, exactly once, the rest of the hold
//! becomes charges and the batch is `completed` with its settlement record; then the
//! `batch.completed` event goes out. A closure that does not add up is refused and alarmed.

use super::{Pipeline, PipelineError, SettleMessage};
use crate::domain::task::{settle, task_counts, ClosureError, GivenBack};

pub async fn handle(p: &Pipeline, m: SettleMessage) -> Result<(), PipelineError> {
    settle_batch(p, &m.account_id, &m.batch_id).await
}

pub async fn settle_batch(
    p: &Pipeline,
    account_id: &str,
    batch_id: &str,
) -> Result<(), PipelineError> {
    let svc = &p.svc;
    let Some(batch) = svc.batches.get(account_id, batch_id).await? else {
        return Ok(());
    };
    if batch.status != crate::domain::batch::BatchStatus::Completed {
        let shards = svc.progress.all(batch_id).await?;
        let counts = task_counts(&shards.iter().map(|s| s.counts()).collect::<Vec<_>>());
        match settle(
            batch.unit_price,
            batch.credits.held,
            counts,
            GivenBack {
                refunded: batch.credits.refunded,
                released: batch.credits.released,
            },
        ) {
            Ok(st) => {
                finish_stragglers(p, &batch, &shards).await?;
                svc.money.settle(&batch, &st, svc.now_ms()).await?;
                tracing::info!(
                    batch_id,
                    charged = st.charged.value(),
                    refunded = st.refunded.value(),
                    released = st.released.value(),
                    "batch settled"
                );
            }
            Err(ClosureError::Unfinished(_)) => return Ok(()),
            Err(e @ ClosureError::Mismatch { .. }) => {
                // The metric SettlementMismatchAlarm watches.
                crate::service::metrics::emit(
                    p.svc.now_ms(),
                    "SettlementMismatch",
                    "Count",
                    1.0,
                    &[],
                    serde_json::json!({"batch_id": batch_id, "account_id": account_id}),
                );
                tracing::error!(batch_id, error = %e, "settlement refused: the batch does not close");
                return Ok(());
            }
        }
    }
    // At least once, with a stable id: consumers deduplicate on it.
    let done = svc
        .batches
        .get(account_id, batch_id)
        .await?
        .filter(|b| b.status == crate::domain::batch::BatchStatus::Completed);
    if let Some(done) = done {
        let event = crate::service::events::batch_completed(&done, p.svc.now_ms());
        crate::service::events::emit(svc, &[event]).await?;
    }
    Ok(())
}

/// Before a batch closes, every task record shows how its task ended: a worker that died
/// between a task's end mark and its record (or a sweep that timed a task out and died) left
/// a record behind its mark; it is finished here, once per batch, from the marks.
async fn finish_stragglers(
    p: &Pipeline,
    batch: &crate::ports::records::BatchRecord,
    shards: &[crate::ports::records::ShardRecord],
) -> Result<(), PipelineError> {
    let marks: std::collections::BTreeMap<u32, crate::domain::task::Outcome> = shards
        .iter()
        .flat_map(|s| s.ended.iter())
        .filter_map(|(k, o)| k.parse::<u32>().ok().map(|i| (i, *o)))
        .collect();
    let svc = &p.svc;
    let mut after = None;
    loop {
        let page = svc.tasks.page(&batch.batch_id, after.take()).await?;
        for t in page.items {
            if t.status.is_terminal() {
                continue;
            }
            if let Some(outcome) = marks.get(&t.idx).copied() {
                tracing::warn!(task_id = %t.task_id, "finishing a task record left behind its end mark");
                super::worker::finish_record(p, batch, t, outcome, None, None, None).await?;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}
