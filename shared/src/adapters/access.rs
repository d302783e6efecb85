//! Access state in DynamoDB: rate-limit windows, address blocks, the usage log
//! (`enterprise_api_usage`) and API key management. All shared across Lambda instances; none
//! of it is cached beyond one finished rate-limit window.

use super::dynamo::{
    applied, condition_failed, dynamo_err, from_item, n, s, to_item, updated, Item,
};
use super::records::{ApiKeyRecord, Throttle, UsageRecord};
use super::{Store, StoreError};
use crate::domain::access::{KeyMinute, WINDOW_MS};
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::collections::HashMap;

/// How termination disables, and reinstatement re-enables, the items of one table.
struct Toggle<'a> {
    table: &'a str,
    enable_condition: &'static str,
    enable: &'static str,
    disable: &'static str,
}

fn num(item: &HashMap<String, AttributeValue>, k: &str) -> u64 {
    match item.get(k) {
        Some(AttributeValue::N(v)) => v.parse().unwrap_or(0),
        _ => 0,
    }
}

fn key_window(key_id: &str, window_start: i64) -> String {
    format!("k#{key_id}#{window_start}")
}

/// Window items outlive their minute a little: the next minute reads them as "previous".
fn window_expiry(window_start: i64) -> i64 {
    (window_start + 3 * WINDOW_MS) / 1_000
}

/// A change to a key; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub enabled: Option<bool>,
    pub rate_limit_per_min: Option<u32>,
    pub ip_allowlist: Option<Vec<String>>,
    /// An operator's change: a key an operator disabled only an operator enables again.
    pub by_operator: bool,
}

impl Store {
    /// Admits one request into the key's current window if its count is below `cap`;
    /// returns the count including this request, or `None` (refused, nothing counted).
    pub async fn rate_admit(
        &self,
        key_id: &str,
        window_start: i64,
        cap: u64,
    ) -> Result<Option<u64>, StoreError> {
        if cap == 0 {
            return Ok(None);
        }
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().rate_limits)
            .key("pk", s(key_window(key_id, window_start)))
            .update_expression("ADD n :one SET expires_at = :exp")
            .condition_expression("attribute_not_exists(n) OR n < :cap")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(cap))
            .expression_attribute_values(":exp", n(window_expiry(window_start)))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match res {
            Ok(out) => Ok(Some(out.attributes.map(|a| num(&a, "n")).unwrap_or(1))),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(dynamo_err("UpdateItem", e)),
        }
    }

    /// Requests admitted in one of a key's windows.
    pub async fn window_count(&self, key_id: &str, window_start: i64) -> Result<u64, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.tables().rate_limits)
            .key("pk", s(key_window(key_id, window_start)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?;
        Ok(out.item.map(|i| num(&i, "n")).unwrap_or(0))
    }

    /// Counts an answered request's error class in the key's window; returns the minute so
    /// far for the anomaly rules.
    pub async fn count_key_errors(
        &self,
        key_id: &str,
        window_start: i64,
        client_error: bool,
        payment_required: bool,
    ) -> Result<KeyMinute, StoreError> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.tables().rate_limits)
            .key("pk", s(key_window(key_id, window_start)))
            .update_expression("ADD ce :ce, pr :pr SET expires_at = :exp")
            .expression_attribute_values(":ce", n(u8::from(client_error)))
            .expression_attribute_values(":pr", n(u8::from(payment_required)))
            .expression_attribute_values(":exp", n(window_expiry(window_start)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| dynamo_err("UpdateItem", e))?;
        let a = out.attributes.unwrap_or_default();
        Ok(KeyMinute {
            requests: num(&a, "n"),
            client_errors: num(&a, "ce"),
            payment_required: num(&a, "pr"),
        })
    }

    /// Counts a failed authentication from `ip` in its window; returns the count.
    pub async fn count_auth_failure(&self, ip: &str, window_start: i64) -> Result<u64, StoreError> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.tables().rate_limits)
            .key("pk", s(format!("ip#{ip}#{window_start}")))
            .update_expression("ADD f :one SET expires_at = :exp")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":exp", n(window_expiry(window_start)))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| dynamo_err("UpdateItem", e))?;
        Ok(out.attributes.map(|a| num(&a, "f")).unwrap_or(1))
    }

    /// Blocks an address until `until_ms`. True when this call placed the block.
    pub async fn block_ip(
        &self,
        ip: &str,
        reason: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.tables().rate_limits)
            .item("pk", s(format!("block#{ip}")))
            .item("ip", s(ip))
            .item("reason", s(reason))
            .item("since_ms", n(now_ms))
            .item("until_ms", n(until_ms))
            .item("expires_at", n(until_ms / 1_000 + 60))
            .condition_expression("attribute_not_exists(pk) OR until_ms < :now")
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        applied(res, "PutItem")
    }

    /// The block on an address, if one is in force at `now_ms`: (until, reason).
    pub async fn ip_block(
        &self,
        ip: &str,
        now_ms: i64,
    ) -> Result<Option<(i64, String)>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.tables().rate_limits)
            .key("pk", s(format!("block#{ip}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?;
        Ok(out.item.and_then(|i| {
            let until = i64::try_from(num(&i, "until_ms")).unwrap_or(0);
            let reason = match i.get("reason") {
                Some(AttributeValue::S(r)) => r.clone(),
                _ => String::new(),
            };
            (until > now_ms).then_some((until, reason))
        }))
    }

    pub async fn unblock_ip(&self, ip: &str) -> Result<bool, StoreError> {
        let out = self
            .ddb
            .delete_item()
            .table_name(&self.tables().rate_limits)
            .key("pk", s(format!("block#{ip}")))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| dynamo_err("DeleteItem", e))?;
        Ok(out.attributes.is_some())
    }

    pub async fn put_usage(&self, rec: &UsageRecord) -> Result<(), StoreError> {
        self.ddb
            .put_item()
            .table_name(&self.tables().api_usage)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(usage_id) OR kind = :anomaly")
            .expression_attribute_values(":anomaly", s("anomaly"))
            .send()
            .await
            .map_err(|e| dynamo_err("PutItem", e))?;
        Ok(())
    }

    /// An account's usage records in `[from_ms, to_ms]`, newest first, after filters.
    pub async fn list_usage(
        &self,
        account_id: &str,
        (from_ms, to_ms): (i64, i64),
        filters: &[(&str, AttributeValue)],
        limit: usize,
        before: Option<String>,
    ) -> Result<(Vec<UsageRecord>, bool), StoreError> {
        let mut out = Vec::new();
        let mut start = before.map(|b| {
            HashMap::from([
                ("account_id".to_string(), s(account_id)),
                ("usage_id".to_string(), s(b)),
            ])
        });
        let filter = filters
            .iter()
            .enumerate()
            .map(|(i, _)| format!("#f{i} = :f{i}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        for _ in 0..20 {
            let mut q = self
                .ddb
                .query()
                .table_name(&self.tables().api_usage)
                .key_condition_expression("account_id = :a AND usage_id BETWEEN :lo AND :hi")
                .expression_attribute_values(":a", s(account_id))
                .expression_attribute_values(":lo", s(format!("{:013}", from_ms.max(0))))
                .expression_attribute_values(":hi", s(format!("{:013}~", to_ms.max(0))))
                .scan_index_forward(false)
                .consistent_read(true)
                .limit(i32::try_from(limit + 1).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take());
            if !filters.is_empty() {
                q = q.filter_expression(&filter);
                for (i, (field, value)) in filters.iter().enumerate() {
                    q = q
                        .expression_attribute_names(format!("#f{i}"), *field)
                        .expression_attribute_values(format!(":f{i}"), value.clone());
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

    /// All of an account's keys (by_account index), oldest first.
    pub async fn list_keys(&self, account_id: &str) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let q = super::exports::PageQuery {
            table: &self.tables().api_keys,
            index: Some("by_account"),
            key_condition: "account_id = :a",
            values: vec![(":a", s(account_id))],
        };
        // A global index: eventually consistent by nature.
        self.query_all(&q, false).await
    }

    /// One key of an account by its id; `None` for another account's key or none at all.
    pub async fn find_key(
        &self,
        account_id: &str,
        key_id: &str,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let page = self
            .ddb
            .query()
            .table_name(&self.tables().api_keys)
            .index_name("by_account")
            .key_condition_expression("account_id = :a AND key_id = :k")
            .expression_attribute_values(":a", s(account_id))
            .expression_attribute_values(":k", s(key_id))
            .send()
            .await
            .map_err(|e| dynamo_err("Query", e))?;
        // The index is eventually consistent: read the item itself for its current state.
        match page.items.unwrap_or_default().into_iter().next() {
            Some(item) => {
                let rec: ApiKeyRecord = from_item(item)?;
                self.get_api_key(&rec.key_hash).await
            }
            None => Ok(None),
        }
    }

    /// Applies a change to a key that is not revoked; `None` if it is revoked or gone.
    pub async fn patch_key(
        &self,
        key_hash: &str,
        patch: &KeyPatch,
        now_ms: i64,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let mut set = vec!["updated_ms = :now".to_string()];
        let mut remove = Vec::new();
        let mut values = HashMap::from([(":now".to_string(), n(now_ms))]);
        if let Some(name) = &patch.name {
            set.push("#name = :name".into());
            values.insert(":name".into(), s(name));
        }
        match patch.enabled {
            Some(true) => {
                set.push("enabled = :t".into());
                values.insert(":t".into(), AttributeValue::Bool(true));
                remove.push("disabled_reason");
            }
            Some(false) => {
                set.push("enabled = :f".into());
                set.push("disabled_reason = :manual".into());
                values.insert(":f".into(), AttributeValue::Bool(false));
                values.insert(
                    ":manual".into(),
                    s(if patch.by_operator {
                        "operator"
                    } else {
                        "manual"
                    }),
                );
            }
            None => {}
        }
        let mut condition =
            "attribute_exists(key_hash) AND attribute_not_exists(revoked_ms)".to_string();
        if !patch.by_operator {
            condition.push_str(
                " AND (attribute_not_exists(disabled_reason) OR disabled_reason = :byuser)",
            );
            values.insert(":byuser".into(), s("manual"));
        }
        if let Some(limit) = patch.rate_limit_per_min {
            set.push("rate_limit_per_min = :rl".into());
            values.insert(":rl".into(), n(limit));
        }
        match &patch.ip_allowlist {
            Some(list) if list.is_empty() => remove.push("ip_allowlist"),
            Some(list) => {
                set.push("ip_allowlist = :ips".into());
                values.insert(
                    ":ips".into(),
                    AttributeValue::L(list.iter().map(s).collect()),
                );
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
            .table_name(&self.tables().api_keys)
            .key("key_hash", s(key_hash))
            .update_expression(expr)
            .condition_expression(condition)
            .set_expression_attribute_names(
                patch
                    .name
                    .as_ref()
                    .map(|_| HashMap::from([("#name".to_string(), "name".to_string())])),
            )
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated(res)
    }

    /// Revokes a key for good. `None` if it was already revoked or is gone.
    pub async fn revoke_key(
        &self,
        key_hash: &str,
        now_ms: i64,
    ) -> Result<Option<ApiKeyRecord>, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().api_keys)
            .key("key_hash", s(key_hash))
            .update_expression("SET revoked_ms = :now, enabled = :f, updated_ms = :now")
            .condition_expression("attribute_exists(key_hash) AND attribute_not_exists(revoked_ms)")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated(res)
    }

    /// Throttles a key unless a throttle is already in force. True when this call did it.
    pub async fn throttle_key(&self, key_hash: &str, t: &Throttle) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().api_keys)
            .key("key_hash", s(key_hash))
            .update_expression("SET throttle = :t")
            .condition_expression(
                "attribute_exists(key_hash) AND (attribute_not_exists(throttle) OR throttle.until_ms < :now)",
            )
            .expression_attribute_values(":t", AttributeValue::M(to_item(t)?))
            .expression_attribute_values(":now", n(t.since_ms))
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    pub async fn lift_throttle(&self, key_hash: &str) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().api_keys)
            .key("key_hash", s(key_hash))
            .update_expression("REMOVE throttle")
            .condition_expression("attribute_exists(throttle)")
            .send()
            .await;
        applied(res, "UpdateItem")
    }

    /// Termination and reinstatement: disables the account's enabled keys with `reason`, or
    /// re-enables the ones disabled for `reason` (a revoked key stays revoked).
    pub async fn set_keys_for_account(
        &self,
        account_id: &str,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let keys = self
            .list_keys(account_id)
            .await?
            .into_iter()
            .map(|k| HashMap::from([("key_hash".to_string(), s(k.key_hash))]))
            .collect();
        let t = Toggle {
            table: &self.tables().api_keys,
            enable_condition: "disabled_reason = :r AND attribute_not_exists(revoked_ms)",
            enable: "SET enabled = :on, updated_ms = :now REMOVE disabled_reason",
            disable: "SET enabled = :off, disabled_reason = :r, updated_ms = :now",
        };
        self.toggle_all(&t, keys, enable, reason, now_ms).await
    }

    /// The same for webhook endpoints.
    pub async fn set_endpoints_for_account(
        &self,
        account_id: &str,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let endpoints = self
            .list_endpoints(account_id)
            .await?
            .into_iter()
            .map(|e| {
                HashMap::from([
                    ("account_id".to_string(), s(account_id)),
                    ("endpoint_id".to_string(), s(e.endpoint_id)),
                ])
            })
            .collect();
        let t = Toggle {
            table: &self.tables().webhook_endpoints,
            enable_condition: "disabled_reason = :r",
            enable: "SET enabled = :on, updated_ms = :now REMOVE disabled_reason, disabled_ms",
            disable:
                "SET enabled = :off, disabled_reason = :r, disabled_ms = :now, updated_ms = :now",
        };
        self.toggle_all(&t, endpoints, enable, reason, now_ms).await
    }

    /// Disables every enabled item (with `reason`) or re-enables those disabled for
    /// `reason`; returns how many changed.
    async fn toggle_all(
        &self,
        t: &Toggle<'_>,
        keys: Vec<Item>,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> Result<usize, StoreError> {
        let (condition, expr) = if enable {
            (t.enable_condition, t.enable)
        } else {
            ("enabled = :on", t.disable)
        };
        let mut changed = 0;
        for key in keys {
            let mut u = self
                .ddb
                .update_item()
                .table_name(t.table)
                .set_key(Some(key))
                .update_expression(expr)
                .condition_expression(condition)
                .expression_attribute_values(":on", AttributeValue::Bool(true))
                .expression_attribute_values(":r", s(reason))
                .expression_attribute_values(":now", n(now_ms));
            if !enable {
                u = u.expression_attribute_values(":off", AttributeValue::Bool(false));
            }
            if applied(u.send().await, "UpdateItem")? {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Changes an account's retention and concurrency; `None` leaves a field.
    pub async fn change_account_terms(
        &self,
        account_id: &str,
        retention_days: Option<u32>,
        max_concurrency: Option<u32>,
    ) -> Result<Option<super::records::AccountRecord>, StoreError> {
        let mut set = Vec::new();
        let mut u = self
            .ddb
            .update_item()
            .table_name(&self.tables().accounts)
            .key("account_id", s(account_id))
            .condition_expression("attribute_exists(account_id)")
            .return_values(ReturnValue::AllNew);
        if let Some(r) = retention_days {
            set.push("retention_days = :r");
            u = u.expression_attribute_values(":r", n(r));
        }
        if let Some(m) = max_concurrency {
            set.push("max_concurrency = :m");
            u = u.expression_attribute_values(":m", n(m));
        }
        if set.is_empty() {
            return self.get_account(account_id).await;
        }
        updated(
            u.update_expression(format!("SET {}", set.join(", ")))
                .send()
                .await,
        )
    }

    /// Sets an account's status (`active`/`terminated`); false if it already had it.
    pub async fn set_account_status(
        &self,
        account_id: &str,
        status: &str,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.tables().accounts)
            .key("account_id", s(account_id))
            .update_expression("SET #status = :s")
            .condition_expression("attribute_exists(account_id) AND #status <> :s")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":s", s(status))
            .send()
            .await;
        applied(res, "UpdateItem")
    }
}
