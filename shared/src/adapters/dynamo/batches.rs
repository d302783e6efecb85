//! The Batches table (key `account_id`, `batch_id`; sparse GSI `open` on `open_shard`).

use super::{
    account_key, applied, condition_failed, dynamo_err, n, num, s, updated, Dynamo, Query,
};
use crate::domain::batch::BatchStatus;
use crate::ports::records::BatchRecord;
use crate::ports::{Batches, Listed, PageToken, PortResult, Slice};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

#[async_trait]
impl Batches for Dynamo {
    async fn get(&self, account_id: &str, batch_id: &str) -> PortResult<Option<BatchRecord>> {
        Dynamo::get(
            self,
            &self.t.batches,
            account_key("batch_id", account_id, batch_id),
        )
        .await
    }

    async fn list(
        &self,
        account_id: &str,
        status: Option<BatchStatus>,
        limit: usize,
        before: Option<String>,
    ) -> PortResult<Listed<BatchRecord>> {
        let mut q = Query::new(&self.t.batches, "account_id = :a")
            .value(":a", s(account_id))
            .newest_first();
        if let Some(st) = status {
            q = q
                .filter("#status = :st")
                .name("#status", "status")
                .value(":st", s(st.as_str()));
        }
        let start = before.map(|b| account_key("batch_id", account_id, &b));
        self.query_list(&q, limit, start).await
    }

    async fn page(
        &self,
        account_id: &str,
        after: Option<PageToken>,
    ) -> PortResult<Slice<BatchRecord>> {
        let q = Query::new(&self.t.batches, "account_id = :a").value(":a", s(account_id));
        self.query_slice(&q, after).await
    }

    async fn mark_queued(
        &self,
        account_id: &str,
        batch_id: &str,
    ) -> PortResult<Option<BatchRecord>> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.batches)
            .key("account_id", s(account_id))
            .key("batch_id", s(batch_id))
            .update_expression("SET #status = :queued")
            .condition_expression("#status = :accepted")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":queued", s(BatchStatus::Queued.as_str()))
            .expression_attribute_values(":accepted", s(BatchStatus::Accepted.as_str()))
            // The batch comes back as written: the first dispatch needs no read of it.
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated(res)
    }

    async fn take_lease(
        &self,
        account_id: &str,
        batch_id: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.batches)
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
        applied(res, "UpdateItem")
    }

    async fn advance_dispatch(
        &self,
        account_id: &str,
        batch_id: &str,
        from: u32,
        to: u32,
        now_ms: i64,
    ) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.batches)
            .key("account_id", s(account_id))
            .key("batch_id", s(batch_id))
            .update_expression("SET next_dispatch = :to, dispatched_ms = :now")
            .condition_expression("next_dispatch = :cur")
            .expression_attribute_values(":to", n(to))
            .expression_attribute_values(":cur", n(from))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn claim_next(
        &self,
        account_id: &str,
        batch_id: &str,
        want: u32,
        task_count: u32,
        now_ms: i64,
    ) -> PortResult<Option<(u32, u32)>> {
        let Some(last) = task_count.checked_sub(want).filter(|_| want > 0) else {
            return Ok(None);
        };
        // Conditions cannot add, so the bound is computed here: next_dispatch <= count - want.
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.batches)
            .key("account_id", s(account_id))
            .key("batch_id", s(batch_id))
            .update_expression("SET next_dispatch = next_dispatch + :w, dispatched_ms = :now")
            .condition_expression("attribute_exists(batch_id) AND next_dispatch <= :last")
            .expression_attribute_values(":w", n(want))
            .expression_attribute_values(":last", n(last))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match res {
            Ok(out) => {
                let to = out
                    .attributes
                    .as_ref()
                    .map(|a| num(a, "next_dispatch"))
                    .and_then(|v| u32::try_from(v).ok())
                    .filter(|to| *to >= want)
                    .ok_or_else(|| {
                        crate::ports::StoreError::Corrupt(format!(
                            "batch {batch_id}: the claim returned no usable next_dispatch"
                        ))
                    })?;
                Ok(Some((to - want, to)))
            }
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    async fn request_cancel(&self, account_id: &str, batch_id: &str) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.batches)
            .key("account_id", s(account_id))
            .key("batch_id", s(batch_id))
            .update_expression("SET cancel_requested = :t")
            .condition_expression("attribute_exists(batch_id) AND #st <> :completed")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .expression_attribute_values(":completed", s(BatchStatus::Completed.as_str()))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn open(&self) -> PortResult<Vec<(String, String)>> {
        let q = Query::new(&self.t.batches, "open_shard = :o")
            .index("open", false)
            .value(":o", s("open"));
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let (items, next) = self.query_page(&q, None, start).await?;
            for item in items {
                if let (Some(AttributeValue::S(a)), Some(AttributeValue::S(b))) =
                    (item.get("account_id"), item.get("batch_id"))
                {
                    out.push((a.clone(), b.clone()));
                }
            }
            match next {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }
}
