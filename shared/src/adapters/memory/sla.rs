//! The SLA measurements in memory: the same adds and reads as the DynamoDB adapter.

use super::Memory;
use crate::domain::pricing::Model;
use crate::domain::sla::{EndCount, MinuteCounts, TaskClass};
use crate::ports::sla::{Incident, ProbeMonth, Sla, SlaCloseRecord, SlaMonth, TaskEnd};
use crate::ports::PortResult;
use async_trait::async_trait;
use std::collections::BTreeMap;

/// Platform failures and incidents.
#[derive(Clone, Debug, Default)]
pub(crate) struct Incidents {
    /// minute -> account -> platform failures.
    failures: BTreeMap<i64, BTreeMap<String, u64>>,
    open: Option<Incident>,
    closed: Vec<Incident>,
}

/// The probe's month: the minutes counted ok (up to `last_ok`), the failed ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct Probes {
    month: ProbeMonth,
    last_ok: Option<i64>,
}

#[async_trait]
impl Sla for Memory {
    async fn add_tasks(&self, ends: &[TaskEnd]) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        for end in ends {
            let m = st
                .sla_months
                .entry((end.account_id.clone(), end.month.clone()))
                .or_default();
            add_end(m, end.model, &end.class);
        }
        Ok(())
    }

    async fn add_server_error(
        &self,
        account_id: &str,
        minute_ms: i64,
        _keep_until_ms: i64,
    ) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        st.add_window_server_error(account_id, minute_ms);
        let month = crate::domain::time::month_of(minute_ms);
        *st.sla_months
            .entry((account_id.to_string(), month))
            .or_default()
            .server_errors
            .entry(minute_ms)
            .or_default() += 1;
        Ok(())
    }

    async fn minutes(
        &self,
        account_id: &str,
        minutes: &[i64],
    ) -> PortResult<BTreeMap<i64, MinuteCounts>> {
        self.pause().await;
        let st = self.lock();
        Ok(minutes
            .iter()
            .filter_map(|m| st.window_counts(account_id, *m).map(|c| (*m, c)))
            .collect())
    }

    async fn month(&self, account_id: &str, month: &str) -> PortResult<SlaMonth> {
        self.pause().await;
        Ok(self
            .lock()
            .sla_months
            .get(&(account_id.to_string(), month.to_string()))
            .cloned()
            .unwrap_or_default())
    }

    async fn record_probe(&self, minute_ms: i64, failure: Option<&str>) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        let p = st
            .probes
            .entry(crate::domain::time::month_of(minute_ms))
            .or_default();
        match failure {
            None => {
                if p.last_ok.is_none_or(|l| l < minute_ms) {
                    p.last_ok = Some(minute_ms);
                    p.month.ok_minutes += 1;
                }
            }
            Some(detail) => {
                p.month
                    .failed
                    .entry(minute_ms)
                    .or_insert_with(|| detail.chars().take(300).collect());
            }
        }
        Ok(())
    }

    async fn probes(&self, month: &str) -> PortResult<ProbeMonth> {
        self.pause().await;
        Ok(self
            .lock()
            .probes
            .get(month)
            .map(|p| p.month.clone())
            .unwrap_or_default())
    }

    async fn closed(&self, account_id: &str, month: &str) -> PortResult<Option<SlaCloseRecord>> {
        self.pause().await;
        Ok(self
            .lock()
            .sla_closes
            .get(&(account_id.to_string(), month.to_string()))
            .cloned())
    }

    async fn add_platform_failure(&self, account_id: &str, minute_ms: i64) -> PortResult<()> {
        self.pause().await;
        *self
            .lock()
            .incidents
            .failures
            .entry(minute_ms)
            .or_default()
            .entry(account_id.to_string())
            .or_default() += 1;
        Ok(())
    }

    async fn platform_failures(
        &self,
        from_ms: i64,
        to_ms: i64,
    ) -> PortResult<BTreeMap<i64, BTreeMap<String, u64>>> {
        self.pause().await;
        Ok(self
            .lock()
            .incidents
            .failures
            .range(from_ms..to_ms.max(from_ms))
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }

    async fn open_incident(&self) -> PortResult<Option<Incident>> {
        self.pause().await;
        Ok(self.lock().incidents.open.clone())
    }

    async fn start_incident(&self, inc: &Incident) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        if st.incidents.open.is_some() {
            return Ok(false);
        }
        st.incidents.open = Some(inc.clone());
        Ok(true)
    }

    async fn update_incident(&self, inc: &Incident) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        match &mut st.incidents.open {
            Some(open) if open.incident_id == inc.incident_id => {
                *open = inc.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn end_incident(&self, inc: &Incident) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        match &st.incidents.open {
            Some(open) if open.incident_id == inc.incident_id => {
                st.incidents.open = None;
                st.incidents.closed.push(inc.clone());
                st.incidents
                    .closed
                    .sort_by_key(|i| (i.started_ms, i.incident_id.clone()));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn incidents(&self, from_ms: i64, to_ms: i64) -> PortResult<Vec<Incident>> {
        self.pause().await;
        Ok(self
            .lock()
            .incidents
            .closed
            .iter()
            .filter(|i| i.started_ms < to_ms && i.ended_ms.is_some_and(|e| e > from_ms))
            .cloned()
            .collect())
    }
}

/// One task end's adds to its month.
fn add_end(m: &mut SlaMonth, model: Model, class: &TaskClass) {
    for c in class.counts() {
        match c {
            EndCount::Processing(b) => {
                *m.processing
                    .entry(model)
                    .or_default()
                    .counts
                    .entry(b)
                    .or_default() += 1
            }
            EndCount::Queue(b) => {
                *m.queue
                    .entry(model)
                    .or_default()
                    .counts
                    .entry(b)
                    .or_default() += 1
            }
            EndCount::PlatformFailure => *m.platform_failures.entry(model).or_default() += 1,
            EndCount::Excluded(cause) => {
                *m.excluded
                    .entry((model, cause.as_str().to_string()))
                    .or_default() += 1
            }
        }
    }
}
