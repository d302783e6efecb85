//! The DynamoDB adapters: one file per table family, each implementing its ports; this file
//! holds what they share (item conversion, conditional-write outcomes, the one paged query,
//! transactions). The tables themselves are in `template.yaml` and docs/ARCHITECTURE.md.

mod access;
mod accounts;
mod batches;
mod billing;
mod exports;
mod money;
mod requests;
mod sla;
mod tasks;
mod webhooks;

use crate::config::Tables;
use crate::ports::records::{
    AccountRecord, ApiKeyRecord, BatchRecord, EndpointRecord, ExportRecord, FileRecord,
    RequestRecord, TaskRecord, Throttle,
};
use crate::ports::store::{Change, CommitError, NewRecord};
use crate::ports::{PageToken, PortResult, Slice, StoreError};
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

pub type Item = HashMap<String, AttributeValue>;

/// Every DynamoDB-backed port. Cheap to clone (the client is a handle).
#[derive(Clone)]
pub struct Dynamo {
    ddb: Client,
    t: Arc<Tables>,
    /// Backoff of unprocessed batch items goes through the clock and randomness ports.
    clock: Arc<dyn crate::ports::Clock>,
    random: Arc<dyn crate::ports::Random>,
}

impl Dynamo {
    pub fn new(
        ddb: Client,
        tables: Tables,
        clock: Arc<dyn crate::ports::Clock>,
        random: Arc<dyn crate::ports::Random>,
    ) -> Self {
        Dynamo {
            ddb,
            t: Arc::new(tables),
            clock,
            random,
        }
    }

    /// Consistent reads of many items by key, 100 to a `BatchGetItem`, retrying the keys
    /// DynamoDB leaves unprocessed after a backoff. Items that do not exist are left out.
    async fn batch_get(&self, table: &str, keys: Vec<Item>) -> PortResult<Vec<Item>> {
        let mut out = Vec::new();
        for chunk in keys.chunks(100) {
            let mut got = self.batch_get_tables(vec![(table, chunk.to_vec())]).await?;
            out.extend(got.remove(table).unwrap_or_default());
        }
        Ok(out)
    }

    /// One `BatchGetItem` over several tables (at most 100 keys in all), consistent, until
    /// no key is left unprocessed: the items found, by table.
    async fn batch_get_tables(
        &self,
        wanted: Vec<(&str, Vec<Item>)>,
    ) -> PortResult<HashMap<String, Vec<Item>>> {
        let mut pending = HashMap::new();
        for (table, keys) in wanted {
            let ka = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| build_err("KeysAndAttributes", e))?;
            pending.insert(table.to_string(), ka);
        }
        let mut out: HashMap<String, Vec<Item>> = HashMap::new();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let resp = self
                .ddb
                .batch_get_item()
                .set_request_items(Some(std::mem::take(&mut pending)))
                .send()
                .await
                .map_err(|e| dynamo_err("BatchGetItem", e))?;
            for (table, items) in resp.responses.unwrap_or_default() {
                out.entry(table).or_default().extend(items);
            }
            pending = resp.unprocessed_keys.unwrap_or_default();
            if !pending.is_empty() {
                attempt += 1;
                self.backoff(attempt).await;
            }
        }
        Ok(out)
    }

    /// A consistent `GetItem`.
    async fn get<T: DeserializeOwned>(&self, table: &str, key: Item) -> PortResult<Option<T>> {
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

    /// Sends a transaction; a failed condition on item `i >= first_create` is
    /// `Duplicate(i - first_create)`, any other failed condition or conflict is `Stale`.
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
            for (i, r) in tc.cancellation_reasons().iter().enumerate() {
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

    /// A record a transaction creates, with its `attribute_not_exists` condition.
    fn put_new(&self, r: &NewRecord) -> PortResult<TransactWriteItem> {
        let (table, item, key_attr) = match r {
            NewRecord::Account(a) => (&self.t.accounts, to_item::<AccountRecord>(a)?, "account_id"),
            NewRecord::Batch(b) => (&self.t.batches, to_item::<BatchRecord>(b)?, "account_id"),
            NewRecord::Request(q) => {
                // The permanent tombstone; the response goes in its own item (`stored_replies`).
                let mut item = to_item::<RequestRecord>(q)?;
                item.remove("response");
                (&self.t.requests, item, "account_id")
            }
            NewRecord::File(f) => (&self.t.files, to_item::<FileRecord>(f)?, "account_id"),
            NewRecord::Endpoint(e) => (
                &self.t.webhook_endpoints,
                to_item::<EndpointRecord>(e)?,
                "account_id",
            ),
            NewRecord::Export(x) => (&self.t.exports, to_item::<ExportRecord>(x)?, "account_id"),
            NewRecord::ApiKey(k) => (&self.t.api_keys, to_item::<ApiKeyRecord>(k)?, "key_hash"),
            NewRecord::SlaClose(c) => (&self.t.sla, sla::close_item(c)?, "pk"),
            NewRecord::Invoice(i) => (&self.t.billing, billing::invoice_item(i)?, "pk"),
            NewRecord::Payment(p) => (&self.t.billing, billing::payment_item(p)?, "pk"),
            NewRecord::Task(r) => (&self.t.tasks, to_item::<TaskRecord>(r)?, "batch_id"),
            NewRecord::Shard(r) => (&self.t.progress, tasks::shard_item(r)?, "batch_id"),
        };
        put_new_item(table, item, key_attr)
    }

    /// The stored responses of the idempotency records among `creates`: one item each,
    /// `{request_key}#reply`, with the DynamoDB TTL `expires_at` at the end of the account's
    /// retention, so the response (customer data) is deleted while the tombstone stays.
    /// Transactions put them last, after every other item, so the indexes callers see in
    /// `CommitError::Duplicate` do not move.
    fn stored_replies(&self, creates: &[NewRecord]) -> PortResult<Vec<TransactWriteItem>> {
        let mut out = Vec::new();
        for c in creates {
            let NewRecord::Request(q) = c else { continue };
            let Some(response) = &q.response else {
                continue;
            };
            let mut item = account_key(
                "request_key",
                &q.account_id,
                &format!("{}{REPLY_SUFFIX}", q.request_key),
            );
            item.insert("response".into(), s(response));
            if q.response_expires_ms > 0 {
                item.insert(
                    "expires_at".into(),
                    n(q.response_expires_ms.div_euclid(1000)),
                );
            }
            out.push(put_new_item(&self.t.requests, item, "account_id")?);
        }
        Ok(out)
    }

    /// `amount` added to one of a batch's own tallies (`credits.<tally>`); the batch must
    /// exist. Batches from before a tally existed lack it: absent counts as zero.
    fn batch_tally(
        &self,
        account_id: &str,
        batch_id: &str,
        tally: &str,
        amount: crate::domain::money::Credits,
    ) -> PortResult<Update> {
        build(
            Update::builder()
                .table_name(&self.t.batches)
                .key("account_id", s(account_id))
                .key("batch_id", s(batch_id))
                .update_expression(format!(
                    "SET credits.{tally} = if_not_exists(credits.{tally}, :zero) + :a"
                ))
                .condition_expression("attribute_exists(batch_id)")
                .expression_attribute_values(":a", n(amount.value()))
                .expression_attribute_values(":zero", n(0)),
        )
    }

    /// A conditional change inside a transaction.
    fn change(&self, c: &Change) -> PortResult<TransactWriteItem> {
        let update = match c {
            Change::NextNumber { series, year, seq } => self.next_number(*series, *year, *seq)?,
            Change::PaymentReversed {
                payment_intent,
                from,
                to,
            } => self.payment_reversed(payment_intent, *from, *to)?,
            Change::EndMark(m) => self.end_mark_update(std::slice::from_ref(m))?,
            Change::BatchRefund {
                account_id,
                batch_id,
                amount,
            } => self.batch_tally(account_id, batch_id, "refunded", *amount)?,
            Change::BatchRelease {
                account_id,
                batch_id,
                amount,
            } => self.batch_tally(account_id, batch_id, "released", *amount)?,
            Change::RotateSecrets {
                account_id,
                endpoint_id,
                version,
                secrets,
                now_ms,
            } => {
                let list = secrets
                    .iter()
                    .map(|sec| to_item(sec).map(AttributeValue::M))
                    .collect::<Result<Vec<_>, _>>()?;
                build(
                    Update::builder()
                        .table_name(&self.t.webhook_endpoints)
                        .key("account_id", s(account_id))
                        .key("endpoint_id", s(endpoint_id))
                        .update_expression(
                            "SET secrets = :s, secrets_version = :next, updated_ms = :now",
                        )
                        .condition_expression("secrets_version = :v")
                        .expression_attribute_values(":s", AttributeValue::L(list))
                        .expression_attribute_values(":v", n(version))
                        .expression_attribute_values(":next", n(version + 1))
                        .expression_attribute_values(":now", n(now_ms)),
                )?
            }
        };
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Unconditional puts, 25 per `BatchWriteItem`, retrying what DynamoDB leaves
    /// unprocessed with backoff. For records whose key and content are fixed (idempotent).
    async fn batch_put(&self, table: &str, items: Vec<Item>) -> PortResult<()> {
        for chunk in items.chunks(25) {
            let mut requests = chunk
                .iter()
                .map(|item| {
                    let put = PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map_err(|e| build_err("PutRequest", e))?;
                    Ok(WriteRequest::builder().put_request(put).build())
                })
                .collect::<PortResult<Vec<_>>>()?;
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
                        return Err(StoreError::Dynamo {
                            op: "BatchWriteItem",
                            detail: "unprocessed items after 8 retries".into(),
                        });
                    }
                    self.backoff(attempt).await;
                }
            }
        }
        Ok(())
    }

    async fn backoff(&self, attempt: u32) {
        let ms = crate::ports::time::backoff_ms(self.random.as_ref(), attempt);
        self.clock.sleep_ms(ms).await;
    }

    /// One page of a query; `start` resumes where the last page ended.
    async fn query_page(
        &self,
        q: &Query<'_>,
        limit: Option<usize>,
        start: Option<Item>,
    ) -> PortResult<(Vec<Item>, Option<Item>)> {
        let mut req = self
            .ddb
            .query()
            .table_name(q.table)
            .set_index_name(q.index.map(str::to_string))
            .key_condition_expression(q.key)
            .scan_index_forward(q.forward)
            .consistent_read(q.consistent)
            .set_limit(limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
            .set_exclusive_start_key(start);
        for (k, v) in &q.values {
            req = req.expression_attribute_values(*k, v.clone());
        }
        for (k, v) in &q.names {
            req = req.expression_attribute_names(*k, *v);
        }
        if let Some(f) = &q.filter {
            req = req.filter_expression(f);
        }
        let out = req.send().await.map_err(|e| dynamo_err("Query", e))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// Every item the query matches (small sets: an account's keys, a batch's shards).
    async fn query_all<T: DeserializeOwned>(&self, q: &Query<'_>) -> PortResult<Vec<T>> {
        self.query_all_items(q)
            .await?
            .into_iter()
            .map(from_item)
            .collect()
    }

    /// [`Self::query_all`], as the items' attributes (items whose attribute names carry data).
    async fn query_all_items(&self, q: &Query<'_>) -> PortResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = self.query_page(q, None, start).await?;
            out.extend(items);
            match next {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// A list answer: up to `limit` items after filters, and whether more follow. A filter
    /// can make pages come back short; at most [`MAX_PAGES_PER_CALL`] are read per answer
    /// (then the client continues from the last item).
    async fn query_list<T: DeserializeOwned>(
        &self,
        q: &Query<'_>,
        limit: usize,
        mut start: Option<Item>,
    ) -> PortResult<(Vec<T>, bool)> {
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES_PER_CALL {
            let (items, next) = self.query_page(q, Some(limit + 1), start.take()).await?;
            for item in items {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(from_item(item)?);
            }
            match next {
                Some(k) => start = Some(k),
                None => return Ok((out, false)),
            }
        }
        Ok((out, true))
    }

    /// One page of an oldest-first read, with an opaque token for the next.
    async fn query_slice<T: DeserializeOwned>(
        &self,
        q: &Query<'_>,
        after: Option<PageToken>,
    ) -> PortResult<Slice<T>> {
        let start = after.map(|t| decode_token(&t)).transpose()?;
        let (items, next) = self.query_page(q, Some(PAGE_ITEMS), start).await?;
        Ok(Slice {
            items: items.into_iter().map(from_item).collect::<Result<_, _>>()?,
            next: next.map(|k| encode_token(&k)).transpose()?,
        })
    }
}

/// Pages with a filter can come back short; this bounds how many we read for one answer.
const MAX_PAGES_PER_CALL: usize = 20;
/// Items per page of an oldest-first read.
const PAGE_ITEMS: usize = 1_000;

/// A query: its table or index, key condition and values, optional filter.
struct Query<'a> {
    table: &'a str,
    index: Option<&'a str>,
    key: &'a str,
    values: Vec<(&'a str, AttributeValue)>,
    names: Vec<(&'a str, &'a str)>,
    filter: Option<String>,
    forward: bool,
    /// Tables and local indexes only; a global index is eventually consistent by nature.
    consistent: bool,
}

impl<'a> Query<'a> {
    fn new(table: &'a str, key: &'a str) -> Self {
        Query {
            table,
            index: None,
            key,
            values: Vec::new(),
            names: Vec::new(),
            filter: None,
            forward: true,
            consistent: true,
        }
    }

    fn index(mut self, index: &'a str, consistent: bool) -> Self {
        self.index = Some(index);
        self.consistent = consistent;
        self
    }

    fn value(mut self, k: &'a str, v: AttributeValue) -> Self {
        self.values.push((k, v));
        self
    }

    fn name(mut self, k: &'a str, v: &'a str) -> Self {
        self.names.push((k, v));
        self
    }

    fn filter(mut self, f: impl Into<String>) -> Self {
        self.filter = Some(f.into());
        self
    }

    fn newest_first(mut self) -> Self {
        self.forward = false;
        self
    }
}

/// A key as a page token: its attributes as JSON (strings and numbers only, as our keys are).
fn encode_token(key: &Item) -> PortResult<PageToken> {
    let mut m = serde_json::Map::new();
    for (k, v) in key {
        let j = match v {
            AttributeValue::S(s) => serde_json::json!({ "S": s }),
            AttributeValue::N(n) => serde_json::json!({ "N": n }),
            other => return Err(StoreError::Corrupt(format!("key attribute {k}: {other:?}"))),
        };
        m.insert(k.clone(), j);
    }
    Ok(PageToken(serde_json::Value::Object(m).to_string()))
}

fn decode_token(t: &PageToken) -> PortResult<Item> {
    let bad = || StoreError::Corrupt("page token".into());
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&t.0).map_err(|_| bad())?;
    v.into_iter()
        .map(|(k, j)| {
            let av = match (j.get("S"), j.get("N")) {
                (Some(serde_json::Value::String(s)), None) => AttributeValue::S(s.clone()),
                (None, Some(serde_json::Value::String(n))) => AttributeValue::N(n.clone()),
                _ => return Err(bad()),
            };
            Ok((k, av))
        })
        .collect()
}

pub(crate) fn dynamo_err<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &'static str,
    e: SdkError<E>,
) -> StoreError {
    StoreError::Dynamo {
        op,
        detail: super::sdk_detail(&e),
    }
}

fn build_err(op: &'static str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Dynamo {
        op,
        detail: e.to_string(),
    }
}

fn build(u: aws_sdk_dynamodb::types::builders::UpdateBuilder) -> PortResult<Update> {
    u.build().map_err(|e| build_err("Update", e))
}

/// True when a write was refused by its condition (not an error: the caller's answer).
fn condition_failed<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    e.as_service_error().and_then(|se| se.code()) == Some("ConditionalCheckFailedException")
}

impl Dynamo {
    /// Sets a throttle on an item (a key or an account) unless one is in force at its start.
    async fn set_throttle(&self, table: &str, key: Item, t: &Throttle) -> PortResult<bool> {
        // The item must exist: its key attribute is the one name in `key`.
        let key_name = key.keys().next().cloned().unwrap_or_default();
        let res = self
            .ddb
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression("SET throttle = :t")
            .condition_expression(
                "attribute_exists(#k) AND (attribute_not_exists(throttle) OR throttle.until_ms < :now)",
            )
            .expression_attribute_names("#k", key_name)
            .expression_attribute_values(":t", AttributeValue::M(to_item(t)?))
            .expression_attribute_values(":now", n(t.since_ms))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    /// Lifts an item's throttle; false if it had none.
    async fn remove_throttle(&self, table: &str, key: Item) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(table)
            .set_key(Some(key))
            .update_expression("REMOVE throttle")
            .condition_expression("attribute_exists(throttle)")
            .send()
            .await;
        applied(res, "UpdateItem")
    }
}

/// A conditional write's outcome: `true` if it applied, `false` if its condition failed.
fn applied<T, E: ProvideErrorMetadata + std::fmt::Debug>(
    res: Result<T, SdkError<E>>,
    op: &'static str,
) -> PortResult<bool> {
    match res {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(dynamo_err(op, e)),
    }
}

/// A conditional `UpdateItem` with `ReturnValues`: the item as written, or `None` if the
/// condition failed.
fn updated<T: DeserializeOwned>(
    res: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    >,
) -> PortResult<Option<T>> {
    match res {
        Ok(out) => out.attributes.map(from_item).transpose(),
        Err(e) if condition_failed(&e) => Ok(None),
        Err(e) => Err(dynamo_err("UpdateItem", e)),
    }
}

fn to_item<T: Serialize>(v: &T) -> PortResult<Item> {
    serde_dynamo::to_item(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_item<T: DeserializeOwned>(item: Item) -> PortResult<T> {
    serde_dynamo::from_item(item).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// DynamoDB's size of an item, as it bills writes (one unit per KB): each attribute's name
/// plus its value; a string its UTF-8 bytes, a number about one byte per two significant
/// digits plus one, a map or list 3 bytes plus its elements plus one byte each, a boolean or
/// null one byte. For the tests that hold an item under a size.
#[cfg(test)]
pub(crate) fn item_size(item: &Item) -> usize {
    fn value(v: &AttributeValue) -> usize {
        match v {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => {
                n.trim_start_matches('-')
                    .trim_matches('0')
                    .len()
                    .div_ceil(2)
                    + 1
            }
            AttributeValue::M(m) => {
                3 + m.iter().map(|(k, v)| k.len() + value(v) + 1).sum::<usize>()
            }
            AttributeValue::L(l) => 3 + l.iter().map(|v| value(v) + 1).sum::<usize>(),
            _ => 1,
        }
    }
    item.iter().map(|(k, v)| k.len() + value(v)).sum()
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A number attribute of an item (0 when absent).
fn num(item: &Item, k: &str) -> u64 {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

/// The key of a record stored under its account: (`account_id`, `sort_attr`).
/// The key of an account's item in the Accounts table.
fn account_item(account_id: &str) -> Item {
    HashMap::from([("account_id".to_string(), s(account_id))])
}

fn account_key(sort_attr: &str, account_id: &str, sort: &str) -> Item {
    HashMap::from([
        ("account_id".to_string(), s(account_id)),
        (sort_attr.to_string(), s(sort)),
    ])
}

/// What follows a request key in the key of its stored response's item. Request ids never
/// hold `#` or any character that sorts before it (letters, digits, `-_.:` only), so the two
/// items of one request are next to each other and nothing else lies between them.
const REPLY_SUFFIX: &str = "#reply";

fn put_new_item(table: &str, item: Item, key_attr: &str) -> PortResult<TransactWriteItem> {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(format!("attribute_not_exists({key_attr})"))
        .build()
        .map_err(|e| build_err("Put", e))?;
    Ok(TransactWriteItem::builder().put(put).build())
}
