//! Use cases. Handlers call these; each one is where its crash and retry story lives. They
//! talk to the ports (`crate::ports`) and the domain, never to an adapter.

pub mod access;
pub mod accounts;
pub mod auth;
pub mod batches;
pub mod billing;
pub mod console;
pub mod credits;
pub mod error;
pub mod events;
pub mod exports;
pub mod files;
pub mod idempotency;
pub mod invoices;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod money;
pub mod operators;
pub mod pipeline;
pub mod reconcile;
pub mod sla;
pub mod statements;
pub mod views;
pub mod webhooks;

use crate::ports::queue::QueueName;
use crate::ports::{Faults, PageToken, PortResult, Ports, Slice};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;

pub use error::{ErrorCode, ServiceError};

/// What every use case needs: the ports and the settings. Cheap to clone (two `Arc`s).
#[derive(Clone)]
pub struct Services {
    ports: Arc<Ports>,
    /// What this instance remembers between requests (see `access::Local`): shared by the
    /// clones and fault-hooked copies of one instance's services.
    pub(crate) local: Arc<access::Local>,
    /// The model statuses this instance read (see `models::Seen`).
    pub(crate) models_seen: Arc<models::Seen>,
    /// Where task ends wait for their SLA add, in a task-worker invocation
    /// (`sla::HeldEnds`); `None`: added at once.
    pub(crate) held_ends: Option<Arc<sla::HeldEnds>>,
    /// Where end marks that move no money wait, in a task-worker invocation
    /// (`pipeline::worker::HeldEndMarks`); `None`: written at once.
    pub(crate) held_end_marks: Option<Arc<pipeline::worker::HeldEndMarks>>,
}

/// What an invocation's messages set aside for its end (task ends' SLA adds, end marks):
/// pushed by the steps as they run, taken whole once they have all run.
pub struct Held<T>(std::sync::Mutex<Vec<T>>);

impl<T> Default for Held<T> {
    fn default() -> Self {
        Held(std::sync::Mutex::new(Vec::new()))
    }
}

impl<T> Held<T> {
    pub(crate) fn hold(&self, item: T) {
        self.lock().push(item);
    }

    pub(crate) fn take(&self) -> Vec<T> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        // A step that panicked holding the lock left the list whole (a push is all it does).
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::ops::Deref for Services {
    type Target = Ports;

    fn deref(&self) -> &Ports {
        &self.ports
    }
}

impl Services {
    pub fn new(ports: Ports) -> Self {
        Services {
            ports: Arc::new(ports),
            local: Arc::default(),
            models_seen: Arc::default(),
            held_ends: None,
            held_end_marks: None,
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The same services with a fault hook (tests crash them between two writes).
    pub fn with_faults(&self, faults: Faults) -> Self {
        self.with_ports(|p| p.faults = faults)
    }

    /// The same services sending through `queue` (an invocation's outbox).
    pub fn with_queue(&self, queue: Arc<dyn crate::ports::Queue>) -> Self {
        self.with_ports(|p| p.queue = queue)
    }

    /// The same services keeping progress in `progress` (an invocation's held start marks).
    pub fn with_progress(&self, progress: Arc<dyn crate::ports::Progress>) -> Self {
        self.with_ports(|p| p.progress = progress)
    }

    /// The same services holding task ends' SLA adds in `ends` until its `flush`.
    pub fn holding_ends(&self, ends: Arc<sla::HeldEnds>) -> Self {
        Services {
            held_ends: Some(ends),
            ..self.clone()
        }
    }

    /// The same services holding end marks that move no money in `marks` until
    /// `pipeline::worker::end_held`.
    pub fn holding_end_marks(&self, marks: Arc<pipeline::worker::HeldEndMarks>) -> Self {
        Services {
            held_end_marks: Some(marks),
            ..self.clone()
        }
    }

    /// A copy of this instance's services with some ports changed.
    fn with_ports(&self, change: impl FnOnce(&mut Ports)) -> Self {
        let mut p = (*self.ports).clone();
        change(&mut p);
        Services {
            ports: Arc::new(p),
            ..self.clone()
        }
    }

    /// A fresh id with the given prefix (`acct`, `bat`, `key`, ...): time-ordered, unguessable.
    pub fn new_id(&self, prefix: &str) -> String {
        let random = crate::ports::time::random_bytes::<10>(self.random.as_ref());
        crate::domain::ids::compose(prefix, u64::try_from(self.now_ms()).unwrap_or(0), random)
    }

    /// Waits before retry `attempt` (exponential, full jitter), on this services' clock.
    pub async fn backoff(&self, attempt: u32) {
        let ms = crate::ports::time::backoff_ms(self.random.as_ref(), attempt);
        self.clock.sleep_ms(ms).await;
    }

    /// Sends messages to a queue, each with its delay in seconds.
    pub async fn enqueue<M: Serialize>(
        &self,
        queue: QueueName,
        msgs: &[(M, u64)],
    ) -> PortResult<()> {
        let bodies = msgs
            .iter()
            .map(|(m, delay)| {
                serde_json::to_string(m)
                    .map(|b| (b, *delay))
                    .map_err(|e| crate::ports::StoreError::Corrupt(e.to_string()))
            })
            .collect::<PortResult<Vec<_>>>()?;
        self.queue.send(queue, &bodies).await
    }
}

/// Every page of an oldest-first port read, one page (a `Vec`) at a time: the one paged
/// read of the use cases.
pub(crate) fn pages<'a, T, F, Fut>(fetch: F) -> impl Stream<Item = PortResult<Vec<T>>> + 'a
where
    T: 'a,
    F: FnMut(Option<PageToken>) -> Fut + 'a,
    Fut: Future<Output = PortResult<Slice<T>>> + 'a,
{
    // State: the token of the next page (`Some(None)`: the first), or `None` when done.
    futures_util::stream::unfold((fetch, Some(None)), |(mut fetch, next)| async move {
        let token = next?;
        match fetch(token).await {
            Ok(slice) => Some((Ok(slice.items), (fetch, slice.next.map(Some)))),
            Err(e) => Some((Err(e), (fetch, None))),
        }
    })
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

/// `?limit=&cursor=` of a list that takes nothing else.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// A reply body as JSON text.
pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String, ServiceError> {
    serde_json::to_string(v).map_err(|e| ServiceError::Internal(e.to_string()))
}

/// `limit` of a list request: 1 to 200, 50 when absent.
pub fn parse_limit(limit: Option<&str>) -> Result<usize, ServiceError> {
    match limit {
        None => Ok(50),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| {
                ServiceError::reject(
                    ErrorCode::InvalidParameter,
                    "limit must be an integer from 1 to 200",
                )
            }),
    }
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
