//! Access tables: ApiKeys (`key_hash`; GSI `by_account`), RateLimits (`pk`: per-account
//! windows `a#{account}#{minute}` holding each key's counts too, blocks `block#{addr}`, the
//! operator's exemptions from blocks `block_exemptions`)
//! and EnterpriseApiUsage (`account_id`, `usage_id` = `{ms:013}#{id}`).

use super::{
    account_item, applied, dynamo_err, from_item, n, num, s, to_item, updated, Dynamo, Item, Query,
};
use crate::domain::access::{KeyMinute, WINDOW_MS};
use crate::ports::access::{
    Admission, BlockExemption, Caps, Exemptions, IpBlock, KeyPatch, MinuteErrors, UsageFilter,
    WindowCounts,
};
use crate::ports::records::{AccountRecord, ApiKeyRecord, SessionRecord, Throttle, UsageRecord};
use crate::ports::{
    Keys, Listed, PageToken, PortResult, RateWindows, Sessions, Slice, TimeRange, Usage,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use std::collections::HashMap;

/// One account's minute: its counts (`n`, `ce`, `pr`) and each key's (`n_{key}`, ...).
pub(super) fn account_window(account_id: &str, window_start: i64) -> String {
    format!("a#{account_id}#{window_start}")
}

/// Window items outlive their minute a little: the next minute reads them as "previous".
/// Set only by the item's first write (`if_not_exists`): a minute in which the account got a
/// 5xx is kept longer for the SLA report (`Sla::add_server_error`), and later requests of
/// the same minute must not shorten that.
fn window_expiry(window_start: i64) -> i64 {
    (window_start + 3 * WINDOW_MS) / 1_000
}

fn hash_key(key_hash: &str) -> Item {
    HashMap::from([("key_hash".to_string(), s(key_hash))])
}

#[async_trait]
impl Sessions for Dynamo {
    async fn create(&self, rec: &SessionRecord) -> PortResult<()> {
        self.ddb
            .put_item()
            .table_name(&self.t.console_sessions)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(session_hash)")
            .send()
            .await
            .map_err(|e| dynamo_err("PutItem", e))?;
        Ok(())
    }

    async fn get(&self, session_hash: &str) -> PortResult<Option<SessionRecord>> {
        let key = HashMap::from([("session_hash".to_string(), s(session_hash))]);
        Dynamo::get(self, &self.t.console_sessions, key).await
    }

    async fn end(&self, session_hash: &str, now_ms: i64) -> PortResult<bool> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.console_sessions)
            .key("session_hash", s(session_hash))
            .update_expression("SET ended_ms = :now")
            .condition_expression(
                "attribute_exists(session_hash) AND attribute_not_exists(ended_ms)",
            )
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        applied(res, "UpdateItem")
    }
}

#[async_trait]
impl Keys for Dynamo {
    async fn get(&self, key_hash: &str) -> PortResult<Option<ApiKeyRecord>> {
        Dynamo::get(self, &self.t.api_keys, hash_key(key_hash)).await
    }

    async fn get_with_account(
        &self,
        key_hash: &str,
        account_id: &str,
    ) -> PortResult<(Option<ApiKeyRecord>, Option<AccountRecord>)> {
        let mut got = self
            .batch_get_tables(vec![
                (self.t.api_keys.as_str(), vec![hash_key(key_hash)]),
                (self.t.accounts.as_str(), vec![account_item(account_id)]),
            ])
            .await?;
        let mut one = |table: &str| got.remove(table).and_then(|mut v| v.pop());
        let key = one(&self.t.api_keys).map(from_item).transpose()?;
        let account = one(&self.t.accounts).map(from_item).transpose()?;
        Ok((key, account))
    }

    async fn put(&self, rec: &ApiKeyRecord) -> PortResult<()> {
        self.ddb
            .put_item()
            .table_name(&self.t.api_keys)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(key_hash)")
            .send()
            .await
            .map_err(|e| dynamo_err("PutItem", e))?;
        Ok(())
    }

    async fn list(&self, account_id: &str) -> PortResult<Vec<ApiKeyRecord>> {
        // A global index: eventually consistent by nature.
        let q = Query::new(&self.t.api_keys, "account_id = :a")
            .index("by_account", false)
            .value(":a", s(account_id));
        self.query_all(&q).await
    }

    async fn find(&self, account_id: &str, key_id: &str) -> PortResult<Option<ApiKeyRecord>> {
        let q = Query::new(&self.t.api_keys, "account_id = :a AND key_id = :k")
            .index("by_account", false)
            .value(":a", s(account_id))
            .value(":k", s(key_id));
        let (items, _) = self.query_page(&q, None, None).await?;
        // The index is eventually consistent: read the item itself for its current state.
        match items.into_iter().next() {
            Some(item) => {
                let rec: ApiKeyRecord = from_item(item)?;
                Keys::get(self, &rec.key_hash).await
            }
            None => Ok(None),
        }
    }

    async fn patch(
        &self,
        key_hash: &str,
        patch: &KeyPatch,
        now_ms: i64,
    ) -> PortResult<Option<ApiKeyRecord>> {
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
                let by = if patch.by_operator {
                    "operator"
                } else {
                    "manual"
                };
                values.insert(":manual".into(), s(by));
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
            .table_name(&self.t.api_keys)
            .set_key(Some(hash_key(key_hash)))
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

    async fn revoke(&self, key_hash: &str, now_ms: i64) -> PortResult<Option<ApiKeyRecord>> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.api_keys)
            .set_key(Some(hash_key(key_hash)))
            .update_expression("SET revoked_ms = :now, enabled = :f, updated_ms = :now")
            .condition_expression("attribute_exists(key_hash) AND attribute_not_exists(revoked_ms)")
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":f", AttributeValue::Bool(false))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        updated(res)
    }

    async fn throttle(&self, key_hash: &str, t: &Throttle) -> PortResult<bool> {
        self.set_throttle(&self.t.api_keys, hash_key(key_hash), t)
            .await
    }

    async fn lift_throttle(&self, key_hash: &str) -> PortResult<bool> {
        self.remove_throttle(&self.t.api_keys, hash_key(key_hash))
            .await
    }

    async fn set_all_for_account(
        &self,
        account_id: &str,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<usize> {
        let keys = Keys::list(self, account_id)
            .await?
            .into_iter()
            .map(|k| hash_key(&k.key_hash))
            .collect();
        let t = Toggle {
            table: &self.t.api_keys,
            enable_condition: "disabled_reason = :r AND attribute_not_exists(revoked_ms)",
            enable: "SET enabled = :on, updated_ms = :now REMOVE disabled_reason",
            disable: "SET enabled = :off, disabled_reason = :r, updated_ms = :now",
        };
        self.toggle_all(&t, keys, enable, reason, now_ms).await
    }
}

/// How termination disables, and reinstatement re-enables, the items of one table (keys,
/// webhook endpoints).
pub(super) struct Toggle<'a> {
    pub table: &'a str,
    pub enable_condition: &'static str,
    pub enable: &'static str,
    pub disable: &'static str,
}

impl Dynamo {
    /// Disables every enabled item (with `reason`) or re-enables those disabled for
    /// `reason`; returns how many changed.
    pub(super) async fn toggle_all(
        &self,
        t: &Toggle<'_>,
        keys: Vec<Item>,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<usize> {
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
}

#[async_trait]
impl RateWindows for Dynamo {
    async fn admit(
        &self,
        account_id: &str,
        key_id: &str,
        window_start: i64,
        caps: Caps,
    ) -> PortResult<Admission> {
        if caps.key == 0 {
            return Ok(Admission::KeyFull(None));
        }
        if caps.account == 0 {
            return Ok(Admission::AccountFull(None));
        }
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.rate_limits)
            .key("pk", s(account_window(account_id, window_start)))
            .update_expression("ADD n :one, #kn :one SET expires_at = if_not_exists(expires_at, :exp)")
            .condition_expression(
                "(attribute_not_exists(#kn) OR #kn < :kcap) AND (attribute_not_exists(n) OR n < :acap)",
            )
            .expression_attribute_names("#kn", format!("n_{key_id}"))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":kcap", n(caps.key))
            .expression_attribute_values(":acap", n(caps.account))
            .expression_attribute_values(":exp", n(window_expiry(window_start)))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match res {
            Ok(out) => {
                let a = out.attributes.unwrap_or_default();
                Ok(Admission::Admitted(WindowCounts {
                    key: num(&a, &format!("n_{key_id}")),
                    account: num(&a, "n"),
                }))
            }
            Err(e) => {
                let old = match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        c.item.clone().unwrap_or_default()
                    }
                    _ => return Err(dynamo_err("UpdateItem", e)),
                };
                // Whichever count stood at its cap refused it; the key's is reported first. The
                // old item came back with the refusal: the counts cost no second read.
                let counts = WindowCounts {
                    key: num(&old, &format!("n_{key_id}")),
                    account: num(&old, "n"),
                };
                if counts.key >= caps.key {
                    Ok(Admission::KeyFull(Some(counts)))
                } else {
                    Ok(Admission::AccountFull(Some(counts)))
                }
            }
        }
    }

    async fn count(
        &self,
        account_id: &str,
        key_id: &str,
        window_start: i64,
    ) -> PortResult<WindowCounts> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.t.rate_limits)
            .key("pk", s(account_window(account_id, window_start)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?;
        let a = out.item.unwrap_or_default();
        Ok(WindowCounts {
            key: num(&a, &format!("n_{key_id}")),
            account: num(&a, "n"),
        })
    }

    async fn count_errors(
        &self,
        account_id: &str,
        key_id: &str,
        window_start: i64,
        client_error: bool,
        payment_required: bool,
    ) -> PortResult<MinuteErrors> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.t.rate_limits)
            .key("pk", s(account_window(account_id, window_start)))
            .update_expression("ADD ce :ce, pr :pr, #kce :ce, #kpr :pr SET expires_at = if_not_exists(expires_at, :exp)")
            .expression_attribute_names("#kce", format!("ce_{key_id}"))
            .expression_attribute_names("#kpr", format!("pr_{key_id}"))
            .expression_attribute_values(":ce", n(u8::from(client_error)))
            .expression_attribute_values(":pr", n(u8::from(payment_required)))
            .expression_attribute_values(":exp", n(window_expiry(window_start)))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| dynamo_err("UpdateItem", e))?;
        let a = out.attributes.unwrap_or_default();
        Ok(MinuteErrors {
            key: KeyMinute {
                requests: num(&a, &format!("n_{key_id}")),
                client_errors: num(&a, &format!("ce_{key_id}")),
                payment_required: num(&a, &format!("pr_{key_id}")),
            },
            account: KeyMinute {
                requests: num(&a, "n"),
                client_errors: num(&a, "ce"),
                payment_required: num(&a, "pr"),
            },
        })
    }

    async fn block_ip(
        &self,
        ip: &str,
        reason: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.t.rate_limits)
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

    async fn ip_block(&self, ip: &str, now_ms: i64) -> PortResult<Option<IpBlock>> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.t.rate_limits)
            .key("pk", s(format!("block#{ip}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?;
        Ok(out.item.and_then(|i| {
            let until_ms = i64::try_from(num(&i, "until_ms")).unwrap_or(0);
            let reason = match i.get("reason") {
                Some(AttributeValue::S(r)) => r.clone(),
                _ => String::new(),
            };
            (until_ms > now_ms).then_some(IpBlock { until_ms, reason })
        }))
    }

    async fn take_share(
        &self,
        pool: &str,
        holder: &str,
        cap: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<Option<u32>> {
        if cap == 0 {
            return Ok(None);
        }
        // One item per pool, one attribute per share: `s{k}` = {h: holder, u: lease until}.
        // Start at a slot picked by the holder (spread over the pool); a refusal brings the
        // item back, which says which share is free, so a take costs one write, two when it
        // guessed wrong, and a full pool answers in one.
        let spread = holder
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        let mut k = spread % cap;
        // Each refusal means another holder took a share since the item was read, so this
        // ends within `cap` refusals unless shares are given back meanwhile.
        for _ in 0..cap + 3 {
            let res = self
                .ddb
                .update_item()
                .table_name(&self.t.rate_limits)
                .key("pk", s(format!("share#{pool}")))
                .update_expression("SET #s = :v, expires_at = :exp")
                .condition_expression("attribute_not_exists(#s) OR #s.u < :now")
                .expression_attribute_names("#s", format!("s{k}"))
                .expression_attribute_values(
                    ":v",
                    AttributeValue::M(HashMap::from([
                        ("h".to_string(), s(holder)),
                        ("u".to_string(), n(until_ms)),
                    ])),
                )
                .expression_attribute_values(":now", n(now_ms))
                .expression_attribute_values(":exp", n(until_ms / 1_000 + 3_600))
                .return_values_on_condition_check_failure(
                    aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let old = match res {
                Ok(_) => return Ok(Some(k)),
                Err(e) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        c.item.clone().unwrap_or_default()
                    }
                    _ => return Err(dynamo_err("UpdateItem", e)),
                },
            };
            let held = |k: u32| match old.get(&format!("s{k}")) {
                Some(AttributeValue::M(m)) => {
                    i64::try_from(num(m, "u")).unwrap_or(i64::MAX) >= now_ms
                }
                _ => false,
            };
            let free: Vec<u32> = (0..cap).filter(|k| !held(*k)).collect();
            if free.is_empty() {
                return Ok(None);
            }
            // Concurrent takers that read the same item pick different free shares.
            k = free[spread as usize % free.len()];
        }
        // Lost every race: as good as full.
        Ok(None)
    }

    async fn give_back_share(&self, pool: &str, slot: u32, holder: &str) -> PortResult<()> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.t.rate_limits)
            .key("pk", s(format!("share#{pool}")))
            .update_expression("REMOVE #s")
            .condition_expression("#s.h = :h")
            .expression_attribute_names("#s", format!("s{slot}"))
            .expression_attribute_values(":h", s(holder))
            .send()
            .await;
        // Not held by us any more (the lease ran out and someone took it): nothing to give.
        applied(res, "UpdateItem").map(|_| ())
    }

    async fn unblock_ip(&self, ip: &str) -> PortResult<bool> {
        let out = self
            .ddb
            .delete_item()
            .table_name(&self.t.rate_limits)
            .key("pk", s(format!("block#{ip}")))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| dynamo_err("DeleteItem", e))?;
        Ok(out.attributes.is_some())
    }

    async fn exemptions(&self) -> PortResult<Exemptions> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.t.rate_limits)
            .key("pk", s(EXEMPTIONS))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_err("GetItem", e))?;
        let Some(item) = out.item else {
            return Ok(Exemptions::default());
        };
        let list = match item.get("list") {
            Some(AttributeValue::S(json)) => serde_json::from_str(json)
                .map_err(|e| crate::ports::StoreError::Corrupt(e.to_string()))?,
            _ => Vec::new(),
        };
        Ok(Exemptions {
            version: num(&item, "version"),
            list,
        })
    }

    async fn set_exemptions(
        &self,
        expected_version: u64,
        list: &[BlockExemption],
    ) -> PortResult<bool> {
        let json = serde_json::to_string(list)
            .map_err(|e| crate::ports::StoreError::Corrupt(e.to_string()))?;
        let put = self
            .ddb
            .put_item()
            .table_name(&self.t.rate_limits)
            .item("pk", s(EXEMPTIONS))
            .item("version", n(expected_version + 1))
            .item("list", s(json));
        let put = if expected_version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(":v", n(expected_version))
        };
        applied(put.send().await, "PutItem")
    }
}

/// The one item holding the operator's exemptions from address blocks (a JSON list: short).
const EXEMPTIONS: &str = "block_exemptions";

fn usage_range<'a>(table: &'a str, account_id: &str, range: TimeRange) -> Query<'a> {
    Query::new(table, "account_id = :a AND usage_id BETWEEN :lo AND :hi")
        .value(":a", s(account_id))
        .value(":lo", s(format!("{:013}", range.from_ms.max(0))))
        .value(
            ":hi",
            s(format!("{:013}~", range.to_ms.clamp(0, 9_999_999_999_999))),
        )
}

#[async_trait]
impl Usage for Dynamo {
    async fn put(&self, rec: &UsageRecord) -> PortResult<()> {
        let res = self
            .ddb
            .put_item()
            .table_name(&self.t.api_usage)
            .set_item(Some(to_item(rec)?))
            .condition_expression("attribute_not_exists(usage_id) OR kind = :anomaly")
            .expression_attribute_values(":anomaly", s("anomaly"))
            .send()
            .await;
        if !applied(res, "PutItem")? {
            return Err(crate::ports::StoreError::Refused {
                op: "PutItem",
                detail: format!("usage record {} exists", rec.usage_id),
            });
        }
        Ok(())
    }

    async fn list(
        &self,
        account_id: &str,
        range: TimeRange,
        filter: &UsageFilter,
        limit: usize,
        before: Option<String>,
    ) -> PortResult<Listed<UsageRecord>> {
        let mut q = usage_range(&self.t.api_usage, account_id, range).newest_first();
        let mut clauses = Vec::new();
        if let Some(k) = &filter.key_id {
            clauses.push("key_id = :fk");
            q = q.value(":fk", s(k));
        }
        if let Some(r) = &filter.route {
            clauses.push("#route = :fr");
            q = q.name("#route", "route").value(":fr", s(r));
        }
        if let Some(st) = filter.status {
            clauses.push("#status = :fs");
            q = q.name("#status", "status").value(":fs", n(st));
        }
        if let Some(k) = &filter.kind {
            clauses.push("#kind = :fd");
            q = q.name("#kind", "kind").value(":fd", s(k));
        }
        if !clauses.is_empty() {
            q = q.filter(clauses.join(" AND "));
        }
        let start = before.map(|b| {
            HashMap::from([
                ("account_id".to_string(), s(account_id)),
                ("usage_id".to_string(), s(b)),
            ])
        });
        self.query_list(&q, limit, start).await
    }

    async fn page(
        &self,
        account_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<UsageRecord>> {
        let q = usage_range(&self.t.api_usage, account_id, range);
        self.query_slice(&q, after).await
    }
}
