//! The webhook-dispatch Lambda handler: up to ten messages (events and delivery attempts)
//! processed concurrently, so one slow receiver delays no other; failures go back to SQS
//! (partial batch response) and only they come back after their visibility timeout.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::lambda::sqs_batch;
use shared::service::events::EventsMessage;
use shared::service::webhooks::dispatch::{handle_in, Invocation};
use shared::service::Services;

pub async fn handle_event(svc: &Services, event: SqsEvent) -> SqsBatchResponse {
    // The messages of one invocation share their accounts' reads (`Invocation`).
    let inv = Invocation::default();
    sqs_batch("events", event, |m: EventsMessage, _| {
        handle_in(svc, &inv, m)
    })
    .await
}
