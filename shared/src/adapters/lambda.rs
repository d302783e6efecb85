//! The one SQS batch loop of the SQS-triggered functions (task worker, settlement, webhook
//! dispatch, export): decode each message at the edge, run the use case on every message of
//! the invocation concurrently, and report the failures back (partial batch response), so
//! only they come back after their visibility timeout.
//!
//! Each message reaches the handler with how many times the queue has handed it out
//! (`ApproximateReceiveCount`; 1 when the event does not say).
//!
//! A body that does not decode is reported as failed too: it will never succeed, so after
//! the queue's `maxReceiveCount` it lands in the dead-letter queue, whose alarm tells an
//! operator; dropping it here would hide it.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use std::fmt::Display;
use std::future::Future;

/// The SQS event attribute that counts receives.
pub const RECEIVE_COUNT: &str = "ApproximateReceiveCount";

pub async fn sqs_batch<M, E, F, Fut>(queue: &str, event: SqsEvent, handle: F) -> SqsBatchResponse
where
    M: DeserializeOwned,
    E: Display,
    F: Fn(M, u32) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    sqs_batch_then(queue, event, handle, async { Ok(()) }).await
}

/// As `sqs_batch`, then `after_all` once every message has run: what the invocation held
/// for its end (the task worker's end marks and sends: `adapters::outbox`). The held work
/// of a message that failed goes too, as it would have gone before its failure. Should
/// `after_all` fail, every message of the invocation is reported failed and comes back: a
/// step that had not saved runs again; one that had finds its version gone, and the sweeper
/// picks its chain up from its `next_check_ms` promise (docs/ARCHITECTURE.md, "Sends wait
/// for the invocation's end").
pub async fn sqs_batch_then<M, E, F, Fut, A>(
    queue: &str,
    event: SqsEvent,
    handle: F,
    after_all: A,
) -> SqsBatchResponse
where
    M: DeserializeOwned,
    E: Display,
    F: Fn(M, u32) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    A: Future<Output = Result<(), String>>,
{
    let results = run_all(event, handle).await;
    let unfinished = after_all.await.err();
    respond(queue, results, unfinished)
}

/// Decodes and runs every message concurrently: (message id, outcome).
async fn run_all<M, E, F, Fut>(event: SqsEvent, handle: F) -> Vec<(String, Result<(), String>)>
where
    M: DeserializeOwned,
    E: Display,
    F: Fn(M, u32) -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let handle = &handle;
    join_all(event.records.into_iter().map(|m| async move {
        let id = m.message_id.clone().unwrap_or_default();
        let receive_count = m
            .attributes
            .get(RECEIVE_COUNT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        let result = match serde_json::from_str::<M>(m.body.as_deref().unwrap_or("")) {
            Ok(msg) => handle(msg, receive_count).await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("malformed message: {e}")),
        };
        (id, result)
    }))
    .await
}

/// The partial batch response: the failed messages, or every message when what the
/// invocation held for its end failed (`unfinished`).
fn respond(
    queue: &str,
    results: Vec<(String, Result<(), String>)>,
    unfinished: Option<String>,
) -> SqsBatchResponse {
    let mut resp = SqsBatchResponse::default();
    for (id, result) in results {
        let result = match (result, &unfinished) {
            (Ok(()), Some(e)) => Err(format!("the invocation's held work did not finish: {e}")),
            (r, _) => r,
        };
        if let Err(error) = result {
            tracing::warn!(queue, message_id = %id, %error, "message failed; it will be retried");
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            resp.batch_item_failures.push(f);
        }
    }
    resp
}
