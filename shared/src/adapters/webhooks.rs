//! Webhook storage (endpoints, events, deliveries) and the outbound HTTP client.
//!
//! A delivery moves through conditional writes only: attempt `n` is *claimed* by moving
//! `attempts_made` from `n - 1` to `n`, and *recorded* by moving `recorded` likewise, so a
//! duplicate message or a second dispatcher can neither send attempt `n` twice at once nor
//! record it twice.

use super::dynamo::{
    applied, condition_failed, dynamo_err, from_item, n, s, to_item, updated, Item,
};
use super::records::{AttemptLog, DeliveryRecord, DeliveryStatus, EndpointRecord, EventRecord};
use super::{Store, StoreError};
use crate::domain::webhook::{forbidden_ip, AttemptResult, SigningSecret};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, Update};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The fields of an endpoint a customer may change.
#[derive(Clone, Debug, Default)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub event_types: Option<Option<Vec<String>>>,
    pub enabled: Option<bool>,
}

/// Where a time-ordered listing resumes: (created_ms, sort key).
pub type TimeCursor = (i64, String);

impl Store {
    fn endpoint_key(account_id: &str, endpoint_id: &str) -> Item {
        HashMap::from([
            ("account_id".to_string(), s(account_id)),
            ("endpoint_id".to_string(), s(endpoint_id)),
        ])
    }

    fn delivery_key(endpoint_id: &str, event_id: &str) -> Item {
        HashMap::from([
            ("endpoint_id".to_string(), s(endpoint_id)),
            ("event_id".to_string(), s(event_id)),
        ])
    }

    pub async fn get_endpoint(
        &self,
        account_id: &str,
        endpoint_id: &str,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        self.get(
            &self.tables().webhook_endpoints,
            Self::endpoint_key(account_id, endpoint_id),
        )
        .await
    }

    /// All of an account's endpoints, oldest first (an account has at most a few dozen).
    pub async fn list_endpoints(
        &self,
        account_id: &str,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        let q = super::exports::PageQuery {
            table: &self.tables().webhook_endpoints,
            index: None,
            key_condition: "account_id = :a",
            values: vec![(":a", s(account_id))],
        };
        self.query_all(&q, true).await
    }

    /// Applies a customer's change; `None` when the endpoint does not exist.
    pub async fn patch_endpoint(
        &self,
        account_id: &str,
        endpoint_id: &str,
        patch: &EndpointPatch,
        now_ms: i64,
    ) -> Result<Option<EndpointRecord>, StoreError> {
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
            .table_name(&self.tables().webhook_endpoints)
            .set_key(Some(Self::endpoint_key(account_id, endpoint_id)))
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

    pub async fn delete_endpoint(
        &self,
        account_id: &str,
        endpoint_id: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .delete_item()
            .table_name(&self.tables().webhook_endpoints)
            .set_key(Some(Self::endpoint_key(account_id, endpoint_id)))
            .condition_expression("attribute_exists(endpoint_id)")
            .send()
            .await;
        applied(res, "DeleteItem")
    }

    /// The update that replaces an endpoint's secrets, if nobody rotated since `rec` was read.
    pub fn rotate_secrets_update(
        &self,
        rec: &EndpointRecord,
        secrets: &[SigningSecret],
        now_ms: i64,
    ) -> Result<Update, StoreError> {
        let list = secrets
            .iter()
            .map(|sec| to_item(sec).map(AttributeValue::M))
            .collect::<Result<Vec<_>, _>>()?;
        Update::builder()
            .table_name(&self.tables().webhook_endpoints)
            .set_key(Some(Self::endpoint_key(&rec.account_id, &rec.endpoint_id)))
            .update_expression("SET secrets = :s, secrets_version = :next, updated_ms = :now")
            .condition_expression("secrets_version = :v")
            .expression_attribute_values(":s", AttributeValue::L(list))
            .expression_attribute_values(":v", n(rec.secrets_version))
            .expression_attribute_values(":next", n(rec.secrets_version + 1))
            .expression_attribute_values(":now", n(now_ms))
            .build()
            .map_err(|e| StoreError::Dynamo(e.to_string()))
    }

    /// The first failure after a success starts the endpoint's failure clock.
    pub async fn mark_endpoint_failing(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().webhook_endpoints)
            .set_key(Some(Self::endpoint_key(account_id, endpoint_id)))
            .update_expression("SET failing_since_ms = :now")
            .condition_expression(
                "attribute_exists(endpoint_id) AND attribute_not_exists(failing_since_ms)",
            )
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    /// A success stops the failure clock.
    pub async fn mark_endpoint_healthy(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().webhook_endpoints)
            .set_key(Some(Self::endpoint_key(account_id, endpoint_id)))
            .update_expression("SET last_success_ms = :now REMOVE failing_since_ms")
            .condition_expression("attribute_exists(endpoint_id)")
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    /// Disables an enabled endpoint; the new record when this call did it, `None` when it was
    /// already disabled or is gone (so the account is told once).
    pub async fn disable_endpoint(
        &self,
        account_id: &str,
        endpoint_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<Option<EndpointRecord>, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().webhook_endpoints)
            .set_key(Some(Self::endpoint_key(account_id, endpoint_id)))
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

    /// Stores an event the first time it is seen; returns the stored one either way, so every
    /// delivery sends the first body even when a producer re-emitted it with other bytes.
    pub async fn put_event_once(&self, rec: &EventRecord) -> Result<EventRecord, StoreError> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.tables().events)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(event_id)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(rec.clone()),
            Err(e) if condition_failed(&e) => self
                .get_event(&rec.account_id, &rec.event_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("event {} vanished", rec.event_id))),
            Err(e) => Err(dynamo_err("PutItem", e)),
        }
    }

    pub async fn get_event(
        &self,
        account_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        let key = HashMap::from([
            ("account_id".to_string(), s(account_id)),
            ("event_id".to_string(), s(event_id)),
        ]);
        self.get(&self.tables().events, key).await
    }

    /// An account's events, newest first, optionally of one type.
    pub async fn list_events(
        &self,
        account_id: &str,
        event_type: Option<&str>,
        limit: usize,
        before: Option<TimeCursor>,
    ) -> Result<(Vec<EventRecord>, bool), StoreError> {
        let start = before.map(|(ms, id)| {
            HashMap::from([
                ("account_id".to_string(), s(account_id)),
                ("event_id".to_string(), s(id)),
                ("created_ms".to_string(), n(ms)),
            ])
        });
        let filter = event_type.map(|t| ("event_type = :t", s(t)));
        self.query_by_time(
            &self.tables().events,
            ("account_id", account_id),
            (0, i64::MAX),
            filter,
            limit,
            start,
        )
        .await
    }

    /// Newest-first pages of a `by_time` index, with an optional filter.
    async fn query_by_time<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        (pk, pk_value): (&str, &str),
        (from_ms, to_ms): (i64, i64),
        filter: Option<(&str, AttributeValue)>,
        limit: usize,
        mut start: Option<Item>,
    ) -> Result<(Vec<T>, bool), StoreError> {
        let mut out = Vec::new();
        for _ in 0..20 {
            let mut q = self
                .ddb
                .query()
                .table_name(table)
                .index_name("by_time")
                .key_condition_expression(format!(
                    "{pk} = :pk AND created_ms BETWEEN :from AND :to"
                ))
                .expression_attribute_values(":pk", s(pk_value))
                .expression_attribute_values(":from", n(from_ms))
                .expression_attribute_values(":to", n(to_ms))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            if let Some((expr, value)) = &filter {
                q = q
                    .filter_expression(*expr)
                    .expression_attribute_values(":t", value.clone());
                if expr.contains("#status") {
                    // `status` is a reserved word.
                    q = q.expression_attribute_names("#status", "status");
                }
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
        Ok((out, true))
    }

    /// Creates a delivery unless one exists for this (endpoint, event).
    pub async fn create_delivery(&self, rec: &DeliveryRecord) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.tables().deliveries)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(event_id)")
            .send()
            .await;
        applied(res, "PutItem")
    }

    pub async fn get_delivery(
        &self,
        endpoint_id: &str,
        event_id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        self.get(
            &self.tables().deliveries,
            Self::delivery_key(endpoint_id, event_id),
        )
        .await
    }

    /// Claims attempt `n`: it is the next one, or an earlier claimer of `n` died (its claim
    /// ran out with nothing recorded). False when someone else holds or finished it.
    pub async fn claim_attempt(
        &self,
        endpoint_id: &str,
        event_id: &str,
        attempt: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().deliveries)
            .set_key(Some(Self::delivery_key(endpoint_id, event_id)))
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

    /// Records attempt `n`'s result and the delivery's new state. False if it was recorded
    /// already (a duplicate).
    pub async fn record_attempt(
        &self,
        endpoint_id: &str,
        event_id: &str,
        log: &AttemptLog,
        status: DeliveryStatus,
        next_attempt_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
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
            .table_name(&self.tables().deliveries)
            .set_key(Some(Self::delivery_key(endpoint_id, event_id)))
            .update_expression(expr)
            .condition_expression("attempts_made = :n AND recorded = :prev")
            .expression_attribute_names("#status", "status")
            .set_expression_attribute_values(Some(values))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    /// Starts a new schedule for a finished delivery (a redelivery). Returns the attempt
    /// number to send next, or `None` when the delivery is still pending (its schedule
    /// continues) or does not exist.
    pub async fn restart_delivery(
        &self,
        endpoint_id: &str,
        event_id: &str,
        now_ms: i64,
    ) -> Result<Option<u32>, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().deliveries)
            .set_key(Some(Self::delivery_key(endpoint_id, event_id)))
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
        match res {
            Ok(out) => {
                let rec: Option<DeliveryRecord> = out.attributes.map(from_item).transpose()?;
                Ok(rec.map(|r| r.attempts_made + 1))
            }
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    /// An endpoint's deliveries, newest first, created in `[from_ms, to_ms]`, optionally of
    /// one status.
    pub async fn list_deliveries(
        &self,
        endpoint_id: &str,
        (from_ms, to_ms): (i64, i64),
        status: Option<DeliveryStatus>,
        limit: usize,
        before: Option<TimeCursor>,
    ) -> Result<(Vec<DeliveryRecord>, bool), StoreError> {
        let start = before.map(|(ms, id)| {
            HashMap::from([
                ("endpoint_id".to_string(), s(endpoint_id)),
                ("event_id".to_string(), s(id)),
                ("created_ms".to_string(), n(ms)),
            ])
        });
        let filter = status.map(|st| ("#status = :t", s(st.as_str())));
        self.query_by_time(
            &self.tables().deliveries,
            ("endpoint_id", endpoint_id),
            (from_ms, to_ms),
            filter,
            limit,
            start,
        )
        .await
    }
}

impl Store {
    /// Sets (or with `None` removes) an account's low-balance threshold.
    pub async fn set_low_balance_threshold(
        &self,
        account_id: &str,
        threshold: Option<i64>,
    ) -> Result<Option<crate::adapters::records::AccountRecord>, StoreError> {
        let mut u = self
            .ddb
            .update_item()
            .table_name(&self.tables().accounts)
            .key("account_id", s(account_id))
            .condition_expression("attribute_exists(account_id)")
            .return_values(ReturnValue::AllNew);
        u = match threshold {
            Some(t) => u
                .update_expression("SET low_balance_threshold = :t")
                .expression_attribute_values(":t", n(t)),
            None => u.update_expression("REMOVE low_balance_threshold"),
        };
        match u.send().await {
            Ok(out) => out.attributes.map(from_item).transpose(),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }
}

/// In the cloud, an endpoint's host name must resolve, and only to public addresses.
pub async fn check_public_name(host: &str, port: Option<u16>) -> Result<(), String> {
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host, port.unwrap_or(443)))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} does not resolve"));
    }
    if let Some(bad) = addrs.iter().find(|a| forbidden_ip(a.ip())) {
        let _ = bad;
        return Err(format!(
            "{host} resolves to a loopback, private, link-local or metadata address"
        ));
    }
    Ok(())
}

/// What one POST produced, for the delivery log.
#[derive(Clone, Debug)]
pub struct PostOutcome {
    pub result: AttemptResult,
    pub latency_ms: u64,
    pub body: Option<String>,
    pub error: Option<String>,
}

/// Resolves names and drops every address a webhook must not reach, so a name that resolves
/// (or re-resolves, DNS rebinding) to a private address is never connected to.
struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !forbidden_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no public address").into());
            }
            let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

/// The outbound client: no redirects (a 3xx is a failure), a per-attempt timeout, and in the
/// cloud the guarded resolver.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    allow_private: bool,
}

impl WebhookClient {
    pub fn new(cfg: crate::config::WebhookConfig) -> Result<Self, StoreError> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms.min(10_000)))
            .user_agent("VideoPlatform-Webhooks/1 (+https://www.standardwebhooks.com)");
        if !cfg.allow_private {
            b = b.dns_resolver(Arc::new(GuardedResolver));
        }
        Ok(WebhookClient {
            http: b
                .build()
                .map_err(|e| StoreError::Corrupt(format!("webhook client: {e}")))?,
            allow_private: cfg.allow_private,
        })
    }

    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> PostOutcome {
        let started = Instant::now();
        let no_response = |error: String| PostOutcome {
            result: AttemptResult::NoResponse,
            latency_ms: started.elapsed().as_millis() as u64,
            body: None,
            error: Some(error),
        };
        // IP literals never reach the resolver: check them here.
        if !self.allow_private {
            let policy = crate::domain::webhook::UrlPolicy {
                allow_private: false,
            };
            if let Err(e) = crate::domain::webhook::check_url(url, policy) {
                return no_response(e.to_string());
            }
        }
        let mut req = self
            .http
            .post(url)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out".to_string()
                } else if e.is_connect() {
                    format!("could not connect: {}", root_cause(&e))
                } else {
                    format!("request failed: {}", root_cause(&e))
                };
                return no_response(what);
            }
        };
        let code = resp.status().as_u16();
        let retry_after_secs = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Read at most what the log keeps; the rest of a large body is not our business.
        let mut kept = Vec::new();
        let mut resp = resp;
        let mut error = None;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    kept.extend_from_slice(&chunk);
                    if kept.len() >= crate::domain::webhook::LOGGED_BODY_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the response: {}", root_cause(&e)));
                    break;
                }
            }
        }
        PostOutcome {
            result: AttemptResult::Status {
                code,
                retry_after_secs,
            },
            latency_ms: started.elapsed().as_millis() as u64,
            body: Some(crate::domain::webhook::truncate_body(&kept)),
            error,
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
