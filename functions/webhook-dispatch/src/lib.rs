//! The webhook-dispatch Lambda handler: up to ten messages (events and delivery attempts)
//! processed concurrently, so one slow receiver delays no other; failures are reported back
//! (partial batch response) and only those messages come back after their visibility timeout.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures_util::future::join_all;
use shared::service::webhooks::dispatch::{handle, Dispatcher};

pub async fn handle_event(d: &Dispatcher, event: SqsEvent) -> SqsBatchResponse {
    let results = join_all(event.records.into_iter().map(|m| async move {
        let id = m.message_id.clone().unwrap_or_default();
        let result = handle(d, m.body.as_deref().unwrap_or("")).await;
        (id, result)
    }))
    .await;
    let mut resp = SqsBatchResponse::default();
    for (id, result) in results {
        if let Err(e) = result {
            tracing::warn!(message_id = %id, error = %e, "events message failed; it will be retried");
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            resp.batch_item_failures.push(f);
        }
    }
    resp
}
