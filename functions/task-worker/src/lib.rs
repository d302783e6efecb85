//! The task worker's Lambda handler: up to ten task messages, each advanced concurrently;
//! failures go back to SQS (partial batch response) and only they are retried. What the
//! steps hold for the invocation's end goes together once every message has run: the ended
//! tasks' end marks (one write per shard) and the rest of those ends, then what the steps
//! send (ten messages to a request), the started tasks' start marks (one write per shard)
//! and the ended tasks' SLA adds (one write per stored item).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::held_starts::HeldStarts;
use shared::adapters::lambda::sqs_batch_then;
use shared::adapters::outbox::Outbox;
use shared::service::pipeline::worker::{self, HeldEndMarks};
use shared::service::pipeline::{Pipeline, TaskMessage};
use shared::service::sla::HeldEnds;
use std::sync::Arc;

pub async fn handle_event(p: &Pipeline, event: SqsEvent) -> SqsBatchResponse {
    let outbox = Arc::new(Outbox::new(p.svc.queue.clone(), p.svc.clock.clone()));
    let ends = Arc::new(HeldEnds::default());
    let starts = Arc::new(HeldStarts::new(p.svc.progress.clone()));
    let held = Pipeline {
        svc: p
            .svc
            .with_queue(outbox.clone())
            .with_progress(starts.clone())
            .holding_ends(ends.clone())
            .holding_end_marks(Arc::new(HeldEndMarks::default())),
        providers: p.providers.clone(),
    };
    let held = &held;
    let after_all = async {
        // The ends first: what they send goes with the rest. Every step's sends go even if
        // an end failed (as they would have before its failure); either failing fails all.
        let ended = worker::end_held(held).await.map_err(|e| e.to_string());
        let sent = outbox.flush().await.map_err(|e| e.to_string());
        ended.and(sent)
    };
    let resp = sqs_batch_then(
        "tasks",
        event,
        |m: TaskMessage, receives| worker::handle(held, m, receives),
        after_all,
    )
    .await;
    // Counts only (the module says why): what does not land is logged there, not retried.
    let _ = starts.flush().await;
    ends.flush(&p.svc).await;
    resp
}
