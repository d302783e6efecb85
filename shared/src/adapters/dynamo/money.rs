//! The money tables: every balance change is one `TransactWriteItems` of the account (its
//! balance and `ledger_seq`, conditioned on what was read), the new Ledger entry
//! (`attribute_not_exists`), and the records and changes the movement implies. Ledger reads.

use super::{build, dynamo_err, n, put_new_item, s, to_item, Dynamo, Query};
use crate::domain::batch::BatchStatus;
use crate::domain::task::Settlement;
use crate::ports::records::{BatchRecord, LedgerRecord};
use crate::ports::store::{CommitError, LedgerQuery, MoneyMove};
use crate::ports::{Ledger, Listed, Money, PageToken, PortResult, Slice, TimeRange};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use std::collections::HashMap;

#[async_trait]
impl Money for Dynamo {
    async fn commit(&self, mv: MoneyMove) -> Result<(), CommitError> {
        let e = &mv.entry;
        let mut condition = "ledger_seq = :seq AND balance = :balance".to_string();
        let mut values = HashMap::from([
            (":seq".to_string(), n(mv.expected.seq)),
            (":balance".to_string(), n(mv.expected.balance.value())),
            (":next".to_string(), n(e.seq)),
            (":ms".to_string(), n(e.created_ms)),
            (":amount".to_string(), n(e.amount.value())),
            (":held".to_string(), n(mv.held_delta.value())),
            (":granted".to_string(), n(mv.granted_delta.value())),
            (":charged".to_string(), n(mv.charged_delta.value())),
            (":refunded".to_string(), n(mv.refunded_delta.value())),
            (":released".to_string(), n(mv.released_delta.value())),
            (":zero".to_string(), n(0)),
        ]);
        let mut names = HashMap::new();
        if mv.require_active {
            condition.push_str(" AND #status = :active");
            values.insert(":active".to_string(), s("active"));
            names.insert("#status".to_string(), "status".to_string());
        }
        let update = build(
            Update::builder()
                .table_name(&self.t.accounts)
                .key("account_id", s(&mv.account_id))
                .update_expression(
                    "SET balance = balance + :amount, held = held + :held, \
                     lifetime_granted = lifetime_granted + :granted, \
                     lifetime_charged = lifetime_charged + :charged, \
                     lifetime_refunded = lifetime_refunded + :refunded, \
                     lifetime_released = if_not_exists(lifetime_released, :zero) + :released, \
                     ledger_seq = :next, last_entry_ms = :ms",
                )
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .set_expression_attribute_names(if names.is_empty() { None } else { Some(names) }),
        )?;
        let mut items = vec![
            TransactWriteItem::builder().update(update).build(),
            put_new_item(&self.t.ledger, to_item(&mv.entry)?, "account_id")?,
        ];
        for c in &mv.creates {
            items.push(self.put_new(c)?);
        }
        for c in &mv.changes {
            items.push(self.change(c)?);
        }
        items.extend(self.stored_replies(&mv.creates)?);
        // creates[i] is transaction item i + 2 (and changes follow them).
        self.transact(items, 2).await
    }

    async fn settle(&self, batch: &BatchRecord, st: &Settlement, now_ms: i64) -> PortResult<bool> {
        let settlement = serde_dynamo::to_attribute_value(st)
            .map_err(|e| crate::ports::StoreError::Corrupt(e.to_string()))?;
        // Batches from before the cancel rule have no release tally: absent means zero.
        let released = if st.released.value() == 0 {
            "(attribute_not_exists(credits.released) OR credits.released = :released)"
        } else {
            "credits.released = :released"
        };
        let b = build(
            Update::builder()
                .table_name(&self.t.batches)
                .key("account_id", s(&batch.account_id))
                .key("batch_id", s(&batch.batch_id))
                .update_expression(
                    "SET #st = :completed, settlement = :s, completed_ms = :now, \
                     credits.charged = :charged REMOVE open_shard",
                )
                .condition_expression(format!(
                    "#st <> :completed AND credits.refunded = :refunded AND {released}"
                ))
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":completed", s(BatchStatus::Completed.as_str()))
                .expression_attribute_values(":s", settlement)
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":charged", n(st.charged.value()))
                .expression_attribute_values(":refunded", n(st.refunded.value()))
                .expression_attribute_values(":released", n(st.released.value())),
        )?;
        let a = build(
            Update::builder()
                .table_name(&self.t.accounts)
                .key("account_id", s(&batch.account_id))
                .update_expression(
                    "SET held = held - :charged, lifetime_charged = lifetime_charged + :charged",
                )
                .expression_attribute_values(":charged", n(st.charged.value())),
        )?;
        let res = self
            .ddb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(b).build())
            .transact_items(TransactWriteItem::builder().update(a).build())
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) => {
                // Only the batch's own condition failing means "settled already" (or its
                // refunds moved meanwhile); a conflict on the account is an error to retry.
                let batch_condition_failed = match e.as_service_error() {
                    Some(TransactWriteItemsError::TransactionCanceledException(tc)) => {
                        tc.cancellation_reasons().first().and_then(|r| r.code())
                            == Some("ConditionalCheckFailed")
                    }
                    _ => false,
                };
                if batch_condition_failed {
                    Ok(false)
                } else {
                    Err(dynamo_err("TransactWriteItems", e))
                }
            }
        }
    }
}

fn by_time(t: &str, range: TimeRange) -> Query<'_> {
    Query::new(t, "account_id = :a AND created_ms BETWEEN :from AND :to")
        .index("by_time", true)
        .value(":from", n(range.from_ms))
        .value(":to", n(range.to_ms))
}

#[async_trait]
impl Ledger for Dynamo {
    async fn list(&self, q: &LedgerQuery) -> PortResult<Listed<LedgerRecord>> {
        let mut query = by_time(&self.t.ledger, q.range)
            .value(":a", s(&q.account_id))
            .newest_first();
        if let Some(kind) = q.kind {
            query = query
                .filter("#kind = :k")
                .name("#kind", "kind")
                .value(":k", s(kind.as_str()));
        }
        let start = q.after.map(|p| {
            HashMap::from([
                ("account_id".to_string(), s(&q.account_id)),
                ("seq".to_string(), n(p.seq)),
                ("created_ms".to_string(), n(p.created_ms)),
            ])
        });
        self.query_list(&query, q.limit, start).await
    }

    async fn last_before(&self, account_id: &str, ms: i64) -> PortResult<Option<LedgerRecord>> {
        let q = Query::new(&self.t.ledger, "account_id = :a AND created_ms < :t")
            .index("by_time", true)
            .value(":a", s(account_id))
            .value(":t", n(ms))
            .newest_first();
        let (items, _) = self.query_page(&q, Some(1), None).await?;
        items.into_iter().next().map(super::from_item).transpose()
    }

    async fn get(&self, account_id: &str, seq: u64) -> PortResult<Option<LedgerRecord>> {
        let key = HashMap::from([
            ("account_id".to_string(), s(account_id)),
            ("seq".to_string(), n(seq)),
        ]);
        Dynamo::get(self, &self.t.ledger, key).await
    }

    async fn page(
        &self,
        account_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<LedgerRecord>> {
        let q = by_time(&self.t.ledger, range).value(":a", s(account_id));
        self.query_slice(&q, after).await
    }
}
