//! The money ports (movements and the ledger), accounts, idempotency records and the small
//! aggregates (files, models, exports).

use super::common::{Listed, PageToken, PortResult, Slice, StoreError, TimeRange};
use super::records::{
    AccountRecord, ApiKeyRecord, BatchRecord, EndpointRecord, ExportRecord, FileRecord,
    LedgerRecord, RequestRecord, ShardRecord, TaskRecord, Throttle,
};
use crate::domain::account::AccountStatus;
use crate::domain::ledger::{Book, EntryKind};
use crate::domain::money::Credits;
use crate::domain::task::{Outcome, Settlement};
use crate::domain::webhook::SigningSecret;
use async_trait::async_trait;

/// A record that a transaction creates; it must not exist yet.
#[derive(Clone, Debug)]
pub enum NewRecord {
    Account(AccountRecord),
    Batch(BatchRecord),
    Request(RequestRecord),
    File(FileRecord),
    Endpoint(EndpointRecord),
    Export(ExportRecord),
    ApiKey(ApiKeyRecord),
    /// The close of an account's SLA month: once per account and month.
    SlaClose(super::sla::SlaCloseRecord),
    /// A numbered document; created beside the `Change::NextNumber` that takes its number.
    Invoice(super::billing::InvoiceRecord),
    /// A card payment's lookup record, created with its grant.
    Payment(super::billing::PaymentRecord),
    /// A task record of a small batch, created with the batch's hold.
    Task(TaskRecord),
    /// A progress shard of a small batch, created with the batch's hold.
    Shard(ShardRecord),
}

/// A conditional change of an existing record inside a transaction.
#[derive(Clone, Debug)]
pub enum Change {
    /// A card payment's reversed credits move from `from` to `to`, only from `from`: a
    /// refund or dispute takes its Credits back once however often it is reported.
    PaymentReversed {
        payment_intent: String,
        from: i64,
        to: i64,
    },
    /// A series' counter moves from `seq - 1` to `seq` (from nothing when `seq` is 1): the
    /// number is taken by this transaction alone, and only if nobody took it first.
    NextNumber {
        series: crate::domain::invoice::Series,
        year: i32,
        seq: u64,
    },
    /// The exactly-once end mark of a task in its progress shard (see [`EndMark`]).
    EndMark(EndMark),
    /// A refund added to its batch's own tally; the batch must exist.
    BatchRefund {
        account_id: String,
        batch_id: String,
        amount: Credits,
    },
    /// A release (a cancelled task that never reached a provider) added to its batch's
    /// own tally; the batch must exist.
    BatchRelease {
        account_id: String,
        batch_id: String,
        amount: Credits,
    },
    /// An endpoint's signing secrets replaced, if nobody rotated since `version` was read.
    RotateSecrets {
        account_id: String,
        endpoint_id: String,
        version: u64,
        secrets: Vec<SigningSecret>,
        now_ms: i64,
    },
}

/// How a task's end lands in its progress shard: `ended.<idx>` is set once, and only if the
/// task's `started.<idx>` mark is still what the writer saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndMark {
    pub batch_id: String,
    pub idx: u32,
    pub was_started: bool,
    pub outcome: Outcome,
}

/// One balance change with its ledger entry and the records it creates or changes: all of it
/// lands, or none of it.
#[derive(Clone, Debug)]
pub struct MoneyMove {
    pub account_id: String,
    /// The book as read; the write only lands if the account still has exactly this.
    pub expected: Book,
    /// Refuse if the account was terminated meanwhile (new spending), or not (grants, refunds).
    pub require_active: bool,
    pub entry: LedgerRecord,
    pub held_delta: Credits,
    pub granted_delta: Credits,
    pub charged_delta: Credits,
    pub refunded_delta: Credits,
    pub released_delta: Credits,
    pub creates: Vec<NewRecord>,
    /// A failed condition of `changes[i]` is `Duplicate(creates.len() + i)`.
    pub changes: Vec<Change>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The account moved (or is no longer active) since it was read: re-read and retry.
    #[error("account changed since it was read")]
    Stale,
    /// `creates[i]` already exists (or `changes[i - creates.len()]`'s condition failed): the
    /// operation, or a conflicting one, happened before.
    #[error("record {0} of the transaction already exists")]
    Duplicate(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Every movement of money: the one conditional commit of balance, ledger entry and the
/// records the movement creates, and settlement (held credits becoming charges).
#[async_trait]
pub trait Money: Send + Sync {
    /// Lands only if the account's book is still `mv.expected` (and it is active when
    /// required), no record of `mv.creates` exists, and every change's condition holds.
    async fn commit(&self, mv: MoneyMove) -> Result<(), CommitError>;

    /// Settlement, exactly once: the batch becomes `completed` with its settlement record
    /// and the account's `held` becomes `lifetime_charged`, together. False when the batch
    /// is completed already or its refund or release tally is no longer what `st` says.
    async fn settle(&self, batch: &BatchRecord, st: &Settlement, now_ms: i64) -> PortResult<bool>;
}

/// Where a newest-first ledger page resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerPos {
    pub seq: u64,
    pub created_ms: i64,
}

#[derive(Clone, Debug)]
pub struct LedgerQuery {
    pub account_id: String,
    /// Inclusive.
    pub range: TimeRange,
    pub kind: Option<EntryKind>,
    pub limit: usize,
    pub after: Option<LedgerPos>,
}

/// Reads of the Credits Ledger (written only through [`Money::commit`]).
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Newest first, strongly consistent.
    async fn list(&self, q: &LedgerQuery) -> PortResult<Listed<LedgerRecord>>;
    /// The newest entry created before `ms` (a statement's opening balance).
    async fn last_before(&self, account_id: &str, ms: i64) -> PortResult<Option<LedgerRecord>>;
    async fn get(&self, account_id: &str, seq: u64) -> PortResult<Option<LedgerRecord>>;
    /// Oldest first, in pages, created within `range`; eventually consistent (the newest
    /// entries may be missing).
    async fn page(
        &self,
        account_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<LedgerRecord>>;
}

/// Accounts: terms, status, and the concurrency slots of the task pipeline. Balances move
/// only through [`Money`].
/// A change to an account's terms; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TermsPatch {
    pub retention_days: Option<u32>,
    pub max_concurrency: Option<u32>,
    pub request_budget_per_min: Option<u32>,
    pub sla_terms: Option<crate::domain::sla::SlaTerms>,
    pub billing_profile: Option<crate::domain::invoice::BillingProfile>,
    /// Flags the account for an operator (a refund or dispute it could not cover).
    pub payment_issue: Option<super::billing::PaymentIssue>,
}

#[async_trait]
pub trait Accounts: Send + Sync {
    /// Strongly consistent.
    async fn get(&self, account_id: &str) -> PortResult<Option<AccountRecord>>;
    /// Every account, a page at a time.
    async fn scan(&self, after: Option<PageToken>) -> PortResult<Slice<AccountRecord>>;
    /// Changes the terms an operator sets; `None` back: no account.
    async fn change_terms(
        &self,
        account_id: &str,
        change: &TermsPatch,
    ) -> PortResult<Option<AccountRecord>>;
    /// False if the account already had this status (or does not exist).
    async fn set_status(&self, account_id: &str, status: AccountStatus) -> PortResult<bool>;
    /// Sets (or with `None` removes) the low-balance threshold; `None` back: no account.
    async fn set_low_balance_threshold(
        &self,
        account_id: &str,
        threshold: Option<Credits>,
    ) -> PortResult<Option<AccountRecord>>;
    /// Lowers the account's request budget until `t.until_ms` unless a throttle is in force
    /// at `t.since_ms`; true when this did it.
    async fn throttle(&self, account_id: &str, t: &Throttle) -> PortResult<bool>;
    /// Lifts the account's throttle; true if there was one.
    async fn lift_throttle(&self, account_id: &str) -> PortResult<bool>;
    /// Takes one of the account's concurrency slots if fewer than `max` are taken.
    async fn acquire_slot(&self, account_id: &str, max: u32) -> PortResult<bool>;
    /// Gives one back (never below zero).
    async fn release_slot(&self, account_id: &str) -> PortResult<()>;
    /// Sets `running` to `actual`, only if it is still `observed`.
    async fn reset_slots(&self, account_id: &str, observed: u32, actual: u32) -> PortResult<bool>;
    /// The sweeper's note of a slot surplus it saw ("running:counted").
    async fn note_slot_audit(&self, account_id: &str, seen: &str) -> PortResult<()>;
}

/// Idempotency records, and the all-or-nothing creation of the records a request makes.
#[async_trait]
pub trait Requests: Send + Sync {
    /// The record for `(owner, scope#request_id)`, strongly consistent.
    async fn get(&self, owner: &str, request_key: &str) -> PortResult<Option<RequestRecord>>;
    /// Creates records that move no money (an account, a file and its request record), all
    /// or nothing. An existing one is `Duplicate(i)`.
    async fn create_all(&self, creates: Vec<NewRecord>) -> Result<(), CommitError>;
    /// One conditional change and the records it implies, all or nothing. A failed change
    /// condition is `Stale`; an existing record, `Duplicate(i)`.
    async fn change_and_create(
        &self,
        change: Change,
        creates: Vec<NewRecord>,
    ) -> Result<(), CommitError>;
}

#[async_trait]
pub trait Files: Send + Sync {
    async fn get(&self, account_id: &str, file_id: &str) -> PortResult<Option<FileRecord>>;
}

/// The operator-set status of a model in the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSetting {
    pub status: String,
    pub reason: String,
    pub updated_ms: i64,
}

#[async_trait]
pub trait Models: Send + Sync {
    async fn get(&self, model: &str) -> PortResult<Option<ModelSetting>>;
    async fn set(&self, model: &str, setting: &ModelSetting) -> PortResult<()>;
}

/// What a finished export run leaves on its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportFinish {
    /// `completed` or `failed`.
    pub status: &'static str,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: Option<String>,
    pub peak_buffer: u64,
    pub error: Option<String>,
    pub now_ms: i64,
}

#[async_trait]
pub trait Exports: Send + Sync {
    async fn get(&self, account_id: &str, export_id: &str) -> PortResult<Option<ExportRecord>>;
    /// Newest first (ids sort by time).
    async fn list(
        &self,
        account_id: &str,
        limit: usize,
        before: Option<String>,
    ) -> PortResult<Listed<ExportRecord>>;
    /// Records that a queued export was sent to its queue again at `now_ms`, if it is still
    /// queued and was last sent before `now_ms - gap_ms`: false means someone did already,
    /// so readers polling a stuck export send one message a `gap_ms`, not one per read.
    async fn nudge(&self, rec: &ExportRecord, now_ms: i64, gap_ms: i64) -> PortResult<bool>;
    /// Starts run `run` of an export that has not completed, at `now_ms`, if the record
    /// still carries `rec.run`; false if it completed or another run started.
    async fn start_run(
        &self,
        rec: &ExportRecord,
        run: u32,
        upload_id: &str,
        now_ms: i64,
    ) -> PortResult<bool>;
    /// Rows and bytes so far, while run `run` is the running one.
    async fn progress(
        &self,
        rec: &ExportRecord,
        run: u32,
        rows: u64,
        bytes: u64,
    ) -> PortResult<bool>;
    /// Ends run `run` (completed with its manifest, or failed with an error).
    async fn finish(&self, rec: &ExportRecord, run: u32, f: &ExportFinish) -> PortResult<bool>;
}
