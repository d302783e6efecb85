//! Webhook tables: WebhookEndpoints (`account_id`, `endpoint_id`), Events (`account_id`,
//! `event_id`; LSI `by_time`) and Deliveries (`endpoint_id`, `event_id`; LSI `by_time`).
//!
//! A delivery moves through conditional writes only: attempt `n` is *claimed* by moving
//! `attempts_made` from `n - 1` to `n`, and *recorded* by moving `recorded` likewise, so a
//! duplicate message or a second dispatcher can neither send attempt `n` twice at once nor
//! record it twice.

use super::access::Toggle;
use super::{
    account_key, applied, condition_failed, dynamo_err, n, s, to_item, updated, Dynamo, Item, Query,
};
use crate::ports::records::{
    AttemptLog, DeliveryRecord, DeliveryStatus, EndpointRecord, EventRecord,
};
use crate::ports::webhooks::{EndpointPatch, TimePos};
use crate::ports::{
    Deliveries, Endpoints, Events, Listed, PageToken, PortResult, Slice, StoreError, TimeRange,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::collections::HashMap;

fn endpoint_key(account_id: &str, endpoint_id: &str) -> Item {
    account_key("endpoint_id", account_id, endpoint_id)
}

fn delivery_key(endpoint_id: &str, event_id: &str) -> Item {
    HashMap::from([
        ("endpoint_id".to_string(), s(endpoint_id)),
        ("event_id".to_string(), s(event_id)),
    ])
}

/// Newest first on a `by_time` index of partition `pk`, created within `range`.
fn by_time<'a>(table: &'a str, pk: &'a str, range: TimeRange) -> Query<'a> {
    Query::new(table, pk)
        .index("by_time", true)
        .value(":from", n(range.from_ms))
        .value(":to", n(range.to_ms))
}

#[async_trait]
impl Endpoints for Dynamo {
    async fn get(&self, account_id: &str, endpoint_id: &str) -> PortResult<Option<EndpointRecord>> {
        Dynamo::get(
            self,
            &self.t.webhook_endpoints,
            endpoint_key(account_id, endpoint_id),
        )
        .await
    }

    async fn list(&self, account_id: &str) -> PortResult<Vec<EndpointRecord>> {
        let q = Query::new(&self.t.webhook_endpoints, "account_id = :a").value(":a", s(account_id));
        self.query_all(&q).await
    }

    async fn patch(
        &self,
        account_id: &str,
        endpoint_id: &str,
        patch: &EndpointPatch,
        now_ms: i64,
    ) -> PortResult<Option<EndpointRecord>> {
        let mut set = vec!["updated_ms = :now".to_string()];
        let mut remove = Vec::new();
        let mut values = HashMap::from([(":now".to_string(), n(now_ms))]);
        if let Some(url) = &patch.url {
            set.push("#url = :url".into());
            values.insert(":url".into(), s(url));
        }
        match &patch.description {
            Some(Some(d)) => {
                set.push("description = :d".into());
                values.insert(":d".into(), s(d));
            }
            Some(None) => remove.push("description"),
            None => {}
        }
        match &patch.event_types {
            Some(Some(types)) => {
                set.push("event_types = :t".into());
                values.insert(
                    ":t".into(),
                    AttributeValue::L(types.iter().map(s).collect()),
                );
            }
            Some(None) => remove.push("event_types"),
            None => {}
        }
        match patch.enabled {
            Some(true) => {
                set.push("enabled = :on".into());
                values.insert(":on".into(), AttributeValue::Bool(true));
                // A customer re-enabling an endpoint starts its failure clock afresh.
                remove.extend(["disabled_reason", "disabled_ms", "failing_since_ms"]);
            }
            Some(false) => {
                set.push("enabled = :off".into());
                set.push("disabled_reason = :manual".into());
                set.push("disabled_ms = :now".into());
                values.insert(":off".into(), AttributeValue::Bool(false));
                values.insert(":manual".into(), s("manual"));
            }
            None => {}
        }
        let mut expr = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expr.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.webhook_endpoints)
            .set_key(Some(endpoint_key(account_id, endpoint_id)))
            .update_expression(expr)
            .condition_expression("attribute_exists(endpoint_id)")
            .set_expression_attribute_names(
                patch
                    .url
                    .as_ref()
                    .map(|_| HashMap::from([("#url".to_string(), "url".to_string())])),
            )
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated(res)
    }

    async fn delete(&self, account_id: &str, endpoint_id: &str) -> PortResult<bool> {
        let res = self
            .ddb
            .delete_item()
            .table_name(&self.t.webhook_endpoints)
            .set_key(Some(endpoint_key(account_id, endpoint_id)))
            .condition_expression("attribute_exists(endpoint_id)")
            .send()
            .await;
        applied(res, "DeleteItem")
    }

    async fn mark_failing(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now_ms: i64,
    ) -> PortResult<()> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.webhook_endpoints)
            .set_key(Some(endpoint_key(account_id, endpoint_id)))
            .update_expression("SET failing_since_ms = :now")
            .condition_expression(
                "attribute_exists(endpoint_id) AND attribute_not_exists(failing_since_ms)",
            )
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        applied(res, "UpdateItem").map(|_| ())
    }

    async fn mark_healthy(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now_ms: i64,
    ) -> PortResult<()> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.webhook_endpoints)
            .set_key(Some(endpoint_key(account_id, endpoint_id)))
            .update_expression("SET last_success_ms = :now REMOVE failing_since_ms")
            .condition_expression("attribute_exists(endpoint_id)")
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        applied(res, "UpdateItem").map(|_| ())
    }

    async fn disable(
        &self,
        account_id: &str,
        endpoint_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<Option<EndpointRecord>> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.webhook_endpoints)
            .set_key(Some(endpoint_key(account_id, endpoint_id)))
            .update_expression(
                "SET enabled = :off, disabled_reason = :r, disabled_ms = :now, updated_ms = :now",
            )
            .condition_expression("enabled = :on")
            .expression_attribute_values(":off", AttributeValue::Bool(false))
            .expression_attribute_values(":on", AttributeValue::Bool(true))
            .expression_attribute_values(":r", s(reason))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated(res)
    }

    async fn set_all_for_account(
        &self,
        account_id: &str,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<usize> {
        let endpoints = Endpoints::list(self, account_id)
            .await?
            .into_iter()
            .map(|e| endpoint_key(account_id, &e.endpoint_id))
            .collect();
        let t = Toggle {
            table: &self.t.webhook_endpoints,
            enable_condition: "disabled_reason = :r",
            enable: "SET enabled = :on, updated_ms = :now REMOVE disabled_reason, disabled_ms",
            disable:
                "SET enabled = :off, disabled_reason = :r, disabled_ms = :now, updated_ms = :now",
        };
        self.toggle_all(&t, endpoints, enable, reason, now_ms).await
    }
}

#[async_trait]
impl Events for Dynamo {
    async fn put_once(&self, rec: &EventRecord) -> PortResult<EventRecord> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.t.events)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(event_id)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(rec.clone()),
            Err(e) if condition_failed(&e) => Events::get(self, &rec.account_id, &rec.event_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("event {} vanished", rec.event_id))),
            Err(e) => Err(dynamo_err("PutItem", e)),
        }
    }

    async fn get(&self, account_id: &str, event_id: &str) -> PortResult<Option<EventRecord>> {
        Dynamo::get(
            self,
            &self.t.events,
            account_key("event_id", account_id, event_id),
        )
        .await
    }

    async fn list(
        &self,
        account_id: &str,
        event_type: Option<&str>,
        limit: usize,
        before: Option<TimePos>,
    ) -> PortResult<Listed<EventRecord>> {
        let mut q = by_time(
            &self.t.events,
            "account_id = :pk AND created_ms BETWEEN :from AND :to",
            TimeRange::ALL,
        )
        .value(":pk", s(account_id))
        .newest_first();
        if let Some(t) = event_type {
            q = q.filter("event_type = :t").value(":t", s(t));
        }
        let start = before.map(|(ms, id)| {
            HashMap::from([
                ("account_id".to_string(), s(account_id)),
                ("event_id".to_string(), s(id)),
                ("created_ms".to_string(), n(ms)),
            ])
        });
        self.query_list(&q, limit, start).await
    }
}

const DELIVERIES_BY_TIME: &str = "endpoint_id = :pk AND created_ms BETWEEN :from AND :to";

#[async_trait]
impl Deliveries for Dynamo {
    async fn create(&self, rec: &DeliveryRecord) -> PortResult<bool> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.t.deliveries)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(event_id)")
            .send()
            .await;
        applied(res, "PutItem")
    }

    async fn get(&self, endpoint_id: &str, event_id: &str) -> PortResult<Option<DeliveryRecord>> {
        Dynamo::get(
            self,
            &self.t.deliveries,
            delivery_key(endpoint_id, event_id),
        )
        .await
    }

    async fn claim(
        &self,
        endpoint_id: &str,
        event_id: &str,
        attempt: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.deliveries)
            .set_key(Some(delivery_key(endpoint_id, event_id)))
            .update_expression("SET attempts_made = :n, claim_until_ms = :until")
            .condition_expression(
                "#status = :pending AND recorded = :prev AND \
                 (attempts_made = :prev OR (attempts_made = :n AND claim_until_ms < :now))",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(":prev", n(attempt.saturating_sub(1)))
            .expression_attribute_values(":n", n(attempt))
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":until", n(until_ms))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn record(
        &self,
        endpoint_id: &str,
        event_id: &str,
        log: &AttemptLog,
        status: DeliveryStatus,
        next_attempt_ms: Option<i64>,
    ) -> PortResult<bool> {
        let mut expr = "SET recorded = :n, #status = :st, claim_until_ms = :zero, \
                        attempts = list_append(if_not_exists(attempts, :empty), :log)"
            .to_string();
        let mut values = HashMap::from([
            (":n".to_string(), n(log.n)),
            (":prev".to_string(), n(log.n.saturating_sub(1))),
            (":st".to_string(), s(status.as_str())),
            (":zero".to_string(), n(0)),
            (":empty".to_string(), AttributeValue::L(vec![])),
            (
                ":log".to_string(),
                AttributeValue::L(vec![AttributeValue::M(to_item(log)?)]),
            ),
        ]);
        match next_attempt_ms {
            Some(ms) => {
                expr.push_str(", next_attempt_ms = :next");
                values.insert(":next".into(), n(ms));
            }
            None => expr.push_str(" REMOVE next_attempt_ms"),
        }
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.deliveries)
            .set_key(Some(delivery_key(endpoint_id, event_id)))
            .update_expression(expr)
            .condition_expression("attempts_made = :n AND recorded = :prev")
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    async fn restart(
        &self,
        endpoint_id: &str,
        event_id: &str,
        now_ms: i64,
    ) -> PortResult<Option<u32>> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.deliveries)
            .set_key(Some(delivery_key(endpoint_id, event_id)))
            .update_expression(
                "SET #status = :pending, schedule_base = attempts_made, next_attempt_ms = :now",
            )
            .condition_expression(
                "attribute_exists(event_id) AND #status <> :pending AND attempts_made < :max",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":pending", s(DeliveryStatus::Pending.as_str()))
            .expression_attribute_values(
                ":max",
                n(crate::domain::webhook::MAX_ATTEMPTS_PER_DELIVERY),
            )
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        Ok(updated::<DeliveryRecord>(res)?.map(|r| r.attempts_made + 1))
    }

    async fn list(
        &self,
        endpoint_id: &str,
        range: TimeRange,
        status: Option<DeliveryStatus>,
        limit: usize,
        before: Option<TimePos>,
    ) -> PortResult<Listed<DeliveryRecord>> {
        let mut q = by_time(&self.t.deliveries, DELIVERIES_BY_TIME, range)
            .value(":pk", s(endpoint_id))
            .newest_first();
        if let Some(st) = status {
            q = q
                .filter("#status = :t")
                .name("#status", "status")
                .value(":t", s(st.as_str()));
        }
        let start = before.map(|(ms, id)| {
            HashMap::from([
                ("endpoint_id".to_string(), s(endpoint_id)),
                ("event_id".to_string(), s(id)),
                ("created_ms".to_string(), n(ms)),
            ])
        });
        self.query_list(&q, limit, start).await
    }

    async fn page(
        &self,
        endpoint_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<DeliveryRecord>> {
        let q = by_time(&self.t.deliveries, DELIVERIES_BY_TIME, range).value(":pk", s(endpoint_id));
        self.query_slice(&q, after).await
    }
}
