//! What the SLA report is computed from (contract 3): per account and month, the
//! processing-time histograms and exclusions written at each task's end and the minutes in
//! which the account's requests got a 5xx; per month, the synthetic probe's failed minutes;
//! and the close of each account's month, created once with its compensation.

use super::common::PortResult;
use crate::domain::pricing::Model;
use crate::domain::sla::{Histogram, MinuteCounts, TaskClass};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An ended task as the SLA figures count it: its account, the month it ended in, its model
/// and how it counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEnd {
    pub account_id: String,
    /// `YYYY-MM`.
    pub month: String,
    pub model: Model,
    pub class: TaskClass,
}

/// One account's month, as measured so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlaMonth {
    /// Processing time (slot to outcome) by model.
    pub processing: BTreeMap<Model, Histogram>,
    /// Queue time (creation to slot) by model.
    pub queue: BTreeMap<Model, Histogram>,
    /// Measured tasks that failed for a cause of ours, by model.
    pub platform_failures: BTreeMap<Model, u64>,
    /// Tasks left out of the figures, by model and cause (`Exclusion::as_str`).
    pub excluded: BTreeMap<(Model, String), u64>,
    /// The account's 5xx answers by minute (start of the minute, ms).
    pub server_errors: BTreeMap<i64, u64>,
}

/// The synthetic probe's month: how many minutes it found the API answering, and the
/// minutes it did not, with what it saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeMonth {
    pub ok_minutes: u64,
    pub failed: BTreeMap<i64, String>,
}

/// An account's month, closed: the figures it closed with and the compensation issued.
/// Created once (it is the exactly-once guard of the month's compensation), never changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaCloseRecord {
    pub account_id: String,
    /// `YYYY-MM`.
    pub month: String,
    pub closed_ms: i64,
    pub minutes: u64,
    pub down_minutes: u64,
    pub availability_ppm: u64,
    /// Credits charged in the month (what the percentages apply to).
    pub charged: i64,
    pub percent: u32,
    pub compensation: i64,
    /// The ledger entry of the compensation, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_seq: Option<u64>,
    /// The report at close, as JSON: what the compensation came from.
    pub report: String,
}

/// A sustained platform failure (contract 3.5): from the first platform-caused task failure
/// of the window that opened it to a whole quiet window after the last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub incident_id: String,
    pub started_ms: i64,
    /// `None` while open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// The start of the last minute with a platform failure.
    pub last_failure_ms: i64,
    /// Platform-caused task failures by account, since the start.
    pub accounts: BTreeMap<String, u64>,
}

impl Incident {
    pub fn failures(&self) -> u64 {
        self.accounts.values().sum()
    }
}

#[async_trait]
pub trait Sla: Send + Sync {
    /// Adds ended tasks to their accounts' months (atomic adds: concurrent ends never lose
    /// one another), with one write per stored item the ends fall in, however many fall in
    /// it. Called once per task end by whoever landed the end (the task worker gathers an
    /// invocation's ends into one call).
    async fn add_tasks(&self, ends: &[TaskEnd]) -> PortResult<()>;
    /// Counts a 5xx answer to the account in the minute starting at `minute_ms`, and keeps
    /// that minute's request counts until `keep_until_ms` (they expire within minutes
    /// otherwise).
    async fn add_server_error(
        &self,
        account_id: &str,
        minute_ms: i64,
        keep_until_ms: i64,
    ) -> PortResult<()>;
    /// The request counts of the account's minutes (absent: nothing counted, or expired).
    async fn minutes(
        &self,
        account_id: &str,
        minutes: &[i64],
    ) -> PortResult<BTreeMap<i64, MinuteCounts>>;
    /// The account's month so far (empty if nothing was recorded). Strongly consistent.
    async fn month(&self, account_id: &str, month: &str) -> PortResult<SlaMonth>;
    /// The probe's result for the minute starting at `minute_ms`: `None` when the API
    /// answered correctly, else what went wrong. A minute counts once as ok however often
    /// the probe ran in it.
    async fn record_probe(&self, minute_ms: i64, failure: Option<&str>) -> PortResult<()>;
    async fn probes(&self, month: &str) -> PortResult<ProbeMonth>;
    /// The close of an account's month, if it was closed.
    async fn closed(&self, account_id: &str, month: &str) -> PortResult<Option<SlaCloseRecord>>;
    /// Counts a platform-caused task failure of `account_id` in the minute `minute_ms`.
    async fn add_platform_failure(&self, account_id: &str, minute_ms: i64) -> PortResult<()>;
    /// Platform-caused failures by minute and account, for minutes in `[from_ms, to_ms)`.
    async fn platform_failures(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> PortResult<BTreeMap<i64, BTreeMap<String, u64>>>;
    /// The open incident, if any.
    async fn open_incident(&self) -> PortResult<Option<Incident>>;
    /// Opens `inc` if no incident is open (false: one is).
    async fn start_incident(&self, inc: &Incident) -> PortResult<bool>;
    /// Updates the open incident if it is still `inc.incident_id` (false: it is not).
    async fn update_incident(&self, inc: &Incident) -> PortResult<bool>;
    /// Closes the open incident `inc.incident_id` (with its `ended_ms`) and keeps it: false if
    /// that incident is no longer the open one.
    async fn end_incident(&self, inc: &Incident) -> PortResult<bool>;
    /// Closed incidents that started before `to_ms` and ended after `from_ms`, oldest first.
    async fn incidents(&self, from_ms: i64, to_ms: i64) -> PortResult<Vec<Incident>>;
}
