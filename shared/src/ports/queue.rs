//! Queues: at-least-once delivery of JSON messages between the functions.

use super::common::PortResult;
use async_trait::async_trait;

/// The queues of the design card, by role; the adapter knows their addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    Tasks,
    Settle,
    Events,
    Exports,
    TasksDlq,
    SettleDlq,
}

impl QueueName {
    pub const ALL: [QueueName; 6] = [
        QueueName::Tasks,
        QueueName::Settle,
        QueueName::Events,
        QueueName::Exports,
        QueueName::TasksDlq,
        QueueName::SettleDlq,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Tasks => "tasks",
            QueueName::Settle => "settle",
            QueueName::Events => "events",
            QueueName::Exports => "exports",
            QueueName::TasksDlq => "tasks-dlq",
            QueueName::SettleDlq => "settle-dlq",
        }
    }
}

/// A received message: the handle that deletes or releases it, its body, and how many times
/// the queue has handed it out (this time included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
}

/// SQS's longest delay; longer waits re-check and go round again.
pub const MAX_DELAY_SECS: u64 = 900;

#[async_trait]
pub trait Queue: Send + Sync {
    /// False for an optional queue this deployment does not have (a dead-letter queue).
    fn has(&self, queue: QueueName) -> bool;
    /// Sends bodies, each with its delay in seconds (capped at [`MAX_DELAY_SECS`]), in
    /// batches of ten; retries entries the queue refused.
    async fn send(&self, queue: QueueName, bodies: &[(String, u64)]) -> PortResult<()>;
    /// Receives up to ten visible messages (a long poll of `wait_secs`); each stays
    /// invisible for the queue's visibility timeout unless deleted or released.
    async fn receive(&self, queue: QueueName, wait_secs: i32) -> PortResult<Vec<Received>>;
    /// Deletes handled messages, ten to a request (as Lambda's event source does).
    async fn delete(&self, queue: QueueName, receipts: &[String]) -> PortResult<()>;
    /// Makes a received message visible again after `secs` (0: at once).
    async fn release(&self, queue: QueueName, receipt: &str, secs: i32) -> PortResult<()>;
}
