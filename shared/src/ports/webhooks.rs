//! Webhooks: endpoints, the event log, deliveries (each moved through conditional writes
//! only), and the outbound HTTP sender.

use super::common::{Listed, PageToken, PortResult, Slice, TimeRange};
use super::records::{AttemptLog, DeliveryRecord, DeliveryStatus, EndpointRecord, EventRecord};
use crate::domain::webhook::AttemptResult;
use async_trait::async_trait;

/// The fields of an endpoint a customer may change; `None` leaves a field.
#[derive(Clone, Debug, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub event_types: Option<Option<Vec<String>>>,
    pub enabled: Option<bool>,
}

/// Where a newest-first, time-ordered listing resumes: (created_ms, sort key).
pub type TimePos = (i64, String);

#[async_trait]
pub trait Endpoints: Send + Sync {
    async fn get(&self, account_id: &str, endpoint_id: &str) -> PortResult<Option<EndpointRecord>>;
    /// All of an account's endpoints, oldest first (at most a few dozen).
    async fn list(&self, account_id: &str) -> PortResult<Vec<EndpointRecord>>;
    /// `None` when the endpoint does not exist. Enabling clears the failure clock.
    async fn patch(
        &self,
        account_id: &str,
        endpoint_id: &str,
        patch: &EndpointPatch,
        now_ms: i64,
    ) -> PortResult<Option<EndpointRecord>>;
    async fn delete(&self, account_id: &str, endpoint_id: &str) -> PortResult<bool>;
    /// Starts the failure clock unless it runs already.
    async fn mark_failing(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now_ms: i64,
    ) -> PortResult<()>;
    /// Stops the failure clock and notes the success.
    async fn mark_healthy(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now_ms: i64,
    ) -> PortResult<()>;
    /// Disables an enabled endpoint: the new record when this call did it.
    async fn disable(
        &self,
        account_id: &str,
        endpoint_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<Option<EndpointRecord>>;
    /// Termination and reinstatement, as for keys.
    async fn set_all_for_account(
        &self,
        account_id: &str,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<usize>;
}

#[async_trait]
pub trait Events: Send + Sync {
    /// Stores an event the first time it is seen; returns the stored one either way.
    async fn put_once(&self, rec: &EventRecord) -> PortResult<EventRecord>;
    async fn get(&self, account_id: &str, event_id: &str) -> PortResult<Option<EventRecord>>;
    /// Newest first, optionally of one type.
    async fn list(
        &self,
        account_id: &str,
        event_type: Option<&str>,
        limit: usize,
        before: Option<TimePos>,
    ) -> PortResult<Listed<EventRecord>>;
}

#[async_trait]
pub trait Deliveries: Send + Sync {
    /// Creates a delivery unless one exists for this (endpoint, event).
    async fn create(&self, rec: &DeliveryRecord) -> PortResult<bool>;
    async fn get(&self, endpoint_id: &str, event_id: &str) -> PortResult<Option<DeliveryRecord>>;
    /// Claims attempt `n` of a pending delivery: it is the next one, or an earlier claimer
    /// of `n` died (its claim ran out before `now_ms` with nothing recorded).
    async fn claim(
        &self,
        endpoint_id: &str,
        event_id: &str,
        n: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool>;
    /// Records attempt `log.n` and the delivery's new state; false if recorded already.
    async fn record(
        &self,
        endpoint_id: &str,
        event_id: &str,
        log: &AttemptLog,
        status: DeliveryStatus,
        next_attempt_ms: Option<i64>,
    ) -> PortResult<bool>;
    /// Starts a new schedule for a finished delivery (a redelivery): the attempt number to
    /// send next, or `None` when it is still pending, out of attempts, or absent.
    async fn restart(
        &self,
        endpoint_id: &str,
        event_id: &str,
        now_ms: i64,
    ) -> PortResult<Option<u32>>;
    /// An endpoint's deliveries created within `range`, newest first, optionally of one status.
    async fn list(
        &self,
        endpoint_id: &str,
        range: TimeRange,
        status: Option<DeliveryStatus>,
        limit: usize,
        before: Option<TimePos>,
    ) -> PortResult<Listed<DeliveryRecord>>;
    /// Oldest first, a page at a time; eventually consistent.
    async fn page(
        &self,
        endpoint_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<DeliveryRecord>>;
}

/// What one POST produced, for the delivery log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostOutcome {
    pub result: AttemptResult,
    pub latency_ms: u64,
    pub body: Option<String>,
    pub error: Option<String>,
}

impl PostOutcome {
    /// A receiver that answered `code` at once with an empty body (test doubles).
    pub fn answered(code: u16) -> PostOutcome {
        PostOutcome {
            result: AttemptResult::Status {
                code,
                retry_after_secs: None,
            },
            latency_ms: 1,
            body: None,
            error: None,
        }
    }
}

/// The outbound side of webhooks.
#[async_trait]
pub trait WebhookSender: Send + Sync {
    /// POSTs a signed body: no redirects, a per-attempt timeout, and in the cloud never to a
    /// private address. Never fails: every failure is an outcome for the log.
    async fn post(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> PostOutcome;
    /// In the cloud, a host name must resolve, and only to public addresses.
    async fn check_public_name(&self, host: &str, port: Option<u16>) -> Result<(), String>;
}
