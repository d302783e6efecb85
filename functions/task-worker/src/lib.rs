//! The task worker's Lambda handler: up to ten task messages, each advanced concurrently;
//! failures go back to SQS (partial batch response) and only they are retried.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::lambda::sqs_batch;
use shared::service::pipeline::{worker, Pipeline, TaskMessage};

pub async fn handle_event(p: &Pipeline, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch("tasks", event, |m: TaskMessage, receives| {
        worker::handle(p, m, receives)
    })
    .await
}
