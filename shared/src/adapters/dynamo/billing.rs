//! The billing table: each account's documents (`acct#{id}` / `doc#{number}`, so one query
//! lists a series newest first), and one counter per series and year
//! (`counter#{prefix}#{year}` / `counter`, attribute `last`) that a document's transaction
//! moves by exactly one.

use super::{build, n, s, to_item, Dynamo, Item, Query};
use crate::domain::invoice::Series;
use crate::ports::billing::{InvoiceRecord, Invoices, PaymentRecord};
use crate::ports::{Listed, PortResult};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::Update;
use std::collections::HashMap;

fn key(pk: String, sk: String) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

fn doc_key(account_id: &str, number: &str) -> Item {
    key(format!("acct#{account_id}"), format!("doc#{number}"))
}

fn counter_key(series: Series, year: i32) -> Item {
    key(
        format!("counter#{}#{year}", series.prefix()),
        "counter".into(),
    )
}

fn payment_key(payment_intent: &str) -> Item {
    key(format!("pay#{payment_intent}"), "pay".into())
}

/// A card payment as stored.
pub(super) fn payment_item(r: &PaymentRecord) -> PortResult<Item> {
    let mut item = to_item(r)?;
    item.extend(payment_key(&r.payment_intent));
    Ok(item)
}

/// The document as stored: its fields and the table's key.
pub(super) fn invoice_item(r: &InvoiceRecord) -> PortResult<Item> {
    let mut item = to_item(r)?;
    item.extend(doc_key(&r.account_id, &r.number));
    Ok(item)
}

impl Dynamo {
    /// A payment's reversed credits move `from` -> `to`.
    pub(super) fn payment_reversed(
        &self,
        payment_intent: &str,
        from: i64,
        to: i64,
    ) -> PortResult<Update> {
        build(
            Update::builder()
                .table_name(&self.t.billing)
                .set_key(Some(payment_key(payment_intent)))
                .update_expression("SET reversed_credits = :to")
                .condition_expression("reversed_credits = :from")
                .expression_attribute_values(":from", n(from))
                .expression_attribute_values(":to", n(to)),
        )
    }

    /// The counter of `series` in `year` moves to `seq`, only from `seq - 1` (from nothing
    /// for the year's first number).
    pub(super) fn next_number(&self, series: Series, year: i32, seq: u64) -> PortResult<Update> {
        let condition = if seq == 1 {
            "attribute_not_exists(pk)"
        } else {
            "#last = :prev"
        };
        let mut u = Update::builder()
            .table_name(&self.t.billing)
            .set_key(Some(counter_key(series, year)))
            .update_expression("SET #last = :seq")
            .condition_expression(condition)
            .expression_attribute_names("#last", "last")
            .expression_attribute_values(":seq", n(seq));
        if seq > 1 {
            u = u.expression_attribute_values(":prev", n(seq - 1));
        }
        build(u)
    }
}

#[async_trait]
impl Invoices for Dynamo {
    async fn payment(&self, payment_intent: &str) -> PortResult<Option<PaymentRecord>> {
        self.get(&self.t.billing, payment_key(payment_intent)).await
    }

    async fn last_number(&self, series: Series, year: i32) -> PortResult<u64> {
        #[derive(serde::Deserialize)]
        struct Counter {
            last: u64,
        }
        let c: Option<Counter> = self.get(&self.t.billing, counter_key(series, year)).await?;
        Ok(c.map_or(0, |c| c.last))
    }

    async fn get(&self, account_id: &str, number: &str) -> PortResult<Option<InvoiceRecord>> {
        Dynamo::get(self, &self.t.billing, doc_key(account_id, number)).await
    }

    async fn list(
        &self,
        account_id: &str,
        series: Series,
        before: Option<&str>,
        limit: usize,
    ) -> PortResult<Listed<InvoiceRecord>> {
        let q = Query::new(&self.t.billing, "pk = :pk AND begins_with(sk, :docs)")
            .value(":pk", s(format!("acct#{account_id}")))
            .value(":docs", s(format!("doc#{}-", series.prefix())))
            .newest_first();
        let start = before.map(|b| doc_key(account_id, b));
        self.query_list(&q, limit, start).await
    }
}
