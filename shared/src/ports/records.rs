//! The stored state of each aggregate, as the ports exchange it. Field names are also the
//! attribute names of the DynamoDB items (the adapter serialises these structs as they are).

use crate::domain::account::{AccountStatus, Plan};
use crate::domain::batch::{BatchCredits, BatchStatus, TaskCounts, TaskSpec, TaskStatus};
use crate::domain::ledger::{Book, EntryKind};
use crate::domain::money::Credits;
use crate::domain::pricing::Model;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountRecord {
    pub account_id: String,
    pub name: String,
    pub plan: Plan,
    pub status: AccountStatus,
    pub retention_days: u32,
    pub max_concurrency: u32,
    pub min_batch_size: u32,
    /// Spendable credits. Equals the sum of the account's ledger entries.
    pub balance: Credits,
    /// Credits pre-deducted by batches not yet settled.
    pub held: Credits,
    pub lifetime_granted: Credits,
    pub lifetime_charged: Credits,
    pub lifetime_refunded: Credits,
    /// Units of cancelled tasks that never reached a provider, given back (absent on
    /// accounts from before the cancel rule: zero).
    #[serde(default)]
    pub lifetime_released: Credits,
    /// Sequence number of the newest ledger entry; every balance change conditions on it.
    pub ledger_seq: u64,
    pub last_entry_ms: i64,
    pub created_ms: i64,
    /// Tasks of this account holding a provider slot now (at most `max_concurrency`).
    #[serde(default)]
    pub running: u32,
    /// Below this balance a `credits.low_balance` event goes out (None: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_balance_threshold: Option<Credits>,
    /// Requests a minute over all the account's keys (a contract term; None: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_budget_per_min: Option<u32>,
    /// The anomaly rules lowered the budget until `until_ms` (its keys together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// The sweeper's last "running:counted" observation of a slot surplus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_audit: Option<String>,
    /// The contract's SLA terms (None: the defaults of `SlaTerms::default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla_terms: Option<crate::domain::sla::SlaTerms>,
    /// Who invoices are issued to (the customer edits it; issued invoices keep a copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_profile: Option<crate::domain::invoice::BillingProfile>,
    /// Set when a card refund or dispute took back more than the balance held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_issue: Option<super::billing::PaymentIssue>,
}

impl AccountRecord {
    /// Requests a minute over all the account's keys: the contract's term, or the default.
    pub fn request_budget(&self) -> u32 {
        self.request_budget_per_min
            .unwrap_or(crate::domain::access::DEFAULT_REQUEST_BUDGET_PER_MIN)
    }

    /// The budget at `now_ms`: the contract's, or a throttle's while one is in force.
    pub fn effective_budget(&self, now_ms: i64) -> u32 {
        let own = self.request_budget();
        match &self.throttle {
            Some(t) if t.until_ms > now_ms => own.min(t.limit),
            _ => own,
        }
    }

    pub fn book(&self) -> Book {
        Book {
            balance: self.balance,
            seq: self.ledger_seq,
            last_entry_ms: self.last_entry_ms,
        }
    }
}

/// Who a console session signs in as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// A customer, through one of their API keys (its scopes, allowlist and limits apply).
    Customer,
    /// A named operator, through their operator credential.
    Operator,
    /// A one-time read-only pass an operator issued for a terminated account, not yet used:
    /// redeeming it (once) opens a `ReadOnly` session.
    Pass,
    /// Finance's view of a terminated account (contract 6.1/6.2): read scope only, opened
    /// from a pass; the account's keys keep refusing every API call.
    ReadOnly,
}

/// A console session. The browser holds only the opaque id; this item is under its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session_hash: String,
    pub kind: SessionKind,
    /// The SHA-256 of the key (or operator credential) the session signs in as: each request
    /// looks the key up again, so a disabled or revoked key ends the session at once.
    pub credential_hash: String,
    /// The customer's account, or the operator's name (for display and the usage log).
    pub subject: String,
    /// Sent back by the page on every mutation (`X-CSRF-Token`).
    pub csrf_token: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// The item's TTL (seconds): a day after it ends.
    pub expires_at: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub key_hash: String,
    pub key_id: String,
    pub account_id: String,
    pub name: String,
    pub prefix: String,
    pub last4: String,
    pub enabled: bool,
    pub created_ms: i64,
    /// `read`, `batches:write`, `admin`. Keys from before scopes existed hold all three.
    #[serde(default = "all_scopes")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_min: Option<u32>,
    /// CIDR blocks; empty: any address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_allowlist: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// Set once, for good: a revoked key never works again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
    /// Why it is disabled (`manual`, `account_terminated`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// An anomaly rule lowered this key's limit until `until_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    #[serde(default)]
    pub updated_ms: i64,
}

fn all_scopes() -> Vec<String> {
    crate::domain::access::KeyScope::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    pub limit: u32,
    pub since_ms: i64,
    pub until_ms: i64,
    pub reason: String,
}

/// One line of `enterprise_api_usage`: an API call, or an action the anomaly rules took.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The caller's account; `_unauthenticated` for calls without a valid key, `_operator`
    /// for the operator API.
    pub account_id: String,
    /// `{at_ms, 13 digits}#{request_id}`: sorts by time.
    pub usage_id: String,
    pub at_ms: i64,
    /// `request`, `anomaly`, or `unauthenticated`: one source's calls without a valid key in
    /// one minute, as seen by one instance (`count` of them; the fields describe the first).
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub method: String,
    /// The route template (`/v1/batches/{batch_id}`), never the raw path.
    pub route: String,
    pub status: u16,
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The error code answered, or the anomaly rule that fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    pub expires_at: i64,
    /// How many calls an `unauthenticated` summary stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub account_id: String,
    pub seq: u64,
    pub created_ms: i64,
    pub kind: EntryKind,
    pub amount: Credits,
    pub balance_after: Credits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_paid_usd_cents: Option<i64>,
    /// The entry an adjustment settles (a dispute), as its id `le_...`; for a purchase, the
    /// payment (`card:{session}`, `wire:{reference}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<String>,
    /// The invoice of a purchase (`INV-...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoice: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchRecord {
    pub account_id: String,
    pub batch_id: String,
    pub request_id: String,
    pub status: BatchStatus,
    pub model: Model,
    pub unit_price: Credits,
    pub price_version: String,
    pub task_count: u32,
    pub counts: TaskCounts,
    pub credits: BatchCredits,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// S3 key of the batch's validated tasks (JSON Lines of `TaskSpec`), written before the
    /// hold commits: what recovery rebuilds missing task records from.
    pub input_key: String,
    /// While `accepted`: until when the writer that holds the lease may write task records.
    /// Longer than a Lambda can live, so recovery never races a live writer.
    pub lease_until_ms: i64,
    pub created_ms: i64,
    /// Tasks `0..next_dispatch` have been handed to the tasks queue.
    #[serde(default)]
    pub next_dispatch: u32,
    /// When the latest of them were handed over.
    #[serde(default)]
    pub dispatched_ms: i64,
    #[serde(default)]
    pub cancel_requested: bool,
    /// Set until the batch settles (the sweeper's `open` index).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settlement: Option<crate::domain::task::Settlement>,
    #[serde(default)]
    pub completed_ms: Option<i64>,
    /// The account's retention when the batch was made: its tasks and videos keep it.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
}

fn default_retention() -> u32 {
    90
}

/// When a batch's task records expire: retention counted from creation, plus a week for the
/// longest a batch can still be running (queue and run deadlines).
pub fn task_expiry(created_ms: i64, retention_days: u32) -> i64 {
    created_ms / 1_000 + (i64::from(retention_days) + 7) * 86_400
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    pub batch_id: String,
    pub idx: u32,
    pub task_id: String,
    pub account_id: String,
    pub status: TaskStatus,
    pub model: Model,
    #[serde(flatten)]
    pub spec: TaskSpec,
    pub created_ms: i64,
    pub updated_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_job_id: Option<String>,
    /// Provider calls that failed retryably (429, 5xx, timeouts).
    #[serde(default)]
    pub attempts: u32,
    /// True while the task holds one of its account's concurrency slots.
    #[serde(default)]
    pub slot: bool,
    /// Once ended: the task its slot was handed over to (the next task of the batch, whose
    /// message carries it). A redelivered step of an ended task sends that message again,
    /// for an end that died between this record and the send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_to: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<i64>,
    /// Past this the task times out (refunded): queue limit while queued, the model's run
    /// deadline once started.
    #[serde(default)]
    pub deadline_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_key: Option<String>,
    /// Once ended: whether its unit is charged (false for refunds and for cancels that
    /// landed before the task reached a provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged: Option<bool>,
    /// DynamoDB TTL (epoch seconds): the account's retention, counted from the batch's
    /// creation plus the longest a batch can run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Bumped by every save; a save lands only on the version it read (optimistic
    /// concurrency), so a stale copy of a task can never overwrite a newer one. It is also
    /// the token of the task's message chain: a message names the version it was sent at,
    /// and one that no longer matches is stale and dropped.
    #[serde(default)]
    pub version: u64,
    /// By when the chain has promised to look at the task again; past it (and a grace), the
    /// sweeper takes the chain for lost.
    #[serde(default)]
    pub next_check_ms: i64,
    /// While set and in the future, one worker is submitting the task upstream; nobody else
    /// may. Cleared with the job id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_claim_until_ms: Option<i64>,
}

/// One progress shard of a batch (see `domain::task::SHARD_SIZE`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShardRecord {
    pub batch_id: String,
    pub shard: u32,
    pub size: u32,
    /// idx -> 1 while the task runs: set when it starts, removed by its end mark (the end
    /// mark and `n_started` carry what it said from then on).
    #[serde(default)]
    pub started: BTreeMap<String, u8>,
    /// idx -> outcome: the exactly-once mark of how the task ended.
    #[serde(default)]
    pub ended: BTreeMap<String, crate::domain::task::Outcome>,
    #[serde(default)]
    pub n_started: u32,
    #[serde(default)]
    pub n_ended_unstarted: u32,
    #[serde(default)]
    pub n_succeeded: u32,
    #[serde(default)]
    pub n_failed: u32,
    #[serde(default)]
    pub n_rejected: u32,
    #[serde(default)]
    pub n_timed_out: u32,
    #[serde(default)]
    pub n_cancelled: u32,
    #[serde(default)]
    pub n_released: u32,
}

impl ShardRecord {
    /// Every shard of a batch of `total` tasks, empty: what a new batch starts with.
    pub fn all_empty(batch_id: &str, total: u32) -> impl Iterator<Item = Self> + '_ {
        use crate::domain::task::{shard_count, shard_len};
        (0..shard_count(total)).map(move |sh| Self::empty(batch_id, sh, shard_len(total, sh)))
    }

    /// A shard of `size` tasks with nothing started or ended.
    pub fn empty(batch_id: &str, shard: u32, size: u32) -> Self {
        ShardRecord {
            batch_id: batch_id.to_string(),
            shard,
            size,
            started: Default::default(),
            ended: Default::default(),
            n_started: 0,
            n_ended_unstarted: 0,
            n_succeeded: 0,
            n_failed: 0,
            n_rejected: 0,
            n_timed_out: 0,
            n_cancelled: 0,
            n_released: 0,
        }
    }

    pub fn counts(&self) -> crate::domain::task::ShardCounts {
        crate::domain::task::ShardCounts {
            size: self.size,
            started: self.n_started,
            ended_unstarted: self.n_ended_unstarted,
            succeeded: self.n_succeeded,
            failed: self.n_failed,
            rejected: self.n_rejected,
            timed_out: self.n_timed_out,
            cancelled: self.n_cancelled,
            released: self.n_released,
        }
    }
}

/// An idempotency record: the response we sent for `(account, scope#request_id)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    pub account_id: String,
    pub request_key: String,
    pub fingerprint: String,
    pub status_code: u16,
    /// The response body exactly as first sent (JSON text). It is customer data and follows
    /// the account's retention: stored apart from the rest (the DynamoDB adapter keeps it in
    /// an item of its own with a TTL), it is `None` once deleted. The rest of the record is a
    /// permanent tombstone: the request_id can never make a second resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    pub resource_id: String,
    pub created_ms: i64,
    /// When the stored response stops being served (and its item expires); 0: never
    /// (records from before retention applied to them).
    #[serde(default)]
    pub response_expires_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileRecord {
    pub account_id: String,
    pub file_id: String,
    pub request_id: String,
    pub purpose: String,
    pub s3_key: String,
    pub created_ms: i64,
    pub upload_expires_ms: i64,
    /// DynamoDB TTL (epoch seconds): the file record follows the account's retention.
    pub expires_at: i64,
}

/// A customer's webhook endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub account_id: String,
    pub endpoint_id: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Event types it receives; `None`: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_types: Option<Vec<String>>,
    pub enabled: bool,
    /// Why it is disabled: `manual`, `gone` (the receiver answered 410), `failing` (no
    /// success for 5 days), `account_terminated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_ms: Option<i64>,
    /// Newest first; during a rotation the replaced secret carries its retirement time.
    pub secrets: Vec<crate::domain::webhook::SigningSecret>,
    /// Bumped by every rotation; a rotation conditions on it.
    #[serde(default)]
    pub secrets_version: u64,
    /// Set by the first failed attempt after a success; cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// An event as first emitted. `body` is the exact JSON every delivery of it sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EventRecord {
    pub account_id: String,
    pub event_id: String,
    pub event_type: String,
    pub created_ms: i64,
    pub body: String,
    /// DynamoDB TTL (epoch seconds): the account's retention.
    pub expires_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Attempts remain (or one is in flight).
    Pending,
    Succeeded,
    /// The schedule ran out, the receiver answered 410, or the endpoint was disabled.
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }
}

/// One POST to an endpoint: the delivery log's line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptLog {
    /// 1-based over the delivery's whole life (redeliveries continue the count).
    pub n: u32,
    pub at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// The receiver's response body, cut to 1 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_body: Option<String>,
    /// No response: timeout, connection refused, TLS, DNS, a forbidden address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `schedule` or `redeliver`.
    pub trigger: String,
}

/// One event's delivery to one endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub endpoint_id: String,
    pub event_id: String,
    pub account_id: String,
    pub event_type: String,
    pub created_ms: i64,
    pub status: DeliveryStatus,
    /// Attempts claimed so far; attempt `n` is claimed by moving this from `n - 1` to `n`.
    pub attempts_made: u32,
    /// Attempts whose result is in `attempts`; equal to `attempts_made` unless one is in
    /// flight (or its claimer died).
    #[serde(default)]
    pub recorded: u32,
    /// `attempts_made` when the current schedule began (0, or at the last redelivery).
    #[serde(default)]
    pub schedule_base: u32,
    /// Until when the claimed attempt belongs to its claimer; after, anyone may retake it.
    #[serde(default)]
    pub claim_until_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<i64>,
    #[serde(default)]
    pub attempts: Vec<AttemptLog>,
    pub expires_at: i64,
}

/// A requested export and, once written, its manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportRecord {
    pub account_id: String,
    pub export_id: String,
    pub request_id: String,
    pub dataset: crate::domain::export::Dataset,
    pub format: crate::domain::export::Format,
    pub from_ms: i64,
    pub to_ms: i64,
    /// `queued`, `running`, `completed`, `failed`.
    pub status: String,
    #[serde(default)]
    pub rows_written: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub s3_key: String,
    pub manifest_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// Bumped by every run; a run only writes while the record still carries its number.
    #[serde(default)]
    pub run: u32,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The largest amount of file data the run held in memory at once (bytes).
    #[serde(default)]
    pub peak_buffer_bytes: u64,
    /// When the current run started: until the export function's timeout has passed since,
    /// it may still be alive, and a second message does not take over from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_started_ms: Option<i64>,
    /// When a read of the still-queued export last sent it to its queue again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nudged_ms: Option<i64>,
    pub expires_at: i64,
}
