//! The items as stored. Field names are the DynamoDB attribute names.

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
    pub balance: i64,
    /// Credits pre-deducted by batches not yet settled.
    pub held: i64,
    pub lifetime_granted: i64,
    pub lifetime_charged: i64,
    pub lifetime_refunded: i64,
    /// Sequence number of the newest ledger entry; every balance change conditions on it.
    pub ledger_seq: u64,
    pub last_entry_ms: i64,
    pub created_ms: i64,
}

impl AccountRecord {
    pub fn book(&self) -> Book {
        Book {
            balance: Credits(self.balance),
            seq: self.ledger_seq,
            last_entry_ms: self.last_entry_ms,
        }
    }
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub account_id: String,
    pub seq: u64,
    pub created_ms: i64,
    pub kind: EntryKind,
    pub amount: i64,
    pub balance_after: i64,
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
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchRecord {
    pub account_id: String,
    pub batch_id: String,
    pub request_id: String,
    pub status: BatchStatus,
    pub model: Model,
    pub unit_price: i64,
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
}

/// An idempotency record: the response we sent for `(account, scope#request_id)`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RequestRecord {
    pub account_id: String,
    pub request_key: String,
    pub fingerprint: String,
    pub status_code: u16,
    /// The response body exactly as first sent (JSON text).
    pub response: String,
    pub resource_id: String,
    pub created_ms: i64,
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
