//! The export Lambda handler: one message per invocation (an export can take minutes); a
//! failure goes back to SQS, which retries it, and after three receives to the DLQ.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use shared::adapters::lambda::sqs_batch;
use shared::service::exports::{run, ExportMessage};
use shared::service::Services;

pub async fn handle_event(svc: &Services, event: SqsEvent) -> SqsBatchResponse {
    sqs_batch("exports", event, |m: ExportMessage, _| async move {
        run(svc, &m.account_id, &m.export_id).await
    })
    .await
}
