//! A queue whose sends wait: while an SQS-triggered invocation runs its messages, what they
//! send collects here, and goes out at the invocation's end (the task worker's
//! `lambda::sqs_batch_then`) ten to a request, instead of one request per send. SQS bills a `SendMessageBatch`
//! of ten small messages as one request, and the task worker's steps each send one or two
//! (the next step, the task's events): about three sends per task became a third of a
//! request.
//!
//! Receives, deletes and releases are not held: they go to the queue at once.

use crate::ports::queue::{QueueName, Received};
use crate::ports::{Clock, PortResult, Queue};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// A held send: its queue, body, delay, and when it was made (ms).
type Held = (QueueName, String, u64, i64);

pub struct Outbox {
    inner: Arc<dyn Queue>,
    clock: Arc<dyn Clock>,
    held: Mutex<Vec<Held>>,
}

impl Outbox {
    pub fn new(inner: Arc<dyn Queue>, clock: Arc<dyn Clock>) -> Self {
        Outbox {
            inner,
            clock,
            held: Mutex::default(),
        }
    }

    /// Sends everything held, each queue's messages in one call of the queue's own `send`
    /// (ten to a request), in the order they were sent, each delay shortened by the time it
    /// was held (a step's "in 5 s" counts from the step, not from the invocation's end).
    /// Every queue is tried; held messages leave the outbox whether or not they went, and the
    /// first error is returned (the invocation's messages are then retried).
    pub async fn flush(&self) -> PortResult<()> {
        let held = std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        let now = self.clock.now_ms();
        let mut by_queue: BTreeMap<QueueName, Vec<(String, u64)>> = BTreeMap::new();
        for (queue, body, delay, at_ms) in held {
            let held_secs = u64::try_from((now - at_ms) / 1_000).unwrap_or(0);
            by_queue
                .entry(queue)
                .or_default()
                .push((body, delay.saturating_sub(held_secs)));
        }
        let mut first_error = None;
        for (queue, bodies) in by_queue {
            if let Err(e) = self.inner.send(queue, &bodies).await {
                tracing::error!(queue = queue.as_str(), messages = bodies.len(), error = %e, "held messages not sent");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Queue for Outbox {
    fn has(&self, queue: QueueName) -> bool {
        self.inner.has(queue)
    }

    async fn send(&self, queue: QueueName, bodies: &[(String, u64)]) -> PortResult<()> {
        let at_ms = self.clock.now_ms();
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.extend(bodies.iter().map(|(b, d)| (queue, b.clone(), *d, at_ms)));
        Ok(())
    }

    async fn receive(&self, queue: QueueName, wait_secs: i32) -> PortResult<Vec<Received>> {
        self.inner.receive(queue, wait_secs).await
    }

    async fn delete(&self, queue: QueueName, receipts: &[String]) -> PortResult<()> {
        self.inner.delete(queue, receipts).await
    }

    async fn release(&self, queue: QueueName, receipt: &str, secs: i32) -> PortResult<()> {
        self.inner.release(queue, receipt, secs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::memory::MemoryQueue;

    #[tokio::test]
    async fn holds_sends_until_flushed_then_sends_each_queue_in_order() {
        let clock = Arc::new(crate::adapters::clock::ManualClock::starting_at(0));
        let q: Arc<dyn Queue> = Arc::new(MemoryQueue::new(clock.clone(), true));
        let out = Outbox::new(q.clone(), clock.clone());
        out.send(QueueName::Tasks, &[("a".into(), 0)])
            .await
            .unwrap();
        out.send(QueueName::Events, &[("e".into(), 0)])
            .await
            .unwrap();
        out.send(QueueName::Tasks, &[("b".into(), 0), ("c".into(), 0)])
            .await
            .unwrap();
        assert!(q.receive(QueueName::Tasks, 0).await.unwrap().is_empty());
        out.flush().await.unwrap();
        let tasks: Vec<String> = q
            .receive(QueueName::Tasks, 0)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.body)
            .collect();
        assert_eq!(tasks, ["a", "b", "c"]);
        let events = q.receive(QueueName::Events, 0).await.unwrap();
        assert_eq!(events.len(), 1);
        // Flushed means gone from the outbox: a second flush sends nothing.
        out.flush().await.unwrap();
        assert!(q.receive(QueueName::Tasks, 0).await.unwrap().is_empty());

        // A delay counts from the send, not from the flush: "in 5 s", held 3 s, is due 2 s
        // after the flush.
        out.send(QueueName::Settle, &[("late".into(), 5)])
            .await
            .unwrap();
        clock.advance_ms(3_000);
        out.flush().await.unwrap();
        clock.advance_ms(1_999);
        assert!(q.receive(QueueName::Settle, 0).await.unwrap().is_empty());
        clock.advance_ms(1);
        assert_eq!(q.receive(QueueName::Settle, 0).await.unwrap().len(), 1);
    }
}
