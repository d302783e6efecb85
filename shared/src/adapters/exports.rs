//! Export records and the ascending, page-at-a-time reads an export streams from.

use super::dynamo::{applied, dynamo_err, from_item, n, s, Item};
use super::records::ExportRecord;
use super::{Store, StoreError};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

/// One Query, oldest first: a page of items and where the next page starts.
pub struct PageQuery<'a> {
    pub table: &'a str,
    pub index: Option<&'a str>,
    pub key_condition: &'a str,
    pub values: Vec<(&'a str, AttributeValue)>,
}

impl Store {
    pub async fn query_page(
        &self,
        q: &PageQuery<'_>,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        self.query_page_with(q, start, false).await
    }

    /// Every item the query matches, read page by page (for small sets: an account's keys
    /// or endpoints, a batch's progress shards). `consistent` is for tables, not GSIs.
    pub(crate) async fn query_all<T: serde::de::DeserializeOwned>(
        &self,
        q: &PageQuery<'_>,
        consistent: bool,
    ) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = self.query_page_with(q, start, consistent).await?;
            for item in items {
                out.push(from_item(item)?);
            }
            match next {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    async fn query_page_with(
        &self,
        q: &PageQuery<'_>,
        start: Option<Item>,
        consistent: bool,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let mut req = self
            .ddb
            .query()
            .table_name(q.table)
            .set_index_name(q.index.map(str::to_string))
            .key_condition_expression(q.key_condition)
            .scan_index_forward(true)
            .consistent_read(consistent)
            .limit(1_000)
            .set_exclusive_start_key(start);
        for (k, v) in &q.values {
            req = req.expression_attribute_values(*k, v.clone());
        }
        let out = req.send().await.map_err(|e| dynamo_err("Query", e))?;
        Ok((out.items.unwrap_or_default(), out.last_evaluated_key))
    }

    /// One page of every account (operator reconciliation).
    pub async fn scan_accounts(
        &self,
        start: Option<Item>,
    ) -> Result<(Vec<super::records::AccountRecord>, Option<Item>), StoreError> {
        let out = self
            .ddb
            .scan()
            .table_name(&self.tables().accounts)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| dynamo_err("Scan", e))?;
        let accounts = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(from_item)
            .collect::<Result<_, _>>()?;
        Ok((accounts, out.last_evaluated_key))
    }

    fn export_key(account_id: &str, export_id: &str) -> Item {
        HashMap::from([
            ("account_id".to_string(), s(account_id)),
            ("export_id".to_string(), s(export_id)),
        ])
    }

    pub async fn get_export(
        &self,
        account_id: &str,
        export_id: &str,
    ) -> Result<Option<ExportRecord>, StoreError> {
        self.get(
            &self.tables().exports,
            Self::export_key(account_id, export_id),
        )
        .await
    }

    /// An account's exports, newest first (ids sort by time).
    pub async fn list_exports(
        &self,
        account_id: &str,
        limit: usize,
        before: Option<String>,
    ) -> Result<(Vec<ExportRecord>, bool), StoreError> {
        let out = self
            .ddb
            .query()
            .table_name(&self.tables().exports)
            .key_condition_expression("account_id = :a")
            .expression_attribute_values(":a", s(account_id))
            .scan_index_forward(false)
            .consistent_read(true)
            .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
            .set_exclusive_start_key(before.map(|b| Self::export_key(account_id, &b)))
            .send()
            .await
            .map_err(|e| dynamo_err("Query", e))?;
        let mut items = out.items.unwrap_or_default();
        let more = items.len() > limit;
        items.truncate(limit);
        Ok((
            items.into_iter().map(from_item).collect::<Result<_, _>>()?,
            more,
        ))
    }

    /// Starts run `run` of an export that has not completed; false if it completed (or a
    /// newer run started).
    pub async fn start_export_run(
        &self,
        rec: &ExportRecord,
        run: u32,
        upload_id: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().exports)
            .set_key(Some(Self::export_key(&rec.account_id, &rec.export_id)))
            .update_expression(
                "SET #status = :running, run = :run, upload_id = :u, rows_written = :zero, #bytes = :zero",
            )
            .condition_expression("#status <> :completed AND run = :prev")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_values(":running", s("running"))
            .expression_attribute_values(":completed", s("completed"))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":prev", n(rec.run))
            .expression_attribute_values(":u", s(upload_id))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    pub async fn export_progress(
        &self,
        rec: &ExportRecord,
        run: u32,
        rows: u64,
        bytes: u64,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().exports)
            .set_key(Some(Self::export_key(&rec.account_id, &rec.export_id)))
            .update_expression("SET rows_written = :r, #bytes = :b")
            .condition_expression("run = :run AND #status = :running")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_values(":r", n(rows))
            .expression_attribute_values(":b", n(bytes))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":running", s("running"))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    /// Marks run `run` done (completed with its manifest, or failed with an error).
    #[allow(clippy::too_many_arguments)]
    pub async fn finish_export(
        &self,
        rec: &ExportRecord,
        run: u32,
        status: &str,
        rows: u64,
        bytes: u64,
        sha256: Option<&str>,
        peak_buffer: u64,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut set = "SET #status = :st, rows_written = :r, #bytes = :b, completed_ms = :now, \
                       peak_buffer_bytes = :peak"
            .to_string();
        let mut req = self
            .ddb
            .update_item()
            .table_name(&self.tables().exports)
            .set_key(Some(Self::export_key(&rec.account_id, &rec.export_id)))
            .condition_expression("run = :run AND #status = :running")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#bytes", "bytes")
            .expression_attribute_values(":st", s(status))
            .expression_attribute_values(":r", n(rows))
            .expression_attribute_values(":b", n(bytes))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":peak", n(peak_buffer))
            .expression_attribute_values(":run", n(run))
            .expression_attribute_values(":running", s("running"));
        if let Some(h) = sha256 {
            set.push_str(", sha256 = :h");
            req = req.expression_attribute_values(":h", s(h));
        }
        if let Some(e) = error {
            set.push_str(", #error = :e");
            req = req
                .expression_attribute_names("#error", "error")
                .expression_attribute_values(":e", s(e));
        }
        let res = req.update_expression(set).send().await;
        applied(res, "UpdateItem")
    }
}
