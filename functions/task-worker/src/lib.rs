//! The task worker's Lambda handler: up to ten task messages, each advanced concurrently;
//! failures go back to SQS (partial batch response) and only they are retried. What the
//! steps send (their next steps, the tasks' events) goes out together at the end, ten
//! messages to a request, and so do the ended tasks' SLA adds, one write per stored item,
//! and the started tasks' start marks, one write per shard.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::held_starts::HeldStarts;
use shared::adapters::lambda::sqs_batch;
use shared::adapters::outbox::Outbox;
use shared::service::pipeline::{worker, Pipeline, TaskMessage};
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
            .holding_ends(ends.clone()),
        providers: p.providers.clone(),
    };
    let held = &held;
    let resp = sqs_batch("tasks", event, Some(&outbox), |m: TaskMessage, receives| {
        worker::handle(held, m, receives)
    })
    .await;
    // Counts only (the module says why): what does not land is logged there, not retried.
    let _ = starts.flush().await;
    ends.flush(&p.svc).await;
    resp
}
