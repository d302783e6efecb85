//! The SQS adapter of the `Queue` port.

use crate::config::Queues;
use crate::ports::queue::{QueueName, Received, MAX_DELAY_SECS};
use crate::ports::{Clock, PortResult, Queue, Random, StoreError};
use async_trait::async_trait;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use std::sync::Arc;

fn sqs_err(op: &'static str, e: impl std::fmt::Debug) -> StoreError {
    StoreError::Sqs {
        op,
        detail: format!("{e:?}"),
    }
}

#[derive(Clone)]
pub struct Sqs {
    sqs: Client,
    queues: Arc<Queues>,
    /// Use SQS `DelaySeconds`. Off in tests, whose clock is manual: delayed messages carry
    /// their due time and the test pump honours it.
    delays: bool,
    clock: Arc<dyn Clock>,
    random: Arc<dyn Random>,
}

impl Sqs {
    pub fn new(
        sqs: Client,
        queues: Queues,
        delays: bool,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Self {
        Sqs {
            sqs,
            queues: Arc::new(queues),
            delays,
            clock,
            random,
        }
    }

    fn url(&self, q: QueueName) -> PortResult<&str> {
        let url = match q {
            QueueName::Tasks => Some(&self.queues.tasks),
            QueueName::Settle => Some(&self.queues.settle),
            QueueName::Events => Some(&self.queues.events),
            QueueName::Exports => Some(&self.queues.exports),
            QueueName::TasksDlq => self.queues.tasks_dlq.as_ref(),
            QueueName::SettleDlq => self.queues.settle_dlq.as_ref(),
        };
        url.map(String::as_str).ok_or(StoreError::Sqs {
            op: "queue",
            detail: format!("no {} queue is configured", q.as_str()),
        })
    }

    fn delay(&self, secs: u64) -> i32 {
        if self.delays {
            secs.min(MAX_DELAY_SECS) as i32
        } else {
            0
        }
    }
}

#[async_trait]
impl Queue for Sqs {
    fn has(&self, q: QueueName) -> bool {
        self.url(q).is_ok()
    }

    async fn send(&self, q: QueueName, bodies: &[(String, u64)]) -> PortResult<()> {
        let url = self.url(q)?;
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
                    .queue_url(url)
                    .set_entries(Some(entries.clone()))
                    .send()
                    .await
                    .map_err(|e| sqs_err("SendMessageBatch", e))?;
                let failed: Vec<String> = out.failed.iter().map(|f| f.id.clone()).collect();
                if failed.is_empty() {
                    break;
                }
                if attempt == 4 {
                    return Err(StoreError::Sqs {
                        op: "SendMessageBatch",
                        detail: format!("{} entries kept failing", failed.len()),
                    });
                }
                entries.retain(|e| failed.contains(&e.id));
                let ms = crate::ports::time::backoff_ms(self.random.as_ref(), attempt);
                self.clock.sleep_ms(ms).await;
            }
        }
        Ok(())
    }

    async fn receive(&self, q: QueueName, wait_secs: i32) -> PortResult<Vec<Received>> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(self.url(q)?)
            .max_number_of_messages(10)
            .wait_time_seconds(wait_secs)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .send()
            .await
            .map_err(|e| sqs_err("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Some(Received {
                    receipt: m.receipt_handle?,
                    body: m.body.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete(&self, q: QueueName, receipts: &[String]) -> PortResult<()> {
        let url = self.url(q)?;
        for chunk in receipts.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .map_err(|e| sqs_err("entry", e))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| sqs_err("DeleteMessageBatch", e))?;
            // A message whose delete failed is handed out again later: at-least-once, which
            // every consumer already handles; say so rather than hide it.
            if let Some(f) = out.failed.first() {
                return Err(StoreError::Sqs {
                    op: "DeleteMessageBatch",
                    detail: format!(
                        "{} of {} deletes failed, first: {} {}",
                        out.failed.len(),
                        chunk.len(),
                        f.code,
                        f.message.as_deref().unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }

    async fn release(&self, q: QueueName, receipt: &str, secs: i32) -> PortResult<()> {
        self.sqs
            .change_message_visibility()
            .queue_url(self.url(q)?)
            .receipt_handle(receipt)
            .visibility_timeout(secs)
            .send()
            .await
            .map_err(|e| sqs_err("ChangeMessageVisibility", e))?;
        Ok(())
    }
}
