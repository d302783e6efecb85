//! Webhook endpoints, the event log, deliveries and exports, in memory.

use super::{listed, partition, slice, Memory};
use crate::ports::records::{
    AttemptLog, DeliveryRecord, DeliveryStatus, EndpointRecord, EventRecord, ExportRecord,
};
use crate::ports::store::ExportFinish;
use crate::ports::webhooks::{EndpointPatch, TimePos};
use crate::ports::{
    Deliveries, Endpoints, Events, Exports, Listed, PageToken, PortResult, Slice, TimeRange,
};
use async_trait::async_trait;

fn k2(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[async_trait]
impl Endpoints for Memory {
    async fn get(&self, account_id: &str, endpoint_id: &str) -> PortResult<Option<EndpointRecord>> {
        self.pause().await;
        Ok(self
            .lock()
            .endpoints
            .get(&k2(account_id, endpoint_id))
            .cloned())
    }

    async fn list(&self, account_id: &str) -> PortResult<Vec<EndpointRecord>> {
        self.pause().await;
        let st = self.lock();
        Ok(st
            .endpoints
            .range(partition(account_id))
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn patch(
        &self,
        account_id: &str,
        endpoint_id: &str,
        patch: &EndpointPatch,
        now_ms: i64,
    ) -> PortResult<Option<EndpointRecord>> {
        self.pause().await;
        Ok(self
            .lock()
            .endpoints
            .update(&k2(account_id, endpoint_id), |e| {
                e.updated_ms = now_ms;
                if let Some(url) = &patch.url {
                    e.url = url.clone();
                }
                if let Some(d) = &patch.description {
                    e.description = d.clone();
                }
                if let Some(t) = &patch.event_types {
                    e.event_types = t.clone();
                }
                match patch.enabled {
                    Some(true) => {
                        e.enabled = true;
                        // A customer re-enabling an endpoint starts its failure clock afresh.
                        e.disabled_reason = None;
                        e.disabled_ms = None;
                        e.failing_since_ms = None;
                    }
                    Some(false) => {
                        e.enabled = false;
                        e.disabled_reason = Some("manual".into());
                        e.disabled_ms = Some(now_ms);
                    }
                    None => {}
                }
                e.clone()
            }))
    }

    async fn delete(&self, account_id: &str, endpoint_id: &str) -> PortResult<bool> {
        self.pause().await;
        Ok(self
            .lock()
            .endpoints
            .remove(&k2(account_id, endpoint_id))
            .is_some())
    }

    async fn mark_failing(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now_ms: i64,
    ) -> PortResult<()> {
        self.pause().await;
        self.lock()
            .endpoints
            .update(&k2(account_id, endpoint_id), |e| {
                if e.failing_since_ms.is_none() {
                    e.failing_since_ms = Some(now_ms);
                }
            });
        Ok(())
    }

    async fn mark_healthy(
        &self,
        account_id: &str,
        endpoint_id: &str,
        now_ms: i64,
    ) -> PortResult<()> {
        self.pause().await;
        self.lock()
            .endpoints
            .update(&k2(account_id, endpoint_id), |e| {
                e.last_success_ms = Some(now_ms);
                e.failing_since_ms = None;
            });
        Ok(())
    }

    async fn disable(
        &self,
        account_id: &str,
        endpoint_id: &str,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<Option<EndpointRecord>> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(account_id, endpoint_id);
        if st.endpoints.get(&k).is_none_or(|e| !e.enabled) {
            return Ok(None);
        }
        Ok(st.endpoints.update(&k, |e| {
            e.enabled = false;
            e.disabled_reason = Some(reason.to_string());
            e.disabled_ms = Some(now_ms);
            e.updated_ms = now_ms;
            e.clone()
        }))
    }

    async fn set_all_for_account(
        &self,
        account_id: &str,
        enable: bool,
        reason: &str,
        now_ms: i64,
    ) -> PortResult<usize> {
        self.pause().await;
        let ids: Vec<String> = Endpoints::list(self, account_id)
            .await?
            .into_iter()
            .map(|e| e.endpoint_id)
            .collect();
        let mut st = self.lock();
        let mut changed = 0;
        for id in ids {
            let k = k2(account_id, &id);
            let holds = st.endpoints.get(&k).is_some_and(|e| {
                if enable {
                    e.disabled_reason.as_deref() == Some(reason)
                } else {
                    e.enabled
                }
            });
            if !holds {
                continue;
            }
            st.endpoints.update(&k, |e| {
                e.enabled = enable;
                e.updated_ms = now_ms;
                if enable {
                    e.disabled_reason = None;
                    e.disabled_ms = None;
                } else {
                    e.disabled_reason = Some(reason.to_string());
                    e.disabled_ms = Some(now_ms);
                }
            });
            changed += 1;
        }
        Ok(changed)
    }
}

#[async_trait]
impl Events for Memory {
    async fn put_once(&self, rec: &EventRecord) -> PortResult<EventRecord> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(&rec.account_id, &rec.event_id);
        if let Some(first) = st.events.get(&k) {
            return Ok(first.clone());
        }
        st.events.put(k, rec.clone());
        Ok(rec.clone())
    }

    async fn get(&self, account_id: &str, event_id: &str) -> PortResult<Option<EventRecord>> {
        self.pause().await;
        Ok(self.lock().events.get(&k2(account_id, event_id)).cloned())
    }

    async fn list(
        &self,
        account_id: &str,
        event_type: Option<&str>,
        limit: usize,
        before: Option<TimePos>,
    ) -> PortResult<Listed<EventRecord>> {
        self.pause().await;
        let st = self.lock();
        // The `by_time` index: (created_ms, event_id) order within the account.
        let mut items: Vec<&EventRecord> = st
            .events
            .range(partition(account_id))
            .map(|(_, e)| e)
            .filter(|e| {
                before
                    .as_ref()
                    .is_none_or(|(ms, id)| (e.created_ms, &e.event_id) < (*ms, id))
            })
            .collect();
        items.sort_by(|a, b| (b.created_ms, &b.event_id).cmp(&(a.created_ms, &a.event_id)));
        let items = items
            .into_iter()
            .map(|e| (event_type.is_none_or(|t| e.event_type == t), e.clone()));
        Ok(listed(items, limit))
    }
}

impl Memory {
    /// An endpoint's deliveries created within `range`, in `by_time` order (oldest first).
    fn deliveries_by_time(&self, endpoint_id: &str, range: TimeRange) -> Vec<DeliveryRecord> {
        let st = self.lock();
        let mut items: Vec<DeliveryRecord> = st
            .deliveries
            .range(partition(endpoint_id))
            .map(|(_, d)| d)
            .filter(|d| range.contains(d.created_ms))
            .cloned()
            .collect();
        items.sort_by(|a, b| (a.created_ms, &a.event_id).cmp(&(b.created_ms, &b.event_id)));
        items
    }
}

#[async_trait]
impl Deliveries for Memory {
    async fn create(&self, rec: &DeliveryRecord) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(&rec.endpoint_id, &rec.event_id);
        if st.deliveries.contains(&k) {
            return Ok(false);
        }
        st.deliveries.put(k, rec.clone());
        Ok(true)
    }

    async fn get(&self, endpoint_id: &str, event_id: &str) -> PortResult<Option<DeliveryRecord>> {
        self.pause().await;
        Ok(self
            .lock()
            .deliveries
            .get(&k2(endpoint_id, event_id))
            .cloned())
    }

    async fn claim(
        &self,
        endpoint_id: &str,
        event_id: &str,
        n: u32,
        now_ms: i64,
        until_ms: i64,
    ) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(endpoint_id, event_id);
        let prev = n.saturating_sub(1);
        let free = st.deliveries.get(&k).is_some_and(|d| {
            d.status == DeliveryStatus::Pending
                && d.recorded == prev
                && (d.attempts_made == prev || (d.attempts_made == n && d.claim_until_ms < now_ms))
        });
        if free {
            st.deliveries.update(&k, |d| {
                d.attempts_made = n;
                d.claim_until_ms = until_ms;
            });
        }
        Ok(free)
    }

    async fn record(
        &self,
        endpoint_id: &str,
        event_id: &str,
        log: &AttemptLog,
        status: DeliveryStatus,
        next_attempt_ms: Option<i64>,
    ) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(endpoint_id, event_id);
        let due = st
            .deliveries
            .get(&k)
            .is_some_and(|d| d.attempts_made == log.n && d.recorded == log.n.saturating_sub(1));
        if due {
            st.deliveries.update(&k, |d| {
                d.recorded = log.n;
                d.status = status;
                d.claim_until_ms = 0;
                d.attempts.push(log.clone());
                d.next_attempt_ms = next_attempt_ms;
            });
        }
        Ok(due)
    }

    async fn restart(
        &self,
        endpoint_id: &str,
        event_id: &str,
        now_ms: i64,
    ) -> PortResult<Option<u32>> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(endpoint_id, event_id);
        let finished = st.deliveries.get(&k).is_some_and(|d| {
            d.status != DeliveryStatus::Pending
                && d.attempts_made < crate::domain::webhook::MAX_ATTEMPTS_PER_DELIVERY
        });
        if !finished {
            return Ok(None);
        }
        Ok(st.deliveries.update(&k, |d| {
            d.status = DeliveryStatus::Pending;
            d.schedule_base = d.attempts_made;
            d.next_attempt_ms = Some(now_ms);
            d.attempts_made + 1
        }))
    }

    async fn list(
        &self,
        endpoint_id: &str,
        range: TimeRange,
        status: Option<DeliveryStatus>,
        limit: usize,
        before: Option<TimePos>,
    ) -> PortResult<Listed<DeliveryRecord>> {
        self.pause().await;
        let items = self
            .deliveries_by_time(endpoint_id, range)
            .into_iter()
            .filter(|d| {
                before
                    .as_ref()
                    .is_none_or(|(ms, id)| (d.created_ms, &d.event_id) < (*ms, id))
            })
            .rev()
            .map(|d| (status.is_none_or(|s| d.status == s), d));
        Ok(listed(items, limit))
    }

    async fn page(
        &self,
        endpoint_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<DeliveryRecord>> {
        self.pause().await;
        let items = self
            .deliveries_by_time(endpoint_id, range)
            .into_iter()
            .map(|d| ((d.created_ms, d.event_id.clone()), d));
        slice(items, after)
    }
}

#[async_trait]
impl Exports for Memory {
    async fn get(&self, account_id: &str, export_id: &str) -> PortResult<Option<ExportRecord>> {
        self.pause().await;
        Ok(self.lock().exports.get(&k2(account_id, export_id)).cloned())
    }

    async fn list(
        &self,
        account_id: &str,
        limit: usize,
        before: Option<String>,
    ) -> PortResult<Listed<ExportRecord>> {
        self.pause().await;
        let st = self.lock();
        let items = st
            .exports
            .range(partition(account_id))
            .filter(|(k, _)| before.as_ref().is_none_or(|b| &k.1 < b))
            .rev()
            .map(|(_, x)| (true, x.clone()));
        let out = listed(items, limit);
        Ok(out)
    }

    async fn nudge(&self, rec: &ExportRecord, now_ms: i64, gap_ms: i64) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(&rec.account_id, &rec.export_id);
        let due = st.exports.get(&k).is_some_and(|x| {
            x.status == "queued" && x.nudged_ms.is_none_or(|t| t < now_ms - gap_ms)
        });
        if due {
            st.exports.update(&k, |x| x.nudged_ms = Some(now_ms));
        }
        Ok(due)
    }

    async fn start_run(
        &self,
        rec: &ExportRecord,
        run: u32,
        upload_id: &str,
        now_ms: i64,
    ) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(&rec.account_id, &rec.export_id);
        let free = st
            .exports
            .get(&k)
            .is_some_and(|x| x.status != "completed" && x.run == rec.run);
        if free {
            st.exports.update(&k, |x| {
                x.status = "running".into();
                x.run = run;
                x.upload_id = Some(upload_id.to_string());
                x.rows_written = 0;
                x.bytes = 0;
                x.run_started_ms = Some(now_ms);
            });
        }
        Ok(free)
    }

    async fn progress(
        &self,
        rec: &ExportRecord,
        run: u32,
        rows: u64,
        bytes: u64,
    ) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(&rec.account_id, &rec.export_id);
        let ours = st
            .exports
            .get(&k)
            .is_some_and(|x| x.run == run && x.status == "running");
        if ours {
            st.exports.update(&k, |x| {
                x.rows_written = rows;
                x.bytes = bytes;
            });
        }
        Ok(ours)
    }

    async fn finish(&self, rec: &ExportRecord, run: u32, f: &ExportFinish) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = k2(&rec.account_id, &rec.export_id);
        let ours = st
            .exports
            .get(&k)
            .is_some_and(|x| x.run == run && x.status == "running");
        if ours {
            st.exports.update(&k, |x| {
                x.status = f.status.to_string();
                x.rows_written = f.rows;
                x.bytes = f.bytes;
                x.completed_ms = Some(f.now_ms);
                x.peak_buffer_bytes = f.peak_buffer;
                if let Some(h) = &f.sha256 {
                    x.sha256 = Some(h.clone());
                }
                if let Some(e) = &f.error {
                    x.error = Some(e.clone());
                }
            });
        }
        Ok(ours)
    }
}
