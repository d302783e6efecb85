//! SQS: task messages (batched sends, delayed re-checks), settlement requests, events.

use super::{Store, StoreError};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

fn sqs_err(op: &str, e: impl std::fmt::Debug) -> StoreError {
    StoreError::Sqs(format!("{op}: {e:?}"))
}

/// SQS's longest delay; longer waits re-check and go round again.
pub const MAX_DELAY_SECS: u64 = 900;

impl Store {
    fn delay(&self, secs: u64) -> i32 {
        if self.config.sqs_delays {
            secs.min(MAX_DELAY_SECS) as i32
        } else {
            0
        }
    }

    /// Sends bodies to a queue, ten per `SendMessageBatch`, each with its delay; retries the
    /// entries SQS reports as failed.
    pub async fn send_batch(
        &self,
        queue_url: &str,
        bodies: &[(String, u64)],
    ) -> Result<(), StoreError> {
        for chunk in bodies.chunks(10) {
            let mut entries: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(i, (body, delay))| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .delay_seconds(self.delay(*delay))
                        .build()
                        .map_err(|e| sqs_err("entry", e))
                })
                .collect::<Result<_, _>>()?;
            for attempt in 0..5u32 {
                let out = self
                    .sqs
                    .send_message_batch()
                    .queue_url(queue_url)
                    .set_entries(Some(entries.clone()))
                    .send()
                    .await
                    .map_err(|e| sqs_err("SendMessageBatch", e))?;
                let failed: Vec<String> = out.failed.iter().map(|f| f.id.clone()).collect();
                if failed.is_empty() {
                    break;
                }
                if attempt == 4 {
                    return Err(StoreError::Sqs(format!(
                        "SendMessageBatch: {} entries kept failing",
                        failed.len()
                    )));
                }
                entries.retain(|e| failed.contains(&e.id));
                tokio::time::sleep(super::dynamo::backoff(attempt)).await;
            }
        }
        Ok(())
    }

    pub async fn send_one(
        &self,
        queue_url: &str,
        body: String,
        delay_secs: u64,
    ) -> Result<(), StoreError> {
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .delay_seconds(self.delay(delay_secs))
            .send()
            .await
            .map_err(|e| sqs_err("SendMessage", e))?;
        Ok(())
    }

    /// Receives up to ten messages (long poll of `wait_secs`): (receipt handle, body).
    pub async fn receive(
        &self,
        queue_url: &str,
        wait_secs: i32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .send()
            .await
            .map_err(|e| sqs_err("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| Some((m.receipt_handle?, m.body.unwrap_or_default())))
            .collect())
    }

    pub async fn delete_message(&self, queue_url: &str, receipt: &str) -> Result<(), StoreError> {
        self.sqs
            .delete_message()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| sqs_err("DeleteMessage", e))?;
        Ok(())
    }

    /// Makes a received message visible again after `secs` (0: at once).
    pub async fn release_message(
        &self,
        queue_url: &str,
        receipt: &str,
        secs: i32,
    ) -> Result<(), StoreError> {
        self.sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| sqs_err("ChangeMessageVisibility", e))?;
        Ok(())
    }
}
