//! The export Lambda handler: one message per invocation (an export can take minutes);
//! a failure is reported back so SQS retries it, and after three the message goes to the DLQ.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use shared::service::exports::{run, ExportMessage};
use shared::service::Services;

pub async fn handle_event(svc: &Services, event: SqsEvent) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    for m in event.records {
        let id = m.message_id.clone().unwrap_or_default();
        let result = match serde_json::from_str::<ExportMessage>(m.body.as_deref().unwrap_or("")) {
            Ok(msg) => run(svc, &msg.account_id, &msg.export_id)
                .await
                .map_err(|e| e.to_string()),
            // Not ours to retry: a malformed message would fail forever.
            Err(e) => {
                tracing::error!(error = %e, "malformed export message dropped");
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(message_id = %id, error = %e, "export failed; it will be retried");
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            resp.batch_item_failures.push(f);
        }
    }
    resp
}
