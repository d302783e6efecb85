//! DynamoDB access. Every money movement goes through [`Store::commit_money`]: one
//! `TransactWriteItems` that moves the balance, appends the ledger entry and creates whatever
//! records the movement implies, conditioned on the account's ledger sequence.

use super::records::{
    AccountRecord, ApiKeyRecord, BatchRecord, FileRecord, LedgerRecord, RequestRecord, TaskRecord,
};
use super::{Store, StoreError};
use crate::domain::batch::BatchStatus;
use crate::domain::ledger::{Book, EntryKind};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

pub type Item = HashMap<String, AttributeValue>;

pub(crate) fn dynamo_err<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &str,
    e: SdkError<E>,
) -> StoreError {
    let detail = match e.as_service_error() {
        Some(se) => format!(
            "{}: {}",
            se.code().unwrap_or("error"),
            se.message().unwrap_or("")
        ),
        None => format!("{e:?}"),
    };
    StoreError::Dynamo(format!("{op}: {detail}"))
}

/// True when a write was refused by its condition (not an error: the caller's answer).
pub(crate) fn condition_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

/// A conditional write's outcome: `true` if it applied, `false` if its condition failed.
pub(crate) fn applied<T, E: ProvideErrorMetadata + std::fmt::Debug>(
    res: Result<T, SdkError<E>>,
    op: &str,
) -> Result<bool, StoreError> {
    match res {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(dynamo_err(op, e)),
    }
}

/// A conditional `UpdateItem` with `ReturnValues`: the item as written, or `None` if the
/// condition failed.
pub(crate) fn updated<T: DeserializeOwned>(
    res: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    >,
) -> Result<Option<T>, StoreError> {
    match res {
        Ok(out) => out.attributes.map(from_item).transpose(),
        Err(e) if condition_failed(&e) => Ok(None),
        Err(e) => Err(dynamo_err("UpdateItem", e)),
    }
}

pub(crate) fn to_item<T: Serialize>(v: &T) -> Result<Item, StoreError> {
    serde_dynamo::to_item(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_item<T: DeserializeOwned>(item: Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A record that the transaction creates; it must not exist yet.
pub struct NewItem {
    pub table: String,
    pub item: Item,
    /// The partition key attribute, for the `attribute_not_exists` condition.
    pub key_attr: &'static str,
}

impl NewItem {
    pub fn new<T: Serialize>(
        table: &str,
        record: &T,
        key_attr: &'static str,
    ) -> Result<Self, StoreError> {
        Ok(NewItem {
            table: table.to_string(),
            item: to_item(record)?,
            key_attr,
        })
    }
}

/// One balance change with its ledger entry and the records it creates.
pub struct MoneyMove {
    pub account_id: String,
    /// The book as read; the write only lands if the account still has exactly this.
    pub expected: Book,
    /// Refuse if the account was terminated meanwhile (new spending), or not (grants, refunds).
    pub require_active: bool,
    pub entry: LedgerRecord,
    pub held_delta: i64,
    pub granted_delta: i64,
    pub charged_delta: i64,
    pub refunded_delta: i64,
    pub creates: Vec<NewItem>,
    /// Conditional updates of other records; a failed condition is `Duplicate(creates.len() + i)`.
    pub updates: Vec<Update>,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The account moved (or is no longer active) since it was read: re-read and retry.
    #[error("account changed since it was read")]
    Stale,
    /// `creates[i]` already exists: the operation happened before.
    #[error("record {0} of the transaction already exists")]
    Duplicate(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a ledger page resumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerPos {
    pub seq: u64,
    pub created_ms: i64,
}

pub struct LedgerQuery {
    pub account_id: String,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub kind: Option<EntryKind>,
    pub limit: usize,
    pub after: Option<LedgerPos>,
}

/// Pages with a filter can come back short; this bounds how many we read for one answer.
const MAX_PAGES_PER_CALL: usize = 20;

impl Store {
    pub(crate) fn tables(&self) -> &crate::config::Tables {
        &self.config.tables
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        table: &str,
        key: Item,
    ) -> Result<Option<T>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?;
        out.item.map(from_item).transpose()
    }

    pub async fn get_account(&self, account_id: &str) -> Result<Option<AccountRecord>, StoreError> {
        let key = HashMap::from([("account_id".to_string(), s(account_id))]);
        self.get(&self.tables().accounts, key).await
    }

    pub async fn get_api_key(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let key = HashMap::from([("key_hash".to_string(), s(key_hash))]);
        self.get(&self.tables().api_keys, key).await
    }

    pub async fn put_api_key(&self, rec: &ApiKeyRecord) -> Result<(), StoreError> {
        self.ddb
            .put_item()
            .table_name(&self.tables().api_keys)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(key_hash)")
            .send()
            .await
            .map_err(|e| dynamo_err("PutItem", e))?;
        Ok(())
    }

    pub async fn get_request(
        &self,
        account_id: &str,
        request_key: &str,
    ) -> Result<Option<RequestRecord>, StoreError> {
        self.get(
            &self.tables().requests,
            account_key("request_key", account_id, request_key),
        )
        .await
    }

    pub async fn get_batch(
        &self,
        account_id: &str,
        batch_id: &str,
    ) -> Result<Option<BatchRecord>, StoreError> {
        self.get(
            &self.tables().batches,
            account_key("batch_id", account_id, batch_id),
        )
        .await
    }

    pub async fn get_file(
        &self,
        account_id: &str,
        file_id: &str,
    ) -> Result<Option<FileRecord>, StoreError> {
        self.get(
            &self.tables().files,
            account_key("file_id", account_id, file_id),
        )
        .await
    }

    pub fn new_item<T: Serialize>(&self, table: Table, record: &T) -> Result<NewItem, StoreError> {
        let (name, key_attr) = match table {
            Table::Accounts => (&self.tables().accounts, "account_id"),
            Table::Batches => (&self.tables().batches, "account_id"),
            Table::Requests => (&self.tables().requests, "account_id"),
            Table::Files => (&self.tables().files, "account_id"),
            Table::WebhookEndpoints => (&self.tables().webhook_endpoints, "account_id"),
            Table::Exports => (&self.tables().exports, "account_id"),
        };
        NewItem::new(name, record, key_attr)
    }

    /// Creates records that move no money (an account, a file) all-or-nothing.
    pub async fn create_all(&self, creates: Vec<NewItem>) -> Result<(), CommitError> {
        let items = creates
            .into_iter()
            .map(put_new)
            .collect::<Result<Vec<_>, _>>()?;
        self.transact(items, 0).await
    }

    /// One conditional update and the records it implies (an idempotency record, say), all
    /// or nothing. A failed update condition is `Stale`; an existing record, `Duplicate(i)`.
    pub async fn update_and_create(
        &self,
        update: Update,
        creates: Vec<NewItem>,
    ) -> Result<(), CommitError> {
        let mut items = vec![TransactWriteItem::builder().update(update).build()];
        for c in creates {
            items.push(put_new(c)?);
        }
        self.transact(items, 1).await
    }

    /// The money path. See [`MoneyMove`].
    pub async fn commit_money(&self, mv: MoneyMove) -> Result<(), CommitError> {
        // Stands in for DynamoDB's TransactionConflict, which the emulator never raises.
        if self.faults.check("commit_money.conflict").is_err() {
            return Err(CommitError::Stale);
        }
        let e = &mv.entry;
        let mut condition = "ledger_seq = :seq AND balance = :balance".to_string();
        let mut values = HashMap::from([
            (":seq".to_string(), n(mv.expected.seq)),
            (":balance".to_string(), n(mv.expected.balance.value())),
            (":next".to_string(), n(e.seq)),
            (":ms".to_string(), n(e.created_ms)),
            (":amount".to_string(), n(e.amount)),
            (":held".to_string(), n(mv.held_delta)),
            (":granted".to_string(), n(mv.granted_delta)),
            (":charged".to_string(), n(mv.charged_delta)),
            (":refunded".to_string(), n(mv.refunded_delta)),
        ]);
        let mut names = HashMap::new();
        if mv.require_active {
            condition.push_str(" AND #status = :active");
            values.insert(":active".to_string(), s("active"));
            names.insert("#status".to_string(), "status".to_string());
        }
        let update = Update::builder()
            .table_name(&self.tables().accounts)
            .key("account_id", s(&mv.account_id))
            .update_expression(
                "SET balance = balance + :amount, held = held + :held, \
                 lifetime_granted = lifetime_granted + :granted, \
                 lifetime_charged = lifetime_charged + :charged, \
                 lifetime_refunded = lifetime_refunded + :refunded, \
                 ledger_seq = :next, last_entry_ms = :ms",
            )
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .set_expression_attribute_names(if names.is_empty() { None } else { Some(names) })
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))?;
        let ledger = NewItem::new(&self.tables().ledger, &mv.entry, "account_id")?;
        let mut items = vec![
            TransactWriteItem::builder().update(update).build(),
            put_new(ledger)?,
        ];
        for c in mv.creates {
            items.push(put_new(c)?);
        }
        for u in mv.updates {
            items.push(TransactWriteItem::builder().update(u).build());
        }
        // creates[i] is transaction item i + 2.
        self.transact(items, 2).await
    }

    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
        first_create: usize,
    ) -> Result<(), CommitError> {
        let result = self
            .ddb
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(()),
            Err(err) => err,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(tc)) =
            err.as_service_error()
        {
            let reasons = tc.cancellation_reasons();
            for (i, r) in reasons.iter().enumerate() {
                match r.code() {
                    Some("ConditionalCheckFailed") if i >= first_create => {
                        return Err(CommitError::Duplicate(i - first_create))
                    }
                    Some("ConditionalCheckFailed") | Some("TransactionConflict") => {
                        return Err(CommitError::Stale)
                    }
                    _ => {}
                }
            }
        }
        if err.as_service_error().and_then(|e| e.code()) == Some("TransactionConflictException") {
            return Err(CommitError::Stale);
        }
        Err(CommitError::Store(dynamo_err("TransactWriteItems", err)))
    }

    /// Writes task records; idempotent (a task's key and content are fixed by its batch).
    pub async fn put_tasks(&self, tasks: &[TaskRecord]) -> Result<(), StoreError> {
        let items = tasks.iter().map(to_item).collect::<Result<Vec<_>, _>>()?;
        self.batch_put(&self.tables().tasks, items).await
    }

    /// Unconditional puts, 25 per `BatchWriteItem`, retrying what DynamoDB leaves
    /// unprocessed with backoff. For records whose key and content are fixed (idempotent).
    pub(crate) async fn batch_put(&self, table: &str, items: Vec<Item>) -> Result<(), StoreError> {
        for chunk in items.chunks(25) {
            let mut requests = chunk
                .iter()
                .map(|item| {
                    let put = PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map_err(|e| StoreError::Dynamo(e.to_string()))?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let mut attempt = 0u32;
            while !requests.is_empty() {
                let out = self
                    .ddb
                    .batch_write_item()
                    .request_items(table, requests)
                    .send()
                    .await
                    .map_err(|e| dynamo_err("BatchWriteItem", e))?;
                requests = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(table))
                    .unwrap_or_default();
                if !requests.is_empty() {
                    attempt += 1;
                    if attempt > 8 {
                        return Err(StoreError::Dynamo(
                            "BatchWriteItem: unprocessed items after 8 retries".into(),
                        ));
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        Ok(())
    }

    /// `accepted -> queued` once every task record exists. Already queued (a concurrent
    /// recovery got there first) is fine.
    pub async fn mark_batch_queued(
        &self,
        account_id: &str,
        batch_id: &str,
    ) -> Result<(), StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().batches)
            .key("account_id", s(account_id))
            .key("batch_id", s(batch_id))
            .update_expression("SET #status = :queued")
            .condition_expression("#status = :accepted")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":queued", s(BatchStatus::Queued.as_str()))
            .expression_attribute_values(":accepted", s(BatchStatus::Accepted.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    /// Takes over the writing of an `accepted` batch's task records once the previous
    /// writer's lease has run out. True when this caller now holds the lease.
    pub async fn take_materialize_lease(
        &self,
        account_id: &str,
        batch_id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().batches)
            .key("account_id", s(account_id))
            .key("batch_id", s(batch_id))
            .update_expression("SET lease_until_ms = :until")
            .condition_expression("#status = :accepted AND lease_until_ms < :now")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":accepted", s(BatchStatus::Accepted.as_str()))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":until", n(until_ms))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    pub async fn list_batches(
        &self,
        account_id: &str,
        status: Option<BatchStatus>,
        limit: usize,
        before: Option<String>,
    ) -> Result<(Vec<BatchRecord>, bool), StoreError> {
        let mut out = Vec::new();
        let mut start = before.map(|b| {
            HashMap::from([
                ("account_id".to_string(), s(account_id)),
                ("batch_id".to_string(), s(b)),
            ])
        });
        for _ in 0..MAX_PAGES_PER_CALL {
            let mut q = self
                .ddb
                .query()
                .table_name(&self.tables().batches)
                .key_condition_expression("account_id = :a")
                .expression_attribute_values(":a", s(account_id))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            if let Some(st) = status {
                q = q
                    .filter_expression("#status = :st")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":st", s(st.as_str()));
            }
            let page = q.send().await.map_err(|e| dynamo_err("Query", e))?;
            for item in page.items.unwrap_or_default() {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok((out, false)),
            }
        }
        // Ran out of pages to read for this call: let the client continue from here.
        Ok((out, true))
    }

    pub async fn list_tasks(
        &self,
        batch_id: &str,
        limit: usize,
        after_idx: Option<u32>,
    ) -> Result<(Vec<TaskRecord>, bool), StoreError> {
        let mut q = self
            .ddb
            .query()
            .table_name(&self.tables().tasks)
            .key_condition_expression("batch_id = :b")
            .expression_attribute_values(":b", s(batch_id))
            .consistent_read(true)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX));
        if let Some(idx) = after_idx {
            q = q
                .exclusive_start_key("batch_id", s(batch_id))
                .exclusive_start_key("idx", n(idx));
        }
        let page = q.send().await.map_err(|e| dynamo_err("Query", e))?;
        let mut items = page.items.unwrap_or_default();
        let more = items.len() > limit;
        items.truncate(limit);
        let tasks = items
            .into_iter()
            .map(from_item)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((tasks, more))
    }

    pub async fn list_ledger(
        &self,
        q: &LedgerQuery,
    ) -> Result<(Vec<LedgerRecord>, bool), StoreError> {
        let mut out = Vec::new();
        let mut start = q.after.map(|p| {
            HashMap::from([
                ("account_id".to_string(), s(&q.account_id)),
                ("seq".to_string(), n(p.seq)),
                ("created_ms".to_string(), n(p.created_ms)),
            ])
        });
        for _ in 0..MAX_PAGES_PER_CALL {
            let mut query = self
                .ddb
                .query()
                .table_name(&self.tables().ledger)
                .index_name("by_time")
                .key_condition_expression("account_id = :a AND created_ms BETWEEN :from AND :to")
                .expression_attribute_values(":a", s(&q.account_id))
                .expression_attribute_values(":from", n(q.from_ms.unwrap_or(0)))
                .expression_attribute_values(":to", n(q.to_ms.unwrap_or(i64::MAX)))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(i32::try_from(q.limit + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            if let Some(kind) = q.kind {
                query = query
                    .filter_expression("#kind = :k")
                    .expression_attribute_names("#kind", "kind")
                    .expression_attribute_values(":k", s(kind.as_str()));
            }
            let page = query.send().await.map_err(|e| dynamo_err("Query", e))?;
            for item in page.items.unwrap_or_default() {
                if out.len() == q.limit {
                    return Ok((out, true));
                }
                out.push(from_item(item)?);
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok((out, false)),
            }
        }
        Ok((out, true))
    }

    /// The newest entry before `ms` (a statement's opening balance).
    pub async fn last_entry_before(
        &self,
        account_id: &str,
        ms: i64,
    ) -> Result<Option<LedgerRecord>, StoreError> {
        let out = self
            .ddb
            .query()
            .table_name(&self.tables().ledger)
            .index_name("by_time")
            .key_condition_expression("account_id = :a AND created_ms < :t")
            .expression_attribute_values(":a", s(account_id))
            .expression_attribute_values(":t", n(ms))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("Query", e))?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(from_item)
            .transpose()
    }

    pub async fn get_ledger_entry(
        &self,
        account_id: &str,
        seq: u64,
    ) -> Result<Option<LedgerRecord>, StoreError> {
        let key = HashMap::from([
            ("account_id".to_string(), s(account_id)),
            ("seq".to_string(), n(seq)),
        ]);
        self.get(&self.tables().ledger, key).await
    }

    /// Sum and count of an account's ledger entries, read in full (reconciliation, tests).
    pub async fn ledger_totals(&self, account_id: &str) -> Result<(i64, u64), StoreError> {
        let mut sum = 0i64;
        let mut count = 0u64;
        let mut start = None;
        loop {
            let page = self
                .ddb
                .query()
                .table_name(&self.tables().ledger)
                .key_condition_expression("account_id = :a")
                .expression_attribute_values(":a", s(account_id))
                .projection_expression("amount")
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| dynamo_err("Query", e))?;
            for item in page.items.unwrap_or_default() {
                let amount = match item.get("amount") {
                    Some(AttributeValue::N(v)) => v
                        .parse::<i64>()
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    _ => return Err(StoreError::Corrupt("ledger entry without amount".into())),
                };
                sum = sum
                    .checked_add(amount)
                    .ok_or_else(|| StoreError::Corrupt("ledger sum overflows".into()))?;
                count += 1;
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok((sum, count)),
            }
        }
    }
}

/// The tables that [`Store::new_item`] can create records in.
#[derive(Clone, Copy, Debug)]
pub enum Table {
    Accounts,
    Batches,
    Requests,
    Files,
    WebhookEndpoints,
    Exports,
}

/// The key of a record stored under its account: (`account_id`, `sort_attr`).
fn account_key(sort_attr: &str, account_id: &str, sort: &str) -> Item {
    HashMap::from([
        ("account_id".to_string(), s(account_id)),
        (sort_attr.to_string(), s(sort)),
    ])
}

fn put_new(c: NewItem) -> Result<TransactWriteItem, StoreError> {
    let put = Put::builder()
        .table_name(c.table)
        .set_item(Some(c.item))
        .condition_expression(format!("attribute_not_exists({})", c.key_attr))
        .build()
        .map_err(|e| StoreError::Dynamo(e.to_string()))?;
    Ok(TransactWriteItem::builder().put(put).build())
}

/// Exponential backoff with full jitter, capped at 1 s.
pub fn backoff(attempt: u32) -> Duration {
    let cap_ms = 1_000u64.min(20u64 << attempt.min(10));
    Duration::from_millis(rand::random_range(0..=cap_ms))
}
