//! The public JSON shapes. The OpenAPI document describes exactly these.

use crate::domain::account::{AccountStatus, Plan};
use crate::domain::batch::{BatchCredits, BatchStatus, TaskCounts, TaskStatus};
use crate::domain::ledger::{entry_id, EntryKind};
use crate::domain::money::Credits;
use crate::domain::pricing::Model;
use crate::domain::time::rfc3339_ms;
use crate::ports::records::{
    AccountRecord, ApiKeyRecord, BatchRecord, FileRecord, LedgerRecord, TaskRecord,
};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub id: String,
    pub name: String,
    pub plan: Plan,
    pub status: AccountStatus,
    pub retention_days: u32,
    pub max_concurrency: u32,
    pub min_batch_size: u32,
    /// Requests a minute over all the account's API keys.
    pub request_budget_per_min: u32,
    /// While the anomaly rules hold the whole account to a tenth of its budget.
    pub throttle: Option<ThrottleView>,
    pub created_at: String,
    pub credits: CreditsView,
    /// Below this balance a `credits.low_balance` event goes out; null: never.
    pub low_balance_threshold: Option<Credits>,
    /// The SLA terms in force (the contract's, or the defaults; docs/SLA.md).
    pub sla_terms: crate::domain::sla::SlaTerms,
    /// A card refund or dispute took back more than the balance held: for an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payment_issue: Option<crate::ports::billing::PaymentIssue>,
}

impl From<&AccountRecord> for AccountView {
    fn from(a: &AccountRecord) -> Self {
        Self::at(a, i64::MAX)
    }
}

impl AccountView {
    /// The account as of `now_ms` (a throttle that ended is not shown).
    pub fn at(a: &AccountRecord, now_ms: i64) -> Self {
        AccountView {
            id: a.account_id.clone(),
            name: a.name.clone(),
            plan: a.plan,
            status: a.status,
            retention_days: a.retention_days,
            max_concurrency: a.max_concurrency,
            min_batch_size: a.min_batch_size,
            request_budget_per_min: a.request_budget(),
            throttle: ThrottleView::in_force(a.throttle.as_ref(), now_ms),
            created_at: rfc3339_ms(a.created_ms),
            credits: CreditsView::from(a),
            low_balance_threshold: a.low_balance_threshold,
            sla_terms: a.sla_terms.clone().unwrap_or_default(),
            payment_issue: a.payment_issue.clone(),
        }
    }
}

/// `GET /v1/credits`. All amounts in Credits (1 credit = US$0.01).
#[derive(Debug, Serialize)]
pub struct CreditsView {
    pub balance: Credits,
    pub balance_usd: String,
    /// Pre-deducted by batches that have not settled yet.
    pub held: Credits,
    pub lifetime_granted: Credits,
    pub lifetime_charged: Credits,
    pub lifetime_refunded: Credits,
    /// Units of cancelled tasks that never reached a provider, given back.
    pub lifetime_released: Credits,
    /// Sequence number of the newest ledger entry.
    pub ledger_seq: u64,
}

impl From<&AccountRecord> for CreditsView {
    fn from(a: &AccountRecord) -> Self {
        CreditsView {
            balance: a.balance,
            balance_usd: a.balance.usd(),
            held: a.held,
            lifetime_granted: a.lifetime_granted,
            lifetime_charged: a.lifetime_charged,
            lifetime_refunded: a.lifetime_refunded,
            lifetime_released: a.lifetime_released,
            ledger_seq: a.ledger_seq,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct LedgerEntryView {
    pub id: String,
    pub seq: u64,
    pub created_at: String,
    pub kind: EntryKind,
    pub amount: Credits,
    pub balance_after: Credits,
    pub batch_id: Option<String>,
    pub task_id: Option<String>,
    pub request_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_paid_usd: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<String>,
    /// How a grant was paid: `card`, `wire`, or `operator` (a free grant, no invoice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_by: Option<&'static str>,
    /// The invoice of a purchase (`INV-...`; `GET /v1/invoices/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_id: Option<String>,
}

/// How a grant entry was paid, from the payment it refers to.
pub fn paid_by(e: &LedgerRecord) -> Option<&'static str> {
    if e.kind != EntryKind::Grant {
        return None;
    }
    Some(
        match e.refers_to.as_deref().and_then(|r| r.split_once(':')) {
            Some(("card", _)) => "card",
            Some(("wire", _)) => "wire",
            _ => "operator",
        },
    )
}

impl From<&LedgerRecord> for LedgerEntryView {
    fn from(e: &LedgerRecord) -> Self {
        LedgerEntryView {
            id: entry_id(e.seq),
            seq: e.seq,
            created_at: rfc3339_ms(e.created_ms),
            kind: e.kind,
            amount: e.amount,
            balance_after: e.balance_after,
            batch_id: e.batch_id.clone(),
            task_id: e.task_id.clone(),
            request_id: e.request_id.clone(),
            reason: e.reason.clone(),
            actor: e.actor.clone(),
            pack: e.pack.clone(),
            price_paid_usd: e
                .price_paid_usd_cents
                .map(|c| crate::domain::money::Credits(c).usd()),
            refers_to: e.refers_to.clone(),
            paid_by: paid_by(e),
            invoice_id: e.invoice.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BatchView {
    pub id: String,
    pub request_id: String,
    pub status: BatchStatus,
    pub model: Model,
    pub unit_price: Credits,
    pub price_version: String,
    pub counts: TaskCounts,
    pub credits: BatchCredits,
    pub metadata: BTreeMap<String, String>,
    pub created_at: String,
    /// A cancel was asked for: tasks that had reached a provider are charged (contract
    /// 2.2), the others released.
    pub cancel_requested: bool,
    pub completed_at: Option<String>,
    /// The closing record once every task has ended: held == charged + refunded + released.
    pub settlement: Option<crate::domain::task::Settlement>,
}

impl BatchView {
    /// The batch with live counts from its progress shards and credits consistent with the
    /// ledger: `refunded` and `released` move in the same transaction as each refund and
    /// release entry.
    pub fn live(b: &BatchRecord, shards: &[crate::ports::records::ShardRecord]) -> Self {
        let mut v = BatchView::from(b);
        if shards.is_empty() {
            return v;
        }
        let counts = crate::domain::task::task_counts(
            &shards.iter().map(|s| s.counts()).collect::<Vec<_>>(),
        );
        v.counts = counts;
        if b.status != BatchStatus::Completed {
            if counts.queued < counts.total {
                v.status = BatchStatus::Running;
            }
            let consumed = u64::from(counts.succeeded + counts.rejected + counts.cancelled);
            // Released tasks are not consumed: their units went back already.
            v.credits.charged = b.unit_price.times(consumed).unwrap_or(v.credits.held);
        }
        v
    }
}

impl From<&BatchRecord> for BatchView {
    fn from(b: &BatchRecord) -> Self {
        BatchView {
            id: b.batch_id.clone(),
            request_id: b.request_id.clone(),
            status: b.status,
            model: b.model,
            unit_price: b.unit_price,
            price_version: b.price_version.clone(),
            counts: b.counts,
            credits: b.credits,
            metadata: b.metadata.clone(),
            created_at: rfc3339_ms(b.created_ms),
            cancel_requested: b.cancel_requested,
            completed_at: b.completed_ms.map(rfc3339_ms),
            settlement: b.settlement,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct TaskView {
    pub id: String,
    pub batch_id: String,
    pub index: u32,
    pub status: TaskStatus,
    pub model: Model,
    pub prompt: String,
    pub duration_seconds: u32,
    pub aspect_ratio: String,
    pub resolution: String,
    pub client_ref: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub error: Option<TaskErrorView>,
    /// Once ended: whether its unit is charged. False for failures and time-outs (refunded)
    /// and for cancels that landed before the task reached a provider (released).
    pub charged: Option<bool>,
    /// Presigned HTTPS link to the video (succeeded tasks, single-task reads only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub download_expires_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TaskErrorView {
    pub code: String,
    pub message: String,
}

impl From<&TaskRecord> for TaskView {
    fn from(t: &TaskRecord) -> Self {
        TaskView {
            id: t.task_id.clone(),
            batch_id: t.batch_id.clone(),
            index: t.idx,
            status: t.status,
            model: t.model,
            prompt: t.spec.prompt.clone(),
            duration_seconds: t.spec.duration_seconds,
            aspect_ratio: t.spec.aspect_ratio.clone(),
            resolution: t.spec.resolution.clone(),
            client_ref: t.spec.client_ref.clone(),
            created_at: rfc3339_ms(t.created_ms),
            updated_at: rfc3339_ms(t.updated_ms),
            started_at: t.started_ms.map(rfc3339_ms),
            ended_at: t.ended_ms.map(rfc3339_ms),
            error: match (&t.error_code, t.status.is_terminal()) {
                (Some(code), true) => Some(TaskErrorView {
                    code: code.clone(),
                    message: t.error_message.clone().unwrap_or_default(),
                }),
                _ => None,
            },
            // Tasks that ended before the record kept this: every cancel was charged then.
            charged: t.charged.or_else(|| {
                t.status.is_terminal().then_some(!matches!(
                    t.status,
                    TaskStatus::Failed | TaskStatus::TimedOut
                ))
            }),
            download_url: None,
            download_expires_at: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FileView {
    pub id: String,
    pub request_id: String,
    pub purpose: String,
    /// `awaiting_upload` until an object is at the upload URL, then `uploaded`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub created_at: String,
    /// Presigned S3 URL: `PUT` the JSON Lines file there with `Content-Type: application/jsonl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
    /// Send these headers with the `PUT`, exactly: they are signed (the content type, and
    /// the tags that make the file follow the account's retention).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_headers: Option<std::collections::BTreeMap<String, String>>,
    pub upload_method: &'static str,
    pub upload_content_type: &'static str,
    pub upload_expires_at: String,
    pub max_bytes: u64,
}

impl FileView {
    pub fn new(
        f: &FileRecord,
        upload: Option<crate::ports::blobs::Presigned>,
        bytes: Option<u64>,
    ) -> Self {
        let (upload_url, upload_headers) = match upload {
            Some(p) => (Some(p.url), Some(p.headers.into_iter().collect())),
            None => (None, None),
        };
        FileView {
            id: f.file_id.clone(),
            request_id: f.request_id.clone(),
            purpose: f.purpose.clone(),
            status: if bytes.is_some() {
                "uploaded"
            } else {
                "awaiting_upload"
            },
            bytes,
            created_at: rfc3339_ms(f.created_ms),
            upload_url,
            upload_headers,
            upload_method: "PUT",
            upload_content_type: crate::domain::batch::INPUT_CONTENT_TYPE,
            upload_expires_at: rfc3339_ms(f.upload_expires_ms),
            max_bytes: crate::domain::batch::MAX_INPUT_FILE_BYTES,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub prefix: String,
    pub last4: String,
    /// `active`, `disabled`, `expired` or `revoked`.
    pub status: &'static str,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub scopes: Vec<String>,
    pub rate_limit_per_min: u32,
    pub ip_allowlist: Vec<String>,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// An anomaly rule's lowered limit while it is in force.
    pub throttle: Option<ThrottleView>,
    pub created_at: String,
    /// Only in the response that created the key; never stored, never shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ThrottleView {
    pub limit: u32,
    pub reason: String,
    pub since: String,
    pub until: String,
}

impl ThrottleView {
    /// A throttle still in force at `now_ms` (`i64::MAX`: whatever its end).
    fn in_force(t: Option<&crate::ports::records::Throttle>, now_ms: i64) -> Option<Self> {
        t.filter(|t| t.until_ms > now_ms || now_ms == i64::MAX)
            .map(|t| ThrottleView {
                limit: t.limit,
                reason: t.reason.clone(),
                since: rfc3339_ms(t.since_ms),
                until: rfc3339_ms(t.until_ms),
            })
    }
}

impl ApiKeyView {
    pub fn new(k: &ApiKeyRecord, secret: Option<String>) -> Self {
        Self::at(k, secret, i64::MAX)
    }

    /// The key as of `now_ms` (expiry and throttles depend on the time).
    pub fn at(k: &ApiKeyRecord, secret: Option<String>, now_ms: i64) -> Self {
        let status = if k.revoked_ms.is_some() {
            "revoked"
        } else if k.expires_ms.is_some_and(|t| t <= now_ms) {
            "expired"
        } else if !k.enabled {
            "disabled"
        } else {
            "active"
        };
        ApiKeyView {
            id: k.key_id.clone(),
            account_id: k.account_id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            last4: k.last4.clone(),
            status,
            enabled: k.enabled,
            disabled_reason: k.disabled_reason.clone(),
            scopes: k.scopes.clone(),
            rate_limit_per_min: k
                .rate_limit_per_min
                .unwrap_or(crate::domain::access::DEFAULT_RATE_LIMIT_PER_MIN),
            ip_allowlist: k.ip_allowlist.clone(),
            expires_at: k.expires_ms.map(rfc3339_ms),
            revoked_at: k.revoked_ms.map(rfc3339_ms),
            throttle: ThrottleView::in_force(k.throttle.as_ref(), now_ms),
            created_at: rfc3339_ms(k.created_ms),
            secret,
        }
    }
}

/// A range an operator exempted from address blocks.
#[derive(Debug, Serialize)]
pub struct BlockExemptionView {
    pub cidr: String,
    pub reason: String,
    pub created_at: String,
}

impl From<&crate::ports::access::BlockExemption> for BlockExemptionView {
    fn from(e: &crate::ports::access::BlockExemption) -> Self {
        BlockExemptionView {
            cidr: e.cidr.clone(),
            reason: e.reason.clone(),
            created_at: rfc3339_ms(e.created_ms),
        }
    }
}

/// One line of `enterprise_api_usage`.
#[derive(Debug, Serialize)]
pub struct UsageView {
    pub id: String,
    pub kind: String,
    pub at: String,
    pub key_id: Option<String>,
    pub method: String,
    pub route: String,
    pub status: u16,
    pub code: Option<String>,
    pub latency_ms: u64,
    pub source_ip: Option<String>,
    pub request_id: String,
    pub user_agent: Option<String>,
    /// `unauthenticated` summaries only: how many calls without a valid key came from this
    /// source in this minute (the other fields describe the first of them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

impl From<&crate::ports::records::UsageRecord> for UsageView {
    fn from(u: &crate::ports::records::UsageRecord) -> Self {
        UsageView {
            id: u.usage_id.clone(),
            kind: u.kind.clone(),
            at: rfc3339_ms(u.at_ms),
            key_id: u.key_id.clone(),
            method: u.method.clone(),
            route: u.route.clone(),
            status: u.status,
            code: u.code.clone(),
            latency_ms: u.latency_ms,
            source_ip: u.source_ip.clone(),
            request_id: u.request_id.clone(),
            user_agent: u.user_agent.clone(),
            count: u.count,
        }
    }
}

/// A webhook endpoint. The secret appears only when it was just made (creation, rotation).
#[derive(Debug, Serialize)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: Option<String>,
    /// `null`: every event type.
    pub event_types: Option<Vec<String>>,
    pub enabled: bool,
    /// `manual`, `gone` (the receiver answered 410), `failing` (no success for 5 days),
    /// `account_terminated`.
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<String>,
    /// Deliveries have failed since then without a success.
    pub failing_since: Option<String>,
    pub last_success_at: Option<String>,
    /// When the secret replaced by the last rotation stops signing (null: no overlap now).
    pub previous_secret_retires_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl EndpointView {
    pub fn new(
        e: &crate::ports::records::EndpointRecord,
        secret: Option<String>,
        now_ms: i64,
    ) -> Self {
        let retiring = crate::domain::webhook::active_secrets(&e.secrets, now_ms)
            .iter()
            .filter_map(|s| s.retires_ms)
            .max();
        EndpointView {
            id: e.endpoint_id.clone(),
            url: e.url.clone(),
            description: e.description.clone(),
            event_types: e.event_types.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            disabled_at: e.disabled_ms.map(rfc3339_ms),
            failing_since: e.failing_since_ms.map(rfc3339_ms),
            last_success_at: e.last_success_ms.map(rfc3339_ms),
            previous_secret_retires_at: retiring.map(rfc3339_ms),
            created_at: rfc3339_ms(e.created_ms),
            updated_at: rfc3339_ms(e.updated_ms),
            secret,
        }
    }
}

/// One event's delivery to one endpoint, with every attempt.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub event_id: String,
    pub event_type: String,
    pub endpoint_id: String,
    pub status: crate::ports::records::DeliveryStatus,
    pub created_at: String,
    pub attempts_made: u32,
    pub next_attempt_at: Option<String>,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: String,
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub response_body: Option<String>,
    pub error: Option<String>,
    pub trigger: String,
}

impl From<&crate::ports::records::DeliveryRecord> for DeliveryView {
    fn from(d: &crate::ports::records::DeliveryRecord) -> Self {
        use crate::ports::records::DeliveryStatus;
        DeliveryView {
            event_id: d.event_id.clone(),
            event_type: d.event_type.clone(),
            endpoint_id: d.endpoint_id.clone(),
            status: d.status,
            created_at: rfc3339_ms(d.created_ms),
            attempts_made: d.recorded,
            next_attempt_at: if d.status == DeliveryStatus::Pending {
                d.next_attempt_ms.map(rfc3339_ms)
            } else {
                None
            },
            attempts: d
                .attempts
                .iter()
                .rev()
                .map(|a| AttemptView {
                    attempt: a.n,
                    at: rfc3339_ms(a.at_ms),
                    status_code: a.status_code,
                    latency_ms: a.latency_ms,
                    response_body: a.response_body.clone(),
                    error: a.error.clone(),
                    trigger: a.trigger.clone(),
                })
                .collect(),
        }
    }
}
