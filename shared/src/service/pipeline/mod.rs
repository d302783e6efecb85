//! The task pipeline: dispatch, the task worker, settlement, cancellation and the sweeper.
//!
//! Money moves in exactly two places here: a refund (failed or timed-out task) is one
//! transaction with the task's exactly-once end mark (`worker::end`), and settlement is one
//! transaction that turns the rest of the hold into charges (`settle`). Everything else is
//! idempotent state that any duplicate or re-drive can repeat.

pub mod dispatch;
pub mod materialize;
pub mod settle;
pub mod sweeper;
pub mod worker;

use super::Services;
use crate::ports::provider::Routes;
use serde::{Deserialize, Serialize};

/// What the pipeline needs beyond the other use cases: which provider serves which model.
#[derive(Clone)]
pub struct Pipeline {
    pub svc: Services,
    pub providers: Routes,
}

/// A message on the tasks queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskMessage {
    /// Advance one task (start it, submit it, poll it). `not_before_ms` makes a delayed
    /// re-check exact even where SQS delays are off (tests) or longer than SQS allows.
    Run {
        account_id: String,
        batch_id: String,
        idx: u32,
        #[serde(default)]
        not_before_ms: i64,
        /// The task's version this message was sent at (see `TaskRecord::version`); absent
        /// in messages from before versions, which are taken as they come.
        #[serde(default)]
        version: Option<u64>,
        /// The message carries a concurrency slot, handed over by the task that ended before
        /// it: the task starts without taking one. The slot is the message's until a save of
        /// the task at `version` puts it in the record (`TaskRecord::slot`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        slot: bool,
    },
    /// End undispatched tasks `[from, to)` with one outcome (cancellation, queue time-out).
    EndRange {
        account_id: String,
        batch_id: String,
        from: u32,
        to: u32,
        outcome: crate::domain::task::Outcome,
    },
}

/// A message on the settle queue: "this batch may be finished".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleMessage {
    pub account_id: String,
    pub batch_id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
    #[error(transparent)]
    Service(#[from] super::ServiceError),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0}")]
    Other(String),
}
