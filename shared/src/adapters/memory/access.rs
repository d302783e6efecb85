//! Keys, rate windows, address blocks and the usage log, in memory.

use super::{listed, refused, slice, Memory};
use crate::domain::access::KeyMinute;
use crate::ports::access::{
    Admission, BlockExemption, Caps, Exemptions, IpBlock, KeyPatch, MinuteErrors, UsageFilter,
    WindowCounts,
};
use crate::ports::records::{AccountRecord, ApiKeyRecord, SessionRecord, Throttle, UsageRecord};
use crate::ports::{
    Keys, Listed, PageToken, PortResult, RateWindows, Sessions, Slice, TimeRange, Usage,
};
use async_trait::async_trait;

/// One rate-limit window item: admitted requests, client errors, 402s (the attributes `n`,
/// `ce`, `pr` of the DynamoDB item).
#[derive(Clone, Debug, Default)]
pub(crate) struct Window {
    n: Option<u64>,
    ce: u64,
    pr: u64,
    /// 5xx answers (`se`), counted for the SLA.
    se: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Block {
    until_ms: i64,
    reason: String,
}

/// An account's minute and one key's share of it (one DynamoDB item; two entries here,
/// changed together under the lock).
fn windows(account_id: &str, key_id: &str, window_start: i64) -> (String, String) {
    let a = format!("a#{account_id}#{window_start}");
    let k = format!("{a}#{key_id}");
    (a, k)
}

impl super::State {
    pub(crate) fn add_window_server_error(&mut self, account_id: &str, minute_ms: i64) {
        let k = format!("a#{account_id}#{minute_ms}");
        let mut w = self.windows.get(&k).cloned().unwrap_or_default();
        w.se += 1;
        self.windows.put(k, w);
    }

    pub(crate) fn window_counts(
        &self,
        account_id: &str,
        minute_ms: i64,
    ) -> Option<crate::domain::sla::MinuteCounts> {
        let w = self.windows.get(&format!("a#{account_id}#{minute_ms}"))?;
        Some(crate::domain::sla::MinuteCounts {
            admitted: w.n.unwrap_or(0),
            client_errors: w.ce,
            server_errors: w.se,
        })
    }
}

impl Memory {
    /// An account's keys as the `by_account` index shows them (eventually consistent).
    fn indexed_keys(&self, account_id: &str) -> Vec<ApiKeyRecord> {
        let view = self.lock().keys.view(self.stale());
        let mut keys: Vec<ApiKeyRecord> = view
            .into_values()
            .filter(|k| k.account_id == account_id)
            .collect();
        keys.sort_by(|a, b| a.key_id.cmp(&b.key_id));
        keys
    }
}

#[async_trait]
impl Keys for Memory {
    async fn get(&self, key_hash: &str) -> PortResult<Option<ApiKeyRecord>> {
        self.pause().await;
        Ok(self.lock().keys.get(&key_hash.to_string()).cloned())
    }

    async fn get_with_account(
        &self,
        key_hash: &str,
        account_id: &str,
    ) -> PortResult<(Option<ApiKeyRecord>, Option<AccountRecord>)> {
        self.pause().await;
        let st = self.lock();
        Ok((
            st.keys.get(&key_hash.to_string()).cloned(),
            st.accounts.get(&account_id.to_string()).cloned(),
        ))
    }

    async fn put(&self, rec: &ApiKeyRecord) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        if st.keys.contains(&rec.key_hash) {
            return Err(refused("PutItem", "the key hash exists"));
        }
        st.keys.put(rec.key_hash.clone(), rec.clone());
        Ok(())
    }

    async fn list(&self, account_id: &str) -> PortResult<Vec<ApiKeyRecord>> {
        self.pause().await;
        Ok(self.indexed_keys(account_id))
    }

    async fn find(&self, account_id: &str, key_id: &str) -> PortResult<Option<ApiKeyRecord>> {
        self.pause().await;
        let found = self
            .indexed_keys(account_id)
            .into_iter()
            .find(|k| k.key_id == key_id);
        // The index may lag: read the item itself for its current state.
        match found {
            Some(k) => Keys::get(self, &k.key_hash).await,
            None => Ok(None),
        }
    }

    async fn patch(
        &self,
        key_hash: &str,
        patch: &KeyPatch,
        now_ms: i64,
    ) -> PortResult<Option<ApiKeyRecord>> {
        self.pause().await;
        let mut st = self.lock();
        let k = key_hash.to_string();
        let allowed = st.keys.get(&k).is_some_and(|key| {
            key.revoked_ms.is_none()
                && (patch.by_operator
                    || key.disabled_reason.is_none()
                    || key.disabled_reason.as_deref() == Some("manual"))
        });
        if !allowed {
            return Ok(None);
        }
        Ok(st.keys.update(&k, |key| {
            key.updated_ms = now_ms;
            if let Some(name) = &patch.name {
                key.name = name.clone();
            }
            match patch.enabled {
                Some(true) => {
                    key.enabled = true;
                    key.disabled_reason = None;
                }
                Some(false) => {
                    key.enabled = false;
                    let by = if patch.by_operator {
                        "operator"
                    } else {
                        "manual"
                    };
                    key.disabled_reason = Some(by.to_string());
                }
                None => {}
            }
            if let Some(limit) = patch.rate_limit_per_min {
                key.rate_limit_per_min = Some(limit);
            }
            if let Some(list) = &patch.ip_allowlist {
                key.ip_allowlist = list.clone();
            }
            key.clone()
        }))
    }

    async fn revoke(&self, key_hash: &str, now_ms: i64) -> PortResult<Option<ApiKeyRecord>> {
        self.pause().await;
        let mut st = self.lock();
        let k = key_hash.to_string();
        if st.keys.get(&k).is_none_or(|key| key.revoked_ms.is_some()) {
            return Ok(None);
        }
        Ok(st.keys.update(&k, |key| {
            key.revoked_ms = Some(now_ms);
            key.enabled = false;
            key.updated_ms = now_ms;
            key.clone()
        }))
    }

    async fn throttle(&self, key_hash: &str, t: &Throttle) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = key_hash.to_string();
        let free = st.keys.get(&k).is_some_and(|key| {
            key.throttle
                .as_ref()
                .is_none_or(|cur| cur.until_ms < t.since_ms)
        });
        if free {
            st.keys.update(&k, |key| key.throttle = Some(t.clone()));
        }
        Ok(free)
    }

    async fn lift_throttle(&self, key_hash: &str) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = key_hash.to_string();
        if st.keys.get(&k).is_none_or(|key| key.throttle.is_none()) {
            return Ok(false);
        }
        st.keys.update(&k, |key| key.throttle = None);
        Ok(true)
    }

    async fn set_all_for_account(
        &self,
        account_id: &str,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<usize> {
        self.pause().await;
        let listed = self.indexed_keys(account_id);
        let mut st = self.lock();
        let mut changed = 0;
        for k in listed {
            let holds = st.keys.get(&k.key_hash).is_some_and(|key| {
                if enable {
                    key.disabled_reason.as_deref() == Some(reason) && key.revoked_ms.is_none()
                } else {
                    key.enabled
                }
            });
            if !holds {
                continue;
            }
            st.keys.update(&k.key_hash, |key| {
                key.enabled = enable;
                key.updated_ms = now_ms;
                key.disabled_reason = (!enable).then(|| reason.to_string());
            });
            changed += 1;
        }
        Ok(changed)
    }
}

#[async_trait]
impl Sessions for Memory {
    async fn create(&self, rec: &SessionRecord) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        if st.sessions.contains(&rec.session_hash) {
            return Err(refused("PutItem", "the session exists"));
        }
        st.sessions.put(rec.session_hash.clone(), rec.clone());
        Ok(())
    }

    async fn get(&self, session_hash: &str) -> PortResult<Option<SessionRecord>> {
        self.pause().await;
        Ok(self.lock().sessions.get(&session_hash.to_string()).cloned())
    }

    async fn end(&self, session_hash: &str, now_ms: i64) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = session_hash.to_string();
        match st.sessions.get(&k).cloned() {
            Some(mut rec) if rec.ended_ms.is_none() => {
                rec.ended_ms = Some(now_ms);
                st.sessions.put(k, rec);
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl RateWindows for Memory {
    async fn admit(
        &self,
        account_id: &str,
        key_id: &str,
        window_start: i64,
        caps: Caps,
    ) -> PortResult<Admission> {
        self.pause().await;
        let mut st = self.lock();
        let (ak, kk) = windows(account_id, key_id, window_start);
        // As the adapter: a cap of zero refuses without reading.
        if caps.key == 0 {
            return Ok(Admission::KeyFull(None));
        }
        if caps.account == 0 {
            return Ok(Admission::AccountFull(None));
        }
        let a = st.windows.get(&ak).cloned().unwrap_or_default();
        let kw = st.windows.get(&kk).cloned().unwrap_or_default();
        let stood = WindowCounts {
            key: kw.n.unwrap_or(0),
            account: a.n.unwrap_or(0),
        };
        if stood.key >= caps.key {
            return Ok(Admission::KeyFull(Some(stood)));
        }
        if stood.account >= caps.account {
            return Ok(Admission::AccountFull(Some(stood)));
        }
        let counts = WindowCounts {
            key: kw.n.unwrap_or(0) + 1,
            account: a.n.unwrap_or(0) + 1,
        };
        st.windows.put(
            ak,
            Window {
                n: Some(counts.account),
                ..a
            },
        );
        st.windows.put(
            kk,
            Window {
                n: Some(counts.key),
                ..kw
            },
        );
        Ok(Admission::Admitted(counts))
    }

    async fn count(
        &self,
        account_id: &str,
        key_id: &str,
        window_start: i64,
    ) -> PortResult<WindowCounts> {
        self.pause().await;
        let st = self.lock();
        let (ak, kk) = windows(account_id, key_id, window_start);
        let n = |k: &String| st.windows.get(k).and_then(|w| w.n).unwrap_or(0);
        Ok(WindowCounts {
            key: n(&kk),
            account: n(&ak),
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
        self.pause().await;
        let mut st = self.lock();
        let (ak, kk) = windows(account_id, key_id, window_start);
        let mut minutes = [KeyMinute::default(); 2];
        for (i, k) in [ak, kk].into_iter().enumerate() {
            let mut w = st.windows.get(&k).cloned().unwrap_or_default();
            w.ce += u64::from(client_error);
            w.pr += u64::from(payment_required);
            minutes[i] = KeyMinute {
                requests: w.n.unwrap_or(0),
                client_errors: w.ce,
                payment_required: w.pr,
            };
            st.windows.put(k, w);
        }
        Ok(MinuteErrors {
            account: minutes[0],
            key: minutes[1],
        })
    }

    async fn block_ip(
        &self,
        ip: &str,
        reason: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = ip.to_string();
        if st.blocks.get(&k).is_some_and(|b| b.until_ms >= now_ms) {
            return Ok(false);
        }
        st.blocks.put(
            k,
            Block {
                until_ms,
                reason: reason.to_string(),
            },
        );
        Ok(true)
    }

    async fn ip_block(&self, ip: &str, now_ms: i64) -> PortResult<Option<IpBlock>> {
        self.pause().await;
        Ok(self
            .lock()
            .blocks
            .get(&ip.to_string())
            .filter(|b| b.until_ms > now_ms)
            .map(|b| IpBlock {
                until_ms: b.until_ms,
                reason: b.reason.clone(),
            }))
    }

    async fn unblock_ip(&self, ip: &str) -> PortResult<bool> {
        self.pause().await;
        Ok(self.lock().blocks.remove(&ip.to_string()).is_some())
    }

    async fn take_share(
        &self,
        pool: &str,
        holder: &str,
        cap: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<Option<u32>> {
        self.pause().await;
        let mut st = self.lock();
        let slots = st.shares.entry(pool.to_string()).or_default();
        let free = (0..cap).find(|k| slots.get(k).is_none_or(|(_, until)| *until < now_ms));
        if let Some(k) = free {
            slots.insert(k, (holder.to_string(), until_ms));
        }
        Ok(free)
    }

    async fn give_back_share(&self, pool: &str, slot: u32, holder: &str) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        if let Some(slots) = st.shares.get_mut(pool) {
            if slots.get(&slot).is_some_and(|(h, _)| h == holder) {
                slots.remove(&slot);
            }
        }
        Ok(())
    }

    async fn exemptions(&self) -> PortResult<Exemptions> {
        self.pause().await;
        Ok(self.lock().exemptions.clone())
    }

    async fn set_exemptions(
        &self,
        expected_version: u64,
        list: &[BlockExemption],
    ) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        if st.exemptions.version != expected_version {
            return Ok(false);
        }
        st.exemptions = Exemptions {
            version: expected_version + 1,
            list: list.to_vec(),
        };
        Ok(true)
    }
}

/// The sort-key bounds of a time range, as the DynamoDB adapter builds them.
fn usage_bounds(range: TimeRange) -> (String, String) {
    (
        format!("{:013}", range.from_ms.max(0)),
        format!("{:013}~", range.to_ms.clamp(0, 9_999_999_999_999)),
    )
}

#[async_trait]
impl Usage for Memory {
    async fn put(&self, rec: &UsageRecord) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        let k = (rec.account_id.clone(), rec.usage_id.clone());
        if st.usage.get(&k).is_some_and(|u| u.kind != "anomaly") {
            return Err(refused(
                "PutItem",
                format!("usage record {} exists", rec.usage_id),
            ));
        }
        st.usage.put(k, rec.clone());
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
        self.pause().await;
        let st = self.lock();
        let (lo, hi) = usage_bounds(range);
        let a = account_id.to_string();
        let items = st
            .usage
            .range((a.clone(), lo)..=(a, hi))
            .filter(|(k, _)| before.as_ref().is_none_or(|b| &k.1 < b))
            .rev()
            .map(|(_, u)| (filter.matches(u), u.clone()));
        let out = listed(items, limit);
        Ok(out)
    }

    async fn page(
        &self,
        account_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<UsageRecord>> {
        self.pause().await;
        let st = self.lock();
        let (lo, hi) = usage_bounds(range);
        let a = account_id.to_string();
        let items = st
            .usage
            .range((a.clone(), lo)..=(a, hi))
            .map(|(k, u)| (k.1.clone(), u.clone()));
        slice(items, after)
    }
}
