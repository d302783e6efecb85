//! Use cases. Handlers call these; each one is where its crash and retry story lives.

pub mod access;
pub mod accounts;
pub mod auth;
pub mod batches;
pub mod clock;
pub mod credits;
pub mod error;
pub mod events;
pub mod exports;
pub mod files;
pub mod idempotency;
pub mod keys;
pub mod models;
pub mod pipeline;
pub mod reconcile;
pub mod statements;
pub mod views;
pub mod webhooks;

use crate::adapters::Store;
use clock::Clock;
use serde::Deserialize;
use std::sync::Arc;

pub use error::{ErrorCode, ServiceError};

/// What every use case needs: the store and a clock (tests move time by hand).
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
}

impl Services {
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        Services { store, clock }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// A response that idempotency may have to replay byte for byte.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// JSON text.
    pub body: String,
    /// True when this is the stored response of an earlier request with the same request_id.
    pub replayed: bool,
}

/// One page of a list, newest first unless the endpoint says otherwise.
#[derive(Debug, serde::Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub next_cursor: Option<String>,
}

/// An opaque cursor from a query string, decoded; 400 `invalid_cursor` for anything we did
/// not make.
pub(crate) fn decode_cursor<T: serde::de::DeserializeOwned>(
    cursor: Option<&str>,
) -> Result<Option<T>, ServiceError> {
    cursor
        .map(|c| {
            crate::domain::cursor::decode::<T>(c).ok_or_else(|| {
                ServiceError::reject(ErrorCode::InvalidCursor, "cursor is not valid")
            })
        })
        .transpose()
}

/// Where a newest-first, time-ordered list resumes: (created_ms, sort key).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TimeCursor {
    pub t: i64,
    pub e: String,
}

/// For `Option<Option<T>>` fields: present-and-null is `Some(None)`, absent is `None`
/// (`#[serde(default, deserialize_with = "present")]`).
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// How many times a use case re-reads and retries after losing a race on the account.
pub(crate) const MAX_COMMIT_ATTEMPTS: u32 = 50;
