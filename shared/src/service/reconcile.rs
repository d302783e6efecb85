//! Reconciliation (contract 7.1): recompute an account's money from its ledger and compare
//! with what is stored. Nothing is corrected here: a discrepancy is reported, and an operator
//! answers it with an adjustment (a new ledger entry), never an edit.

use super::{ServiceError, Services};
use crate::adapters::dynamo::from_item;
use crate::adapters::exports::PageQuery;
use crate::adapters::records::{AccountRecord, BatchRecord, LedgerRecord};
use crate::domain::batch::BatchStatus;
use crate::domain::ledger::EntryKind;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Discrepancy {
    /// `balance_mismatch`, `ledger_gap`, `held_mismatch`, `batch_not_closed`,
    /// `refund_tally_mismatch`, `balance_after_mismatch`.
    pub kind: &'static str,
    pub expected: i64,
    pub found: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub account_id: String,
    pub ok: bool,
    pub balance: i64,
    pub ledger_sum: i64,
    pub ledger_entries: u64,
    pub ledger_seq: u64,
    pub held: i64,
    pub open_holds: i64,
    pub batches_checked: u64,
    pub discrepancies: Vec<Discrepancy>,
}

fn d(kind: &'static str, expected: i64, found: i64) -> Discrepancy {
    Discrepancy {
        kind,
        expected,
        found,
        batch_id: None,
        entry_id: None,
    }
}

pub async fn account(svc: &Services, account: &AccountRecord) -> Result<Report, ServiceError> {
    let store = &svc.store;
    let t = store.config().tables.clone();
    let a = AttributeValue::S(account.account_id.clone());
    let mut out = Vec::new();

    // The ledger, oldest first: the sum, the count, the running balance, refunds per batch.
    let q = PageQuery {
        table: &t.ledger,
        index: None,
        key_condition: "account_id = :a",
        values: vec![(":a", a.clone())],
    };
    let (mut sum, mut count, mut expected_seq) = (0i64, 0u64, 1u64);
    let mut refunds: HashMap<String, i64> = HashMap::new();
    let mut start = None;
    loop {
        let (items, next) = store.query_page(&q, start).await?;
        for item in items {
            let e: LedgerRecord = from_item(item)?;
            sum += e.amount;
            count += 1;
            if e.seq != expected_seq {
                out.push(d("ledger_gap", expected_seq as i64, e.seq as i64));
                expected_seq = e.seq;
            }
            expected_seq += 1;
            if e.balance_after != sum {
                let mut x = d("balance_after_mismatch", sum, e.balance_after);
                x.entry_id = Some(crate::domain::ledger::entry_id(e.seq));
                out.push(x);
                sum = e.balance_after;
            }
            if e.kind == EntryKind::Refund {
                if let Some(b) = &e.batch_id {
                    *refunds.entry(b.clone()).or_default() += e.amount;
                }
            }
        }
        match next {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    let ledger_sum: i64 = sum;
    if ledger_sum != account.balance {
        out.push(d("balance_mismatch", ledger_sum, account.balance));
    }
    if count != account.ledger_seq {
        out.push(d("ledger_gap", account.ledger_seq as i64, count as i64));
    }

    // Batches: open ones make up `held`; settled ones close exactly.
    let q = PageQuery {
        table: &t.batches,
        index: None,
        key_condition: "account_id = :a",
        values: vec![(":a", a)],
    };
    let (mut open_holds, mut checked) = (0i64, 0u64);
    let mut start = None;
    loop {
        let (items, next) = store.query_page(&q, start).await?;
        for item in items {
            let b: BatchRecord = from_item(item)?;
            checked += 1;
            let refunded_entries = refunds.get(&b.batch_id).copied().unwrap_or(0);
            if refunded_entries != b.credits.refunded.value() {
                let mut x = d(
                    "refund_tally_mismatch",
                    refunded_entries,
                    b.credits.refunded.value(),
                );
                x.batch_id = Some(b.batch_id.clone());
                out.push(x);
            }
            if b.status == BatchStatus::Completed {
                if let Some(s) = &b.settlement {
                    let closed = s.charged.value() + s.refunded.value();
                    if s.held.value() != closed {
                        let mut x = d("batch_not_closed", s.held.value(), closed);
                        x.batch_id = Some(b.batch_id.clone());
                        out.push(x);
                    }
                }
            } else {
                open_holds += b.credits.held.value() - b.credits.refunded.value();
            }
        }
        match next {
            Some(k) => start = Some(k),
            None => break,
        }
    }
    if open_holds != account.held {
        out.push(d("held_mismatch", open_holds, account.held));
    }
    Ok(Report {
        account_id: account.account_id.clone(),
        ok: out.is_empty(),
        balance: account.balance,
        ledger_sum,
        ledger_entries: count,
        ledger_seq: account.ledger_seq,
        held: account.held,
        open_holds,
        batches_checked: checked,
        discrepancies: out,
    })
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub accounts_checked: u64,
    pub accounts_with_discrepancies: u64,
    /// Only the accounts that do not reconcile.
    pub reports: Vec<Report>,
}

/// Operators: every account.
pub async fn all(svc: &Services) -> Result<Summary, ServiceError> {
    let mut s = Summary {
        accounts_checked: 0,
        accounts_with_discrepancies: 0,
        reports: Vec::new(),
    };
    let mut start = None;
    loop {
        let (accounts, next) = svc.store.scan_accounts(start).await?;
        for a in &accounts {
            s.accounts_checked += 1;
            let r = account(svc, a).await?;
            if !r.ok {
                s.accounts_with_discrepancies += 1;
                s.reports.push(r);
            }
        }
        match next {
            Some(k) => start = Some(k),
            None => return Ok(s),
        }
    }
}
