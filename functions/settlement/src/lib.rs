//! The settlement Lambda handler: up to ten "this batch may be finished" messages, settled
//! concurrently; failures go back to SQS (partial batch response) and only they are retried.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::lambda::sqs_batch;
use shared::service::pipeline::{settle, Pipeline, SettleMessage};

pub async fn handle_event(p: &Pipeline, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch("settle", event, |m: SettleMessage, _| settle::handle(p, m)).await
}
