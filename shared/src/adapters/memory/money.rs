//! Money, the ledger, accounts, idempotency records and the small tables, in memory.

use super::{listed, slice, Memory, State};
use crate::domain::account::AccountStatus;
use crate::domain::batch::BatchStatus;
use crate::domain::money::Credits;
use crate::domain::task::Settlement;
use crate::ports::records::{
    AccountRecord, BatchRecord, FileRecord, LedgerRecord, RequestRecord, Throttle,
};
use crate::ports::store::{
    Change, CommitError, EndMark, LedgerQuery, ModelSetting, MoneyMove, NewRecord, TermsPatch,
};
use crate::ports::{
    Accounts, Files, Ledger, Listed, Models, Money, PageToken, PortResult, Requests, Slice,
    TimeRange,
};
use async_trait::async_trait;

impl State {
    /// True when the record a transaction would create exists already.
    fn exists(&self, r: &NewRecord) -> bool {
        match r {
            NewRecord::Account(a) => self.accounts.contains(&a.account_id),
            NewRecord::Batch(b) => self
                .batches
                .contains(&(b.account_id.clone(), b.batch_id.clone())),
            NewRecord::Request(q) => self
                .requests
                .contains(&(q.account_id.clone(), q.request_key.clone())),
            NewRecord::File(f) => self
                .files
                .contains(&(f.account_id.clone(), f.file_id.clone())),
            NewRecord::Endpoint(e) => self
                .endpoints
                .contains(&(e.account_id.clone(), e.endpoint_id.clone())),
            NewRecord::Export(x) => self
                .exports
                .contains(&(x.account_id.clone(), x.export_id.clone())),
            NewRecord::ApiKey(k) => self.keys.contains(&k.key_hash),
            NewRecord::SlaClose(c) => self
                .sla_closes
                .contains(&(c.account_id.clone(), c.month.clone())),
            NewRecord::Invoice(i) => self
                .invoices
                .contains(&(i.account_id.clone(), i.number.clone())),
            NewRecord::Payment(p) => self.payments.contains(&p.payment_intent),
            NewRecord::Task(r) => self.tasks.contains(&(r.batch_id.clone(), r.idx)),
            NewRecord::Shard(r) => self.progress.contains(&(r.batch_id.clone(), r.shard)),
        }
    }

    fn create(&mut self, r: NewRecord) {
        match r {
            NewRecord::Account(a) => self.accounts.put(a.account_id.clone(), a),
            NewRecord::Batch(b) => self
                .batches
                .put((b.account_id.clone(), b.batch_id.clone()), b),
            NewRecord::Request(q) => self
                .requests
                .put((q.account_id.clone(), q.request_key.clone()), q),
            NewRecord::File(f) => self.files.put((f.account_id.clone(), f.file_id.clone()), f),
            NewRecord::Endpoint(e) => self
                .endpoints
                .put((e.account_id.clone(), e.endpoint_id.clone()), e),
            NewRecord::Export(x) => self
                .exports
                .put((x.account_id.clone(), x.export_id.clone()), x),
            NewRecord::ApiKey(k) => self.keys.put(k.key_hash.clone(), k),
            NewRecord::SlaClose(c) => self
                .sla_closes
                .put((c.account_id.clone(), c.month.clone()), c),
            NewRecord::Invoice(i) => self
                .invoices
                .put((i.account_id.clone(), i.number.clone()), i),
            NewRecord::Payment(p) => self.payments.put(p.payment_intent.clone(), p),
            NewRecord::Task(r) => self.tasks.put((r.batch_id.clone(), r.idx), r),
            NewRecord::Shard(r) => self.progress.put((r.batch_id.clone(), r.shard), r),
        }
    }

    /// Whether a change's condition holds now.
    fn change_holds(&self, c: &Change) -> PortResult<bool> {
        Ok(match c {
            Change::PaymentReversed {
                payment_intent,
                from,
                ..
            } => self
                .payments
                .get(payment_intent)
                .is_some_and(|p| p.reversed_credits == *from),
            Change::NextNumber { series, year, seq } => {
                let last = self.counters.get(&(series.prefix().to_string(), *year));
                last.copied().unwrap_or(0) + 1 == *seq
            }
            Change::EndMark(m) => self.end_mark_holds(m)?,
            Change::BatchRefund {
                account_id,
                batch_id,
                ..
            }
            | Change::BatchRelease {
                account_id,
                batch_id,
                ..
            } => self
                .batches
                .contains(&(account_id.clone(), batch_id.clone())),
            Change::RotateSecrets {
                account_id,
                endpoint_id,
                version,
                ..
            } => self
                .endpoints
                .get(&(account_id.clone(), endpoint_id.clone()))
                .is_some_and(|e| e.secrets_version == *version),
        })
    }

    fn apply_change(&mut self, c: Change) {
        match c {
            Change::PaymentReversed {
                payment_intent, to, ..
            } => {
                self.payments
                    .update(&payment_intent, |p| p.reversed_credits = to);
            }
            Change::NextNumber { series, year, seq } => {
                self.counters.put((series.prefix().to_string(), year), seq);
            }
            Change::EndMark(m) => self.apply_end_mark(&m),
            Change::BatchRefund {
                account_id,
                batch_id,
                amount,
            } => {
                self.batches
                    .update(&(account_id, batch_id), |b| b.credits.refunded += amount);
            }
            Change::BatchRelease {
                account_id,
                batch_id,
                amount,
            } => {
                self.batches
                    .update(&(account_id, batch_id), |b| b.credits.released += amount);
            }
            Change::RotateSecrets {
                account_id,
                endpoint_id,
                secrets,
                now_ms,
                ..
            } => {
                self.endpoints.update(&(account_id, endpoint_id), |e| {
                    e.secrets = secrets;
                    e.secrets_version += 1;
                    e.updated_ms = now_ms;
                });
            }
        }
    }

    /// The end mark's condition: the shard exists, the task has not ended, and its started
    /// mark is what the writer saw. (`Progress` in `pipeline.rs` applies it.)
    pub(super) fn end_mark_holds(&self, m: &EndMark) -> PortResult<bool> {
        let shard = crate::domain::task::shard_of(m.idx);
        let Some(s) = self.progress.get(&(m.batch_id.clone(), shard)) else {
            return Ok(false);
        };
        let key = m.idx.to_string();
        Ok(!s.ended.contains_key(&key) && s.started.contains_key(&key) == m.was_started)
    }

    pub(super) fn apply_end_mark(&mut self, m: &EndMark) {
        let shard = crate::domain::task::shard_of(m.idx);
        let outcome = m.outcome;
        let was_started = m.was_started;
        let idx = m.idx.to_string();
        self.progress.update(&(m.batch_id.clone(), shard), |s| {
            if was_started {
                // As the DynamoDB adapter: the end takes the started mark's place.
                s.started.remove(&idx);
            } else {
                s.n_ended_unstarted += 1;
            }
            s.ended.insert(idx, outcome);
            use crate::domain::task::Outcome::*;
            match outcome {
                Succeeded => s.n_succeeded += 1,
                Failed => s.n_failed += 1,
                Rejected => s.n_rejected += 1,
                TimedOut => s.n_timed_out += 1,
                Cancelled => s.n_cancelled += 1,
                Released => s.n_released += 1,
            }
        });
    }

    /// Checks `creates` then `changes` in transaction order: the first that fails is
    /// `Duplicate(i)` (as the DynamoDB adapter reads its cancellation reasons).
    fn check_records(&self, creates: &[NewRecord], changes: &[Change]) -> Result<(), CommitError> {
        if let Some(i) = creates.iter().position(|c| self.exists(c)) {
            return Err(CommitError::Duplicate(i));
        }
        for (j, c) in changes.iter().enumerate() {
            if !self.change_holds(c)? {
                return Err(CommitError::Duplicate(creates.len() + j));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Money for Memory {
    async fn commit(&self, mv: MoneyMove) -> Result<(), CommitError> {
        self.pause().await;
        let mut st = self.lock();
        let Some(a) = st.accounts.get(&mv.account_id) else {
            return Err(CommitError::Stale);
        };
        if a.ledger_seq != mv.expected.seq
            || a.balance != mv.expected.balance
            || (mv.require_active && a.status != AccountStatus::Active)
            || st.ledger.contains(&(mv.account_id.clone(), mv.entry.seq))
        {
            return Err(CommitError::Stale);
        }
        st.check_records(&mv.creates, &mv.changes)?;
        let e = &mv.entry;
        let (amount, seq, ms) = (e.amount, e.seq, e.created_ms);
        st.accounts.update(&mv.account_id, |a| {
            a.balance += amount;
            a.held += mv.held_delta;
            a.lifetime_granted += mv.granted_delta;
            a.lifetime_charged += mv.charged_delta;
            a.lifetime_refunded += mv.refunded_delta;
            a.lifetime_released += mv.released_delta;
            a.ledger_seq = seq;
            a.last_entry_ms = ms;
        });
        st.ledger.put((mv.account_id.clone(), seq), mv.entry);
        for c in mv.creates {
            st.create(c);
        }
        for c in mv.changes {
            st.apply_change(c);
        }
        Ok(())
    }

    async fn settle(&self, batch: &BatchRecord, s: &Settlement, now_ms: i64) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let key = (batch.account_id.clone(), batch.batch_id.clone());
        let holds = st.batches.get(&key).is_some_and(|b| {
            b.status != BatchStatus::Completed
                && b.credits.refunded == s.refunded
                && b.credits.released == s.released
        });
        if !holds {
            return Ok(false);
        }
        if !st.accounts.contains(&batch.account_id) {
            return Err(super::refused("TransactWriteItems", "the account is gone"));
        }
        st.batches.update(&key, |b| {
            b.status = BatchStatus::Completed;
            b.settlement = Some(*s);
            b.completed_ms = Some(now_ms);
            b.credits.charged = s.charged;
            b.open_shard = None;
        });
        st.accounts.update(&batch.account_id, |a| {
            a.held -= s.charged;
            a.lifetime_charged += s.charged;
        });
        Ok(true)
    }
}

#[async_trait]
impl Ledger for Memory {
    async fn list(&self, q: &LedgerQuery) -> PortResult<Listed<LedgerRecord>> {
        self.pause().await;
        let st = self.lock();
        let from = (q.account_id.clone(), 0);
        let to = (q.account_id.clone(), u64::MAX);
        let items = st
            .ledger
            .range(from..=to)
            .rev()
            .map(|(_, e)| e)
            .filter(|e| q.range.contains(e.created_ms))
            .filter(|e| q.after.is_none_or(|p| e.seq < p.seq))
            .map(|e| (q.kind.is_none_or(|k| e.kind == k), e.clone()));
        let out = listed(items, q.limit);
        Ok(out)
    }

    async fn last_before(&self, account_id: &str, ms: i64) -> PortResult<Option<LedgerRecord>> {
        self.pause().await;
        let st = self.lock();
        let from = (account_id.to_string(), 0);
        let to = (account_id.to_string(), u64::MAX);
        let found = st
            .ledger
            .range(from..=to)
            .rev()
            .map(|(_, e)| e)
            .find(|e| e.created_ms < ms)
            .cloned();
        Ok(found)
    }

    async fn get(&self, account_id: &str, seq: u64) -> PortResult<Option<LedgerRecord>> {
        self.pause().await;
        Ok(self
            .lock()
            .ledger
            .get(&(account_id.to_string(), seq))
            .cloned())
    }

    async fn page(
        &self,
        account_id: &str,
        range: TimeRange,
        after: Option<PageToken>,
    ) -> PortResult<Slice<LedgerRecord>> {
        self.pause().await;
        let st = self.lock();
        let from = (account_id.to_string(), 0);
        let to = (account_id.to_string(), u64::MAX);
        let items = st
            .ledger
            .range(from..=to)
            .filter(|(_, e)| range.contains(e.created_ms))
            .map(|(k, e)| (k.1, e.clone()));
        slice(items, after)
    }
}

#[async_trait]
impl Accounts for Memory {
    async fn get(&self, account_id: &str) -> PortResult<Option<AccountRecord>> {
        self.pause().await;
        Ok(self.lock().accounts.get(&account_id.to_string()).cloned())
    }

    async fn scan(&self, after: Option<PageToken>) -> PortResult<Slice<AccountRecord>> {
        self.pause().await;
        let st = self.lock();
        slice(
            st.accounts
                .values()
                .map(|a| (a.account_id.clone(), a.clone())),
            after,
        )
    }

    async fn change_terms(
        &self,
        account_id: &str,
        change: &TermsPatch,
    ) -> PortResult<Option<AccountRecord>> {
        self.pause().await;
        Ok(self.lock().accounts.update(&account_id.to_string(), |a| {
            if let Some(r) = change.retention_days {
                a.retention_days = r;
            }
            if let Some(m) = change.max_concurrency {
                a.max_concurrency = m;
            }
            if let Some(b) = change.request_budget_per_min {
                a.request_budget_per_min = Some(b);
            }
            if let Some(t) = &change.sla_terms {
                a.sla_terms = Some(t.clone());
            }
            if let Some(p) = &change.billing_profile {
                a.billing_profile = Some(p.clone());
            }
            if let Some(i) = &change.payment_issue {
                a.payment_issue = Some(i.clone());
            }
            a.clone()
        }))
    }

    async fn set_status(&self, account_id: &str, status: AccountStatus) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = account_id.to_string();
        if st.accounts.get(&k).is_none_or(|a| a.status == status) {
            return Ok(false);
        }
        st.accounts.update(&k, |a| a.status = status);
        Ok(true)
    }

    async fn set_low_balance_threshold(
        &self,
        account_id: &str,
        threshold: Option<Credits>,
    ) -> PortResult<Option<AccountRecord>> {
        self.pause().await;
        Ok(self.lock().accounts.update(&account_id.to_string(), |a| {
            a.low_balance_threshold = threshold;
            a.clone()
        }))
    }

    async fn throttle(&self, account_id: &str, t: &Throttle) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = account_id.to_string();
        let free = st.accounts.get(&k).is_some_and(|a| {
            a.throttle
                .as_ref()
                .is_none_or(|cur| cur.until_ms < t.since_ms)
        });
        if free {
            st.accounts.update(&k, |a| a.throttle = Some(t.clone()));
        }
        Ok(free)
    }

    async fn lift_throttle(&self, account_id: &str) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = account_id.to_string();
        let had = st.accounts.get(&k).is_some_and(|a| a.throttle.is_some());
        if had {
            st.accounts.update(&k, |a| a.throttle = None);
        }
        Ok(had)
    }

    async fn acquire_slot(&self, account_id: &str, max: u32) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = account_id.to_string();
        if st.accounts.get(&k).is_none_or(|a| a.running >= max) {
            return Ok(false);
        }
        st.accounts.update(&k, |a| a.running += 1);
        Ok(true)
    }

    async fn release_slot(&self, account_id: &str) -> PortResult<()> {
        self.pause().await;
        let mut st = self.lock();
        let k = account_id.to_string();
        if st.accounts.get(&k).is_some_and(|a| a.running > 0) {
            st.accounts.update(&k, |a| a.running -= 1);
        }
        Ok(())
    }

    async fn reset_slots(&self, account_id: &str, observed: u32, actual: u32) -> PortResult<bool> {
        self.pause().await;
        let mut st = self.lock();
        let k = account_id.to_string();
        if st.accounts.get(&k).is_none_or(|a| a.running != observed) {
            return Ok(false);
        }
        st.accounts.update(&k, |a| a.running = actual);
        Ok(true)
    }

    async fn note_slot_audit(&self, account_id: &str, seen: &str) -> PortResult<()> {
        self.pause().await;
        self.lock().accounts.update(&account_id.to_string(), |a| {
            a.slot_audit = Some(seen.to_string())
        });
        Ok(())
    }
}

#[async_trait]
impl Requests for Memory {
    async fn get(&self, owner: &str, request_key: &str) -> PortResult<Option<RequestRecord>> {
        self.pause().await;
        Ok(self
            .lock()
            .requests
            .get(&(owner.to_string(), request_key.to_string()))
            .cloned())
    }

    async fn create_all(&self, creates: Vec<NewRecord>) -> Result<(), CommitError> {
        self.pause().await;
        let mut st = self.lock();
        st.check_records(&creates, &[])?;
        for c in creates {
            st.create(c);
        }
        Ok(())
    }

    async fn change_and_create(
        &self,
        change: Change,
        creates: Vec<NewRecord>,
    ) -> Result<(), CommitError> {
        self.pause().await;
        let mut st = self.lock();
        if !st.change_holds(&change)? {
            return Err(CommitError::Stale);
        }
        st.check_records(&creates, &[])?;
        st.apply_change(change);
        for c in creates {
            st.create(c);
        }
        Ok(())
    }
}

#[async_trait]
impl Files for Memory {
    async fn get(&self, account_id: &str, file_id: &str) -> PortResult<Option<FileRecord>> {
        self.pause().await;
        Ok(self
            .lock()
            .files
            .get(&(account_id.to_string(), file_id.to_string()))
            .cloned())
    }
}

#[async_trait]
impl Models for Memory {
    async fn get(&self, model: &str) -> PortResult<Option<ModelSetting>> {
        self.pause().await;
        Ok(self.lock().models.get(&model.to_string()).cloned())
    }

    async fn set(&self, model: &str, setting: &ModelSetting) -> PortResult<()> {
        self.pause().await;
        self.lock().models.put(model.to_string(), setting.clone());
        Ok(())
    }
}
